/*
 * Integration tests of the daily_sales and customer_activity projections:
 * the real daemon between a real PostgreSQL and a real search node, the
 * documents behind the aliases daily_sales, customers and customer_orders
 * compared with independent SQL folds of the events (tests/oracle/), money
 * checked to the cent in the node's raw JSON text.
 *
 *   - a generated shop history (20,000 orders completed, 5,000 customers
 *     created and some never, reviews, tier changes, refunds, amounts in
 *     several time zones, a few bad events): every index equals its fold;
 *     the dead letters are exactly the bad events, 'pending', and the later
 *     events of the documents they hold back, 'held' (README "Dead
 *     letters"); replaying everything from zero changes nothing;
 *   - a crash loop (SIGKILL at least 10 times) during the catch-up while
 *     more events arrive: exact;
 *   - a rebuild of customer_activity through a running daemon while events
 *     keep arriving: both aliases move to the new generation together,
 *     esbridge.generations records both of its indices, the result is exact.
 *
 * Every test starts from an empty world (h_begin). Logs: build/tests/logs/.
 * The crash loop logs its seed; ESBRIDGE_TEST_SEED=N repeats a run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <libpq-fe.h>

#include "harness.h"

#define N_ORDERS 20000
#define N_CUSTOMERS 5000
#define CHUNK 1000         /* events per transaction of the generated history */
#define BAD_DATES 5        /* OrderCompleted of customer c1 with a completed_at that is no timestamp */
#define BAD_AMOUNTS 5      /* OrderCompleted of customer c2 with an amount below the cent */
#define BAD_CUSTOMERS 3    /* OrderCompleted with an empty customer_id */
#define BAD_CREATED (N_CUSTOMERS / 1000) /* customers 7, 1007, ...: created on February 30 */
#define BAD_CREATED_AT "2026-02-30T10:00:00Z"
#define STR_(x) #x
#define H_STR(x) STR_(x)

static void suite_fini(void)
{
	h_end();
}

TestSuite(activity, .fini = suite_fini);

/*
 * The history, deterministic from :seed, into the temp table gen_ev of the
 * test's connection; events go to `events` later, CHUNK per transaction, in
 * time order (h_load_chunks). Streams: customer-C (created, then tier
 * changes), order-O (completed, sometimes refunded days later), review-R.
 * Customers above :customers are never created: their orders and reviews
 * arrive for a customer the index does not hold. Order ids are strings,
 * every 20th an integer. Timestamps are in UTC (Z), +05:30 or -08:00, some
 * with microseconds; completions spread over 60 days, so many land near a
 * midnight that differs between the zone written and UTC.
 */
static const char gen_sql[] =
	"SELECT setseed(:seed);\n"
	"DROP TABLE IF EXISTS pg_temp.gen_ev, pg_temp.gen_cust, pg_temp.gen_ord;\n"
	"CREATE TEMP TABLE gen_cust AS\n"
	"  SELECT c, (random() * 86400 * 60)::int AS at_s, (random() * 3)::int AS tiers\n"
	"  FROM generate_series(1, :customers) c;\n"
	"CREATE TEMP TABLE gen_ord AS\n"
	"  SELECT o, 1 + (random() * (:customers * 1.1 - 1))::int AS c,\n"
	"         (random() * 86400 * 60)::int AS at_s,\n"
	"         round((random() * 100000)::int / 100.0, 2) AS total,\n"
	"         1 + (random() * 8)::int AS items,\n"
	"         (random() * 10)::int AS zone, random() < 0.3 AS frac,\n"
	"         random() < 0.1 AS refunded, random() AS refund_part\n"
	"  FROM generate_series(1, :orders) o;\n"
	"CREATE TEMP TABLE gen_ev (at_s int, stream text, seq int, type text, data jsonb);\n"
	/* a timestamp `s` seconds after 2026-01-01 in zone z (0-7: Z, 8: +05:30, 9: -08:00) */
	"INSERT INTO gen_ev\n"
	"  SELECT at_s, 'customer-' || c, 0, 'CustomerCreated',\n"
	"         jsonb_build_object('customer_id', 'c' || c,\n"
	"           'email', CASE WHEN c % 100 = 0 THEN NULL ELSE 'c' || c || '@example.com' END,\n"
	"           'name', 'Customer ' || c,\n"
	"           'created_at', to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC',\n"
	"                                 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"  FROM gen_cust;\n"
	"INSERT INTO gen_ev\n"
	"  SELECT at_s + k * 86400 * 3, 'customer-' || c, k, 'CustomerTierChanged',\n"
	"         jsonb_build_object('customer_id', 'c' || c,\n"
	"           'new_tier', (ARRAY['silver', 'gold', 'platinum'])[1 + (c + k) % 3],\n"
	"           'changed_at', to_char(to_timestamp(1767225600 + at_s + k * 86400 * 3) AT TIME ZONE 'UTC',\n"
	"                                 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"  FROM gen_cust, generate_series(1, tiers) k\n"
	"  WHERE c % 3 = 0;\n"
	"INSERT INTO gen_ev\n"
	"  SELECT at_s, 'order-' || o, 0, 'OrderCompleted',\n"
	"         jsonb_build_object('order_id', CASE WHEN o % 20 = 0 THEN to_jsonb(o) ELSE to_jsonb('o' || o) END,\n"
	"           'customer_id', 'c' || c, 'total_amount', total, 'item_count', items,\n"
	"           'completed_at', ts)\n"
	"  FROM (SELECT g.*,\n"
	"          to_char(to_timestamp(1767225600 + at_s) AT TIME ZONE 'UTC'\n"
	"                  + CASE zone WHEN 8 THEN interval '5 hours 30 minutes'\n"
	"                              WHEN 9 THEN interval '-8 hours' ELSE interval '0' END,\n"
	"                  'YYYY-MM-DD\"T\"HH24:MI:SS')\n"
	"          || CASE WHEN frac THEN '.' || lpad(((o * 7919) % 1000000)::text, 6, '0') ELSE '' END\n"
	"          || CASE zone WHEN 8 THEN '+05:30' WHEN 9 THEN '-08:00' ELSE 'Z' END AS ts\n"
	"        FROM gen_ord g) x;\n"
	"INSERT INTO gen_ev\n"
	"  SELECT e.at_s + 3600 + (o.refund_part * 86400 * 5)::int, e.stream, 1, 'OrderRefunded',\n"
	"         jsonb_build_object('order_id', e.data -> 'order_id',\n"
	"           'refund_amount', round(o.total * o.refund_part::numeric, 2),\n"
	"           'original_completed_at', e.data -> 'completed_at',\n"
	"           'refunded_at', to_char(to_timestamp(1767225600 + e.at_s + 3600) AT TIME ZONE 'UTC',\n"
	"                                  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"  FROM gen_ev e JOIN gen_ord o ON e.stream = 'order-' || o.o\n"
	"  WHERE e.type = 'OrderCompleted' AND o.refunded;\n";

