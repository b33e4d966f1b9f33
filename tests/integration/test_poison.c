/*
 * The poison corpus (issue 6, "Bad events"): tests/data/poison/corpus.tsv,
 * described in tests/data/poison/README, mixed into a valid history of
 * products (the harness's generator) and orders
 * (tests/data/poison/orders_history.sql), read by one `run --once` of the
 * real daemon between a real PostgreSQL and a real search node.
 *
 * What must hold afterwards:
 *  - the daemon exited 0 and both checkpoints reached the last event;
 *  - the dead letters are exactly the corpus's `dead` and `held` events:
 *    one letter each, of the right projection, status 'pending' (dead) or
 *    'held' (naming the position of the letter that holds its document),
 *    the reason matching the corpus's expectation, the payload copied;
 *  - every document equals the oracle (tests/oracle/NAME.sql) computed over
 *    the events minus those dead letters: nothing else is missing, nothing
 *    else was written, no other document was touched (the injection
 *    attempts name documents "1" of both indices, which must stay as
 *    created);
 *  - every `valid` line with an expectation gives a document containing
 *    it (strings that look like _bulk action lines or SQL, kept verbatim);
 *  - PostgreSQL refuses the `refused` lines (so the bridge can never see
 *    them) and the events table is intact.
 *
 * Daemon logs: build/tests/logs/poison-*.log.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define CORPUS "tests/data/poison/corpus.tsv"
#define ORDERS_HISTORY "tests/data/poison/orders_history.sql"
#define MAX_EVENT_BYTES "65536"  /* the corpus's oversize events are 70000 bytes */
#define MAX_ROWS 512
#define MAX_DATA ((size_t)1 << 20)

/* the events the oracles leave out: the corpus's dead and held ones */
#define POISON_POSITIONS "SELECT pos FROM pg_temp.poison WHERE kind IN ('dead', 'held')"

static void suite_fini(void)
{
	h_end();
}

TestSuite(poison, .fini = suite_fini);

/* ---- the corpus ------------------------------------------------------------ */

enum kind { K_DEAD, K_HELD, K_VALID, K_REFUSED };

struct row {
	int line;
	enum kind kind;
	const char *projection;   /* from the stream prefix */
	char *stream, *type, *expect;
	char *data;               /* expanded, NUL-terminated */
	int64_t pos;              /* once inserted */
	int64_t blocking;         /* held: the position of the letter holding it */
};

struct corpus {
	char *text;
	struct row rows[MAX_ROWS];
	int n;
};

static const char *const kind_names[] = { "dead", "held", "valid", "refused" };

