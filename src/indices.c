/*
 * Index administration on the cluster: the mapping files, index creation,
 * the bulk-load settings and their restoring, refresh, aliases, deletion
 * and the stored script. Knows the mapping files and the REST calls; knows
 * nothing of generations, pipelines or the bridge state.
 */
#include "esbridge/indices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "esbridge/answers.h"
#include "esbridge/buf.h"
#include "esbridge/bulk.h"
#include "esbridge/json.h"

#define SMALL_BODY ((size_t)1 << 20)
#define MAPPING_LIMIT ((size_t)4 << 20)

static void print_to_buf(void *ctx, const char *s, size_t len)
{
	(void)buf_append(ctx, s, len);
}

static yajl_gen json_begin(struct buf *b)
{
	yajl_gen g = yajl_gen_alloc(NULL);

	if (g) {
		yajl_gen_config(g, yajl_gen_print_callback, print_to_buf, b);
		yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	}
	return g;
}

/* A one-line summary of an error response for messages. */
static void describe(const struct buf *resp, char *out, size_t outsz)
{
	static const char *type_path[] = { "error", "type", NULL };
	static const char *reason_path[] = { "error", "reason", NULL };
	yajl_val root = yajl_tree_parse(resp->data, NULL, 0);
	yajl_val t = root ? yajl_tree_get(root, type_path, yajl_t_string) : NULL;
	yajl_val r = root ? yajl_tree_get(root, reason_path, yajl_t_string) : NULL;

	if (t)
		snprintf(out, outsz, "%s: %s", YAJL_GET_STRING(t), r ? YAJL_GET_STRING(r) : "");
	else
		snprintf(out, outsz, "%.200s", resp->data);
	for (char *p = out; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	yajl_tree_free(root);
}

/* Runs a request that must answer 2xx. */
static int call(struct es_client *es, const char *method, const char *path,
		const char *body, size_t len, struct buf *resp, char *err, size_t errsz)
{
	long status;
	char why[300];

	buf_reset(resp);
	if (es_request_sync(es, method, path, body, len, &status, resp, err, errsz))
		return -1;
	if (status < 200 || status >= 300) {
		describe(resp, why, sizeof(why));
		snprintf(err, errsz, "%s %s: HTTP %ld: %s", method, path, status, why);
		return -1;
	}
	return 0;
}

static int read_mapping(const struct config *cfg, const char *proj, struct buf *out,
			char *err, size_t errsz)
{
	char path[1024], perr[256], chunk[8192];
	FILE *f;
	size_t n;
	yajl_val root;

	snprintf(path, sizeof(path), "%s/%s.json", cfg->mappings_dir, proj);
	f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errsz, "cannot open mapping file '%s': %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		(void)buf_append(out, chunk, n);
	if (ferror(f) || buf_error(out)) {
		snprintf(err, errsz, "cannot read mapping file '%s'", path);
		fclose(f);
		return -1;
	}
	fclose(f);
	root = yajl_tree_parse(out->data, perr, sizeof(perr));
	if (!root || !YAJL_IS_OBJECT(root)) {
		char *nl = strchr(perr, '\n');
		if (nl)
			*nl = '\0';
		n = strlen(perr);
		while (n && (perr[n - 1] == '.' || perr[n - 1] == ' '))
			perr[--n] = '\0';
		snprintf(err, errsz, "mapping file '%s' is not a JSON object%s%s", path, root ? "" : ": ",
			 root ? "" : perr);
		yajl_tree_free(root);
		return -1;
	}
	yajl_tree_free(root);
	return 0;
}

int indices_check_mappings(const struct config *cfg, const struct projection *proj, char *err, size_t errsz)
{
	struct stat sb;

	if (stat(cfg->mappings_dir, &sb) || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errsz, "invalid value for 'mappings-dir': cannot open the mappings folder '%s': %s",
			 cfg->mappings_dir, errno ? strerror(errno) : "not a folder");
		return -1;
	}
	for (size_t slot = 0; slot < projection_n_indices(proj); slot++) {
		struct buf b = BUF_INIT(MAPPING_LIMIT);
		int rc = read_mapping(cfg, projection_alias(proj, slot), &b, err, errsz);
		buf_release(&b);
		if (rc)
			return -1;
	}
	return 0;
}

