#include "esbridge/bulk.h"
#include "esbridge/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>

#include "esbridge/json.h"

int bulk_op_init(struct bulk_op *op, const char *id, size_t id_len)
{
	memset(op, 0, sizeof(*op));
	op->id = malloc(id_len + 1);
	if (!op->id)
		return -1;
	memcpy(op->id, id, id_len);
	op->id[id_len] = '\0';
	return 0;
}

static void value_release(struct bulk_value *v)
{
	if (v->kind == BV_STRING)
		free(v->u.string);
	v->kind = BV_NULL;
}

void bulk_op_clear_fields(struct bulk_op *op)
{
	for (size_t i = 0; i < op->n_fields; i++)
		value_release(&op->fields[i].value);
	op->n_fields = 0;
}

static void fields_free(struct bulk_field *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		value_release(&f[i].value);
	free(f);
}

void bulk_op_clear_entries(struct bulk_op *op)
{
	for (size_t i = 0; i < op->n_entries; i++) {
		fields_free(op->entries[i].set, op->entries[i].n_set);
		fields_free(op->entries[i].add, op->entries[i].n_add);
	}
	op->n_entries = 0;
}

void bulk_op_release(struct bulk_op *op)
{
	bulk_op_clear_entries(op);
	free(op->entries);
	bulk_op_clear_fields(op);
	free(op->fields);
	free(op->events);
	free(op->id);
	memset(op, 0, sizeof(*op));
}

struct bulk_value *bulk_op_get(struct bulk_op *op, const char *name)
{
	for (size_t i = 0; i < op->n_fields; i++)
		if (!strcmp(op->fields[i].name, name))
			return &op->fields[i].value;
	return NULL;
}

/* Sets `name` in a field array (replacing a field of that name). */
static int fields_set(struct bulk_field **fields, size_t *n, size_t *cap, const char *name,
		      struct bulk_value v)
{
	struct bulk_value *slot = NULL;

	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*fields)[i].name, name))
			slot = &(*fields)[i].value;
	if (v.kind == BV_STRING) {
		char *copy = strdup(v.u.string);
		if (!copy)
			return -1;
		v.u.string = copy;
	}
	if (!slot) {
		if (*n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 8;
			struct bulk_field *nf = realloc(*fields, ncap * sizeof(*nf));
			if (!nf) {
				value_release(&v);
				return -1;
			}
			*fields = nf;
			*cap = ncap;
		}
		(*fields)[*n].name = name;
		slot = &(*fields)[(*n)++].value;
		slot->kind = BV_NULL;
	}
	value_release(slot);
	*slot = v;
	return 0;
}

struct bulk_entry *bulk_op_add_entry(struct bulk_op *op, struct position at)
{
	struct bulk_entry *e;

	if (op->n_entries == op->cap_entries) {
		size_t ncap = op->cap_entries ? op->cap_entries * 2 : 4;
		struct bulk_entry *ne = realloc(op->entries, ncap * sizeof(*ne));
		if (!ne)
			return NULL;
		op->entries = ne;
		op->cap_entries = ncap;
	}
	e = &op->entries[op->n_entries++];
	memset(e, 0, sizeof(*e));
	e->at = at;
	return e;
}

int bulk_entry_set(struct bulk_entry *e, const char *name, struct bulk_value v)
{
	return fields_set(&e->set, &e->n_set, &e->cap_set, name, v);
}

int bulk_entry_add(struct bulk_entry *e, const char *name, struct bulk_value v)
{
	if (v.kind != BV_INT && v.kind != BV_CENTS)
		return -1;
	return fields_set(&e->add, &e->n_add, &e->cap_add, name, v);
}

int bulk_op_set(struct bulk_op *op, const char *name, struct bulk_value v)
{
	return fields_set(&op->fields, &op->n_fields, &op->cap_fields, name, v);
}

int bulk_op_note_event(struct bulk_op *op, struct position at)
{
	if (op->n_events == op->cap_events) {
		size_t ncap = op->cap_events ? op->cap_events * 2 : 4;
		struct position *ne = realloc(op->events, ncap * sizeof(*ne));
		if (!ne)
			return -1;
		op->events = ne;
		op->cap_events = ncap;
	}
	op->events[op->n_events++] = at;
	return 0;
}

/*
 * yajl cannot report a failed write; the buffer's sticky error does. yajl
 * prints token by token, so the common case (room left) is done here.
 */
static void print_to_buf(void *ctx, const char *s, size_t len)
{
	struct buf *b = ctx;

	if (b->alloc && !b->err && len < 64 && b->len + len < b->alloc && b->len + len <= b->limit) {
		memcpy(b->data + b->len, s, len);
		b->len += len;
		b->data[b->len] = '\0';
		return;
	}
	(void)buf_append(b, s, len);
}

