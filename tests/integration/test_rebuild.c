/*
 * Integration tests of the zero-downtime rebuild (README "Rebuilding an
 * index without downtime"): the real daemon and CLI between a real
 * PostgreSQL and a real search node, the documents behind the alias compared
 * with the independent SQL oracles (tests/oracle/).
 *
 *   a. products and orders rebuilt through a running daemon's command path
 *      while a writer keeps appending events and a reader queries the alias
 *      every 10 ms: no failed query, no count below the start's, exact docs;
 *   b. a mapping change (--mappings-dir) reaches the new generation;
 *   c. a crash (ESBRIDGE_CRASH_AT, SIGKILL) at each step of the swap, and a
 *      SIGKILL during the catch-up: one index behind the alias at all times,
 *      exact documents once resumed; what `run --once` does meanwhile;
 *   d. one rebuild at a time; scripts/reindex; --keep.
 *
 * Every test starts from an empty world (h_begin). Logs: build/tests/logs/.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <yajl/yajl_tree.h>

#include "harness.h"

#define GEN1 "products-000001"
#define GEN2 "products-000002"

/* Each test calls h_begin() first; .fini kills what it left running. */
static void suite_fini(void)
{
	h_end();
}

TestSuite(rebuild, .fini = suite_fini);

/* ---- histories --------------------------------------------------------------- */

/* The last event in commit order: (transaction_id, global_position). */
static void last_event(uint64_t *txid, int64_t *pos)
{
	PGresult *res = h_exec(NULL,
		"SELECT e.transaction_id::text, e.global_position FROM public.events e"
		" ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1", 0, NULL);

	cr_assert_eq(PQntuples(res), 1, "no events");
	*txid = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	*pos = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
}

/* ---- state and the search node -------------------------------------------------- */

/* "1:retired,2:active": the generations of `proj` in esbridge.generations. */
static char *generations(const char *proj)
{
	const char *params[1] = { proj };
	char *s = h_query_text(NULL,
		"SELECT coalesce(string_agg(generation || ':' || state, ',' ORDER BY generation), '')"
		" FROM esbridge.generations WHERE projection = $1", 1, params);

	cr_assert_not_null(s);
	return s;
}

static void assert_generations(const char *proj, const char *want, const char *when)
{
	char *got = generations(proj);

	cr_assert_str_eq(got, want, "%s: esbridge.generations of %s: %s, want %s", when, proj, got, want);
	free(got);
}

