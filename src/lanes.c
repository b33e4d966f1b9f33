/*
 * The lanes of a pipeline: each sends the operation sets queued for it, one
 * request at a time, reads the answer item by item (acknowledged, a dead
 * letter, sent again, or split into one action per event), and settles
 * what it acknowledged, so that the checkpoint can pass it.
 */
#include "pipeline_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "esbridge/backoff.h"
#include "esbridge/bulk.h"
#include "esbridge/es.h"
#include "esbridge/store.h"

bool lanes_opset_full(const struct pipeline *p, const struct opset *o)
{
	return o->n_ops >= (size_t)p->cfg->bulk_actions || o->est_bytes >= (size_t)p->cfg->bulk_bytes;
}

/*
 * Queues the lane's full building set to be sent after the ones before it;
 * a document's later events then go to a later request, in order.
 */
int lane_seal(struct lane *l)
{
	if (l->n_ready == l->cap_ready) {
		size_t ncap = l->cap_ready ? l->cap_ready * 2 : 4;
		struct opset *nr = realloc(l->ready, ncap * sizeof(*nr));
		if (!nr)
			return -1;
		l->ready = nr;
		l->cap_ready = ncap;
	}
	l->ready[l->n_ready++] = l->building;
	memset(&l->building, 0, sizeof(l->building));
	return 0;
}

void lane_drop_unsent(struct lane *l)
{
	for (size_t i = 0; i < l->n_ready; i++)
		opset_release(&l->ready[i]);
	l->n_ready = 0;
	opset_release(&l->building);
}

/* ---- sending ----------------------------------------------------------- */

static void send_lane(struct lane *l);
static void send_sending(struct lane *l);

static void settle_sending(struct lane *l)
{
	struct pipeline *p = l->p;

	for (size_t i = 0; i < l->sending.n_settles; i++)
		ledger_settle(&p->ledger, l->sending.settles[i].rb, l->sending.settles[i].n);
	opset_release(&l->sending);
	l->attempts = 0;
}

void lane_abandon_sending(struct lane *l)
{
	/* its events stay unsettled: the checkpoint never passes them */
	opset_release(&l->sending);
	l->attempts = 0;
}

static void dead_letter_op(struct pipeline *p, struct bulk_op *op, const char *reason)
{
	char key[1024];
	size_t key_len = pl_doc_key(p, op->slot, op->id, strlen(op->id), key, sizeof(key));

	for (size_t i = 0; i < op->n_events; i++)
		pl_slot_dead_letter(p, op->slot, op->events[i], key, key_len, reason);
	op->kind = BULK_NONE;
}

/*
 * An action that folded several events was rejected: one of them may be bad
 * and the others fine. Replaces it by one action per event (read again from
 * the store), sent with the rest of the request, so that only the events
 * Elasticsearch refuses on their own become dead letters, as they would
 * have in a live run that sent them one by one. Returns 0, or -1 if the
 * events could not be read again (the request is then retried as it is).
 */
static int split_op(struct lane *l, size_t index, const char *why)
{
	struct pipeline *p = l->p;
	struct store_batch b;
	struct position *at;
	size_t n = l->sending.ops[index].n_events;
	unsigned slot = l->sending.ops[index].slot;
	char err[512], perr[256];

	at = malloc(n * sizeof(*at));
	if (!at)
		return -1;
	memcpy(at, l->sending.ops[index].events, n * sizeof(*at));
	if (store_read_positions(p->store, at, n, &b, err, sizeof(err))) {
		PLOG(LOG_WARN, p, "%s", err);
		free(at);
		if (!store_connected(p->store))
			pl_lost_store(p);
		return -1;
	}
	PLOG(LOG_INFO, p, "document '%s': %zu events folded into one action were rejected (%s);"
	     " sending them one by one", l->sending.ops[index].id, n, why);
	l->sending.ops[index].kind = BULK_NONE;
	for (int i = 0; i < b.n; i++) {
		struct event ev;
		struct bulk_op *op;
		yajl_val tree;
		bool created;
		int rc;

		store_batch_event(&b, i, &ev);
		if (pl_keep_created_at(&l->sending.arena, &ev)) {
			pl_fail(p, "out of memory");
			break;
		}
		tree = json_parse(&l->sending.arena, &p->scratch, ev.data, ev.data_len, perr, sizeof(perr));
		if (!tree) {
			pl_dead_letter(p, ev.at, NULL, 0, false, perr);
			continue;
		}
		/* only the index of the rejected action: the event's others are done */
		rc = projection_doc_id(p->proj, &ev, tree, slot, &p->id, err, sizeof(err));
		if (rc == PROJECTION_SKIP)
			continue;
		op = rc ? NULL : opset_get(&l->sending, p->id.data, p->id.len, slot, pl_slot_index(p, slot),
					  true, &created);
		if (op)
			rc = p->proj->apply(&ev, tree, op, err, sizeof(err));
		if (!op || rc) {
			/* with an operation, the letter names its document */
			char key[1024];
			size_t key_len = op ? pl_doc_key(p, slot, p->id.data, p->id.len, key, sizeof(key)) : 0;

			if (op && created)
				opset_drop_last(&l->sending);
			pl_slot_dead_letter(p, slot, ev.at, op ? key : NULL, key_len,
					 rc == PROJECTION_REJECT ? err : "out of memory");
			continue;
		}
		if (bulk_op_note_event(op, ev.at)) {
			pl_fail(p, "out of memory");
			break;
		}
	}
	store_batch_release(&b);
	free(at);
	return 0;
}

