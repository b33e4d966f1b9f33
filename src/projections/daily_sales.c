/*
 * daily_sales: one document per UTC day, _id = YYYY-MM-DD.
 *
 *   OrderCompleted {order_id, customer_id, total_amount, item_count, completed_at}
 *                  → on the day of completed_at: total_orders += 1,
 *                    total_revenue += total_amount, total_items += item_count
 *   OrderRefunded  {order_id, refund_amount, original_completed_at, refunded_at}
 *                  → on the day of original_completed_at: total_orders −= 1,
 *                    total_revenue −= refund_amount, total_refunds += refund_amount
 *
 * The day is that of the timestamp in UTC, read by projection_date(), the
 * rule customer_activity applies to the same field: a date the indices'
 * `date` fields accept, without a zone meaning UTC as Elasticsearch reads it
 * (2026-03-01T01:30:00+02:00 counts for 2026-02-28, 2026-03-01 for
 * 2026-03-01); anything else is a dead letter.
 *
 * A day document receives the events of many streams, but the pipeline
 * reads them in (transaction_id, global_position) order and routes every
 * event of one day to the same lane, so the guard of the orders projection
 * works here unchanged: each event is one entry of a guarded update through
 * the stored script (bulk.h), applied only when newer than the document's
 * last_event. The update is an upsert: the first event of a day creates its
 * document with zero totals. Money is integer cents on this side and a
 * BigDecimal with two places, built from text, in the script.
 */
#include "esbridge/projection.h"

#include <stdio.h>
#include <string.h>

#define MAX_ITEMS 1000000000LL

static const char *const daily_types[] = { "OrderCompleted", "OrderRefunded", NULL };

/* The day the event counts for, from `key`. */
static int event_day(yajl_val data, const char *key, char day[11], char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);

	if (!v || !YAJL_IS_STRING(v)) {
		snprintf(err, errsz, "field '%s' must be a timestamp string", key);
		return PROJECTION_REJECT;
	}
	if (!projection_date(v->u.string, day)) {
		snprintf(err, errsz, "field '%s' is not a date the index accepts "
			 "(YYYY-MM-DD[THH:MM[:SS[.f]]][Z|+HH:MM])", key);
		return PROJECTION_REJECT;
	}
	return 0;
}

static bool completed(const struct event *ev)
{
	return !strcmp(ev->type, "OrderCompleted");
}

static int daily_doc_id(const struct event *ev, yajl_val data, struct buf *id, char *err, size_t errsz)
{
	char day[11];

	if (!completed(ev) && strcmp(ev->type, "OrderRefunded")) {
		return projection_unknown_type(ev, err, errsz);
	}
	if (event_day(data, completed(ev) ? "completed_at" : "original_completed_at", day, err, errsz))
		return PROJECTION_REJECT;
	buf_reset(id);
	if (buf_append_str(id, day) || buf_error(id)) {
		snprintf(err, errsz, "out of memory");
		return -2;
	}
	return 0;
}

/* The document a day starts as, when its first event creates it. */
static int defaults(struct bulk_op *op, const char *day)
{
	struct bulk_value v = { .kind = BV_STRING };
	int rc = 0;

	v.u.string = (char *)(uintptr_t)day;
	rc |= bulk_op_set(op, "date", v);
	rc |= bulk_op_set(op, "total_orders", bulk_int_value(0));
	rc |= bulk_op_set(op, "total_items", bulk_int_value(0));
	rc |= bulk_op_set(op, "total_revenue", bulk_cents_value(0));
	rc |= bulk_op_set(op, "total_refunds", bulk_cents_value(0));
	return rc ? -2 : 0;
}

static int daily_apply(const struct event *ev, yajl_val data, struct bulk_op *op,
		       char *err, size_t errsz)
{
	struct bulk_entry *e;
	int64_t cents;
	long long items = 0;
	char day[11];
	int rc = 0;

	/* everything checked before the operation changes */
	if (event_day(data, completed(ev) ? "completed_at" : "original_completed_at", day, err, errsz))
		return PROJECTION_REJECT;
	if (projection_get_cents(data, completed(ev) ? "total_amount" : "refund_amount", &cents, err,
				 errsz))
		return PROJECTION_REJECT;
	if (cents < 0) {
		snprintf(err, errsz, "field '%s' must not be negative",
			 completed(ev) ? "total_amount" : "refund_amount");
		return PROJECTION_REJECT;
	}
	if (completed(ev) && projection_get_int(data, "item_count", 0, MAX_ITEMS, &items, err, errsz))
		return PROJECTION_REJECT;

	if (op->kind == BULK_NONE) {
		op->kind = BULK_SCRIPT;
		op->upsert = true; /* the first event of a day creates it */
		if (defaults(op, day))
			return -2;
	}
	e = bulk_op_add_entry(op, ev->at);
	if (!e)
		return -2;
	if (completed(ev)) {
		rc |= bulk_entry_add(e, "total_orders", bulk_int_value(1));
		rc |= bulk_entry_add(e, "total_items", bulk_int_value(items));
		rc |= bulk_entry_add(e, "total_revenue", bulk_cents_value(cents));
	} else {
		rc |= bulk_entry_add(e, "total_orders", bulk_int_value(-1));
		rc |= bulk_entry_add(e, "total_revenue", bulk_cents_value(-cents));
		rc |= bulk_entry_add(e, "total_refunds", bulk_cents_value(cents));
	}
	return rc ? -2 : 0;
}

const struct projection projection_daily_sales = {
	.name = "daily_sales",
	.event_types = daily_types,
	.doc_id = daily_doc_id,
	.apply = daily_apply,
};
