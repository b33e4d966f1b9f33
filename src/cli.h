#ifndef ESBRIDGE_CLI_H
#define ESBRIDGE_CLI_H

/*
 * The command line, for main.c and the commands (one file a command,
 * cmd_NAME.c, as git's builtin/): main.c parses argv once into a struct cli
 * and the settings, then calls the command; the commands share the error
 * helpers (cli.c) and, for `run` and an in-process `rebuild`, a session of
 * runners on one loop with its signals (session.c).
 */

#include <stdbool.h>

#include <ev.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/monitor.h"
#include "esbridge/projection.h"
#include "esbridge/rebuild.h"

#define EXIT_USAGE 2
/* `wait`: the event became a dead letter. */
#define EXIT_DEAD_LETTER 3

#define MAX_RUNNERS 64
#define STANDBY_POLL 1.0 /* seconds between a standby's tries to take the lock */
#define WAIT_FOR_OWNER 10.0 /* seconds `rebuild` waits for a standby to take a stopped owner's place */

/* What the command line says besides the settings. */
struct cli {
	const char *command, *target, *arg, *reason, *position, *timeout, *config_file;
	bool once, all, help, version, json, connect, wait;
	int keep;
};

/* ---- cli.c ------------------------------------------------------------------- */

/* "esbridge: error: ..." on stderr; returns `code`. */
__attribute__((format(printf, 2, 3)))
int die(int code, const char *fmt, ...);
/* "one of products, orders, ...": the names a --projection takes, for errors. */
const char *projection_names(void);
/* An unknown projection name: exit 2, naming the known ones (or the alias's projection). */
int unknown_projection(const char *name, bool flag);
/* The projections `run` runs: --projection's, or every one. 0, or EXIT_USAGE (said). */
int selected_projections(const struct config *cfg, const struct projection **projs, int *n);
/* --timeout S: seconds from 0 to 86400; 0, or EXIT_USAGE (said). */
int parse_timeout(const char *text, double *seconds);
/* What a start refuses besides the option values (the mapping files). 0, or EXIT_USAGE (said). */
int preflight(const struct config *cfg, const struct projection *const *projs, int n);

/* ---- session.c --------------------------------------------------------------- */

struct session;

/* One projection of a session, started over when PostgreSQL was lost. */
struct slot {
	struct session *s;
	const struct projection *proj;
	ev_timer restart;
	double delay;
	bool done;
	bool standby;   /* another process owns the projection: take over when it stops */
};

/* What `run` and an in-process `rebuild` have in common: runners on one loop. */
struct session {
	struct ev_loop *loop;
	const struct config *cfg;
	struct runner_opts opts;
	struct es_client *es;
	struct runner *runners[MAX_RUNNERS];
	struct slot slots[MAX_RUNNERS];
	int n;
	int signals;
	bool drain_expired;
	ev_signal sigterm, sigint, sighup;
	ev_timer drain;
};

/* Opens a runner per projection (standing by where another process owns one); 0 or an exit code (said). */
int session_open(struct session *s, struct config *cfg, const struct projection *const *projs, int n,
		 const struct runner_opts *opts);
/* Runs the loop until every projection is done; the exit code. */
int session_run(struct session *s);
void session_close(struct session *s);
/* The monitor's view of the session's projections. */
int session_sources(void *arg, struct monitor_source *out, int max);

/* ---- main.c ------------------------------------------------------------------ */

/* SIGHUP: the settings again from the file, the environment and the flags; 0, or with `err` set. */
int cli_reload(struct config *next, char *err, size_t errsz);

/* ---- the commands: an exit code each --------------------------------------- */

int cmd_run(struct config *cfg, const struct cli *cli);
int cmd_rebuild(struct config *cfg, const struct cli *cli);
int cmd_status(struct config *cfg, const struct cli *cli);
int cmd_wait(struct config *cfg, const struct cli *cli);
int cmd_dead_letters(struct config *cfg, const struct cli *cli);
int cmd_check_config(struct config *cfg, const struct cli *cli);

#endif
