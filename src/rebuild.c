#include "esbridge/rebuild.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esbridge/indices.h"
#include "esbridge/log.h"
#include "esbridge/pipeline.h"
#include "esbridge/state.h"

_Static_assert(PROJECTION_MAX_INDICES == GEN_MAX_INDICES, "a generation holds every index of a projection");

void rebuild_index_name(const char *proj, int number, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s-%06d", proj, number);
}

/* Generation `number` of `proj`: one index per alias of the projection. */
static void generation_names(const struct projection *proj, int number, struct generation *g)
{
	size_t n = projection_n_indices(proj);

	g->number = number;
	rebuild_index_name(projection_alias(proj, 0), number, g->index, sizeof(g->index));
	g->n_extra = (int)n - 1;
	for (size_t i = 1; i < n; i++)
		rebuild_index_name(projection_alias(proj, i), number, g->extra[i - 1], sizeof(g->extra[0]));
}

/* The slots of generation `g` (a row of an older version may lack the others). */
static size_t generation_slots(const struct projection *proj, const struct generation *g)
{
	size_t n = projection_n_indices(proj);

	return (size_t)g->n_extra + 1 < n ? (size_t)g->n_extra + 1 : n;
}

/* "a-000002" or, for a projection of several indices, "a-000002, b-000002": for log lines. */
static const char *generation_indices(const struct projection *proj, const struct generation *g, char *out,
				      size_t outsz)
{
	size_t len = 0;

	out[0] = '\0';
	for (size_t slot = 0; slot < generation_slots(proj, g) && len < outsz; slot++)
		len += (size_t)snprintf(out + len, outsz - len, "%s%s", slot ? ", " : "", generation_index(g, slot));
	return out;
}

/*
 * Fault injection for the crash tests, compiled only into the test build
 * (build/esbridge-crash, -DESBRIDGE_CRASH_POINTS): with ESBRIDGE_CRASH_AT=STEP
 * in the environment, the process kills itself at that step of a rebuild
 * (caught-up, paused, alias-moved, swapped), as a power cut would. The
 * shipped binary has no such switch.
 */
#ifdef ESBRIDGE_CRASH_POINTS
static void crash_point(const char *step)
{
	const char *at = getenv("ESBRIDGE_CRASH_AT");

	if (at && !strcmp(at, step)) {
		log_warn("ESBRIDGE_CRASH_AT=%s: killing this process", step);
		raise(SIGKILL);
	}
}
#else
static void crash_point(const char *step)
{
	(void)step;
}
#endif

/* Restores the index's own settings (refresh, replicas) and refreshes it. */
static int make_searchable(struct es_client *es, const struct config *cfg,
			   const struct projection *proj, const struct generation *g,
			   char *err, size_t errsz)
{
	for (size_t i = 0; i < generation_slots(proj, g); i++)
		if (indices_settings(es, cfg, projection_alias(proj, i), generation_index(g, i), false, err,
				     errsz) ||
		    indices_refresh(es, generation_index(g, i), err, errsz))
			return -1;
	return 0;
}

/*
 * Makes `next` the generation readers see: its settings restored, refreshed,
 * the alias moved to it in one POST _aliases (removed from every other
 * index; every alias of a projection of several indices in that one
 * request), then the state recorded: `next` active, `prev` (if any) retired.
 * A stop between the alias move and the state update is reconciled by
 * runner_new, which trusts the alias.
 */
static int activate(struct state *st, struct es_client *es, const struct config *cfg,
		    const struct projection *proj, const struct generation *prev,
		    struct generation *next, char *err, size_t errsz)
{
	const char *aliases[GEN_MAX_INDICES], *indices[GEN_MAX_INDICES];
	size_t n = generation_slots(proj, next);
	char moved[768];
	size_t len = 0;

