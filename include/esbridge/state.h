#ifndef ESBRIDGE_STATE_H
#define ESBRIDGE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "esbridge/event.h"

/*
 * The bridge's own tables in PostgreSQL (schema esbridge): index
 * generations with their checkpoints, and dead letters. Created and migrated
 * by state_open(). Knows nothing of Elasticsearch.
 */

struct state;

enum gen_state { GEN_BUILDING, GEN_READY, GEN_ACTIVE, GEN_RETIRED };

/* The most indices one generation has (a projection of several indices). */
#define GEN_MAX_INDICES 4

struct generation {
	int number;
	char index[160];          /* the index of the first (often only) slot */
	enum gen_state state;
	struct position checkpoint;
	/* a projection of several indices: those of slots 1.. (column extra_indices) */
	char extra[GEN_MAX_INDICES - 1][160];
	int n_extra;
};

/* The index of `slot` (0: g->index). */
static inline const char *generation_index(const struct generation *g, size_t slot)
{
	return slot == 0 ? g->index : g->extra[slot - 1];
}

const char *gen_state_name(enum gen_state s);

/* Connects and migrates; NULL with `err` set. Freed by state_close(). */
struct state *state_open(const char *conninfo, char *err, size_t errsz);
void state_close(struct state *st);

/* Records a new generation (state building, checkpoint {0,0}) with its
 * index names: g->index, and g->extra of a projection of several indices. */
__attribute__((warn_unused_result))
int state_create_generation(struct state *st, const char *proj, const struct generation *g,
			    char *err, size_t errsz);

/* Moves the checkpoint of a generation forward. */
__attribute__((warn_unused_result))
int state_save_checkpoint(struct state *st, const char *proj, int number, struct position at,
			  char *err, size_t errsz);

/* Sets the state of a generation. */
__attribute__((warn_unused_result))
int state_set_generation_state(struct state *st, const char *proj, int number, enum gen_state s,
			       char *err, size_t errsz);

/* True once the connection is lost (the caller starts over). */
bool state_connection_lost(const struct state *st);

/*
 * Dead letters (esbridge.dead_letters). A letter names the event (its row
 * is copied from the events table), the reason and, when known, the
 * document; a document with an open letter is held back: its later events
 * are recorded as 'held' letters, never applied out of order.
 *   pending → (retry | discarded) ; held → retry ; retry → retried | pending
 */
struct dead_letter {
	struct position at;
	char *doc_id;   /* NULL if the event names no document */
	char *reason;
	bool held;      /* held back behind an earlier letter of its document */
};

/* Records a letter; recording the same open letter again changes nothing. */
__attribute__((warn_unused_result))
int state_dead_letter(struct state *st, const char *proj, int number, const struct dead_letter *dl,
		      char *err, size_t errsz);

/* Calls fn for each held-back document and the position of its first open letter. */
typedef int (*state_held_fn)(void *arg, const char *doc_id, struct position first);
__attribute__((warn_unused_result))
int state_held_documents(struct state *st, const char *proj, int number, state_held_fn fn, void *arg,
			 char *err, size_t errsz);

/*
 * The letters to apply again (status 'retry'), in commit order; first every
 * open letter of a document with one to retry joins it. `*out` is the
 * caller's to free.
 */
struct letter_ref {
	long long id;
	struct position at;
};
__attribute__((warn_unused_result))
int state_letters_to_retry(struct state *st, const char *proj, int number, struct letter_ref **out,
			   size_t *n, char *err, size_t errsz);

/* Marks letters being retried as done (those that failed again are open anew). */
__attribute__((warn_unused_result))
int state_letters_retried(struct state *st, const long long *ids, size_t n, char *err, size_t errsz);

/* How many letters of the generation wait to be applied again ('retry'), or -1. */
long long state_letters_waiting(struct state *st, const char *proj, int number, char *err, size_t errsz);