/* Appends `n` bytes to the malloc'd `*out` of length `*len`, bounded by MAX_DATA. */
static void put(char **out, size_t *len, const char *s, size_t n, int line)
{
	char *grown;

	cr_assert_lt(*len + n, MAX_DATA, "%s:%d: data above %zu bytes", CORPUS, line, MAX_DATA);
	grown = realloc(*out, *len + n + 1);
	cr_assert_not_null(grown, "out of memory");
	memcpy(grown + *len, s, n);
	*len += n;
	grown[*len] = '\0';
	*out = grown;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The data field with @REP(N,TEXT) expanded, or hex: decoded. */
static char *expand(const char *field, int line)
{
	char *out = NULL;
	size_t len = 0;
	const char *p = field;

	put(&out, &len, "", 0, line);
	if (!strncmp(p, "hex:", 4)) {
		for (p += 4; p[0] && p[1]; p += 2) {
			int hi = hexval(p[0]), lo = hexval(p[1]);
			char byte;
			cr_assert(hi >= 0 && lo >= 0, "%s:%d: bad hex", CORPUS, line);
			byte = (char)(hi << 4 | lo);
			cr_assert_neq(byte, '\0', "%s:%d: a NUL byte cannot be a text parameter", CORPUS, line);
			put(&out, &len, &byte, 1, line);
		}
		cr_assert_eq(*p, '\0', "%s:%d: odd hex length", CORPUS, line);
		return out;
	}
	while (*p) {
		const char *rep = strstr(p, "@REP(");
		const char *comma, *close;
		char *end;
		long times;

		if (!rep) {
			put(&out, &len, p, strlen(p), line);
			break;
		}
		put(&out, &len, p, (size_t)(rep - p), line);
		errno = 0;
		times = strtol(rep + 5, &end, 10);
		comma = end;
		cr_assert(errno == 0 && times > 0 && times <= (long)MAX_DATA && *comma == ',',
			  "%s:%d: bad @REP", CORPUS, line);
		close = strchr(comma + 1, ')');
		cr_assert_not_null(close, "%s:%d: @REP without ')'", CORPUS, line);
		for (long i = 0; i < times; i++)
			put(&out, &len, comma + 1, (size_t)(close - comma - 1), line);
		p = close + 1;
	}
	return out;
}

static void corpus_load(struct corpus *c)
{
	size_t size;
	char *line, *next;
	int lineno = 0;

	c->text = h_read_file(CORPUS, &size); /* (run from the repository root) */
	cr_assert_gt(size, 0, "%s is empty", CORPUS);
	c->n = 0;

	for (line = c->text; line && *line; line = next) {
		char *field[5];
		struct row *r;
		int k;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (!*line || *line == '#')
			continue;
		field[0] = line;
		for (k = 1; k < 5; k++) {
			char *tab = strchr(field[k - 1], '\t');
			cr_assert_not_null(tab, "%s:%d: fewer than five tab-separated fields", CORPUS, lineno);
			*tab = '\0';
			field[k] = tab + 1;
		}
		cr_assert_lt(c->n, MAX_ROWS, "%s: more than %d events", CORPUS, MAX_ROWS);
		r = &c->rows[c->n++];
		memset(r, 0, sizeof(*r));
		r->line = lineno;
		for (k = 0; k < 4 && strcmp(field[0], kind_names[k]); k++)
			;
		cr_assert_lt(k, 4, "%s:%d: unknown kind '%s'", CORPUS, lineno, field[0]);
		r->kind = (enum kind)k;
		r->stream = field[1];
		r->type = field[2];
		r->expect = field[3];
		if (!strncmp(r->stream, "product-", 8))
			r->projection = "products";
		else if (!strncmp(r->stream, "order-", 6))
			r->projection = "orders";
		else
			cr_assert_fail("%s:%d: stream '%s' belongs to no projection", CORPUS, lineno, r->stream);
		cr_assert(*r->expect, "%s:%d: empty expectation (use -)", CORPUS, lineno);
		r->data = expand(field[4], lineno);
	}
}

static void corpus_free(struct corpus *c)
{
	for (int i = 0; i < c->n; i++)
		free(c->rows[i].data);
	free(c->text);
}

/* Appends the row's event and notes it in the temp table poison. */
static void insert_row(struct corpus *c, int i)
{
	struct row *r = &c->rows[i];
	char line[16], pos[32], blocking[32];
	const char *params[7];

	cr_assert_neq(r->kind, K_REFUSED);
	r->pos = h_event(NULL, r->stream, r->type, r->data);
	cr_assert_gt(r->pos, 0);
	if (r->kind == K_HELD) {
		/* held behind the last dead event of its stream (one document a stream here) */
		for (int j = i - 1; j >= 0 && !r->blocking; j--)
			if (c->rows[j].kind == K_DEAD && !strcmp(c->rows[j].stream, r->stream))
				r->blocking = c->rows[j].pos;
		cr_assert_gt(r->blocking, 0, "%s:%d: a held event with no dead event before it", CORPUS,
			     r->line);
	}
	snprintf(line, sizeof(line), "%d", r->line);
	snprintf(pos, sizeof(pos), "%" PRId64, r->pos);
	snprintf(blocking, sizeof(blocking), "%" PRId64, r->blocking);
	params[0] = line;
	params[1] = kind_names[r->kind];
	params[2] = r->projection;
	params[3] = pos;
	params[4] = r->expect;
	params[5] = r->kind == K_HELD ? blocking : NULL;
	params[6] = r->stream;
	PQclear(h_exec(NULL,
		"INSERT INTO pg_temp.poison (line, kind, projection, pos, expect, blocking, stream_id)"
		" VALUES ($1::int, $2, $3, $4::bigint, $5, $6::bigint, $7)", 7, params));
}

/* Inserts the rows [from, to) that the store accepts. */
static void insert_rows(struct corpus *c, int from, int to)
{
	for (int i = from; i < to; i++)
		if (c->rows[i].kind != K_REFUSED)
			insert_row(c, i);
}

static void orders_history(int first, int last)
{
	char a[32], b[32];
	const char *vars[3] = { a, b, NULL };

	snprintf(a, sizeof(a), "first=%d", first);
	snprintf(b, sizeof(b), "last=%d", last);
	h_sql_file(NULL, ORDERS_HISTORY, vars);
}

/*
 * Tries to store a `refused` line: PostgreSQL must refuse it with an error
 * matching its expectation. (jsonb cannot hold invalid JSON, \u0000, lone
 * surrogates, nesting deeper than its stack, and text cannot hold invalid
 * UTF-8: no such event can ever reach the bridge. How the bridge's own
 * parser treats such bytes is for tests/unit/test_json.c and the fuzz
 * targets.)
 */
static int check_refused(const struct row *r)
{
	const char *params[3] = { r->stream, r->type, r->data };
	PGresult *res = PQexecParams(h_pg(),
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" VALUES ($1, $2, $3::jsonb, 1) RETURNING global_position",
		3, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	char *msg = strdup(PQresultErrorMessage(res));
	const char *mp[2];
	int bad = 0;

	PQclear(res);
	cr_assert_not_null(msg);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		cr_log_error("%s:%d: PostgreSQL stored a refused line", CORPUS, r->line);
		bad = 1;
	} else {
		mp[0] = msg;
		mp[1] = r->expect;
		if (!h_query_ll(NULL, "SELECT ($1 ~* $2)::int", 2, mp, 0)) {
			cr_log_error("%s:%d: refused, but with '%s', not /%s/", CORPUS, r->line, msg, r->expect);
			bad = 1;
		} else {
			cr_log_info("%s:%d: refused by PostgreSQL: %.120s", CORPUS, r->line, msg);
		}
	}
	free(msg);
	return bad;
}

/* ---- checks ------------------------------------------------------------------ */

/* Logs every row of `sql` (its columns joined) under `title`; returns the count. */
static long report(const char *title, const char *sql, int n, const char *const *params)
{
	PGresult *res = h_exec(NULL, sql, n, params);
	long rows = PQntuples(res);

	for (long i = 0; i < rows && i < 20; i++) {
		char text[2048];
		size_t len = 0;
		for (int col = 0; col < PQnfields(res) && len < sizeof(text) - 1; col++)
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s=%.300s", col ? " " : "",
						PQfname(res, col),
						PQgetisnull(res, i, col) ? "NULL" : PQgetvalue(res, i, col));
		cr_log_error("%s: %s", title, text);
	}
	PQclear(res);
	return rows;
}

