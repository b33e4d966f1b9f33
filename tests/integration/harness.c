/*
 * Integration test harness (see harness.h).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <curl/curl.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define MAX_PROCS 16
#define MAX_CONNS 8
#define SCROLL_SIZE 2000

static PGconn *conn;
static PGconn *extra_conns[MAX_CONNS];
static struct h_proc procs[MAX_PROCS];
static int n_procs;
static CURL *curl;
static char es_base[512];
static char bin[512];
static char log_path[1024];

/* ---- time -------------------------------------------------------------- */

double h_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void h_sleep(double seconds)
{
	struct timespec ts;

	if (seconds <= 0)
		return;
	ts.tv_sec = (time_t)seconds;
	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

bool h_eventually(bool (*cond)(void *arg), void *arg, double secs)
{
	double deadline = h_now() + secs;

	for (;;) {
		if (cond(arg))
			return true;
		if (h_now() > deadline)
			return false;
		h_sleep(0.05);
	}
}

/* ---- small utilities ------------------------------------------------------ */

struct sbuf {
	char *data;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		while (b->len + n + 1 > ncap)
			ncap *= 2;
		b->data = realloc(b->data, ncap);
		cr_assert_not_null(b->data, "out of memory");
		b->cap = ncap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* The text of `path` from byte `from` on (see h_read_file). */
static char *read_from(const char *path, long from, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	struct sbuf b = { 0 };
	char chunk[8192];
	size_t n;

	cr_assert_not_null(f, "cannot open %s: %s", path, strerror(errno));
	if (from > 0)
		cr_assert_eq(fseek(f, from, SEEK_SET), 0, "cannot seek in %s: %s", path, strerror(errno));
	sb_add(&b, "", 0);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sb_add(&b, chunk, n);
	cr_assert(!ferror(f), "cannot read %s", path);
	fclose(f);
	if (len_out)
		*len_out = b.len;
	return b.data;
}

char *h_read_file(const char *path, size_t *len)
{
	return read_from(path, 0, len);
}

void h_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
	cr_assert(fputs(text, f) >= 0, "cannot write %s", path);
	cr_assert_eq(fclose(f), 0, "cannot write %s: %s", path, strerror(errno));
}

int h_free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0, "getsockname: %s", strerror(errno));
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void mkdirs(const char *path)
{
	char tmp[1024];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			(void)mkdir(tmp, 0777);
			*p = '/';
		}
	}
	(void)mkdir(tmp, 0777);
}

/* ---- PostgreSQL ---------------------------------------------------------- */

static PGconn *open_conn(void)
{
	const char *ci = getenv("ESBRIDGE_PG");
	PGconn *c;

	cr_assert(ci != NULL, "ESBRIDGE_PG is not set (eval \"$(scripts/services start)\")");
	c = PQconnectdb(ci);
	if (PQstatus(c) != CONNECTION_OK) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
		PQfinish(c);
		cr_assert_fail("PostgreSQL is unreachable (%s): %s", ci, msg);
	}
	PQclear(PQexec(c, "SET client_min_messages = warning"));
	/*
	 * A test killed by its timeout must not leave a query running that
	 * blocks the next test's reset: the server checks that the client is
	 * still there (PostgreSQL 14+; ignored before), and no statement of a
	 * test runs for minutes.
	 */
	PQclear(PQexec(c, "SET client_connection_check_interval = '1s'"));
	PQclear(PQexec(c, "SET statement_timeout = '150s'"));
	return c;
}

PGconn *h_pg(void)
{
	cr_assert_not_null(conn, "h_begin() was not called");
	return conn;
}

PGconn *h_connect(void)
{
	for (int i = 0; i < MAX_CONNS; i++) {
		if (!extra_conns[i]) {
			extra_conns[i] = open_conn();
			return extra_conns[i];
		}
	}
	cr_assert_fail("too many connections in one test");
	return NULL;
}

void h_disconnect(PGconn *c)
{
	for (int i = 0; i < MAX_CONNS; i++) {
		if (extra_conns[i] == c) {
			PQfinish(c);
			extra_conns[i] = NULL;
			return;
		}
	}
	cr_assert_fail("h_disconnect: not a connection of h_connect()");
}

PGresult *h_exec(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *res;
	ExecStatusType st;

	if (!c)
		c = h_pg();
	res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
		PQclear(res);
		cr_assert_fail("SQL failed: %s\n  statement: %.400s", msg, sql);
	}
	return res;
}

void h_sql(PGconn *c, const char *sql)
{
	PGresult *res;
	ExecStatusType st;

	if (!c)
		c = h_pg();
	res = PQexec(c, sql);
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
		PQclear(res);
		cr_assert_fail("SQL failed: %s\n  statement: %.400s", msg, sql);
	}
	PQclear(res);
}

static bool ident_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_';
}

void h_sql_vars(PGconn *c, const char *text, const char *const *vars)
{
	struct sbuf out = { 0 };
	const char *s = text;

	while (*s) {
		bool replaced = false;
		/* as psql: nothing is replaced in quoted text or comments */
		if (*s == '\'' || *s == '"') {
			const char *end = strchr(s + 1, *s); /* a doubled quote: two strings in a row */
			size_t n = end ? (size_t)(end - s) + 1 : strlen(s);
			sb_add(&out, s, n);
			s += n;
			continue;
		}
		if (s[0] == '-' && s[1] == '-') {
			size_t n = strcspn(s, "\n");
			sb_add(&out, s, n);
			s += n;
			continue;
		}
		/* :name, but not the cast ::name */
		if (*s == ':' && s[1] != ':' && (s == text || s[-1] != ':') && ident_char(s[1])) {
			for (int i = 0; vars && vars[i]; i++) {
				const char *eq = strchr(vars[i], '=');
				size_t n;
				cr_assert_not_null(eq, "h_sql_vars: variable without '=': %s", vars[i]);
				n = (size_t)(eq - vars[i]);
				if (!strncmp(s + 1, vars[i], n) && !ident_char(s[1 + n])) {
					sb_add(&out, eq + 1, strlen(eq + 1));
					s += 1 + n;
					replaced = true;
					break;
				}
			}
			if (!replaced) {
				size_t n = 1;
				while (ident_char(s[n]))
					n++;
				cr_assert_fail("h_sql_vars: the variable %.*s has no value", (int)n, s);
			}
			continue;
		}
		sb_add(&out, s, 1);
		s++;
	}
	sb_add(&out, "", 0);
	h_sql(c, out.data);
	free(out.data);
}

void h_sql_file(PGconn *c, const char *path, const char *const *vars)
{
	char *text = h_read_file(path, NULL);

	h_sql_vars(c, text, vars);
	free(text);
}

