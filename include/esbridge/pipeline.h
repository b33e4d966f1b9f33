#ifndef ESBRIDGE_PIPELINE_H
#define ESBRIDGE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/projection.h"

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

struct pipeline_stats {
	uint64_t events;        /* events read */
	uint64_t actions;       /* bulk actions sent (after coalescing) */
	uint64_t requests;      /* _bulk requests that completed */
	uint64_t retries;       /* _bulk requests sent again */
	uint64_t dead_letters;  /* events sent to the dead letters */
	uint64_t bytes;         /* bytes of _bulk bodies sent */
};

typedef void (*pipeline_finish_fn)(void *arg, struct pipeline *p);

/*
 * Creates the pipeline of `proj` (connects to PostgreSQL, prepares the
 * generation and its index). With `once`, it stops after catching up to the
 * head as it was at start. NULL with `err` set.
 */
struct pipeline *pipeline_new(struct ev_loop *loop, const struct config *cfg,
			      const struct projection *proj, struct es_client *es, bool once,
			      char *err, size_t errsz);

/* Starts reading; `done` runs once the pipeline has finished. */
void pipeline_start(struct pipeline *p, pipeline_finish_fn done, void *arg);

/* Stops reading, lets the requests in flight end, commits, then finishes. */
void pipeline_stop(struct pipeline *p);

bool pipeline_finished(const struct pipeline *p);

/* 0 if it finished cleanly, 1 if it stopped on an error. */
int pipeline_exit_code(const struct pipeline *p);

const struct pipeline_stats *pipeline_get_stats(const struct pipeline *p);

/* Stops every watcher and frees everything. */
void pipeline_free(struct pipeline *p);

#endif
