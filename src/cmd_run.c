/* `esbridge run [--once]`: catch up, then follow (or stop at the head with --once). */
#include "cli.h"

#include <stdio.h>

#include "esbridge/monitor.h"

int cmd_run(struct config *cfg, const struct cli *cli)
{
	bool once = cli->once;
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
