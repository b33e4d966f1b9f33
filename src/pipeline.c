#include "esbridge/pipeline.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_tree.h>

#include "esbridge/bulk.h"
#include "esbridge/json.h"
#include "esbridge/log.h"
#include "esbridge/state.h"
#include "esbridge/store.h"

/* One read from the event store; settled once all its events are. */
struct rbatch {
	struct rbatch *next;
	struct position last;
	size_t unsettled;
	struct arena arena;   /* the parsed events; operations point into it */
	long long *retried;   /* dead letters applied again by this batch */
	size_t n_retried;
};

/* A document held back by a dead letter: its events after `first` wait. */
struct held {
	char *id;             /* NULL: empty slot */
	struct position first;
};

/* The held-back documents: open addressing, a power of two. */
struct held_table {
	struct held *slots;
	size_t n, n_slots;
};

/* `n` events of read batch `rb` are held by an operation set. */
struct settle {
	struct rbatch *rb;
	size_t n;
};

/*
 * The operations of one request: one per document, in first-seen order,
 * found by _id through an open-addressing table; the parsed events their
 * values point into; and what they settle.
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

struct lane {
	struct pipeline *p;
	int idx;
	struct opset building;  /* filling from reads */
	struct opset *ready;    /* full sets waiting for the lane, oldest first */
	size_t n_ready, cap_ready;
	struct opset sending;   /* the request in flight or waiting to be sent again */
	double sent_at;         /* when the request in flight was sent */
	size_t body_len;        /* its body's size */
	bool busy;              /* a request is in flight */
	bool waiting;           /* the retry timer runs */
	int attempts;
	size_t n_written;
	ev_timer retry;
};

struct pipeline {
	struct ev_loop *loop;
	const struct config *cfg;
	const struct projection *proj;
	struct es_client *es;
	struct store *store;
	struct state *state;
	struct generation gen;
	bool once;
	uint64_t bound;            /* with --once: read only below this xid */
	struct position read_at;   /* the last event read */
	struct position settled;   /* everything up to here is settled */
	struct position committed; /* saved in PostgreSQL */
	struct rbatch *rb_head, *rb_tail;
	size_t unsettled;
	struct lane *lanes;
	int n_lanes;
	bool started, at_head, reached_end, stopping, finished, failed, hold;
	double caught_up_logged;
	bool caught_up_seen;
	ev_idle idle;
	ev_timer poll;
	ev_io notify;
	struct pipeline_hooks hooks;
	bool pausing, paused;
	bool lost;                 /* the state connection is gone: start over */
	bool short_reads;          /* the last read reached the head */
	bool must_read;            /* woken by the owner: caught up only after a read */
	bool letters_changed;      /* dead letters to retry may wait */
	int retry_batches;         /* batches of letters applied again, not yet settled */
	struct dead_letter *letters; /* recorded before the checkpoint moves */
	size_t n_letters, cap_letters;
	struct held_table held;
	ev_timer reconnect;
	double reconnect_delay;
	struct pipeline_stats stats;
	struct buf id;
	struct json_scratch scratch;
	size_t n_slots;            /* indices the projection writes */
	char path[256];
	uint64_t dump_seq;
};

#define PLOG(lvl, p, ...) LOG_AT(lvl, (p)->proj->name, (p)->gen.number, __VA_ARGS__)

static void kick(struct pipeline *p);
static void finish(struct pipeline *p);

/* ---- operation sets ---------------------------------------------------- */

