#ifndef ESBRIDGE_PQ_H
#define ESBRIDGE_PQ_H

#include <stddef.h>

#include <libpq-fe.h>

/*
 * What store and state share about libpq: connecting (server notices
 * silenced), one-line error messages, and draining notifications.
 */

/*
 * Connects as `application_name` (shown in pg_stat_activity); NULL with
 * `err` set. The caller PQfinish()es the connection.
 */
PGconn *pq_connect(const char *conninfo, const char *application_name, char *err, size_t errsz);

/* "ROLE HOST pid PID" (e.g. "esbridge db1 pid 42"): who holds a connection. */
void pq_app_name(const char *role, char *out, size_t outsz);

/* Writes "WHAT: MSG" into `err` on one line (libpq's messages end in '\n'). */
void pq_error(char *err, size_t errsz, const char *what, const char *msg);

/*
 * The planner settings of the connections that read the events table (the
 * reader's and the monitor's): no sequential or bitmap scans, so that a read
 * is the commit-order index scan it is written for whatever the statistics
 * say (a projection whose types look rare, or a table not analysed yet,
 * would otherwise get a scan and a sort of the whole table per read).
 */
extern const char pq_events_session_sql[];
__attribute__((warn_unused_result))
int pq_events_session(PGconn *conn, char *err, size_t errsz);

/* Reads what arrived and drops pending notifications: how many, or -1 if the connection is lost. */
int pq_drain_notifies(PGconn *conn);

#endif
