/*
 * Fault tests: the real daemon (`esbridge run`, never restarted by the test)
 * catches up a generated products history while the real services fail
 * under it:
 *
 *   a. the search node's JVM is SIGKILLed, then started again;
 *   b. the JVM is SIGSTOPped past the request timeout, then SIGCONTed;
 *   c. PostgreSQL restarts (pg_ctl restart -m fast, then -m immediate);
 *   d. the bridge's PostgreSQL connections are ended by pg_terminate_backend;
 *   e. a fault-injecting proxy of ours (tests/tools/faultproxy.py) in front
 *      of the real node answers whole _bulk requests 429, rewrites item
 *      results of real responses to 429/503, and cuts responses short.
 *
 * Each test ends with the index equal to the oracle (tests/oracle/products.sql,
 * an independent SQL fold of the events) and no dead letter. Faults are
 * driven through scripts/services (es-kill, es-start, es-freeze, es-thaw,
 * pg-restart); every test leaves both services up, and a frozen JVM is
 * resumed by a detached guard even if the test process dies.
 *
 * Daemon and proxy logs: build/tests/logs/faults-TEST.log.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define ALIAS "products"
#define INDEX "products-000001"

#define GEN_EVENTS 40000 /* large enough to be mid-way when the fault hits */
#define GEN_CHUNK 5000   /* events per transaction */
#define RECOVER_SECS 180.0 /* generous: the machine may be loaded */

/*
 * Small reads and requests: many checkpoints, many requests in flight over
 * time. The poll interval keeps its default (1 s): reconnecting must not
 * depend on a short one.
 */
#define BRIDGE_ARGS "--batch-size", "500", "--bulk-actions", "200", "--retry-max", "2"

/* ---- services ---------------------------------------------------------------- */

static void suite_fini(void)
{
	h_end();
	h_services_up();
}

TestSuite(faults, .init = h_services_up, .fini = suite_fini);

/* ---- the bridge -------------------------------------------------------------- */

/* Generated history of `n` events in transactions of GEN_CHUNK; returns the last position. */
static int64_t history(int n)
{
	for (int from = 1; from <= n; from += GEN_CHUNK)
		h_insert_generated_products(from, from + GEN_CHUNK - 1 < n ? from + GEN_CHUNK - 1 : n);
	return (int64_t)n;
}

/* `esbridge run` with BRIDGE_ARGS and the extra `args`. */
static struct h_proc *bridge(const char *const *extra)
{
	const char *args[32] = { "run", BRIDGE_ARGS };
	int n = 0;

	while (args[n])
		n++;
	for (int i = 0; extra && extra[i]; i++) {
		cr_assert_lt(n, 31);
		args[n++] = extra[i];
	}
	args[n] = NULL;
	return h_spawn(0, args);
}

/*
 * Waits until the checkpoint has moved (the bridge is mid-flight) and
 * returns it; fails when the bridge had already caught up (the fault would
 * prove nothing) or exited.
 */
static int64_t wait_mid_flight(struct h_proc *p, int64_t last)
{
	double deadline = h_now() + 60;
	int64_t pos;

	while ((pos = h_checkpoint_pos(ALIAS)) <= 0) {
		cr_assert(!h_wait(p, 0), "the daemon exited before its first checkpoint (log: %s)", p->log);
		cr_assert(h_now() < deadline, "no checkpoint within 60s (log: %s)", p->log);
		h_sleep(0.02);
	}
	cr_assert_lt(pos, last, "the daemon caught up before the fault (checkpoint %" PRId64 " of %" PRId64
		     "): the history is too small", pos, last);
	cr_log_info("fault at checkpoint %" PRId64 " of %" PRId64, pos, last);
	return pos;
}

/* Waits until the checkpoint of `projection` is the last event, the daemon running all along. */
static void wait_caught_up_of(struct h_proc *p, const char *projection, int64_t last, double secs)
{
	double t0 = h_now(), deadline = t0 + secs;
	char index[64];
	int64_t pos;

	while ((pos = h_checkpoint_pos(projection)) != last) {
		cr_assert(!h_wait(p, 0), "the daemon exited (status 0x%x) at checkpoint %" PRId64 " of %"
			  PRId64 " (log: %s)", (unsigned)p->status, pos, last, p->log);
		cr_assert(h_now() < deadline, "checkpoint %" PRId64 " of %" PRId64 " %.0fs after the fault"
			  " (log: %s)", pos, last, secs, p->log);
		h_sleep(0.1);
	}
	/* the alias moves once it has caught up: a SIGTERM before that would leave it unset */
	snprintf(index, sizeof(index), "%s-000001", projection);
	while (!h_alias_is(projection, index)) {
		cr_assert(!h_wait(p, 0), "the daemon exited (status 0x%x) before moving the alias %s (log: %s)",
			  (unsigned)p->status, projection, p->log);
		cr_assert(h_now() < deadline, "caught up, but the alias %s does not name %s %.0fs after the"
			  " fault (log: %s)", projection, index, secs, p->log);
		h_sleep(0.1);
	}
	cr_log_info("%s caught up %.2fs after the fault", projection, h_now() - t0);
}

