/*
 * Integration tests of what a new user meets following the README, the man
 * page and --help (issue 17), against the real services and the real
 * daemon:
 *
 *   a. a discarded dead letter stays discarded through a rebuild, and a
 *      rebuild whose new generation holds back a document the active one
 *      does not stops before the alias moves, saying so;
 *   b. `wait` exits 3 with one line naming the dead letter when the event
 *      it waits for became one;
 *   c. `wait` returns 0 for an event the projection does not read once the
 *      projection has read past it, and not before;
 *   d. configuration errors found before the pipelines start exit 2 (one
 *      line), runtime ones 1;
 *   e. `check-config` refuses what `run` refuses; `check-config --connect`
 *      reaches PostgreSQL and the cluster and says what it found;
 *   f. `status --projection` narrows it, and a projection of two indices
 *      keeps the columns and has log lines naming both; `dead-letters
 *      list` says when nothing is open;
 *   g. each summary log line gives figures of one moment.
 *
 * Logs: build/tests/logs/journeys-TEST.log.
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

static char tmp_dir[64];

static void suite_fini(void)
{
	h_end();
	if (tmp_dir[0]) {
		char path[128];
		static const char *const files[] = { "products.json", "orders.json", "daily_sales.json",
						     "customers.json", "customer_orders.json", NULL };
		for (const char *const *f = files; *f; f++) {
			snprintf(path, sizeof(path), "%s/%s", tmp_dir, *f);
			unlink(path);
		}
		rmdir(tmp_dir);
	}
}

TestSuite(journeys, .fini = suite_fini);

/* ---- helpers --------------------------------------------------------------- */

/* Runs `esbridge ARGS` with `env` added to its end; its exit code, its output (malloc'd) in `*out`. */
static int cli_env(char **out, const char *const *env, const char *const *args)
{
	struct h_proc *p = h_spawn_ex(0, NULL, env, args);

	if (!h_wait(p, 90)) {
		h_kill(p);
		cr_assert_fail("esbridge %s did not exit within 90s (log: %s)", args[0], p->log);
	}
	*out = h_proc_output(p);
	cr_assert_not_null(*out);
	return h_exit_code(p);
}

static int cli(char **out, const char *const *args)
{
	return cli_env(out, NULL, args);
}

/* The lines of `out` that are not the harness's header: what the program printed. */
static int printed_lines(const char *out)
{
	int n = 0;

	for (const char *l = out; l && *l;) {
		const char *nl = strchr(l, '\n');
		if (strncmp(l, "===", 3) && l[0] != '\n')
			n++;
		l = nl ? nl + 1 : NULL;
	}
	return n;
}

/* A folder of our own holding a copy of mappings/, the file `name` replaced by `text` (NULL: left out). */
static const char *mappings_with(const char *name, const char *text)
{
	static const char *const files[] = { "products.json", "orders.json", "daily_sales.json",
					     "customers.json", "customer_orders.json", NULL };
	char path[160], src[160];

	if (!tmp_dir[0]) {
		snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/esbridge-journeys-XXXXXX");
		cr_assert_not_null(mkdtemp(tmp_dir), "mkdtemp: %s", strerror(errno));
	}
	for (const char *const *f = files; *f; f++) {
		snprintf(path, sizeof(path), "%s/%s", tmp_dir, *f);
		unlink(path);
		if (!strcmp(*f, name)) {
			if (text)
				h_write_file(path, text);
			continue;
		}
		snprintf(src, sizeof(src), "mappings/%s", *f);
		{
			char *orig = h_read_file(src, NULL);
			h_write_file(path, orig);
			free(orig);
		}
	}
	return tmp_dir;
}

static long long letters_open(const char *proj, int generation)
{
	char g[16];
	const char *params[2] = { proj, g };

	snprintf(g, sizeof(g), "%d", generation);
	return h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE projection = $1"
				" AND generation = $2::int AND status IN ('pending','held','retry')",
			  2, params, -1);
}

static int64_t add(const char *stream, const char *type, const char *data)
{
	return h_event(NULL, stream, type, data);
}

static void run_once_ok(const char *const *extra)
{
	int code = h_run_once(extra, 120);

	cr_assert_eq(code, 0, "run --once exited %d", code);
}

/* ---- a. rebuilds and dead letters ----------------------------------------------- */

