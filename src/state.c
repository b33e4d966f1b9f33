#include "esbridge/state.h"
#include "state_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <libpq-fe.h>
#include <yajl/yajl_gen.h>

#include "esbridge/pq.h"

#include "esbridge/buf.h"
#include "esbridge/json.h"
#include "esbridge/projection.h"
#include "esbridge/store.h"


static const char *const state_names[] = { "building", "ready", "active", "retired" };

const char *gen_state_name(enum gen_state s)
{
	return (unsigned)s < 4 ? state_names[s] : "unknown";
}

static int gen_state_parse(const char *s, enum gen_state *out)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, state_names[i])) {
			*out = (enum gen_state)i;
			return 0;
		}
	return -1;
}

/* The error of a statement; on a connection already lost there is no result to say it. */
static const char *res_error(const struct state *st, const PGresult *res)
{
	const char *msg = res ? PQresultErrorMessage(res) : "";

	return *msg ? msg : PQerrorMessage(st->conn);
}

PGresult *state_query(struct state *st, const char *what, const char *sql, int n,
		      const char *const *params, bool one_row, char *err, size_t errsz)
{
	PGresult *res = PQexecParams(st->conn, sql, n, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK || (one_row && PQntuples(res) != 1)) {
		pq_error(err, errsz, what, res_error(st, res));
		PQclear(res);
		return NULL;
	}
	return res;
}

int state_exec(struct state *st, const char *what, const char *sql, int n,
	       const char *const *params, char *err, size_t errsz)
{
	PGresult *res = PQexecParams(st->conn, sql, n, NULL, params, NULL, NULL, 0);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, what, res_error(st, res));
		rc = -1;
	}
	PQclear(res);
	return rc;
}

/*
 * Migrations, applied in order under an advisory lock so that two starting
 * processes do not race. Each runs once; the version is kept in
 * esbridge.schema_version.
 */
static const char *const migrations[] = {
	/* 1: generations and dead letters */
	"CREATE TABLE esbridge.generations ("
	"  projection text NOT NULL,"
	"  generation int NOT NULL,"
	"  index_name text NOT NULL,"
	"  state text NOT NULL CHECK (state IN ('building','ready','active','retired')),"
	"  checkpoint_txid xid8 NOT NULL DEFAULT '0',"
	"  checkpoint_pos bigint NOT NULL DEFAULT 0,"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  updated_at timestamptz NOT NULL DEFAULT now(),"
	"  PRIMARY KEY (projection, generation));"
	"CREATE TABLE esbridge.dead_letters ("
	"  id bigserial PRIMARY KEY,"
	"  projection text NOT NULL,"
	"  generation int NOT NULL,"
	"  global_position bigint NOT NULL,"
	"  transaction_id xid8 NOT NULL,"
	"  stream_id text,"
	"  event_type text,"
	"  reason text NOT NULL,"
	"  data text,"
	"  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','retried','discarded')),"
	"  created_at timestamptz NOT NULL DEFAULT now());"
	"CREATE INDEX ON esbridge.dead_letters (projection, status);",
	/* 2: commands for a running daemon (rebuild requests) */
	"CREATE TABLE esbridge.commands ("
	"  id bigserial PRIMARY KEY,"
	"  projection text NOT NULL,"
	"  command text NOT NULL CHECK (command IN ('rebuild')),"
	"  keep int NOT NULL DEFAULT 1,"
	"  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','running','done','failed')),"
	"  message text NOT NULL DEFAULT '',"
	"  created_at timestamptz NOT NULL DEFAULT now(),"
	"  updated_at timestamptz NOT NULL DEFAULT now());"
	"CREATE INDEX ON esbridge.commands (projection, status);",
	/*
	 * 3: a dead letter names its document, which it holds back: 'pending'
	 * (the event failed), 'held' (a later event of a document with a
	 * pending letter), 'retry' (asked for, not yet applied again),
	 * 'retried', 'discarded'. One open letter per event, generation and
	 * document (an event may touch a document in each of several indices).
	 */
	"ALTER TABLE esbridge.dead_letters ADD COLUMN doc_id text,"
	"  ADD COLUMN note text NOT NULL DEFAULT '',"
	"  ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),"
	"  DROP CONSTRAINT dead_letters_status_check,"
	"  ADD CONSTRAINT dead_letters_status_check"
	"    CHECK (status IN ('pending','held','retry','retried','discarded'));"
	"CREATE UNIQUE INDEX dead_letters_open ON esbridge.dead_letters"
	"  (projection, generation, global_position, coalesce(doc_id, ''))"
	"  WHERE status IN ('pending','held','retry');"
	"CREATE INDEX ON esbridge.dead_letters (projection, generation, doc_id);",
	/* 4: the other indices of a generation of a projection that writes several */
	"ALTER TABLE esbridge.generations ADD COLUMN extra_indices text[] NOT NULL DEFAULT '{}';",
	/* 5: the last error of a generation's pipeline, for status */
	"ALTER TABLE esbridge.generations ADD COLUMN last_error text NOT NULL DEFAULT '',"
	"  ADD COLUMN last_error_at timestamptz;",
	/* 6: an event's letters in every generation (`wait`, and decisions a rebuild carries over) */
	"CREATE INDEX ON esbridge.dead_letters (projection, global_position);",
};

