/*
 * Integration tests of the products projection: the real daemon between a
 * real PostgreSQL and a real search node, its documents compared with an
 * independent SQL fold of the events (tests/oracle/products.sql).
 *
 * Every test starts from an empty world (h_begin) and fails, rather than
 * skips, when a service is unreachable. Daemon logs: build/tests/logs/.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define ALIAS "products" /* the projection, its alias and its oracle */
#define INDEX "products-000001"

/* Each test calls h_begin() first; .fini kills what it left running. */
static void suite_fini(void)
{
	h_end();
}

TestSuite(products, .fini = suite_fini);

/* ---- helpers --------------------------------------------------------------- */

static void assert_once_ok(const char *const *args)
{
	int code = h_run_once(args, H_LONG);

	cr_assert_eq(code, 0, "run --once exited with %d", code);
}

static void assert_alias_names_index(void)
{
	cr_assert(h_alias_is(ALIAS, INDEX), "the alias products does not name exactly %s", INDEX);
}

/* The checkpoint, failing the test when there is none. */
static void checkpoint(uint64_t *txid, int64_t *pos)
{
	cr_assert(h_checkpoint(ALIAS, txid, pos), "no products generation in esbridge.generations");
}

struct cp_arg {
	uint64_t txid;
	int64_t pos;
};

static bool checkpoint_moved_past(void *arg)
{
	struct cp_arg *a = arg;
	uint64_t t;
	int64_t p;

	if (!h_checkpoint(ALIAS, &t, &p))
		return false;
	return t > a->txid || (t == a->txid && p > a->pos);
}

/* True when the search finds document `id` and its _source equals `want` (jsonb). */
static bool source_is(const char *id, const char *want)
{
	return h_source_is(ALIAS, id, want);
}

static bool searchable(const char *id)
{
	return h_searchable(ALIAS, id);
}

/* ---- a. a scripted history ------------------------------------------------- */

