#ifndef ESBRIDGE_ANSWERS_H
#define ESBRIDGE_ANSWERS_H

#include <stddef.h>

/*
 * Answers of Elasticsearch (and OpenSearch) whose shape differs between the
 * versions esbridge speaks to; the README's compatibility table lists them.
 * The _bulk response is read by bulk.h.
 */

/*
 * Reads the 2xx answer of POST /_aliases (`len` bytes at `body`). 0 when
 * every action was applied:
 *   {"acknowledged":true}                     Elasticsearch 7.x, 8.0-8.13, OpenSearch 2.x
 *   {"acknowledged":true,"errors":false}      Elasticsearch 8.14 and later
 * -1, with the first failed action in `err`, when 8.14 and later answer
 * 200 with "errors":true and per-action "action_results" (actions applied
 * in part: the alias may have moved only half-way). An answer that is not
 * JSON is an error too.
 */
__attribute__((warn_unused_result))
int answers_aliases(const char *body, size_t len, char *err, size_t errsz);

#endif
