/*
 * A cluster of three nodes loses one during a catch-up:
 *
 *   the orders projection is made active on the cluster (so its index has
 *   its own settings: auto_expand_replicas 0-1, one replica on three
 *   nodes); its two copies are put on nodes 1 and 2, the primary on node 2;
 *   a few thousand orders more are written, `run --once` with the three
 *   URLs catches up, and node 2's JVM is SIGKILLed half-way.  The catch-up
 *   ends with exit 0, no dead letter and an index equal to the oracle
 *   (tests/oracle/orders.sql); node 2 then starts again and the index is
 *   green.
 *
 * Needs a cluster of three nodes or more, as
 *   ESBRIDGE_ES_NODES=3 scripts/services start
 * starts it (ESBRIDGE_ES then names every node, comma-separated); skipped
 * on a single node, unless ESBRIDGE_CLUSTER_REQUIRED is set (CI): then it fails.  The test's own requests go to node 1, which stays up.
 *
 * Logs: build/tests/logs/cluster-TEST.log.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <yajl/yajl_tree.h>

#include "harness.h"

#define ALIAS "orders"
#define FIRST_ORDERS 100
#define ORDERS 4000 /* about 17,000 events: a catch-up of several seconds */
#define CHUNK 1000

/* Node 1..3 of ESBRIDGE_ES: its HTTP port, or 0 when the list is shorter. */
static int node_port(int k)
{
	const char *p = getenv("ESBRIDGE_ES");

	for (int i = 1; p && *p; i++) {
		const char *colon, *end = p + strcspn(p, ",");
		if (i == k) {
			for (colon = end; colon > p && colon[-1] != ':'; colon--)
				;
			return colon > p ? atoi(colon) : 0;
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

static yajl_val es_json(const char *method, const char *path, const char *body)
{
	struct h_http r = h_es(method, path, body);
	char err[256];
	yajl_val v;

	cr_assert_eq(r.status, 200, "%s %s: HTTP %ld: %.300s", method, path, r.status, r.body);
	v = yajl_tree_parse(r.body, err, sizeof(err));
	cr_assert_not_null(v, "%s %s: %s", method, path, err);
	h_http_free(&r);
	return v;
}

/* The node id of the node whose HTTP port is `port` (from GET _nodes/http). */
static char *node_id(int port)
{
	static const char *nodes_path[] = { "nodes", NULL };
	static const char *addr_path[] = { "http", "publish_address", NULL };
	yajl_val v = es_json("GET", "/_nodes/http", NULL), nodes, addr;
	char want[32];
	char *id = NULL;

	snprintf(want, sizeof(want), ":%d", port);
	nodes = yajl_tree_get(v, nodes_path, yajl_t_object);
	cr_assert_not_null(nodes);
	for (size_t i = 0; i < nodes->u.object.len; i++) {
		const char *a;
		addr = yajl_tree_get(nodes->u.object.values[i], addr_path, yajl_t_string);
		a = addr ? YAJL_GET_STRING(addr) : NULL;
		if (a && strlen(a) >= strlen(want) && !strcmp(a + strlen(a) - strlen(want), want))
			id = strdup(nodes->u.object.keys[i]);
	}
	yajl_tree_free(v);
	cr_assert_not_null(id, "no node publishes HTTP on port %d", port);
	return id;
}

/* The index behind the alias. */
static char *alias_index(void)
{
	yajl_val v = es_json("GET", "/_alias/" ALIAS, NULL);
	char *index;

	cr_assert(YAJL_IS_OBJECT(v) && v->u.object.len == 1, "the alias " ALIAS " names %zu indices",
		  YAJL_IS_OBJECT(v) ? v->u.object.len : 0);
	index = strdup(v->u.object.keys[0]);
	cr_assert_not_null(index);
	yajl_tree_free(v);
	return index;
}

/* The node id holding the started primary of shard 0 of `index`. */
static char *primary_node(const char *index)
{
	static const char *shard_path[] = { "shards", "0", NULL };
	static const char *primary_path[] = { "primary", NULL };
	static const char *state_path[] = { "state", NULL };
	static const char *node_path[] = { "node", NULL };
	char path[256];
	const char *indices_path[] = { "routing_table", "indices", index, NULL };
	yajl_val v, idx, copies;
	char *id = NULL;

	snprintf(path, sizeof(path), "/_cluster/state/routing_table/%s", index);
	v = es_json("GET", path, NULL);
	idx = yajl_tree_get(v, indices_path, yajl_t_object);
	cr_assert_not_null(idx, "no routing table of %s", index);
	copies = yajl_tree_get(idx, shard_path, yajl_t_array);
	cr_assert_not_null(copies, "no shard 0 in the routing table of %s", index);
	for (size_t i = 0; i < copies->u.array.len; i++) {
		yajl_val c = copies->u.array.values[i];
		yajl_val pr = yajl_tree_get(c, primary_path, yajl_t_any);
		yajl_val st = yajl_tree_get(c, state_path, yajl_t_string);
		yajl_val nd = yajl_tree_get(c, node_path, yajl_t_string);
		const char *state = st ? YAJL_GET_STRING(st) : NULL, *node = nd ? YAJL_GET_STRING(nd) : NULL;
		if (pr && YAJL_IS_TRUE(pr) && state && !strcmp(state, "STARTED") && node)
			id = strdup(node);
	}
	yajl_tree_free(v);
	cr_assert_not_null(id, "%s has no started primary", index);
	return id;
}

/* Until the alias's index is green, nothing relocating or initializing. */
static void wait_green(void)
{
	struct h_http r = h_es("GET", "/_cluster/health/" ALIAS "?wait_for_status=green"
				      "&wait_for_no_relocating_shards=true&wait_for_no_initializing_shards=true"
				      "&timeout=120s", NULL);

	cr_assert_eq(r.status, 200, "health: HTTP %ld: %.300s", r.status, r.body);
	cr_assert(strstr(r.body, "\"status\":\"green\"") && strstr(r.body, "\"timed_out\":false"),
		  "not green within 120s: %.400s", r.body);
	h_http_free(&r);
}

static void orders(int from, int to)
{
	for (int o = from; o <= to; o += CHUNK)
		h_insert_generated_orders(o, o + CHUNK - 1 < to ? o + CHUNK - 1 : to);
}

Test(cluster, a_node_killed_during_catch_up, .timeout = 900)
{
	const char *es = getenv("ESBRIDGE_ES");
	const char *args[] = { "run", "--once", "--projection", ALIAS, "--es", es, "--batch-size", "500",
			       "--bulk-actions", "200", "--request-timeout", "10", NULL };
	const char *const *once_args = args + 2; /* h_run_once puts "run --once" first */
	char body[512], path[256], *index, *id1, *id2, *primary;
	struct h_proc *p;
	double deadline;
	int64_t end, at;

	if (node_port(3) == 0) {
		cr_assert_null(getenv("ESBRIDGE_CLUSTER_REQUIRED"),
			       "ESBRIDGE_ES names fewer than three nodes: %s", es ? es : "(unset)");
		cr_skip_test("needs three nodes: ESBRIDGE_ES_NODES=3 scripts/services start");
	}
	h_begin();

	/* the generation made active: the mapping's own settings, one replica */
	orders(1, FIRST_ORDERS);
	cr_assert_eq(h_run_once(once_args, 240), 0, "the first run --once failed");
	index = alias_index();
	wait_green();

	/* both copies on nodes 1 and 2, the primary on node 2 */
	id1 = node_id(node_port(1));
	id2 = node_id(node_port(2));
	snprintf(body, sizeof(body), "{\"index.routing.allocation.include._id\":\"%s,%s\"}", id1, id2);
	snprintf(path, sizeof(path), "/%s/_settings", index);
	yajl_tree_free(es_json("PUT", path, body));
	wait_green();
	primary = primary_node(index);
	if (strcmp(primary, id2)) {
		/* cancelling the primary on node 1 promotes the replica on node 2 */
		snprintf(body, sizeof(body), "{\"commands\":[{\"cancel\":{\"index\":\"%s\",\"shard\":0,"
			 "\"node\":\"%s\",\"allow_primary\":true}}]}", index, primary);
		yajl_tree_free(es_json("POST", "/_cluster/reroute", body));
		wait_green();
		free(primary);
		primary = primary_node(index);
	}
	cr_assert_str_eq(primary, id2, "the primary of %s is on %s, not on node 2 (%s)", index, primary, id2);
	cr_log_info("%s: primary on node 2 (%s), replica on node 1 (%s)", index, id2, id1);

	/* the catch-up, and node 2 killed half-way */
	orders(FIRST_ORDERS + 1, FIRST_ORDERS + ORDERS);
	end = h_query_ll(NULL, "SELECT max(global_position) FROM public.events", 0, NULL, -1);
	at = h_checkpoint_pos(ALIAS);
	p = h_spawn(0, args);
	deadline = h_now() + 120;
	while (h_checkpoint_pos(ALIAS) <= at) {
		cr_assert(!h_wait(p, 0), "the daemon exited before any progress (log: %s)", p->log);
		cr_assert(h_now() < deadline, "no progress within 120s (log: %s)", p->log);
		h_sleep(0.02);
	}
	at = h_checkpoint_pos(ALIAS);
	cr_assert_lt(at, end, "caught up before node 2 could be killed: make the history larger");
	h_services_ok("es-kill", "2", 60);
	cr_log_info("node 2 killed at checkpoint %" PRId64 " of %" PRId64, at, end);
	cr_assert(h_wait(p, 600), "the catch-up did not end within 600s of losing node 2 (log: %s)", p->log);
	cr_assert_eq(h_exit_code(p), 0, "exit status 0x%x (log: %s)", (unsigned)p->status, p->log);
	cr_assert_eq(h_dead_letter_count(), 0);
	cr_assert_eq(h_checkpoint_pos(ALIAS), end);
	h_assert_docs_match_oracle(ALIAS);

	/* node 2 again: it rejoins, and the index is whole again */
	h_services_ok("es-start", "2", 300);
	snprintf(body, sizeof(body), "{\"index.routing.allocation.include._id\":null}");
	yajl_tree_free(es_json("PUT", path, body));
	wait_green();
	h_assert_docs_match_oracle(ALIAS);
	free(primary);
	free(id1);
	free(id2);
	free(index);
	h_end();
}
