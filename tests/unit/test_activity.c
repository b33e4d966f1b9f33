/*
 * Unit tests of the daily_sales and customer_activity projections
 * (src/projections/daily_sales.c, customer_activity.c) and of what the
 * interface of several indices adds (projection_n_indices, projection_alias,
 * projection_doc_id, "_index" in the action line). Events are driven through
 * doc_id / doc_id_in and apply as the pipeline does; the operations are
 * rendered with bulk_write_op and parsed back, so the assertions are on the
 * JSON Elasticsearch would receive.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <yajl/yajl_tree.h>

#include "esbridge/buf.h"
#include "esbridge/bulk.h"
#include "esbridge/event.h"
#include "esbridge/projection.h"

#include "support.h"

static struct buf body, idbuf;
static struct bulk_op op;
static yajl_val trees[64];
static size_t n_trees;
static char err[256];
static const struct projection *daily, *activity;

static void setup(void)
{
	buf_init(&body, (size_t)1 << 20);
	buf_init(&idbuf, 4096);
	memset(&op, 0, sizeof(op));
	n_trees = 0;
	err[0] = '\0';
	daily = projection_find("daily_sales");
	activity = projection_find("customer_activity");
	cr_assert_not_null(daily, "no daily_sales projection in the registry");
	cr_assert_not_null(activity, "no customer_activity projection in the registry");
}

static void teardown(void)
{
	buf_release(&body);
	buf_release(&idbuf);
	bulk_op_release(&op);
	for (size_t i = 0; i < n_trees; i++)
		yajl_tree_free(trees[i]);
	n_trees = 0;
	test_leak_check();
}

TestSuite(daily_sales, .init = setup, .fini = teardown);
TestSuite(customer_activity, .init = setup, .fini = teardown);

static yajl_val parse(const char *text)
{
	char perr[256] = "";
	yajl_val v = yajl_tree_parse(text, perr, sizeof(perr));

	cr_assert_not_null(v, "not JSON: %s: %s", text, perr);
	cr_assert_lt(n_trees, sizeof(trees) / sizeof(trees[0]));
	trees[n_trees++] = v;
	return v;
}

#define GET(v, ...) yajl_tree_get((v), (const char *[]){ __VA_ARGS__, NULL }, yajl_t_any)

static struct event event(const char *type, int64_t pos, const char *data)
{
	struct event ev = {
		.at = { .txid = 700, .pos = pos },
		.stream_id = "s",
		.type = type,
		.data = data,
		.data_len = strlen(data),
		.created_at = "2026-11-26T10:00:00.000000Z",
		.version = 1,
	};
	return ev;
}

/* doc_id (slot), then apply into `op` (initialised at the first event). */
static int feed(const struct projection *p, size_t slot, const char *type, int64_t pos, const char *data)
{
	struct event ev = event(type, pos, data);
	yajl_val d = parse(data);
	int rc = projection_doc_id(p, &ev, d, slot, &idbuf, err, sizeof(err));

	if (rc)
		return rc;
	if (!op.id) {
		cr_assert_eq(bulk_op_init(&op, idbuf.data, idbuf.len), 0);
		op.slot = (unsigned)slot;
	} else {
		cr_assert_str_eq(op.id, idbuf.data, "the event is not for this document");
	}
	return p->apply(&ev, d, &op, err, sizeof(err));
}

/* The _id the projection gives the event in `slot`, or "" with the answer in *rc. */
static const char *id_of(const struct projection *p, size_t slot, const char *type, const char *data,
			 int *rc)
{
	struct event ev = event(type, 1, data);

	*rc = projection_doc_id(p, &ev, parse(data), slot, &idbuf, err, sizeof(err));
	return *rc ? "" : idbuf.data;
}

/* Renders `op`; returns the source line parsed, the action line in *action. */
static yajl_val render(yajl_val *action)
{
	char werr[256] = "";
	char *nl;

	buf_reset(&body);
	cr_assert_eq(bulk_write_op(&body, &op, werr, sizeof(werr)), 0, "bulk_write_op: %s", werr);
	nl = strchr(body.data, '\n');
	cr_assert_not_null(nl);
	*nl = '\0';
	*action = parse(body.data);
	*nl = '\n';
	cr_assert_eq(body.data[body.len - 1], '\n');
	body.data[body.len - 1] = '\0';
	return parse(nl + 1);
}