	/* cheap when on_caught_up did it already: only the last events */
	if (make_searchable(es, cfg, proj, next, err, errsz))
		return -1;
	if (state_set_generation_state(st, proj->name, next->number, GEN_READY, err, errsz))
		return -1;
	for (size_t slot = 0; slot < n; slot++) {
		aliases[slot] = projection_alias(proj, slot);
		indices[slot] = generation_index(next, slot);
	}
	if (indices_move_aliases(es, aliases, indices, n, err, errsz))
		return -1;
	crash_point("alias-moved");
	if (prev ? state_swap(st, proj->name, prev->number, next->number, err, errsz)
		 : state_set_generation_state(st, proj->name, next->number, GEN_ACTIVE, err, errsz))
		return -1;
	next->state = GEN_ACTIVE;
	/* "alias a now names a-000002", one such part per alias of the projection */
	moved[0] = '\0';
	for (size_t slot = 0; slot < n && len < sizeof(moved); slot++)
		len += (size_t)snprintf(moved + len, sizeof(moved) - len, "%salias %s now names %s",
					slot ? ", " : "", aliases[slot], indices[slot]);
	plog_info(proj->name, next->number, "%s", moved);
	return 0;
}

/* Deletes the indices of retired generations beyond the newest `keep`. */
static void cleanup(struct state *st, struct es_client *es, const struct projection *proj, int keep)
{
	struct generation gens[RUNNER_MAX_GENERATIONS];
	char err[512];
	int n = state_list_generations(st, proj->name, gens, RUNNER_MAX_GENERATIONS, err, sizeof(err));
	int kept = 0;

	if (n < 0) {
		plog_warn(proj->name, 0, "%s", err);
		return;
	}
	for (int i = n - 1; i >= 0; i--) {
		bool deleted = true;
		if (gens[i].state != GEN_RETIRED || kept++ < keep)
			continue;
		for (size_t slot = 0; slot < generation_slots(proj, &gens[i]); slot++) {
			if (indices_delete(es, generation_index(&gens[i], slot), err, sizeof(err))) {
				plog_warn(proj->name, gens[i].number, "%s", err);
				deleted = false;
			}
		}
		if (!deleted)
			continue;
		if (state_delete_generation(st, proj->name, gens[i].number, err, sizeof(err)))
			plog_warn(proj->name, gens[i].number, "%s", err);
		else
			plog_info(proj->name, gens[i].number, "deleted retired index %s", gens[i].index);
	}
}

/* ---- the runner ---------------------------------------------------------- */

enum phase { R_IDLE, R_CATCHING_UP, R_PAUSING, R_DRAINING };

struct runner {
	struct ev_loop *loop;
	const struct config *cfg;
	const struct projection *proj;
	struct es_client *es;
	struct state *st;
	bool once, exit_after_rebuild, stopping, finished, failed;
	bool lost;                  /* the state connection went: start over */
	struct pipeline *active;    /* follows the generation readers see (or the first one) */
	struct pipeline *building;  /* the rebuild target */
	/* previous active pipelines, stopping; freed after their loop iteration */
	struct pipeline *retired[8];
	int n_retired;
	ev_timer reap;
	bool swapped;               /* a rebuild moved the alias in this process */
	enum phase phase;
	double pause_started, rebuild_started;
	double last_pause;
	int keep;
	long long command_id;
	bool letters_synced;        /* the building pipeline applied its carried-over letters once */
	char stop_reason[768];      /* why a rebuild stopped before the swap, for the CLI */
	ev_io cmd_io;
	ev_timer cmd_poll;
	runner_done_fn done;
	void *done_arg;
};

static void runner_check_done(struct runner *r);

static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct runner *r = (struct runner *)((char *)w - offsetof(struct runner, reap));
	int kept = 0;

	(void)loop;
	(void)revents;
	for (int i = 0; i < r->n_retired; i++) {
		if (pipeline_finished(r->retired[i]))
			pipeline_free(r->retired[i]);
		else
			r->retired[kept++] = r->retired[i];
	}
	r->n_retired = kept;
}

