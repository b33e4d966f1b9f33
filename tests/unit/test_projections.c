/*
 * Unit tests of the projections (src/projection.c, src/projections/):
 * the helpers that read event data (ids, whole numbers, money), and the
 * products and orders projections driven through their doc_id/apply
 * functions, exactly as the pipeline does. Every resulting operation is
 * rendered with bulk_write_op and its NDJSON lines are parsed back with
 * yajl, so the assertions are on the values Elasticsearch would receive.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "esbridge/buf.h"
#include "esbridge/bulk.h"
#include "esbridge/event.h"
#include "esbridge/json.h"
#include "esbridge/projection.h"

#include "support.h"

/* ------------------------------------------------------------------ */
/* Fixture: the body, an id buffer, two operations and every parsed tree
 * (event data and rendered lines), all released in the teardown, even
 * after a failed assertion. Event data trees must outlive the rendering:
 * the operations hold BV_JSON values pointing into them. */

static struct buf body;
static struct buf idbuf;
static struct bulk_op op, op2;
static yajl_val *trees;
static size_t n_trees, cap_trees;
static char err[256];
static const struct projection *products, *orders;
/* ev->created_at must live as long as the operations (projection.h) */
static struct arena strings;

static void setup(void)
{
	buf_init(&body, (size_t)64 << 20);
	buf_init(&idbuf, 4096);
	memset(&op, 0, sizeof(op));
	memset(&op2, 0, sizeof(op2));
	trees = NULL;
	n_trees = cap_trees = 0;
	err[0] = '\0';
	products = projection_find("products");
	orders = projection_find("orders");
	cr_assert_not_null(products, "no products projection in the registry");
	cr_assert_not_null(orders, "no orders projection in the registry");
}

static void teardown(void)
{
	buf_release(&body);
	buf_release(&idbuf);
	bulk_op_release(&op);
	bulk_op_release(&op2);
	for (size_t i = 0; i < n_trees; i++)
		yajl_tree_free(trees[i]);
	free(trees);
	trees = NULL;
	n_trees = cap_trees = 0;
	arena_release(&strings);
	test_leak_check();
}

TestSuite(helpers, .init = setup, .fini = teardown);
TestSuite(products, .init = setup, .fini = teardown);
TestSuite(orders, .init = setup, .fini = teardown);
TestSuite(orders_limits, .init = setup, .fini = teardown);
TestSuite(script, .init = setup, .fini = teardown);
TestSuite(poison, .init = setup, .fini = teardown);

/* Keeps a tree until the teardown. */
static yajl_val keep(yajl_val v)
{
	if (n_trees == cap_trees) {
		size_t ncap = cap_trees ? cap_trees * 2 : 64;
		yajl_val *nt = realloc(trees, ncap * sizeof(*nt));
		if (!nt) {
			yajl_tree_free(v);
			cr_assert_fail("out of memory");
		}
		trees = nt;
		cap_trees = ncap;
	}
	trees[n_trees++] = v;
	return v;
}

/* Parses NUL-terminated JSON; the tree lives until the teardown. */
static yajl_val parse(const char *text)
{
	char perr[256] = "";
	yajl_val v = yajl_tree_parse(text, perr, sizeof(perr));

	cr_assert_not_null(v, "not JSON: %s\n%s", text, perr);
	return keep(v);
}

static yajl_val parse_n(const char *text, size_t len)
{
	char *copy = strndup(text, len);
	char perr[256] = "";
	yajl_val v;

	cr_assert_not_null(copy);
	v = yajl_tree_parse(copy, perr, sizeof(perr));
	if (!v) {
		cr_log_error("not JSON: %s\n%s", copy, perr);
		free(copy);
		cr_assert_fail("a rendered line is not JSON");
	}
	free(copy);
	return keep(v);
}

/* yajl_tree_get along a NULL-terminated path given inline. */
#define GET(v, ...) yajl_tree_get((v), (const char *[]){ __VA_ARGS__, NULL }, yajl_t_any)

/* ------------------------------------------------------------------ */
/* Feeding events */

/*
 * What the pipeline does with one event in index `slot`: parse its data,
 * ask the projection for the document _id there (which must be the
 * operation's, once it has one), and fold the event in. Returns apply's (or
 * a rejecting or skipping doc_id's) answer; `err` holds the reason of a
 * rejection.
 */
static int feed_in(const struct projection *p, size_t slot, struct bulk_op *o, const char *type,
		   uint64_t txid, int64_t pos, const char *created_at, const char *data)
{
	struct event ev = {
		.at = { .txid = txid, .pos = pos },
		.stream_id = "stream",
		.type = type,
		.data = data,
		.data_len = strlen(data),
		.created_at = created_at,
		.version = 1,
	};
	yajl_val d = parse(data);
	char *stable = arena_alloc(&strings, strlen(created_at) + 1);
	int rc;

	cr_assert_not_null(stable);
	strcpy(stable, created_at);
	ev.created_at = stable;
	err[0] = '\0';
	rc = projection_doc_id(p, &ev, d, slot, &idbuf, err, sizeof(err));
	cr_assert(rc == 0 || rc == PROJECTION_REJECT || rc == PROJECTION_SKIP, "doc_id answered %d", rc);
	if (rc == PROJECTION_SKIP)
		return rc; /* no document of this index */
	if (rc) {
		cr_expect_neq(err[0], '\0', "a rejection without a reason");
		return rc;
	}
	if (!o->id) {
		cr_assert_eq(bulk_op_init(o, idbuf.data, idbuf.len), 0);
		o->slot = (unsigned)slot;
	} else {
		cr_assert_str_eq(o->id, idbuf.data, "the event is not for this document");
	}
	rc = p->apply(&ev, d, o, err, sizeof(err));
	cr_assert(rc == 0 || rc == PROJECTION_REJECT || rc == PROJECTION_NEW_OP, "apply answered %d", rc);
	if (rc == PROJECTION_REJECT)
		cr_expect_neq(err[0], '\0', "a rejection without a reason");
	return rc;
}

/* feed_in for a projection of one index */
static int feed(const struct projection *p, struct bulk_op *o, const char *type, uint64_t txid,
		int64_t pos, const char *created_at, const char *data)
{
	int rc = feed_in(p, 0, o, type, txid, pos, created_at, data);

	cr_assert_neq(rc, PROJECTION_SKIP, "doc_id answered %d", rc);
	return rc;
}

#define TS "2026-11-26T10:00:00.000000Z"

#define OK(p, o, type, txid, pos, cat, data)                                          \
	cr_assert_eq(feed((p), (o), (type), (txid), (pos), (cat), (data)), 0,          \
		     "%s %s rejected: %s", (type), (data), err)

/* ------------------------------------------------------------------ */
/* Rendering */

struct rendered {
	size_t n;          /* lines */
	yajl_val action;   /* the action line */
	yajl_val source;   /* the line after it, or NULL */
	const char *verb;  /* the action: index, update, delete */
};

/* Renders `o` alone into the body and parses its lines back. */
static struct rendered render(const struct bulk_op *o)
{
	struct rendered r = { 0 };
	char werr[256] = "";
	size_t start = 0;
	yajl_val lines[3] = { NULL, NULL, NULL };

	buf_reset(&body);
	cr_assert_eq(bulk_write_op(&body, o, werr, sizeof(werr)), 0, "bulk_write_op: %s", werr);
	cr_assert_eq(strlen(body.data), body.len, "the body holds a NUL byte");
	for (size_t i = 0; i < body.len; i++) {
		if (body.data[i] != '\n')
			continue;
		cr_assert_gt(i, start, "an empty line in: %s", body.data);
		cr_assert_lt(r.n, 2, "more than two lines: %s", body.data);
		lines[r.n++] = parse_n(body.data + start, i - start);
		start = i + 1;
	}
	cr_assert_eq(start, body.len, "the body does not end in '\\n': %s", body.data);
	if (r.n == 0)
		return r;
	r.action = lines[0];
	r.source = lines[1];
	cr_assert(YAJL_IS_OBJECT(r.action) && r.action->u.object.len == 1,
		  "the action line is not one action: %s", body.data);
	r.verb = r.action->u.object.keys[0];
	/* an update also says how often the cluster retries a lost version race */
	cr_assert(YAJL_IS_OBJECT(r.action->u.object.values[0]) &&
		  r.action->u.object.values[0]->u.object.len == (strcmp(r.verb, "update") ? 1u : 2u),
		  "the action holds more than its _id: %s", body.data);
	if (!strcmp(r.verb, "update"))
		cr_assert(YAJL_IS_INTEGER(GET(r.action, r.verb, "retry_on_conflict")) &&
			  YAJL_GET_INTEGER(GET(r.action, r.verb, "retry_on_conflict")) == BULK_RETRY_ON_CONFLICT,
			  "no retry_on_conflict: %s", body.data);
	cr_assert(YAJL_IS_STRING(GET(r.action, r.verb, "_id")), "no _id: %s", body.data);
	cr_assert_str_eq(GET(r.action, r.verb, "_id")->u.string, o->id);
	if (!strcmp(r.verb, "delete"))
		cr_assert_eq(r.n, 1, "a delete with a source line: %s", body.data);
	else
		cr_assert_eq(r.n, 2, "%s without a source line: %s", r.verb, body.data);
	return r;
}

