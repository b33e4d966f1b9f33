#include "esbridge/ledger.h"

#include <stdlib.h>
#include <string.h>

struct rbatch *ledger_append(struct ledger *l)
{
	struct rbatch *rb = calloc(1, sizeof(*rb));

	if (!rb)
		return NULL;
	if (l->tail)
		l->tail->next = rb;
	else
		l->head = rb;
	l->tail = rb;
	return rb;
}

void ledger_hold(struct ledger *l, struct rbatch *rb)
{
	rb->unsettled++;
	l->unsettled++;
}

void ledger_settle(struct ledger *l, struct rbatch *rb, size_t n)
{
	rb->unsettled -= n;
	l->unsettled -= n;
}

struct rbatch *ledger_settled(const struct ledger *l)
{
	return l->head && l->head->unsettled == 0 ? l->head : NULL;
}

static void rbatch_free(struct rbatch *rb)
{
	arena_release(&rb->arena);
	free(rb->retried);
	free(rb);
}

struct position ledger_pop(struct ledger *l)
{
	struct rbatch *rb = l->head;
	struct position last = rb->last;

	l->head = rb->next;
	if (!l->head)
		l->tail = NULL;
	l->bytes -= rb->bytes;
	rbatch_free(rb);
	return last;
}

void ledger_release(struct ledger *l)
{
	while (l->head) {
		struct rbatch *rb = l->head;
		l->head = rb->next;
		rbatch_free(rb);
	}
	memset(l, 0, sizeof(*l));
}
