#ifndef ESBRIDGE_LEDGER_H
#define ESBRIDGE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>

#include "esbridge/event.h"
#include "esbridge/json.h"

/*
 * The ledger of a pipeline: its reads from the event store, oldest first,
 * each with the events of it not settled yet (acknowledged by the cluster or
 * recorded as dead letters). The checkpoint may pass a read only once it and
 * every read before it are settled: events settle in any order across
 * lanes, the checkpoint moves in read order only.
 */

/* One read; settled once all its events are. */
struct rbatch {
	struct rbatch *next;
	struct position last;  /* its last event: where the checkpoint goes once it is settled */
	size_t unsettled;
	size_t bytes;          /* the events' data read (max-unsettled-bytes) */
	struct arena arena;    /* the parsed events; operations point into it */
	long long *retried;    /* dead letters applied again by this read */
	size_t n_retried;
};

struct ledger {
	struct rbatch *head, *tail;
	size_t unsettled;      /* events of every read not settled yet */
	size_t bytes;          /* data of the reads not popped yet */
};

/* Appends an empty read (owned by the ledger); NULL when out of memory. */
struct rbatch *ledger_append(struct ledger *l);

/* One more event of `rb` waits to be settled. */
void ledger_hold(struct ledger *l, struct rbatch *rb);

/* `n` events of `rb` are settled. */
void ledger_settle(struct ledger *l, struct rbatch *rb, size_t n);

/* The oldest read when it is settled (the checkpoint may pass it), else NULL. */
struct rbatch *ledger_settled(const struct ledger *l);

/* Frees the oldest read (settled, from ledger_settled); returns its last event. */
struct position ledger_pop(struct ledger *l);

/* Frees every read. */
void ledger_release(struct ledger *l);

#endif
