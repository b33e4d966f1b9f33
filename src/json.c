#include "esbridge/json.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena --------------------------------------------------------------- */

struct arena_chunk {
	struct arena_chunk *next;
	size_t size;
	/* the memory follows, 8-byte aligned */
	max_align_t data[];
};

#define ARENA_CHUNK ((size_t)64 << 10)

void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_chunk *c;
	size_t need, size;
	char *p;

	if (n > ((size_t)-1) / 2)
		return NULL;
	n = (n + 7) & ~(size_t)7;
	if ((size_t)(a->end - a->cur) >= n && a->cur) {
		p = a->cur;
		a->cur += n;
		return p;
	}
	need = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
	size = sizeof(*c) + need;
	c = malloc(size);
	if (!c)
		return NULL;
	c->size = need;
	c->next = a->chunks;
	a->chunks = c;
	a->total += need;
	p = (char *)c->data;
	if (need == n) {
		/* a large piece gets a chunk of its own; keep filling the current one */
		if (!a->cur) {
			a->cur = p + n;
			a->end = p + n;
		}
		return p;
	}
	a->cur = p + n;
	a->end = p + need;
	return p;
}

void arena_release(struct arena *a)
{
	struct arena_chunk *c = a->chunks;

	while (c) {
		struct arena_chunk *next = c->next;
		free(c);
		c = next;
	}
	a->chunks = NULL;
	a->cur = a->end = NULL;
	a->total = 0;
}

/* ---- parser -------------------------------------------------------------- */

struct parser {
	struct arena *a;
	const char *p, *end, *start;
	char *err;
	size_t errsz;
	int depth;
	struct json_scratch *sc;
	size_t top;
};

static yajl_val parse_value(struct parser *ps);

static void fail(struct parser *ps, const char *what)
{
	if (ps->err && ps->errsz && !ps->err[0])
		snprintf(ps->err, ps->errsz, "invalid JSON at byte %zu: %s", (size_t)(ps->p - ps->start), what);
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\t' || *ps->p == '\r'))
		ps->p++;
}

static yajl_val new_node(struct parser *ps, yajl_type t)
{
	yajl_val v = arena_alloc(ps->a, sizeof(*v));

	if (!v) {
		fail(ps, "out of memory");
		return NULL;
	}
	memset(v, 0, sizeof(*v));
	v->type = t;
	return v;
}

static int push(struct parser *ps, const char *key, yajl_val v)
{
	struct json_scratch *sc = ps->sc;

	if (ps->top == sc->cap) {
		size_t ncap = sc->cap ? sc->cap * 2 : 64;
		yajl_val *ns = realloc(sc->stack, ncap * sizeof(*ns));
		const char **nk;
		if (!ns) {
			fail(ps, "out of memory");
			return -1;
		}
		sc->stack = ns;
		nk = realloc(sc->keys, ncap * sizeof(*nk));
		if (!nk) {
			fail(ps, "out of memory");
			return -1;
		}
		sc->keys = nk;
		sc->cap = ncap;
	}
	sc->keys[ps->top] = key;
	sc->stack[ps->top++] = v;
	return 0;
}

void json_scratch_release(struct json_scratch *sc)
{
	free(sc->stack);
	free(sc->keys);
	memset(sc, 0, sizeof(*sc));
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

static int read_hex4(struct parser *ps, const char *q, unsigned *out)
{
	unsigned v = 0;

	if (ps->end - q < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hexval(q[i]);
		if (h < 0)
			return -1;
		v = v << 4 | (unsigned)h;
	}
	*out = v;
	return 0;
}

static char *put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xc0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xe0 | cp >> 12);
		*o++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*o++ = (char)(0xf0 | cp >> 18);
		*o++ = (char)(0x80 | (cp >> 12 & 0x3f));
		*o++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	}
	return o;
}

