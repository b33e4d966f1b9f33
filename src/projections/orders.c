/*
 * orders: one document per order, _id = order_id.
 *
 *   OrderCreated     {order_id, customer_id, created_at}
 *                    → {order_id, customer_id, status "pending", total_amount 0,
 *                       item_count 0, created_at}, replacing any document
 *   OrderItemAdded   {order_id, product_id, price, quantity}
 *                    → total_amount += price × quantity, item_count += 1
 *   OrderItemRemoved {order_id, product_id, price, quantity}
 *                    → total_amount −= price × quantity, item_count −= 1
 *   OrderShipped     {order_id, shipped_at} → status "shipped", shipped_at
 *   OrderCompleted   {order_id, customer_id, total_amount, item_count, completed_at}
 *                    → status "completed", completed_at (the totals in the
 *                      event are not copied: the document keeps its own)
 *   OrderCancelled   {order_id, cancelled_at, reason}
 *                    → status "cancelled", cancelled_at, cancellation_reason
 *
 * Every document carries updated_at (the created_at column of the last
 * event applied) and last_event {txid, position}, the replay guard.
 *
 * Money is kept in integer cents and written as a decimal with two places.
 *
 * How events become writes, per request and document:
 *  - when the document's first event in the request is OrderCreated, the
 *    whole document is computed here and written with one plain `index`
 *    (a replay may briefly write an older state; the later events then
 *    apply again on top of it, guarded, and the result converges);
 *    (events already queued for the script stay a separate, earlier action);
 *  - otherwise the events are sent, in order, to the stored script (see
 *    bulk.h), which applies only those newer than the document's
 *    last_event: replaying them adds nothing twice. An event for an order
 *    the index does not hold is answered 404 and becomes a dead letter.
 */
#include "esbridge/projection.h"

#include <stdio.h>
#include <string.h>

#define MAX_QUANTITY 1000000LL
#define MAX_LINE_CENTS 1000000000000000LL   /* 10^13 in money */

enum order_event {
	O_CREATED, O_ITEM_ADDED, O_ITEM_REMOVED, O_SHIPPED, O_COMPLETED, O_CANCELLED, O_UNKNOWN,
};

static const char *const orders_types[] = {
	"OrderCreated", "OrderItemAdded", "OrderItemRemoved", "OrderShipped", "OrderCompleted",
	"OrderCancelled", NULL,
};

static enum order_event kind_of(const char *type)
{
	for (int i = 0; orders_types[i]; i++)
		if (!strcmp(orders_types[i], type))
			return (enum order_event)i;
	return O_UNKNOWN;
}

/* What one event does, checked before anything is changed. */
struct effect {
	enum order_event kind;
	int64_t amount;                  /* cents added to total_amount */
	int count;                       /* added to item_count */
	const char *status;              /* NULL: unchanged */
	const char *time_field;          /* shipped_at, completed_at, cancelled_at */
	yajl_val time;
	yajl_val reason;                 /* cancellation_reason */
	yajl_val order_id, customer_id, created_at;
};

static int read_effect(const struct event *ev, yajl_val data, struct effect *fx,
		       char *err, size_t errsz)
{
	int64_t price;
	long long qty;
	yajl_val product;

	memset(fx, 0, sizeof(*fx));
	fx->kind = kind_of(ev->type);
	if (projection_get_id_value(data, "order_id", &fx->order_id, err, errsz))
		return PROJECTION_REJECT;
	switch (fx->kind) {
	case O_CREATED:
		if (projection_get_id_value(data, "customer_id", &fx->customer_id, err, errsz) ||
		    projection_get_opt_string(data, "created_at", &fx->created_at, err, errsz))
			return PROJECTION_REJECT;
		fx->status = "pending";
		return 0;
	case O_ITEM_ADDED:
	case O_ITEM_REMOVED:
		if (projection_get_id_value(data, "product_id", &product, err, errsz) ||
		    projection_get_cents(data, "price", &price, err, errsz) ||
		    projection_get_int(data, "quantity", 1, MAX_QUANTITY, &qty, err, errsz))
			return PROJECTION_REJECT;
		if (price < 0) {
			snprintf(err, errsz, "field 'price' must not be negative");
			return PROJECTION_REJECT;
		}
		/* price (up to 10^15 cents) × quantity (up to 10^6) can pass int64 */
		if (__builtin_mul_overflow(price, (int64_t)qty, &fx->amount) || fx->amount > MAX_LINE_CENTS) {
			snprintf(err, errsz, "price × quantity is more than 10^13");
			return PROJECTION_REJECT;
		}
		fx->count = 1;
		if (fx->kind == O_ITEM_REMOVED) {
			fx->amount = -fx->amount;
			fx->count = -1;
		}
		return 0;
	case O_SHIPPED:
		fx->status = "shipped";
		fx->time_field = "shipped_at";
		return projection_get_opt_string(data, "shipped_at", &fx->time, err, errsz);
	case O_COMPLETED:
		fx->status = "completed";
		fx->time_field = "completed_at";
		return projection_get_opt_string(data, "completed_at", &fx->time, err, errsz);
	case O_CANCELLED:
		fx->status = "cancelled";
		fx->time_field = "cancelled_at";
		if (projection_get_opt_string(data, "reason", &fx->reason, err, errsz))
			return PROJECTION_REJECT;
		return projection_get_opt_string(data, "cancelled_at", &fx->time, err, errsz);
	case O_UNKNOWN:
		break;
	}
	return projection_unknown_type(ev, err, errsz);
}

