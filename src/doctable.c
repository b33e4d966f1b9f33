#include "esbridge/doctable.h"

#include <stdlib.h>
#include <string.h>

uint64_t doctable_hash(const char *s, size_t n)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* ---- the operations of one request ----------------------------------------- */

/* A document is its index slot and its _id (one index: slot 0, the _id's hash). */
static uint64_t hash_key(const char *s, size_t n, unsigned slot)
{
	return doctable_hash(s, n) ^ ((uint64_t)slot * 0x9E3779B97F4A7C15ULL);
}

static uint64_t hash_op(const struct bulk_op *op)
{
	return hash_key(op->id, strlen(op->id), op->slot);
}

static bool same_doc(const struct bulk_op *a, const struct bulk_op *b)
{
	return a->slot == b->slot && !strcmp(a->id, b->id);
}

void opset_release(struct opset *o)
{
	for (size_t i = 0; i < o->n_ops; i++)
		bulk_op_release(&o->ops[i]);
	arena_release(&o->arena);
	free(o->ops);
	free(o->slots);
	free(o->settles);
	memset(o, 0, sizeof(*o));
}

/*
 * Puts operation `i` into `slots` unless a newer operation of its document
 * is there already.
 */
static void slots_put(const struct opset *o, uint32_t *slots, size_t n_slots, size_t i)
{
	size_t j = hash_op(&o->ops[i]) & (n_slots - 1);

	while (slots[j]) {
		if (same_doc(&o->ops[slots[j] - 1], &o->ops[i]))
			return;
		j = (j + 1) & (n_slots - 1);
	}
	slots[j] = (uint32_t)(i + 1);
}

/*
 * Newest first, so that each document's newest operation takes its slot
 * and its older ones, superseded, stay out of the table (inserted in
 * creation order, a lookup would find the oldest).
 */
static int opset_rehash(struct opset *o, size_t n_slots)
{
	uint32_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -1;
	for (size_t i = o->n_ops; i-- > 0;)
		slots_put(o, slots, n_slots, i);
	free(o->slots);
	o->slots = slots;
	o->n_slots = n_slots;
	return 0;
}

struct bulk_op *opset_get(struct opset *o, const char *id, size_t len, unsigned slot,
			  const char *index, bool fresh, bool *created)
{
	size_t j;
	bool follows = false;

	*created = false;
	if ((o->n_ops + 1) * 2 > o->n_slots && opset_rehash(o, o->n_slots ? o->n_slots * 2 : 64))
		return NULL;
	j = hash_key(id, len, slot) & (o->n_slots - 1);
	while (o->slots[j]) {
		struct bulk_op *op = &o->ops[o->slots[j] - 1];
		if (op->slot == slot && strlen(op->id) == len && !memcmp(op->id, id, len)) {
			if (!fresh)
				return op;
			follows = true;
			break; /* the slot now names the newest operation */
		}
		j = (j + 1) & (o->n_slots - 1);
	}
	if (o->n_ops == o->cap_ops) {
		size_t ncap = o->cap_ops ? o->cap_ops * 2 : 64;
		struct bulk_op *nops = realloc(o->ops, ncap * sizeof(*nops));
		if (!nops)
			return NULL;
		o->ops = nops;
		o->cap_ops = ncap;
	}
	if (bulk_op_init(&o->ops[o->n_ops], id, len))
		return NULL;
	o->ops[o->n_ops].slot = slot;
	o->ops[o->n_ops].index = index;
	o->slots[j] = (uint32_t)(o->n_ops + 1);
	o->ops[o->n_ops].follows = follows;
	*created = true;
	return &o->ops[o->n_ops++];
}

void opset_drop_last(struct opset *o)
{
	struct bulk_op *op = &o->ops[o->n_ops - 1];
	size_t j = hash_op(op) & (o->n_slots - 1);
	bool follows = op->follows;

	while (o->slots[j] != o->n_ops)
		j = (j + 1) & (o->n_slots - 1);
	/* re-insert the probe chain after the hole */
	o->slots[j] = 0;
	for (size_t k = (j + 1) & (o->n_slots - 1); o->slots[k]; k = (k + 1) & (o->n_slots - 1)) {
		uint32_t v = o->slots[k];
		o->slots[k] = 0;
		slots_put(o, o->slots, o->n_slots, v - 1);
	}
	/* it had taken the slot of its document's previous operation: give it back */
	if (follows) {
		for (size_t i = o->n_ops - 1; i-- > 0;) {
			if (same_doc(&o->ops[i], op)) {
				slots_put(o, o->slots, o->n_slots, i);
				break;
			}
		}
	}
	bulk_op_release(op);
	o->n_ops--;
}

int opset_add_settle(struct opset *o, struct rbatch *rb)
{
	if (o->n_settles && o->settles[o->n_settles - 1].rb == rb) {
		o->settles[o->n_settles - 1].n++;
		return 0;
	}
	if (o->n_settles == o->cap_settles) {
		size_t ncap = o->cap_settles ? o->cap_settles * 2 : 8;
		struct settle *ns = realloc(o->settles, ncap * sizeof(*ns));
		if (!ns)
			return -1;
		o->settles = ns;
		o->cap_settles = ncap;
	}
	o->settles[o->n_settles].rb = rb;
	o->settles[o->n_settles].n = 1;
	o->n_settles++;
	return 0;
}

/* ---- documents held back by a dead letter ---------------------------------- */

static struct held *held_slot(struct held *slots, size_t n_slots, const char *id, size_t len)
{
	size_t i = (size_t)doctable_hash(id, len) & (n_slots - 1);

	while (slots[i].id && (strlen(slots[i].id) != len || memcmp(slots[i].id, id, len)))
		i = (i + 1) & (n_slots - 1);
	return &slots[i];
}

struct held *held_find(const struct held_table *t, const char *id, size_t len)
{
	struct held *h;

	if (!t->n)
		return NULL;
	h = held_slot(t->slots, t->n_slots, id, len);
	return h->id ? h : NULL;
}

void held_clear(struct held_table *t)
{
	for (size_t i = 0; i < t->n_slots; i++)
		free(t->slots[i].id);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

int held_add(struct held_table *t, const char *id, size_t len, struct position first)
{
	struct held *h;

	if ((t->n + 1) * 2 > t->n_slots) {
		size_t n = t->n_slots ? t->n_slots * 2 : 64;
		struct held *slots = calloc(n, sizeof(*slots));
		if (!slots)
			return -1;
		for (size_t i = 0; i < t->n_slots; i++)
			if (t->slots[i].id)
				*held_slot(slots, n, t->slots[i].id, strlen(t->slots[i].id)) = t->slots[i];
		free(t->slots);
		t->slots = slots;
		t->n_slots = n;
	}
	h = held_slot(t->slots, t->n_slots, id, len);
	if (h->id) {
		if (position_cmp(first, h->first) < 0)
			h->first = first;
		return 0;
	}
	h->id = strndup(id, len);
	if (!h->id)
		return -1;
	h->first = first;
	t->n++;
	return 0;
}
