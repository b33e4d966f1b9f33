/*
 * Integration tests of the dead letters (issue 6, "Bad events") and of
 * `esbridge dead-letters list|retry|discard`, end to end: the real daemon
 * between a real PostgreSQL and a real search node, the CLI as an operator
 * runs it.
 *
 *   a. a bad event holds its product back while other products flow; the
 *      product's later events, live ones included, become 'held' letters;
 *      `list` shows them; `discard ID --reason` with a daemon running makes
 *      it apply the held events in order and mark them 'retried'; the
 *      product then follows live events again;
 *   b. `retry ID` of a letter that fails again (the search node refuses the
 *      event) leaves it pending and its product held, with the same rows;
 *   c. with no daemon running, `discard`, `retry --all --projection` and
 *      `retry --all` are applied by the next `run --once`;
 *   d. SIGKILL while letters are recorded and while they are applied again
 *      (products and orders): one letter per event, no increment applied
 *      twice, the documents right;
 *   e. usage errors exit 2 with one line.
 *
 * Documents are compared with the independent SQL oracle
 * (tests/oracle/NAME.sql) of the events minus the ones the test leaves out
 * (discarded, or still open letters), as an operator's view of "what should
 * be there". Daemon and CLI logs: build/tests/logs/letters-TEST.log.
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

#define ALIAS "products"
#define INDEX "products-000001"

static char oracle_dir[64];

/* Each test calls h_begin() first; .fini kills what it left running. */
static void suite_fini(void)
{
	h_end();
	if (oracle_dir[0]) {
		char path[128];
		snprintf(path, sizeof(path), "%s/products.sql", oracle_dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/orders.sql", oracle_dir);
		unlink(path);
		rmdir(oracle_dir);
	}
}

TestSuite(letters, .fini = suite_fini);

/* ---- helpers --------------------------------------------------------------- */

/* Runs `esbridge ARGS` to its end; its exit code, its output (malloc'd) in `*out`. */
static int cli(char **out, const char *const *args)
{
	struct h_proc *p = h_spawn(0, args);

	if (!h_wait(p, 60)) {
		h_kill(p);
		cr_assert_fail("esbridge %s %s did not exit within 60s (log: %s)", args[0], args[1] ? args[1] : "",
			       p->log);
	}
	*out = h_proc_output(p);
	cr_assert_not_null(*out);
	return h_exit_code(p);
}

/* The same, which must exit 0. */
static char *cli_ok(const char *const *args)
{
	char *out;
	int code = cli(&out, args);

	cr_assert_eq(code, 0, "esbridge %s %s exited %d:\n%s", args[0], args[1] ? args[1] : "", code, out);
	return out;
}

/* The line of `out` that starts with `prefix`, skipping the daemon's log lines; malloc'd or NULL. */
static char *line_starting(const char *out, const char *prefix)
{
	for (const char *l = out; l && *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		if (len >= strlen(prefix) && !strncmp(l, prefix, strlen(prefix))) {
			char *r = strndup(l, len);
			cr_assert_not_null(r);
			return r;
		}
		l = nl ? nl + 1 : NULL;
	}
	return NULL;
}

/* Lines of `dead-letters list` output: those not from a daemon's log nor the harness. */
static int listed_lines(const char *out)
{
	int n = 0;

	for (const char *l = out; l && *l;) {
		const char *nl = strchr(l, '\n');
		if (strncmp(l, "ts=", 3) && strncmp(l, "===", 3) && l[0] != '\n')
			n++;
		l = nl ? nl + 1 : NULL;
	}
	return n;
}

/* The id of the letter of `proj` at `pos` (any status); fails if there is none or several. */
static long long letter_id(const char *proj, int64_t pos)
{
	char p[32];
	const char *params[2] = { proj, p };

	snprintf(p, sizeof(p), "%" PRId64, pos);
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE projection = $1"
				      " AND global_position = $2::bigint", 2, params, -1), 1,
		     "not exactly one letter at %s", p);
	return h_query_ll(NULL, "SELECT id FROM esbridge.dead_letters WHERE projection = $1"
				" AND global_position = $2::bigint", 2, params, -1);
}

/* The status of the letter of `proj` at `pos`, malloc'd ("" when none). */
static char *letter_status(const char *proj, int64_t pos)
{
	char p[32];
	const char *params[2] = { proj, p };
	char *s;

	snprintf(p, sizeof(p), "%" PRId64, pos);
	s = h_query_text(NULL, "SELECT coalesce(string_agg(status, ','), '') FROM esbridge.dead_letters"
			       " WHERE projection = $1 AND global_position = $2::bigint", 2, params);
	cr_assert_not_null(s);
	return s;
}

static bool status_is(const char *proj, int64_t pos, const char *want)
{
	char *s = letter_status(proj, pos);
	bool eq = !strcmp(s, want);

	free(s);
	return eq;
}

static long long count_where(const char *sql)
{
	return h_query_ll(NULL, sql, 0, NULL, -1);
}

/* No event has two letters of one generation, open or not. */
static void assert_one_letter_per_event(void)
{
	long long dup = count_where(
		"SELECT count(*) FROM (SELECT 1 FROM esbridge.dead_letters"
		" GROUP BY projection, generation, global_position HAVING count(*) > 1) x");

	cr_assert_eq(dup, 0, "%lld events have more than one dead letter", dup);
}

