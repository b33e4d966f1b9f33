/*
 * esbridge: projects an event store in PostgreSQL into Elasticsearch.
 *
 *   esbridge [options] run [--once]     catch up, then follow (or stop with --once)
 *   esbridge [options] status           generations and checkpoints
 *   esbridge [options] dead-letters list|retry|discard
 *   esbridge [options] wait --projection NAME --position P [--timeout S]
 *   esbridge [options] check-config     validate and print the settings
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <ev.h>
#include <libpq-fe.h>
#include <yajl/yajl_tree.h>
#include <yajl/yajl_version.h>
#include <zlib.h>

#include "esbridge/buf.h"
#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/log.h"
#include "esbridge/monitor.h"
#include "esbridge/pipeline.h"
#include "esbridge/rebuild.h"
#include "esbridge/pq.h"
#include "esbridge/projection.h"
#include "esbridge/state.h"

#ifndef ESBRIDGE_VERSION
#define ESBRIDGE_VERSION "0.0.0"
#endif

#define EXIT_USAGE 2

static void usage(FILE *f)
{
	fprintf(f,
		"usage: esbridge [options] <command>\n"
		"\n"
		"commands:\n"
		"  run [--once]      catch up from the checkpoint, then follow new events until\n"
		"                    SIGTERM/SIGINT; with --once, stop at the head as it was at start\n"
		"  rebuild NAME [--keep N]\n"
		"                    build a new generation of NAME beside the active one, then move\n"
		"                    the alias to it; keeps N retired indices [1]. Runs in this\n"
		"                    process, or asks the running daemon that owns NAME\n"
		"  status [--json]   per projection its owner and alias, per generation its state,\n"
		"                    index, checkpoint, head, lag, events held back by open\n"
		"                    transactions and open dead letters; the oldest open writer;\n"
		"                    --projection NAME narrows it\n"
		"  wait --projection NAME --position P [--timeout S]\n"
		"                    return once NAME's active generation has applied the event at\n"
		"                    global position P (or read past it, for an event it does not\n"
		"                    read) (exit 0), became a dead letter (exit 3), or after S\n"
		"                    seconds (exit 1) [30]\n"
		"  dead-letters list [--all]\n"
		"                    the open dead letters (--all: also retried and discarded ones);\n"
		"                    --projection NAME narrows every dead-letters command\n"
		"  dead-letters retry ID|--all [--wait [--timeout S]]\n"
		"                    apply the letter's document's open letters again, in order\n"
		"                    (--all: every open letter); --wait: until they are applied\n"
		"                    (exit 0) or one failed again (exit 1), at most S seconds [30]\n"
		"  dead-letters discard ID --reason TEXT [--wait [--timeout S]]\n"
		"                    drop one letter; the other open letters of its document are\n"
		"                    applied again\n"
		"  check-config [--connect]\n"
		"                    validate the settings as a start would and print them (secrets\n"
		"                    masked); --connect: also reach PostgreSQL and the cluster and\n"
		"                    say what they hold (versions, each projection's generation)\n"
		"\n"
		"options (flag, environment variable, description [default]):\n");
	fprintf(f, "  --%-16s %-26s %s\n", "config FILE", "ESBRIDGE_CONFIG",
		"settings file of 'name = value' lines, read again on SIGHUP");
	config_usage(f);
	fprintf(f,
		"  --help             show this help\n"
		"  --version          show the version and the libraries' versions\n"
		"\nprojections:");
	for (const struct projection *const *p = projection_registry; *p; p++)
		fprintf(f, " %s", (*p)->name);
	fputc('\n', f);
}

static void version(void)
{
	int y = yajl_version();

	printf("esbridge %s\n", ESBRIDGE_VERSION);
	printf("libev %d.%d, %s, libpq %d.%d, yajl %d.%d.%d, zlib %s\n", ev_version_major(),
	       ev_version_minor(), curl_version(), PQlibVersion() / 10000, PQlibVersion() % 100,
	       y / 10000, y / 100 % 100, y % 100, zlibVersion());
}

__attribute__((format(printf, 2, 3)))
static int die(int code, const char *fmt, ...);

static int die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("esbridge: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* "one of products, orders, ...": the names a --projection takes, for errors. */
static const char *projection_names(void)
{
	static char names[512];

	if (!names[0]) {
		size_t len = (size_t)snprintf(names, sizeof(names), "one of");
		for (const struct projection *const *p = projection_registry; *p && len < sizeof(names); p++)
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%s %s",
						p == projection_registry ? "" : ",", (*p)->name);
	}
	return names;
}

/*
 * An unknown projection name (of `--projection` when `flag`, else of
 * rebuild's NAME): exit 2, naming the known ones, or the projection that
 * writes an alias of that name.
 */