/* The checkpoint of generation `number` of `proj` (position only; -1: no row). */
static long long gen_checkpoint(const char *proj, int number)
{
	char n[16];
	const char *params[2] = { proj, n };

	snprintf(n, sizeof(n), "%d", number);
	if (!h_query_ll(NULL, "SELECT (to_regclass('esbridge.generations') IS NOT NULL)::int", 0, NULL, 0))
		return -1;
	return h_query_ll(NULL,
		"SELECT coalesce((SELECT checkpoint_pos FROM esbridge.generations"
		"  WHERE projection = $1 AND generation = $2::int), -1)", 2, params, -1);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The indices the alias names now (GET /_alias/NAME), as "a,b" sorted; "" if none. */
static char *alias_indices(const char *alias)
{
	char path[256], *out;
	const char *keys[64];
	struct h_http r;
	yajl_val v;
	size_t cap = 1, len = 0, n;

	snprintf(path, sizeof(path), "/_alias/%s", alias);
	r = h_es("GET", path, NULL);
	if (r.status == 404) {
		h_http_free(&r);
		out = strdup("");
		cr_assert_not_null(out);
		return out;
	}
	cr_assert_eq(r.status, 200, "GET %s: HTTP %ld: %.300s", path, r.status, r.body);
	v = yajl_tree_parse(r.body, NULL, 0);
	cr_assert(v && YAJL_IS_OBJECT(v), "GET %s: %.300s", path, r.body);
	n = v->u.object.len < 64 ? v->u.object.len : 64;
	for (size_t i = 0; i < n; i++) {
		keys[i] = v->u.object.keys[i];
		cap += strlen(keys[i]) + 1;
	}
	qsort(keys, n, sizeof(keys[0]), cmp_str);
	out = calloc(1, cap);
	cr_assert_not_null(out);
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(out + len, "%s%s", i ? "," : "", keys[i]);
	yajl_tree_free(v);
	h_http_free(&r);
	return out;
}

static void assert_alias(const char *alias, const char *want, const char *when)
{
	char *got = alias_indices(alias);

	cr_assert_str_eq(got, want, "%s: GET /_alias/%s names [%s], want exactly [%s]", when, alias, got,
			 want);
	free(got);
}

/* The NAME-* indices, "a,b" sorted (GET /_cat/indices). */
static char *cat_indices(const char *proj)
{
	char path[256];
	struct h_http r;
	char *out;

	snprintf(path, sizeof(path), "/_cat/indices/%s-*?h=index&s=index&expand_wildcards=all", proj);
	r = h_es("GET", path, NULL);
	cr_assert_eq(r.status, 200, "GET %s: HTTP %ld: %.300s", path, r.status, r.body);
	out = strdup(r.body);
	cr_assert_not_null(out);
	h_http_free(&r);
	/* lines to a comma-separated list */
	for (size_t n = strlen(out); n && (out[n - 1] == '\n' || out[n - 1] == ' '); n--)
		out[n - 1] = '\0';
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = ',';
	{
		/* the cat API pads with spaces: remove them */
		char *w = out;
		for (char *p = out; *p; p++)
			if (*p != ' ')
				*w++ = *p;
		*w = '\0';
	}
	return out;
}

/* POST /ALIAS/_refresh, then the count through the alias. */
static long long alias_count(const char *alias)
{
	static const char *count_path[] = { "count", NULL };
	char path[256];
	struct h_http r;
	yajl_val v, c;
	long long n;

	snprintf(path, sizeof(path), "/%s/_refresh", alias);
	r = h_es("POST", path, NULL);
	cr_assert_eq(r.status, 200, "POST %s: HTTP %ld: %.300s", path, r.status, r.body);
	h_http_free(&r);
	snprintf(path, sizeof(path), "/%s/_count", alias);
	r = h_es("GET", path, NULL);
	cr_assert_eq(r.status, 200, "GET %s: HTTP %ld: %.300s", path, r.status, r.body);
	v = yajl_tree_parse(r.body, NULL, 0);
	c = v ? yajl_tree_get(v, count_path, yajl_t_number) : NULL;
	cr_assert_not_null(c, "GET %s: %.300s", path, r.body);
	n = YAJL_GET_INTEGER(c);
	yajl_tree_free(v);
	h_http_free(&r);
	return n;
}

/* Client connections to the database other than this test's own. */
static int backends(void)
{
	return (int)h_query_ll(NULL,
		"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
		" AND backend_type = 'client backend' AND pid <> pg_backend_pid()", 0, NULL, 0);
}

/* ---- processes ----------------------------------------------------------------- */

/* Waits for `p` up to `secs` (killing it on time-out) and returns its exit code. */
static int finish(struct h_proc *p, double secs, const char *what)
{
	if (!h_wait(p, secs)) {
		h_kill(p);
		cr_assert_fail("%s did not finish within %.0fs (log: %s)", what, secs, p->log);
	}
	return h_exit_code(p);
}

static void assert_exit0(struct h_proc *p, double secs, const char *what)
{
	int code = finish(p, secs, what);

	cr_assert_eq(code, 0, "%s: exit status 0x%x, want exit 0 (log: %s)", what, (unsigned)p->status,
		     p->log);
}

static void assert_output_has(const struct h_proc *p, const char *needle, const char *what)
{
	cr_assert_gt(h_output_count(p, needle), 0, "%s: the output lacks \"%s\" (log: %s)", what, needle, p->log);
}

/* A daemon owns `proj` (its runner took the lock) once its pipeline starts. */
static void wait_owner(const struct h_proc *d, const char *proj)
{
	char needle[128];

	snprintf(needle, sizeof(needle), "proj=%s gen=1 msg=\"starting on", proj);
	H_EVENTUALLY(h_output_count(d, needle) > 0 || !d->running, 30, "the daemon never started %s (log: %s)", proj, d->log);
	cr_assert(d->running, "the daemon exited (log: %s)", d->log);
}

static void run_once_ok(const char *const *args)
{
	int code = h_run_once(args, H_LONG);

	cr_assert_eq(code, 0, "run --once exited with %d", code);
}

/* `esbridge ARGS...` to completion, exit 0 expected; returns the process. */
static struct h_proc *cli_ok(const char *const *args, double secs, const char *what)
{
	struct h_proc *p = h_spawn(0, args);

	assert_exit0(p, secs, what);
	return p;
}

/* The newest generation's checkpoint reaches the last event. */
static void wait_caught_up(const char *proj, const struct h_proc *daemon)
{
	uint64_t txid;
	int64_t pos;

	last_event(&txid, &pos);
	cr_assert(h_wait_checkpoint(proj, txid, pos, H_LONG),
		  "%s never caught up with the last event %" PRIu64 "/%" PRId64 " (log: %s)", proj, txid, pos,
		  daemon ? daemon->log : "-");
}

/*
 * The events counted by the last "stopped at checkpoint" line of generation
 * `gen` of `proj` in the output of `p` (events read in that process); -1 if
 * there is none.
 */
static long long stopped_events(const struct h_proc *p, const char *proj, int gen)
{
	char *out = h_proc_output(p), tag[128];
	long long n = -1;

	snprintf(tag, sizeof(tag), "proj=%s gen=%d msg=\"stopped at checkpoint", proj, gen);
	for (const char *at = strstr(out, tag); at; at = strstr(at + 1, tag)) {
		const char *colon = strchr(at + strlen(tag), ':');
		long long v;
		if (colon && sscanf(colon, ": %lld events", &v) == 1)
			n = v;
	}
	free(out);
	return n;
}

/* ---- a. a live writer and a reader during a daemon-run rebuild --------------------- */

enum kind { PRODUCTS, ORDERS };

struct writer {
	enum kind kind;
	int base;                  /* products g1..gN / orders o1..oN exist before */
	pthread_t th;
	atomic_bool stop;
	atomic_long transactions;
	atomic_bool failed;
	char error[512];
};

static bool wexec(PGconn *c, struct writer *w, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

	if (!ok && !atomic_load(&w->failed)) {
		snprintf(w->error, sizeof(w->error), "%s (SQL: %.200s)", PQresultErrorMessage(res), sql);
		atomic_store(&w->failed, true);
	}
	PQclear(res);
	return ok;
}

/* One transaction of a few events; `i` counts from 1. */
static void write_products(PGconn *c, struct writer *w, long i)
{
	char sql[4096];
	long g = (i * 37) % w->base + 1;
	int n;

	/* a new product, an update of an old one, sometimes a price change of a new one */
	n = snprintf(sql, sizeof(sql),
		"BEGIN;"
		"INSERT INTO public.events (stream_id, event_type, data, version) VALUES ('product-w%ld',"
		" 'ProductCreated', '{\"product_id\": \"w%ld\", \"name\": \"Live %ld\", \"price\": %ld.%02ld,"
		" \"tags\": [\"live\"], \"created_at\": \"2026-11-26T12:00:00Z\"}', 1);"
		"INSERT INTO public.events (stream_id, event_type, data, version) VALUES ('product-g%ld',"
		" 'ProductUpdated', '{\"product_id\": \"g%ld\", \"name\": \"Live update %ld\","
		" \"updated_at\": \"2026-11-26T12:00:01Z\"}',"
		" (SELECT coalesce(max(version), 0) + 1 FROM public.events WHERE stream_id = 'product-g%ld'));",
		i, i, i, i % 1000, i % 100, g, g, i, g);
	if (i % 3 == 0 && n > 0 && (size_t)n < sizeof(sql))
		n += snprintf(sql + n, sizeof(sql) - (size_t)n,
			"INSERT INTO public.events (stream_id, event_type, data, version) VALUES ('product-w%ld',"
			" 'ProductPriceChanged', '{\"product_id\": \"w%ld\", \"new_price\": %ld.5,"
			" \"changed_at\": \"2026-11-26T12:00:02Z\"}',"
			" (SELECT coalesce(max(version), 0) + 1 FROM public.events WHERE stream_id = 'product-w%ld'));",
			i / 2, i / 2, i % 77, i / 2);
	if (n > 0 && (size_t)n < sizeof(sql) - 8)
		strcat(sql, "COMMIT;");
	wexec(c, w, sql);
}

static void write_orders(PGconn *c, struct writer *w, long i)
{
	char sql[4096];
	size_t n = 0;

#define ADD(...)                                                                      \
	do {                                                                              \
		int k_ = snprintf(sql + n, sizeof(sql) - n, __VA_ARGS__);                    \
		if (k_ > 0 && (size_t)k_ < sizeof(sql) - n)                                  \
			n += (size_t)k_;                                                          \
	} while (0)
#define INS(id, type, json_fmt, ...)                                                              \
	ADD("INSERT INTO public.events (stream_id, event_type, data, version) VALUES ('order-%s', '" \
	    type "', '" json_fmt "', (SELECT coalesce(max(version), 0) + 1 FROM public.events"          \
	    " WHERE stream_id = 'order-%s'));", id, __VA_ARGS__, id)
	char id[32], prev[32], old[32];

	snprintf(id, sizeof(id), "lo%ld", i);
	snprintf(old, sizeof(old), "o%ld", (i * 13) % w->base + 1);
	ADD("BEGIN;");
	INS(id, "OrderCreated", "{\"order_id\": \"%s\", \"customer_id\": \"c%ld\", \"created_at\": \"2026-11-26T12:00:00Z\"}",
	    id, i % 97);
	INS(id, "OrderItemAdded", "{\"order_id\": \"%s\", \"product_id\": \"p%ld\", \"price\": %ld.%02ld, \"quantity\": %ld}",
	    id, i % 500, i % 300, (i * 7) % 100, 1 + i % 3);
	/* an item for an order created before the rebuild */
	INS(old, "OrderItemAdded", "{\"order_id\": \"%s\", \"product_id\": \"p%ld\", \"price\": 0.%02ld, \"quantity\": 2}",
	    old, i % 50, i % 100);
	if (i > 3) {
		snprintf(prev, sizeof(prev), "lo%ld", i - 3);
		INS(prev, "OrderItemAdded", "{\"order_id\": \"%s\", \"product_id\": \"p%ld\", \"price\": 1.10, \"quantity\": 1}",
		    prev, i % 40);
	}
	if (i > 5 && i % 2 == 0) {
		snprintf(prev, sizeof(prev), "lo%ld", i - 5);
		INS(prev, "OrderShipped", "{\"order_id\": \"%s\", \"shipped_at\": \"2026-11-26T13:00:00Z\"}", prev);
	}
	if (i > 9 && i % 4 == 0) {
		snprintf(prev, sizeof(prev), "lo%ld", i - 9);
		INS(prev, "OrderCompleted", "{\"order_id\": \"%s\", \"customer_id\": \"c1\", \"total_amount\": 0, \"item_count\": 0, \"completed_at\": \"2026-11-26T14:00:00Z\"}",
		    prev);
	}
	ADD("COMMIT;");
#undef INS
#undef ADD
	wexec(c, w, sql);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	PGconn *c = PQconnectdb(getenv("ESBRIDGE_PG"));

	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(w->error, sizeof(w->error), "cannot connect: %s", PQerrorMessage(c));
		atomic_store(&w->failed, true);
		PQfinish(c);
		return NULL;
	}
	for (long i = 1; !atomic_load(&w->stop) && !atomic_load(&w->failed); i++) {
		if (w->kind == PRODUCTS)
			write_products(c, w, i);
		else
			write_orders(c, w, i);
		atomic_fetch_add(&w->transactions, 1);
		h_sleep(0.005);
	}
	PQfinish(c);
	return NULL;
}

