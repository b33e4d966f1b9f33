/*
 * The store's statements against a real PostgreSQL:
 *
 *   a. the head is the newest event in xid order, not in the order of the
 *      xids' text (events of transactions 9..100: as text "99" > "100");
 *   b. every statement esbridge sends on the events table (the reader's,
 *      the monitor's and status's) is planned as an index scan, without a sort of the table and without a full scan, on a
 *      table of a few hundred thousand events in a few hundred transactions,
 *      both as a custom plan and as the generic plan a prepared statement
 *      falls back to.
 *
 * Logs: build/tests/logs/store-TEST.log.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "esbridge/buf.h"
#include "esbridge/monitor.h"
#include "esbridge/pq.h"
#include "esbridge/projection.h"
#include "esbridge/state.h"
#include "esbridge/store.h"
#include "harness.h"

static struct store *open_store(void)
{
	char err[512];
	struct store *s = store_open(getenv("ESBRIDGE_PG"), err, sizeof(err));

	cr_assert_not_null(s, "store_open: %s", err);
	return s;
}

/* Appends an event of transaction `xid` (an explicit, old xid8); returns its position. */
static int64_t event_at_xid(uint64_t xid, const char *id)
{
	char x[24], data[64], stream[64];
	const char *params[3] = { x, stream, data };
	char *pos;
	int64_t v;

	snprintf(x, sizeof(x), "%" PRIu64, xid);
	snprintf(stream, sizeof(stream), "product-%s", id);
	snprintf(data, sizeof(data), "{\"product_id\": \"%s\", \"name\": \"n\", \"price\": 1}", id);
	pos = h_query_text(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version, transaction_id)"
		" VALUES ($2, 'ProductCreated', $3::jsonb, 1, $1::xid8) RETURNING global_position::text",
		3, params);
	v = strtoll(pos, NULL, 10);
	free(pos);
	return v;
}

static void assert_head(struct store *s, uint64_t bound, uint64_t txid, int64_t pos)
{
	char err[512];
	struct position head;

	cr_assert_eq(store_head(s, bound, &head, err, sizeof(err)), 0, "store_head: %s", err);
	cr_assert(head.txid == txid && head.pos == pos,
		  "bound %" PRIu64 ": head %" PRIu64 "/%" PRId64 ", want %" PRIu64 "/%" PRId64
		  " (xids sorted as text?)", bound, head.txid, head.pos, txid, pos);
}

/*
 * Regression test (issue: the head query sorted transaction ids as text).
 * Transactions 9, 10, 99 and 100 are long finished in any cluster this runs
 * on, so their events are below every snapshot's xmin.
 */
Test(store, head_orders_xids_as_numbers)
{
	struct store *s;
	int64_t p9, p10, p99, p100;

	h_begin();
	p100 = event_at_xid(100, "a");
	p9 = event_at_xid(9, "b");
	p99 = event_at_xid(99, "c");
	p10 = event_at_xid(10, "d");
	(void)p9;
	s = open_store();
	assert_head(s, 0, 100, p100);
	assert_head(s, 100, 99, p99);
	assert_head(s, 99, 10, p10);
	store_close(s);
	h_end();
}

Test(store, head_of_an_empty_store)
{
	struct store *s;

	h_begin();
	s = open_store();
	assert_head(s, 0, 0, 0);
	store_close(s);
	h_end();
}

/* ---- b. plans ------------------------------------------------------------- */

#define TXNS 300
#define PER_TXN 1000

/*
 * TXNS transactions of PER_TXN events each: products, orders and a rare
 * type, so that a projection's type filter keeps a fraction of the rows.
 */
static void big_store(void)
{
	char sql[1024];

	for (int t = 0; t < TXNS; t++) {
		snprintf(sql, sizeof(sql),
			 "INSERT INTO public.events (stream_id, event_type, data, version)"
			 " SELECT CASE WHEN g %% 3 = 0 THEN 'product-p' ELSE 'order-o' END || g,"
			 "  CASE WHEN g %% 997 = 0 THEN 'CustomerRegistered'"
			 "   WHEN g %% 3 = 0 THEN 'ProductCreated' ELSE 'OrderCreated' END,"
			 "  jsonb_build_object('id', g), 1"
			 " FROM generate_series(%d, %d) g",
			 t * PER_TXN + 1, (t + 1) * PER_TXN);
		h_sql(NULL, sql);
	}
	h_sql(NULL, "ANALYZE public.events");
}