static void expect_number(yajl_val v, const char *text, const char *what)
{
	cr_assert(v && YAJL_IS_NUMBER(v), "%s is not a number (body: %s)", what, body.data);
	cr_expect_str_eq(v->u.number.r, text, "%s", what);
}

static void expect_string(yajl_val v, const char *want, const char *what)
{
	cr_assert(v && YAJL_IS_STRING(v), "%s is not a string (body: %s)", what, body.data);
	cr_expect_str_eq(v->u.string, want, "%s", what);
}

/* ---- daily_sales ---------------------------------------------------------- */

#define DONE(at) "{\"order_id\": \"o1\", \"customer_id\": \"c1\", \"total_amount\": 19.99," \
	" \"item_count\": 3, \"completed_at\": \"" at "\"}"

Test(daily_sales, the_day_is_the_utc_day_of_completed_at)
{
	static const struct { const char *at, *day; } cases[] = {
		{ "2026-03-01T10:00:00Z", "2026-03-01" },
		{ "2026-03-01T23:59:59.999999Z", "2026-03-01" },
		{ "2026-03-01T01:30:00+05:30", "2026-02-28" },   /* 20:00 the day before */
		{ "2026-03-01T05:30:00+05:30", "2026-03-01" },   /* exactly midnight UTC */
		{ "2026-02-28T17:00:00-08:00", "2026-03-01" },   /* 01:00 the next day */
		{ "2026-01-01T01:00:00+02:00", "2025-12-31" },   /* back a year */
		{ "2026-12-31T20:00:00-05:00", "2027-01-01" },   /* on to the next */
		{ "2028-03-01T00:30:00+01:00", "2028-02-29" },   /* a leap day */
		{ "2026-03-01T00:30:00+01:00", "2026-02-28" },
		{ "2026-03-01T06:00:00+18:00", "2026-02-28" },   /* the largest offset */
		{ "2026-02-28T06:00:00-18:00", "2026-03-01" },
		/* without a zone: UTC, as the node reads such a date */
		{ "2026-03-01", "2026-03-01" },
		{ "2026-03-01T23:59", "2026-03-01" },
		{ "2026-03-01T23:59:59.123456789", "2026-03-01" },
	};
	char data[256];
	int rc;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *id;
		snprintf(data, sizeof(data), DONE("%s"), cases[i].at);
		id = id_of(daily, 0, "OrderCompleted", data, &rc);
		cr_expect_eq(rc, 0, "%s rejected: %s", cases[i].at, err);
		cr_expect_str_eq(id, cases[i].day, "the day of %s", cases[i].at);
	}
}

Test(daily_sales, dates_the_index_refuses_are_dead_letters)
{
	static const char *const bad[] = {
		"yesterday", "2026-02-30T10:00:00Z", "2026-13-01T10:00:00Z", "2026-03-01T24:00:00Z",
		"2026-03-01T10:00:00+5:30", "2026-03-01T10:00:00.Z", "2026-03-01T10:00:00Zjunk",
		"2026-03-01 10:00:00Z", "2026-03-01T23:59:60Z", "2026-03-01T10:00:00+20:00",
		"2026-03-01T10:00:00+18:01", "2026-03-01T10:00:00.1234567891Z", "2026-03-01T10",
		"1700000000000", "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00",
	};
	char data[256];
	int rc;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(data, sizeof(data), DONE("%s"), bad[i]);
		(void)id_of(daily, 0, "OrderCompleted", data, &rc);
		cr_expect_eq(rc, PROJECTION_REJECT, "'%s' was taken", bad[i]);
	}
	(void)id_of(daily, 0, "OrderCompleted", "{\"completed_at\": 12}", &rc);
	cr_expect_eq(rc, PROJECTION_REJECT);
	(void)id_of(daily, 0, "OrderCompleted", "{}", &rc);
	cr_expect_eq(rc, PROJECTION_REJECT);
}

