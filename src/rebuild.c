#include "esbridge/rebuild.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "esbridge/bulk.h"
#include "esbridge/log.h"

#define SMALL_BODY ((size_t)1 << 20)
#define MAPPING_LIMIT ((size_t)4 << 20)

void rebuild_index_name(const char *proj, int number, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s-%06d", proj, number);
}

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

static void gstr(yajl_gen g, const char *s)
{
	yajl_gen_string(g, (const unsigned char *)s, strlen(s));
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
		snprintf(err, errsz, "mapping file '%s' is not a JSON object: %s", path,
			 root ? "" : perr);
		yajl_tree_free(root);
		return -1;
	}
	yajl_tree_free(root);
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

static int alias_names(struct es_client *es, const char *alias, const char *index, bool *names,
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

static int set_refresh(struct es_client *es, const char *index, bool off, char *err, size_t errsz)
{
	struct buf body = BUF_INIT(SMALL_BODY), resp = BUF_INIT(SMALL_BODY);
	char path[256];
	yajl_gen g = json_begin(&body);
	int rc;

	if (!g) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	yajl_gen_map_open(g);
	gstr(g, "index");
	yajl_gen_map_open(g);
	gstr(g, "refresh_interval");
	if (off)
		gstr(g, "-1");
	else
		yajl_gen_null(g);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_gen_free(g);
	snprintf(path, sizeof(path), "/%s/_settings", index);
	rc = buf_error(&body) ? -1 : call(es, "PUT", path, body.data, body.len, &resp, err, errsz);
	buf_release(&body);
	buf_release(&resp);
	return rc;
}

static int create_index(struct es_client *es, const struct config *cfg, const char *proj,
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
		/* created before a crash: the events it holds are replayed */
		rc = 0;
		goto out;
	}
	if (status < 200 || status >= 300) {
		describe(&resp, why, sizeof(why));
		snprintf(err, errsz, "cannot create index '%s': HTTP %ld: %s", index, status, why);
		goto out;
	}
	rc = set_refresh(es, index, true, err, errsz);
out:
	buf_release(&mapping);
	buf_release(&resp);
	return rc;
}

/* Installs (or replaces, identically) the stored script of BULK_SCRIPT. */
static int put_script(struct es_client *es, char *err, size_t errsz)
{
	struct buf body = BUF_INIT(SMALL_BODY), resp = BUF_INIT(SMALL_BODY);
	yajl_gen g = json_begin(&body);
	int rc;

	if (!g) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	yajl_gen_map_open(g);
	gstr(g, "script");
	yajl_gen_map_open(g);
	gstr(g, "lang");
	gstr(g, "painless");
	gstr(g, "source");
	gstr(g, bulk_script_source);
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

int rebuild_prepare(struct state *st, struct es_client *es, const struct config *cfg,
		    const struct projection *proj, struct generation *g,
		    char *err, size_t errsz)
{
	int found = state_current_generation(st, proj->name, g, err, errsz);
	bool named;

	if (found < 0 || put_script(es, err, errsz))
		return -1;
	if (!found) {
		memset(g, 0, sizeof(*g));
		g->number = 1;
		g->state = GEN_BUILDING;
		rebuild_index_name(proj->name, 1, g->index, sizeof(g->index));
		if (state_create_generation(st, proj->name, 1, g->index, err, errsz))
			return -1;
		plog_info(proj->name, g->number, "new generation, index %s", g->index);
	}
	if (g->state == GEN_ACTIVE)
		return 0;
	if (alias_names(es, proj->name, g->index, &named, err, errsz))
		return -1;
	if (named) {
		/* the alias moved but the state was not recorded before a stop */
		plog_info(proj->name, g->number, "alias already names %s: recording it as active", g->index);
		if (state_set_generation_state(st, proj->name, g->number, GEN_ACTIVE, err, errsz))
			return -1;
		g->state = GEN_ACTIVE;
		return 0;
	}
	return create_index(es, cfg, proj->name, g->index, err, errsz);
}

int rebuild_activate(struct state *st, struct es_client *es, const struct projection *proj,
		     struct generation *g, char *err, size_t errsz)
{
	struct buf body = BUF_INIT(SMALL_BODY), resp = BUF_INIT(SMALL_BODY);
	char path[256];
	yajl_val holders = NULL;
	yajl_gen gen;
	int rc = -1;

	if (set_refresh(es, g->index, false, err, errsz))
		goto out;
	snprintf(path, sizeof(path), "/%s/_refresh", g->index);
	if (call(es, "POST", path, NULL, 0, &resp, err, errsz))
		goto out;
	if (alias_holders(es, proj->name, &holders, err, errsz))
		goto out;
	gen = json_begin(&body);
	if (!gen) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	yajl_gen_map_open(gen);
	gstr(gen, "actions");
	yajl_gen_array_open(gen);
	for (size_t i = 0; holders && i < holders->u.object.len; i++) {
		if (!strcmp(holders->u.object.keys[i], g->index))
			continue;
		yajl_gen_map_open(gen);
		gstr(gen, "remove");
		yajl_gen_map_open(gen);
		gstr(gen, "index");
		gstr(gen, holders->u.object.keys[i]);
		gstr(gen, "alias");
		gstr(gen, proj->name);
		yajl_gen_map_close(gen);
		yajl_gen_map_close(gen);
	}
	yajl_gen_map_open(gen);
	gstr(gen, "add");
	yajl_gen_map_open(gen);
	gstr(gen, "index");
	gstr(gen, g->index);
	gstr(gen, "alias");
	gstr(gen, proj->name);
	yajl_gen_map_close(gen);
	yajl_gen_map_close(gen);
	yajl_gen_array_close(gen);
	yajl_gen_map_close(gen);
	yajl_gen_free(gen);
	if (buf_error(&body)) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	if (call(es, "POST", "/_aliases", body.data, body.len, &resp, err, errsz))
		goto out;
	if (state_set_generation_state(st, proj->name, g->number, GEN_ACTIVE, err, errsz))
		goto out;
	g->state = GEN_ACTIVE;
	plog_info(proj->name, g->number, "alias %s now names %s", proj->name, g->index);
	rc = 0;
out:
	yajl_tree_free(holders);
	buf_release(&body);
	buf_release(&resp);
	return rc;
}