struct reader {
	char base[512];
	char alias[64];
	pthread_t th;
	atomic_bool stop;
	atomic_llong window_from;  /* µs (h_now): min_count tracks the queries sent after it; 0: none */
	atomic_long queries, failures, window_queries;
	atomic_llong min_count;
	char first_failure[1100];
};

struct rbody {
	char data[8192];
	size_t len;
};

static size_t reader_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct rbody *b = arg;
	size_t n = size * nmemb;
	size_t room = sizeof(b->data) - 1 - b->len;

	memcpy(b->data + b->len, ptr, n < room ? n : room);
	b->len += n < room ? n : room;
	b->data[b->len] = '\0';
	return n;
}

/* Every 10 ms: _count and _search (match_all) through the alias, in turn. */
static void *reader_main(void *arg)
{
	static const char *count_path[] = { "count", NULL };
	static const char *total_path[] = { "hits", "total", "value", NULL };
	static const char *failed_path[] = { "_shards", "failed", NULL };
	struct reader *rd = arg;
	CURL *c = curl_easy_init();
	char url[700];

	for (long q = 0; c && !atomic_load(&rd->stop); q++) {
		struct rbody b = { .len = 0 };
		CURLcode rc;
		long status = 0;
		yajl_val v = NULL, n = NULL, f = NULL;
		bool search = q % 2 == 1;
		char why[300] = "";
		long long sent = (long long)(h_now() * 1e6);

		b.data[0] = '\0';
		if (search)
			snprintf(url, sizeof(url), "%s/%s/_search?size=0&track_total_hits=true", rd->base, rd->alias);
		else
			snprintf(url, sizeof(url), "%s/%s/_count", rd->base, rd->alias);
		curl_easy_reset(c);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reader_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		if (search) {
			static const char query[] = "{\"query\":{\"match_all\":{}}}";
			struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
			curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, query);
			rc = curl_easy_perform(c);
			curl_slist_free_all(h);
		} else {
			rc = curl_easy_perform(c);
		}
		if (rc != CURLE_OK) {
			snprintf(why, sizeof(why), "curl: %s", curl_easy_strerror(rc));
		} else {
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
			v = yajl_tree_parse(b.data, NULL, 0);
			n = v ? yajl_tree_get(v, search ? total_path : count_path, yajl_t_number) : NULL;
			f = v ? yajl_tree_get(v, failed_path, yajl_t_number) : NULL;
			if (status != 200 || !n || !f || YAJL_GET_INTEGER(f) != 0)
				snprintf(why, sizeof(why), "HTTP %ld: %.250s", status, b.data);
		}
		if (why[0]) {
			if (atomic_fetch_add(&rd->failures, 1) == 0)
				snprintf(rd->first_failure, sizeof(rd->first_failure), "%s %s", url, why);
		} else if (atomic_load(&rd->window_from) && sent >= atomic_load(&rd->window_from)) {
			long long cnt = YAJL_GET_INTEGER(n);
			long long cur = atomic_load(&rd->min_count);
			while (cnt < cur && !atomic_compare_exchange_weak(&rd->min_count, &cur, cnt))
				;
			atomic_fetch_add(&rd->window_queries, 1);
		}
		yajl_tree_free(v);
		atomic_fetch_add(&rd->queries, 1);
		h_sleep(0.01);
	}
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

/*
 * README: `esbridge rebuild NAME` while an `esbridge run` owns the
 * projection goes through the daemon; readers keep using the alias and the
 * active generation keeps following live events meanwhile.
 */