Test(products, scripted_history, .timeout = 120)
{
	static struct h_expectations products_x, orders_x;
	PGconn *a, *b;
	int64_t first;

	h_begin();

	/* one transaction with several events */
	h_sql(NULL, "BEGIN");
	first = h_event(NULL, "product-p1", "ProductCreated",
		"{\"product_id\": \"p1\", \"name\": \"Walnut desk lamp\", \"description\": \"Warm light\","
		" \"category\": \"Lighting\", \"price\": 49.90, \"tags\": [\"lamp\", \"walnut\"],"
		" \"created_at\": \"2026-11-01T09:00:00Z\"}");
	cr_assert_eq(first, 1);
	/* quotes, backslashes, newlines, control characters, unicode */
	h_event(NULL, "product-p2", "ProductCreated",
		"{\"product_id\": \"p2\", \"name\": \"He said \\\"hi\\\" \\\\o/ C:\\\\path\\nsecond line\\t\\u0001\","
		" \"price\": 10, \"tags\": [\"ünïcödé\", \"日本語\", \"🎉 party\", \"MiXeD Case\"],"
		" \"category\": \"Ça \\\"va\\\"\", \"created_at\": \"2026-11-01T10:00:00Z\"}");
	h_event(NULL, "product-p1", "ProductPriceChanged",
		"{\"product_id\": \"p1\", \"new_price\": 44.9, \"changed_at\": \"2026-11-10T12:00:00Z\"}");
	h_sql(NULL, "COMMIT");

	/* a field holding a bulk action line: must stay data */
	h_event(NULL, "product-p3", "ProductCreated",
		"{\"product_id\": \"p3\", \"name\": \"Injected\", \"price\": 1.5,"
		" \"description\": \"\\n{\\\"delete\\\":{\\\"_id\\\":\\\"p1\\\"}}\\n\","
		" \"category\": \"{\\\"index\\\":{\\\"_id\\\":\\\"evil\\\"}}\\n{}\","
		" \"tags\": [\"\\n{\\\"delete\\\":{\\\"_id\\\":\\\"p2\\\"}}\\n\"]}");
	h_event(NULL, "product-p2", "ProductUpdated",
		"{\"product_id\": \"p2\", \"name\": \"Renamed \\\"chair\\\"\", \"tags\": [\"a\", \"B\"],"
		" \"updated_at\": \"2026-11-12T08:30:00Z\"}");
	/* delete and re-create: the new document only has the new fields */
	h_event(NULL, "product-p3", "ProductDeleted", "{\"product_id\": \"p3\"}");
	h_event(NULL, "product-p3", "ProductCreated",
		"{\"product_id\": \"p3\", \"name\": \"Re-created\", \"price\": 3,"
		" \"created_at\": \"2026-11-20T10:00:00Z\"}");
	/* deleted for good */
	h_event(NULL, "product-p4", "ProductCreated",
		"{\"product_id\": \"p4\", \"name\": \"Gone\", \"price\": 189.00, \"tags\": [\"x\"]}");
	h_event(NULL, "product-p4", "ProductDeleted", "{\"product_id\": \"p4\"}");
	/* delete of a product that never existed */
	h_event(NULL, "product-p404", "ProductDeleted", "{\"product_id\": \"p404\"}");
	/* updated before created: the creation replaces the partial document */
	h_event(NULL, "product-p5", "ProductUpdated",
		"{\"product_id\": \"p5\", \"name\": \"Early\", \"updated_at\": \"2026-11-02T00:00:00Z\"}");
	h_event(NULL, "product-p5", "ProductCreated",
		"{\"product_id\": \"p5\", \"name\": \"Paper lamp\", \"price\": 29.00,"
		" \"description\": \"Round\", \"created_at\": \"2026-11-03T00:00:00Z\"}");
	h_event(NULL, "product-p5", "ProductPriceChanged",
		"{\"product_id\": \"p5\", \"new_price\": 19.90, \"changed_at\": \"2026-11-04T00:00:00Z\"}");
	/* never created: a partial document from the upserts */
	h_event(NULL, "product-p6", "ProductUpdated",
		"{\"product_id\": \"p6\", \"category\": \"Orphans\", \"tags\": []}");
	h_event(NULL, "product-p6", "ProductPriceChanged", "{\"product_id\": \"p6\", \"new_price\": 7}");
	/* deleted, then updated: the upsert makes a partial document again */
	h_event(NULL, "product-p7", "ProductCreated",
		"{\"product_id\": \"p7\", \"name\": \"Seven\", \"price\": 7.77, \"description\": \"old\"}");
	h_event(NULL, "product-p7", "ProductDeleted", "{\"product_id\": \"p7\"}");
	h_event(NULL, "product-p7", "ProductUpdated",
		"{\"product_id\": \"p7\", \"description\": \"after the delete\"}");
	/* an integer id, then the same id as a string; nulls kept as nulls */
	h_event(NULL, "product-42", "ProductCreated",
		"{\"product_id\": 42, \"name\": \"Answer\", \"price\": 1e2, \"description\": \"d\","
		" \"tags\": [\"q\"]}");
	h_event(NULL, "product-42", "ProductUpdated",
		"{\"product_id\": \"42\", \"description\": null, \"tags\": null}");
	h_event(NULL, "product-p8", "ProductCreated",
		"{\"product_id\": \"p8\", \"name\": \"Nulls\", \"price\": 0, \"description\": null,"
		" \"category\": null, \"tags\": null, \"created_at\": null}");
	h_event(NULL, "product-p8", "ProductUpdated",
		"{\"product_id\": \"p8\", \"description\": \"now set\", \"ignored_field\": 1}");
	/* an update carrying no field: a document holding only its id */
	h_event(NULL, "product-p11", "ProductUpdated", "{\"product_id\": \"p11\"}");
	/* fields the projection does not know are ignored */
	h_event(NULL, "product-p9", "ProductCreated",
		"{\"product_id\": \"p9\", \"name\": \"Extra\", \"price\": 19.9, \"colour\": \"red\","
		" \"nested\": {\"a\": 1}}");
	/*
	 * Events of other types are not for this projection; in a stream a
	 * projection owns, a type it does not know is a dead letter naming no
	 * document (so it holds nothing back): two for products, one for orders.
	 */
	h_expect(&orders_x, h_event(NULL, "order-1", "OrderPlaced", "{\"order_id\": \"o1\", \"product_id\": \"p1\"}"),
	         H_PENDING, NULL, "unknown event type 'OrderPlaced'");
	h_expect(&products_x, h_event(NULL, "product-p1", "ProductArchived", "{\"product_id\": \"p1\"}"), H_PENDING,
	         NULL, "unknown event type 'ProductArchived'");
	h_event(NULL, "product-p12", "ProductCreated", "{\"product_id\": \"p12\", \"name\": \"Twelve\", \"price\": 12}");
	h_expect(&products_x, h_event(NULL, "product-p12", "ProductArchived", "{\"product_id\": \"p12\"}"),
	         H_PENDING, NULL, "unknown event type 'ProductArchived'");
	h_event(NULL, "product-p12", "ProductPriceChanged", "{\"product_id\": \"p12\", \"new_price\": 12.5}");

	/*
	 * Commit order differs from position order: transaction A takes its xid
	 * first, B appends p10's creation (lower position, higher xid) and
	 * commits, then A appends an update of p10 (higher position, lower xid).
	 * In (transaction_id, global_position) order the update comes first and
	 * the creation replaces it.
	 */
	a = h_connect();
	b = h_connect();
	h_sql(a, "BEGIN");
	PQclear(h_exec(a, "SELECT pg_current_xact_id()", 0, NULL));
	h_event(b, "product-p10", "ProductCreated",
		"{\"product_id\": \"p10\", \"name\": \"Ten\", \"price\": 10.00}");
	h_event(a, "product-p10", "ProductUpdated",
		"{\"product_id\": \"p10\", \"name\": \"Ten, updated in an older transaction\","
		" \"updated_at\": \"2026-11-25T00:00:00Z\"}");
	h_sql(a, "COMMIT");
	h_disconnect(a);
	h_disconnect(b);

	assert_once_ok(NULL);
	assert_alias_names_index();
	h_assert_docs_match_oracle(ALIAS);

	/* a few hand-checked facts, in case the oracle and the bridge agree on a mistake */
	cr_assert(source_is("p1",
		"{\"product_id\": \"p1\", \"name\": \"Walnut desk lamp\", \"description\": \"Warm light\","
		" \"category\": \"Lighting\", \"price\": 44.90, \"tags\": [\"lamp\", \"walnut\"],"
		" \"created_at\": \"2026-11-01T09:00:00Z\", \"price_updated_at\": \"2026-11-10T12:00:00Z\"}"));
	cr_assert(source_is("p3",
		"{\"product_id\": \"p3\", \"name\": \"Re-created\", \"price\": 3,"
		" \"created_at\": \"2026-11-20T10:00:00Z\"}"));
	cr_assert(!searchable("p4"));
	cr_assert(!searchable("p404"));
	cr_assert(!searchable("evil"));
	cr_assert(source_is("p6",
		"{\"product_id\": \"p6\", \"category\": \"Orphans\", \"tags\": [], \"price\": 7}"));
	cr_assert(source_is("p7", "{\"product_id\": \"p7\", \"description\": \"after the delete\"}"));
	cr_assert(source_is("42",
		"{\"product_id\": \"42\", \"name\": \"Answer\", \"price\": 100, \"description\": null,"
		" \"tags\": null}"));
	cr_assert(source_is("p10", "{\"product_id\": \"p10\", \"name\": \"Ten\", \"price\": 10}"));
	cr_assert(source_is("p11", "{\"product_id\": \"p11\"}"));
	cr_assert(source_is("p12", "{\"product_id\": \"p12\", \"name\": \"Twelve\", \"price\": 12.5}"));
	h_assert_letters("products", &products_x);
	h_assert_letters("orders", &orders_x);
	cr_assert_eq(h_dead_letter_count(), 3);
	h_expectations_free(&products_x);
	h_expectations_free(&orders_x);
}

