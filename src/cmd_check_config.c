/* `esbridge check-config [--connect]`: the settings as a start would take them. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>
#include <yajl/yajl_tree.h>

#include "esbridge/buf.h"
#include "esbridge/json.h"
#include "esbridge/pq.h"

/* check-config --connect: PostgreSQL, what it holds for esbridge, and each projection's generation. */
static int connect_pg(const struct config *cfg, const struct projection *const *projs, int n)
{
	char err[1024], name[96];
	PGconn *conn;
	PGresult *res;
	int rc = 0;

	pq_app_name("esbridge check-config", name, sizeof(name));
	conn = pq_connect(cfg->pg, name, err, sizeof(err));
	if (!conn)
		return die(1, "%s", err);
	res = PQexec(conn, "SELECT current_setting('server_version'), current_database(), current_user,"
			   " to_regclass('public.events') IS NOT NULL,"
			   " to_regclass('esbridge.schema_version') IS NOT NULL");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pq_error(err, sizeof(err), "cannot query PostgreSQL", PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(conn);
		return die(1, "%s", err);
	}
	printf("connect: PostgreSQL %s at %s port %s, database '%s' as '%s'\n", PQgetvalue(res, 0, 0),
	       PQhost(conn), PQport(conn), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
	if (PQgetvalue(res, 0, 3)[0] != 't') {
		PQclear(res);
		PQfinish(conn);
		return die(1, "PostgreSQL database has no table 'events' (scripts/schema.sql creates it)");
	}
	if (PQgetvalue(res, 0, 4)[0] != 't') {
		printf("connect: no esbridge schema yet (the first start creates it)\n");
		PQclear(res);
		PQfinish(conn);
		return 0;
	}
	PQclear(res);
	for (int i = 0; i < n && rc == 0; i++) {
		const char *params[1] = { projs[i]->name };
		res = PQexecParams(conn,
				   "SELECT g.generation, g.index_name, g.checkpoint_pos,"
				   "  (SELECT count(*) FROM esbridge.generations b"
				   "   WHERE b.projection = $1 AND b.state IN ('building','ready'))"
				   " FROM (SELECT 1) one LEFT JOIN esbridge.generations g"
				   "  ON g.projection = $1 AND g.state = 'active'",
				   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
			pq_error(err, sizeof(err), "cannot read the generations", PQresultErrorMessage(res));
			rc = die(1, "%s", err);
		} else if (PQgetisnull(res, 0, 0)) {
			printf("connect: %s: no active generation yet%s\n", projs[i]->name,
			       strcmp(PQgetvalue(res, 0, 3), "0") ? " (one is being built)" : "");
		} else {
			printf("connect: %s: active generation %s (%s), checkpoint at position %s%s\n",
			       projs[i]->name, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
			       strcmp(PQgetvalue(res, 0, 3), "0") ? "; a rebuild is under way" : "");
		}
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}

/* The string at `path` of a parsed document, or "?". */
static const char *json_text(yajl_val v, const char **path)
{
	yajl_val s = yajl_tree_get(v, path, yajl_t_string);

	return s ? YAJL_GET_STRING(s) : "?";
}

/* check-config --connect: the cluster's name and version, as its root answers. */
static int connect_es(const struct config *cfg)
{
	static const char *name_path[] = { "cluster_name", NULL };
	static const char *number_path[] = { "version", "number", NULL };
	static const char *dist_path[] = { "version", "distribution", NULL };
	struct buf resp = BUF_INIT((size_t)1 << 20);
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct es_client *es;
	char err[1024], url[512];
	long status = 0;
	yajl_val v;
	int rc = 0;

	if (!loop)
		return die(1, "cannot initialise the event loop");
	config_redact_url(cfg->es, url, sizeof(url));
	es = es_client_new(loop, cfg, err, sizeof(err));
	if (!es)
		return die(1, "%s", err);
	if (es_request_sync(es, "GET", "/", NULL, 0, &status, &resp, err, sizeof(err))) {
		rc = die(1, "cannot reach Elasticsearch: %s", err);
	} else if (status != 200) {
		rc = die(1, "Elasticsearch at %s answered HTTP %ld to GET /%s", url, status,
			 status == 401 || status == 403 ? " (check es-user, es-password or es-api-key)" : "");
	} else if (!(v = yajl_tree_parse(resp.data ? resp.data : "", NULL, 0))) {
		rc = die(1, "Elasticsearch at %s answered GET / with no JSON", url);
	} else {
		const char *dist = json_text(v, dist_path);
		printf("connect: Elasticsearch at %s: cluster '%s', %s %s\n", url, json_text(v, name_path),
		       strcmp(dist, "?") ? dist : "elasticsearch", json_text(v, number_path));
		yajl_tree_free(v);
	}
	buf_release(&resp);
	es_client_free(es);
	ev_loop_destroy(loop);
	return rc;
}

int cmd_check_config(struct config *cfg, const struct cli *cli)
{
	bool connect = cli->connect;
	const struct projection *projs[MAX_RUNNERS];
	int n, rc;

	rc = selected_projections(cfg, projs, &n);
	if (!rc)
		rc = preflight(cfg, projs, n);
	if (rc)
		return rc;
	config_print(cfg, stdout);
	if (!connect)
		return 0;
	fflush(stdout);
	rc = connect_pg(cfg, projs, n);
	fflush(stdout);
	return rc ? rc : connect_es(cfg);
}
