#include "esbridge/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "esbridge/pq.h"

#include "esbridge/buf.h"

struct store {
	PGconn *conn;
	bool prepared;
};

static int session_setup(struct store *s, char *err, size_t errsz);

struct store *store_open(const char *conninfo, char *err, size_t errsz)
{
	struct store *s = calloc(1, sizeof(*s));
	char name[96];

	if (!s) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	pq_app_name("esbridge-reader", name, sizeof(name));
	s->conn = pq_connect(conninfo, name, err, errsz);
	if (!s->conn) {
		store_close(s);
		return NULL;
	}
	if (session_setup(s, err, errsz)) {
		store_close(s);
		return NULL;
	}
	return s;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->conn)
		PQfinish(s->conn);
	free(s);
}

int store_listen(struct store *s, char *err, size_t errsz)
{
	PGresult *res = PQexec(s->conn, "LISTEN " STORE_CHANNEL);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "LISTEN failed", PQresultErrorMessage(res));
		rc = -1;
	}
	PQclear(res);
	return rc;
}

/* Timestamps in UTC whatever the server's setting, and the planner settings of a reader. */
static int session_setup(struct store *s, char *err, size_t errsz)
{
	PGresult *res = PQexec(s->conn, "SET TIME ZONE 'UTC'");
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pq_error(err, errsz, "cannot set the time zone", PQresultErrorMessage(res));
		rc = -1;
	}
	PQclear(res);
	return rc ? rc : pq_events_session(s->conn, err, errsz);
}

int store_reconnect(struct store *s, bool listen, char *err, size_t errsz)
{
	s->prepared = false;
	PQreset(s->conn);
	if (PQstatus(s->conn) != CONNECTION_OK) {
		pq_error(err, errsz, "cannot reconnect to PostgreSQL", PQerrorMessage(s->conn));
		return -1;
	}
	if (session_setup(s, err, errsz))
		return -1;
	return listen ? store_listen(s, err, errsz) : 0;
}

bool store_connected(const struct store *s)
{
	return PQstatus(s->conn) == CONNECTION_OK;
}

int store_socket(const struct store *s)
{
	return PQsocket(s->conn);
}

int store_drain_notifies(struct store *s)
{
	return pq_drain_notifies(s->conn);
}

int store_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

int store_xmin(struct store *s, uint64_t *xmin, char *err, size_t errsz)
{
	PGresult *res = PQexec(s->conn, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text");
	int rc = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pq_error(err, errsz, "cannot read the snapshot", PQresultErrorMessage(res));
		rc = -1;
	} else if (store_parse_u64(PQgetvalue(res, 0, 0), xmin)) {
		snprintf(err, errsz, "cannot read the snapshot: unexpected xmin");
		rc = -1;
	}
	PQclear(res);
	return rc;
}

/*
 * The read. The row comparison and the ORDER BY use the (transaction_id,
 * global_position) index; transaction_id below the snapshot's xmin means every transaction
 * that could still add an event before these has ended.
 */
#define EVENT_COLUMNS \
	"SELECT e.global_position AS pos, e.transaction_id::text AS txid, e.stream_id," \
	" e.event_type, e.data::text AS data, e.version," \
	" to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created"

/*
 * At most $5 events, and no more bytes of data than $7 (but the first
 * event, whatever its size): the running sum of the data's length, over
 * the events in order, stops the read (a window over the ordered rows: no
 * sort). `more` says whether events the read matched were left for the
 * next read.
 */
const char store_read_sql[] =
	"SELECT w.pos, w.txid, w.stream_id, w.event_type, w.data, w.version, w.created, w.more FROM ("
	" SELECT r.*, lead(r.pos) OVER o IS NOT NULL AS more,"
	"  sum(octet_length(r.data)) OVER (o ROWS UNBOUNDED PRECEDING) AS upto"
	" FROM (" EVENT_COLUMNS ", e.transaction_id AS tx FROM events e"
	"  WHERE (e.transaction_id, e.global_position) > ($1::xid8, $2::bigint)"
	/* one upper bound for the index (least() ignores a NULL bound) */
	"   AND e.transaction_id < least(pg_snapshot_xmin(pg_current_snapshot()), $3::xid8)"
	/* its types, and anything in the streams it owns (unknown types: dead letters) */
	"   AND (e.event_type = ANY($4::text[]) OR e.stream_id ^@ ANY($6::text[]))"
	/* the table's columns, not the text outputs: xids must not sort as text */
	"  ORDER BY e.transaction_id, e.global_position"
	"  LIMIT $5) r"
	" WINDOW o AS (ORDER BY r.tx, r.pos)"
	") w WHERE w.upto <= $7::bigint OR w.upto = octet_length(w.data) ORDER BY w.tx, w.pos";

const char store_by_position_sql[] =
	EVENT_COLUMNS " FROM events e"
	" WHERE e.global_position = ANY($1::bigint[])"
	" ORDER BY e.transaction_id, e.global_position";

int store_text_array(const char *const *items, struct buf *out)
{
	(void)buf_append_char(out, '{');
	for (const char *const *t = items; t && *t; t++) {
		if (t != items)
			(void)buf_append_char(out, ',');
		(void)buf_append_char(out, '"');
		for (const char *c = *t; *c; c++) {
			if (*c == '"' || *c == '\\')
				(void)buf_append_char(out, '\\');
			(void)buf_append_char(out, *c);
		}
		(void)buf_append_char(out, '"');
	}
	(void)buf_append_char(out, '}');
	return buf_error(out) ? -1 : 0;
}

