/*
 * Unit tests of the _bulk wire format (src/bulk.c): the NDJSON body that
 * bulk_write_op renders, checked by parsing every line back with yajl, and
 * the reading of _bulk responses, from the samples in tests/data/bulk/.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <yajl/yajl_tree.h>

#include "esbridge/bulk.h"
#include "esbridge/event.h"

#include "support.h"

/* Sample responses; run from the top of the tree, as `make unit` does. */
#define DATA_DIR "tests/data/bulk"

/* ------------------------------------------------------------------ */
/* Fixture: a body, a few operations and parsed trees, all released in
 * the teardown, even after a failed assertion. */

static struct buf body;
static struct bulk_op ops[4];
static yajl_val trees[16];
static size_t n_trees;

/* Frees the trees parsed so far (for tests that loop over many cases). */
static void free_trees(void)
{
	for (size_t i = 0; i < n_trees; i++)
		yajl_tree_free(trees[i]);
	n_trees = 0;
}

static void setup(void)
{
	buf_init(&body, (size_t)1 << 20);
	memset(ops, 0, sizeof(ops));
	n_trees = 0;
}

static void teardown(void)
{
	cr_expect_not_null(body.data);
	if (body.data)
		cr_expect_eq(body.data[body.len], '\0', "the body is NUL-terminated");
	buf_release(&body);
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		bulk_op_release(&ops[i]);
	free_trees();
	test_leak_check();
}

TestSuite(bulk_body, .init = setup, .fini = teardown);
TestSuite(bulk_response, .init = setup, .fini = teardown);

/* Parses `len` bytes of JSON; the tree is freed in the teardown. */
static yajl_val parse_json(const char *text, size_t len)
{
	char err[256] = "";
	char *copy = malloc(len + 1);
	yajl_val v;

	cr_assert_not_null(copy);
	memcpy(copy, text, len);
	copy[len] = '\0';
	v = yajl_tree_parse(copy, err, sizeof(err));
	cr_assert_not_null(v, "not JSON: %s\n%s", copy, err);
	free(copy);
	cr_assert_lt(n_trees, sizeof(trees) / sizeof(trees[0]));
	trees[n_trees++] = v;
	return v;
}

static yajl_val get(yajl_val v, const char *k1, const char *k2)
{
	const char *path[] = { k1, k2, NULL };
	return yajl_tree_get(v, path, yajl_t_any);
}

/*
 * Splits the body into its lines: every line ends in '\n', none is empty
 * and none holds another raw control character. Returns the number of
 * lines; `line[i]`, `line_len[i]` (without the '\n') describe them.
 */
#define MAX_LINES 16
static const char *line[MAX_LINES];
static size_t line_len[MAX_LINES];

static size_t split_body(void)
{
	size_t n = 0, start = 0;

	cr_assert_eq(strlen(body.data), body.len, "the body holds a NUL byte");
	for (size_t i = 0; i < body.len; i++) {
		unsigned char c = (unsigned char)body.data[i];
		if (c != '\n') {
			cr_assert_geq(c, 0x20, "raw control byte 0x%02x at %zu", c, i);
			continue;
		}
		cr_assert_gt(i, start, "empty line at %zu", i);
		cr_assert_lt(n, MAX_LINES);
		line[n] = body.data + start;
		line_len[n] = i - start;
		n++;
		start = i + 1;
	}
	cr_assert_eq(start, body.len, "the body does not end in '\\n': %s", body.data);
	return n;
}

/* Parses line `i` (0-based) of the body. */
static yajl_val parse_line(size_t i)
{
	return parse_json(line[i], line_len[i]);
}

static void expect_string(yajl_val v, const char *want, const char *what)
{
	cr_assert(YAJL_IS_STRING(v), "%s is not a string", what);
	cr_expect_eq(strlen(v->u.string), strlen(want), "%s: length %zu, want %zu", what,
		     strlen(v->u.string), strlen(want));
	cr_expect_str_eq(v->u.string, want, "%s", what);
}

/* A number whose text is exactly `want`. */
static void expect_number_text(yajl_val v, const char *want, const char *what)
{
	cr_assert(YAJL_IS_NUMBER(v), "%s is not a number", what);
	cr_expect_str_eq(v->u.number.r, want, "%s", what);
}

static void op_init(struct bulk_op *op, const char *id, enum bulk_kind kind)
{
	cr_assert_eq(bulk_op_init(op, id, strlen(id)), 0);
	op->kind = kind;
}

static void set_string(struct bulk_op *op, const char *name, const char *s)
{
	struct bulk_value v = { .kind = BV_STRING, .u.string = (char *)(uintptr_t)s };
	cr_assert_eq(bulk_op_set(op, name, v), 0);
}

static void set_int(struct bulk_op *op, const char *name, long long i)
{
	struct bulk_value v = { .kind = BV_INT, .u.i = i };
	cr_assert_eq(bulk_op_set(op, name, v), 0);
}

static void set_cents(struct bulk_op *op, const char *name, int64_t c)
{
	struct bulk_value v = { .kind = BV_CENTS, .u.cents = c };
	cr_assert_eq(bulk_op_set(op, name, v), 0);
}