static uint64_t hash_id(const char *s, size_t n)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* A document is its index slot and its _id (one index: slot 0, the _id's hash). */
static uint64_t hash_key(const char *s, size_t n, unsigned slot)
{
	return hash_id(s, n) ^ ((uint64_t)slot * 0x9E3779B97F4A7C15ULL);
}

static uint64_t hash_op(const struct bulk_op *op)
{
	return hash_key(op->id, strlen(op->id), op->slot);
}

static void opset_release(struct opset *o)
{
	for (size_t i = 0; i < o->n_ops; i++)
		bulk_op_release(&o->ops[i]);
	arena_release(&o->arena);
	free(o->ops);
	free(o->slots);
	free(o->settles);
	memset(o, 0, sizeof(*o));
}

static int opset_rehash(struct opset *o, size_t n_slots)
{
	uint32_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -1;
	for (size_t i = 0; i < o->n_ops; i++) {
		size_t j = hash_op(&o->ops[i]) & (n_slots - 1);
		while (slots[j])
			j = (j + 1) & (n_slots - 1);
		slots[j] = (uint32_t)(i + 1);
	}
	free(o->slots);
	o->slots = slots;
	o->n_slots = n_slots;
	return 0;
}

/*
 * The pending operation of document `id` in index `slot` (`index`: its
 * name for the action, NULL with one index), created when absent. With
 * `fresh`, a new operation is appended even when one exists (no coalescing;
 * the lookup then finds the newest).
 */
static struct bulk_op *opset_get(struct opset *o, const char *id, size_t len, unsigned slot,
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
		if (op->slot == slot && !strcmp(op->id, id)) {
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

/* Drops the operation just created by opset_get (it stayed empty). */
static void opset_drop_last(struct opset *o)
{
	struct bulk_op *op = &o->ops[o->n_ops - 1];
	size_t j = hash_op(op) & (o->n_slots - 1);

	while (o->slots[j] != o->n_ops)
		j = (j + 1) & (o->n_slots - 1);
	bulk_op_release(op);
	o->n_ops--;
	/* re-insert the probe chain after the hole */
	o->slots[j] = 0;
	for (size_t k = (j + 1) & (o->n_slots - 1); o->slots[k]; k = (k + 1) & (o->n_slots - 1)) {
		uint32_t v = o->slots[k];
		size_t h;
		o->slots[k] = 0;
		h = hash_op(&o->ops[v - 1]) & (o->n_slots - 1);
		while (o->slots[h])
			h = (h + 1) & (o->n_slots - 1);
		o->slots[h] = v;
	}
}

static int opset_add_settle(struct opset *o, struct rbatch *rb)
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

/* ---- dead letters and failure ------------------------------------------ */

static void note_error(struct pipeline *p, const char *what)
{
	snprintf(p->stats.last_error, sizeof(p->stats.last_error), "%s", what);
}

static void fail(struct pipeline *p, const char *why)
{
	PLOG(LOG_ERROR, p, "stopping: %s", why);
	note_error(p, why);
	p->failed = true;
	p->hold = true;
	p->stopping = true;
	kick(p);
}

static void lose(struct pipeline *p, const char *err)
{
	PLOG(LOG_ERROR, p, "%s; lost the PostgreSQL connection of the bridge state: starting over", err);
	p->lost = true;
	fail(p, "lost the state connection");
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

static struct held *held_slot(struct held *slots, size_t n_slots, const char *id, size_t len)
{
	size_t i = (size_t)hash_id(id, len) & (n_slots - 1);

	while (slots[i].id && (strlen(slots[i].id) != len || memcmp(slots[i].id, id, len)))
		i = (i + 1) & (n_slots - 1);
	return &slots[i];
}

static struct held *held_find(const struct pipeline *p, const char *id, size_t len)
{
	struct held *h;

	if (!p->held.n)
		return NULL;
	h = held_slot(p->held.slots, p->held.n_slots, id, len);
	return h->id ? h : NULL;
}

static void held_clear(struct held_table *t)
{
	for (size_t i = 0; i < t->n_slots; i++)
		free(t->slots[i].id);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* Holds document `id` back from `first` on (the earliest wins); -1 on no memory. */
static int held_add(struct held_table *t, const char *id, size_t len, struct position first)
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
static void dead_letter(struct pipeline *p, struct position at, const char *doc, size_t doc_len,
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
	fail(p, "out of memory");
}

/* An event of a held-back document: recorded behind the letter that holds it. */
static void hold_event(struct pipeline *p, struct position at, const struct held *h)
{
	char why[256], shown[101];

	/* the id cut on a character boundary, one line: the reason is UTF-8 text for PostgreSQL */
	(void)json_utf8_show(shown, sizeof(shown), h->id);
	snprintf(why, sizeof(why), "held back: document '%s' has an open dead letter at %" PRIu64 "/%" PRId64,
		 shown, h->first.txid, h->first.pos);
	dead_letter(p, at, h->id, strlen(h->id), true, why);
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

static bool opset_full(const struct pipeline *p, const struct opset *o)
{
	return o->n_ops >= (size_t)p->cfg->bulk_actions || o->est_bytes >= (size_t)p->cfg->bulk_bytes;
}

static bool can_read(const struct pipeline *p)
{
	/* enough read ahead to fill every lane twice, and one read batch (reloadable sizes) */
	long per = p->cfg->bulk_actions > p->cfg->batch_size ? p->cfg->bulk_actions : p->cfg->batch_size;

	if (!p->started || p->stopping || p->finished || p->at_head || p->reached_end || p->pausing)
		return false;
	if (p->unsettled >= (size_t)per * (size_t)(p->n_lanes + 1) * 2)
		return false;
	for (int i = 0; i < p->n_lanes; i++) {
		const struct lane *l = &p->lanes[i];
		if ((l->busy || l->waiting) && l->n_ready)
			return false;
	}
	return true;
}

/*
 * Queues the lane's full building set to be sent after the ones before it;
 * a document's later events then go to a later request, in order.
 */
static int lane_seal(struct lane *l)
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

static void lane_drop_unsent(struct lane *l)
{
	for (size_t i = 0; i < l->n_ready; i++)
		opset_release(&l->ready[i]);
	l->n_ready = 0;
	opset_release(&l->building);
}

/*
 * Projections may keep ev->created_at in an operation (projection.h): give
 * it the lifetime of the parsed data.
 */
static int keep_created_at(struct arena *a, struct event *ev)
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
static const char *slot_index(const struct pipeline *p, size_t slot)
{
	return p->n_slots > 1 ? generation_index(&p->gen, slot) : NULL;
}

/*
 * The key a dead letter names its document by, and a held-back document is
 * found by: its _id, or "ALIAS/_id" for a projection of several indices.
 * Returns its length.
 */
static size_t doc_key(const struct pipeline *p, size_t slot, const char *id, size_t len, char *key,
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
static void slot_dead_letter(struct pipeline *p, size_t slot, struct position at, const char *doc,
			     size_t doc_len, const char *why)
{
	char reason[600];

	if (p->n_slots == 1) {
		dead_letter(p, at, doc, doc_len, false, why);
		return;
	}
	snprintf(reason, sizeof(reason), "%s: %s", projection_alias(p->proj, slot), why);
	dead_letter(p, at, doc, doc_len, false, reason);
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
			slot_dead_letter(p, slot, ev->at, NULL, 0, err);
		else
			fail(p, "out of memory");
		return;
	}
	key_len = doc_key(p, slot, p->id.data, p->id.len, key, sizeof(key));
	h = held_find(p, key, key_len);
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
		slot_dead_letter(p, slot, ev->at, key, key_len, err);
		return;
	}
	l = &p->lanes[hash_id(p->id.data, p->id.len) % (uint64_t)p->n_lanes];
	if (opset_full(p, &l->building) && lane_seal(l)) {
		fail(p, "out of memory");
		return;
	}
	op = opset_get(&l->building, p->id.data, p->id.len, (unsigned)slot, slot_index(p, slot),
		       !p->cfg->coalesce, &created);
	if (!op) {
		fail(p, "out of memory");
		return;
	}
	rc = p->proj->apply(ev, tree, op, err, sizeof(err));
	if (rc == PROJECTION_NEW_OP) {
		/* a second action for the document, after the pending one */
		op = opset_get(&l->building, p->id.data, p->id.len, (unsigned)slot, slot_index(p, slot),
			       true, &created);
		rc = op ? p->proj->apply(ev, tree, op, err, sizeof(err)) : -2;
		if (rc == PROJECTION_NEW_OP)
			rc = -2; /* a projection bug: a fresh operation must take it */
	}
	if (rc) {
		if (created && op->kind == BULK_NONE && !op->n_events)
			opset_drop_last(&l->building);
		if (rc == PROJECTION_REJECT)
			slot_dead_letter(p, slot, ev->at, key, key_len, err);
		else
			fail(p, "out of memory");
		return;
	}
	if (bulk_op_note_event(op, ev->at)) {
		fail(p, "out of memory");
		return;
	}
	if (opset_add_settle(&l->building, rb)) {
		fail(p, "out of memory");
		return;
	}
	rb->unsettled++;
	p->unsettled++;
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
		dead_letter(p, ev->at, NULL, 0, false, err);
		return;
	}
	if (keep_created_at(&rb->arena, ev)) {
		fail(p, "out of memory");
		return;
	}
	tree = json_parse(&rb->arena, &p->scratch, ev->data, ev->data_len, perr, sizeof(perr));
	if (!tree) {
		snprintf(err, sizeof(err), "%s", perr);
		dead_letter(p, ev->at, NULL, 0, false, err);
		return;
	}
	for (size_t slot = 0; slot < p->n_slots && !p->hold; slot++)
		process_slot(p, rb, ev, tree, slot);
}

static void lost_store(struct pipeline *p);

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

	p->must_read = false;
	/* at the head last time: first see how far the store goes (see skip_to) */
	if (p->short_reads && store_head(p->store, p->bound, &head, err, sizeof(err)) == 0)
		have_head = true;
	if (store_read(p->store, p->read_at, p->bound, p->proj->event_types, p->proj->streams,
		       (int)p->cfg->batch_size, &b, err, sizeof(err))) {
		p->at_head = true; /* the poll timer or the reconnection tries again */
		if (!store_connected(p->store)) {
			PLOG(LOG_WARN, p, "%s", err);
			lost_store(p);
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
	rb = calloc(1, sizeof(*rb));
	if (!rb) {
		store_batch_release(&b);
		fail(p, "out of memory");
		return;
	}
	if (p->rb_tail)
		p->rb_tail->next = rb;
	else
		p->rb_head = rb;
	p->rb_tail = rb;
	for (int i = 0; i < b.n && !p->hold; i++) {
		store_batch_event(&b, i, &ev);
		process_event(p, rb, &ev);
		rb->last = ev.at;
	}
	p->read_at = rb->last;
	PLOG(LOG_DEBUG, p, "read %d events up to %" PRIu64 "/%" PRId64, b.n, rb->last.txid, rb->last.pos);
	p->short_reads = b.n < p->cfg->batch_size;
	if (b.n < p->cfg->batch_size) {
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
static bool hold_op(struct pipeline *p, struct bulk_op *op)
{
	char key[1024];
	const struct held *h;
	size_t key_len;

	if (op->kind == BULK_NONE || !op->n_events || !p->held.n)
		return false;
	key_len = doc_key(p, op->slot, op->id, strlen(op->id), key, sizeof(key));
	h = held_find(p, key, key_len);
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
		(void)hold_op(p, &o->ops[i]);
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
	rb = calloc(1, sizeof(*rb));
	at = malloc(n * sizeof(*at));
	if (rb)
		rb->retried = malloc(n * sizeof(*rb->retried));
	if (!rb || !at || !rb->retried) {
		if (rb)
			free(rb->retried);
		free(rb);
		free(at);
		free(refs);
		fail(p, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		at[i] = refs[i].at;
		rb->retried[i] = refs[i].id;
	}
	rb->n_retried = n;
	free(refs);
	refs = NULL; /* `later` frees it */
	if (store_read_positions(p->store, at, n, &b, err, sizeof(err))) {
		PLOG(LOG_WARN, p, "%s (trying again)", err);
		free(rb->retried);
		free(rb);
		free(at);
		if (!store_connected(p->store))
			lost_store(p);
		goto later;
	}
	free(at);
	p->retry_batches++;
	PLOG(LOG_INFO, p, "applying %zu dead letters again", n);
	rb->last = p->read_at;
	if (p->rb_tail)
		p->rb_tail->next = rb;
	else
		p->rb_head = rb;
	p->rb_tail = rb;
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
	while (p->rb_head && p->rb_head->unsettled == 0) {
		struct rbatch *rb = p->rb_head;
		if (rb->n_retried &&
		    state_letters_retried(p->state, rb->retried, rb->n_retried, err, sizeof(err))) {
			state_failed(p, err);
			return;
		}
		if (rb->retried)
			p->retry_batches--;
		free(rb->retried);
		p->settled = rb->last;
		p->rb_head = rb->next;
		if (!p->rb_head)
			p->rb_tail = NULL;
		arena_release(&rb->arena);
		free(rb);
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

/* ---- sending ----------------------------------------------------------- */

static void send_lane(struct lane *l);
static void send_sending(struct lane *l);

static void settle_sending(struct lane *l)
{
	struct pipeline *p = l->p;

	for (size_t i = 0; i < l->sending.n_settles; i++) {
		l->sending.settles[i].rb->unsettled -= l->sending.settles[i].n;
		p->unsettled -= l->sending.settles[i].n;
	}
	opset_release(&l->sending);
	l->attempts = 0;
}

static void abandon_sending(struct lane *l)
{
	/* its events stay unsettled: the checkpoint never passes them */
	opset_release(&l->sending);
	l->attempts = 0;
}

static void dead_letter_op(struct pipeline *p, struct bulk_op *op, const char *reason)
{
	char key[1024];
	size_t key_len = doc_key(p, op->slot, op->id, strlen(op->id), key, sizeof(key));

	for (size_t i = 0; i < op->n_events; i++)
		slot_dead_letter(p, op->slot, op->events[i], key, key_len, reason);
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
		if (keep_created_at(&l->sending.arena, &ev)) {
			fail(p, "out of memory");
			break;
		}
		tree = json_parse(&l->sending.arena, &p->scratch, ev.data, ev.data_len, perr, sizeof(perr));
		if (!tree) {
			dead_letter(p, ev.at, NULL, 0, false, perr);
			continue;
		}
		/* only the index of the rejected action: the event's others are done */
		rc = projection_doc_id(p->proj, &ev, tree, slot, &p->id, err, sizeof(err));
		if (rc == PROJECTION_SKIP)
			continue;
		op = rc ? NULL : opset_get(&l->sending, p->id.data, p->id.len, slot, slot_index(p, slot),
					  true, &created);
		if (op)
			rc = p->proj->apply(&ev, tree, op, err, sizeof(err));
		if (!op || rc) {
			/* with an operation, the letter names its document */
			char key[1024];
			size_t key_len = op ? doc_key(p, slot, p->id.data, p->id.len, key, sizeof(key)) : 0;

			if (op && created)
				opset_drop_last(&l->sending);
			slot_dead_letter(p, slot, ev.at, op ? key : NULL, key_len,
					 rc == PROJECTION_REJECT ? err : "out of memory");
			continue;
		}
		if (bulk_op_note_event(op, ev.at)) {
			fail(p, "out of memory");
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
	note_error(p, why);
	if (p->stopping) {
		PLOG(LOG_WARN, p, "bulk request failed while stopping, not sent again: %s", why);
		abandon_sending(l);
		kick(p);
		return;
	}
	delay = 0.25 * pow(2.0, l->attempts < 20 ? l->attempts - 1 : 19);
	if (delay > p->cfg->retry_max)
		delay = p->cfg->retry_max;
	delay *= 0.5 + 0.5 * ((double)rand() / (double)RAND_MAX);
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

static void lane_done(void *arg, const struct es_response *r)
{
	struct lane *l = arg;
	struct pipeline *p = l->p;
	struct bulk_response br;
	char err[512], why[512] = "";
	size_t item = 0;
	bool again = false, split = false, deferred = false;
	size_t n_ops;

	l->busy = false;
	kick(p);
	{
		double dt = ev_now(p->loop) - l->sent_at;
		int b = 0;
		while (b < PIPELINE_LATENCY_BUCKETS - 1 && dt > pipeline_latency_bounds[b])
			b++;
		p->stats.latency[b]++;
		p->stats.latency_sum += dt;
		p->stats.inflight_bytes -= l->body_len;
	}
	if (r->transport_error || r->status != 200) {
		p->stats.requests_failed++;
		if (p->stats.failing_since == 0)
			p->stats.failing_since = ev_now(p->loop);
	} else {
		p->stats.failing_since = 0;
	}
	if (r->transport_error) {
		lane_retry_later(l, r->error);
		return;
	}
	if (r->status == 401 || r->status == 403) {
		/* the body is often a proxy's HTML page; es.c explains once */
		snprintf(err, sizeof(err), "HTTP %ld %s", r->status,
			 r->status == 401 ? "Unauthorized (check the credentials)" : "Forbidden (check the rights)");
		lane_retry_later(l, err);
		return;
	}
	if (r->status != 200) {
		snprintf(err, sizeof(err), "HTTP %ld: %.200s", r->status, r->body);
		for (char *c = err; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		lane_retry_later(l, err);
		return;
	}
	if (bulk_response_parse(r->body, r->len, &br, err, sizeof(err))) {
		lane_retry_later(l, err);
		return;
	}
	if (br.n_items != l->n_written) {
		snprintf(err, sizeof(err), "the response has %zu items for %zu actions", br.n_items,
			 l->n_written);
		bulk_response_release(&br);
		lane_retry_later(l, err);
		return;
	}
	p->stats.requests++;
	/* split_op appends to the set: only the operations this response answers */
	n_ops = l->sending.n_ops;
	for (size_t i = 0; i < n_ops; i++) {
		struct bulk_op *op = &l->sending.ops[i];
		const struct bulk_item *it;
		if (op->kind == BULK_NONE)
			continue;
		if (!op->written) {
			deferred = true;
			continue;
		}
		it = &br.items[item++];
		switch (bulk_item_outcome(it)) {
		case BULK_ITEM_OK:
			p->stats.items_ok++;
			p->stats.items_noop += it->noop;
			op->applied = true; /* not sent again, unless a retry needs it (below) */
			break;
		case BULK_ITEM_REJECT:
			p->stats.items_rejected++;
			snprintf(err, sizeof(err), "rejected by Elasticsearch: HTTP %d %s: %s", it->status,
				 it->error_type, it->error_reason);
			/* a missing document is missing for each event alike: no split */
			if (op->n_events > 1 && it->status != 404 && split_op(l, i, err) == 0) {
				split = true;
				break;
			}
			dead_letter_op(p, op, err);
			break;
		case BULK_ITEM_RETRY:
			p->stats.items_retry++;
			if (!again)
				snprintf(why, sizeof(why), "item HTTP %d %s: %s", it->status, it->error_type,
					 it->error_reason);
			again = true;
			break;
		}
	}
	bulk_response_release(&br);
	settle_applied(l, n_ops, again);
	if (again) {
		lane_retry_later(l, why);
		return;
	}
	if (split || deferred) {
		if (p->stopping)
			abandon_sending(l); /* not applied yet: never settled */
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
		fail(p, "out of memory");
		abandon_sending(l);
		return;
	}
	l->n_written = 0;
	for (size_t i = 0; i < l->sending.n_ops; i++) {
		struct bulk_op *op = &l->sending.ops[i];
		op->written = false;
		/* held: an earlier event of the document is a dead letter */
		if (op->kind == BULK_NONE || hold_op(p, op))
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
				fail(p, err);
				abandon_sending(l);
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
		kick(p);
		return;
	}
	data = buf_take(&body, &len);
	if (!data) {
		fail(p, "out of memory");
		abandon_sending(l);
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

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lane *l = (struct lane *)((char *)w - offsetof(struct lane, retry));

	(void)loop;
	(void)revents;
	l->waiting = false;
	if (l->p->stopping) {
		abandon_sending(l);
		kick(l->p);
		return;
	}
	send_sending(l);
}

static bool lane_sendable(const struct pipeline *p, const struct lane *l)
{
	if (l->busy || l->waiting || p->stopping)
		return false;
	if (l->n_ready)
		return true;
	if (l->building.n_ops == 0)
		return false;
	return opset_full(p, &l->building) || p->at_head || p->reached_end || p->pausing || !can_read(p);
}

static void send_ready(struct pipeline *p)
{
	for (int i = 0; i < p->n_lanes; i++)
		if (lane_sendable(p, &p->lanes[i]))
			send_lane(&p->lanes[i]);
}

/* ---- the pump ---------------------------------------------------------- */

static bool all_quiet(const struct pipeline *p)
{
	for (int i = 0; i < p->n_lanes; i++) {
		const struct lane *l = &p->lanes[i];
		if (l->busy || l->waiting || l->building.n_ops || l->n_ready || l->sending.n_ops)
			return false;
	}
	return true;
}

static bool any_in_flight(const struct pipeline *p)
{
	for (int i = 0; i < p->n_lanes; i++)
		if (p->lanes[i].busy)
			return true;
	return false;
}

static void caught_up(struct pipeline *p)
{
	double now = ev_now(p->loop);

	/*
	 * At the head as of the last read (new events may have been notified
	 * since: under steady writes the pipeline is never idle, yet caught
	 * up), everything read settled and committed.
	 */
	if (!(p->at_head || p->reached_end || p->short_reads) || p->must_read || p->rb_head ||
	    !all_quiet(p) || position_cmp(p->settled, p->committed) != 0 || p->caught_up_seen)
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
	if (!p->pausing || p->paused || any_in_flight(p))
		return;
	for (int i = 0; i < p->n_lanes; i++)
		if (p->lanes[i].waiting || p->lanes[i].building.n_ops || p->lanes[i].n_ready)
			return;
	if (p->rb_head || position_cmp(p->settled, p->committed) != 0)
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
				abandon_sending(l);
			}
		}
		if (!any_in_flight(p)) {
			advance_checkpoint(p);
			finish(p);
		}
		ev_idle_stop(p->loop, &p->idle);
		return;
	}
	send_ready(p);
	if (!p->pausing) {
		/* before reading what was notified since: see caught_up() */
		caught_up(p);
		if (p->finished || p->stopping)
			return;
	}
	/* letters marked 'retry' stay so until applied: never read them twice */
	if (p->letters_changed && !p->retry_batches && can_read(p))
		process_retries(p);
	if (can_read(p)) {
		read_once(p);
		send_ready(p);
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
	if (!can_read(p)) {
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

static void kick(struct pipeline *p)
{
	if (!p->finished)
		ev_idle_start(p->loop, &p->idle);
}

static void wake(struct pipeline *p)
{
	if (!p->reached_end)
		p->at_head = false;
	p->caught_up_seen = false;
	kick(p);
}

/*
 * The event store connection is gone: reconnect with capped exponential
 * backoff, LISTEN again, and read on from the last event read (what was
 * read and not yet settled is still queued; the checkpoint did not move).
 */
static void lost_store(struct pipeline *p)
{
	if (ev_is_active(&p->reconnect) || p->finished)
		return;
	p->stats.store_down = true;
	note_error(p, "lost the event store connection");
	ev_io_stop(p->loop, &p->notify);
	if (p->reconnect_delay <= 0)
		p->reconnect_delay = 0.1;
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
		p->reconnect_delay *= 2;
		if (p->reconnect_delay > p->cfg->retry_max)
			p->reconnect_delay = p->cfg->retry_max;
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
		lost_store(p);
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
		lost_store(p);
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
		ev_init(&p->lanes[i].retry, retry_cb);
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
	kick(p);
}

void pipeline_stop(struct pipeline *p)
{
	if (p->finished || p->stopping)
		return;
	PLOG(LOG_INFO, p, "stopping: finishing the requests in flight");
	p->stopping = true;
	kick(p);
}

void pipeline_pause(struct pipeline *p)
{
	if (p->finished || p->pausing)
		return;
	PLOG(LOG_INFO, p, "pausing: finishing the requests in flight");
	p->pausing = true;
	p->paused = false;
	kick(p);
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
	fail(p, why);
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
	kick(p);
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
	while (p->rb_head) {
		struct rbatch *rb = p->rb_head;
		p->rb_head = rb->next;
		arena_release(&rb->arena);
		free(rb->retried);
		free(rb);
	}
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