/* ---- b. a second run --once sends nothing -------------------------------- */

Test(products, second_run_once_is_a_noop, .timeout = 120)
{
	uint64_t t1, t2;
	int64_t p1, p2;
	long long ops1, ops2;

	h_begin();
	for (int i = 0; i < 50; i++) {
		char stream[32], data[256];
		snprintf(stream, sizeof(stream), "product-n%d", i % 20);
		if (i < 20)
			snprintf(data, sizeof(data),
				 "{\"product_id\": \"n%d\", \"name\": \"Noop %d\", \"price\": %d.25}", i, i, i);
		else if (i % 7 == 0)
			snprintf(data, sizeof(data), "{\"product_id\": \"n%d\"}", i % 20);
		else
			snprintf(data, sizeof(data), "{\"product_id\": \"n%d\", \"new_price\": %d}", i % 20, i);
		h_event(NULL, stream, i < 20 ? "ProductCreated" : i % 7 == 0 ? "ProductDeleted"
								: "ProductPriceChanged", data);
	}
	assert_once_ok(NULL);
	assert_alias_names_index();
	checkpoint(&t1, &p1);
	cr_assert_eq(p1, 50, "the checkpoint is at position %" PRId64 ", not 50", p1);
	ops1 = h_index_ops(INDEX);
	cr_assert_gt(ops1, 0);

	assert_once_ok(NULL);
	assert_alias_names_index();
	checkpoint(&t2, &p2);
	ops2 = h_index_ops(INDEX);
	cr_assert(t1 == t2 && p1 == p2, "the checkpoint moved: %" PRIu64 "/%" PRId64 " -> %" PRIu64
		  "/%" PRId64, t1, p1, t2, p2);
	cr_assert_eq(ops2, ops1, "the second run wrote to the index: %lld index+delete ops before, %lld after",
		     ops1, ops2);
	h_assert_docs_match_oracle(ALIAS);
}

/* ---- c. crash safety ----------------------------------------------------- */


#define GEN_TOTAL 40000
#define GEN_FIRST 25000
#define GEN_CHUNK 5000

struct progress_arg {
	struct cp_arg prev;
	int64_t end;
};