int store_read(struct store *s, struct position after, uint64_t bound,
	       const char *const *types, const char *const *streams, int limit, size_t max_bytes,
	       struct store_batch *out, char *err, size_t errsz)
{
	char txid[24], pos[24], bnd[24], lim[16], mb[24];
	const char *params[7];
	struct buf tl = BUF_INIT(1 << 16), sl = BUF_INIT(1 << 16);
	PGresult *res;

	out->res = NULL;
	out->n = 0;
	out->more = false;
	if (!s->prepared) {
		res = PQprepare(s->conn, "esbridge_read", store_read_sql, 7, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			pq_error(err, errsz, "cannot prepare the event read", PQresultErrorMessage(res));
			PQclear(res);
			return -1;
		}
		PQclear(res);
		s->prepared = true;
	}
	if (store_text_array(types, &tl) || store_text_array(streams, &sl)) {
		snprintf(err, errsz, "out of memory");
		buf_release(&tl);
		buf_release(&sl);
		return -1;
	}
	snprintf(txid, sizeof(txid), "%" PRIu64, after.txid);
	snprintf(pos, sizeof(pos), "%" PRId64, after.pos);
	snprintf(bnd, sizeof(bnd), "%" PRIu64, bound);
	snprintf(lim, sizeof(lim), "%d", limit);
	params[0] = txid;
	params[1] = pos;
	params[2] = bound ? bnd : NULL;
	params[3] = tl.data;
	params[4] = lim;
	params[5] = sl.data;
	snprintf(mb, sizeof(mb), "%zu", max_bytes ? max_bytes : 1);
	params[6] = mb;
	res = PQexecPrepared(s->conn, "esbridge_read", 7, params, NULL, NULL, 0);
	buf_release(&tl);
	buf_release(&sl);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read events", PQresultErrorMessage(res));
		PQclear(res);
		if (PQstatus(s->conn) != CONNECTION_OK)
			s->prepared = false;
		return -1;
	}
	out->res = res;
	out->n = PQntuples(res);
	/* cut by the limit or by the bytes: there is more to read */
	out->more = out->n == limit || (out->n > 0 && PQgetvalue(res, out->n - 1, 7)[0] == 't');
	return 0;
}

/*
 * The head: a backward scan of the commit-order index, one row. The ORDER
 * BY names the table's columns (e.): a bare transaction_id would name the
 * text output column, sort xids as text (9 after 10) and scan the table.
 */
const char store_head_sql[] =
	"SELECT e.transaction_id::text AS txid, e.global_position AS pos FROM events e"
	" WHERE e.transaction_id < least(pg_snapshot_xmin(pg_current_snapshot()), $1::xid8)"
	" ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1";

int store_head(struct store *s, uint64_t bound, struct position *head, char *err, size_t errsz)
{
	char bnd[24];
	const char *params[1] = { NULL };
	PGresult *res;
	int rc = 0;

	if (bound) {
		snprintf(bnd, sizeof(bnd), "%" PRIu64, bound);
		params[0] = bnd;
	}
	res = PQexecParams(s->conn, store_head_sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read the head of the event store", PQresultErrorMessage(res));
		rc = -1;
	} else if (PQntuples(res) == 0) {
		head->txid = 0;
		head->pos = 0;
	} else if (store_parse_u64(PQgetvalue(res, 0, 0), &head->txid)) {
		snprintf(err, errsz, "cannot read the head of the event store: bad transaction id");
		rc = -1;
	} else {
		head->pos = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	}
	PQclear(res);
	return rc;
}

int store_read_positions(struct store *s, const struct position *at, size_t n,
			 struct store_batch *out, char *err, size_t errsz)
{
	struct buf list = BUF_INIT((size_t)64 << 20);
	const char *params[1];
	PGresult *res;

	out->res = NULL;
	out->n = 0;
	(void)buf_append_char(&list, '{');
	for (size_t i = 0; i < n; i++)
		(void)buf_printf(&list, "%s%" PRId64, i ? "," : "", at[i].pos);
	(void)buf_append_char(&list, '}');
	if (buf_error(&list)) {
		snprintf(err, errsz, "out of memory");
		buf_release(&list);
		return -1;
	}
	params[0] = list.data;
	res = PQexecParams(s->conn, store_by_position_sql, 1, NULL, params, NULL, NULL, 0);
	buf_release(&list);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pq_error(err, errsz, "cannot read events again", PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	out->res = res;
	out->n = PQntuples(res);
	return 0;
}

/* The server's decimal text of a bigint, xid8 or int (no strtol on the hot path). */
static uint64_t digits(const char *s, bool *neg)
{
	uint64_t v = 0;

	*neg = *s == '-';
	for (s += *neg; *s >= '0' && *s <= '9'; s++)
		v = v * 10 + (uint64_t)(*s - '0');
	return v;
}

void store_batch_event(const struct store_batch *b, int i, struct event *ev)
{
	const PGresult *res = b->res;
	bool neg;
	uint64_t v;

	v = digits(PQgetvalue(res, i, 0), &neg);
	ev->at.pos = neg ? -(int64_t)v : (int64_t)v;
	ev->at.txid = digits(PQgetvalue(res, i, 1), &neg);
	ev->stream_id = PQgetvalue(res, i, 2);
	ev->type = PQgetvalue(res, i, 3);
	ev->data = PQgetvalue(res, i, 4);
	ev->data_len = (size_t)PQgetlength(res, i, 4);
	v = digits(PQgetvalue(res, i, 5), &neg);
	ev->version = neg ? -(int32_t)v : (int32_t)v;
	ev->created_at = PQgetvalue(res, i, 6);
}

void store_batch_release(struct store_batch *b)
{
	PQclear(b->res);
	b->res = NULL;
	b->n = 0;
	b->more = false;
}
