#ifndef ESBRIDGE_PROJECTION_H
#define ESBRIDGE_PROJECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yajl/yajl_tree.h>

#include "esbridge/buf.h"
#include "esbridge/bulk.h"
#include "esbridge/event.h"

/*
 * A projection turns events into document operations of one index. It knows
 * nothing of SQL or HTTP: the pipeline reads the events, parses their data
 * once, asks the projection which document an event touches, and lets it
 * fold the event into that document's pending operation (struct bulk_op),
 * so several events of one document in one request become one action.
 *
 * Adding a projection: one file under src/projections/, one mapping file
 * mappings/NAME.json, one line in the registry in src/projection.c.
 *
 * A projection may write several indices under one checkpoint (one event
 * then updates documents in more than one of them, and a rebuild builds a
 * new generation of each and moves every alias in one POST _aliases): it
 * names them in `indices` (one mapping file mappings/ALIAS.json each) and
 * gives doc_id_in() instead of doc_id().
 */

/* What apply() and doc_id() may answer besides 0. */
#define PROJECTION_REJECT (-1)  /* the event cannot be projected: dead letter */
#define PROJECTION_NEW_OP (-3)  /* apply(): the event cannot be folded into this
				 * operation; give it a new one for the same
				 * document, sent after this one */
#define PROJECTION_SKIP (-4)    /* doc_id_in(): the event touches no document of
				 * this index */

/* The most indices one projection writes. */
#define PROJECTION_MAX_INDICES 4

/* The longest identifier, in bytes: the limit of an Elasticsearch _id. */
#define PROJECTION_MAX_ID_BYTES 512

struct projection {
	const char *name;                 /* alias, index prefix, mapping file stem */
	const char *const *event_types;   /* the event types it reads, NULL-terminated */
	/*
	 * Prefixes of the stream ids it owns ("product-"), NULL-terminated, or
	 * NULL: an event in such a stream of a type it does not know is a dead
	 * letter, not silently skipped.
	 */
	const char *const *streams;

	/*
	 * Writes the _id of the document the event touches into `id`.
	 * 0, or PROJECTION_REJECT with the reason in `err`.
	 */
	int (*doc_id)(const struct event *ev, yajl_val data, struct buf *id,
		      char *err, size_t errsz);

	/*
	 * Folds the event into `op`, the pending operation of its document
	 * (kind BULK_NONE for the first event of the document in this request).
	 * Values taken from `data` may be stored as BV_JSON: the tree lives
	 * until the operation is sent; so does ev->created_at (BV_TEXT). The
	 * other strings of `ev` live only during the call. On PROJECTION_REJECT `op` must be left
	 * as it was. Returns -2 on no memory, PROJECTION_NEW_OP (leaving `op` as
	 * it was) when the event must start an action of its own.
	 */
	int (*apply)(const struct event *ev, yajl_val data, struct bulk_op *op,
		     char *err, size_t errsz);

	/*
	 * Several indices (NULL: the one index `name`): their aliases,
	 * NULL-terminated, at most PROJECTION_MAX_INDICES. Each is also the
	 * stem of its mapping file and the prefix of its generation indices
	 * (ALIAS-00000N); the first names the generation in esbridge.generations.
	 */
	const char *const *indices;

	/*
	 * With `indices`, instead of doc_id: the _id of the document the event
	 * touches in index `slot` (a position in `indices`), or PROJECTION_SKIP
	 * when it touches none there. The pipeline asks for every slot in turn;
	 * apply() then folds the event into that document's operation, whose
	 * `slot` says which index it belongs to. A rejection of one slot is a
	 * dead letter of the event there only.
	 */
	int (*doc_id_in)(const struct event *ev, yajl_val data, size_t slot, struct buf *id,
			 char *err, size_t errsz);
};

/* The registry: every projection, NULL-terminated. */
extern const struct projection *const projection_registry[];

/* Finds a projection by name; NULL if none. */
const struct projection *projection_find(const char *name);

/* How many indices the projection writes (1 without `indices`). */
size_t projection_n_indices(const struct projection *p);

/* The alias (and mapping stem, index prefix) of index `slot`. */
const char *projection_alias(const struct projection *p, size_t slot);

/* doc_id_in, or doc_id for slot 0 of a one-index projection. */
int projection_doc_id(const struct projection *p, const struct event *ev, yajl_val data,
		      size_t slot, struct buf *id, char *err, size_t errsz);

/*
 * Writes "unknown event type 'TYPE'" into `err`, the type cut to 64 bytes on
 * a character boundary and its control characters and ill-formed bytes
 * shown as '?' (json_utf8_show), so the reason stays one line of UTF-8.
 * Returns PROJECTION_REJECT.
 */
int projection_unknown_type(const struct event *ev, char *err, size_t errsz);

/*
 * Helpers for projections: look up a member of an object, and check its type.
 * projection_get_id() accepts what projection_get_id_value() does (a
 * non-empty string of at most PROJECTION_MAX_ID_BYTES or an integer) in
 * data that must be an object, and writes its text into `id`.
 */
yajl_val projection_member(yajl_val obj, const char *key);
int projection_get_id(yajl_val data, const char *key, struct buf *id, char *err, size_t errsz);

/*
 * Reads member `key` as money: a JSON number with at most two decimals and
 * no exponent, below 10^13 in size, converted exactly (from its text, never
 * through a double) into cents. 0, or PROJECTION_REJECT with `err` set.
 */
int projection_get_cents(yajl_val data, const char *key, int64_t *cents, char *err, size_t errsz);

/* Reads member `key` as a whole number in [min, max]. */
int projection_get_int(yajl_val data, const char *key, long long min, long long max,
		       long long *out, char *err, size_t errsz);

/*
 * Member `key` as an identifier kept as a value: a non-empty string of at
 * most PROJECTION_MAX_ID_BYTES or an integer. 0, or
 * PROJECTION_REJECT with `err` set.
 */
int projection_get_id_value(yajl_val data, const char *key, yajl_val *out, char *err, size_t errsz);

/* Member `key` as a string, null or absent (then *out is NULL); else PROJECTION_REJECT. */
int projection_get_opt_string(yajl_val data, const char *key, yajl_val *out, char *err, size_t errsz);

/*
 * Checks that member `key` is a string (or, when `nullable`, null or absent
 * too); returns it or NULL. On a wrong type: NULL with *bad set and `err`.
 */
yajl_val projection_get_string(yajl_val data, const char *key, bool required, bool *bad,
			       char *err, size_t errsz);

/*
 * True if `s` is a date the indices' `date` fields accept, as projections
 * read them: YYYY-MM-DD, optionally followed by THH:MM, :SS, .fraction (1
 * to 9 digits) and a zone (Z or ±HH:MM, at most 18:00), every part in range
 * (no February 30, no hour 24, no leap second), its instant in UTC within
 * the years 0001 to 9999. The mapping (strict_date_optional_time||
 * epoch_millis) takes a few more forms (epoch milliseconds, an hour without
 * minutes, ±HHMM); those are refused here, so that a value a projection
 * takes is never refused by the node. Unless `utc_day` is NULL, it receives
 * (11 bytes) the YYYY-MM-DD of that instant, a value without a zone being
 * UTC as Elasticsearch reads it.
 */
bool projection_date(const char *s, char utc_day[11]);

#endif