static void set_json(struct bulk_op *op, const char *name, yajl_val j)
{
	struct bulk_value v = { .kind = BV_JSON, .u.json = j };
	cr_assert_eq(bulk_op_set(op, name, v), 0);
}

static void set_null(struct bulk_op *op, const char *name)
{
	struct bulk_value v = { .kind = BV_NULL };
	cr_assert_eq(bulk_op_set(op, name, v), 0);
}

static void write_ok(const struct bulk_op *op)
{
	char err[256] = "";
	cr_assert_eq(bulk_write_op(&body, op, err, sizeof(err)), 0, "bulk_write_op: %s", err);
}

static void expect_one_line(const char *msg)
{
	cr_expect_neq(msg[0], '\0', "empty error message");
	cr_expect_null(strchr(msg, '\n'), "error message on several lines: %s", msg);
}

/* ------------------------------------------------------------------ */
/* The request body */

Test(bulk_body, index_op)
{
	yajl_val a, s;

	op_init(&ops[0], "p-1", BULK_INDEX);
	set_string(&ops[0], "name", "Widget");
	set_int(&ops[0], "qty", 3);
	set_cents(&ops[0], "price", 1990);
	set_null(&ops[0], "note");
	write_ok(&ops[0]);

	cr_expect_str_eq(body.data,
			 "{\"index\":{\"_id\":\"p-1\"}}\n"
			 "{\"name\":\"Widget\",\"qty\":3,\"price\":19.90,\"note\":null}\n");
	cr_assert_eq(split_body(), 2);
	a = parse_line(0);
	cr_expect_eq(a->u.object.len, 1);
	expect_string(get(a, "index", "_id"), "p-1", "_id");
	s = parse_line(1);
	cr_expect_eq(s->u.object.len, 4);
	expect_string(get(s, "name", NULL), "Widget", "name");
	cr_expect(YAJL_IS_INTEGER(get(s, "qty", NULL)) && YAJL_GET_INTEGER(get(s, "qty", NULL)) == 3);
	expect_number_text(get(s, "price", NULL), "19.90", "price");
	cr_expect(YAJL_IS_NULL(get(s, "note", NULL)));
}

Test(bulk_body, update_op_is_a_doc_as_upsert)
{
	yajl_val s, doc, up;

	op_init(&ops[0], "p-1", BULK_UPDATE);
	set_int(&ops[0], "qty", 4);
	set_string(&ops[0], "name", "W");
	write_ok(&ops[0]);

	cr_expect_str_eq(body.data,
			 "{\"update\":{\"_id\":\"p-1\",\"retry_on_conflict\":3}}\n"
			 "{\"doc\":{\"qty\":4,\"name\":\"W\"},\"doc_as_upsert\":true}\n");
	cr_assert_eq(split_body(), 2);
	expect_string(get(parse_line(0), "update", "_id"), "p-1", "_id");
	s = parse_line(1);
	cr_expect_eq(s->u.object.len, 2, "only doc and doc_as_upsert");
	doc = get(s, "doc", NULL);
	cr_assert(YAJL_IS_OBJECT(doc));
	cr_expect_eq(doc->u.object.len, 2);
	cr_expect_eq(YAJL_GET_INTEGER(get(doc, "qty", NULL)), 4);
	expect_string(get(doc, "name", NULL), "W", "doc.name");
	up = get(s, "doc_as_upsert", NULL);
	cr_expect(YAJL_IS_TRUE(up), "doc_as_upsert is true");
}

Test(bulk_body, ops_without_fields)
{
	op_init(&ops[0], "a", BULK_INDEX);
	op_init(&ops[1], "b", BULK_UPDATE);
	write_ok(&ops[0]);
	write_ok(&ops[1]);
	cr_expect_str_eq(body.data,
			 "{\"index\":{\"_id\":\"a\"}}\n{}\n"
			 "{\"update\":{\"_id\":\"b\",\"retry_on_conflict\":3}}\n{\"doc\":{},\"doc_as_upsert\":true}\n");
}

Test(bulk_body, delete_op_has_no_source_line)
{
	op_init(&ops[0], "p-9", BULK_DELETE);
	set_string(&ops[0], "ignored", "x");
	write_ok(&ops[0]);
	cr_expect_str_eq(body.data, "{\"delete\":{\"_id\":\"p-9\"}}\n");
	cr_assert_eq(split_body(), 1);
	expect_string(get(parse_line(0), "delete", "_id"), "p-9", "_id");
}

Test(bulk_body, none_op_writes_nothing)
{
	char err[64] = "untouched";

	cr_assert_eq(buf_append_str(&body, "{\"delete\":{\"_id\":\"z\"}}\n"), BUF_OK);
	op_init(&ops[0], "p-1", BULK_NONE);
	set_int(&ops[0], "qty", 1);
	cr_expect_eq(bulk_write_op(&body, &ops[0], err, sizeof(err)), 0);
	cr_expect_str_eq(body.data, "{\"delete\":{\"_id\":\"z\"}}\n");
	cr_expect_str_eq(err, "untouched");
}

Test(bulk_body, unknown_kind_is_an_error)
{
	char err[128] = "";

	op_init(&ops[0], "p-1", (enum bulk_kind)42);
	cr_expect_eq(bulk_write_op(&body, &ops[0], err, sizeof(err)), -1);
	cr_expect_str_eq(body.data, "");
	expect_one_line(err);
}

