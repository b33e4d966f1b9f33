/* The bridge state: dead letters (recorded, held, retried, discarded, listed). */
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
	return state_exec(st, "cannot record a dead letter",
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
	res = state_query(st, "cannot read the dead letters",
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
	if (state_exec(st, "cannot read the dead letters",
			"UPDATE esbridge.dead_letters d SET status = 'retry', updated_at = now()"
			" WHERE d.projection = $1 AND d.generation = $2::int AND d.status IN ('pending','held')"
			"  AND d.doc_id IN (SELECT r.doc_id FROM esbridge.dead_letters r"
			"   WHERE r.projection = $1 AND r.generation = $2::int AND r.status = 'retry')",
			2, params, err, errsz))
		return -1;
	res = state_query(st, "cannot read the dead letters",
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
	rc = state_exec(st, "cannot update the dead letters",
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
	res = state_query(st, "cannot read the dead letters",
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
	res = state_query(st, "cannot read the dead letters",
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
	return state_exec(st, "cannot notify the daemon",
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
		res = state_query(st, "cannot retry the dead letter",
			    "WITH l AS (SELECT projection, generation, doc_id, id FROM esbridge.dead_letters"
			    "  WHERE id = $1::bigint AND status IN ('pending','held')),"
			    " u AS (UPDATE esbridge.dead_letters d SET status = 'retry', updated_at = now()"
			    "  FROM l WHERE d.status IN ('pending','held') AND d.projection = l.projection"
			    "   AND d.generation = l.generation"
			    "   AND (d.id = l.id OR d.doc_id = l.doc_id) RETURNING d.id, d.projection, d.doc_id)"
			    " SELECT id, projection, coalesce(doc_id, '') FROM u ORDER BY id",
			    1, params, false, err, errsz);
	else
		res = state_query(st, "cannot retry the dead letters",
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
	res = state_query(st, "cannot discard the dead letter",
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
	res = state_query(st, "cannot read the dead letters",
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
	PGresult *res = state_query(st, "cannot read the dead letters",
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