#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

static int migrate(struct state *st, char *err, size_t errsz)
{
	PGresult *res;
	int version = 0, rc = -1;

	res = PQexec(st->conn,
		     "BEGIN;"
		     "SELECT pg_advisory_xact_lock(hashtext('esbridge.migrate'));"
		     "CREATE SCHEMA IF NOT EXISTS esbridge;"
		     "CREATE TABLE IF NOT EXISTS esbridge.schema_version (version int NOT NULL);");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot prepare the esbridge schema", res_error(st, res));
		PQclear(res);
		goto rollback;
	}
	PQclear(res);
	res = state_query(st, "cannot read the esbridge schema version",
		    "SELECT coalesce(max(version), 0) FROM esbridge.schema_version", 0, NULL, true, err, errsz);
	if (!res)
		goto rollback;
	version = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (version > N_MIGRATIONS) {
		snprintf(err, errsz, "the esbridge schema is at version %d, newer than this program knows (%d)",
			 version, N_MIGRATIONS);
		goto rollback;
	}
	for (int v = version; v < N_MIGRATIONS; v++) {
		char num[16];
		const char *params[1] = { num };
		res = PQexec(st->conn, migrations[v]);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			char what[64];
			snprintf(what, sizeof(what), "esbridge schema migration %d failed", v + 1);
			pq_error(err, errsz, what, res_error(st, res));
			PQclear(res);
			goto rollback;
		}
		PQclear(res);
		snprintf(num, sizeof(num), "%d", v + 1);
		if (state_exec(st, "cannot record the schema version",
				"INSERT INTO esbridge.schema_version VALUES ($1::int)", 1, params, err, errsz))
			goto rollback;
	}
	res = PQexec(st->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot commit the esbridge schema", res_error(st, res));
		PQclear(res);
		return -1;
	}
	PQclear(res);
	return 0;
rollback:
	PQclear(PQexec(st->conn, "ROLLBACK"));
	return rc;
}

struct state *state_open(const char *conninfo, char *err, size_t errsz)
{
	struct state *st = calloc(1, sizeof(*st));

	if (!st) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	{
		/* the owner of a projection is known by the name of its lock's session */
		char name[96];
		pq_app_name("esbridge", name, sizeof(name));
		st->conn = pq_connect(conninfo, name, err, errsz);
	}
	if (!st->conn) {
		state_close(st);
		return NULL;
	}
	if (migrate(st, err, errsz)) {
		state_close(st);
		return NULL;
	}
	return st;
}

void state_close(struct state *st)
{
	if (!st)
		return;
	if (st->conn)
		PQfinish(st->conn);
	free(st);
}

