#include "esbridge/monitor.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <yajl/yajl_gen.h>

#include "esbridge/backoff.h"
#include "esbridge/buf.h"
#include "esbridge/httpd.h"
#include "esbridge/json.h"
#include "esbridge/log.h"
#include "esbridge/pipeline.h"
#include "esbridge/pq.h"
#include "esbridge/state.h"
#include "esbridge/store.h"

#define MAX_SOURCES 64
#define MAX_GENS (MAX_SOURCES * 2)
#define REFRESH 5.0        /* seconds between reads of the numbers in PostgreSQL */
#define DOWN_AFTER 10.0 /* seconds of failing requests (to either service) before health says so */

/* What PostgreSQL says of one generation. */
struct numbers {
	struct monitor_gen key;
	struct position checkpoint; /* the one the numbers were counted from */
	bool valid;
	int64_t head;              /* the projection's newest event */
	long long lag;             /* its events after the checkpoint, readable now */
	double lag_seconds;        /* age of the oldest of them */
	long long held;            /* its committed events behind an open transaction */
	double blocking_age;       /* age of the oldest open writer, when `held` */
	long long letters_open;    /* pending, held and retry letters */
	char error[256];           /* the pipeline's last error, to record for status */
	uint64_t events;           /* events the pipeline had read when the numbers were asked for */
	double asked_at;           /* then */
};

struct monitor {
	struct ev_loop *loop;
	const struct config *cfg;
	struct es_client *es;
	monitor_sources_fn sources;
	void *arg;
	struct httpd *httpd;
	ev_timer tick;
	double last_summary;
	/* PostgreSQL, asynchronously */
	PGconn *conn;
	double connect_after;   /* a failed connect: no other attempt before then */
	double connect_backoff; /* the wait after the last failed attempt (0: none failed) */
	ev_io pg_io;
	double pg_failing_since;   /* the first failure since the last answer (0: none) */
	char pg_error[256];
	struct numbers jobs[MAX_GENS];
	int n_jobs, job;            /* the batch being read, and the query in flight */
	struct numbers nums[MAX_GENS];
	int n_nums;
	bool writing_error;         /* the query in flight records a last error */
	bool summary_due;           /* log the summary once the batch in flight is read */
	struct {
		struct monitor_gen key;
		char error[256];
	} written[MAX_GENS];        /* the last errors recorded */
	int n_written;
	/* Elasticsearch */
	bool es_pinging;
	double ping_started;
	double es_failing_since;   /* the first failed ping since the last answer (0: none) */
	char es_error[256];
	/* for events/s in the summary */
	struct {
		struct monitor_gen key;
		uint64_t events;
		double at;
	} prev[MAX_GENS];
	int n_prev;
};

static void pg_next(struct monitor *m);
static void summary(struct monitor *m);

/* ---- the generations kept ----------------------------------------------- */

int monitor_forget(void *table, size_t size, int n, const struct monitor_gen *live, int n_live)
{
	char *t = table;
	int kept = 0;

	for (int i = 0; i < n; i++) {
		const struct monitor_gen *g = (const struct monitor_gen *)(t + (size_t)i * size);
		int k = 0;
		while (k < n_live && (live[k].proj != g->proj || live[k].gen != g->gen))
			k++;
		if (k == n_live)
			continue;
		if (kept < i)
			memcpy(t + (size_t)kept * size, g, size);
		kept++;
	}
	return kept;
}

/* The generations the pipelines of `src` run now (at most MAX_GENS). */
static int live_gens(const struct monitor_source *src, int n_src, struct monitor_gen *out)
{
	int n = 0;

	for (int i = 0; i < n_src; i++) {
		const struct pipeline *ps[2];
		int np = src[i].runner ? runner_pipelines(src[i].runner, ps) : 0;
		for (int j = 0; j < np && n < MAX_GENS; j++) {
			out[n].proj = src[i].proj;
			out[n].gen = pipeline_generation(ps[j])->number;
			n++;
		}
	}
	return n;
}

/* ---- reading the numbers ------------------------------------------------ */

