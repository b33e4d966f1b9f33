#include "esbridge/pipeline.h"
#include "pipeline_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_tree.h>

#include "esbridge/backoff.h"
#include "esbridge/bulk.h"
#include "esbridge/doctable.h"
#include "esbridge/json.h"
#include "esbridge/log.h"
#include "esbridge/state.h"
#include "esbridge/store.h"

void pl_kick(struct pipeline *p);
static void finish(struct pipeline *p);

/* ---- dead letters and failure ------------------------------------------ */

void pl_note_error(struct pipeline *p, const char *what)
{
	snprintf(p->stats.last_error, sizeof(p->stats.last_error), "%s", what);
}

void pl_fail(struct pipeline *p, const char *why)
{
	PLOG(LOG_ERROR, p, "stopping: %s", why);
	pl_note_error(p, why);
	p->failed = true;
	p->hold = true;
	p->stopping = true;
	pl_kick(p);
}

static void lose(struct pipeline *p, const char *err)
{
	PLOG(LOG_ERROR, p, "%s; lost the PostgreSQL connection of the bridge state: starting over", err);
	p->lost = true;
	pl_fail(p, "lost the state connection");
}

/* A call on the bridge state failed: start over if its connection is gone, else try again later. */
static void state_failed(struct pipeline *p, const char *err)
{
	if (state_connection_lost(p->state))
		lose(p, err);
	else
		PLOG(LOG_WARN, p, "%s (trying again)", err);
}

/* ---- held-back documents ---------------------------------------------- */

static int held_load_one(void *arg, const char *doc_id, struct position first)
{
	return held_add(arg, doc_id, strlen(doc_id), first);
}

/*
 * Reads the held-back documents of the generation from its open letters,
 * into a new table that replaces the old one only once complete: on a
 * failure the documents held so far stay held.
 */
static int held_load(struct pipeline *p, char *err, size_t errsz)
{
	struct held_table t = { NULL, 0, 0 };

	if (state_held_documents(p->state, p->proj->name, p->gen.number, held_load_one, &t, err, errsz)) {
		held_clear(&t);
		return -1;
	}
	held_clear(&p->held);
	p->held = t;
	return 0;
}

/* ---- dead letters ------------------------------------------------------ */

/*
 * Makes `s` valid UTF-8 in place: a reason quotes event data and may have
 * been cut inside a character; PostgreSQL refuses invalid text.
 */
static void utf8_repair(char *s)
{
	unsigned char *u = (unsigned char *)s, *end = u + strlen(s);

	while (u < end) {
		size_t n = json_utf8_len(u, end);
		if (!n) {
			*u++ = '?';
			continue;
		}
		u += n;
	}
}

/*
 * Queues a dead letter for the event at `at`; letters are recorded before
 * the checkpoint passes them (flush_letters). A letter naming a document
 * holds the document's later events back.
 */
void pl_dead_letter(struct pipeline *p, struct position at, const char *doc, size_t doc_len,
			bool held, const char *reason)
{
	struct dead_letter *dl;

	if (held)
		PLOG(LOG_DEBUG, p, "dead letter: position %" PRId64 ": %s", at.pos, reason);
	else
		PLOG(LOG_WARN, p, "dead letter: position %" PRId64 ": %s", at.pos, reason);
	if (p->n_letters == p->cap_letters) {
		size_t ncap = p->cap_letters ? p->cap_letters * 2 : 16;
		struct dead_letter *nl = realloc(p->letters, ncap * sizeof(*nl));
		if (!nl)
			goto oom;
		p->letters = nl;
		p->cap_letters = ncap;
	}
	dl = &p->letters[p->n_letters];
	memset(dl, 0, sizeof(*dl));
	dl->at = at;
	dl->held = held;
	dl->reason = strdup(reason);
	dl->doc_id = doc ? strndup(doc, doc_len) : NULL;
	if (!dl->reason || (doc && !dl->doc_id)) {
		free(dl->reason);
		free(dl->doc_id);
		goto oom;
	}
	utf8_repair(dl->reason);
	p->n_letters++;
	if (doc && !held && held_add(&p->held, doc, doc_len, at))
		goto oom;
	p->stats.dead_letters++;
	return;
oom:
	/* the event is neither projected nor recorded: never move past it */
	pl_fail(p, "out of memory");
}

