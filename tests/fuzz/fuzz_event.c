/*
 * libFuzzer target: events → actions, the code the pipeline runs on every
 * event (src/pipeline.c, process_event and send_sending), without SQL or
 * HTTP: parse the data (src/json.c), ask each registered projection for the
 * document _id and fold the event into that document's pending operation
 * (src/projection.c, src/projections/), then render the operations into a
 * _bulk body (src/bulk.c).
 *
 * Input: lines, one event each, "TYPE DATA" (the type up to the first
 * space, the data JSON after it, up to the end of the line). Lines that
 * start with '#' are directives: "#no-coalesce" gives every later event an
 * action of its own (--no-coalesce), "#flush" renders and sends what is
 * pending (a request boundary); other '#' lines are comments. A line whose
 * type is not UTF-8 is skipped (a text column cannot hold it). An event goes
 * to every projection that reads its type, and, when none does, to every
 * projection: apply must refuse it (the store never delivers such an event,
 * so that refusal never becomes a dead letter).
 *
 * Invariants, besides no crash, leak or undefined behaviour:
 *  - json_parse builds exactly yajl's tree, or refuses what yajl refuses
 *    too (plain JSON, see fuzz_json.h), with a one-line reason;
 *  - doc_id and apply answer only 0, PROJECTION_REJECT or (apply)
 *    PROJECTION_NEW_OP, never "out of memory" here, and a fresh operation
 *    always takes the event (else the pipeline would stop);
 *  - a refused or deferred event leaves the operation exactly as it was
 *    (projection.h), checked on the rendered lines;
 *  - an event that applied leaves an action to send (kind not BULK_NONE);
 *  - every reason that becomes a dead letter is one line of valid UTF-8;
 *  - the body is NDJSON: every line parses with yajl; per written action
 *    one metadata line {"index"|"update"|"delete": {"_id": ID[,
 *    "retry_on_conflict": 3]}} with the operation's _id and nothing from the
 *    payload, then (not for delete) one source line of the right shape; a
 *    failed render leaves the body as it was.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "esbridge/buf.h"
#include "esbridge/bulk.h"
#include "esbridge/event.h"
#include "esbridge/json.h"
#include "esbridge/projection.h"

#include "fuzz.h"
#include "fuzz_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PROJ 8
#define MAX_SLOTS PROJECTION_MAX_INDICES
#define CREATED_AT "2026-11-26T10:00:00.123456Z"

struct opset {
	struct bulk_op *ops;
	size_t n, cap;
};

struct run {
	struct arena arena;          /* the parsed data, alive until the end */
	struct json_scratch scratch;
	struct buf id;
	bool fresh;                  /* --no-coalesce */
	size_t n_proj;
	struct opset sets[MAX_PROJ * MAX_SLOTS]; /* per projection and index */
};

/* ---- operations, as the pipeline's opset ------------------------------- */

static struct bulk_op *opset_find(struct opset *o, const char *id)
{
	for (size_t i = o->n; i-- > 0;)
		if (!strcmp(o->ops[i].id, id))
			return &o->ops[i];
	return NULL;
}

static struct bulk_op *opset_new(struct opset *o, const char *id, size_t len)
{
	if (o->n == o->cap) {
		size_t ncap = o->cap ? o->cap * 2 : 16;
		struct bulk_op *nops = realloc(o->ops, ncap * sizeof(*nops));
		FUZZ_CHECK(nops != NULL, "out of memory");
		o->ops = nops;
		o->cap = ncap;
	}
	FUZZ_CHECK(bulk_op_init(&o->ops[o->n], id, len) == 0, "out of memory");
	return &o->ops[o->n++];
}

static void opset_release(struct opset *o)
{
	for (size_t i = 0; i < o->n; i++)
		bulk_op_release(&o->ops[i]);
	free(o->ops);
	memset(o, 0, sizeof(*o));
}

/* ---- what an operation looks like, to compare before and after ---------- */

struct snapshot {
	enum bulk_kind kind;
	size_t n_fields, n_entries, n_events;
	bool upsert;
	char *lines; /* its rendering, or NULL */
};

static void snap(const struct bulk_op *op, struct snapshot *s)
{
	struct buf b;
	char err[256];

	s->kind = op->kind;
	s->n_fields = op->n_fields;
	s->n_entries = op->n_entries;
	s->n_events = op->n_events;
	s->upsert = op->upsert;
	s->lines = NULL;
	buf_init(&b, (size_t)64 << 20);
	if (op->kind != BULK_NONE && bulk_write_op(&b, op, err, sizeof(err)) == 0)
		s->lines = buf_take(&b, &(size_t){ 0 });
	buf_release(&b);
}