/* The rendering of `o` as a string, to compare before/after; freed by caller. */
static char *snapshot(const struct bulk_op *o)
{
	struct buf b;
	char werr[256] = "";
	char *s;

	buf_init(&b, (size_t)64 << 20);
	cr_assert_eq(bulk_write_op(&b, o, werr, sizeof(werr)), 0, "bulk_write_op: %s", werr);
	s = strdup(b.data);
	buf_release(&b);
	cr_assert_not_null(s);
	return s;
}

/* ------------------------------------------------------------------ */
/* Assertions on parsed values */

static void expect_str(yajl_val v, const char *want, const char *what)
{
	cr_assert(YAJL_IS_STRING(v), "%s is not a string (body: %s)", what, body.data);
	cr_expect_str_eq(v->u.string, want, "%s", what);
}

static void expect_int(yajl_val v, long long want, const char *what)
{
	cr_assert(YAJL_IS_INTEGER(v), "%s is not a whole number (body: %s)", what, body.data);
	cr_expect_eq(YAJL_GET_INTEGER(v), want, "%s: %lld, want %lld", what,
		     (long long)YAJL_GET_INTEGER(v), want);
}

/* A number whose text is exactly `want` (money: never through a double). */
static void expect_num_text(yajl_val v, const char *want, const char *what)
{
	cr_assert(YAJL_IS_NUMBER(v), "%s is not a number (body: %s)", what, body.data);
	cr_expect_str_eq(v->u.number.r, want, "%s: %s, want %s", what, v->u.number.r, want);
}

static void expect_null(yajl_val v, const char *what)
{
	cr_expect(YAJL_IS_NULL(v), "%s is not null (body: %s)", what, body.data);
}

/* `obj` has exactly the keys listed, each once. */
static void expect_keys(yajl_val obj, const char *what, const char *const *keys)
{
	size_t n = 0;

	cr_assert(YAJL_IS_OBJECT(obj), "%s is not an object (body: %s)", what, body.data);
	while (keys[n])
		n++;
	for (size_t k = 0; k < n; k++) {
		size_t seen = 0;
		for (size_t i = 0; i < obj->u.object.len; i++)
			seen += !strcmp(obj->u.object.keys[i], keys[k]);
		cr_expect_eq(seen, 1, "%s: key '%s' appears %zu times (body: %s)", what, keys[k],
			     seen, body.data);
	}
	for (size_t i = 0; i < obj->u.object.len; i++) {
		bool listed = false;
		for (size_t k = 0; k < n; k++)
			listed = listed || !strcmp(obj->u.object.keys[i], keys[k]);
		cr_expect(listed, "%s: unexpected key '%s' (body: %s)", what,
			  obj->u.object.keys[i], body.data);
	}
}

#define KEYS(obj, what, ...) expect_keys((obj), (what), (const char *const[]){ __VA_ARGS__, NULL })

static void expect_position(yajl_val v, uint64_t txid, int64_t pos, const char *what)
{
	KEYS(v, what, "txid", "position");
	expect_int(GET(v, "txid"), (long long)txid, "last_event.txid");
	expect_int(GET(v, "position"), (long long)pos, "last_event.position");
}

/* ================================================================== */
/* projection_get_cents */

Test(helpers, cents_exact_from_the_text)
{
	static const struct {
		const char *text;
		int64_t cents;
	} ok[] = {
		{ "19.99", 1999 },
		{ "0.1", 10 },
		{ "0.10", 10 },
		{ "0.01", 1 },
		{ "5", 500 },
		{ "0", 0 },
		{ "0.00", 0 },
		{ "-0", 0 },
		{ "-0.05", -5 },
		{ "-12.3", -1230 },
		{ "1.500", 150 },          /* trailing zeros allowed */
		{ "1.50000000000", 150 },
		{ "2.000", 200 },
		{ "1234567890123", 123456789012300 },       /* 13 digits */
		{ "9999999999999.99", 999999999999999 },
		{ "-9999999999999.99", -999999999999999 },
		{ "0.29", 29 },  /* 0.29 * 100 is 28.999999999999996 as a double */
		{ "1.15", 115 },
		{ "4.35", 435 },
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char json[128];
		int64_t cents = 424242;
		snprintf(json, sizeof(json), "{\"price\": %s}", ok[i].text);
		yajl_val d = parse(json);
		err[0] = '\0';
		cr_expect_eq(projection_get_cents(d, "price", &cents, err, sizeof(err)), 0,
			     "%s rejected: %s", ok[i].text, err);
		cr_expect_eq(cents, ok[i].cents, "%s: %lld cents, want %lld", ok[i].text,
			     (long long)cents, (long long)ok[i].cents);
	}
}

Test(helpers, cents_rejects_what_is_not_plain_money)
{
	static const char *const bad[] = {
		"1.234",               /* three decimals */
		"0.001",
		"1.0000001",
		"1e2",                 /* exponents */
		"1E2",
		"1.5e1",
		"1.00e0",
		"-1e-2",
		"\"1.00\"",            /* a string */
		"\"5\"",
		"12345678901234",      /* 14 digits */
		"12345678901234.5",
		"-12345678901234",
		"99999999999999999999",
		"null",
		"true",
		"[1]",
		"{\"v\": 1}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char json[128];
		int64_t cents = 424242;
		snprintf(json, sizeof(json), "{\"price\": %s}", bad[i]);
		yajl_val d = parse(json);
		err[0] = '\0';
		cr_expect_eq(projection_get_cents(d, "price", &cents, err, sizeof(err)),
			     PROJECTION_REJECT, "%s accepted as %lld cents", bad[i], (long long)cents);
		cr_expect_neq(err[0], '\0', "%s: no reason", bad[i]);
		cr_expect_eq(cents, 424242, "%s: the output was written on a rejection", bad[i]);
	}
}

Test(helpers, cents_of_a_missing_member_or_a_non_object)
{
	int64_t cents = 7;

	cr_expect_eq(projection_get_cents(parse("{\"other\": 1}"), "price", &cents, err, sizeof(err)),
		     PROJECTION_REJECT);
	cr_expect_neq(err[0], '\0');
	err[0] = '\0';
	cr_expect_eq(projection_get_cents(parse("[1.00]"), "price", &cents, err, sizeof(err)),
		     PROJECTION_REJECT);
	cr_expect_neq(err[0], '\0');
	cr_expect_eq(cents, 7);
}

/* ================================================================== */
/* projection_get_int */