static void lane_retry_later(struct lane *l, const char *why)
{
	struct pipeline *p = l->p;
	double delay;

	p->stats.retries++;
	l->attempts++;
	pl_note_error(p, why);
	if (p->stopping) {
		PLOG(LOG_WARN, p, "bulk request failed while stopping, not sent again: %s", why);
		lane_abandon_sending(l);
		pl_kick(p);
		return;
	}
	delay = backoff_delay(0.25, l->attempts, p->cfg->retry_max);
	PLOG(LOG_WARN, p, "bulk request failed (attempt %d), sending again in %.2fs: %s",
	     l->attempts, delay, why);
	l->waiting = true;
	ev_timer_set(&l->retry, delay, 0.0);
	ev_timer_start(p->loop, &l->retry);
}

/*
 * Applied operations are not sent again, except those that follow a retried
 * operation of the same document in the request: the retried one must not
 * land after them, so they are sent again after it, in order (replaying
 * them is harmless: writes are replay-proof).
 */
static void settle_applied(struct lane *l, size_t n_ops, bool retrying)
{
	for (size_t i = 0; i < n_ops; i++) {
		struct bulk_op *op = &l->sending.ops[i];
		bool keep = false;
		if (!op->applied)
			continue;
		for (size_t j = 0; retrying && j < i && !keep; j++) {
			const struct bulk_op *earlier = &l->sending.ops[j];
			keep = earlier->kind != BULK_NONE && !earlier->applied && earlier->slot == op->slot &&
			       !strcmp(earlier->id, op->id);
		}
		op->applied = false;
		if (!keep)
			op->kind = BULK_NONE;
	}
}

/* The request's latency and whether it failed, in the stats. */
static void count_answer(struct lane *l, const struct es_response *r)
{
	struct pipeline *p = l->p;
	double dt = ev_now(p->loop) - l->sent_at;
	int b = 0;

	while (b < PIPELINE_LATENCY_BUCKETS - 1 && dt > pipeline_latency_bounds[b])
		b++;
	p->stats.latency[b]++;
	p->stats.latency_sum += dt;
	p->stats.inflight_bytes -= l->body_len;
	if (r->transport_error || r->status != 200) {
		p->stats.requests_failed++;
		if (p->stats.failing_since == 0)
			p->stats.failing_since = ev_now(p->loop);
	} else {
		p->stats.failing_since = 0;
	}
}

/*
 * The answer as a whole: 0 with its items in `br` (one per action
 * written), or -1 once the request is due to be sent again.
 */