/* The indices the alias points to now, as a parsed {"index":{...}} map. */
static int alias_holders(struct es_client *es, const char *alias, yajl_val *out,
			 char *err, size_t errsz)
{
	struct buf resp = BUF_INIT(SMALL_BODY);
	char path[256], perr[128];
	long status;

	*out = NULL;
	snprintf(path, sizeof(path), "/_alias/%s", alias);
	if (es_request_sync(es, "GET", path, NULL, 0, &status, &resp, err, errsz)) {
		buf_release(&resp);
		return -1;
	}
	if (status == 404) {
		buf_release(&resp);
		return 0;
	}
	if (status != 200) {
		snprintf(err, errsz, "GET %s: HTTP %ld", path, status);
		buf_release(&resp);
		return -1;
	}
	*out = yajl_tree_parse(resp.data, perr, sizeof(perr));
	buf_release(&resp);
	if (!*out || !YAJL_IS_OBJECT(*out)) {
		snprintf(err, errsz, "GET %s: unreadable answer", path);
		yajl_tree_free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

int indices_alias_names(struct es_client *es, const char *alias, const char *index, bool *names,
		       char *err, size_t errsz)
{
	yajl_val holders;

	*names = false;
	if (alias_holders(es, alias, &holders, err, errsz))
		return -1;
	if (holders)
		for (size_t i = 0; i < holders->u.object.len; i++)
			if (!strcmp(holders->u.object.keys[i], index))
				*names = true;
	yajl_tree_free(holders);
	return 0;
}

/*
 * Bulk-load settings while a generation is built (refresh off, no
 * replicas, replicas not expanded), and the mapping's own values (or the
 * defaults) when it is done.
 */
int indices_settings(struct es_client *es, const struct config *cfg, const char *proj,
			     const char *index, bool loading, char *err, size_t errsz)
{
	struct buf body = BUF_INIT(SMALL_BODY), resp = BUF_INIT(SMALL_BODY), mapping = BUF_INIT(MAPPING_LIMIT);
	static const char *replicas_path[] = { "settings", "index", "number_of_replicas", NULL };
	static const char *replicas_path2[] = { "settings", "number_of_replicas", NULL };
	static const char *refresh_path[] = { "settings", "index", "refresh_interval", NULL };
	static const char *refresh_path2[] = { "settings", "refresh_interval", NULL };
	static const char *expand_path[] = { "settings", "index", "auto_expand_replicas", NULL };
	static const char *expand_path2[] = { "settings", "auto_expand_replicas", NULL };
	yajl_val root = NULL, replicas = NULL, refresh = NULL, expand = NULL;
	char path[256], perr[128];
	yajl_gen g;
	int rc = -1;

	if (!loading) {
		if (read_mapping(cfg, proj, &mapping, err, errsz))
			goto out;
		root = yajl_tree_parse(mapping.data, perr, sizeof(perr));
		if (root) {
			replicas = yajl_tree_get(root, replicas_path, yajl_t_any);
			if (!replicas)
				replicas = yajl_tree_get(root, replicas_path2, yajl_t_any);
			refresh = yajl_tree_get(root, refresh_path, yajl_t_any);
			if (!refresh)
				refresh = yajl_tree_get(root, refresh_path2, yajl_t_any);
			expand = yajl_tree_get(root, expand_path, yajl_t_any);
			if (!expand)
				expand = yajl_tree_get(root, expand_path2, yajl_t_any);
		}
	}
	g = json_begin(&body);
	if (!g) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	yajl_gen_map_open(g);
	json_gen_str(g, "index");
	yajl_gen_map_open(g);
	json_gen_str(g, "refresh_interval");
	if (loading)
		json_gen_str(g, "-1");
	else if (refresh && YAJL_IS_STRING(refresh))
		json_gen_str(g, YAJL_GET_STRING(refresh));
	else
		yajl_gen_null(g);
	json_gen_str(g, "number_of_replicas");
	if (loading)
		yajl_gen_integer(g, 0);
	else if (replicas && YAJL_IS_INTEGER(replicas))
		yajl_gen_integer(g, YAJL_GET_INTEGER(replicas));
	else
		yajl_gen_null(g);
	/* "0-1" in a mapping would undo the 0 replicas of the load */
	json_gen_str(g, "auto_expand_replicas");
	if (loading)
		json_gen_str(g, "false");
	else if (expand && YAJL_IS_STRING(expand))
		json_gen_str(g, YAJL_GET_STRING(expand));
	else
		yajl_gen_null(g);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_gen_free(g);
	snprintf(path, sizeof(path), "/%s/_settings", index);
	rc = buf_error(&body) ? -1 : call(es, "PUT", path, body.data, body.len, &resp, err, errsz);
out:
	yajl_tree_free(root);
	buf_release(&body);
	buf_release(&resp);
	buf_release(&mapping);
	return rc;
}

/* Creates the index of a generation: 1 if created, 0 if it was there, -1. */
int indices_create(struct es_client *es, const struct config *cfg, const char *proj,
			const char *index, char *err, size_t errsz)
{
	struct buf mapping = BUF_INIT(MAPPING_LIMIT), resp = BUF_INIT(SMALL_BODY);
	char path[256], why[300];
	long status;
	int rc = -1;

	if (read_mapping(cfg, proj, &mapping, err, errsz))
		goto out;
	snprintf(path, sizeof(path), "/%s", index);
	if (es_request_sync(es, "PUT", path, mapping.data, mapping.len, &status, &resp, err, errsz))
		goto out;
	if (status == 400 && strstr(resp.data, "resource_already_exists_exception")) {
		rc = 0;
		goto out;
	}
	if (status < 200 || status >= 300) {
		describe(&resp, why, sizeof(why));
		snprintf(err, errsz, "cannot create index '%s': HTTP %ld: %s", index, status, why);
		goto out;
	}
	rc = indices_settings(es, cfg, proj, index, true, err, errsz) ? -1 : 1;
out:
	buf_release(&mapping);
	buf_release(&resp);
	return rc;
}

/* Installs (or replaces, identically) the stored script of BULK_SCRIPT. */
int indices_put_script(struct es_client *es, char *err, size_t errsz)
{
	struct buf body = BUF_INIT(SMALL_BODY), resp = BUF_INIT(SMALL_BODY);
	yajl_gen g = json_begin(&body);
	int rc;

	if (!g) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	yajl_gen_map_open(g);
	json_gen_str(g, "script");
	yajl_gen_map_open(g);
	json_gen_str(g, "lang");
	json_gen_str(g, "painless");
	json_gen_str(g, "source");
	json_gen_str(g, bulk_script_source);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_gen_free(g);
	rc = buf_error(&body) ? -1
			      : call(es, "PUT", "/_scripts/" BULK_SCRIPT_ID, body.data, body.len, &resp,
				     err, errsz);
	buf_release(&body);
	buf_release(&resp);
	return rc;
}

int indices_refresh(struct es_client *es, const char *index, char *err, size_t errsz)
{
	struct buf resp = BUF_INIT(SMALL_BODY);
	char path[256];
	int rc;

	snprintf(path, sizeof(path), "/%s/_refresh", index);
	rc = call(es, "POST", path, NULL, 0, &resp, err, errsz);
	buf_release(&resp);
	return rc;
}

int indices_delete(struct es_client *es, const char *index, char *err, size_t errsz)
{
	struct buf resp = BUF_INIT(SMALL_BODY);
	char path[256];
	long status = 0;
	int rc = 0;

	snprintf(path, sizeof(path), "/%s", index);
	if (es_request_sync(es, "DELETE", path, NULL, 0, &status, &resp, err, errsz)) {
		rc = -1;
	} else if (status != 200 && status != 404) {
		snprintf(err, errsz, "cannot delete %s (HTTP %ld) %.200s", index, status, resp.data);
		rc = -1;
	}
	buf_release(&resp);
	return rc;
}

/* One action of POST _aliases: {"VERB":{"index":INDEX,"alias":ALIAS}}. */
static void alias_action(yajl_gen g, const char *verb, const char *index, const char *alias)
{
	yajl_gen_map_open(g);
	json_gen_str(g, verb);
	yajl_gen_map_open(g);
	json_gen_str(g, "index");
	json_gen_str(g, index);
	json_gen_str(g, "alias");
	json_gen_str(g, alias);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
}

int indices_move_aliases(struct es_client *es, const char *const *aliases, const char *const *indices, size_t n,
			 char *err, size_t errsz)
{
	struct buf body = BUF_INIT(SMALL_BODY), resp = BUF_INIT(SMALL_BODY);
	yajl_val holders = NULL;
	yajl_gen gen = json_begin(&body);
	int rc = -1;

	if (!gen) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	yajl_gen_map_open(gen);
	json_gen_str(gen, "actions");
	yajl_gen_array_open(gen);
	for (size_t k = 0; k < n; k++) {
		yajl_tree_free(holders);
		if (alias_holders(es, aliases[k], &holders, err, errsz))
			goto out;
		for (size_t i = 0; holders && i < holders->u.object.len; i++)
			if (strcmp(holders->u.object.keys[i], indices[k]))
				alias_action(gen, "remove", holders->u.object.keys[i], aliases[k]);
		alias_action(gen, "add", indices[k], aliases[k]);
	}
	yajl_gen_array_close(gen);
	yajl_gen_map_close(gen);
	if (buf_error(&body)) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	/* 8.14 and later may answer 200 to actions applied in part */
	if (call(es, "POST", "/_aliases", body.data, body.len, &resp, err, errsz) ||
	    answers_aliases(resp.data, resp.len, err, errsz))
		goto out;
	rc = 0;
out:
	yajl_gen_free(gen);
	yajl_tree_free(holders);
	buf_release(&body);
	buf_release(&resp);
	return rc;
}