/* An event of a held-back document: recorded behind the letter that holds it. */
static void hold_event(struct pipeline *p, struct position at, const struct held *h)
{
	char why[256], shown[101];

	/* the id cut on a character boundary, one line: the reason is UTF-8 text for PostgreSQL */
	(void)json_utf8_show(shown, sizeof(shown), h->id);
	snprintf(why, sizeof(why), "held back: document '%s' has an open dead letter at %" PRIu64 "/%" PRId64,
		 shown, h->first.txid, h->first.pos);
	pl_dead_letter(p, at, h->id, strlen(h->id), true, why);
}

/* Records the queued letters; -1 if some could not be (they stay queued). */
static int flush_letters(struct pipeline *p)
{
	char err[512];
	size_t done = 0;
	int rc = 0;

	while (done < p->n_letters) {
		struct dead_letter *dl = &p->letters[done];
		if (state_dead_letter(p->state, p->proj->name, p->gen.number, dl, err, sizeof(err))) {
			state_failed(p, err);
			rc = -1;
			break;
		}
		free(dl->reason);
		free(dl->doc_id);
		done++;
	}
	memmove(p->letters, p->letters + done, (p->n_letters - done) * sizeof(*p->letters));
	p->n_letters -= done;
	return rc;
}

/* ---- reading ----------------------------------------------------------- */

bool pl_can_read(const struct pipeline *p)
{
	/* enough read ahead to fill every lane twice, and one read batch (reloadable sizes) */
	long per = p->cfg->bulk_actions > p->cfg->batch_size ? p->cfg->bulk_actions : p->cfg->batch_size;

	if (!p->started || p->stopping || p->finished || p->at_head || p->reached_end || p->pausing)
		return false;
	if (p->ledger.unsettled >= (size_t)per * (size_t)(p->n_lanes + 1) * 2)
		return false;
	if (p->ledger.bytes >= (size_t)p->cfg->max_unsettled_bytes)
		return false;
	for (int i = 0; i < p->n_lanes; i++) {
		const struct lane *l = &p->lanes[i];
		if ((l->busy || l->waiting) && l->n_ready)
			return false;
	}
	return true;
}

/*
 * Projections may keep ev->created_at in an operation (projection.h): give
 * it the lifetime of the parsed data.
 */
int pl_keep_created_at(struct arena *a, struct event *ev)
{
	size_t n = strlen(ev->created_at);
	char *copy = arena_alloc(a, n + 1);

	if (!copy)
		return -1;
	memcpy(copy, ev->created_at, n + 1);
	ev->created_at = copy;
	return 0;
}

const double pipeline_latency_bounds[PIPELINE_LATENCY_BUCKETS - 1] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

/* The index of `type` in the projection's event types, or -1. */
static int type_index(const struct projection *proj, const char *type)
{
	for (int i = 0; proj->event_types[i]; i++)
		if (!strcmp(proj->event_types[i], type))
			return i;
	return -1;
}

/* The concrete index of `slot` for the actions, NULL with one index (it is in the path). */
const char *pl_slot_index(const struct pipeline *p, size_t slot)
{
	return p->n_slots > 1 ? generation_index(&p->gen, slot) : NULL;
}

/*
 * The key a dead letter names its document by, and a held-back document is
 * found by: its _id, or "ALIAS/_id" for a projection of several indices.
 * Returns its length.
 */
size_t pl_doc_key(const struct pipeline *p, size_t slot, const char *id, size_t len, char *key,
		      size_t keysz)
{
	int n;

	if (p->n_slots == 1) {
		n = (int)(len < keysz - 1 ? len : keysz - 1);
		memcpy(key, id, (size_t)n);
		key[n] = '\0';
		return (size_t)n;
	}
	n = snprintf(key, keysz, "%s/%.*s", projection_alias(p->proj, slot), (int)len, id);
	return n < 0 ? 0 : (size_t)n < keysz ? (size_t)n : keysz - 1;
}

/* A dead letter of index `slot` (of several: the reason says which). */
void pl_slot_dead_letter(struct pipeline *p, size_t slot, struct position at, const char *doc,
			     size_t doc_len, const char *why)
{
	char reason[600];

	if (p->n_slots == 1) {
		pl_dead_letter(p, at, doc, doc_len, false, why);
		return;
	}
	snprintf(reason, sizeof(reason), "%s: %s", projection_alias(p->proj, slot), why);
	pl_dead_letter(p, at, doc, doc_len, false, reason);
}

