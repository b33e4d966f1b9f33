/*
 * Unit tests of the arena and the strict JSON parser (src/json.c).
 *
 * The parser is checked against yajl_tree_parse, the reference: on
 * hand-written documents, on ~20k documents from a seeded generator, on
 * every prefix of some of them and on byte mutations of others. Every input
 * handed to json_parse is copied into a heap block of exactly `len` bytes
 * (no NUL after it), so an ASan build catches any read past `len`, and the
 * copy is freed before the tree is looked at, so a tree pointing into its
 * input would be a use after free.
 *
 * Every test works on the fixture arena `A` and scratch `SC`; the suites'
 * .fini releases both and checks for leaks.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <yajl/yajl_tree.h>

#include "esbridge/json.h"

#include "support.h"

/* ---- fixture ------------------------------------------------------------- */

static struct arena A = ARENA_INIT;
static struct json_scratch SC = JSON_SCRATCH_INIT;

static void teardown(void)
{
	json_scratch_release(&SC);
	arena_release(&A);
	cr_expect_null(A.chunks, "arena_release left chunks");
	cr_expect_null(A.cur);
	cr_expect_null(A.end);
	cr_expect_eq(A.total, 0);
	cr_expect_null(SC.stack);
	cr_expect_null(SC.keys);
	cr_expect_eq(SC.cap, 0);
	test_leak_check();
}

TestSuite(arena, .fini = teardown);
TestSuite(json, .fini = teardown);

/* Failures reported per test before the rest are only counted. */
#ifndef MAX_REPORTS
#define MAX_REPORTS 10
#endif