#define RED_MUG_XL "{\"product_id\": \"m1\", \"name\": \"Red Mug XL\", \"price\": 11.0, \"category\": \"mugs\"}"

Test(journeys, a_rebuild_keeps_a_discarded_letter_discarded, .timeout = 180)
{
	static const char *const products[] = { "--projection", "products", NULL };
	int64_t bad;
	long long id;
	char idtext[32], pos[32], *out;
	const char *params[1] = { pos };
	int code;

	h_begin();
	add("product-m1", "ProductCreated",
	    "{\"product_id\": \"m1\", \"name\": \"Red Mug\", \"price\": 9.99, \"category\": \"mugs\"}");
	bad = add("product-m1", "ProductPriceChanged", "{\"product_id\": \"m1\", \"new_price\": \"abc\"}");
	add("product-m1", "ProductUpdated", "{\"product_id\": \"m1\", \"name\": \"Red Mug XL\"}");
	add("product-m1", "ProductPriceChanged", "{\"product_id\": \"m1\", \"new_price\": 11.0}");
	run_once_ok(products);
	cr_assert_eq(letters_open("products", 1), 3, "want the bad event and two held behind it");

	snprintf(pos, sizeof(pos), "%" PRId64, bad);
	id = h_query_ll(NULL, "SELECT id FROM esbridge.dead_letters WHERE global_position = $1::bigint"
			      " AND status = 'pending'", 1, params, -1);
	snprintf(idtext, sizeof(idtext), "%lld", id);
	code = cli(&out, (const char *const[]){ "dead-letters", "discard", idtext, "--reason", "typo", NULL });
	cr_assert_eq(code, 0, "discard exited %d:\n%s", code, out);
	free(out);
	run_once_ok(products);
	H_EVENTUALLY(h_source_is("products", "m1", RED_MUG_XL), 10, "m1 is not Red Mug XL after the discard");

	code = cli(&out, (const char *const[]){ "rebuild", "products", NULL });
	cr_assert_eq(code, 0, "rebuild exited %d:\n%s", code, out);
	free(out);
	cr_assert(h_alias_is("products", "products-000002"), "the alias did not move");
	H_EVENTUALLY(h_source_is("products", "m1", RED_MUG_XL), 10,
		     "after the rebuild readers see another m1 than Red Mug XL, 11.0");
	cr_assert_eq(letters_open("products", 2), 0, "the new generation has open letters");
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE generation = 2"
				      " AND global_position = $1::bigint AND status = 'discarded'", 1, params, -1),
		     1, "the new generation does not record the event as discarded");

	/* and the one after: the decision of generation 1, said once */
	code = cli(&out, (const char *const[]){ "rebuild", "products", NULL });
	cr_assert_eq(code, 0, "the second rebuild exited %d:\n%s", code, out);
	free(out);
	cr_assert(h_alias_is("products", "products-000003"), "the alias did not move to generation 3");
	H_EVENTUALLY(h_source_is("products", "m1", RED_MUG_XL), 10, "generation 3 shows another m1");
	cr_assert_eq(letters_open("products", 3), 0, "generation 3 has open letters");
	{
		char *note = h_query_text(NULL, "SELECT string_agg(note, '|') FROM esbridge.dead_letters WHERE"
					  " generation = 3 AND global_position = $1::bigint AND status = 'discarded'",
					  1, params);
		cr_assert(note && !strcmp(note, "carried over from generation 1: typo"), "generation 3's note: %s",
			  note ? note : "(none)");
		free(note);
	}
}