static void command_end(struct runner *r, bool ok, const char *message)
{
	char err[512];

	if (!r->command_id)
		return;
	if (state_command_finish(r->st, r->command_id, ok, message, err, sizeof(err)))
		plog_warn(r->proj->name, 0, "%s", err);
	r->command_id = 0;
}

static void swap(struct runner *r)
{
	struct generation prev = *pipeline_generation(r->active);
	struct generation next = *pipeline_generation(r->building);
	char err[512], msg[256];
	double pause;

	if (activate(r->st, r->es, r->cfg, r->proj, &prev, &next, err, sizeof(err))) {
		plog_warn(r->proj->name, next.number, "cannot swap the alias yet: %s", err);
		/* readers keep the old generation; try again at the next catch-up */
		r->phase = R_CATCHING_UP;
		pipeline_resume(r->active);
		return;
	}
	pause = ev_time() - r->pause_started;
	r->last_pause = pause;
	crash_point("swapped");
	pipeline_set_generation_state(r->building, GEN_ACTIVE);
	pipeline_stop(r->active);
	if (r->n_retired < (int)(sizeof(r->retired) / sizeof(r->retired[0])))
		r->retired[r->n_retired++] = r->active;
	else
		BUG("more than %d retired pipelines stopping at once", r->n_retired);
	r->active = r->building;
	r->swapped = true;
	r->building = NULL;
	r->phase = R_IDLE;
	plog_info(r->proj->name, next.number,
		  "rebuild done in %.1fs: %s replaces %s; writes to the alias paused %.0f ms",
		  ev_time() - r->rebuild_started, next.index, prev.index, pause * 1000.0);
	cleanup(r->st, r->es, r->proj, r->keep);
	snprintf(msg, sizeof(msg), "%s is active; write pause %.0f ms", next.index, pause * 1000.0);
	command_end(r, true, msg);
	if (r->exit_after_rebuild)
		runner_stop(r);
}

/*
 * The new generation will not be shown: its pipeline stops (its state stays
 * building, so that the next 'esbridge rebuild' or start resumes it), the
 * active one goes on, the command (if any) fails with `msg`.
 */
static void abandon_building(struct runner *r, const char *msg)
{
	plog_error(r->proj->name, pipeline_generation(r->building)->number, "%s", msg);
	snprintf(r->stop_reason, sizeof(r->stop_reason), "%s", msg);
	if (r->phase == R_PAUSING || r->phase == R_DRAINING)
		pipeline_resume(r->active);
	r->phase = R_IDLE;
	pipeline_stop(r->building);
	if (r->n_retired < (int)(sizeof(r->retired) / sizeof(r->retired[0])))
		r->retired[r->n_retired++] = r->building;
	else
		BUG("more than %d retired pipelines stopping at once", r->n_retired);
	r->building = NULL;
	command_end(r, false, msg);
	if (r->exit_after_rebuild) {
		r->failed = true;
		runner_stop(r);
	}
}

/*
 * Before the pause and again before the swap. First the new generation
 * applies the letters it is to apply again (decisions about events that
 * earlier generations made: see state_dead_letter) and forgets what they
 * held back; then it must hold back no document that the active generation
 * does not, or readers would see older documents: the rebuild stops, saying
 * which. 1: go on; 0: not yet (the pipeline applies them, its next catch-up
 * asks again); -1: stopped.
 */