long long h_query_ll(PGconn *c, const char *sql, int n, const char *const *params, long long dflt)
{
	PGresult *res = h_exec(c, sql, n, params);
	long long v = dflt;

	cr_assert_eq(PQntuples(res), 1, "expected one row from: %s", sql);
	if (!PQgetisnull(res, 0, 0))
		v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

char *h_query_text(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *res = h_exec(c, sql, n, params);
	char *v = NULL;

	cr_assert_eq(PQntuples(res), 1, "expected one row from: %s", sql);
	if (!PQgetisnull(res, 0, 0)) {
		v = strdup(PQgetvalue(res, 0, 0));
		cr_assert_not_null(v);
	}
	PQclear(res);
	return v;
}

int64_t h_event(PGconn *c, const char *stream, const char *type, const char *data)
{
	const char *params[3] = { stream, type, data };

	return (int64_t)h_query_ll(c,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" VALUES ($1, $2, $3::jsonb,"
		"  (SELECT coalesce(max(version), 0) + 1 FROM public.events WHERE stream_id = $1))"
		" RETURNING global_position",
		3, params, -1);
}

uint64_t h_event_txid(int64_t pos)
{
	char p[32];
	const char *params[1] = { p };
	char *t;
	uint64_t v;

	snprintf(p, sizeof(p), "%" PRId64, pos);
	t = h_query_text(NULL, "SELECT transaction_id::text FROM public.events WHERE global_position = $1::bigint",
			 1, params);
	cr_assert_not_null(t, "no event at %s", p);
	v = strtoull(t, NULL, 10);
	free(t);
	return v;
}

bool h_checkpoint(const char *projection, uint64_t *txid, int64_t *pos)
{
	const char *params[1] = { projection };
	PGresult *res;
	bool found = false;

	if (!h_query_ll(NULL, "SELECT (to_regclass('esbridge.generations') IS NOT NULL)::int", 0, NULL, 0))
		return false;
	res = h_exec(NULL,
		     "SELECT checkpoint_txid::text, checkpoint_pos FROM esbridge.generations"
		     " WHERE projection = $1 ORDER BY generation DESC LIMIT 1",
		     1, params);
	if (PQntuples(res) == 1) {
		*txid = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		*pos = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		found = true;
	}
	PQclear(res);
	return found;
}

struct checkpoint_arg {
	const char *projection;
	uint64_t txid;
	int64_t pos;
};

static bool checkpoint_at(void *arg)
{
	const struct checkpoint_arg *a = arg;
	uint64_t t;
	int64_t p;

	return h_checkpoint(a->projection, &t, &p) && t == a->txid && p == a->pos;
}

bool h_wait_checkpoint(const char *projection, uint64_t txid, int64_t pos, double secs)
{
	struct checkpoint_arg a = { .projection = projection, .txid = txid, .pos = pos };

	return h_eventually(checkpoint_at, &a, secs);
}

int64_t h_checkpoint_pos(const char *projection)
{
	uint64_t txid;
	int64_t pos;

	return h_checkpoint(projection, &txid, &pos) ? pos : -1;
}

long long h_dead_letter_count(void)
{
	if (!h_query_ll(NULL, "SELECT (to_regclass('esbridge.dead_letters') IS NOT NULL)::int", 0, NULL, 0))
		return 0;
	return h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters", 0, NULL, 0);
}

/* ---- the search node ------------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	sb_add(arg, ptr, size * nmemb);
	return size * nmemb;
}

struct h_http h_es(const char *method, const char *path, const char *body)
{
	struct h_http r = { 0 };
	struct sbuf b = { 0 };
	struct curl_slist *hdrs = NULL;
	char url[2048], errbuf[CURL_ERROR_SIZE] = "";
	CURLcode rc;

	cr_assert_not_null(curl, "h_begin() was not called");
	snprintf(url, sizeof(url), "%s%s", es_base, path);
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	rc = curl_easy_perform(curl);
	curl_slist_free_all(hdrs);
	if (rc != CURLE_OK) {
		free(b.data);
		cr_assert_fail("search node unreachable: %s %s: %s", method, url,
			       errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
	sb_add(&b, "", 0);
	r.body = b.data;
	r.len = b.len;
	return r;
}

void h_http_free(struct h_http *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

static yajl_val parse_json(const struct h_http *r, const char *what)
{
	char err[256];
	yajl_val v = yajl_tree_parse(r->body, err, sizeof(err));

	cr_assert_not_null(v, "%s: unreadable JSON (%s): %.300s", what, err, r->body);
	return v;
}

bool h_alias_exists(const char *alias)
{
	char path[256];
	struct h_http r;
	long st;

	snprintf(path, sizeof(path), "/_alias/%s", alias);
	r = h_es("GET", path, NULL);
	st = r.status;
	h_http_free(&r);
	cr_assert(st == 200 || st == 404, "GET %s: HTTP %ld", path, st);
	return st == 200;
}

bool h_alias_is(const char *alias, const char *index)
{
	char path[256];
	struct h_http r;
	yajl_val v;
	bool ok;

	snprintf(path, sizeof(path), "/_alias/%s", alias);
	r = h_es("GET", path, NULL);
	if (r.status != 200) {
		h_http_free(&r);
		return false;
	}
	v = parse_json(&r, path);
	ok = YAJL_IS_OBJECT(v) && v->u.object.len == 1 && !strcmp(v->u.object.keys[0], index);
	yajl_tree_free(v);
	h_http_free(&r);
	return ok;
}

long long h_index_ops(const char *index)
{
	static const char *idx_path[] = { "_all", "primaries", "indexing", "index_total", NULL };
	static const char *del_path[] = { "_all", "primaries", "indexing", "delete_total", NULL };
	char path[256];
	struct h_http r;
	yajl_val v, a, d;
	long long n;

	snprintf(path, sizeof(path), "/%s/_stats/indexing", index);
	r = h_es("GET", path, NULL);
	cr_assert_eq(r.status, 200, "GET %s: HTTP %ld: %.300s", path, r.status, r.body);
	v = parse_json(&r, path);
	a = yajl_tree_get(v, idx_path, yajl_t_number);
	d = yajl_tree_get(v, del_path, yajl_t_number);
	if (!a || !d) {
		yajl_tree_free(v);
		cr_assert_fail("GET %s: no indexing stats in %.300s", path, r.body);
	}
	n = YAJL_GET_INTEGER(a) + YAJL_GET_INTEGER(d);
	yajl_tree_free(v);
	h_http_free(&r);
	return n;
}

static void print_cb(void *ctx, const char *s, size_t len)
{
	sb_add(ctx, s, len);
}

static yajl_gen_status gen_tree(yajl_gen g, yajl_val v)
{
	yajl_gen_status st;

	switch (v->type) {
	case yajl_t_string:
		return yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string));
	case yajl_t_number:
		/* the exact text: jsonb compares numbers by value (19.9 = 19.90) */
		return yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
	case yajl_t_object:
		st = yajl_gen_map_open(g);
		for (size_t i = 0; st == yajl_gen_status_ok && i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			st = yajl_gen_string(g, (const unsigned char *)k, strlen(k));
			if (st == yajl_gen_status_ok)
				st = gen_tree(g, v->u.object.values[i]);
		}
		return st == yajl_gen_status_ok ? yajl_gen_map_close(g) : st;
	case yajl_t_array:
		st = yajl_gen_array_open(g);
		for (size_t i = 0; st == yajl_gen_status_ok && i < v->u.array.len; i++)
			st = gen_tree(g, v->u.array.values[i]);
		return st == yajl_gen_status_ok ? yajl_gen_array_close(g) : st;
	case yajl_t_true:
		return yajl_gen_bool(g, 1);
	case yajl_t_false:
		return yajl_gen_bool(g, 0);
	case yajl_t_null:
	case yajl_t_any:
		break;
	}
	return yajl_gen_null(g);
}

