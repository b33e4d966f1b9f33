#ifndef ESBRIDGE_TEST_HARNESS_H
#define ESBRIDGE_TEST_HARNESS_H

/*
 * Integration test harness: a real PostgreSQL (ESBRIDGE_PG), a real search
 * node (ESBRIDGE_ES) and the real daemon (ESBRIDGE_BIN, default
 * build/esbridge), driven from Criterion tests.
 *
 *   h_begin()   at the start of every test: connects (the test fails when a
 *               service is unreachable: CI must exercise them), resets the
 *               world (bridge schema, events, the indices and aliases of
 *               every projection in H_PROJECTIONS, the stored script)
 *   h_end()     the suite's .fini: kills and reaps daemons still running,
 *               closes connections
 *
 * Every helper that cannot do its job fails the current test with a
 * message (cr_assert); none returns an error code to check.
 *
 * Daemons write their stderr and stdout to build/tests/logs/SUITE-TEST.log
 * (the folder of ESBRIDGE_BIN + tests/logs), one "=== spawn" header per
 * start. Reaping a daemon fails the test when its log shows a sanitizer
 * report.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libpq-fe.h>

/* ---- time -------------------------------------------------------------- */

double h_now(void);            /* monotonic seconds */
void h_sleep(double seconds);

/*
 * Polls `cond` every 50 ms until it holds or `secs` have passed; then fails
 * the test with the message.
 */
#define H_EVENTUALLY(cond, secs, ...)                                      \
	do {                                                                  \
		double h_deadline_ = h_now() + (secs);                            \
		while (!(cond)) {                                                 \
			if (h_now() > h_deadline_)                                    \
				cr_assert_fail(__VA_ARGS__);                              \
			h_sleep(0.05);                                                \
		}                                                                 \
	} while (0)

/* The same with a callback; returns true when `cond(arg)` held in time. */
bool h_eventually(bool (*cond)(void *arg), void *arg, double secs);

/* A generous bound for anything "eventually". */
#define H_LONG 60.0

/* ---- files and ports ------------------------------------------------------ */

/* The whole text of `path`, NUL-terminated and malloc'd (free() it); its length in *len if `len`. */
char *h_read_file(const char *path, size_t *len);

/* Writes `text` as the whole of `path` (created or truncated). */
void h_write_file(const char *path, const char *text);

/* A loopback TCP port nobody listens on (bound, then closed). */
int h_free_port(void);

/* ---- world ------------------------------------------------------------- */

/*
 * Every registered projection (the daemon's `run` without --projection runs
 * them all): the reset deletes NAME* indices and the alias NAME of each.
 */
#define H_PROJECTIONS { "products", "orders", "daily_sales", "customers", "customer_orders", NULL }

void h_begin(void);
void h_end(void);

/* ---- PostgreSQL --------------------------------------------------------- */

/* The test's main connection (autocommit). */
PGconn *h_pg(void);

/* A new connection, closed by h_disconnect() or else by h_end(). */
PGconn *h_connect(void);
void h_disconnect(PGconn *c);

/*
 * Runs `sql` with text parameters on `c` (NULL = h_pg()); the statement
 * must succeed. The caller PQclear()s the result.
 */
PGresult *h_exec(PGconn *c, const char *sql, int n, const char *const *params);

/* Runs a statement (no parameters), result dropped. */
void h_sql(PGconn *c, const char *sql);

/*
 * Runs the SQL text `sql` (one simple-query string, so one transaction) on
 * `c` (NULL = h_pg()), after replacing psql-style variables `:name` (not in
 * quoted text or comments) with the values of `vars`, a NULL-terminated
 * list of "name=value" strings (may be NULL), e.g. { "orders=20000",
 * "seed=0.42" }. A variable without a value fails the test.
 */
void h_sql_vars(PGconn *c, const char *sql, const char *const *vars);

/* The same with the text of the file `path`. */
void h_sql_file(PGconn *c, const char *path, const char *const *vars);

/* The single value of a one-row, one-column query as a long long (NULL: `dflt`). */
long long h_query_ll(PGconn *c, const char *sql, int n, const char *const *params, long long dflt);

/* The single value as malloc'd text (NULL for SQL NULL); free() it. */
char *h_query_text(PGconn *c, const char *sql, int n, const char *const *params);

/*
 * Appends one event (stream, type, data as jsonb text), version = next of
 * the stream, on `c` (NULL = h_pg()). Returns its global_position.
 */
int64_t h_event(PGconn *c, const char *stream, const char *type, const char *data);

/* The transaction id (xid8 as a number) of the event at `pos`. */
uint64_t h_event_txid(int64_t pos);

/*
 * The checkpoint of the newest generation of `projection`; false when there
 * is none yet.
 */
bool h_checkpoint(const char *projection, uint64_t *txid, int64_t *pos);

/*
 * Waits up to `secs` for the checkpoint of the newest generation of
 * `projection` to be exactly (txid, pos); true when it was in time.
 */
bool h_wait_checkpoint(const char *projection, uint64_t txid, int64_t pos, double secs);