/* The text of `plan` (EXPLAIN output rows), one line each; free() it. */
static char *explain(const char *sql, const char *args, bool generic)
{
	struct buf b = BUF_INIT(1 << 20);
	struct buf stmt = BUF_INIT(1 << 20);
	PGresult *res;
	size_t len;
	char *plan;

	h_sql(NULL, "DEALLOCATE ALL");
	h_sql(NULL, generic ? "SET plan_cache_mode = force_generic_plan"
			    : "SET plan_cache_mode = force_custom_plan");
	{
		struct buf p = BUF_INIT(1 << 20);
		(void)buf_printf(&p, "PREPARE q AS %s", sql);
		cr_assert(!buf_error(&p));
		h_sql(NULL, p.data);
		buf_release(&p);
	}
	(void)buf_printf(&stmt, "EXPLAIN EXECUTE q(%s)", args);
	cr_assert(!buf_error(&stmt));
	res = h_exec(NULL, stmt.data, 0, NULL);
	buf_release(&stmt);
	for (int i = 0; i < PQntuples(res); i++)
		(void)buf_printf(&b, "%s\n", PQgetvalue(res, i, 0));
	PQclear(res);
	h_sql(NULL, "RESET plan_cache_mode");
	h_sql(NULL, "DEALLOCATE ALL");
	cr_assert(!buf_error(&b));
	plan = buf_take(&b, &len);
	return plan;
}

enum { MAY_SORT_FEW = 1 };

/*
 * Asserts the plans (custom and generic) of `sql` with `args`: `index` is
 * used, no sequential scan of events, no sort unless MAY_SORT_FEW (a sort
 * of the rows found by a bounded list of keys).
 */
static void assert_plan(const char *what, const char *sql, const char *args, const char *index,
			unsigned flags)
{
	for (int generic = 0; generic < 2; generic++) {
		char *plan = explain(sql, args, generic);

		cr_log_info("%s (%s plan):\n%s", what, generic ? "generic" : "custom", plan);
		cr_expect(strstr(plan, index) != NULL, "%s (%s plan) does not use %s:\n%s", what,
			  generic ? "generic" : "custom", index, plan);
		cr_expect(strstr(plan, "Seq Scan on events") == NULL, "%s (%s plan) scans events:\n%s",
			  what, generic ? "generic" : "custom", plan);
		if (!(flags & MAY_SORT_FEW))
			cr_expect(strstr(plan, "Sort") == NULL, "%s (%s plan) sorts:\n%s", what,
				  generic ? "generic" : "custom", plan);
		free(plan);
	}
}

/* '{"A","B"}' as an SQL literal for the text[] of a projection's types or streams. */
static void array_literal(const char *const *items, char *out, size_t size)
{
	struct buf b = BUF_INIT(1 << 16);

	cr_assert_eq(store_text_array(items, &b), 0);
	cr_assert_lt(b.len + 3, size);
	snprintf(out, size, "'%s'", b.data);
	buf_release(&b);
}