Test(journeys, a_rebuild_that_would_hold_back_more_stops_before_the_alias, .timeout = 180)
{
	static const char *const products[] = { "--projection", "products", NULL };
	const char *dir;
	char *orig, *changed, *out, idtext[32];
	const char *params[1];
	long long id;
	int code;

	h_begin();
	add("product-k1", "ProductCreated",
	    "{\"product_id\": \"k1\", \"name\": \"Kettle\", \"price\": 20.00, \"category\": \"kitchen\"}");
	add("product-k2", "ProductCreated",
	    "{\"product_id\": \"k2\", \"name\": \"Pot\", \"price\": 5.00, \"category\": \"12\"}");
	add("product-k1", "ProductUpdated", "{\"product_id\": \"k1\", \"name\": \"Kettle 2\"}");
	run_once_ok(products);
	cr_assert_eq(letters_open("products", 1), 0, "letters in the first generation");

	/* the new mapping makes category a number: k1's category is refused there, k2's is not */
	orig = h_read_file("mappings/products.json", NULL);
	params[0] = orig;
	changed = h_query_text(NULL, "SELECT jsonb_set($1::jsonb, '{mappings,properties,category}',"
				     " '{\"type\": \"integer\"}')::text", 1, params);
	free(orig);
	dir = mappings_with("products.json", changed);
	free(changed);

	code = cli(&out, (const char *const[]){ "rebuild", "products", "--mappings-dir", dir, NULL });
	cr_assert_eq(code, 1, "rebuild exited %d:\n%s", code, out);
	cr_assert(strstr(out, "holds back") && strstr(out, "'k1'"), "rebuild did not say why:\n%s", out);
	free(out);
	cr_assert(h_alias_is("products", "products-000001"), "the alias moved to a generation holding k1 back");
	H_EVENTUALLY(h_source_is("products", "k1",
				 "{\"product_id\": \"k1\", \"name\": \"Kettle 2\", \"price\": 20.00, \"category\": \"kitchen\"}"),
		     10, "readers lost k1");

	/* asked again: the same generation is resumed (none begun beside it) and stops again */
	code = cli(&out, (const char *const[]){ "rebuild", "products", "--mappings-dir", dir, NULL });
	cr_assert_eq(code, 1, "the second rebuild exited %d:\n%s", code, out);
	free(out);
	cr_assert_eq(h_query_ll(NULL, "SELECT max(generation) FROM esbridge.generations WHERE projection = 'products'",
				0, NULL, -1), 2, "a rebuild began a third generation beside the stopped one");
	cr_assert(h_alias_is("products", "products-000001"), "the alias moved");

	/* the operator discards the letter: the next rebuild moves the alias */
	id = h_query_ll(NULL, "SELECT id FROM esbridge.dead_letters WHERE generation = 2 AND status = 'pending'", 0,
			NULL, -1);
	snprintf(idtext, sizeof(idtext), "%lld", id);
	code = cli(&out, (const char *const[]){ "dead-letters", "discard", idtext, "--reason", "a number now", NULL });
	cr_assert_eq(code, 0, "discard exited %d:\n%s", code, out);
	free(out);
	code = cli(&out, (const char *const[]){ "rebuild", "products", "--mappings-dir", dir, NULL });
	cr_assert_eq(code, 0, "the rebuild after the discard exited %d:\n%s", code, out);
	free(out);
	cr_assert(h_alias_is("products", "products-000002"), "the alias did not move after the discard");
	cr_assert_eq(letters_open("products", 2), 0, "open letters left in the new generation");
}

/* ---- b, c. wait ------------------------------------------------------------------ */

Test(journeys, b_wait_reports_a_dead_letter, .timeout = 120)
{
	char position[32], *out;
	const char *params[1] = { position };
	long long id;
	char want[64];
	int64_t pos;
	int code;

	h_begin();
	add("product-ok", "ProductCreated", "{\"product_id\": \"ok\", \"name\": \"fine\", \"price\": 1}");
	pos = add("product-n1", "ProductCreated", "{\"product_id\": \"n1\", \"price\": 1}");
	run_once_ok((const char *const[]){ "--projection", "products", NULL });
	snprintf(position, sizeof(position), "%" PRId64, pos);
	id = h_query_ll(NULL, "SELECT id FROM esbridge.dead_letters WHERE global_position = $1::bigint", 1, params, -1);
	cr_assert_gt(id, 0, "the event is no dead letter");

	code = cli(&out, (const char *const[]){ "wait", "--projection", "products", "--position", position,
						"--timeout", "5", NULL });
	cr_assert_eq(code, 3, "wait for a dead letter exited %d:\n%s", code, out);
	snprintf(want, sizeof(want), "dead letter %lld", id);
	cr_assert(strstr(out, want), "wait did not name %s:\n%s", want, out);
	cr_assert_eq(printed_lines(out), 1, "wait printed more than one line:\n%s", out);
	free(out);
}