const char monitor_numbers_sql[] =
	"WITH x AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),"
	" e AS NOT MATERIALIZED (SELECT transaction_id, global_position, created_at FROM events"
	"  WHERE event_type = ANY($1::text[]) OR stream_id ^@ ANY($2::text[])),"
	" w AS (SELECT e.created_at FROM e, x WHERE (e.transaction_id, e.global_position)"
	"  > ($3::xid8, $4::bigint) AND e.transaction_id < x.xmin)"
	" SELECT"
	/* the head: its newest event after the checkpoint, or the checkpoint (no backward scan of the store) */
	"  (SELECT greatest($4::bigint, coalesce(max(e.global_position), 0)) FROM e"
	"    WHERE (e.transaction_id, e.global_position) > ($3::xid8, $4::bigint)),"
	"  (SELECT count(*) FROM w),"
	"  (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM w),"
	"  (SELECT count(*) FROM e, x WHERE e.transaction_id >= x.xmin),"
	"  (SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0) FROM pg_stat_activity"
	"    WHERE backend_xid IS NOT NULL),"
	"  (SELECT count(*) FROM esbridge.dead_letters WHERE projection = $5 AND generation = $6::int"
	"    AND status IN ('pending','held','retry'))";

static void pg_broken(struct monitor *m, const char *why)
{
	if (!m->pg_failing_since) {
		log_warn("monitor: %s", why);
		m->pg_failing_since = ev_now(m->loop);
	}
	snprintf(m->pg_error, sizeof(m->pg_error), "%s", why);
	if (m->summary_due && m->job < m->n_jobs)
		summary(m); /* of the batch in flight: the numbers not read say so */
	ev_io_stop(m->loop, &m->pg_io);
	if (m->conn) {
		PQfinish(m->conn);
		m->conn = NULL;
	}
	m->n_jobs = m->job = 0;
	m->writing_error = false;
}

/*
 * By generation, not by slot: an answer that arrives after its generation
 * was forgotten (the batch in m->jobs is never pruned) adds it back, with
 * its own numbers, until the next tick forgets it again.
 */
static void store_numbers(struct monitor *m, const struct numbers *n)
{
	for (int i = 0; i < m->n_nums; i++)
		if (m->nums[i].key.proj == n->key.proj && m->nums[i].key.gen == n->key.gen) {
			m->nums[i] = *n;
			return;
		}
	if (m->n_nums < MAX_GENS)
		m->nums[m->n_nums++] = *n;
}

/* The slot of the last error recorded for a generation (-1 if full). */
static int written_slot(struct monitor *m, const struct projection *proj, int gen)
{
	for (int i = 0; i < m->n_written; i++)
		if (m->written[i].key.proj == proj && m->written[i].key.gen == gen)
			return i;
	if (m->n_written == MAX_GENS)
		return -1;
	m->written[m->n_written].key.proj = proj;
	m->written[m->n_written].key.gen = gen;
	m->written[m->n_written].error[0] = '\0';
	return m->n_written++;
}

/* Records the job's last error in its generation's row, if it changed; true if sent. */
static bool send_error(struct monitor *m, const struct numbers *n)
{
	char gen[16];
	const char *params[3] = { n->key.proj->name, gen, n->error };
	int k = written_slot(m, n->key.proj, n->key.gen);

	if (k < 0 || !strcmp(m->written[k].error, n->error))
		return false;
	snprintf(gen, sizeof(gen), "%d", n->key.gen);
	if (!PQsendQueryParams(m->conn,
			       "UPDATE esbridge.generations SET last_error = $3, last_error_at = now()"
			       " WHERE projection = $1 AND generation = $2::int AND last_error <> $3",
			       3, NULL, params, NULL, NULL, 0))
		return false;
	memcpy(m->written[k].error, n->error, sizeof(m->written[k].error)); /* both NUL-terminated, same size */
	return true;
}