/* Folds a parsed event into its document of index `slot`, if it has one there. */
static void process_slot(struct pipeline *p, struct rbatch *rb, struct event *ev, yajl_val tree,
			 size_t slot)
{
	char err[512], key[1024];
	struct lane *l;
	struct bulk_op *op;
	const struct held *h;
	size_t key_len;
	bool created;
	int rc;

	rc = projection_doc_id(p->proj, ev, tree, slot, &p->id, err, sizeof(err));
	if (rc == PROJECTION_SKIP)
		return;
	if (rc) {
		if (rc == PROJECTION_REJECT)
			pl_slot_dead_letter(p, slot, ev->at, NULL, 0, err);
		else
			pl_fail(p, "out of memory");
		return;
	}
	key_len = pl_doc_key(p, slot, p->id.data, p->id.len, key, sizeof(key));
	h = held_find(&p->held, key, key_len);
	if (h) {
		rc = position_cmp(ev->at, h->first);
		if (rc > 0)
			hold_event(p, ev->at, h);
		if (rc >= 0)
			return; /* held, or the letter that holds it (a replay) */
	}
	if (ev->data_len > (size_t)p->cfg->max_event_bytes) {
		snprintf(err, sizeof(err), "the event's data is %zu bytes, above max-event-bytes (%ld)",
			 ev->data_len, p->cfg->max_event_bytes);
		pl_slot_dead_letter(p, slot, ev->at, key, key_len, err);
		return;
	}
	l = &p->lanes[doctable_hash(p->id.data, p->id.len) % (uint64_t)p->n_lanes];
	if (lanes_opset_full(p, &l->building) && lane_seal(l)) {
		pl_fail(p, "out of memory");
		return;
	}
	op = opset_get(&l->building, p->id.data, p->id.len, (unsigned)slot, pl_slot_index(p, slot),
		       !p->cfg->coalesce, &created);
	if (!op) {
		pl_fail(p, "out of memory");
		return;
	}
	rc = p->proj->apply(ev, tree, op, err, sizeof(err));
	if (rc == PROJECTION_NEW_OP) {
		/* a second action for the document, after the pending one */
		op = opset_get(&l->building, p->id.data, p->id.len, (unsigned)slot, pl_slot_index(p, slot),
			       true, &created);
		rc = op ? p->proj->apply(ev, tree, op, err, sizeof(err)) : -2;
		if (rc == PROJECTION_NEW_OP)
			rc = -2; /* a projection bug: a fresh operation must take it */
	}
	if (rc) {
		if (created && op->kind == BULK_NONE && !op->n_events)
			opset_drop_last(&l->building);
		if (rc == PROJECTION_REJECT)
			pl_slot_dead_letter(p, slot, ev->at, key, key_len, err);
		else
			pl_fail(p, "out of memory");
		return;
	}
	if (bulk_op_note_event(op, ev->at)) {
		pl_fail(p, "out of memory");
		return;
	}
	if (opset_add_settle(&l->building, rb)) {
		pl_fail(p, "out of memory");
		return;
	}
	ledger_hold(&p->ledger, rb);
	l->building.est_bytes += ev->data_len + p->id.len + 48;
}

static void process_event(struct pipeline *p, struct rbatch *rb, struct event *ev)
{
	char err[512], perr[256];
	yajl_val tree;
	int rc;

	p->stats.events++;
	rc = type_index(p->proj, ev->type);
	p->stats.by_type[rc >= 0 && rc < PIPELINE_TYPES_MAX ? rc : PIPELINE_TYPES_MAX]++;
	if (rc < 0) {
		/*
		 * Read because its stream belongs to the projection. Quoted as by
		 * projection_unknown_type: one line of UTF-8, whatever the event holds.
		 */
		char type[101], stream[101];

		json_utf8_show(type, sizeof(type), ev->type);
		json_utf8_show(stream, sizeof(stream), ev->stream_id);
		snprintf(err, sizeof(err), "unknown event type '%s' in stream '%s' of projection '%s'", type,
			 stream, p->proj->name);
		pl_dead_letter(p, ev->at, NULL, 0, false, err);
		return;
	}
	if (pl_keep_created_at(&rb->arena, ev)) {
		pl_fail(p, "out of memory");
		return;
	}
	tree = json_parse(&rb->arena, &p->scratch, ev->data, ev->data_len, perr, sizeof(perr));
	if (!tree) {
		snprintf(err, sizeof(err), "%s", perr);
		pl_dead_letter(p, ev->at, NULL, 0, false, err);
		return;
	}
	for (size_t slot = 0; slot < p->n_slots && !p->hold; slot++)
		process_slot(p, rb, ev, tree, slot);
}