static int building_ready(struct runner *r)
{
	const struct generation *g = pipeline_generation(r->building);
	const struct generation *a = pipeline_generation(r->active);
	char err[512], doc[101] = "", msg[768];
	long long waiting, n, first = 0;

	waiting = state_letters_waiting(r->st, r->proj->name, g->number, err, sizeof(err));
	n = waiting < 0 ? -1 : 0;
	if (waiting == 0 && r->letters_synced)
		n = state_letters_diverge(r->st, r->proj->name, g->number, a->number, doc, sizeof(doc), &first,
					  err, sizeof(err));
	if (n < 0)
		plog_warn(r->proj->name, g->number, "%s (trying again)", err);
	if (waiting != 0 || !r->letters_synced || n < 0) {
		r->letters_synced = true;
		pipeline_letters_changed(r->building);
		pipeline_wake(r->building);
		return 0;
	}
	if (n == 0)
		return 1;
	snprintf(msg, sizeof(msg),
		 "generation %d of '%s' holds back %lld document%s that generation %d does not (the first: '%s',"
		 " dead letter %lld); not moving the alias from %s: retry or discard those letters ('esbridge"
		 " dead-letters list --projection %s'), then 'esbridge rebuild %s' resumes the rebuild",
		 g->number, r->proj->name, n, n == 1 ? "" : "s", a->number, doc, first, a->index, r->proj->name,
		 r->proj->name);
	abandon_building(r, msg);
	return -1;
}

static void on_caught_up(void *arg, struct pipeline *p)
{
	struct runner *r = arg;
	struct generation g = *pipeline_generation(p);
	char err[512];

	if (p == r->active && g.state != GEN_ACTIVE) {
		/* the first generation: show it once it has caught up */
		if (activate(r->st, r->es, r->cfg, r->proj, NULL, &g, err, sizeof(err))) {
			plog_warn(r->proj->name, g.number, "cannot make %s visible yet: %s", g.index, err);
			if (r->once)
				pipeline_fail(p, err);
			return;
		}
		pipeline_set_generation_state(p, GEN_ACTIVE);
		return;
	}
	if (p != r->building)
		return;
	switch (r->phase) {
	case R_CATCHING_UP:
		if (building_ready(r) <= 0)
			break;
		/*
		 * Settings back and the bulk of the refresh now, while readers
		 * still use the active generation: the pause then covers only
		 * the last events and a small refresh.
		 */
		if (make_searchable(r->es, r->cfg, r->proj, &g, err, sizeof(err))) {
			plog_warn(r->proj->name, g.number, "cannot prepare %s for the swap yet: %s", g.index, err);
			break;
		}
		plog_info(r->proj->name, g.number, "caught up: pausing the active generation for the swap");
		crash_point("caught-up");
		r->phase = R_PAUSING;
		r->pause_started = ev_time();
		pipeline_pause(r->active);
		break;
	case R_DRAINING:
		if (building_ready(r) > 0)
			swap(r);
		break;
	case R_IDLE:
	case R_PAUSING:
		break;
	}
}

static void on_paused(void *arg, struct pipeline *p)
{
	struct runner *r = arg;

	if (p != r->active || r->phase != R_PAUSING)
		return;
	/* the new generation reads up to the head once more, then the swap */
	crash_point("paused");
	r->phase = R_DRAINING;
	pipeline_wake(r->building);
}

static void on_finished(void *arg, struct pipeline *p)
{
	struct runner *r = arg;

	for (int i = 0; i < r->n_retired; i++)
		if (p == r->retired[i]) {
			/* not from inside its own callback: after this iteration */
			ev_timer_start(r->loop, &r->reap);
			if (r->stopping)
				runner_check_done(r);
			return;
		}
	if (pipeline_exit_code(p) == PIPELINE_EXIT_LOST && !r->lost) {
		r->lost = true;
		command_end(r, false, "lost the PostgreSQL connection (the daemon starts the projection over)");
		runner_stop(r);
	} else if (pipeline_exit_code(p) && !r->failed && !r->lost) {
		r->failed = true;
		command_end(r, false, "the rebuild stopped on an error (see the daemon's log)");
		runner_stop(r);
	}
	runner_check_done(r);
}