static void pg_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct monitor *m = (struct monitor *)((char *)w - offsetof(struct monitor, pg_io));
	PGresult *res;

	(void)loop;
	(void)revents;
	if (!PQconsumeInput(m->conn)) {
		char why[256];
		pq_error(why, sizeof(why), "cannot read the numbers", PQerrorMessage(m->conn));
		pg_broken(m, why);
		return;
	}
	if (PQisBusy(m->conn))
		return;
	while ((res = PQgetResult(m->conn))) {
		struct numbers *n = &m->jobs[m->job];
		if (m->writing_error) {
			if (PQresultStatus(res) != PGRES_COMMAND_OK) {
				char why[256];
				pq_error(why, sizeof(why), "cannot record the last error", PQresultErrorMessage(res));
				log_warn("monitor: %s", why);
			}
		} else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
			n->head = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
			n->lag = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
			n->lag_seconds = strtod(PQgetvalue(res, 0, 2), NULL);
			n->held = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
			n->blocking_age = n->held ? strtod(PQgetvalue(res, 0, 4), NULL) : 0;
			n->letters_open = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
			n->valid = true;
			store_numbers(m, n);
			m->pg_failing_since = 0;
			m->pg_error[0] = '\0';
		} else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			char why[256];
			pq_error(why, sizeof(why), "cannot read the numbers", PQresultErrorMessage(res));
			log_warn("monitor: %s", why);
		}
		PQclear(res);
	}
	if (!m->writing_error && *m->jobs[m->job].error && send_error(m, &m->jobs[m->job])) {
		m->writing_error = true;
		return; /* its answer comes on the same socket */
	}
	m->writing_error = false;
	ev_io_stop(m->loop, &m->pg_io);
	m->job++;
	pg_next(m);
	if (m->job >= m->n_jobs && m->summary_due)
		summary(m);
}

/* Sends the next query of the batch. */
static void pg_next(struct monitor *m)
{
	static const char *const none[] = { NULL };
	struct buf types = BUF_INIT(1 << 16), streams = BUF_INIT(1 << 16);
	char txid[24], pos[24], gen[16];
	const char *params[6];
	struct numbers *n;
	int ok;

	if (m->job >= m->n_jobs || !m->conn)
		return;
	n = &m->jobs[m->job];
	if (store_text_array(n->key.proj->event_types, &types) ||
	    store_text_array(n->key.proj->streams ? n->key.proj->streams : none, &streams)) {
		buf_release(&types);
		buf_release(&streams);
		return;
	}
	snprintf(txid, sizeof(txid), "%" PRIu64, n->checkpoint.txid);
	snprintf(pos, sizeof(pos), "%" PRId64, n->checkpoint.pos);
	snprintf(gen, sizeof(gen), "%d", n->key.gen);
	params[0] = types.data;
	params[1] = streams.data;
	params[2] = txid;
	params[3] = pos;
	params[4] = n->key.proj->name;
	params[5] = gen;
	ok = PQsendQueryParams(m->conn, monitor_numbers_sql, 6, NULL, params, NULL, NULL, 0);
	buf_release(&types);
	buf_release(&streams);
	if (!ok) {
		char why[256];
		pq_error(why, sizeof(why), "cannot read the numbers", PQerrorMessage(m->conn));
		pg_broken(m, why);
		return;
	}
	ev_io_set(&m->pg_io, PQsocket(m->conn), EV_READ);
	ev_io_start(m->loop, &m->pg_io);
}


/*
 * One job a generation of the running pipelines, with the pipelines' own
 * figures (and their last error, `with_error`); the PostgreSQL numbers are
 * read into them next, or the summary goes without.
 */
static void fill_jobs(struct monitor *m, const struct monitor_source *src, int n_src, bool with_error)
{
	m->n_jobs = m->job = 0;
	for (int i = 0; i < n_src; i++) {
		const struct pipeline *ps[2];
		int np = src[i].runner ? runner_pipelines(src[i].runner, ps) : 0;
		for (int j = 0; j < np && m->n_jobs < MAX_GENS; j++) {
			struct numbers *n = &m->jobs[m->n_jobs++];
			memset(n, 0, sizeof(*n));
			n->key.proj = src[i].proj;
			n->key.gen = pipeline_generation(ps[j])->number;
			n->checkpoint = pipeline_checkpoint(ps[j]);
			n->events = pipeline_get_stats(ps[j])->events;
			n->asked_at = ev_now(m->loop);
			if (with_error)
				snprintf(n->error, sizeof(n->error), "%s", pipeline_get_stats(ps[j])->last_error);
		}
	}
}
/* Starts reading the numbers of every generation owned now. */
static void pg_refresh(struct monitor *m, const struct monitor_source *src, int n_src)
{
	if (m->job < m->n_jobs)
		return; /* the last batch is still being read */
	/*
	 * Connecting blocks the loop (up to connect_timeout), so after a failure
	 * the next attempt waits: a tick, then twice as long each time, at most
	 * retry-max. The queries are sent blocking (they are small) and their
	 * answers read without blocking.
	 */
	if (!m->conn) {
		char name[96], why[256];
		double now = ev_now(m->loop);
		if (now < m->connect_after - 0.01)
			return;
		pq_app_name("esbridge-monitor", name, sizeof(name));
		m->conn = pq_connect(m->cfg->pg, name, why, sizeof(why));
		if (m->conn && pq_events_session(m->conn, why, sizeof(why))) {
			PQfinish(m->conn);
			m->conn = NULL;
		}
		if (!m->conn) {
			m->connect_backoff = backoff_next(m->connect_backoff, m->tick.repeat, m->cfg->retry_max);
			m->connect_after = now + m->connect_backoff;
			pg_broken(m, why);
			return;
		}
		m->connect_backoff = 0;
		m->connect_after = 0;
	}
	fill_jobs(m, src, n_src, true);
	pg_next(m);
}