/* The rest of it: reviews, bad events, the order of appends. */
static const char gen_sql2[] =
	"INSERT INTO gen_ev\n"
	"  SELECT (random() * 86400 * 62)::int, 'review-' || r, 0, 'ReviewSubmitted',\n"
	"         jsonb_build_object('customer_id', 'c' || (1 + (random() * (:customers * 1.1 - 1))::int),\n"
	"           'product_id', 'p' || (r % 700), 'rating', 1 + (r % 5),\n"
	"           'submitted_at', to_char(to_timestamp(1767225600 + r * 600) AT TIME ZONE 'UTC',\n"
	"                                   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"  FROM generate_series(1, :orders / 2) r;\n"
	/*
	 * bad events, spread in time: dead letters, the rest goes on. A
	 * completion dated 'yesterday': daily_sales cannot read its day (a
	 * letter naming nothing), customers (c1) and customer_orders refuse the
	 * date, c1 is held back from the first one on.
	 */
	"INSERT INTO gen_ev\n"
	"  SELECT i * 86400 * 10, 'order-bad-date-' || i, 0, 'OrderCompleted',\n"
	"         jsonb_build_object('order_id', 'bad-date-' || i, 'customer_id', 'c1', 'total_amount', 1.10,\n"
	"           'item_count', 1, 'completed_at', 'yesterday')\n"
	"  FROM generate_series(1, " H_STR(BAD_DATES) ") i;\n"
	/*
	 * an amount below the cent at noon (UTC) of its own day: daily_sales
	 * holds that day back (its later completions and refunds), customers
	 * c2 from the first one on
	 */
	"INSERT INTO gen_ev\n"
	"  SELECT i * 86400 * 10 + 43200, 'order-bad-amount-' || i, 0, 'OrderCompleted',\n"
	"         jsonb_build_object('order_id', 'bad-amount-' || i, 'customer_id', 'c2',\n"
	"           'total_amount', 12.345, 'item_count', 1,\n"
	"           'completed_at', to_char(to_timestamp(1767225600 + i * 86400 * 10 + 43200) AT TIME ZONE 'UTC',\n"
	"                                   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"  FROM generate_series(1, " H_STR(BAD_AMOUNTS) ") i;\n"
	/*
	 * no customer: daily_sales counts it, customers cannot name a document
	 * (a letter that holds nothing back), customer_orders refuses it
	 */
	"INSERT INTO gen_ev\n"
	"  SELECT i * 86400 * 10 + 100, 'order-bad-cust-' || i, 0, 'OrderCompleted',\n"
	"         jsonb_build_object('order_id', 'bad-cust-' || i, 'customer_id', '',\n"
	"           'total_amount', 3.00, 'item_count', 2,\n"
	"           'completed_at', to_char(to_timestamp(1767225600 + i * 86400 * 10 + 100) AT TIME ZONE 'UTC',\n"
	"                                   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))\n"
	"  FROM generate_series(1, " H_STR(BAD_CUSTOMERS) ") i;\n"
	/*
	 * a creation on a day that does not exist (the date mapping refuses it):
	 * the customer's orders and reviews before it count, the rest is held
	 */
	"UPDATE gen_ev SET data = jsonb_set(data, '{created_at}', to_jsonb('" BAD_CREATED_AT "'::text))\n"
	"  WHERE type = 'CustomerCreated' AND substr(stream, 10)::int % 1000 = 7;\n"
	"ALTER TABLE gen_ev ADD COLUMN n bigint, ADD COLUMN version int;\n"
	"UPDATE gen_ev g SET n = x.n, version = x.v\n"
	"  FROM (SELECT ctid, row_number() OVER (ORDER BY at_s, stream, seq) AS n,\n"
	"               row_number() OVER (PARTITION BY stream ORDER BY at_s, seq) AS v FROM gen_ev) x\n"
	"  WHERE g.ctid = x.ctid;\n"
	"CREATE INDEX ON gen_ev (n);\n";

