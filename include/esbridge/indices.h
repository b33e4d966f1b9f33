#ifndef ESBRIDGE_INDICES_H
#define ESBRIDGE_INDICES_H

#include <stdbool.h>
#include <stddef.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/projection.h"

/*
 * Index administration on the cluster, through es_request_sync: an index
 * is created from its mapping file, mappings/ALIAS.json; while it is built
 * it has bulk-load settings (refresh off, no replicas), restored from the
 * mapping file when it is shown; aliases move in one POST _aliases. Every
 * call returns 0, or -1 with a one-line `err`. Knows nothing of generations
 * or the bridge state (rebuild.c does).
 */

/*
 * Before anything starts: the mapping file of every index of `proj` can be
 * read and is a JSON object. -1 with `err` naming the file (a configuration
 * error) if not.
 */
__attribute__((warn_unused_result))
int indices_check_mappings(const struct config *cfg, const struct projection *proj, char *err, size_t errsz);

/* Creates `index` from the mapping file of `alias`, with bulk-load settings: 1 if created, 0 if it was there, -1. */
__attribute__((warn_unused_result))
int indices_create(struct es_client *es, const struct config *cfg, const char *alias, const char *index,
		   char *err, size_t errsz);

/* With `loading`, the bulk-load settings; without, the mapping file's own (or the defaults). */
__attribute__((warn_unused_result))
int indices_settings(struct es_client *es, const struct config *cfg, const char *alias, const char *index,
		     bool loading, char *err, size_t errsz);

__attribute__((warn_unused_result))
int indices_refresh(struct es_client *es, const char *index, char *err, size_t errsz);

/* Whether `alias` names `index` now (*names). */
__attribute__((warn_unused_result))
int indices_alias_names(struct es_client *es, const char *alias, const char *index, bool *names, char *err,
			size_t errsz);

/*
 * In one POST _aliases: each aliases[k] is removed from every index that
 * holds it but indices[k], and added to indices[k]. Readers never see an
 * alias naming two indices, nor none.
 */
__attribute__((warn_unused_result))
int indices_move_aliases(struct es_client *es, const char *const *aliases, const char *const *indices, size_t n,
			 char *err, size_t errsz);

/* Deletes `index` (gone already: fine). */
__attribute__((warn_unused_result))
int indices_delete(struct es_client *es, const char *index, char *err, size_t errsz);

/* Installs (or replaces, identically) the stored script of BULK_SCRIPT. */
__attribute__((warn_unused_result))
int indices_put_script(struct es_client *es, char *err, size_t errsz);

#endif