static void rebuild_under_load(enum kind kind)
{
	const char *proj = kind == PRODUCTS ? "products" : "orders";
	/*
	 * Only the projection rebuilt: a projection none of whose events are
	 * written keeps its checkpoint and scans the store from it at every
	 * wake-up; with the writer's 200 commits a second, three such idle
	 * projections starve the loop of a loaded 2-core machine and the new
	 * generation never finds the quiet moment its swap waits for.
	 */
	const char *const run_args[] = { "run", "--projection", proj, "--poll-interval", "0.2", NULL };
	char gen1[64], gen2[64], msg[128];
	struct writer *w = calloc(1, sizeof(*w));
	struct reader *rd = calloc(1, sizeof(*rd));
	struct h_proc *d, *rb;
	long long start_count, before_stop;
	double t0, t_rebuild;

	cr_assert(w && rd);
	snprintf(gen1, sizeof(gen1), "%s-000001", proj);
	snprintf(gen2, sizeof(gen2), "%s-000002", proj);
	h_begin();
	if (kind == PRODUCTS) {
		h_insert_generated_products(1, 15000); /* 3000 products and 12000 changes */
		w->base = 3000;
	} else {
		h_insert_generated_orders(1, 3000);
		w->base = 3000;
	}
	w->kind = kind;

	d = h_spawn(0, run_args);
	H_EVENTUALLY(h_alias_is(proj, gen1), H_LONG, "the alias never named %s (log: %s)", gen1, d->log);
	wait_caught_up(proj, d);

	snprintf(rd->base, sizeof(rd->base), "%s", getenv("ESBRIDGE_ES"));
	snprintf(rd->alias, sizeof(rd->alias), "%s", proj);
	atomic_store(&rd->min_count, LLONG_MAX);
	cr_assert_eq(pthread_create(&rd->th, NULL, reader_main, rd), 0);
	cr_assert_eq(pthread_create(&w->th, NULL, writer_main, w), 0);
	h_sleep(0.5);

	/* what readers see when the rebuild begins: never less afterwards (no deletes are written) */
	start_count = alias_count(proj);
	/* queries sent before that refresh may see less: not counted */
	atomic_store(&rd->window_from, (long long)(h_now() * 1e6));
	t0 = h_now();
	rb = h_spawn(0, (const char *const[]){ "rebuild", proj, NULL });
	assert_exit0(rb, 90, "esbridge rebuild (through the daemon)");
	t_rebuild = h_now() - t0;
	assert_output_has(rb, "a running esbridge owns it; sent it rebuild command", "rebuild");
	snprintf(msg, sizeof(msg), "done %s %s is active", proj, gen2);
	assert_output_has(rb, msg, "rebuild");
	assert_alias(proj, gen2, "after the rebuild");
	cr_assert(d->running, "the daemon exited during the rebuild (log: %s)", d->log);

	/* some more load on the new generation */
	h_sleep(0.5);
	atomic_store(&w->stop, true);
	pthread_join(w->th, NULL);
	cr_assert(!atomic_load(&w->failed), "the writer failed: %s", w->error);
	cr_assert_gt(atomic_load(&w->transactions), 20, "the writer wrote only %ld transactions",
		     atomic_load(&w->transactions));
	wait_caught_up(proj, d);
	before_stop = alias_count(proj);
	atomic_store(&rd->stop, true);
	pthread_join(rd->th, NULL);
	h_stop(d, 30);
	assert_output_has(d, "writes to the alias paused", "daemon");

	cr_log_info("%s: rebuild took %.2fs; writer %ld transactions; reader %ld queries (%ld in the window),"
		    " %ld failed, min count %lld (start %lld, end %lld)",
		    proj, t_rebuild, atomic_load(&w->transactions), atomic_load(&rd->queries),
		    atomic_load(&rd->window_queries), atomic_load(&rd->failures),
		    (long long)atomic_load(&rd->min_count), start_count, before_stop);
	cr_assert_eq(atomic_load(&rd->failures), 0, "%ld of %ld reader queries failed; the first: %s",
		     atomic_load(&rd->failures), atomic_load(&rd->queries), rd->first_failure);
	cr_assert_gt(atomic_load(&rd->window_queries), 10, "the reader hardly ran");
	cr_assert_geq(atomic_load(&rd->min_count), start_count,
		      "readers saw %lld documents during the rebuild, fewer than the %lld at its start",
		      (long long)atomic_load(&rd->min_count), start_count);
	cr_assert_gt(before_stop, start_count, "the live writes did not reach the new generation");

	h_assert_docs_match_oracle(proj);
	cr_assert_eq(h_dead_letter_count(), 0, "dead letters were recorded");
	assert_generations(proj, "1:retired,2:active", "after the rebuild");
	/* esbridge status says the same */
	{
		struct h_proc *st = cli_ok((const char *const[]){ "status", NULL }, 30, "status");
		char *out = h_proc_output(st);
		bool retired = false, active = false;
		for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
			char p[64], idx[64], state[32];
			int g;
			if (sscanf(line, "%63s %d %63s %31s", p, &g, idx, state) != 4 || strcmp(p, proj))
				continue;
			if (g == 1 && !strcmp(idx, gen1) && !strcmp(state, "retired"))
				retired = true;
			if (g == 2 && !strcmp(idx, gen2) && !strcmp(state, "active"))
				active = true;
		}
		free(out);
		cr_assert(retired && active, "esbridge status does not show %s retired and %s active (log: %s)",
			  gen1, gen2, st->log);
	}
	free(w);
	free(rd);
}

Test(rebuild, products_under_load, .timeout = 150)
{
	rebuild_under_load(PRODUCTS);
}

Test(rebuild, orders_under_load, .timeout = 150)
{
	rebuild_under_load(ORDERS);
}

/* ---- b. a mapping change --------------------------------------------------------- */

/* Hits of a query through the alias (hits.total.value), the first _id in `first`. */
static long search_hits(const char *alias, const char *query, char *first, size_t firstsz)
{
	static const char *total_path[] = { "hits", "total", "value", NULL };
	static const char *hits_path[] = { "hits", "hits", NULL };
	static const char *id_path[] = { "_id", NULL };
	char path[256];
	struct h_http r;
	yajl_val v, t, hits;
	long n;

	snprintf(path, sizeof(path), "/%s/_search", alias);
	r = h_es("POST", path, query);
	cr_assert_eq(r.status, 200, "search %s: HTTP %ld: %.300s", query, r.status, r.body);
	v = yajl_tree_parse(r.body, NULL, 0);
	t = v ? yajl_tree_get(v, total_path, yajl_t_number) : NULL;
	cr_assert_not_null(t, "search %s: %.300s", query, r.body);
	n = (long)YAJL_GET_INTEGER(t);
	hits = yajl_tree_get(v, hits_path, yajl_t_array);
	if (first && firstsz) {
		yajl_val id = hits && hits->u.array.len ? yajl_tree_get(hits->u.array.values[0], id_path, yajl_t_string) : NULL;
		snprintf(first, firstsz, "%s", id ? YAJL_GET_STRING(id) : "");
	}
	yajl_tree_free(v);
	h_http_free(&r);
	return n;
}