static void wait_caught_up(struct h_proc *p, int64_t last, double secs)
{
	wait_caught_up_of(p, ALIAS, last, secs);
}

static void assert_exact(void)
{
	long long dead = h_dead_letter_count();

	cr_assert_eq(dead, 0, "%lld dead letters, want none", dead);
	cr_assert(h_alias_is(ALIAS, INDEX), "the alias products does not name exactly %s", INDEX);
	h_assert_docs_match_oracle(ALIAS);
}

/* ---- a. the JVM killed ------------------------------------------------------- */

/* the JVM's restart takes 15 s on a quiet machine, minutes on a loaded one */
Test(faults, es_killed_during_catch_up, .timeout = 720)
{
	static const char *const extra[] = { "--request-timeout", "5", NULL };
	struct h_proc *p;
	int64_t last;
	double t0 = h_now();

	h_begin();
	last = history(GEN_EVENTS);
	p = bridge(extra);
	wait_mid_flight(p, last);
	h_services_ok("es-kill", NULL, 30);
	h_sleep(1.0); /* requests fail meanwhile: connection refused */
	h_services_ok("es-start", NULL, 300);
	wait_caught_up(p, last, RECOVER_SECS);
	cr_assert_gt(h_output_count(p, "level=warn"), 0,
		     "the daemon logged no warning: did the fault reach it? (log: %s)", p->log);
	h_stop(p, 30);
	assert_exact();
	cr_log_info("es_killed_during_catch_up: %.1fs", h_now() - t0);
}

/* ---- b. the JVM stopped, then continued --------------------------------------- */

Test(faults, es_stopped_during_catch_up, .timeout = 420)
{
	static const char *const extra[] = { "--request-timeout", "3", NULL };
	struct h_proc *p;
	int64_t last, at;
	double t0 = h_now();

	h_begin();
	last = history(GEN_EVENTS);
	p = bridge(extra);
	at = wait_mid_flight(p, last);
	/* the guard resumes it after 60s even if this test dies */
	h_services_ok("es-freeze", "60", 30);
	h_sleep(8.0); /* > 2 request timeouts: requests time out, are retried, time out again */
	cr_assert(!h_wait(p, 0), "the daemon exited while the node was stopped (log: %s)", p->log);
	cr_log_info("node resumed; checkpoint %" PRId64 " (%" PRId64 " when it stopped)", h_checkpoint_pos(ALIAS), at);
	h_services_ok("es-thaw", NULL, 30);
	wait_caught_up(p, last, RECOVER_SECS);
	cr_assert_gt(h_output_count(p, "level=warn"), 0,
		     "the daemon logged no warning: did the fault reach it? (log: %s)", p->log);
	h_stop(p, 30);
	assert_exact();
	cr_log_info("es_stopped_during_catch_up: %.1fs", h_now() - t0);
}

/* ---- c. PostgreSQL restarted ------------------------------------------------- */

static void pg_restart_during_catch_up(const char *mode)
{
	static const char *const extra[] = { "--request-timeout", "10", NULL };
	struct h_proc *p;
	int64_t last;
	double t0 = h_now();

	h_begin();
	last = history(GEN_EVENTS);
	p = bridge(extra);
	wait_mid_flight(p, last);
	h_services_ok("pg-restart", mode, 90);
	h_pg_reset(); /* the test's own session went with the server */
	wait_caught_up(p, last, RECOVER_SECS);
	cr_assert_gt(h_output_count(p, "level=warn") + h_output_count(p, "level=error"), 0,
		     "the daemon logged nothing of the restart: did the fault reach it? (log: %s)", p->log);
	h_stop(p, 30);
	assert_exact();
	cr_log_info("pg_restart %s: %.1fs", mode, h_now() - t0);
}