/* The checkpoint moved past `prev`, or is at the last event (nothing left). */
static bool moved_or_done(void *arg)
{
	struct progress_arg *a = arg;
	uint64_t t;
	int64_t p;

	if (checkpoint_moved_past(&a->prev))
		return true;
	return h_checkpoint(ALIAS, &t, &p) && p == a->end;
}

Test(products, crash_safety, .timeout = 150)
{
	static const char *const args[] = {
		"run", "--batch-size", "500", "--bulk-actions", "200", "--poll-interval", "0.2", NULL,
	};
	/* how long to let it run once the checkpoint has moved; SIGKILL or SIGTERM */
	static const struct {
		double delay;
		bool graceful;
	} cycles[] = {
		{ 0.0, false }, { 0.1, false }, { 0.0, true }, { 0.03, false }, { 0.2, false },
	};
	struct progress_arg prog = { { 0, 0 }, 0 };
	int inserted = 0, kills = 0, mid_way = 0;

	h_begin();
	for (; inserted < GEN_FIRST; inserted += GEN_CHUNK)
		h_insert_generated_products(inserted + 1, inserted + GEN_CHUNK);

	/* a kill while it sets up: state rows, index creation, first reads */
	{
		struct h_proc *p = h_spawn(0, args);
		h_sleep(0.05);
		h_kill(p);
	}

	for (size_t c = 0; c < sizeof(cycles) / sizeof(cycles[0]); c++) {
		struct h_proc *p = h_spawn(0, args);
		uint64_t t;
		int64_t pos;

		prog.end = inserted;
		cr_assert(h_eventually(moved_or_done, &prog, H_LONG),
			  "cycle %zu: the checkpoint did not move (log: %s)", c, p->log);
		h_sleep(cycles[c].delay);
		cr_assert(p->running, "cycle %zu: the daemon exited early (log: %s)", c, p->log);
		if (cycles[c].graceful) {
			/* drains, exits 0, keeps its place */
			h_stop(p, 30);
		} else {
			h_kill(p);
			kills++;
		}
		checkpoint(&t, &pos);
		cr_assert(t > prog.prev.txid || (t == prog.prev.txid && pos >= prog.prev.pos),
			  "the checkpoint went back: %" PRIu64 "/%" PRId64 " -> %" PRIu64 "/%" PRId64,
			  prog.prev.txid, prog.prev.pos, t, pos);
		if (!cycles[c].graceful && pos < inserted)
			mid_way++;
		cr_log_info("cycle %zu: %s at checkpoint %" PRIu64 "/%" PRId64 " of %d events", c,
			    cycles[c].graceful ? "SIGTERM" : "SIGKILL", t, pos, inserted);
		prog.prev.txid = t;
		prog.prev.pos = pos;
		/* more events arrive while the bridge is down */
		if (inserted < GEN_TOTAL) {
			h_insert_generated_products(inserted + 1, inserted + GEN_CHUNK);
			inserted += GEN_CHUNK;
		}
	}
	cr_assert_eq(inserted, GEN_TOTAL);
	cr_assert_geq(mid_way, 3, "only %d of %d kills happened before the bridge caught up", mid_way,
		      kills);

	assert_once_ok((const char *const[]){ "--batch-size", "500", "--bulk-actions", "200", NULL });
	assert_alias_names_index();
	h_assert_docs_match_oracle(ALIAS);
	{
		uint64_t t;
		int64_t pos;
		checkpoint(&t, &pos);
		cr_assert_eq(pos, GEN_TOTAL, "final checkpoint at %" PRId64, pos);
	}
}

/* ---- d. live follow ------------------------------------------------------ */

Test(products, live_follow, .timeout = 120)
{
	static const char *const args[] = { "run", "--poll-interval", "0.2", NULL };
	static const char data[] =
		"{\"product_id\": \"live-1\", \"name\": \"Live lamp\", \"description\": \"arrives while following\","
		" \"category\": \"Lighting\", \"price\": 12.34, \"tags\": [\"live\", \"Lamp\"],"
		" \"created_at\": \"2026-11-26T12:00:00Z\"}";
	struct h_proc *p;
	struct cp_arg want;
	uint64_t t;
	int64_t pos;
	double t0;

	h_begin();
	h_event(NULL, "product-before", "ProductCreated",
		"{\"product_id\": \"before\", \"name\": \"Before\", \"price\": 1}");
	p = h_spawn(0, args);
	H_EVENTUALLY(h_alias_is(ALIAS, INDEX), H_LONG, "the alias never named %s (log: %s)", INDEX, p->log);
	cr_assert(searchable("before"));

	pos = h_event(NULL, "product-live-1", "ProductCreated", data);
	t0 = h_now();
	H_EVENTUALLY(source_is("live-1", data), H_LONG, "live-1 never became searchable (log: %s)", p->log);
	cr_log_info("live event searchable after %.2fs", h_now() - t0);
	want.txid = h_event_txid(pos);
	want.pos = pos;
	cr_assert(h_wait_checkpoint(ALIAS, want.txid, want.pos, H_LONG),
		  "the checkpoint never reached the live event %" PRIu64 "/%" PRId64, want.txid, want.pos);

	h_stop(p, 20);
	checkpoint(&t, &pos);
	cr_assert(t == want.txid && pos == want.pos,
		  "checkpoint %" PRIu64 "/%" PRId64 ", want the live event %" PRIu64 "/%" PRId64, t, pos,
		  want.txid, want.pos);
	h_assert_docs_match_oracle(ALIAS);
}