Test(bulk_body, ops_are_appended_in_order)
{
	op_init(&ops[0], "p-1", BULK_INDEX);
	set_int(&ops[0], "n", 1);
	op_init(&ops[1], "p-2", BULK_DELETE);
	op_init(&ops[2], "p-3", BULK_UPDATE);
	set_int(&ops[2], "n", 3);
	write_ok(&ops[0]);
	write_ok(&ops[1]);
	write_ok(&ops[2]);

	cr_assert_eq(split_body(), 5);
	expect_string(get(parse_line(0), "index", "_id"), "p-1", "line 1");
	cr_expect_eq(YAJL_GET_INTEGER(get(parse_line(1), "n", NULL)), 1);
	expect_string(get(parse_line(2), "delete", "_id"), "p-2", "line 3");
	expect_string(get(parse_line(3), "update", "_id"), "p-3", "line 4");
	cr_expect_eq(YAJL_GET_INTEGER(get(parse_line(4), "doc", "n")), 3);
}

/* Strings that need escaping, or that must pass through as they are. */
static const char *const tricky[] = {
	"plain",
	"",
	"say \"hi\"",
	"back\\slash \\\" \\n",
	"ctl \x01 \x1f \x7f",
	"tab\there",
	"line\nbreak\r\n",
	"\b\f",
	"a/b</script>",
	"caf\xc3\xa9",                         /* é */
	"\xe6\x97\xa5\xe6\x9c\xac",             /* 日本 */
	"emoji \xf0\x9f\x98\x80!",              /* 😀 */
	"\xe2\x80\xa8 \xef\xbb\xbf",            /* U+2028, BOM */
	"\n{\"delete\":{\"_id\":\"x\"}}\n",
};

Test(bulk_body, strings_round_trip_in_values_ids_and_names)
{
	for (size_t i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
		const char *s = tricky[i];
		yajl_val src;

		buf_reset(&body);
		bulk_op_release(&ops[0]);
		op_init(&ops[0], s, BULK_INDEX);
		set_string(&ops[0], "v", s);
		set_string(&ops[0], s, "as a name");
		write_ok(&ops[0]);

		cr_assert_eq(split_body(), 2, "case %zu: %s", i, body.data);
		expect_string(get(parse_line(0), "index", "_id"), s, "_id");
		src = parse_line(1);
		cr_assert(YAJL_IS_OBJECT(src));
		cr_assert_eq(src->u.object.len, 2, "case %zu", i);
		expect_string(get(src, "v", NULL), s, "value");
		cr_expect_str_eq(src->u.object.keys[1], s, "name, case %zu", i);
		free_trees(); /* many cases, few tree slots */
	}
}

Test(bulk_body, escapes_are_json_escapes)
{
	op_init(&ops[0], "i", BULK_INDEX);
	set_string(&ops[0], "v", "q\"b\\s\x01t\tn\n");
	write_ok(&ops[0]);
	cr_expect_str_eq(body.data,
			 "{\"index\":{\"_id\":\"i\"}}\n"
			 "{\"v\":\"q\\\"b\\\\s\\u0001t\\tn\\n\"}\n");
}

Test(bulk_body, a_value_cannot_inject_an_action)
{
	static const char evil[] = "\n{\"delete\":{\"_id\":\"x\"}}\n";
	yajl_val src;

	op_init(&ops[0], "p-1", BULK_INDEX);
	set_string(&ops[0], "name", evil);
	write_ok(&ops[0]);
	cr_assert_eq(split_body(), 2, "the value escaped its string: %s", body.data);
	cr_expect_null(strstr(body.data, "\n{\"delete\""));
	src = parse_line(1);
	cr_expect_eq(src->u.object.len, 1);
	expect_string(get(src, "name", NULL), evil, "name");
}

/* Writes `op`, expecting an error and the body exactly as it was. */
static void expect_rejected(const struct bulk_op *op, const char *what)
{
	char err[256] = "";
	size_t len = body.len;
	char *before = strdup(body.data);

	cr_assert_not_null(before);
	cr_expect_eq(bulk_write_op(&body, op, err, sizeof(err)), -1, "%s accepted", what);
	expect_one_line(err);
	cr_expect_not_null(strstr(err, "UTF-8"), "%s: %s", what, err);
	cr_expect_eq(body.len, len, "%s: the body changed length", what);
	cr_expect_str_eq(body.data, before, "%s: the body changed", what);
	cr_expect_eq(buf_error(&body), BUF_OK);
	free(before);
}

