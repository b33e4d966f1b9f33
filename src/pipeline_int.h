#ifndef ESBRIDGE_PIPELINE_INT_H
#define ESBRIDGE_PIPELINE_INT_H

/*
 * The pipeline's insides, shared by its two files and nobody else:
 * pipeline.c reads, projects and queues (and owns the checkpoint, the dead
 * letters and the held documents); lanes.c sends the queued requests and
 * settles their answers (send, settle, retry, split).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "esbridge/doctable.h"
#include "esbridge/json.h"
#include "esbridge/ledger.h"
#include "esbridge/log.h"
#include "esbridge/pipeline.h"

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
	struct ledger ledger;      /* the reads not passed by the checkpoint yet */
	double event_bytes;        /* the recent mean of an event's data, sizing reads */
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


/* ---- pipeline.c, for the lanes ------------------------------------------- */

/* Runs the pump at the next loop turn. */
void pl_kick(struct pipeline *p);
/* Stops the pipeline for good (exit 1): out of memory, a broken invariant. */
void pl_fail(struct pipeline *p, const char *why);
/* Remembers `what` as the last error (metrics, status). */
void pl_note_error(struct pipeline *p, const char *what);
/* Whether another read may start (read ahead bounded by count and bytes). */
bool pl_can_read(const struct pipeline *p);
/* Copies ev->created_at into `a`, where an operation may keep it. */
int pl_keep_created_at(struct arena *a, struct event *ev);
/* The concrete index of index slot `slot` (NULL with one index). */
const char *pl_slot_index(const struct pipeline *p, size_t slot);
/* The held-documents key of document `id` in `slot`; its length. */
size_t pl_doc_key(const struct pipeline *p, size_t slot, const char *id, size_t len, char *key,
		  size_t keysz);
/* Records a dead letter, written before the checkpoint passes it. */
void pl_dead_letter(struct pipeline *p, struct position at, const char *doc, size_t doc_len, bool held,
		    const char *reason);
/* The same for an event of index slot `slot`, holding its document back. */
void pl_slot_dead_letter(struct pipeline *p, size_t slot, struct position at, const char *doc,
			 size_t doc_len, const char *why);
/* An operation whose document is held back: its events become held letters. */
bool pl_hold_op(struct pipeline *p, struct bulk_op *op);
/* The reader's connection is gone: reconnect with backoff. */
void pl_lost_store(struct pipeline *p);

/* ---- lanes.c, for the pipeline ------------------------------------------- */

/* Whether an operation set is as large as one request may be. */
bool lanes_opset_full(const struct pipeline *p, const struct opset *o);
/* Queues the lane's building set to be sent after the ones before it. */
int lane_seal(struct lane *l);
/* Drops what the lane read but did not send (stopping: read again after a restart). */
void lane_drop_unsent(struct lane *l);
/* Drops the request being sent: its events stay unsettled. */
void lane_abandon_sending(struct lane *l);
/* The lane's retry timer. */
void lane_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* Whether the lane has a request it could send now. */
bool lane_sendable(const struct pipeline *p, const struct lane *l);
/* Sends what every idle lane has ready. */
void lanes_send_ready(struct pipeline *p);
/* Nothing queued, in flight or waiting in any lane. */
bool lanes_all_quiet(const struct pipeline *p);
/* A request is in flight in some lane. */
bool lanes_any_in_flight(const struct pipeline *p);

#endif