Test(daily_sales, a_refund_counts_on_the_day_of_the_original_completion)
{
	int rc;
	const char *id = id_of(daily, 0, "OrderRefunded",
			       "{\"order_id\": \"o1\", \"refund_amount\": 5, \"refunded_at\": \"2026-04-09T10:00:00Z\","
			       " \"original_completed_at\": \"2026-04-01T23:30:00-01:00\"}", &rc);

	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_str_eq(id, "2026-04-02");
}

Test(daily_sales, guarded_upsert_with_zero_defaults_and_exact_cents)
{
	yajl_val action, src, e;

	cr_assert_eq(feed(daily, 0, "OrderCompleted", 10, DONE("2026-03-01T10:00:00Z")), 0, "%s", err);
	cr_assert_eq(feed(daily, 0, "OrderCompleted", 11,
			  "{\"total_amount\": 0.10, \"item_count\": 1, \"completed_at\": \"2026-03-01T11:00:00Z\"}"),
		     0, "%s", err);
	cr_assert_eq(feed(daily, 0, "OrderRefunded", 12,
			  "{\"refund_amount\": 0.20, \"original_completed_at\": \"2026-03-01T10:00:00Z\"}"), 0, "%s",
		     err);
	src = render(&action);
	expect_string(GET(action, "update", "_id"), "2026-03-01", "_id");
	cr_expect_null(GET(action, "update", "_index"), "one index: no _index (body: %s)", body.data);
	expect_string(GET(src, "script", "id"), BULK_SCRIPT_ID, "script id");
	cr_expect(YAJL_IS_TRUE(GET(src, "scripted_upsert")), "not a scripted upsert: %s", body.data);
	/* the document a day starts as */
	expect_string(GET(src, "upsert", "date"), "2026-03-01", "upsert.date");
	expect_number(GET(src, "upsert", "total_orders"), "0", "upsert.total_orders");
	expect_number(GET(src, "upsert", "total_items"), "0", "upsert.total_items");
	expect_number(GET(src, "upsert", "total_revenue"), "0.00", "upsert.total_revenue");
	expect_number(GET(src, "upsert", "total_refunds"), "0.00", "upsert.total_refunds");
	e = GET(src, "script", "params", "events");
	cr_assert(e && YAJL_IS_ARRAY(e) && e->u.array.len == 3, "three guarded entries: %s", body.data);
	expect_number(GET(e->u.array.values[0], "p"), "10", "entry 1 position");
	expect_number(GET(e->u.array.values[0], "t"), "700", "entry 1 txid");
	expect_number(GET(e->u.array.values[0], "i", "total_orders"), "1", "entry 1 orders");
	expect_number(GET(e->u.array.values[0], "i", "total_items"), "3", "entry 1 items");
	expect_number(GET(e->u.array.values[0], "m", "total_revenue"), "1999", "entry 1 cents");
	expect_number(GET(e->u.array.values[1], "m", "total_revenue"), "10", "entry 2 cents");
	expect_number(GET(e->u.array.values[2], "i", "total_orders"), "-1", "refund orders");
	expect_number(GET(e->u.array.values[2], "m", "total_revenue"), "-20", "refund revenue");
	expect_number(GET(e->u.array.values[2], "m", "total_refunds"), "20", "refund refunds");
	cr_expect_null(GET(e->u.array.values[2], "i", "total_items"), "a refund leaves the items");
}