Test(helpers, int_bounds_are_inclusive)
{
	yajl_val d = parse("{\"a\": 1, \"b\": 1000000, \"c\": 0, \"d\": 1000001, \"e\": -1,"
			   " \"f\": 1.0, \"g\": 1e3, \"h\": \"5\", \"i\": null, \"j\": true,"
			   " \"k\": 99999999999999999999, \"l\": -9223372036854775807,"
			   " \"m\": 9223372036854775807, \"n\": -7}");
	static const struct {
		const char *key;
		long long min, max;
		bool ok;
		long long want;
	} cases[] = {
		{ "a", 1, 1000000, true, 1 },
		{ "b", 1, 1000000, true, 1000000 },
		{ "c", 1, 1000000, false, 0 },
		{ "d", 1, 1000000, false, 0 },
		{ "e", 1, 1000000, false, 0 },
		{ "f", 1, 1000000, false, 0 },   /* 1.0 is not a whole number's text */
		{ "g", 1, 1000000, false, 0 },
		{ "h", 1, 1000000, false, 0 },
		{ "i", 1, 1000000, false, 0 },
		{ "j", 1, 1000000, false, 0 },
		{ "k", LLONG_MIN, LLONG_MAX, false, 0 },
		{ "l", LLONG_MIN, LLONG_MAX, true, -LLONG_MAX },
		{ "m", LLONG_MIN, LLONG_MAX, true, LLONG_MAX },
		{ "m", LLONG_MIN, LLONG_MAX - 1, false, 0 },
		{ "n", -10, -5, true, -7 },
		{ "n", -10, -8, false, 0 },
		{ "n", -6, -5, false, 0 },
		{ "missing", 1, 10, false, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long long out = 4242;
		int rc;
		err[0] = '\0';
		rc = projection_get_int(d, cases[i].key, cases[i].min, cases[i].max, &out, err,
					sizeof(err));
		if (cases[i].ok) {
			cr_expect_eq(rc, 0, "case %zu ('%s') rejected: %s", i, cases[i].key, err);
			cr_expect_eq(out, cases[i].want, "case %zu: %lld", i, out);
		} else {
			cr_expect_eq(rc, PROJECTION_REJECT, "case %zu ('%s') accepted as %lld", i,
				     cases[i].key, out);
			cr_expect_neq(err[0], '\0', "case %zu: no reason", i);
			cr_expect_eq(out, 4242, "case %zu: the output was written on a rejection", i);
		}
	}
}

/* ================================================================== */
/* projection_get_id */

Test(helpers, id_from_a_string_or_an_integer)
{
	char long_ok[600], json[700];

	cr_assert_eq(projection_get_id(parse("{\"id\": \"abc-1\"}"), "id", &idbuf, err, sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "abc-1");
	cr_assert_eq(projection_get_id(parse("{\"id\": 42}"), "id", &idbuf, err, sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "42", "the previous id is not kept");
	cr_assert_eq(projection_get_id(parse("{\"id\": -7}"), "id", &idbuf, err, sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "-7");
	cr_assert_eq(projection_get_id(parse("{\"id\": \"caf\\u00e9 \\\"q\\\"\"}"), "id", &idbuf,
				       err, sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "caf\xc3\xa9 \"q\"");

	/* 512 bytes is the most */
	memset(long_ok, 'x', 512);
	long_ok[512] = '\0';
	snprintf(json, sizeof(json), "{\"id\": \"%s\"}", long_ok);
	cr_assert_eq(projection_get_id(parse(json), "id", &idbuf, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(idbuf.len, 512);
	cr_expect_str_eq(idbuf.data, long_ok);
}

Test(helpers, id_rejections)
{
	char long_bad[600], json[700];
	static const char *const bad[] = {
		"{\"id\": \"\"}",
		"{\"id\": 1.5}",
		"{\"id\": 1.0}",
		"{\"id\": 1e3}",
		"{\"id\": null}",
		"{\"id\": true}",
		"{\"id\": [\"a\"]}",
		"{\"id\": {\"a\": 1}}",
		"{\"other\": \"a\"}",
		"{\"id\": 99999999999999999999}",
		"[\"id\"]",
	};

	memset(long_bad, 'x', 513);
	long_bad[513] = '\0';
	snprintf(json, sizeof(json), "{\"id\": \"%s\"}", long_bad);
	for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
		const char *text = i < sizeof(bad) / sizeof(bad[0]) ? bad[i] : json;
		/* something already in the buffer must not survive */
		buf_reset(&idbuf);
		cr_assert_eq(buf_append_str(&idbuf, "stale"), BUF_OK);
		err[0] = '\0';
		cr_expect_eq(projection_get_id(parse(text), "id", &idbuf, err, sizeof(err)),
			     PROJECTION_REJECT, "%.80s accepted as id '%.80s'", text, idbuf.data);
		cr_expect_neq(err[0], '\0', "%.80s: no reason", text);
		cr_expect_eq(idbuf.len, 0, "%.80s: the id buffer holds '%s'", text, idbuf.data);
	}
}

/* Data that is not an object names no document, and the reason says why. */
Test(helpers, id_of_data_that_is_not_an_object)
{
	static const char *const shapes[] = {
		"[]", "[{\"id\": \"a\"}]", "\"id\"", "42", "-0", "null", "true", "false",
	};

	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		err[0] = '\0';
		cr_expect_eq(projection_get_id(parse(shapes[i]), "id", &idbuf, err, sizeof(err)),
			     PROJECTION_REJECT, "%s accepted", shapes[i]);
		cr_expect_not_null(strstr(err, "object"), "%s: the reason '%s' does not say 'object'",
				   shapes[i], err);
		cr_expect_eq(idbuf.len, 0);
	}
	cr_expect_eq(projection_get_id(NULL, "id", &idbuf, err, sizeof(err)), PROJECTION_REJECT);
}

Test(helpers, get_string)
{
	yajl_val d = parse("{\"s\": \"x\", \"n\": null, \"i\": 3}");
	bool bad = true;
	yajl_val v;

	v = projection_get_string(d, "s", true, &bad, err, sizeof(err));
	cr_expect(YAJL_IS_STRING(v) && !bad);
	v = projection_get_string(d, "n", false, &bad, err, sizeof(err));
	cr_expect(v == NULL && !bad);
	v = projection_get_string(d, "missing", false, &bad, err, sizeof(err));
	cr_expect(v == NULL && !bad);
	v = projection_get_string(d, "n", true, &bad, err, sizeof(err));
	cr_expect(v == NULL && bad);
	v = projection_get_string(d, "missing", true, &bad, err, sizeof(err));
	cr_expect(v == NULL && bad);
	v = projection_get_string(d, "i", false, &bad, err, sizeof(err));
	cr_expect(v == NULL && bad);
}

Test(helpers, registry)
{
	static const char *const ptypes[] = { "ProductCreated", "ProductUpdated",
					      "ProductPriceChanged", "ProductDeleted" };
	static const char *const otypes[] = { "OrderCreated", "OrderItemAdded", "OrderItemRemoved",
					      "OrderShipped", "OrderCompleted", "OrderCancelled" };
	size_t n;

	cr_expect_null(projection_find("nope"));
	cr_expect_null(projection_find(""));
	cr_expect_str_eq(products->name, "products");
	cr_expect_str_eq(orders->name, "orders");
	for (n = 0; products->event_types[n]; n++)
		cr_expect_str_eq(products->event_types[n], ptypes[n]);
	cr_expect_eq(n, 4);
	for (n = 0; orders->event_types[n]; n++)
		cr_expect_str_eq(orders->event_types[n], otypes[n]);
	cr_expect_eq(n, 6);
}

/*
 * An unknown type is quoted as one line of UTF-8, cut on a character
 * boundary; a multibyte lead byte just before the end of the type is one
 * '?' and nothing after the type is read (a heap copy of exactly its
 * bytes: ASan sees a read past it).
 */
Test(helpers, unknown_type_is_one_line_of_utf8)
{
	static const struct {
		const char *type, *want;
	} cases[] = {
		{ "ProductArchived", "unknown event type 'ProductArchived'" },
		{ "", "unknown event type ''" },
		{ "\xf0", "unknown event type '?'" },
		{ "Order\xf0", "unknown event type 'Order?'" },
		{ "x\xe2\x82", "unknown event type 'x?\?'" },
		{ "a\nb\r\x7f", "unknown event type 'a?b?\?'" },
		{ "caf\xc3\xa9", "unknown event type 'caf\xc3\xa9'" },
		{ "\xc3(", "unknown event type '?('" },
		/* 63 bytes and a euro sign: the euro sign would pass 64 bytes */
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xe2\x82\xac",
		  "unknown event type 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'" },
	};

	yajl_val d = parse("{\"product_id\": \"p1\", \"order_id\": \"o1\", \"customer_id\": \"c1\"}");

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *type = strdup(cases[i].type);
		struct event ev = { .type = type, .stream_id = "stream", .data = "{}", .created_at = TS };

		cr_assert_not_null(type);
		err[0] = '\0';
		cr_expect_eq(projection_unknown_type(&ev, err, sizeof(err)), PROJECTION_REJECT);
		cr_expect_str_eq(err, cases[i].want, "case %zu", i);
		/* and through every projection: its doc_id, or its apply, in its first index */
		for (const struct projection *const *p = projection_registry; *p; p++) {
			int rc;

			err[0] = '\0';
			rc = projection_doc_id(*p, &ev, d, 0, &idbuf, err, sizeof(err));
			if (rc == 0) {
				bulk_op_release(&op);
				memset(&op, 0, sizeof(op));
				cr_assert_eq(bulk_op_init(&op, idbuf.data, idbuf.len), 0);
				rc = (*p)->apply(&ev, d, &op, err, sizeof(err));
				cr_expect_eq(op.kind, BULK_NONE, "%s, case %zu: the operation changed", (*p)->name, i);
			}
			cr_expect_eq(rc, PROJECTION_REJECT, "%s, case %zu", (*p)->name, i);
			cr_expect_str_eq(err, cases[i].want, "%s, case %zu", (*p)->name, i);
		}
		free(type);
	}
}

/* ================================================================== */
/* products */

#define P_CREATED "{\"product_id\": \"p1\", \"name\": \"Old\", \"description\": \"d\"," \
	" \"category\": \"tools\", \"price\": 10.50, \"tags\": [\"a\", \"b\"],"           \
	" \"created_at\": \"2026-01-01T00:00:00Z\"}"

Test(products, doc_id_is_the_product_id)
{
	struct event ev = { .type = "ProductCreated" };

	cr_assert_eq(products->doc_id(&ev, parse("{\"product_id\": \"p-9\"}"), &idbuf, err,
				      sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "p-9");
	cr_assert_eq(products->doc_id(&ev, parse("{\"product_id\": 17}"), &idbuf, err,
				      sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "17");
	cr_expect_eq(products->doc_id(&ev, parse("{\"product_id\": \"\"}"), &idbuf, err,
				      sizeof(err)), PROJECTION_REJECT);
	cr_expect_eq(products->doc_id(&ev, parse("{\"id\": \"p\"}"), &idbuf, err, sizeof(err)),
		     PROJECTION_REJECT);
}

Test(products, created_price_changed_updated_become_one_index)
{
	struct rendered r;
	yajl_val s, tags;

	OK(products, &op, "ProductCreated", 10, 1, TS, P_CREATED);
	OK(products, &op, "ProductPriceChanged", 10, 2, TS,
	   "{\"product_id\": \"p1\", \"new_price\": 12.25, \"changed_at\": \"2026-01-02T00:00:00Z\"}");
	OK(products, &op, "ProductUpdated", 11, 1, TS,
	   "{\"product_id\": \"p1\", \"name\": \"New\", \"updated_at\": \"2026-01-03T00:00:00Z\"}");
	cr_expect_eq(op.kind, BULK_INDEX);
	r = render(&op);
	cr_assert_str_eq(r.verb, "index", "%s", body.data);
	s = r.source;
	KEYS(s, "source", "product_id", "name", "description", "category", "price", "tags",
	     "created_at", "price_updated_at", "updated_at");
	expect_str(GET(s, "product_id"), "p1", "product_id");
	expect_str(GET(s, "name"), "New", "name");
	expect_str(GET(s, "description"), "d", "description");
	expect_str(GET(s, "category"), "tools", "category");
	expect_num_text(GET(s, "price"), "12.25", "price");
	expect_str(GET(s, "created_at"), "2026-01-01T00:00:00Z", "created_at");
	expect_str(GET(s, "price_updated_at"), "2026-01-02T00:00:00Z", "price_updated_at");
	expect_str(GET(s, "updated_at"), "2026-01-03T00:00:00Z", "updated_at");
	tags = GET(s, "tags");
	cr_assert(YAJL_IS_ARRAY(tags) && tags->u.array.len == 2);
	expect_str(tags->u.array.values[0], "a", "tags[0]");
	expect_str(tags->u.array.values[1], "b", "tags[1]");
}

Test(products, updated_alone_is_a_doc_as_upsert)
{
	struct rendered r;
	yajl_val doc, up, tags;

	OK(products, &op, "ProductUpdated", 5, 5, TS,
	   "{\"product_id\": 7, \"name\": \"N\", \"description\": null, \"tags\": [\"x\"],"
	   " \"updated_at\": \"2026-02-01T00:00:00Z\"}");
	cr_expect_eq(op.kind, BULK_UPDATE);
	cr_expect_str_eq(op.id, "7");
	r = render(&op);
	cr_assert_str_eq(r.verb, "update", "%s", body.data);
	KEYS(r.source, "source", "doc", "doc_as_upsert");
	up = GET(r.source, "doc_as_upsert");
	cr_expect(YAJL_IS_TRUE(up), "doc_as_upsert is not true: %s", body.data);
	doc = GET(r.source, "doc");
	KEYS(doc, "doc", "product_id", "name", "description", "tags", "updated_at");
	expect_int(GET(doc, "product_id"), 7, "product_id");
	expect_str(GET(doc, "name"), "N", "name");
	expect_null(GET(doc, "description"), "description");
	tags = GET(doc, "tags");
	cr_assert(YAJL_IS_ARRAY(tags) && tags->u.array.len == 1);
	expect_str(tags->u.array.values[0], "x", "tags[0]");
	expect_str(GET(doc, "updated_at"), "2026-02-01T00:00:00Z", "updated_at");
}

Test(products, partial_updates_merge_later_values_win)
{
	struct rendered r;
	yajl_val doc;

	OK(products, &op, "ProductPriceChanged", 1, 1, TS,
	   "{\"product_id\": \"p1\", \"new_price\": 3, \"changed_at\": null}");
	OK(products, &op, "ProductUpdated", 1, 2, TS,
	   "{\"product_id\": \"p1\", \"name\": \"A\", \"category\": \"c1\"}");
	OK(products, &op, "ProductUpdated", 1, 3, TS,
	   "{\"product_id\": \"p1\", \"name\": \"B\"}");
	OK(products, &op, "ProductPriceChanged", 1, 4, TS,
	   "{\"product_id\": \"p1\", \"new_price\": 4.5}");
	cr_expect_eq(op.kind, BULK_UPDATE);
	r = render(&op);
	cr_assert_str_eq(r.verb, "update");
	doc = GET(r.source, "doc");
	KEYS(doc, "doc", "product_id", "price", "price_updated_at", "name", "category");
	expect_num_text(GET(doc, "price"), "4.5", "price");
	expect_null(GET(doc, "price_updated_at"), "price_updated_at");
	expect_str(GET(doc, "name"), "B", "name");
	expect_str(GET(doc, "category"), "c1", "category");
}

Test(products, created_then_deleted_is_a_delete)
{
	struct rendered r;

	OK(products, &op, "ProductCreated", 1, 1, TS, P_CREATED);
	OK(products, &op, "ProductDeleted", 1, 2, TS, "{\"product_id\": \"p1\"}");
	cr_expect_eq(op.kind, BULK_DELETE);
	r = render(&op);
	cr_expect_str_eq(r.verb, "delete");
	cr_expect_eq(r.n, 1);
	cr_expect_str_eq(body.data, "{\"delete\":{\"_id\":\"p1\"}}\n");
}

Test(products, deleted_then_created_is_only_the_created_fields)
{
	struct rendered r;

	OK(products, &op, "ProductUpdated", 1, 1, TS,
	   "{\"product_id\": \"p1\", \"category\": \"gone\", \"updated_at\": \"u\"}");
	OK(products, &op, "ProductDeleted", 1, 2, TS, "{\"product_id\": \"p1\"}");
	OK(products, &op, "ProductCreated", 1, 3, TS,
	   "{\"product_id\": \"p1\", \"name\": \"Fresh\", \"price\": 1.00}");
	cr_expect_eq(op.kind, BULK_INDEX);
	r = render(&op);
	cr_assert_str_eq(r.verb, "index", "%s", body.data);
	KEYS(r.source, "source", "product_id", "name", "price");
	expect_str(GET(r.source, "name"), "Fresh", "name");
	expect_num_text(GET(r.source, "price"), "1.00", "price");
}

Test(products, deleted_then_updated_is_an_index_of_the_id_and_the_update)
{
	struct rendered r;

	OK(products, &op, "ProductCreated", 1, 1, TS, P_CREATED);
	OK(products, &op, "ProductDeleted", 1, 2, TS, "{\"product_id\": \"p1\"}");
	OK(products, &op, "ProductUpdated", 1, 3, TS,
	   "{\"product_id\": \"p1\", \"name\": \"Back\", \"updated_at\": \"2026-03-01T00:00:00Z\"}");
	cr_expect_eq(op.kind, BULK_INDEX);
	r = render(&op);
	cr_assert_str_eq(r.verb, "index", "%s", body.data);
	KEYS(r.source, "source", "product_id", "name", "updated_at");
	expect_str(GET(r.source, "product_id"), "p1", "product_id");
	expect_str(GET(r.source, "name"), "Back", "name");
	expect_str(GET(r.source, "updated_at"), "2026-03-01T00:00:00Z", "updated_at");
}

Test(products, created_twice_keeps_only_the_second)
{
	struct rendered r;

	OK(products, &op, "ProductCreated", 1, 1, TS, P_CREATED);
	OK(products, &op, "ProductCreated", 1, 2, TS,
	   "{\"product_id\": \"p1\", \"name\": \"Two\", \"price\": 2, \"tags\": null}");
	r = render(&op);
	cr_assert_str_eq(r.verb, "index");
	KEYS(r.source, "source", "product_id", "name", "price", "tags");
	expect_str(GET(r.source, "name"), "Two", "name");
	expect_int(GET(r.source, "price"), 2, "price");
	expect_null(GET(r.source, "tags"), "tags");
}

/* Puts op into state `state` (0 none, 1 index, 2 update, 3 delete). */
static void product_state(int state)
{
	bulk_op_release(&op);
	cr_assert_eq(bulk_op_init(&op, "p1", 2), 0);
	if (state == 1) {
		OK(products, &op, "ProductCreated", 1, 1, TS, P_CREATED);
	} else if (state == 2) {
		OK(products, &op, "ProductUpdated", 1, 1, TS,
		   "{\"product_id\": \"p1\", \"name\": \"U\", \"tags\": [\"t\"]}");
	} else if (state == 3) {
		OK(products, &op, "ProductDeleted", 1, 1, TS, "{\"product_id\": \"p1\"}");
	}
}

Test(products, a_rejected_event_leaves_the_operation_as_it_was)
{
	static const struct {
		const char *type, *data;
	} bad[] = {
		{ "ProductCreated", "{\"product_id\": \"p1\", \"price\": 1}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": null, \"price\": 1}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"x\"}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"x\", \"price\": \"1.00\"}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"x\", \"price\": null}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"x\", \"price\": 1,"
				    " \"tags\": [\"a\", 2]}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"x\", \"price\": 1,"
				    " \"tags\": \"a\"}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": 5, \"price\": 1}" },
		{ "ProductCreated", "{\"product_id\": \"p1\", \"name\": \"x\", \"price\": 1,"
				    " \"created_at\": 5}" },
		{ "ProductUpdated", "{\"product_id\": \"p1\", \"name\": null}" },
		{ "ProductUpdated", "{\"product_id\": \"p1\", \"tags\": [null]}" },
		{ "ProductUpdated", "{\"product_id\": \"p1\", \"description\": 5}" },
		{ "ProductUpdated", "{\"product_id\": \"p1\", \"name\": \"ok\", \"category\": []}" },
		{ "ProductPriceChanged", "{\"product_id\": \"p1\", \"new_price\": \"2\"}" },
		{ "ProductPriceChanged", "{\"product_id\": \"p1\"}" },
		{ "ProductPriceChanged", "{\"product_id\": \"p1\", \"new_price\": null}" },
		{ "ProductPriceChanged", "{\"product_id\": \"p1\", \"new_price\": 2,"
					 " \"changed_at\": 5}" },
		{ "ProductRenamed", "{\"product_id\": \"p1\", \"name\": \"x\"}" },
	};

	for (int state = 0; state < 4; state++) {
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *before, *after;
			enum bulk_kind kind;
			size_t n_fields;

			product_state(state);
			before = snapshot(&op);
			kind = op.kind;
			n_fields = op.n_fields;
			cr_expect_eq(feed(products, &op, bad[i].type, 2, 1, TS, bad[i].data),
				     PROJECTION_REJECT, "state %d: %s %s accepted", state,
				     bad[i].type, bad[i].data);
			after = snapshot(&op);
			cr_expect_str_eq(after, before, "state %d, %s %s changed the operation",
					 state, bad[i].type, bad[i].data);
			cr_expect_eq(op.kind, kind, "state %d, case %zu: kind changed", state, i);
			cr_expect_eq(op.n_fields, n_fields, "state %d, case %zu", state, i);
			free(before);
			free(after);
		}
	}
}

/*
 * Prices are money, read as orders reads them: the index stores cents
 * (scaled_float), which would round 1.999 to 2.00 and saturate 2^64 without
 * a word, and PostgreSQL hands numbers over in plain notation (1e400 arrives
 * as 401 digits, 1e-400 as 400 decimals).
 */
Test(products, prices_are_money)
{
	static const char *const good[] = { "0", "1.5", "1.500", "19.90", "9999999999999.99", "-0.5" };
	static const char *const bad[] = { "1.999", "0.001", "-0.001", "1e2", "10000000000000",
					   "-10000000000000", "18446744073709551616" };
	char *huge = malloc(1000), *tiny = malloc(1000), data[1200];

	cr_assert(huge && tiny);
	huge[0] = '1';
	memset(huge + 1, '0', 400);
	huge[401] = '\0';
	memcpy(tiny, "0.", 2);
	memset(tiny + 2, '0', 399);
	memcpy(tiny + 401, "1", 2);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct rendered r;
		bulk_op_release(&op);
		memset(&op, 0, sizeof(op));
		snprintf(data, sizeof(data), "{\"product_id\": \"p1\", \"name\": \"n\", \"price\": %s}",
			 good[i]);
		OK(products, &op, "ProductCreated", 1, 1, TS, data);
		snprintf(data, sizeof(data), "{\"product_id\": \"p1\", \"new_price\": %s}", good[i]);
		OK(products, &op, "ProductPriceChanged", 1, 2, TS, data);
		r = render(&op);
		/* the event's own text: 1.500 stays 1.500, never through a double */
		expect_num_text(GET(r.source, "price"), good[i], "price");
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) + 2; i++) {
		const char *price = i < sizeof(bad) / sizeof(bad[0]) ? bad[i]
				    : i == sizeof(bad) / sizeof(bad[0]) ? huge : tiny;
		product_state(1);
		snprintf(data, sizeof(data), "{\"product_id\": \"p1\", \"name\": \"n\", \"price\": %s}",
			 price);
		cr_expect_eq(feed(products, &op, "ProductCreated", 2, 1, TS, data), PROJECTION_REJECT,
			     "price %.40s accepted", price);
		cr_expect_not_null(strstr(err, "'price'"), "price %.40s: the reason '%s' does not name it",
				   price, err);
		snprintf(data, sizeof(data), "{\"product_id\": \"p1\", \"new_price\": %s}", price);
		cr_expect_eq(feed(products, &op, "ProductPriceChanged", 2, 2, TS, data), PROJECTION_REJECT,
			     "new_price %.40s accepted", price);
		cr_expect_not_null(strstr(err, "'new_price'"),
				   "new_price %.40s: the reason '%s' does not name it", price, err);
	}
	free(huge);
	free(tiny);
}

/* ================================================================== */
/* orders */

#define O_CREATED "{\"order_id\": \"o1\", \"customer_id\": \"c1\"," \
	" \"created_at\": \"2026-11-26T09:59:59Z\"}"
#define O_ITEM(price, qty) "{\"order_id\": \"o1\", \"product_id\": \"p1\", \"price\": " \
	price ", \"quantity\": " qty "}"

Test(orders, doc_id_is_the_order_id)
{
	struct event ev = { .type = "OrderShipped" };

	cr_assert_eq(orders->doc_id(&ev, parse("{\"order_id\": 12}"), &idbuf, err, sizeof(err)), 0);
	cr_expect_str_eq(idbuf.data, "12");
	cr_expect_eq(orders->doc_id(&ev, parse("{\"order_id\": \"\"}"), &idbuf, err, sizeof(err)),
		     PROJECTION_REJECT);
	cr_expect_eq(orders->doc_id(&ev, parse("{\"order_id\": 1.5}"), &idbuf, err, sizeof(err)),
		     PROJECTION_REJECT);
}

Test(orders, created_items_shipped_become_one_index)
{
	struct rendered r;
	yajl_val s;

	OK(orders, &op, "OrderCreated", 100, 1, "2026-11-26T10:00:00.000001Z", O_CREATED);
	OK(orders, &op, "OrderItemAdded", 100, 2, "2026-11-26T10:00:00.000002Z", O_ITEM("0.10", "1"));
	OK(orders, &op, "OrderItemAdded", 101, 5, "2026-11-26T10:00:01.000000Z", O_ITEM("0.20", "1"));
	OK(orders, &op, "OrderShipped", 102, 9, "2026-11-26T11:00:00.123456Z",
	   "{\"order_id\": \"o1\", \"shipped_at\": \"2026-11-26T10:59:00Z\"}");
	cr_expect_eq(op.kind, BULK_INDEX);
	cr_expect_eq(op.n_entries, 0);
	r = render(&op);
	cr_assert_str_eq(r.verb, "index", "%s", body.data);
	s = r.source;
	KEYS(s, "source", "order_id", "customer_id", "status", "total_amount", "item_count",
	     "created_at", "updated_at", "last_event", "shipped_at");
	expect_str(GET(s, "order_id"), "o1", "order_id");
	expect_str(GET(s, "customer_id"), "c1", "customer_id");
	expect_str(GET(s, "status"), "shipped", "status");
	expect_num_text(GET(s, "total_amount"), "0.30", "total_amount");
	cr_expect_not_null(strstr(body.data, "\"total_amount\":0.30,"), "raw text: %s", body.data);
	expect_int(GET(s, "item_count"), 2, "item_count");
	expect_str(GET(s, "created_at"), "2026-11-26T09:59:59Z", "created_at (from the data)");
	expect_str(GET(s, "shipped_at"), "2026-11-26T10:59:00Z", "shipped_at");
	expect_str(GET(s, "updated_at"), "2026-11-26T11:00:00.123456Z", "updated_at");
	expect_position(GET(s, "last_event"), 102, 9, "last_event");
}

Test(orders, items_without_created_are_a_guarded_script_update)
{
	struct rendered r;
	yajl_val script, events, e;

	OK(orders, &op, "OrderItemAdded", 200, 1, "A", O_ITEM("19.99", "3"));
	OK(orders, &op, "OrderItemRemoved", 200, 2, "B", O_ITEM("5.00", "2"));
	cr_expect_eq(op.kind, BULK_SCRIPT);
	cr_expect(!op.upsert, "orders must not upsert");
	r = render(&op);
	cr_assert_str_eq(r.verb, "update", "%s", body.data);
	KEYS(r.source, "source", "script");
	script = GET(r.source, "script");
	KEYS(script, "script", "id", "params");
	expect_str(GET(script, "id"), BULK_SCRIPT_ID, "script.id");
	expect_str(GET(script, "id"), "esbridge-apply-v1", "script.id");
	KEYS(GET(script, "params"), "params", "events");
	events = GET(script, "params", "events");
	cr_assert(YAJL_IS_ARRAY(events) && events->u.array.len == 2, "%s", body.data);

	e = events->u.array.values[0];
	KEYS(e, "events[0]", "t", "p", "s", "i", "m");
	expect_int(GET(e, "t"), 200, "t");
	expect_int(GET(e, "p"), 1, "p");
	KEYS(GET(e, "s"), "events[0].s", "updated_at");
	expect_str(GET(e, "s", "updated_at"), "A", "updated_at");
	KEYS(GET(e, "i"), "events[0].i", "item_count");
	expect_int(GET(e, "i", "item_count"), 1, "item_count");
	KEYS(GET(e, "m"), "events[0].m", "total_amount");
	expect_int(GET(e, "m", "total_amount"), 5997, "19.99 x 3 in cents");

	e = events->u.array.values[1];
	KEYS(e, "events[1]", "t", "p", "s", "i", "m");
	expect_int(GET(e, "t"), 200, "t");
	expect_int(GET(e, "p"), 2, "p");
	expect_str(GET(e, "s", "updated_at"), "B", "updated_at");
	expect_int(GET(e, "i", "item_count"), -1, "item_count");
	expect_int(GET(e, "m", "total_amount"), -1000, "-(5.00 x 2) in cents");

	cr_expect_null(strstr(body.data, "upsert"), "orders must not upsert: %s", body.data);
}

Test(orders, status_events_in_a_script)
{
	struct rendered r;
	yajl_val events, e;

	OK(orders, &op, "OrderShipped", 7, 1, "T1",
	   "{\"order_id\": \"o1\", \"shipped_at\": \"S\"}");
	OK(orders, &op, "OrderCompleted", 7, 2, "T2",
	   "{\"order_id\": \"o1\", \"customer_id\": \"c1\", \"total_amount\": 99.99,"
	   " \"item_count\": 9, \"completed_at\": \"C\"}");
	OK(orders, &op, "OrderCancelled", 8, 1, "T3",
	   "{\"order_id\": \"o1\", \"cancelled_at\": \"X\", \"reason\": \"fraud\"}");
	r = render(&op);
	cr_assert_str_eq(r.verb, "update");
	events = GET(r.source, "script", "params", "events");
	cr_assert(YAJL_IS_ARRAY(events) && events->u.array.len == 3, "%s", body.data);

	e = events->u.array.values[0];
	KEYS(GET(e, "s"), "s", "status", "shipped_at", "updated_at");
	expect_str(GET(e, "s", "status"), "shipped", "status");
	expect_str(GET(e, "s", "shipped_at"), "S", "shipped_at");
	expect_str(GET(e, "s", "updated_at"), "T1", "updated_at");
	KEYS(GET(e, "i"), "i", NULL);
	KEYS(GET(e, "m"), "m", NULL);

	e = events->u.array.values[1];
	KEYS(GET(e, "s"), "s", "status", "completed_at", "updated_at");
	expect_str(GET(e, "s", "status"), "completed", "status");
	expect_str(GET(e, "s", "completed_at"), "C", "completed_at");
	KEYS(GET(e, "i"), "i (the event's totals are not copied)", NULL);
	KEYS(GET(e, "m"), "m (the event's totals are not copied)", NULL);

	e = events->u.array.values[2];
	expect_int(GET(e, "t"), 8, "t");
	expect_int(GET(e, "p"), 1, "p");
	KEYS(GET(e, "s"), "s", "status", "cancelled_at", "cancellation_reason", "updated_at");
	expect_str(GET(e, "s", "status"), "cancelled", "status");
	expect_str(GET(e, "s", "cancelled_at"), "X", "cancelled_at");
	expect_str(GET(e, "s", "cancellation_reason"), "fraud", "cancellation_reason");
	expect_str(GET(e, "s", "updated_at"), "T3", "updated_at");
}

Test(orders, cancelled_in_an_index)
{
	struct rendered r;
	yajl_val s;

	OK(orders, &op, "OrderCreated", 1, 1, "T1", O_CREATED);
	OK(orders, &op, "OrderItemAdded", 1, 2, "T2", O_ITEM("19.99", "3"));
	OK(orders, &op, "OrderCancelled", 1, 3, "T3",
	   "{\"order_id\": \"o1\", \"cancelled_at\": \"2026-12-01T00:00:00Z\","
	   " \"reason\": \"changed \\\"mind\\\"\"}");
	r = render(&op);
	cr_assert_str_eq(r.verb, "index");
	s = r.source;
	KEYS(s, "source", "order_id", "customer_id", "status", "total_amount", "item_count",
	     "created_at", "updated_at", "last_event", "cancelled_at", "cancellation_reason");
	expect_str(GET(s, "status"), "cancelled", "status");
	expect_str(GET(s, "cancelled_at"), "2026-12-01T00:00:00Z", "cancelled_at");
	expect_str(GET(s, "cancellation_reason"), "changed \"mind\"", "cancellation_reason");
	expect_num_text(GET(s, "total_amount"), "59.97", "19.99 x 3");
	expect_int(GET(s, "item_count"), 1, "item_count");
	expect_str(GET(s, "updated_at"), "T3", "updated_at");
	expect_position(GET(s, "last_event"), 1, 3, "last_event");
}

Test(orders, null_reason_and_timestamps)
{
	struct rendered r;

	OK(orders, &op, "OrderCreated", 1, 1, "T1",
	   "{\"order_id\": 5, \"customer_id\": 6, \"created_at\": null}");
	OK(orders, &op, "OrderCancelled", 1, 2, "T2",
	   "{\"order_id\": 5, \"cancelled_at\": null, \"reason\": null}");
	r = render(&op);
	expect_int(GET(r.source, "order_id"), 5, "order_id");
	expect_int(GET(r.source, "customer_id"), 6, "customer_id");
	expect_null(GET(r.source, "created_at"), "created_at");
	expect_null(GET(r.source, "cancelled_at"), "cancelled_at");
	expect_null(GET(r.source, "cancellation_reason"), "cancellation_reason");
	expect_num_text(GET(r.source, "total_amount"), "0.00", "total_amount");
	expect_int(GET(r.source, "item_count"), 0, "item_count");
}

Test(orders, completed_keeps_the_accumulated_totals)
{
	struct rendered r;

	OK(orders, &op, "OrderCreated", 1, 1, "T1", O_CREATED);
	OK(orders, &op, "OrderItemAdded", 1, 2, "T2", O_ITEM("1.00", "2"));
	OK(orders, &op, "OrderCompleted", 1, 3, "T3",
	   "{\"order_id\": \"o1\", \"customer_id\": \"c1\", \"total_amount\": 999,"
	   " \"item_count\": 7, \"completed_at\": \"C\"}");
	r = render(&op);
	expect_str(GET(r.source, "status"), "completed", "status");
	expect_str(GET(r.source, "completed_at"), "C", "completed_at");
	expect_num_text(GET(r.source, "total_amount"), "2.00", "total_amount");
	expect_int(GET(r.source, "item_count"), 1, "item_count");
}

Test(orders, removals_can_make_a_negative_total)
{
	struct rendered r;

	OK(orders, &op, "OrderCreated", 1, 1, "T1", O_CREATED);
	OK(orders, &op, "OrderItemRemoved", 1, 2, "T2", O_ITEM("0.05", "1"));
	r = render(&op);
	expect_num_text(GET(r.source, "total_amount"), "-0.05", "total_amount");
	expect_int(GET(r.source, "item_count"), -1, "item_count");
}

Test(orders, price_times_quantity)
{
	static const struct {
		const char *price, *qty;
		long long cents;
	} cases[] = {
		{ "19.99", "3", 5997 },
		{ "0.01", "1000000", 1000000 },
		{ "0", "5", 0 },
		{ "1.500", "2", 300 },
		{ "0.29", "100", 2900 },
		{ "10000000.00", "1000000", 1000000000000000LL }, /* the largest line */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char data[256];
		struct rendered r;
		yajl_val m;
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"o1\", \"product_id\": 3, \"price\": %s, \"quantity\": %s}",
			 cases[i].price, cases[i].qty);
		bulk_op_release(&op);
		OK(orders, &op, "OrderItemAdded", 1, 1, "T", data);
		r = render(&op);
		m = GET(r.source, "script", "params", "events");
		cr_assert(YAJL_IS_ARRAY(m) && m->u.array.len == 1);
		expect_int(GET(m->u.array.values[0], "m", "total_amount"), cases[i].cents, data);
	}
}

/* Puts op into state `state` (0 none, 1 script, 2 index). */
static void order_state(int state)
{
	bulk_op_release(&op);
	cr_assert_eq(bulk_op_init(&op, "o1", 2), 0);
	if (state == 1) {
		OK(orders, &op, "OrderItemAdded", 1, 1, "T", O_ITEM("1.25", "2"));
	} else if (state == 2) {
		OK(orders, &op, "OrderCreated", 1, 1, "T", O_CREATED);
		OK(orders, &op, "OrderItemAdded", 1, 2, "T", O_ITEM("1.25", "2"));
	}
}

Test(orders, a_rejected_event_leaves_the_operation_as_it_was)
{
	static const struct {
		const char *type, *data;
	} bad[] = {
		{ "OrderItemAdded", O_ITEM("1.00", "0") },
		{ "OrderItemAdded", O_ITEM("1.00", "-1") },
		{ "OrderItemAdded", O_ITEM("1.00", "1000001") },
		{ "OrderItemAdded", O_ITEM("1.00", "1.5") },
		{ "OrderItemAdded", O_ITEM("1.00", "1.0") },
		{ "OrderItemAdded", O_ITEM("1.00", "\"1\"") },
		{ "OrderItemAdded", O_ITEM("1.00", "null") },
		{ "OrderItemAdded", "{\"order_id\": \"o1\", \"product_id\": \"p1\", \"price\": 1}" },
		{ "OrderItemAdded", O_ITEM("-0.01", "1") },
		{ "OrderItemAdded", O_ITEM("-5", "1") },
		{ "OrderItemAdded", O_ITEM("1.234", "1") },
		{ "OrderItemAdded", O_ITEM("1e2", "1") },
		{ "OrderItemAdded", O_ITEM("\"1.00\"", "1") },
		{ "OrderItemAdded", O_ITEM("null", "1") },
		{ "OrderItemAdded", O_ITEM("12345678901234", "1") },
		{ "OrderItemAdded", "{\"order_id\": \"o1\", \"price\": 1, \"quantity\": 1}" },
		{ "OrderItemAdded", "{\"order_id\": \"o1\", \"product_id\": \"\", \"price\": 1,"
				    " \"quantity\": 1}" },
		{ "OrderItemAdded", "{\"order_id\": \"o1\", \"product_id\": 1.5, \"price\": 1,"
				    " \"quantity\": 1}" },
		{ "OrderItemRemoved", O_ITEM("1.00", "0") },
		{ "OrderItemRemoved", O_ITEM("-1.00", "1") },
		{ "OrderItemRemoved", O_ITEM("0.005", "1") },
		{ "OrderCreated", "{\"order_id\": \"o1\"}" },
		{ "OrderCreated", "{\"order_id\": \"o1\", \"customer_id\": \"\"}" },
		{ "OrderCreated", "{\"order_id\": \"o1\", \"customer_id\": \"c\", \"created_at\": 5}" },
		{ "OrderShipped", "{\"order_id\": \"o1\", \"shipped_at\": 5}" },
		{ "OrderCompleted", "{\"order_id\": \"o1\", \"completed_at\": []}" },
		{ "OrderCancelled", "{\"order_id\": \"o1\", \"reason\": 5}" },
		{ "OrderCancelled", "{\"order_id\": \"o1\", \"cancelled_at\": true}" },
		{ "OrderRefunded", "{\"order_id\": \"o1\"}" },
	};

	for (int state = 0; state < 3; state++) {
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *before, *after;
			enum bulk_kind kind;
			size_t n_fields, n_entries;

			order_state(state);
			before = snapshot(&op);
			kind = op.kind;
			n_fields = op.n_fields;
			n_entries = op.n_entries;
			cr_expect_eq(feed(orders, &op, bad[i].type, 2, 1, "T9", bad[i].data),
				     PROJECTION_REJECT, "state %d: %s %s accepted", state,
				     bad[i].type, bad[i].data);
			after = snapshot(&op);
			cr_expect_str_eq(after, before, "state %d, %s %s changed the operation",
					 state, bad[i].type, bad[i].data);
			cr_expect_eq(op.kind, kind, "state %d, case %zu: kind changed", state, i);
			cr_expect_eq(op.n_fields, n_fields, "state %d, case %zu", state, i);
			cr_expect_eq(op.n_entries, n_entries, "state %d, case %zu", state, i);
			free(before);
			free(after);
		}
	}
}