/*
 * Strings of unknown origin (ids, names, owned copies) are checked here;
 * strings of parsed events (BV_JSON) were checked by json_parse, so the
 * generator's own (weaker) UTF-8 check is off.
 */
static yajl_gen_status gen_str(yajl_gen g, const char *s)
{
	size_t n = strlen(s);

	if (!json_utf8_valid(s, n))
		return yajl_gen_invalid_string;
	return yajl_gen_string(g, (const unsigned char *)s, n);
}

static yajl_gen_status gen_tree(yajl_gen g, yajl_val v)
{
	yajl_gen_status st = yajl_gen_status_ok;

	switch (v->type) {
	case yajl_t_string:
		return json_gen_str(g, v->u.string);
	case yajl_t_number:
		/* the parser validated the text; keep it exact (no double round trip) */
		return yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
	case yajl_t_object:
		st = yajl_gen_map_open(g);
		for (size_t i = 0; st == yajl_gen_status_ok && i < v->u.object.len; i++) {
			st = json_gen_str(g, v->u.object.keys[i]);
			if (st == yajl_gen_status_ok)
				st = gen_tree(g, v->u.object.values[i]);
		}
		return st == yajl_gen_status_ok ? yajl_gen_map_close(g) : st;
	case yajl_t_array:
		st = yajl_gen_array_open(g);
		for (size_t i = 0; st == yajl_gen_status_ok && i < v->u.array.len; i++)
			st = gen_tree(g, v->u.array.values[i]);
		return st == yajl_gen_status_ok ? yajl_gen_array_close(g) : st;
	case yajl_t_true:
		return yajl_gen_bool(g, 1);
	case yajl_t_false:
		return yajl_gen_bool(g, 0);
	case yajl_t_null:
	case yajl_t_any:
		return yajl_gen_null(g);
	}
	return yajl_gen_null(g);
}

/* Decimal digits of a whole number (no printf on the hot path). */
static size_t format_int(char *out, long long v, int decimals)
{
	char tmp[32];
	size_t n = 0, len = 0;
	unsigned long long a = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do {
		tmp[n++] = (char)('0' + a % 10);
		a /= 10;
		if (decimals && (int)n == decimals)
			tmp[n++] = '.';
	} while (a || (decimals && (int)n <= decimals + 1));
	if (v < 0)
		out[len++] = '-';
	while (n)
		out[len++] = tmp[--n];
	return len;
}

static yajl_gen_status gen_int(yajl_gen g, long long v)
{
	char num[32];

	return yajl_gen_number(g, num, format_int(num, v, 0));
}

static yajl_gen_status gen_value(yajl_gen g, const struct bulk_value *v)
{
	char num[32];

	switch (v->kind) {
	case BV_NULL:
		return yajl_gen_null(g);
	case BV_JSON:
		return v->u.json ? gen_tree(g, v->u.json) : yajl_gen_null(g);
	case BV_STRING:
	case BV_TEXT:
		return gen_str(g, v->u.string);
	case BV_INT:
		return gen_int(g, v->u.i);
	case BV_CENTS:
		/* cents as a decimal with two places: -5 is -0.05 */
		return yajl_gen_number(g, num, format_int(num, (long long)v->u.cents, 2));
	case BV_POSITION: {
		yajl_gen_status st = yajl_gen_map_open(g);
		if (st == yajl_gen_status_ok)
			st = gen_str(g, "txid");
		if (st == yajl_gen_status_ok)
			st = gen_int(g, (long long)v->u.at.txid);
		if (st == yajl_gen_status_ok)
			st = gen_str(g, "position");
		if (st == yajl_gen_status_ok)
			st = gen_int(g, (long long)v->u.at.pos);
		return st == yajl_gen_status_ok ? yajl_gen_map_close(g) : st;
	}
	}
	return yajl_gen_null(g);
}

/* Chains generator calls: the first failure sticks in `st`. */
#define G(call) do { if (st == yajl_gen_status_ok) st = (call); } while (0)

static yajl_gen_status gen_fields(yajl_gen g, const struct bulk_field *f, size_t n)
{
	yajl_gen_status st = yajl_gen_map_open(g);

	for (size_t i = 0; i < n; i++) {
		G(gen_str(g, f[i].name));
		G(gen_value(g, &f[i].value));
	}
	G(yajl_gen_map_close(g));
	return st;
}