/* ---- e. out-of-order commits ----------------------------------------------- */

Test(products, out_of_order_commits, .timeout = 120)
{
	static const char *const args[] = { "run", "--poll-interval", "0.2", NULL };
	struct h_proc *p;
	PGconn *c1, *c2;
	int64_t pos_a, pos_b;
	uint64_t xid_a, xid_b, t;
	int64_t cp;

	h_begin();
	p = h_spawn(0, args);
	H_EVENTUALLY(h_alias_is(ALIAS, INDEX), H_LONG, "the alias never named %s (log: %s)", INDEX, p->log);

	c1 = h_connect();
	c2 = h_connect();
	h_sql(c1, "BEGIN");
	pos_a = h_event(c1, "product-pa", "ProductCreated",
			"{\"product_id\": \"pa\", \"name\": \"From A\", \"price\": 1.10}");
	{
		char *x = h_query_text(c1, "SELECT pg_current_xact_id()::text", 0, NULL);
		xid_a = strtoull(x, NULL, 10);
		free(x);
	}
	pos_b = h_event(c2, "product-pb", "ProductCreated",
			"{\"product_id\": \"pb\", \"name\": \"From B\", \"price\": 2.20}");
	cr_assert_lt(pos_a, pos_b);
	xid_b = h_event_txid(pos_b);
	cr_assert_gt(xid_b, xid_a);

	/* B is committed, A is not: the bridge must not pass A's event */
	h_sleep(2.0);
	if (h_checkpoint(ALIAS, &t, &cp))
		cr_assert_lt(t, xid_a, "the checkpoint %" PRIu64 "/%" PRId64 " passed the open transaction %"
			     PRIu64, t, cp, xid_a);
	cr_log_info("while A was open: pb %s", searchable("pb") ? "visible" : "not visible");
	cr_assert(p->running, "the daemon exited (log: %s)", p->log);

	h_sql(c1, "COMMIT");
	H_EVENTUALLY(searchable("pa") && searchable("pb"), H_LONG,
		     "pa and pb never both became searchable (log: %s)", p->log);
	cr_assert(h_wait_checkpoint(ALIAS, xid_b, pos_b, H_LONG), "the checkpoint never reached pb");
	h_disconnect(c1);
	h_disconnect(c2);

	h_stop(p, 20);
	h_assert_docs_match_oracle(ALIAS);
}

/* ---- f. dead letters ------------------------------------------------------ */

Test(products, dead_letter_missing_name, .timeout = 120)
{
	int64_t bad;
	char pos[32];
	const char *params[1] = { pos };
	char *reason;

	h_begin();
	h_event(NULL, "product-d1", "ProductCreated",
		"{\"product_id\": \"d1\", \"name\": \"One\", \"price\": 1}");
	bad = h_event(NULL, "product-d2", "ProductCreated",
		      "{\"product_id\": \"d2\", \"price\": 2, \"description\": \"no name\"}");
	h_event(NULL, "product-d3", "ProductCreated",
		"{\"product_id\": \"d3\", \"name\": \"Three\", \"price\": 3}");
	h_event(NULL, "product-d1", "ProductUpdated",
		"{\"product_id\": \"d1\", \"name\": \"One, renamed\"}");

	assert_once_ok(NULL);
	assert_alias_names_index();
	cr_assert_eq(h_dead_letter_count(), 1, "%lld dead letters, want 1", h_dead_letter_count());
	snprintf(pos, sizeof(pos), "%" PRId64, bad);
	cr_assert_eq(h_query_ll(NULL,
		"SELECT count(*) FROM esbridge.dead_letters WHERE global_position = $1::bigint"
		" AND projection = 'products'", 1, params, 0), 1,
		"no dead letter at position %s", pos);
	reason = h_query_text(NULL, "SELECT reason FROM esbridge.dead_letters WHERE global_position = $1::bigint",
			      1, params);
	cr_assert(reason && strstr(reason, "name"), "the reason does not mention 'name': %s",
		  reason ? reason : "(null)");
	free(reason);
	/* it names d2, which it holds back; d1 and d3 flow */
	reason = h_query_text(NULL, "SELECT status || ' ' || coalesce(doc_id, '(none)') FROM esbridge.dead_letters"
			      " WHERE global_position = $1::bigint", 1, params);
	cr_assert(reason && !strcmp(reason, "pending d2"), "the letter is '%s', want 'pending d2'",
		  reason ? reason : "(null)");
	free(reason);
	cr_assert(!searchable("d2"));
	h_assert_docs_match_oracle(ALIAS);
	{
		uint64_t t;
		int64_t cp;
		checkpoint(&t, &cp);
		cr_assert_eq(cp, 4, "the pipeline did not move past the dead letter: checkpoint %" PRId64, cp);
	}
}