/* Generates the history into gen_ev; returns how many chunks it has. */
static int generate(const char *seed)
{
	char s[64], o[32], c[32];
	const char *const vars[] = { s, o, c, NULL };
	long long n;

	snprintf(s, sizeof(s), "seed=%s", seed);
	snprintf(o, sizeof(o), "orders=%d", N_ORDERS);
	snprintf(c, sizeof(c), "customers=%d", N_CUSTOMERS);
	h_sql_vars(NULL, gen_sql, vars);
	h_sql_vars(NULL, gen_sql2, vars);
	n = h_query_ll(NULL, "SELECT count(*) FROM gen_ev", 0, NULL, 0);
	cr_log_info("generated %lld events", n);
	cr_assert_gt(n, N_ORDERS + N_CUSTOMERS + N_ORDERS / 2);
	return (int)((n + CHUNK - 1) / CHUNK);
}

/* Appends chunks [from, to) of gen_ev to events, one transaction each. */
static void load_chunks(int from, int to)
{
	for (int k = from; k < to; k++) {
		char lo[24], hi[24];
		const char *params[2] = { lo, hi };
		snprintf(lo, sizeof(lo), "%d", k * CHUNK + 1);
		snprintf(hi, sizeof(hi), "%d", (k + 1) * CHUNK);
		PQclear(h_exec(NULL,
			"INSERT INTO public.events (stream_id, event_type, data, version, created_at)"
			" SELECT stream, type, data, version, to_timestamp(1767225600 + at_s) FROM gen_ev"
			" WHERE n BETWEEN $1::bigint AND $2::bigint ORDER BY n",
			2, params));
	}
}

/* The last event of `types` (SQL text[]) in commit order. */
static void last_event_of(const char *types, uint64_t *txid, int64_t *pos)
{
	const char *params[1] = { types };
	PGresult *res = h_exec(NULL,
		"SELECT e.transaction_id::text, e.global_position FROM public.events e"
		" WHERE e.event_type = ANY ($1::text[])"
		" ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1", 1, params);

	cr_assert_eq(PQntuples(res), 1, "no events");
	*txid = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	*pos = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
}

#define DAILY_TYPES "{OrderCompleted,OrderRefunded}"
#define ACTIVITY_TYPES "{CustomerCreated,OrderCompleted,ReviewSubmitted,CustomerTierChanged}"

static void wait_caught_up(const char *proj, const char *types, const struct h_proc *d)
{
	uint64_t txid;
	int64_t pos;

	last_event_of(types, &txid, &pos);
	cr_assert(h_wait_checkpoint(proj, txid, pos, 120), "%s never caught up with %" PRIu64 "/%" PRId64
		  " (log: %s)", proj, txid, pos, d ? d->log : "-");
}

/* After a load into es_docs: every value of `field` is a number with no digits below the cent. */
static void assert_cents(const char *alias, const char *field)
{
	const char *params[1] = { field };
	char *bad;

	h_load_es_docs(alias);
	bad = h_query_text(NULL,
		"SELECT count(*) || ' documents, e.g. ' || coalesce(min(id || ': ' || (doc -> $1)::text), '')"
		"  FROM es_docs"
		" WHERE jsonb_typeof(doc -> $1) <> 'number'"
		"    OR (doc ->> $1)::numeric <> round((doc ->> $1)::numeric, 2)",
		1, params);
	cr_assert(bad && !strncmp(bad, "0 documents", 11), "%s.%s with digits below the cent: %s", alias,
		  field, bad ? bad : "?");
	free(bad);
}

static void assert_all_exact(void)
{
	h_assert_docs_match_oracle("daily_sales");
	h_assert_docs_match_oracle("customers");
	h_assert_docs_match_oracle("customer_orders");
	assert_cents("daily_sales", "total_revenue");
	assert_cents("daily_sales", "total_refunds");
	assert_cents("customers", "total_spent");
	assert_cents("customer_orders", "amount");
}

/* ---- the dead letters the bad events must give --------------------------------- */

/*
 * want_letters(projection, pos, doc, status, reason) of the test's
 * connection: the letters the generated history must give, from what the
 * generator knows it made bad (not from the projections' rules, which the
 * oracles model): each bad event is 'pending', naming its document (NULL:
 * none) with a part of its reason; a document named by a letter is held
 * back from its first one on, so every later event of it is 'held', whose
 * reason names the document and the holding letter's position. Days are
 * taken by PostgreSQL's own timestamptz parser.
 */
