/*
 * Integration tests of what an operator relies on (issue 7): the real daemon
 * and CLI between a real PostgreSQL and a real search node.
 *
 *   1. configuration: defaults < config file < ESBRIDGE_* < flags, as
 *      `check-config` prints them; a bad file line stops with exit 2 and one
 *      line naming FILE:LINE; secrets (environment, file, URL) are masked;
 *   2. SIGHUP: a running daemon takes reloadable settings from its file
 *      (log-level debug makes per-request lines appear, stats-interval stops
 *      the summary lines), warns about one that needs a restart, and a bad
 *      file logs "reload failed" and keeps the running settings;
 *   3. /metrics after the catch-up of a generated history: events by type
 *      equal SQL counts over the events table, checkpoint and head equal
 *      SQL, lag 0, open dead letters equal the bad events inserted;
 *      /health 200 while following, 503 with a JSON reason while the search
 *      node is frozen (SIGSTOP), 200 again after it resumes; 404 elsewhere;
 *      with one of two nodes unreachable, its failed pings (each followed by
 *      one the other node answers) leave /health 200;
 *   4. `esbridge wait`: 0 soon after an append while a daemon runs, 1 after
 *      --timeout without a daemon, 2 on usage errors;
 *   5. standby: two `esbridge run`, the owner SIGKILLed mid catch-up, the
 *      standby takes over, the indices equal the oracles, and the --dump-bulk
 *      files of the two never overlap in time; `status` names each owner;
 *   6. drain timeout: SIGTERM with --drain-timeout 2 while requests hang on a
 *      frozen node exits non-zero within seconds, the checkpoint stays where
 *      the node last acknowledged; `run --once` after the node resumes ends
 *      exact.
 *
 * Faults go through scripts/services (es-freeze, es-thaw); a frozen node is
 * resumed by the script's detached guard even if the test process dies, and
 * by the suite's .init/.fini. Logs: build/tests/logs/operate-TEST.log.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <curl/curl.h>

#include "harness.h"

/* ---- services ---------------------------------------------------------------- */

static void suite_fini(void)
{
	h_end();
	h_services_up();
}

TestSuite(operate, .init = h_services_up, .fini = suite_fini);

/* ---- files ------------------------------------------------------------------- */

/*
 * A fresh folder for the test's files, next to the logs:
 * build/tests/operate/NAME (emptied first; it holds flat files only).
 */