/*
 * Before a swap: how many documents generation `number` holds back (open
 * letters) that generation `active` does not, or -1; when some, `doc`
 * (shown on one line, cut to `docsz`) and `*first` name the first in
 * commit order and its first open letter.
 */
long long state_letters_diverge(struct state *st, const char *proj, int number, int active, char *doc,
				size_t docsz, long long *first, char *err, size_t errsz);

/*
 * For `esbridge dead-letters`. retry: the open letters of the document of
 * letter `id` (or, with id 0, every open letter of the projection, or of
 * all with proj NULL) are to be applied again; discard: letter `id` is
 * dropped with `reason` and the other open letters of its document are
 * applied again. Both wake the daemons and say in `c` what they changed:
 * the letter discarded (0: no such open letter), the letters to apply
 * again, their projection ("" when several) and the first one's document;
 * 0, or -1. Release `c` with state_letters_change_release().
 */
struct letters_change {
	long long discarded;
	long long *ids;
	size_t n;
	char projection[64];
	char doc[101];
};
__attribute__((warn_unused_result))
int state_letters_retry(struct state *st, long long id, const char *proj, struct letters_change *c,
			char *err, size_t errsz);
__attribute__((warn_unused_result))
int state_letter_discard(struct state *st, long long id, const char *reason, struct letters_change *c,
			 char *err, size_t errsz);
void state_letters_change_release(struct letters_change *c);

/*
 * What became of letters sent to be applied again: how many still wait
 * ('retry'), how many failed again (open anew), the first that failed again
 * itself ('pending', 0 if none) and its reason on one line. 0, or -1.
 */
__attribute__((warn_unused_result))
int state_letters_outcome(struct state *st, const long long *ids, size_t n, long long *waiting,
			  long long *failed, long long *first_failed, char *reason, size_t reasonsz,
			  char *err, size_t errsz);

/* Prints the open letters (every letter with `all`), of `proj` or of all when NULL. */
__attribute__((warn_unused_result))
int state_letters_print(struct state *st, const char *proj, bool all, FILE *out, char *err, size_t errsz);

/*
 * Takes the session-level advisory lock that makes this process the only
 * writer of the projection (held until the connection closes). Returns 1
 * when taken, 0 when another session holds it, -1 on error.
 */
__attribute__((warn_unused_result))
int state_own_projection(struct state *st, const char *proj, char *err, size_t errsz);

/* Every generation of the projection, oldest first; returns how many. */
__attribute__((warn_unused_result))
int state_list_generations(struct state *st, const char *proj, struct generation *out, int max,
			   char *err, size_t errsz);

/* In one statement: `new_number` becomes active, the active `old_number` retired. */
__attribute__((warn_unused_result))
int state_swap(struct state *st, const char *proj, int old_number, int new_number,
	       char *err, size_t errsz);

/* Forgets a generation whose index is gone. */
__attribute__((warn_unused_result))
int state_delete_generation(struct state *st, const char *proj, int number, char *err, size_t errsz);

/*
 * Commands for a running daemon. submit inserts a pending rebuild request
 * and NOTIFYs STATE_COMMANDS_CHANNEL; claim takes the oldest pending one of
 * the projection (1, or 0 if none) and marks it running; finish records
 * its end; status reads it; commands_open counts pending and running ones.
 */
#define STATE_COMMANDS_CHANNEL "esbridge_commands"

__attribute__((warn_unused_result))
int state_command_submit(struct state *st, const char *proj, int keep, long long *id,
			 char *err, size_t errsz);
__attribute__((warn_unused_result))
int state_command_claim(struct state *st, const char *proj, long long *id, int *keep,
			char *err, size_t errsz);
__attribute__((warn_unused_result))
int state_command_finish(struct state *st, long long id, bool ok, const char *message,
			 char *err, size_t errsz);
__attribute__((warn_unused_result))
int state_command_status(struct state *st, long long id, char *status, size_t statussz,
			 char *message, size_t messagesz, char *err, size_t errsz);
