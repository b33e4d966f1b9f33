/*
 * products: one document per product, _id = product_id.
 *
 *   ProductCreated      {product_id, name, description, category, price, tags[], created_at}
 *                       → the document, replaced whole
 *   ProductUpdated      {product_id, name, description, category, tags[], updated_at}
 *                       → the fields present are replaced
 *   ProductPriceChanged {product_id, new_price, changed_at} → price, price_updated_at
 *   ProductDeleted      {product_id} → the document is removed
 *
 * price and new_price are money: a number with at most two decimals (trailing
 * zeros aside), no exponent, below 10^13 in size; anything else is a dead
 * letter, never a value the index rounds or saturates.
 *
 * Every write sets fields to values carried by the events, so applying the
 * events of a document again, in order, gives the same document: replaying a
 * suffix after a crash converges. Partial updates are upserts: replaying an
 * update whose document a later, already applied delete removed recreates a
 * partial document that the replayed delete then removes again.
 */
#include "esbridge/projection.h"

#include <stdio.h>
#include <string.h>

/*
 * F_MONEY: a JSON number with at most two decimals, no exponent, below 10^13
 * in size (projection_get_cents), as orders reads prices: the index keeps
 * cents (scaled_float), which would otherwise round 1.999 or saturate 2^64
 * without a word. (A negative price stays accepted, as it always was.)
 */
enum field_type { F_STRING, F_MONEY, F_STRING_ARRAY };

struct field_rule {
	const char *event_key;
	const char *doc_key;
	enum field_type type;
	bool required;
	bool nullable;
};

static const struct field_rule created_rules[] = {
	{ "name", "name", F_STRING, true, false },
	{ "description", "description", F_STRING, false, true },
	{ "category", "category", F_STRING, false, true },
	{ "price", "price", F_MONEY, true, false },
	{ "tags", "tags", F_STRING_ARRAY, false, true },
	{ "created_at", "created_at", F_STRING, false, true },
	{ NULL, NULL, F_STRING, false, false },
};

static const struct field_rule updated_rules[] = {
	{ "name", "name", F_STRING, false, false },
	{ "description", "description", F_STRING, false, true },
	{ "category", "category", F_STRING, false, true },
	{ "tags", "tags", F_STRING_ARRAY, false, true },
	{ "updated_at", "updated_at", F_STRING, false, true },
	{ NULL, NULL, F_STRING, false, false },
};

static const struct field_rule price_rules[] = {
	{ "new_price", "price", F_MONEY, true, false },
	{ "changed_at", "price_updated_at", F_STRING, false, true },
	{ NULL, NULL, F_STRING, false, false },
};

static const char *type_name(enum field_type t)
{
	switch (t) {
	case F_STRING:
		return "a string";
	case F_MONEY:
		return "a number";
	case F_STRING_ARRAY:
		return "an array of strings";
	}
	return "?";
}

static bool has_type(yajl_val v, enum field_type t)
{
	switch (t) {
	case F_STRING:
		return YAJL_IS_STRING(v);
	case F_MONEY:
		return YAJL_IS_NUMBER(v);
	case F_STRING_ARRAY:
		if (!YAJL_IS_ARRAY(v))
			return false;
		for (size_t i = 0; i < v->u.array.len; i++)
			if (!YAJL_IS_STRING(v->u.array.values[i]))
				return false;
		return true;
	}
	return false;
}

static int check_rules(yajl_val data, const struct field_rule *rules, char *err, size_t errsz)
{
	for (const struct field_rule *r = rules; r->event_key; r++) {
		yajl_val v = projection_member(data, r->event_key);
		if (!v) {
			if (r->required) {
				snprintf(err, errsz, "missing field '%s'", r->event_key);
				return PROJECTION_REJECT;
			}
			continue;
		}
		if (YAJL_IS_NULL(v)) {
			if (r->nullable)
				continue;
			snprintf(err, errsz, "field '%s' must be %s, not null", r->event_key,
				 type_name(r->type));
			return PROJECTION_REJECT;
		}
		if (!has_type(v, r->type)) {
			snprintf(err, errsz, "field '%s' must be %s", r->event_key, type_name(r->type));
			return PROJECTION_REJECT;
		}
		if (r->type == F_MONEY) {
			int64_t cents;
			if (projection_get_cents(data, r->event_key, &cents, err, errsz))
				return PROJECTION_REJECT;
		}
	}
	return 0;
}

static int set_fields(struct bulk_op *op, yajl_val data, const struct field_rule *rules)
{
	struct bulk_value v = { .kind = BV_JSON };

	v.u.json = projection_member(data, "product_id");
	if (bulk_op_set(op, "product_id", v))
		return -2;
	for (const struct field_rule *r = rules; r->event_key; r++) {
		v.u.json = projection_member(data, r->event_key);
		if (v.u.json && bulk_op_set(op, r->doc_key, v))
			return -2;
	}
	return 0;
}

static int products_doc_id(const struct event *ev, yajl_val data, struct buf *id,
			   char *err, size_t errsz)
{
	(void)ev;
	return projection_get_id(data, "product_id", id, err, errsz);
}

/* A partial update: merged into what is pending for the document. */
static int apply_partial(struct bulk_op *op, yajl_val data, const struct field_rule *rules,
			 char *err, size_t errsz)
{
	int rc = check_rules(data, rules, err, errsz);

	if (rc)
		return rc;
	switch (op->kind) {
	case BULK_NONE:
	case BULK_UPDATE:
		op->kind = BULK_UPDATE;
		break;
	case BULK_DELETE:
		/* delete then upsert: the document is exactly these fields */
		bulk_op_clear_fields(op);
		op->kind = BULK_INDEX;
		break;
	case BULK_INDEX:
		break;
	case BULK_SCRIPT:
		snprintf(err, errsz, "products never writes through a script");
		return PROJECTION_REJECT;
	}
	return set_fields(op, data, rules);
}

static int products_apply(const struct event *ev, yajl_val data, struct bulk_op *op,
			  char *err, size_t errsz)
{
	int rc;

	if (!strcmp(ev->type, "ProductCreated")) {
		rc = check_rules(data, created_rules, err, errsz);
		if (rc)
			return rc;
		bulk_op_clear_fields(op);
		op->kind = BULK_INDEX;
		return set_fields(op, data, created_rules);
	}
	if (!strcmp(ev->type, "ProductUpdated"))
		return apply_partial(op, data, updated_rules, err, errsz);
	if (!strcmp(ev->type, "ProductPriceChanged"))
		return apply_partial(op, data, price_rules, err, errsz);
	if (!strcmp(ev->type, "ProductDeleted")) {
		bulk_op_clear_fields(op);
		op->kind = BULK_DELETE;
		return 0;
	}
	return projection_unknown_type(ev, err, errsz);
}

static const char *const products_types[] = {
	"ProductCreated", "ProductUpdated", "ProductPriceChanged", "ProductDeleted", NULL,
};

static const char *const products_streams[] = { "product-", NULL };

const struct projection projection_products = {
	.name = "products",
	.event_types = products_types,
	.streams = products_streams,
	.doc_id = products_doc_id,
	.apply = products_apply,
};