static void same_as(const struct bulk_op *op, struct snapshot *s, const char *why)
{
	struct snapshot now;

	snap(op, &now);
	FUZZ_CHECK(now.kind == s->kind && now.n_fields == s->n_fields &&
		   now.n_entries == s->n_entries && now.n_events == s->n_events &&
		   now.upsert == s->upsert, "%s changed the operation of '%s'", why, op->id);
	FUZZ_CHECK((now.lines == NULL) == (s->lines == NULL) &&
		   (!now.lines || !strcmp(now.lines, s->lines)),
		   "%s changed the operation of '%s': %s => %s", why, op->id, s->lines ? s->lines : "-",
		   now.lines ? now.lines : "-");
	free(now.lines);
}

/* ---- one event into one projection, as process_event ------------------- */

static void project(struct run *run, size_t pi, size_t slot, const struct projection *proj,
		    const struct event *ev, yajl_val tree, bool known)
{
	struct opset *o = &run->sets[pi * MAX_SLOTS + slot];
	struct bulk_op *op;
	struct snapshot before;
	char err[512];
	bool created = false;
	int rc;

	memset(err, 0, sizeof(err));
	rc = projection_doc_id(proj, ev, tree, slot, &run->id, err, sizeof(err));
	if (rc == PROJECTION_SKIP)
		return; /* nothing of it in this index */
	FUZZ_CHECK(rc == 0 || rc == PROJECTION_REJECT, "%s: doc_id answered %d", proj->name, rc);
	if (rc) {
		fuzz_check_message("doc_id refusal", err);
		return;
	}
	FUZZ_CHECK(run->id.len > 0 && run->id.len <= 512 && strlen(run->id.data) == run->id.len,
		   "%s: bad _id of %zu bytes", proj->name, run->id.len);
	FUZZ_CHECK(fuzz_utf8_ok(run->id.data, run->id.len), "%s: _id is not UTF-8", proj->name);

	op = run->fresh ? NULL : opset_find(o, run->id.data);
	if (!op) {
		op = opset_new(o, run->id.data, run->id.len);
		op->slot = (unsigned)slot; /* the index (apply reads it); _index stays in the path */
		created = true;
	}
	snap(op, &before);
	rc = proj->apply(ev, tree, op, err, sizeof(err));
	if (rc == PROJECTION_NEW_OP) {
		FUZZ_CHECK(!created || op->kind != BULK_NONE,
			   "%s: %s refused a fresh operation with PROJECTION_NEW_OP", proj->name, ev->type);
		same_as(op, &before, "PROJECTION_NEW_OP");
		free(before.lines);
		op = opset_new(o, run->id.data, run->id.len);
		op->slot = (unsigned)slot;
		created = true;
		snap(op, &before);
		rc = proj->apply(ev, tree, op, err, sizeof(err));
		FUZZ_CHECK(rc != PROJECTION_NEW_OP, "%s: %s refused a fresh operation", proj->name,
			   ev->type);
	}
	FUZZ_CHECK(rc == 0 || rc == PROJECTION_REJECT, "%s: apply answered %d (%s)", proj->name, rc, err);
	FUZZ_CHECK(known || rc == PROJECTION_REJECT, "%s: took an event of a type it does not read",
		   proj->name);
	if (rc) {
		/* only events of the types it reads reach it (store.c): dead letters */
		if (known)
			fuzz_check_message("apply refusal", err);
		else
			FUZZ_CHECK(err[0], "%s: a refusal without a reason", proj->name);
		same_as(op, &before, "a refused event");
		free(before.lines);
		if (created && op->kind == BULK_NONE && !op->n_events) {
			bulk_op_release(op);
			o->n--;
		}
		return;
	}
	free(before.lines);
	FUZZ_CHECK(op->kind != BULK_NONE, "%s: %s applied but left nothing to send", proj->name, ev->type);
	FUZZ_CHECK(bulk_op_note_event(op, ev->at) == 0, "out of memory");
}

/* ---- the body, as send_sending, checked line by line -------------------- */

static yajl_val parse_line(const char *s, size_t len)
{
	char yerr[256];
	yajl_val v = fuzz_yajl_tree(s, len, yerr, sizeof(yerr));

	FUZZ_CHECK(v != NULL, "a body line is not JSON (%s): %.*s", yerr, (int)len, s);
	FUZZ_CHECK(v->type == yajl_t_object, "a body line is not an object: %.*s", (int)len, s);
	return v;
}