/* True when the search finds document `id` and its _source equals `want` (jsonb). */
static bool source_is(const char *id, const char *want)
{
	return h_source_is(ALIAS, id, want);
}

/* The same, `want` a SQL expression of the test's own (no data in it). */
static bool source_is_built(const char *id, const char *want)
{
	char *src = h_search_source(ALIAS, id);
	const char *params[1];
	char sql[512];
	bool eq;

	if (!src)
		return false;
	params[0] = src;
	snprintf(sql, sizeof(sql), "SELECT ($1::jsonb = %s)::int", want);
	eq = h_query_ll(NULL, sql, 1, params, 0) == 1;
	free(src);
	return eq;
}

static bool searchable(const char *id)
{
	return h_searchable(ALIAS, id);
}

/*
 * After h_begin(): the oracles of the events minus those at the positions in
 * the temp table left_out, in a folder of our own that ESBRIDGE_ORACLE_DIR
 * then names; nothing left out yet.
 */
static void narrowed_oracles(void)
{
	if (!oracle_dir[0]) {
		snprintf(oracle_dir, sizeof(oracle_dir), "/tmp/esbridge-letters-XXXXXX");
		cr_assert_not_null(mkdtemp(oracle_dir), "mkdtemp: %s", strerror(errno));
	}
	h_write_oracle_without(oracle_dir, "products", "SELECT pos FROM pg_temp.left_out");
	h_write_oracle_without(oracle_dir, "orders", "SELECT pos FROM pg_temp.left_out");
	cr_assert_eq(setenv("ESBRIDGE_ORACLE_DIR", oracle_dir, 1), 0);
	h_sql(NULL, "CREATE TEMP TABLE IF NOT EXISTS left_out (pos bigint PRIMARY KEY)");
	h_sql(NULL, "TRUNCATE left_out");
}

/* The oracle leaves the event at `pos` out. */
static void leave_out(int64_t pos)
{
	char p[32];
	const char *params[1] = { p };

	snprintf(p, sizeof(p), "%" PRId64, pos);
	PQclear(h_exec(NULL, "INSERT INTO left_out VALUES ($1::bigint) ON CONFLICT DO NOTHING", 1, params));
}

static void leave_nothing_out(void)
{
	h_sql(NULL, "TRUNCATE left_out");
}

struct letters_arg {
	const char *proj;
	long long want;
};

/* True once the daemon has created its state (the tests start without it). */
static bool have_letters_table(void)
{
	return h_query_ll(NULL, "SELECT (to_regclass('esbridge.dead_letters') IS NOT NULL)::int", 0, NULL, 0) == 1;
}

static bool letters_reach(void *arg)
{
	const struct letters_arg *a = arg;
	const char *params[1] = { a->proj };

	return have_letters_table() && h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE projection = $1", 1, params,
			  -1) >= a->want;
}

/* ---- a. hold back, list, discard with a daemon running ------------------------ */