static void runner_check_done(struct runner *r)
{
	if (r->finished)
		return;
	if ((r->active && !pipeline_finished(r->active)) ||
	    (r->building && !pipeline_finished(r->building)))
		return;
	/* a retired pipeline may still have a request in flight naming it */
	for (int i = 0; i < r->n_retired; i++)
		if (!pipeline_finished(r->retired[i]))
			return;
	r->finished = true;
	ev_io_stop(r->loop, &r->cmd_io);
	ev_timer_stop(r->loop, &r->cmd_poll);
	if (r->done)
		r->done(r->done_arg, r);
}

static const struct pipeline_hooks *hooks_of(struct runner *r)
{
	static struct pipeline_hooks h;

	h.caught_up = on_caught_up;
	h.paused = on_paused;
	h.finished = on_finished;
	h.arg = r;
	return &h;
}

static int ensure_index(struct runner *r, struct generation *g, char *err, size_t errsz);

int runner_rebuild(struct runner *r, int keep, char *err, size_t errsz)
{
	struct generation gens[RUNNER_MAX_GENERATIONS], next, *resume = NULL;
	const struct generation *cur;
	int n, top = 0, created;

	if (r->building || r->phase != R_IDLE) {
		snprintf(err, errsz, "a rebuild of '%s' is already running", r->proj->name);
		return -1;
	}
	if (!r->active || pipeline_generation(r->active)->state != GEN_ACTIVE) {
		snprintf(err, errsz, "projection '%s' has no active generation yet: it is being built",
			 r->proj->name);
		return -1;
	}
	n = state_list_generations(r->st, r->proj->name, gens, RUNNER_MAX_GENERATIONS, err, errsz);
	if (n < 0)
		return -1;
	cur = pipeline_generation(r->active);
	for (int i = 0; i < n; i++) {
		if (gens[i].number > top)
			top = gens[i].number;
		/* a rebuild that stopped before its swap: resumed, not begun again beside it */
		if ((gens[i].state == GEN_BUILDING || gens[i].state == GEN_READY) && gens[i].number > cur->number)
			resume = &gens[i];
	}
	if (resume) {
		next = *resume;
		if (ensure_index(r, &next, err, errsz))
			return -1;
	} else {
		memset(&next, 0, sizeof(next));
		generation_names(r->proj, top + 1, &next);
		next.state = GEN_BUILDING;
		if (state_create_generation(r->st, r->proj->name, &next, err, errsz))
			return -1;
		for (size_t slot = 0; slot < generation_slots(r->proj, &next); slot++) {
			created = indices_create(r->es, r->cfg, projection_alias(r->proj, slot),
					       generation_index(&next, slot), err, errsz);
			if (created < 0)
				return -1;
		}
	}
	r->building = pipeline_new(r->loop, r->cfg, r->proj, r->es, r->st, &next, false, err, errsz);
	if (!r->building)
		return -1;
	r->letters_synced = false;
	r->stop_reason[0] = '\0';
	{
		char indices[512], beside[512];
		plog_info(r->proj->name, next.number, "rebuild: %s %s from %s beside %s",
			  resume ? "resuming" : "building", generation_indices(r->proj, &next, indices, sizeof(indices)),
			  r->cfg->mappings_dir, generation_indices(r->proj, cur, beside, sizeof(beside)));
	}
	r->keep = keep;
	r->phase = R_CATCHING_UP;
	r->rebuild_started = ev_time();
	pipeline_start(r->building, hooks_of(r));
	return 0;
}

static void check_commands(struct runner *r)
{
	char err[512];
	long long id;
	int keep, rc;

	for (;;) {
		rc = state_command_claim(r->st, r->proj->name, &id, &keep, err, sizeof(err));
		if (rc <= 0) {
			if (rc < 0)
				plog_warn(r->proj->name, 0, "%s", err);
			return;
		}
		plog_info(r->proj->name, 0, "command %lld: rebuild (keep %d)", id, keep);
		if (r->command_id || runner_rebuild(r, keep, err, sizeof(err))) {
			char e2[512];
			if (r->command_id)
				snprintf(err, sizeof(err), "a rebuild of '%s' is already running", r->proj->name);
			if (state_command_finish(r->st, id, false, err, e2, sizeof(e2)))
				plog_warn(r->proj->name, 0, "%s", e2);
			continue;
		}
		r->command_id = id;
	}
}