static int unknown_projection(const char *name, bool flag)
{
	const char *in = flag ? " in --projection" : "";

	for (const struct projection *const *p = projection_registry; *p; p++)
		for (size_t i = 0; i < projection_n_indices(*p); i++)
			if (!strcmp(projection_alias(*p, i), name))
				return die(EXIT_USAGE, "unknown projection '%s'%s: the alias '%s' is written by the"
					   " projection '%s'", name, in, name, (*p)->name);
	return die(EXIT_USAGE, "unknown projection '%s'%s (%s)", name, in, projection_names());
}

#define MAX_RUNNERS 64

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

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents);

static void on_finish(void *arg, struct runner *r);

#define STANDBY_POLL 1.0 /* seconds between a standby's tries to take the lock */
#define WAIT_FOR_OWNER 10.0 /* seconds `rebuild` waits for a standby to take a stopped owner's place */

/* A standby: only `run` waits for another process to let go of a projection. */
static bool may_stand_by(const struct runner_opts *opts)
{
	return !opts->once && !opts->exit_after_rebuild;
}

/*
 * Start the slot over on its timer: 0.5 s after the first failure, then twice
 * the last wait up to retry_max. A slot that stood by has no wait yet: it
 * starts at 0.5 s too, not at 0 (which would try again on every loop turn).
 */
static void slot_retry_later(struct slot *sl)
{
	double max = sl->s->cfg->retry_max;

	sl->delay = sl->delay > 0 ? (sl->delay * 2 > max ? max : sl->delay * 2) : 0.5;
	ev_timer_set(&sl->restart, sl->delay, 0.0);
	ev_timer_start(sl->s->loop, &sl->restart);
}

/*
 * Open the slot's runner in place of the one it had. `run` does not wait for
 * a projection another process owns: the slot stands by instead (logged
 * once). Returns 1: open; 0: standing by; -1: err says why not.
 */
static int slot_open(struct slot *sl, char *err, size_t errsz)
{
	struct session *s = sl->s;
	int i = (int)(sl - s->slots);
	struct runner_opts opts = s->opts;
	bool busy = false;

	if (may_stand_by(&opts)) {
		opts.no_wait = true;
		opts.busy = &busy;
	}
	runner_free(s->runners[i]);
	s->runners[i] = runner_new(s->loop, s->cfg, sl->proj, s->es, &opts, err, errsz);
	if (s->runners[i])
		return 1;
	if (!busy)
		return -1;
	if (!sl->standby)
		log_info("%s: another esbridge process owns it; standing by to take over", sl->proj->name);
	sl->standby = true;
	return 0;
}

/* The slot is over for this session; the last one ends the loop. */
static void slot_done(struct slot *sl)
{
	struct session *s = sl->s;

	sl->done = true;
	for (int i = 0; i < s->n; i++)
		if (!s->slots[i].done)
			return;
	ev_break(s->loop, EVBREAK_ALL);
}

static void restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct slot *sl = w->data;
	struct session *s = sl->s;
	int i = (int)(sl - s->slots);
	char err[1024];
	int rc;

	(void)loop;
	(void)revents;
	rc = slot_open(sl, err, sizeof(err));
	if (rc == 0) {
		ev_timer_set(&sl->restart, STANDBY_POLL, 0.0);
		ev_timer_start(s->loop, &sl->restart);
		return;
	}
	if (rc < 0) {
		slot_retry_later(sl);
		log_warn("%s: cannot start the projection again: %s; trying again in %.1fs", sl->proj->name,
			 err, sl->delay);
		return;
	}
	log_info(sl->standby ? "%s: took over" : "%s: started again", sl->proj->name);
	sl->standby = false;
	sl->delay = 0;
	runner_start(s->runners[i], on_finish, sl);
}