/* The checkpoint position of the newest generation of `projection`; -1 when there is none yet. */
int64_t h_checkpoint_pos(const char *projection);

/* Dead letters recorded so far. */
long long h_dead_letter_count(void);

/* ---- expected dead letters ------------------------------------------------- */

/* What must become of an appended event. */
enum h_outcome {
	H_APPLIED,  /* no dead letter (applied, or not for the projection) */
	H_PENDING,  /* a 'pending' letter: the event failed */
	H_HELD,     /* a 'held' letter behind the pending one of its document */
};

struct h_expected {
	int64_t pos;
	enum h_outcome out;
	char *doc;           /* the document a letter names (malloc'd); NULL: none */
	const char *reason;  /* H_PENDING: a part of its reason ("a|b": either) */
};

#define H_MAX_EXPECTED 128

/* The outcomes a test expects of the events it appended, in their order. */
struct h_expectations {
	struct h_expected ev[H_MAX_EXPECTED];
	size_t n;
};

/*
 * Records that the event at `pos` must end `out`, its letter naming `doc`
 * (copied; NULL: no document; a held letter always names one) with, when
 * pending, a reason containing a part of `reason`.
 */
void h_expect(struct h_expectations *x, int64_t pos, enum h_outcome out, const char *doc,
	      const char *reason);

/* h_event(NULL, stream, type, data), then h_expect() of its position; returns the position. */
int64_t h_add_event(struct h_expectations *x, const char *stream, const char *type, const char *data,
		    enum h_outcome out, const char *doc, const char *reason);

/* Frees the copies of h_expect() and empties `x`. */
void h_expectations_free(struct h_expectations *x);

/*
 * The dead letters of `proj` are exactly the H_PENDING and H_HELD events of
 * `x`, one each: a pending one with its reason and the document it names (or
 * none), a held one naming its document and, in its reason, the position of
 * the pending letter that holds the document back.
 */
void h_assert_letters(const char *proj, const struct h_expectations *x);

/* ---- the daemon ---------------------------------------------------------- */

struct h_proc {
	pid_t pid;
	bool running;
	int status;         /* waitpid status once reaped */
	char log[1024];     /* the log file */
	long log_from;      /* where this process's output starts in it */
};

enum {
	H_NO_ES_ENV = 1 << 0,  /* start without ESBRIDGE_ES in the environment */
};

/*
 * Starts ESBRIDGE_BIN with `args` (NULL-terminated, without argv[0]) and
 * `flags`. At most a few per test; h_end() kills what is left.
 */
struct h_proc *h_spawn(unsigned flags, const char *const *args);

/*
 * h_spawn, generalised: runs `prog` (NULL: ESBRIDGE_BIN; a relative path is
 * taken from the current directory) with `args`, and with `env`
 * ("NAME=VALUE" strings, NULL-terminated, may be NULL) added to its
 * environment. Its output goes to the test's log like a daemon's.
 */
struct h_proc *h_spawn_ex(unsigned flags, const char *prog, const char *const *env,
			  const char *const *args);

/* The daemon binary the harness runs (ESBRIDGE_BIN or build/esbridge). */
const char *h_bin(void);

/*
 * The test build with the rebuild's crash points (ESBRIDGE_CRASH_BIN,
 * default h_bin() + "-crash"); h_spawn_ex() runs it instead of h_bin() when
 * its environment sets ESBRIDGE_CRASH_AT.
 */
const char *h_crash_bin(void);

/* The signal that killed a reaped process, 0 if it exited normally (or runs). */
int h_term_signal(const struct h_proc *p);

/* Waits up to `secs`; true when it exited (then `p->status` is set). */
bool h_wait(struct h_proc *p, double secs);

void h_signal(struct h_proc *p, int sig);

/* Exit code of a process that exited normally, -1 otherwise (killed). */
int h_exit_code(const struct h_proc *p);

/* Kills with SIGKILL and reaps. */
void h_kill(struct h_proc *p);

/*
 * Stops a daemon with SIGTERM: it must exit within `secs`, with exit code 0
 * (it drains and stops). Fails the test otherwise.
 */
void h_stop(struct h_proc *p, double secs);

/* The process's own output (since its start), malloc'd; free() it. */
char *h_proc_output(const struct h_proc *p);

/* Occurrences of `needle` (not empty; not overlapping) in the process's own output. */
long h_output_count(const struct h_proc *p, const char *needle);

/*
 * `run --once` with extra `args` (NULL-terminated, may be NULL); waits up to
 * `secs`, fails the test if it does not exit in time. Returns the exit code.
 */
int h_run_once(const char *const *args, double secs);

/* ---- the search node ------------------------------------------------------ */

struct h_http {
	long status;
	char *body;   /* NUL-terminated, malloc'd */
	size_t len;
};

/*
 * A request to ESBRIDGE_ES (its first URL, when it names several) + `path`; `body` may be NULL (JSON content type
 * otherwise). A transport error fails the test. Free with h_http_free().
 */
struct h_http h_es(const char *method, const char *path, const char *body);
void h_http_free(struct h_http *r);