/* Renders a parsed value back to JSON text; malloc'd. */
static char *to_json(yajl_val v)
{
	struct sbuf b = { 0 };
	yajl_gen g = yajl_gen_alloc(NULL);
	yajl_gen_status st;

	cr_assert_not_null(g);
	yajl_gen_config(g, yajl_gen_print_callback, print_cb, &b);
	st = gen_tree(g, v);
	yajl_gen_free(g);
	cr_assert_eq(st, yajl_gen_status_ok, "cannot render a document as JSON (%d)", (int)st);
	sb_add(&b, "", 0);
	return b.data;
}

char *h_search_source(const char *alias, const char *id)
{
	static const char *hits_path[] = { "hits", "hits", NULL };
	struct sbuf q = { 0 };
	struct h_http r;
	yajl_gen g = yajl_gen_alloc(NULL);
	yajl_val v, hits;
	char *out = NULL;
	char path[256];

	/* {"query":{"ids":{"values":[id]}}}, rendered by yajl (the id is text) */
	cr_assert_not_null(g);
	yajl_gen_config(g, yajl_gen_print_callback, print_cb, &q);
	yajl_gen_map_open(g);
	yajl_gen_string(g, (const unsigned char *)"query", 5);
	yajl_gen_map_open(g);
	yajl_gen_string(g, (const unsigned char *)"ids", 3);
	yajl_gen_map_open(g);
	yajl_gen_string(g, (const unsigned char *)"values", 6);
	yajl_gen_array_open(g);
	yajl_gen_string(g, (const unsigned char *)id, strlen(id));
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_gen_free(g);
	sb_add(&q, "", 0);
	snprintf(path, sizeof(path), "/%s/_search", alias);
	r = h_es("POST", path, q.data);
	free(q.data);
	if (r.status == 404) { /* no alias yet */
		h_http_free(&r);
		return NULL;
	}
	cr_assert_eq(r.status, 200, "search for %s: HTTP %ld: %.300s", id, r.status, r.body);
	v = parse_json(&r, "_search");
	hits = yajl_tree_get(v, hits_path, yajl_t_array);
	if (hits && hits->u.array.len == 1) {
		static const char *src_path[] = { "_source", NULL };
		yajl_val src = yajl_tree_get(hits->u.array.values[0], src_path, yajl_t_object);
		if (src)
			out = to_json(src);
	}
	yajl_tree_free(v);
	h_http_free(&r);
	return out;
}

bool h_searchable(const char *alias, const char *id)
{
	char *src = h_search_source(alias, id);
	bool found = src != NULL;

	free(src);
	return found;
}

bool h_source_is(const char *alias, const char *id, const char *want)
{
	char *src = h_search_source(alias, id);
	const char *params[2];
	bool eq;

	if (!src)
		return false;
	params[0] = src;
	params[1] = want;
	eq = h_query_ll(NULL, "SELECT ($1::jsonb = $2::jsonb)::int", 2, params, 0) == 1;
	if (!eq)
		cr_log_info("document %s is %s, waiting for %s", id, src, want);
	free(src);
	return eq;
}

/*
 * Inserts the hits of one search/scroll page (its raw JSON text): PostgreSQL
 * parses each _source, numbers as exact decimals. Returns their count.
 */
static long insert_hits(const struct h_http *page)
{
	const char *params[1] = { page->body };
	PGresult *res = h_exec(NULL,
		"INSERT INTO es_docs (id, doc)"
		" SELECT h ->> '_id', h -> '_source'"
		"   FROM jsonb_array_elements(($1::jsonb) -> 'hits' -> 'hits') h",
		1, params);
	long n = strtol(PQcmdTuples(res), NULL, 10);

	PQclear(res);
	return n;
}

long h_load_es_docs(const char *alias)
{
	static const char *scroll_id_path[] = { "_scroll_id", NULL };
	struct h_http r;
	yajl_val page;
	long total = 0, n;
	char body[256], path[256];
	char *scroll_id = NULL;

	h_sql(NULL, "DROP TABLE IF EXISTS pg_temp.es_docs");
	h_sql(NULL, "CREATE TEMP TABLE es_docs (id text PRIMARY KEY, doc jsonb NOT NULL)");
	snprintf(path, sizeof(path), "/%s/_refresh", alias);
	r = h_es("POST", path, NULL);
	cr_assert_eq(r.status, 200, "POST %s: HTTP %ld: %.300s", path, r.status, r.body);
	h_http_free(&r);

	snprintf(body, sizeof(body), "{\"size\":%d,\"query\":{\"match_all\":{}},\"sort\":[\"_doc\"]}",
		 SCROLL_SIZE);
	snprintf(path, sizeof(path), "/%s/_search?scroll=1m", alias);
	r = h_es("POST", path, body);
	cr_assert_eq(r.status, 200, "scroll search: HTTP %ld: %.300s", r.status, r.body);
	h_sql(NULL, "BEGIN");
	for (;;) {
		yajl_val sid;
		page = parse_json(&r, "scroll page");
		sid = yajl_tree_get(page, scroll_id_path, yajl_t_string);
		if (sid) {
			free(scroll_id);
			scroll_id = strdup(sid->u.string);
			cr_assert_not_null(scroll_id);
		}
		yajl_tree_free(page);
		n = insert_hits(&r);
		h_http_free(&r);
		total += n;
		if (n == 0 || !scroll_id)
			break;
		{
			struct sbuf q = { 0 };
			sb_add(&q, "{\"scroll\":\"1m\",\"scroll_id\":\"", 28);
			sb_add(&q, scroll_id, strlen(scroll_id)); /* base64url: no escaping needed */
			sb_add(&q, "\"}", 2);
			r = h_es("POST", "/_search/scroll", q.data);
			free(q.data);
		}
		cr_assert_eq(r.status, 200, "scroll: HTTP %ld: %.300s", r.status, r.body);
	}
	h_sql(NULL, "COMMIT");
	if (scroll_id) {
		struct sbuf q = { 0 };
		sb_add(&q, "{\"scroll_id\":[\"", 15);
		sb_add(&q, scroll_id, strlen(scroll_id));
		sb_add(&q, "\"]}", 3);
		r = h_es("DELETE", "/_search/scroll", q.data);
		free(q.data);
		h_http_free(&r);
		free(scroll_id);
	}
	return total;
}