static const char want_letters_sql[] =
	"DROP TABLE IF EXISTS pg_temp.want_letters;\n"
	"CREATE TEMP TABLE want_letters AS\n"
	"WITH ev AS (\n"
	"  SELECT e.global_position AS pos, e.transaction_id AS txid, e.event_type AS type, e.data,\n"
	"         e.data ->> 'order_id' AS oid, e.data ->> 'customer_id' AS cid,\n"
	"         CASE e.event_type WHEN 'OrderCompleted' THEN e.data ->> 'completed_at'\n"
	"                           WHEN 'OrderRefunded' THEN e.data ->> 'original_completed_at' END AS ts\n"
	"    FROM public.events e),\n"
	"ds AS (\n"
	"  SELECT ev.*, CASE WHEN ts ~ '^[0-9]{4}-'\n"
	"                    THEN to_char(ts::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD') END AS day\n"
	"    FROM ev WHERE type IN ('OrderCompleted', 'OrderRefunded')),\n"
	"ds_bad AS (\n"
	"  SELECT * FROM ds WHERE oid LIKE 'bad-date-%' OR oid LIKE 'bad-amount-%'),\n"
	"ds_hold AS (\n"
	"  SELECT DISTINCT ON (day) day, txid, pos FROM ds_bad WHERE day IS NOT NULL ORDER BY day, txid, pos),\n"
	"ca AS (\n"
	"  SELECT * FROM ev\n"
	"   WHERE type IN ('CustomerCreated', 'OrderCompleted', 'ReviewSubmitted', 'CustomerTierChanged')),\n"
	"ca_bad AS (\n"
	"  SELECT ca.*, CASE WHEN type = 'CustomerCreated' THEN 'created_at'\n"
	"                    WHEN oid LIKE 'bad-date-%' THEN 'completed_at'\n"
	"                    WHEN oid LIKE 'bad-amount-%' THEN 'total_amount'\n"
	"                    ELSE 'customer_id' END AS field\n"
	"    FROM ca\n"
	"   WHERE (type = 'OrderCompleted'\n"
	"          AND (oid LIKE 'bad-date-%' OR oid LIKE 'bad-amount-%' OR oid LIKE 'bad-cust-%'))\n"
	"      OR (type = 'CustomerCreated' AND data ->> 'created_at' = '" BAD_CREATED_AT "')),\n"
	"cust_hold AS (\n"
	"  SELECT DISTINCT ON (cid) cid, txid, pos, field FROM ca_bad WHERE cid <> ''\n"
	"   ORDER BY cid, txid, pos),\n"
	"ord_hold AS (\n"
	"  SELECT DISTINCT ON (oid) oid, txid, pos, field FROM ca_bad WHERE type = 'OrderCompleted'\n"
	"   ORDER BY oid, txid, pos),\n"
	"held AS (\n"
	"  SELECT 'daily_sales' AS projection, d.pos, h.day AS doc, h.txid AS htxid, h.pos AS hpos\n"
	"    FROM ds d JOIN ds_hold h ON h.day = d.day AND (d.txid, d.pos) > (h.txid, h.pos)\n"
	"  UNION ALL\n"
	"  SELECT 'customer_activity', c.pos, 'customers/' || h.cid, h.txid, h.pos\n"
	"    FROM ca c JOIN cust_hold h ON h.cid = c.cid AND (c.txid, c.pos) > (h.txid, h.pos)\n"
	"  UNION ALL\n"
	"  SELECT 'customer_activity', c.pos, 'customer_orders/' || h.oid, h.txid, h.pos\n"
	"    FROM ca c JOIN ord_hold h ON c.type = 'OrderCompleted' AND h.oid = c.oid\n"
	"     AND (c.txid, c.pos) > (h.txid, h.pos))\n"
	"SELECT 'daily_sales' AS projection, pos, day AS doc, 'pending' AS status,\n"
	"       CASE WHEN day IS NULL THEN 'field ''completed_at'' is not a date the index accepts'\n"
	"            ELSE 'field ''total_amount'' has more than two decimals' END AS reason\n"
	"  FROM ds_bad b\n"
	" WHERE day IS NULL OR EXISTS (SELECT 1 FROM ds_hold h WHERE h.pos = b.pos)\n"
	"UNION ALL\n"
	"SELECT 'customer_activity', pos, NULL, 'pending',\n"
	"       'customers: field ''customer_id'' must be a non-empty string or an integer'\n"
	"  FROM ca_bad WHERE cid = ''\n"
	"UNION ALL\n"
	"SELECT 'customer_activity', pos, 'customers/' || cid, 'pending',\n"
	"       'customers: field ''' || field || ''' ' || CASE field WHEN 'total_amount'\n"
	"           THEN 'has more than two decimals' ELSE 'is not a date the index accepts' END\n"
	"  FROM cust_hold\n"
	"UNION ALL\n"
	"SELECT 'customer_activity', pos, 'customer_orders/' || oid, 'pending',\n"
	"       'customer_orders: field ''' || field || ''' ' || CASE field\n"
	"           WHEN 'total_amount' THEN 'has more than two decimals'\n"
	"           WHEN 'customer_id' THEN 'must be a non-empty string or an integer'\n"
	"           ELSE 'is not a date the index accepts' END\n"
	"  FROM ord_hold\n"
	"UNION ALL\n"
	"SELECT projection, pos, doc, 'held',\n"
	"       'held back: document ''' || doc || ''' has an open dead letter at ' || htxid || '/' || hpos\n"
	"  FROM held;\n";

