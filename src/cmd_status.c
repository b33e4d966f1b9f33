/* `esbridge status [--json]`: generations, checkpoints, lag, owners. */
#include "cli.h"

#include <stdio.h>

#include "esbridge/state.h"

int cmd_status(struct config *cfg, const struct cli *cli)
{
	bool json = cli->json;
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