Test(rebuild, mapping_change_reaches_the_new_generation, .timeout = 90)
{
	static const char *mapping_path[] = { GEN2, "mappings", "properties", "name", "fields", "raw", "type", NULL };
	char dir[] = "/tmp/esbridge-mappings-XXXXXX", path[256], id[64];
	char *orig, *changed;
	const char *params[1], *raw_type;
	struct h_proc *p;
	struct h_http r;
	yajl_val v, t;

	h_begin();
	h_insert_generated_products(1, 3500);
	h_event(NULL, "product-exact", "ProductCreated",
		"{\"product_id\": \"exact\", \"name\": \"Walnut Desk Lamp, large\", \"price\": 49.9}");
	run_once_ok(NULL);
	assert_alias("products", GEN1, "after run --once");

	/* the same mapping with one more sub-field, name.raw (keyword), in a folder of our own */
	cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	orig = h_read_file("mappings/products.json", NULL);
	params[0] = orig;
	changed = h_query_text(NULL,
		"SELECT jsonb_pretty(jsonb_set($1::jsonb, '{mappings,properties,name,fields,raw}',"
		" '{\"type\": \"keyword\"}'))", 1, params);
	free(orig);
	snprintf(path, sizeof(path), "%s/products.json", dir);
	h_write_file(path, changed);
	free(changed);
	orig = h_read_file("mappings/orders.json", NULL);
	snprintf(path, sizeof(path), "%s/orders.json", dir);
	h_write_file(path, orig);
	free(orig);

	/* no daemon runs: the CLI rebuilds in its own process */
	p = cli_ok((const char *const[]){ "rebuild", "products", "--mappings-dir", dir, NULL }, 60,
		   "rebuild --mappings-dir");
	assert_output_has(p, "done products 2 write-pause-ms", "rebuild");
	assert_alias("products", GEN2, "after the rebuild");

	r = h_es("GET", "/products/_mapping", NULL);
	cr_assert_eq(r.status, 200, "GET /products/_mapping: HTTP %ld", r.status);
	v = yajl_tree_parse(r.body, NULL, 0);
	cr_assert(v && YAJL_IS_OBJECT(v) && v->u.object.len == 1, "GET /products/_mapping: %.300s", r.body);
	t = yajl_tree_get(v, mapping_path, yajl_t_string);
	raw_type = t ? YAJL_GET_STRING(t) : NULL;
	cr_assert(raw_type && !strcmp(raw_type, "keyword"), "the new index has no name.raw keyword: %.600s",
		  r.body);
	yajl_tree_free(v);
	h_http_free(&r);

	/* an exact-name term query on the new sub-field, through the alias */
	cr_assert_eq(search_hits("products", "{\"query\":{\"term\":{\"name.raw\":\"Walnut Desk Lamp, large\"}}}",
				 id, sizeof(id)), 1);
	cr_assert_str_eq(id, "exact");
	cr_assert_eq(search_hits("products", "{\"query\":{\"term\":{\"name.raw\":\"walnut desk lamp, large\"}}}",
				 NULL, 0), 0, "name.raw is not exact");
	h_assert_docs_match_oracle("products");
	assert_generations("products", "1:retired,2:active", "after the rebuild");

	snprintf(path, sizeof(path), "%s/products.json", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/orders.json", dir);
	unlink(path);
	rmdir(dir);
}

/* ---- c. a crash at each step ------------------------------------------------------- */

/*
 * A history, generation 1 active (run --once), more events, then an
 * in-process `esbridge rebuild products` that kills itself at `step`.
 */
static void crash_rebuild_at(const char *step)
{
	char env[64], mark[96];
	struct h_proc *p;

	h_begin();
	h_insert_generated_products(1, 6000);
	run_once_ok(NULL);
	assert_alias("products", GEN1, "after run --once");
	h_insert_generated_products(6001, 7000);

	snprintf(env, sizeof(env), "ESBRIDGE_CRASH_AT=%s", step);
	p = h_spawn_ex(0, NULL, (const char *const[]){ env, NULL }, (const char *const[]){ "rebuild", "products", NULL });
	if (!h_wait(p, 60)) {
		h_kill(p);
		cr_assert_fail("rebuild with %s did not die within 60s (log: %s)", env, p->log);
	}
	cr_assert_eq(h_term_signal(p), SIGKILL, "rebuild with %s: status 0x%x, want death by SIGKILL (log: %s)",
		     env, (unsigned)p->status, p->log);
	snprintf(mark, sizeof(mark), "ESBRIDGE_CRASH_AT=%s: killing this process", step);
	assert_output_has(p, mark, "rebuild");
}

/*
 * The shipped binary has no crash points: ESBRIDGE_CRASH_AT in its
 * environment changes nothing (the rebuild ends, exit 0).
 */
Test(rebuild, the_shipped_binary_has_no_crash_points, .timeout = 90)
{
	struct h_proc *p;

	h_begin();
	h_insert_generated_products(1, 2000);
	run_once_ok(NULL);
	p = h_spawn_ex(0, h_bin(), (const char *const[]){ "ESBRIDGE_CRASH_AT=caught-up", NULL },
		       (const char *const[]){ "rebuild", "products", NULL });
	cr_assert(h_wait(p, 60), "rebuild did not end within 60s (log: %s)", p->log);
	cr_assert_eq(h_exit_code(p), 0, "rebuild with ESBRIDGE_CRASH_AT: status 0x%x (log: %s)",
		     (unsigned)p->status, p->log);
	assert_alias("products", GEN2, "after the rebuild");
}

/* Recovery of a stop before the alias moved: `esbridge rebuild` resumes generation 2. */
static void resume_with_rebuild(void)
{
	struct h_proc *p = cli_ok((const char *const[]){ "rebuild", "products", NULL }, 60, "the second rebuild");

	assert_output_has(p, "resuming the rebuild of " GEN2, "the second rebuild");
	assert_output_has(p, "done products 2 write-pause-ms", "the second rebuild");
	assert_alias("products", GEN2, "after the second rebuild");
	assert_generations("products", "1:retired,2:active", "after the second rebuild");
	h_assert_docs_match_oracle("products");
}

Test(rebuild, crash_at_caught_up, .timeout = 90)
{
	crash_rebuild_at("caught-up");
	assert_alias("products", GEN1, "right after the crash");
	assert_generations("products", "1:active,2:building", "right after the crash");
	h_insert_generated_products(7001, 7500);
	resume_with_rebuild();
}

Test(rebuild, crash_at_paused, .timeout = 90)
{
	crash_rebuild_at("paused");
	assert_alias("products", GEN1, "right after the crash");
	assert_generations("products", "1:active,2:building", "right after the crash");
	h_insert_generated_products(7001, 7500);
	resume_with_rebuild();
}

Test(rebuild, crash_at_alias_moved, .timeout = 90)
{
	crash_rebuild_at("alias-moved");
	assert_alias("products", GEN2, "right after the crash");
	/* the state was not written yet: the next start trusts the alias */
	assert_generations("products", "1:active,2:ready", "right after the crash");
	h_insert_generated_products(7001, 7500);
	run_once_ok(NULL);
	assert_alias("products", GEN2, "after run --once");
	assert_generations("products", "1:retired,2:active", "after run --once");
	h_assert_docs_match_oracle("products");
}

Test(rebuild, crash_at_swapped, .timeout = 90)
{
	crash_rebuild_at("swapped");
	assert_alias("products", GEN2, "right after the crash");
	assert_generations("products", "1:retired,2:active", "right after the crash");
	h_insert_generated_products(7001, 7500);
	run_once_ok(NULL);
	assert_alias("products", GEN2, "after run --once");
	assert_generations("products", "1:retired,2:active", "after run --once");
	h_assert_docs_match_oracle("products");
}

/*
 * README: a building generation goes on catching up "at the next `esbridge
 * run` or `esbridge rebuild NAME` (`run --once` catches up the active
 * generation only)". After a stop before the alias moved, events arrive:
 * `run --once` brings generation 1 (the one readers see) to the head and
 * leaves generation 2 where it was; `esbridge rebuild` then finishes it.
 */
Test(rebuild, run_once_leaves_a_building_generation_to_rebuild, .timeout = 90)
{
	long long before, after;
	uint64_t t;
	int64_t head;

	crash_rebuild_at("caught-up");
	before = gen_checkpoint("products", 2);
	h_insert_generated_products(7001, 7500);
	last_event(&t, &head);
	run_once_ok(NULL);
	assert_alias("products", GEN1, "after run --once");
	after = gen_checkpoint("products", 2);
	{
		char *g = generations("products");
		cr_assert(!strcmp(g, "1:active,2:building"), "after run --once: %s", g);
		free(g);
	}
	cr_expect_eq(after, before, "run --once moved the building generation from %lld to %lld", before,
		     after);
	cr_expect_eq(gen_checkpoint("products", 1), head, "generation 1 is not at the head");
	h_assert_docs_match_oracle("products");
	/* `esbridge rebuild` finishes it */
	resume_with_rebuild();
}

Test(rebuild, sigkill_during_catch_up_then_resume, .timeout = 120)
{
	static const char *const slow[] = { "rebuild", "products", "--batch-size", "200", "--bulk-actions", "50", NULL };
	struct h_proc *p;
	long long at, resumed;
	uint64_t t;
	int64_t head;

	h_begin();
	h_insert_generated_products(1, 25000);
	run_once_ok(NULL);
	assert_alias("products", GEN1, "after run --once");
	last_event(&t, &head);

	p = h_spawn(0, slow);
	H_EVENTUALLY(gen_checkpoint("products", 2) > 2000 || !p->running, 60,
		     "generation 2 never moved (log: %s)", p->log);
	cr_assert(p->running, "the rebuild ended before the kill (log: %s)", p->log);
	h_kill(p);
	at = gen_checkpoint("products", 2);
	cr_log_info("killed the rebuild with generation 2 at %lld of %" PRId64, at, head);
	cr_assert(at > 0 && at < head, "the kill did not happen mid-way: checkpoint %lld of %" PRId64, at, head);
	assert_alias("products", GEN1, "right after the kill");
	assert_generations("products", "1:active,2:building", "right after the kill");

	h_insert_generated_products(25001, 26000);
	p = cli_ok((const char *const[]){ "rebuild", "products", NULL }, 60, "the resumed rebuild");
	assert_output_has(p, "resuming the rebuild of " GEN2, "the resumed rebuild");
	assert_alias("products", GEN2, "after the resumed rebuild");
	assert_generations("products", "1:retired,2:active", "after the resumed rebuild");
	/* it went on from the checkpoint: fewer events read than the whole history */
	resumed = stopped_events(p, "products", 2);
	cr_assert(resumed > 0 && resumed < 26000, "the resumed rebuild read %lld events (checkpoint was %lld of 26000)",
		  resumed, at);
	h_assert_docs_match_oracle("products");
}

/* ---- d. one at a time, scripts/reindex, --keep ---------------------------------------- */

Test(rebuild, one_rebuild_at_a_time, .timeout = 120)
{
	static const char *const run_args[] = {
		"run", "--projection", "products", "--poll-interval", "0.2", "--bulk-actions", "5",
		"--batch-size", "50", NULL,
	};
	struct h_proc *d, *first, *second;
	int code;

	h_begin();
	h_insert_generated_products(1, 12000);
	run_once_ok((const char *const[]){ "--projection", "products", NULL });
	d = h_spawn(0, run_args);
	wait_owner(d, "products");
	first = h_spawn(0, (const char *const[]){ "rebuild", "products", NULL });
	H_EVENTUALLY(h_query_ll(NULL, "SELECT count(*) FROM esbridge.commands WHERE projection = 'products'"
				" AND status = 'running'", 0, NULL, 0) == 1 || !first->running,
		     30, "the daemon never took the rebuild command (log: %s)", d->log);
	cr_assert(first->running, "the first rebuild ended already (log: %s)", first->log);
	cr_assert_lt(gen_checkpoint("products", 2), 12000, "the rebuild is not in progress any more");

	second = h_spawn(0, (const char *const[]){ "rebuild", "products", NULL });
	code = finish(second, 30, "the second rebuild");
	cr_assert(code != 0 && code != -1, "a second rebuild during the first: exit status 0x%x, want non-zero (log: %s)",
		  (unsigned)second->status, second->log);
	assert_output_has(second, "a rebuild of 'products' is already running", "the second rebuild");
	cr_assert(first->running || h_exit_code(first) == 0, "the first rebuild failed (log: %s)", first->log);

	assert_exit0(first, 90, "the first rebuild");
	assert_alias("products", GEN2, "after the first rebuild");
	assert_generations("products", "1:retired,2:active", "after the first rebuild");
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.commands", 0, NULL, 0), 1,
		     "the refused request left a command row");
	wait_caught_up("products", d);
	h_stop(d, 30);
	h_assert_docs_match_oracle("products");
}