static void check_meta(yajl_val meta, const struct bulk_op *op)
{
	static const char *const actions[] = { [BULK_INDEX] = "index", [BULK_UPDATE] = "update",
					       [BULK_DELETE] = "delete", [BULK_SCRIPT] = "update" };
	bool update = op->kind == BULK_UPDATE || op->kind == BULK_SCRIPT;
	yajl_val inner, id, roc;

	FUZZ_CHECK(meta->u.object.len == 1 && !strcmp(meta->u.object.keys[0], actions[op->kind]),
		   "'%s': the metadata line is not one '%s' action", op->id, actions[op->kind]);
	inner = meta->u.object.values[0];
	FUZZ_CHECK(inner->type == yajl_t_object && inner->u.object.len == (update ? 2u : 1u),
		   "'%s': the metadata is not {_id%s}", op->id, update ? ", retry_on_conflict" : "");
	id = projection_member(inner, "_id");
	FUZZ_CHECK(id && id->type == yajl_t_string && !strcmp(id->u.string, op->id),
		   "'%s': the metadata names another _id", op->id);
	if (update) {
		roc = projection_member(inner, "retry_on_conflict");
		FUZZ_CHECK(roc && YAJL_IS_INTEGER(roc) && roc->u.number.i == BULK_RETRY_ON_CONFLICT,
			   "'%s': no retry_on_conflict", op->id);
	}
}

static void check_source(yajl_val src, const struct bulk_op *op)
{
	yajl_val doc, script, events;

	switch (op->kind) {
	case BULK_INDEX:
		FUZZ_CHECK(src->u.object.len == op->n_fields, "'%s': %zu fields written of %zu", op->id,
			   src->u.object.len, op->n_fields);
		break;
	case BULK_UPDATE:
		doc = projection_member(src, "doc");
		FUZZ_CHECK(src->u.object.len == 2 && doc && doc->type == yajl_t_object &&
			   doc->u.object.len == op->n_fields && projection_member(src, "doc_as_upsert") &&
			   projection_member(src, "doc_as_upsert")->type == yajl_t_true,
			   "'%s': the update is not {doc, doc_as_upsert:true}", op->id);
		break;
	case BULK_SCRIPT:
		script = projection_member(src, "script");
		events = projection_member(projection_member(script, "params"), "events");
		FUZZ_CHECK(script && projection_member(script, "id") && projection_member(script, "id")->type == yajl_t_string &&
			   !strcmp(projection_member(script, "id")->u.string, BULK_SCRIPT_ID),
			   "'%s': not the stored script", op->id);
		FUZZ_CHECK(events && events->type == yajl_t_array && events->u.array.len == op->n_entries,
			   "'%s': the script has not the %zu entries", op->id, op->n_entries);
		break;
	case BULK_NONE:
	case BULK_DELETE:
		FUZZ_CHECK(0, "'%s': a source line for kind %d", op->id, (int)op->kind);
	}
}

static void send_set(struct opset *o)
{
	struct bulk_writer w;
	struct buf body;
	const struct bulk_op **written;
	size_t n_written = 0, line = 0, at = 0;
	char err[512];

	buf_init(&body, (size_t)256 << 20);
	FUZZ_CHECK(bulk_writer_init(&w, &body) == 0, "out of memory");
	written = calloc(o->n + 1, sizeof(*written));
	FUZZ_CHECK(written != NULL, "out of memory");
	for (size_t i = 0; i < o->n; i++) {
		const struct bulk_op *op = &o->ops[i];
		size_t mark = body.len, nl = 0;

		if (op->kind == BULK_NONE)
			continue;
		memset(err, 0, sizeof(err));
		if (bulk_writer_op(&w, op, err, sizeof(err))) {
			/* the pipeline dead-letters the operation's events with `err` */
			FUZZ_CHECK(!buf_error(&body), "the body failed: %s", err);
			fuzz_check_message("render failure", err);
			FUZZ_CHECK(body.len == mark, "a failed render left %zu bytes", body.len - mark);
			continue;
		}
		for (size_t k = mark; k < body.len; k++)
			nl += body.data[k] == '\n';
		FUZZ_CHECK(nl == (op->kind == BULK_DELETE ? 1u : 2u), "'%s': %zu lines for one action",
			   op->id, nl);
		written[n_written++] = op;
	}
	bulk_writer_release(&w);
	FUZZ_CHECK(!buf_error(&body), "the body failed");
	FUZZ_CHECK(strlen(body.data) == body.len, "a NUL byte in the body");
	FUZZ_CHECK(body.len == 0 || body.data[body.len - 1] == '\n', "the body does not end a line");

	/* NDJSON: metadata line, then the source line unless a delete */
	for (size_t a = 0; a < n_written; a++) {
		const struct bulk_op *op = written[a];
		size_t end;
		yajl_val v;

		end = (size_t)((const char *)memchr(body.data + at, '\n', body.len - at) - body.data);
		v = parse_line(body.data + at, end - at);
		check_meta(v, op);
		yajl_tree_free(v);
		at = end + 1;
		line++;
		if (op->kind == BULK_DELETE)
			continue;
		FUZZ_CHECK(at < body.len, "'%s': no source line", op->id);
		end = (size_t)((const char *)memchr(body.data + at, '\n', body.len - at) - body.data);
		v = parse_line(body.data + at, end - at);
		check_source(v, op);
		yajl_tree_free(v);
		at = end + 1;
		line++;
	}
	FUZZ_CHECK(at == body.len, "%zu bytes after the %zu lines of %zu actions", body.len - at, line,
		   n_written);
	free(written);
	buf_release(&body);
	opset_release(o);
}

