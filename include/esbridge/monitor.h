#ifndef ESBRIDGE_MONITOR_H
#define ESBRIDGE_MONITOR_H

#include <stddef.h>

#include <ev.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/projection.h"
#include "esbridge/rebuild.h"

/*
 * What an operator watches: every stats-interval seconds an info line per
 * generation (events/s, lag); with metrics-address, an HTTP endpoint with
 * Prometheus text at /metrics and a health verdict at /health.
 *
 * The numbers that live in PostgreSQL (head, lag, events held back by open
 * transactions, open dead letters) are read on a connection of its own,
 * asynchronously, every few seconds; the rest comes from the pipelines.
 * With the endpoint on, Elasticsearch is pinged as often, so /health
 * notices it is gone while the daemon is idle.
 */

struct monitor;

/*
 * The statement that reads a generation's numbers ($1 types, $2 stream
 * prefixes, $3/$4 the checkpoint, $5 projection, $6 generation); for the
 * plan tests.
 */
extern const char monitor_numbers_sql[];

/* A projection this process owns; `runner` is NULL while it starts over. */
struct monitor_source {
	const struct projection *proj;
	struct runner *runner;
};

/* Fills `out` (at most `max`) with the projections owned now; returns how many. */
typedef int (*monitor_sources_fn)(void *arg, struct monitor_source *out, int max);

/* NULL with `err` set (e.g. the metrics address cannot be bound). */
struct monitor *monitor_new(struct ev_loop *loop, const struct config *cfg, struct es_client *es,
			    monitor_sources_fn sources, void *arg, char *err, size_t errsz);

/* A projection's generation: the key of what the monitor keeps per generation. */
struct monitor_gen {
	const struct projection *proj;
	int gen;
};

/*
 * Drops from `table` (its `n` entries of `size` bytes, each beginning with a
 * struct monitor_gen) those whose generation is not in `live`, keeping the
 * order of the rest; returns how many are left. Every tick the monitor drops
 * the generations no pipeline runs any more (each rebuild makes a new one).
 */
int monitor_forget(void *table, size_t size, int n, const struct monitor_gen *live, int n_live);

/* The port /metrics listens on, or 0 when off. */
int monitor_port(const struct monitor *m);

void monitor_free(struct monitor *m);

#endif