/* Whole numbers go to "i", money to "m" as integer cents. */
static yajl_gen_status gen_adds(yajl_gen g, const struct bulk_entry *e, enum bulk_value_kind kind)
{
	yajl_gen_status st = yajl_gen_map_open(g);

	for (size_t i = 0; i < e->n_add; i++) {
		if (e->add[i].value.kind != kind)
			continue;
		G(gen_str(g, e->add[i].name));
		G(gen_int(g, kind == BV_CENTS ? (long long)e->add[i].value.u.cents : e->add[i].value.u.i));
	}
	G(yajl_gen_map_close(g));
	return st;
}

static yajl_gen_status gen_script(yajl_gen g, const struct bulk_op *op)
{
	yajl_gen_status st = gen_str(g, "script");

	G(yajl_gen_map_open(g));
	G(gen_str(g, "id"));
	G(gen_str(g, BULK_SCRIPT_ID));
	G(gen_str(g, "params"));
	G(yajl_gen_map_open(g));
	G(gen_str(g, "events"));
	G(yajl_gen_array_open(g));
	for (size_t i = 0; i < op->n_entries; i++) {
		const struct bulk_entry *e = &op->entries[i];
		G(yajl_gen_map_open(g));
		G(gen_str(g, "t"));
		G(gen_int(g, (long long)e->at.txid));
		G(gen_str(g, "p"));
		G(gen_int(g, (long long)e->at.pos));
		G(gen_str(g, "s"));
		G(gen_fields(g, e->set, e->n_set));
		G(gen_str(g, "i"));
		G(gen_adds(g, e, BV_INT));
		G(gen_str(g, "m"));
		G(gen_adds(g, e, BV_CENTS));
		G(yajl_gen_map_close(g));
	}
	G(yajl_gen_array_close(g));
	G(yajl_gen_map_close(g));
	G(yajl_gen_map_close(g));
	if (op->upsert) {
		G(gen_str(g, "scripted_upsert"));
		G(yajl_gen_bool(g, 1));
		G(gen_str(g, "upsert"));
		G(gen_fields(g, op->fields, op->n_fields));
	}
	return st;
}

/* The line after the action line. */
static yajl_gen_status gen_source(yajl_gen g, const struct bulk_op *op)
{
	yajl_gen_status st = yajl_gen_status_ok;

	switch (op->kind) {
	case BULK_INDEX:
		return gen_fields(g, op->fields, op->n_fields);
	case BULK_UPDATE:
		G(yajl_gen_map_open(g));
		G(gen_str(g, "doc"));
		G(gen_fields(g, op->fields, op->n_fields));
		G(gen_str(g, "doc_as_upsert"));
		G(yajl_gen_bool(g, 1));
		G(yajl_gen_map_close(g));
		return st;
	case BULK_SCRIPT:
		G(yajl_gen_map_open(g));
		G(gen_script(g, op));
		G(yajl_gen_map_close(g));
		return st;
	case BULK_NONE:
	case BULK_DELETE:
		break;
	}
	return st;
}

/*
 * The stored script of BULK_SCRIPT operations. Money is read back as cents
 * (the stored decimal has at most two places, so rounding the double times
 * 100 is exact below 2^53 cents) and written as a BigDecimal with scale 2,
 * made from the decimal text of the cents (no double on the way).
 */
const char bulk_script_source[] =
	"def s = ctx._source; long lt = -1L; long lp = -1L;"
	" if (s.last_event != null) {"
	"   lt = ((Number) s.last_event.txid).longValue();"
	"   lp = ((Number) s.last_event.position).longValue(); }"
	" boolean changed = false;"
	" for (def e : params.events) {"
	"   long t = ((Number) e.t).longValue(); long p = ((Number) e.p).longValue();"
	"   if (t < lt || (t == lt && p <= lp)) { continue; }"
	"   for (def k : e.s.keySet()) { s[k] = e.s[k]; }"
	"   for (def k : e.i.keySet()) {"
	"     long v = s[k] == null ? 0L : ((Number) s[k]).longValue();"
	"     s[k] = v + ((Number) e.i[k]).longValue(); }"
	"   for (def k : e.m.keySet()) {"
	"     long c = s[k] == null ? 0L : Math.round(((Number) s[k]).doubleValue() * 100.0);"
	"     s[k] = new BigDecimal(Long.toString(c + ((Number) e.m[k]).longValue())).movePointLeft(2); }"
	"   lt = t; lp = p; changed = true; }"
	" if (changed) { s.last_event = ['txid': lt, 'position': lp]; } else { ctx.op = 'none'; }";