/* ---- input -------------------------------------------------------------- */

static bool reads(const struct projection *proj, const char *type)
{
	for (const char *const *t = proj->event_types; *t; t++)
		if (!strcmp(*t, type))
			return true;
	return false;
}

/* A copy of exactly n bytes and a NUL, as libpq hands out column values. */
static char *column(const char *s, size_t n)
{
	char *c = malloc(n + 1);

	FUZZ_CHECK(c != NULL, "out of memory");
	memcpy(c, s, n);
	c[n] = '\0';
	return c;
}

static void one_event(struct run *run, const char *type, size_t tlen, const char *data, size_t len,
		      int64_t n)
{
	struct event ev = {
		.at = { .txid = 1000 + (uint64_t)n / 3, .pos = n + 1 },
		.stream_id = column("stream-1", 8),
		.type = column(type, tlen),
		.data = column(data, len),
		.data_len = len,
		.version = (int32_t)n + 1,
	};
	char perr[256];
	char *created_at;
	yajl_val tree;
	bool any = false;

	/* as keep_created_at (pipeline.c): it lives as long as the parsed data */
	created_at = arena_alloc(&run->arena, sizeof(CREATED_AT));
	FUZZ_CHECK(created_at != NULL, "out of memory");
	memcpy(created_at, CREATED_AT, sizeof(CREATED_AT));
	ev.created_at = created_at;

	memset(perr, 0, sizeof(perr));
	tree = json_parse(&run->arena, &run->scratch, ev.data, len, perr, sizeof(perr));
	fuzz_check_parse(ev.data, len, tree, perr, "event data");
	if (tree) {
		for (size_t i = 0; i < run->n_proj; i++)
			any |= reads(projection_registry[i], ev.type);
		for (size_t i = 0; i < run->n_proj; i++)
			if (!any || reads(projection_registry[i], ev.type))
				for (size_t k = 0; k < projection_n_indices(projection_registry[i]); k++)
					project(run, i, k, projection_registry[i], &ev, tree, any);
	}
	/* the event's own strings die here: an operation must not keep them */
	free((char *)ev.stream_id);
	free((char *)ev.type);
	free((char *)ev.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run run;
	const char *p = (const char *)data, *end = p + size;
	int64_t n = 0;

	memset(&run, 0, sizeof(run));
	buf_init(&run.id, 4096);
	while (projection_registry[run.n_proj]) {
		FUZZ_CHECK(run.n_proj < MAX_PROJ, "more than %d projections", MAX_PROJ);
		run.n_proj++;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		const char *sp = memchr(p, ' ', (size_t)(eol - p));
		size_t tlen = (size_t)((sp ? sp : eol) - p);

		if (*p == '#') {
			if ((size_t)(eol - p) == 12 && !memcmp(p, "#no-coalesce", 12))
				run.fresh = true;
			else if ((size_t)(eol - p) == 6 && !memcmp(p, "#flush", 6))
				for (size_t i = 0; i < run.n_proj * MAX_SLOTS; i++)
					send_set(&run.sets[i]);
		} else if (!memchr(p, '\0', tlen) && fuzz_utf8_ok(p, tlen)) {
			/* the type is a text column: UTF-8 without NUL; the data keeps its length */
			if (sp)
				one_event(&run, p, tlen, sp + 1, (size_t)(eol - sp - 1), n++);
			else
				one_event(&run, p, tlen, "", 0, n++);
		}
		p = eol + (nl != NULL);
	}
	for (size_t i = 0; i < run.n_proj * MAX_SLOTS; i++)
		send_set(&run.sets[i]);
	buf_release(&run.id);
	json_scratch_release(&run.scratch);
	arena_release(&run.arena);
	return 0;
}
