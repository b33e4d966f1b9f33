/*
 * `esbridge rebuild NAME [--keep N]`: a new generation beside the active one,
 * then the alias moves; here, or by the daemon that owns NAME.
 */
#include "cli.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "esbridge/log.h"
#include "esbridge/state.h"

/* Progress of an in-process rebuild, once a second, on stdout. */
struct progress_ctx {
	struct runner *r;
	struct state *st;
	const char *name;
	double started;
};

static void print_progress(const char *name, int gen, int64_t pos, int64_t head, double rate)
{
	printf("progress %s %d %lld %lld %.0f\n", name, gen, (long long)pos, (long long)head, rate);
	fflush(stdout);
}

static void progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct progress_ctx *pc = w->data;
	struct runner_progress pr;
	char err[512];
	int64_t head = 0;
	double dt = ev_now(loop) - pc->started;

	(void)revents;
	if (runner_progress(pc->r, &pr) || state_head(pc->st, &head, err, sizeof(err)))
		return;
	print_progress(pc->name, pr.generation, pr.checkpoint.pos, head,
		       dt > 0 ? (double)pr.events / dt : 0);
}

/* The rebuild in this process; *busy when another process took the projection first. */
static int rebuild_here(struct config *cfg, const struct projection *proj, int keep, bool *busy)
{
	struct runner_opts opts = { .exit_after_rebuild = true, .no_wait = true, .busy = busy };
	struct progress_ctx pc = { .name = proj->name };
	const struct projection *projs[1] = { proj };
	struct session s;
	ev_timer tick;
	char err[1024];
	int rc;

	rc = session_open(&s, cfg, projs, 1, &opts);
	if (rc && *busy) {
		session_close(&s);
		return 1;
	}
	if (!rc) {
		struct runner_progress pr;
		runner_set_keep(s.runners[0], keep); /* a resumed rebuild too */
		if (runner_progress(s.runners[0], &pr) == 0 && !pr.rebuilding &&
		    runner_rebuild(s.runners[0], keep, err, sizeof(err)))
			rc = die(1, "%s", err);
	}
	if (!rc) {
		pc.r = s.runners[0];
		pc.st = state_open(cfg->pg, err, sizeof(err));
		if (!pc.st) {
			session_close(&s);
			return die(1, "%s", err);
		}
		pc.started = ev_now(s.loop);
		ev_timer_init(&tick, progress_cb, 1.0, 1.0);
		tick.data = &pc;
		ev_timer_start(s.loop, &tick);
		rc = session_run(&s);
		ev_timer_stop(s.loop, &tick);
		if (rc && runner_stop_reason(s.runners[0]))
			rc = die(1, "%s", runner_stop_reason(s.runners[0]));
		else if (!rc && !runner_swapped(s.runners[0]))
			rc = die(1, "stopped before the alias moved; 'esbridge rebuild %s' or"
				 " 'esbridge run' resumes the rebuild", proj->name);
		if (!rc) {
			struct runner_progress pr;
			if (runner_progress(s.runners[0], &pr) == 0)
				printf("done %s %d write-pause-ms %.0f\n", proj->name, pr.generation,
				       pr.last_pause * 1000.0);
		}
		state_close(pc.st);
	}
	session_close(&s);
	return rc;
}

/*
 * The rebuild through the process that owns the projection: a command row
 * it picks up, followed here to its end. *withdrawn when no process owned
 * the projection for WAIT_FOR_OWNER seconds before one took the command,
 * which is then withdrawn (returns 0, nothing printed).
 */
