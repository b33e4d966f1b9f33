/* The bridge state: what `status` shows and what `wait` asks. */
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
		res = state_query(st, "cannot read the events",
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
	res = state_query(st, "cannot read the checkpoint",
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
	out->res = state_query(st, "cannot read the generations", status_sql, 3, params, false, err, errsz);
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
	w->res = state_query(st, "cannot read the open transactions",
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
