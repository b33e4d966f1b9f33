#ifndef ESBRIDGE_STATE_INT_H
#define ESBRIDGE_STATE_INT_H

/*
 * The bridge state's insides, shared by its files and nobody else:
 * state.c (the connection, the schema, generations and the lock),
 * state_letters.c (dead letters), state_commands.c (rebuild commands) and
 * state_status.c (status and wait).
 */

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "esbridge/state.h"

struct state {
	PGconn *conn;
	bool fenced;   /* a write found the projection's lock gone */
};

/*
 * Runs a statement that returns rows: its result, for the caller to PQclear,
 * or NULL with `err` saying `what` failed and why. With `one_row` a result of
 * any other number of rows is an error too.
 */
PGresult *state_query(struct state *st, const char *what, const char *sql, int n, const char *const *params,
		      bool one_row, char *err, size_t errsz);

/* Runs a statement that returns no rows; 0, or -1 with `err` set. */
int state_exec(struct state *st, const char *what, const char *sql, int n, const char *const *params,
	       char *err, size_t errsz);

#endif