Test(letters, discard_releases_the_held_events_in_order, .timeout = 150)
{
	static const char *const daemon[] = {
		"run", "--projection", "products", "--poll-interval", "0.2", NULL,
	};
	static struct h_expectations x;
	struct letters_arg want = { "products", 4 };
	static const char why[] = "typed by hand; the price is in a later event";
	struct h_proc *p;
	int64_t bad, a3, a4, a5, a6, late;
	long long bad_id;
	char *out, *line, idtext[32], prefix[40];

	h_begin();
	narrowed_oracles();
	p = h_spawn(0, daemon);
	H_EVENTUALLY(h_alias_is(ALIAS, INDEX), H_LONG, "the alias never named %s (log: %s)", INDEX, p->log);

	h_add_event(&x, "product-a", "ProductCreated",
		    "{\"product_id\": \"a\", \"name\": \"A\", \"price\": 1.00, \"tags\": [\"x\"]}", H_APPLIED,
		    NULL, NULL);
	h_add_event(&x, "product-b", "ProductCreated",
		    "{\"product_id\": \"b\", \"name\": \"B\", \"price\": 2.00}", H_APPLIED, NULL, NULL);
	bad = h_add_event(&x, "product-a", "ProductPriceChanged",
			  "{\"product_id\": \"a\", \"new_price\": \"1,50\"}", H_PENDING, "a", "'new_price'");
	a3 = h_add_event(&x, "product-a", "ProductUpdated", "{\"product_id\": \"a\", \"name\": \"A2\"}", H_HELD,
			 "a", NULL);
	h_add_event(&x, "product-b", "ProductUpdated", "{\"product_id\": \"b\", \"description\": \"flows\"}",
		    H_APPLIED, NULL, NULL);
	a4 = h_add_event(&x, "product-a", "ProductPriceChanged", "{\"product_id\": \"a\", \"new_price\": 3.00}",
			 H_HELD, "a", NULL);
	a5 = h_add_event(&x, "product-a", "ProductUpdated", "{\"product_id\": \"a\", \"name\": \"A3\"}", H_HELD,
			 "a", NULL);

	/* a is held back; b flows */
	cr_assert(h_eventually(letters_reach, &want, H_LONG), "the letters were not recorded (log: %s)", p->log);
	H_EVENTUALLY(source_is("b", "{\"product_id\": \"b\", \"name\": \"B\", \"price\": 2.00, \"description\": \"flows\"}"),
		     H_LONG, "b did not flow past a's letter (log: %s)", p->log);
	cr_assert(source_is("a", "{\"product_id\": \"a\", \"name\": \"A\", \"price\": 1.00, \"tags\": [\"x\"]}"),
		  "a moved on past its dead letter");
	/* a live event of a waits too */
	a6 = h_add_event(&x, "product-a", "ProductUpdated",
			 "{\"product_id\": \"a\", \"description\": \"late\"}", H_HELD, "a", NULL);
	want.want = 5;
	cr_assert(h_eventually(letters_reach, &want, H_LONG), "the live event of a was not held (log: %s)", p->log);
	h_assert_letters("products", &x);

	/* list: the open letters, the pending one and the four held behind it */
	out = cli_ok((const char *const[]){ "dead-letters", "list", NULL });
	cr_assert_eq(listed_lines(out), 1 + 5, "list printed %d lines, want a header and 5:\n%s", listed_lines(out),
		     out);
	{
		char *header = line_starting(out, "ID ");
		cr_assert_not_null(header, "no header line:\n%s", out);
		free(header);
	}
	for (size_t i = 0; i < x.n; i++) {
		const char *status = x.ev[i].out == H_PENDING ? " pending " : x.ev[i].out == H_HELD ? " held " : NULL;
		char pos[48];
		if (!status)
			continue;
		snprintf(prefix, sizeof(prefix), "%lld ", letter_id("products", x.ev[i].pos));
		line = line_starting(out, prefix);
		cr_assert_not_null(line, "no line for letter %s in:\n%s", prefix, out);
		snprintf(pos, sizeof(pos), "%" PRIu64 "/%" PRId64, h_event_txid(x.ev[i].pos), x.ev[i].pos);
		cr_assert(strstr(line, status) && strstr(line, " products ") && strstr(line, pos) &&
			  strstr(line, " product-a ") && strstr(line, " a "),
			  "the line of the letter at %" PRId64 " is \"%s\"", x.ev[i].pos, line);
		free(line);
	}
	free(out);

	/* discard the bad one: the daemon applies the held ones, in order */
	bad_id = letter_id("products", bad);
	snprintf(idtext, sizeof(idtext), "%lld", bad_id);
	out = cli_ok((const char *const[]){ "dead-letters", "discard", idtext, "--reason", why, NULL });
	snprintf(prefix, sizeof(prefix), "discarded dead letter %lld", bad_id);
	line = line_starting(out, prefix);
	cr_assert_not_null(line, "discard said:\n%s", out);
	free(line);
	free(out);
	H_EVENTUALLY(status_is("products", a3, "retried") && status_is("products", a4, "retried") &&
			     status_is("products", a5, "retried") && status_is("products", a6, "retried"),
		     H_LONG, "the held letters were not applied again (log: %s)", p->log);
	cr_assert(status_is("products", bad, "discarded"));
	{
		char p1[32];
		const char *params[1] = { p1 };
		char *note;
		snprintf(p1, sizeof(p1), "%" PRId64, bad);
		note = h_query_text(NULL, "SELECT note FROM esbridge.dead_letters WHERE global_position = $1::bigint",
				    1, params);
		cr_assert(note && !strcmp(note, why), "the discarded letter's note is '%s'", note ? note : "(null)");
		free(note);
	}
	/* in order: the last name and the price after the discarded event win */
	H_EVENTUALLY(source_is("a", "{\"product_id\": \"a\", \"name\": \"A3\", \"price\": 3.00, \"tags\": [\"x\"],"
				    " \"description\": \"late\"}"),
		     H_LONG, "a is not its events minus the discarded one, in order (log: %s)", p->log);
	leave_out(bad);
	h_assert_docs_match_oracle(ALIAS);
	assert_one_letter_per_event();

	/* a follows live events again */
	late = h_event(NULL, "product-a", "ProductUpdated", "{\"product_id\": \"a\", \"name\": \"A4\"}");
	H_EVENTUALLY(source_is("a", "{\"product_id\": \"a\", \"name\": \"A4\", \"price\": 3.00, \"tags\": [\"x\"],"
				    " \"description\": \"late\"}"),
		     H_LONG, "a does not follow live events after the discard (log: %s)", p->log);
	cr_assert(status_is("products", late, ""), "the live event after the discard is a letter");

	/* nothing open any more; --all shows what became of them */
	out = cli_ok((const char *const[]){ "dead-letters", "list", NULL });
	cr_assert_eq(listed_lines(out), 1, "open letters left:\n%s", out);
	cr_assert_not_null(strstr(out, "no open dead letters"), "list did not say none is open:\n%s", out);
	free(out);
	out = cli_ok((const char *const[]){ "dead-letters", "list", "--all", "--projection", "products", NULL });
	cr_assert_eq(listed_lines(out), 1 + 5, "list --all printed %d lines, want 6:\n%s", listed_lines(out), out);
	snprintf(prefix, sizeof(prefix), "%lld ", bad_id);
	line = line_starting(out, prefix);
	cr_assert(line && strstr(line, " discarded ") && strstr(line, why), "the discarded letter is listed as \"%s\"",
		  line ? line : "(nothing)");
	free(line);
	free(out);

	h_stop(p, 30);
	h_expectations_free(&x);
}