static const char *gen_status_text(yajl_gen_status st)
{
	switch (st) {
	case yajl_gen_invalid_string:
		return "a string is not valid UTF-8";
	case yajl_gen_invalid_number:
		return "a number is not finite";
	case yajl_max_depth_exceeded:
		return "nested too deeply";
	default:
		return "the JSON generator failed";
	}
}

/* The action line's verb of an operation, NULL for none (or an unknown kind). */
static const char *action_name(enum bulk_kind kind)
{
	switch (kind) {
	case BULK_INDEX:
		return "index";
	case BULK_UPDATE:
	case BULK_SCRIPT:
		return "update";
	case BULK_DELETE:
		return "delete";
	default:
		return NULL;
	}
}

/* The action line: {"index":{"_id":"..."}} (and "_index" for several indices). */
static yajl_gen_status gen_action(yajl_gen g, const struct bulk_op *op, const char *action)
{
	yajl_gen_status st = yajl_gen_map_open(g);

	if (st == yajl_gen_status_ok)
		st = gen_str(g, action);
	if (st == yajl_gen_status_ok)
		st = yajl_gen_map_open(g);
	if (st == yajl_gen_status_ok && op->index) {
		st = gen_str(g, "_index");
		if (st == yajl_gen_status_ok)
			st = gen_str(g, op->index);
	}
	if (st == yajl_gen_status_ok)
		st = gen_str(g, "_id");
	if (st == yajl_gen_status_ok)
		st = gen_str(g, op->id);
	if (st == yajl_gen_status_ok && (op->kind == BULK_UPDATE || op->kind == BULK_SCRIPT)) {
		/*
		 * An update reads then writes the document; another write landing
		 * in between (a request of a killed process still running in the
		 * cluster) is a version conflict: let the cluster try again.
		 */
		st = gen_str(g, "retry_on_conflict");
		if (st == yajl_gen_status_ok)
			st = gen_int(g, BULK_RETRY_ON_CONFLICT);
	}
	if (st == yajl_gen_status_ok)
		st = yajl_gen_map_close(g);
	if (st == yajl_gen_status_ok)
		st = yajl_gen_map_close(g);
	return st;
}

int bulk_writer_op(struct bulk_writer *w, const struct bulk_op *op, char *err, size_t errsz)
{
	struct buf *body = w->body;
	yajl_gen g = w->g;
	const char *action;
	yajl_gen_status st;
	size_t mark = body->len;
	char shown[65];

	if (op->kind == BULK_NONE)
		return 0;
	action = action_name(op->kind);
	if (!action) {
		snprintf(err, errsz, "unknown bulk operation %d", (int)op->kind);
		return -1;
	}
	yajl_gen_reset(g, NULL);
	st = gen_action(g, op, action);
	(void)buf_append_char(body, '\n');
	if (st == yajl_gen_status_ok && op->kind != BULK_DELETE) {
		yajl_gen_reset(g, NULL);
		st = gen_source(g, op);
		(void)buf_append_char(body, '\n');
	}
	if (st != yajl_gen_status_ok) {
		(void)json_utf8_show(shown, sizeof(shown), op->id);
		snprintf(err, errsz, "document '%s': %s", shown, gen_status_text(st));
		/* drop the half-written lines so the body stays valid NDJSON */
		buf_truncate(body, mark);
		return -1;
	}
	if (buf_error(body)) {
		(void)json_utf8_show(shown, sizeof(shown), op->id);
		snprintf(err, errsz, "document '%s': request body %s", shown, buf_strerror(buf_error(body)));
		return -1;
	}
	return 0;
}

int bulk_writer_init(struct bulk_writer *w, struct buf *body)
{
	w->body = body;
	w->g = yajl_gen_alloc(NULL);
	if (!w->g)
		return -1;
	yajl_gen_config(w->g, yajl_gen_print_callback, print_to_buf, body);
	yajl_gen_config(w->g, yajl_gen_validate_utf8, 0); /* see gen_str */
	return 0;
}

void bulk_writer_release(struct bulk_writer *w)
{
	if (w->g)
		yajl_gen_free(w->g);
	w->g = NULL;
}

int bulk_write_op(struct buf *body, const struct bulk_op *op, char *err, size_t errsz)
{
	struct bulk_writer w;
	int rc;

	if (bulk_writer_init(&w, body)) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	rc = bulk_writer_op(&w, op, err, errsz);
	bulk_writer_release(&w);
	return rc;
}

/*
 * These texts go into dead letter rows and log lines, where half a
 * character would make them invalid UTF-8: cut between characters.
 */
static void copy_text(char *dst, size_t dstsz, const char *src)
{
	size_t n = src ? json_utf8_prefix(src, dstsz - 1) : 0;

	memcpy(dst, src ? src : "", n);
	dst[n] = '\0';
}

