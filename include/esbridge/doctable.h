#ifndef ESBRIDGE_DOCTABLE_H
#define ESBRIDGE_DOCTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esbridge/bulk.h"
#include "esbridge/event.h"
#include "esbridge/json.h"

/*
 * The pipeline's document tables: the operations of one request, found by
 * document, and the documents held back by a dead letter. Both are open
 * addressing over a power of two, hashed with FNV-1a.
 */

/* The 64-bit FNV-1a hash of `n` bytes (also spreads documents over lanes). */
uint64_t doctable_hash(const char *s, size_t n);

/* ---- the operations of one request ----------------------------------------- */

struct rbatch; /* the pipeline's read batches */

/* `n` events of read batch `rb` are held by an operation set. */
struct settle {
	struct rbatch *rb;
	size_t n;
};

/*
 * The operations of one request, in the order they were created; a
 * document (index slot + _id) may have several when a later event could not
 * fold into the earlier operation (opset_get's `fresh`). The table finds,
 * for each document, its NEWEST operation, whatever growth happened since:
 * later events always fold there. Also the parsed events the operations'
 * values point into, and the read batches they settle.
 *
 * Zero-initialised is empty; opset_release() frees everything it owns.
 */
struct opset {
	struct bulk_op *ops;
	size_t n_ops, cap_ops;
	uint32_t *slots;      /* op index + 1; 0 = empty */
	size_t n_slots;       /* a power of two, or 0 */
	struct arena arena;   /* trees of events read again by split_op */
	struct settle *settles;
	size_t n_settles, cap_settles;
	size_t est_bytes;
};

void opset_release(struct opset *o);

/*
 * The newest operation of document `id` (`len` bytes) in index `slot`
 * (`index`: the concrete index named in its action, NULL with one index,
 * borrowed), created when absent (*created then true). With `fresh`, a new
 * operation is appended even when one exists (no coalescing), marked
 * `follows`, and becomes the one found. NULL when out of memory.
 */
struct bulk_op *opset_get(struct opset *o, const char *id, size_t len, unsigned slot,
			  const char *index, bool fresh, bool *created);

/* Drops the operation just created by opset_get (it stayed empty). */
void opset_drop_last(struct opset *o);

/* One more event of `rb` settles with the set; -1 on no memory. */
__attribute__((warn_unused_result))
int opset_add_settle(struct opset *o, struct rbatch *rb);

/* ---- documents held back by a dead letter ---------------------------------- */

/* A document held back by a dead letter: its events after `first` wait. */
struct held {
	char *id;             /* NULL: empty slot */
	struct position first;
};

/* Zero-initialised is empty; held_clear() frees it. */
struct held_table {
	struct held *slots;
	size_t n, n_slots;
};

/* The entry of document `id` (`len` bytes), or NULL. */
struct held *held_find(const struct held_table *t, const char *id, size_t len);

/* Holds document `id` back from `first` on (the earliest wins); -1 on no memory. */
__attribute__((warn_unused_result))
int held_add(struct held_table *t, const char *id, size_t len, struct position first);

void held_clear(struct held_table *t);

#endif