/* customer_id and product_id are identifiers too: at most 512 bytes, as an _id. */
Test(orders, referenced_ids_are_at_most_512_bytes)
{
	char id[600], data[800];

	memset(id, 'c', 512);
	id[512] = '\0';
	snprintf(data, sizeof(data), "{\"order_id\": \"o1\", \"customer_id\": \"%s\"}", id);
	OK(orders, &op, "OrderCreated", 1, 1, "T", data);
	snprintf(data, sizeof(data), "{\"order_id\": \"o1\", \"product_id\": \"%s\", \"price\": 1,"
		 " \"quantity\": 1}", id);
	OK(orders, &op, "OrderItemAdded", 1, 2, "T", data);
	memset(id, 'c', 513);
	id[513] = '\0';
	snprintf(data, sizeof(data), "{\"order_id\": \"o1\", \"customer_id\": \"%s\"}", id);
	cr_expect_eq(feed(orders, &op, "OrderCreated", 1, 3, "T", data), PROJECTION_REJECT);
	cr_expect_not_null(strstr(err, "512"), "%s", err);
	snprintf(data, sizeof(data), "{\"order_id\": \"o1\", \"product_id\": \"%s\", \"price\": 1,"
		 " \"quantity\": 1}", id);
	cr_expect_eq(feed(orders, &op, "OrderItemRemoved", 1, 4, "T", data), PROJECTION_REJECT);
	cr_expect_not_null(strstr(err, "512"), "%s", err);
}

