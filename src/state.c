#include "esbridge/state.h"

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

struct state {
	PGconn *conn;
	bool fenced;   /* a write found the projection's lock gone */
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


/* The error of a statement; on a connection already lost there is no result to say it. */
static const char *res_error(const struct state *st, const PGresult *res)
{
	const char *msg = res ? PQresultErrorMessage(res) : "";

	return *msg ? msg : PQerrorMessage(st->conn);
}

/*
 * Runs a statement that returns rows: its result, for the caller to PQclear,
 * or NULL with `err` saying `what` failed and why. With `one_row` a result of
 * any other number of rows is an error too.
 */
static PGresult *query(struct state *st, const char *what, const char *sql, int n,
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

/* Runs a statement that returns no rows. */
static int exec_params(struct state *st, const char *what, const char *sql, int n,
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
	res = query(st, "cannot read the esbridge schema version",
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
		if (exec_params(st, "cannot record the schema version",
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

	res = query(st, "cannot read the generations",
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
	res = query(st, "cannot submit the command",
		    "WITH c AS (INSERT INTO esbridge.commands (projection, command, keep)"
		    " VALUES ($1, 'rebuild', $2::int) RETURNING id)"
		    " SELECT id, pg_notify('" STATE_COMMANDS_CHANNEL "', $1) FROM c",
		    2, params, true, err, errsz);
	if (!res)
		return -1;
	*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

int state_command_claim(struct state *st, const char *proj, long long *id, int *keep,
			char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = query(st, "cannot read the commands",
		"UPDATE esbridge.commands SET status = 'running', updated_at = now()"
		" WHERE id = (SELECT id FROM esbridge.commands WHERE projection = $1 AND status = 'pending'"
		"   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
		" RETURNING id, keep",
		1, params, false, err, errsz);
	int rc = 0;

	if (!res)
		return -1;
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

int state_command_withdraw(struct state *st, long long id, const char *message, char *err, size_t errsz)
{
	char num[24];
	const char *params[2] = { num, message };
	PGresult *res;
	int rc;

	snprintf(num, sizeof(num), "%lld", id);
	/* the row lock orders it with a claim: whichever comes second sees the other's status */
	res = query(st, "cannot withdraw the command",
		    "UPDATE esbridge.commands SET status = 'failed', message = $2, updated_at = now()"
		    " WHERE id = $1::bigint AND status = 'pending' RETURNING id",
		    2, params, false, err, errsz);
	if (!res)
		return -1;
	rc = PQntuples(res) == 1;
	PQclear(res);
	return rc;
}

int state_command_status(struct state *st, long long id, char *status, size_t statussz,
			 char *message, size_t messagesz, char *err, size_t errsz)
{
	char num[24];
	const char *params[1] = { num };
	PGresult *res;

	snprintf(num, sizeof(num), "%lld", id);
	res = query(st, "cannot read the command",
		    "SELECT status, message FROM esbridge.commands WHERE id = $1::bigint", 1, params, true,
		    err, errsz);
	if (!res)
		return -1;
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
	res = query(st, "cannot recover the commands",
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
		2, params, false, err, errsz);
	if (!res)
		return -1;
	if (PQntuples(res) == 1) {
		*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		*keep = atoi(PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return 0;
}

int state_projection_owned(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	/* a lock on two int4 keys: classid and objid are their bits as oids, objsubid 2 */
	PGresult *res = query(st, "cannot read the projection lock",
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

int state_commands_open(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = query(st, "cannot read the commands",
		"SELECT count(*) FROM esbridge.commands WHERE projection = $1 AND status IN ('pending','running')",
		1, params, true, err, errsz);
	int n;

	if (!res)
		return -1;
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
	PGresult *res = query(st, "cannot read the head", "SELECT coalesce(max(global_position), 0) FROM events",
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
	return exec_params(st, "cannot record the new generation",
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
	return exec_params(st, "cannot update the generation",
			   "UPDATE esbridge.generations SET state = $3, updated_at = now()"
			   " WHERE projection = $1 AND generation = $2::int",
			   3, params, err, errsz);
}

bool state_connection_lost(const struct state *st)
{
	return st->fenced || PQstatus(st->conn) != CONNECTION_OK;
}

int state_dead_letter(struct state *st, const char *proj, int number, const struct dead_letter *dl,
		      char *err, size_t errsz)
{
	char num[16], pos[24];
	const char *params[6] = { proj, num, dl->reason, pos, dl->doc_id, dl->held ? "held" : "pending" };

	snprintf(num, sizeof(num), "%d", number);
	snprintf(pos, sizeof(pos), "%" PRId64, dl->at.pos);
	/*
	 * Replays record the same letter again: one open letter per event. A
	 * letter being retried that fails again is open once more.
	 *
	 * A decision about an event outlives its generation: an event with no
	 * open letter here whose letter an earlier generation discarded is
	 * recorded discarded (the note says where from; nothing is recorded
	 * when this one discarded it already, as when it is read again after a
	 * restart), and one an earlier one retried and applied is recorded to
	 * be retried. A held letter whose document has no pending or held
	 * letter here (its holder was so carried over) is to be retried too:
	 * the runner has the pipeline apply them (and forget the hold) before
	 * a swap.
	 */
	return exec_params(st, "cannot record a dead letter",
			   "WITH prev AS (SELECT p.status, p.generation, p.note FROM esbridge.dead_letters p"
			   "  WHERE p.projection = $1 AND p.global_position = $4::bigint"
			   "   AND coalesce(p.doc_id, '') = coalesce($5, '')"
			   "   AND (p.generation < $2::int AND p.status IN ('discarded','retried')"
			   "    OR p.generation = $2::int AND p.status = 'discarded')"
			   /* not while a letter of it is open here (one being retried fails again) */
			   "   AND NOT EXISTS (SELECT 1 FROM esbridge.dead_letters s WHERE s.projection = $1"
			   "    AND s.global_position = $4::bigint AND s.generation = $2::int"
			   "    AND coalesce(s.doc_id, '') = coalesce($5, '')"
			   "    AND s.status IN ('pending','held','retry'))"
			   "  ORDER BY p.generation DESC LIMIT 1),"
			   " holder AS (SELECT 1 FROM esbridge.dead_letters h WHERE h.projection = $1"
			   "  AND h.generation = $2::int AND h.doc_id = $5 AND h.status IN ('pending','held') LIMIT 1),"
			   " decided AS (SELECT CASE"
			   "   WHEN $6 = 'held' THEN CASE WHEN EXISTS (SELECT 1 FROM holder) THEN 'held' ELSE 'retry' END"
			   "   WHEN (SELECT status FROM prev) = 'discarded' THEN 'discarded'"
			   "   WHEN (SELECT status FROM prev) = 'retried' THEN 'retry'"
			   "   ELSE 'pending' END AS status,"
			   /* the note of the generation that decided, once */
			   "  coalesce((SELECT CASE WHEN note LIKE 'carried over from generation %' THEN note"
			   "    ELSE format('carried over from generation %s: %s', generation, note) END FROM prev"
			   "   WHERE status = 'discarded'), '') AS note)"
			   "INSERT INTO esbridge.dead_letters AS d"
			   " (projection, generation, global_position, transaction_id, stream_id,"
			   "  event_type, reason, data, doc_id, status, note)"
			   " SELECT $1, $2::int, e.global_position, e.transaction_id, e.stream_id, e.event_type,"
			   "  $3, e.data::text, $5, decided.status, decided.note"
			   " FROM events e, decided WHERE e.global_position = $4::bigint"
			   /* read again after a restart: discarded here already */
			   "  AND NOT (decided.status = 'discarded' AND $6 <> 'held'"
			   "   AND (SELECT generation FROM prev) = $2::int)"
			   " ON CONFLICT (projection, generation, global_position, coalesce(doc_id, ''))"
			   "  WHERE status IN ('pending','held','retry')"
			   " DO UPDATE SET status = excluded.status, reason = excluded.reason,"
			   "  doc_id = excluded.doc_id, updated_at = now() WHERE d.status = 'retry'",
			   6, params, err, errsz);
}

int state_held_documents(struct state *st, const char *proj, int number, state_held_fn fn, void *arg,
			 char *err, size_t errsz)
{
	char num[16];
	const char *params[2] = { proj, num };
	PGresult *res;
	int rc = 0;

	snprintf(num, sizeof(num), "%d", number);
	res = query(st, "cannot read the dead letters",
		    /* d.: the xid8 column, not the text output of the same name */
		    "SELECT DISTINCT ON (d.doc_id) d.doc_id, d.transaction_id::text, d.global_position"
		    " FROM esbridge.dead_letters d"
		    " WHERE d.projection = $1 AND d.generation = $2::int AND d.doc_id IS NOT NULL"
		    "  AND d.status IN ('pending','held')"
		    " ORDER BY d.doc_id, d.transaction_id, d.global_position",
		    2, params, false, err, errsz);
	if (!res)
		return -1;
	for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
		struct position at;
		if (store_parse_u64(PQgetvalue(res, i, 1), &at.txid)) {
			snprintf(err, errsz, "cannot read the dead letters: bad transaction id");
			rc = -1;
			break;
		}
		at.pos = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		rc = fn(arg, PQgetvalue(res, i, 0), at);
		if (rc)
			snprintf(err, errsz, "out of memory");
	}
	PQclear(res);
	return rc;
}

int state_letters_to_retry(struct state *st, const char *proj, int number, struct letter_ref **out,
			   size_t *n, char *err, size_t errsz)
{
	char num[16];
	const char *params[2] = { proj, num };
	PGresult *res;
	struct letter_ref *refs = NULL;
	int rows;

	*out = NULL;
	*n = 0;
	snprintf(num, sizeof(num), "%d", number);
	/* a document's letters go back together, in order */
	if (exec_params(st, "cannot read the dead letters",
			"UPDATE esbridge.dead_letters d SET status = 'retry', updated_at = now()"
			" WHERE d.projection = $1 AND d.generation = $2::int AND d.status IN ('pending','held')"
			"  AND d.doc_id IN (SELECT r.doc_id FROM esbridge.dead_letters r"
			"   WHERE r.projection = $1 AND r.generation = $2::int AND r.status = 'retry')",
			2, params, err, errsz))
		return -1;
	res = query(st, "cannot read the dead letters",
		    "SELECT d.id, d.transaction_id::text, d.global_position FROM esbridge.dead_letters d"
		    " WHERE d.projection = $1 AND d.generation = $2::int AND d.status = 'retry'"
		    " ORDER BY d.transaction_id, d.global_position",
		    2, params, false, err, errsz);
	if (!res)
		return -1;
	rows = PQntuples(res);
	if (rows) {
		refs = calloc((size_t)rows, sizeof(*refs));
		if (!refs) {
			PQclear(res);
			snprintf(err, errsz, "out of memory");
			return -1;
		}
	}
	for (int i = 0; i < rows; i++) {
		refs[i].id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		refs[i].at.pos = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		if (store_parse_u64(PQgetvalue(res, i, 1), &refs[i].at.txid)) {
			free(refs);
			PQclear(res);
			snprintf(err, errsz, "cannot read the dead letters: bad transaction id");
			return -1;
		}
	}
	PQclear(res);
	*out = refs;
	*n = (size_t)rows;
	return 0;
}

/* "{1,2,3}": a bigint[] parameter made of numbers only. */
static char *id_array(const long long *ids, size_t n)
{
	size_t cap = 2 + n * 21, len = 0;
	char *s = malloc(cap + 1);

	if (!s)
		return NULL;
	s[len++] = '{';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(s + len, cap + 1 - len, "%s%lld", i ? "," : "", ids[i]);
	s[len++] = '}';
	s[len] = '\0';
	return s;
}

int state_letters_retried(struct state *st, const long long *ids, size_t n, char *err, size_t errsz)
{
	char *arr;
	const char *params[1];
	int rc;

	if (!n)
		return 0;
	arr = id_array(ids, n);
	if (!arr) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	params[0] = arr;
	rc = exec_params(st, "cannot update the dead letters",
			 "UPDATE esbridge.dead_letters SET status = 'retried', updated_at = now()"
			 " WHERE id = ANY($1::bigint[]) AND status = 'retry'",
			 1, params, err, errsz);
	free(arr);
	return rc;
}

long long state_letters_waiting(struct state *st, const char *proj, int number, char *err, size_t errsz)
{
	char num[16];
	const char *params[2] = { proj, num };
	PGresult *res;
	long long n;

	snprintf(num, sizeof(num), "%d", number);
	res = query(st, "cannot read the dead letters",
		    "SELECT count(*) FROM esbridge.dead_letters"
		    " WHERE projection = $1 AND status = 'retry' AND generation = $2::int",
		    2, params, true, err, errsz);
	if (!res)
		return -1;
	n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

long long state_letters_diverge(struct state *st, const char *proj, int number, int active, char *doc,
				size_t docsz, long long *first, char *err, size_t errsz)
{
	char num[16], act[16];
	const char *params[3] = { proj, num, act };
	PGresult *res;
	long long n = 0;

	snprintf(num, sizeof(num), "%d", number);
	snprintf(act, sizeof(act), "%d", active);
	/* per document held back in `number` and not in `active`, its first letter; the first of them */
	res = query(st, "cannot read the dead letters",
		    "SELECT count(*) OVER (), x.doc_id, x.id FROM"
		    " (SELECT DISTINCT ON (n.doc_id) n.doc_id, n.id, n.transaction_id AS t, n.global_position AS p"
		    "  FROM esbridge.dead_letters n"
		    "  WHERE n.projection = $1 AND n.generation = $2::int AND n.doc_id IS NOT NULL"
		    "   AND n.status IN ('pending','held','retry')"
		    "   AND NOT EXISTS (SELECT 1 FROM esbridge.dead_letters a WHERE a.projection = $1"
		    "    AND a.generation = $3::int AND a.doc_id = n.doc_id"
		    "    AND a.status IN ('pending','held','retry'))"
		    "  ORDER BY n.doc_id, n.transaction_id, n.global_position) x"
		    " ORDER BY x.t, x.p LIMIT 1",
		    3, params, false, err, errsz);
	if (!res)
		return -1;
	if (PQntuples(res) == 1) {
		n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		(void)json_utf8_show(doc, docsz, PQgetvalue(res, 0, 1));
		*first = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	}
	PQclear(res);
	return n;
}

/* Wakes the daemons: they apply letters marked 'retry'. */
static int notify_letters(struct state *st, char *err, size_t errsz)
{
	return exec_params(st, "cannot notify the daemon",
			   "SELECT pg_notify('" STATE_COMMANDS_CHANNEL "', 'dead-letters')", 0, NULL, err, errsz);
}

void state_letters_change_release(struct letters_change *c)
{
	free(c->ids);
	memset(c, 0, sizeof(*c));
}

/*
 * Reads rows (id to apply again or NULL, projection, document) into `c`;
 * -1 with `err` if out of memory.
 */
static int read_change(PGresult *res, int id_col, struct letters_change *c, char *err, size_t errsz)
{
	int rows = PQntuples(res);

	if (rows) {
		c->ids = calloc((size_t)rows, sizeof(*c->ids));
		if (!c->ids) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		snprintf(c->projection, sizeof(c->projection), "%s", PQgetvalue(res, 0, id_col + 1));
		(void)json_utf8_show(c->doc, sizeof(c->doc), PQgetvalue(res, 0, id_col + 2));
	}
	for (int i = 0; i < rows; i++) {
		if (strcmp(PQgetvalue(res, i, id_col + 1), c->projection))
			c->projection[0] = '\0'; /* several */
		if (!PQgetisnull(res, i, id_col))
			c->ids[c->n++] = strtoll(PQgetvalue(res, i, id_col), NULL, 10);
	}
	return 0;
}

int state_letters_retry(struct state *st, long long id, const char *proj, struct letters_change *c,
			char *err, size_t errsz)
{
	char num[24];
	const char *params[2] = { num, proj };
	PGresult *res;
	int rc;

	memset(c, 0, sizeof(*c));
	snprintf(num, sizeof(num), "%lld", id);
	if (id > 0)
		res = query(st, "cannot retry the dead letter",
			    "WITH l AS (SELECT projection, generation, doc_id, id FROM esbridge.dead_letters"
			    "  WHERE id = $1::bigint AND status IN ('pending','held')),"
			    " u AS (UPDATE esbridge.dead_letters d SET status = 'retry', updated_at = now()"
			    "  FROM l WHERE d.status IN ('pending','held') AND d.projection = l.projection"
			    "   AND d.generation = l.generation"
			    "   AND (d.id = l.id OR d.doc_id = l.doc_id) RETURNING d.id, d.projection, d.doc_id)"
			    " SELECT id, projection, coalesce(doc_id, '') FROM u ORDER BY id",
			    1, params, false, err, errsz);
	else
		res = query(st, "cannot retry the dead letters",
			    "WITH u AS (UPDATE esbridge.dead_letters d SET status = 'retry', updated_at = now()"
			    "  FROM esbridge.generations g"
			    "  WHERE d.status IN ('pending','held') AND g.projection = d.projection"
			    "   AND g.generation = d.generation AND g.state <> 'retired'"
			    "   AND ($1::text IS NULL OR d.projection = $1) RETURNING d.id, d.projection, d.doc_id)"
			    " SELECT id, projection, coalesce(doc_id, '') FROM u ORDER BY id",
			    1, params + 1, false, err, errsz);
	if (!res)
		return -1;
	rc = read_change(res, 0, c, err, errsz);
	PQclear(res);
	if (rc == 0 && c->n > 0 && notify_letters(st, err, errsz))
		rc = -1;
	if (rc)
		state_letters_change_release(c);
	return rc;
}

int state_letter_discard(struct state *st, long long id, const char *reason, struct letters_change *c,
			 char *err, size_t errsz)
{
	char num[24];
	const char *params[2] = { num, reason };
	PGresult *res;
	int rc;

	memset(c, 0, sizeof(*c));
	snprintf(num, sizeof(num), "%lld", id);
	/* one row per letter of the document to apply again (one with none when there are none) */
	res = query(st, "cannot discard the dead letter",
		    "WITH l AS (UPDATE esbridge.dead_letters SET status = 'discarded', note = $2,"
		    "   updated_at = now()"
		    "  WHERE id = $1::bigint AND status IN ('pending','held')"
		    "  RETURNING projection, generation, doc_id, id),"
		    " r AS (UPDATE esbridge.dead_letters d SET status = 'retry', updated_at = now()"
		    "  FROM l WHERE d.status IN ('pending','held') AND d.projection = l.projection"
		    "   AND d.generation = l.generation AND d.doc_id = l.doc_id AND d.id <> l.id"
		    "  RETURNING d.id)"
		    " SELECT l.id, r.id, l.projection, coalesce(l.doc_id, '') FROM l LEFT JOIN r ON true"
		    " ORDER BY r.id",
		    2, params, false, err, errsz);
	if (!res)
		return -1;
	if (PQntuples(res) > 0)
		c->discarded = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	rc = read_change(res, 1, c, err, errsz);
	PQclear(res);
	if (rc == 0 && c->discarded && notify_letters(st, err, errsz))
		rc = -1;
	if (rc)
		state_letters_change_release(c);
	return rc;
}

int state_letters_outcome(struct state *st, const long long *ids, size_t n, long long *waiting,
			  long long *failed, long long *first_failed, char *reason, size_t reasonsz,
			  char *err, size_t errsz)
{
	char *arr;
	const char *params[1];
	PGresult *res;

	*waiting = *failed = *first_failed = 0;
	if (reasonsz)
		reason[0] = '\0';
	if (!n)
		return 0;
	arr = id_array(ids, n);
	if (!arr) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	params[0] = arr;
	res = query(st, "cannot read the dead letters",
		    "SELECT count(*) FILTER (WHERE status = 'retry'),"
		    "  count(*) FILTER (WHERE status IN ('pending','held')),"
		    "  (SELECT min(id) FROM esbridge.dead_letters WHERE id = ANY($1::bigint[]) AND status = 'pending'),"
		    "  (SELECT translate(reason, E'\\n\\r\\t', '   ') FROM esbridge.dead_letters"
		    "    WHERE id = ANY($1::bigint[]) AND status = 'pending' ORDER BY id LIMIT 1)"
		    " FROM esbridge.dead_letters WHERE id = ANY($1::bigint[])",
		    1, params, true, err, errsz);
	free(arr);
	if (!res)
		return -1;
	*waiting = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	*failed = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	*first_failed = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	(void)json_utf8_show(reason, reasonsz, PQgetvalue(res, 0, 3));
	PQclear(res);
	return 0;
}

int state_letters_print(struct state *st, const char *proj, bool all, FILE *out, char *err, size_t errsz)
{
	const char *params[2] = { proj, all ? "t" : "f" };
	PGresult *res = query(st, "cannot read the dead letters",
		/* one line per letter: line breaks and tabs as spaces, other control characters as '?' */
		"SELECT id, projection, generation, transaction_id::text || '/' || global_position,"
		"  regexp_replace(coalesce(stream_id, ''), '[[:cntrl:]]', '?', 'g'),"
		"  regexp_replace(coalesce(event_type, ''), '[[:cntrl:]]', '?', 'g'),"
		"  regexp_replace(coalesce(doc_id, ''), '[[:cntrl:]]', '?', 'g'), status,"
		"  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
		"  regexp_replace(translate(reason, E'\\n\\r\\t', '   '), '[[:cntrl:]]', '?', 'g'),"
		"  regexp_replace(translate(note, E'\\n\\r\\t', '   '), '[[:cntrl:]]', '?', 'g')"
		" FROM esbridge.dead_letters"
		" WHERE ($1::text IS NULL OR projection = $1)"
		"  AND ($2::bool OR status IN ('pending','held','retry'))"
		" ORDER BY projection, generation, transaction_id, global_position",
		2, params, false, err, errsz);

	if (!res)
		return -1;
	if (PQntuples(res) == 0) {
		fprintf(out, all ? "no dead letters%s%s\n" : "no open dead letters%s%s\n", proj ? " of " : "",
			proj ? proj : "");
		PQclear(res);
		return 0;
	}
	fprintf(out, "%-8s %-16s %4s %-22s %-20s %-20s %-16s %-9s %-20s %s\n", "ID", "PROJECTION", "GEN",
		"POSITION(txid/pos)", "STREAM", "TYPE", "DOCUMENT", "STATUS", "CREATED", "REASON");
	for (int i = 0; i < PQntuples(res); i++) {
		fprintf(out, "%-8s %-16s %4s %-22s %-20s %-20s %-16s %-9s %-20s %s", PQgetvalue(res, i, 0),
			PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
			PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), PQgetvalue(res, i, 6),
			PQgetvalue(res, i, 7), PQgetvalue(res, i, 8), PQgetvalue(res, i, 9));
		if (*PQgetvalue(res, i, 10))
			fprintf(out, " (discarded: %s)", PQgetvalue(res, i, 10));
		fputc('\n', out);
	}
	PQclear(res);
	return 0;
}

int state_own_projection(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = query(st, "cannot take the projection lock",
			      "SELECT pg_try_advisory_lock(hashtext('esbridge.projection'), hashtext($1))", 1,
			      params, true, err, errsz);
	int rc;

	if (!res)
		return -1;
	rc = PQgetvalue(res, 0, 0)[0] == 't' ? 1 : 0;
	PQclear(res);
	return rc;
}

/* Rows of the events table one scan of state_applied reads at most. */
#define APPLIED_SCAN_ROWS 10000
#define APPLIED_SCAN_CHUNKS 20

/*
 * Whether the events in commit order after `from` up to `to` hold one the
 * projection reads: 1 if so, 0 if none (`*from` then moves to `to`), -1.
 * Reads APPLIED_SCAN_ROWS rows of the (transaction_id, global_position)
 * index at a time, at most APPLIED_SCAN_CHUNKS times; 2 when that was not
 * enough to reach `to` (`*from` has moved as far as it read).
 */
static int projection_events_between(struct state *st, const struct projection *proj, struct position *from,
				     struct position to, char *err, size_t errsz)
{
	struct buf tl = BUF_INIT(1 << 16), sl = BUF_INIT(1 << 16);
	char ft[24], fp[24], tt[24], tp[24], lim[16];
	const char *params[7] = { ft, fp, tt, tp, NULL, NULL, lim };
	int rc = 2;

	if (store_text_array(proj->event_types, &tl) || store_text_array(proj->streams, &sl)) {
		snprintf(err, errsz, "out of memory");
		buf_release(&tl);
		buf_release(&sl);
		return -1;
	}
	params[4] = tl.data;
	params[5] = sl.data;
	snprintf(tt, sizeof(tt), "%" PRIu64, to.txid);
	snprintf(tp, sizeof(tp), "%" PRId64, to.pos);
	snprintf(lim, sizeof(lim), "%d", APPLIED_SCAN_ROWS);
	for (int chunk = 0; chunk < APPLIED_SCAN_CHUNKS && rc == 2; chunk++) {
		PGresult *res;
		long long rows;

		snprintf(ft, sizeof(ft), "%" PRIu64, from->txid);
		snprintf(fp, sizeof(fp), "%" PRId64, from->pos);
		/* a range of the index in its order; the filter is the one store_read applies */
		res = query(st, "cannot read the events",
			    "WITH r AS (SELECT e.transaction_id AS t, e.global_position AS p,"
			    "   (e.event_type = ANY($5::text[]) OR e.stream_id ^@ ANY($6::text[])) AS mine"
			    "  FROM events e"
			    "  WHERE (e.transaction_id, e.global_position) > ($1::xid8, $2::bigint)"
			    "   AND (e.transaction_id, e.global_position) <= ($3::xid8, $4::bigint)"
			    "  ORDER BY e.transaction_id, e.global_position LIMIT $7::int),"
			    " last AS (SELECT t, p FROM r ORDER BY t DESC, p DESC LIMIT 1)"
			    " SELECT (SELECT count(*) FROM r), (SELECT coalesce(bool_or(mine), false) FROM r),"
			    "  (SELECT t::text FROM last), (SELECT p FROM last)",
			    7, params, true, err, errsz);
		if (!res) {
			rc = -1;
			break;
		}
		rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		if (PQgetvalue(res, 0, 1)[0] == 't') {
			rc = 1;
		} else if (rows < APPLIED_SCAN_ROWS) {
			*from = to;
			rc = 0;
		} else if (store_parse_u64(PQgetvalue(res, 0, 2), &from->txid)) {
			snprintf(err, errsz, "cannot read the events: bad transaction id");
			rc = -1;
		} else {
			from->pos = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
		}
		PQclear(res);
	}
	buf_release(&tl);
	buf_release(&sl);
	return rc;
}

int state_applied(struct state *st, const struct projection *proj, const char *position,
		  struct state_wait *w, char *err, size_t errsz)
{
	const char *params[2] = { proj->name, position };
	struct position at, ck;
	PGresult *res;
	int rc = 0;

	/*
	 * The event, the active generation's checkpoint, whether every
	 * transaction up to the event's has ended, and the event's letter in
	 * that generation (an open one first).
	 */
	res = query(st, "cannot read the checkpoint",
		"SELECT e.transaction_id::text, e.transaction_id < pg_snapshot_xmin(pg_current_snapshot()),"
		"  g.checkpoint_txid::text, g.checkpoint_pos,"
		"  (e.transaction_id, e.global_position) <= (g.checkpoint_txid, g.checkpoint_pos),"
		"  l.id, l.status"
		" FROM events e JOIN esbridge.generations g ON g.projection = $1 AND g.state = 'active'"
		" LEFT JOIN LATERAL (SELECT d.id, d.status FROM esbridge.dead_letters d"
		"   WHERE d.projection = $1 AND d.global_position = e.global_position"
		"    AND d.generation = g.generation"
		"   ORDER BY d.status IN ('pending','held','retry') DESC, d.id LIMIT 1) l ON true"
		" WHERE e.global_position = $2::bigint",
		2, params, false, err, errsz);
	if (!res)
		return -1;
	w->letter = 0;
	w->letter_status[0] = '\0';
	if (PQntuples(res) != 1) {
		PQclear(res); /* not committed yet, or no active generation */
		return 0;
	}
	if (store_parse_u64(PQgetvalue(res, 0, 0), &at.txid) || store_parse_u64(PQgetvalue(res, 0, 2), &ck.txid)) {
		snprintf(err, errsz, "cannot read the checkpoint: bad transaction id");
		PQclear(res);
		return -1;
	}
	at.pos = strtoll(position, NULL, 10);
	ck.pos = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
	if (PQgetvalue(res, 0, 4)[0] == 't') {
		const char *status = PQgetvalue(res, 0, 6);
		if (PQgetisnull(res, 0, 5) || !strcmp(status, "retried")) {
			rc = 1;
		} else if (strcmp(status, "retry")) {
			/* pending, held or discarded: the event is not in the index */
			w->letter = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
			snprintf(w->letter_status, sizeof(w->letter_status), "%s", status);
			rc = 2;
		} /* else being applied again: not yet */
		PQclear(res);
		return rc;
	}
	if (PQgetvalue(res, 0, 1)[0] != 't') {
		PQclear(res); /* a transaction that could still add an event before it is open */
		return 0;
	}
	PQclear(res);
	/*
	 * Past the checkpoint: the projection has read past the event when no
	 * event it reads lies between the two (it does not save its checkpoint
	 * at events it skips). What was found empty stays so: every
	 * transaction up to the event's has ended.
	 */
	if (position_cmp(ck, w->scanned) > 0)
		w->scanned = ck;
	switch (projection_events_between(st, proj, &w->scanned, at, err, errsz)) {
	case -1:
		return -1;
	case 0:
		return 1;
	default:
		return 0;
	}
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

/*
 * The numbers of a projection's generations. head: its newest event after
 * the checkpoint (else the checkpoint's), as the monitor reads it; lag: its
 * events after the checkpoint it may read now (below the snapshot's xmin);
 * held: its committed events it may not read yet because an older
 * transaction is still open. `e` is inlined into each subquery, so that
 * each is a range of the commit-order index, not a scan of the table.
 */
static const char status_sql[] =
	"WITH x AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),"
	" e AS NOT MATERIALIZED (SELECT transaction_id, global_position FROM events"
	"  WHERE event_type = ANY($2::text[]) OR stream_id ^@ ANY($3::text[]))"
	" SELECT g.projection, g.generation,"
	/* a projection of several indices: every index, the first one's alias first */
	"  array_to_string(array_prepend(g.index_name, g.extra_indices), ','), g.state,"
	"  g.checkpoint_txid::text, g.checkpoint_pos,"
	"  (SELECT count(*) FROM e, x WHERE (e.transaction_id, e.global_position)"
	"    > (g.checkpoint_txid, g.checkpoint_pos) AND e.transaction_id < x.xmin),"
	"  (SELECT count(*) FROM e, x WHERE e.transaction_id >= x.xmin),"
	"  (SELECT count(*) FROM esbridge.dead_letters d WHERE d.projection = g.projection"
	"    AND d.generation = g.generation AND d.status IN ('pending','held','retry')),"
	"  to_char(g.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
	"  (SELECT greatest(g.checkpoint_pos, coalesce(max(e.global_position), 0)) FROM e"
	"    WHERE (e.transaction_id, e.global_position) > (g.checkpoint_txid, g.checkpoint_pos)),"
	"  g.last_error,"
	"  coalesce(to_char(g.last_error_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
	" FROM esbridge.generations g WHERE g.projection = $1 ORDER BY g.generation";

const char *const state_status_sql = status_sql;

int state_status(struct state *st, const struct projection *proj, struct state_status *out, char *err,
		 size_t errsz)
{
	static const char *const none[] = { NULL };
	struct buf types = BUF_INIT(1 << 16), streams = BUF_INIT(1 << 16);
	const char *params[3] = { proj->name, NULL, NULL };

	memset(out, 0, sizeof(*out));
	if (store_text_array(proj->event_types, &types) ||
	    store_text_array(proj->streams ? proj->streams : none, &streams)) {
		buf_release(&types);
		buf_release(&streams);
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	params[1] = types.data;
	params[2] = streams.data;
	/* a command's own connection: planned as the reader's (no scan of the table) */
	if (pq_events_session(st->conn, err, errsz)) {
		buf_release(&types);
		buf_release(&streams);
		return -1;
	}
	out->res = query(st, "cannot read the generations", status_sql, 3, params, false, err, errsz);
	buf_release(&types);
	buf_release(&streams);
	if (!out->res)
		return -1;
	out->n = PQntuples(out->res);
	out->owner = out->n ? state_owner(st, proj->name) : NULL;
	return 0;
}

void state_status_row(const struct state_status *s, int i, struct state_status_row *row)
{
	const PGresult *res = s->res;

	row->generation = PQgetvalue(res, i, 1);
	row->indices = PQgetvalue(res, i, 2);
	row->state = PQgetvalue(res, i, 3);
	row->checkpoint_txid = PQgetvalue(res, i, 4);
	row->checkpoint_pos = PQgetvalue(res, i, 5);
	row->lag = PQgetvalue(res, i, 6);
	row->held = PQgetvalue(res, i, 7);
	row->letters_open = PQgetvalue(res, i, 8);
	row->updated_at = PQgetvalue(res, i, 9);
	row->head = PQgetvalue(res, i, 10);
	row->last_error = PQgetvalue(res, i, 11);
	row->last_error_at = PQgetvalue(res, i, 12);
}

void state_status_release(struct state_status *s)
{
	PQclear(s->res);
	free(s->owner);
	memset(s, 0, sizeof(*s));
}

int state_oldest_writer(struct state *st, struct state_writer *w, char *err, size_t errsz)
{
	memset(w, 0, sizeof(*w));
	w->res = query(st, "cannot read the open transactions",
		       "SELECT backend_xid::text, pid, coalesce(application_name, ''), coalesce(state, ''),"
		       "  round(extract(epoch FROM now() - xact_start))::bigint"
		       " FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
		       " ORDER BY age(backend_xid) DESC LIMIT 1",
		       0, NULL, false, err, errsz);
	if (!w->res)
		return -1;
	if (PQntuples(w->res) != 1)
		return 0;
	w->transaction_id = PQgetvalue(w->res, 0, 0);
	w->pid = PQgetvalue(w->res, 0, 1);
	w->application_name = PQgetvalue(w->res, 0, 2);
	w->state = PQgetvalue(w->res, 0, 3);
	w->age_seconds = PQgetvalue(w->res, 0, 4);
	return 1;
}

void state_writer_release(struct state_writer *w)
{
	PQclear(w->res);
	memset(w, 0, sizeof(*w));
}