/* Loads the oracle of `name` into the temp table oracle_NAME (recreated). */
static void load_oracle(const char *name)
{
	const char *dir = getenv("ESBRIDGE_ORACLE_DIR");
	struct sbuf sql = { 0 };
	char path[1024], head[256];
	char *text;
	size_t len;

	if (!dir || !*dir)
		dir = "tests/oracle";
	snprintf(path, sizeof(path), "%s/%s.sql", dir, name);
	text = h_read_file(path, &len);
	while (len && (text[len - 1] == ';' || text[len - 1] == '\n' || text[len - 1] == ' ' ||
		       text[len - 1] == '\t' || text[len - 1] == '\r'))
		text[--len] = '\0';
	snprintf(head, sizeof(head), "DROP TABLE IF EXISTS pg_temp.oracle_%s", name);
	h_sql(NULL, head);
	/* a table, not a view: evaluated once, and the joins below are planned on real counts */
	snprintf(head, sizeof(head), "CREATE TEMP TABLE oracle_%s AS\n", name);
	sb_add(&sql, head, strlen(head));
	sb_add(&sql, text, len);
	free(text);
	/* statistics first: a fresh table's guesses can make the fold's plan take minutes */
	h_sql(NULL, "ANALYZE public.events");
	h_sql(NULL, sql.data);
	free(sql.data);
	snprintf(head, sizeof(head), "ANALYZE pg_temp.oracle_%s", name);
	h_sql(NULL, head);
	h_sql(NULL, "ANALYZE pg_temp.es_docs");
}

/* Copies `tmpl` to `out`, each "{oracle}" replaced by the table oracle_NAME. */
static void oracle_sql(char *out, size_t size, const char *tmpl, const char *name)
{
	static const char token[] = "{oracle}";
	size_t len = 0;

	while (*tmpl && len + 1 < size) {
		if (!strncmp(tmpl, token, sizeof(token) - 1)) {
			len += (size_t)snprintf(out + len, size - len, "oracle_%s", name);
			tmpl += sizeof(token) - 1;
		} else {
			out[len++] = *tmpl++;
		}
	}
	cr_assert_lt(len + 1, size, "oracle_sql: statement too long");
	out[len] = '\0';
}

static void log_rows(const char *title, const char *tmpl, const char *name)
{
	char sql[1024];
	PGresult *res;

	oracle_sql(sql, sizeof(sql), tmpl, name);
	res = h_exec(NULL, sql, 0, NULL);
	for (int i = 0; i < PQntuples(res); i++)
		cr_log_error("%s: id=%s\n    oracle: %s\n    search: %s", title, PQgetvalue(res, i, 0),
			     PQgetisnull(res, i, 1) ? "(none)" : PQgetvalue(res, i, 1),
			     PQgetisnull(res, i, 2) ? "(none)" : PQgetvalue(res, i, 2));
	PQclear(res);
}

void h_compare_oracle(const char *name, long *only_oracle, long *only_es)
{
	char sql[512];

	load_oracle(name);
	oracle_sql(sql, sizeof(sql),
		   "SELECT count(*) FROM (SELECT id, doc FROM {oracle} EXCEPT SELECT id, doc FROM es_docs) x",
		   name);
	*only_oracle = (long)h_query_ll(NULL, sql, 0, NULL, 0);
	oracle_sql(sql, sizeof(sql),
		   "SELECT count(*) FROM (SELECT id, doc FROM es_docs EXCEPT SELECT id, doc FROM {oracle}) x",
		   name);
	*only_es = (long)h_query_ll(NULL, sql, 0, NULL, 0);
	if (*only_oracle == 0 && *only_es == 0)
		return;
	cr_log_error("%s documents differ from the oracle: %ld rows only in the oracle, %ld only in the index",
		     name, *only_oracle, *only_es);
	log_rows("different",
		 "SELECT o.id, o.doc::text, e.doc::text FROM {oracle} o JOIN es_docs e USING (id)"
		 " WHERE o.doc <> e.doc ORDER BY o.id LIMIT 5", name);
	log_rows("missing",
		 "SELECT o.id, o.doc::text, NULL FROM {oracle} o"
		 " WHERE NOT EXISTS (SELECT 1 FROM es_docs e WHERE e.id = o.id) ORDER BY o.id LIMIT 5", name);
	log_rows("extra",
		 "SELECT e.id, NULL, e.doc::text FROM es_docs e"
		 " WHERE NOT EXISTS (SELECT 1 FROM {oracle} o WHERE o.id = e.id) ORDER BY e.id LIMIT 5", name);
}

void h_write_oracle_without(const char *dir, const char *name, const char *left_out)
{
	static const char from[] = "FROM public.events e";
	char path[1024], to[1024];
	char *text, *at;
	FILE *f;

	cr_assert_lt(snprintf(to, sizeof(to), "FROM (SELECT * FROM public.events WHERE global_position NOT IN (%s)) e",
			      left_out), (int)sizeof(to), "left_out too long");
	snprintf(path, sizeof(path), "tests/oracle/%s.sql", name);
	text = h_read_file(path, NULL);
	at = strstr(text, from);
	cr_assert_not_null(at, "%s does not read '%s'", path, from);
	cr_assert_null(strstr(at + 1, from), "%s reads '%s' twice", path, from);

	snprintf(path, sizeof(path), "%s/%s.sql", dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(text, 1, (size_t)(at - text), f), (size_t)(at - text));
	cr_assert_gt(fputs(to, f), -1);
	cr_assert_gt(fputs(at + strlen(from), f), -1);
	cr_assert_eq(fclose(f), 0);
	free(text);
}

void h_assert_docs_match_oracle(const char *name)
{
	long only_oracle, only_es;
	long n = h_load_es_docs(name);
	long want;
	char sql[256];

	h_compare_oracle(name, &only_oracle, &only_es);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM oracle_%s", name);
	want = (long)h_query_ll(NULL, sql, 0, NULL, 0);
	cr_assert(only_oracle == 0 && only_es == 0,
		  "%s documents differ from the oracle: %ld only in the oracle, %ld only in the index"
		  " (index %ld docs, oracle %ld)", name, only_oracle, only_es, n, want);
	cr_assert_eq(n, want, "the %s index holds %ld documents, the oracle %ld", name, n, want);
}

/* ---- expected dead letters ----------------------------------------------- */

void h_expect(struct h_expectations *x, int64_t pos, enum h_outcome out, const char *doc,
	      const char *reason)
{
	struct h_expected *e;

	cr_assert_lt(x->n, (size_t)H_MAX_EXPECTED, "too many expected events");
	cr_assert(out != H_HELD || doc, "a held letter always names its document");
	e = &x->ev[x->n++];
	e->pos = pos;
	e->out = out;
	e->doc = doc ? strdup(doc) : NULL;
	cr_assert(!doc || e->doc, "out of memory");
	e->reason = reason;
}