/* The state connection went, and with it the lock: stop, to be started over. */
static void lose_state(struct runner *r)
{
	ev_io_stop(r->loop, &r->cmd_io); /* its socket would stay readable */
	if (r->lost)
		return;
	plog_error(r->proj->name, 0, "lost the PostgreSQL connection of the bridge state"
		   " (and with it the projection's lock): starting over");
	r->lost = true;
	runner_stop(r);
}

static void cmd_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct runner *r = (struct runner *)((char *)w - offsetof(struct runner, cmd_io));

	(void)loop;
	(void)revents;
	if (state_drain_notifies(r->st) < 0) {
		lose_state(r);
		return;
	}
	/* a notification: dead letters may have been marked for retry too */
	if (r->active && !r->stopping)
		pipeline_letters_changed(r->active);
	if (r->building && !r->stopping)
		pipeline_letters_changed(r->building);
	check_commands(r);
}

static void cmd_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct runner *r = (struct runner *)((char *)w - offsetof(struct runner, cmd_poll));

	(void)loop;
	(void)revents;
	if (state_drain_notifies(r->st) >= 0)
		check_commands(r);
	else
		lose_state(r);
}

/* One writer per projection: a process just killed may hold the lock until the server notices. */
static int own(struct runner *r, bool wait, char *err, size_t errsz)
{
	const struct timespec pause = { 0, 100 * 1000 * 1000 };

	for (int i = 0; i < (wait ? 100 : 1); i++) {
		int rc = state_own_projection(r->st, r->proj->name, err, errsz);
		if (rc != 0)
			return rc > 0 ? 0 : -1;
		if (i == 0 && wait)
			log_info("%s: another esbridge process runs this projection; waiting up to 10s",
				 r->proj->name);
		nanosleep(&pause, NULL);
	}
	snprintf(err, errsz, "another esbridge process runs projection '%s'", r->proj->name);
	return 1;
}

/* Makes sure the generation's index exists; a recreated index starts over. */
static int ensure_index(struct runner *r, struct generation *g, char *err, size_t errsz)
{
	struct position zero = { 0, 0 };
	int created = 0;

	/* any index of the generation missing: all of it again from the start */
	for (size_t slot = 0; slot < generation_slots(r->proj, g); slot++) {
		int c = indices_create(r->es, r->cfg, projection_alias(r->proj, slot),
				     generation_index(g, slot), err, errsz);
		if (c < 0)
			return -1;
		if (c && position_cmp(g->checkpoint, zero) != 0)
			plog_warn(r->proj->name, g->number, "index %s was missing: building it again from the start",
				  generation_index(g, slot));
		created |= c;
	}
	if (created && position_cmp(g->checkpoint, zero) != 0) {
		if (state_save_checkpoint(r->st, r->proj->name, g->number, zero, err, errsz))
			return -1;
		g->checkpoint = zero;
		if (g->state == GEN_ACTIVE) {
			/* not visible until caught up again */
			if (state_set_generation_state(r->st, r->proj->name, g->number, GEN_BUILDING, err, errsz))
				return -1;
			g->state = GEN_BUILDING;
		}
	}
	return 0;
}

/*
 * The generations to run, from the recorded ones and the alias, which is
 * the truth readers see: `*a` the active one (or the first, building in
 * its place), `*b` a rebuild to resume, either NULL. A first generation is
 * created when there is none.
 */
static int pick_generations(struct runner *r, struct generation *gens, int n, struct generation **pa,
			    struct generation **pb, char *err, size_t errsz)
{
	const struct projection *proj = r->proj;
	struct generation *a = NULL, *b = NULL;
	bool named_a = false, named_b = false;