/* ---- b. retry of a letter that fails again ----------------------------------------- */

Test(letters, retry_that_fails_again_stays_pending, .timeout = 120)
{
	static const char *const daemon[] = {
		"run", "--projection", "products", "--poll-interval", "0.2", NULL,
	};
	static struct h_expectations x;
	struct letters_arg want = { "products", 2 };
	struct h_proc *p;
	int64_t bad, held;
	long long bad_id, held_id;
	char *out, *line, idtext[32];

	h_begin();
	narrowed_oracles();
	p = h_spawn(0, daemon);
	H_EVENTUALLY(h_alias_is(ALIAS, INDEX), H_LONG, "the alias never named %s (log: %s)", INDEX, p->log);

	h_add_event(&x, "product-c", "ProductCreated", "{\"product_id\": \"c\", \"name\": \"C\", \"price\": 5}",
		    H_APPLIED, NULL, NULL);
	/* valid for the projection, refused by the node: not a date */
	bad = h_add_event(&x, "product-c", "ProductUpdated",
			  "{\"product_id\": \"c\", \"updated_at\": \"last tuesday\"}", H_PENDING, "c",
			  "Elasticsearch");
	held = h_add_event(&x, "product-c", "ProductUpdated", "{\"product_id\": \"c\", \"name\": \"C2\"}",
			   H_HELD, "c", NULL);
	h_add_event(&x, "product-d", "ProductCreated", "{\"product_id\": \"d\", \"name\": \"D\", \"price\": 6}",
		    H_APPLIED, NULL, NULL);
	cr_assert(h_eventually(letters_reach, &want, H_LONG), "the letters were not recorded (log: %s)", p->log);
	H_EVENTUALLY(searchable("d"), H_LONG, "d did not flow (log: %s)", p->log);
	h_assert_letters("products", &x);
	bad_id = letter_id("products", bad);
	held_id = letter_id("products", held);

	/*
	 * retry by the held letter's id: the document's open letters go back
	 * together; it says who applies them, and --wait waits for the outcome:
	 * 1, naming the letter that failed again
	 */
	snprintf(idtext, sizeof(idtext), "%lld", held_id);
	{
		char said[64];
		int code = cli(&out, (const char *const[]){ "dead-letters", "retry", idtext, "--wait", "--timeout",
							    "60", NULL });
		cr_assert_eq(code, 1, "retry --wait of a letter that fails again exited %d:\n%s", code, out);
		snprintf(said, sizeof(said), "dead letter %lld is pending", bad_id);
		cr_assert_not_null(strstr(out, said), "retry --wait did not name the letter that failed:\n%s", out);
	}
	line = line_starting(out, "2 dead letters to apply again: by esbridge ");
	cr_assert_not_null(line, "retry said:\n%s", out);
	cr_assert_not_null(strstr(line, "which runs 'products', at once"), "retry said:\n%s", out);
	free(line);
	free(out);
	H_EVENTUALLY(h_output_count(p, "applying 2 dead letters again") > 0 &&
			     count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'retry'") == 0,
		     H_LONG, "the letters were not applied again (log: %s)", p->log);

	/* the same rows, open again: pending, and held behind it */
	h_assert_letters("products", &x);
	cr_assert_eq(letter_id("products", bad), bad_id, "the pending letter is a new row");
	cr_assert_eq(letter_id("products", held), held_id, "the held letter is a new row");
	assert_one_letter_per_event();
	cr_assert(source_is("c", "{\"product_id\": \"c\", \"name\": \"C\", \"price\": 5}"), "c moved on");

	/* still held: a live event of c waits as well */
	h_add_event(&x, "product-c", "ProductPriceChanged", "{\"product_id\": \"c\", \"new_price\": 7}", H_HELD,
		    "c", NULL);
	want.want = 3;
	cr_assert(h_eventually(letters_reach, &want, H_LONG), "the live event of c was not held (log: %s)", p->log);
	h_assert_letters("products", &x);
	for (size_t i = 0; i < x.n; i++)
		if (x.ev[i].out != H_APPLIED)
			leave_out(x.ev[i].pos);
	h_assert_docs_match_oracle(ALIAS);
	h_stop(p, 30);
	h_expectations_free(&x);
}

/* ---- c. no daemon running: applied at the next run --once --------------------------- */

static void big_update(char *data, size_t size, const char *id, size_t n)
{
	int len = snprintf(data, size, "{\"product_id\": \"%s\", \"description\": \"", id);

	cr_assert(len > 0 && (size_t)len + n + 3 <= size);
	memset(data + len, 'x', n);
	memcpy(data + (size_t)len + n, "\"}", 3);
}