Test(faults, pg_restart_fast_during_catch_up, .timeout = 420)
{
	pg_restart_during_catch_up("fast");
}

Test(faults, pg_restart_immediate_during_catch_up, .timeout = 420)
{
	pg_restart_during_catch_up("immediate");
}

/* ---- d. the bridge's connections terminated --------------------------------- */

Test(faults, pg_terminate_backend_during_catch_up, .timeout = 420)
{
	static const char *const extra[] = { "--request-timeout", "10", NULL };
	char suffix[64];
	const char *params[] = { suffix };
	struct h_proc *p;
	int64_t last, at;
	double t0 = h_now();

	h_begin();
	last = history(GEN_EVENTS);
	p = bridge(extra);
	/* the daemon names its connections "ROLE HOST pid PID" */
	snprintf(suffix, sizeof(suffix), "%% pid %ld", (long)p->pid);
	at = wait_mid_flight(p, last);
	/* three times, each once the bridge has made progress again */
	for (int round = 0; round < 3; round++) {
		long long n;
		double deadline = h_now() + 60;
		/*
		 * pg_terminate_backend only signals: a backend it ended may still
		 * commit the checkpoint it was writing, which the wait below takes
		 * for progress while the bridge's new connections are not made
		 * yet. So a round waits for a connection to terminate.
		 */
		while ((n = h_query_ll(NULL,
				       "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
				       " WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
				       1, params, 0)) < 1 && h_now() < deadline) {
			cr_assert(!h_wait(p, 0), "the daemon exited (status 0x%x) (log: %s)", (unsigned)p->status,
				  p->log);
			h_sleep(0.02);
		}
		cr_assert_geq(n, 1, "round %d: no connection of the bridge to terminate within 60s (log: %s)",
			      round, p->log);
		cr_log_info("round %d: terminated %lld connections at checkpoint %" PRId64, round, n, at);
		while (h_checkpoint_pos(ALIAS) == at && at < last) {
			cr_assert(!h_wait(p, 0), "the daemon exited (status 0x%x) (log: %s)",
				  (unsigned)p->status, p->log);
			cr_assert(h_now() < deadline, "round %d: no progress within 60s of the termination"
				  " (checkpoint %" PRId64 ") (log: %s)", round, at, p->log);
			h_sleep(0.02);
		}
		at = h_checkpoint_pos(ALIAS);
		if (at == last)
			break;
	}
	wait_caught_up(p, last, RECOVER_SECS);
	cr_assert_gt(h_output_count(p, "level=warn") + h_output_count(p, "level=error"), 0,
		     "the daemon logged nothing of the terminations: did they reach it? (log: %s)", p->log);
	h_stop(p, 30);
	assert_exact();
	cr_log_info("pg_terminate_backend_during_catch_up: %.1fs", h_now() - t0);
}

/* ---- e. a fault-injecting proxy ----------------------------------------------- */

#define PROXY_EVENTS 10000
#define PROXY_ORDERS 2000

/*
 * A deterministic orders history, one statement (one transaction): orders
 * f1..fN created, then 1-4 items added each, one removed from every third,
 * then shipped and completed, shipped only, or cancelled; ordered by step,
 * so the events of one order are far apart (other requests). Returns the
 * last position.
 */