Test(daily_sales, bad_amounts_are_rejected_and_leave_the_operation_alone)
{
	static const char *const bad[] = {
		"{\"total_amount\": 1.234, \"item_count\": 1, \"completed_at\": \"2026-03-01T10:00:00Z\"}",
		"{\"total_amount\": -1, \"item_count\": 1, \"completed_at\": \"2026-03-01T10:00:00Z\"}",
		"{\"total_amount\": \"5\", \"item_count\": 1, \"completed_at\": \"2026-03-01T10:00:00Z\"}",
		"{\"total_amount\": 5, \"item_count\": -1, \"completed_at\": \"2026-03-01T10:00:00Z\"}",
		"{\"total_amount\": 5, \"item_count\": 1.5, \"completed_at\": \"2026-03-01T10:00:00Z\"}",
		"{\"total_amount\": 5, \"completed_at\": \"2026-03-01T10:00:00Z\"}",
	};
	yajl_val action;
	char *before;

	cr_assert_eq(feed(daily, 0, "OrderCompleted", 10, DONE("2026-03-01T10:00:00Z")), 0, "%s", err);
	(void)render(&action);
	before = strdup(body.data);
	cr_assert_not_null(before);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(feed(daily, 0, "OrderCompleted", 20 + (int64_t)i, bad[i]), PROJECTION_REJECT,
			     "taken: %s", bad[i]);
		cr_expect_neq(err[0], '\0', "a rejection without a reason");
	}
	cr_expect_eq(feed(daily, 0, "OrderRefunded", 30,
			  "{\"refund_amount\": 0.001, \"original_completed_at\": \"2026-03-01T10:00:00Z\"}"),
		     PROJECTION_REJECT);
	(void)render(&action);
	cr_expect_str_eq(body.data, before, "a rejected event changed the operation");
	free(before);
}

/* ---- customer_activity ------------------------------------------------------ */

#define COMPLETED "{\"order_id\": \"o7\", \"customer_id\": \"c9\", \"total_amount\": 12.3," \
	" \"item_count\": 2, \"completed_at\": \"2026-03-01T10:00:00Z\"}"

Test(customer_activity, two_indices_one_projection)
{
	int rc;

	cr_assert_eq(projection_n_indices(activity), 2);
	cr_expect_str_eq(projection_alias(activity, 0), "customers");
	cr_expect_str_eq(projection_alias(activity, 1), "customer_orders");
	cr_expect_eq(projection_n_indices(daily), 1);
	cr_expect_str_eq(projection_alias(daily, 0), "daily_sales");
	/* one event, a document in each index */
	cr_expect_str_eq(id_of(activity, 0, "OrderCompleted", COMPLETED, &rc), "c9");
	cr_expect_str_eq(id_of(activity, 1, "OrderCompleted", COMPLETED, &rc), "o7");
	/* the others only in customers */
	cr_expect_str_eq(id_of(activity, 0, "ReviewSubmitted", "{\"customer_id\": 4}", &rc), "4");
	(void)id_of(activity, 1, "ReviewSubmitted", "{\"customer_id\": 4}", &rc);
	cr_expect_eq(rc, PROJECTION_SKIP);
	(void)id_of(activity, 1, "CustomerCreated", "{\"customer_id\": \"c1\"}", &rc);
	cr_expect_eq(rc, PROJECTION_SKIP);
	(void)id_of(activity, 1, "CustomerTierChanged", "{\"customer_id\": \"c1\"}", &rc);
	cr_expect_eq(rc, PROJECTION_SKIP);
	(void)id_of(activity, 0, "OrderCompleted", "{\"order_id\": \"o1\"}", &rc);
	cr_expect_eq(rc, PROJECTION_REJECT, "no customer_id, yet taken");
	/* a one-index projection has slot 0 only */
	(void)id_of(daily, 1, "OrderCompleted", DONE("2026-03-01T10:00:00Z"), &rc);
	cr_expect_eq(rc, PROJECTION_SKIP);
}

Test(customer_activity, customer_orders_gets_the_whole_order_with_its_index)
{
	yajl_val action, src;

	cr_assert_eq(feed(activity, 1, "OrderCompleted", 5, COMPLETED), 0, "%s", err);
	op.index = "customer_orders-000003";
	src = render(&action);
	expect_string(GET(action, "index", "_id"), "o7", "_id");
	expect_string(GET(action, "index", "_index"), "customer_orders-000003", "_index");
	expect_string(GET(src, "customer_id"), "c9", "customer_id");
	expect_string(GET(src, "order_id"), "o7", "order_id");
	expect_number(GET(src, "amount"), "12.30", "amount");
	expect_string(GET(src, "completed_at"), "2026-03-01T10:00:00Z", "completed_at");
	cr_expect_eq(src->u.object.len, 4, "only the four fields: %s", body.data);
}