Test(journeys, c_wait_for_an_event_the_projection_does_not_read, .timeout = 120)
{
	char position[32], *out;
	int64_t pos;
	double t0;
	int code;

	h_begin();
	add("product-p1", "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"one\", \"price\": 1}");
	pos = add("order-o1", "OrderCreated", "{\"order_id\": \"o1\", \"customer_id\": \"c1\"}");
	run_once_ok((const char *const[]){ "--projection", "products", NULL });

	snprintf(position, sizeof(position), "%" PRId64, pos);
	t0 = h_now();
	code = cli(&out, (const char *const[]){ "wait", "--projection", "products", "--position", position,
						"--timeout", "20", NULL });
	cr_assert_eq(code, 0, "wait for an order event on products exited %d after %.1fs:\n%s", code,
		     h_now() - t0, out);
	cr_assert_lt(h_now() - t0, 10.0, "wait took %.1fs", h_now() - t0);
	free(out);

	/* a products event before it that nobody applied: not read past yet */
	add("product-p2", "ProductCreated", "{\"product_id\": \"p2\", \"name\": \"two\", \"price\": 2}");
	pos = add("order-o2", "OrderCreated", "{\"order_id\": \"o2\", \"customer_id\": \"c1\"}");
	snprintf(position, sizeof(position), "%" PRId64, pos);
	code = cli(&out, (const char *const[]){ "wait", "--projection", "products", "--position", position,
						"--timeout", "1", NULL });
	cr_assert_eq(code, 1, "wait past an unapplied products event exited %d:\n%s", code, out);
	cr_assert(strstr(out, "timeout"), "no timeout said:\n%s", out);
	free(out);
}

/* ---- d, e. configuration errors ---------------------------------------------------- */

struct bad_case {
	const char *what;
	const char *env;   /* NULL or NAME=VALUE */
	const char *flag, *value;
	const char *said;  /* a part of the one line */
};

/* `check-config` and `run --once` both exit 2 with one line for each case. */
Test(journeys, d_e_configuration_errors_exit_2_everywhere, .timeout = 180)
{
	const char *notjson = mappings_with("products.json", "this is not JSON\n");
	char missing[96];
	const struct bad_case cases[] = {
		{ "an unknown projection", NULL, "--projection", "bogus", "'bogus'" },
		{ "a metrics address without a port", NULL, "--metrics-address", "127.0.0.1", "HOST:PORT" },
		{ "a missing mappings folder", NULL, "--mappings-dir", missing, "mapping" },
		{ "a mapping file that is not JSON", NULL, "--mappings-dir", notjson, "not a JSON object" },
		{ "a PostgreSQL port out of range", "ESBRIDGE_PG=port=99999", NULL, NULL, "99999" },
	};

	h_begin();
	snprintf(missing, sizeof(missing), "%s/none", notjson);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		static const char *const cmds[][3] = { { "check-config", NULL, NULL }, { "run", "--once", NULL } };
		const char *const env[] = { cases[i].env, NULL };
		for (size_t c = 0; c < 2; c++) {
			const char *args[6];
			size_t n = 0;
			char *out;
			int code;
			if (cases[i].flag) {
				args[n++] = cases[i].flag;
				args[n++] = cases[i].value;
			}
			args[n++] = cmds[c][0];
			if (cmds[c][1])
				args[n++] = cmds[c][1];
			args[n] = NULL;
			code = cli_env(&out, cases[i].env ? env : NULL, args);
			cr_expect_eq(code, 2, "%s: %s exited %d, want 2:\n%s", cases[i].what, cmds[c][0], code, out);
			cr_expect_eq(printed_lines(out), 1, "%s: %s printed %d lines, want one:\n%s", cases[i].what,
				     cmds[c][0], printed_lines(out), out);
			cr_expect(strstr(out, cases[i].said), "%s: %s did not say '%s':\n%s", cases[i].what,
				  cmds[c][0], cases[i].said, out);
			free(out);
		}
	}

	/* runtime: PostgreSQL does not answer at a valid address: 1 */
	{
		char env_pg[96];
		const char *const env[] = { env_pg, NULL };
		char *out;
		int code;

		snprintf(env_pg, sizeof(env_pg), "ESBRIDGE_PG=host=127.0.0.1 port=%d connect_timeout=2", h_free_port());
		code = cli_env(&out, env, (const char *const[]){ "run", "--once", NULL });
		cr_expect_eq(code, 1, "run --once without PostgreSQL exited %d, want 1:\n%s", code, out);
		free(out);
		code = cli_env(&out, env, (const char *const[]){ "check-config", NULL });
		cr_expect_eq(code, 0, "check-config without PostgreSQL exited %d (it does not connect):\n%s", code, out);
		free(out);
		code = cli_env(&out, env, (const char *const[]){ "check-config", "--connect", NULL });
		cr_expect_eq(code, 1, "check-config --connect without PostgreSQL exited %d, want 1:\n%s", code, out);
		cr_expect(strstr(out, "PostgreSQL"), "check-config --connect did not name PostgreSQL:\n%s", out);
		free(out);
	}
}

