#ifndef ESBRIDGE_FUZZ_H
#define ESBRIDGE_FUZZ_H

/*
 * Shared by the libFuzzer targets: a failed invariant prints what broke and
 * aborts, which libFuzzer reports as a crash (and saves the input).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, ...)                                                     \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, \
				__LINE__, #cond);                                 \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
			abort();                                                  \
		}                                                                 \
	} while (0)

/*
 * Well-formed UTF-8 (RFC 3629), decoded code point by code point: a
 * deliberately different implementation from json_utf8_valid (src/json.c),
 * so that the targets do not check the program against itself.
 */
static inline bool fuzz_utf8_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned long cp;
		size_t len;
		unsigned char c = p[i];

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
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		/* overlong forms, surrogates, beyond Unicode */
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += len;
	}
	return true;
}

/* A message that may end up in a log line or a dead letter row. */
static inline void fuzz_check_message(const char *what, const char *msg)
{
	size_t n = 0;

	while (msg[n])
		n++;
	FUZZ_CHECK(n > 0, "%s: empty message", what);
	FUZZ_CHECK(fuzz_utf8_ok(msg, n), "%s: message is not valid UTF-8: %s", what, msg);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(msg[i] != '\n' && msg[i] != '\r', "%s: message is not one line: %s", what, msg);
}

#endif