Test(customer_activity, customers_are_upserted_from_defaults_in_any_order)
{
	yajl_val action, src, e;

	/* an order and a review before the customer's creation (another stream) */
	cr_assert_eq(feed(activity, 0, "OrderCompleted", 5, COMPLETED), 0, "%s", err);
	cr_assert_eq(feed(activity, 0, "ReviewSubmitted", 6,
			  "{\"customer_id\": \"c9\", \"product_id\": \"p1\", \"rating\": 5,"
			  " \"submitted_at\": \"2026-03-02T10:00:00Z\"}"), 0, "%s", err);
	cr_assert_eq(feed(activity, 0, "CustomerCreated", 7,
			  "{\"customer_id\": \"c9\", \"email\": \"c9@example.com\", \"name\": \"Nine\","
			  " \"created_at\": \"2026-02-01T00:00:00Z\"}"), 0, "%s", err);
	cr_assert_eq(feed(activity, 0, "CustomerTierChanged", 8,
			  "{\"customer_id\": \"c9\", \"new_tier\": \"gold\", \"changed_at\": null}"), 0, "%s", err);
	op.index = "customers-000001";
	src = render(&action);
	expect_string(GET(action, "update", "_index"), "customers-000001", "_index");
	cr_expect(YAJL_IS_TRUE(GET(src, "scripted_upsert")), "not a scripted upsert: %s", body.data);
	expect_string(GET(src, "upsert", "customer_id"), "c9", "upsert.customer_id");
	expect_string(GET(src, "upsert", "tier"), "bronze", "upsert.tier");
	expect_number(GET(src, "upsert", "total_orders"), "0", "upsert.total_orders");
	expect_number(GET(src, "upsert", "total_reviews"), "0", "upsert.total_reviews");
	expect_number(GET(src, "upsert", "total_spent"), "0.00", "upsert.total_spent");
	cr_expect_null(GET(src, "upsert", "email"), "email is not defaulted");
	e = GET(src, "script", "params", "events");
	cr_assert(e && YAJL_IS_ARRAY(e) && e->u.array.len == 4, "four guarded entries: %s", body.data);
	expect_number(GET(e->u.array.values[0], "i", "total_orders"), "1", "order count");
	expect_number(GET(e->u.array.values[0], "m", "total_spent"), "1230", "order cents");
	expect_string(GET(e->u.array.values[0], "s", "last_order_at"), "2026-03-01T10:00:00Z", "last_order_at");
	expect_number(GET(e->u.array.values[1], "i", "total_reviews"), "1", "review count");
	expect_string(GET(e->u.array.values[1], "s", "last_review_at"), "2026-03-02T10:00:00Z", "last_review_at");
	/* the creation sets the profile and the tier, never the counters */
	expect_string(GET(e->u.array.values[2], "s", "email"), "c9@example.com", "email");
	expect_string(GET(e->u.array.values[2], "s", "name"), "Nine", "name");
	expect_string(GET(e->u.array.values[2], "s", "tier"), "bronze", "tier at creation");
	cr_expect_eq(GET(e->u.array.values[2], "i")->u.object.len, 0, "the creation adds nothing");
	cr_expect_eq(GET(e->u.array.values[2], "m")->u.object.len, 0, "the creation adds no money");
	expect_string(GET(e->u.array.values[3], "s", "tier"), "gold", "new tier");
	expect_string(GET(e->u.array.values[3], "s", "updated_at"), "2026-11-26T10:00:00.000000Z", "updated_at");
}