Test(letters, no_daemon_discard_and_retry_apply_at_next_start, .timeout = 150)
{
	static const char *const small_limit[] = { "--max-event-bytes", "1024", NULL };
	static struct h_expectations products_x, orders_x;
	char data[2200], idtext[32];
	int64_t e2, e3, f2, f3, g;
	char *out, *line;
	int code;

	h_begin();
	narrowed_oracles();
	h_add_event(&products_x, "product-e", "ProductCreated",
		    "{\"product_id\": \"e\", \"name\": \"E\", \"price\": 1}", H_APPLIED, NULL, NULL);
	big_update(data, sizeof(data), "e", 2000);
	e2 = h_add_event(&products_x, "product-e", "ProductUpdated", data, H_PENDING, "e", "max-event-bytes");
	e3 = h_add_event(&products_x, "product-e", "ProductPriceChanged",
			 "{\"product_id\": \"e\", \"new_price\": 7}", H_HELD, "e", NULL);
	h_add_event(&products_x, "product-f", "ProductCreated",
		    "{\"product_id\": \"f\", \"name\": \"F\", \"price\": 2}", H_APPLIED, NULL, NULL);
	big_update(data, sizeof(data), "f", 2000);
	f2 = h_add_event(&products_x, "product-f", "ProductUpdated", data, H_PENDING, "f", "max-event-bytes");
	f3 = h_add_event(&products_x, "product-f", "ProductUpdated",
			 "{\"product_id\": \"f\", \"name\": \"F2\"}", H_HELD, "f", NULL);
	g = h_add_event(&products_x, "product-g", "ProductCreated", "{\"name\": \"No id\", \"price\": 1}",
			H_PENDING, NULL, "'product_id'");
	h_add_event(&orders_x, "order-o1", "OrderArchived", "{\"order_id\": \"o1\"}", H_PENDING, NULL,
		    "unknown event type");

	code = h_run_once(small_limit, H_LONG);
	cr_assert_eq(code, 0, "run --once exited %d", code);
	h_assert_letters("products", &products_x);
	h_assert_letters("orders", &orders_x);
	leave_out(e2);
	leave_out(e3);
	leave_out(f2);
	leave_out(f3);
	h_assert_docs_match_oracle(ALIAS); /* (refreshes: the searches below see the last writes) */
	cr_assert(source_is("e", "{\"product_id\": \"e\", \"name\": \"E\", \"price\": 1}"));

	/* discard f's big update, retry products' letters: nothing runs, they wait */
	snprintf(idtext, sizeof(idtext), "%lld", letter_id("products", f2));
	free(cli_ok((const char *const[]){ "dead-letters", "discard", idtext, "--reason", "superseded", NULL }));
	cr_assert(status_is("products", f2, "discarded") && status_is("products", f3, "retry"));
	out = cli_ok((const char *const[]){ "dead-letters", "retry", "--all", "--projection", "products", NULL });
	line = line_starting(out, "3 dead letters to apply again");
	cr_assert_not_null(line, "retry --all --projection products said:\n%s", out);
	free(line);
	free(out);
	cr_assert(status_is("products", e2, "retry") && status_is("products", e3, "retry") &&
		  status_is("products", g, "retry"));
	cr_assert(status_is("orders", orders_x.ev[0].pos, "pending"), "--projection products touched orders");

	/* the next start, with the default limit: e's and f's letters apply, g fails again */
	code = h_run_once(NULL, H_LONG);
	cr_assert_eq(code, 0, "run --once exited %d", code);
	cr_assert(status_is("products", e2, "retried") && status_is("products", e3, "retried") &&
			  status_is("products", f3, "retried"),
		  "e2 %s, e3 %s, f3 %s", letter_status("products", e2), letter_status("products", e3),
		  letter_status("products", f3));
	cr_assert(status_is("products", g, "pending"), "g is %s, want pending again", letter_status("products", g));
	cr_assert(status_is("products", f2, "discarded"));
	cr_assert(status_is("orders", orders_x.ev[0].pos, "pending"));
	leave_nothing_out();
	leave_out(f2);
	h_assert_docs_match_oracle(ALIAS);
	cr_assert(source_is_built("e", "jsonb_build_object('product_id', 'e', 'name', 'E', 'price', 7,"
				       " 'description', repeat('x', 2000))"), "e is not its events in order");
	cr_assert(source_is("f", "{\"product_id\": \"f\", \"name\": \"F2\", \"price\": 2}"), "f is not its events"
		  " minus the discarded one");

	/* retry --all, every projection: both fail again, one open letter each */
	out = cli_ok((const char *const[]){ "dead-letters", "retry", "--all", NULL });
	line = line_starting(out, "2 dead letters to apply again");
	cr_assert_not_null(line, "retry --all said:\n%s", out);
	free(line);
	free(out);
	code = h_run_once(NULL, H_LONG);
	cr_assert_eq(code, 0, "run --once exited %d", code);
	cr_assert(status_is("products", g, "pending") && status_is("orders", orders_x.ev[0].pos, "pending"));
	assert_one_letter_per_event();
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters"), 6);
	h_assert_docs_match_oracle(ALIAS);
	h_expectations_free(&products_x);
	h_expectations_free(&orders_x);
}

/* ---- d. SIGKILL while letters are recorded, and while they are applied again ------------ */

#define CRASH_DOCS 3000  /* products */
#define CRASH_ORDERS 1000
#define CRASH_OPEN (2 * CRASH_DOCS + 10 + 2 * CRASH_ORDERS)