/* Letters of `proj` with `status`: wanted (`want`) or recorded for generation `gen`. */
static long long n_letters(bool want, const char *proj, const char *status, int gen)
{
	char g[16];
	const char *params[3] = { proj, status, g };

	snprintf(g, sizeof(g), "%d", gen);
	if (want)
		return h_query_ll(NULL, "SELECT count(*) FROM want_letters WHERE projection = $1"
					" AND status = $2", 2, params, -1);
	return h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE projection = $1"
				" AND status = $2 AND generation = $3::int", 3, params, -1);
}

/* A few (position, document, status, reason) of `from` not in `not_in`, for the log. */
static void log_sample(const char *proj, const char *what, const char *from, const char *not_in)
{
	char sql[1024];
	const char *params[1] = { proj };
	char *s;

	snprintf(sql, sizeof(sql),
		 "SELECT string_agg(pos || ' ' || coalesce(doc, '-') || ' ' || status || ' (' || reason || ')',"
		 " '; ') FROM (SELECT * FROM %s a WHERE projection = $1 AND NOT EXISTS (SELECT 1 FROM %s b"
		 " WHERE b.projection = $1 AND b.pos = a.pos AND coalesce(b.doc, '') = coalesce(a.doc, '')"
		 " AND b.status = a.status) ORDER BY pos LIMIT 5) x", from, not_in);
	s = h_query_text(NULL, sql, 1, params);
	cr_log_error("%s: %s: %s", proj, what, s ? s : "-");
	free(s);
}

/*
 * The dead letters of generation `gen` of `proj` against want_letters:
 * exactly the same (position, document, status) when `exact`, else (a
 * generation retired before the end) a subset holding every wanted letter
 * up to its checkpoint; every reason as wanted (pending: contains it; held:
 * equal). When `want_pending` >= 0, the number of pending letters must be
 * that (an independent number, from the generator's constants).
 */

/*
 * A reason that is not the one wanted. A held letter names an open letter
 * of its document that held it back when it was recorded: the first one,
 * or, when crashes interleave the recordings (or an item refused by the
 * node is answered after later events were read), another open letter of
 * the same document. The statuses themselves are checked exactly above.
 */
#define BAD_REASON \
	"CASE g.status WHEN 'held' THEN NOT (g.reason LIKE 'held back: document %' AND EXISTS (" \
	"  SELECT 1 FROM got_letters b WHERE b.status IN ('pending','held') AND b.doc = g.doc" \
	"   AND b.pos = substring(g.reason FROM '/([0-9]+)$')::bigint))" \
	" ELSE strpos(g.reason, w.reason) = 0 END"

static void assert_letters(const char *proj, int gen, bool exact, long long want_pending)
{
	char g[16];
	const char *params[3] = { proj, g, exact ? "true" : "false" };
	long long missing, extra, bad_reason, pending, held;

	snprintf(g, sizeof(g), "%d", gen);
	h_sql_vars(NULL, want_letters_sql, NULL);
	h_sql(NULL, "DROP TABLE IF EXISTS pg_temp.got_letters");
	PQclear(h_exec(NULL,
		"CREATE TEMP TABLE got_letters AS"
		" SELECT projection, global_position AS pos, doc_id AS doc, status, reason"
		"   FROM esbridge.dead_letters WHERE projection = $1 AND generation = $2::int",
		2, params));
	/* wanted and not there (a retired generation: only up to its checkpoint) */
	missing = h_query_ll(NULL,
		"SELECT count(*) FROM (SELECT w.pos, coalesce(w.doc, ''), w.status FROM want_letters w"
		"   JOIN public.events e ON e.global_position = w.pos"
		"  WHERE w.projection = $1"
		"    AND ($3::bool OR (e.transaction_id, e.global_position)"
		"        <= (SELECT checkpoint_txid, checkpoint_pos FROM esbridge.generations"
		"             WHERE projection = $1 AND generation = $2::int))"
		" EXCEPT SELECT pos, coalesce(doc, ''), status FROM got_letters) x",
		3, params, -1);
	extra = h_query_ll(NULL,
		"SELECT count(*) FROM (SELECT pos, coalesce(doc, ''), status FROM got_letters"
		" EXCEPT SELECT pos, coalesce(doc, ''), status FROM want_letters WHERE projection = $1) x",
		1, params, -1);
	if (missing)
		log_sample(proj, "wanted, not recorded", "want_letters", "got_letters");
	if (extra)
		log_sample(proj, "recorded, not wanted", "got_letters", "want_letters");
	cr_assert_eq(missing, 0, "%s generation %d: %lld wanted dead letters missing", proj, gen, missing);
	cr_assert_eq(extra, 0, "%s generation %d: %lld dead letters not wanted", proj, gen, extra);
	bad_reason = h_query_ll(NULL,
		"SELECT count(*) FROM got_letters g JOIN want_letters w ON w.projection = $1 AND w.pos = g.pos"
		"   AND coalesce(w.doc, '') = coalesce(g.doc, '') AND w.status = g.status"
		" WHERE " BAD_REASON,
		1, params, -1);
	if (bad_reason) {
		char *s = h_query_text(NULL,
			"SELECT string_agg(g.pos || ': \"' || g.reason || '\", want \"' || w.reason || '\"', '; ')"
			"  FROM got_letters g JOIN want_letters w ON w.projection = $1 AND w.pos = g.pos"
			"   AND coalesce(w.doc, '') = coalesce(g.doc, '') AND w.status = g.status"
			" WHERE " BAD_REASON, 1, params);
		cr_log_error("%s: %s", proj, s ? s : "?");
		free(s);
	}
	cr_assert_eq(bad_reason, 0, "%s generation %d: %lld dead letters with another reason", proj, gen,
		     bad_reason);
	pending = n_letters(false, proj, "pending", gen);
	held = n_letters(false, proj, "held", gen);
	cr_log_info("%s generation %d: %lld pending and %lld held dead letters (wanted: %lld and %lld)",
		    proj, gen, pending, held, n_letters(true, proj, "pending", 0),
		    n_letters(true, proj, "held", 0));
	if (want_pending >= 0)
		cr_assert_eq(pending, want_pending, "%s generation %d: %lld pending dead letters, want %lld",
			     proj, gen, pending, want_pending);
}

