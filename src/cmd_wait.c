/* `esbridge wait --projection NAME --position P [--timeout S]`. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esbridge/backoff.h"
#include "esbridge/state.h"

/*
 * esbridge wait: read-your-writes for an application that just appended an
 * event. 0 once applied (or read past, for an event the projection does not
 * read), 3 when it became a dead letter, 1 at the timeout or on an error.
 */
int cmd_wait(struct config *cfg, const struct cli *cli)
{
	const char *position = cli->position, *timeout = cli->timeout;
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
	if (timeout && parse_timeout(timeout, &limit))
		return EXIT_USAGE;
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
		delay = backoff_next(delay, delay, 0.2);
	}
	state_close(st);
	return rc;
}