	for (int i = 0; i < n; i++) {
		if (gens[i].state == GEN_ACTIVE)
			a = &gens[i];
		else if (gens[i].state == GEN_BUILDING || gens[i].state == GEN_READY)
			b = &gens[i]; /* the newest wins */
	}
	if (b && a && b->number < a->number)
		b = NULL; /* a stale leftover: ignore it */
	if (!a && !b) {
		char indices[512];
		memset(&gens[0], 0, sizeof(gens[0]));
		b = &gens[0];
		generation_names(proj, 1, b);
		b->state = GEN_BUILDING;
		if (state_create_generation(r->st, proj->name, b, err, errsz))
			return -1;
		plog_info(proj->name, 1, "new generation, %s %s", generation_slots(proj, b) > 1 ? "indices" : "index",
			  generation_indices(proj, b, indices, sizeof(indices)));
	}
	/* the aliases of several indices move together: the first one tells */
	if ((a && indices_alias_names(r->es, projection_alias(proj, 0), a->index, &named_a, err, errsz)) ||
	    (b && indices_alias_names(r->es, projection_alias(proj, 0), b->index, &named_b, err, errsz)))
		return -1;
	if (b && named_b) {
		plog_info(proj->name, b->number, "alias already names %s: recording it as active", b->index);
		if (a ? state_swap(r->st, proj->name, a->number, b->number, err, errsz)
		      : state_set_generation_state(r->st, proj->name, b->number, GEN_ACTIVE, err, errsz))
			return -1;
		b->state = GEN_ACTIVE;
		if (a)
			a->state = GEN_RETIRED;
		a = b;
		b = NULL;
		named_a = true;
	}
	if (a && !named_a) {
		plog_warn(proj->name, a->number, "alias %s does not name %s: it is shown again once caught up",
			  projection_alias(proj, 0), a->index);
		if (state_set_generation_state(r->st, proj->name, a->number, GEN_BUILDING, err, errsz))
			return -1;
		a->state = GEN_BUILDING;
	}
	if ((a && ensure_index(r, a, err, errsz)) || (b && ensure_index(r, b, err, errsz)))
		return -1;
	if (!a) {
		/* the first generation: built in the active slot, shown when caught up */
		a = b;
		b = NULL;
	}
	*pa = a;
	*pb = b;
	return 0;
}

/*
 * A daemon's commands: a command a stopped daemon was running (the resumed
 * rebuild finishes it, or, with no rebuild left, it ended one way or the
 * other), and those sent from now on.
 */
static int listen_commands(struct runner *r, char *err, size_t errsz)
{
	long long id = 0;
	int keep = 1;

	if (state_command_recover(r->st, r->proj->name, r->building != NULL, &id, &keep, err, errsz))
		return -1;
	if (id) {
		r->command_id = id;
		r->keep = keep;
	}
	if (state_listen_commands(r->st, err, errsz))
		return -1;
	ev_io_set(&r->cmd_io, state_socket(r->st), EV_READ);
	ev_timer_set(&r->cmd_poll, r->cfg->poll_interval * 5, r->cfg->poll_interval * 5);
	return 0;
}