struct status_arg {
	const char *status;
	long long want;
};

static bool count_with_status(void *arg)
{
	const struct status_arg *a = arg;
	const char *params[1] = { a->status };

	return have_letters_table() &&
	       h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE status = $1", 1, params, -1) >=
		       a->want;
}

struct ops_arg {
	const char *index;
	long long base;
};

/* The index took writes since `base` was read. */
static bool index_ops_above(void *arg)
{
	const struct ops_arg *a = arg;

	return h_index_ops(a->index) > a->base;
}

Test(letters, sigkill_during_recording_and_replay, .timeout = 240)
{
	static const char *const small_daemon[] = {
		"run", "--max-event-bytes", "1024", "--batch-size", "500",
		"--bulk-actions", "200", "--poll-interval", "0.2", NULL,
	};
	static const char *const daemon[] = {
		"run", "--batch-size", "500", "--bulk-actions", "100",
		"--poll-interval", "0.2", NULL,
	};
	static const char *const small_once[] = {
		"--max-event-bytes", "1024", "--batch-size", "500", NULL,
	};
	struct status_arg some = { "pending", 1 };
	struct ops_arg ops;
	struct h_proc *p;
	char line[64];
	char *out;
	int code;
	long long n;

	h_begin();
	/* per product: a creation, an update above 1024 bytes (a letter under the small limit), a price */
	h_sql(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'product-r' || i, t.type,"
		"  CASE t.v WHEN 1 THEN jsonb_build_object('product_id', 'r' || i, 'name', 'R' || i, 'price', i)"
		"           WHEN 2 THEN jsonb_build_object('product_id', 'r' || i, 'description', repeat('y', 1100))"
		"           ELSE jsonb_build_object('product_id', 'r' || i, 'new_price', i + 0.5) END,"
		"  t.v"
		" FROM (VALUES (1, 'ProductCreated'), (2, 'ProductUpdated'), (3, 'ProductPriceChanged')) t(v, type),"
		"      generate_series(1, 3000) i"
		" ORDER BY t.v, i");
	/* and letters that fail every time: no product id */
	h_sql(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'product-noid' || i, 'ProductCreated', jsonb_build_object('name', 'N'), 1"
		" FROM generate_series(1, 10) i");

	/*
	 * per order: a creation, an item above 1024 bytes (a letter under the
	 * small limit), an item: an increment applied twice would show in the
	 * total
	 */
	h_sql(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'order-q' || i, t.type,"
		"  CASE t.v WHEN 1 THEN jsonb_build_object('order_id', 'q' || i, 'customer_id', 'c' || i)"
		"           WHEN 2 THEN jsonb_build_object('order_id', 'q' || i, 'product_id', 'p', 'price', 1.25,"
		"                                          'quantity', 2, 'note', repeat('z', 1100))"
		"           ELSE jsonb_build_object('order_id', 'q' || i, 'product_id', 'p', 'price', 0.50,"
		"                                   'quantity', 1) END,"
		"  t.v"
		" FROM (VALUES (1, 'OrderCreated'), (2, 'OrderItemAdded'), (3, 'OrderItemAdded')) t(v, type),"
		"      generate_series(1, 1000) i"
		" ORDER BY t.v, i");

	/* recording the letters, killed part-way; then to the end */
	p = h_spawn(0, small_daemon);
	cr_assert(h_eventually(count_with_status, &some, H_LONG), "no letter recorded (log: %s)", p->log);
	h_kill(p);
	n = count_where("SELECT count(*) FROM esbridge.dead_letters");
	cr_log_info("killed while recording: %lld letters of %d", n, CRASH_OPEN);
	assert_one_letter_per_event();
	code = h_run_once(small_once, H_LONG);
	cr_assert_eq(code, 0, "run --once exited %d", code);
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'pending'"),
		     CRASH_DOCS + 10 + CRASH_ORDERS);
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'held'"),
		     CRASH_DOCS + CRASH_ORDERS);
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters d JOIN public.events e"
				 " USING (global_position) WHERE d.status = 'held'"
				 " AND e.event_type <> 'ProductPriceChanged' AND e.data->>'price' IS DISTINCT FROM '0.50'"),
		     0, "held letters of other events");
	assert_one_letter_per_event();

	/* applying them again under the default limit, killed once the first of them reached the index */
	p = h_spawn(0, daemon);
	ops.index = INDEX;
	ops.base = h_index_ops(INDEX);
	out = cli_ok((const char *const[]){ "dead-letters", "retry", "--all", NULL });
	snprintf(line, sizeof(line), "%d dead letters to apply again", CRASH_OPEN);
	cr_assert(strstr(out, line), "retry --all said:\n%s", out);
	free(out);
	snprintf(line, sizeof(line), "applying %d dead letters again", 2 * CRASH_DOCS + 10);
	/* (products; the orders' letters go back in a line of their own) */
	H_EVENTUALLY(h_output_count(p, line) > 0, H_LONG, "the daemon never began to apply the letters (log: %s)",
		     p->log);
	cr_assert(h_eventually(index_ops_above, &ops, H_LONG), "no letter reached the index (log: %s)", p->log);
	h_kill(p);
	h_load_es_docs(ALIAS);
	cr_log_info("killed while applying: %lld of %d products had their update again, %lld their price",
		    count_where("SELECT count(*) FROM es_docs WHERE doc ? 'description'"), CRASH_DOCS,
		    count_where("SELECT count(*) FROM es_docs WHERE doc->>'price' LIKE '%.5'"));
	cr_log_info("killed while applying: %lld retry, %lld retried, %lld pending",
		    count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'retry'"),
		    count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'retried'"),
		    count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'pending'"));
	assert_one_letter_per_event();

	/* the next start finishes the job */
	code = h_run_once((const char *const[]){ "--batch-size", "500", NULL }, H_LONG);
	cr_assert_eq(code, 0, "run --once exited %d", code);
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'retried'"),
		     2 * CRASH_DOCS + 2 * CRASH_ORDERS);
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters WHERE status = 'pending'"), 10);
	cr_assert_eq(count_where("SELECT count(*) FROM esbridge.dead_letters"), CRASH_OPEN);
	assert_one_letter_per_event();
	h_assert_docs_match_oracle(ALIAS);
	h_assert_docs_match_oracle("orders");
	cr_assert_eq(count_where("SELECT count(*) FROM es_docs WHERE (doc->>'total_amount')::numeric = 3"
				 " AND (doc->>'item_count')::int = 2"), CRASH_ORDERS,
		     "orders whose two items were not applied exactly once");
	cr_assert(source_is_built("r42", "jsonb_build_object('product_id', 'r42', 'name', 'R42', 'price', 42.5,"
					 " 'description', repeat('y', 1100))"), "r42 is not its three events");
}