/* The whole document: folded here, written with one `index`. */
static int fold_index(const struct event *ev, const struct effect *fx, struct bulk_op *op)
{
	struct bulk_value v;
	int rc = 0;

	if (fx->kind == O_CREATED) {
		bulk_op_clear_fields(op);
		bulk_op_clear_entries(op);
		op->kind = BULK_INDEX;
		rc |= bulk_op_set(op, "order_id", bulk_json_value(fx->order_id));
		rc |= bulk_op_set(op, "customer_id", bulk_json_value(fx->customer_id));
		rc |= bulk_op_set(op, "status", bulk_text_value("pending"));
		rc |= bulk_op_set(op, "total_amount", bulk_cents_value(0));
		rc |= bulk_op_set(op, "item_count", bulk_int_value(0));
		rc |= bulk_op_set(op, "created_at", bulk_json_value(fx->created_at));
	} else {
		struct bulk_value *total = bulk_op_get(op, "total_amount");
		struct bulk_value *count = bulk_op_get(op, "item_count");
		if (!total || !count)
			return -2;
		total->u.cents += fx->amount;
		count->u.i += fx->count;
		if (fx->status)
			rc |= bulk_op_set(op, "status", bulk_text_value(fx->status));
		if (fx->time_field)
			rc |= bulk_op_set(op, fx->time_field, bulk_json_value(fx->time));
		if (fx->kind == O_CANCELLED)
			rc |= bulk_op_set(op, "cancellation_reason", bulk_json_value(fx->reason));
	}
	rc |= bulk_op_set(op, "updated_at", bulk_text_value(ev->created_at));
	v.kind = BV_POSITION;
	v.u.at = ev->at;
	rc |= bulk_op_set(op, "last_event", v);
	return rc ? -2 : 0;
}

/* One guarded entry for the stored script. */
static int fold_script(const struct event *ev, const struct effect *fx, struct bulk_op *op)
{
	struct bulk_entry *e;
	int rc = 0;

	op->kind = BULK_SCRIPT;
	op->upsert = false; /* a missing order is an error: dead letter */
	e = bulk_op_add_entry(op, ev->at);
	if (!e)
		return -2;
	if (fx->amount || fx->count) {
		rc |= bulk_entry_add(e, "total_amount", bulk_cents_value(fx->amount));
		rc |= bulk_entry_add(e, "item_count", bulk_int_value(fx->count));
	}
	if (fx->status)
		rc |= bulk_entry_set(e, "status", bulk_text_value(fx->status));
	if (fx->time_field)
		rc |= bulk_entry_set(e, fx->time_field, bulk_json_value(fx->time));
	if (fx->kind == O_CANCELLED)
		rc |= bulk_entry_set(e, "cancellation_reason", bulk_json_value(fx->reason));
	rc |= bulk_entry_set(e, "updated_at", bulk_text_value(ev->created_at));
	return rc ? -2 : 0;
}

static int orders_doc_id(const struct event *ev, yajl_val data, struct buf *id,
			 char *err, size_t errsz)
{
	(void)ev;
	return projection_get_id(data, "order_id", id, err, errsz);
}

static int orders_apply(const struct event *ev, yajl_val data, struct bulk_op *op,
			char *err, size_t errsz)
{
	struct effect fx;

	if (read_effect(ev, data, &fx, err, errsz))
		return PROJECTION_REJECT;
	/*
	 * Events queued for the script before a creation must still reach the
	 * index on their own: they apply to the order as it is there, or, if it
	 * is not, come back as 404 and become dead letters, as they would if
	 * the creation had been in a later request.
	 */
	if (fx.kind == O_CREATED && op->kind == BULK_SCRIPT)
		return PROJECTION_NEW_OP;
	if (fx.kind != O_CREATED && op->kind == BULK_INDEX) {
		const struct bulk_value *total = bulk_op_get(op, "total_amount");
		int64_t sum;
		if (total && __builtin_add_overflow(total->u.cents, fx.amount, &sum)) {
			snprintf(err, errsz, "the order total would overflow");
			return PROJECTION_REJECT;
		}
	}
	if (fx.kind == O_CREATED || op->kind == BULK_INDEX)
		return fold_index(ev, &fx, op);
	return fold_script(ev, &fx, op);
}

static const char *const orders_streams[] = { "order-", NULL };

const struct projection projection_orders = {
	.name = "orders",
	.event_types = orders_types,
	.streams = orders_streams,
	.doc_id = orders_doc_id,
	.apply = orders_apply,
};