struct runner *runner_new(struct ev_loop *loop, const struct config *cfg,
			  const struct projection *proj, struct es_client *es,
			  const struct runner_opts *opts, char *err, size_t errsz)
{
	struct runner *r = calloc(1, sizeof(*r));
	struct generation gens[RUNNER_MAX_GENERATIONS], *a = NULL, *b = NULL;
	int n, rc;

	if (!r) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	r->loop = loop;
	r->cfg = cfg;
	r->proj = proj;
	r->es = es;
	r->once = opts->once;
	r->exit_after_rebuild = opts->exit_after_rebuild;
	ev_init(&r->cmd_io, cmd_io_cb);
	ev_init(&r->cmd_poll, cmd_poll_cb);
	ev_timer_init(&r->reap, reap_cb, 0.0, 0.0);
	r->st = state_open(cfg->pg, err, errsz);
	if (!r->st)
		goto fail;
	rc = own(r, !opts->no_wait, err, errsz);
	if (rc) {
		if (rc > 0 && opts->busy)
			*opts->busy = true;
		goto fail;
	}
	if (indices_put_script(es, err, errsz))
		goto fail;
	n = state_list_generations(r->st, proj->name, gens, RUNNER_MAX_GENERATIONS, err, errsz);
	if (n < 0 || pick_generations(r, gens, n, &a, &b, err, errsz))
		goto fail;
	r->active = pipeline_new(loop, cfg, proj, es, r->st, a, opts->once, err, errsz);
	if (!r->active)
		goto fail;
	if (b && !opts->once) {
		r->building = pipeline_new(loop, cfg, proj, es, r->st, b, false, err, errsz);
		if (!r->building)
			goto fail;
		r->phase = R_CATCHING_UP;
		r->keep = 1;
		plog_info(proj->name, b->number, "resuming the rebuild of %s", b->index);
	}
	if (!opts->once && listen_commands(r, err, errsz))
		goto fail;
	return r;
fail:
	runner_free(r);
	return NULL;
}

void runner_start(struct runner *r, runner_done_fn done, void *arg)
{
	r->done = done;
	r->done_arg = arg;
	r->rebuild_started = ev_time();
	pipeline_start(r->active, hooks_of(r));
	if (r->building)
		pipeline_start(r->building, hooks_of(r));
	if (!r->once) {
		ev_io_start(r->loop, &r->cmd_io);
		ev_timer_start(r->loop, &r->cmd_poll);
		check_commands(r);
	}
}

void runner_stop(struct runner *r)
{
	if (r->stopping)
		return;
	r->stopping = true;
	if (r->active)
		pipeline_stop(r->active);
	if (r->building)
		pipeline_stop(r->building);
	runner_check_done(r);
}

void runner_set_keep(struct runner *r, int keep)
{
	r->keep = keep;
}

bool runner_swapped(const struct runner *r)
{
	return r->swapped;
}

const char *runner_stop_reason(const struct runner *r)
{
	return r->stop_reason[0] ? r->stop_reason : NULL;
}

int runner_exit_code(const struct runner *r)
{
	if (r->lost && !r->failed)
		return PIPELINE_EXIT_LOST;
	if (r->failed)
		return 1;
	if (r->active && pipeline_exit_code(r->active))
		return 1;
	if (r->building && pipeline_exit_code(r->building))
		return 1;
	return 0;
}

int runner_progress(const struct runner *r, struct runner_progress *out)
{
	const struct pipeline *p = r->building ? r->building : r->active;

	memset(out, 0, sizeof(*out));
	if (!p)
		return -1;
	out->generation = pipeline_generation(p)->number;
	out->rebuilding = r->building != NULL;
	out->events = pipeline_get_stats(p)->events;
	out->checkpoint = pipeline_checkpoint(p);
	out->last_pause = r->last_pause;
	return 0;
}

int runner_pipelines(const struct runner *r, const struct pipeline **out)
{
	int n = 0;

	if (r->active)
		out[n++] = r->active;
	if (r->building)
		out[n++] = r->building;
	return n;
}

void runner_free(struct runner *r)
{
	if (!r)
		return;
	if (r->loop) {
		ev_io_stop(r->loop, &r->cmd_io);
		ev_timer_stop(r->loop, &r->cmd_poll);
		ev_timer_stop(r->loop, &r->reap);
	}
	pipeline_free(r->active);
	pipeline_free(r->building);
	for (int i = 0; i < r->n_retired; i++)
		pipeline_free(r->retired[i]);
	state_close(r->st);
	free(r);
}
