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

/* The port /metrics listens on, or 0 when off. */
int monitor_port(const struct monitor *m);

void monitor_free(struct monitor *m);

#endif
