#ifndef ESBRIDGE_STORE_H
#define ESBRIDGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esbridge/event.h"

/*
 * The event store: gap-safe batch reads of the events table in commit order,
 * LISTEN wake-ups. Knows nothing of Elasticsearch. Never writes to events.
 *
 * A read returns events after a position, in (transaction_id,
 * global_position) order, and only of transactions below the snapshot's
 * xmin: every transaction that could still commit an event before the
 * returned ones is finished, so no event is ever passed over.
 */

#define STORE_CHANNEL "esbridge_events"

struct store;

/* Connects; NULL with `err` set. The caller frees with store_close(). */
struct store *store_open(const char *conninfo, char *err, size_t errsz);
void store_close(struct store *s);

/* LISTEN on STORE_CHANNEL. */
__attribute__((warn_unused_result))
int store_listen(struct store *s, char *err, size_t errsz);

/*
 * Reconnects after the connection was lost (LISTEN again when `listen`).
 * The socket may change: watch store_socket() anew.
 */
__attribute__((warn_unused_result))
int store_reconnect(struct store *s, bool listen, char *err, size_t errsz);

/* True while the connection is up. */
bool store_connected(const struct store *s);

/* The connection's socket, to watch for notifications. */
int store_socket(const struct store *s);

/*
 * Reads what arrived on the socket and drops pending notifications.
 * Returns how many there were, or -1 if the connection is lost.
 */
int store_drain_notifies(struct store *s);

/* The xmin of a fresh snapshot: every transaction below it is finished. */
__attribute__((warn_unused_result))
int store_xmin(struct store *s, uint64_t *xmin, char *err, size_t errsz);

/* A batch of events; owned by the caller, freed with store_batch_release(). */
struct store_batch {
	void *res;  /* the PGresult */
	int n;
	bool more;  /* store_read: it stopped at its limit or its bytes, not at the head */
};

/*
 * Reads at most `limit` events after `after` that have one of the given
 * types or a stream_id starting with one of `streams` (NULL-terminated, or
 * NULL for none), and no more than `max_bytes` of data (the first event
 * whatever its size). When `bound` is non-zero, only events of transactions
 * below it are read (used to stop at the head as it was at a given moment).
 * out->more tells whether it stopped short of the head.
 */
__attribute__((warn_unused_result))
int store_read(struct store *s, struct position after, uint64_t bound,
	       const char *const *types, const char *const *streams, int limit, size_t max_bytes,
	       struct store_batch *out, char *err, size_t errsz);

/*
 * The last event, in commit order, of the transactions below a fresh
 * snapshot's xmin (and below `bound` when non-zero); {0, 0} if none. Read
 * BEFORE a read that then comes back short, every event up to it of the
 * types asked for was in that read: a projection whose events are rare can
 * move on to it instead of scanning the others' events again.
 */
__attribute__((warn_unused_result))
int store_head(struct store *s, uint64_t bound, struct position *head, char *err, size_t errsz);

/* Reads the events at the given positions again, in commit order. */
__attribute__((warn_unused_result))
int store_read_positions(struct store *s, const struct position *at, size_t n,
			 struct store_batch *out, char *err, size_t errsz);

/* Fills `ev` with event `i` of the batch (pointers into the batch). */
void store_batch_event(const struct store_batch *b, int i, struct event *ev);
void store_batch_release(struct store_batch *b);

/*
 * The statements the store sends on the events table, for the plan tests
 * (tests/integration/test_store.c): read ($1 txid, $2 pos, $3 bound or
 * NULL, $4 types, $5 limit, $6 stream prefixes, $7 bytes), head ($1 bound or NULL),
 * by position ($1 bigint[]).
 */
extern const char store_read_sql[];
extern const char store_head_sql[];
extern const char store_by_position_sql[];

/* Renders NULL-terminated strings as a text[] literal (a parameter), quoted and escaped;
 * NULL renders the empty array '{}'. */
struct buf;
int store_text_array(const char *const *items, struct buf *out);

/* Parses an unsigned decimal; -1 if not one. */
int store_parse_u64(const char *s, uint64_t *out);

#endif