Test(rebuild, reindex_script, .timeout = 90)
{
	char env[600];
	struct h_proc *p;
	char *out;
	int code;

	h_begin();
	h_insert_generated_products(1, 12000);
	run_once_ok(NULL);
	snprintf(env, sizeof(env), "ESBRIDGE_BIN=%s", h_bin());

	/* stdout is a file: plain progress lines (a slow rebuild shows a few) */
	p = h_spawn_ex(0, "scripts/reindex", (const char *const[]){ env, NULL },
		       (const char *const[]){ "products", "--batch-size", "50", "--bulk-actions", "5", NULL });
	assert_exit0(p, 60, "scripts/reindex products");
	assert_output_has(p, "reindex done: products 2", "scripts/reindex");
	assert_output_has(p, "products: generation 2: position ", "scripts/reindex");
	out = h_proc_output(p);
	cr_assert_null(strchr(out, '\r'), "a carriage return (a terminal's bar) in the output to a file (log: %s)",
		       p->log);
	free(out);
	assert_alias("products", GEN2, "after scripts/reindex");
	h_assert_docs_match_oracle("products");

	p = h_spawn_ex(0, "scripts/reindex", (const char *const[]){ env, NULL }, (const char *const[]){ "nosuch", NULL });
	code = finish(p, 30, "scripts/reindex nosuch");
	cr_assert(code > 0, "scripts/reindex nosuch: status 0x%x, want a non-zero exit (log: %s)", (unsigned)p->status,
		  p->log);
	assert_output_has(p, "unknown projection 'nosuch'", "scripts/reindex nosuch");
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.generations WHERE projection = 'nosuch'", 0,
				NULL, 0), 0);
}