/*
 * A creation after events queued for the script does not swallow them: it
 * asks for an action of its own (PROJECTION_NEW_OP), leaving the pending
 * one as it was, so those events still reach the index (and become dead
 * letters there if the order does not exist yet). On a fresh operation the
 * creation starts a whole document.
 */
Test(orders, created_after_script_entries_is_a_fresh_index)
{
	struct rendered r;
	yajl_val s;
	size_t before;

	OK(orders, &op, "OrderItemAdded", 3, 1, "T1", O_ITEM("7.00", "1"));
	OK(orders, &op, "OrderShipped", 3, 2, "T2", "{\"order_id\": \"o1\", \"shipped_at\": \"S\"}");
	cr_assert_eq(op.kind, BULK_SCRIPT);
	before = op.n_entries;
	cr_expect_eq(feed(orders, &op, "OrderCreated", 3, 3, "T3", O_CREATED), PROJECTION_NEW_OP);
	cr_expect_eq(op.kind, BULK_SCRIPT, "the pending operation changed");
	cr_expect_eq(op.n_entries, before, "the pending operation changed");
	OK(orders, &op2, "OrderCreated", 3, 3, "T3", O_CREATED);
	OK(orders, &op2, "OrderItemAdded", 4, 1, "T4", O_ITEM("1.00", "1"));
	cr_expect_eq(op2.kind, BULK_INDEX);
	cr_expect_eq(op2.n_entries, 0, "script entries in a fresh index");
	r = render(&op2);
	cr_assert_str_eq(r.verb, "index", "%s", body.data);
	s = r.source;
	KEYS(s, "source", "order_id", "customer_id", "status", "total_amount", "item_count",
	     "created_at", "updated_at", "last_event");
	expect_str(GET(s, "status"), "pending", "status");
	expect_num_text(GET(s, "total_amount"), "1.00", "total_amount");
	expect_int(GET(s, "item_count"), 1, "item_count");
	expect_str(GET(s, "updated_at"), "T4", "updated_at");
	expect_position(GET(s, "last_event"), 4, 1, "last_event");
	cr_expect_null(strstr(body.data, "script"), "%s", body.data);
}