/* True if the alias `alias` exists and names exactly `index`. */
bool h_alias_is(const char *alias, const char *index);

/* True if the alias `alias` exists. */
bool h_alias_exists(const char *alias);

/*
 * indexing.index_total + indexing.delete_total of the primaries of `index`
 * (GET /INDEX/_stats/indexing).
 */
long long h_index_ops(const char *index);

/*
 * The _source of document `id` found through the alias `alias` by a search
 * (an ids query; searchable, not only gettable), as malloc'd JSON text, or
 * NULL when the search finds nothing (or the alias does not exist yet).
 */
char *h_search_source(const char *alias, const char *id);

/* True when h_search_source() finds document `id`. */
bool h_searchable(const char *alias, const char *id);

/*
 * True when h_search_source() finds document `id` and its _source equals
 * `want` (JSON text, compared as jsonb); logs the document when it differs.
 */
bool h_source_is(const char *alias, const char *id, const char *want);

/*
 * Refreshes the alias `alias` and loads every document behind it (scroll
 * API) into the temp table es_docs(id text, doc jsonb) of h_pg(), each
 * _source parsed by PostgreSQL from the node's raw JSON text (numbers keep
 * their exact decimal value). Returns the count.
 */
long h_load_es_docs(const char *alias);

/*
 * Compares es_docs with the oracle of projection `name`
 * ($ESBRIDGE_ORACLE_DIR/NAME.sql, default tests/oracle/NAME.sql), loaded
 * into the temp table oracle_NAME, by SQL; logs up to a few differing rows
 * on mismatch. `only_oracle` = rows of (oracle EXCEPT es), `only_es` =
 * (es EXCEPT oracle).
 */
void h_compare_oracle(const char *name, long *only_oracle, long *only_es);

/*
 * Writes DIR/NAME.sql: the oracle tests/oracle/NAME.sql with its one read
 * of public.events ("FROM public.events e") narrowed to the events whose
 * global_position is NOT IN (`left_out`), a one-column query evaluated
 * with the oracle (on h_pg(): temp tables may serve). With
 * ESBRIDGE_ORACLE_DIR=DIR, h_compare_oracle() then expects the documents
 * of the events minus those.
 */
void h_write_oracle_without(const char *dir, const char *name, const char *left_out);

/*
 * h_load_es_docs(name) + h_compare_oracle(name) + asserts no difference:
 * the alias of a projection bears its name.
 */
void h_assert_docs_match_oracle(const char *name);

/* ---- faults (test_faults.c) ----------------------------------------------- */

/*
 * Runs `scripts/services` (ESBRIDGE_SERVICES overrides the path) with
 * `args` (NULL-terminated), e.g. { "es-kill", NULL }, { "pg-restart",
 * "fast", NULL }; its output goes to the test's log (stderr before
 * h_begin). Waits up to `secs` (the script is SIGKILLed past that, the test
 * fails) and returns its exit code. The script is not tied to the test
 * process: a test killed by its timeout does not stop a restart half-way.
 * Usable before h_begin().
 */
int h_services(const char *const *args, double secs);

/*
 * h_services({ cmd, arg, NULL }, secs) (`arg` may be NULL), which must exit
 * 0; logs how long it took.
 */
void h_services_ok(const char *cmd, const char *arg, double secs);

/*
 * Both services up and the search node's JVM running: nothing to do when
 * `scripts/services status` says both answer, else `es-thaw` (resumes a
 * node a test left stopped) and `start`, which must succeed. For the
 * .init and .fini (after h_end()) of suites that stop or freeze services.
 */
void h_services_up(void);

/*
 * After a PostgreSQL restart: reopens h_pg() (its session settings applied
 * again; temp tables are gone) and drops the connections of h_connect().
 */
void h_pg_reset(void);

/*
 * Starts the fault-injecting proxy tests/tools/faultproxy.py
 * (ESBRIDGE_FAULTPROXY overrides the path) in front of ESBRIDGE_ES with the
 * extra `args` (NULL-terminated, e.g. { "--cut", "0.1", NULL }), waits until
 * it listens and writes its base URL ("http://127.0.0.1:PORT") to `url`.
 * Its output (one "faultproxy: fault=KIND ..." line per fault) goes to the
 * test's log.
 */
struct h_proc *h_proxy_start(const char *const *args, char *url, size_t size);

/*
 * Lines "faultproxy: fault=`kind` " in the log since the proxy `p` started
 * (the log is shared: its other lines do not count).
 */
long h_proxy_faults(const struct h_proc *p, const char *kind);

/*
 * Appends generated product events [from, to] in one transaction: products
 * g1..g3000 created by the first 3000, then deletes, re-creates, price
 * changes and updates of varying fields spread over them.
 */
void h_insert_generated_products(int from, int to);

/*
 * Appends generated order events of orders o`from`..o`to` in one
 * transaction: created, two items, every third one item removed, even ones
 * shipped, every fourth completed, every seventh cancelled.
 */
void h_insert_generated_orders(int from, int to);

#endif