/*
 * Every kind of invalid payload. Each rejection that names a product is the
 * first dead letter of its own product, between a valid creation (which
 * stays) and a valid change (held back behind it); letters that name no
 * product (its id cannot be read, an unknown type) hold nothing back.
 */
Test(products, dead_letters_of_every_kind, .timeout = 120)
{
	/* product, the event type and the fields of its invalid event, a part of the reason */
	static const struct {
		const char *id, *type, *fields, *reason;
	} kinds[] = {
		{ "kname-null", "ProductCreated", "\"name\": null, \"price\": 2", "'name'" },
		{ "kname-num", "ProductCreated", "\"name\": 5, \"price\": 2", "'name'" },
		{ "kname-none", "ProductCreated", "\"price\": 2", "'name'" },
		{ "kprice-null", "ProductCreated", "\"name\": \"K\", \"price\": null", "'price'" },
		{ "kprice-none", "ProductCreated", "\"name\": \"K\"", "'price'" },
		{ "kprice-cents", "ProductCreated", "\"name\": \"K\", \"price\": 1.234", "'price'" },
		{ "kprice-big", "ProductCreated", "\"name\": \"K\", \"price\": 10000000000000", "'price'" },
		{ "kprice-small", "ProductCreated", "\"name\": \"K\", \"price\": -10000000000000", "'price'" },
		{ "kpc-cents", "ProductPriceChanged", "\"new_price\": 0.001", "'new_price'" },
		{ "ktags-mixed", "ProductCreated", "\"name\": \"K\", \"price\": 2, \"tags\": [\"a\", 1]", "'tags'" },
		{ "ktags-str", "ProductCreated", "\"name\": \"K\", \"price\": 2, \"tags\": \"a\"", "'tags'" },
		{ "kcreated-at", "ProductCreated", "\"name\": \"K\", \"price\": 2, \"created_at\": 5", "'created_at'" },
		{ "kupd-name", "ProductUpdated", "\"name\": null", "'name'" },
		{ "kupd-desc", "ProductUpdated", "\"description\": 3", "'description'" },
		{ "kupd-tags", "ProductUpdated", "\"tags\": [null]", "'tags'" },
		{ "kpc-none", "ProductPriceChanged", "\"changed_at\": \"2026-01-01T00:00:00Z\"", "'new_price'" },
		{ "kpc-str", "ProductPriceChanged", "\"new_price\": \"3\"", "'new_price'" },
		{ "kpc-at", "ProductPriceChanged", "\"new_price\": 3, \"changed_at\": false", "'changed_at'" },
	};
	static struct h_expectations x;
	char stream[64], data[1024], want[1024];
	char *got, *big;
	size_t big_len = 1100000;
	uint64_t t;
	int64_t cp, last;

	h_begin();
	/* an invalid re-creation holds the document as it was; what follows waits, even if invalid */
	h_add_event(&x, "product-k1", "ProductCreated",
		    "{\"product_id\": \"k1\", \"name\": \"K1\", \"price\": 1}", H_APPLIED, NULL, NULL);
	h_add_event(&x, "product-k1", "ProductUpdated", "{\"product_id\": \"k1\", \"description\": \"valid\"}",
		    H_APPLIED, NULL, NULL);
	h_add_event(&x, "product-k1", "ProductCreated",
		    "{\"product_id\": \"k1\", \"name\": \"K1 bis\", \"price\": \"2\"}", H_PENDING, "k1",
		    "'price'");
	h_add_event(&x, "product-k1", "ProductUpdated",
		    "{\"product_id\": \"k1\", \"description\": \"after the letter\"}", H_HELD, "k1", NULL);
	h_add_event(&x, "product-k1", "ProductCreated",
		    "{\"product_id\": \"k1\", \"name\": null, \"price\": 2}", H_HELD, "k1", NULL);
	h_add_event(&x, "product-k1", "ProductDeleted", "{\"product_id\": \"k1\"}", H_HELD, "k1", NULL);

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		snprintf(stream, sizeof(stream), "product-%s", kinds[i].id);
		snprintf(data, sizeof(data), "{\"product_id\": \"%s\", \"name\": \"Valid %s\", \"price\": 1.50}",
			 kinds[i].id, kinds[i].id);
		h_add_event(&x, stream, "ProductCreated", data, H_APPLIED, NULL, NULL);
		snprintf(data, sizeof(data), "{\"product_id\": \"%s\", %s}", kinds[i].id, kinds[i].fields);
		h_add_event(&x, stream, kinds[i].type, data, H_PENDING, kinds[i].id, kinds[i].reason);
		snprintf(data, sizeof(data), "{\"product_id\": \"%s\", \"new_price\": 9}", kinds[i].id);
		h_add_event(&x, stream, "ProductPriceChanged", data, H_HELD, kinds[i].id, NULL);
	}

	/* ids that cannot be read: letters naming no product, holding nothing back */
	/* (a negative price is accepted) */
	h_add_event(&x, "product-k2", "ProductCreated",
		    "{\"product_id\": \"k2\", \"name\": \"K2\", \"price\": -0.5}", H_APPLIED, NULL, NULL);
	h_add_event(&x, "product-k2", "ProductCreated", "{\"name\": \"No id\", \"price\": 1}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-k2", "ProductCreated",
		    "{\"product_id\": \"\", \"name\": \"Empty id\", \"price\": 1}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-k2", "ProductCreated",
		    "{\"product_id\": 1.5, \"name\": \"Fraction id\", \"price\": 1}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-k2", "ProductCreated",
		    "{\"product_id\": [\"k2\"], \"name\": \"Array id\", \"price\": 1}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-k2", "ProductDeleted", "{\"id\": \"k2\"}", H_PENDING, NULL, "'product_id'");
	h_add_event(&x, "product-k2", "ProductDeleted", "[\"k2\"]", H_PENDING, NULL, "JSON object");
	/* a delete that would matter, were it valid */
	h_add_event(&x, "product-k2", "ProductDeleted", "{\"product_id\": null}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-k2", "ProductUpdated",
		    "{\"product_id\": \"k2\", \"description\": \"still flowing\"}", H_APPLIED, NULL, NULL);
	/* a type products does not know, in a stream it owns; elsewhere it is not read */
	h_add_event(&x, "product-k2", "ProductArchived", "{\"product_id\": \"k2\"}", H_PENDING, NULL,
		    "unknown event type 'ProductArchived'");
	h_add_event(&x, "catalog-k2", "ProductArchived", "{\"product_id\": \"k2\"}", H_APPLIED, NULL, NULL);
	h_add_event(&x, "product-k2", "ProductUpdated", "{\"product_id\": \"k2\", \"tags\": [\"after\"]}",
		    H_APPLIED, NULL, NULL);

	/* never created: held back from its first, invalid, event on */
	h_add_event(&x, "product-k3", "ProductUpdated", "{\"product_id\": \"k3\", \"tags\": [null]}", H_PENDING,
		    "k3", "'tags'");
	h_add_event(&x, "product-k3", "ProductPriceChanged", "{\"product_id\": \"k3\", \"new_price\": 5}",
		    H_HELD, "k3", NULL);

	/* data above max-event-bytes (1 MiB by default) */
	h_add_event(&x, "product-kbig", "ProductCreated",
		    "{\"product_id\": \"kbig\", \"name\": \"Big\", \"price\": 4}", H_APPLIED, NULL, NULL);
	{
		static const char head[] = "{\"product_id\": \"kbig\", \"description\": \"";
		big = malloc(sizeof(head) - 1 + big_len + 3);
		cr_assert_not_null(big);
		memcpy(big, head, sizeof(head) - 1);
		memset(big + sizeof(head) - 1, 'x', big_len);
		memcpy(big + sizeof(head) - 1 + big_len, "\"}", 3);
	}
	h_add_event(&x, "product-kbig", "ProductUpdated", big, H_PENDING, "kbig", "max-event-bytes");
	free(big);
	h_add_event(&x, "product-kbig", "ProductPriceChanged", "{\"product_id\": \"kbig\", \"new_price\": 5}",
		    H_HELD, "kbig", NULL);

	/* id lengths (bytes, at most 512) and integer ranges */
	{
		char x512[513], e514[515], ldata[700];
		memset(x512, 'x', 512);
		x512[512] = '\0';
		for (int i = 0; i < 257; i++)
			memcpy(e514 + 2 * i, "\xc3\xa9", 2); /* é */
		e514[514] = '\0';
		snprintf(ldata, sizeof(ldata), "{\"product_id\": \"%s\", \"name\": \"Long\", \"price\": 1}", x512);
		h_add_event(&x, "product-long", "ProductCreated", ldata, H_APPLIED, NULL, NULL);
		snprintf(ldata, sizeof(ldata), "{\"product_id\": \"%s\", \"name\": \"Longer\", \"price\": 1}", e514);
		h_add_event(&x, "product-longer", "ProductCreated", ldata, H_PENDING, NULL, "512 bytes");
	}
	h_add_event(&x, "product-max", "ProductCreated",
		    "{\"product_id\": 9223372036854775807, \"name\": \"Max\", \"price\": 1}", H_APPLIED, NULL,
		    NULL);
	h_add_event(&x, "product-over", "ProductCreated",
		    "{\"product_id\": 9223372036854775808, \"name\": \"Over\", \"price\": 1}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-min", "ProductCreated",
		    "{\"product_id\": -9223372036854775808, \"name\": \"Min\", \"price\": 1}", H_APPLIED, NULL,
		    NULL);
	h_add_event(&x, "product-under", "ProductCreated",
		    "{\"product_id\": -9223372036854775809, \"name\": \"Under\", \"price\": 1}", H_PENDING, NULL,
		    "'product_id'");
	h_add_event(&x, "product-neg", "ProductCreated",
		    "{\"product_id\": -5, \"name\": \"Negative\", \"price\": 1}", H_APPLIED, NULL, NULL);
	last = h_add_event(&x, "product-exp", "ProductCreated",
			   "{\"product_id\": 1e2, \"name\": \"Hundred\", \"price\": 1.500}", H_APPLIED, NULL,
			   NULL);

	assert_once_ok(NULL);
	assert_alias_names_index();
	h_assert_letters("products", &x);
	cr_assert_eq(h_dead_letter_count(), h_query_ll(NULL,
		"SELECT count(*) FROM esbridge.dead_letters WHERE projection = 'products'", 0, NULL, -1),
		"dead letters of another projection");
	h_assert_docs_match_oracle(ALIAS);

	/* by hand: what stays, what waits, what flows */
	cr_assert(source_is("k1", "{\"product_id\": \"k1\", \"name\": \"K1\", \"price\": 1, \"description\": \"valid\"}"));
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		snprintf(want, sizeof(want), "{\"product_id\": \"%s\", \"name\": \"Valid %s\", \"price\": 1.50}",
			 kinds[i].id, kinds[i].id);
		cr_assert(source_is(kinds[i].id, want), "%s was not left as created", kinds[i].id);
	}
	cr_assert(source_is("k2", "{\"product_id\": \"k2\", \"name\": \"K2\", \"price\": -0.5,"
				  " \"description\": \"still flowing\", \"tags\": [\"after\"]}"));
	cr_assert(!searchable("k3"));
	cr_assert(source_is("kbig", "{\"product_id\": \"kbig\", \"name\": \"Big\", \"price\": 4}"));
	cr_assert(source_is("-5", "{\"product_id\": -5, \"name\": \"Negative\", \"price\": 1}"));
	cr_assert(source_is("-9223372036854775808",
			    "{\"product_id\": -9223372036854775808, \"name\": \"Min\", \"price\": 1}"));
	cr_assert(source_is("100", "{\"product_id\": 100, \"name\": \"Hundred\", \"price\": 1.500}"));

	/* the letters did not stop the checkpoint */
	checkpoint(&t, &cp);
	cr_assert(t == h_event_txid(last) && cp == last, "checkpoint %" PRIu64 "/%" PRId64 ", want the last event %"
		  PRId64, t, cp, last);
	got = h_query_text(NULL, "SELECT count(*)::text FROM esbridge.dead_letters WHERE reason = '' OR reason IS NULL",
			   0, NULL);
	cr_assert_str_eq(got, "0", "a dead letter without a reason");
	free(got);
	h_expectations_free(&x);
}

/* ---- g. configuration errors ---------------------------------------------- */

Test(products, missing_es_url_is_a_usage_error, .timeout = 30)
{
	static const char *const args[] = { "run", "--once", NULL };
	struct h_proc *p;
	char *out, *nl;
	int lines = 0;

	h_begin();
	p = h_spawn(H_NO_ES_ENV, args);
	cr_assert(h_wait(p, 20), "no exit within 20s");
	cr_assert_eq(h_exit_code(p), 2, "exit status 0x%x, want exit code 2", (unsigned)p->status);
	out = h_proc_output(p);
	for (char *c = out; *c; c = nl + 1) {
		nl = strchr(c, '\n');
		lines++;
		if (!nl) {
			cr_assert_fail("the output does not end with a newline: %s", out);
			break;
		}
	}
	cr_assert_eq(lines, 1, "%d lines of output, want one:\n%s", lines, out);
	cr_assert_eq(strncmp(out, "esbridge: error:", 16), 0, "unexpected output: %s", out);
	cr_assert(strstr(out, "ESBRIDGE_ES"), "the message does not name ESBRIDGE_ES: %s", out);
	free(out);
	/* nothing was created */
	cr_assert(!h_alias_exists(ALIAS));
}
