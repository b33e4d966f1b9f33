/*
 * Several Elasticsearch URLs for one cluster (--es URL1,URL2): requests go
 * round the healthy nodes, and a node that cannot be reached is set aside
 * and tried again later.
 *
 *   a. the first URL names a port nobody listens on: `run --once` catches
 *      up through the other and the index equals the oracle;
 *   b. two proxies of ours in front of the real node; the daemon follows
 *      through both, one proxy is killed during the catch-up: the other
 *      carries the rest and the index equals the oracle.
 *
 * Logs: build/tests/logs/nodes-TEST.log.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define ALIAS "products"
#define EVENTS 20000
#define CHUNK 5000

static void history(void)
{
	for (int from = 1; from <= EVENTS; from += CHUNK)
		h_insert_generated_products(from, from + CHUNK - 1);
}

Test(nodes, a_dead_node_is_set_aside, .timeout = 300)
{
	char es[512];
	const char *args[] = { "run", "--once", "--projection", ALIAS, "--es", es, "--batch-size", "500",
			       "--bulk-actions", "200", NULL };
	struct h_proc *p;

	h_begin();
	history();
	snprintf(es, sizeof(es), "http://127.0.0.1:%d,%s", h_free_port(), getenv("ESBRIDGE_ES"));
	p = h_spawn(0, args);
	cr_assert(h_wait(p, 240), "no exit within 240s (log: %s)", p->log);
	cr_assert_eq(h_exit_code(p), 0, "exit status 0x%x (log: %s)", (unsigned)p->status, p->log);
	cr_assert(h_output_count(p, "set aside") > 0, "the dead node was never set aside (log: %s)", p->log);
	cr_assert_eq(h_dead_letter_count(), 0);
	cr_assert_eq(h_checkpoint_pos(ALIAS), EVENTS);
	h_assert_docs_match_oracle(ALIAS);
	h_end();
}

Test(nodes, a_node_lost_during_catch_up, .timeout = 400)
{
	static const char *const proxy_args[] = { NULL };
	char url1[128], url2[128], es[300];
	const char *args[] = { "run", "--projection", ALIAS, "--es", es, "--batch-size", "500",
			       "--bulk-actions", "100", "--request-timeout", "10", "--retry-max", "2",
			       "--poll-interval", "0.2", NULL };
	struct h_proc *a, *b, *p;
	double deadline;
	int64_t at;

	h_begin();
	history();
	a = h_proxy_start(proxy_args, url1, sizeof(url1));
	b = h_proxy_start(proxy_args, url2, sizeof(url2));
	snprintf(es, sizeof(es), "%s,%s", url1, url2);
	p = h_spawn(0, args);
	/* mid-flight: some progress, not all */
	deadline = h_now() + 120;
	while ((at = h_checkpoint_pos(ALIAS)) <= 0) {
		cr_assert(!h_wait(p, 0), "the daemon exited (log: %s)", p->log);
		cr_assert(h_now() < deadline, "no checkpoint within 120s (log: %s)", p->log);
		h_sleep(0.02);
	}
	cr_assert_lt(at, EVENTS, "caught up before the node could be lost: make the history larger");
	h_kill(a);
	cr_log_info("proxy 1 killed at checkpoint %" PRId64, at);
	deadline = h_now() + 240;
	while (h_checkpoint_pos(ALIAS) < EVENTS) {
		cr_assert(!h_wait(p, 0), "the daemon exited (log: %s)", p->log);
		cr_assert(h_now() < deadline, "not caught up within 240s of losing a node (checkpoint %" PRId64
			  ") (log: %s)", h_checkpoint_pos(ALIAS), p->log);
		h_sleep(0.05);
	}
	h_stop(p, 60);
	cr_assert(h_output_count(p, "set aside") > 0, "the lost node was never set aside (log: %s)", p->log);
	h_signal(b, SIGTERM);
	cr_assert(h_wait(b, 10), "the proxy did not stop");
	cr_assert_eq(h_dead_letter_count(), 0);
	h_assert_docs_match_oracle(ALIAS);
	h_end();
}
