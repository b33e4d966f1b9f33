/*
 * Integration tests of the orders projection: the real daemon between a
 * real PostgreSQL and a real search node, its documents compared with an
 * independent SQL fold of the events (tests/oracle/orders.sql), money
 * checked to the cent in the node's raw JSON text.
 *
 * Every test starts from an empty world (h_begin) and fails, rather than
 * skips, when a service is unreachable. Daemon logs: build/tests/logs/.
 * Tests that draw random moments log their seed; ESBRIDGE_TEST_SEED=N
 * repeats a run.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <yajl/yajl_tree.h>

#include "harness.h"

#define ALIAS "orders" /* the projection, its alias and its oracle */
#define INDEX "orders-000001"
#define GEN_ORDERS 20000

/*
 * The benchmark's deterministic order history, tests/bench/gen_orders.sql as
 * committed (up to 463d47a), kept here verbatim so that the test does not
 * depend on the benchmark's files: psql-style variables :orders and :seed.
 */
static const char gen_orders_sql[] =
	"-- Deterministic order history: psql -v orders=N -v seed=0.42 -f gen_orders.sql\n"
	"-- Each order: created, 1-5 items added a few minutes apart, sometimes one\n"
	"-- removed, then shipped a day later and completed three days later, or\n"
	"-- cancelled within hours, or left open. Events of different orders are\n"
	"-- interleaved in time, the way a shop writes them.\n"
	"SELECT setseed(:seed);\n"
	"CREATE TEMP TABLE gen_orders AS\n"
	"SELECT o,\n"
	"       (random() * 86400 * 30)::int AS start_s,\n"
	"       1 + (random() * 4.999)::int AS n_items,\n"
	"       random() < 0.3 AS removes,\n"
	"       CASE WHEN random() < 0.6 THEN 'completed' WHEN random() < 0.5 THEN 'cancelled' ELSE 'open' END AS fate\n"
	"FROM generate_series(1, :orders) AS o;\n"
	"\n"
	"CREATE TEMP TABLE gen_events AS\n"
	"SELECT o, start_s, step, kind, n_items,\n"
	"       start_s + CASE kind WHEN 'OrderShipped' THEN 86400 WHEN 'OrderCompleted' THEN 3 * 86400\n"
	"                           WHEN 'OrderCancelled' THEN 7200 ELSE step * 120 END AS at_s\n"
	"FROM (\n"
	"  SELECT o, start_s, 0 AS step, 'OrderCreated' AS kind, n_items FROM gen_orders\n"
	"  UNION ALL\n"
	"  SELECT o, start_s, i, 'OrderItemAdded', n_items FROM gen_orders, generate_series(1, n_items) AS i\n"
	"  UNION ALL\n"
	"  SELECT o, start_s, n_items + 1, 'OrderItemRemoved', n_items FROM gen_orders WHERE removes\n"
	"  UNION ALL\n"
	"  SELECT o, start_s, n_items + 2, 'OrderShipped', n_items FROM gen_orders WHERE fate = 'completed'\n"
	"  UNION ALL\n"
	"  SELECT o, start_s, n_items + 3, 'OrderCompleted', n_items FROM gen_orders WHERE fate = 'completed'\n"
	"  UNION ALL\n"
	"  SELECT o, start_s, n_items + 2, 'OrderCancelled', n_items FROM gen_orders WHERE fate = 'cancelled'\n"
	") e;\n"
	"\n"
	"INSERT INTO events (stream_id, event_type, data, version, created_at)\n"
	"SELECT 'order-' || o,\n"
	"       kind,\n"
	"       CASE kind\n"
	"         WHEN 'OrderCreated' THEN jsonb_build_object('order_id', 'o' || o, 'customer_id', 'c' || (o % 997),\n"
	"              'created_at', to_char(to_timestamp(1767225600 + start_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"         WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'o' || o, 'product_id', 'p' || ((o * 7 + step) % 5000),\n"
	"              'price', ((o * 31 + step * 17) % 20000) / 100.0, 'quantity', 1 + (o + step) % 3)\n"
	"         WHEN 'OrderItemRemoved' THEN jsonb_build_object('order_id', 'o' || o, 'product_id', 'p' || ((o * 7 + 1) % 5000),\n"
	"              'price', ((o * 31 + 17) % 20000) / 100.0, 'quantity', 1)\n"
	"         WHEN 'OrderShipped' THEN jsonb_build_object('order_id', 'o' || o,\n"
	"              'shipped_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"         WHEN 'OrderCompleted' THEN jsonb_build_object('order_id', 'o' || o, 'customer_id', 'c' || (o % 997),\n"
	"              'total_amount', 0, 'item_count', n_items,\n"
	"              'completed_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"         ELSE jsonb_build_object('order_id', 'o' || o, 'reason', 'customer request',\n"
	"              'cancelled_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"       END,\n"
	"       step + 1,\n"
	"       to_timestamp(1767225600 + at_s)\n"
	"FROM gen_events\n"
	"ORDER BY at_s, o, step;\n";

/* Each test calls h_begin() first; .fini kills what it left running. */
static void suite_fini(void)
{
	h_end();
}

TestSuite(orders, .fini = suite_fini);

/* ---- helpers --------------------------------------------------------------- */

static uint64_t rng_state;

static void rng_seed(const char *test)
{
	const char *env = getenv("ESBRIDGE_TEST_SEED");

	if (env && *env)
		rng_state = strtoull(env, NULL, 0);
	else
		rng_state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
	cr_log_info("%s: random seed %" PRIu64 " (ESBRIDGE_TEST_SEED=%" PRIu64 " repeats it)", test,
		    rng_state, rng_state);
}

/* splitmix64 */
static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rng_below(unsigned n)
{
	return (unsigned)(rng_next() % n);
}

static double rng_unit(void)
{
	return (double)(rng_next() >> 11) / 9007199254740992.0;
}

/* Appends one event of order `id` (stream order-ID) on `c` (NULL = h_pg()). */
__attribute__((format(printf, 4, 5)))
static int64_t order_event(PGconn *c, const char *id, const char *type, const char *fmt, ...)
{
	char stream[128], data[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(data, sizeof(data), fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof(data), "event data too long");
	snprintf(stream, sizeof(stream), "order-%s", id);
	return h_event(c, stream, type, data);
}

static void created(const char *id, const char *customer)
{
	order_event(NULL, id, "OrderCreated",
		    "{\"order_id\": \"%s\", \"customer_id\": \"%s\", \"created_at\": \"2026-11-01T10:00:00Z\"}",
		    id, customer);
}

/* price: the JSON text of the price */
static void item(const char *type, const char *id, const char *price, int qty)
{
	order_event(NULL, id, type,
		    "{\"order_id\": \"%s\", \"product_id\": \"p-%s\", \"price\": %s, \"quantity\": %d}", id,
		    price, price, qty);
}

static void added(const char *id, const char *price, int qty)
{
	item("OrderItemAdded", id, price, qty);
}

static void removed(const char *id, const char *price, int qty)
{
	item("OrderItemRemoved", id, price, qty);
}

/* The deterministic history of gen_orders_sql (one transaction). */
static void generate_history(const char *seed)
{
	char orders[32], seed_var[64];
	const char *vars[3] = { orders, seed_var, NULL };
	PGconn *c = h_connect(); /* its temp tables die with it */

	snprintf(orders, sizeof(orders), "orders=%d", GEN_ORDERS);
	snprintf(seed_var, sizeof(seed_var), "seed=%s", seed);
	h_sql_vars(c, gen_orders_sql, vars);
	h_disconnect(c);
}

static long long order_event_count(void)
{
	return h_query_ll(NULL, "SELECT count(*) FROM public.events WHERE event_type LIKE 'Order%'", 0,
			  NULL, 0);
}

/* The last event in commit order: (transaction_id, global_position). */
static void last_event(uint64_t *txid, int64_t *pos)
{
	PGresult *res = h_exec(NULL,
		/* qualified: a bare transaction_id would name the text output column */
		"SELECT e.transaction_id::text AS txid, e.global_position FROM public.events e"
		" ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1", 0, NULL);

	cr_assert_eq(PQntuples(res), 1, "no events");
	*txid = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	*pos = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
}

struct run_stats {
	long long events, actions, requests, noops, retries, dead_letters;
};

/*
 * The counters of the daemon's last line about the orders projection
 * ("stopped at checkpoint T/P: N events, M actions, ...").
 */
static struct run_stats parse_stats(const struct h_proc *p)
{
	struct run_stats st = { -1, -1, -1, -1, -1, -1 };
	char *out = h_proc_output(p);
	const char *found = NULL;

	for (char *line = out; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (strstr(line, "proj=orders") && strstr(line, "stopped at checkpoint"))
			found = line;
		line = nl ? nl + 1 : NULL;
	}
	if (found) {
		const char *colon = strstr(found, "stopped at checkpoint");
		colon = colon ? strchr(colon, ':') : NULL;
		if (!colon || sscanf(colon, ": %lld events, %lld actions, %lld requests, %lld no-ops,"
				     " %lld retries, %lld dead letters", &st.events, &st.actions, &st.requests,
				     &st.noops, &st.retries, &st.dead_letters) != 6)
			found = NULL;
	}
	if (!found) {
		free(out);
		cr_assert_fail("no final \"stopped at checkpoint ...: N events, M actions, ...\" line"
			       " for proj=orders (log: %s)", p->log);
	}
	free(out);
	return st;
}

/* run --once with `args` (NULL-terminated); must exit 0. Returns its orders counters. */
static struct run_stats run_once(const char *const *args)
{
	const char *argv[32];
	struct h_proc *p;
	int n = 0;

	argv[n++] = "run";
	argv[n++] = "--once";
	for (int i = 0; args && args[i]; i++) {
		cr_assert_lt(n, 30);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	p = h_spawn(0, argv);
	if (!h_wait(p, H_LONG)) {
		h_kill(p);
		cr_assert_fail("run --once did not finish within %.0fs (log: %s)", H_LONG, p->log);
	}
	cr_assert_eq(h_exit_code(p), 0, "run --once: exit status 0x%x (log: %s)", (unsigned)p->status,
		     p->log);
	return parse_stats(p);
}

static const char *const ONLY_ORDERS[] = { "--projection", "orders", NULL };

static void assert_alias_names_index(void)
{
	cr_assert(h_alias_is(ALIAS, INDEX), "the alias orders does not name exactly %s", INDEX);
}

static void checkpoint(uint64_t *txid, int64_t *pos)
{
	cr_assert(h_checkpoint(ALIAS, txid, pos), "no orders generation in esbridge.generations");
}

/*
 * The text of total_amount in the raw _source of document `id` (a real-time
 * GET through the alias), malloc'd.
 */
static char *raw_total(const char *id)
{
	static const char key[] = "\"total_amount\":";
	char path[256];
	struct h_http r;
	const char *src, *k;
	char *out;
	size_t n;

	snprintf(path, sizeof(path), "/" ALIAS "/_doc/%s", id);
	r = h_es("GET", path, NULL);
	cr_assert_eq(r.status, 200, "GET %s: HTTP %ld: %.300s", path, r.status, r.body);
	src = strstr(r.body, "\"_source\":");
	k = src ? strstr(src, key) : NULL;
	cr_assert_not_null(k, "no total_amount in %s", r.body);
	k += sizeof(key) - 1;
	while (*k == ' ')
		k++;
	n = strspn(k, "-+0123456789.eE");
	cr_assert_gt(n, 0, "total_amount is not a number in %s", r.body);
	out = strndup(k, n);
	cr_assert_not_null(out);
	h_http_free(&r);
	return out;
}

/*
 * The raw total of `id` is numerically exactly `want` (a decimal), and
 * nothing but zeros follows its cents (no binary floating-point residue
 * such as 0.30000000000000004).
 */
static void assert_raw_total(const char *id, const char *want)
{
	char *t = raw_total(id);
	const char *params[2] = { t, want };

	cr_log_info("%s: raw total_amount %s (want %s)", id, t, want);
	cr_assert_eq(h_query_ll(NULL, "SELECT ($1::numeric = round($1::numeric, 2))::int", 1, params, 0), 1,
		     "order %s: total_amount %s has digits below the cent", id, t);
	cr_assert_eq(h_query_ll(NULL, "SELECT ($1::numeric = $2::numeric)::int", 2, params, 0), 1,
		     "order %s: total_amount %s, want %s", id, t, want);
	free(t);
}

/* After a load into es_docs: no document's total has digits below the cent. */
static void assert_no_float_residue(void)
{
	char *bad = h_query_text(NULL,
		"SELECT count(*) || ' documents, e.g. ' || coalesce(min(id || ': ' || (doc->'total_amount')::text), '')"
		"  FROM es_docs"
		" WHERE jsonb_typeof(doc->'total_amount') <> 'number'"
		"    OR (doc->>'total_amount')::numeric <> round((doc->>'total_amount')::numeric, 2)",
		0, NULL);

	cr_assert(bad && !strncmp(bad, "0 documents", 11), "totals with digits below the cent: %s",
		  bad ? bad : "?");
	free(bad);
}

/* The document `id` in es_docs, without the fields named in `minus` (SQL text[]), equals `want`. */
static void assert_doc(const char *id, const char *minus, const char *want)
{
	const char *params[3] = { id, minus, want };
	char *got = h_query_text(NULL, "SELECT (doc - $2::text[])::text FROM es_docs WHERE id = $1", 2,
				 params);

	cr_assert_not_null(got, "no document %s", id);
	cr_assert_eq(h_query_ll(NULL,
		"SELECT ((SELECT doc - $2::text[] FROM es_docs WHERE id = $1) = $3::jsonb)::int", 3, params, 0),
		1, "document %s is %s, want %s", id, got, want);
	free(got);
}

/* ---- a. a generated history, exact to the cent ------------------------------ */

Test(orders, generated_history_is_exact, .timeout = 150)
{
	long long many_cents = 0;
	char many_want[32];
	struct run_stats st;

	h_begin();
	generate_history("0.42");

	/* phase 1: created, some items: documents written whole (index) */
	created("h-cents-a", "c1");
	added("h-cents-a", "0.10", 1);
	created("h-cents-b", "c1");
	created("h-remove", "c2");
	added("h-remove", "19.99", 3);
	added("h-remove", "5.01", 1);
	created("h-cancel", "c3");
	added("h-cancel", "1.00", 2);
	order_event(NULL, "h-cancel", "OrderShipped",
		    "{\"order_id\": \"h-cancel\", \"shipped_at\": \"2026-11-02T10:00:00Z\"}");
	created("h-many", "c4");
	created("h-recreate", "c-old");
	added("h-recreate", "5.00", 1);
	order_event(NULL, "h-recreate", "OrderShipped",
		    "{\"order_id\": \"h-recreate\", \"shipped_at\": \"2026-11-02T10:00:00Z\"}");
	order_event(NULL, "4242", "OrderCreated",
		    "{\"order_id\": 4242, \"customer_id\": 7, \"created_at\": \"2026-11-01T10:00:00Z\"}");
	order_event(NULL, "4242", "OrderItemAdded",
		    "{\"order_id\": 4242, \"product_id\": 12, \"price\": 2.50, \"quantity\": 4}");
	created("h-drift", "c5");
	added("h-drift", "0.10", 1);
	st = run_once(ONLY_ORDERS);
	cr_assert_eq(st.dead_letters, 0);
	assert_alias_names_index();
	assert_raw_total("h-cents-a", "0.10");

	/* phase 2: guarded script updates on stored totals, re-creation, many items */
	added("h-cents-a", "0.20", 1);  /* 0.10 stored + 0.20 */
	added("h-cents-b", "0.10", 1);  /* two entries of one update */
	added("h-cents-b", "0.20", 1);
	created("h-cents-c", "c1");     /* one index action */
	added("h-cents-c", "0.10", 1);
	added("h-cents-c", "0.20", 1);
	removed("h-remove", "19.99", 1);
	added("h-remove", "0.01", 7);
	order_event(NULL, "h-cancel", "OrderCancelled",
		    "{\"order_id\": \"h-cancel\", \"reason\": \"changed \\\"my\\\" mind\","
		    " \"cancelled_at\": \"2026-11-03T10:00:00Z\"}");
	h_sql(NULL, "BEGIN");
	for (int i = 1; i <= 120; i++) {
		int cents = (i * 37) % 1000 + 1, qty = 1 + i % 4;
		char price[32];
		snprintf(price, sizeof(price), "%d.%02d", cents / 100, cents % 100);
		added("h-many", price, qty);
		many_cents += (long long)cents * qty;
		if (i % 10 == 0) { /* take back the line before */
			int pc = ((i - 1) * 37) % 1000 + 1, pq = 1 + (i - 1) % 4;
			snprintf(price, sizeof(price), "%d.%02d", pc / 100, pc % 100);
			removed("h-many", price, pq);
			many_cents -= (long long)pc * pq;
		}
	}
	h_sql(NULL, "COMMIT");
	snprintf(many_want, sizeof(many_want), "%lld.%02lld", many_cents / 100, many_cents % 100);
	created("h-recreate", "c-new"); /* resets the document: no shipped_at, total 0 */
	added("h-recreate", "0.05", 1);
	order_event(NULL, "4242", "OrderShipped",
		    "{\"order_id\": 4242, \"shipped_at\": \"2026-11-02T10:00:00Z\"}");
	order_event(NULL, "4242", "OrderCompleted",
		    "{\"order_id\": 4242, \"customer_id\": 7, \"total_amount\": 999.99, \"item_count\": 99,"
		    " \"completed_at\": \"2026-11-03T10:00:00Z\"}");
	added("h-drift", "0.20", 1);
	st = run_once(ONLY_ORDERS);
	cr_assert_eq(st.dead_letters, 0);

	/* phase 3: one more increment on totals the script wrote */
	added("h-drift", "0.10", 1);
	removed("h-cents-a", "0.10", 1);
	added("h-cents-a", "0.10", 1);
	st = run_once(ONLY_ORDERS);
	cr_assert_eq(st.dead_letters, 0);

	assert_alias_names_index();
	h_assert_docs_match_oracle(ALIAS);
	assert_no_float_residue();
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM es_docs", 0, NULL, 0), GEN_ORDERS + 9);
	cr_assert_eq(h_dead_letter_count(), 0);

	/* hand-checked facts, in case the oracle and the bridge agree on a mistake */
	assert_raw_total("h-cents-a", "0.30");
	assert_raw_total("h-cents-b", "0.30");
	assert_raw_total("h-cents-c", "0.30");
	assert_raw_total("h-remove", "45.06");  /* 3 x 19.99 + 5.01 - 19.99 + 7 x 0.01 */
	assert_raw_total("h-many", many_want);
	assert_raw_total("h-recreate", "0.05");
	assert_raw_total("4242", "10.00");
	assert_raw_total("h-drift", "0.40");
	assert_raw_total("h-cancel", "2.00");
	assert_doc("h-cents-b", "{updated_at,last_event}",
		   "{\"order_id\": \"h-cents-b\", \"customer_id\": \"c1\", \"status\": \"pending\","
		   " \"total_amount\": 0.30, \"item_count\": 2, \"created_at\": \"2026-11-01T10:00:00Z\"}");
	assert_doc("h-recreate", "{updated_at,last_event}",
		   "{\"order_id\": \"h-recreate\", \"customer_id\": \"c-new\", \"status\": \"pending\","
		   " \"total_amount\": 0.05, \"item_count\": 1, \"created_at\": \"2026-11-01T10:00:00Z\"}");
	assert_doc("4242", "{updated_at,last_event}",
		   "{\"order_id\": 4242, \"customer_id\": 7, \"status\": \"completed\", \"total_amount\": 10,"
		   " \"item_count\": 1, \"created_at\": \"2026-11-01T10:00:00Z\","
		   " \"shipped_at\": \"2026-11-02T10:00:00Z\", \"completed_at\": \"2026-11-03T10:00:00Z\"}");
	assert_doc("h-cancel", "{updated_at,last_event}",
		   "{\"order_id\": \"h-cancel\", \"customer_id\": \"c3\", \"status\": \"cancelled\","
		   " \"total_amount\": 2, \"item_count\": 1, \"created_at\": \"2026-11-01T10:00:00Z\","
		   " \"shipped_at\": \"2026-11-02T10:00:00Z\", \"cancelled_at\": \"2026-11-03T10:00:00Z\","
		   " \"cancellation_reason\": \"changed \\\"my\\\" mind\"}");
	assert_doc("h-many", "{order_id,customer_id,status,total_amount,created_at,updated_at,last_event}",
		   "{\"item_count\": 108}");
	/* updated_at and last_event: those of the last event, from the events table */
	cr_assert_eq(h_query_ll(NULL,
		"SELECT count(*) FROM es_docs d JOIN LATERAL ("
		"  SELECT e.transaction_id, e.global_position, e.created_at FROM public.events e"
		"   WHERE e.stream_id = 'order-4242' ORDER BY e.transaction_id DESC, e.global_position DESC"
		"   LIMIT 1) e ON true"
		" WHERE d.id = '4242'"
		"   AND d.doc->'last_event' = jsonb_build_object('txid', e.transaction_id::text::numeric,"
		"                                                'position', e.global_position)"
		"   AND d.doc->>'updated_at' = to_char(e.created_at AT TIME ZONE 'UTC',"
		"                                      'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", 0, NULL, 0), 1,
		"the last_event or updated_at of order 4242 is not that of its last event");
}

/* ---- b. SIGKILL during a catch-up, then a replay from the start ------------- */

struct cp_arg {
	uint64_t txid;
	int64_t pos;
	int64_t end; /* the checkpoint at this position means nothing is left */
};

/* The checkpoint moved past `prev`, or is at the end (nothing left to read). */
static bool moved_or_done(void *arg)
{
	struct cp_arg *a = arg;
	uint64_t t;
	int64_t p;

	if (!h_checkpoint(ALIAS, &t, &p))
		return false;
	return t > a->txid || (t == a->txid && p > a->pos) || p == a->end;
}

/* Items of 0.10 for `n` distinct generated orders (one statement, one transaction). */
static void add_tenths(int cycle, int n)
{
	char c[16], k[16];
	const char *params[2] = { c, k };

	snprintf(c, sizeof(c), "%d", cycle);
	snprintf(k, sizeof(k), "%d", n);
	PQclear(h_exec(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'order-' || o, 'OrderItemAdded',"
		"        jsonb_build_object('order_id', 'o' || o, 'product_id', 'tenth',"
		"                           'price', 0.10, 'quantity', 1),"
		"        (SELECT max(version) + 1 FROM public.events WHERE stream_id = 'order-' || o)"
		"   FROM (SELECT DISTINCT (i * 7919 + $1::int * 131) % 20000 + 1 AS o"
		"           FROM generate_series(1, $2::int) i) s",
		2, params));
}

#define MIN_KILLS 10

Test(orders, crash_loop_then_replay_from_zero, .timeout = 170)
{
	static const char *const args[] = {
		"run", "--projection", "orders", "--batch-size", "500", "--bulk-actions", "200",
		"--inflight", "3", "--poll-interval", "0.2", NULL,
	};
	static const char *const once_args[] = {
		"--projection", "orders", "--batch-size", "500", "--bulk-actions", "200", "--inflight", "3",
		NULL,
	};
	struct cp_arg prev = { 0, 0, 0 };
	uint64_t end_txid;
	int kills = 0, mid_way = 0, cycle;
	long long total;
	struct run_stats st;

	h_begin();
	rng_seed("crash_loop_then_replay_from_zero");
	generate_history("0.77");
	last_event(&end_txid, &prev.end);

	/* a kill while it sets up: state rows, index creation, script, first reads */
	{
		struct h_proc *p = h_spawn(0, args);
		h_sleep(0.02 + 0.1 * rng_unit());
		h_kill(p);
	}

	for (cycle = 0; mid_way < MIN_KILLS + 2 && cycle < 40; cycle++) {
		struct h_proc *p = h_spawn(0, args);
		uint64_t t;
		int64_t pos;
		double delay = 0.12 * rng_unit();

		cr_assert(h_eventually(moved_or_done, &prev, H_LONG),
			  "cycle %d: the checkpoint did not move (log: %s)", cycle, p->log);
		h_sleep(delay);
		cr_assert(p->running, "cycle %d: the daemon exited (log: %s)", cycle, p->log);
		h_kill(p);
		kills++;
		checkpoint(&t, &pos);
		cr_assert(t > prev.txid || (t == prev.txid && pos >= prev.pos),
			  "the checkpoint went back: %" PRIu64 "/%" PRId64 " -> %" PRIu64 "/%" PRId64,
			  prev.txid, prev.pos, t, pos);
		if (pos < prev.end)
			mid_way++;
		cr_log_info("cycle %d: SIGKILL %.3fs after progress, checkpoint %" PRIu64 "/%" PRId64
			    " of %" PRId64, cycle, delay, t, pos, prev.end);
		prev.txid = t;
		prev.pos = pos;
		/* more increments arrive while the bridge is down; plenty when it nears the end */
		add_tenths(cycle, prev.end - pos < 40000 ? 10000 : 200);
		last_event(&end_txid, &prev.end);
	}
	cr_assert_geq(mid_way, MIN_KILLS, "only %d of %d kills happened before the bridge caught up",
		      mid_way, kills);

	st = run_once(once_args);
	cr_assert_eq(st.dead_letters, 0);
	assert_alias_names_index();
	{
		uint64_t t;
		int64_t pos;
		checkpoint(&t, &pos);
		cr_assert(t == end_txid && pos == prev.end, "final checkpoint %" PRIu64 "/%" PRId64
			  ", want %" PRIu64 "/%" PRId64, t, pos, end_txid, prev.end);
	}
	h_assert_docs_match_oracle(ALIAS);
	assert_no_float_residue();
	cr_assert_eq(h_dead_letter_count(), 0);

	/* everything again from the start: the guard must ignore every increment already applied */
	total = order_event_count();
	h_sql(NULL, "UPDATE esbridge.generations SET checkpoint_txid = '0', checkpoint_pos = 0"
		    " WHERE projection = 'orders'");
	st = run_once(once_args);
	cr_assert_eq(st.events, total, "the replay read %lld events, want all %lld", st.events, total);
	cr_assert_eq(st.dead_letters, 0);
	h_assert_docs_match_oracle(ALIAS);
	assert_no_float_residue();
	cr_log_info("replay from zero: %lld events, %lld actions, %lld no-ops", st.events, st.actions,
		    st.noops);

	/*
	 * From zero, every order's creation comes again and resets it, so the
	 * increments after it apply again. From the middle of the history they
	 * must not: the orders already hold them, and only the guard stops
	 * them from being added twice.
	 */
	h_sql(NULL, "UPDATE esbridge.generations g SET checkpoint_txid = e.transaction_id,"
		    "       checkpoint_pos = e.global_position"
		    "  FROM (SELECT transaction_id, global_position FROM public.events"
		    "         ORDER BY global_position OFFSET 50000 LIMIT 1) e"
		    " WHERE g.projection = 'orders'");
	st = run_once(once_args);
	cr_assert_eq(st.events, total - 50001, "the replay from the middle read %lld events, want %lld",
		     st.events, total - 50001);
	cr_assert_eq(st.dead_letters, 0);
	h_assert_docs_match_oracle(ALIAS);
	assert_no_float_residue();
	/*
	 * Counted by esbridge from the items' "result":"noop": Elasticsearch
	 * before 8.14 leaves the no-op updates of _bulk out of its
	 * indexing.noop_update_total.
	 */
	cr_log_info("replay from the middle: %lld events, %lld actions, %lld no-ops", st.events, st.actions,
		    st.noops);
	cr_assert_gt(st.noops, 1000, "the replay from the middle made only %lld no-op updates: was the guard used?",
		     st.noops);
	cr_assert_leq(st.noops, st.actions);
}

/* ---- c. live writers, several requests in flight ------------------------------ */

#define LIVE_ORDERS 2000
#define MAX_LINES 8

struct live_order {
	int version;
	int n_lines;
	int price[MAX_LINES], qty[MAX_LINES];
	bool shipped, closed;
};

struct text {
	char *data;
	size_t len, cap;
};

static void text_add(struct text *t, const char *s)
{
	size_t n = strlen(s);

	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->data = realloc(t->data, t->cap);
		cr_assert_not_null(t->data);
	}
	memcpy(t->data + t->len, s, n + 1);
	t->len += n;
}

struct writer {
	PGconn *c;
	struct text sql;   /* the statements of its next transaction */
	int parity;        /* its orders: id % 2 == parity */
	int next;          /* its next order to create */
	bool open;         /* a transaction left open */
};

static void w_event(struct writer *w, struct live_order *orders, int o, const char *type,
		    const char *data)
{
	char stmt[1024];

	snprintf(stmt, sizeof(stmt),
		 "INSERT INTO public.events (stream_id, event_type, data, version)"
		 " VALUES ('order-L%d', '%s', '%s', %d);", o, type, data, ++orders[o].version);
	text_add(&w->sql, stmt);
}

static void w_item(struct writer *w, struct live_order *orders, int o, bool add)
{
	struct live_order *x = &orders[o];
	char data[256];
	int cents, qty;

	if (add || x->n_lines == 0) {
		cents = 1 + (int)rng_below(50000);
		qty = 1 + (int)rng_below(5);
		if (x->n_lines < MAX_LINES) {
			x->price[x->n_lines] = cents;
			x->qty[x->n_lines] = qty;
			x->n_lines++;
		}
		add = true;
	} else {
		int k = (int)rng_below((unsigned)x->n_lines);
		cents = x->price[k];
		qty = x->qty[k];
		x->price[k] = x->price[x->n_lines - 1];
		x->qty[k] = x->qty[x->n_lines - 1];
		x->n_lines--;
	}
	snprintf(data, sizeof(data),
		 "{\"order_id\": \"L%d\", \"product_id\": \"p%d\", \"price\": %d.%02d, \"quantity\": %d}", o,
		 cents % 97, cents / 100, cents % 100, qty);
	w_event(w, orders, o, add ? "OrderItemAdded" : "OrderItemRemoved", data);
}

/* One random step of an existing open order of the writer; false if it has none. */
static bool w_touch(struct writer *w, struct live_order *orders)
{
	char data[256];
	int o = -1;

	for (int tries = 0; tries < 20; tries++) {
		int created = (w->next - w->parity) / 2; /* orders of this writer created */
		int cand;
		if (created <= 0)
			return false;
		cand = w->parity + 2 * (int)rng_below((unsigned)created);
		if (!orders[cand].closed) {
			o = cand;
			break;
		}
	}
	if (o < 0)
		return false;
	switch (rng_below(20)) {
	case 0: case 1: case 2:
		w_item(w, orders, o, false);
		break;
	case 3: case 4:
		if (!orders[o].shipped) {
			snprintf(data, sizeof(data),
				 "{\"order_id\": \"L%d\", \"shipped_at\": \"2026-11-26T%02d:%02d:00Z\"}", o,
				 o % 24, o % 60);
			w_event(w, orders, o, "OrderShipped", data);
			orders[o].shipped = true;
			break;
		}
		/* fall through */
	case 5:
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"L%d\", \"customer_id\": \"c%d\", \"total_amount\": 1, \"item_count\": 1,"
			 " \"completed_at\": \"2026-11-27T%02d:00:00Z\"}", o, o % 31, o % 24);
		w_event(w, orders, o, "OrderCompleted", data);
		orders[o].closed = true;
		break;
	case 6:
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"L%d\", \"reason\": \"reason %d\", \"cancelled_at\": null}", o, o % 7);
		w_event(w, orders, o, "OrderCancelled", data);
		orders[o].closed = true;
		break;
	default:
		w_item(w, orders, o, true);
		break;
	}
	return true;
}

/* Builds one transaction of `n` steps into w->sql. */
static void w_transaction(struct writer *w, struct live_order *orders, int n)
{
	for (int i = 0; i < n; i++) {
		if (w->next < LIVE_ORDERS && (rng_below(3) == 0 || !w_touch(w, orders))) {
			char data[256];
			int o = w->next;
			w->next += 2;
			snprintf(data, sizeof(data),
				 "{\"order_id\": \"L%d\", \"customer_id\": \"c%d\","
				 " \"created_at\": \"2026-11-26T10:%02d:%02dZ\"}", o, o % 31, o % 60, o % 59);
			w_event(w, orders, o, "OrderCreated", data);
			/* items in the creating transaction, sometimes */
			for (int k = (int)rng_below(4); k > 0; k--)
				w_item(w, orders, o, true);
		}
	}
}

/* Sends prefix + the pending statements + suffix in one round trip. */
static void w_exec(struct writer *w, const char *prefix, const char *suffix)
{
	struct text all = { 0 };

	text_add(&all, prefix);
	if (w->sql.data)
		text_add(&all, w->sql.data);
	text_add(&all, suffix);
	h_sql(w->c, all.data);
	free(all.data);
	w->sql.len = 0;
	if (w->sql.data)
		w->sql.data[0] = '\0';
}

Test(orders, live_writers_with_requests_in_flight, .timeout = 150)
{
	static const char *const args[] = {
		"run", "--inflight", "4", "--poll-interval", "0.2", "--projection", "orders", NULL,
	};
	static struct live_order orders[LIVE_ORDERS];
	struct writer w1 = { .parity = 0, .next = 0 }, w2 = { .parity = 1, .next = 1 };
	struct h_proc *p;
	uint64_t last_txid;
	int64_t last_pos;
	int transactions = 0;
	double t0;

	h_begin();
	rng_seed("live_writers_with_requests_in_flight");
	memset(orders, 0, sizeof(orders));
	p = h_spawn(0, args);
	H_EVENTUALLY(h_alias_is(ALIAS, INDEX), H_LONG, "the alias never named %s (log: %s)", INDEX, p->log);

	/*
	 * Two writers, even and odd orders: w1 commits small transactions one
	 * after the other; w2 leaves each of its transactions open across a few
	 * of w1's, so commits come out of position order. An order's events all
	 * come from one writer, in order.
	 */
	w1.c = h_connect();
	w2.c = h_connect();
	t0 = h_now();
	while (w1.next < LIVE_ORDERS || w2.next < LIVE_ORDERS || transactions < 2000) {
		w_transaction(&w1, orders, 1 + (int)rng_below(5));
		w_exec(&w1, "BEGIN;", "COMMIT;");
		transactions++;
		if (!w2.open) {
			w_transaction(&w2, orders, 2 + (int)rng_below(7));
			w_exec(&w2, "BEGIN;", "");
			w2.open = true;
			transactions++;
		} else if (rng_below(2) == 0) {
			w_exec(&w2, "", "COMMIT;");
			w2.open = false;
		}
		if (transactions % 100 == 0)
			h_sleep(0.02);
		cr_assert(p->running, "the daemon exited while the writers wrote (log: %s)", p->log);
	}
	if (w2.open)
		w_exec(&w2, "", "COMMIT;");
	cr_log_info("writers: %d transactions, %lld events in %.2fs", transactions, order_event_count(),
		    h_now() - t0);
	free(w1.sql.data);
	free(w2.sql.data);
	h_disconnect(w1.c);
	h_disconnect(w2.c);

	last_event(&last_txid, &last_pos);
	t0 = h_now();
	cr_assert(h_wait_checkpoint(ALIAS, last_txid, last_pos, H_LONG),
		  "the checkpoint never reached the last event %" PRIu64 "/%" PRId64 " (log: %s)", last_txid,
		  last_pos, p->log);
	cr_log_info("caught up %.2fs after the writers stopped", h_now() - t0);
	h_assert_docs_match_oracle(ALIAS);
	assert_no_float_residue();
	cr_assert_eq(h_dead_letter_count(), 0);
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM es_docs", 0, NULL, 0), LIVE_ORDERS);

	h_stop(p, 20);
}

/* ---- d. coalescing ------------------------------------------------------------- */

Test(orders, coalesced_into_fewer_actions, .timeout = 90)
{
	static const char *const ids[] = { "k1", "k2", "k3" };
	struct run_stats st;

	h_begin();
	/* three orders created, filled and completed inside one batch */
	for (int i = 0; i < 3; i++) {
		created(ids[i], "c1");
		added(ids[i], "0.10", 1);
		added(ids[i], "0.20", 2);
		added(ids[i], "19.99", 1);
		removed(ids[i], "0.20", 1);
		order_event(NULL, ids[i], "OrderShipped",
			    "{\"order_id\": \"%s\", \"shipped_at\": \"2026-11-02T10:00:00Z\"}", ids[i]);
		order_event(NULL, ids[i], "OrderCompleted",
			    "{\"order_id\": \"%s\", \"customer_id\": \"c1\", \"total_amount\": 20.29,"
			    " \"item_count\": 2, \"completed_at\": \"2026-11-03T10:00:00Z\"}", ids[i]);
	}
	st = run_once(ONLY_ORDERS);
	cr_log_info("first batch: %lld events, %lld actions, %lld requests", st.events, st.actions,
		    st.requests);
	cr_assert_eq(st.events, 21);
	cr_assert_eq(st.actions, 3, "%lld actions for 21 events of 3 orders, want 3 (one index each)",
		     st.actions);
	cr_assert_eq(h_index_ops(INDEX), 3, "the index counts %lld writes, want 3", h_index_ops(INDEX));
	assert_alias_names_index();
	h_assert_docs_match_oracle(ALIAS);
	assert_raw_total("k1", "20.29");

	/* increments of existing orders: one guarded update per order */
	for (int i = 0; i < 4; i++)
		added("k1", "0.01", 1);
	added("k2", "0.10", 1);
	removed("k2", "19.99", 1);
	st = run_once(ONLY_ORDERS);
	cr_assert_eq(st.events, 6);
	cr_assert_eq(st.actions, 2, "%lld actions for the 6 increments of 2 orders, want 2", st.actions);
	h_assert_docs_match_oracle(ALIAS);
	assert_no_float_residue();
	assert_raw_total("k1", "20.33");
	assert_raw_total("k2", "0.40");
	cr_assert_eq(h_dead_letter_count(), 0);
}

/* ---- e. dead letters ---------------------------------------------------------- */

/* Appends an event of order `id` and what must become of it. */
static int64_t add_order_event(struct h_expectations *x, const char *id, const char *type, const char *data,
			       enum h_outcome out, const char *doc, const char *reason)
{
	int64_t pos = order_event(NULL, id, type, "%s", data);

	h_expect(x, pos, out, doc, reason);
	return pos;
}

/*
 * Every kind of invalid order event. Each rejection that names an order is
 * the first dead letter of its own order, between a valid creation (which
 * stays) and a valid item (held back behind it); d1's valid events flow
 * around letters that name no order (no order_id, an unknown type).
 */
Test(orders, dead_letters, .timeout = 90)
{
	/* order, the event type and the fields of its invalid event, a part of the reason */
	static const struct {
		const char *id, *type, *fields, *reason;
	} kinds[] = {
		{ "dprice", "OrderItemAdded", "\"product_id\": \"p\", \"price\": 1.234, \"quantity\": 1", "price" },
		{ "dqty0", "OrderItemAdded", "\"product_id\": \"p\", \"price\": 1.00, \"quantity\": 0", "quantity" },
		{ "dneg", "OrderItemAdded", "\"product_id\": \"p\", \"price\": -1.00, \"quantity\": 1", "price" },
		{ "dstr", "OrderItemAdded", "\"product_id\": \"p\", \"price\": \"1.00\", \"quantity\": 1", "price" },
		{ "dfrac", "OrderItemAdded", "\"product_id\": \"p\", \"price\": 1.00, \"quantity\": 2.5", "quantity" },
		{ "dbig", "OrderItemAdded", "\"product_id\": \"p\", \"price\": 10000000000000, \"quantity\": 1", "price" },
		{ "dqtybig", "OrderItemAdded", "\"product_id\": \"p\", \"price\": 1.00, \"quantity\": 1000001", "quantity" },
		{ "dline", "OrderItemRemoved", "\"product_id\": \"p\", \"price\": 20000000.00, \"quantity\": 1000000",
		  "10^13" },
		{ "dprod", "OrderItemAdded", "\"product_id\": \"\", \"price\": 1.00, \"quantity\": 1", "product_id" },
		{ "dcancel", "OrderCancelled", "\"reason\": 5", "reason" },
		{ "dship", "OrderShipped", "\"shipped_at\": 7", "shipped_at" },
	};
	static struct h_expectations x;
	char data[512];

	h_begin();
	add_order_event(&x, "d1", "OrderCreated",
			"{\"order_id\": \"d1\", \"customer_id\": \"c1\", \"created_at\": \"2026-11-01T10:00:00Z\"}",
			H_APPLIED, NULL, NULL);
	/* an item of an order that does not exist: 404; its later events wait */
	add_order_event(&x, "ghost", "OrderItemAdded",
			"{\"order_id\": \"ghost\", \"product_id\": \"p\", \"price\": 1.00, \"quantity\": 1}",
			H_PENDING, "ghost", "404|missing");
	add_order_event(&x, "ghost", "OrderCreated", "{\"order_id\": \"ghost\", \"customer_id\": \"c9\"}", H_HELD,
			"ghost", NULL);
	add_order_event(&x, "ghost", "OrderItemAdded",
			"{\"order_id\": \"ghost\", \"product_id\": \"p\", \"price\": 2.00, \"quantity\": 1}", H_HELD,
			"ghost", NULL);
	add_order_event(&x, "d1", "OrderItemAdded",
			"{\"order_id\": \"d1\", \"product_id\": \"p\", \"price\": 2.00, \"quantity\": 1}", H_APPLIED,
			NULL, NULL);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		snprintf(data, sizeof(data), "{\"order_id\": \"%s\", \"customer_id\": \"c\", \"created_at\": null}",
			 kinds[i].id);
		add_order_event(&x, kinds[i].id, "OrderCreated", data, H_APPLIED, NULL, NULL);
		snprintf(data, sizeof(data), "{\"order_id\": \"%s\", %s}", kinds[i].id, kinds[i].fields);
		add_order_event(&x, kinds[i].id, kinds[i].type, data, H_PENDING, kinds[i].id, kinds[i].reason);
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"%s\", \"product_id\": \"p\", \"price\": 5.00, \"quantity\": 1}", kinds[i].id);
		add_order_event(&x, kinds[i].id, "OrderItemAdded", data, H_HELD, kinds[i].id, NULL);
	}
	/* letters that name no order hold nothing back */
	add_order_event(&x, "d1", "OrderItemAdded", "{\"product_id\": \"p\", \"price\": 1.00, \"quantity\": 1}",
			H_PENDING, NULL, "order_id");
	add_order_event(&x, "d1", "OrderRefunded", "{\"order_id\": \"d1\", \"amount\": 2.00}", H_PENDING, NULL,
			"unknown event type 'OrderRefunded'");
	add_order_event(&x, "ghost2", "OrderShipped",
			"{\"order_id\": \"ghost2\", \"shipped_at\": \"2026-11-02T10:00:00Z\"}", H_PENDING, "ghost2",
			"404|missing");
	/* integer ids at the ends of the int64 range (one past them is a letter) */
	add_order_event(&x, "dmin", "OrderCreated",
			"{\"order_id\": -9223372036854775808, \"customer_id\": 9223372036854775807}", H_APPLIED,
			NULL, NULL);
	add_order_event(&x, "dmin", "OrderItemAdded",
			"{\"order_id\": -9223372036854775808, \"product_id\": -9223372036854775808,"
			" \"price\": 1.00, \"quantity\": 1}", H_APPLIED, NULL, NULL);
	add_order_event(&x, "dcustbig", "OrderCreated",
			"{\"order_id\": \"dcustbig\", \"customer_id\": -9223372036854775809}", H_PENDING,
			"dcustbig", "customer_id");
	/* a creation without a customer: its items wait */
	add_order_event(&x, "d9", "OrderCreated", "{\"order_id\": \"d9\"}", H_PENDING, "d9", "customer_id");
	add_order_event(&x, "d9", "OrderItemAdded",
			"{\"order_id\": \"d9\", \"product_id\": \"p\", \"price\": 1.00, \"quantity\": 1}", H_HELD, "d9",
			NULL);
	add_order_event(&x, "d1", "OrderItemAdded",
			"{\"order_id\": \"d1\", \"product_id\": \"p\", \"price\": 1.230, \"quantity\": 1}", H_APPLIED,
			NULL, NULL); /* trailing zeros are fine */
	add_order_event(&x, "d1", "OrderShipped", "{\"order_id\": \"d1\", \"shipped_at\": null}", H_APPLIED, NULL,
			NULL);
	/* an item before its order exists (in an earlier request): 404; the creation waits behind it */
	add_order_event(&x, "d3", "OrderItemAdded",
			"{\"order_id\": \"d3\", \"product_id\": \"p\", \"price\": 1.00, \"quantity\": 1}", H_PENDING,
			"d3", "404|missing");
	run_once(ONLY_ORDERS);
	add_order_event(&x, "d3", "OrderCreated",
			"{\"order_id\": \"d3\", \"customer_id\": \"c3\", \"created_at\": \"2026-11-01T10:00:00Z\"}",
			H_HELD, "d3", NULL);
	add_order_event(&x, "d3", "OrderItemAdded",
			"{\"order_id\": \"d3\", \"product_id\": \"p-3.00\", \"price\": 3.00, \"quantity\": 2}", H_HELD,
			"d3", NULL);
	run_once(ONLY_ORDERS);
	assert_alias_names_index();

	h_assert_letters("orders", &x);
	cr_assert_eq(h_dead_letter_count(), (long long)h_query_ll(NULL,
		"SELECT count(*) FROM esbridge.dead_letters WHERE projection = 'orders'", 0, NULL, -1),
		"dead letters of another projection");

	h_assert_docs_match_oracle(ALIAS);
	assert_raw_total("d1", "3.23");
	assert_raw_total("-9223372036854775808", "1.00");
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		assert_raw_total(kinds[i].id, "0");
	cr_assert_null(h_search_source(ALIAS, "ghost"));
	cr_assert_null(h_search_source(ALIAS, "ghost2"));
	cr_assert_null(h_search_source(ALIAS, "d9"));
	cr_assert_null(h_search_source(ALIAS, "d3"));
	{
		uint64_t t, lt;
		int64_t cp, lp;
		checkpoint(&t, &cp);
		last_event(&lt, &lp);
		cr_assert(t == lt && cp == lp, "the pipeline did not move past the dead letters");
	}
	h_expectations_free(&x);
}