static void test_dir(const char *name, char *out, size_t size)
{
	char base[512], *slash;
	DIR *d;
	int n;
	struct dirent *e;

	snprintf(base, sizeof(base), "%s", h_bin());
	slash = strrchr(base, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(base, sizeof(base), ".");
	n = snprintf(out, size, "%s/tests/operate", base);
	cr_assert(n > 0 && (size_t)n < size, "path too long: %s", base);
	cr_assert(mkdir(out, 0777) == 0 || errno == EEXIST, "mkdir %s: %s", out, strerror(errno));
	n = snprintf(out, size, "%s/tests/operate/%s", base, name);
	cr_assert(n > 0 && (size_t)n < size, "path too long: %s", base);
	cr_assert(mkdir(out, 0777) == 0 || errno == EEXIST, "mkdir %s: %s", out, strerror(errno));
	d = opendir(out);
	cr_assert_not_null(d, "opendir %s: %s", out, strerror(errno));
	while ((e = readdir(d))) {
		char path[1024];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", out, e->d_name);
		cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	}
	closedir(d);
}

/* ---- processes and their output ---------------------------------------------------- */

/* Waits until `needle` shows `count` times in p's output; fails if p exits first. */
static void wait_output(struct h_proc *p, const char *needle, long count, double secs)
{
	double deadline = h_now() + secs;

	while (h_output_count(p, needle) < count) {
		cr_assert(!h_wait(p, 0), "the process exited (status 0x%x) before logging '%s' (log: %s)",
			  (unsigned)p->status, needle, p->log);
		cr_assert(h_now() < deadline, "'%s' not logged %ld times within %.0fs (log: %s)", needle, count,
			  secs, p->log);
		h_sleep(0.05);
	}
}

/*
 * Runs the CLI with `args` and extra `env`; waits up to `secs` and returns
 * its exit code; its output (stdout and stderr) in *out (free() it) if `out`.
 */
static int cli(const char *const *env, const char *const *args, double secs, char **out)
{
	struct h_proc *p = h_spawn_ex(0, NULL, env, args);
	int code;

	if (!h_wait(p, secs)) {
		h_kill(p);
		cr_assert_fail("'%s' did not exit within %.0fs (log: %s)", args[0], secs, p->log);
	}
	code = h_exit_code(p);
	if (out)
		*out = h_proc_output(p);
	return code;
}

/* Lines of `text` (a last line without '\n' counts). */
static int line_count(const char *text)
{
	int n = 0;

	for (const char *p = text; *p; p++)
		if (*p == '\n' || !p[1])
			n++;
	return n;
}

/* ---- histories --------------------------------------------------------------- */

/* The last event of a projection's streams in commit order (position; 0: none). */
static int64_t last_pos_of(const char *stream_prefix)
{
	const char *params[1] = { stream_prefix };

	return h_query_ll(NULL,
		"SELECT coalesce((SELECT global_position FROM public.events WHERE stream_id ^@ $1"
		" ORDER BY transaction_id DESC, global_position DESC LIMIT 1), 0)", 1, params, 0);
}

/* Waits until `projection`'s checkpoint is `last`; fails if p exits first. */
static void wait_caught_up(struct h_proc *p, const char *projection, int64_t last, double secs)
{
	double deadline = h_now() + secs;
	int64_t pos;

	while ((pos = h_checkpoint_pos(projection)) != last) {
		cr_assert(!p || !h_wait(p, 0), "the daemon exited (status 0x%x) at %s checkpoint %" PRId64
			  " of %" PRId64 " (log: %s)", p ? (unsigned)p->status : 0u, projection, pos, last,
			  p ? p->log : "");
		cr_assert(h_now() < deadline, "%s checkpoint %" PRId64 " of %" PRId64 " after %.0fs%s%s",
			  projection, pos, last, secs, p ? " (log: " : "", p ? p->log : "");
		h_sleep(0.1);
	}
}

/*
 * Waits until the alias `proj` names its first generation: after the
 * catch-up the daemon still restores the index settings, refreshes it and
 * adds the alias (synchronous requests that block its loop meanwhile).
 */
static void wait_alias(struct h_proc *p, const char *proj)
{
	char index[64];
	double deadline = h_now() + H_LONG;

	snprintf(index, sizeof(index), "%s-000001", proj);
	while (!h_alias_is(proj, index)) {
		cr_assert(!p || !h_wait(p, 0), "the daemon exited before the alias %s (log: %s)", proj,
			  p ? p->log : "");
		cr_assert(h_now() < deadline, "no alias %s -> %s after %.0fs", proj, index, H_LONG);
		h_sleep(0.1);
	}
}

/* ---- HTTP to the daemon ---------------------------------------------------------- */

/* The port of "metrics and health on http://... (port N)" in p's log. */
static int metrics_port(struct h_proc *p)
{
	static const char mark[] = "metrics and health on http://";
	char *out, *at;
	int port = 0;

	wait_output(p, mark, 1, 60);
	out = h_proc_output(p);
	at = strstr(out, mark);
	at = at ? strstr(at, "(port ") : NULL;
	cr_assert_not_null(at, "no '(port N)' after '%s' (log: %s)", mark, p->log);
	port = atoi(at + 6);
	free(out);
	cr_assert(port > 0 && port < 65536, "bad metrics port %d (log: %s)", port, p->log);
	return port;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct h_http *r = arg;
	size_t n = size * nmemb;
	char *grown = realloc(r->body, r->len + n + 1);

	if (!grown)
		return 0;
	r->body = grown;
	memcpy(r->body + r->len, ptr, n);
	r->len += n;
	r->body[r->len] = '\0';
	return n;
}

/* GET http://127.0.0.1:PORT`path`; a transport error fails the test. Free with h_http_free(). */
static struct h_http get(int port, const char *path)
{
	struct h_http r = { 0 };
	char url[256];
	CURL *c = curl_easy_init();
	CURLcode rc;

	cr_assert_not_null(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	rc = curl_easy_perform(c);
	cr_assert_eq(rc, CURLE_OK, "GET %s: %s", url, curl_easy_strerror(rc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_easy_cleanup(c);
	if (!r.body) {
		r.body = calloc(1, 1);
		cr_assert_not_null(r.body);
	}
	return r;
}

/* True when GET /health answers `want`. */
static bool health_is(int port, long want)
{
	struct h_http r = get(port, "/health");
	bool is = r.status == want;

	h_http_free(&r);
	return is;
}

/*
 * The value of the sample `series` (name with its labels, exactly as
 * printed) in Prometheus text; false when absent.
 */
static bool metric(const char *text, const char *series, double *value)
{
	size_t n = strlen(series);

	for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		char *end;
		if (strncmp(line, series, n) != 0 || line[n] != ' ')
			continue;
		*value = strtod(line + n + 1, &end);
		return end != line + n + 1;
	}
	return false;
}

static double need_metric(const char *text, const char *series)
{
	double v = 0;

	cr_assert(metric(text, series, &v), "no sample %s in /metrics:\n%.3000s", series, text);
	return v;
}

/* ---- 1. configuration ------------------------------------------------------------ */

/* The value check-config prints for `name` ("name = value"), malloc'd. */
static char *printed(const char *out, const char *name)
{
	char key[128];
	const char *at = out, *eol;
	char *v;

	snprintf(key, sizeof(key), "%s = ", name);
	while ((at = strstr(at, key)) && at != out && at[-1] != '\n')
		at++;
	cr_assert_not_null(at, "check-config does not print '%s':\n%s", name, out);
	at += strlen(key);
	eol = strchr(at, '\n');
	v = strndup(at, eol ? (size_t)(eol - at) : strlen(at));
	cr_assert_not_null(v);
	return v;
}

static void assert_printed(const char *out, const char *name, const char *want, const char *why)
{
	char *v = printed(out, name);

	cr_assert_str_eq(v, want, "%s: check-config prints '%s = %s', want '%s'", why, name, v, want);
	free(v);
}

Test(operate, config_precedence_errors_and_masking, .timeout = 180)
{
	char dir[512], file[600], file2[600], text[1024], *out;
	int code;

	h_begin();
	test_dir("config", dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/esbridge.conf", dir);
	snprintf(file2, sizeof(file2), "%s/other.conf", dir);
	h_write_file(file,
		     "# a comment, then blank lines and spaces\n"
		     "\n"
		     "   batch-size = 111\n"
		     "bulk-actions=222\n"
		     "inflight = 5\n"
		     "poll-interval = \"0.25\"\n"
		     "log-level = warn\n"
		     "coalesce = off\n"
		     "projection = products, orders\n");
	h_write_file(file2, "batch-size = 999\n");

	/* the file over the defaults, the environment over the file, flags over both */
	{
		const char *const env[] = { "ESBRIDGE_BULK_ACTIONS=333", "ESBRIDGE_INFLIGHT=6",
					    "ESBRIDGE_LOG_LEVEL=error", NULL };
		const char *const args[] = { "--config", file, "--inflight", "7", "check-config", NULL };
		code = cli(env, args, 30, &out);
		cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
		assert_printed(out, "batch-size", "111", "file over default");
		assert_printed(out, "bulk-actions", "333", "environment over file");
		assert_printed(out, "inflight", "7", "flag over environment over file");
		assert_printed(out, "poll-interval", "0.25", "quoted value in the file");
		assert_printed(out, "log-level", "error", "environment over file");
		assert_printed(out, "coalesce", "false", "boolean in the file");
		assert_printed(out, "projection", "products orders", "list in the file");
		assert_printed(out, "bulk-bytes", "8388608", "default");
		assert_printed(out, "retry-max", "30", "default");
		free(out);
	}
	/* ESBRIDGE_CONFIG names the file; --config wins over it; --name=value works */
	{
		char var[700];
		const char *env[] = { var, NULL };
		const char *const args[] = { "check-config", NULL };
		char flag[700];
		snprintf(var, sizeof(var), "ESBRIDGE_CONFIG=%s", file);
		code = cli(env, args, 30, &out);
		cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
		assert_printed(out, "batch-size", "111", "ESBRIDGE_CONFIG");
		assert_printed(out, "inflight", "5", "ESBRIDGE_CONFIG");
		free(out);
		snprintf(flag, sizeof(flag), "--config=%s", file2);
		{
			const char *const a[] = { flag, "--bulk-actions=444", "check-config", NULL };
			code = cli(env, a, 30, &out);
		}
		cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
		assert_printed(out, "batch-size", "999", "--config over ESBRIDGE_CONFIG");
		assert_printed(out, "inflight", "3", "--config over ESBRIDGE_CONFIG (default, not the other file's)");
		assert_printed(out, "bulk-actions", "444", "--name=value");
		free(out);
	}

	/* a bad line: exit 2, one line naming FILE:LINE, nothing else */
	{
		static const struct {
			const char *text;
			int line;
			const char *says;
		} bad[] = {
			{ "batch-size = 10\nno equals sign here\n", 2, "expected 'name = value'" },
			{ "# c\n\nno-such-option = 1\n", 3, "unknown option 'no-such-option'" },
			{ "batch-size = lots\n", 1, "batch-size" },
			{ "inflight = 3\nbatch-size = 0\n", 2, "batch-size" },
			{ "poll-interval = 1\n\n\ncoalesce = maybe\n", 4, "coalesce" },
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char where[700];
			const char *const args[] = { "--config", file2, "check-config", NULL };
			h_write_file(file2, bad[i].text);
			code = cli(NULL, args, 30, &out);
			snprintf(where, sizeof(where), "%s:%d:", file2, bad[i].line);
			cr_assert_eq(code, 2, "bad line %zu: exit %d, want 2:\n%s", i, code, out);
			cr_assert_eq(line_count(out), 1, "bad line %zu: %d lines of output, want one:\n%s", i,
				     line_count(out), out);
			cr_assert_not_null(strstr(out, where), "bad line %zu: '%s' not named:\n%s", i, where, out);
			cr_assert_not_null(strstr(out, bad[i].says), "bad line %zu: no '%s':\n%s", i, bad[i].says,
					   out);
			free(out);
		}
		/* the daemon does not start on it either */
		{
			const char *const args[] = { "--config", file2, "run", NULL };
			code = cli(NULL, args, 30, &out);
			cr_assert_eq(code, 2, "run with a bad config file: exit %d, want 2:\n%s", code, out);
			cr_assert_eq(line_count(out), 1, "run with a bad config file: want one line:\n%s", out);
			free(out);
		}
		/* a missing file names it */
		{
			char missing[700];
			const char *const args[] = { "--config", missing, "check-config", NULL };
			snprintf(missing, sizeof(missing), "%s/missing.conf", dir);
			code = cli(NULL, args, 30, &out);
			cr_assert_eq(code, 2, "missing config file: exit %d, want 2:\n%s", code, out);
			cr_assert_eq(line_count(out), 1, "missing config file: want one line:\n%s", out);
			cr_assert_not_null(strstr(out, missing), "missing file not named:\n%s", out);
			free(out);
		}
	}

	/* secrets: never printed, whether from the environment, the file or a URL */
	{
		static const char canary_env[] = "Canary-Env-5b1e9f";
		static const char canary_file[] = "Canary-File-77c0d2";
		static const char canary_key[] = "Q2FuYXJ5LUtleS1hZjQ0";
		static const char canary_url[] = "Canary-Url-0c3e91";
		char url[256], es[256];
		const char *env_es = getenv("ESBRIDGE_ES");

		cr_assert(env_es && !strncmp(env_es, "http://", 7), "ESBRIDGE_ES is not http://: %s",
			  env_es ? env_es : "(unset)");
		/* the password in the environment */
		{
			char pw[128];
			const char *const env[] = { "ESBRIDGE_ES_USER=operator", pw, NULL };
			const char *const args[] = { "check-config", NULL };
			snprintf(pw, sizeof(pw), "ESBRIDGE_ES_PASSWORD=%s", canary_env);
			code = cli(env, args, 30, &out);
			cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
			cr_assert_null(strstr(out, canary_env), "the password shows:\n%s", out);
			assert_printed(out, "es-password", "***", "password from the environment");
			assert_printed(out, "es-user", "operator", "user from the environment");
			free(out);
		}
		/* the password and an API key in the file */
		snprintf(text, sizeof(text), "es-user = operator\nes-password = %s\n", canary_file);
		h_write_file(file2, text);
		{
			const char *const args[] = { "--config", file2, "check-config", NULL };
			code = cli(NULL, args, 30, &out);
			cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
			cr_assert_null(strstr(out, canary_file), "the password from the file shows:\n%s", out);
			assert_printed(out, "es-password", "***", "password from the file");
			free(out);
		}
		snprintf(text, sizeof(text), "es-api-key = %s\n", canary_key);
		h_write_file(file2, text);
		{
			const char *const args[] = { "--config", file2, "check-config", NULL };
			code = cli(NULL, args, 30, &out);
			cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
			cr_assert_null(strstr(out, canary_key), "the API key from the file shows:\n%s", out);
			assert_printed(out, "es-api-key", "***", "API key from the file");
			free(out);
		}
		/* the password in the URL of ESBRIDGE_ES, and in the PostgreSQL conninfo */
		snprintf(url, sizeof(url), "ESBRIDGE_ES=http://operator:%s@%s", canary_url, env_es + 7);
		snprintf(es, sizeof(es), "http://***@%s", env_es + 7);
		{
			char pg[512];
			const char *const env[] = { url, pg, NULL };
			const char *const args[] = { "check-config", NULL };
			snprintf(pg, sizeof(pg), "ESBRIDGE_PG=host=127.0.0.1 dbname=esbridge password=%s", canary_env);
			code = cli(env, args, 30, &out);
			cr_assert_eq(code, 0, "check-config exited %d:\n%s", code, out);
			cr_assert_null(strstr(out, canary_url), "the URL's password shows:\n%s", out);
			cr_assert_null(strstr(out, canary_env), "the conninfo's password shows:\n%s", out);
			assert_printed(out, "es", es, "URL with credentials");
			cr_assert_not_null(strstr(out, "password=***"), "the conninfo's password not masked:\n%s", out);
			free(out);
		}
		/* a secret as a flag is refused, without echoing it */
		{
			char flag[128];
			const char *const args[] = { flag, "check-config", NULL };
			snprintf(flag, sizeof(flag), "--es-password=%s", canary_env);
			code = cli(NULL, args, 30, &out);
			cr_assert_eq(code, 2, "--es-password accepted (exit %d):\n%s", code, out);
			cr_assert_eq(line_count(out), 1, "want one line:\n%s", out);
			free(out);
		}
	}
	h_end();
}

/* ---- 2. SIGHUP ------------------------------------------------------------------- */

Test(operate, sighup_reloads_and_keeps_settings_on_error, .timeout = 240)
{
	char dir[512], file[600];
	const char *args[] = { "--config", file, "run", "--poll-interval", "0.2", NULL };
	struct h_proc *p;
	long debug0, summaries, warned;
	int64_t pos;
	double t0;

	h_begin();
	test_dir("sighup", dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/esbridge.conf", dir);
	h_write_file(file, "log-level = info\nstats-interval = 1\ninflight = 3\n");
	h_insert_generated_products(1, 2000);
	p = h_spawn(0, args);
	wait_caught_up(p, "products", 2000, H_LONG);

	/* info: no per-request lines; a summary line every second */
	cr_assert_eq(h_output_count(p, "_bulk of"), 0, "debug lines at log-level info (log: %s)", p->log);
	summaries = h_output_count(p, "events/s; checkpoint");
	wait_output(p, "events/s; checkpoint", summaries + 2, 30);

	/* reloadable: log-level and stats-interval; inflight needs a restart */
	h_write_file(file, "log-level = debug\nstats-interval = 3600\ninflight = 4\n");
	h_signal(p, SIGHUP);
	wait_output(p, "reloaded the settings: 2 changed", 1, 30);
	cr_assert_eq(h_output_count(p, "reload: 'log-level' changed"), 1, "(log: %s)", p->log);
	cr_assert_eq(h_output_count(p, "reload: 'stats-interval' changed"), 1, "(log: %s)", p->log);
	warned = h_output_count(p, "reload: 'inflight' changed; it takes effect at the next start");
	cr_assert_eq(warned, 1, "no warning that inflight needs a restart (log: %s)", p->log);

	/* debug lines for new requests */
	pos = h_event(NULL, "product-r1", "ProductCreated",
		      "{\"product_id\": \"r1\", \"name\": \"after reload\", \"price\": 1.5}");
	wait_caught_up(p, "products", pos, 30);
	wait_output(p, "_bulk of", 1, 10);
	/* summaries stopped: none in 3 s (they came every second) */
	summaries = h_output_count(p, "events/s; checkpoint");
	h_sleep(3.0);
	cr_assert_eq(h_output_count(p, "events/s; checkpoint"), summaries,
		     "summary lines go on after stats-interval = 3600 (log: %s)", p->log);

	/* a bad file: "reload failed", the process runs on with its settings */
	h_write_file(file, "log-level = info\nstats-interval = 1\nbatch-size = lots\n");
	t0 = h_now();
	h_signal(p, SIGHUP);
	wait_output(p, "reload failed", 1, 30);
	{
		char *out = h_proc_output(p);
		const char *at = strstr(out, "reload failed");
		char where[700];
		snprintf(where, sizeof(where), "%s:3:", file);
		cr_assert_not_null(strstr(at, where), "the failed reload does not name %s (log: %s)", where, p->log);
		cr_assert_not_null(strstr(at, "batch-size"), "the failed reload does not name the option (log: %s)",
				   p->log);
		free(out);
	}
	cr_assert(!h_wait(p, 1.0), "the daemon exited after a bad reload (log: %s)", p->log);
	debug0 = h_output_count(p, "_bulk of");
	summaries = h_output_count(p, "events/s; checkpoint");
	pos = h_event(NULL, "product-r2", "ProductCreated",
		      "{\"product_id\": \"r2\", \"name\": \"after a bad reload\", \"price\": 2.5}");
	wait_caught_up(p, "products", pos, 30);
	/* still debug (not the file's info), still no summaries (not the file's 1 s) */
	wait_output(p, "_bulk of", debug0 + 1, 10);
	h_sleep(2.5 - (h_now() - t0) > 0 ? 2.5 - (h_now() - t0) : 0);
	cr_assert_eq(h_output_count(p, "events/s; checkpoint"), summaries,
		     "a summary line after the failed reload: its stats-interval was applied (log: %s)", p->log);

	/* a good file again: info, no more debug lines */
	h_write_file(file, "log-level = info\nstats-interval = 3600\ninflight = 4\n");
	h_signal(p, SIGHUP);
	wait_output(p, "reloaded the settings: 1 changed", 1, 30);
	debug0 = h_output_count(p, "_bulk of");
	pos = h_event(NULL, "product-r3", "ProductCreated",
		      "{\"product_id\": \"r3\", \"name\": \"info again\", \"price\": 3.5}");
	wait_caught_up(p, "products", pos, 30);
	cr_assert_eq(h_output_count(p, "_bulk of"), debug0, "debug lines at info again (log: %s)", p->log);

	h_stop(p, 30);
	h_assert_docs_match_oracle("products");
	h_end();
}

/* ---- 3. metrics and health ------------------------------------------------------- */

/* SQL count of `type` events in the streams of `prefix`. */
static long long sql_type_count(const char *prefix, const char *type)
{
	const char *params[2] = { prefix, type };

	return h_query_ll(NULL,
		"SELECT count(*) FROM public.events WHERE stream_id ^@ $1 AND event_type = $2", 2, params, 0);
}

static long long sql_max_pos(const char *prefix)
{
	const char *params[1] = { prefix };

	return h_query_ll(NULL, "SELECT coalesce(max(global_position), 0) FROM public.events WHERE stream_id ^@ $1",
			  1, params, 0);
}

struct want_numbers {
	const char *proj, *prefix;
	const char *const *types;
	long long letters;
};

/* True when /metrics shows the PostgreSQL numbers of the caught-up state (read every few seconds). */
static bool numbers_settled(const char *text, const struct want_numbers *w)
{
	char s[256];
	double v;

	snprintf(s, sizeof(s), "esbridge_head_position{projection=\"%s\",generation=\"1\"}", w->proj);
	if (!metric(text, s, &v) || (long long)v != sql_max_pos(w->prefix))
		return false;
	snprintf(s, sizeof(s), "esbridge_lag_events{projection=\"%s\",generation=\"1\"}", w->proj);
	return metric(text, s, &v) && v == 0;
}

static void assert_numbers(const char *text, const struct want_numbers *w)
{
	char s[256];
	long long sum = 0;

	for (int t = 0; w->types[t]; t++) {
		long long want = sql_type_count(w->prefix, w->types[t]);
		snprintf(s, sizeof(s), "esbridge_events_total{projection=\"%s\",generation=\"1\",type=\"%s\"}",
			 w->proj, w->types[t]);
		cr_assert_eq((long long)need_metric(text, s), want, "%s = %.0f, SQL counts %lld", s,
			     need_metric(text, s), want);
		sum += want;
	}
	cr_assert_gt(sum, 0);
	snprintf(s, sizeof(s), "esbridge_events_total{projection=\"%s\",generation=\"1\",type=\"other\"}", w->proj);
	cr_assert_eq(need_metric(text, s), 0, "%s is not 0", s);
	snprintf(s, sizeof(s), "esbridge_bulk_items_total{projection=\"%s\",generation=\"1\",result=\"ok\"}",
		 w->proj);
	cr_assert_gt(need_metric(text, s), 0, "%s is 0", s);
	snprintf(s, sizeof(s), "esbridge_bulk_requests_total{projection=\"%s\",generation=\"1\",result=\"ok\"}",
		 w->proj);
	cr_assert_gt(need_metric(text, s), 0, "%s is 0", s);
	snprintf(s, sizeof(s), "esbridge_bulk_latency_seconds_count{projection=\"%s\",generation=\"1\"}", w->proj);
	cr_assert_gt(need_metric(text, s), 0, "%s is 0", s);
	snprintf(s, sizeof(s), "esbridge_checkpoint_position{projection=\"%s\",generation=\"1\"}", w->proj);
	cr_assert_eq((long long)need_metric(text, s), last_pos_of(w->prefix), "%s = %.0f, SQL's last event %lld",
		     s, need_metric(text, s), (long long)last_pos_of(w->prefix));
	cr_assert_eq((long long)need_metric(text, s), h_checkpoint_pos(w->proj), "%s differs from esbridge.generations",
		     s);
	snprintf(s, sizeof(s), "esbridge_head_position{projection=\"%s\",generation=\"1\"}", w->proj);
	cr_assert_eq((long long)need_metric(text, s), sql_max_pos(w->prefix), "%s = %.0f, SQL max %lld", s,
		     need_metric(text, s), sql_max_pos(w->prefix));
	snprintf(s, sizeof(s), "esbridge_lag_events{projection=\"%s\",generation=\"1\"}", w->proj);
	cr_assert_eq(need_metric(text, s), 0, "%s is not 0", s);
	snprintf(s, sizeof(s), "esbridge_lag_seconds{projection=\"%s\",generation=\"1\"}", w->proj);
	cr_assert_eq(need_metric(text, s), 0, "%s is not 0", s);
	snprintf(s, sizeof(s), "esbridge_inflight_bytes{projection=\"%s\",generation=\"1\"}", w->proj);
	cr_assert_eq(need_metric(text, s), 0, "%s is not 0 when idle", s);
	snprintf(s, sizeof(s), "esbridge_dead_letters_open{projection=\"%s\",generation=\"1\"}", w->proj);
	{
		const char *params[1] = { w->proj };
		long long sql = h_query_ll(NULL,
			"SELECT count(*) FROM esbridge.dead_letters WHERE projection = $1"
			" AND status IN ('pending', 'held', 'retry')", 1, params, -1);
		cr_assert_eq(sql, w->letters, "%lld open dead letters of %s in SQL, want %lld (the bad events)", sql,
			     w->proj, w->letters);
		cr_assert_eq((long long)need_metric(text, s), w->letters, "%s = %.0f, want %lld", s,
			     need_metric(text, s), w->letters);
	}
}

Test(operate, metrics_and_health, .timeout = 300)
{
	static const char *const product_types[] = { "ProductCreated", "ProductUpdated", "ProductPriceChanged",
						     "ProductDeleted", NULL };
	static const char *const order_types[] = { "OrderCreated", "OrderItemAdded", "OrderItemRemoved",
						   "OrderShipped", "OrderCompleted", "OrderCancelled", NULL };
	const struct want_numbers products = { "products", "product-", product_types, 3 };
	const struct want_numbers orders = { "orders", "order-", order_types, 0 };
	const char *const args[] = { "run", "--metrics-address", "127.0.0.1:0", "--batch-size", "1000",
				     "--bulk-actions", "400", "--poll-interval", "0.2", "--request-timeout", "8",
				     NULL };
	struct h_proc *p;
	struct h_http r;
	double deadline, t0;
	int port;

	h_begin();
	h_insert_generated_products(1, 6000);
	h_insert_generated_orders(1, 1500);
	h_insert_generated_products(6001, 9000);
	/* three bad events, each its own product (no later event held behind them) */
	(void)h_event(NULL, "product-bad1", "ProductCreated", "{\"product_id\": \"bad1\", \"price\": 1}");
	(void)h_event(NULL, "product-bad2", "ProductCreated",
		      "{\"product_id\": \"bad2\", \"name\": \"n\", \"price\": 1.234}");
	(void)h_event(NULL, "product-bad3", "ProductPriceChanged", "{\"product_id\": \"bad3\"}");
	h_insert_generated_orders(1501, 2000);

	p = h_spawn(0, args);
	port = metrics_port(p);
	wait_caught_up(p, "products", last_pos_of("product-"), 120);
	wait_caught_up(p, "orders", last_pos_of("order-"), 120);
	wait_alias(p, "products");
	wait_alias(p, "orders");

	/* the PostgreSQL numbers are read every few seconds */
	deadline = h_now() + 30;
	for (;;) {
		r = get(port, "/metrics");
		cr_assert_eq(r.status, 200, "/metrics: HTTP %ld", r.status);
		if (numbers_settled(r.body, &products) && numbers_settled(r.body, &orders))
			break;
		cr_assert(h_now() < deadline, "head and lag of /metrics not settled 30s after the catch-up:\n%.4000s",
			  r.body);
		h_http_free(&r);
		h_sleep(0.5);
	}
	assert_numbers(r.body, &products);
	assert_numbers(r.body, &orders);
	cr_assert_gt(need_metric(r.body, "process_resident_memory_bytes"), 0);
	cr_assert_gt(need_metric(r.body, "process_open_fds"), 0);
	cr_assert_not_null(strstr(r.body, "# TYPE esbridge_bulk_latency_seconds histogram"), "no histogram TYPE");
	h_http_free(&r);

	/* following, idle at the head: 200 (polled: a ping slowed past 8 s by a loaded machine says 503) */
	deadline = h_now() + 30;
	for (;;) {
		r = get(port, "/health");
		if (r.status == 200)
			break;
		cr_assert(h_now() < deadline, "/health while following: HTTP %ld %s (log: %s)", r.status, r.body,
			  p->log);
		h_http_free(&r);
		h_sleep(0.5);
	}
	cr_assert_not_null(strstr(r.body, "\"status\":\"ok\""), "/health body: %s", r.body);
	cr_assert_null(strstr(r.body, "reason"), "/health 200 with a reason: %s", r.body);
	h_http_free(&r);
	r = get(port, "/metrics");
	cr_assert_eq(need_metric(r.body, "esbridge_healthy"), 1, "esbridge_healthy is not 1 beside /health 200");
	h_http_free(&r);
	r = get(port, "/nope");
	cr_assert_eq(r.status, 404, "/nope: HTTP %ld", r.status);
	h_http_free(&r);
	h_assert_docs_match_oracle("products");
	h_assert_docs_match_oracle("orders");

	/* the node frozen: 503 with a reason within a tick (5 s) and 10 s without an answer */
	h_services_ok("es-freeze", "90", 30);
	t0 = h_now();
	deadline = t0 + 40;
	for (;;) {
		r = get(port, "/health");
		if (r.status == 503)
			break;
		cr_assert_eq(r.status, 200, "/health: HTTP %ld %s", r.status, r.body);
		cr_assert(h_now() < deadline, "/health still 200 %.0fs after the node froze (log: %s)", h_now() - t0,
			  p->log);
		h_http_free(&r);
		h_sleep(0.5);
	}
	cr_log_info("/health 503 %.1fs after the freeze: %s", h_now() - t0, r.body);
	cr_assert_not_null(strstr(r.body, "\"status\":\"unhealthy\""), "/health body: %s", r.body);
	cr_assert_not_null(strstr(r.body, "\"reason\":\""), "/health has no reason: %s", r.body);
	cr_assert_not_null(strstr(r.body, "Elasticsearch"), "the reason does not name Elasticsearch: %s", r.body);
	h_http_free(&r);
	r = get(port, "/metrics");
	cr_assert_eq(r.status, 200, "/metrics while the node is frozen: HTTP %ld", r.status);
	cr_assert_eq(need_metric(r.body, "esbridge_healthy"), 0);
	h_http_free(&r);

	/* resumed: 200 again */
	h_services_ok("es-thaw", NULL, 30);
	t0 = h_now();
	deadline = t0 + 40;
	for (;;) {
		r = get(port, "/health");
		if (r.status == 200)
			break;
		cr_assert(h_now() < deadline, "/health still %ld %.0fs after the node resumed: %s", r.status,
			  h_now() - t0, r.body);
		h_http_free(&r);
		h_sleep(0.5);
	}
	cr_log_info("/health 200 %.1fs after the thaw", h_now() - t0);
	h_http_free(&r);

	h_stop(p, 30);
	h_end();
}

/*
 * One of two nodes cannot be reached: a ping a second (stats-interval 1)
 * goes to it now and then (when its time set aside is over), fails, and the
 * next one goes to the other node and succeeds. A failed ping alone is not
 * Elasticsearch down (10 s of failures are): /health stays 200 throughout.
 */
Test(operate, a_failed_ping_alone_keeps_health, .timeout = 240)
{
	char es[512];
	const char *const args[] = { "run", "--projection", "products", "--es", es, "--metrics-address",
				     "127.0.0.1:0", "--stats-interval", "1", "--poll-interval", "0.2", NULL };
	struct h_proc *p;
	struct h_http r;
	long polls = 0, set_aside;
	double deadline;
	int port;

	h_begin();
	h_insert_generated_products(1, 100);
	snprintf(es, sizeof(es), "http://127.0.0.1:%d,%s", h_free_port(), getenv("ESBRIDGE_ES"));
	p = h_spawn(0, args);
	port = metrics_port(p);
	wait_caught_up(p, "products", last_pos_of("product-"), 120);
	wait_alias(p, "products");
	/* until the dead node has failed three more pings (set aside 1, 2, 4, ... s each time) */
	set_aside = h_output_count(p, "set aside");
	deadline = h_now() + 150;
	while (h_output_count(p, "set aside") < set_aside + 3) {
		r = get(port, "/health");
		cr_assert_eq(r.status, 200, "/health after %ld polls and %ld failed pings: HTTP %ld %s (log: %s)",
			     polls, h_output_count(p, "set aside") - set_aside, r.status, r.body, p->log);
		h_http_free(&r);
		polls++;
		cr_assert(h_now() < deadline, "the dead node was not tried 3 times in 150s (log: %s)", p->log);
		h_sleep(0.1);
	}
	cr_log_info("/health 200 in %ld polls over 3 failed pings", polls);
	h_stop(p, 30);
	h_end();
}

/* ---- 4. wait --------------------------------------------------------------------- */

/*
 * One lost connection of the monitor is no outage either: its query fails,
 * the next tick connects again, and /health stays 200 meanwhile (it says
 * PostgreSQL cannot be reached only after 10 s without an answer).
 */
Test(operate, a_lost_monitor_connection_alone_keeps_health, .timeout = 120)
{
	const char *const args[] = { "run", "--projection", "products", "--metrics-address", "127.0.0.1:0",
				     "--stats-interval", "1", "--poll-interval", "0.2", NULL };
	char like[64];
	const char *params[1] = { like };
	struct h_proc *p;
	struct h_http r;
	long long ended = 0;
	long polls = 0;
	double until;
	int port;

	h_begin();
	h_insert_generated_products(1, 100);
	p = h_spawn(0, args);
	port = metrics_port(p);
	wait_caught_up(p, "products", last_pos_of("product-"), 120);
	wait_alias(p, "products");
	H_EVENTUALLY(health_is(port, 200), 30, "/health never said 200 (log: %s)", p->log);
	snprintf(like, sizeof(like), "esbridge-monitor %% pid %ld", (long)p->pid);
	until = h_now() + 30;
	while (ended < 1) {
		ended = h_query_ll(NULL, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
					 " WHERE application_name LIKE $1", 1, params, 0);
		cr_assert(h_now() < until, "no monitor connection to end within 30s (log: %s)", p->log);
		h_sleep(0.05);
	}
	/* the monitor notices at its next query (every second), then connects again at the tick after */
	H_EVENTUALLY(h_output_count(p, "monitor:") > 0, 30, "the monitor never noticed (log: %s)", p->log);
	until = h_now() + 5;
	while (h_now() < until) {
		r = get(port, "/health");
		cr_assert_eq(r.status, 200, "/health after the monitor's connection ended (poll %ld): HTTP %ld %s"
			     " (log: %s)", polls, r.status, r.body, p->log);
		h_http_free(&r);
		polls++;
		h_sleep(0.1);
	}
	/* and it is back: a connection named for the monitor again */
	H_EVENTUALLY(h_query_ll(NULL, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1", 1,
				params, 0) > 0, 30, "the monitor did not connect again (log: %s)", p->log);
	cr_log_info("/health 200 in %ld polls after the monitor's connection ended", polls);
	h_stop(p, 30);
	h_end();
}

Test(operate, wait_command, .timeout = 180)
{
	const char *const run[] = { "run", "--projection", "products", "--poll-interval", "5", NULL };
	struct h_proc *p;
	char position[32], *out;
	int64_t pos;
	double t0, took;
	int code;

	h_begin();
	h_insert_generated_products(1, 3000);
	p = h_spawn(0, run);
	wait_caught_up(p, "products", 3000, H_LONG);

	/* an append, then wait at once: 0, and the checkpoint covers it (NOTIFY wakes the daemon) */
	pos = h_event(NULL, "product-w1", "ProductCreated",
		      "{\"product_id\": \"w1\", \"name\": \"waited for\", \"price\": 9.99}");
	snprintf(position, sizeof(position), "%" PRId64, pos);
	{
		const char *const args[] = { "wait", "--projection", "products", "--position", position,
					     "--timeout", "30", NULL };
		t0 = h_now();
		code = cli(NULL, args, 60, &out);
		took = h_now() - t0;
	}
	cr_assert_eq(code, 0, "wait exited %d after %.2fs:\n%s", code, took, out);
	free(out);
	cr_assert_geq(h_checkpoint_pos("products"), pos, "wait returned before the checkpoint passed %" PRId64, pos);
	cr_assert_lt(took, 10.0, "wait took %.2fs", took);
	cr_log_info("wait returned after %.3fs", took);

	/* no daemon: the next event is never applied; exit 1 after --timeout */
	h_stop(p, 30);
	pos = h_event(NULL, "product-w2", "ProductCreated",
		      "{\"product_id\": \"w2\", \"name\": \"never\", \"price\": 1}");
	snprintf(position, sizeof(position), "%" PRId64, pos);
	{
		const char *const args[] = { "wait", "--projection", "products", "--position", position,
					     "--timeout", "1.5", NULL };
		t0 = h_now();
		code = cli(NULL, args, 60, &out);
		took = h_now() - t0;
	}
	cr_assert_eq(code, 1, "wait without a daemon exited %d:\n%s", code, out);
	cr_assert_geq(took, 1.5, "wait gave up after %.2fs, before its --timeout", took);
	cr_assert_lt(took, 15.0, "wait gave up after %.2fs", took);
	cr_assert_not_null(strstr(out, "timeout"), "no 'timeout' in:\n%s", out);
	free(out);
	/* an event already applied: 0 at once, daemon or not */
	{
		const char *const args[] = { "wait", "--projection=products", "--position=1", "--timeout=0", NULL };
		code = cli(NULL, args, 60, &out);
		cr_assert_eq(code, 0, "wait for position 1 exited %d:\n%s", code, out);
		free(out);
	}

	/* usage errors: 2, one line */
	{
		static const char *const bad[][8] = {
			{ "wait", "--position", "1", NULL },
			{ "wait", "--projection", "nope", "--position", "1", NULL },
			{ "wait", "--projection", "products", "--projection", "orders", "--position", "1", NULL },
			{ "wait", "--projection", "products", NULL },
			{ "wait", "--projection", "products", "--position", "abc", NULL },
			{ "wait", "--projection", "products", "--position", "0", NULL },
			{ "wait", "--projection", "products", "--position", "1", "--timeout", "-1", NULL },
			{ "wait", "--projection", "products", "--position", "1", "--timeout", "soon", NULL },
			{ "wait", "--projection", "products", "--position", NULL },
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			code = cli(NULL, bad[i], 30, &out);
			cr_assert_eq(code, 2, "usage error %zu: exit %d, want 2:\n%s", i, code, out);
			cr_assert_eq(line_count(out), 1, "usage error %zu: want one line:\n%s", i, out);
			free(out);
		}
	}
	h_end();
}

/* ---- 5. standby ------------------------------------------------------------------ */

/* The oldest and newest modification times of DIR's files (ns since the epoch); false when none. */
static bool dump_times(const char *dir, long long *oldest, long long *newest, long *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	cr_assert_not_null(d, "opendir %s: %s", dir, strerror(errno));
	*count = 0;
	*oldest = *newest = 0;
	while ((e = readdir(d))) {
		char path[1024];
		struct stat st;
		long long t;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
		t = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
		if (!*count || t < *oldest)
			*oldest = t;
		if (!*count || t > *newest)
			*newest = t;
		(*count)++;
	}
	closedir(d);
	return *count > 0;
}

static long long wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * The line of `esbridge status` output `out` that names the owner of `proj`
 * ("PROJ...: owned by ..."), malloc'd; NULL when there is none. (The output
 * may hold log lines of daemons writing to the same log.)
 */
static char *owner_line(const char *out, const char *proj)
{
	size_t n = strlen(proj);

	for (const char *line = out; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		char *l;
		if (strncmp(line, proj, n) != 0 || (line[n] != ' ' && line[n] != ':'))
			continue;
		l = strndup(line, len);
		cr_assert_not_null(l);
		if (strstr(l, ": owned by "))
			return l;
		free(l);
	}
	return NULL;
}

/* `esbridge status` names `pid` (on this host) as the owner of both projections. */
static void assert_owner(pid_t pid, const char *when)
{
	static const char *const projs[] = { "products", "orders", NULL };
	char *out, want[64];
	int code;
	const char *const args[] = { "status", NULL };

	code = cli(NULL, args, 30, &out);
	cr_assert_eq(code, 0, "%s: status exited %d:\n%s", when, code, out);
	snprintf(want, sizeof(want), " pid %d", (int)pid);
	for (int i = 0; projs[i]; i++) {
		char *line = owner_line(out, projs[i]);
		cr_assert_not_null(line, "%s: status does not name the owner of %s:\n%s", when, projs[i], out);
		cr_assert_not_null(strstr(line, ": owned by esbridge "), "%s: '%s' names no esbridge process", when,
				   line);
		cr_assert(strlen(line) > strlen(want) && !strcmp(line + strlen(line) - strlen(want), want),
			  "%s: '%s' does not name pid %d:\n%s", when, line, (int)pid, out);
		free(line);
	}
	cr_assert_not_null(strstr(out, "LAG"), "%s: no LAG column:\n%s", when, out);
	free(out);
}

Test(operate, standby_takes_over_after_sigkill, .timeout = 400)
{
	char dir_a[512], dir_b[512];
	const char *args_a[] = { "run", "--dump-bulk", dir_a, "--batch-size", "500", "--bulk-actions", "200",
				 "--poll-interval", "0.2", NULL };
	const char *args_b[] = { "run", "--dump-bulk", dir_b, "--batch-size", "500", "--bulk-actions", "200",
				 "--poll-interval", "0.2", NULL };
	struct h_proc *a, *b;
	long long kill_before, kill_after, a_old, a_new, b_old, b_new;
	long a_n, b_n;
	int64_t mid, last;
	int next_p = 20001, next_o = 1;
	double t_kill, t0;

	h_begin();
	test_dir("standby-a", dir_a, sizeof(dir_a));
	test_dir("standby-b", dir_b, sizeof(dir_b));
	for (int from = 1; from <= 20000; from += 5000) {
		h_insert_generated_products(from, from + 4999);
		h_insert_generated_orders(next_o, next_o + 749);
		next_o += 750;
	}

	a = h_spawn(0, args_a);
	/* a owns both projections before b starts */
	H_EVENTUALLY(h_checkpoint_pos("products") > 0 && h_checkpoint_pos("orders") > 0, H_LONG,
		     "no checkpoints from the first instance (log: %s)", a->log);
	b = h_spawn(0, args_b);
	/* load: events keep coming while a works and b stands by */
	t0 = h_now();
	while (h_output_count(b, "another esbridge process owns it; standing by") < 2 || h_now() - t0 < 1.0) {
		cr_assert(h_now() - t0 < 60, "the second instance does not stand by (log: %s)", b->log);
		cr_assert(!h_wait(a, 0), "the first instance exited (log: %s)", a->log);
		cr_assert(!h_wait(b, 0), "the second instance exited (log: %s)", b->log);
		h_insert_generated_products(next_p, next_p + 499);
		next_p += 500;
		h_insert_generated_orders(next_o, next_o + 99);
		next_o += 100;
		h_sleep(0.1);
	}
	assert_owner(a->pid, "before the kill");

	/* SIGKILL right after a commit: a has events in hand */
	h_insert_generated_products(next_p, next_p + 999);
	next_p += 1000;
	h_insert_generated_orders(next_o, next_o + 199);
	next_o += 200;
	kill_before = wall_ns();
	h_kill(a);
	kill_after = wall_ns();
	t_kill = h_now();
	cr_assert_eq(h_term_signal(a), SIGKILL);
	mid = h_checkpoint_pos("products");
	last = last_pos_of("product-");
	cr_log_info("killed the owner at products checkpoint %" PRId64 " of %" PRId64, mid, last);
	cr_assert_lt(mid, last, "the owner had caught up before the kill: nothing was in hand");

	wait_output(b, "products: took over", 1, 30);
	wait_output(b, "orders: took over", 1, 30);
	cr_log_info("took over %.2fs after the kill", h_now() - t_kill);
	/* more events after the takeover */
	h_insert_generated_products(next_p, next_p + 999);
	h_insert_generated_orders(next_o, next_o + 199);
	wait_caught_up(b, "products", last_pos_of("product-"), 180);
	wait_caught_up(b, "orders", last_pos_of("order-"), 180);
	wait_alias(b, "products");
	wait_alias(b, "orders");
	assert_owner(b->pid, "after the takeover");

	/* one writer at a time: a wrote only before its death, b only after it */
	cr_assert(dump_times(dir_a, &a_old, &a_new, &a_n), "the first instance wrote no _bulk body");
	cr_assert(dump_times(dir_b, &b_old, &b_new, &b_n), "the standby wrote no _bulk body");
	cr_log_info("dumps: %ld of the killed owner, %ld of the standby; standby's first %.3fs after the kill",
		    a_n, b_n, (double)(b_old - kill_after) / 1e9);
	cr_assert_leq(a_new, kill_after, "the killed owner wrote a body %.3fs after its kill",
		      (double)(a_new - kill_after) / 1e9);
	cr_assert_geq(b_old, kill_before, "the standby wrote a body %.3fs before the owner's kill",
		      (double)(kill_before - b_old) / 1e9);
	cr_assert_lt(a_new, b_old, "the writers overlap");
	cr_assert_eq(h_dead_letter_count(), 0, "dead letters");

	h_assert_docs_match_oracle("products");
	h_assert_docs_match_oracle("orders");
	h_stop(b, 30);
	h_end();
}

/* ---- 6. drain timeout ------------------------------------------------------------ */

Test(operate, drain_timeout_with_a_frozen_node, .timeout = 300)
{
	const char *const args[] = { "run", "--projection", "products", "--metrics-address", "127.0.0.1:0",
				     "--drain-timeout", "2", "--poll-interval", "0.2", "--bulk-actions", "200", NULL };
	struct h_proc *p;
	struct h_http r;
	int64_t before, last;
	uint64_t txid;
	int64_t cp;
	double t0, took, deadline;
	int port;

	h_begin();
	h_insert_generated_products(1, 3000);
	p = h_spawn(0, args);
	port = metrics_port(p);
	wait_caught_up(p, "products", 3000, H_LONG);
	wait_alias(p, "products");
	before = h_checkpoint_pos("products");

	/* requests in flight to a frozen node */
	h_services_ok("es-freeze", "120", 30);
	h_insert_generated_products(3001, 5000);
	last = last_pos_of("product-");
	deadline = h_now() + 30;
	for (;;) {
		double v = 0;
		r = get(port, "/metrics");
		if (metric(r.body, "esbridge_inflight_bytes{projection=\"products\",generation=\"1\"}", &v) && v > 0)
			break;
		cr_assert(h_now() < deadline, "no request in flight 30s after the append (log: %s)", p->log);
		h_http_free(&r);
		h_sleep(0.2);
	}
	h_http_free(&r);

	t0 = h_now();
	h_signal(p, SIGTERM);
	cr_assert(h_wait(p, 20), "no exit within 20s of SIGTERM with --drain-timeout 2 (log: %s)", p->log);
	took = h_now() - t0;
	cr_log_info("exited %.2fs after SIGTERM", took);
	cr_assert_neq(h_exit_code(p), 0, "exit 0 with requests still in flight (log: %s)", p->log);
	cr_assert_eq(h_term_signal(p), 0, "killed by signal %d (log: %s)", h_term_signal(p), p->log);
	cr_assert_geq(took, 1.5, "exited %.2fs after SIGTERM, before the drain timeout", took);
	cr_assert_eq(h_output_count(p, "drain timeout"), 1, "no 'drain timeout' line (log: %s)", p->log);

	/* nothing the node did not acknowledge is behind the checkpoint */
	cr_assert(h_checkpoint("products", &txid, &cp), "no checkpoint");
	cr_assert_eq(cp, before, "checkpoint %" PRId64 " moved past the unacknowledged events (%" PRId64 " before the"
		     " freeze, %" PRId64 " appended last)", cp, before, last);
	cr_assert_eq(txid, h_event_txid(before), "the checkpoint's transaction is not the last acknowledged one");

	h_services_ok("es-thaw", NULL, 30);
	cr_assert_eq(h_run_once((const char *const[]){ "--projection", "products", NULL }, 180), 0);
	cr_assert_eq(h_checkpoint_pos("products"), last);
	cr_assert_eq(h_dead_letter_count(), 0, "dead letters");
	h_assert_docs_match_oracle("products");
	h_end();
}
