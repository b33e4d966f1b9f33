#ifndef ESBRIDGE_ES_H
#define ESBRIDGE_ES_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include "esbridge/buf.h"
#include "esbridge/config.h"

/*
 * The Elasticsearch REST client: libcurl's multi interface driven by the
 * libev loop (socket watchers plus one timer), with connections reused
 * across requests. Knows nothing of the domain.
 *
 * Paths are relative to the configured base URL and start with '/'.
 *
 * Security: TLS verification is on unless cfg->insecure (--ca-file names
 * the CA bundle). Credentials come from the environment or a file (basic
 * auth: es-user + es-password / es-password-file; or an API key sent as
 * "Authorization: ApiKey ..."), or from a base URL set in the environment;
 * they never reach a log line or an error message (errors name the
 * redacted URL), and the client wipes its copies when freed.
 *
 * Transport: no "Expect: 100-continue" wait; with cfg->compress, bodies of
 * 1 KiB or more are sent gzip-compressed (Content-Encoding: gzip).
 */

struct es_client;

struct es_response {
	long status;          /* HTTP status; 0 when no response arrived */
	const char *body;     /* response body, NUL-terminated (valid during the callback) */
	size_t len;
	bool transport_error; /* no usable response: connect, timeout, reset... */
	const char *error;    /* a one-line description when transport_error */
};

typedef void (*es_done_fn)(void *arg, const struct es_response *r);

/* NULL with `err` set. Frees with es_client_free(). */
struct es_client *es_client_new(struct ev_loop *loop, const struct config *cfg,
				char *err, size_t errsz);

/* Aborts transfers still running (their callbacks are not called). */
void es_client_free(struct es_client *c);

/*
 * Starts a request; `done` runs from the loop when it ends, successful or
 * not. The client takes ownership of `body` (malloc'd, may be NULL) and
 * frees it when the transfer is over. `ndjson` selects the
 * application/x-ndjson content type. Returns 0, or -1 (then `body` has been
 * freed and `done` will not run).
 */
__attribute__((warn_unused_result))
int es_request(struct es_client *c, const char *method, const char *path,
	       char *body, size_t len, bool ndjson, es_done_fn done, void *arg);

/*
 * A blocking request, for setup steps outside the hot path. The response
 * body is appended to `resp`. Returns 0 when an HTTP response arrived (any
 * status, in `*status`), -1 with `err` set on a transport error.
 */
__attribute__((warn_unused_result))
int es_request_sync(struct es_client *c, const char *method, const char *path,
		    const char *body, size_t len, long *status, struct buf *resp,
		    char *err, size_t errsz);

#endif
