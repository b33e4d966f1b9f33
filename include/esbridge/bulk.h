#ifndef ESBRIDGE_BULK_H
#define ESBRIDGE_BULK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yajl/yajl_tree.h>

#include "esbridge/buf.h"
#include "esbridge/event.h"

/*
 * The _bulk wire format: pending document operations, their NDJSON
 * rendering (always through yajl's generator, never pasted strings) and the
 * reading of _bulk responses. Knows nothing of the domain or of HTTP.
 */

enum bulk_kind {
	BULK_NONE = 0,  /* nothing to send (e.g. rejected and skipped) */
	BULK_INDEX,     /* replace the whole document with `fields` */
	BULK_UPDATE,    /* merge `fields` into the document (doc_as_upsert) */
	BULK_DELETE,    /* remove the document */
	BULK_SCRIPT,    /* apply `entries` through the stored script, guarded */
};

enum bulk_value_kind {
	BV_NULL = 0,
	BV_JSON,    /* a value of a parsed event, owned by that event's tree */
	BV_STRING,  /* a string owned by the operation */
	BV_INT,     /* a whole number */
	BV_CENTS,   /* a money amount in cents, written as a decimal number */
	BV_POSITION, /* an event position, written as {"txid":..,"position":..} */
	BV_TEXT,    /* a string borrowed from the event (see projection.h), not copied */
};

struct bulk_value {
	enum bulk_value_kind kind;
	union {
		yajl_val json;
		char *string;
		long long i;
		int64_t cents;
		struct position at;
	} u;
};

/* A value of an event's tree (BV_NULL when absent): borrowed. */
static inline struct bulk_value bulk_json_value(yajl_val v)
{
	struct bulk_value b = { .kind = v ? BV_JSON : BV_NULL, .u.json = v };

	return b;
}

/* A string constant or the event's created_at: borrowed, never copied. */
static inline struct bulk_value bulk_text_value(const char *s)
{
	struct bulk_value b = { .kind = BV_TEXT, .u.string = (char *)(uintptr_t)s };

	return b;
}

/* A whole number. */
static inline struct bulk_value bulk_int_value(long long i)
{
	struct bulk_value b = { .kind = BV_INT, .u.i = i };

	return b;
}

/* An amount of money in cents. */
static inline struct bulk_value bulk_cents_value(int64_t cents)
{
	struct bulk_value b = { .kind = BV_CENTS, .u.cents = cents };

	return b;
}

struct bulk_field {
	const char *name;      /* a string literal or a key of an event's tree */
	struct bulk_value value;
};

/*
 * One event's effect in a BULK_SCRIPT operation: fields to set, whole
 * numbers to add (BV_INT) and money to add (BV_CENTS), applied by the stored
 * script only if the event is newer than the document's `last_event`.
 */
struct bulk_entry {
	struct position at;
	struct bulk_field *set;
	size_t n_set, cap_set;
	struct bulk_field *add;
	size_t n_add, cap_add;
};

/*
 * The pending operation on one document. A projection folds the events of
 * the document into it, in order; several events become one action.
 */
struct bulk_op {
	char *id;                  /* the document _id, owned */
	enum bulk_kind kind;
	struct bulk_field *fields; /* owned array; values as described above */
	size_t n_fields, cap_fields;
	/* BULK_SCRIPT: the events to apply, in order; with `upsert`, a missing
	 * document is created as `fields` (its defaults, often none) before the
	 * entries apply (else a missing document is an error) */
	struct bulk_entry *entries;
	size_t n_entries, cap_entries;
	bool upsert;
	/* a projection of several indices: the index slot (projection.h) and
	 * the concrete index, written as _index of the action (borrowed) */
	unsigned slot;
	const char *index;
	bool applied;              /* answered OK (the pipeline's bookkeeping) */
	bool written;              /* in the request in flight (the pipeline's bookkeeping) */
	bool follows;              /* an earlier operation of its document is in the set (the same) */
	/* the events folded into this operation, in order (for dead letters) */
	struct position *events;
	size_t n_events, cap_events;
};

/* Sets up an empty operation for document `id` (copied); -1 on no memory. */
__attribute__((warn_unused_result))
int bulk_op_init(struct bulk_op *op, const char *id, size_t id_len);
void bulk_op_release(struct bulk_op *op);

