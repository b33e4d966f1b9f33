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
 * The day is that of the timestamp in UTC: `YYYY-MM-DDTHH:MM:SS[.fraction]`
 * followed by `Z` or an offset `±HH:MM` (2026-03-01T01:30:00+02:00 counts
 * for 2026-02-28); anything else is a dead letter.
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

static int two(const char *s, int *out)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return -1;
	*out = (s[0] - '0') * 10 + (s[1] - '0');
	return 0;
}

static bool leap(long y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in(long y, int m)
{
	static const int d[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && leap(y) ? 29 : d[m - 1];
}

/*
 * The UTC day of an ISO-8601 timestamp with a zone (see above), written as
 * YYYY-MM-DD into `day` (11 bytes). 0, or -1 if it is not one.
 */
static int utc_day(const char *ts, char day[11])
{
	int y1, y2, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	long y;
	const char *z;
	long minutes;

	if (strlen(ts) < 20 || two(ts, &y1) || two(ts + 2, &y2) || ts[4] != '-' || two(ts + 5, &mo) ||
	    ts[7] != '-' || two(ts + 8, &d) || ts[10] != 'T' || two(ts + 11, &h) || ts[13] != ':' ||
	    two(ts + 14, &mi) || ts[16] != ':' || two(ts + 17, &sec))
		return -1;
	y = y1 * 100 + y2;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in(y, mo) || h > 23 || mi > 59 || sec > 60)
		return -1;
	z = ts + 19;
	if (*z == '.') {
		const char *f = ++z;
		while (*z >= '0' && *z <= '9')
			z++;
		if (z == f)
			return -1;
	}
	if (z[0] == 'Z' && !z[1]) {
		sign = 0;
	} else if ((z[0] == '+' || z[0] == '-') && !two(z + 1, &oh) && z[3] == ':' && !two(z + 4, &om) &&
		   !z[6] && oh <= 23 && om <= 59) {
		sign = z[0] == '+' ? 1 : -1;
	} else {
		return -1;
	}
	/* local time minus the offset: at most one day either way */
	minutes = h * 60L + mi - sign * (oh * 60L + om);
	if (minutes < 0) {
		if (--d == 0) {
			if (--mo == 0) {
				mo = 12;
				y--;
			}
			d = days_in(y, mo);
		}
	} else if (minutes >= 24 * 60) {
		if (++d > days_in(y, mo)) {
			d = 1;
			if (++mo == 13) {
				mo = 1;
				y++;
			}
		}
	}
	if (y < 1 || y > 9999)
		return -1;
	snprintf(day, 11, "%04ld-%02d-%02d", y, mo, d);
	return 0;
}

/* The day the event counts for, from `key`. */
static int event_day(yajl_val data, const char *key, char day[11], char *err, size_t errsz)
{
	yajl_val v = projection_member(data, key);

	if (!v || !YAJL_IS_STRING(v)) {
		snprintf(err, errsz, "field '%s' must be a timestamp string", key);
		return PROJECTION_REJECT;
	}
	if (utc_day(v->u.string, day)) {
		snprintf(err, errsz, "field '%s' is not an ISO-8601 timestamp with a zone "
			 "(YYYY-MM-DDTHH:MM:SS[.f](Z|+HH:MM))", key);
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
