#ifndef ESBRIDGE_FUZZ_JSON_H
#define ESBRIDGE_FUZZ_JSON_H

/*
 * Oracles from the real yajl library for the targets: src/json.c must
 * accept only what yajl accepts, build the same tree, and accept the plain
 * JSON that yajl accepts.
 */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "esbridge/json.h"

#include "fuzz.h"

/* yajl's tree of `len` bytes (NUL-terminated copy); NULL if yajl refuses. */
static inline yajl_val fuzz_yajl_tree(const char *s, size_t len, char *err, size_t errsz)
{
	char *copy = malloc(len + 1);
	yajl_val v;

	FUZZ_CHECK(copy != NULL, "out of memory");
	memcpy(copy, s, len);
	copy[len] = '\0';
	v = yajl_tree_parse(copy, err, errsz);
	free(copy);
	return v;
}

/* yajl without comments (its default), over exactly `len` bytes. */
static inline bool fuzz_yajl_strict_ok(const char *s, size_t len)
{
	yajl_handle h = yajl_alloc(NULL, NULL, NULL);
	bool ok;

	FUZZ_CHECK(h != NULL, "out of memory");
	ok = yajl_parse(h, (const unsigned char *)s, len) == yajl_status_ok &&
	     yajl_complete_parse(h) == yajl_status_ok;
	yajl_free(h);
	return ok;
}

/*
 * Text whose meaning no documented difference between the two parsers can
 * touch: printable ASCII and JSON whitespace, no backslash (so no \u0000,
 * no lone surrogate), nesting within JSON_MAX_DEPTH, every string closed
 * (yajl 2.1 accepts an unterminated string after a complete value: its
 * lexer waits for more input, and yajl_complete_parse does not object).
 */
static inline bool fuzz_json_plain(const char *s, size_t len)
{
	int depth = 0, max = 0;
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\\' || c >= 0x7f || (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r'))
			return false;
		if (c == '"')
			in_string = !in_string;
		else if (!in_string && (c == '{' || c == '['))
			max = ++depth > max ? depth : max;
		else if (!in_string && (c == '}' || c == ']'))
			depth--;
	}
	return !in_string && max <= JSON_MAX_DEPTH;
}

/* Whole number text by strtoll (an oracle independent of src/json.c). */
static inline bool fuzz_integer_text(const char *r, long long *out)
{
	char *end;

	if (strpbrk(r, ".eE"))
		return false;
	errno = 0;
	*out = strtoll(r, &end, 10);
	return errno == 0 && end != r && *end == '\0';
}

/* The two trees are equal: types, strings, number texts, keys in order. */
static inline void fuzz_same_tree(yajl_val ours, yajl_val ref, const char *where)
{
	long long i;

	FUZZ_CHECK(ours && ref, "%s: missing node", where);
	FUZZ_CHECK(ours->type == ref->type, "%s: type %d, yajl says %d", where, (int)ours->type,
		   (int)ref->type);
	switch (ours->type) {
	case yajl_t_string:
		FUZZ_CHECK(!strcmp(ours->u.string, ref->u.string), "%s: string '%s', yajl says '%s'", where,
			   ours->u.string, ref->u.string);
		break;
	case yajl_t_number:
		FUZZ_CHECK(!strcmp(ours->u.number.r, ref->u.number.r), "%s: number '%s', yajl says '%s'",
			   where, ours->u.number.r, ref->u.number.r);
		if (fuzz_integer_text(ours->u.number.r, &i)) {
			FUZZ_CHECK(YAJL_IS_INTEGER(ours) && ours->u.number.i == i,
				   "%s: '%s' is a whole number that fits", where, ours->u.number.r);
		} else {
			FUZZ_CHECK(!YAJL_IS_INTEGER(ours), "%s: '%s' is not a whole number that fits", where,
				   ours->u.number.r);
		}
		break;
	case yajl_t_object:
		FUZZ_CHECK(ours->u.object.len == ref->u.object.len, "%s: %zu members, yajl says %zu", where,
			   ours->u.object.len, ref->u.object.len);
		for (size_t k = 0; k < ours->u.object.len; k++) {
			FUZZ_CHECK(!strcmp(ours->u.object.keys[k], ref->u.object.keys[k]),
				   "%s: key '%s', yajl says '%s'", where, ours->u.object.keys[k],
				   ref->u.object.keys[k]);
			fuzz_same_tree(ours->u.object.values[k], ref->u.object.values[k], where);
		}
		break;
	case yajl_t_array:
		FUZZ_CHECK(ours->u.array.len == ref->u.array.len, "%s: %zu elements, yajl says %zu", where,
			   ours->u.array.len, ref->u.array.len);
		for (size_t k = 0; k < ours->u.array.len; k++)
			fuzz_same_tree(ours->u.array.values[k], ref->u.array.values[k], where);
		break;
	case yajl_t_true:
	case yajl_t_false:
	case yajl_t_null:
	case yajl_t_any:
		break;
	}
}

/*
 * Checks one json_parse result against yajl: a tree (non-NULL `ours`) must
 * be yajl's tree; a refusal must not be of plain JSON that yajl takes; a
 * refusal's reason is one line of UTF-8 (it may become a dead letter).
 */
static inline void fuzz_check_parse(const char *s, size_t len, yajl_val ours, const char *perr,
				    const char *where)
{
	if (ours) {
		char yerr[256];
		yajl_val ref = fuzz_yajl_tree(s, len, yerr, sizeof(yerr));
		FUZZ_CHECK(ref != NULL, "%s: json_parse accepted what yajl refuses: %s", where, yerr);
		fuzz_same_tree(ours, ref, where);
		yajl_tree_free(ref);
		return;
	}
	fuzz_check_message(where, perr);
	FUZZ_CHECK(!(fuzz_json_plain(s, len) && fuzz_yajl_strict_ok(s, len)),
		   "%s: json_parse refused plain JSON that yajl accepts: %s", where, perr);
}

#endif