int bulk_response_parse(const char *body, size_t len, struct bulk_response *r, char *err, size_t errsz)
{
	char perr[256];
	struct arena arena = ARENA_INIT;
	struct json_scratch scratch = JSON_SCRATCH_INIT;
	yajl_val root, items, errors;
	static const char *errors_path[] = { "errors", NULL };
	static const char *items_path[] = { "items", NULL };

	memset(r, 0, sizeof(*r));
	root = json_parse(&arena, &scratch, body, len, perr, sizeof(perr));
	json_scratch_release(&scratch);
	if (!root) {
		snprintf(err, errsz, "unreadable _bulk response: %s", perr);
		arena_release(&arena);
		return -1;
	}
	if (!YAJL_IS_OBJECT(root)) {
		snprintf(err, errsz, "unreadable _bulk response: not an object");
		goto fail;
	}
	errors = yajl_tree_get(root, errors_path, yajl_t_any);
	if (!errors || !(YAJL_IS_TRUE(errors) || YAJL_IS_FALSE(errors))) {
		snprintf(err, errsz, "unreadable _bulk response: no 'errors' flag");
		goto fail;
	}
	r->errors = YAJL_IS_TRUE(errors);
	items = yajl_tree_get(root, items_path, yajl_t_array);
	if (items && items->u.array.len) {
		r->items = calloc(items->u.array.len, sizeof(*r->items));
		if (!r->items) {
			snprintf(err, errsz, "out of memory");
			goto fail;
		}
		r->n_items = items->u.array.len;
		for (size_t i = 0; i < r->n_items; i++) {
			static const char *status_path[] = { "status", NULL };
			static const char *type_path[] = { "error", "type", NULL };
			static const char *reason_path[] = { "error", "reason", NULL };
			static const char *result_path[] = { "result", NULL };
			yajl_val it = items->u.array.values[i], inner, st, t, why, res;
			if (!YAJL_IS_OBJECT(it) || it->u.object.len != 1 ||
			    !YAJL_IS_OBJECT(it->u.object.values[0])) {
				snprintf(err, errsz, "unreadable _bulk response: item %zu is malformed", i);
				goto fail;
			}
			inner = it->u.object.values[0];
			st = yajl_tree_get(inner, status_path, yajl_t_number);
			if (!st || !YAJL_IS_INTEGER(st)) {
				snprintf(err, errsz, "unreadable _bulk response: item %zu has no status", i);
				goto fail;
			}
			/* (int) of 4294967496 is 200: only an HTTP status is trusted */
			if (YAJL_GET_INTEGER(st) < 100 || YAJL_GET_INTEGER(st) > 599) {
				snprintf(err, errsz, "unreadable _bulk response: item %zu has status %lld,"
					 " not an HTTP status", i, YAJL_GET_INTEGER(st));
				goto fail;
			}
			r->items[i].status = (int)YAJL_GET_INTEGER(st);
			res = yajl_tree_get(inner, result_path, yajl_t_string);
			if (res) {
				const char *result = YAJL_GET_STRING(res);
				r->items[i].noop = result && !strcmp(result, "noop");
			}
			t = yajl_tree_get(inner, type_path, yajl_t_string);
			why = yajl_tree_get(inner, reason_path, yajl_t_string);
			copy_text(r->items[i].error_type, sizeof(r->items[i].error_type),
				  t ? YAJL_GET_STRING(t) : NULL);
			copy_text(r->items[i].error_reason, sizeof(r->items[i].error_reason),
				  why ? YAJL_GET_STRING(why) : NULL);
		}
	} else if (r->errors) {
		snprintf(err, errsz, "unreadable _bulk response: errors without items");
		goto fail;
	}
	arena_release(&arena);
	return 0;
fail:
	arena_release(&arena);
	bulk_response_release(r);
	return -1;
}

void bulk_response_release(struct bulk_response *r)
{
	free(r->items);
	memset(r, 0, sizeof(*r));
}

enum bulk_outcome bulk_item_outcome(const struct bulk_item *item)
{
	if (item->status >= 200 && item->status < 300)
		return BULK_ITEM_OK;
	/* a delete of a document that is not there: the goal is reached */
	if (item->status == 404 && !item->error_type[0])
		return BULK_ITEM_OK;
	/* 409: a concurrent write won (see retry_on_conflict); the guard makes sending again safe */
	if (item->status == 429 || item->status == 409 || item->status >= 500)
		return BULK_ITEM_RETRY;
	return BULK_ITEM_REJECT;
}