/*
 * Regression: an item for an order that does not exist yet, in the same
 * request as the order's creation, must become a 404 dead letter as it does
 * when it travels in an earlier request (it was dropped silently once); the
 * creation and what follows are held back behind it, as they would be in a
 * later request.
 */
Test(orders, dead_letter_item_before_creation_in_one_request, .timeout = 60)
{
	static struct h_expectations x;

	h_begin();
	add_order_event(&x, "d4", "OrderItemAdded",
			"{\"order_id\": \"d4\", \"product_id\": \"p\", \"price\": 1.00, \"quantity\": 1}", H_PENDING,
			"d4", "404|missing");
	add_order_event(&x, "d4", "OrderCreated",
			"{\"order_id\": \"d4\", \"customer_id\": \"c4\", \"created_at\": \"2026-11-01T10:00:00Z\"}",
			H_HELD, "d4", NULL);
	add_order_event(&x, "d4", "OrderItemAdded",
			"{\"order_id\": \"d4\", \"product_id\": \"p-3.00\", \"price\": 3.00, \"quantity\": 2}", H_HELD,
			"d4", NULL);
	created("d5", "c5");
	added("d5", "3.00", 2);
	run_once(ONLY_ORDERS);
	h_assert_letters("orders", &x);
	h_assert_docs_match_oracle(ALIAS);
	cr_assert_null(h_search_source(ALIAS, "d4"));
	assert_raw_total("d5", "6.00");
	h_expectations_free(&x);
}