static const struct numbers *numbers_of(const struct monitor *m, const struct projection *proj, int gen)
{
	for (int i = 0; i < m->n_nums; i++)
		if (m->nums[i].key.proj == proj && m->nums[i].key.gen == gen && m->nums[i].valid)
			return &m->nums[i];
	return NULL;
}

/* ---- Elasticsearch ------------------------------------------------------ */

static void ping_done(void *arg, const struct es_response *r)
{
	struct monitor *m = arg;

	m->es_pinging = false;
	if (r->transport_error || r->status >= 500 || r->status == 0) {
		if (!m->es_failing_since)
			m->es_failing_since = m->ping_started; /* a timeout counts from the request */
		if (r->transport_error)
			snprintf(m->es_error, sizeof(m->es_error), "%s", r->error);
		else
			snprintf(m->es_error, sizeof(m->es_error), "HTTP %ld", r->status);
		return;
	}
	m->es_failing_since = 0;
	m->es_error[0] = '\0';
}

static void ping(struct monitor *m)
{
	if (m->es_pinging)
		return;
	if (es_request(m->es, "GET", "/", NULL, 0, false, ping_done, m) == 0) {
		m->es_pinging = true;
		m->ping_started = ev_now(m->loop);
	}
}

/* ---- health ------------------------------------------------------------- */

struct verdict {
	bool ok;
	char reason[512];
};

