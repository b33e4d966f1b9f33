#include "esbridge/pq.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Server notices ("already exists, skipping") are not ours to print. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

void pq_error(char *err, size_t errsz, const char *what, const char *msg)
{
	size_t n;

	snprintf(err, errsz, "%s: %s", what, msg && *msg ? msg : "unknown error");
	n = strlen(err);
	while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	for (char *p = err; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

void pq_app_name(const char *role, char *out, size_t outsz)
{
	char host[48] = "";

	if (gethostname(host, sizeof(host) - 1))
		snprintf(host, sizeof(host), "unknown");
	/* at most 63 bytes are kept by the server */
	snprintf(out, outsz, "%.16s %.28s pid %ld", role, host, (long)getpid());
}

PGconn *pq_connect(const char *conninfo, const char *application_name, char *err, size_t errsz)
{
	/*
	 * In order: a default connect_timeout (a host that drops packets must
	 * not freeze the loop for minutes), the conninfo expanded over it, and
	 * our name over that.
	 */
	const char *keys[] = { "connect_timeout", "dbname", "application_name", NULL };
	const char *vals[] = { "10", conninfo, application_name, NULL };
	PGconn *conn = PQconnectdbParams(keys, vals, 1);

	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		pq_error(err, errsz, "cannot connect to PostgreSQL", conn ? PQerrorMessage(conn) : "out of memory");
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	return conn;
}

const char pq_events_session_sql[] = "SET enable_seqscan = off; SET enable_bitmapscan = off";

int pq_events_session(PGconn *conn, char *err, size_t errsz)
{
	PGresult *res = PQexec(conn, pq_events_session_sql);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot set the planner settings", PQresultErrorMessage(res));
		rc = -1;
	}
	PQclear(res);
	return rc;
}

int pq_drain_notifies(PGconn *conn)
{
	PGnotify *n;
	int count = 0;

	if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK)
		return -1;
	while ((n = PQnotifies(conn))) {
		count++;
		PQfreemem(n);
	}
	return count;
}
