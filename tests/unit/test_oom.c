/*
 * Allocation failures: the Nth call to malloc, calloc, realloc, strdup or
 * strndup made by esbridge's code fails (the binary is linked with
 * -Wl,--wrap for each; libraries' own calls are not wrapped), for every N
 * a scenario reaches, as curl's torture tests do. Each scenario must report
 * the failure and end cleanly: no crash, and no leak (the suite's teardown
 * runs LeakSanitizer in sanitizer builds).
 *
 * Scenarios: the document tables (operations and held documents), the
 * event parser, an operation rendered into a _bulk body, config_set.
 *
 * yajl's own allocations are not failed: yajl 2.1.0 cannot survive it
 * (yajl_gen_alloc's second allocation, in yajl_buf_alloc, is used without a
 * NULL check: tried, it crashes), so failing them would test yajl, not
 * esbridge.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "esbridge/buf.h"
#include "esbridge/bulk.h"
#include "esbridge/config.h"
#include "esbridge/doctable.h"
#include "esbridge/json.h"

#include "support.h"

/* ---- the failing allocator --------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static long calls;          /* allocations counted since arm() */
static long fail_at = -1;   /* the call that fails; -1: none */
static long failed;         /* how many failed */

static bool fails(void)
{
	if (calls++ == fail_at) {
		failed++;
		return true;
	}
	return false;
}

void *__wrap_malloc(size_t n) { return fails() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return fails() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return fails() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fails() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return fails() ? NULL : __real_strndup(s, n); }

static void arm(long at)
{
	calls = 0;
	fail_at = at;
	failed = 0;
}

/*
 * Runs `scenario` once without failures (it must succeed: returns 0), then
 * once for each allocation it made, that one failing: it must return
 * non-zero whenever an allocation failed. `setup` and `teardown` (may be
 * NULL) run around each, without failures.
 */
static void torture(const char *name, int (*scenario)(void), void (*setup)(void), void (*teardown)(void))
{
	long total;

	if (setup)
		setup();
	arm(-1);
	cr_assert_eq(scenario(), 0, "%s fails without allocation failures", name);
	total = calls;
	if (teardown)
		teardown();
	cr_assert_gt(total, 0, "%s allocates nothing: the test proves nothing", name);
	for (long n = 0; n < total; n++) {
		int rc;
		if (setup)
			setup();
		arm(n);
		rc = scenario();
		arm(-1);
		if (teardown)
			teardown();
		cr_assert(failed == 0 || rc != 0, "%s: allocation %ld of %ld failed, yet it reported success",
			  name, n + 1, total);
	}
	cr_log_info("%s: %ld allocation failures survived", name, total);
}

TestSuite(oom, .fini = test_leak_check);

/* ---- scenarios ------------------------------------------------------------- */

static int doctable_scenario(void)
{
	struct opset o = { 0 };
	struct held_table t = { 0 };
	int rc = 0;
	char id[32];
	bool created;

	for (int i = 0; i < 150 && rc == 0; i++) {
		snprintf(id, sizeof(id), "doc-%d", i % 100);
		if (!opset_get(&o, id, strlen(id), 0, NULL, i % 40 == 39, &created))
			rc = -1;
		else if (i % 7 == 0 && opset_add_settle(&o, NULL))
			rc = -1;
	}
	for (int i = 0; i < 100 && rc == 0; i++) {
		snprintf(id, sizeof(id), "held-%d", i);
		if (held_add(&t, id, strlen(id), (struct position){ 1, i }))
			rc = -1;
	}
	opset_release(&o);
	held_clear(&t);
	return rc;
}

static const char event_json[] =
	"{\"order_id\": \"o1\", \"customer\": {\"name\": \"A \\u00e9 \\ud83d\\ude00 \\\"q\\\"\","
	" \"tags\": [\"x\", \"y\", [1, 2.5, -3e2, {\"deep\": [true, false, null]}]]},"
	" \"items\": [{\"sku\": \"s1\", \"price\": 12.34}, {\"sku\": \"s2\", \"price\": 0.5}],"
	" \"note\": \"line\\nbreak\"}";

static int parse_scenario(void)
{
	struct arena a = { 0 };
	struct json_scratch sc = JSON_SCRATCH_INIT;
	char err[256] = "";
	yajl_val v = json_parse(&a, &sc, event_json, strlen(event_json), err, sizeof(err));
	int rc = v ? 0 : -1;

	if (!v)
		cr_assert(strstr(err, "out of memory"), "the parser said '%s'", err);
	arena_release(&a);
	json_scratch_release(&sc);
	return rc;
}

static int bulk_scenario(void)
{
	struct arena a = { 0 };
	struct json_scratch sc = JSON_SCRATCH_INIT;
	char err[256] = "";
	yajl_val v;
	struct bulk_op op;
	struct buf body = BUF_INIT(1 << 20);
	int rc = -1;

	v = json_parse(&a, &sc, event_json, strlen(event_json), err, sizeof(err));
	if (!v)
		goto out_parsed;
	if (bulk_op_init(&op, "o1", 2))
		goto out_parsed;
	op.kind = BULK_INDEX;
	if (bulk_op_set(&op, "order_id", bulk_text_value("o1")) ||
	    bulk_op_set(&op, "customer", bulk_json_value(v->u.object.values[1])) ||
	    bulk_op_set(&op, "items", bulk_json_value(v->u.object.values[2])) ||
	    bulk_op_set(&op, "total", bulk_cents_value(1284)) ||
	    bulk_op_set(&op, "count", bulk_int_value(2)) ||
	    bulk_op_note_event(&op, (struct position){ 7, 42 }))
		goto out_op;
	if (bulk_write_op(&body, &op, err, sizeof(err)))
		goto out_op;
	cr_assert(body.len > 0 && body.data[body.len - 1] == '\n');
	rc = 0;
out_op:
	bulk_op_release(&op);
out_parsed:
	buf_release(&body);
	arena_release(&a);
	json_scratch_release(&sc);
	return rc;
}

static struct config cfg;

static void config_setup(void)
{
	config_init(&cfg);
}

static void config_teardown(void)
{
	config_release(&cfg);
}

static int config_scenario(void)
{
	char err[256];

	if (config_set(&cfg, "es", "http://127.0.0.1:9200,http://127.0.0.1:9201", err, sizeof(err)) ||
	    config_set(&cfg, "projection", "products,orders", err, sizeof(err)) ||
	    config_set(&cfg, "log-level", "debug", err, sizeof(err)))
		return -1;
	return 0;
}

Test(oom, document_tables)
{
	torture("doctable", doctable_scenario, NULL, NULL);
}

Test(oom, event_parser)
{
	torture("json_parse", parse_scenario, NULL, NULL);
}

Test(oom, bulk_body)
{
	torture("bulk_write_op", bulk_scenario, NULL, NULL);
}

Test(oom, config_set)
{
	torture("config_set", config_scenario, config_setup, config_teardown);
}