int state_list_generations(struct state *st, const char *proj, struct generation *out, int max,
			   char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res;
	int n;

	res = state_query(st, "cannot read the generations",
		    "SELECT generation, index_name, state, checkpoint_txid::text, checkpoint_pos,"
		    "  array_to_string(extra_indices, ' ')"
		    " FROM esbridge.generations WHERE projection = $1 ORDER BY generation",
		    1, params, false, err, errsz);
	if (!res)
		return -1;
	n = PQntuples(res);
	if (n > max) {
		snprintf(err, errsz, "projection '%s' has more than %d generations", proj, max);
		PQclear(res);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		struct generation *g = &out[i];
		uint64_t txid;
		g->number = atoi(PQgetvalue(res, i, 0));
		snprintf(g->index, sizeof(g->index), "%s", PQgetvalue(res, i, 1));
		if (gen_state_parse(PQgetvalue(res, i, 2), &g->state) ||
		    store_parse_u64(PQgetvalue(res, i, 3), &txid)) {
			snprintf(err, errsz, "unexpected generation row for '%s'", proj);
			PQclear(res);
			return -1;
		}
		g->checkpoint.txid = txid;
		g->checkpoint.pos = strtoll(PQgetvalue(res, i, 4), NULL, 10);
		/* index names hold no space (Elasticsearch forbids it) */
		g->n_extra = 0;
		for (const char *w = PQgetvalue(res, i, 5); *w;) {
			size_t len = strcspn(w, " ");
			if (g->n_extra == GEN_MAX_INDICES - 1 || len >= sizeof(g->extra[0])) {
				snprintf(err, errsz, "unexpected generation row for '%s'", proj);
				PQclear(res);
				return -1;
			}
			memcpy(g->extra[g->n_extra], w, len);
			g->extra[g->n_extra++][len] = '\0';
			w += len;
			w += strspn(w, " ");
		}
	}
	PQclear(res);
	return n;
}

int state_swap(struct state *st, const char *proj, int old_number, int new_number,
	       char *err, size_t errsz)
{
	char o[16], n[16];
	const char *params[3] = { proj, o, n };

	snprintf(o, sizeof(o), "%d", old_number);
	snprintf(n, sizeof(n), "%d", new_number);
	/* one statement: both rows change together or not at all */
	return state_exec(st, "cannot record the new active generation",
			   "UPDATE esbridge.generations SET updated_at = now(),"
			   " state = CASE generation WHEN $3::int THEN 'active' ELSE 'retired' END"
			   " WHERE projection = $1 AND (generation = $3::int OR"
			   "  (generation = $2::int AND state = 'active'))",
			   3, params, err, errsz);
}

int state_delete_generation(struct state *st, const char *proj, int number, char *err, size_t errsz)
{
	char num[16];
	const char *params[2] = { proj, num };

	snprintf(num, sizeof(num), "%d", number);
	return state_exec(st, "cannot delete a generation",
			   "DELETE FROM esbridge.generations WHERE projection = $1 AND generation = $2::int",
			   2, params, err, errsz);
}

int state_projection_owned(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	/* a lock on two int4 keys: classid and objid are their bits as oids, objsubid 2 */
	PGresult *res = state_query(st, "cannot read the projection lock",
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
		"  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
		"  AND classid::bigint = hashtext('esbridge.projection')::bigint & 4294967295"
		"  AND objid::bigint = hashtext($1)::bigint & 4294967295",
		1, params, true, err, errsz);
	int rc;

	if (!res)
		return -1;
	rc = strcmp(PQgetvalue(res, 0, 0), "0") ? 1 : 0;
	PQclear(res);
	return rc;
}

int state_socket(const struct state *st)
{
	return PQsocket(st->conn);
}

int state_drain_notifies(struct state *st)
{
	return pq_drain_notifies(st->conn);
}