/* Pending letters of daily_sales: the bad dates (no day) and the bad amounts (their day). */
#define DAILY_PENDING (BAD_DATES + BAD_AMOUNTS)
/*
 * Of customer_activity: in customers, c1 and c2 (their first bad
 * completion), the customers created on February 30 and the completions
 * without a customer (naming no document); in customer_orders, every bad
 * completion.
 */
#define ACTIVITY_PENDING (2 + BAD_CREATED + BAD_CUSTOMERS + BAD_DATES + BAD_AMOUNTS + BAD_CUSTOMERS)

/* Both projections' letters (generation 1), exact, with days and customers held back. */
static void assert_all_letters(void)
{
	assert_letters("daily_sales", 1, true, DAILY_PENDING);
	assert_letters("customer_activity", 1, true, ACTIVITY_PENDING);
	cr_assert_gt(n_letters(false, "daily_sales", "held", 1), 0, "no day was held back");
	cr_assert_gt(n_letters(false, "customer_activity", "held", 1), 0, "no customer was held back");
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters WHERE generation <> 1"
				      " OR projection NOT IN ('daily_sales', 'customer_activity')", 0, NULL, -1),
		     0, "dead letters of another generation or projection");
}

static const char *const BOTH[] = {
	"--projection", "daily_sales", "--projection", "customer_activity", NULL,
};

/* ---- the generated history -------------------------------------------------------- */

Test(activity, generated_history_matches_the_folds, .timeout = 240)
{
	long long dead, days, customers, upserted;
	int chunks;

	h_begin();
	chunks = generate("0.31");
	load_chunks(0, chunks);
	cr_assert_eq(h_run_once(BOTH, 180), 0, "run --once failed");
	cr_assert(h_alias_is("daily_sales", "daily_sales-000001"));
	cr_assert(h_alias_is("customers", "customers-000001"));
	cr_assert(h_alias_is("customer_orders", "customer_orders-000001"));
	assert_all_exact();

	/*
	 * The bad events are 'pending' dead letters, the later events of the
	 * days, customers and orders they name 'held' (none refused by the
	 * node: the projections check dates as the mappings do).
	 */
	assert_all_letters();
	dead = h_dead_letter_count();
	days = h_query_ll(NULL, "SELECT count(*) FROM oracle_daily_sales", 0, NULL, 0);
	customers = h_query_ll(NULL, "SELECT count(*) FROM oracle_customers", 0, NULL, 0);
	upserted = h_query_ll(NULL, "SELECT count(*) FROM oracle_customers WHERE NOT doc ? 'email'", 0,
			      NULL, 0);
	cr_log_info("%d chunks; %lld days, %lld customers (%lld never created), %lld dead letters", chunks,
		    days, customers, upserted, dead);
	cr_assert_geq(days, 60);
	cr_assert_gt(upserted, 100, "too few customers known only from their orders and reviews");
	/* a day of one zone that is another day in UTC is counted on the UTC day */
	cr_assert_gt(h_query_ll(NULL,
		"SELECT count(*) FROM public.events WHERE event_type = 'OrderCompleted'"
		"  AND data ->> 'completed_at' LIKE '%-08:00'"
		"  AND left(data ->> 'completed_at', 10)"
		"      <> to_char((data ->> 'completed_at')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
		0, NULL, 0), 100, "the history lacks completions across a UTC midnight");

	/* everything again from zero: the guards make every increment a no-op */
	h_sql(NULL, "UPDATE esbridge.generations SET checkpoint_txid = '0', checkpoint_pos = 0");
	cr_assert_eq(h_run_once(BOTH, 180), 0, "run --once (replay from zero) failed");
	assert_all_exact();
	assert_all_letters();
	cr_assert_eq(h_dead_letter_count(), dead, "the replay recorded letters again");
}