/* Drops every field (the kind stays). */
void bulk_op_clear_fields(struct bulk_op *op);

/* Sets field `name` (replacing a field of that name); -1 on no memory. A
 * BV_STRING value is copied. `name` must outlive the operation. */
__attribute__((warn_unused_result))
int bulk_op_set(struct bulk_op *op, const char *name, struct bulk_value v);

/* Looks a field up; NULL if absent. */
struct bulk_value *bulk_op_get(struct bulk_op *op, const char *name);

/* Drops every script entry. */
void bulk_op_clear_entries(struct bulk_op *op);

/* Appends an empty entry for the event at `at`; NULL on no memory. */
struct bulk_entry *bulk_op_add_entry(struct bulk_op *op, struct position at);

/* Sets a field / adds an amount (BV_INT or BV_CENTS) in an entry; -1 on no memory. */
__attribute__((warn_unused_result))
int bulk_entry_set(struct bulk_entry *e, const char *name, struct bulk_value v);
__attribute__((warn_unused_result))
int bulk_entry_add(struct bulk_entry *e, const char *name, struct bulk_value v);

/*
 * The stored script that applies BULK_SCRIPT entries (installed by
 * rebuild_prepare). For each entry newer than the document's `last_event`
 * {txid, position}: set fields, add whole numbers, add money (kept exact:
 * cents are computed from the stored decimal and written back as a
 * BigDecimal with two decimals, built from text); then `last_event` moves to the newest
 * applied entry. An update that applies nothing is a no-op.
 */
#define BULK_SCRIPT_ID "esbridge-apply-v1"
extern const char bulk_script_source[];

/* Records that the event at `at` was folded in; -1 on no memory. */
__attribute__((warn_unused_result))
int bulk_op_note_event(struct bulk_op *op, struct position at);

/*
 * Renders operations into one body with one generator. bulk_writer_init
 * returns -1 on no memory; the body must outlive the writer.
 */
struct bulk_writer {
	struct buf *body;
	void *g;  /* the yajl_gen */
};

__attribute__((warn_unused_result))
int bulk_writer_init(struct bulk_writer *w, struct buf *body);
void bulk_writer_release(struct bulk_writer *w);

/* As bulk_write_op, through the writer's generator. */
__attribute__((warn_unused_result))
int bulk_writer_op(struct bulk_writer *w, const struct bulk_op *op, char *err, size_t errsz);

/*
 * Appends the NDJSON lines of `op` (action line, then the source line for
 * index and update), each ending in '\n', to `body`. Writes nothing for
 * BULK_NONE. Returns 0, or -1 with `err` set (generator failure, invalid
 * UTF-8 in a string, buffer over its limit).
 */
__attribute__((warn_unused_result))
int bulk_write_op(struct buf *body, const struct bulk_op *op, char *err, size_t errsz);

/* One item of a _bulk response, in request order. */
struct bulk_item {
	int status;
	bool noop;              /* "result":"noop": applied, and the document did not change */
	char error_type[64];    /* "" when the item has no error */
	char error_reason[256];
};

struct bulk_response {
	bool errors;
	size_t n_items;
	struct bulk_item *items;  /* owned */
};

/*
 * The query string that makes Elasticsearch answer with one small entry per
 * action (status, result and error) and nothing else.  The result tells
 * no-ops apart: Elasticsearch before 8.14 does not count the no-op updates
 * of _bulk in its indexing stats, so esbridge counts them itself.
 */
#define BULK_FILTER_PATH \
	"filter_path=errors,items.*.status,items.*.result,items.*.error.type,items.*.error.reason"

/* Reads a _bulk response body; 0, or -1 with `err` set. */
__attribute__((warn_unused_result))
int bulk_response_parse(const char *body, size_t len, struct bulk_response *r, char *err, size_t errsz);
void bulk_response_release(struct bulk_response *r);

/* How often the cluster itself retries an update that lost a version race. */
#define BULK_RETRY_ON_CONFLICT 3

enum bulk_outcome {
	BULK_ITEM_OK,       /* applied (2xx; 404 of a delete: already gone) */
	BULK_ITEM_RETRY,    /* 429, 409 (a concurrent write) or 5xx: send again later */
	BULK_ITEM_REJECT,   /* other 4xx: the document cannot be written as is */
};

enum bulk_outcome bulk_item_outcome(const struct bulk_item *item);

#endif