/*
 * After a short read preceded by store_head: every event of the projection
 * up to `head` has been read, so reads start after it from now on (a
 * projection whose events are rare would otherwise scan the others' events
 * at every wake-up). The checkpoint stays the last event it applied.
 */
static void skip_to(struct pipeline *p, struct position head)
{
	if (position_cmp(head, p->read_at) > 0)
		p->read_at = head;
}

static void read_once(struct pipeline *p)
{
	char err[512];
	struct store_batch b;
	struct rbatch *rb;
	struct event ev;
	struct position head = { 0, 0 };
	bool have_head = false;
	size_t budget;
	int limit;

	p->must_read = false;
	/*
	 * The bytes left under max-unsettled-bytes bound the read (the store
	 * stops there); its count is sized by the recent mean event, so that
	 * the server does not prepare far more large events than are taken.
	 */
	budget = p->ledger.bytes < (size_t)p->cfg->max_unsettled_bytes
			 ? (size_t)p->cfg->max_unsettled_bytes - p->ledger.bytes : 1;
	limit = (int)p->cfg->batch_size;
	if (p->event_bytes > 0 && (double)budget / p->event_bytes + 1 < (double)limit)
		limit = (int)((double)budget / p->event_bytes) + 1;
	/* at the head last time: first see how far the store goes (see skip_to) */
	if (p->short_reads && store_head(p->store, p->bound, &head, err, sizeof(err)) == 0)
		have_head = true;
	if (store_read(p->store, p->read_at, p->bound, p->proj->event_types, p->proj->streams, limit,
		       budget, &b, err, sizeof(err))) {
		p->at_head = true; /* the poll timer or the reconnection tries again */
		if (!store_connected(p->store)) {
			PLOG(LOG_WARN, p, "%s", err);
			pl_lost_store(p);
		} else {
			PLOG(LOG_WARN, p, "%s; trying again in %gs", err, p->cfg->poll_interval);
		}
		return;
	}
	/* notifications that arrived during the read */
	(void)store_drain_notifies(p->store);
	if (b.n == 0) {
		store_batch_release(&b);
		p->at_head = true;
		p->reached_end = p->once;
		p->short_reads = true;
		if (have_head)
			skip_to(p, head);
		return;
	}
	rb = ledger_append(&p->ledger);
	if (!rb) {
		store_batch_release(&b);
		pl_fail(p, "out of memory");
		return;
	}
	for (int i = 0; i < b.n && !p->hold; i++) {
		store_batch_event(&b, i, &ev);
		process_event(p, rb, &ev);
		rb->last = ev.at;
		rb->bytes += ev.data_len;
	}
	p->ledger.bytes += rb->bytes;
	p->event_bytes = p->event_bytes > 0 ? 0.5 * p->event_bytes + 0.5 * (double)rb->bytes / b.n
					    : (double)rb->bytes / b.n;
	p->read_at = rb->last;
	PLOG(LOG_DEBUG, p, "read %d events (%zu bytes) up to %" PRIu64 "/%" PRId64, b.n, rb->bytes,
	     rb->last.txid, rb->last.pos);
	p->short_reads = !b.more;
	if (!b.more) {
		p->at_head = true;
		p->reached_end = p->once;
		if (have_head)
			skip_to(p, head);
	}
	store_batch_release(&b);
}

/*
 * An operation not sent yet whose document is held back by a dead letter of
 * an earlier event: its events become held letters and it is sent no more
 * (they settle with its set, as letters). True if it was held.
 */
bool pl_hold_op(struct pipeline *p, struct bulk_op *op)
{
	char key[1024];
	const struct held *h;
	size_t key_len;

	if (op->kind == BULK_NONE || !op->n_events || !p->held.n)
		return false;
	key_len = pl_doc_key(p, op->slot, op->id, strlen(op->id), key, sizeof(key));
	h = held_find(&p->held, key, key_len);
	if (!h || position_cmp(op->events[0], h->first) <= 0)
		return false;
	for (size_t e = 0; e < op->n_events; e++)
		hold_event(p, op->events[e], h);
	op->kind = BULK_NONE;
	return true;
}

