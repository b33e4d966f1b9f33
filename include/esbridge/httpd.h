#ifndef ESBRIDGE_HTTPD_H
#define ESBRIDGE_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include "esbridge/buf.h"

/*
 * A small HTTP server on the loop, for /metrics and /health: GET and HEAD
 * only, one request per connection (Connection: close), requests of at
 * most 8 KiB, each connection closed after 10 s whatever its state. Knows
 * nothing of what it serves.
 */

struct httpd;

/*
 * Answers a GET of `path` (without the query string): writes the body into
 * `body`, points `*content_type` at a static string, and returns the HTTP
 * status.
 */
typedef int (*httpd_handler_fn)(void *arg, const char *path, struct buf *body,
				const char **content_type);

/*
 * Listens on `address`, "HOST:PORT" or "[V6]:PORT" (port 0: any free port).
 * NULL with `err` set.
 */
struct httpd *httpd_new(struct ev_loop *loop, const char *address, httpd_handler_fn fn, void *arg,
			char *err, size_t errsz);

/* The request reader (pure, for tests and fuzzing). */

#define HTTPD_REQUEST_MAX 8192

/* Whether the request text so far (NUL-terminated) holds the whole head. */
bool httpd_request_complete(const char *req);

/*
 * Reads the request line of a complete request head: GET or HEAD, and the
 * path without its query string (NUL-terminated, at most `pathsz - 1`
 * bytes; a longer one is cut). Returns 0 with `*head` set, or the HTTP
 * status to answer: 400 (not a request line), 405 (another method).
 */
int httpd_request_line(const char *req, char *path, size_t pathsz, bool *head);

/* The port it listens on. */
int httpd_port(const struct httpd *h);

/* Closes the listening socket and every connection. */
void httpd_free(struct httpd *h);

#endif