/* ---- f. transaction ids across a power of ten ------------------------------------ */

#define MAX_BURN 1500000ULL /* about 5 s */
#define XID_SLACK UINT64_C(16) /* ids other sessions may take between two steps */

static uint64_t xact_id(PGconn *c)
{
	char *t = h_query_text(c, "SELECT pg_current_xact_id()::text", 0, NULL);
	uint64_t v = strtoull(t, NULL, 10);

	free(t);
	return v;
}

/* One short transaction that takes an xid; returns it. */
static uint64_t take_xid(PGconn *c)
{
	uint64_t v;

	h_sql(c, "BEGIN");
	v = xact_id(c);
	h_sql(c, "COMMIT");
	return v;
}

/*
 * Regression test: the reader must order by the xid8 value, not its text.
 * Events are committed by transactions whose ids straddle a power of ten
 * (say 9998, 9999 | 10000, 10001: as text "10000" < "9998"), read one or
 * two at a time so that the row-comparison pagination and the checkpoint
 * cross the boundary. Orders are sensitive to the order (an item before its
 * creation is a 404), products too (an update before its creation is lost).
 */
Test(orders, xid_order_across_a_power_of_ten, .timeout = 120)
{
	static const char *const by_one[] = { "--batch-size", "1", "--bulk-actions", "1", NULL };
	static const char *const by_two[] = { "--batch-size", "2", "--bulk-actions", "2", NULL };
	PGconn *c, *late;
	uint64_t now, boundary = 10, x, late_xid, t;
	int64_t cp, t2_pos, t4_pos;
	char b[32];

	h_begin();
	c = h_connect();
	now = take_xid(c);
	/* the first power of ten with room for a few transactions below it */
	while (boundary < now + 3 * XID_SLACK) {
		cr_assert_lt(boundary, UINT64_MAX / 10);
		boundary *= 10;
	}
	if (boundary - now > MAX_BURN) {
		cr_skip_test("the next power of ten (%" PRIu64 ") is %" PRIu64 " transaction ids away from %"
			     PRIu64 ": more than the %llu this test burns (a fresh cluster has room)",
			     boundary, boundary - now, now, MAX_BURN);
		return;
	}
	/*
	 * Burn xids up to about boundary - 3 * XID_SLACK with subtransactions
	 * that write (one xid each, fast). Other sessions (autovacuum's
	 * ANALYZE writes pg_statistic) may take ids at any moment, so no step
	 * below counts on an exact id: each only needs to stay on its side of
	 * the boundary, with XID_SLACK ids to spare. Long burns stop 10% short
	 * and measure again, so ids taken meanwhile cannot carry the last step
	 * over the boundary.
	 */
	h_sql(c, "CREATE TEMP TABLE burn (x bigint)");
	for (x = now; x < boundary && boundary - x > 3 * XID_SLACK; x = take_xid(c)) {
		uint64_t need = boundary - x - 3 * XID_SLACK;
		char sql[512];

		if (need > 1000)
			need -= need / 10;
		snprintf(sql, sizeof(sql),
			 "DO $$ BEGIN FOR i IN 1..%" PRIu64 " LOOP"
			 " BEGIN INSERT INTO pg_temp.burn VALUES (i); EXCEPTION WHEN others THEN NULL; END;"
			 " END LOOP; END $$", need);
		h_sql(c, sql);
	}
	h_sql(c, "DROP TABLE pg_temp.burn");
	cr_assert_lt(x, boundary, "at transaction id %" PRIu64 " after the burn: other sessions took ids"
		     " faster than this test", x);
	cr_log_info("transaction ids: %" PRIu64 " at the start, boundary %" PRIu64, now, boundary);

	/* T1, T2: below the boundary */
	h_sql(NULL, "BEGIN");
	created("x1", "c1");
	created("x2", "c2");
	h_event(NULL, "product-px", "ProductCreated",
		"{\"product_id\": \"px\", \"name\": \"Before\", \"price\": 1.00}");
	h_sql(NULL, "COMMIT");
	h_sql(NULL, "BEGIN");
	added("x1", "0.10", 1);
	t2_pos = order_event(NULL, "x3", "OrderCreated",
			     "{\"order_id\": \"x3\", \"customer_id\": \"c3\","
			     " \"created_at\": \"2026-11-01T10:00:00Z\"}");
	h_sql(NULL, "COMMIT");
	/*
	 * T3, just below the boundary: takes its id now, writes after T4
	 * (higher positions), commits last.
	 */
	do {
		x = take_xid(c);
	} while (x < boundary - XID_SLACK);
	cr_assert_lt(x, boundary - 1, "at transaction id %" PRIu64 " before T3: other sessions took ids"
		     " faster than this test", x);
	late = h_connect();
	h_sql(late, "BEGIN");
	late_xid = xact_id(late);
	cr_assert_lt(late_xid, boundary, "T3 took transaction id %" PRIu64 ", not below %" PRIu64
		     ": other sessions took %" PRIu64 " ids within milliseconds", late_xid, boundary,
		     late_xid - x - 1);
	/* T4, at or above the boundary */
	do {
		x = take_xid(c);
	} while (x < boundary - 1);
	h_sql(NULL, "BEGIN");
	t4_pos = order_event(NULL, "x2", "OrderShipped", "{\"order_id\": \"x2\", \"shipped_at\": null}");
	created("x4", "c4");
	added("x3", "0.20", 1);
	h_event(NULL, "product-px", "ProductUpdated", "{\"product_id\": \"px\", \"name\": \"After\"}");
	h_sql(NULL, "COMMIT");
	order_event(late, "x2", "OrderItemAdded",
		    "{\"order_id\": \"x2\", \"product_id\": \"p\", \"price\": 1.00, \"quantity\": 2}");
	order_event(late, "x1", "OrderItemAdded",
		    "{\"order_id\": \"x1\", \"product_id\": \"p\", \"price\": 0.20, \"quantity\": 1}");
	h_event(late, "product-px", "ProductUpdated",
		"{\"product_id\": \"px\", \"name\": \"Between\", \"description\": \"from T3\"}");

	/* T3 open: only T1 and T2 can be read */
	cr_assert_lt(late_xid, h_event_txid(t4_pos));
	run_once(by_one);
	checkpoint(&t, &cp);
	cr_assert(t == h_event_txid(t2_pos) && cp == t2_pos,
		  "with T3 open, the checkpoint is at %" PRIu64 "/%" PRId64 ", want T2's last event %" PRIu64
		  "/%" PRId64, t, cp, h_event_txid(t2_pos), t2_pos);
	h_sql(late, "COMMIT");
	h_disconnect(late);

	/* T5, T6: above the boundary */
	h_sql(NULL, "BEGIN");
	added("x4", "3.00", 1);
	order_event(NULL, "x2", "OrderCompleted",
		    "{\"order_id\": \"x2\", \"customer_id\": \"c2\", \"total_amount\": 0, \"item_count\": 0,"
		    " \"completed_at\": null}");
	added("x3", "0.05", 1);
	h_sql(NULL, "COMMIT");
	h_sql(NULL, "BEGIN");
	created("x5", "c5");
	added("x5", "0.01", 1);
	order_event(NULL, "x1", "OrderCancelled", "{\"order_id\": \"x1\", \"reason\": null}");
	h_sql(NULL, "COMMIT");

	/* the events straddle the boundary, and their text order is not their order */
	snprintf(b, sizeof(b), "%" PRIu64, boundary);
	cr_log_info("T1..T4: %" PRIu64 ", %" PRIu64 ", %" PRIu64 " (committed last), %" PRIu64,
		    h_event_txid(1), h_event_txid(t2_pos), late_xid, h_event_txid(t4_pos));
	cr_assert(late_xid < boundary && h_event_txid(t4_pos) >= boundary,
		  "T3 (%" PRIu64 ") and T4 (%" PRIu64 ") do not straddle %s: did another session take"
		  " transaction ids?", late_xid, h_event_txid(t4_pos), b);
	cr_assert_eq(h_query_ll(NULL,
		"SELECT (array_agg(global_position ORDER BY transaction_id, global_position)"
		"     <> array_agg(global_position ORDER BY transaction_id::text, global_position))::int"
		"  FROM public.events", 0, NULL, 0), 1, "text order equals xid order: the test proves nothing");

	/* one at a time across the boundary, all projections */
	run_once(by_one);
	h_assert_docs_match_oracle("orders");
	h_assert_docs_match_oracle("products");
	/* (daily_sales refuses x2's completion: completed_at null names no day) */
	{
		long long dead = h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters"
						  " WHERE projection IN ('orders', 'products')", 0, NULL, -1);
		cr_assert_eq(dead, 0, "%lld dead letters of orders and products (an item read before its order?)",
			     dead);
	}
	{
		uint64_t lt;
		int64_t lp;
		last_event(&lt, &lp);
		checkpoint(&t, &cp);
		cr_assert(t == lt && cp == lp, "checkpoint %" PRIu64 "/%" PRId64 ", want the last event %"
			  PRIu64 "/%" PRId64, t, cp, lt, lp);
	}
	{
		/* products: at its own last event, T4's ProductUpdated (T3's comes before it) */
		char *want = h_query_text(NULL,
			"SELECT e.global_position::text FROM public.events e WHERE e.event_type LIKE 'Product%'"
			" ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1", 0, NULL);
		cr_assert(h_checkpoint("products", &t, &cp), "no products generation");
		cr_assert(t == h_event_txid(t4_pos) && cp == strtoll(want, NULL, 10),
			  "the products checkpoint is %" PRIu64 "/%" PRId64 ", want %" PRIu64 "/%s", t, cp,
			  h_event_txid(t4_pos), want);
		free(want);
	}
	assert_raw_total("x1", "0.30");
	assert_raw_total("x2", "2.00");
	assert_raw_total("x3", "0.25");
	assert_raw_total("x4", "3.00");
	assert_raw_total("x5", "0.01");

	/* from the start again, two at a time: the same documents */
	h_sql(NULL, "UPDATE esbridge.generations SET checkpoint_txid = '0', checkpoint_pos = 0");
	run_once(by_two);
	h_assert_docs_match_oracle("orders");
	h_assert_docs_match_oracle("products");
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters"
				      " WHERE projection IN ('orders', 'products')", 0, NULL, -1), 0);
	h_disconnect(c);
}