/*
 * Operations read but not sent yet, of documents held back: their events
 * become held letters now, as send_sending would make them, so that a retry
 * about to release the document takes them too, in order, instead of
 * finding a newer event queued ahead of the ones it applies again.
 */
static void hold_queued_set(struct pipeline *p, struct opset *o)
{
	for (size_t i = 0; i < o->n_ops; i++)
		(void)pl_hold_op(p, &o->ops[i]);
}

static void hold_queued(struct pipeline *p)
{
	if (!p->held.n)
		return;
	for (int i = 0; i < p->n_lanes; i++) {
		struct lane *l = &p->lanes[i];
		hold_queued_set(p, &l->building);
		for (size_t k = 0; k < l->n_ready; k++)
			hold_queued_set(p, &l->ready[k]);
	}
}

/*
 * Dead letters marked for retry (esbridge dead-letters retry|discard): their
 * events are read again and go through the projection ahead of anything
 * read later, in one batch that marks them retried once settled. Every
 * letter of a document goes back at once, so its document is released
 * only with all of its waiting events in order.
 */
static void process_retries(struct pipeline *p)
{
	char err[512];
	struct letter_ref *refs = NULL;
	struct position *at = NULL;
	long long *retried;
	struct store_batch b;
	struct rbatch *rb;
	size_t n = 0;

	p->letters_changed = false;
	hold_queued(p);
	if (p->n_letters && flush_letters(p))
		goto later;
	if (state_letters_to_retry(p->state, p->proj->name, p->gen.number, &refs, &n, err, sizeof(err)) ||
	    held_load(p, err, sizeof(err))) {
		state_failed(p, err);
		goto later;
	}
	if (!n)
		return;
	at = malloc(n * sizeof(*at));
	retried = malloc(n * sizeof(*retried));
	if (!at || !retried) {
		free(retried);
		free(at);
		free(refs);
		pl_fail(p, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		at[i] = refs[i].at;
		retried[i] = refs[i].id;
	}
	free(refs);
	refs = NULL; /* `later` frees it */
	if (store_read_positions(p->store, at, n, &b, err, sizeof(err))) {
		PLOG(LOG_WARN, p, "%s (trying again)", err);
		free(retried);
		free(at);
		if (!store_connected(p->store))
			pl_lost_store(p);
		goto later;
	}
	free(at);
	rb = ledger_append(&p->ledger);
	if (!rb) {
		free(retried);
		store_batch_release(&b);
		pl_fail(p, "out of memory");
		return;
	}
	rb->retried = retried;
	rb->n_retried = n;
	p->retry_batches++;
	PLOG(LOG_INFO, p, "applying %zu dead letters again", n);
	rb->last = p->read_at;
	for (int i = 0; i < b.n && !p->hold; i++) {
		struct event ev;
		store_batch_event(&b, i, &ev);
		process_event(p, rb, &ev);
	}
	store_batch_release(&b);
	return;
later:
	free(refs);
	p->letters_changed = true; /* at the next poll */
}

/* ---- checkpoint -------------------------------------------------------- */

static void advance_checkpoint(struct pipeline *p)
{
	char err[512];

	if (p->hold)
		return;
	/* the letters of what the checkpoint passes are recorded first */
	if (p->n_letters && flush_letters(p))
		return;
	for (struct rbatch *rb; (rb = ledger_settled(&p->ledger));) {
		if (rb->n_retried &&
		    state_letters_retried(p->state, rb->retried, rb->n_retried, err, sizeof(err))) {
			state_failed(p, err);
			return;
		}
		if (rb->retried)
			p->retry_batches--;
		p->settled = ledger_pop(&p->ledger);
	}
	if (position_cmp(p->settled, p->committed) == 0)
		return;
	if (state_save_checkpoint(p->state, p->proj->name, p->gen.number, p->settled, err, sizeof(err))) {
		/* the batch stays unacknowledged; it is sent again after a restart */
		state_failed(p, err);
		return;
	}
	p->committed = p->settled;
	p->stats.last_advance = ev_now(p->loop);
	PLOG(LOG_DEBUG, p, "checkpoint %" PRIu64 "/%" PRId64, p->committed.txid, p->committed.pos);
}

/* ---- the pump ---------------------------------------------------------- */

static void caught_up(struct pipeline *p)
{
	double now = ev_now(p->loop);

	/*
	 * At the head as of the last read (new events may have been notified
	 * since: under steady writes the pipeline is never idle, yet caught
	 * up), everything read settled and committed.
	 */
	if (!(p->at_head || p->reached_end || p->short_reads) || p->must_read || p->ledger.head ||
	    !lanes_all_quiet(p) || position_cmp(p->settled, p->committed) != 0 || p->caught_up_seen)
		return;
	p->caught_up_seen = true; /* until the next wake-up */
	if (p->caught_up_logged == 0) {
		PLOG(LOG_INFO, p, "caught up at %" PRIu64 "/%" PRId64 ": %" PRIu64 " events, %" PRIu64
		     " actions, %" PRIu64 " requests, %" PRIu64 " dead letters",
		     p->committed.txid, p->committed.pos, p->stats.events, p->stats.actions,
		     p->stats.requests, p->stats.dead_letters);
		p->caught_up_logged = now;
	}
	if (p->hooks.caught_up)
		p->hooks.caught_up(p->hooks.arg, p);
	if (p->reached_end && !p->stopping && !p->finished)
		finish(p);
}

/* Paused: nothing in flight, everything read is settled and committed. */
static void check_paused(struct pipeline *p)
{
	if (!p->pausing || p->paused || lanes_any_in_flight(p))
		return;
	for (int i = 0; i < p->n_lanes; i++)
		if (p->lanes[i].waiting || p->lanes[i].building.n_ops || p->lanes[i].n_ready)
			return;
	if (p->ledger.head || position_cmp(p->settled, p->committed) != 0)
		return;
	p->paused = true;
	PLOG(LOG_INFO, p, "paused at %" PRIu64 "/%" PRId64, p->committed.txid, p->committed.pos);
	if (p->hooks.paused)
		p->hooks.paused(p->hooks.arg, p);
}

static void pump(struct pipeline *p)
{
	if (p->finished)
		return;
	advance_checkpoint(p);
	if (p->stopping) {
		for (int i = 0; i < p->n_lanes; i++) {
			struct lane *l = &p->lanes[i];
			/* read but not sent: read again after the restart */
			lane_drop_unsent(l);
			if (l->waiting) {
				ev_timer_stop(p->loop, &l->retry);
				l->waiting = false;
				lane_abandon_sending(l);
			}
		}
		if (!lanes_any_in_flight(p)) {
			advance_checkpoint(p);
			finish(p);
		}
		ev_idle_stop(p->loop, &p->idle);
		return;
	}
	lanes_send_ready(p);
	if (!p->pausing) {
		/* before reading what was notified since: see caught_up() */
		caught_up(p);
		if (p->finished || p->stopping)
			return;
	}
	/* letters marked 'retry' stay so until applied: never read them twice */
	if (p->letters_changed && !p->retry_batches && pl_can_read(p))
		process_retries(p);
	if (pl_can_read(p)) {
		read_once(p);
		lanes_send_ready(p);
		advance_checkpoint(p);
	}
	if (p->pausing) {
		check_paused(p);
		ev_idle_stop(p->loop, &p->idle);
		return;
	}
	caught_up(p);
	if (p->finished || p->stopping)
		return;
	if (!pl_can_read(p)) {
		bool more = false;
		for (int i = 0; i < p->n_lanes; i++)
			more = more || lane_sendable(p, &p->lanes[i]);
		if (!more)
			ev_idle_stop(p->loop, &p->idle);
	}
}

static void idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct pipeline *p = (struct pipeline *)((char *)w - offsetof(struct pipeline, idle));

	(void)loop;
	(void)revents;
	pump(p);
}