/* ---- e. usage errors ------------------------------------------------------------------ */

/* `esbridge ARGS` exits `code` with one line saying `what`. */
static void assert_one_line(int want_code, const char *what, const char *const *args)
{
	char *out;
	int code = cli(&out, args);
	const char *nl = strchr(out, '\n');

	cr_assert_eq(code, want_code, "esbridge %s %s: exit %d, want %d:\n%s", args[0], args[1] ? args[1] : "",
		     code, want_code, out);
	cr_assert(nl && nl[1] == '\0', "not one line:\n%s", out);
	cr_assert_eq(strncmp(out, "esbridge: error:", 16), 0, "unexpected output: %s", out);
	cr_assert(strstr(out, what), "the message does not say '%s': %s", what, out);
	free(out);
}

Test(letters, usage_errors, .timeout = 60)
{
	h_begin();
	assert_one_line(2, "--reason", (const char *const[]){ "dead-letters", "discard", "1", NULL });
	assert_one_line(2, "--reason", (const char *const[]){ "dead-letters", "discard", "1", "--reason", "", NULL });
	assert_one_line(2, "'abc' is not a dead letter id",
			(const char *const[]){ "dead-letters", "discard", "abc", "--reason", "x", NULL });
	assert_one_line(2, "'0' is not a dead letter id", (const char *const[]){ "dead-letters", "retry", "0", NULL });
	assert_one_line(2, "'-3' is not a dead letter id",
			(const char *const[]){ "dead-letters", "retry", "-3", NULL });
	assert_one_line(2, "one ID or --all", (const char *const[]){ "dead-letters", "retry", NULL });
	assert_one_line(2, "one ID or --all", (const char *const[]){ "dead-letters", "retry", "5", "--all", NULL });
	assert_one_line(2, "list, retry or discard", (const char *const[]){ "dead-letters", "replay", NULL });
	assert_one_line(2, "--projection",
			(const char *const[]){ "dead-letters", "list", "--projection", "nosuch", NULL });
	/* not a usage error: no such letter */
	assert_one_line(1, "no open dead letter 424242",
			(const char *const[]){ "dead-letters", "discard", "424242", "--reason", "x", NULL });
	assert_one_line(1, "no open dead letter 424242",
			(const char *const[]){ "dead-letters", "retry", "424242", NULL });
}

/* ---- e. ids an application may write ------------------------------------------ */

/*
 * A document id with a line break and an escape character, long enough that
 * the first 100 bytes a held letter's reason shows of it end inside a
 * two-byte character: the letters are recorded, each reason is one line of
 * UTF-8 cut between characters (before, the held reason carried the line
 * break and the escape, and half the character), the other document
 * flows, and `dead-letters list` prints one line per letter.
 */