static void add_reason(struct verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_reason(struct verdict *v, const char *fmt, ...)
{
	size_t len = strlen(v->reason);
	va_list ap;

	v->ok = false;
	if (len && len + 2 < sizeof(v->reason)) {
		memcpy(v->reason + len, "; ", 3);
		len += 2;
	}
	va_start(ap, fmt);
	vsnprintf(v->reason + len, sizeof(v->reason) - len, fmt, ap);
	va_end(ap);
}

/* Is generation `p` of `proj` following: advancing, or idle at the head? */
static void judge_pipeline(const struct monitor *m, const struct projection *proj,
			   const struct pipeline *p, struct verdict *v)
{
	const struct pipeline_stats *s = pipeline_get_stats(p);
	const struct numbers *n = numbers_of(m, proj, pipeline_generation(p)->number);
	double now = ev_now(m->loop);
	int gen = pipeline_generation(p)->number;

	if (pipeline_finished(p)) {
		add_reason(v, "%s generation %d stopped: %s", proj->name, gen, s->last_error);
		return;
	}
	if (s->store_down)
		add_reason(v, "%s generation %d cannot reach PostgreSQL", proj->name, gen);
	if (s->failing_since && now - s->failing_since >= DOWN_AFTER)
		add_reason(v, "%s generation %d: Elasticsearch requests failing for %.0fs: %s", proj->name,
			   gen, now - s->failing_since, s->last_error);
	if (n && n->lag > 0 && now - s->last_advance >= m->cfg->stall_timeout)
		add_reason(v, "%s generation %d stalled: %lld events wait, no progress for %.0fs",
			   proj->name, gen, n->lag, now - s->last_advance);
}

static void judge(const struct monitor *m, struct verdict *v)
{
	struct monitor_source src[MAX_SOURCES];
	int n = m->sources(m->arg, src, MAX_SOURCES);
	double now = ev_now(m->loop);

	v->ok = true;
	v->reason[0] = '\0';
	/* one lost connection or failed query alone is no outage: the next tick tries again */
	if (m->pg_failing_since && now - m->pg_failing_since >= DOWN_AFTER)
		add_reason(v, "cannot reach PostgreSQL for %.0fs: %s", now - m->pg_failing_since, m->pg_error);
	if (m->es_failing_since && now - m->es_failing_since >= DOWN_AFTER)
		add_reason(v, "cannot reach Elasticsearch for %.0fs: %s", now - m->es_failing_since, m->es_error);
	else if (m->es_pinging && now - m->ping_started >= DOWN_AFTER)
		/* a hung node: the ping itself only fails after request-timeout */
		add_reason(v, "cannot reach Elasticsearch: no answer for %.0fs", now - m->ping_started);
	for (int i = 0; i < n; i++) {
		const struct pipeline *ps[2];
		int np;
		if (!src[i].runner) {
			add_reason(v, "%s is starting over after losing PostgreSQL", src[i].proj->name);
			continue;
		}
		np = runner_pipelines(src[i].runner, ps);
		for (int j = 0; j < np; j++)
			judge_pipeline(m, src[i].proj, ps[j], v);
	}
}

static int health(struct monitor *m, struct buf *body)
{
	struct verdict v;
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *out;
	size_t len;

	judge(m, &v);
	if (!g) {
		(void)buf_append_str(body, v.ok ? "{\"status\":\"ok\"}\n" : "{\"status\":\"unhealthy\"}\n");
		return v.ok ? 200 : 503;
	}
	yajl_gen_map_open(g);
	json_gen_str(g, "status");
	json_gen_str(g, v.ok ? "ok" : "unhealthy");
	if (!v.ok) {
		json_gen_str(g, "reason");
		json_gen_str(g, v.reason);
	}
	yajl_gen_map_close(g);
	if (yajl_gen_get_buf(g, &out, &len) == yajl_gen_status_ok) {
		(void)buf_append(body, out, len);
		(void)buf_append_char(body, '\n');
	}
	yajl_gen_free(g);
	return v.ok ? 200 : 503;
}

/* ---- metrics ------------------------------------------------------------ */

static long process_rss(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * sysconf(_SC_PAGESIZE);
}

static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

#define HELP(b, name, type, help) \
	(void)buf_printf((b), "# HELP " name " " help "\n# TYPE " name " " type "\n")

/* A generation the endpoint reports on. */
struct gen_view {
	const struct projection *proj;
	const struct pipeline *p;
	const struct pipeline_stats *s;
	const struct numbers *n;
	int gen;
};

/* The generations of every running pipeline; how many. */
static int gen_views(struct monitor *m, struct gen_view *g, int max)
{
	struct monitor_source src[MAX_SOURCES];
	int n_src = m->sources(m->arg, src, MAX_SOURCES), n_g = 0;

	for (int i = 0; i < n_src; i++) {
		const struct pipeline *ps[2];
		int np = src[i].runner ? runner_pipelines(src[i].runner, ps) : 0;
		for (int j = 0; j < np && n_g < max; j++) {
			g[n_g].proj = src[i].proj;
			g[n_g].p = ps[j];
			g[n_g].s = pipeline_get_stats(ps[j]);
			g[n_g].gen = pipeline_generation(ps[j])->number;
			g[n_g].n = numbers_of(m, src[i].proj, g[n_g].gen);
			n_g++;
		}
	}
	return n_g;
}

#define LABELS "projection=\"%s\",generation=\"%d\""
#define EACH for (int i = 0; i < n_g; i++)

/* The pipelines' counters: events, requests, items, retries, bytes. */
static void metrics_counters(struct buf *b, const struct gen_view *g, int n_g)
{
	HELP(b, "esbridge_events_total", "counter", "Events read, by type (other: types the projection does not know).");
	EACH {
		for (int t = 0; g[i].proj->event_types[t] && t < PIPELINE_TYPES_MAX; t++)
			(void)buf_printf(b, "esbridge_events_total{" LABELS ",type=\"%s\"} %" PRIu64 "\n",
					 g[i].proj->name, g[i].gen, g[i].proj->event_types[t], g[i].s->by_type[t]);
		(void)buf_printf(b, "esbridge_events_total{" LABELS ",type=\"other\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->by_type[PIPELINE_TYPES_MAX]);
	}
	HELP(b, "esbridge_bulk_requests_total", "counter", "_bulk requests by result (failed: no answer or not HTTP 200).");
	EACH {
		(void)buf_printf(b, "esbridge_bulk_requests_total{" LABELS ",result=\"ok\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->requests);
		(void)buf_printf(b, "esbridge_bulk_requests_total{" LABELS ",result=\"failed\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->requests_failed);
	}
	HELP(b, "esbridge_bulk_items_total", "counter",
	     "_bulk items by result (ok: applied, noop: applied and the document unchanged).");
	EACH {
		(void)buf_printf(b, "esbridge_bulk_items_total{" LABELS ",result=\"ok\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->items_ok - g[i].s->items_noop);
		(void)buf_printf(b, "esbridge_bulk_items_total{" LABELS ",result=\"noop\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->items_noop);
		(void)buf_printf(b, "esbridge_bulk_items_total{" LABELS ",result=\"retry\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->items_retry);
		(void)buf_printf(b, "esbridge_bulk_items_total{" LABELS ",result=\"rejected\"} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, g[i].s->items_rejected);
	}
	HELP(b, "esbridge_bulk_retries_total", "counter", "_bulk requests sent again.");
	EACH (void)buf_printf(b, "esbridge_bulk_retries_total{" LABELS "} %" PRIu64 "\n", g[i].proj->name,
			      g[i].gen, g[i].s->retries);
	HELP(b, "esbridge_bulk_bytes_total", "counter", "Bytes of _bulk bodies sent, before compression.");
	EACH (void)buf_printf(b, "esbridge_bulk_bytes_total{" LABELS "} %" PRIu64 "\n", g[i].proj->name,
			      g[i].gen, g[i].s->bytes);
	HELP(b, "esbridge_inflight_bytes", "gauge", "Bytes of the _bulk bodies in flight.");
	EACH (void)buf_printf(b, "esbridge_inflight_bytes{" LABELS "} %" PRIu64 "\n", g[i].proj->name,
			      g[i].gen, g[i].s->inflight_bytes);
}

/* The _bulk round trips, as a histogram. */
static void metrics_latency(struct buf *b, const struct gen_view *g, int n_g)
{
	HELP(b, "esbridge_bulk_latency_seconds", "histogram", "_bulk round trips.");
	EACH {
		uint64_t cum = 0;
		for (int k = 0; k < PIPELINE_LATENCY_BUCKETS; k++) {
			cum += g[i].s->latency[k];
			if (k < PIPELINE_LATENCY_BUCKETS - 1)
				(void)buf_printf(b, "esbridge_bulk_latency_seconds_bucket{" LABELS ",le=\"%g\"} %" PRIu64 "\n",
						 g[i].proj->name, g[i].gen, pipeline_latency_bounds[k], cum);
			else
				(void)buf_printf(b, "esbridge_bulk_latency_seconds_bucket{" LABELS ",le=\"+Inf\"} %" PRIu64 "\n",
						 g[i].proj->name, g[i].gen, cum);
		}
		(void)buf_printf(b, "esbridge_bulk_latency_seconds_sum{" LABELS "} %.6f\n", g[i].proj->name,
				 g[i].gen, g[i].s->latency_sum);
		(void)buf_printf(b, "esbridge_bulk_latency_seconds_count{" LABELS "} %" PRIu64 "\n",
				 g[i].proj->name, g[i].gen, cum);
	}
}

/* Dead letters written and the checkpoint, as this process knows them. */
static void metrics_checkpoint(struct monitor *m, struct buf *b, const struct gen_view *g, int n_g)
{
	HELP(b, "esbridge_dead_letters_total", "counter", "Events this process sent to the dead letters (held ones included).");
	EACH (void)buf_printf(b, "esbridge_dead_letters_total{" LABELS "} %" PRIu64 "\n", g[i].proj->name,
			      g[i].gen, g[i].s->dead_letters);
	HELP(b, "esbridge_checkpoint_position", "gauge", "global_position of the committed checkpoint.");
	EACH (void)buf_printf(b, "esbridge_checkpoint_position{" LABELS "} %" PRId64 "\n", g[i].proj->name,
			      g[i].gen, pipeline_checkpoint(g[i].p).pos);
	HELP(b, "esbridge_checkpoint_age_seconds", "gauge", "Seconds since the checkpoint last moved.");
	EACH (void)buf_printf(b, "esbridge_checkpoint_age_seconds{" LABELS "} %.3f\n", g[i].proj->name,
			      g[i].gen, ev_now(m->loop) - g[i].s->last_advance);
}

/* The numbers that live in PostgreSQL (read every few seconds). */
static void metrics_store(struct buf *b, const struct gen_view *g, int n_g)
{
	HELP(b, "esbridge_dead_letters_open", "gauge", "Dead letters pending, held or being retried.");
	EACH if (g[i].n) (void)buf_printf(b, "esbridge_dead_letters_open{" LABELS "} %lld\n",
					  g[i].proj->name, g[i].gen, g[i].n->letters_open);
	HELP(b, "esbridge_head_position", "gauge", "global_position of the projection's newest event after the checkpoint (else the checkpoint's).");
	EACH if (g[i].n) (void)buf_printf(b, "esbridge_head_position{" LABELS "} %" PRId64 "\n",
					  g[i].proj->name, g[i].gen, g[i].n->head);
	HELP(b, "esbridge_lag_events", "gauge", "The projection's events after the checkpoint, readable now.");
	EACH if (g[i].n) (void)buf_printf(b, "esbridge_lag_events{" LABELS "} %lld\n", g[i].proj->name,
					  g[i].gen, g[i].n->lag);
	HELP(b, "esbridge_lag_seconds", "gauge", "Age of the oldest event not yet applied (0: none).");
	EACH if (g[i].n) (void)buf_printf(b, "esbridge_lag_seconds{" LABELS "} %.3f\n", g[i].proj->name,
					  g[i].gen, g[i].n->lag_seconds);
	HELP(b, "esbridge_held_events", "gauge", "Committed events not readable yet: an older transaction is open.");
	EACH if (g[i].n) (void)buf_printf(b, "esbridge_held_events{" LABELS "} %lld\n", g[i].proj->name,
					  g[i].gen, g[i].n->held);
	HELP(b, "esbridge_blocking_transaction_age_seconds", "gauge", "Age of the oldest open transaction holding events back (0: none).");
	EACH if (g[i].n) (void)buf_printf(b, "esbridge_blocking_transaction_age_seconds{" LABELS "} %.3f\n",
					  g[i].proj->name, g[i].gen, g[i].n->blocking_age);
}

#undef EACH
#undef LABELS

static void metrics(struct monitor *m, struct buf *b)
{
	struct gen_view g[MAX_GENS];
	int n_g = gen_views(m, g, MAX_GENS);
	struct verdict v;

	metrics_counters(b, g, n_g);
	metrics_latency(b, g, n_g);
	metrics_checkpoint(m, b, g, n_g);
	metrics_store(b, g, n_g);
	judge(m, &v);
	HELP(b, "esbridge_healthy", "gauge", "1 when /health answers 200.");
	(void)buf_printf(b, "esbridge_healthy %d\n", v.ok ? 1 : 0);
	HELP(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	(void)buf_printf(b, "process_resident_memory_bytes %ld\n", process_rss());
	HELP(b, "process_open_fds", "gauge", "Open file descriptors.");
	(void)buf_printf(b, "process_open_fds %ld\n", open_fds());
}

static int serve(void *arg, const char *path, struct buf *body, const char **content_type)
{
	struct monitor *m = arg;

	if (!strcmp(path, "/metrics")) {
		*content_type = "text/plain; version=0.0.4; charset=utf-8";
		metrics(m, body);
		return 200;
	}
	if (!strcmp(path, "/health")) {
		*content_type = "application/json";
		return health(m, body);
	}
	(void)buf_append_str(body, "not found: try /metrics or /health\n");
	return 404;
}

/* ---- the tick ----------------------------------------------------------- */

/*
 * One info line per generation of the last batch of numbers, every figure
 * of one moment: the checkpoint the lag was counted from, the events read
 * by then (events/s since the summary before), and what PostgreSQL
 * answered right after (lag, held, open letters); no numbers when it did
 * not answer.
 */
static void summary(struct monitor *m)
{
	m->summary_due = false;
	for (int i = 0; i < m->n_jobs; i++) {
		const struct numbers *n = &m->jobs[i];
		double rate = 0;
		int k;
		for (k = 0; k < m->n_prev; k++)
			if (m->prev[k].key.proj == n->key.proj && m->prev[k].key.gen == n->key.gen)
				break;
		if (k < m->n_prev && n->asked_at > m->prev[k].at && n->events >= m->prev[k].events)
			rate = (double)(n->events - m->prev[k].events) / (n->asked_at - m->prev[k].at);
		if (k == m->n_prev && m->n_prev < MAX_GENS)
			m->n_prev++;
		if (k < MAX_GENS) {
			m->prev[k].key = n->key;
			m->prev[k].events = n->events;
			m->prev[k].at = n->asked_at;
		}
		if (n->valid)
			plog_info(n->key.proj->name, n->key.gen,
				  "%.0f events/s; checkpoint %" PRId64 ": lag %lld events (%.1fs), %lld held"
				  " by open transactions, %lld open dead letters",
				  rate, n->checkpoint.pos, n->lag, n->lag_seconds, n->held, n->letters_open);
		else
			plog_info(n->key.proj->name, n->key.gen,
				  "%.0f events/s; checkpoint %" PRId64 " (PostgreSQL did not give the lag: %s)", rate,
				  n->checkpoint.pos, *m->pg_error ? m->pg_error : "no answer");
	}
}

/* The summary when PostgreSQL cannot be asked: the pipelines' own figures. */
static void summary_without_numbers(struct monitor *m, const struct monitor_source *src, int n_src)
{
	fill_jobs(m, src, n_src, false);
	summary(m);
	m->n_jobs = m->job = 0;
}

/* Seconds between ticks: a summary's, or REFRESH if shorter. */
static double tick_period(const struct config *cfg)
{
	return cfg->stats_interval < REFRESH ? cfg->stats_interval : REFRESH;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct monitor *m = (struct monitor *)((char *)w - offsetof(struct monitor, tick));
	struct monitor_source src[MAX_SOURCES];
	struct monitor_gen live[MAX_GENS];
	int n = m->sources(m->arg, src, MAX_SOURCES), n_live = live_gens(src, n, live);
	double now = ev_now(loop), every = tick_period(m->cfg);

	(void)revents;
	/* generations gone (retired by a rebuild, or starting over) leave room for new ones */
	m->n_nums = monitor_forget(m->nums, sizeof(m->nums[0]), m->n_nums, live, n_live);
	m->n_written = monitor_forget(m->written, sizeof(m->written[0]), m->n_written, live, n_live);
	m->n_prev = monitor_forget(m->prev, sizeof(m->prev[0]), m->n_prev, live, n_live);
	/* stats-interval is reloadable: the period follows it */
	if (w->repeat != every) {
		w->repeat = every;
		ev_timer_again(loop, w);
	}
	/*
	 * Counting the lag reads the events after the checkpoint: every tick
	 * for /metrics and /health, else once a summary. The summary is logged
	 * once that batch is read, so that its figures are of one moment.
	 */
	if (now - m->last_summary >= m->cfg->stats_interval - 0.01) {
		m->last_summary = now;
		m->summary_due = true;
		pg_refresh(m, src, n);
		if (m->summary_due && (m->job >= m->n_jobs || !m->conn))
			summary_without_numbers(m, src, n); /* PostgreSQL cannot be asked now */
	} else if (m->httpd) {
		pg_refresh(m, src, n);
	}
	/* only /health and /metrics read the ping's outcome */
	if (m->httpd)
		ping(m);
}

struct monitor *monitor_new(struct ev_loop *loop, const struct config *cfg, struct es_client *es,
			    monitor_sources_fn sources, void *arg, char *err, size_t errsz)
{
	struct monitor *m = calloc(1, sizeof(*m));

	if (!m) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	m->loop = loop;
	m->cfg = cfg;
	m->es = es;
	m->sources = sources;
	m->arg = arg;
	m->last_summary = ev_now(loop);
	ev_init(&m->pg_io, pg_io_cb);
	if (*cfg->metrics_address) {
		m->httpd = httpd_new(loop, cfg->metrics_address, serve, m, err, errsz);
		if (!m->httpd) {
			free(m);
			return NULL;
		}
		log_info("metrics and health on http://%s (port %d)", cfg->metrics_address, httpd_port(m->httpd));
	}
	ev_timer_init(&m->tick, tick_cb, 0.05, tick_period(cfg));
	ev_timer_start(loop, &m->tick);
	return m;
}

int monitor_port(const struct monitor *m)
{
	return m->httpd ? httpd_port(m->httpd) : 0;
}

void monitor_free(struct monitor *m)
{
	if (!m)
		return;
	ev_timer_stop(m->loop, &m->tick);
	ev_io_stop(m->loop, &m->pg_io);
	httpd_free(m->httpd);
	if (m->conn)
		PQfinish(m->conn);
	free(m);
}