static int64_t orders_history(int n)
{
	char count[16];
	const char *params[1] = { count };

	snprintf(count, sizeof(count), "%d", n);
	PQclear(h_exec(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version, created_at)"
		" SELECT 'order-f' || e.o, e.kind,"
		"  CASE e.kind"
		"   WHEN 'OrderCreated' THEN jsonb_build_object('order_id', 'f' || e.o,"
		"     'customer_id', 'c' || (e.o % 97), 'created_at', e.ts)"
		"   WHEN 'OrderItemAdded' THEN jsonb_build_object('order_id', 'f' || e.o,"
		"     'product_id', 'p' || ((e.o * 7 + e.step) % 500),"
		"     'price', ((e.o * 31 + e.step * 17) % 20000) / 100.0, 'quantity', 1 + (e.o + e.step) % 3)"
		"   WHEN 'OrderItemRemoved' THEN jsonb_build_object('order_id', 'f' || e.o,"
		"     'product_id', 'p' || ((e.o * 7 + 1) % 500), 'price', ((e.o * 31 + 17) % 20000) / 100.0,"
		"     'quantity', 1)"
		"   WHEN 'OrderShipped' THEN jsonb_build_object('order_id', 'f' || e.o, 'shipped_at', e.ts)"
		"   WHEN 'OrderCompleted' THEN jsonb_build_object('order_id', 'f' || e.o,"
		"     'customer_id', 'c' || (e.o % 97), 'total_amount', 0, 'item_count', 0, 'completed_at', e.ts)"
		"   ELSE jsonb_build_object('order_id', 'f' || e.o, 'reason', 'customer request',"
		"     'cancelled_at', e.ts)"
		"  END,"
		"  e.step + 1, timestamptz '2026-01-01 00:00:00+00' + e.sec * interval '1 second'"
		" FROM (SELECT s.o, s.step, s.kind, s.step * 100000 + s.o AS sec,"
		"        to_char(timestamp '2026-01-01' + (s.step * 100000 + s.o) * interval '1 second',"
		"                'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS ts"
		"       FROM (SELECT o, 0 AS step, 'OrderCreated' AS kind FROM generate_series(1, $1::int) o"
		"             UNION ALL"
		"             SELECT o, i, 'OrderItemAdded' FROM generate_series(1, $1::int) o,"
		"                    generate_series(1, 1 + o % 4) i"
		"             UNION ALL"
		"             SELECT o, 6, 'OrderItemRemoved' FROM generate_series(1, $1::int) o WHERE o % 3 = 0"
		"             UNION ALL"
		"             SELECT o, 7, CASE WHEN o % 5 < 3 THEN 'OrderShipped' ELSE 'OrderCancelled' END"
		"               FROM generate_series(1, $1::int) o WHERE o % 5 < 4"
		"             UNION ALL"
		"             SELECT o, 8, 'OrderCompleted' FROM generate_series(1, $1::int) o WHERE o % 5 < 2) s"
		"      ) e"
		" ORDER BY e.step, e.o",
		1, params));
	return h_query_ll(NULL, "SELECT max(global_position) FROM public.events", 0, NULL, -1);
}

/*
 * `projection`'s history caught up through the proxy with every kind of
 * fault: each must have happened at least once; nothing lost, nothing
 * dead-lettered.
 */
static void through_proxy(const char *projection)
{
	static const char *const proxy_args[] = {
		"--seed", "7", "--reject", "0.1", "--items", "0.25", "--item-share", "0.3", "--cut", "0.1",
		NULL,
	};
	bool products = !strcmp(projection, "products");
	char url[128], index[64];
	struct h_proc *proxy, *p;
	int64_t last;
	long rejected, items, cut;
	long long dead;
	double t0 = h_now();

	h_begin();
	last = products ? history(PROXY_EVENTS) : orders_history(PROXY_ORDERS);
	proxy = h_proxy_start(proxy_args, url, sizeof(url));
	{
		const char *extra[] = { "--es", url, "--request-timeout", "10", "--bulk-actions", "100",
					"--projection", projection, NULL };
		p = bridge(extra);
	}
	wait_caught_up_of(p, projection, last, RECOVER_SECS);
	h_stop(p, 30);
	h_signal(proxy, SIGTERM);
	cr_assert(h_wait(proxy, 10), "the proxy did not stop within 10s of SIGTERM");

	rejected = h_proxy_faults(proxy, "reject-before") + h_proxy_faults(proxy, "reject-after");
	items = h_proxy_faults(proxy, "items");
	cut = h_proxy_faults(proxy, "cut");
	cr_log_info("%s through the proxy: %ld requests answered 429, %ld responses with items rewritten,"
		    " %ld cut", projection, rejected, items, cut);
	cr_assert(rejected > 0 && items > 0 && cut > 0,
		  "not every kind of fault happened (429 %ld, items %ld, cut %ld; log: %s)", rejected, items,
		  cut, proxy->log);
	dead = h_dead_letter_count();
	cr_assert_eq(dead, 0, "%lld dead letters, want none (log: %s)", dead, p->log);
	snprintf(index, sizeof(index), "%s-000001", projection);
	cr_assert(h_alias_is(projection, index), "the alias %s does not name exactly %s", projection, index);
	h_assert_docs_match_oracle(projection);
	cr_log_info("%s through the proxy: %.1fs", projection, h_now() - t0);
}

Test(faults, proxy_faults_products, .timeout = 420)
{
	through_proxy("products");
}

/* Scripted updates (+= totals) resent after an applied-but-failed answer: the replay guard. */
Test(faults, proxy_faults_orders, .timeout = 420)
{
	through_proxy("orders");
}