/* Marks a still pending command failed with `message`: 1 if withdrawn, 0 if taken meanwhile, -1. */
__attribute__((warn_unused_result))
int state_command_withdraw(struct state *st, long long id, const char *message, char *err, size_t errsz);
__attribute__((warn_unused_result))
int state_commands_open(struct state *st, const char *proj, char *err, size_t errsz);

/*
 * At the start of a process: with `resuming` (a rebuild is left to finish),
 * the newest running command is handed over (its id and keep; id 0 if none);
 * every other running command is closed, done if a generation became active
 * after it was asked for, else failed.
 */
__attribute__((warn_unused_result))
int state_command_recover(struct state *st, const char *proj, bool resuming, long long *id,
			  int *keep, char *err, size_t errsz);

/*
 * Whether some session holds the lock of state_own_projection, seen in
 * pg_locks without trying to take it (a standby's attempt is never in the
 * way): 1 if held, 0 if free, -1 on error.
 */
__attribute__((warn_unused_result))
int state_projection_owned(struct state *st, const char *proj, char *err, size_t errsz);

/* LISTEN for commands on this connection; its socket; pending notifications. */
__attribute__((warn_unused_result))
int state_listen_commands(struct state *st, char *err, size_t errsz);
int state_socket(const struct state *st);
int state_drain_notifies(struct state *st);

/* The highest global_position in the store (for progress). */
__attribute__((warn_unused_result))
int state_head(struct state *st, int64_t *head, char *err, size_t errsz);

/*
 * `esbridge wait`: whether the active generation of `proj` has applied the
 * event at global position `position`. 1: its checkpoint passed it, or the
 * projection does not read it and has read past it; 2: it passed it as a
 * dead letter (w->letter, w->letter_status: pending, held or discarded);
 * 0: not yet (or no such committed event yet); -1 on error. `w` starts
 * zeroed and carries what earlier calls found between the checkpoint and
 * the event.
 */
struct state_wait {
	struct position scanned;  /* no event of the projection from the checkpoint up to here */
	long long letter;
	char letter_status[16];
};
struct projection;
__attribute__((warn_unused_result))
int state_applied(struct state *st, const struct projection *proj, const char *position,
		  struct state_wait *w, char *err, size_t errsz);

/* Who holds the projection's lock ("esbridge HOST pid PID"), malloc'd; NULL if nobody. */
char *state_owner(struct state *st, const char *proj);

/*
 * `status`: the generations of a projection with their numbers (see
 * state_status_row), and who owns it. The texts point into the result:
 * valid until state_status_release().
 */
struct state_status {
	void *res;      /* the PGresult */
	int n;          /* generations, oldest first */
	char *owner;    /* the owning session's application_name, or NULL */
};

struct state_status_row {
	const char *generation, *indices /* comma-separated, the first one's alias first */, *state;
	const char *checkpoint_txid, *checkpoint_pos;
	const char *head;         /* its newest event after the checkpoint, or the checkpoint */
	const char *lag;          /* its events after the checkpoint, readable now */
	const char *held;         /* its committed events an older open transaction holds back */
	const char *letters_open, *updated_at, *last_error /* "" for none */, *last_error_at;
};

__attribute__((warn_unused_result))
int state_status(struct state *st, const struct projection *proj, struct state_status *out, char *err,
		 size_t errsz);
void state_status_row(const struct state_status *s, int i, struct state_status_row *row);
void state_status_release(struct state_status *s);

/* The statement of state_status ($1 projection, $2 types, $3 stream prefixes), for the plan tests. */
extern const char *const state_status_sql;

/* The oldest transaction with an xid: what holds events back. */
struct state_writer {
	void *res;
	const char *transaction_id, *pid, *application_name, *state, *age_seconds;
};

/* 1 with `w` filled, 0 if there is none, -1 on error; release it either way. */
__attribute__((warn_unused_result))
int state_oldest_writer(struct state *st, struct state_writer *w, char *err, size_t errsz);
void state_writer_release(struct state_writer *w);

#endif