Test(rebuild, keep_one_retired_index, .timeout = 120)
{
	static const char *const run_args[] = { "run", "--projection", "products", "--poll-interval", "0.2", NULL };
	struct h_proc *d;
	char *indices;
	int conns_before, conns_after;

	h_begin();
	h_insert_generated_products(1, 4000);
	d = h_spawn(0, run_args);
	H_EVENTUALLY(h_alias_is("products", GEN1), H_LONG, "the alias never named %s (log: %s)", GEN1, d->log);
	wait_caught_up("products", d);
	conns_before = backends();
	/* three rebuilds through the daemon, events arriving in between */
	for (int i = 0; i < 3; i++) {
		char want[64], what[64];
		struct h_proc *p;
		h_insert_generated_products(4001 + i * 300, 4300 + i * 300);
		snprintf(what, sizeof(what), "rebuild %d", i + 1);
		p = cli_ok((const char *const[]){ "rebuild", "products", "--keep", "1", NULL }, 60, what);
		assert_output_has(p, "sent it rebuild command", what);
		snprintf(want, sizeof(want), "products-%06d", i + 2);
		assert_alias("products", want, what);
	}
	indices = cat_indices("products");
	cr_assert_str_eq(indices, "products-000003,products-000004",
			 "with --keep 1 the products indices are [%s], want the active one and one retired", indices);
	free(indices);
	assert_generations("products", "3:retired,4:active", "after three rebuilds");
	wait_caught_up("products", d);
	conns_after = backends();
	cr_log_info("PostgreSQL connections besides the test's: %d before the rebuilds, %d after", conns_before,
		    conns_after);
	/* the pipelines of retired generations are done with: their connections too (one may linger) */
	cr_expect_leq(conns_after, conns_before + 1,
		      "the daemon holds %d PostgreSQL connections after three rebuilds, %d before", conns_after,
		      conns_before);
	h_stop(d, 30);
	h_assert_docs_match_oracle("products");
}

/* ---- e. stops that are not crashes --------------------------------------------------- */

/*
 * README: `esbridge rebuild` "exits once the alias moved"; exit 0 means
 * success; scripts/reindex "exits 0 only once the alias names the new
 * generation" (it trusts esbridge's exit code and its "done" line). An
 * in-process rebuild stopped by SIGTERM before the swap has not succeeded.
 */
static void interrupted_rebuild(int sig);

Test(rebuild, sigterm_before_the_swap_is_not_success, .timeout = 90)
{
	interrupted_rebuild(SIGTERM);
}

/*
 * A hang-up (the terminal of scripts/reindex closed) stops an in-process
 * rebuild as SIGINT does, instead of reloading the settings and going on
 * in the background.
 */
Test(rebuild, sighup_stops_an_in_process_rebuild, .timeout = 90)
{
	interrupted_rebuild(SIGHUP);
}

static void interrupted_rebuild(int sig)
{
	static const char *const slow[] = { "rebuild", "products", "--batch-size", "200", "--bulk-actions", "20", NULL };
	struct h_proc *p;
	char *out;
	bool done_line;
	int code;

	h_begin();
	h_insert_generated_products(1, 20000);
	run_once_ok(NULL);
	p = h_spawn(0, slow);
	H_EVENTUALLY(gen_checkpoint("products", 2) > 1000 || !p->running, 60,
		     "generation 2 never moved (log: %s)", p->log);
	cr_assert(p->running, "the rebuild ended before the signal (log: %s)", p->log);
	h_signal(p, sig);
	code = finish(p, 30, "the interrupted rebuild");
	assert_alias("products", GEN1, "after the interrupted rebuild");
	assert_generations("products", "1:active,2:building", "after the interrupted rebuild");
	out = h_proc_output(p);
	done_line = strstr(out, "\ndone products") != NULL || !strncmp(out, "done products", 13);
	free(out);
	cr_expect(!done_line, "the interrupted rebuild printed a \"done products\" line though the alias did not move"
		  " (log: %s)", p->log);
	cr_expect_eq(code, 1, "the interrupted rebuild exited %d (status 0x%x), not 1, though the alias still"
		     " names %s (log: %s)", code, (unsigned)p->status, GEN1, p->log);
	/* it is resumable */
	resume_with_rebuild();
}

/*
 * A daemon stopped (SIGTERM, exit 0) while it runs a rebuild command, then
 * started again: README says the building generation goes on at the next
 * start and the CLI "follows the progress" and "exits once the alias
 * moved"; one rebuild at a time, so once it is done a new one is accepted.
 */