Test(journeys, e_check_config_connect_says_what_it_found, .timeout = 120)
{
	char *out, *version;
	int code;

	h_begin();
	add("product-p1", "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"one\", \"price\": 1}");
	run_once_ok((const char *const[]){ "--projection", "products", NULL });
	code = cli(&out, (const char *const[]){ "check-config", "--connect", NULL });
	cr_assert_eq(code, 0, "check-config --connect exited %d:\n%s", code, out);
	version = h_query_text(NULL, "SELECT current_setting('server_version')", 0, NULL);
	cr_assert(strstr(out, version), "no PostgreSQL version %s in:\n%s", version, out);
	free(version);
	cr_assert(strstr(out, "products: active generation 1"), "no products generation in:\n%s", out);
	{
		struct h_http r = h_es("GET", "/", NULL);
		char *num = strstr(r.body, "\"number\"");
		char want[64];
		cr_assert_not_null(num, "GET /: %s", r.body);
		num = strchr(num + 8, '"');
		cr_assert_not_null(num);
		snprintf(want, sizeof(want), "%.*s", (int)strcspn(num + 1, "\""), num + 1);
		cr_assert(strstr(out, want), "no cluster version %s in:\n%s", want, out);
		h_http_free(&r);
	}
	free(out);

	/* an unreachable cluster: 1, naming it */
	{
		char env_es[96];
		const char *const env[] = { env_es, NULL };
		snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=http://127.0.0.1:%d", h_free_port());
		code = cli_env(&out, env, (const char *const[]){ "check-config", "--connect", NULL });
		cr_assert_eq(code, 1, "check-config --connect to no cluster exited %d:\n%s", code, out);
		cr_assert(strstr(out, "Elasticsearch"), "the cluster is not named:\n%s", out);
		free(out);
	}
}

/* ---- f. status and dead-letters output ------------------------------------------------ */

/* The column where `word` starts on the line of `out` holding `marker`; -1 if none. */
static long column_of(const char *out, const char *marker, const char *word)
{
	for (const char *l = out; l && *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		const char *m = strstr(l, marker);
		if (m && m < l + len) {
			const char *w = strstr(l, word);
			return w && w < l + len ? (long)(w - l) : -1;
		}
		l = nl ? nl + 1 : NULL;
	}
	return -1;
}

Test(journeys, f_status_narrows_and_aligns, .timeout = 120)
{
	char *out;
	int code;

	h_begin();
	add("product-p1", "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"one\", \"price\": 1}");
	add("customer-c1", "CustomerCreated", "{\"customer_id\": \"c1\", \"email\": \"c@x\", \"name\": \"C\"}");
	code = cli(&out, (const char *const[]){ "--projection", "products", "--projection", "customer_activity", "run",
						"--once", NULL });
	cr_assert_eq(code, 0, "run --once exited %d:\n%s", code, out);
	/* the log lines of a projection of two indices name both */
	cr_assert(strstr(out, "new generation, indices customers-000001, customer_orders-000001") &&
		  strstr(out, "alias customers now names customers-000001, alias customer_orders now names"
			      " customer_orders-000001"),
		  "the log lines do not name both indices:\n%s", out);
	free(out);

	/* --projection narrows it */
	code = cli(&out, (const char *const[]){ "status", "--projection", "customer_activity", NULL });
	cr_assert_eq(code, 0, "status exited %d:\n%s", code, out);
	cr_assert_null(strstr(out, "products-000001"), "status --projection customer_activity shows products:\n%s", out);
	cr_assert_not_null(strstr(out, "customers-000001"), "no customers index:\n%s", out);
	free(out);
	code = cli(&out, (const char *const[]){ "status", "--projection", "customers", NULL });
	cr_assert_eq(code, 2, "status of an alias name exited %d:\n%s", code, out);
	cr_assert_not_null(strstr(out, "'customer_activity'"), "the writer of the alias is not named:\n%s", out);
	free(out);
	code = cli(&out, (const char *const[]){ "status", "--projection", "bogus", NULL });
	cr_assert_eq(code, 2, "status of an unknown projection exited %d:\n%s", code, out);
	cr_assert(strstr(out, "'bogus'") && strstr(out, "products, orders"), "status said:\n%s", out);
	free(out);

	/* the row of a projection of two indices keeps the columns */
	code = cli(&out, (const char *const[]){ "status", NULL });
	cr_assert_eq(code, 0, "status exited %d:\n%s", code, out);
	cr_assert_geq(column_of(out, "products-000001", " active "), 0, "no products row:\n%s", out);
	cr_assert_eq(column_of(out, "customers-000001", " active "), column_of(out, "products-000001", " active "),
		     "the STATE column moves on the customer_activity row:\n%s", out);
	cr_assert_eq(column_of(out, "customers-000001", "customers-000001"),
		     column_of(out, "products-000001", "products-000001"),
		     "the INDEX column moves on the customer_activity row:\n%s", out);
	cr_assert_eq(column_of(out, "customer_orders-000001", "customer_orders-000001"),
		     column_of(out, "products-000001", "products-000001"),
		     "the second index is not under the INDEX column:\n%s", out);
	cr_assert_not_null(strstr(out, "customer_orders-000001"), "the second index is not shown:\n%s", out);
	free(out);

	/* nothing open: said so */
	code = cli(&out, (const char *const[]){ "dead-letters", "list", NULL });
	cr_assert_eq(code, 0, "list exited %d:\n%s", code, out);
	cr_assert_not_null(strstr(out, "no open dead letters"), "list said:\n%s", out);
	cr_assert_eq(printed_lines(out), 1, "list printed more than one line:\n%s", out);
	free(out);
}