Test(customer_activity, bad_events_are_rejected)
{
	static const struct { const char *type, *data; } bad[] = {
		{ "ReviewSubmitted", "{\"customer_id\": \"c1\", \"product_id\": \"p\", \"rating\": 6}" },
		{ "ReviewSubmitted", "{\"customer_id\": \"c1\", \"rating\": 3}" },
		{ "CustomerTierChanged", "{\"customer_id\": \"c1\", \"new_tier\": \"\"}" },
		{ "CustomerTierChanged", "{\"customer_id\": \"c1\", \"new_tier\": 3}" },
		{ "CustomerTierChanged", "{\"customer_id\": \"c1\", \"new_tier\": null}" },
		{ "CustomerTierChanged", "{\"customer_id\": \"c1\"}" },
		/* changed_at is not written, but checked */
		{ "CustomerTierChanged", "{\"customer_id\": \"c1\", \"new_tier\": \"gold\", \"changed_at\": 5}" },
		{ "CustomerCreated", "{\"customer_id\": \"c1\", \"email\": 5}" },
		{ "OrderCompleted", "{\"customer_id\": \"c1\", \"order_id\": \"o\", \"total_amount\": 1.001}" },
		{ "OrderCompleted", "{\"customer_id\": \"c1\", \"order_id\": \"o\", \"total_amount\": -3}" },
		{ "OrderCompleted", "{\"customer_id\": \"c1\", \"total_amount\": 3}" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(feed(activity, 0, bad[i].type, 1 + (int64_t)i, bad[i].data), PROJECTION_REJECT,
			     "taken: %s %s", bad[i].type, bad[i].data);
		cr_expect_eq(op.kind, BULK_NONE, "a rejected event changed the operation");
	}
}

/* A fresh operation, the parsed events freed (for tests that feed many). */
static void fresh_op(void)
{
	bulk_op_release(&op);
	memset(&op, 0, sizeof(op));
	for (size_t i = 0; i < n_trees; i++)
		yajl_tree_free(trees[i]);
	n_trees = 0;
}

/*
 * Dates are checked as the indices' `date` mapping parses them (every value
 * in these lists was tried against the node: the accepted ones are indexed, the
 * others answered mapper_parsing_exception, except the forms marked
 * "stricter", which the node takes and the projection refuses), so the node
 * never refuses what the projection takes.
 */
static const char *const mapping_good[] = {
	"2026-01-05", "2026-01-05T10:00", "2026-01-05T10:00Z", "2026-01-05T10:00:00",
	"2026-01-05T10:00:00Z", "2026-01-05T10:00:00.123456789Z", "2024-02-29",
	"2026-01-05T10:00:00+18:00", "2026-01-05T10:00:00-18:00", "2026-01-05T10:00:00.5+05:30",
	"0001-01-01", "9999-12-31T23:59:59Z",
};
static const char *const mapping_bad[] = {
	"2026-01-05T10:00:00.1234567891Z", "2026-01-05T10:00:00.", "2026-02-30T10:00:00Z",
	"2025-02-29", "2026-01-05T24:00:00Z", "2026-01-05T23:59:60Z", "2026-01-05T10:00:00+18:01",
	"2026-01-05T10:00:00+19:00", "2026-1-05", "yesterday", "2026-01-05t10:00:00z",
	"2026-01-05 10:00:00", "+2026-01-05", "2026-13-01", "2026-00-10", "2026-01-00", "",
	"2026-01-05T", "2026-01-05T10:00:00Z ", "2026-01-05T10:00:00+05:3",
	/* stricter than the node */
	"1700000000000", "2026-01-05T10", "2026-01-05T10:00:00+0530", "2026-01-05T10:00:00+05",
	"0000-01-01", "0001-01-01T00:30:00+01:00", /* (UTC: year 0) */
};

Test(customer_activity, dates_are_checked_as_the_mapping_parses_them)
{
	static const char *const fields[][2] = {
		{ "CustomerCreated", "created_at" },
		{ "OrderCompleted", "completed_at" },
		{ "ReviewSubmitted", "submitted_at" },
	};
	char data[512];

	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
		for (int pass = 0; pass < 2; pass++) {
			const char *const *list = pass ? mapping_bad : mapping_good;
			size_t n = pass ? sizeof(mapping_bad) / sizeof(mapping_bad[0])
					: sizeof(mapping_good) / sizeof(mapping_good[0]);
			for (size_t i = 0; i < n; i++) {
				snprintf(data, sizeof(data),
					 "{\"customer_id\": \"c1\", \"order_id\": \"o1\", \"product_id\": \"p1\","
					 " \"rating\": 4, \"total_amount\": 1.50, \"item_count\": 1,"
					 " \"email\": null, \"name\": null, \"%s\": \"%s\"}",
					 fields[f][1], list[i]);
				for (size_t slot = 0; slot < 2; slot++) {
					int rc;
					if (slot == 1 && strcmp(fields[f][0], "OrderCompleted"))
						continue;
					fresh_op();
					rc = feed(activity, slot, fields[f][0], 1, data);
					if (pass)
						cr_expect_eq(rc, PROJECTION_REJECT, "slot %zu took %s '%s'", slot,
							     fields[f][1], list[i]);
					else
						cr_expect_eq(rc, 0, "slot %zu refused %s '%s': %s", slot,
							     fields[f][1], list[i], err);
				}
			}
		}
	}
	/* null and absent are no date, and fine */
	fresh_op();
	cr_expect_eq(feed(activity, 0, "ReviewSubmitted", 1,
			  "{\"customer_id\": \"c1\", \"product_id\": \"p1\", \"rating\": 4,"
			  " \"submitted_at\": null}"), 0, "%s", err);
	cr_expect_eq(feed(activity, 0, "CustomerCreated", 2, "{\"customer_id\": \"c1\"}"), 0, "%s", err);
}

