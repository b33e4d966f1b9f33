#include "esbridge/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "esbridge/pq.h"

#include "esbridge/store.h"

struct state {
	PGconn *conn;
};

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


/* Runs a statement that returns no rows. */
static int exec_params(struct state *st, const char *what, const char *sql, int n,
		       const char *const *params, char *err, size_t errsz)
{
	PGresult *res = PQexecParams(st->conn, sql, n, NULL, params, NULL, NULL, 0);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, what, PQresultErrorMessage(res));
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
	/* 3: reserved for the dead letters change on main (merged there) */
	"DO $$ BEGIN END $$",
	/* 4: the other indices of a generation of a projection that writes several */
	"ALTER TABLE esbridge.generations ADD COLUMN extra_indices text[] NOT NULL DEFAULT '{}';",
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
		pq_error(err, errsz, "cannot prepare the esbridge schema", PQresultErrorMessage(res));
		PQclear(res);
		goto rollback;
	}
	PQclear(res);
	res = PQexec(st->conn, "SELECT coalesce(max(version), 0) FROM esbridge.schema_version");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the esbridge schema version", PQresultErrorMessage(res));
		PQclear(res);
		goto rollback;
	}
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
			pq_error(err, errsz, what, PQresultErrorMessage(res));
			PQclear(res);
			goto rollback;
		}
		PQclear(res);
		snprintf(num, sizeof(num), "%d", v + 1);
		if (exec_params(st, "cannot record the schema version",
				"INSERT INTO esbridge.schema_version VALUES ($1::int)", 1, params, err, errsz))
			goto rollback;
	}
	res = PQexec(st->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot commit the esbridge schema", PQresultErrorMessage(res));
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
	st->conn = pq_connect(conninfo, err, errsz);
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

	res = PQexecParams(st->conn,
			   "SELECT generation, index_name, state, checkpoint_txid::text, checkpoint_pos,"
			   "  array_to_string(extra_indices, ' ')"
			   " FROM esbridge.generations WHERE projection = $1 ORDER BY generation",
			   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the generations", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
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
	return exec_params(st, "cannot record the new active generation",
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
	return exec_params(st, "cannot delete a generation",
			   "DELETE FROM esbridge.generations WHERE projection = $1 AND generation = $2::int",
			   2, params, err, errsz);
}

int state_command_submit(struct state *st, const char *proj, int keep, long long *id,
			 char *err, size_t errsz)
{
	char k[16];
	const char *params[2] = { proj, k };
	PGresult *res;

	snprintf(k, sizeof(k), "%d", keep);
	res = PQexecParams(st->conn,
			   "WITH c AS (INSERT INTO esbridge.commands (projection, command, keep)"
			   " VALUES ($1, 'rebuild', $2::int) RETURNING id)"
			   " SELECT id, pg_notify('" STATE_COMMANDS_CHANNEL "', $1) FROM c",
			   2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pq_error(err, errsz, "cannot submit the command", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

int state_command_claim(struct state *st, const char *proj, long long *id, int *keep,
			char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = PQexecParams(st->conn,
		"UPDATE esbridge.commands SET status = 'running', updated_at = now()"
		" WHERE id = (SELECT id FROM esbridge.commands WHERE projection = $1 AND status = 'pending'"
		"   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
		" RETURNING id, keep",
		1, NULL, params, NULL, NULL, 0);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the commands", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	if (PQntuples(res) == 1) {
		*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		*keep = atoi(PQgetvalue(res, 0, 1));
		rc = 1;
	}
	PQclear(res);
	return rc;
}

int state_command_finish(struct state *st, long long id, bool ok, const char *message,
			 char *err, size_t errsz)
{
	char num[24];
	const char *params[3] = { num, ok ? "done" : "failed", message };

	snprintf(num, sizeof(num), "%lld", id);
	return exec_params(st, "cannot record the command's end",
			   "UPDATE esbridge.commands SET status = $2, message = $3, updated_at = now()"
			   " WHERE id = $1::bigint",
			   3, params, err, errsz);
}

int state_command_status(struct state *st, long long id, char *status, size_t statussz,
			 char *message, size_t messagesz, char *err, size_t errsz)
{
	char num[24];
	const char *params[1] = { num };
	PGresult *res;

	snprintf(num, sizeof(num), "%lld", id);
	res = PQexecParams(st->conn, "SELECT status, message FROM esbridge.commands WHERE id = $1::bigint",
			   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pq_error(err, errsz, "cannot read the command", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	snprintf(status, statussz, "%s", PQgetvalue(res, 0, 0));
	snprintf(message, messagesz, "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	return 0;
}

int state_command_recover(struct state *st, const char *proj, bool resuming, long long *id,
			  int *keep, char *err, size_t errsz)
{
	const char *params[2] = { proj, resuming ? "t" : "f" };
	PGresult *res;

	*id = 0;
	/*
	 * The newest running command is taken over by a resumed rebuild; every
	 * other running command belonged to a process that stopped: done if a
	 * generation became active after it was asked for, else failed.
	 */
	res = PQexecParams(st->conn,
		"WITH newest AS (SELECT max(id) AS id FROM esbridge.commands"
		"   WHERE projection = $1 AND status = 'running'),"
		" ended AS (UPDATE esbridge.commands c SET updated_at = now(),"
		"   status = CASE WHEN EXISTS (SELECT 1 FROM esbridge.generations g"
		"     WHERE g.projection = c.projection AND g.state = 'active' AND g.created_at > c.created_at)"
		"     THEN 'done' ELSE 'failed' END,"
		"   message = 'the process running it stopped'"
		"   WHERE c.projection = $1 AND c.status = 'running'"
		"     AND NOT ($2::bool AND c.id = (SELECT id FROM newest)) RETURNING c.id)"
		" SELECT c.id, c.keep FROM esbridge.commands c, newest"
		" WHERE $2::bool AND c.id = newest.id",
		2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot recover the commands", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	if (PQntuples(res) == 1) {
		*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		*keep = atoi(PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return 0;
}

int state_disown_projection(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };

	return exec_params(st, "cannot release the projection lock",
			   "SELECT pg_advisory_unlock(hashtext('esbridge.projection'), hashtext($1))",
			   1, params, err, errsz);
}

int state_commands_open(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = PQexecParams(st->conn,
		"SELECT count(*) FROM esbridge.commands WHERE projection = $1 AND status IN ('pending','running')",
		1, NULL, params, NULL, NULL, 0);
	int n;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the commands", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	n = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return n;
}

int state_listen_commands(struct state *st, char *err, size_t errsz)
{
	return exec_params(st, "LISTEN failed", "LISTEN " STATE_COMMANDS_CHANNEL, 0, NULL, err, errsz);
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
	PGresult *res = PQexec(st->conn, "SELECT coalesce(max(global_position), 0) FROM events");

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the head", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
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
	return exec_params(st, "cannot record the new generation",
			   "INSERT INTO esbridge.generations (projection, generation, index_name, state,"
			   "  extra_indices)"
			   " VALUES ($1, $2::int, $3, 'building',"
			   "  array_remove(ARRAY[$4::text, $5::text, $6::text], NULL))",
			   3 + GEN_MAX_INDICES - 1, params, err, errsz);
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
			   " WHERE projection = $1 AND generation = $2::int",
			   4, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot save the checkpoint", PQresultErrorMessage(res));
		rc = -1;
	} else if (strcmp(PQcmdTuples(res), "1") != 0) {
		snprintf(err, errsz, "cannot save the checkpoint: generation %d of '%s' is gone", number, proj);
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
	return exec_params(st, "cannot update the generation",
			   "UPDATE esbridge.generations SET state = $3, updated_at = now()"
			   " WHERE projection = $1 AND generation = $2::int",
			   3, params, err, errsz);
}

int state_dead_letter(struct state *st, const char *proj, int number, struct position at,
		      const char *reason, char *err, size_t errsz)
{
	char num[16], pos[24];
	const char *params[4] = { proj, num, reason, pos };

	snprintf(num, sizeof(num), "%d", number);
	snprintf(pos, sizeof(pos), "%" PRId64, at.pos);
	return exec_params(st, "cannot record a dead letter",
			   "INSERT INTO esbridge.dead_letters"
			   " (projection, generation, global_position, transaction_id, stream_id,"
			   "  event_type, reason, data)"
			   " SELECT $1, $2::int, global_position, transaction_id, stream_id, event_type,"
			   "  $3, data::text FROM events WHERE global_position = $4::bigint",
			   4, params, err, errsz);
}

int state_own_projection(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = PQexecParams(st->conn,
				     "SELECT pg_try_advisory_lock(hashtext('esbridge.projection'), hashtext($1))",
				     1, NULL, params, NULL, NULL, 0);
	int rc;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pq_error(err, errsz, "cannot take the projection lock", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	rc = PQgetvalue(res, 0, 0)[0] == 't' ? 1 : 0;
	PQclear(res);
	return rc;
}

int state_print_status(struct state *st, char *err, size_t errsz)
{
	PGresult *res = PQexec(st->conn,
		"SELECT g.projection, g.generation, g.index_name, g.state,"
		"  g.checkpoint_txid::text, g.checkpoint_pos,"
		"  (SELECT count(*) FROM esbridge.dead_letters d"
		"    WHERE d.projection = g.projection AND d.status = 'pending'),"
		"  to_char(g.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
		" FROM esbridge.generations g ORDER BY g.projection, g.generation");

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the generations", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	printf("%-16s %4s %-24s %-9s %-24s %8s %s\n", "PROJECTION", "GEN", "INDEX", "STATE",
	       "CHECKPOINT(txid/pos)", "DEAD", "UPDATED");
	for (int i = 0; i < PQntuples(res); i++) {
		char at[64];
		snprintf(at, sizeof(at), "%s/%s", PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
		printf("%-16s %4s %-24s %-9s %-24s %8s %s\n", PQgetvalue(res, i, 0),
		       PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
		       at, PQgetvalue(res, i, 6), PQgetvalue(res, i, 7));
	}
	PQclear(res);
	return 0;
}
