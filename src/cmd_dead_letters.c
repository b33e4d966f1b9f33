/* `esbridge dead-letters list|retry|discard`. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esbridge/state.h"

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

int cmd_dead_letters(struct config *cfg, const struct cli *cli)
{
	const char *sub = cli->target, *arg = cli->arg, *reason = cli->reason, *timeout = cli->timeout;
	bool all = cli->all, wait_outcome = cli->wait;
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
		double limit;
		if (parse_timeout(timeout, &limit))
			return EXIT_USAGE;
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