Test(bulk_body, invalid_utf8_is_rejected_and_the_body_kept)
{
	static const char *const bad[] = {
		"bad \xff byte",
		"truncated \xc3",
		"lone \x80 continuation",
		"cut \xe6\x97",
		"\xf0\x9f\x98",
	};

	/* into an empty body, then after a valid operation */
	for (int round = 0; round < 2; round++) {
		if (round == 1) {
			op_init(&ops[3], "keep", BULK_INDEX);
			set_string(&ops[3], "v", "caf\xc3\xa9");
			write_ok(&ops[3]);
		}
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			bulk_op_release(&ops[0]);
			op_init(&ops[0], "p-1", BULK_INDEX);
			set_string(&ops[0], "ok", "fine");
			set_string(&ops[0], "v", bad[i]);
			expect_rejected(&ops[0], "a value");

			bulk_op_release(&ops[0]);
			op_init(&ops[0], "p-1", BULK_UPDATE);
			set_string(&ops[0], bad[i], "x");
			expect_rejected(&ops[0], "a field name");

			bulk_op_release(&ops[0]);
			op_init(&ops[0], bad[i], BULK_DELETE);
			expect_rejected(&ops[0], "an id");
		}
	}
	/* the body is still usable and valid */
	op_init(&ops[1], "next", BULK_DELETE);
	write_ok(&ops[1]);
	cr_assert_eq(split_body(), 3);
	expect_string(get(parse_line(1), "v", NULL), "caf\xc3\xa9", "kept value");
	expect_string(get(parse_line(2), "delete", "_id"), "next", "_id");
}