int64_t h_add_event(struct h_expectations *x, const char *stream, const char *type, const char *data,
		    enum h_outcome out, const char *doc, const char *reason)
{
	int64_t pos = h_event(NULL, stream, type, data);

	h_expect(x, pos, out, doc, reason);
	return pos;
}

void h_expectations_free(struct h_expectations *x)
{
	for (size_t i = 0; i < x->n; i++)
		free(x->ev[i].doc);
	x->n = 0;
}

/* True if `reason` contains one of the '|'-separated parts of `want`. */
static bool reason_matches(const char *reason, const char *want)
{
	char buf[256];
	char *save = NULL;

	snprintf(buf, sizeof(buf), "%s", want);
	for (char *part = strtok_r(buf, "|", &save); part; part = strtok_r(NULL, "|", &save))
		if (strstr(reason, part))
			return true;
	return false;
}


/*
 * A document id as a held letter's reason shows it (README, "Dead
 * letters"): one line of UTF-8 of at most 100 bytes, each control
 * character as '?', cut before the first character that would not fit.
 * The ids of the tests are well-formed UTF-8.
 */
static const char *shown_id(char out[101], const char *id)
{
	const unsigned char *q = (const unsigned char *)id;
	size_t n = 0;

	while (*q) {
		size_t k = *q < 0x80 ? 1 : *q >= 0xf0 ? 4 : *q >= 0xe0 ? 3 : 2;
		if (n + k > 100)
			break;
		if (*q < 0x20 || *q == 0x7f)
			out[n] = '?';
		else
			memcpy(out + n, q, k);
		n += k;
		q += k;
	}
	out[n] = '\0';
	return out;
}
/* The positions of the letters of `proj` with `status`, as a SQL array text. */
static char *letters_with_status(const char *proj, const char *status)
{
	const char *params[2] = { proj, status };

	return h_query_text(NULL,
		"SELECT coalesce(array_agg(global_position ORDER BY global_position), '{}')::text"
		" FROM esbridge.dead_letters WHERE projection = $1 AND status = $2", 2, params);
}

void h_assert_letters(const char *proj, const struct h_expectations *x)
{
	char want_p[4096] = "{", want_h[4096] = "{";
	size_t lp = 1, lh = 1;
	int np = 0, nh = 0;
	char *got;
	const char *pp[1] = { proj };

	for (size_t i = 0; i < x->n; i++) {
		if (x->ev[i].out == H_PENDING)
			lp += (size_t)snprintf(want_p + lp, sizeof(want_p) - lp, "%s%" PRId64, np++ ? "," : "",
					       x->ev[i].pos);
		else if (x->ev[i].out == H_HELD)
			lh += (size_t)snprintf(want_h + lh, sizeof(want_h) - lh, "%s%" PRId64, nh++ ? "," : "",
					       x->ev[i].pos);
		cr_assert_lt(lp, sizeof(want_p) - 2);
		cr_assert_lt(lh, sizeof(want_h) - 2);
	}
	snprintf(want_p + lp, sizeof(want_p) - lp, "}");
	snprintf(want_h + lh, sizeof(want_h) - lh, "}");

	got = letters_with_status(proj, "pending");
	cr_assert_str_eq(got, want_p, "%s: pending dead letters at %s, want %s", proj, got, want_p);
	free(got);
	got = letters_with_status(proj, "held");
	cr_assert_str_eq(got, want_h, "%s: held dead letters at %s, want %s", proj, got, want_h);
	free(got);
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE projection = $1",
				1, pp, -1), np + nh,
		     "%s: dead letters other than the %d pending and %d held ones", proj, np, nh);

	for (size_t i = 0; i < x->n; i++) {
		const struct h_expected *e = &x->ev[i];
		char pos[32], want[512], shown[101];
		const char *params[2] = { proj, pos };
		PGresult *res;
		const char *reason, *doc;
		bool no_doc;

		if (e->out == H_APPLIED)
			continue;
		snprintf(pos, sizeof(pos), "%" PRId64, e->pos);
		res = h_exec(NULL, "SELECT reason, doc_id, (doc_id IS NULL)::int FROM esbridge.dead_letters"
				   " WHERE projection = $1 AND global_position = $2::bigint", 2, params);
		cr_assert_eq(PQntuples(res), 1, "%s: %d letters at %s", proj, PQntuples(res), pos);
		reason = PQgetvalue(res, 0, 0);
		doc = PQgetvalue(res, 0, 1);
		no_doc = !strcmp(PQgetvalue(res, 0, 2), "1");
		if (e->doc)
			cr_assert(!no_doc && !strcmp(doc, e->doc), "%s: the letter at %s names %s, want '%s'",
				  proj, pos, no_doc ? "no document" : doc, e->doc);
		else
			cr_assert(no_doc, "%s: the letter at %s names '%s', want no document", proj, pos, doc);
		if (e->out == H_PENDING) {
			cr_assert(reason_matches(reason, e->reason), "%s: the reason at %s is \"%s\", want \"%s\"",
				  proj, pos, reason, e->reason);
		} else {
			const struct h_expected *holder = NULL;
			for (size_t j = 0; j < i; j++)
				if (x->ev[j].out == H_PENDING && x->ev[j].doc && !strcmp(x->ev[j].doc, e->doc))
					holder = &x->ev[j];
			cr_assert_not_null(holder, "a held event at %s without a pending letter before it", pos);
			snprintf(want, sizeof(want),
				 "held back: document '%s' has an open dead letter at %" PRIu64 "/%" PRId64,
				 shown_id(shown, e->doc), h_event_txid(holder->pos), holder->pos);
			cr_assert_str_eq(reason, want, "%s: the reason at %s is \"%s\", want \"%s\"", proj, pos,
					 reason, want);
		}
		PQclear(res);
	}
}

/* ---- the daemon --------------------------------------------------------- */

const char *h_bin(void)
{
	cr_assert(bin[0], "h_begin() was not called");
	return bin;
}

struct h_proc *h_spawn(unsigned flags, const char *const *args)
{
	return h_spawn_ex(flags, NULL, NULL, args);
}

const char *h_crash_bin(void)
{
	static char crash[1100];
	const char *env = getenv("ESBRIDGE_CRASH_BIN");

	cr_assert(bin[0], "h_begin() was not called");
	snprintf(crash, sizeof(crash), "%s", env && *env ? env : bin);
	if (!(env && *env))
		strncat(crash, "-crash", sizeof(crash) - strlen(crash) - 1);
	cr_assert_eq(access(crash, X_OK), 0, "the crash test build %s is not executable (make %s): %s", crash,
		     crash, strerror(errno));
	return crash;
}

