/*
 * customer_activity: one projection, two indices under one checkpoint.
 *
 *   customers (slot 0), one document per customer, _id = customer_id:
 *     CustomerCreated     {customer_id, email, name, created_at}
 *                         → email, name, created_at, tier "bronze"
 *     OrderCompleted      {order_id, customer_id, total_amount, item_count, completed_at}
 *                         → total_orders += 1, total_spent += total_amount,
 *                           last_order_at = completed_at
 *     ReviewSubmitted     {customer_id, product_id, rating, submitted_at}
 *                         → total_reviews += 1, last_review_at = submitted_at
 *     CustomerTierChanged {customer_id, new_tier, changed_at} → tier = new_tier
 *   customer_orders (slot 1), one document per completed order, _id = order_id:
 *     OrderCompleted      → {customer_id, order_id, amount = total_amount, completed_at},
 *                           written whole
 *
 * Every customers document carries customer_id, updated_at (the created_at
 * column of the last event applied) and last_event, the replay guard: its
 * events go, in order, as entries of one guarded update through the stored
 * script (bulk.h), as in the orders projection.
 *
 * An event for a customer the index does not hold yet (an order or review
 * committed before the CustomerCreated of another stream) is not lost: the
 * update is an upsert that starts the document from
 * {customer_id, tier "bronze", total_orders 0, total_spent 0, total_reviews 0};
 * CustomerCreated later fills in email, name, created_at (and tier
 * "bronze") without touching the counters. Counts therefore do not depend
 * on which stream committed first. "last_*" fields are those of the last
 * event applied in commit order.
 *
 * Every value written is checked here against what the mappings take (dates
 * as `date` fields parse them, ids and keywords within their sizes), so the
 * node refuses nothing this projection accepts: a bad event is a dead letter
 * at once, naming its document, which it holds back (README "Dead letters").
 */
#include "esbridge/projection.h"

#include <stdio.h>
#include <string.h>

enum { SLOT_CUSTOMERS = 0, SLOT_ORDERS = 1 };

enum ca_event { C_CREATED, C_ORDER, C_REVIEW, C_TIER, C_UNKNOWN };

static const char *const ca_types[] = {
	"CustomerCreated", "OrderCompleted", "ReviewSubmitted", "CustomerTierChanged", NULL,
};

static const char *const ca_indices[] = { "customers", "customer_orders", NULL };

static enum ca_event kind_of(const char *type)
{
	for (int i = 0; ca_types[i]; i++)
		if (!strcmp(ca_types[i], type))
			return (enum ca_event)i;
	return C_UNKNOWN;
}

static int ca_doc_id(const struct event *ev, yajl_val data, size_t slot, struct buf *id,
		     char *err, size_t errsz)
{
	enum ca_event k = kind_of(ev->type);

	if (k == C_UNKNOWN) {
		if (slot != SLOT_CUSTOMERS)
			return PROJECTION_SKIP;
		return projection_unknown_type(ev, err, errsz);
	}
	if (slot == SLOT_CUSTOMERS)
		return projection_get_id(data, "customer_id", id, err, errsz);
	if (slot == SLOT_ORDERS && k == C_ORDER)
		return projection_get_id(data, "order_id", id, err, errsz);
	return PROJECTION_SKIP;
}

/* Lucene refuses a keyword term above this many bytes (the node answers 400). */
#define MAX_KEYWORD_BYTES 32766

/* A keyword field: a string the index can hold; unless `required`, also null or absent. */
static int keyword(yajl_val data, const char *key, bool required, yajl_val *out, char *err,
		   size_t errsz)
{
	bool bad;

	*out = projection_get_string(data, key, required, &bad, err, errsz);
	if (bad)
		return PROJECTION_REJECT;
	if (*out && strlen((*out)->u.string) > MAX_KEYWORD_BYTES) {
		snprintf(err, errsz, "field '%s' is longer than %d bytes", key, MAX_KEYWORD_BYTES);
		return PROJECTION_REJECT;
	}
	return 0;
}

/* An optional date field: null, absent or a string projection_date takes. */
static int opt_date(yajl_val data, const char *key, yajl_val *out, char *err, size_t errsz)
{
	if (projection_get_opt_string(data, key, out, err, errsz))
		return PROJECTION_REJECT;
	if (*out && !projection_date((*out)->u.string, NULL)) {
		snprintf(err, errsz, "field '%s' is not a date the index accepts "
			 "(YYYY-MM-DD[THH:MM[:SS[.f]]][Z|+HH:MM])", key);
		return PROJECTION_REJECT;
	}
	return 0;
}

/* What one event does to a customer, checked before anything changes. */
struct effect {
	enum ca_event kind;
	yajl_val id, order_id, a, b, c;  /* by kind: email/name/created_at, completed_at, ... */
	int64_t cents;
};