/* ---- crash loop -------------------------------------------------------------------- */

static uint64_t rng_state;

static double rng_unit(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (double)(z >> 11) / 9007199254740992.0;
}

/* The sum of both projections' checkpoint positions (0: none yet). */
static long long progress(void)
{
	if (!h_query_ll(NULL, "SELECT (to_regclass('esbridge.generations') IS NOT NULL)::int", 0, NULL, 0))
		return 0;
	return h_query_ll(NULL, "SELECT coalesce(sum(checkpoint_pos), 0) FROM esbridge.generations", 0,
			  NULL, 0);
}

struct moved_arg {
	long long from;
};

static bool moved(void *arg)
{
	return progress() > ((struct moved_arg *)arg)->from;
}

#define MIN_KILLS 10

Test(activity, crash_loop_during_catch_up, .timeout = 300)
{
	static const char *const args[] = {
		"run", "--projection", "daily_sales", "--projection", "customer_activity",
		"--batch-size", "500", "--bulk-actions", "200", "--inflight", "3", "--poll-interval", "0.2",
		NULL,
	};
	const char *env = getenv("ESBRIDGE_TEST_SEED");
	int chunks, loaded, kills = 0;

	h_begin();
	rng_state = env && *env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
	cr_log_info("crash loop: random seed %" PRIu64 " (ESBRIDGE_TEST_SEED repeats it)", rng_state);
	chunks = generate("0.57");
	loaded = chunks * 2 / 3;
	load_chunks(0, loaded);

	for (int cycle = 0; kills < MIN_KILLS + 2 && cycle < 40; cycle++) {
		struct h_proc *p = h_spawn(0, args);
		struct moved_arg m = { progress() };
		double delay = 0.15 * rng_unit();
		cr_assert(h_eventually(moved, &m, H_LONG), "cycle %d: no progress (log: %s)", cycle, p->log);
		h_sleep(delay);
		cr_assert(p->running, "cycle %d: the daemon exited (log: %s)", cycle, p->log);
		h_kill(p);
		kills++;
		cr_log_info("cycle %d: SIGKILL %.3fs after progress, checkpoints sum %lld", cycle, delay,
			    progress());
		/* more events arrive while the bridge is down */
		if (loaded < chunks) {
			load_chunks(loaded, loaded + 1);
			loaded++;
		}
	}
	cr_assert_geq(kills, MIN_KILLS);
	load_chunks(loaded, chunks);
	cr_assert_eq(h_run_once(BOTH, 180), 0, "run --once after the crashes failed");
	assert_all_exact();
	assert_all_letters();
}

/* ---- rebuild under live writes --------------------------------------------------- */

static char *alias_of(const char *alias)
{
	char path[256];
	struct h_http r;
	char *out;

	snprintf(path, sizeof(path), "/_alias/%s", alias);
	r = h_es("GET", path, NULL);
	out = strdup(r.body ? r.body : "");
	h_http_free(&r);
	return out;
}

Test(activity, rebuild_moves_both_aliases_under_live_writes, .timeout = 300)
{
	static const char *const run_args[] = {
		"run", "--projection", "daily_sales", "--projection", "customer_activity",
		"--poll-interval", "0.2", NULL,
	};
	struct h_proc *d, *rb;
	int chunks, loaded, during = 0;
	char *s;

	h_begin();
	chunks = generate("0.89");
	loaded = chunks - 12;
	load_chunks(0, loaded);
	d = h_spawn(0, run_args);
	H_EVENTUALLY(h_alias_is("customer_orders", "customer_orders-000001"), 120,
		     "the alias customer_orders never named generation 1 (log: %s)", d->log);
	cr_assert(h_alias_is("customers", "customers-000001"));
	wait_caught_up("customer_activity", ACTIVITY_TYPES, d);

	rb = h_spawn(0, (const char *const[]){ "rebuild", "customer_activity", NULL });
	/* events keep arriving while the new generation is built and swapped in */
	while (rb->running && !h_wait(rb, 0.15)) {
		if (loaded < chunks) {
			load_chunks(loaded, loaded + 1);
			loaded++;
			during++;
		}
	}
	cr_assert(h_wait(rb, 120), "the rebuild did not end (log: %s)", rb->log);
	cr_assert_eq(h_exit_code(rb), 0, "rebuild: exit status 0x%x (log: %s)", (unsigned)rb->status, rb->log);
	cr_log_info("%d transactions of events committed during the rebuild", during);
	cr_assert_geq(during, 2, "the rebuild ended before events arrived during it");
	load_chunks(loaded, chunks);

	/* both aliases moved, each to its own index of generation 2, and only there */
	s = alias_of("customers");
	cr_assert(h_alias_is("customers", "customers-000002"), "customers: %s", s);
	free(s);
	s = alias_of("customer_orders");
	cr_assert(h_alias_is("customer_orders", "customer_orders-000002"), "customer_orders: %s", s);
	free(s);
	s = h_query_text(NULL,
		"SELECT string_agg(generation || ':' || state || ':' || index_name || ':'"
		"                  || array_to_string(extra_indices, ','), ' ' ORDER BY generation)"
		"  FROM esbridge.generations WHERE projection = 'customer_activity'", 0, NULL);
	cr_assert_str_eq(s, "1:retired:customers-000001:customer_orders-000001 "
			    "2:active:customers-000002:customer_orders-000002",
			 "esbridge.generations: %s", s);
	free(s);

	wait_caught_up("customer_activity", ACTIVITY_TYPES, d);
	wait_caught_up("daily_sales", DAILY_TYPES, d);
	h_stop(d, 30);
	assert_all_exact();
	/* daily_sales was never rebuilt; generation 2 saw every event, generation 1 a prefix */
	assert_letters("daily_sales", 1, true, DAILY_PENDING);
	assert_letters("customer_activity", 2, true, ACTIVITY_PENDING);
	assert_letters("customer_activity", 1, false, -1);
}