size_t json_utf8_len(const unsigned char *q, const unsigned char *end)
{
	unsigned c;
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;

	if (q >= end)
		return 0;
	c = q[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if ((size_t)(end - q) < n || q[1] < lo || q[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (q[i] < 0x80 || q[i] > 0xbf)
			return 0;
	return n;
}

size_t json_utf8_prefix(const char *s, size_t max)
{
	const unsigned char *q = (const unsigned char *)s, *end = q + strlen(s);
	size_t n = 0;

	for (;;) {
		size_t k = json_utf8_len(q + n, end);
		if (!k || n + k > max)
			return n;
		n += k;
	}
}

size_t json_utf8_show(char *dst, size_t dstsz, const char *s)
{
	const unsigned char *q = (const unsigned char *)s, *end = q + strlen(s);
	size_t n = 0;

	while (q < end) {
		size_t k = json_utf8_len(q, end);
		if (!k || *q < 0x20 || *q == 0x7f) {
			/* an ill-formed byte or a control character: one '?' */
			if (n + 1 >= dstsz)
				break;
			dst[n++] = '?';
			q += k ? k : 1;
			continue;
		}
		if (n + k >= dstsz)
			break;
		memcpy(dst + n, q, k);
		n += k;
		q += k;
	}
	dst[n] = '\0';
	return n;
}

bool json_utf8_valid(const char *s, size_t n)
{
	const unsigned char *q = (const unsigned char *)s, *end = q + n;

	while (q < end) {
		size_t k;
		if (*q < 0x80) {
			q++;
			continue;
		}
		k = json_utf8_len(q, end);
		if (!k)
			return false;
		q += k;
	}
	return true;
}

/* Plain characters: not a quote, backslash, control byte or non-ASCII. */
static const char *skip_plain(const char *q, const char *end)
{
	while (q < end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20 &&
	       (unsigned char)*q < 0x80)
		q++;
	return q;
}

/* Skips plain characters and valid UTF-8; stops at anything else. */
static const char *skip_text(struct parser *ps, const char *q)
{
	for (;;) {
		size_t n;
		q = skip_plain(q, ps->end);
		if (q >= ps->end || (unsigned char)*q < 0x80)
			return q;
		n = json_utf8_len((const unsigned char *)q, (const unsigned char *)ps->end);
		if (!n)
			return q;
		q += n;
	}
}

/*
 * A \u escape at `*q` (just after its backslash): writes the character at
 * `*o` as UTF-8 and moves both on; -1 after fail() on a bad one.
 */
static int unicode_escape(struct parser *ps, const char **q, char **o)
{
	unsigned cp, lo;
	const char *at = *q;

	if (read_hex4(ps, at + 1, &cp)) {
		ps->p = at;
		fail(ps, "bad \\u escape");
		return -1;
	}
	at += 5;
	if (cp >= 0xdc00 && cp <= 0xdfff) {
		ps->p = at;
		fail(ps, "lone low surrogate");
		return -1;
	}
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (ps->end - at < 6 || at[0] != '\\' || at[1] != 'u' || read_hex4(ps, at + 2, &lo) ||
		    lo < 0xdc00 || lo > 0xdfff) {
			ps->p = at;
			fail(ps, "lone high surrogate");
			return -1;
		}
		at += 6;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	if (cp == 0) {
		ps->p = at;
		fail(ps, "NUL character in a string");
		return -1;
	}
	*o = put_utf8(*o, cp);
	*q = at;
	return 0;
}

/* The one-character escapes: what `c` after a backslash stands for, or 0. */
static char simple_escape(char c)
{
	switch (c) {
	case '"': return '"';
	case '\\': return '\\';
	case '/': return '/';
	case 'b': return '\b';
	case 'f': return '\f';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	default: return 0;
	}
}

/* A string with escapes, from ps->p; the output is never longer than the input. */
static char *parse_escaped_string(struct parser *ps)
{
	const char *q, *run;
	char *out, *o;

	for (q = ps->p; q < ps->end && *q != '"'; q++)
		if (*q == '\\')
			q++;
	if (q >= ps->end) {
		fail(ps, "unterminated string");
		return NULL;
	}
	out = arena_alloc(ps->a, (size_t)(q - ps->p) + 1);
	if (!out) {
		fail(ps, "out of memory");
		return NULL;
	}
	o = out;
	q = ps->p;
	for (;;) {
		const char *why = NULL;
		char c;

		run = q;
		q = skip_text(ps, q);
		memcpy(o, run, (size_t)(q - run));
		o += q - run;
		if (q >= ps->end)
			why = "unterminated string";
		else if (*q == '"')
			break;
		else if ((unsigned char)*q < 0x20)
			why = "control character in a string";
		else if ((unsigned char)*q >= 0x80)
			why = "invalid UTF-8 in a string";
		else if (++q >= ps->end) /* the backslash */
			why = "unterminated string";
		if (why) {
			ps->p = q;
			fail(ps, why);
			return NULL;
		}
		if (*q == 'u') {
			if (unicode_escape(ps, &q, &o))
				return NULL;
			continue;
		}
		c = simple_escape(*q);
		if (!c) {
			ps->p = q;
			fail(ps, "bad escape");
			return NULL;
		}
		*o++ = c;
		q++;
	}
	*o = '\0';
	ps->p = q + 1;
	return out;
}

/* Reads a string after its opening quote; returns it NUL-terminated in the arena. */
static char *parse_string(struct parser *ps)
{
	const char *q = ps->p;
	char *out;
	size_t n;

	/* the common case: no escapes */
	q = skip_text(ps, q);
	if (q < ps->end && *q == '"') {
		n = (size_t)(q - ps->p);
		out = arena_alloc(ps->a, n + 1);
		if (!out) {
			fail(ps, "out of memory");
			return NULL;
		}
		memcpy(out, ps->p, n);
		out[n] = '\0';
		ps->p = q + 1;
		return out;
	}
	return parse_escaped_string(ps);
}

static yajl_val parse_number(struct parser *ps)
{
	const char *q = ps->p, *s = ps->p;
	bool integer = true;
	yajl_val v;
	char *r;
	size_t n;

	if (q < ps->end && *q == '-')
		q++;
	if (q >= ps->end || *q < '0' || *q > '9')
		goto bad;
	if (*q == '0')
		q++;
	else
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	if (q < ps->end && *q == '.') {
		integer = false;
		q++;
		if (q >= ps->end || *q < '0' || *q > '9')
			goto bad;
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < ps->end && (*q == 'e' || *q == 'E')) {
		integer = false;
		q++;
		if (q < ps->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= ps->end || *q < '0' || *q > '9')
			goto bad;
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	}
	n = (size_t)(q - s);
	v = new_node(ps, yajl_t_number);
	r = v ? arena_alloc(ps->a, n + 1) : NULL;
	if (!r) {
		fail(ps, "out of memory");
		return NULL;
	}
	memcpy(r, s, n);
	r[n] = '\0';
	v->u.number.r = r;
	if (integer && n - (*r == '-') <= 19) {
		/* at most 18 digits cannot overflow; 19 are checked */
		const char *d = r + (*r == '-');
		unsigned long long u = 0;
		bool ok = true;
		for (; *d; d++) {
			unsigned digit = (unsigned)(*d - '0');
			if (u > (ULLONG_MAX - digit) / 10) {
				ok = false;
				break;
			}
			u = u * 10 + digit;
		}
		if (ok && *r == '-' && u <= (unsigned long long)LLONG_MAX + 1) {
			v->u.number.i = u == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)u;
			v->u.number.flags |= YAJL_NUMBER_INT_VALID;
		} else if (ok && *r != '-' && u <= (unsigned long long)LLONG_MAX) {
			v->u.number.i = (long long)u;
			v->u.number.flags |= YAJL_NUMBER_INT_VALID;
		}
	}
	ps->p = q;
	return v;
bad:
	ps->p = q;
	fail(ps, "bad number");
	return NULL;
}

static yajl_val parse_container(struct parser *ps, bool object)
{
	size_t base = ps->top, n;
	yajl_val v;
	char close = object ? '}' : ']';

	if (++ps->depth > JSON_MAX_DEPTH) {
		fail(ps, "nested too deeply");
		return NULL;
	}
	ps->p++; /* { or [ */
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		goto done;
	}
	for (;;) {
		const char *key = NULL;
		yajl_val member;

		skip_ws(ps);
		if (object) {
			if (ps->p >= ps->end || *ps->p != '"') {
				fail(ps, "expected a key");
				return NULL;
			}
			ps->p++;
			key = parse_string(ps);
			if (!key)
				return NULL;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				fail(ps, "expected ':'");
				return NULL;
			}
			ps->p++;
			skip_ws(ps);
		}
		member = parse_value(ps);
		if (!member || push(ps, key, member))
			return NULL;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			break;
		}
		fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
		return NULL;
	}