Test(orders, created_twice_starts_over)
{
	struct rendered r;

	OK(orders, &op, "OrderCreated", 1, 1, "T1", O_CREATED);
	OK(orders, &op, "OrderItemAdded", 1, 2, "T2", O_ITEM("3.00", "1"));
	OK(orders, &op, "OrderShipped", 1, 3, "T3", "{\"order_id\": \"o1\", \"shipped_at\": \"S\"}");
	OK(orders, &op, "OrderCreated", 1, 4, "T4",
	   "{\"order_id\": \"o1\", \"customer_id\": \"c2\"}");
	r = render(&op);
	KEYS(r.source, "source", "order_id", "customer_id", "status", "total_amount", "item_count",
	     "created_at", "updated_at", "last_event");
	expect_str(GET(r.source, "customer_id"), "c2", "customer_id");
	expect_str(GET(r.source, "status"), "pending", "status");
	expect_num_text(GET(r.source, "total_amount"), "0.00", "total_amount");
	expect_int(GET(r.source, "item_count"), 0, "item_count");
	expect_null(GET(r.source, "created_at"), "created_at");
	expect_position(GET(r.source, "last_event"), 1, 4, "last_event");
}

/* The price of item i in cents and its text; varied, with odd cents. */
static int64_t item_cents(size_t i, char *text, size_t textsz)
{
	int64_t c = (int64_t)((i * 7919 + 13) % 100000);
	snprintf(text, textsz, "%lld.%02lld", (long long)(c / 100), (long long)(c % 100));
	return c;
}

