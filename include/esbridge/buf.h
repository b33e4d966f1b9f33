#ifndef ESBRIDGE_BUF_H
#define ESBRIDGE_BUF_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A growable byte buffer with a hard cap and a sticky failure flag.
 *
 * Invariants:
 *  - `data` is never NULL and `data[len]` is always '\0', even for a buffer
 *    that has never allocated (it then points at a static empty string).
 *  - `len <= cap_limit`; an append that would pass the limit fails with
 *    BUF_TOO_LARGE, frees the contents and sets the sticky error: every later
 *    append is a no-op until buf_reset() or buf_release(). Callers that
 *    stream into the buffer (yajl's print callback cannot fail) check
 *    buf_error() once at the end.
 *  - The buffer owns `data` until buf_take() hands it to the caller.
 */

enum buf_error {
	BUF_OK = 0,
	BUF_NOMEM,
	BUF_TOO_LARGE,
};

struct buf {
	char *data;
	size_t len;
	size_t alloc;     /* bytes allocated; 0 while data is the static "" */
	size_t limit;     /* the hard cap on len */
	enum buf_error err;
};

extern char buf_empty_[1];

#define BUF_INIT(lim) { .data = buf_empty_, .len = 0, .alloc = 0, .limit = (lim), .err = BUF_OK }

/* Sets up an empty buffer that may grow up to `limit` bytes. */
void buf_init(struct buf *b, size_t limit);

/* Frees the contents; the buffer is empty and usable again. */
void buf_release(struct buf *b);

/* Empties the buffer and clears the error, keeping the allocation. */
void buf_reset(struct buf *b);

/* Shortens the contents to their first `len` bytes (no-op when not longer), keeping data[len] = '\0'. */
void buf_truncate(struct buf *b, size_t len);

/* Appends; return the sticky error (BUF_OK on success). */
enum buf_error buf_append(struct buf *b, const void *p, size_t n);
enum buf_error buf_append_str(struct buf *b, const char *s);
enum buf_error buf_append_char(struct buf *b, char c);
__attribute__((format(printf, 2, 3)))
enum buf_error buf_printf(struct buf *b, const char *fmt, ...);

/* Makes room for `n` more bytes without changing len. */
enum buf_error buf_reserve(struct buf *b, size_t n);

/* The sticky error, or BUF_OK. */
static inline enum buf_error buf_error(const struct buf *b) { return b->err; }

/* A human-readable name of an error. */
const char *buf_strerror(enum buf_error e);

/*
 * Hands the bytes to the caller, who frees them with free(); `*len` gets the
 * length. Returns NULL if the buffer is in error. The buffer is left empty.
 * Never returns the static empty string: an empty buffer yields a fresh
 * one-byte allocation.
 */
char *buf_take(struct buf *b, size_t *len);

#endif
