/*
 * Unit tests of the pipeline's ledger (src/ledger.c): how far the
 * checkpoint advances. Reads settle in any order (lanes answer in any
 * order), the checkpoint passes a read only when it and every read before
 * it are settled, and never moves back.
 */
#include <stdint.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "esbridge/ledger.h"

#include "support.h"

TestSuite(ledger, .fini = test_leak_check);

/* Appends a read of `n` events ending at position `last` (txid 7), with `bytes` of data. */
static struct rbatch *read_of(struct ledger *l, size_t n, int64_t last, size_t bytes)
{
	struct rbatch *rb = ledger_append(l);

	cr_assert_not_null(rb);
	for (size_t i = 0; i < n; i++)
		ledger_hold(l, rb);
	rb->last = (struct position){ 7, last };
	rb->bytes = bytes;
	l->bytes += bytes;
	return rb;
}

/* Pops every settled read in order; the checkpoint they give (or `from`). */
static struct position advance(struct ledger *l, struct position from)
{
	while (ledger_settled(l))
		from = ledger_pop(l);
	return from;
}

Test(ledger, the_checkpoint_waits_for_the_oldest_read)
{
	struct ledger l = { 0 };
	struct position cp = { 0, 0 };
	struct rbatch *a = read_of(&l, 3, 10, 100), *b = read_of(&l, 2, 20, 200), *c = read_of(&l, 1, 30, 300);

	cr_assert_eq(l.unsettled, 6);
	cr_assert_eq(l.bytes, 600);
	/* the newest reads settle first: nothing passes */
	ledger_settle(&l, c, 1);
	ledger_settle(&l, b, 2);
	cp = advance(&l, cp);
	cr_assert_eq(cp.pos, 0, "the checkpoint passed an unsettled read");
	cr_assert_eq(l.bytes, 600);
	/* the oldest settles in part: still nothing */
	ledger_settle(&l, a, 2);
	cr_assert_eq(advance(&l, cp).pos, 0);
	/* then whole: every read goes, the checkpoint is the newest */
	ledger_settle(&l, a, 1);
	cp = advance(&l, cp);
	cr_assert_eq(cp.pos, 30);
	cr_assert_eq(l.unsettled, 0);
	cr_assert_eq(l.bytes, 0, "the bytes of popped reads stay counted");
	cr_assert_null(l.head);
	cr_assert_null(l.tail);
	ledger_release(&l);
}

Test(ledger, a_prefix_passes_the_rest_waits)
{
	struct ledger l = { 0 };
	struct position cp = { 0, 0 };
	struct rbatch *a = read_of(&l, 1, 10, 1), *b = read_of(&l, 1, 20, 1), *c = read_of(&l, 1, 30, 1);

	ledger_settle(&l, a, 1);
	ledger_settle(&l, c, 1);
	cp = advance(&l, cp);
	cr_assert_eq(cp.pos, 10, "the checkpoint is at %lld, want the settled prefix's 10", (long long)cp.pos);
	cr_assert_eq(l.bytes, 2);
	/* a new read behind the unsettled one waits too */
	(void)read_of(&l, 0, 40, 1);
	cr_assert_eq(advance(&l, cp).pos, 10);
	ledger_settle(&l, b, 1);
	cp = advance(&l, cp);
	cr_assert_eq(cp.pos, 40, "an empty read (all its events skipped) passes with the others");
	ledger_release(&l);
}

Test(ledger, release_frees_unsettled_reads)
{
	struct ledger l = { 0 };
	struct rbatch *rb = read_of(&l, 5, 10, 50);

	rb->retried = malloc(3 * sizeof(*rb->retried));
	cr_assert_not_null(rb->retried);
	rb->n_retried = 3;
	cr_assert_not_null(arena_alloc(&rb->arena, 64));
	(void)read_of(&l, 1, 20, 5);
	ledger_release(&l);
	cr_assert_null(l.head);
	cr_assert_eq(l.unsettled, 0);
}