void pl_kick(struct pipeline *p)
{
	if (!p->finished)
		ev_idle_start(p->loop, &p->idle);
}

static void wake(struct pipeline *p)
{
	if (!p->reached_end)
		p->at_head = false;
	p->caught_up_seen = false;
	pl_kick(p);
}

/*
 * The event store connection is gone: reconnect with capped exponential
 * backoff, LISTEN again, and read on from the last event read (what was
 * read and not yet settled is still queued; the checkpoint did not move).
 */
void pl_lost_store(struct pipeline *p)
{
	if (ev_is_active(&p->reconnect) || p->finished)
		return;
	p->stats.store_down = true;
	pl_note_error(p, "lost the event store connection");
	ev_io_stop(p->loop, &p->notify);
	if (p->reconnect_delay <= 0)
		p->reconnect_delay = backoff_next(0, 0.1, p->cfg->retry_max);
	PLOG(LOG_WARN, p, "lost the PostgreSQL connection of the event store; reconnecting in %.1fs",
	     p->reconnect_delay);
	ev_timer_set(&p->reconnect, p->reconnect_delay, 0.0);
	ev_timer_start(p->loop, &p->reconnect);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pipeline *p = (struct pipeline *)((char *)w - offsetof(struct pipeline, reconnect));
	char err[512];

	(void)loop;
	(void)revents;
	if (store_reconnect(p->store, !p->once, err, sizeof(err))) {
		p->reconnect_delay = backoff_next(p->reconnect_delay, 0.1, p->cfg->retry_max);
		PLOG(LOG_WARN, p, "%s; trying again in %.1fs", err, p->reconnect_delay);
		ev_timer_set(&p->reconnect, p->reconnect_delay, 0.0);
		ev_timer_start(p->loop, &p->reconnect);
		return;
	}
	p->reconnect_delay = 0;
	p->stats.store_down = false;
	PLOG(LOG_INFO, p, "reconnected to PostgreSQL");
	if (!p->once) {
		ev_io_set(&p->notify, store_socket(p->store), EV_READ);
		ev_io_start(p->loop, &p->notify);
	}
	wake(p);
}

