/*
 * libFuzzer target: arbitrary bytes as the body of a _bulk response
 * (src/bulk.c, bulk_response_parse and bulk_item_outcome).
 *
 * Invariants, besides no crash, leak or undefined behaviour:
 *  - a refusal leaves no items and says why in one line of UTF-8;
 *  - an accepted body is JSON that yajl accepts too, with the same tree;
 *    plain JSON that yajl accepts is never refused as unreadable JSON;
 *  - an accepted body is an object with a boolean `errors` equal to ours,
 *    and its `items` array (read from yajl's tree) has exactly our items,
 *    in order: one action each, a whole-number HTTP status (100-599) equal
 *    to ours, error type and reason equal to the response's strings or
 *    cut from them on a character boundary (they become dead letter rows:
 *    they must stay valid UTF-8);
 *  - errors:true never comes without items;
 *  - each item's outcome follows the documented rule (README, "Nothing
 *    lost"): 2xx and a 404 without error applied; 429, 409 and 5xx sent
 *    again; any other status rejected.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "esbridge/bulk.h"
#include "esbridge/json.h"
#include "esbridge/projection.h"

#include "fuzz.h"
#include "fuzz_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* `got` is `full`, or a prefix of it that filled `cap` bytes, cut between characters. */
static void check_text(const char *got, size_t cap, yajl_val full, size_t item, const char *what)
{
	size_t n = strlen(got);
	const char *want = full && full->type == yajl_t_string ? full->u.string : "";

	FUZZ_CHECK(n < cap, "item %zu: %s overflows", item, what);
	FUZZ_CHECK(fuzz_utf8_ok(got, n), "item %zu: %s is not valid UTF-8", item, what);
	FUZZ_CHECK(!strncmp(got, want, n), "item %zu: %s '%s' is not from '%s'", item, what, got, want);
	/* a cut may drop at most one incomplete character (up to 3 bytes) */
	FUZZ_CHECK(want[n] == '\0' || n + 4 >= cap, "item %zu: %s cut short at %zu bytes", item, what, n);
}

static enum bulk_outcome expected_outcome(int status, const char *type)
{
	if (status >= 200 && status < 300)
		return BULK_ITEM_OK;
	if (status == 404 && !type[0])
		return BULK_ITEM_OK;
	if (status == 429 || status == 409 || status >= 500)
		return BULK_ITEM_RETRY;
	return BULK_ITEM_REJECT;
}

static void check_accepted(const char *body, size_t len, const struct bulk_response *r)
{
	struct arena arena = ARENA_INIT;
	struct json_scratch scratch = JSON_SCRATCH_INIT;
	char perr[256], yerr[256];
	yajl_val ours, root, errors, items;
	size_t n = 0;

	/* the same tree as yajl's */
	ours = json_parse(&arena, &scratch, body, len, perr, sizeof(perr));
	FUZZ_CHECK(ours != NULL, "accepted, but json_parse refuses it now: %s", perr);
	fuzz_check_parse(body, len, ours, perr, "response");
	json_scratch_release(&scratch);
	arena_release(&arena);

	root = fuzz_yajl_tree(body, len, yerr, sizeof(yerr));
	FUZZ_CHECK(root != NULL, "accepted, yajl refuses: %s", yerr);
	FUZZ_CHECK(root->type == yajl_t_object, "accepted a response that is not an object");
	errors = projection_member(root, "errors");
	FUZZ_CHECK(errors && (errors->type == yajl_t_true || errors->type == yajl_t_false),
		   "accepted a response without a boolean 'errors'");
	FUZZ_CHECK(r->errors == (errors->type == yajl_t_true), "'errors' read wrong");
	items = projection_member(root, "items");
	if (items && items->type == yajl_t_array)
		n = items->u.array.len;
	FUZZ_CHECK(r->n_items == n, "%zu items read, the response has %zu", r->n_items, n);
	FUZZ_CHECK((n == 0) == (r->items == NULL), "items array and count disagree");
	FUZZ_CHECK(!r->errors || n > 0, "errors:true accepted without items");
	for (size_t i = 0; i < n; i++) {
		const struct bulk_item *it = &r->items[i];
		yajl_val item = items->u.array.values[i], inner, status, error;
		long long want;
		enum bulk_outcome out;

		FUZZ_CHECK(item->type == yajl_t_object && item->u.object.len == 1,
			   "item %zu accepted without exactly one action", i);
		inner = item->u.object.values[0];
		FUZZ_CHECK(inner->type == yajl_t_object, "item %zu accepted, its action is not an object", i);
		status = projection_member(inner, "status");
		FUZZ_CHECK(status && status->type == yajl_t_number &&
			   fuzz_integer_text(status->u.number.r, &want),
			   "item %zu accepted without a whole-number status", i);
		FUZZ_CHECK(want >= 100 && want <= 599, "item %zu: status %s accepted", i, status->u.number.r);
		FUZZ_CHECK(it->status == want, "item %zu: status %d, the response says %s", i, it->status,
			   status->u.number.r);
		error = projection_member(inner, "error");
		check_text(it->error_type, sizeof(it->error_type), projection_member(error, "type"), i, "error type");
		check_text(it->error_reason, sizeof(it->error_reason), projection_member(error, "reason"), i,
			   "error reason");
		out = bulk_item_outcome(it);
		FUZZ_CHECK(out == expected_outcome(it->status, it->error_type),
			   "item %zu: outcome %d for status %d type '%s'", i, (int)out, it->status,
			   it->error_type);
	}
	yajl_tree_free(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	struct bulk_response r;
	char err[512];
	int rc;

	memset(err, 0, sizeof(err));
	rc = bulk_response_parse(body, size, &r, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == -1, "returned %d", rc);
	if (rc) {
		FUZZ_CHECK(r.items == NULL && r.n_items == 0, "a refused response left items");
		fuzz_check_message("refusal", err);
		FUZZ_CHECK(!strncmp(err, "unreadable _bulk response: ", 27), "unexpected refusal: %s", err);
		/* plain JSON that yajl takes is never called unreadable JSON */
		FUZZ_CHECK(!strstr(err, "invalid JSON") ||
			   !(fuzz_json_plain(body, size) && fuzz_yajl_strict_ok(body, size)),
			   "plain JSON refused: %s", err);
		bulk_response_release(&r); /* harmless on a refused response */
		return 0;
	}
	check_accepted(body, size, &r);
	bulk_response_release(&r);
	FUZZ_CHECK(r.items == NULL && r.n_items == 0, "release left items");
	return 0;
}