/* The dead letters are exactly the poison; returns the number of problems. */
static long check_dead_letters(void)
{
	long bad = 0;

	bad += report("a poison event is not a dead letter",
		"SELECT p.line, p.kind, p.pos, p.stream_id FROM pg_temp.poison p"
		" WHERE p.kind IN ('dead', 'held')"
		"   AND NOT EXISTS (SELECT 1 FROM esbridge.dead_letters d WHERE d.global_position = p.pos)"
		" ORDER BY p.line", 0, NULL);
	bad += report("a dead letter that is not poison",
		"SELECT d.global_position, d.projection, d.stream_id, d.event_type, d.status, d.reason"
		"  FROM esbridge.dead_letters d"
		" WHERE NOT EXISTS (SELECT 1 FROM pg_temp.poison p"
		"                    WHERE p.pos = d.global_position AND p.kind IN ('dead', 'held'))"
		" ORDER BY d.global_position", 0, NULL);
	bad += report("an event with more than one dead letter",
		"SELECT global_position, count(*) FROM esbridge.dead_letters"
		" GROUP BY global_position HAVING count(*) > 1", 0, NULL);
	bad += report("a dead letter of the wrong projection",
		"SELECT p.line, d.projection, p.projection AS want FROM pg_temp.poison p"
		"  JOIN esbridge.dead_letters d ON d.global_position = p.pos"
		" WHERE d.projection <> p.projection ORDER BY p.line", 0, NULL);
	bad += report("a reason that does not match the corpus",
		"SELECT p.line, p.stream_id, d.reason, p.expect FROM pg_temp.poison p"
		"  JOIN esbridge.dead_letters d ON d.global_position = p.pos"
		" WHERE p.kind = 'dead' AND NOT d.reason ~* p.expect ORDER BY p.line", 0, NULL);
	bad += report("a poison event whose letter is not pending",
		"SELECT p.line, p.stream_id, d.status FROM pg_temp.poison p"
		"  JOIN esbridge.dead_letters d ON d.global_position = p.pos"
		" WHERE p.kind = 'dead' AND d.status <> 'pending' ORDER BY p.line", 0, NULL);
	bad += report("a held-back event not recorded as held behind its blocking letter",
		"SELECT p.line, p.stream_id, d.status, d.reason, p.blocking FROM pg_temp.poison p"
		"  JOIN esbridge.dead_letters d ON d.global_position = p.pos"
		" WHERE p.kind = 'held'"
		"   AND (d.status <> 'held' OR NOT d.reason ~ ('\\m' || p.blocking || '\\M'))"
		" ORDER BY p.line", 0, NULL);
	bad += report("a dead letter that does not copy its event",
		"SELECT d.global_position, d.stream_id, d.event_type FROM esbridge.dead_letters d"
		"  JOIN public.events e USING (global_position)"
		" WHERE d.stream_id IS DISTINCT FROM e.stream_id"
		"    OR d.event_type IS DISTINCT FROM e.event_type"
		"    OR d.transaction_id <> e.transaction_id"
		"    OR d.data IS NULL OR d.data::jsonb <> e.data", 0, NULL);
	bad += report("a dead letter without a reason",
		"SELECT global_position FROM esbridge.dead_letters WHERE coalesce(reason, '') = ''", 0, NULL);
	return bad;
}

