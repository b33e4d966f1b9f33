/* The bridge state: rebuild commands for a running daemon, woken with NOTIFY. */
#include "esbridge/state.h"
#include "state_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <yajl/yajl_gen.h>

#include "esbridge/buf.h"
#include "esbridge/json.h"
#include "esbridge/pq.h"
#include "esbridge/projection.h"
#include "esbridge/store.h"

int state_command_submit(struct state *st, const char *proj, int keep, long long *id,
			 char *err, size_t errsz)
{
	char k[16];
	const char *params[2] = { proj, k };
	PGresult *res;

	snprintf(k, sizeof(k), "%d", keep);
	res = state_query(st, "cannot submit the command",
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
	PGresult *res = state_query(st, "cannot read the commands",
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
	return state_exec(st, "cannot record the command's end",
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
	res = state_query(st, "cannot withdraw the command",
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
	res = state_query(st, "cannot read the command",
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
	res = state_query(st, "cannot recover the commands",
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

int state_commands_open(struct state *st, const char *proj, char *err, size_t errsz)
{
	const char *params[1] = { proj };
	PGresult *res = state_query(st, "cannot read the commands",
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
	return state_exec(st, "LISTEN failed", "LISTEN " STATE_COMMANDS_CHANNEL, 0, NULL, err, errsz);
}