static int read_response(struct lane *l, const struct es_response *r, struct bulk_response *br)
{
	char err[512];

	if (r->transport_error) {
		lane_retry_later(l, r->error);
		return -1;
	}
	if (r->status == 401 || r->status == 403) {
		/* the body is often a proxy's HTML page; es.c explains once */
		snprintf(err, sizeof(err), "HTTP %ld %s", r->status,
			 r->status == 401 ? "Unauthorized (check the credentials)" : "Forbidden (check the rights)");
		lane_retry_later(l, err);
		return -1;
	}
	if (r->status != 200) {
		snprintf(err, sizeof(err), "HTTP %ld: %.200s", r->status, r->body);
		for (char *c = err; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		lane_retry_later(l, err);
		return -1;
	}
	if (bulk_response_parse(r->body, r->len, br, err, sizeof(err))) {
		lane_retry_later(l, err);
		return -1;
	}
	if (br->n_items != l->n_written) {
		snprintf(err, sizeof(err), "the response has %zu items for %zu actions", br->n_items,
			 l->n_written);
		bulk_response_release(br);
		lane_retry_later(l, err);
		return -1;
	}
	return 0;
}

/* What the items of one answer ask of the request. */
struct answer {
	bool again;     /* an item is to be sent again: the request goes again */
	bool split;     /* an action was split into one per event, to send */
	bool deferred;  /* an action waited for this answer, to send */
	char why[512];  /* the first reason to send again */
};

/* Reads the answer's item of each operation written: applied, a dead letter, split, or again. */
static void read_items(struct lane *l, const struct bulk_response *br, size_t n_ops, struct answer *a)
{
	struct pipeline *p = l->p;
	char err[512];
	size_t item = 0;

	for (size_t i = 0; i < n_ops; i++) {
		struct bulk_op *op = &l->sending.ops[i];
		const struct bulk_item *it;
		if (op->kind == BULK_NONE)
			continue;
		if (!op->written) {
			a->deferred = true;
			continue;
		}
		it = &br->items[item++];
		switch (bulk_item_outcome(it)) {
		case BULK_ITEM_OK:
			p->stats.items_ok++;
			p->stats.items_noop += it->noop;
			op->applied = true; /* not sent again, unless a retry needs it (settle_applied) */
			break;
		case BULK_ITEM_REJECT:
			p->stats.items_rejected++;
			snprintf(err, sizeof(err), "rejected by Elasticsearch: HTTP %d %s: %s", it->status,
				 it->error_type, it->error_reason);
			/* a missing document is missing for each event alike: no split */
			if (op->n_events > 1 && it->status != 404) {
				if (split_op(l, i, err) == 0) {
					a->split = true;
					break;
				}
				/* its events could not be read again: the request goes again as it is */
				if (!a->again)
					snprintf(a->why, sizeof(a->why), "the events of document '%.64s' cannot be"
						 " read again to split the action the node refused", op->id);
				a->again = true;
				break;
			}
			dead_letter_op(p, op, err);
			break;
		case BULK_ITEM_RETRY:
			p->stats.items_retry++;
			if (!a->again)
				snprintf(a->why, sizeof(a->why), "item HTTP %d %s: %s", it->status, it->error_type,
					 it->error_reason);
			a->again = true;
			break;
		}
	}
}

static void lane_done(void *arg, const struct es_response *r)
{
	struct lane *l = arg;
	struct pipeline *p = l->p;
	struct bulk_response br;
	struct answer a = { false, false, false, "" };
	size_t n_ops;

	l->busy = false;
	pl_kick(p);
	count_answer(l, r);
	if (read_response(l, r, &br))
		return;
	p->stats.requests++;
	/* split_op appends to the set: only the operations this response answers */
	n_ops = l->sending.n_ops;
	read_items(l, &br, n_ops, &a);
	bulk_response_release(&br);
	settle_applied(l, n_ops, a.again);
	if (a.again) {
		lane_retry_later(l, a.why);
		return;
	}
	if (a.split || a.deferred) {
		if (p->stopping)
			lane_abandon_sending(l); /* not applied yet: never settled */
		else
			send_sending(l);
		return;
	}
	settle_sending(l);
}

/* With --dump-bulk, keeps a copy of the body: DIR/PROJECTION-GEN-SEQ.ndjson. */
static void dump_body(struct pipeline *p, const char *data, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s-%d-%08" PRIu64 ".ndjson", p->cfg->dump_bulk, p->proj->name,
		 p->gen.number, p->dump_seq++);
	f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len) {
		PLOG(LOG_WARN, p, "cannot write %s", path);
		if (f)
			fclose(f);
		return;
	}
	if (fclose(f))
		PLOG(LOG_WARN, p, "cannot write %s", path);
}

/*
 * Another action of the document of operation i, with earlier events, still
 * waits for its answer (by event order, not place in the set: actions split
 * by split_op are appended after later ones).
 */