#define MANY 1000

Test(orders, many_items_in_one_index_sum_exactly)
{
	struct rendered r;
	int64_t want = 0;
	char data[256], price[32], want_text[64], cat[32];

	OK(orders, &op, "OrderCreated", 1, 0, "T0", O_CREATED);
	for (size_t i = 0; i < MANY; i++) {
		long long qty = (long long)(i % 5) + 1;
		want += item_cents(i, price, sizeof(price)) * qty;
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"o1\", \"product_id\": %zu, \"price\": %s, \"quantity\": %lld}",
			 i, price, qty);
		snprintf(cat, sizeof(cat), "T%zu", i + 1);
		OK(orders, &op, "OrderItemAdded", 1 + i / 10, (int64_t)(i + 1), cat, data);
	}
	cr_expect_eq(op.kind, BULK_INDEX);
	r = render(&op);
	snprintf(want_text, sizeof(want_text), "%lld.%02lld", (long long)(want / 100),
		 (long long)(want % 100));
	expect_num_text(GET(r.source, "total_amount"), want_text, "total_amount");
	expect_int(GET(r.source, "item_count"), MANY, "item_count");
	snprintf(cat, sizeof(cat), "T%d", MANY);
	expect_str(GET(r.source, "updated_at"), cat, "updated_at");
	expect_position(GET(r.source, "last_event"), 1 + (MANY - 1) / 10, MANY, "last_event");
}

Test(orders, many_items_in_one_script_keep_their_order)
{
	struct rendered r;
	yajl_val events;
	int64_t want = 0, sum = 0;
	char data[256], price[32], cat[32];

	for (size_t i = 0; i < MANY; i++) {
		int64_t c = item_cents(i, price, sizeof(price));
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"o1\", \"product_id\": \"p\", \"price\": %s, \"quantity\": 1}",
			 price);
		snprintf(cat, sizeof(cat), "T%zu", i);
		OK(orders, &op, i % 3 == 2 ? "OrderItemRemoved" : "OrderItemAdded", 9, (int64_t)i,
		   cat, data);
		want += (i % 3 == 2 ? -1 : 1) * c;
	}
	cr_expect_eq(op.kind, BULK_SCRIPT);
	cr_expect_eq(op.n_entries, MANY);
	r = render(&op);
	events = GET(r.source, "script", "params", "events");
	cr_assert(YAJL_IS_ARRAY(events) && events->u.array.len == MANY);
	for (size_t i = 0; i < MANY; i++) {
		yajl_val e = events->u.array.values[i], m = GET(e, "m", "total_amount");
		int64_t c = item_cents(i, price, sizeof(price));
		snprintf(cat, sizeof(cat), "T%zu", i);
		expect_int(GET(e, "t"), 9, "t");
		expect_int(GET(e, "p"), (long long)i, "p (entries in order)");
		expect_str(GET(e, "s", "updated_at"), cat, "updated_at");
		expect_int(GET(e, "i", "item_count"), i % 3 == 2 ? -1 : 1, "item_count");
		expect_int(m, (i % 3 == 2 ? -1 : 1) * c, "m.total_amount");
		sum += YAJL_GET_INTEGER(m);
	}
	cr_expect_eq(sum, want);
	cr_expect_null(strstr(body.data, "upsert"));
}

/* ================================================================== */
/* Limits of money */

/*
 * README "Validation": a price below 10^13 with at most two decimals, a
 * quantity up to 1,000,000, and price x quantity at most 10^13.
 */
Test(orders_limits, a_price_below_ten_to_the_13_is_accepted)
{
	OK(orders, &op, "OrderItemAdded", 1, 1, "T", O_ITEM("1000000000.00", "1"));
	OK(orders, &op, "OrderItemAdded", 1, 2, "T", O_ITEM("9999999999999.99", "1"));
}

Test(orders_limits, a_line_above_ten_to_the_13_is_rejected)
{
	OK(orders, &op, "OrderItemAdded", 1, 1, "T", O_ITEM("10000000.00", "1000000"));
	cr_expect_eq(feed(orders, &op, "OrderItemAdded", 1, 2, "T", O_ITEM("10000000.01", "1000000")),
		     PROJECTION_REJECT);
}

