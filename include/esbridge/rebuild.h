#ifndef ESBRIDGE_REBUILD_H
#define ESBRIDGE_REBUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/event.h"
#include "esbridge/projection.h"

/*
 * The generation lifecycle of one projection: a generation is a concrete
 * index NAME-00000N created from mappings/NAME.json with bulk-load settings
 * (refresh off, no replicas), recorded in PostgreSQL (building → ready →
 * active → retired), and shown to readers by moving the alias NAME to it in
 * one POST _aliases once it has caught up.
 *
 * A runner owns one projection in this process: the PostgreSQL advisory
 * lock that makes it the projection's only writer, the pipeline of the
 * active generation, and during a rebuild the pipeline of the new one.
 *
 * Rebuild: the new generation catches up from the start of the store while
 * the active one keeps following; then the active pipeline pauses (its
 * requests in flight end, its checkpoint is committed), the new one reads
 * to the head once more, its settings are restored and it is refreshed, the
 * alias moves, the state records it as active and the old one as retired,
 * and the new pipeline goes on following. Retired indices beyond the newest
 * `keep` are deleted. Every step is in PostgreSQL or in the alias, so a stop
 * at any point resumes (a building generation goes on catching up) or is
 * reconciled (an alias already moved wins) by runner_new.
 */

#define RUNNER_MAX_GENERATIONS 64

/* Formats the index name of generation `number` of `proj`. */
void rebuild_index_name(const char *proj, int number, char *out, size_t outsz);

struct projection;

struct runner;

struct runner_opts {
	bool once;               /* catch up to the head as it was at start, then stop */
	bool exit_after_rebuild; /* stop once a rebuild has swapped */
	bool no_wait;            /* if another process owns the projection, fail at once */
	bool *busy;              /* set when that is why runner_new failed */
};

typedef void (*runner_done_fn)(void *arg, struct runner *r);

/* Takes the projection, reconciles its state and prepares its pipelines. */
struct runner *runner_new(struct ev_loop *loop, const struct config *cfg,
			  const struct projection *proj, struct es_client *es,
			  const struct runner_opts *opts, char *err, size_t errsz);
void runner_start(struct runner *r, runner_done_fn done, void *arg);

/* Starts a rebuild keeping `keep` retired indices; -1 with `err` if one runs. */
__attribute__((warn_unused_result))
int runner_rebuild(struct runner *r, int keep, char *err, size_t errsz);

/* How many retired indices the running (or resumed) rebuild keeps. */
void runner_set_keep(struct runner *r, int keep);

/* True once a rebuild moved the alias in this process. */
bool runner_swapped(const struct runner *r);

/* Why a rebuild stopped before its swap (it will not be shown as it is), or NULL. */
const char *runner_stop_reason(const struct runner *r);

/* Drains every pipeline, then `done` runs. */
void runner_stop(struct runner *r);
int runner_exit_code(const struct runner *r);

struct runner_progress {
	int generation;           /* the generation being built, or the active one */
	bool rebuilding;
	uint64_t events;          /* events read by it in this process */
	struct position checkpoint;
	double last_pause;        /* seconds the alias's writes paused at the last swap */
};

int runner_progress(const struct runner *r, struct runner_progress *out);

/* Its pipelines: the active one, then the one being built; returns how many. */
struct pipeline;
int runner_pipelines(const struct runner *r, const struct pipeline **out);

/* Frees everything (the pipelines must be finished or never started). */
void runner_free(struct runner *r);

#endif
