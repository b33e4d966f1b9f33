/*
 * Unit tests of the pipeline's document tables (src/doctable.c): the
 * operations of one request found by document, and the held-back documents.
 *
 * Regression (opset_rehash): a document with two operations (a re-creation
 * after queued script events) must be found at its newest one after any
 * number of growths of the table; the rehash used to re-insert in creation
 * order, so the lookup found the older operation and later events were
 * folded into the action sent before the re-creation.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "esbridge/doctable.h"

#include "support.h"

TestSuite(doctable, .fini = test_leak_check);

static struct bulk_op *get(struct opset *o, const char *id, unsigned slot, bool fresh, bool *created)
{
	struct bulk_op *op = opset_get(o, id, strlen(id), slot, NULL, fresh, created);

	cr_assert_not_null(op, "opset_get(%s) failed", id);
	return op;
}

/* The index of the operation a lookup of `id` (no `fresh`) finds; it must not create one. */
static size_t find(struct opset *o, const char *id, unsigned slot)
{
	bool created;
	struct bulk_op *op = get(o, id, slot, false, &created);

	cr_assert(!created, "a lookup of %s created an operation", id);
	return (size_t)(op - o->ops);
}

/* Adds `n` other documents "other-FROM".."other-(FROM+n-1)". */
static void others(struct opset *o, int from, int n)
{
	char id[32];
	bool created;

	for (int i = from; i < from + n; i++) {
		snprintf(id, sizeof(id), "other-%d", i);
		get(o, id, 0, false, &created);
		cr_assert(created);
	}
}

Test(doctable, a_lookup_finds_the_newest_operation_across_growths)
{
	struct opset o = { 0 };
	bool created;
	size_t first, second, slots_before;

	first = (size_t)(get(&o, "doc", 0, false, &created) - o.ops);
	cr_assert(created);
	others(&o, 0, 10);
	second = (size_t)(get(&o, "doc", 0, true, &created) - o.ops);
	cr_assert(created && second > first);
	cr_assert(o.ops[second].follows && !o.ops[first].follows);
	cr_assert_eq(find(&o, "doc", 0), second);
	/* several growths: 64 slots at first, each doubling rehashes everything */
	slots_before = o.n_slots;
	others(&o, 10, 5000);
	cr_assert_geq(o.n_slots, slots_before * 64, "the table grew from %zu to %zu slots only",
		      slots_before, o.n_slots);
	cr_assert_eq(find(&o, "doc", 0), second, "after growing, the lookup finds operation %zu, not the"
		     " newest (%zu)", find(&o, "doc", 0), second);
	opset_release(&o);
}

Test(doctable, three_operations_of_one_document_and_other_slots)
{
	struct opset o = { 0 };
	bool created;
	size_t a0, a1, a2, b0;

	a0 = (size_t)(get(&o, "doc", 0, false, &created) - o.ops);
	b0 = (size_t)(get(&o, "doc", 1, false, &created) - o.ops); /* the same _id in another index */
	others(&o, 0, 100);
	a1 = (size_t)(get(&o, "doc", 0, true, &created) - o.ops);
	others(&o, 100, 100);
	a2 = (size_t)(get(&o, "doc", 0, true, &created) - o.ops);
	others(&o, 200, 3000);
	cr_assert(a0 < a1 && a1 < a2);
	cr_assert_eq(find(&o, "doc", 0), a2);
	cr_assert_eq(find(&o, "doc", 1), b0);
	/* every other document is found at its one operation */
	for (size_t i = 0; i < o.n_ops; i++) {
		if (strncmp(o.ops[i].id, "other-", 6))
			continue;
		cr_assert_eq(find(&o, o.ops[i].id, 0), i);
	}
	opset_release(&o);
}

Test(doctable, dropping_a_fresh_operation_gives_the_document_back_its_previous_one)
{
	struct opset o = { 0 };
	bool created;
	size_t first;

	first = (size_t)(get(&o, "doc", 0, false, &created) - o.ops);
	others(&o, 0, 200);
	get(&o, "doc", 0, true, &created);
	cr_assert(created);
	opset_drop_last(&o);
	cr_assert_eq(find(&o, "doc", 0), first);
	/* and after growing */
	others(&o, 200, 2000);
	cr_assert_eq(find(&o, "doc", 0), first);
	/* a document dropped without a predecessor is gone */
	get(&o, "new", 0, false, &created);
	cr_assert(created);
	opset_drop_last(&o);
	get(&o, "new", 0, false, &created);
	cr_assert(created, "the dropped document was still found");
	opset_release(&o);
}

Test(doctable, dropping_keeps_the_probe_chains)
{
	struct opset o = { 0 };
	bool created;

	/* many documents, then drop each last one: every remaining one is still found */
	others(&o, 0, 40);
	for (int round = 0; round < 10; round++) {
		char id[32];
		snprintf(id, sizeof(id), "temp-%d", round);
		get(&o, id, 0, false, &created);
		cr_assert(created);
		opset_drop_last(&o);
		for (size_t i = 0; i < o.n_ops; i++)
			cr_assert_eq(find(&o, o.ops[i].id, 0), i);
	}
	opset_release(&o);
}

Test(doctable, held_documents_keep_the_earliest_position)
{
	struct held_table t = { 0 };
	char id[32];

	cr_assert_null(held_find(&t, "x", 1));
	for (int i = 0; i < 1000; i++) {
		snprintf(id, sizeof(id), "d%d", i);
		cr_assert_eq(held_add(&t, id, strlen(id), (struct position){ 10, i + 100 }), 0);
	}
	cr_assert_eq(held_add(&t, "d7", 2, (struct position){ 9, 5000 }), 0);  /* earlier: wins */
	cr_assert_eq(held_add(&t, "d8", 2, (struct position){ 11, 1 }), 0);    /* later: ignored */
	cr_assert_eq(t.n, 1000);
	for (int i = 0; i < 1000; i++) {
		struct held *h;
		snprintf(id, sizeof(id), "d%d", i);
		h = held_find(&t, id, strlen(id));
		cr_assert_not_null(h, "%s not found", id);
		if (i == 7)
			cr_assert(h->first.txid == 9 && h->first.pos == 5000);
		else
			cr_assert(h->first.txid == 10 && h->first.pos == i + 100, "%s at %lld", id,
				  (long long)h->first.pos);
	}
	/* a prefix of an id is another id */
	cr_assert_null(held_find(&t, "d1", 1));
	held_clear(&t);
	cr_assert_null(held_find(&t, "d1", 2));
}