static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pipeline *p = (struct pipeline *)((char *)w - offsetof(struct pipeline, poll));

	(void)loop;
	(void)revents;
	if (!store_connected(p->store)) {
		pl_lost_store(p);
		return;
	}
	wake(p);
}

static void notify_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct pipeline *p = (struct pipeline *)((char *)w - offsetof(struct pipeline, notify));

	(void)loop;
	(void)revents;
	if (store_drain_notifies(p->store) < 0) {
		pl_lost_store(p);
		return;
	}
	wake(p);
}

/* ---- lifecycle --------------------------------------------------------- */

static void finish(struct pipeline *p)
{
	if (p->finished)
		return;
	p->finished = true;
	ev_idle_stop(p->loop, &p->idle);
	ev_timer_stop(p->loop, &p->poll);
	ev_timer_stop(p->loop, &p->reconnect);
	ev_io_stop(p->loop, &p->notify);
	for (int i = 0; i < p->n_lanes; i++)
		ev_timer_stop(p->loop, &p->lanes[i].retry);
	PLOG(p->failed ? LOG_ERROR : LOG_INFO, p,
	     "%s at checkpoint %" PRIu64 "/%" PRId64 ": %" PRIu64 " events, %" PRIu64 " actions, %" PRIu64
	     " requests, %" PRIu64 " no-ops, %" PRIu64 " retries, %" PRIu64 " dead letters",
	     p->failed ? "stopped on an error" : "stopped", p->committed.txid, p->committed.pos,
	     p->stats.events, p->stats.actions, p->stats.requests, p->stats.items_noop,
	     p->stats.retries, p->stats.dead_letters);
	if (p->hooks.finished)
		p->hooks.finished(p->hooks.arg, p);
}

struct pipeline *pipeline_new(struct ev_loop *loop, const struct config *cfg,
			      const struct projection *proj, struct es_client *es, struct state *st,
			      const struct generation *gen, bool once, char *err, size_t errsz)
{
	struct pipeline *p = calloc(1, sizeof(*p));

	if (!p) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	p->loop = loop;
	p->cfg = cfg;
	p->proj = proj;
	p->es = es;
	p->once = once;
	buf_init(&p->id, 4096);
	p->n_lanes = (int)cfg->inflight;
	p->lanes = calloc((size_t)p->n_lanes, sizeof(*p->lanes));
	if (!p->lanes) {
		snprintf(err, errsz, "out of memory");
		goto fail;
	}
	for (int i = 0; i < p->n_lanes; i++) {
		p->lanes[i].p = p;
		p->lanes[i].idx = i;
		ev_init(&p->lanes[i].retry, lane_retry_cb);
	}
	ev_idle_init(&p->idle, idle_cb);
	ev_timer_init(&p->poll, poll_cb, cfg->poll_interval, cfg->poll_interval);
	ev_init(&p->notify, notify_cb);
	ev_init(&p->reconnect, reconnect_cb);

	p->state = st;
	p->gen = *gen;
	p->store = store_open(cfg->pg, err, errsz);
	if (!p->store)
		goto fail;
	p->read_at = p->settled = p->committed = p->gen.checkpoint;
	if (held_load(p, err, errsz))
		goto fail;
	p->letters_changed = true; /* letters marked for retry while no process ran */
	/* several indices: each action names its own */
	p->n_slots = projection_n_indices(proj);
	if (p->n_slots > 1)
		snprintf(p->path, sizeof(p->path), "/_bulk?%s", BULK_FILTER_PATH);
	else
		snprintf(p->path, sizeof(p->path), "/%s/_bulk?%s", p->gen.index, BULK_FILTER_PATH);
	if (once) {
		if (store_xmin(p->store, &p->bound, err, errsz))
			goto fail;
	} else {
		if (store_listen(p->store, err, errsz))
			goto fail;
		ev_io_set(&p->notify, store_socket(p->store), EV_READ);
	}
	return p;
fail:
	pipeline_free(p);
	return NULL;
}