done:
	ps->depth--;
	n = ps->top - base;
	v = new_node(ps, object ? yajl_t_object : yajl_t_array);
	if (!v)
		return NULL;
	if (n) {
		yajl_val *values = arena_alloc(ps->a, n * sizeof(*values));
		if (!values) {
			fail(ps, "out of memory");
			return NULL;
		}
		memcpy(values, ps->sc->stack + base, n * sizeof(*values));
		if (object) {
			const char **keys = arena_alloc(ps->a, n * sizeof(*keys));
			if (!keys) {
				fail(ps, "out of memory");
				return NULL;
			}
			memcpy(keys, ps->sc->keys + base, n * sizeof(*keys));
			v->u.object.keys = keys;
			v->u.object.values = values;
			v->u.object.len = n;
		} else {
			v->u.array.values = values;
			v->u.array.len = n;
		}
	}
	ps->top = base;
	return v;
}

static bool literal(struct parser *ps, const char *word, size_t n)
{
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return false;
	ps->p += n;
	return true;
}

static yajl_val parse_value(struct parser *ps)
{
	yajl_val v;

	skip_ws(ps);
	if (ps->p >= ps->end) {
		fail(ps, "unexpected end");
		return NULL;
	}
	switch (*ps->p) {
	case '{':
		return parse_container(ps, true);
	case '[':
		return parse_container(ps, false);
	case '"': {
		char *s;
		ps->p++;
		s = parse_string(ps);
		if (!s)
			return NULL;
		v = new_node(ps, yajl_t_string);
		if (v)
			v->u.string = s;
		return v;
	}
	case 't':
		if (literal(ps, "true", 4))
			return new_node(ps, yajl_t_true);
		break;
	case 'f':
		if (literal(ps, "false", 5))
			return new_node(ps, yajl_t_false);
		break;
	case 'n':
		if (literal(ps, "null", 4))
			return new_node(ps, yajl_t_null);
		break;
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			return parse_number(ps);
		break;
	}
	fail(ps, "unexpected character");
	return NULL;
}

yajl_val json_parse(struct arena *a, struct json_scratch *sc, const char *s, size_t len,
		    char *err, size_t errsz)
{
	struct parser ps = { .a = a, .p = s, .end = s + len, .start = s, .err = err, .errsz = errsz,
			     .sc = sc };
	yajl_val v;

	if (err && errsz)
		err[0] = '\0';
	v = parse_value(&ps);
	if (v) {
		skip_ws(&ps);
		if (ps.p != ps.end) {
			fail(&ps, "trailing characters");
			v = NULL;
		}
	}
	return v;
}