Test(letters, awkward_ids_give_one_line_letters, .timeout = 120)
{
	static struct h_expectations x;
	char id[128], json_id[160], data[512], *out, *cut;
	int64_t bad, held;
	size_t n;
	int code;

	/* "x\n\x1b" and 96 'a': 99 bytes, then "é" (bytes 100 and 101) */
	n = (size_t)snprintf(id, sizeof(id), "x\n\x1b");
	memset(id + n, 'a', 96);
	snprintf(id + n + 96, sizeof(id) - n - 96, "\xc3\xa9");
	cr_assert_eq(strlen(id), 101);
	snprintf(json_id, sizeof(json_id), "x\\n\\u001b%.96s\xc3\xa9", id + 3);

	h_begin();
	narrowed_oracles();
	snprintf(data, sizeof(data), "{\"product_id\": \"%s\", \"name\": \"A\", \"price\": 1.00}", json_id);
	h_add_event(&x, "product-awkward", "ProductCreated", data, H_APPLIED, NULL, NULL);
	snprintf(data, sizeof(data), "{\"product_id\": \"%s\", \"new_price\": \"1,50\"}", json_id);
	bad = h_add_event(&x, "product-awkward", "ProductPriceChanged", data, H_PENDING, id, "'new_price'");
	snprintf(data, sizeof(data), "{\"product_id\": \"%s\", \"name\": \"A2\"}", json_id);
	held = h_add_event(&x, "product-awkward", "ProductUpdated", data, H_HELD, id, NULL);
	h_add_event(&x, "product-b", "ProductCreated", "{\"product_id\": \"b\", \"name\": \"B\", \"price\": 2.00}",
		    H_APPLIED, NULL, NULL);

	code = h_run_once((const char *const[]){ "--projection", "products", NULL }, H_LONG);
	cr_assert_eq(code, 0, "run --once exited %d", code);
	/* the held reason shows "x??" and the 96 'a' (99 bytes: "é" would pass 100) */
	h_assert_letters("products", &x);
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE reason ~ '[[:cntrl:]]'", 0,
				NULL, -1), 0, "a reason with a control character");
	leave_out(bad);
	leave_out(held);
	h_assert_docs_match_oracle(ALIAS);
	cr_assert(searchable("b"), "b did not flow");

	out = cli_ok((const char *const[]){ "dead-letters", "list", NULL });
	cr_assert_eq(listed_lines(out), 1 + 2, "list printed %d lines, want a header and 2:\n%s", listed_lines(out),
		     out);
	cut = strstr(out, "x??aaaa");
	cr_assert_not_null(cut, "the id is not shown as x??aaa...:\n%s", out);
	free(out);
	h_expectations_free(&x);
}

/* ---- a split that cannot read its events again --------------------------------- */

/* True once the proxy has logged that it holds an answer back. */
static bool proxy_holding(void *arg)
{
	const struct h_proc *proxy = arg;

	return h_output_count(proxy, "faultproxy: holding") > 0;
}

/*
 * Regression test (issue: a failed split dead-lettered valid events). A
 * product's three events fold into one action, which the node refuses
 * (one of them is not a date). The proxy holds the answer back while the
 * reader's PostgreSQL session is ended, so that reading the events again
 * for the split fails. The action must be sent again as it is, and split
 * once the reader is back: only the bad event is a pending letter, the
 * one after it held, the creation applied. It used to make all three dead
 * letters at once, the valid creation among them.
 */
Test(letters, a_split_that_cannot_read_the_events_is_retried, .timeout = 120)
{
	static struct h_expectations x;
	char url[128], hold[256];
	const char *proxy_args[] = { "--hold-file", hold, NULL };
	const char *args[] = { "run", "--once", "--projection", ALIAS, "--es", url, "--retry-max", "1", NULL };
	struct h_proc *proxy, *p;

	h_begin();
	narrowed_oracles();
	snprintf(hold, sizeof(hold), "%s/hold-%d", oracle_dir, (int)getpid());
	h_write_file(hold, "hold\n");
	proxy = h_proxy_start(proxy_args, url, sizeof(url));

	h_sql(NULL, "BEGIN");
	h_add_event(&x, "product-s", "ProductCreated", "{\"product_id\": \"s\", \"name\": \"S\", \"price\": 5}",
		    H_APPLIED, NULL, NULL);
	h_add_event(&x, "product-s", "ProductUpdated", "{\"product_id\": \"s\", \"updated_at\": \"last tuesday\"}",
		    H_PENDING, "s", "Elasticsearch");
	h_add_event(&x, "product-s", "ProductUpdated", "{\"product_id\": \"s\", \"name\": \"S2\"}", H_HELD, "s",
		    NULL);
	h_sql(NULL, "COMMIT");

	p = h_spawn(0, args);
	cr_assert(h_eventually(proxy_holding, proxy, H_LONG), "the node's refusal never came (log: %s)", p->log);
	/* the reader's session ends while the answer is held back */
	h_sql(NULL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
		    " WHERE application_name LIKE 'esbridge-reader%'");
	H_EVENTUALLY(h_query_ll(NULL, "SELECT count(*) FROM pg_stat_activity"
				      " WHERE application_name LIKE 'esbridge-reader%'", 0, NULL, -1) == 0,
		     H_LONG, "the reader's session did not end");
	cr_assert_eq(unlink(hold), 0);
	cr_assert(h_wait(p, H_LONG), "run --once did not end (log: %s)", p->log);
	cr_assert_eq(h_exit_code(p), 0, "exit status 0x%x (log: %s)", (unsigned)p->status, p->log);
	cr_assert(h_output_count(p, "cannot read events again") > 0,
		  "reading the events again never failed: the test proves nothing (log: %s)", p->log);
	h_assert_letters("products", &x);
	for (size_t i = 0; i < x.n; i++)
		if (x.ev[i].out != H_APPLIED)
			leave_out(x.ev[i].pos);
	h_assert_docs_match_oracle(ALIAS);
	h_expectations_free(&x);
}
