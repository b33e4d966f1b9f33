#ifndef ESBRIDGE_JSON_H
#define ESBRIDGE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/*
 * Parsing event payloads fast: a strict JSON parser that builds yajl_val
 * trees (the type projections already read) inside an arena, so a tree
 * costs no malloc per node and is freed with its arena in one go.
 *
 * Differences from yajl_tree_parse: numbers keep their text in
 * u.number.r; whole numbers that fit a long long also get u.number.i and
 * YAJL_NUMBER_INT_VALID; no double is computed (YAJL_NUMBER_DOUBLE_VALID is
 * never set). Strings are unescaped (\uXXXX surrogate pairs included; a lone
 * surrogate is an error) and must be well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), so that what is
 * parsed here can be written again without a second check. Nesting deeper
 * than JSON_MAX_DEPTH is an error. Duplicate keys are kept.
 */

#define JSON_MAX_DEPTH 64

struct arena_chunk;

/* Memory handed out in 8-byte aligned pieces, freed all at once. */
struct arena {
	struct arena_chunk *chunks;
	char *cur, *end;
	size_t total;  /* bytes allocated in chunks */
};

#define ARENA_INIT { NULL, NULL, NULL, 0 }

void *arena_alloc(struct arena *a, size_t n);
void arena_release(struct arena *a);

/* True if the `n` bytes at `s` are well-formed UTF-8 (RFC 3629). */
bool json_utf8_valid(const char *s, size_t n);

/*
 * The length of the character at `s`, before `end`: 1 for an ASCII byte
 * (NUL included), 2 to 4 for a well-formed sequence (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), 0 for anything else (an
 * ill-formed byte, a sequence cut short by `end`) and when `s` >= `end`.
 */
size_t json_utf8_len(const unsigned char *s, const unsigned char *end);

/*
 * The length of the longest prefix of the string `s` of at most `max` bytes
 * that is well-formed UTF-8 and ends between characters (it stops before
 * the first ill-formed byte): a text cut for a message or a fixed-size
 * field stays valid UTF-8.
 */
size_t json_utf8_prefix(const char *s, size_t max);

/*
 * Copies the string `s` into `dst` as one line of well-formed UTF-8 for a
 * message: cut on a character boundary to at most `dstsz` - 1 bytes (and a
 * NUL; `dstsz` > 0), every control character and every ill-formed byte
 * shown as '?'. Returns the length written.
 */
size_t json_utf8_show(char *dst, size_t dstsz, const char *s);

/* Generates the NUL-terminated string `s` (no UTF-8 check of ours). */
static inline yajl_gen_status json_gen_str(yajl_gen g, const char *s)
{
	return yajl_gen_string(g, (const unsigned char *)s, strlen(s));
}

/* The parser's working stack, reused across calls; freed by its owner. */
struct json_scratch {
	yajl_val *stack;
	const char **keys;
	size_t cap;
};

#define JSON_SCRATCH_INIT { NULL, NULL, 0 }

void json_scratch_release(struct json_scratch *sc);

/*
 * Parses `len` bytes at `s` into a tree living in `a`. NULL on a syntax
 * error or no memory, with a one-line reason in `err`.
 */
yajl_val json_parse(struct arena *a, struct json_scratch *sc, const char *s, size_t len,
		    char *err, size_t errsz);

#endif