Test(bulk_body, cents_are_written_as_decimals)
{
	static const struct {
		int64_t cents;
		const char *text;
	} cases[] = {
		{ 0, "0.00" },
		{ 5, "0.05" },
		{ -5, "-0.05" },
		{ 99, "0.99" },
		{ 100, "1.00" },
		{ -100, "-1.00" },
		{ 1990, "19.90" },
		{ 123456, "1234.56" },
		{ -123456, "-1234.56" },
		{ INT64_MAX, "92233720368547758.07" },
		{ INT64_MIN, "-92233720368547758.08" },
		{ INT64_MIN + 1, "-92233720368547758.07" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[64];
		yajl_val src;

		buf_reset(&body);
		bulk_op_release(&ops[0]);
		op_init(&ops[0], "c", BULK_INDEX);
		set_cents(&ops[0], "price", cases[i].cents);
		write_ok(&ops[0]);
		snprintf(want, sizeof(want), "{\"index\":{\"_id\":\"c\"}}\n{\"price\":%s}\n", cases[i].text);
		cr_expect_str_eq(body.data, want);
		cr_assert_eq(split_body(), 2);
		src = parse_line(1);
		expect_number_text(get(src, "price", NULL), cases[i].text, cases[i].text);
		free_trees();
	}
}

Test(bulk_body, whole_numbers_at_the_extremes)
{
	op_init(&ops[0], "i", BULK_INDEX);
	set_int(&ops[0], "max", LLONG_MAX);
	set_int(&ops[0], "min", LLONG_MIN);
	set_int(&ops[0], "zero", 0);
	set_int(&ops[0], "neg", -1);
	write_ok(&ops[0]);
	cr_expect_str_eq(body.data,
			 "{\"index\":{\"_id\":\"i\"}}\n"
			 "{\"max\":9223372036854775807,\"min\":-9223372036854775808,\"zero\":0,\"neg\":-1}\n");
}

/*
 * BV_JSON values come from an event's parsed tree and are written back
 * as they are: numbers keep their exact text (19.90 stays 19.90). yajl_tree
 * keeps the text of every number, even of one outside the range of a double
 * (1e400: neither YAJL_IS_DOUBLE nor YAJL_IS_INTEGER) or of a long long;
 * such a number passes through verbatim and Elasticsearch decides.
 */
Test(bulk_body, json_values_keep_their_exact_text)
{
	static const char event[] =
		"{\"price\":19.90,\"big\":1e400,\"tiny\":1E-400,"
		"\"huge\":123456789012345678901234567890,\"neg\":-0.0,"
		"\"s\":\"caf\\u00e9 \\\"q\\\" \\u65e5\",\"arr\":[1,\"two\",null,true,false,{\"k\":[]}],"
		"\"obj\":{},\"deep\":{\"a\":{\"b\":[2.50]}}}";
	static const char *const want_src =
		"{\"price\":19.90,\"big\":1e400,\"tiny\":1E-400,"
		"\"huge\":123456789012345678901234567890,\"neg\":-0.0,"
		"\"s\":\"caf\xc3\xa9 \\\"q\\\" \xe6\x97\xa5\",\"arr\":[1,\"two\",null,true,false,{\"k\":[]}],"
		"\"obj\":{},\"deep\":{\"a\":{\"b\":[2.50]}},\"none\":null}\n";
	yajl_val tree = parse_json(event, strlen(event)), src, big;

	cr_assert(YAJL_IS_OBJECT(tree));
	op_init(&ops[0], "e", BULK_INDEX);
	for (size_t i = 0; i < tree->u.object.len; i++)
		set_json(&ops[0], tree->u.object.keys[i], tree->u.object.values[i]);
	set_json(&ops[0], "none", NULL);
	write_ok(&ops[0]);

	cr_assert_eq(split_body(), 2);
	cr_expect_str_eq(line[1], want_src);
	src = parse_line(1);
	expect_number_text(get(src, "price", NULL), "19.90", "price");
	big = get(src, "big", NULL);
	expect_number_text(big, "1e400", "big");
	cr_expect(!YAJL_IS_DOUBLE(big) && !YAJL_IS_INTEGER(big), "1e400 is no double");
	expect_number_text(get(src, "tiny", NULL), "1E-400", "tiny");
	expect_number_text(get(src, "huge", NULL), "123456789012345678901234567890", "huge");
	expect_number_text(get(src, "neg", NULL), "-0.0", "neg");
	expect_string(get(src, "s", NULL), "caf\xc3\xa9 \"q\" \xe6\x97\xa5", "s");
	cr_expect(YAJL_IS_NULL(get(src, "none", NULL)));
}

Test(bulk_body, json_object_inside_an_update)
{
	static const char event[] = "{\"dims\":{\"w\":1.50,\"h\":2}}";
	yajl_val tree = parse_json(event, strlen(event));

	op_init(&ops[0], "u", BULK_UPDATE);
	set_json(&ops[0], "dims", get(tree, "dims", NULL));
	write_ok(&ops[0]);
	cr_expect_str_eq(body.data,
			 "{\"update\":{\"_id\":\"u\",\"retry_on_conflict\":3}}\n"
			 "{\"doc\":{\"dims\":{\"w\":1.50,\"h\":2}},\"doc_as_upsert\":true}\n");
}

Test(bulk_body, set_replaces_and_keeps_order)
{
	static const char *const names[] = {
		"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9",
		"f10", "f11", "f12", "f13", "f14", "f15", "f16", "f17", "f18", "f19",
	};
	struct bulk_value *v;
	yajl_val src;

	op_init(&ops[0], "o", BULK_INDEX);
	cr_expect_null(bulk_op_get(&ops[0], "f0"));
	for (int i = 0; i < 20; i++)
		set_int(&ops[0], names[i], i);
	set_string(&ops[0], "f3", "replaced");   /* string over an int */
	set_int(&ops[0], "f5", 500);
	set_string(&ops[0], "f5", "s1");
	set_string(&ops[0], "f5", "s2");          /* string over a string */
	cr_expect_eq(ops[0].n_fields, 20);
	v = bulk_op_get(&ops[0], "f3");
	cr_assert_not_null(v);
	cr_expect_eq(v->kind, BV_STRING);
	cr_expect_str_eq(v->u.string, "replaced");
	cr_expect_null(bulk_op_get(&ops[0], "f20"));
	write_ok(&ops[0]);

	cr_assert_eq(split_body(), 2);
	src = parse_line(1);
	cr_assert_eq(src->u.object.len, 20);
	for (size_t i = 0; i < 20; i++)
		cr_expect_str_eq(src->u.object.keys[i], names[i], "field %zu out of order", i);
	expect_string(get(src, "f3", NULL), "replaced", "f3");
	expect_string(get(src, "f5", NULL), "s2", "f5");
	cr_expect_eq(YAJL_GET_INTEGER(get(src, "f19", NULL)), 19);

	bulk_op_clear_fields(&ops[0]);
	cr_expect_eq(ops[0].n_fields, 0);
	cr_expect_eq(ops[0].kind, BULK_INDEX, "clearing fields keeps the kind");
}

Test(bulk_body, set_copies_strings)
{
	char s[] = "original";
	struct bulk_value *v;

	op_init(&ops[0], "o", BULK_INDEX);
	set_string(&ops[0], "s", s);
	s[0] = 'X';
	v = bulk_op_get(&ops[0], "s");
	cr_assert_not_null(v);
	cr_expect_neq(v->u.string, s);
	cr_expect_str_eq(v->u.string, "original");
}

Test(bulk_body, op_id_is_copied_with_its_length)
{
	static const char id[] = "p-12345";

	cr_assert_eq(bulk_op_init(&ops[0], id, 3), 0);
	cr_expect_str_eq(ops[0].id, "p-1");
	cr_expect_neq(ops[0].id, id);
}

Test(bulk_body, events_are_noted_in_order)
{
	op_init(&ops[0], "o", BULK_INDEX);
	for (int i = 0; i < 10; i++) {
		struct position at = { .txid = 100 + (uint64_t)i, .pos = i };
		cr_assert_eq(bulk_op_note_event(&ops[0], at), 0);
	}
	cr_assert_eq(ops[0].n_events, 10);
	for (int i = 0; i < 10; i++) {
		cr_expect_eq(ops[0].events[i].txid, 100 + (uint64_t)i);
		cr_expect_eq(ops[0].events[i].pos, i);
	}
}

Test(bulk_body, body_limit_is_exact)
{
	static const char want[] =
		"{\"index\":{\"_id\":\"p-1\"}}\n{\"name\":\"Widget\",\"qty\":3}\n";

	op_init(&ops[0], "p-1", BULK_INDEX);
	set_string(&ops[0], "name", "Widget");
	set_int(&ops[0], "qty", 3);

	buf_init(&body, strlen(want));
	write_ok(&ops[0]);
	cr_expect_str_eq(body.data, want);
	buf_release(&body);

	buf_init(&body, strlen(want) - 1);
	{
		char err[256] = "";
		cr_expect_eq(bulk_write_op(&body, &ops[0], err, sizeof(err)), -1);
		expect_one_line(err);
		cr_expect_not_null(strstr(err, "too large"), "%s", err);
	}
}

Test(bulk_body, a_full_body_fails_cleanly_and_stays_failed)
{
	char err[256] = "";

	buf_init(&body, 30);
	op_init(&ops[0], "a", BULK_DELETE);             /* 23 bytes */
	op_init(&ops[1], "p-1", BULK_INDEX);
	set_string(&ops[1], "name", "a name too long for the limit");
	write_ok(&ops[0]);
	cr_expect_eq(body.len, 23);

	cr_expect_eq(bulk_write_op(&body, &ops[1], err, sizeof(err)), -1);
	expect_one_line(err);
	cr_expect_not_null(strstr(err, "p-1"), "names the document: %s", err);
	cr_expect_not_null(strstr(err, "too large"), "%s", err);
	cr_expect_eq(buf_error(&body), BUF_TOO_LARGE);
	cr_expect_eq(body.len, 0, "the failed body is dropped whole");

	/* sticky: even an operation that would fit now fails */
	err[0] = '\0';
	cr_expect_eq(bulk_write_op(&body, &ops[0], err, sizeof(err)), -1);
	cr_expect_not_null(strstr(err, "too large"), "%s", err);
	cr_expect_eq(body.len, 0);

	buf_reset(&body);
	write_ok(&ops[0]);
	cr_expect_str_eq(body.data, "{\"delete\":{\"_id\":\"a\"}}\n");
}

/* ------------------------------------------------------------------ */
/* _bulk responses */

/* Reads tests/data/bulk/NAME; freed by the caller. */
static char *slurp(const char *name, size_t *len)
{
	char path[512];
	FILE *f;
	char *data = NULL;
	size_t cap = 0, n = 0;

	snprintf(path, sizeof(path), "%s/%s", DATA_DIR, name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s (run from the top of the tree)", path);
	for (;;) {
		size_t got;
		if (n + 4096 > cap) {
			char *p = realloc(data, cap = n + 8192);
			cr_assert_not_null(p);
			data = p;
		}
		got = fread(data + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	fclose(f);
	*len = n;
	return data;
}

static void parse_file(const char *name, struct bulk_response *r)
{
	char err[256] = "";
	size_t len;
	char *data = slurp(name, &len);
	int rc = bulk_response_parse(data, len, r, err, sizeof(err));

	free(data);
	cr_assert_eq(rc, 0, "%s: %s", name, err);
}

Test(bulk_response, all_ok)
{
	static const int want[] = { 201, 200, 200, 201, 200 };
	struct bulk_response r;

	parse_file("all_ok.json", &r);
	cr_expect_eq(r.errors, false);
	cr_assert_eq(r.n_items, 5);
	for (size_t i = 0; i < 5; i++) {
		cr_expect_eq(r.items[i].status, want[i], "item %zu", i);
		cr_expect_str_eq(r.items[i].error_type, "");
		cr_expect_str_eq(r.items[i].error_reason, "");
		cr_expect_eq(bulk_item_outcome(&r.items[i]), BULK_ITEM_OK, "item %zu", i);
	}
	bulk_response_release(&r);
	cr_expect_null(r.items);
	cr_expect_eq(r.n_items, 0);
}

/* "result":"noop" is told apart (esbridge counts no-ops itself: Elasticsearch
 * before 8.14 leaves those of _bulk out of its indexing stats). */
Test(bulk_response, noop_results)
{
	static const struct {
		int status;
		bool noop;
	} want[] = { { 200, true }, { 200, false }, { 201, false }, { 404, false }, { 201, false }, { 200, false } };
	struct bulk_response r;

	parse_file("results.json", &r);
	cr_expect_eq(r.errors, false);
	cr_assert_eq(r.n_items, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < r.n_items; i++) {
		cr_expect_eq(r.items[i].status, want[i].status, "item %zu", i);
		cr_expect_eq(r.items[i].noop, want[i].noop, "item %zu", i);
		cr_expect_eq(bulk_item_outcome(&r.items[i]), BULK_ITEM_OK, "item %zu", i);
	}
	bulk_response_release(&r);
}

Test(bulk_response, mixed_item_errors)
{
	static const struct {
		int status;
		const char *type, *reason;
		enum bulk_outcome outcome;
	} want[] = {
		{ 201, "", "", BULK_ITEM_OK },
		{ 400, "document_parsing_exception",
		  "[1:10] failed to parse field [price] of type [scaled_float] in document with id 'p-2'. "
		  "Preview of field's value: 'abc'", BULK_ITEM_REJECT },
		{ 429, "es_rejected_execution_exception",
		  "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, "
		  "replica_bytes=0, all_bytes=0, coordinating_operation_bytes=13631488, "
		  "max_coordinating_and_primary_bytes=13421772]", BULK_ITEM_RETRY },
		{ 409, "version_conflict_engine_exception",
		  "[p-4]: version conflict, document already exists (current version [3])", BULK_ITEM_RETRY },
		{ 404, "", "", BULK_ITEM_OK },   /* delete of a missing document */
		{ 404, "document_missing_exception", "[p-6]: document missing", BULK_ITEM_REJECT },
		{ 503, "unavailable_shards_exception",
		  "[products][0] primary shard is not active Timeout: [1m], request: "
		  "[BulkShardRequest [[products][0]] containing [1] requests]", BULK_ITEM_RETRY },
		{ 200, "", "", BULK_ITEM_OK },
	};
	struct bulk_response r;

	parse_file("mixed.json", &r);
	cr_expect_eq(r.errors, true);
	cr_assert_eq(r.n_items, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < r.n_items; i++) {
		cr_expect_eq(r.items[i].status, want[i].status, "item %zu", i);
		cr_expect_str_eq(r.items[i].error_type, want[i].type, "item %zu", i);
		cr_expect_str_eq(r.items[i].error_reason, want[i].reason, "item %zu", i);
		cr_expect_eq(bulk_item_outcome(&r.items[i]), want[i].outcome, "item %zu", i);
	}
	bulk_response_release(&r);
}

Test(bulk_response, malformed_responses_are_errors)
{
	static const struct {
		const char *file, *msg;
	} cases[] = {
		{ "bad_not_json.html", "invalid JSON at byte 0: unexpected character" },
		{ "bad_truncated.json", "invalid JSON at byte 49: expected" },
		{ "bad_empty.json", "unexpected end" },
		{ "bad_not_object.json", "not an object" },
		{ "bad_empty_object.json", "no 'errors' flag" },
		{ "bad_no_errors_flag.json", "no 'errors' flag" },
		{ "bad_errors_not_bool.json", "no 'errors' flag" },
		{ "bad_request_error.json", "no 'errors' flag" },
		{ "bad_errors_without_items.json", "errors without items" },
		{ "bad_errors_with_empty_items.json", "errors without items" },
		{ "bad_item_without_status.json", "item 1 has no status" },
		{ "bad_item_status_string.json", "item 0 has no status" },
		{ "bad_item_two_actions.json", "item 1 is malformed" },
		{ "bad_item_not_object.json", "item 2 is malformed" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bulk_response r;
		char err[256] = "";
		size_t len;
		char *data = slurp(cases[i].file, &len);
		int rc = bulk_response_parse(data, len, &r, err, sizeof(err));

		free(data);
		cr_expect_eq(rc, -1, "%s accepted", cases[i].file);
		cr_expect_null(r.items, "%s", cases[i].file);
		cr_expect_eq(r.n_items, 0, "%s", cases[i].file);
		expect_one_line(err);
		cr_expect_eq(strncmp(err, "unreadable _bulk response: ", 27), 0, "%s: %s", cases[i].file, err);
		cr_expect_not_null(strstr(err, cases[i].msg), "%s: '%s' lacks '%s'", cases[i].file, err,
				   cases[i].msg);
		if (rc == 0)
			bulk_response_release(&r);
	}
}

Test(bulk_response, status_must_be_a_whole_number)
{
	static const char text[] = "{\"errors\":false,\"items\":[{\"index\":{\"status\":201.5}}]}";
	struct bulk_response r;
	char err[256] = "";

	cr_expect_eq(bulk_response_parse(text, strlen(text), &r, err, sizeof(err)), -1);
	cr_expect_not_null(strstr(err, "item 0 has no status"), "%s", err);
}

/*
 * A status that is no HTTP status is unreadable, not cast: (int)4294967496
 * is 200, which would settle an action that was never applied (found by
 * tests/fuzz/fuzz_bulk_response).
 */
Test(bulk_response, status_must_be_an_http_status)
{
	static const char *const bad[] = { "4294967496", "-4294967096", "99", "600", "0", "-200",
					   "9223372036854775807" };
	static const char *const good[] = { "100", "200", "599" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256], err[256] = "";
		struct bulk_response r;

		snprintf(text, sizeof(text),
			 "{\"errors\":false,\"items\":[{\"index\":{\"status\":201}},"
			 "{\"index\":{\"status\":%s}}]}", bad[i]);
		cr_expect_eq(bulk_response_parse(text, strlen(text), &r, err, sizeof(err)), -1,
			     "status %s accepted", bad[i]);
		cr_expect_null(r.items);
		cr_expect_eq(r.n_items, 0);
		expect_one_line(err);
		cr_expect_not_null(strstr(err, "item 1 has status"), "%s: %s", bad[i], err);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char text[256], err[256] = "";
		struct bulk_response r;

		snprintf(text, sizeof(text), "{\"errors\":false,\"items\":[{\"index\":{\"status\":%s}}]}",
			 good[i]);
		cr_assert_eq(bulk_response_parse(text, strlen(text), &r, err, sizeof(err)), 0, "%s: %s",
			     good[i], err);
		cr_expect_eq(r.items[0].status, atoi(good[i]));
		bulk_response_release(&r);
	}
}

Test(bulk_response, reads_only_len_bytes)
{
	static const char text[] = "{\"errors\":false,\"items\":[{\"delete\":{\"status\":200}}]}GARBAGE";
	struct bulk_response r;
	char err[256] = "";

	cr_assert_eq(bulk_response_parse(text, strlen(text) - 7, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.n_items, 1);
	cr_expect_eq(r.items[0].status, 200);
	bulk_response_release(&r);
}

Test(bulk_response, long_error_texts_are_cut)
{
	char type[200], reason[1000], text[1500];
	struct bulk_response r;
	char err[256] = "";

	memset(type, 't', sizeof(type) - 1);
	type[sizeof(type) - 1] = '\0';
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	snprintf(text, sizeof(text),
		 "{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":{\"type\":\"%s\",\"reason\":\"%s\"}}}]}",
		 type, reason);
	cr_assert_eq(bulk_response_parse(text, strlen(text), &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.n_items, 1);
	cr_expect_eq(strlen(r.items[0].error_type), sizeof(r.items[0].error_type) - 1);
	cr_expect_eq(strlen(r.items[0].error_reason), sizeof(r.items[0].error_reason) - 1);
	cr_expect_eq(strspn(r.items[0].error_reason, "r"), sizeof(r.items[0].error_reason) - 1);
	cr_expect_eq(bulk_item_outcome(&r.items[0]), BULK_ITEM_REJECT);
	bulk_response_release(&r);
}

/*
 * Error texts become dead letter rows (PostgreSQL text) and log lines: a cut
 * must fall between characters, never inside one (found by
 * tests/fuzz/fuzz_bulk_response).
 */
Test(bulk_response, long_error_texts_are_cut_between_characters)
{
	/* "\u00e9" is 2 bytes, "\u20ac" 3, "\ud83d\ude00" 4: every cut offset gets a split character */
	static const char *const chars[] = { "\\u00e9", "\\u20ac", "\\ud83d\\ude00" };
	static const size_t width[] = { 2, 3, 4 };

	for (size_t c = 0; c < 3; c++) {
		for (size_t lead = 0; lead < 4; lead++) {
			char reason[2000] = "", text[4200];
			struct bulk_response r;
			char err[256] = "";
			size_t n, want;

			memset(reason, 'r', lead);
			for (size_t k = 0; k < 140; k++)
				strcat(reason, chars[c]);
			snprintf(text, sizeof(text),
				 "{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":"
				 "{\"type\":\"%s\",\"reason\":\"%s\"}}}]}", reason, reason);
			cr_assert_eq(bulk_response_parse(text, strlen(text), &r, err, sizeof(err)), 0, "%s", err);
			cr_assert_eq(r.n_items, 1);
			/* the longest run of whole characters that fits, independently computed */
			n = strlen(r.items[0].error_reason);
			want = lead + (sizeof(r.items[0].error_reason) - 1 - lead) / width[c] * width[c];
			cr_expect_eq(n, want, "char %zu lead %zu: reason cut at %zu bytes, not %zu", c, lead, n,
				     want);
			n = strlen(r.items[0].error_type);
			want = lead + (sizeof(r.items[0].error_type) - 1 - lead) / width[c] * width[c];
			cr_expect_eq(n, want, "char %zu lead %zu: type cut at %zu bytes, not %zu", c, lead, n,
				     want);
			bulk_response_release(&r);
		}
	}
}

Test(bulk_body, a_render_error_cuts_the_id_between_characters)
{
	char id[200], err[256] = "";
	const char *q;

	/* 63 bytes, then two-byte characters: byte 64 is inside one */
	memset(id, 'i', 63);
	id[63] = '\0';
	for (int k = 0; k < 10; k++)
		strcat(id, "\xc3\xa9");
	op_init(&ops[0], id, BULK_INDEX);
	set_string(&ops[0], "v", "bad \xff byte");
	cr_assert_eq(bulk_write_op(&body, &ops[0], err, sizeof(err)), -1);
	expect_one_line(err);
	q = strstr(err, "document '");
	cr_assert_not_null(q, "%s", err);
	q += strlen("document '");
	cr_expect_eq(strspn(q, "i"), 63, "%s", err);
	cr_expect_eq(q[63], '\'', "the half character is dropped: %s", err);
	cr_expect_eq(body.len, 0);
}

Test(bulk_response, outcome_of_each_status)
{
	static const struct {
		int status;
		const char *type;
		enum bulk_outcome want;
	} cases[] = {
		{ 200, "", BULK_ITEM_OK },
		{ 201, "", BULK_ITEM_OK },
		{ 299, "", BULK_ITEM_OK },
		{ 404, "", BULK_ITEM_OK },
		{ 404, "document_missing_exception", BULK_ITEM_REJECT },
		{ 404, "index_not_found_exception", BULK_ITEM_REJECT },
		{ 400, "document_parsing_exception", BULK_ITEM_REJECT },
		/* esbridge sends no versions and no create: a 409 is a lost race, sent again */
		{ 409, "version_conflict_engine_exception", BULK_ITEM_RETRY },
		{ 413, "", BULK_ITEM_REJECT },
		{ 429, "es_rejected_execution_exception", BULK_ITEM_RETRY },
		{ 429, "", BULK_ITEM_RETRY },
		{ 500, "", BULK_ITEM_RETRY },
		{ 502, "", BULK_ITEM_RETRY },
		{ 503, "unavailable_shards_exception", BULK_ITEM_RETRY },
		{ 504, "", BULK_ITEM_RETRY },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bulk_item it;
		memset(&it, 0, sizeof(it));
		it.status = cases[i].status;
		snprintf(it.error_type, sizeof(it.error_type), "%s", cases[i].type);
		cr_expect_eq(bulk_item_outcome(&it), cases[i].want, "status %d type '%s'",
			     cases[i].status, cases[i].type);
	}
}