struct h_proc *h_spawn_ex(unsigned flags, const char *prog, const char *const *env,
			  const char *const *args)
{
	const char *argv[64];
	struct h_proc *p;
	struct sbuf hdr = { 0 };
	int argc = 0, fd;
	struct stat stt;
	pid_t pid;

	cr_assert_lt(n_procs, MAX_PROCS, "too many processes in one test");
	p = &procs[n_procs++];
	memset(p, 0, sizeof(*p));
	snprintf(p->log, sizeof(p->log), "%s", log_path);
	if (!prog) {
		prog = bin;
		/* the crash points are only in the test build (src/rebuild.c) */
		for (int i = 0; env && env[i]; i++)
			if (!strncmp(env[i], "ESBRIDGE_CRASH_AT=", 18))
				prog = h_crash_bin();
	}
	argv[argc++] = prog;
	for (int i = 0; args && args[i]; i++) {
		cr_assert_lt(argc, 62);
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;

	sb_add(&hdr, "=== spawn:", 10);
	for (int i = 0; i < argc; i++) {
		sb_add(&hdr, " ", 1);
		sb_add(&hdr, argv[i], strlen(argv[i]));
	}
	if (flags & H_NO_ES_ENV)
		sb_add(&hdr, " (without ESBRIDGE_ES)", 22);
	for (int i = 0; env && env[i]; i++) {
		cr_assert_not_null(strchr(env[i], '='), "h_spawn_ex: not NAME=VALUE: %s", env[i]);
		sb_add(&hdr, " [", 2);
		sb_add(&hdr, env[i], strlen(env[i]));
		sb_add(&hdr, "]", 1);
	}
	sb_add(&hdr, "\n", 1);
	fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
	cr_assert(fd >= 0, "cannot open %s: %s", p->log, strerror(errno));
	if (write(fd, hdr.data, hdr.len) != (ssize_t)hdr.len)
		cr_assert_fail("cannot write %s", p->log);
	free(hdr.data);
	cr_assert_eq(fstat(fd, &stt), 0);
	p->log_from = (long)stt.st_size;

	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		/* never outlive the test process, whatever happens to it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (flags & H_NO_ES_ENV)
			unsetenv("ESBRIDGE_ES");
		for (int i = 0; env && env[i]; i++) {
			const char *eq = strchr(env[i], '=');
			char name[256];
			snprintf(name, sizeof(name), "%.*s", (int)(eq - env[i]), env[i]);
			setenv(name, eq + 1, 1);
		}
		{
			sigset_t none;
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			signal(SIGPIPE, SIG_DFL);
		}
		execv(prog, (char *const *)argv);
		dprintf(2, "exec %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	close(fd);
	p->pid = pid;
	p->running = true;
	return p;
}

/* Fails the test when the process's output holds a sanitizer report. */
static void check_sanitizers(const struct h_proc *p)
{
	static const char *const marks[] = {
		"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
		"WARNING: ThreadSanitizer", NULL,
	};
	char *out = h_proc_output(p);

	for (int i = 0; marks[i]; i++) {
		const char *at = strstr(out, marks[i]);
		if (at) {
			cr_log_error("sanitizer report in %s:\n%.2000s", p->log, at);
			cr_expect_fail("the daemon (pid %d) reported '%s' (see %s)", (int)p->pid, marks[i],
				       p->log);
			break;
		}
	}
	free(out);
}

bool h_wait(struct h_proc *p, double secs)
{
	double deadline = h_now() + secs;

	if (!p->running)
		return true;
	for (;;) {
		pid_t r = waitpid(p->pid, &p->status, WNOHANG);
		if (r == p->pid) {
			p->running = false;
			check_sanitizers(p);
			return true;
		}
		cr_assert(r == 0, "waitpid(%d): %s", (int)p->pid, strerror(errno));
		if (h_now() > deadline)
			return false;
		h_sleep(0.01);
	}
}

void h_signal(struct h_proc *p, int sig)
{
	cr_assert(p->running, "signal %d to a process that has exited", sig);
	cr_assert_eq(kill(p->pid, sig), 0, "kill(%d, %d): %s", (int)p->pid, sig, strerror(errno));
}

int h_term_signal(const struct h_proc *p)
{
	if (p->running || !WIFSIGNALED(p->status))
		return 0;
	return WTERMSIG(p->status);
}

int h_exit_code(const struct h_proc *p)
{
	if (p->running || !WIFEXITED(p->status))
		return -1;
	return WEXITSTATUS(p->status);
}

void h_kill(struct h_proc *p)
{
	if (!p->running)
		return;
	(void)kill(p->pid, SIGKILL);
	while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR)
		;
	p->running = false;
}

void h_stop(struct h_proc *p, double secs)
{
	h_signal(p, SIGTERM);
	cr_assert(h_wait(p, secs), "no exit within %.0fs of SIGTERM (log: %s)", secs, p->log);
	cr_assert_eq(h_exit_code(p), 0, "exit status 0x%x after SIGTERM (log: %s)", (unsigned)p->status,
		     p->log);
}

char *h_proc_output(const struct h_proc *p)
{
	return read_from(p->log, p->log_from, NULL);
}

long h_output_count(const struct h_proc *p, const char *needle)
{
	char *out = h_proc_output(p);
	long n = 0;

	cr_assert(needle[0], "h_output_count: an empty needle");
	for (const char *at = out; (at = strstr(at, needle)) != NULL; at += strlen(needle))
		n++;
	free(out);
	return n;
}

int h_run_once(const char *const *args, double secs)
{
	const char *argv[32];
	struct h_proc *p;
	int n = 0, code;

	argv[n++] = "run";
	argv[n++] = "--once";
	for (int i = 0; args && args[i]; i++) {
		cr_assert_lt(n, 30);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	p = h_spawn(0, argv);
	if (!h_wait(p, secs)) {
		h_kill(p);
		cr_assert_fail("run --once did not finish within %.0fs (log: %s)", secs, p->log);
	}
	code = h_exit_code(p);
	if (code != 0)
		cr_log_error("run --once exited with status 0x%x (log: %s)", (unsigned)p->status, p->log);
	return code;
}

/* ---- world --------------------------------------------------------------- */

static void reset_search(void)
{
	static const char *const projections[] = H_PROJECTIONS;
	struct h_http r;
	char path[256];

	for (int i = 0; projections[i]; i++) {
		const char *name = projections[i];
		/* the indices NAME-000001...; their aliases go with them */
		snprintf(path, sizeof(path), "/%s*?expand_wildcards=all", name);
		r = h_es("DELETE", path, NULL);
		cr_assert(r.status == 200 || r.status == 404, "DELETE %s: HTTP %ld: %.300s", path, r.status,
			  r.body);
		h_http_free(&r);
		/* an alias NAME left on some other index */
		snprintf(path, sizeof(path), "/_all/_alias/%s", name);
		r = h_es("DELETE", path, NULL);
		cr_assert(r.status == 200 || r.status == 404, "DELETE %s: HTTP %ld: %.300s", path, r.status,
			  r.body);
		h_http_free(&r);
		cr_assert(!h_alias_exists(name), "the alias %s remains after the reset", name);
		snprintf(path, sizeof(path), "/_cat/indices/%s*?format=json&expand_wildcards=all", name);
		r = h_es("GET", path, NULL);
		cr_assert_eq(r.status, 200, "GET %s: HTTP %ld", path, r.status);
		cr_assert_str_eq(r.body, "[]", "%s indices remain after the reset: %s", name, r.body);
		h_http_free(&r);
	}
	/* the stored script of guarded updates: installed again by the daemon at start */
	r = h_es("DELETE", "/_scripts/esbridge-apply-v1", NULL);
	cr_assert(r.status == 200 || r.status == 404, "DELETE /_scripts/esbridge-apply-v1: HTTP %ld: %.300s",
		  r.status, r.body);
	h_http_free(&r);
}

void h_begin(void)
{
	const char *es = getenv("ESBRIDGE_ES");
	const char *b = getenv("ESBRIDGE_BIN");
	char dir[512], *slash;
	struct h_http r;

	cr_assert(es && *es, "ESBRIDGE_ES is not set (eval \"$(scripts/services start)\")");
	/* of a cluster's URLs (scripts/services with ESBRIDGE_ES_NODES), the first */
	snprintf(es_base, sizeof(es_base), "%.*s", (int)strcspn(es, ","), es);
	while (strlen(es_base) && es_base[strlen(es_base) - 1] == '/')
		es_base[strlen(es_base) - 1] = '\0';
	snprintf(bin, sizeof(bin), "%s", b && *b ? b : "build/esbridge");
	cr_assert_eq(access(bin, X_OK), 0, "the daemon %s is not executable: %s", bin, strerror(errno));

	/* logs next to the binary: build/esbridge -> build/tests/logs */
	snprintf(dir, sizeof(dir), "%s", bin);
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	{
		char logs[640];
		const struct criterion_test *t = criterion_current_test;
		snprintf(logs, sizeof(logs), "%s/tests/logs", dir);
		mkdirs(logs);
		snprintf(log_path, sizeof(log_path), "%s/%s-%s.log", logs,
			 t && t->category ? t->category : "test", t && t->name ? t->name : "unknown");
		(void)unlink(log_path);
	}

	conn = open_conn();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl = curl_easy_init();
	cr_assert_not_null(curl);
	r = h_es("GET", "/", NULL);
	cr_assert_eq(r.status, 200, "the search node at %s answers HTTP %ld", es_base, r.status);
	h_http_free(&r);

	h_sql(NULL, "DROP SCHEMA IF EXISTS esbridge CASCADE");
	h_sql(NULL, "TRUNCATE public.events RESTART IDENTITY");
	reset_search();
}

/* Closes the connections of h_connect(). */
static void close_extra_conns(void)
{
	for (int i = 0; i < MAX_CONNS; i++) {
		if (extra_conns[i]) {
			PQfinish(extra_conns[i]);
			extra_conns[i] = NULL;
		}
	}
}

void h_end(void)
{
	for (int i = 0; i < n_procs; i++)
		h_kill(&procs[i]);
	n_procs = 0;
	close_extra_conns();
	if (conn) {
		PQfinish(conn);
		conn = NULL;
	}
	if (curl) {
		curl_easy_cleanup(curl);
		curl = NULL;
		curl_global_cleanup();
	}
}

/* Runs `sql` with $1 = `from` and $2 = `to`. */
static void insert_range(int from, int to, const char *sql)
{
	char f[16], t[16];
	const char *params[2] = { f, t };

	snprintf(f, sizeof(f), "%d", from);
	snprintf(t, sizeof(t), "%d", to);
	PQclear(h_exec(NULL, sql, 2, params));
}

/*
 * Appends the generated events [from, to] in one statement (one
 * transaction). Products g1..g3000 are created by the first 3000; then, by
 * i mod 13: deletes, re-creates, price changes and updates of varying
 * fields, spread over the products by a stride coprime with 3000. Updates
 * and price changes after a delete make partial documents.
 */
void h_insert_generated_products(int from, int to)
{
	insert_range(from, to,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'product-g' || g.p, g.t,"
		"  CASE g.t"
		"   WHEN 'ProductCreated' THEN jsonb_build_object("
		"     'product_id', 'g' || g.p, 'name', 'Generated ' || g.p || ' #' || g.i,"
		"     'description', CASE WHEN g.i % 3 = 0 THEN NULL ELSE 'description ' || g.i END,"
		"     'category', 'category-' || (g.i % 17),"
		"     'price', round((g.i % 100000) / 100.0, 2),"
		"     'tags', jsonb_build_array('t' || (g.i % 5), 'Tag-' || (g.i % 7)),"
		"     'created_at', g.ts)"
		"   WHEN 'ProductUpdated' THEN jsonb_build_object('product_id', 'g' || g.p) ||"
		"     CASE g.i % 4"
		"      WHEN 0 THEN jsonb_build_object('name', 'Renamed ' || g.i)"
		"      WHEN 1 THEN jsonb_build_object('description', 'updated ' || g.i,"
		"                                     'tags', jsonb_build_array('u' || (g.i % 11)))"
		"      WHEN 2 THEN jsonb_build_object('category', 'category-' || (g.i % 23), 'updated_at', g.ts)"
		"      ELSE jsonb_build_object('name', 'Both ' || g.i, 'description', NULL::text,"
		"                              'updated_at', g.ts)"
		"     END"
		"   WHEN 'ProductPriceChanged' THEN jsonb_build_object('product_id', 'g' || g.p,"
		"     'new_price', round((g.i % 7777) / 10.0, 1), 'changed_at', g.ts)"
		"   ELSE jsonb_build_object('product_id', 'g' || g.p)"
		"  END, g.i"
		" FROM (SELECT i,"
		"        CASE WHEN i <= 3000 THEN i ELSE (i * 7919) % 3000 + 1 END AS p,"
		"        CASE WHEN i <= 3000 THEN 'ProductCreated'"
		"             WHEN i % 13 = 0 THEN 'ProductDeleted'"
		"             WHEN i % 13 IN (1, 2) THEN 'ProductCreated'"
		"             WHEN i % 13 IN (3, 4, 5, 6) THEN 'ProductPriceChanged'"
		"             ELSE 'ProductUpdated' END AS t,"
		"        to_char(timestamp '2026-01-01' + i * interval '1 second',"
		"                'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS ts"
		"       FROM generate_series($1::int, $2::int) i) g");
}

/*
 * Orders o`from`..o`to` in one transaction: created, two items, every third
 * one item removed, even ones shipped, every fourth completed, every
 * seventh cancelled.
 */
void h_insert_generated_orders(int from, int to)
{
	insert_range(from, to,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'order-o' || o, t,"
		"  CASE t"
		"   WHEN 'OrderCreated' THEN jsonb_build_object('order_id', 'o' || o, 'customer_id', 'c' || (o % 97),"
		"     'created_at', '2026-11-01T10:00:00Z')"
		"   WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'o' || o, 'product_id', 'p' || (o * step % 500),"
		"     'price', ((o * 31 + step * 17) % 20000) / 100.0, 'quantity', 1 + (o + step) % 3)"
		"   WHEN 'OrderItemRemoved' THEN jsonb_build_object('order_id', 'o' || o, 'product_id', 'p' || (o % 500),"
		"     'price', ((o * 31 + 17) % 20000) / 100.0, 'quantity', 1)"
		"   WHEN 'OrderShipped' THEN jsonb_build_object('order_id', 'o' || o, 'shipped_at', '2026-11-02T10:00:00Z')"
		"   WHEN 'OrderCompleted' THEN jsonb_build_object('order_id', 'o' || o, 'customer_id', 'c' || (o % 97),"
		"     'total_amount', 0, 'item_count', 2, 'completed_at', '2026-11-03T10:00:00Z')"
		"   ELSE jsonb_build_object('order_id', 'o' || o, 'reason', 'changed mind',"
		"     'cancelled_at', '2026-11-02T12:00:00Z')"
		"  END, step"
		" FROM (SELECT o, s.step, CASE s.step WHEN 1 THEN 'OrderCreated' WHEN 2 THEN 'OrderItemAdded'"
		"         WHEN 3 THEN 'OrderItemAdded' WHEN 4 THEN 'OrderItemRemoved' WHEN 5 THEN 'OrderShipped'"
		"         WHEN 6 THEN 'OrderCompleted' ELSE 'OrderCancelled' END AS t"
		"       FROM generate_series($1::int, $2::int) o, generate_series(1, 7) s(step)"
		"       WHERE s.step <= 3 OR (s.step = 4 AND o % 3 = 0) OR (s.step = 5 AND o % 2 = 0)"
		"          OR (s.step = 6 AND o % 4 = 0) OR (s.step = 7 AND o % 7 = 0)) x"
		" ORDER BY o, step");
}

/* ---- faults ---------------------------------------------------------------- */

int h_services(const char *const *args, double secs)
{
	const char *script = getenv("ESBRIDGE_SERVICES");
	const char *argv[16];
	double deadline;
	int argc = 0, fd = -1, status = 0;
	pid_t pid, r;

	if (!script || !*script)
		script = "scripts/services";
	argv[argc++] = script;
	for (int i = 0; args && args[i]; i++) {
		cr_assert_lt(argc, 15, "h_services: too many arguments");
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;
	if (log_path[0]) {
		fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
		cr_assert(fd >= 0, "cannot open %s: %s", log_path, strerror(errno));
		dprintf(fd, "=== services:");
		for (int i = 1; i < argc; i++)
			dprintf(fd, " %s", argv[i]);
		dprintf(fd, "\n");
	}
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		sigset_t none;
		/* no PR_SET_PDEATHSIG: a restart runs to its end even if the test dies */
		if (devnull >= 0)
			dup2(devnull, 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		} else if (devnull >= 0) {
			dup2(devnull, 1); /* only the eval-able lines of `start` */
		}
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		execv(script, (char *const *)argv);
		dprintf(2, "exec %s: %s\n", script, strerror(errno));
		_exit(127);
	}
	if (fd >= 0)
		close(fd);
	deadline = h_now() + secs;
	for (;;) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		cr_assert(r == 0 || errno == EINTR, "waitpid(%d): %s", (int)pid, strerror(errno));
		if (h_now() > deadline) {
			(void)kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			cr_assert_fail("%s %s did not finish within %.0fs", script, argv[1] ? argv[1] : "",
				       secs);
		}
		h_sleep(0.02);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void h_services_ok(const char *cmd, const char *arg, double secs)
{
	const char *const args[] = { cmd, arg, NULL };
	double t0 = h_now();
	int code = h_services(args, secs);

	cr_assert_eq(code, 0, "scripts/services %s%s%s exited with %d", cmd, arg ? " " : "", arg ? arg : "",
		     code);
	cr_log_info("services %s%s%s: %.2fs", cmd, arg ? " " : "", arg ? arg : "", h_now() - t0);
}

void h_services_up(void)
{
	static const char *const status[] = { "status", NULL };
	static const char *const thaw[] = { "es-thaw", NULL };
	static const char *const start[] = { "start", NULL };
	int code;

	if (h_services(status, 30) == 0)
		return; /* both answer: the usual case, and a quiet one */
	(void)h_services(thaw, 30); /* fails harmlessly when the node is down */
	code = h_services(start, 240);
	cr_assert_eq(code, 0, "scripts/services start exited with %d", code);
}

void h_pg_reset(void)
{
	close_extra_conns();
	if (conn)
		PQfinish(conn);
	conn = NULL;
	conn = open_conn();
}

struct h_proc *h_proxy_start(const char *const *args, char *url, size_t size)
{
	const char *tool = getenv("ESBRIDGE_FAULTPROXY");
	const char *argv[32];
	char port_file[1100], buf[32];
	struct h_proc *p;
	double deadline;
	int argc = 0;
	long port = 0;

	if (!tool || !*tool)
		tool = "tests/tools/faultproxy.py";
	cr_assert(es_base[0], "h_begin() was not called");
	snprintf(port_file, sizeof(port_file), "%s.proxy-port", log_path);
	(void)unlink(port_file);
	argv[argc++] = "--upstream";
	argv[argc++] = es_base;
	argv[argc++] = "--port-file";
	argv[argc++] = port_file;
	for (int i = 0; args && args[i]; i++) {
		cr_assert_lt(argc, 31, "h_proxy_start: too many arguments");
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;
	p = h_spawn_ex(0, tool, NULL, argv);
	deadline = h_now() + 20;
	for (;;) {
		FILE *f = fopen(port_file, "r");
		if (f) {
			if (fgets(buf, sizeof(buf), f))
				port = strtol(buf, NULL, 10);
			fclose(f);
			if (port > 0 && port < 65536)
				break;
		}
		if (h_wait(p, 0) || h_now() > deadline) {
			h_kill(p);
			cr_assert_fail("the fault proxy %s did not start (log: %s)", tool, p->log);
		}
		h_sleep(0.05);
	}
	(void)unlink(port_file);
	snprintf(url, size, "http://127.0.0.1:%ld", port);
	return p;
}

long h_proxy_faults(const struct h_proc *p, const char *kind)
{
	char *out = h_proc_output(p);
	char mark[128];
	size_t mlen;
	long n = 0;

	mlen = (size_t)snprintf(mark, sizeof(mark), "faultproxy: fault=%s ", kind);
	for (const char *line = out; line && *line;) {
		const char *nl = strchr(line, '\n');
		if (!strncmp(line, mark, mlen))
			n++;
		line = nl ? nl + 1 : NULL;
	}
	free(out);
	return n;
}