/* Documents equal the oracle and hold what the valid lines expect; returns problems. */
static long check_documents(const char *name, const char *id_key)
{
	const char *params[2] = { name, id_key };
	long only_oracle, only_es, n, want, bad = 0;
	char sql[128];

	n = h_load_es_docs(name);
	h_compare_oracle(name, &only_oracle, &only_es);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM oracle_%s", name);
	want = (long)h_query_ll(NULL, sql, 0, NULL, 0);
	cr_log_info("%s: %ld documents in the index, %ld in the oracle", name, n, want);
	if (only_oracle || only_es || n != want) {
		cr_log_error("%s: %ld documents only in the oracle, %ld only in the index (%ld vs %ld)", name,
			     only_oracle, only_es, n, want);
		bad++;
	}
	bad += report("a valid line whose document does not hold what the corpus expects",
		"SELECT p.line, p.stream_id, p.expect, x.doc FROM pg_temp.poison p"
		"  JOIN public.events e ON e.global_position = p.pos"
		"  LEFT JOIN es_docs x ON x.id = CASE jsonb_typeof(e.data -> $2)"
		"                                  WHEN 'string' THEN e.data ->> $2"
		"                                  ELSE (e.data -> $2)::text END"
		" WHERE p.kind = 'valid' AND p.projection = $1 AND p.expect <> '-'"
		"   AND (x.doc IS NULL OR NOT x.doc @> p.expect::jsonb)"
		" ORDER BY p.line", 2, params);
	return bad;
}

/* The checkpoint of `projection` is the position of the event at `pos`. */
static void assert_checkpoint_at(const char *projection, int64_t pos)
{
	uint64_t txid;
	int64_t at;

	cr_assert(h_checkpoint(projection, &txid, &at), "no %s generation", projection);
	cr_assert(txid == h_event_txid(pos) && at == pos,
		  "%s: the checkpoint %" PRIu64 "/%" PRId64 " is not the last event %" PRIu64 "/%" PRId64,
		  projection, txid, at, h_event_txid(pos), pos);
}

/* ---- the test ------------------------------------------------------------------ */