/*
 * The index fold sums items into an int64_t: lines of 10^15 cents overflow
 * it after about 9223 of them. Either the event that cannot be added
 * exactly is rejected, or the total is exact.
 */
Test(orders_limits, the_total_of_an_index_never_overflows)
{
	struct rendered r;
	bool rejected = false;
	int64_t i;

	OK(orders, &op, "OrderCreated", 1, 0, "T", O_CREATED);
	for (i = 1; i <= 10000 && !rejected; i++)
		rejected = feed(orders, &op, "OrderItemAdded", 1, i, "T",
				O_ITEM("10000000.00", "1000000")) == PROJECTION_REJECT;
	cr_assert(rejected, "10000 lines of 10^15 cents must not all be accepted");
	cr_expect_gt(i, 9000);
	r = render(&op);
	/* every accepted line (i - 2 of them) is in the total, exactly */
	{
		char want[64];
		snprintf(want, sizeof(want), "%lld0000000000000.00", (long long)(i - 2));
		expect_num_text(GET(r.source, "total_amount"), want, "total_amount");
	}
}

/* ================================================================== */
/* Poison: data of any shape, for every event type of every projection */

/*
 * The _id `data` names for the document of `slot`, or "none" (then doc_id
 * rejects it, or it touches no document there); freed by the caller.
 */
static char *poison_id(const struct projection *p, size_t slot, const char *type, const char *data)
{
	struct event ev = { .at = { 1, 1 }, .stream_id = "stream", .type = type, .data = data,
			    .data_len = strlen(data), .created_at = TS, .version = 1 };
	char *id;

	if (projection_doc_id(p, &ev, parse(data), slot, &idbuf, err, sizeof(err)) == 0)
		id = strdup(idbuf.data);
	else
		id = strdup("none");
	cr_assert_not_null(id);
	return id;
}

/*
 * Whatever the data, doc_id and apply answer 0 or PROJECTION_REJECT with a
 * reason (or, in an index the event touches nothing of, PROJECTION_SKIP),
 * and a rejection leaves the pending operation as it was: for every
 * projection of the registry, in each of its indices. The shapes are those
 * PostgreSQL's jsonb lets through (tests/data/poison has them in a real
 * history).
 */
Test(poison, any_shape_for_any_event_type)
{
	static const char *const shapes[] = {
		"[]", "[1, 2]", "\"a string\"", "42", "0", "null", "true", "{}",
		"{\"product_id\": null, \"order_id\": null}",
		"{\"product_id\": {\"a\": 1}, \"order_id\": [\"o1\"]}",
		"{\"product_id\": 1.5, \"order_id\": 1.5}",
		"{\"product_id\": 18446744073709551616, \"order_id\": 18446744073709551616}",
		"{\"product_id\": \"\", \"order_id\": \"\"}",
		/* a document the other projections find, with everything else wrong */
		"{\"customer_id\": \"c1\", \"product_id\": {}, \"order_id\": {},"
		" \"completed_at\": \"2026-01-01T00:00:00Z\", \"original_completed_at\": \"2026-01-01T00:00:00Z\","
		" \"total_amount\": \"1\", \"refund_amount\": [1], \"email\": 1, \"new_tier\": 1}",
		"{\"product_id\": \"p1\", \"order_id\": \"o1\", \"name\": [[[[[[[[1]]]]]]]],"
		" \"price\": {\"cents\": 1}, \"new_price\": [1], \"tags\": [[\"a\"]],"
		" \"customer_id\": {\"id\": 1}, \"product\": 1, \"quantity\": 1e400,"
		" \"created_at\": {}, \"shipped_at\": [], \"completed_at\": 1,"
		" \"cancelled_at\": false, \"reason\": {}}",
	};
	static const char *const extra_types[] = { "Unknown", "", "'; DROP TABLE events; --" };
	const size_t n_shapes = sizeof(shapes) / sizeof(shapes[0]);
	size_t n_projs = 0;

	for (const struct projection *const *pp = projection_registry; *pp; pp++) {
		const struct projection *pr = *pp;
		size_t n_types = 0;

		n_projs++;
		while (pr->event_types[n_types])
			n_types++;
		for (size_t slot = 0; slot < projection_n_indices(pr); slot++) {
			const char *alias = projection_alias(pr, slot);

			for (size_t t = 0; t < n_types + 3; t++) {
				const char *type = t < n_types ? pr->event_types[t] : extra_types[t - n_types];

				for (size_t k = 0; k < n_shapes; k++) {
					char *before, *after, *id = poison_id(pr, slot, type, shapes[k]);
					int rc;

					bulk_op_release(&op);
					memset(&op, 0, sizeof(op));
					cr_assert_eq(bulk_op_init(&op, id, strlen(id)), 0);
					op.slot = (unsigned)slot;
					free(id);
					before = snapshot(&op);
					rc = feed_in(pr, slot, &op, type, 1, 1, TS, shapes[k]);
					if (rc == PROJECTION_SKIP) {
						free(before);
						continue;
					}
					/* ProductDeleted reads only the id: the last shape is a delete */
					if (rc == 0) {
						cr_expect(!strcmp(type, "ProductDeleted") && k == n_shapes - 1,
							  "%s: %s %s accepted", alias, type, shapes[k]);
						free(before);
						continue;
					}
					cr_expect_eq(rc, PROJECTION_REJECT, "%s: %s %s answered %d", alias, type,
						     shapes[k], rc);
					cr_expect_neq(err[0], '\0', "%s: %s %s: no reason", alias, type, shapes[k]);
					/*
					 * Data that is not an object: the reason says so. Not
					 * yet everywhere (a finding, left as it is): daily_sales
					 * and customer_activity look at the type before the
					 * data, and daily_sales names its timestamp field.
					 */
					if (shapes[k][0] != '{' && (pr == products || pr == orders || strstr(err, "object")))
						cr_expect_not_null(strstr(err, "object"), "%s: %s %s: reason '%s'",
								   alias, type, shapes[k], err);
					else if (shapes[k][0] != '{' && t >= n_types)
						cr_expect_not_null(strstr(err, "unknown event type"), "%s: %s %s: reason '%s'",
								   alias, type, shapes[k], err);
					else if (shapes[k][0] != '{')
						cr_expect(!strcmp(pr->name, "daily_sales") &&
							  strstr(err, "must be a timestamp string"),
							  "%s: %s %s: reason '%s'", alias, type, shapes[k], err);
					after = snapshot(&op);
					cr_expect_str_eq(after, before, "%s: %s %s changed the operation", alias,
							 type, shapes[k]);
					free(before);
					free(after);
				}
			}
		}
	}
	cr_expect_geq(n_projs, 4, "the registry has %zu projections", n_projs);
}

/* ================================================================== */
/* The stored script */

Test(script, source_is_a_plain_string_that_round_trips)
{
	size_t n = strlen(bulk_script_source);
	yajl_gen g;
	const unsigned char *out;
	size_t out_len;
	char *json;
	yajl_val v;

	cr_assert_gt(n, 0);
	cr_expect_not_null(strstr(bulk_script_source, "last_event"));
	/* it reads what the renderer writes */
	cr_expect_not_null(strstr(bulk_script_source, "params.events"));
	cr_expect_not_null(strstr(bulk_script_source, "e.t"));
	cr_expect_not_null(strstr(bulk_script_source, "e.p"));
	cr_expect_not_null(strstr(bulk_script_source, "e.s"));
	cr_expect_not_null(strstr(bulk_script_source, "e.i"));
	cr_expect_not_null(strstr(bulk_script_source, "e.m"));
	cr_expect_not_null(strstr(bulk_script_source, "last_event.txid"));
	cr_expect_not_null(strstr(bulk_script_source, "last_event.position"));
	cr_expect_null(strchr(bulk_script_source, '"'), "a double quote in the script");
	cr_expect_null(strchr(bulk_script_source, '\\'), "a backslash in the script");
	for (size_t i = 0; i < n; i++)
		cr_expect((unsigned char)bulk_script_source[i] >= 0x20 &&
			  (unsigned char)bulk_script_source[i] < 0x7f,
			  "byte 0x%02x at %zu", (unsigned char)bulk_script_source[i], i);

	g = yajl_gen_alloc(NULL);
	cr_assert_not_null(g);
	cr_expect_eq(yajl_gen_config(g, yajl_gen_validate_utf8, 1), 1);
	cr_expect_eq(yajl_gen_map_open(g), yajl_gen_status_ok);
	cr_expect_eq(yajl_gen_string(g, (const unsigned char *)"source", 6), yajl_gen_status_ok);
	cr_expect_eq(yajl_gen_string(g, (const unsigned char *)bulk_script_source, n),
		     yajl_gen_status_ok);
	cr_expect_eq(yajl_gen_map_close(g), yajl_gen_status_ok);
	cr_expect_eq(yajl_gen_get_buf(g, &out, &out_len), yajl_gen_status_ok);
	json = strndup((const char *)out, out_len);
	yajl_gen_free(g);
	cr_assert_not_null(json);
	v = yajl_tree_parse(json, err, sizeof(err));
	free(json);
	cr_assert_not_null(v, "%s", err);
	keep(v);
	cr_assert(YAJL_IS_STRING(GET(v, "source")));
	cr_expect_eq(strlen(GET(v, "source")->u.string), n);
	cr_expect_str_eq(GET(v, "source")->u.string, bulk_script_source);
}
