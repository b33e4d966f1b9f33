/*
 * Answers whose shape differs between Elasticsearch versions (answers.h).
 */
#include <stdio.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "esbridge/answers.h"
#include "esbridge/json.h"

static const char *str_at(yajl_val v, const char **path)
{
	yajl_val s = yajl_tree_get(v, path, yajl_t_string);

	return s ? YAJL_GET_STRING(s) : NULL;
}

/* The first failed entry of "action_results" into `err`. */
static void first_failure(yajl_val results, char *err, size_t errsz)
{
	static const char *status_path[] = { "status", NULL };
	static const char *type_path[] = { "action", "type", NULL };
	static const char *etype_path[] = { "error", "type", NULL };
	static const char *reason_path[] = { "error", "reason", NULL };
	char reason[200];

	for (size_t i = 0; results && i < results->u.array.len; i++) {
		yajl_val r = results->u.array.values[i];
		yajl_val st = yajl_tree_get(r, status_path, yajl_t_number);
		const char *type = str_at(r, type_path), *etype = str_at(r, etype_path);
		long long status = st && YAJL_IS_INTEGER(st) ? YAJL_GET_INTEGER(st) : 0;
		if (status >= 200 && status < 300)
			continue;
		json_utf8_show(reason, sizeof(reason), str_at(r, reason_path) ? str_at(r, reason_path) : "");
		snprintf(err, errsz, "POST /_aliases: action %zu (%s) failed: HTTP %lld %s: %s", i + 1,
			 type ? type : "?", status, etype ? etype : "?", reason);
		return;
	}
	snprintf(err, errsz, "POST /_aliases: \"errors\":true without a failed action");
}

int answers_aliases(const char *body, size_t len, char *err, size_t errsz)
{
	static const char *errors_path[] = { "errors", NULL };
	static const char *results_path[] = { "action_results", NULL };
	struct arena arena = ARENA_INIT;
	struct json_scratch scratch = JSON_SCRATCH_INIT;
	char perr[256];
	yajl_val root, errors;
	int rc = 0;

	root = json_parse(&arena, &scratch, body ? body : "", body ? len : 0, perr, sizeof(perr));
	json_scratch_release(&scratch);
	if (!root || !YAJL_IS_OBJECT(root)) {
		snprintf(err, errsz, "POST /_aliases: unreadable answer: %s", root ? "not an object" : perr);
		rc = -1;
	} else if ((errors = yajl_tree_get(root, errors_path, yajl_t_any)) && YAJL_IS_TRUE(errors)) {
		first_failure(yajl_tree_get(root, results_path, yajl_t_array), err, errsz);
		rc = -1;
	}
	arena_release(&arena);
	return rc;
}