Test(store, every_statement_on_events_uses_an_index, .timeout = 300)
{
	char args[4096], types[1024], streams[512], mid_txid[24], mid_pos[24];
	char *t;

	h_begin();
	{
		/* the bridge's schema, which the monitor's statement reads */
		char err[512];
		struct state *st = state_open(getenv("ESBRIDGE_PG"), err, sizeof(err));
		cr_assert_not_null(st, "state_open: %s", err);
		state_close(st);
	}
	big_store();
	/* as the reader and the monitor plan them */
	h_sql(NULL, pq_events_session_sql);
	/* a checkpoint in the middle of the store */
	t = h_query_text(NULL, "SELECT transaction_id::text FROM public.events WHERE global_position = $1",
			 1, (const char *const[]){ "150000" });
	snprintf(mid_txid, sizeof(mid_txid), "%s", t);
	free(t);
	snprintf(mid_pos, sizeof(mid_pos), "150000");

	for (const struct projection *const *pp = projection_registry; *pp; pp++) {
		char what[128];

		array_literal((*pp)->event_types, types, sizeof(types));
		array_literal((*pp)->streams, streams, sizeof(streams));
		snprintf(what, sizeof(what), "the read of %s from the start", (*pp)->name);
		snprintf(args, sizeof(args), "'0', '0', NULL, %s, 2000, %s, 16777216", types, streams);
		assert_plan(what, store_read_sql, args, "events_commit_order", 0);
		snprintf(what, sizeof(what), "the read of %s from the middle, bounded", (*pp)->name);
		snprintf(args, sizeof(args), "'%s', '%s', '%s', %s, 2000, %s, 16777216", mid_txid, mid_pos,
			 mid_txid, types, streams);
		assert_plan(what, store_read_sql, args, "events_commit_order", 0);
		snprintf(what, sizeof(what), "the monitor's numbers of %s", (*pp)->name);
		snprintf(args, sizeof(args), "%s, %s, '%s', '%s', '%s', 1", types, streams, mid_txid, mid_pos,
			 (*pp)->name);
		assert_plan(what, monitor_numbers_sql, args, "events_commit_order", 0);
		snprintf(what, sizeof(what), "the status of %s", (*pp)->name);
		snprintf(args, sizeof(args), "'%s', %s, %s", (*pp)->name, types, streams);
		assert_plan(what, state_status_sql, args, "events_commit_order", 0);
	}
	assert_plan("the head", store_head_sql, "NULL", "events_commit_order", 0);
	snprintf(args, sizeof(args), "'%s'", mid_txid);
	assert_plan("the head below a bound", store_head_sql, args, "events_commit_order", 0);
	/* a sort of the (at most a batch of) rows found by their positions */
	assert_plan("the read by positions", store_by_position_sql, "'{5,150000,299999}'", "events_pkey",
		    MAY_SORT_FEW);
	h_end();
}

/* ---- c. reads bounded by bytes ---------------------------------------------- */

#define BIG_EVENTS 40
#define BIG_BYTES 300000
#define UNSETTLED (1 << 20)

/*
 * Regression test (issue: memory bounded by event count, not by bytes). A
 * backlog of BIG_EVENTS products of about BIG_BYTES each, with
 * --max-unsettled-bytes 1 MiB: every read takes at most the bytes left
 * under the bound (its first event whatever its size), never a batch of
 * 2000 events, and the catch-up still ends at the head with the index equal
 * to the oracle.
 */
Test(store, reads_stop_at_the_unsettled_bytes, .timeout = 240)
{
	static const char *const args[] = { "run", "--once", "--projection", "products", "--log-level", "debug",
					    "--max-unsettled-bytes", "1048576", NULL };
	char n[16], size[16];
	const char *params[2] = { n, size };
	struct h_proc *p;
	char *out, *line;
	long reads = 0, events = 0;

	h_begin();
	snprintf(n, sizeof(n), "%d", BIG_EVENTS);
	snprintf(size, sizeof(size), "%d", BIG_BYTES);
	PQclear(h_exec(NULL,
		"INSERT INTO public.events (stream_id, event_type, data, version)"
		" SELECT 'product-big' || g, 'ProductCreated', jsonb_build_object('product_id', 'big' || g,"
		"  'name', 'Big ' || g, 'price', g, 'description', repeat(chr(97 + g % 26), $2::int)), 1"
		" FROM generate_series(1, $1::int) g", 2, params));
	p = h_spawn(0, args);
	cr_assert(h_wait(p, 200), "run --once did not end (log: %s)", p->log);
	cr_assert_eq(h_exit_code(p), 0, "exit status 0x%x (log: %s)", (unsigned)p->status, p->log);
	out = h_proc_output(p);
	for (line = strstr(out, "msg=\"read "); line; line = strstr(line + 1, "msg=\"read ")) {
		int got;
		size_t bytes;
		cr_assert_eq(sscanf(line, "msg=\"read %d events (%zu bytes)", &got, &bytes), 2,
			     "unexpected line: %.120s", line);
		cr_assert(got == 1 || bytes <= UNSETTLED, "a read of %d events and %zu bytes, above %d"
			  " (log: %s)", got, bytes, UNSETTLED, p->log);
		reads++;
		events += got;
	}
	free(out);
	cr_assert_eq(events, BIG_EVENTS, "%ld events read in %ld reads (log: %s)", events, reads, p->log);
	cr_assert_geq(reads, BIG_EVENTS * BIG_BYTES / UNSETTLED, "%ld reads only (log: %s)", reads, p->log);
	cr_assert_eq(h_checkpoint_pos("products"), BIG_EVENTS);
	h_assert_docs_match_oracle("products");
	h_end();
}
