#ifndef ESBRIDGE_PIPELINE_H
#define ESBRIDGE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/projection.h"
#include "esbridge/state.h"

/*
 * One projection generation in motion: read a batch after the checkpoint →
 * fold the events into per-document operations → send _bulk requests →
 * settle every item → move the checkpoint past what is settled.
 *
 * Per-document order with several requests in flight: each document is
 * routed by a hash of its _id to one of `inflight` lanes, and a lane has at
 * most one request in flight; the events of one document therefore reach
 * Elasticsearch in order. The checkpoint moves only past a read batch all of
 * whose events are settled, and everything before it.
 */

struct pipeline;

#define PIPELINE_TYPES_MAX 32        /* event types counted one by one */
#define PIPELINE_LATENCY_BUCKETS 12  /* bounds in pipeline_latency_bounds, then +Inf */

extern const double pipeline_latency_bounds[PIPELINE_LATENCY_BUCKETS - 1];

struct pipeline_stats {
	uint64_t events;        /* events read */
	uint64_t actions;       /* bulk actions sent (after coalescing) */
	uint64_t requests;      /* _bulk requests that completed */
	uint64_t retries;       /* _bulk requests sent again */
	uint64_t dead_letters;  /* events sent to the dead letters (held ones included) */
	uint64_t bytes;         /* bytes of _bulk bodies sent */
	/* events read by type: the projection's event_types in order, then others */
	uint64_t by_type[PIPELINE_TYPES_MAX + 1];
	uint64_t requests_failed;  /* no usable answer, or not HTTP 200 */
	uint64_t items_ok, items_retry, items_rejected;
	uint64_t items_noop;       /* of items_ok: "result":"noop", the document unchanged */
	uint64_t inflight_bytes;   /* bodies of the requests in flight */
	/* _bulk round trips, seconds: counts per bucket (not cumulative), sum */
	uint64_t latency[PIPELINE_LATENCY_BUCKETS];
	double latency_sum;
	double last_advance;       /* ev_now() when the checkpoint last moved (or start) */
	double failing_since;      /* 0, or when requests began to fail (Elasticsearch down) */
	bool store_down;           /* the event store connection is being re-established */
	char last_error[256];      /* the last error or warning, for status and health */
};

/*
 * What the owner of a pipeline hears, from the loop:
 *  - caught_up: at the head, everything read settled and committed (once
 *    per wake-up that finds nothing newer);
 *  - paused: after pipeline_pause, once nothing is in flight and the
 *    checkpoint is committed;
 *  - finished: stopped for good (pipeline_exit_code tells how).
 */
struct pipeline_hooks {
	void (*caught_up)(void *arg, struct pipeline *p);
	void (*paused)(void *arg, struct pipeline *p);
	void (*finished)(void *arg, struct pipeline *p);
	void *arg;
};

/*
 * Creates the pipeline of generation `gen` of `proj`, whose index exists.
 * It connects to PostgreSQL for its reads; checkpoints and dead letters go
 * through `st`, which the caller owns and keeps open. With `once`, it stops
 * after catching up to the head as it was at start. NULL with `err` set.
 */
struct pipeline *pipeline_new(struct ev_loop *loop, const struct config *cfg,
			      const struct projection *proj, struct es_client *es, struct state *st,
			      const struct generation *gen, bool once, char *err, size_t errsz);

/* Starts reading. */
void pipeline_start(struct pipeline *p, const struct pipeline_hooks *hooks);

/* Stops reading, lets the requests in flight end, commits, then finishes. */
void pipeline_stop(struct pipeline *p);

/* Stops reading until pipeline_resume; the paused hook tells when it is still. */
void pipeline_pause(struct pipeline *p);
void pipeline_resume(struct pipeline *p);

/* Reads again now (the head may have moved). */
void pipeline_wake(struct pipeline *p);

/* Stops on an error: logs `why`, never moves the checkpoint again. */
void pipeline_fail(struct pipeline *p, const char *why);

/* The committed checkpoint. */
struct position pipeline_checkpoint(const struct pipeline *p);

/* The generation it runs (a copy the owner may update). */
const struct generation *pipeline_generation(const struct pipeline *p);
void pipeline_set_generation_state(struct pipeline *p, enum gen_state s);

bool pipeline_finished(const struct pipeline *p);

/*
 * 0 if it finished cleanly, 1 if it stopped on an error, PIPELINE_EXIT_LOST
 * if it stopped because the state connection (and with it the projection's
 * lock) was lost: the owner starts the projection over.
 */
#define PIPELINE_EXIT_LOST 3
int pipeline_exit_code(const struct pipeline *p);

/* Dead letters were marked for retry or discarded: look at them again. */
void pipeline_letters_changed(struct pipeline *p);

const struct pipeline_stats *pipeline_get_stats(const struct pipeline *p);

/* Stops every watcher and frees everything. */
void pipeline_free(struct pipeline *p);

#endif