Test(rebuild, daemon_restart_during_a_rebuild_command, .timeout = 120)
{
	static const char *const slow_run[] = {
		"run", "--projection", "products", "--poll-interval", "0.2", "--bulk-actions", "5",
		"--batch-size", "50", NULL,
	};
	static const char *const run_args[] = { "run", "--projection", "products", "--poll-interval", "0.2", NULL };
	struct h_proc *d, *cli, *again;
	double swapped;
	int code;

	h_begin();
	h_insert_generated_products(1, 20000);
	run_once_ok((const char *const[]){ "--projection", "products", NULL });
	d = h_spawn(0, slow_run);
	wait_owner(d, "products");
	cli = h_spawn(0, (const char *const[]){ "rebuild", "products", NULL });
	H_EVENTUALLY(gen_checkpoint("products", 2) > 500 || !cli->running, 30,
		     "the daemon never started the rebuild (log: %s)", d->log);
	cr_assert(cli->running, "the rebuild ended before the daemon's stop (log: %s)", cli->log);
	h_stop(d, 30);
	assert_alias("products", GEN1, "after the daemon's stop");

	d = h_spawn(0, run_args);
	H_EVENTUALLY(h_alias_is("products", GEN2), H_LONG, "the restarted daemon did not finish the rebuild (log: %s)",
		     d->log);
	swapped = h_now();

	/* the waiting CLI ends (the command is done once the state names generation 2 active) */
	if (!h_wait(cli, 15)) {
		char *status = h_query_text(NULL, "SELECT string_agg(id || ':' || status, ',' ORDER BY id)"
					    " FROM esbridge.commands", 0, NULL);
		cr_expect_fail("`esbridge rebuild` still waits %.0fs after the alias moved to %s; esbridge.commands:"
			       " %s (log: %s)", h_now() - swapped, GEN2, status ? status : "(none)", cli->log);
		free(status);
		h_kill(cli);
	}
	/* it waited for the restarted daemon, which finished the rebuild and its command */
	cr_assert_eq(h_exit_code(cli), 0, "`esbridge rebuild` exited %d across the daemon's restart, want 0 (log: %s)",
		     h_exit_code(cli), cli->log);
	assert_output_has(cli, "done products", "the waiting rebuild");
	assert_generations("products", "1:retired,2:active", "after the resumed rebuild");

	/* nothing runs now: a new rebuild through the daemon is accepted */
	again = h_spawn(0, (const char *const[]){ "rebuild", "products", NULL });
	code = finish(again, 60, "the next rebuild");
	cr_assert_eq(code, 0, "a rebuild after the resumed one: exit status 0x%x, want 0 (log: %s)",
		     (unsigned)again->status, again->log);
	assert_alias("products", "products-000003", "after the next rebuild");
	wait_caught_up("products", d);
	h_stop(d, 30);
	h_assert_docs_match_oracle("products");
}

/*
 * The owner dies in the middle of a rebuild command (ESBRIDGE_CRASH_AT kills
 * it once the new generation has caught up); the standby takes the
 * projection over, resumes the rebuild and the command with it, and the
 * waiting `esbridge rebuild` reports it done and exits 0: it gives another
 * process 10 s to own a projection whose owner stopped before saying the
 * rebuild stopped (before, it said so and exited 1 as soon as it found the
 * lock free, while the standby went on to finish the rebuild).
 */
Test(rebuild, standby_finishes_a_rebuild_command, .timeout = 120)
{
	static const char *const run_args[] = { "run", "--projection", "products", "--poll-interval", "0.2", NULL };
	struct h_proc *owner, *standby, *cli;

	h_begin();
	h_insert_generated_products(1, 6000);
	run_once_ok((const char *const[]){ "--projection", "products", NULL });
	owner = h_spawn_ex(0, NULL, (const char *const[]){ "ESBRIDGE_CRASH_AT=caught-up", NULL }, run_args);
	wait_owner(owner, "products");
	standby = h_spawn(0, run_args);
	H_EVENTUALLY(h_output_count(standby, "standing by to take over") > 0 || !standby->running, 30,
		     "the second daemon did not stand by (log: %s)", standby->log);
	cr_assert(standby->running, "the standby exited (log: %s)", standby->log);

	cli = h_spawn(0, (const char *const[]){ "rebuild", "products", NULL });
	cr_assert(h_wait(owner, 60), "the owner did not kill itself at caught-up (log: %s)", owner->log);
	cr_assert_eq(h_term_signal(owner), SIGKILL, "the owner: status 0x%x, want death by SIGKILL (log: %s)",
		     (unsigned)owner->status, owner->log);
	assert_exit0(cli, 60, "the waiting rebuild (the standby finished the rebuild)");
	assert_output_has(cli, "done products", "the waiting rebuild");
	assert_output_has(standby, "took over", "the standby");
	assert_alias("products", GEN2, "after the standby's rebuild");
	assert_generations("products", "1:retired,2:active", "after the standby's rebuild");
	wait_caught_up("products", standby);
	h_stop(standby, 30);
	h_assert_docs_match_oracle("products");
}

/*
 * A rebuild command that no process takes: the CLI found the projection's
 * lock held (here by a session that lets go of it soon after, as a daemon
 * killed right then would), sent its command, and then no process owned
 * the projection. After 10 s it withdraws the command and rebuilds in this
 * process (before, it waited for the pending command forever).
 */
Test(rebuild, a_command_no_process_takes_is_withdrawn, .timeout = 120)
{
	PGconn *holder;
	struct h_proc *cli;

	h_begin();
	h_insert_generated_products(1, 2000);
	run_once_ok((const char *const[]){ "--projection", "products", NULL });
	holder = h_connect();
	h_sql(holder, "SELECT pg_advisory_lock(hashtext('esbridge.projection'), hashtext('products'))");
	cli = h_spawn(0, (const char *const[]){ "rebuild", "products", NULL });
	H_EVENTUALLY(h_output_count(cli, "sent it rebuild command") > 0 || !cli->running, 30,
		     "the rebuild did not send a command to the lock's holder (log: %s)", cli->log);
	cr_assert(cli->running, "the rebuild ended while the lock was held (log: %s)", cli->log);
	h_disconnect(holder);
	assert_exit0(cli, 60, "the rebuild");
	assert_output_has(cli, "withdrew it", "the rebuild");
	assert_output_has(cli, "done products 2 write-pause-ms", "the rebuild");
	assert_alias("products", GEN2, "after the rebuild");
	assert_generations("products", "1:retired,2:active", "after the rebuild");
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.commands WHERE status = 'failed'"
				      " AND message = 'no esbridge process took it'", 0, NULL, -1), 1,
		     "the withdrawn command is not marked failed");
	h_assert_docs_match_oracle("products");
}

/* README: "Retired indices beyond the newest --keep N (default 1) are deleted", a resumed rebuild too. */
Test(rebuild, resumed_rebuild_honours_keep, .timeout = 90)
{
	struct h_proc *p;
	char *indices;

	crash_rebuild_at("paused");
	p = cli_ok((const char *const[]){ "rebuild", "products", "--keep", "0", NULL }, 60, "rebuild --keep 0");
	assert_output_has(p, "resuming the rebuild of " GEN2, "rebuild --keep 0");
	assert_alias("products", GEN2, "after rebuild --keep 0");
	indices = cat_indices("products");
	cr_expect_str_eq(indices, GEN2, "after a resumed `rebuild --keep 0` the products indices are [%s], want [%s]",
			 indices, GEN2);
	free(indices);
	h_assert_docs_match_oracle("products");
}
