/*
 * Integration tests of what a new user meets following the README, the man
 * page and --help (issue 17), against the real services and the real
 * daemon:
 *
 *   b. `wait` exits 3 with one line naming the dead letter when the event
 *      it waits for became one;
 *   c. `wait` returns 0 for an event the projection does not read once the
 *      projection has read past it, and not before.
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

static void suite_fini(void)
{
	h_end();
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

static int64_t add(const char *stream, const char *type, const char *data)
{
	return h_event(NULL, stream, type, data);
}

static void run_once_ok(const char *const *extra)
{
	int code = h_run_once(extra, 120);

	cr_assert_eq(code, 0, "run --once exited %d", code);
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