Test(poison, corpus_in_a_valid_history, .timeout = 300)
{
	static const char *const args[] = {
		"--max-event-bytes", MAX_EVENT_BYTES,
		/* several batches and requests: poison meets valid events in every one */
		"--batch-size", "700", "--bulk-actions", "250",
		/* the corpus is of these two; the others read order events too */
		"--projection", "products", "--projection", "orders", NULL,
	};
	static struct corpus c; /* large: not on the stack */
	char dir[] = "/tmp/esbridge-poison-XXXXXX", path[1100];
	int64_t last_product, last_order;
	long long n_events, n_dead = 0, n_held = 0, n_valid = 0, n_refused = 0;
	long bad_refused = 0, bad_letters, bad_products, bad_orders;
	int third, code;

	h_begin();
	corpus_load(&c);
	for (int i = 0; i < c.n; i++) {
		n_dead += c.rows[i].kind == K_DEAD;
		n_held += c.rows[i].kind == K_HELD;
		n_valid += c.rows[i].kind == K_VALID;
		n_refused += c.rows[i].kind == K_REFUSED;
	}
	cr_log_info("corpus: %lld dead, %lld held, %lld valid, %lld refused", n_dead, n_held, n_valid,
		    n_refused);
	cr_assert_geq(n_dead, 50, "the corpus holds %lld poison events, fewer than 50", n_dead);

	h_sql(NULL, "CREATE TEMP TABLE poison (line int PRIMARY KEY, kind text NOT NULL,"
		    " projection text NOT NULL, pos bigint NOT NULL UNIQUE, expect text NOT NULL,"
		    " blocking bigint, stream_id text NOT NULL)");

	/* the corpus in three parts, between slices of the valid history */
	third = (c.n + 2) / 3;
	h_sql(NULL, "BEGIN");
	h_insert_generated_products(1, 1500);
	orders_history(1, 100);
	insert_rows(&c, 0, third); /* in the same transaction as valid events */
	h_sql(NULL, "COMMIT");
	h_insert_generated_products(1501, 3000);
	h_sql(NULL, "BEGIN");
	orders_history(101, 200);
	insert_rows(&c, third, 2 * third);
	h_sql(NULL, "COMMIT");
	insert_rows(&c, 2 * third, c.n); /* one transaction each */
	h_insert_generated_products(3001, 4500);
	orders_history(201, 300);
	last_product = h_event(NULL, "product-zz-last", "ProductCreated",
			       "{\"product_id\": \"zz-last\", \"name\": \"last\", \"price\": 1}");
	last_order = h_event(NULL, "order-zz-last", "OrderCreated",
			     "{\"order_id\": \"zz-last\", \"customer_id\": \"c\"}");
	n_events = h_query_ll(NULL, "SELECT count(*) FROM public.events", 0, NULL, 0);
	cr_log_info("%lld events in the store", n_events);

	for (int i = 0; i < c.n; i++)
		if (c.rows[i].kind == K_REFUSED)
			bad_refused += check_refused(&c.rows[i]);
	cr_expect_eq(h_query_ll(NULL, "SELECT count(*) FROM public.events", 0, NULL, 0), n_events,
		     "a refused line was stored");

	code = h_run_once(args, 240);
	cr_expect_eq(code, 0, "run --once exited with %d", code);

	/* the store is intact: no statement ever came from event data */
	cr_expect_eq(h_query_ll(NULL, "SELECT count(*) FROM public.events", 0, NULL, 0), n_events,
		     "the events table changed");
	bad_letters = check_dead_letters();

	cr_assert_neq(mkdtemp(dir), NULL, "mkdtemp: %s", strerror(errno));
	h_write_oracle_without(dir, "products", POISON_POSITIONS);
	h_write_oracle_without(dir, "orders", POISON_POSITIONS);
	cr_assert_eq(setenv("ESBRIDGE_ORACLE_DIR", dir, 1), 0);
	bad_products = check_documents("products", "product_id");
	bad_orders = check_documents("orders", "order_id");
	cr_assert_eq(unsetenv("ESBRIDGE_ORACLE_DIR"), 0);
	snprintf(path, sizeof(path), "%s/products.sql", dir);
	(void)unlink(path);
	snprintf(path, sizeof(path), "%s/orders.sql", dir);
	(void)unlink(path);
	(void)rmdir(dir);

	cr_expect_eq(bad_refused, 0, "%ld refused lines were not refused as expected", bad_refused);
	cr_expect_eq(bad_letters, 0, "%ld problems with the dead letters (see the log)", bad_letters);
	cr_expect_eq(bad_products, 0, "%ld problems with the products documents", bad_products);
	cr_expect_eq(bad_orders, 0, "%ld problems with the orders documents", bad_orders);
	cr_expect_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters", 0, NULL, 0),
		     n_dead + n_held, "dead letters: want %lld", n_dead + n_held);
	assert_checkpoint_at("products", last_product);
	assert_checkpoint_at("orders", last_order);
	corpus_free(&c);
}
