#ifndef ESBRIDGE_REBUILD_H
#define ESBRIDGE_REBUILD_H

#include <stddef.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/projection.h"
#include "esbridge/state.h"

/*
 * The generation lifecycle: a generation is a concrete index NAME-00000N
 * created from mappings/NAME.json, recorded in PostgreSQL, loaded while
 * building (refresh off), and made visible by moving the read alias NAME to
 * it in one POST _aliases once it has caught up.
 */

/* Formats the index name of generation `number` of `proj`. */
void rebuild_index_name(const char *proj, int number, char *out, size_t outsz);

/*
 * Finds the generation to run for `proj`, or creates generation 1 (state
 * first, then the index); reconciles a building generation the alias
 * already names (a crash between the alias move and the state update).
 */
__attribute__((warn_unused_result))
int rebuild_prepare(struct state *st, struct es_client *es, const struct config *cfg,
		    const struct projection *proj, struct generation *g,
		    char *err, size_t errsz);

/*
 * Makes a caught-up generation the one readers see: restores its refresh
 * interval, refreshes it, moves the alias to it (removing it from any other
 * index in the same request) and records it as active.
 */
__attribute__((warn_unused_result))
int rebuild_activate(struct state *st, struct es_client *es, const struct projection *proj,
		     struct generation *g, char *err, size_t errsz);

#endif