static int read_effect(const struct event *ev, yajl_val data, struct effect *fx, char *err,
		       size_t errsz)
{
	long long rating;

	memset(fx, 0, sizeof(*fx));
	fx->kind = kind_of(ev->type);
	if (projection_get_id_value(data, "customer_id", &fx->id, err, errsz))
		return PROJECTION_REJECT;
	switch (fx->kind) {
	case C_CREATED:
		if (keyword(data, "email", false, &fx->a, err, errsz) ||
		    projection_get_opt_string(data, "name", &fx->b, err, errsz) ||
		    opt_date(data, "created_at", &fx->c, err, errsz))
			return PROJECTION_REJECT;
		return 0;
	case C_ORDER:
		if (projection_get_id_value(data, "order_id", &fx->order_id, err, errsz) ||
		    projection_get_cents(data, "total_amount", &fx->cents, err, errsz) ||
		    opt_date(data, "completed_at", &fx->a, err, errsz))
			return PROJECTION_REJECT;
		if (fx->cents < 0) {
			snprintf(err, errsz, "field 'total_amount' must not be negative");
			return PROJECTION_REJECT;
		}
		return 0;
	case C_REVIEW:
		if (projection_get_id_value(data, "product_id", &fx->order_id, err, errsz) ||
		    projection_get_int(data, "rating", 1, 5, &rating, err, errsz) ||
		    opt_date(data, "submitted_at", &fx->a, err, errsz))
			return PROJECTION_REJECT;
		return 0;
	case C_TIER:
		if (keyword(data, "new_tier", true, &fx->a, err, errsz))
			return PROJECTION_REJECT;
		if (!fx->a->u.string[0]) {
			snprintf(err, errsz, "field 'new_tier' must not be empty");
			return PROJECTION_REJECT;
		}
		/* not written, yet checked: a changed_at neither a string nor null is a dead letter */
		return projection_get_opt_string(data, "changed_at", &fx->b, err, errsz);
	case C_UNKNOWN:
		break;
	}
	return projection_unknown_type(ev, err, errsz);
}

/* The document a customer starts as when an event creates it. */
static int customer_defaults(struct bulk_op *op, yajl_val id)
{
	int rc = 0;

	rc |= bulk_op_set(op, "customer_id", bulk_json_value(id));
	rc |= bulk_op_set(op, "tier", bulk_text_value("bronze"));
	rc |= bulk_op_set(op, "total_orders", bulk_int_value(0));
	rc |= bulk_op_set(op, "total_reviews", bulk_int_value(0));
	rc |= bulk_op_set(op, "total_spent", bulk_cents_value(0));
	return rc ? -2 : 0;
}

static int apply_customer(const struct event *ev, const struct effect *fx, struct bulk_op *op)
{
	struct bulk_entry *e;
	int rc = 0;

	if (op->kind == BULK_NONE) {
		op->kind = BULK_SCRIPT;
		op->upsert = true; /* a customer not created yet starts from the defaults */
		if (customer_defaults(op, fx->id))
			return -2;
	}
	e = bulk_op_add_entry(op, ev->at);
	if (!e)
		return -2;
	switch (fx->kind) {
	case C_CREATED:
		rc |= bulk_entry_set(e, "email", bulk_json_value(fx->a));
		rc |= bulk_entry_set(e, "name", bulk_json_value(fx->b));
		rc |= bulk_entry_set(e, "created_at", bulk_json_value(fx->c));
		rc |= bulk_entry_set(e, "tier", bulk_text_value("bronze"));
		break;
	case C_ORDER:
		rc |= bulk_entry_add(e, "total_orders", bulk_int_value(1));
		rc |= bulk_entry_add(e, "total_spent", bulk_cents_value(fx->cents));
		rc |= bulk_entry_set(e, "last_order_at", bulk_json_value(fx->a));
		break;
	case C_REVIEW:
		rc |= bulk_entry_add(e, "total_reviews", bulk_int_value(1));
		rc |= bulk_entry_set(e, "last_review_at", bulk_json_value(fx->a));
		break;
	case C_TIER:
		rc |= bulk_entry_set(e, "tier", bulk_json_value(fx->a));
		break;
	case C_UNKNOWN:
		return -2;
	}
	rc |= bulk_entry_set(e, "updated_at", bulk_text_value(ev->created_at));
	return rc ? -2 : 0;
}

/* customer_orders: the whole document, replaced by a later completion of the order. */
static int apply_order(const struct effect *fx, struct bulk_op *op)
{
	int rc = 0;

	bulk_op_clear_fields(op);
	op->kind = BULK_INDEX;
	rc |= bulk_op_set(op, "customer_id", bulk_json_value(fx->id));
	rc |= bulk_op_set(op, "order_id", bulk_json_value(fx->order_id));
	rc |= bulk_op_set(op, "amount", bulk_cents_value(fx->cents));
	rc |= bulk_op_set(op, "completed_at", bulk_json_value(fx->a));
	return rc ? -2 : 0;
}

static int ca_apply(const struct event *ev, yajl_val data, struct bulk_op *op, char *err,
		    size_t errsz)
{
	struct effect fx;

	if (read_effect(ev, data, &fx, err, errsz))
		return PROJECTION_REJECT;
	if (op->slot == SLOT_ORDERS)
		return fx.kind == C_ORDER ? apply_order(&fx, op) : -2;
	return apply_customer(ev, &fx, op);
}

const struct projection projection_customer_activity = {
	.name = "customer_activity",
	.event_types = ca_types,
	.indices = ca_indices,
	.doc_id_in = ca_doc_id,
	.apply = ca_apply,
};