static int rebuild_remote(struct config *cfg, const char *name, int keep, bool *withdrawn)
{
	char err[1024], status[32], message[512];
	double free_since = 0;
	struct state *st;
	long long id;

	*withdrawn = false;
	st = state_open(cfg->pg, err, sizeof(err));
	if (!st)
		return die(1, "%s", err);
	if (state_command_submit(st, name, keep, &id, err, sizeof(err))) {
		state_close(st);
		return die(1, "%s", err);
	}
	log_info("%s: a running esbridge owns it; sent it rebuild command %lld", name, id);
	for (;;) {
		const struct timespec half = { 0, 500 * 1000 * 1000 };
		struct generation gens[RUNNER_MAX_GENERATIONS];
		int64_t head = 0;
		int n, owned;

		if (state_command_status(st, id, status, sizeof(status), message, sizeof(message), err,
					 sizeof(err))) {
			state_close(st);
			return die(1, "%s", err);
		}
		if (!strcmp(status, "done")) {
			printf("done %s %s\n", name, message);
			state_close(st);
			return 0;
		}
		if (!strcmp(status, "failed")) {
			state_close(st);
			return die(1, "rebuild of '%s' failed: %s", name, message);
		}
		n = state_list_generations(st, name, gens, RUNNER_MAX_GENERATIONS, err, sizeof(err));
		if (n > 0 && gens[n - 1].state != GEN_ACTIVE && state_head(st, &head, err, sizeof(err)) == 0)
			print_progress(name, gens[n - 1].number, gens[n - 1].checkpoint.pos, head, 0);
		/*
		 * The lock free: the owner stopped. A standby that takes the
		 * projection over picks the command up (or resumes the rebuild
		 * and the command with it), so wait for one a while first.
		 */
		owned = state_projection_owned(st, name, err, sizeof(err));
		if (owned < 0) {
			state_close(st);
			return die(1, "%s", err);
		}
		if (owned) {
			free_since = 0;
		} else if (!free_since) {
			free_since = ev_time();
		} else if (ev_time() - free_since >= WAIT_FOR_OWNER) {
			int w;

			if (!strcmp(status, "running")) {
				state_close(st);
				return die(1, "no esbridge process has run '%s' for %.0fs, before the rebuild"
					   " ended; it resumes when esbridge runs again", name, WAIT_FOR_OWNER);
			}
			/* still pending (or taken meanwhile: read again at the top) */
			w = state_command_withdraw(st, id, "no esbridge process took it", err, sizeof(err));
			if (w < 0) {
				state_close(st);
				return die(1, "%s", err);
			}
			if (w > 0) {
				log_info("%s: no esbridge process took rebuild command %lld within %.0fs;"
					 " withdrew it", name, id, WAIT_FOR_OWNER);
				state_close(st);
				*withdrawn = true;
				return 0;
			}
		}
		nanosleep(&half, NULL);
	}
}

/*
 * esbridge rebuild NAME: in this process when no process owns the
 * projection, else through a command row the owner picks up; either way it
 * returns once the alias names the new generation. A command no process
 * took is withdrawn and the choice made again (a few times at most).
 */
int cmd_rebuild(struct config *cfg, const struct cli *cli)
{
	const char *name = cli->target;
	int keep = cli->keep;
	const struct projection *proj;

	if (!name)
		return die(EXIT_USAGE, "rebuild needs a projection name (see --help)");
	proj = projection_find(name);
	if (!proj)
		return unknown_projection(name, false);
	if (preflight(cfg, &proj, 1))
		return EXIT_USAGE;
	for (int attempt = 1;; attempt++) {
		char err[1024];
		struct state *st = state_open(cfg->pg, err, sizeof(err));
		int open_cmds, owned, rc;
		bool busy = false, withdrawn;

		if (!st)
			return die(1, "%s", err);
		open_cmds = state_commands_open(st, name, err, sizeof(err));
		/*
		 * Seen in pg_locks, not by taking the lock: a lock this process
		 * let go of could still be held by its closing session when the
		 * runner asks for it.
		 */
		owned = open_cmds < 0 ? -1 : state_projection_owned(st, name, err, sizeof(err));
		state_close(st);
		if (owned < 0)
			return die(1, "%s", err);
		if (!owned) {
			rc = rebuild_here(cfg, proj, keep, &busy);
			if (!busy)
				return rc;
		}
		if (open_cmds > 0)
			return die(1, "a rebuild of '%s' is already running", name);
		rc = rebuild_remote(cfg, name, keep, &withdrawn);
		if (!withdrawn)
			return rc;
		if (attempt == 3)
			return die(1, "no esbridge process took the rebuild of '%s' (tried %d times)", name, attempt);
	}
}