void pipeline_start(struct pipeline *p, const struct pipeline_hooks *hooks)
{
	p->hooks = *hooks;
	p->started = true;
	p->stats.last_advance = ev_now(p->loop);
	PLOG(LOG_INFO, p, "starting on %s from checkpoint %" PRIu64 "/%" PRId64 "%s", p->gen.index,
	     p->committed.txid, p->committed.pos, p->once ? " (once)" : "");
	if (!p->once) {
		ev_io_start(p->loop, &p->notify);
	}
	ev_timer_start(p->loop, &p->poll);
	pl_kick(p);
}

void pipeline_stop(struct pipeline *p)
{
	if (p->finished || p->stopping)
		return;
	PLOG(LOG_INFO, p, "stopping: finishing the requests in flight");
	p->stopping = true;
	pl_kick(p);
}

void pipeline_pause(struct pipeline *p)
{
	if (p->finished || p->pausing)
		return;
	PLOG(LOG_INFO, p, "pausing: finishing the requests in flight");
	p->pausing = true;
	p->paused = false;
	pl_kick(p);
}

void pipeline_resume(struct pipeline *p)
{
	if (!p->pausing)
		return;
	p->pausing = p->paused = false;
	wake(p);
}

void pipeline_wake(struct pipeline *p)
{
	p->must_read = true; /* its owner waits for what is in the store now */
	wake(p);
}

void pipeline_fail(struct pipeline *p, const char *why)
{
	pl_fail(p, why);
}

struct position pipeline_checkpoint(const struct pipeline *p)
{
	return p->committed;
}

const struct generation *pipeline_generation(const struct pipeline *p)
{
	return &p->gen;
}

void pipeline_set_generation_state(struct pipeline *p, enum gen_state s)
{
	p->gen.state = s;
}

bool pipeline_finished(const struct pipeline *p)
{
	return p->finished;
}

int pipeline_exit_code(const struct pipeline *p)
{
	if (p->lost)
		return PIPELINE_EXIT_LOST;
	return p->failed ? 1 : 0;
}

void pipeline_letters_changed(struct pipeline *p)
{
	p->letters_changed = true;
	pl_kick(p);
}

const struct pipeline_stats *pipeline_get_stats(const struct pipeline *p)
{
	return &p->stats;
}

void pipeline_free(struct pipeline *p)
{
	if (!p)
		return;
	if (p->loop) {
		ev_idle_stop(p->loop, &p->idle);
		ev_timer_stop(p->loop, &p->poll);
		ev_timer_stop(p->loop, &p->reconnect);
		ev_io_stop(p->loop, &p->notify);
	}
	for (int i = 0; p->lanes && i < p->n_lanes; i++) {
		ev_timer_stop(p->loop, &p->lanes[i].retry);
		lane_drop_unsent(&p->lanes[i]);
		free(p->lanes[i].ready);
		opset_release(&p->lanes[i].sending);
	}
	free(p->lanes);
	ledger_release(&p->ledger);
	for (size_t i = 0; i < p->n_letters; i++) {
		free(p->letters[i].reason);
		free(p->letters[i].doc_id);
	}
	free(p->letters);
	held_clear(&p->held);
	store_close(p->store);
	buf_release(&p->id);
	json_scratch_release(&p->scratch);
	free(p);
}
