#include "esbridge/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char buf_empty_[1];

void buf_init(struct buf *b, size_t limit)
{
	b->data = buf_empty_;
	b->len = 0;
	b->alloc = 0;
	b->limit = limit;
	b->err = BUF_OK;
}

void buf_release(struct buf *b)
{
	if (b->alloc)
		free(b->data);
	buf_init(b, b->limit);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	b->data[0] = '\0';
	b->err = BUF_OK;
}

void buf_truncate(struct buf *b, size_t len)
{
	if (len >= b->len)
		return;
	b->len = len;
	b->data[len] = '\0';
}

static enum buf_error buf_fail(struct buf *b, enum buf_error e)
{
	size_t limit = b->limit;

	buf_release(b);
	b->limit = limit;
	b->err = e;
	return e;
}

enum buf_error buf_reserve(struct buf *b, size_t n)
{
	size_t need, nalloc;
	char *p;

	if (b->err)
		return b->err;
	if (n > b->limit || b->len > b->limit - n)
		return buf_fail(b, BUF_TOO_LARGE);
	need = b->len + n + 1;
	if (need <= b->alloc)
		return BUF_OK;
	nalloc = b->alloc ? b->alloc : 256;
	while (nalloc < need)
		nalloc = nalloc > ((size_t)-1) / 2 ? need : nalloc * 2;
	if (nalloc > b->limit + 1)
		nalloc = b->limit + 1;
	p = b->alloc ? realloc(b->data, nalloc) : malloc(nalloc);
	if (!p)
		return buf_fail(b, BUF_NOMEM);
	if (!b->alloc)
		p[0] = '\0';
	b->data = p;
	b->alloc = nalloc;
	return BUF_OK;
}

enum buf_error buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->err)
		return b->err;
	if (n == 0)
		return BUF_OK;
	if (buf_reserve(b, n))
		return b->err;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return BUF_OK;
}

enum buf_error buf_append_str(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

enum buf_error buf_append_char(struct buf *b, char c)
{
	return buf_append(b, &c, 1);
}

enum buf_error buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return b->err;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return buf_fail(b, BUF_NOMEM);
	if (buf_reserve(b, (size_t)n))
		return b->err;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return BUF_OK;
}

const char *buf_strerror(enum buf_error e)
{
	switch (e) {
	case BUF_OK:
		return "ok";
	case BUF_NOMEM:
		return "out of memory";
	case BUF_TOO_LARGE:
		return "too large";
	}
	return "unknown error";
}

char *buf_take(struct buf *b, size_t *len)
{
	char *p;

	if (b->err)
		return NULL;
	if (!b->alloc) {
		p = malloc(1);
		if (!p)
			return NULL;
		p[0] = '\0';
		*len = 0;
		return p;
	}
	p = b->data;
	*len = b->len;
	b->data = buf_empty_;
	b->len = 0;
	b->alloc = 0;
	return p;
}