/* Ids and keywords within the sizes the index holds; no node refusal. */
Test(customer_activity, oversized_ids_and_keywords_are_rejected)
{
	size_t big = 40000;
	char *data = malloc(big + 256);
	char *fill = malloc(big + 1);

	cr_assert(data && fill);
	memset(fill, 'x', big);
	fill[big] = '\0';
	snprintf(data, big + 256, "{\"customer_id\": \"c1\", \"email\": \"%s\"}", fill);
	cr_expect_eq(feed(activity, 0, "CustomerCreated", 1, data), PROJECTION_REJECT, "a huge email");
	snprintf(data, big + 256, "{\"customer_id\": \"c1\", \"new_tier\": \"%s\"}", fill);
	cr_expect_eq(feed(activity, 0, "CustomerTierChanged", 2, data), PROJECTION_REJECT, "a huge tier");
	fill[513] = '\0';
	fresh_op();
	snprintf(data, big + 256,
		 "{\"customer_id\": \"%s\", \"order_id\": \"o1\", \"total_amount\": 1, \"completed_at\": null}",
		 fill);
	cr_expect_eq(feed(activity, 1, "OrderCompleted", 3, data), PROJECTION_REJECT,
		     "a customer_id of 513 bytes in customer_orders");
	cr_expect_eq(op.kind, BULK_NONE, "a rejected event changed the operation");
	fill[512] = '\0';
	fresh_op();
	snprintf(data, big + 256,
		 "{\"customer_id\": \"%s\", \"order_id\": \"o1\", \"total_amount\": 1, \"completed_at\": null}",
		 fill);
	cr_expect_eq(feed(activity, 1, "OrderCompleted", 4, data), 0, "512 bytes: %s", err);
	free(fill);
	free(data);
}

/*
 * One rule for both projections: an OrderCompleted whose completed_at
 * customer_activity refuses is refused by daily_sales too, and the other
 * way round (before, daily_sales counted "...:60Z" and "+20:00", which the
 * customers index refused).
 */
Test(customer_activity, daily_sales_takes_the_same_dates)
{
	char data[512];

	for (int pass = 0; pass < 2; pass++) {
		const char *const *list = pass ? mapping_bad : mapping_good;
		size_t n = pass ? sizeof(mapping_bad) / sizeof(mapping_bad[0])
				: sizeof(mapping_good) / sizeof(mapping_good[0]);
		for (size_t i = 0; i < n; i++) {
			int daily_rc, activity_rc;
			snprintf(data, sizeof(data), DONE("%s"), list[i]);
			(void)id_of(daily, 0, "OrderCompleted", data, &daily_rc);
			fresh_op();
			activity_rc = feed(activity, 0, "OrderCompleted", 1, data);
			cr_expect_eq(daily_rc, pass ? PROJECTION_REJECT : 0, "daily_sales on '%s': %s", list[i],
				     err);
			cr_expect_eq(daily_rc, activity_rc, "'%s': daily_sales %d, customer_activity %d", list[i],
				     daily_rc, activity_rc);
		}
	}
}