/* ---- g. the summary lines ---------------------------------------------------------- */

/*
 * Every summary line of the daemon's output is of one moment: a line whose
 * checkpoint has passed the dead letter counts it open, and its lag is
 * that of its checkpoint (no event arrives after the last one here, so a
 * checkpoint at the last event has lag 0, and one before it lag > 0).
 * Returns how many lines passed the letter.
 */
static int check_summaries(const char *out, int64_t bad, int64_t last)
{
	int past = 0;

	for (const char *l = strstr(out, " events/s; checkpoint "); l; l = strstr(l + 1, " events/s; checkpoint ")) {
		long long cp, lag, held, open;
		if (sscanf(l, " events/s; checkpoint %lld%*1[,:] lag %lld events (%*[^)]), %lld held by open transactions,"
			      " %lld open dead letters", &cp, &lag, &held, &open) != 4)
			continue;
		if (cp >= bad) {
			past++;
			cr_assert_eq(open, 1, "a summary at checkpoint %lld, past the letter at %" PRId64
				     ", counts %lld open letters:\n%.300s", cp, bad, open, l);
		}
		if (cp == last)
			cr_assert_eq(lag, 0, "a summary at the last event says lag %lld:\n%.300s", lag, l);
		else
			cr_assert_gt(lag, 0, "a summary at checkpoint %lld before the last event %" PRId64
				     " says lag 0:\n%.300s", cp, last, l);
	}
	return past;
}

Test(journeys, g_summary_lines_are_of_one_moment, .timeout = 120)
{
	static const char *const daemon[] = { "run", "--projection", "products", "--stats-interval", "1",
					      "--poll-interval", "0.2", NULL };
	struct h_proc *p;
	int64_t bad, last;
	char *out;
	int past = 0;
	double until;

	h_begin();
	p = h_spawn(0, daemon);
	H_EVENTUALLY(h_alias_is("products", "products-000001"), H_LONG, "the alias never came (log: %s)", p->log);
	add("product-s1", "ProductCreated", "{\"product_id\": \"s1\", \"name\": \"one\", \"price\": 1}");
	bad = add("product-s2", "ProductCreated", "{\"product_id\": \"s2\", \"price\": 2}");
	last = add("product-s3", "ProductCreated", "{\"product_id\": \"s3\", \"name\": \"three\", \"price\": 3}");
	until = h_now() + 30;
	while (past < 3 && h_now() < until) {
		h_sleep(0.5);
		out = h_proc_output(p);
		past = check_summaries(out, bad, last);
		free(out);
	}
	cr_assert_geq(past, 3, "fewer than 3 summaries past the letter in 30s (log: %s)", p->log);
	h_stop(p, 30);
}