/* ---- helpers ------------------------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_reserve(struct sbuf *b, size_t more)
{
	if (b->len + more + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		char *np;
		while (ncap < b->len + more + 1)
			ncap *= 2;
		np = realloc(b->p, ncap);
		if (!np)
			cr_assert_fail("out of memory");
		b->p = np;
		b->cap = ncap;
	}
}

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void sb_putc(struct sbuf *b, char c)
{
	sb_putn(b, &c, 1);
}

static void sb_repeat(struct sbuf *b, const char *s, size_t times)
{
	for (size_t i = 0; i < times; i++)
		sb_puts(b, s);
}

static void sb_clear(struct sbuf *b)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';
}

static void sb_free(struct sbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* `n` bytes at `s` as a C literal, shortened, in a static buffer. */
static const char *show(const char *s, size_t n)
{
	static char out[400];
	size_t o = 0;

	out[o++] = '"';
	for (size_t i = 0; i < n && o < sizeof(out) - 12; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c >= 0x20 && c < 0x7f) {
			out[o++] = (char)c;
		} else {
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
		}
		if (i + 1 < n && o >= sizeof(out) - 12) {
			memcpy(out + o, "...", 3);
			o += 3;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

/*
 * json_parse on an exact-size heap copy of the `n` bytes at `s` (a read past
 * them is a heap overflow under ASan), freed before returning.
 */
static yajl_val parse_n(const char *s, size_t n, char *err, size_t errsz)
{
	char *copy = malloc(n ? n : 1);
	yajl_val v;

	if (!copy)
		cr_assert_fail("out of memory");
	memcpy(copy, s, n);
	v = json_parse(&A, &SC, copy, n, err, errsz);
	free(copy);
	return v;
}

static yajl_val parse_str(const char *s, char *err, size_t errsz)
{
	return parse_n(s, strlen(s), err, errsz);
}

/*
 * Checks a failure message: one line, "invalid JSON at byte N: reason"
 * with N <= len. Returns NULL when right, else what is wrong.
 */
static const char *bad_message(const char *e, size_t len)
{
	static const char pfx[] = "invalid JSON at byte ";
	const char *p = e;
	unsigned long long at = 0;

	if (strncmp(p, pfx, sizeof(pfx) - 1) != 0)
		return "does not start with \"invalid JSON at byte \"";
	p += sizeof(pfx) - 1;
	if (*p < '0' || *p > '9')
		return "no byte offset";
	while (*p >= '0' && *p <= '9')
		at = at * 10 + (unsigned long long)(*p++ - '0');
	if (at > len)
		return "byte offset past the input";
	if (p[0] != ':' || p[1] != ' ' || !p[2])
		return "no \": reason\" after the offset";
	if (strchr(e, '\n') || strchr(e, '\r'))
		return "more than one line";
	return NULL;
}

/* The byte offset of a failure message (after bad_message said it is good). */
static size_t message_offset(const char *e)
{
	return (size_t)strtoull(e + strlen("invalid JSON at byte "), NULL, 10);
}

/*
 * Structural comparison of a json_parse tree with a yajl_tree one. Returns
 * true when equal; else false with the place and the difference in `why`.
 * Numbers: same raw text; when yajl found an integer, json_parse found the
 * same one; json_parse never claims a double, and its integers are right.
 */
static bool same_tree(yajl_val ref, yajl_val got, char *path, size_t plen, size_t psz, char *why,
		      size_t whysz)
{
	path[plen] = '\0';
	if (!got) {
		snprintf(why, whysz, "%s: NULL node", path);
		return false;
	}
	if (got->type != ref->type) {
		snprintf(why, whysz, "%s: type %d, want %d", path, (int)got->type, (int)ref->type);
		return false;
	}
	switch (ref->type) {
	case yajl_t_string:
		if (!got->u.string || strcmp(got->u.string, ref->u.string) != 0) {
			snprintf(why, whysz, "%s: string differs: got %s", path,
				 got->u.string ? show(got->u.string, strlen(got->u.string)) : "NULL");
			return false;
		}
		return true;
	case yajl_t_number: {
		const char *r = got->u.number.r;
		if (!r || strcmp(r, ref->u.number.r) != 0) {
			snprintf(why, whysz, "%s: number text %s, want %s", path, r ? r : "NULL",
				 ref->u.number.r);
			return false;
		}
		if (got->u.number.flags & YAJL_NUMBER_DOUBLE_VALID) {
			snprintf(why, whysz, "%s: %s has DOUBLE_VALID", path, r);
			return false;
		}
		if ((ref->u.number.flags & YAJL_NUMBER_INT_VALID) &&
		    (!(got->u.number.flags & YAJL_NUMBER_INT_VALID) || got->u.number.i != ref->u.number.i)) {
			snprintf(why, whysz, "%s: %s: INT_VALID %d i %lld, want i %lld", path, r,
				 !!(got->u.number.flags & YAJL_NUMBER_INT_VALID), got->u.number.i,
				 ref->u.number.i);
			return false;
		}
		if (got->u.number.flags & YAJL_NUMBER_INT_VALID) {
			char *end;
			long long i;
			errno = 0;
			i = strtoll(r, &end, 10);
			if (errno || *end || i != got->u.number.i) {
				snprintf(why, whysz, "%s: %s: INT_VALID with i %lld", path, r, got->u.number.i);
				return false;
			}
		}
		return true;
	}
	case yajl_t_object:
		if (got->u.object.len != ref->u.object.len) {
			snprintf(why, whysz, "%s: object of %zu members, want %zu", path, got->u.object.len,
				 ref->u.object.len);
			return false;
		}
		for (size_t i = 0; i < ref->u.object.len; i++) {
			const char *k = got->u.object.keys[i];
			int w;
			if (!k || strcmp(k, ref->u.object.keys[i]) != 0) {
				snprintf(why, whysz, "%s: key %zu is %s", path, i, k ? show(k, strlen(k)) : "NULL");
				return false;
			}
			w = snprintf(path + plen, psz - plen, ".%.40s", k);
			if (w < 0 || (size_t)w >= psz - plen)
				w = 0;
			for (int c = 1; c < w; c++) /* printable in a one-line message */
				if ((unsigned char)path[plen + (size_t)c] < 0x20 ||
				    (unsigned char)path[plen + (size_t)c] >= 0x7f)
					path[plen + (size_t)c] = '?';
			if (!same_tree(ref->u.object.values[i], got->u.object.values[i], path, plen + (size_t)w,
				       psz, why, whysz))
				return false;
		}
		return true;
	case yajl_t_array:
		if (got->u.array.len != ref->u.array.len) {
			snprintf(why, whysz, "%s: array of %zu values, want %zu", path, got->u.array.len,
				 ref->u.array.len);
			return false;
		}
		for (size_t i = 0; i < ref->u.array.len; i++) {
			int w = snprintf(path + plen, psz - plen, "[%zu]", i);
			if (w < 0 || (size_t)w >= psz - plen)
				w = 0;
			if (!same_tree(ref->u.array.values[i], got->u.array.values[i], path, plen + (size_t)w, psz,
				       why, whysz))
				return false;
		}
		return true;
	default:
		return true;
	}
}

static bool trees_equal(yajl_val ref, yajl_val got, char *why, size_t whysz)
{
	char path[512] = "$";

	return same_tree(ref, got, path, 1, sizeof(path), why, whysz);
}

enum verdict { V_SAME, V_BOTH_REJECT, V_DIFFER };

/*
 * Parses the `n` bytes at `doc` (doc[n] must be NUL, and no NUL before)
 * with yajl_tree_parse and json_parse. V_SAME: both accept, same tree;
 * V_BOTH_REJECT: both reject and the message is right; V_DIFFER: else, with
 * why. The arena is released afterwards.
 */
static enum verdict differential(const char *doc, size_t n, char *why, size_t whysz)
{
	char yerr[256], e[256];
	yajl_val ref = yajl_tree_parse(doc, yerr, sizeof(yerr));
	yajl_val got = parse_n(doc, n, e, sizeof(e));
	enum verdict v = V_DIFFER;
	const char *m;

	if (ref && got) {
		if (trees_equal(ref, got, why, whysz))
			v = V_SAME;
	} else if (ref) {
		snprintf(why, whysz, "json_parse rejects what yajl accepts: %s", e);
	} else if (got) {
		yerr[strcspn(yerr, "\n")] = '\0';
		snprintf(why, whysz, "json_parse accepts what yajl rejects: %s", yerr);
	} else if ((m = bad_message(e, n))) {
		snprintf(why, whysz, "message %s: %s", m, show(e, strlen(e)));
	} else {
		v = V_BOTH_REJECT;
	}
	yajl_tree_free(ref);
	arena_release(&A);
	return v;
}

/* Expects both parsers to accept the C string `doc` and to agree. */
static void expect_same(const char *doc)
{
	char why[600];
	enum verdict v = differential(doc, strlen(doc), why, sizeof(why));

	if (v == V_BOTH_REJECT)
		cr_expect_fail("%s: both parsers reject it", show(doc, strlen(doc)));
	else if (v == V_DIFFER)
		cr_expect_fail("%s: %s", show(doc, strlen(doc)), why);
}

/* Expects json_parse to reject the `n` bytes at `s` with a right message. */
static void expect_invalid_n(const char *s, size_t n)
{
	char e[256];
	yajl_val v;
	const char *m;

	memset(e, 'Z', sizeof(e));
	e[sizeof(e) - 1] = '\0';
	v = parse_n(s, n, e, sizeof(e));
	if (v) {
		cr_expect_fail("%s (len %zu) was accepted", show(s, n), n);
	} else if ((m = bad_message(e, n))) {
		cr_expect_fail("%s: message %s: %s", show(s, n), m, show(e, strlen(e)));
	}
	arena_release(&A);
}

static void expect_invalid(const char *s)
{
	expect_invalid_n(s, strlen(s));
}

/* Expects json_parse to reject `s` at byte `at`. */
static void expect_invalid_at(const char *s, size_t at)
{
	char e[256];
	yajl_val v = parse_str(s, e, sizeof(e));
	const char *m;

	if (v)
		cr_expect_fail("%s was accepted", show(s, strlen(s)));
	else if ((m = bad_message(e, strlen(s))))
		cr_expect_fail("%s: message %s: %s", show(s, strlen(s)), m, e);
	else
		cr_expect_eq(message_offset(e), at, "%s: %s, want byte %zu", show(s, strlen(s)), e, at);
	arena_release(&A);
}

/* ---- random JSON ------------------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64 */
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static unsigned rndn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

struct gen {
	struct sbuf *b;
	int budget;       /* values left to write in this document */
	int maxdepth;
	bool ascii_only;  /* no raw bytes >= 0x80 */
};

static void gen_ws(struct gen *g)
{
	if (rndn(4))
		return;
	for (unsigned n = 1 + rndn(4); n; n--)
		sb_putc(g->b, " \t\n\r"[rndn(4)]);
}

static void gen_u(struct gen *g, unsigned cp)
{
	static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
	const char *hex = rndn(2) ? lower : upper;
	char s[7] = { '\\', 'u', hex[cp >> 12 & 15], hex[cp >> 8 & 15], hex[cp >> 4 & 15], hex[cp & 15], 0 };

	sb_puts(g->b, s);
}

/* A code point of `bytes` UTF-8 bytes, never a surrogate. */
static unsigned gen_cp(unsigned bytes)
{
	unsigned cp;

	switch (bytes) {
	case 1:
		return 1 + rndn(0x7f);
	case 2:
		return 0x80 + rndn(0x800 - 0x80);
	case 3:
		do
			cp = 0x800 + rndn(0x10000 - 0x800);
		while (cp >= 0xd800 && cp <= 0xdfff);
		return cp;
	default:
		return 0x10000 + rndn(0x110000 - 0x10000);
	}
}

static void gen_utf8(struct gen *g, unsigned cp)
{
	char s[4];
	size_t n;

	if (cp < 0x800) {
		s[0] = (char)(0xc0 | cp >> 6);
		s[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		s[0] = (char)(0xe0 | cp >> 12);
		s[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		s[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		s[0] = (char)(0xf0 | cp >> 18);
		s[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		s[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		s[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	sb_putn(g->b, s, n);
}

static void gen_string(struct gen *g, unsigned maxpieces)
{
	sb_putc(g->b, '"');
	for (unsigned n = rndn(maxpieces + 1); n; n--) {
		switch (rndn(11)) {
		case 0:
		case 1:
		case 2:
			for (unsigned k = 1 + rndn(6); k; k--) {
				char c;
				do
					c = (char)(0x20 + rndn(0x7f - 0x20));
				while (c == '"' || c == '\\');
				sb_putc(g->b, c);
			}
			break;
		case 3:
			sb_putc(g->b, '\\');
			sb_putc(g->b, "\"\\/bfnrt"[rndn(8)]);
			break;
		case 4:
			gen_u(g, gen_cp(1)); /* control characters included */
			break;
		case 5:
			gen_u(g, gen_cp(2 + rndn(2)));
			break;
		case 6: {
			unsigned cp = gen_cp(4) - 0x10000;
			gen_u(g, 0xd800 + (cp >> 10));
			gen_u(g, 0xdc00 + (cp & 0x3ff));
			break;
		}
		case 7:
		case 8:
			if (g->ascii_only)
				sb_putc(g->b, (char)(0x20 + rndn(2) * 0x5f)); /* space or DEL */
			else
				gen_utf8(g, gen_cp(2 + rndn(3)));
			break;
		case 9:
			sb_puts(g->b, rndn(2) ? "/" : "\x7f");
			break;
		default:
			/* a few fixed edges */
			sb_puts(g->b, (const char *[]){ "\\uDBFF\\uDFFF", "\\ud800\\udc00", "\\uffff", "\\u0080",
							 "\\u07ff", "\\u0800", "\\u001f", "\\u0001" }[rndn(8)]);
			break;
		}
	}
	sb_putc(g->b, '"');
}

static void gen_digits(struct gen *g, unsigned n, bool lead_nonzero)
{
	for (unsigned i = 0; i < n; i++)
		sb_putc(g->b, (char)((i == 0 && lead_nonzero ? '1' + rndn(9) : '0' + rndn(10))));
}

/* An integer part: 0, or a non-zero digit then up to `max` - 1 more. */
static void gen_int_part(struct gen *g, unsigned max)
{
	if (!rndn(5))
		sb_putc(g->b, '0');
	else
		gen_digits(g, 1 + rndn(max), true);
}

static void gen_number(struct gen *g)
{
	static const char *const edges[] = {
		"0", "-0", "9223372036854775807", "-9223372036854775807", "9223372036854775808",
		"-9223372036854775808", "-9223372036854775809", "18446744073709551615",
		"18446744073709551616", "99999999999999999999", "1000000000000000000",
		"-1000000000000000000", "0.0", "-0.0", "0e0", "0E-0", "1e+308", "1e309", "-1e-400",
		"4.9e-324", "1.7976931348623157e308", "123456789012345678901234567890.5e-10",
	};

	if (!rndn(8)) {
		sb_puts(g->b, edges[rndn(sizeof(edges) / sizeof(edges[0]))]);
		return;
	}
	if (rndn(3) == 0)
		sb_putc(g->b, '-');
	switch (rndn(6)) {
	case 0:
		gen_int_part(g, 3);
		break;
	case 1:
		gen_int_part(g, 20); /* around the int64 edge */
		break;
	case 2:
		gen_digits(g, 19 + rndn(22), true); /* past int64 */
		break;
	case 3:
		gen_int_part(g, 8);
		sb_putc(g->b, '.');
		gen_digits(g, 1 + rndn(12), false);
		break;
	default:
		gen_int_part(g, 6);
		if (rndn(2)) {
			sb_putc(g->b, '.');
			gen_digits(g, 1 + rndn(6), false);
		}
		sb_putc(g->b, rndn(2) ? 'e' : 'E');
		if (rndn(3))
			sb_putc(g->b, "+-"[rndn(2)]);
		gen_digits(g, 1 + rndn(4), false);
		break;
	}
}

static void gen_key(struct gen *g)
{
	static const char *const common[] = { "\"a\"", "\"b\"", "\"id\"", "\"\"", "\"k\\u00e9y\"",
					      "\"k\xc3\xa9y\"", "\"a\\/b\"", "\"a/b\"" };

	/* a small set, so duplicate keys happen */
	if (rndn(2)) {
		unsigned k = rndn(8);
		sb_puts(g->b, common[g->ascii_only && k == 5 ? 4 : k]);
	} else
		gen_string(g, 3);
}

static void gen_value(struct gen *g, int depth)
{
	unsigned kind, n;

	g->budget--;
	kind = depth < g->maxdepth && g->budget > 0 ? rndn(10) : 4 + rndn(6);
	switch (kind) {
	case 0:
	case 1:
		sb_putc(g->b, '[');
		gen_ws(g);
		n = rndn(7);
		for (unsigned i = 0; i < n; i++) {
			if (i) {
				sb_putc(g->b, ',');
				gen_ws(g);
			}
			gen_value(g, depth + 1);
			gen_ws(g);
		}
		sb_putc(g->b, ']');
		break;
	case 2:
	case 3:
		sb_putc(g->b, '{');
		gen_ws(g);
		n = rndn(7);
		for (unsigned i = 0; i < n; i++) {
			if (i) {
				sb_putc(g->b, ',');
				gen_ws(g);
			}
			gen_key(g);
			gen_ws(g);
			sb_putc(g->b, ':');
			gen_ws(g);
			gen_value(g, depth + 1);
			gen_ws(g);
		}
		sb_putc(g->b, '}');
		break;
	case 4:
		gen_string(g, 8);
		break;
	case 5:
	case 6:
		gen_number(g);
		break;
	case 7:
		sb_puts(g->b, "true");
		break;
	case 8:
		sb_puts(g->b, "false");
		break;
	default:
		sb_puts(g->b, "null");
		break;
	}
}

/* A random document into `b` (cleared first). */
static void gen_doc(struct sbuf *b, bool ascii_only)
{
	struct gen g = { .b = b, .budget = 1 + (int)rndn(120), .maxdepth = (int)rndn(11),
			 .ascii_only = ascii_only };

	sb_clear(b);
	gen_ws(&g);
	/* mostly containers at the top */
	if (g.maxdepth > 0 && rndn(4)) {
		bool array = rndn(2);
		sb_puts(b, array ? "[" : "{\"root\":");
		gen_ws(&g);
		gen_value(&g, 1);
		gen_ws(&g);
		sb_putc(b, array ? ']' : '}');
	} else {
		gen_value(&g, 0);
	}
	gen_ws(&g);
}

/* ---- arena ---------------------------------------------------------------- */

Test(arena, initializer_is_empty)
{
	struct arena a = ARENA_INIT;

	cr_expect_null(a.chunks);
	cr_expect_null(a.cur);
	cr_expect_null(a.end);
	cr_expect_eq(a.total, 0);
	arena_release(&a); /* releasing an empty arena is fine */
	cr_expect_null(a.chunks);
}

/* Pieces of many sizes: 8-aligned, usable in full, no overlap, all freed. */
static void fill_and_check(struct arena *a, unsigned rounds)
{
	enum { N = 3000 };
	static unsigned char *ptr[N];
	static size_t size[N];
	size_t sum = 0;
	unsigned bad_align = 0, bad_content = 0;

	for (unsigned r = 0; r < rounds; r++) {
		for (size_t i = 0; i < N; i++) {
			switch (rndn(20)) {
			case 0:
				size[i] = 16 * 1024 - 8 + rndn(17); /* around the large-piece limit */
				break;
			case 1:
				size[i] = 16 * 1024 + 1 + rndn(100 * 1024); /* large pieces */
				break;
			case 2:
				size[i] = 64 * 1024 - 8 + rndn(17); /* around a whole chunk */
				break;
			case 3:
				size[i] = 0;
				break;
			default:
				size[i] = 1 + rndn(rndn(2) ? 24 : 2000);
				break;
			}
			ptr[i] = arena_alloc(a, size[i]);
			cr_assert_not_null(ptr[i], "arena_alloc(%zu) failed", size[i]);
			if ((uintptr_t)ptr[i] % 8)
				bad_align++;
			memset(ptr[i], (int)(i & 0xff), size[i]);
			sum += size[i];
		}
		for (size_t i = 0; i < N; i++)
			for (size_t k = 0; k < size[i]; k++)
				if (ptr[i][k] != (unsigned char)(i & 0xff)) {
					bad_content++;
					break;
				}
		cr_expect_eq(bad_align, 0, "%u pieces not 8-byte aligned", bad_align);
		cr_expect_eq(bad_content, 0, "%u pieces overwritten by others", bad_content);
		cr_expect_geq(a->total, sum, "total %zu < %zu bytes handed out", a->total, sum);
		cr_expect_not_null(a->chunks);
		arena_release(a);
		cr_expect_null(a->chunks);
		cr_expect_null(a->cur);
		cr_expect_null(a->end);
		cr_expect_eq(a->total, 0);
		sum = 0;
	}
}

Test(arena, mixed_sizes_aligned_distinct_and_reusable_after_release)
{
	fill_and_check(&A, 3);
}

Test(arena, every_small_size_is_aligned_and_writable)
{
	for (size_t n = 0; n <= 257; n++) {
		char *p = arena_alloc(&A, n);
		cr_assert_not_null(p);
		cr_assert_eq((uintptr_t)p % 8, 0, "arena_alloc(%zu) = %p", n, (void *)p);
		memset(p, 0x5a, n);
	}
	/* pieces of one chunk are consecutive and rounded up to 8 */
	char *p = arena_alloc(&A, 3), *q = arena_alloc(&A, 1);
	if (q > p && (size_t)(q - p) < 64 * 1024)
		cr_expect_eq(q - p, 8, "a 3-byte piece took %td bytes", q - p);
}

Test(arena, large_pieces_leave_the_current_chunk_in_use)
{
	char *small1 = arena_alloc(&A, 100);
	size_t total1 = A.total;
	char *big = arena_alloc(&A, 1 << 20);
	char *small2 = arena_alloc(&A, 100);

	cr_assert_not_null(small1);
	cr_assert_not_null(big);
	cr_assert_not_null(small2);
	cr_expect_eq((uintptr_t)big % 8, 0);
	memset(big, 1, 1 << 20);
	memset(small1, 2, 100);
	memset(small2, 3, 100);
	cr_expect_eq(big[0], 1);
	cr_expect_eq(big[(1 << 20) - 1], 1);
	cr_expect_geq(A.total, total1 + (1 << 20));
	/* the 1 MiB went into a chunk of its own: no new small chunk was needed */
	cr_expect_lt(A.total, total1 + (1 << 20) + 64 * 1024);
}

Test(arena, first_piece_large)
{
	char *big = arena_alloc(&A, 40000);
	char *small = arena_alloc(&A, 8);

	cr_assert_not_null(big);
	cr_assert_not_null(small);
	memset(big, 1, 40000);
	memset(small, 2, 8);
	cr_expect_eq(big[39999], 1);
	cr_expect_eq((uintptr_t)small % 8, 0);
}

Test(arena, two_arenas_are_independent)
{
	struct arena b = ARENA_INIT;
	char *p = arena_alloc(&A, 10), *q = arena_alloc(&b, 10);

	cr_assert_not_null(p);
	cr_assert_not_null(q);
	strcpy(p, "arena A");
	strcpy(q, "arena B");
	arena_release(&b);
	cr_expect_str_eq(p, "arena A");
	cr_expect_eq(b.total, 0);
}

/*
 * A request that cannot be met must fail. arena_alloc rounds n up with
 * (n + 7) & ~7, which wraps to 0 for n > SIZE_MAX - 7, and adds the chunk
 * header to n unchecked, so huge requests get a small block.
 */
Test(arena, impossible_sizes_fail)
{
	void *p = arena_alloc(&A, SIZE_MAX);

	cr_assert_null(p, "arena_alloc(SIZE_MAX) returned %p", p);
	cr_assert_null(arena_alloc(&A, SIZE_MAX - 7), "arena_alloc(SIZE_MAX - 7) returned a pointer");
}

/* ---- json: hand-written documents ----------------------------------------- */

Test(json, scalars_match_yajl)
{
	static const char *const docs[] = {
		"0", "-0", "1", "-1", "42", " 7 ", "\t\n\r 8\r\n\t", "123456789",
		"9223372036854775807", "-9223372036854775807", "9223372036854775808",
		"-9223372036854775809", "18446744073709551616", "100000000000000000000000000000",
		"1.5", "-1.5", "0.0", "-0.0", "0.000001", "1e5", "1E5", "1e+5", "1e-5", "1E-05",
		"-0e0", "0e-0", "1.5e300", "1e999", "-1e-999", "123.456e-7",
		"true", "false", "null", " true ", "\"\"", "\"a\"", "\"hello world\"",
		"\"\\\"\"", "\"\\\\\"", "\"\\/\"", "\"\\b\\f\\n\\r\\t\"", "\"a\\nb\"",
		"\"\\u0041\"", "\"\\u00e9\"", "\"\\u00E9\"", "\"\\u20ac\"", "\"\\u20AC\"", "\"\\uffff\"",
		"\"\\u0001\\u001f\"", "\"\\u007f\"", "\"\\u0080\"", "\"\\u07ff\"", "\"\\u0800\"",
		"\"\\ud800\\udc00\"", "\"\\ud83d\\ude00\"", "\"\\uD83D\\uDE00\"", "\"\\udbff\\udfff\"",
		"\"x\\ud834\\udd1ey\"", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "\"/\"", "\"\x7f\"",
	};

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		expect_same(docs[i]);
}

Test(json, containers_match_yajl)
{
	static const char *const docs[] = {
		"[]", "{}", " [ ] ", " { } ", "[[]]", "[{}]", "{\"a\":[]}", "{\"a\":{}}",
		"[1,2,3]", "[ 1 , 2 , 3 ]", "[\"a\",true,false,null,1.5,-2,{}]",
		"{\"a\":1,\"b\":2}", "{ \"a\" : 1 , \"b\" : [ 2 , 3 ] }",
		"{\"a\":1,\"a\":2,\"a\":3}", "{\"\":0}", "{\"\\u00e9\":\"\\u00e9\"}",
		"{\"k\\ney\":\"v\\tal\"}", "{\"a\":{\"b\":{\"c\":{\"d\":[[[[1]]]]}}}}",
		"[[1,[2,[3,[4,[5]]]]],{\"x\":[{\"y\":[]}]}]", "\r\n{\r\n\t\"a\"\r\n:\r\n1\r\n}\r\n",
		"{\"id\":\"order-1\",\"items\":[{\"sku\":\"A\",\"qty\":2,\"price\":9.99}],\"total\":19.98,"
		"\"paid\":true,\"note\":null}",
		"[0,-0,0.0,1e1,-1E-1,9223372036854775807,9223372036854775808]",
	};

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		expect_same(docs[i]);
}

Test(json, numbers_keep_text_and_integers)
{
	static const struct {
		const char *text;
		bool int_valid;
		long long i;
	} cases[] = {
		{ "0", true, 0 },
		{ "-0", true, 0 },
		{ "7", true, 7 },
		{ "-7", true, -7 },
		{ "9223372036854775807", true, LLONG_MAX },
		{ "-9223372036854775808", true, LLONG_MIN },
		{ "9223372036854775808", false, 0 },
		{ "-9223372036854775809", false, 0 },
		{ "123456789012345678901234567890", false, 0 },
		{ "1.0", false, 0 },
		{ "1e2", false, 0 },
		{ "1E+2", false, 0 },
		{ "-0.5", false, 0 },
	};
	char e[256];

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		yajl_val v = parse_str(cases[k].text, e, sizeof(e));
		cr_assert_not_null(v, "%s: %s", cases[k].text, e);
		cr_assert(YAJL_IS_NUMBER(v), "%s", cases[k].text);
		cr_expect_str_eq(v->u.number.r, cases[k].text);
		cr_expect_eq(!!(v->u.number.flags & YAJL_NUMBER_INT_VALID), cases[k].int_valid, "%s",
			     cases[k].text);
		cr_expect_eq(v->u.number.flags & YAJL_NUMBER_DOUBLE_VALID, 0, "%s: DOUBLE_VALID",
			     cases[k].text);
		if (cases[k].int_valid)
			cr_expect_eq(v->u.number.i, cases[k].i, "%s: %lld", cases[k].text, v->u.number.i);
	}
}

Test(json, tree_shape_and_accessors)
{
	static const char doc[] = "{\"a\":[1,\"two\",{\"b\":null}],\"c\":true,\"a\":false}";
	const char *path_b[] = { "a", NULL };
	char e[256];
	yajl_val v = parse_str(doc, e, sizeof(e)), a, o;

	cr_assert_not_null(v, "%s", e);
	cr_assert(YAJL_IS_OBJECT(v));
	cr_assert_eq(v->u.object.len, 3);
	cr_expect_str_eq(v->u.object.keys[0], "a");
	cr_expect_str_eq(v->u.object.keys[1], "c");
	cr_expect_str_eq(v->u.object.keys[2], "a"); /* duplicates are kept, in order */
	cr_expect(YAJL_IS_TRUE(v->u.object.values[1]));
	cr_expect(YAJL_IS_FALSE(v->u.object.values[2]));
	a = yajl_tree_get(v, path_b, yajl_t_array);
	cr_assert_not_null(a, "yajl_tree_get finds the first \"a\"");
	cr_assert_eq(a->u.array.len, 3);
	cr_expect_eq(a->u.array.values[0]->u.number.i, 1);
	cr_expect_str_eq(YAJL_GET_STRING(a->u.array.values[1]), "two");
	o = a->u.array.values[2];
	cr_assert(YAJL_IS_OBJECT(o));
	cr_assert_eq(o->u.object.len, 1);
	cr_expect_str_eq(o->u.object.keys[0], "b");
	cr_expect(YAJL_IS_NULL(o->u.object.values[0]));
}

Test(json, strings_are_unescaped_byte_exact)
{
	static const struct {
		const char *json, *want;
	} cases[] = {
		{ "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t" },
		{ "\"\\u0041\\u00e9\\u20ac\"", "A\xc3\xa9\xe2\x82\xac" },
		{ "\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80" },
		{ "\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf" },
		{ "\"\\ud800\\udc00\"", "\xf0\x90\x80\x80" },
		{ "\"\\uffff\"", "\xef\xbf\xbf" },
		{ "\"\\u07ff\\u0800\"", "\xdf\xbf\xe0\xa0\x80" },
		{ "\"\\u0001\"", "\x01" },
		{ "\"\xc3\xa9\"", "\xc3\xa9" },
		{ "\"\xc3\xa9\\n\xf0\x9f\x98\x80\"", "\xc3\xa9\n\xf0\x9f\x98\x80" },
		{ "\"a\\\\u0041\"", "a\\u0041" },
	};
	char e[256];

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		yajl_val v = parse_str(cases[k].json, e, sizeof(e));
		cr_assert_not_null(v, "%s: %s", show(cases[k].json, strlen(cases[k].json)), e);
		cr_assert(YAJL_IS_STRING(v));
		cr_expect_str_eq(v->u.string, cases[k].want, "%s", show(cases[k].json, strlen(cases[k].json)));
	}
}

/* ---- json: invalid documents ------------------------------------------------- */

Test(json, invalid_documents_fail_with_a_one_line_message)
{
	static const char *const docs[] = {
		/* nothing */
		"", " ", "\t\n\r ",
		/* trailing garbage */
		"1 2", "[] []", "{}x", "truex", "null null", "\"a\" \"b\"", "[1]]", "{}}", "1,", "[1],",
		/* structure */
		"[", "]", "{", "}", "[1,]", "[1,,2]", "[,1]", "[,]", "{\"a\":1,}", "{,}", "{\"a\"}",
		"{\"a\" 1}", "{\"a\";1}", "{\"a\"::1}", "{\"a\":}", "{:1}", "{1:1}", "{a:1}",
		"{null:1}", "{'a':1}", "['a']", "[1 2]", "{\"a\":1 \"b\":2}", "[}", "{]", "[1}",
		"{\"a\":1]", "\"a\":1",
		/* literals */
		"tru", "fals", "nul", "True", "FALSE", "Null", "nil", "undefined", "t", "f", "n",
		"NaN", "-NaN", "Infinity", "-Infinity", "inf",
		/* numbers */
		"-", "--1", "+1", "+", "01", "00", "-01", "012", "1.", "-1.", ".5", "-.5", "1.e5",
		"1e", "1E", "1e+", "1e-", "1e+-1", "0x10", "0x", "1_000", "1..2", "1.2.3", "1e5e5",
		"1ee5", "- 1", "0-", "1-", "[01]", "[-]", "[1.]", "{\"a\":.5}", "1e1.5",
		/* strings */
		"\"", "\"abc", "\"abc\\\"", "\"\\", "\"\\\"", "\"a\nb\"", "\"a\tb\"", "\"a\rb\"",
		"\"\x01\"", "\"\x1f\"", "\"\x7f\x1f\"", "\"\\x41\"", "\"\\a\"", "\"\\'\"", "\"\\U0041\"",
		"\"\\u\"", "\"\\u1\"", "\"\\u12\"", "\"\\u123\"", "\"\\u12G4\"", "\"\\uGGGG\"",
		"\"\\u 123\"", "\"\\u-123\"", "\"\\u00e\"", "'a'", "\"a'", "[\"a]", "{\"a:1}",
		"{\"a\\\":1}", "\"\\0\"",
		/* surrogates */
		"\"\\ud800\"", "\"\\udc00\"", "\"\\udfff\"", "\"\\udbff\"", "\"\\ud800\\u0041\"",
		"\"\\ud800x\"", "\"\\ud800\\\"", "\"\\ud800\\n\"", "\"\\ud800\\ud800\"",
		"\"\\udc00\\ud800\"", "\"\\ud800\\udbff\"", "\"\\ud800\\ue000\"", "\"\\ud800\\u\"",
		"\"\\ud800\\udc0\"", "\"\\ud800\\udc0G\"", "\"a\\ud83d\"", "\"\\ude00\\ud83d\"",
		/* NUL by escape: rejected by design */
		"\"\\u0000\"", "\"a\\u0000b\"", "{\"\\u0000\":1}",
		/* comments and lenient whitespace yajl allows */
		"/* c */ 1", "1 // c", "[1,/*x*/2]", "\f1", "1\v", "[\f]", "\xef\xbb\xbf" "1",
		"\xc2\xa0" "1",
	};

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		expect_invalid(docs[i]);
}

Test(json, embedded_nul_bytes_fail)
{
	expect_invalid_n("1\0", 2);
	expect_invalid_n("\0", 1);
	expect_invalid_n("[1]\0", 4);
	expect_invalid_n("\"a\0b\"", 5);
	expect_invalid_n("{\"a\0\":1}", 8);
	expect_invalid_n("[1,\0 2]", 7);
	expect_invalid_n("tr\0e", 4);
}

Test(json, control_characters_in_strings_fail)
{
	for (int c = 0; c < 0x20; c++) {
		char s[8] = "\"a?b\"";
		char k[16] = "{\"?\":1}";
		char esc[16] = "\"\\n?\"";
		s[2] = (char)c;
		k[2] = (char)c;
		esc[3] = (char)c;
		expect_invalid_n(s, 5);
		expect_invalid_n(k, 7);
		expect_invalid_n(esc, 5); /* after an escape: the slow path */
	}
	expect_same("\"a\x7f" "b\"");
}

Test(json, bad_escapes_fail)
{
	for (int c = 1; c < 256; c++) {
		char s[8] = "\"\\?\"";
		s[2] = (char)c;
		if (strchr("\"\\/bfnrtu", c))
			continue;
		expect_invalid_n(s, 4);
	}
}

Test(json, error_offsets)
{
	expect_invalid_at("", 0);
	expect_invalid_at("   ", 3);
	expect_invalid_at("1 x", 2);
	expect_invalid_at("[1] ]", 4);
	expect_invalid_at("{\"a\":1}  {}", 9);
	expect_invalid_at("01", 1);
	expect_invalid_at("[1,]", 3);
	expect_invalid_at("[1 2]", 3);
	expect_invalid_at("{\"a\" 1}", 5);
	expect_invalid_at("{\"a\":1,}", 7);
	expect_invalid_at("x", 0);
}

Test(json, error_buffer_sizes)
{
	char small[8];
	yajl_val v;

	memset(small, 'Z', sizeof(small));
	v = parse_str("[1,]", small, sizeof(small));
	cr_expect_null(v);
	cr_expect_str_eq(small, "invalid", "truncated and NUL-terminated");

	cr_expect_null(parse_str("[1,]", NULL, 0), "a NULL error buffer is fine");
	cr_expect_null(parse_str("[1,]", NULL, 100));

	/* a good parse leaves an empty message */
	char e[64];
	memset(e, 'Z', sizeof(e));
	cr_assert_not_null(parse_str("[1]", e, sizeof(e)));
	cr_expect_str_eq(e, "");
}

/*
 * A zero-sized error buffer is never touched: json_parse only clears err[0]
 * when errsz > 0, but fail() then reads err[0] to see whether a message is
 * already there. With `err` one past the end of a block, that read is a heap
 * overflow under ASan.
 */
Test(json, zero_sized_error_buffer_is_not_read)
{
	char *block = malloc(16);

	cr_assert_not_null(block);
	cr_expect_null(json_parse(&A, &SC, "[1,]", 4, block + 16, 0));
	free(block);
}

/* ---- json: UTF-8 ------------------------------------------------------------- */

Test(json, well_formed_utf8_edges_are_kept)
{
	static const char *const docs[] = {
		"\"\xc2\x80\"",             /* U+0080 */
		"\"\xdf\xbf\"",             /* U+07FF */
		"\"\xe0\xa0\x80\"",         /* U+0800 */
		"\"\xed\x9f\xbf\"",         /* U+D7FF */
		"\"\xee\x80\x80\"",         /* U+E000 */
		"\"\xef\xbf\xbf\"",         /* U+FFFF */
		"\"\xf0\x90\x80\x80\"",     /* U+10000 */
		"\"\xf4\x8f\xbf\xbf\"",     /* U+10FFFF */
		"{\"\xe2\x82\xac\":\"\xf0\x9f\x98\x80\"}",
		"[\"a\\n\xc3\xa9\\t\xe2\x82\xac\\u00e9\xf0\x9f\x98\x80\"]",
	};

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		expect_same(docs[i]);
}

Test(json, ill_formed_utf8_fails)
{
	static const char *const seqs[] = {
		"\x80", "\xbf", "\x80\x80", "\xc0\x80", "\xc0\xaf", "\xc1\xbf", "\xc2", "\xc2\x41",
		"\xc2\xc2\x80", "\xdf\xc0", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xe0\xa0", "\xe2\x82",
		"\xe2\x28\xa1", "\xe2\x82\x28", "\xed\xa0\x80", "\xed\xbf\xbf", "\xed\xa0\x80\xed\xb0\x80",
		"\xef\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\xf0\x9f\x98", "\xf0\x28\x8c\xbc",
		"\xf0\x90\x28\xbc", "\xf4\x90\x80\x80", "\xf4\xbf\xbf\xbf", "\xf5\x80\x80\x80",
		"\xf7\xbf\xbf\xbf", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xfe", "\xff",
		"\xff\xfe",
	};
	static const char *const frames[][2] = {
		{ "\"", "\"" },        { "\"abc", "\"" },       { "\"", "xyz\"" },
		{ "\"\\n", "\"" },    { "\"", "\\n\"" },     { "\"\\u00e9", "\"" },
		{ "{\"", "\":1}" },    { "{\"\\t", "\":1}" }, { "[1,\"", "\"]" },
		{ "\"\xc3\xa9", "\"" }, { "\"", "\xc3\xa9\"" },
	};
	struct sbuf b = { 0 };

	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++)
		for (size_t f = 0; f < sizeof(frames) / sizeof(frames[0]); f++) {
			sb_clear(&b);
			sb_puts(&b, frames[f][0]);
			sb_puts(&b, seqs[i]);
			sb_puts(&b, frames[f][1]);
			expect_invalid_n(b.p, b.len);
		}
	/* a sequence cut by len */
	expect_invalid_n("\"\xe2\x82\xac\"", 3);
	expect_invalid_n("\"\xf0\x9f\x98\x80\"", 4);
	/* outside strings, any non-ASCII byte is an error */
	expect_invalid("\xc3\xa9");
	expect_invalid("[\xc2\xa0]");
	sb_free(&b);
}

/* json_utf8_len on bytes of exactly `n` (a heap copy: ASan sees a read past them) */
static size_t utf8_len_n(const char *s, size_t n)
{
	unsigned char *copy = malloc(n ? n : 1);
	size_t k;

	cr_assert_not_null(copy);
	memcpy(copy, s, n);
	k = json_utf8_len(copy, copy + n);
	free(copy);
	return k;
}

Test(json, utf8_len_of_one_character)
{
	static const struct {
		const char *s;
		size_t n, want;
	} cases[] = {
		{ "a", 1, 1 }, { "", 1, 1 }, { "\x7f", 1, 1 }, { "ab", 2, 1 },
		{ "\xc2\x80", 2, 2 }, { "\xdf\xbf", 2, 2 }, { "\xe0\xa0\x80", 3, 3 },
		{ "\xed\x9f\xbf", 3, 3 }, { "\xef\xbf\xbf", 3, 3 }, { "\xf0\x90\x80\x80", 4, 4 },
		{ "\xf4\x8f\xbf\xbf", 4, 4 }, { "\xc3\xa9x", 3, 2 },
		/* cut short by the end */
		{ "\xc3\xa9", 1, 0 }, { "\xe2\x82\xac", 2, 0 }, { "\xf0\x9f\x98\x80", 3, 0 },
		{ "\xf0", 1, 0 },
		/* ill-formed */
		{ "\x80", 1, 0 }, { "\xbf", 1, 0 }, { "\xc0\x80", 2, 0 }, { "\xc1\xbf", 2, 0 },
		{ "\xc2\x41", 2, 0 }, { "\xe0\x9f\xbf", 3, 0 }, { "\xed\xa0\x80", 3, 0 },
		{ "\xe2\x82\x28", 3, 0 }, { "\xf0\x8f\xbf\xbf", 4, 0 }, { "\xf4\x90\x80\x80", 4, 0 },
		{ "\xf5\x80\x80\x80", 4, 0 }, { "\xff", 1, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t got = utf8_len_n(cases[i].s, cases[i].n);
		cr_expect_eq(got, cases[i].want, "case %zu: %zu, want %zu", i, got, cases[i].want);
	}
	cr_expect_eq(json_utf8_len((const unsigned char *)"a", (const unsigned char *)"a"), 0,
		     "nothing before the end");
}

Test(json, utf8_prefix_ends_between_characters)
{
	static const struct {
		const char *s;
		size_t max, want;
	} cases[] = {
		{ "abc", 64, 3 }, { "abc", 3, 3 }, { "abc", 2, 2 }, { "abc", 0, 0 }, { "", 8, 0 },
		{ "caf\xc3\xa9", 5, 5 }, { "caf\xc3\xa9", 4, 3 }, { "caf\xc3\xa9!", 64, 6 },
		{ "\xf0\x9f\x98\x80x", 3, 0 }, { "\xf0\x9f\x98\x80x", 4, 4 },
		{ "\xe2\x82\xac\xe2\x82\xac", 5, 3 },
		/* it stops before an ill-formed byte */
		{ "ab\xff" "cd", 64, 2 }, { "ab\xc3", 64, 2 }, { "\xf0", 64, 0 }, { "x\xed\xa0\x80", 64, 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *copy = strdup(cases[i].s);
		size_t got;
		cr_assert_not_null(copy);
		got = json_utf8_prefix(copy, cases[i].max);
		cr_expect_eq(got, cases[i].want, "case %zu: %zu, want %zu", i, got, cases[i].want);
		free(copy);
	}
}

Test(json, utf8_show_is_one_line_of_utf8)
{
	static const struct {
		const char *s;
		size_t size;
		const char *want;
	} cases[] = {
		{ "ProductArchived", 65, "ProductArchived" },
		{ "caf\xc3\xa9 \xe2\x82\xac", 65, "caf\xc3\xa9 \xe2\x82\xac" },
		{ "a\nb\r\tc\x7f\x01", 65, "a?b??c??" },
		/* a lead byte just before the end: one '?', nothing read past it */
		{ "\xf0", 65, "?" }, { "a\xf0", 65, "a?" }, { "\xe6\x97", 65, "??" },
		{ "\xc0\xafx\xed\xa0\x80y", 65, "??x???y" }, { "\xff\xfe", 65, "??" },
		/* cut on a character boundary */
		{ "abcdef", 4, "abc" }, { "ab\xc3\xa9", 4, "ab" }, { "ab\xc3\xa9", 5, "ab\xc3\xa9" },
		{ "ab\n", 3, "ab" }, { "abc", 1, "" }, { "", 65, "" },
	};
	char out[65];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *copy = strdup(cases[i].s);
		size_t n;
		cr_assert_not_null(copy);
		memset(out, 'X', sizeof(out));
		n = json_utf8_show(out, cases[i].size, copy);
		cr_expect_str_eq(out, cases[i].want, "case %zu", i);
		cr_expect_eq(n, strlen(cases[i].want), "case %zu: length %zu", i, n);
		free(copy);
	}
}

/*
 * RFC 3629 well-formedness, by decoding: the length from the lead byte, then
 * the code point must need that length, not be a surrogate, nor pass
 * U+10FFFF.
 */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	static const unsigned min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i], cp, len;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			len = 2;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (unsigned k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3fu);
		}
		if (cp < min[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += len;
	}
	return true;
}

#define UTF8_STRINGS 20000

/*
 * Strings of random bytes, valid UTF-8, near misses and escapes, as values
 * and as keys: accepted exactly when the reference above says they are
 * well-formed, and then byte-exact (and the same as yajl's).
 */
Test(json, random_bytes_in_strings_match_a_utf8_reference)
{
	struct sbuf doc = { 0 }, raw = { 0 }, want = { 0 };
	struct gen g = { .b = &raw };
	unsigned bad = 0, reported = 0, valid = 0;
	char e[256], why[600];

	rng = 0x6a09e667f3bcc909ull;
	for (unsigned i = 0; i < UTF8_STRINGS; i++) {
		bool key = rndn(3) == 0, ok;
		yajl_val v;
		sb_clear(&raw);
		sb_clear(&want);
		for (unsigned n = 1 + rndn(6); n; n--) {
			size_t from = raw.len;
			switch (rndn(6)) {
			case 0:
				sb_putc(&raw, (char)('a' + rndn(26)));
				break;
			case 1:
				sb_putc(&raw, (char)(0x80 + rndn(0x80)));
				break;
			case 2:
				gen_utf8(&g, gen_cp(2 + rndn(3)));
				break;
			case 3:
				/* a valid sequence with one byte changed, or cut short */
				gen_utf8(&g, gen_cp(2 + rndn(3)));
				if (rndn(2))
					raw.p[from + rndn((unsigned)(raw.len - from))] = (char)(0x80 + rndn(0x80));
				else
					raw.p[--raw.len] = '\0';
				break;
			case 4: {
				/* a lead byte for a surrogate, an overlong form or past U+10FFFF */
				static const char *const leads[] = { "\xed", "\xe0", "\xf0", "\xf4", "\xc0", "\xc1" };
				sb_puts(&raw, leads[rndn(6)]);
				for (unsigned k = 1 + rndn(3); k; k--)
					sb_putc(&raw, (char)(0x80 + rndn(0x40)));
				break;
			}
			default:
				sb_puts(&raw, "\\n"); /* the slow path */
				break;
			}
			if (raw.len - from == 2 && raw.p[from] == '\\')
				sb_putc(&want, '\n');
			else
				sb_putn(&want, raw.p + from, raw.len - from);
		}
		ok = utf8_valid((const unsigned char *)raw.p, raw.len);
		valid += ok;
		sb_clear(&doc);
		sb_puts(&doc, key ? "{\"" : "\"");
		sb_putn(&doc, raw.p, raw.len);
		sb_puts(&doc, key ? "\":0}" : "\"");
		v = parse_n(doc.p, doc.len, e, sizeof(e));
		if (!ok != !v) {
			bad++;
			if (reported++ < MAX_REPORTS)
				cr_expect_fail("%s: %s, want %s", show(doc.p, doc.len), v ? "accepted" : e,
					       ok ? "accepted" : "rejected");
		} else if (!v) {
			const char *m = bad_message(e, doc.len);
			if (m && reported++ < MAX_REPORTS)
				cr_expect_fail("%s: message %s: %s", show(doc.p, doc.len), m, e);
			bad += m != NULL;
		} else {
			const char *got = key ? v->u.object.keys[0] : v->u.string;
			if (strlen(got) != want.len || memcmp(got, want.p, want.len) != 0) {
				bad++;
				if (reported++ < MAX_REPORTS)
					cr_expect_fail("%s: got %s", show(doc.p, doc.len), show(got, strlen(got)));
			} else if (differential(doc.p, doc.len, why, sizeof(why)) != V_SAME) {
				bad++;
				if (reported++ < MAX_REPORTS)
					cr_expect_fail("%s: yajl: %s", show(doc.p, doc.len), why);
			}
		}
		arena_release(&A);
	}
	cr_expect_eq(bad, 0, "%u of %d strings", bad, UTF8_STRINGS);
	cr_expect(valid > UTF8_STRINGS / 10 && valid < UTF8_STRINGS - UTF8_STRINGS / 10,
		  "%u of %d strings are valid: too one-sided", valid, UTF8_STRINGS);
	sb_free(&doc);
	sb_free(&raw);
	sb_free(&want);
}

/* ---- json: nesting --------------------------------------------------------- */

static void nest(struct sbuf *b, int depth, bool objects, const char *inner)
{
	sb_clear(b);
	for (int i = 0; i < depth; i++)
		sb_puts(b, objects ? "{\"k\":" : i % 2 ? "[0," : "[");
	sb_puts(b, inner);
	for (int i = depth - 1; i >= 0; i--)
		sb_puts(b, objects ? "}" : "]");
}

Test(json, nesting_up_to_the_limit)
{
	struct sbuf b = { 0 };
	char e[256];

	for (int objects = 0; objects < 2; objects++) {
		yajl_val v;
		int depth = 0;

		nest(&b, JSON_MAX_DEPTH, objects, "\"deep\"");
		v = parse_n(b.p, b.len, e, sizeof(e));
		cr_assert_not_null(v, "depth %d: %s", JSON_MAX_DEPTH, e);
		while (YAJL_IS_ARRAY(v) || YAJL_IS_OBJECT(v)) {
			depth++;
			v = YAJL_IS_ARRAY(v) ? v->u.array.values[v->u.array.len - 1] : v->u.object.values[0];
		}
		cr_expect_eq(depth, JSON_MAX_DEPTH);
		cr_assert(YAJL_IS_STRING(v));
		cr_expect_str_eq(v->u.string, "deep");
		expect_same(b.p);

		nest(&b, JSON_MAX_DEPTH, objects, "[]");
		expect_invalid_n(b.p, b.len);
		nest(&b, JSON_MAX_DEPTH, objects, "{}");
		expect_invalid_n(b.p, b.len);
		nest(&b, JSON_MAX_DEPTH + 1, objects, "1");
		expect_invalid_n(b.p, b.len);
		nest(&b, JSON_MAX_DEPTH - 1, objects, "[]");
		cr_expect_not_null(parse_n(b.p, b.len, e, sizeof(e)), "depth %d: %s", JSON_MAX_DEPTH, e);
		arena_release(&A);
	}
	/* depth comes back down: many siblings at the limit */
	sb_clear(&b);
	sb_putc(&b, '[');
	for (int i = 0; i < 50; i++) {
		struct sbuf inner = { 0 };
		nest(&inner, JSON_MAX_DEPTH - 1, i % 2, "null");
		if (i)
			sb_putc(&b, ',');
		sb_puts(&b, inner.p);
		sb_free(&inner);
	}
	sb_putc(&b, ']');
	expect_same(b.p);
	sb_free(&b);
}

Test(json, very_deep_nesting_fails_without_crashing)
{
	struct sbuf b = { 0 };

	sb_repeat(&b, "[", 1000000);
	expect_invalid_n(b.p, b.len);
	sb_clear(&b);
	sb_repeat(&b, "{\"a\":", 200000);
	expect_invalid_n(b.p, b.len);
	sb_free(&b);
}

/* ---- json: exactly len bytes ---------------------------------------------- */

Test(json, reads_exactly_len_bytes)
{
	static const struct {
		const char *buf;
		size_t len;
		const char *want; /* the same document, NUL-terminated */
	} ok[] = {
		{ "123x", 3, "123" },     { "12345", 2, "12" },        { "1.5e3", 3, "1.5" },
		{ "-12", 2, "-1" },       { "truex", 4, "true" },      { "nullnull", 4, "null" },
		{ "\"abc\"garbage", 5, "\"abc\"" },                    { "[1,2]3", 5, "[1,2]" },
		{ "{\"a\":1}}", 7, "{\"a\":1}" },                      { "0123", 1, "0" },
		{ "\"a\\nb\"\\", 6, "\"a\\nb\"" },                     { "7 \x01", 2, "7 " },
		{ "[] ,", 3, "[] " },
	};
	static const struct {
		const char *buf;
		size_t len;
	} bad[] = {
		{ "-1", 1 },           { "1.5", 2 },          { "1e5", 2 },          { "tru" "e", 3 },
		{ "fals" "e", 4 },     { "nul" "l", 3 },      { "\"ab\"", 3 },      { "\"a\\\"\"", 4 },
		{ "\"a\\n\"", 3 },     { "\"\\u0041\"", 5 },  { "\"\\u0041\"", 6 }, { "\"\\u0041\"", 7 },
		{ "\"\\ud83d\\ude00\"", 7 },                   { "\"\\ud83d\\ude00\"", 8 },
		{ "\"\\ud83d\\ude00\"", 12 },                  { "\"\\ud83d\\ude00\"", 13 },
		{ "[1]", 2 },          { "{\"a\":1}", 6 },    { "{\"a\":1}", 4 },    { "{\"a\"", 3 },
	};
	char e[256];
	char why[600];

	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		char yerr[256];
		yajl_val ref = yajl_tree_parse(ok[k].want, yerr, sizeof(yerr));
		yajl_val got = parse_n(ok[k].buf, ok[k].len, e, sizeof(e));
		cr_assert_not_null(ref, "%s: %s", ok[k].want, yerr);
		if (!got)
			cr_expect_fail("%s len %zu: %s", show(ok[k].buf, strlen(ok[k].buf)), ok[k].len, e);
		else if (!trees_equal(ref, got, why, sizeof(why)))
			cr_expect_fail("%s len %zu: %s", show(ok[k].buf, strlen(ok[k].buf)), ok[k].len, why);
		yajl_tree_free(ref);
		/* and straight from the longer buffer, where the bytes after len are there */
		got = json_parse(&A, &SC, ok[k].buf, ok[k].len, e, sizeof(e));
		cr_expect_not_null(got, "%s len %zu (in place): %s", ok[k].buf, ok[k].len, e);
		arena_release(&A);
	}
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		expect_invalid_n(bad[k].buf, bad[k].len);
		cr_expect_null(json_parse(&A, &SC, bad[k].buf, bad[k].len, e, sizeof(e)), "%s len %zu",
			       bad[k].buf, bad[k].len);
		arena_release(&A);
	}
}

Test(json, valid_document_then_garbage_within_len_fails)
{
	static const char *const tails[] = { "x", "1", "]", "}", ",", "\"", "{}", "[]", "null", "\x01",
					     "\xff", "/", " x", "\n0" };
	static const char *const heads[] = { "1", "[1,2]", "{\"a\":\"b\"}", "\"s\"", "true", "null", "[]",
					     "{}", "-0.5e3" };
	struct sbuf b = { 0 };

	for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++)
		for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
			sb_clear(&b);
			sb_puts(&b, heads[h]);
			sb_puts(&b, tails[t]);
			/* a number head with a digit tail is one bigger number */
			if (strcmp(tails[t], "1") == 0 && strchr("-0123456789", heads[h][0]))
				continue;
			expect_invalid_n(b.p, b.len);
		}
	sb_free(&b);
}

/* ---- json: truncation ------------------------------------------------------- */

/*
 * Every prefix of a valid document fails, unless it is itself a document
 * (a number cut short, trailing whitespace cut off): then yajl agrees.
 */
static unsigned check_prefixes(const char *doc, size_t n, unsigned *reported)
{
	char *pre = malloc(n + 1);
	char why[600];
	unsigned bad = 0;

	if (!pre)
		cr_assert_fail("out of memory");
	for (size_t k = 0; k < n; k++) {
		enum verdict v;
		memcpy(pre, doc, k);
		pre[k] = '\0';
		v = differential(pre, k, why, sizeof(why));
		if (v == V_DIFFER) {
			bad++;
			if ((*reported)++ < MAX_REPORTS)
				cr_expect_fail("prefix %zu of %s: %s", k, show(doc, n), why);
		}
	}
	free(pre);
	return bad;
}

Test(json, every_prefix_of_a_document_fails)
{
	static const char *const docs[] = {
		"{\"a\":[1,2.5,-3e+2,true,false,null,\"x\\n\\u00e9\\ud83d\\ude00\"],\"b\":{}}",
		"[123, \"abc\", {\"k\": [ ]}, -0.25E-3 ]",
		" { \"nested\" : [ [ [ { } ] ] ] , \"n\" : 1234567890123456789012 } ",
		"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\"",
		"12345",
		"-1.25e+10",
		"true",
	};
	unsigned reported = 0, bad = 0;

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		bad += check_prefixes(docs[i], strlen(docs[i]), &reported);
	cr_expect_eq(bad, 0);

	/* some prefixes are documents */
	expect_same("1");
	expect_same("12");
	expect_same("-1.2");
	expect_same("-1.25e+1");
}

/* ---- json: random documents ------------------------------------------------- */

#define RANDOM_DOCS 20000
#define PREFIX_DOCS 300
#define MUTATED_DOCS 20000

Test(json, random_documents_match_yajl)
{
	struct sbuf b = { 0 };
	unsigned reported = 0, bad = 0, rejected = 0;
	size_t bytes = 0;
	char why[600];

	rng = 0x2545f4914f6cdd1dull;
	for (unsigned i = 0; i < RANDOM_DOCS; i++) {
		enum verdict v;
		gen_doc(&b, i % 4 == 0);
		bytes += b.len;
		v = differential(b.p, b.len, why, sizeof(why));
		if (v == V_SAME)
			continue;
		if (v == V_BOTH_REJECT)
			rejected++;
		bad++;
		if (reported++ < MAX_REPORTS)
			cr_expect_fail("doc %u %s: %s", i, show(b.p, b.len),
				       v == V_BOTH_REJECT ? "both reject it (generator bug)" : why);
	}
	cr_expect_eq(bad, 0, "%u of %d documents differ (%u rejected by both)", bad, RANDOM_DOCS, rejected);
	cr_expect_gt(bytes, (size_t)RANDOM_DOCS * 20, "the documents are too small to test much");
	sb_free(&b);
}

Test(json, random_document_prefixes_match_yajl)
{
	struct sbuf b = { 0 };
	unsigned reported = 0, bad = 0;

	rng = 0x853c49e6748fea9bull;
	for (unsigned i = 0; i < PREFIX_DOCS; i++) {
		gen_doc(&b, false);
		bad += check_prefixes(b.p, b.len, &reported);
	}
	cr_expect_eq(bad, 0, "%u prefixes differ", bad);
	sb_free(&b);
}

/*
 * Whether `doc`, which yajl accepts and json_parse rejects (`why` holds
 * json_parse's message), is one of yajl's leniences: comments (no '/' is
 * inserted, but strings hold some), lone surrogates and \u0000 (all in \u
 * escapes), or a whole document followed by an unterminated string, which
 * yajl_complete_parse lets through ("1 \"abc").
 */
static bool yajl_lenience(const char *doc, const char *why)
{
	const char *at = strstr(why, "invalid JSON at byte ");
	size_t n;
	char yerr[64];
	yajl_val rest;

	if (strchr(doc, '/') || strstr(doc, "\\u"))
		return true;
	if (!at || !strstr(why, "trailing characters"))
		return false;
	n = message_offset(at);
	if (n >= strlen(doc) || doc[n] != '"')
		return false;
	rest = yajl_tree_parse(doc + n, yerr, sizeof(yerr));
	yajl_tree_free(rest);
	return rest == NULL;
}

/*
 * Random documents with 1 to 3 bytes replaced, inserted or deleted, from
 * JSON's own bytes. What json_parse accepts, yajl accepts the same; what
 * yajl accepts, json_parse accepts too unless it is one of yajl's leniences.
 */
Test(json, mutated_documents_match_yajl)
{
	static const char alphabet[] = "{}[]\",:0123456789-+.eE \t\n\rtrufalsn\\";
	struct sbuf b = { 0 };
	unsigned reported = 0, bad = 0, accepted = 0, lenient = 0;
	char why[600];

	rng = 0xda942042e4dd58b5ull;
	for (unsigned i = 0; i < MUTATED_DOCS; i++) {
		enum verdict v;
		gen_doc(&b, true);
		for (unsigned m = 1 + rndn(3); m; m--) {
			size_t at = b.len ? rndn((unsigned)b.len) : 0;
			char c = alphabet[rndn(sizeof(alphabet) - 1)];
			switch (rndn(3)) {
			case 0:
				if (b.len)
					b.p[at] = c;
				break;
			case 1:
				sb_putc(&b, '\0');
				memmove(b.p + at + 1, b.p + at, b.len - 1 - at);
				b.p[at] = c;
				break;
			default:
				if (b.len) {
					memmove(b.p + at, b.p + at + 1, b.len - at - 1);
					b.p[--b.len] = '\0';
				}
				break;
			}
		}
		v = differential(b.p, b.len, why, sizeof(why));
		if (v == V_SAME)
			accepted++;
		if (v != V_DIFFER)
			continue;
		if (strncmp(why, "json_parse rejects", 18) == 0 && yajl_lenience(b.p, why)) {
			lenient++;
			continue;
		}
		bad++;
		if (reported++ < MAX_REPORTS)
			cr_expect_fail("mutated doc %u %s: %s", i, show(b.p, b.len), why);
	}
	cr_expect_eq(bad, 0, "%u of %d mutated documents differ (%u yajl leniences skipped)", bad,
		     MUTATED_DOCS, lenient);
	cr_expect_lt(lenient, MUTATED_DOCS / 20, "%u yajl leniences skipped", lenient);
	/* both outcomes are exercised */
	cr_expect_gt(accepted, MUTATED_DOCS / 50, "only %u accepted", accepted);
	cr_expect_lt(accepted, MUTATED_DOCS - MUTATED_DOCS / 50, "%u accepted", accepted);
	sb_free(&b);
}

/* ---- json: arena and scratch across parses ------------------------------------ */

Test(json, many_trees_in_one_arena_with_one_scratch)
{
	enum { N = 400 };
	static char *docs[N];
	static yajl_val trees[N];
	struct sbuf b = { 0 };
	char e[256], why[600];
	unsigned bad = 0;

	rng = 0x1234567887654321ull;
	/* all trees stay alive in A while the scratch is reused; failures in between */
	for (unsigned i = 0; i < N; i++) {
		gen_doc(&b, false);
		docs[i] = strdup(b.p);
		cr_assert_not_null(docs[i]);
		trees[i] = parse_n(b.p, b.len, e, sizeof(e));
		cr_assert_not_null(trees[i], "%s: %s", show(b.p, b.len), e);
		cr_expect_null(parse_str("[1,{\"a\":[2,3,", e, sizeof(e)));
		cr_expect_null(parse_str("{\"a\":[1,2,{\"b\":\"\\ud800\"}]}", e, sizeof(e)));
	}
	/* a wide document grows the scratch far */
	sb_clear(&b);
	sb_putc(&b, '[');
	for (int i = 0; i < 100000; i++)
		sb_puts(&b, i ? ",{\"k\":[1,2]}" : "{\"k\":[1,2]}");
	sb_putc(&b, ']');
	{
		yajl_val wide = parse_n(b.p, b.len, e, sizeof(e));
		cr_assert_not_null(wide, "%s", e);
		cr_expect_eq(wide->u.array.len, 100000);
		cr_expect_geq(SC.cap, 100000);
		cr_expect_eq(wide->u.array.values[99999]->u.object.values[0]->u.array.values[1]->u.number.i, 2);
	}
	for (unsigned i = 0; i < N; i++) {
		char yerr[256];
		yajl_val ref = yajl_tree_parse(docs[i], yerr, sizeof(yerr));
		cr_assert_not_null(ref, "%s", yerr);
		if (!trees_equal(ref, trees[i], why, sizeof(why)) && bad++ < MAX_REPORTS)
			cr_expect_fail("tree %u changed: %s", i, why);
		yajl_tree_free(ref);
		free(docs[i]);
	}
	cr_expect_eq(bad, 0);
	arena_release(&A);
	/* the scratch outlives the arena; reuse after release */
	cr_expect_not_null(parse_str("{\"again\":[1,2,3]}", e, sizeof(e)), "%s", e);
	json_scratch_release(&SC);
	json_scratch_release(&SC); /* twice is fine */
	cr_expect_not_null(parse_str("[[[\"after\"]]]", e, sizeof(e)), "%s", e);
	sb_free(&b);
}

Test(json, fresh_scratch_and_arena_per_parse)
{
	char e[256];

	for (int i = 0; i < 200; i++) {
		struct arena a = ARENA_INIT;
		struct json_scratch sc = JSON_SCRATCH_INIT;
		static const char doc[] = "{\"a\":[1,2,3],\"b\":\"x\"}";
		yajl_val v = json_parse(&a, &sc, doc, sizeof(doc) - 1, e, sizeof(e));
		cr_assert_not_null(v, "%s", e);
		cr_expect_gt(a.total, 0);
		cr_expect_null(json_parse(&a, &sc, doc, sizeof(doc) - 2, e, sizeof(e)));
		json_scratch_release(&sc);
		arena_release(&a);
	}
}

Test(json, large_strings_and_numbers)
{
	struct sbuf b = { 0 };
	char e[256];
	yajl_val v;

	/* a 100 KiB string: larger than a chunk, one piece of its own */
	sb_putc(&b, '"');
	for (int i = 0; i < 100000; i++)
		sb_putc(&b, (char)('a' + i % 26));
	sb_putc(&b, '"');
	v = parse_n(b.p, b.len, e, sizeof(e));
	cr_assert_not_null(v, "%s", e);
	cr_expect_eq(strlen(v->u.string), 100000);
	expect_same(b.p);

	/* the same with escapes (the slow path) */
	sb_clear(&b);
	sb_putc(&b, '"');
	for (int i = 0; i < 30000; i++)
		sb_puts(&b, i % 3 ? "\\u00e9" : "\\n");
	sb_putc(&b, '"');
	expect_same(b.p);

	/* a 50000-digit number */
	sb_clear(&b);
	sb_putc(&b, '1');
	sb_repeat(&b, "0", 50000);
	expect_same(b.p);
	sb_free(&b);
}