/* ---- one rule for dates ----------------------------------------------------------- */

/* The dead letters of `proj` at position `pos` (text). */
static long long letters_at(const char *proj, const char *pos)
{
	const char *params[2] = { proj, pos };

	return h_query_ll(NULL, "SELECT count(*) FROM esbridge.dead_letters"
				" WHERE projection = $1 AND global_position = $2::bigint", 2, params, -1);
}

/*
 * daily_sales and customer_activity read completed_at by one rule (the
 * date mapping's): a completion one refuses is a dead letter of the other
 * too, one it takes the other counts, and a date without a zone is UTC for
 * both (as the node reads it). Before, daily_sales counted a second 60 and
 * an offset of 20 hours, which customers refused, and refused a date
 * without a zone, which customers took.
 */
Test(activity, one_rule_for_dates_in_both_projections, .timeout = 120)
{
	static const struct {
		const char *at;
		bool ok;
	} cases[] = {
		{ "2026-03-01", true },
		{ "2026-03-01T23:30", true },
		{ "2026-03-01T23:59:59.999999999", true },
		{ "2026-03-02T05:00:00+18:00", true },   /* 2026-03-01T11:00Z */
		{ "2026-02-28T06:00:00-18:00", true },   /* 2026-03-01T00:00Z */
		{ "2026-03-01T23:59:60Z", false },
		{ "2026-03-01T10:00:00+20:00", false },
		{ "2026-03-01T10:00:00.1234567891Z", false },
		{ "0001-01-01T00:30:00+01:00", false },  /* (UTC: year 0) */
	};
	enum { N = sizeof(cases) / sizeof(cases[0]) };
	int64_t pos[N];
	int n_ok = 0;

	h_begin();
	for (int i = 0; i < N; i++) {
		char data[256], stream[32];
		snprintf(stream, sizeof(stream), "order-d%d", i);
		snprintf(data, sizeof(data),
			 "{\"order_id\": \"d%d\", \"customer_id\": \"dc%d\", \"total_amount\": 1.25,"
			 " \"item_count\": 2, \"completed_at\": \"%s\"}", i, i, cases[i].at);
		pos[i] = h_event(NULL, stream, "OrderCompleted", data);
		n_ok += cases[i].ok;
	}
	cr_assert_eq(h_run_once(BOTH, 60), 0, "run --once failed");
	assert_all_exact();

	for (int i = 0; i < N; i++) {
		char p[24], cid[16];
		long long daily, activity;

		snprintf(p, sizeof(p), "%" PRId64, pos[i]);
		snprintf(cid, sizeof(cid), "dc%d", i);
		daily = letters_at("daily_sales", p);
		activity = letters_at("customer_activity", p);
		cr_expect_eq(daily, cases[i].ok ? 0 : 1, "'%s': %lld dead letters of daily_sales", cases[i].at,
			     daily);
		/* a refused completion is a letter of both indices: customers/ID and customer_orders/ID */
		cr_expect_eq(activity, cases[i].ok ? 0 : 2, "'%s': %lld dead letters of customer_activity",
			     cases[i].at, activity);
		cr_expect_eq(h_searchable("customers", cid), cases[i].ok, "'%s': customer %s", cases[i].at, cid);
	}
	/* by hand: every date taken falls on 2026-03-01 in UTC */
	{
		char *doc = h_search_source("daily_sales", "2026-03-01");
		const char *params[1] = { doc };

		cr_assert_not_null(doc, "no daily_sales document for 2026-03-01");
		cr_assert_eq(h_query_ll(NULL, "SELECT ($1::jsonb ->> 'total_orders')::bigint", 1, params, -1),
			     n_ok, "2026-03-01: %s", doc);
		free(doc);
	}
	cr_assert_eq(h_query_ll(NULL, "SELECT count(*) FROM oracle_daily_sales", 0, NULL, -1), 1,
		     "the dates taken fall on more than one day");
}