static void on_finish(void *arg, struct runner *r)
{
	struct slot *sl = arg;
	struct session *s = sl->s;

	if (runner_exit_code(r) == PIPELINE_EXIT_LOST && !s->signals) {
		/* not from inside the runner's callback: on the timer */
		slot_retry_later(sl);
		log_warn("%s: starting the projection over in %.1fs", sl->proj->name, sl->delay);
		return;
	}
	slot_done(sl);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = w->data;

	(void)revents;
	log_error("drain timeout: requests still in flight after %gs; exiting without committing them"
		  " (they are sent again at the next start)", s->cfg->drain_timeout);
	s->drain_expired = true;
	ev_break(loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct session *s = w->data;

	(void)revents;
	if (++s->signals > 1) {
		log_warn("second signal: exiting without waiting for the requests in flight");
		s->drain_expired = true;
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	log_info("signal %d: draining (at most %gs)", w->signum, s->cfg->drain_timeout);
	if (s->cfg->drain_timeout > 0) {
		ev_timer_set(&s->drain, s->cfg->drain_timeout, 0.0);
		ev_timer_start(loop, &s->drain);
	}
	for (int i = 0; i < s->n; i++) {
		struct slot *sl = &s->slots[i];
		if (ev_is_active(&sl->restart) || !s->runners[i]) {
			/* waiting to start over, or standing by: nothing in flight */
			ev_timer_stop(loop, &sl->restart);
			runner_free(s->runners[i]); /* lost and finished: not a failure now */
			s->runners[i] = NULL;
			slot_done(sl);
			continue;
		}
		runner_stop(s->runners[i]);
	}
}

static int session_open(struct session *s, struct config *cfg,
			const struct projection *const *projs, int n, const struct runner_opts *opts)
{
	char err[1024];

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->opts = *opts;
	s->loop = ev_default_loop(EVFLAG_AUTO);
	if (!s->loop)
		return die(1, "cannot initialise the event loop");
	if (cfg->insecure)
		log_warn("TLS certificate verification is off (insecure = true)");
	s->es = es_client_new(s->loop, cfg, err, sizeof(err));
	if (!s->es)
		return die(1, "%s", err);
	for (int i = 0; i < n; i++) {
		struct slot *sl = &s->slots[i];
		sl->s = s;
		sl->proj = projs[i];
		ev_timer_init(&sl->restart, restart_cb, 0.0, 0.0);
		sl->restart.data = sl;
		s->n++;
		if (slot_open(sl, err, sizeof(err)) < 0)
			return die(1, "%s: %s", projs[i]->name, err);
	}
	ev_signal_init(&s->sigterm, on_signal, SIGTERM);
	ev_signal_init(&s->sigint, on_signal, SIGINT);
	ev_timer_init(&s->drain, on_drain_timeout, 0.0, 0.0);
	s->sigterm.data = s->sigint.data = s->drain.data = s;
	ev_signal_start(s->loop, &s->sigterm);
	ev_signal_start(s->loop, &s->sigint);
	if (opts->exit_after_rebuild) {
		/*
		 * A command, not the daemon: a hang-up (its terminal closed)
		 * stops it as SIGINT does, instead of a rebuild going on in the
		 * background.
		 */
		ev_signal_init(&s->sighup, on_signal, SIGHUP);
		s->sighup.data = s;
	} else {
		/* the settings are the caller's: reloadable ones change in place */
		ev_signal_init(&s->sighup, on_hup, SIGHUP);
		s->sighup.data = cfg;
	}
	ev_signal_start(s->loop, &s->sighup);
	return 0;
}

static int session_run(struct session *s)
{
	int rc = 0;

	for (int i = 0; i < s->n; i++) {
		if (s->runners[i]) {
			runner_start(s->runners[i], on_finish, &s->slots[i]);
		} else {
			ev_timer_set(&s->slots[i].restart, STANDBY_POLL, 0.0);
			ev_timer_start(s->loop, &s->slots[i].restart);
		}
	}
	ev_run(s->loop, 0);
	for (int i = 0; i < s->n; i++)
		if (!s->slots[i].done || (s->runners[i] && runner_exit_code(s->runners[i])))
			rc = 1;
	if (s->drain_expired)
		rc = 1;
	return rc;
}

static void session_close(struct session *s)
{
	if (s->loop) {
		ev_signal_stop(s->loop, &s->sigterm);
		ev_signal_stop(s->loop, &s->sigint);
		ev_signal_stop(s->loop, &s->sighup);
		ev_timer_stop(s->loop, &s->drain);
		for (int i = 0; i < s->n; i++)
			ev_timer_stop(s->loop, &s->slots[i].restart);
	}
	/* the client first: it drops transfers whose callbacks name the pipelines */
	es_client_free(s->es);
	for (int i = 0; i < s->n; i++)
		runner_free(s->runners[i]);
	if (s->loop)
		ev_loop_destroy(s->loop);
	memset(s, 0, sizeof(*s));
}

static int session_sources(void *arg, struct monitor_source *out, int max)
{
	struct session *s = arg;
	int n = 0;

	for (int i = 0; i < s->n && n < max; i++) {
		if (s->slots[i].standby)
			continue; /* owned by another process */
		out[n].proj = s->slots[i].proj;
		out[n].runner = ev_is_active(&s->slots[i].restart) ? NULL : s->runners[i];
		n++;
	}
	return n;
}

/* The projections `run` runs: --projection's, or every one. 0, or EXIT_USAGE (said). */
static int selected_projections(const struct config *cfg, const struct projection **projs, int *n)
{
	*n = 0;
	if (!cfg->n_projections) {
		for (const struct projection *const *p = projection_registry; *p && *n < MAX_RUNNERS; p++)
			projs[(*n)++] = *p;
		return 0;
	}
	for (int i = 0; i < cfg->n_projections && *n < MAX_RUNNERS; i++) {
		projs[*n] = projection_find(cfg->projections[i]);
		if (!projs[*n])
			return unknown_projection(cfg->projections[i], true);
		(*n)++;
	}
	return 0;
}

/*
 * What a start would refuse besides the option values, checked before
 * anything connects: the mapping files of the projections. 0, or
 * EXIT_USAGE (said).
 */
static int preflight(const struct config *cfg, const struct projection *const *projs, int n)
{
	char err[1024];

	for (int i = 0; i < n; i++)
		if (rebuild_check_mappings(cfg, projs[i], err, sizeof(err)))
			return die(EXIT_USAGE, "%s", err);
	return 0;
}

static int cmd_run(struct config *cfg, bool once)
{
	const struct projection *projs[MAX_RUNNERS];
	struct runner_opts opts = { .once = once };
	struct session s;
	int n = 0, rc;

	rc = selected_projections(cfg, projs, &n);
	if (rc)
		return rc;
	rc = preflight(cfg, projs, n);
	if (rc)
		return rc;
	rc = session_open(&s, cfg, projs, n, &opts);
	if (!rc) {
		char err[1024];
		struct monitor *m = monitor_new(s.loop, cfg, s.es, session_sources, &s, err, sizeof(err));
		if (!m) {
			rc = die(1, "%s", err);
		} else {
			rc = session_run(&s);
			/* the client first: it drops a ping whose callback names the monitor */
			es_client_free(s.es);
			s.es = NULL;
			monitor_free(m);
		}
	}
	session_close(&s);
	return rc;
}

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
static int cmd_rebuild(struct config *cfg, const char *name, int keep)
{
	const struct projection *proj = projection_find(name);

	if (!proj)
		return unknown_projection(name ? name : "", false);
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

static int cmd_status(const struct config *cfg, bool json)
{
	const struct projection *projs[MAX_RUNNERS + 1];
	char err[1024];
	struct state *st;
	int n, rc;

	/* --projection narrows it */
	rc = selected_projections(cfg, projs, &n);
	if (rc)
		return rc;
	projs[n] = NULL;
	st = state_open(cfg->pg, err, sizeof(err));
	if (!st)
		return die(1, "%s", err);
	rc = state_print_status(st, projs, json, stdout, err, sizeof(err)) ? die(1, "%s", err) : 0;
	state_close(st);
	return rc;
}

/* After a retry or discard: who applies the letters, and where to look. */
static void say_who_applies(struct state *st, const struct letters_change *c, bool waiting)
{
	char *owner = c->projection[0] ? state_owner(st, c->projection) : NULL;

	if (!c->projection[0])
		printf(": by the esbridge processes that run their projections, at once, or else at their next"
		       " start");
	else if (owner)
		printf(": by %s, which runs '%s', at once", owner, c->projection);
	else
		printf(": by the next 'esbridge run' of '%s' (none runs it now)", c->projection);
	if (!waiting)
		printf("; one that fails again is open anew ('esbridge dead-letters list'; --wait waits for"
		       " the outcome)");
	free(owner);
}

/* dead-letters retry|discard --wait: until every letter sent is applied or failed again. */
static int letters_wait(struct state *st, const struct letters_change *c, const char *timeout)
{
	double limit = 30, start = ev_time();
	char err[1024], reason[256], *end;

	if (timeout)
		limit = strtod(timeout, &end); /* checked by the caller */
	for (;;) {
		const struct timespec pause = { 0, 200 * 1000 * 1000 };
		long long waiting, failed, first;
		if (state_letters_outcome(st, c->ids, c->n, &waiting, &failed, &first, reason, sizeof(reason), err,
					  sizeof(err)))
			return die(1, "%s", err);
		if (!waiting && !failed) {
			printf("applied all %zu\n", c->n);
			return 0;
		}
		if (!waiting)
			return first ? die(1, "%lld of %zu failed again: dead letter %lld is pending: %s", failed, c->n,
					   first, reason)
				     : die(1, "%lld of %zu failed again (held back behind a pending letter)", failed,
					   c->n);
		if (ev_time() - start >= limit)
			return die(1, "timeout: %lld of %zu letters not applied after %gs (does an esbridge run"
				   " their projection?)", waiting, c->n, limit);
		nanosleep(&pause, NULL);
	}
}

static int cmd_dead_letters(const struct config *cfg, const char *sub, const char *arg, bool all,
			    const char *reason, bool wait_outcome, const char *timeout)
{
	char err[1024];
	struct state *st;
	const char *proj;
	long long id = 0;
	int rc = 0;

	if (cfg->n_projections > 1)
		return die(EXIT_USAGE, "dead-letters takes one --projection NAME at most");
	proj = cfg->n_projections ? cfg->projections[0] : NULL;
	if (proj && !projection_find(proj))
		return unknown_projection(proj, true);
	if (!sub || (strcmp(sub, "list") && strcmp(sub, "retry") && strcmp(sub, "discard")))
		return die(EXIT_USAGE, "dead-letters needs list, retry or discard (see --help)");
	if (!strcmp(sub, "list") && arg)
		return die(EXIT_USAGE, "unexpected argument '%s' (see --help)", arg);
	if (strcmp(sub, "list")) {
		char *end;
		if (arg) {
			id = strtoll(arg, &end, 10);
			if (*end || id <= 0)
				return die(EXIT_USAGE, "'%s' is not a dead letter id", arg);
		}
		if (!strcmp(sub, "retry") && !(arg ? !all : all))
			return die(EXIT_USAGE, "dead-letters retry needs one ID or --all");
		if (!strcmp(sub, "discard") && (!arg || all))
			return die(EXIT_USAGE, "dead-letters discard needs one ID");
		if (!strcmp(sub, "discard") && (!reason || !*reason))
			return die(EXIT_USAGE, "dead-letters discard needs --reason TEXT");
	} else if (wait_outcome) {
		return die(EXIT_USAGE, "'--wait' is an option of dead-letters retry and discard");
	}
	if (timeout && !wait_outcome)
		return die(EXIT_USAGE, "'--timeout' of dead-letters goes with --wait");
	if (timeout) {
		char *end;
		double limit = strtod(timeout, &end);
		if (!*timeout || *end || !(limit >= 0 && limit <= 86400))
			return die(EXIT_USAGE, "invalid value for '--timeout': '%s' is not seconds from 0 to 86400",
				   timeout);
	}
	st = state_open(cfg->pg, err, sizeof(err));
	if (!st)
		return die(1, "%s", err);
	if (!strcmp(sub, "list")) {
		if (state_letters_print(st, proj, all, stdout, err, sizeof(err)))
			rc = die(1, "%s", err);
	} else {
		struct letters_change c;
		bool retry = !strcmp(sub, "retry");
		if (retry ? state_letters_retry(st, id, proj, &c, err, sizeof(err))
			  : state_letter_discard(st, id, reason, &c, err, sizeof(err))) {
			state_close(st);
			return die(1, "%s", err);
		}
		if (id && (retry ? c.n == 0 : c.discarded == 0)) {
			rc = die(1, "no open dead letter %lld", id);
		} else {
			if (retry)
				printf("%zu dead letter%s to apply again", c.n, c.n == 1 ? "" : "s");
			else if (c.n)
				printf("discarded dead letter %lld; %zu other letter%s of document '%s' to apply again",
				       id, c.n, c.n == 1 ? "" : "s", c.doc);
			else
				printf("discarded dead letter %lld; its document has no other open letter", id);
			if (c.n)
				say_who_applies(st, &c, wait_outcome);
			putchar('\n');
			fflush(stdout);
			if (wait_outcome && c.n)
				rc = letters_wait(st, &c, timeout);
		}
		state_letters_change_release(&c);
	}
	state_close(st);
	return rc;
}

/* check-config --connect: PostgreSQL, what it holds for esbridge, and each projection's generation. */
static int connect_pg(const struct config *cfg, const struct projection *const *projs, int n)
{
	char err[1024], name[96];
	PGconn *conn;
	PGresult *res;
	int rc = 0;

	pq_app_name("esbridge check-config", name, sizeof(name));
	conn = pq_connect(cfg->pg, name, err, sizeof(err));
	if (!conn)
		return die(1, "%s", err);
	res = PQexec(conn, "SELECT current_setting('server_version'), current_database(), current_user,"
			   " to_regclass('public.events') IS NOT NULL,"
			   " to_regclass('esbridge.schema_version') IS NOT NULL");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pq_error(err, sizeof(err), "cannot query PostgreSQL", PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(conn);
		return die(1, "%s", err);
	}
	printf("connect: PostgreSQL %s at %s port %s, database '%s' as '%s'\n", PQgetvalue(res, 0, 0),
	       PQhost(conn), PQport(conn), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
	if (PQgetvalue(res, 0, 3)[0] != 't') {
		PQclear(res);
		PQfinish(conn);
		return die(1, "PostgreSQL database has no table 'events' (scripts/schema.sql creates it)");
	}
	if (PQgetvalue(res, 0, 4)[0] != 't') {
		printf("connect: no esbridge schema yet (the first start creates it)\n");
		PQclear(res);
		PQfinish(conn);
		return 0;
	}
	PQclear(res);
	for (int i = 0; i < n && rc == 0; i++) {
		const char *params[1] = { projs[i]->name };
		res = PQexecParams(conn,
				   "SELECT g.generation, g.index_name, g.checkpoint_pos,"
				   "  (SELECT count(*) FROM esbridge.generations b"
				   "   WHERE b.projection = $1 AND b.state IN ('building','ready'))"
				   " FROM (SELECT 1) one LEFT JOIN esbridge.generations g"
				   "  ON g.projection = $1 AND g.state = 'active'",
				   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
			pq_error(err, sizeof(err), "cannot read the generations", PQresultErrorMessage(res));
			rc = die(1, "%s", err);
		} else if (PQgetisnull(res, 0, 0)) {
			printf("connect: %s: no active generation yet%s\n", projs[i]->name,
			       strcmp(PQgetvalue(res, 0, 3), "0") ? " (one is being built)" : "");
		} else {
			printf("connect: %s: active generation %s (%s), checkpoint at position %s%s\n",
			       projs[i]->name, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
			       strcmp(PQgetvalue(res, 0, 3), "0") ? "; a rebuild is under way" : "");
		}
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}

/* The string at `path` of a parsed document, or "?". */
static const char *json_text(yajl_val v, const char **path)
{
	yajl_val s = yajl_tree_get(v, path, yajl_t_string);

	return s ? YAJL_GET_STRING(s) : "?";
}

/* check-config --connect: the cluster's name and version, as its root answers. */
static int connect_es(const struct config *cfg)
{
	static const char *name_path[] = { "cluster_name", NULL };
	static const char *number_path[] = { "version", "number", NULL };
	static const char *dist_path[] = { "version", "distribution", NULL };
	struct buf resp = BUF_INIT((size_t)1 << 20);
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct es_client *es;
	char err[1024], url[512];
	long status = 0;
	yajl_val v;
	int rc = 0;

	if (!loop)
		return die(1, "cannot initialise the event loop");
	config_redact_url(cfg->es, url, sizeof(url));
	es = es_client_new(loop, cfg, err, sizeof(err));
	if (!es)
		return die(1, "%s", err);
	if (es_request_sync(es, "GET", "/", NULL, 0, &status, &resp, err, sizeof(err))) {
		rc = die(1, "cannot reach Elasticsearch: %s", err);
	} else if (status != 200) {
		rc = die(1, "Elasticsearch at %s answered HTTP %ld to GET /%s", url, status,
			 status == 401 || status == 403 ? " (check es-user, es-password or es-api-key)" : "");
	} else if (!(v = yajl_tree_parse(resp.data ? resp.data : "", NULL, 0))) {
		rc = die(1, "Elasticsearch at %s answered GET / with no JSON", url);
	} else {
		const char *dist = json_text(v, dist_path);
		printf("connect: Elasticsearch at %s: cluster '%s', %s %s\n", url, json_text(v, name_path),
		       strcmp(dist, "?") ? dist : "elasticsearch", json_text(v, number_path));
		yajl_tree_free(v);
	}
	buf_release(&resp);
	es_client_free(es);
	ev_loop_destroy(loop);
	return rc;
}

static int cmd_check_config(const struct config *cfg, bool connect)
{
	const struct projection *projs[MAX_RUNNERS];
	int n, rc;

	rc = selected_projections(cfg, projs, &n);
	if (!rc)
		rc = preflight(cfg, projs, n);
	if (rc)
		return rc;
	config_print(cfg, stdout);
	if (!connect)
		return 0;
	fflush(stdout);
	rc = connect_pg(cfg, projs, n);
	fflush(stdout);
	return rc ? rc : connect_es(cfg);
}

/* `wait`: the event became a dead letter. */
#define EXIT_DEAD_LETTER 3

/*
 * esbridge wait: read-your-writes for an application that just appended an
 * event. 0 once applied (or read past, for an event the projection does not
 * read), 3 when it became a dead letter, 1 at the timeout or on an error.
 */
static int cmd_wait(const struct config *cfg, const char *position, const char *timeout)
{
	char err[1024], *end;
	struct state_wait w;
	struct state *st;
	const struct projection *proj;
	double limit = 30, delay = 0.01, start;
	long long pos;
	int rc;

	if (cfg->n_projections != 1)
		return die(EXIT_USAGE, "wait needs one --projection NAME (%s)", projection_names());
	proj = projection_find(cfg->projections[0]);
	if (!proj)
		return unknown_projection(cfg->projections[0], true);
	pos = position ? strtoll(position, &end, 10) : 0;
	if (!position || !*position || *end || pos <= 0)
		return die(EXIT_USAGE, "wait needs --position P, a global position (a number above 0)");
	if (timeout) {
		limit = strtod(timeout, &end);
		if (!*timeout || *end || !(limit >= 0 && limit <= 86400))
			return die(EXIT_USAGE, "invalid value for '--timeout': '%s' is not seconds from 0 to 86400",
				   timeout);
	}
	st = state_open(cfg->pg, err, sizeof(err));
	if (!st)
		return die(1, "%s", err);
	memset(&w, 0, sizeof(w));
	start = ev_time();
	for (;;) {
		struct timespec ts;
		rc = state_applied(st, proj, position, &w, err, sizeof(err));
		if (rc < 0) {
			rc = die(1, "%s", err);
			break;
		}
		if (rc == 1) {
			rc = 0;
			break;
		}
		if (rc == 2) {
			rc = die(EXIT_DEAD_LETTER, "position %lld of '%s' is dead letter %lld (%s), not applied;"
				 " see 'esbridge dead-letters list --projection %s'", pos, proj->name, w.letter,
				 w.letter_status, proj->name);
			break;
		}
		if (ev_time() - start >= limit) {
			rc = die(1, "timeout: '%s' has not applied position %lld after %gs", proj->name, pos, limit);
			break;
		}
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(delay * 1e9);
		nanosleep(&ts, NULL);
		if (delay < 0.2)
			delay *= 2;
	}
	state_close(st);
	return rc;
}

/* What the command line says besides the settings. */
struct cli {
	const char *command, *target, *arg, *reason, *position, *timeout, *config_file;
	bool once, all, help, version, json, connect, wait;
	int keep;
};

/* The value of a flag of main's own: "--NAME=V" or "--NAME V". */
static const char *own_flag(int argc, char **argv, int *i, const char *name, bool *bad)
{
	const char *a = argv[*i] + 2;
	size_t n = strlen(name);

	*bad = false;
	if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (*i + 1 >= argc) {
		*bad = true;
		return NULL;
	}
	return argv[++*i];
}

/*
 * Builds the settings: defaults, then the config file (--config FILE or
 * ESBRIDGE_CONFIG), then ESBRIDGE_* variables, then flags. Also used to
 * reload on SIGHUP. 0, or EXIT_USAGE with `err` set.
 */
static int load_settings(int argc, char **argv, struct config *cfg, struct cli *cli, char *err,
			 size_t errsz)
{
	static const char *const own[] = { "reason", "position", "timeout", "config", "keep" };

	memset(cli, 0, sizeof(*cli));
	cli->keep = 1;
	config_init(cfg);
	cli->config_file = getenv("ESBRIDGE_CONFIG");
	for (int i = 1; i < argc; i++) {
		bool bad;
		const char *v;
		if (strncmp(argv[i], "--", 2) != 0)
			continue;
		v = own_flag(argc, argv, &i, "config", &bad);
		if (bad) {
			snprintf(err, errsz, "option '--config' needs a value");
			return EXIT_USAGE;
		}
		if (v)
			cli->config_file = v;
	}
	if (cli->config_file && *cli->config_file &&
	    config_load_file(cfg, cli->config_file, err, errsz))
		return EXIT_USAGE;
	if (config_load_env(cfg, err, errsz))
		return EXIT_USAGE;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char name[64];
		const char *value, *eq;
		bool handled = false;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			cli->help = true;
			return 0;
		}
		if (!strcmp(a, "--version")) {
			cli->version = true;
			return 0;
		}
		if (!strcmp(a, "--once")) {
			cli->once = true;
			continue;
		}
		if (!strcmp(a, "--all")) {
			cli->all = true;
			continue;
		}
		if (!strcmp(a, "--json")) {
			cli->json = true;
			continue;
		}
		if (!strcmp(a, "--connect")) {
			cli->connect = true;
			continue;
		}
		if (!strcmp(a, "--wait")) {
			cli->wait = true;
			continue;
		}
		for (size_t k = 0; k < sizeof(own) / sizeof(own[0]) && !handled && !strncmp(a, "--", 2); k++) {
			bool bad;
			const char *v = own_flag(argc, argv, &i, own[k], &bad);
			if (bad) {
				snprintf(err, errsz, "option '--%s' needs a value", own[k]);
				return EXIT_USAGE;
			}
			if (!v)
				continue;
			handled = true;
			if (!strcmp(own[k], "reason"))
				cli->reason = v;
			else if (!strcmp(own[k], "position"))
				cli->position = v;
			else if (!strcmp(own[k], "timeout"))
				cli->timeout = v;
			else if (!strcmp(own[k], "keep")) {
				char *end;
				long kv = strtol(v, &end, 10);
				if (!*v || *end || kv < 0 || kv > 32) {
					snprintf(err, errsz,
						 "invalid value for '--keep': '%s' is not a number from 0 to 32", v);
					return EXIT_USAGE;
				}
				cli->keep = (int)kv;
			}
		}
		if (handled)
			continue;
		if (strncmp(a, "--", 2) != 0) {
			if (cli->command &&
			    (!strcmp(cli->command, "rebuild") || !strcmp(cli->command, "dead-letters")) &&
			    !cli->target) {
				cli->target = a;
				continue;
			}
			if (cli->command && !strcmp(cli->command, "dead-letters") && !cli->arg) {
				cli->arg = a;
				continue;
			}
			if (cli->command) {
				snprintf(err, errsz, "unexpected argument '%s' (see --help)", a);
				return EXIT_USAGE;
			}
			cli->command = a;
			continue;
		}
		eq = strchr(a + 2, '=');
		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
		if (!eq && config_is_switch(name)) {
			value = "true";
		} else if (!eq && !strncmp(name, "no-", 3) && config_is_switch(name + 3)) {
			memmove(name, name + 3, strlen(name + 3) + 1);
			value = "false";
		} else if (eq) {
			value = eq + 1;
		} else if (config_has_option(name)) {
			if (i + 1 >= argc) {
				snprintf(err, errsz, "option '--%s' needs a value", name);
				return EXIT_USAGE;
			}
			value = argv[++i];
		} else {
			snprintf(err, errsz, "unknown option '--%s' (see --help)", name);
			return EXIT_USAGE;
		}
		if (config_set(cfg, name, value, err, errsz))
			return EXIT_USAGE;
	}
	return 0;
}

/* SIGHUP: the settings again from the file, the environment and the flags. */
static int main_argc;
static char **main_argv;

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct config *live = w->data, next;
	struct cli cli;
	char err[1024];
	int changed;

	(void)loop;
	(void)revents;
	if (load_settings(main_argc, main_argv, &next, &cli, err, sizeof(err)) ||
	    config_validate(&next, err, sizeof(err))) {
		log_error("reload failed, keeping the running settings: %s", err);
		config_release(&next);
		return;
	}
	changed = config_reload(live, &next);
	config_release(&next);
	log_set_level((enum log_level)log_level_parse(live->log_level));
	log_info("reloaded the settings: %d changed", changed);
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct cli cli;
	char err[1024];
	int rc;

	signal(SIGPIPE, SIG_IGN);
	main_argc = argc;
	main_argv = argv;
	rc = load_settings(argc, argv, &cfg, &cli, err, sizeof(err));
	if (rc) {
		config_release(&cfg);
		return die(rc, "%s", err);
	}
	if (cli.help || cli.version) {
		if (cli.help)
			usage(stdout);
		else
			version();
		config_release(&cfg);
		return 0;
	}
	if (!cli.command) {
		usage(stderr);
		config_release(&cfg);
		return EXIT_USAGE;
	}
	if (strcmp(cli.command, "run") && strcmp(cli.command, "status") &&
	    strcmp(cli.command, "check-config") && strcmp(cli.command, "rebuild") &&
	    strcmp(cli.command, "dead-letters") && strcmp(cli.command, "wait")) {
		config_release(&cfg);
		return die(EXIT_USAGE, "unknown command '%s' (see --help)", cli.command);
	}
	if (cli.wait && strcmp(cli.command, "dead-letters")) {
		config_release(&cfg);
		return die(EXIT_USAGE, "'--wait' is an option of dead-letters retry and discard");
	}
	if (cli.connect && strcmp(cli.command, "check-config")) {
		config_release(&cfg);
		return die(EXIT_USAGE, "'--connect' is an option of check-config only");
	}
	if (config_validate(&cfg, err, sizeof(err))) {
		config_release(&cfg);
		return die(EXIT_USAGE, "%s", err);
	}
	log_set_level((enum log_level)log_level_parse(cfg.log_level));
	if (!strcmp(cli.command, "check-config")) {
		rc = cmd_check_config(&cfg, cli.connect);
	} else if (!strcmp(cli.command, "status")) {
		rc = cmd_status(&cfg, cli.json);
	} else if (!strcmp(cli.command, "wait")) {
		rc = cmd_wait(&cfg, cli.position, cli.timeout);
	} else if (!strcmp(cli.command, "dead-letters")) {
		rc = cmd_dead_letters(&cfg, cli.target, cli.arg, cli.all, cli.reason, cli.wait, cli.timeout);
	} else if (!strcmp(cli.command, "rebuild")) {
		rc = cli.target ? cmd_rebuild(&cfg, cli.target, cli.keep)
				: die(EXIT_USAGE, "rebuild needs a projection name (see --help)");
	} else {
		rc = cmd_run(&cfg, cli.once);
	}
	config_release(&cfg);
	return rc;
}