static bool pending_before(const struct opset *o, size_t i)
{
	const struct bulk_op *me = &o->ops[i];

	for (size_t j = 0; j < o->n_ops; j++) {
		const struct bulk_op *op = &o->ops[j];
		if (j == i || op->kind == BULK_NONE || op->slot != me->slot || strcmp(op->id, me->id))
			continue;
		if (!op->n_events || !me->n_events || position_cmp(op->events[0], me->events[0]) < 0)
			return true;
	}
	return false;
}

/* Renders the operations still to send and starts the request. */
static void send_sending(struct lane *l)
{
	struct pipeline *p = l->p;
	struct bulk_writer w;
	struct buf body;
	char err[512];
	char *data;
	size_t len;

	buf_init(&body, (size_t)p->cfg->bulk_bytes * 2 + ((size_t)16 << 20));
	if (bulk_writer_init(&w, &body)) {
		pl_fail(p, "out of memory");
		lane_abandon_sending(l);
		return;
	}
	l->n_written = 0;
	for (size_t i = 0; i < l->sending.n_ops; i++) {
		struct bulk_op *op = &l->sending.ops[i];
		op->written = false;
		/* held: an earlier event of the document is a dead letter */
		if (op->kind == BULK_NONE || pl_hold_op(p, op))
			continue;
		/*
		 * One action per document in a request: a later one waits for
		 * the answer to the earlier, which may be refused (then it is
		 * held back, never applied before it).
		 */
		if (op->follows && pending_before(&l->sending, i))
			continue;
		if (bulk_writer_op(&w, op, err, sizeof(err))) {
			if (buf_error(&body)) {
				bulk_writer_release(&w);
				buf_release(&body);
				pl_fail(p, err);
				lane_abandon_sending(l);
				return;
			}
			dead_letter_op(p, op, err);
			continue;
		}
		op->written = true;
		l->n_written++;
	}
	bulk_writer_release(&w);
	if (l->n_written == 0) {
		buf_release(&body);
		settle_sending(l);
		pl_kick(p);
		return;
	}
	data = buf_take(&body, &len);
	if (!data) {
		pl_fail(p, "out of memory");
		lane_abandon_sending(l);
		return;
	}
	p->stats.actions += l->n_written;
	p->stats.bytes += len;
	if (*p->cfg->dump_bulk)
		dump_body(p, data, len);
	PLOG(LOG_DEBUG, p, "lane %d: _bulk of %zu actions, %zu bytes", l->idx, l->n_written, len);
	if (es_request(p->es, "POST", p->path, data, len, true, lane_done, l)) {
		lane_retry_later(l, "cannot start the request");
		return;
	}
	l->busy = true;
	l->sent_at = ev_now(p->loop);
	l->body_len = len;
	p->stats.inflight_bytes += len;
}

static void send_lane(struct lane *l)
{
	if (l->n_ready) {
		l->sending = l->ready[0];
		memmove(l->ready, l->ready + 1, (l->n_ready - 1) * sizeof(*l->ready));
		l->n_ready--;
	} else {
		l->sending = l->building;
		memset(&l->building, 0, sizeof(l->building));
	}
	send_sending(l);
}

void lane_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lane *l = (struct lane *)((char *)w - offsetof(struct lane, retry));

	(void)loop;
	(void)revents;
	l->waiting = false;
	if (l->p->stopping) {
		lane_abandon_sending(l);
		pl_kick(l->p);
		return;
	}
	send_sending(l);
}

bool lane_sendable(const struct pipeline *p, const struct lane *l)
{
	if (l->busy || l->waiting || p->stopping)
		return false;
	if (l->n_ready)
		return true;
	if (l->building.n_ops == 0)
		return false;
	return lanes_opset_full(p, &l->building) || p->at_head || p->reached_end || p->pausing || !pl_can_read(p);
}

void lanes_send_ready(struct pipeline *p)
{
	for (int i = 0; i < p->n_lanes; i++)
		if (lane_sendable(p, &p->lanes[i]))
			send_lane(&p->lanes[i]);
}

bool lanes_all_quiet(const struct pipeline *p)
{
	for (int i = 0; i < p->n_lanes; i++) {
		const struct lane *l = &p->lanes[i];
		if (l->busy || l->waiting || l->building.n_ops || l->n_ready || l->sending.n_ops)
			return false;
	}
	return true;
}

bool lanes_any_in_flight(const struct pipeline *p)
{
	for (int i = 0; i < p->n_lanes; i++)
		if (p->lanes[i].busy)
			return true;
	return false;
}