int state_head(struct state *st, int64_t *head, char *err, size_t errsz)
{
	PGresult *res = state_query(st, "cannot read the head", "SELECT coalesce(max(global_position), 0) FROM events",
			      0, NULL, true, err, errsz);

	if (!res)
		return -1;
	*head = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

int state_create_generation(struct state *st, const char *proj, const struct generation *g,
			    char *err, size_t errsz)
{
	char num[16];
	const char *params[3 + GEN_MAX_INDICES - 1] = { proj, num, g->index };

	if (g->n_extra < 0 || g->n_extra > GEN_MAX_INDICES - 1) {
		snprintf(err, errsz, "cannot record the new generation: %d more indices", g->n_extra);
		return -1;
	}
	snprintf(num, sizeof(num), "%d", g->number);
	for (int i = 0; i < g->n_extra; i++)
		params[3 + i] = g->extra[i];
	/* ARRAY[$4, $5, $6][1:n]: the names given, none when n is 0 */
	for (int i = g->n_extra; i < GEN_MAX_INDICES - 1; i++)
		params[3 + i] = NULL;
	return state_exec(st, "cannot record the new generation",
			   "INSERT INTO esbridge.generations (projection, generation, index_name, state,"
			   "  extra_indices)"
			   " VALUES ($1, $2::int, $3, 'building',"
			   "  array_remove(ARRAY[$4::text, $5::text, $6::text], NULL))",
			   3 + GEN_MAX_INDICES - 1, params, err, errsz);
}

/* 1 if this session holds the projection's lock, 0 if not, -1 on error. */
static int state_owns(struct state *st, const char *proj)
{
	const char *params[1] = { proj };
	PGresult *res = PQexecParams(st->conn,
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
		" AND granted AND objsubid = 2 AND classid = hashtext('esbridge.projection')::oid"
		" AND objid = hashtext($1)::oid",
		1, NULL, params, NULL, NULL, 0);
	int rc = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		rc = atoi(PQgetvalue(res, 0, 0)) > 0;
	PQclear(res);
	return rc;
}

int state_save_checkpoint(struct state *st, const char *proj, int number, struct position at,
			  char *err, size_t errsz)
{
	char num[16], txid[24], pos[24];
	const char *params[4] = { proj, num, txid, pos };
	PGresult *res;
	int rc = 0;

	snprintf(num, sizeof(num), "%d", number);
	snprintf(txid, sizeof(txid), "%" PRIu64, at.txid);
	snprintf(pos, sizeof(pos), "%" PRId64, at.pos);
	res = PQexecParams(st->conn,
			   "UPDATE esbridge.generations"
			   " SET checkpoint_txid = $3::xid8, checkpoint_pos = $4::bigint, updated_at = now()"
			   " WHERE projection = $1 AND generation = $2::int"
			   /* fenced: only the session holding the projection's lock moves it */
			   "  AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
			   "   AND pid = pg_backend_pid() AND granted AND objsubid = 2"
			   "   AND classid = hashtext('esbridge.projection')::oid AND objid = hashtext($1)::oid)",
			   4, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot save the checkpoint", res_error(st, res));
		rc = -1;
	} else if (strcmp(PQcmdTuples(res), "1") != 0) {
		if (state_owns(st, proj) == 0) {
			snprintf(err, errsz, "cannot save the checkpoint: this process no longer owns '%s'", proj);
			st->fenced = true;
		} else {
			snprintf(err, errsz, "cannot save the checkpoint: generation %d of '%s' is gone", number,
				 proj);
		}
		rc = -1;
	}
	PQclear(res);
	return rc;
}

int state_set_generation_state(struct state *st, const char *proj, int number, enum gen_state s,
			       char *err, size_t errsz)
{
	char num[16];
	const char *params[3] = { proj, num, gen_state_name(s) };

	snprintf(num, sizeof(num), "%d", number);
	return state_exec(st, "cannot update the generation",
			   "UPDATE esbridge.generations SET state = $3, updated_at = now()"
			   " WHERE projection = $1 AND generation = $2::int",
			   3, params, err, errsz);
}

bool state_connection_lost(const struct state *st)
{
	return st->fenced || PQstatus(st->conn) != CONNECTION_OK;
}

int state_own_projection(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = state_query(st, "cannot take the projection lock",
			      "SELECT pg_try_advisory_lock(hashtext('esbridge.projection'), hashtext($1))", 1,
			      params, true, err, errsz);
	int rc;

	if (!res)
		return -1;
	rc = PQgetvalue(res, 0, 0)[0] == 't' ? 1 : 0;
	PQclear(res);
	return rc;
}

char *state_owner(struct state *st, const char *proj)
{
	const char *params[1] = { proj };
	PGresult *res = PQexecParams(st->conn,
		"SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
		" WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
		"  AND l.classid = hashtext('esbridge.projection')::oid AND l.objid = hashtext($1)::oid",
		1, NULL, params, NULL, NULL, 0);
	char *owner = NULL;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		owner = strdup(*PQgetvalue(res, 0, 0) ? PQgetvalue(res, 0, 0) : "a session without a name");
	PQclear(res);
	return owner;
}