/* ---- g. a re-creation among queued script events, in a growing request ---- */

#define RECREATED 700

/*
 * Regression test (issue: the document table lost track of the newest
 * operation). RECREATED orders already in the index each get, inside one
 * request: an item (a script action), a re-creation (a new `index`
 * action after it: a second operation of the document), then, after the
 * other orders' events, another item and a shipment, which must fold into
 * the re-creation. The request's table of operations grows several times
 * meanwhile; it used to find the first operation after a growth, so the
 * later events went into the action sent before the re-creation, which
 * then overwrote them (orders left `pending`, an item missing).
 */
Test(orders, recreation_then_more_events_in_one_request, .timeout = 180)
{
	static const char *const big[] = { "--batch-size", "10000", "--bulk-actions", "10000", NULL };
	char n[16];
	const char *params[1] = { n };

	h_begin();
	snprintf(n, sizeof(n), "%d", RECREATED);
	PQclear(h_exec(NULL, "INSERT INTO public.events (stream_id, event_type, data, version)"
		  " SELECT 'order-r' || o, 'OrderCreated', jsonb_build_object('order_id', 'r' || o,"
		  "  'customer_id', 'c' || o, 'created_at', '2026-11-01T10:00:00Z'), 1"
		  " FROM generate_series(1, $1::int) o", 1, params));
	run_once(big);
	cr_assert_eq(h_load_es_docs(ALIAS), RECREATED);

	/* one transaction, one read, one request */
	h_sql(NULL, "BEGIN");
	PQclear(h_exec(NULL, "INSERT INTO public.events (stream_id, event_type, data, version)"
		  " SELECT 'order-r' || o, t, CASE t"
		  "   WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'r' || o, 'product_id', 'p1',"
		  "    'price', 1.25, 'quantity', 1)"
		  "   ELSE jsonb_build_object('order_id', 'r' || o, 'customer_id', 'c' || o,"
		  "    'created_at', '2026-11-02T10:00:00Z') END, v"
		  " FROM generate_series(1, $1::int) o,"
		  "  (VALUES (2, 'OrderItemAdded'), (3, 'OrderCreated')) s(v, t)"
		  " ORDER BY o, v", 1, params));
	PQclear(h_exec(NULL, "INSERT INTO public.events (stream_id, event_type, data, version)"
		  " SELECT 'order-r' || o, t, CASE t"
		  "   WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'r' || o, 'product_id', 'p2',"
		  "    'price', 2.50, 'quantity', 2)"
		  "   ELSE jsonb_build_object('order_id', 'r' || o, 'shipped_at', '2026-11-03T10:00:00Z') END, v"
		  " FROM generate_series(1, $1::int) o,"
		  "  (VALUES (4, 'OrderItemAdded'), (5, 'OrderShipped')) s(v, t)"
		  " ORDER BY o, v", 1, params));
	h_sql(NULL, "COMMIT");
	run_once(big);
	cr_assert_eq(h_dead_letter_count(), 0);
	h_assert_docs_match_oracle(ALIAS);
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM public.events WHERE event_type = 'OrderShipped'", 0,
				NULL, -1), RECREATED);
}
