/*
 * A session: the runners of `run` (or of an in-process `rebuild`) on one
 * loop, each projection started over when PostgreSQL was lost or taken over
 * when its owner stops, and the signals: SIGTERM/SIGINT drain, SIGHUP reloads
 * (a command stops on it).
 */
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "esbridge/backoff.h"
#include "esbridge/log.h"
#include "esbridge/pipeline.h"

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents);
static void on_finish(void *arg, struct runner *r);

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
	sl->delay = backoff_next(sl->delay, 0.5, sl->s->cfg->retry_max);
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

int session_open(struct session *s, struct config *cfg,
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

int session_run(struct session *s)
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

void session_close(struct session *s)
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

int session_sources(void *arg, struct monitor_source *out, int max)
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

/* SIGHUP: the settings again from the file, the environment and the flags. */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct config *live = w->data, next;
	char err[1024];
	int changed;

	(void)loop;
	(void)revents;
	if (cli_reload(&next, err, sizeof(err)) ||
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
