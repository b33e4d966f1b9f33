/*
 * HTTPS, authentication and the transport, for real: nginx (scripts/tls-proxy
 * run) with a throwaway CA's certificate and basic auth (or an API key) in
 * front of the real search node, and the real daemon talking to it.
 *
 *   - a certificate from an unknown CA is refused, with an error that says
 *     certificate verification failed; the right --ca-file works end to end
 *     (the documents, read from the node directly, equal the SQL oracle);
 *   - --insecure works without a CA and says so at start;
 *   - a wrong password fails with a clear 401 error, at start and in the
 *     middle of a run, where nothing is dead-lettered and the checkpoint
 *     does not move until the password is right again;
 *   - an API key from a file works, a wrong one is refused;
 *   - gzip bodies and reused connections, as nginx's access log shows them;
 *   - a canary password never shows in any output (run, check-config,
 *     status, refused flags).
 *
 * nginx is started by each test as a child (one process, master_process
 * off, dies with the test) on a free port, with its files under the build
 * folder (build/tests/tls-proxy), and killed at the end of the test.
 */
#define _XOPEN_SOURCE 700 /* realpath */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <curl/curl.h>

#include "harness.h"

#define ALIAS "products"
#define USER "esbridge"

static void suite_fini(void)
{
	h_end();
}

TestSuite(tls, .fini = suite_fini);

/* ---- helpers --------------------------------------------------------------- */

/* A string no program prints unless it leaks a secret. */
static void make_canary(char *out, size_t size, const char *what)
{
	unsigned char r[8];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	cr_assert(fd >= 0 && read(fd, r, sizeof(r)) == (ssize_t)sizeof(r), "/dev/urandom");
	close(fd);
	snprintf(out, size, "Cn%s%02x%02x%02x%02x%02x%02x%02x%02x", what, r[0], r[1], r[2], r[3],
		 r[4], r[5], r[6], r[7]);
}

static struct {
	char dir[PATH_MAX + 32];
	char ca[PATH_MAX + 48];
	char url[64];      /* basic auth */
	char api_url[64];  /* API key */
	int port, api_port;
	struct h_proc *p;
} px;

/* The HTTP status of GET url (0: no response), for the readiness probe. */
static long probe(const char *url)
{
	CURL *e = curl_easy_init();
	long status = 0;
	FILE *null = fopen("/dev/null", "w");

	cr_assert(e && null);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CAINFO, px.ca);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, null);
	if (curl_easy_perform(e) == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(e);
	fclose(null);
	return status;
}

/*
 * Starts nginx in front of the node: basic auth USER/`password` on px.port,
 * and when `api_key` is given, that API key on px.api_port. The secrets go
 * through the environment (not the logged spawn line). Waits until both
 * ports answer 401 (the proxy asks for credentials before anything else).
 */
static void proxy_start(const char *password, const char *api_key)
{
	char bin[PATH_MAX], env_dir[PATH_MAX + 64], env_port[48], env_api_port[48], *slash;
	double deadline;

	if (!px.dir[0]) {
		cr_assert_not_null(realpath(h_bin(), bin), "realpath %s: %s", h_bin(), strerror(errno));
		slash = strrchr(bin, '/');
		cr_assert_not_null(slash);
		*slash = '\0';
		snprintf(px.dir, sizeof(px.dir), "%s/tests/tls-proxy", bin);
		snprintf(px.ca, sizeof(px.ca), "%s/ca.pem", px.dir);
		px.port = h_free_port();
		px.api_port = h_free_port();
		snprintf(px.url, sizeof(px.url), "https://127.0.0.1:%d", px.port);
		snprintf(px.api_url, sizeof(px.api_url), "https://127.0.0.1:%d", px.api_port);
	}
	snprintf(env_dir, sizeof(env_dir), "ESBRIDGE_TLS_PROXY_DIR=%s", px.dir);
	snprintf(env_port, sizeof(env_port), "ESBRIDGE_TLS_PROXY_PORT=%d", px.port);
	snprintf(env_api_port, sizeof(env_api_port), "ESBRIDGE_TLS_PROXY_API_KEY_PORT=%d", px.api_port);
	cr_assert_eq(setenv("ESBRIDGE_TLS_PROXY_PASSWORD", password, 1), 0);
	if (api_key)
		cr_assert_eq(setenv("ESBRIDGE_TLS_PROXY_API_KEY", api_key, 1), 0);
	else
		unsetenv("ESBRIDGE_TLS_PROXY_API_KEY");
	px.p = h_spawn_ex(0, "scripts/tls-proxy",
			  (const char *const[]){ "ESBRIDGE_TLS_PROXY_USER=" USER, env_dir, env_port, env_api_port,
						 NULL },
			  (const char *const[]){ "run", NULL });
	unsetenv("ESBRIDGE_TLS_PROXY_PASSWORD");
	unsetenv("ESBRIDGE_TLS_PROXY_API_KEY");
	deadline = h_now() + 30;
	while (probe(px.url) != 401 || (api_key && probe(px.api_url) != 401)) {
		if (h_wait(px.p, 0)) {
			char *out = h_proc_output(px.p);
			cr_assert_fail("scripts/tls-proxy run exited (%d): %.1500s", h_exit_code(px.p), out);
		}
		cr_assert_lt(h_now(), deadline, "nginx does not answer on %s within 30 s (see %s/error.log)",
			     px.url, px.dir);
		h_sleep(0.05);
	}
}

static void proxy_stop(void)
{
	if (px.p && px.p->running)
		h_kill(px.p);
	px.p = NULL;
}

/* Writes `secret` + newline to DIR/NAME (mode 600); the path is in `out`. */
static void secret_file(const char *name, const char *secret, char *out, size_t size)
{
	FILE *f;

	snprintf(out, size, "%s/%s", px.dir, name);
	f = fopen(out, "w");
	cr_assert_not_null(f, "%s: %s", out, strerror(errno));
	cr_assert_eq(fchmod(fileno(f), 0600), 0);
	fprintf(f, "%s\n", secret);
	cr_assert_eq(fclose(f), 0);
}

/*
 * Runs the daemon with `env` and `args` (NULL-terminated), waits up to
 * `secs` for it to exit; returns its exit code, its output in *out
 * (malloc'd) when `out` is not NULL.
 */
static int run_esb(const char *const *env, const char *const *args, double secs, char **out)
{
	struct h_proc *p = h_spawn_ex(0, NULL, env, args);

	if (!h_wait(p, secs)) {
		char *o = h_proc_output(p);
		h_kill(p);
		cr_assert_fail("esbridge did not exit within %.0f s: %.1500s", secs, o);
	}
	if (out)
		*out = h_proc_output(p);
	return h_exit_code(p);
}

static int64_t last_position(void)
{
	return (int64_t)h_query_ll(NULL, "select coalesce(max(global_position), 0) from events", 0, NULL, 0);
}

static bool checkpoint_at(int64_t want)
{
	return h_checkpoint_pos(ALIAS) == want;
}

/* The lines of nginx's access log, malloc'd. */
static char *access_log(void)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/access.log", px.dir);
	return h_read_file(path, NULL);
}

/* True when the daemon `arg` has reported a refused request (HTTP 401). */
static bool reported_401(void *arg)
{
	return h_output_count(arg, "HTTP 401") > 0;
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* ---- tests ----------------------------------------------------------------- */

Test(tls, unknown_ca_is_refused, .timeout = 90)
{
	char pw[64], pwfile[PATH_MAX + 96], env_es[96], *out;
	int code;

	h_begin();
	make_canary(pw, sizeof(pw), "pw");
	proxy_start(pw, NULL);
	secret_file("pw-ok", pw, pwfile, sizeof(pwfile));
	snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=%s", px.url);
	h_insert_generated_products(1, 100);

	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER),
		       ARGS("run", "--once", "--es-password-file", pwfile), 60, &out);
	cr_expect_eq(code, 1, "a certificate of an unknown CA was accepted (exit %d): %s", code, out);
	cr_expect_not_null(strstr(out, "certificate verification failed"),
			   "the error does not say that certificate verification failed: %s", out);
	cr_expect_not_null(strstr(out, "--ca-file"), "the error does not name --ca-file: %s", out);
	free(out);
	cr_expect_not(h_alias_exists(ALIAS), "something was written through an unverified connection");
	cr_expect_eq(h_dead_letter_count(), 0);
	proxy_stop();
}

Test(tls, right_ca_file_works_compressed_over_reused_connections, .timeout = 150)
{
	char pw[64], pwfile[PATH_MAX + 96], env_es[96], *out, *log;
	int code, conns[256], n_conns = 0;
	long bulks = 0, gz_bulks = 0, esb_lines = 0;

	h_begin();
	make_canary(pw, sizeof(pw), "pw");
	proxy_start(pw, NULL);
	secret_file("pw-ok", pw, pwfile, sizeof(pwfile));
	snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=%s", px.url);
	h_insert_generated_products(1, 6000);

	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER),
		       ARGS("run", "--once", "--projection", ALIAS, "--ca-file", px.ca, "--es-password-file",
			    pwfile, "--compress", "--bulk-actions", "500", "--batch-size", "500"),
		       H_LONG * 2, &out);
	cr_assert_eq(code, 0, "run --once through HTTPS exited %d: %s", code, out);
	free(out);
	/* read back from the node itself, not through the proxy */
	h_assert_docs_match_oracle(ALIAS);
	cr_expect_eq(h_dead_letter_count(), 0);

	/* nginx's view: gzip bodies, few connections for many requests */
	log = access_log();
	for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
		const char *c = strstr(line, " conn=");
		int conn;
		bool seen = false;
		if (!strstr(line, "user=" USER " "))
			continue;
		esb_lines++;
		cr_assert_not_null(c, "access log line without conn=: %s", line);
		conn = atoi(c + 6);
		for (int i = 0; i < n_conns; i++)
			seen = seen || conns[i] == conn;
		if (!seen && n_conns < 256)
			conns[n_conns++] = conn;
		if (strstr(line, "/_bulk")) {
			const char *len = strstr(line, " len=");
			bulks++;
			if (strstr(line, " enc=gzip "))
				gz_bulks++;
			else /* only a body below 1 KiB goes as it is (request line and headers: < 600 bytes) */
				cr_expect(len && atol(len + 5) < 1024 + 600, "a large body went uncompressed: %s",
					  line);
		}
	}
	free(log);
	cr_expect_geq(bulks, 12, "only %ld _bulk requests in the access log", bulks);
	cr_expect_geq(gz_bulks, bulks - 3, "%ld of %ld _bulk bodies were sent gzip-compressed", gz_bulks, bulks);
	/* one connection for the setup steps, one per lane (--inflight 3); the
	 * monitor pings the node only with --metrics-address, which is off here */
	cr_expect_leq(n_conns, 4, "%d connections for %ld requests: connections are not reused", n_conns,
		      esb_lines);
	cr_expect_gt(esb_lines, 3L * n_conns, "%ld requests over %d connections", esb_lines, n_conns);
	proxy_stop();
}

Test(tls, insecure_skips_verification_and_says_so, .timeout = 90)
{
	char pw[64], pwfile[PATH_MAX + 96], env_es[96], *out, *doc;
	int code;

	h_begin();
	make_canary(pw, sizeof(pw), "pw");
	proxy_start(pw, NULL);
	secret_file("pw-ok", pw, pwfile, sizeof(pwfile));
	snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=%s", px.url);
	h_event(NULL, "product-1", "ProductCreated",
		"{\"product_id\": 1, \"name\": \"Lamp\", \"price\": 12.5}");

	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER, "ESBRIDGE_INSECURE=true"),
		       ARGS("run", "--once", "--projection", ALIAS, "--es-password-file", pwfile), 60, &out);
	cr_assert_eq(code, 0, "run --once --insecure exited %d: %s", code, out);
	cr_expect_not_null(strstr(out, "level=warn"), "no warning at start: %s", out);
	cr_expect_not_null(strstr(out, "verification is off"), "the warning does not say verification is off: %s",
			   out);
	free(out);
	doc = h_search_source(ALIAS, "1");
	cr_assert_not_null(doc, "product 1 is not in the index");
	cr_expect_not_null(strstr(doc, "Lamp"), "%s", doc);
	free(doc);
	proxy_stop();
}

Test(tls, wrong_password_fails_clearly_and_holds_the_checkpoint, .timeout = 240)
{
	char pw[64], bad[64], pwfile[PATH_MAX + 96], badfile[PATH_MAX + 96], env_es[96], *out;
	struct h_proc *d;
	int64_t first, second;
	uint64_t t;
	int64_t at;
	int code;

	h_begin();
	make_canary(pw, sizeof(pw), "pw");
	make_canary(bad, sizeof(bad), "bad");
	proxy_start(pw, NULL);
	secret_file("pw-ok", pw, pwfile, sizeof(pwfile));
	secret_file("pw-bad", bad, badfile, sizeof(badfile));
	snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=%s", px.url);
	h_insert_generated_products(1, 2000);
	first = last_position();

	/* at start: a clear error, nothing written */
	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER),
		       ARGS("run", "--once", "--ca-file", px.ca, "--es-password-file", badfile), 60, &out);
	cr_expect_eq(code, 1, "a wrong password: exit %d: %s", code, out);
	cr_expect_not_null(strstr(out, "HTTP 401"), "the error does not say HTTP 401: %s", out);
	cr_expect_not_null(strstr(out, "ESBRIDGE_ES_USER"), "the error does not say what to check: %s", out);
	free(out);
	cr_expect_not(h_checkpoint(ALIAS, &t, &at) && at > 0, "a checkpoint moved without Elasticsearch");
	cr_expect_eq(h_dead_letter_count(), 0);

	/* in the middle of a run: the proxy's password changes under the daemon */
	d = h_spawn_ex(0, NULL, ARGS(env_es, "ESBRIDGE_ES_USER=" USER),
		       ARGS("run", "--projection", ALIAS, "--ca-file", px.ca, "--es-password-file", pwfile,
			    "--retry-max", "0.5"));
	H_EVENTUALLY(checkpoint_at(first), H_LONG, "the daemon did not catch up to %" PRId64, first);
	proxy_stop();
	proxy_start(bad, NULL); /* the daemon's password is now the wrong one */
	h_insert_generated_products(2001, 3000);
	second = last_position();
	cr_assert(h_eventually(reported_401, d, 30), "the daemon does not report HTTP 401");
	h_sleep(2.0); /* several refused attempts */
	cr_expect(!h_wait(d, 0), "the daemon stopped on a 401");
	cr_expect(checkpoint_at(first), "the checkpoint moved past refused requests");
	cr_expect_eq(h_dead_letter_count(), 0, "refused requests were dead-lettered");

	/* the right password again: it goes on by itself */
	proxy_stop();
	proxy_start(pw, NULL);
	H_EVENTUALLY(checkpoint_at(second), H_LONG, "the daemon did not catch up to %" PRId64 " after the 401s",
		     second);
	h_signal(d, SIGTERM);
	cr_assert(h_wait(d, 30), "the daemon did not stop on SIGTERM");
	cr_expect_eq(h_exit_code(d), 0);
	h_assert_docs_match_oracle(ALIAS);
	cr_expect_eq(h_dead_letter_count(), 0);
	proxy_stop();
}

Test(tls, api_key_from_a_file, .timeout = 120)
{
	char pw[64], key[64], badkey[64], keyfile[PATH_MAX + 96], badfile[PATH_MAX + 96], env_es[96], *out,
		*doc;
	int code;

	h_begin();
	make_canary(pw, sizeof(pw), "pw");
	make_canary(key, sizeof(key), "key");
	make_canary(badkey, sizeof(badkey), "badkey");
	proxy_start(pw, key);
	secret_file("key-ok", key, keyfile, sizeof(keyfile));
	secret_file("key-bad", badkey, badfile, sizeof(badfile));
	snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=%s", px.api_url);
	h_event(NULL, "product-7", "ProductCreated", "{\"product_id\": 7, \"name\": \"Desk\", \"price\": 99}");

	code = run_esb(ARGS(env_es), ARGS("run", "--once", "--projection", ALIAS, "--ca-file", px.ca,
					  "--es-api-key-file", badfile), 60, &out);
	cr_expect_eq(code, 1, "a wrong API key: exit %d: %s", code, out);
	cr_expect_not_null(strstr(out, "HTTP 401"), "%s", out);
	cr_expect_not_null(strstr(out, "API key"), "the error does not say to check the API key: %s", out);
	cr_expect_null(strstr(out, badkey), "the API key shows in the output: %s", out);
	free(out);

	code = run_esb(ARGS(env_es), ARGS("run", "--once", "--projection", ALIAS, "--ca-file", px.ca,
					  "--es-api-key-file", keyfile), 60, &out);
	cr_assert_eq(code, 0, "run --once with the API key exited %d: %s", code, out);
	cr_expect_null(strstr(out, key), "the API key shows in the output: %s", out);
	free(out);
	doc = h_search_source(ALIAS, "7");
	cr_assert_not_null(doc, "product 7 is not in the index");
	cr_expect_not_null(strstr(doc, "Desk"), "%s", doc);
	free(doc);
	proxy_stop();
}

/* Fails the test when `out` holds one of the canaries. */
static void expect_clean(const char *what, const char *out, const char *const *canaries)
{
	for (; *canaries; canaries++)
		cr_expect_null(strstr(out, *canaries), "%s shows a secret:\n%.2000s", what, out);
}

Test(tls, canary_password_never_shows, .timeout = 180)
{
	char pw[64], bad[64], onargv[64], badfile[PATH_MAX + 96], env_es[96], env_url[192], argv_url[192],
		argv_pw[96], *out, *orig_es;
	const char *const canaries[] = { pw, bad, onargv, NULL };
	int code;

	h_begin();
	orig_es = strdup(getenv("ESBRIDGE_ES"));
	cr_assert_not_null(orig_es);
	make_canary(pw, sizeof(pw), "pw");
	make_canary(bad, sizeof(bad), "bad");
	/* a canary of its own for the command line (the spawn line in the test log shows argv) */
	make_canary(onargv, sizeof(onargv), "argv");
	proxy_start(pw, NULL);
	secret_file("pw-bad", bad, badfile, sizeof(badfile));
	snprintf(env_es, sizeof(env_es), "ESBRIDGE_ES=%s", px.url);
	h_insert_generated_products(1, 300);
	/* the password in the environment, set here rather than on the logged spawn line */
	cr_assert_eq(setenv("ESBRIDGE_ES_PASSWORD", pw, 1), 0);

	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER), ARGS("check-config"), 30, &out);
	cr_expect_eq(code, 0, "check-config: %s", out);
	cr_expect_not_null(strstr(out, "es-password = ***"), "check-config does not mask the password: %s", out);
	expect_clean("check-config", out, canaries);
	free(out);

	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER),
		       ARGS("run", "--once", "--projection", ALIAS, "--ca-file", px.ca, "--log-level", "debug"),
		       H_LONG, &out);
	cr_expect_eq(code, 0, "run --once: %s", out);
	expect_clean("run --once (debug)", out, canaries);
	free(out);

	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER), ARGS("status"), 30, &out);
	cr_expect_eq(code, 0, "status: %s", out);
	expect_clean("status", out, canaries);
	free(out);

	/* an unknown CA, with the password set */
	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER), ARGS("run", "--once", "--log-level", "debug"), 60,
		       &out);
	cr_expect_eq(code, 1, "%s", out);
	expect_clean("run with an unknown CA", out, canaries);
	free(out);
	unsetenv("ESBRIDGE_ES_PASSWORD");

	/* a wrong password */
	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER),
		       ARGS("run", "--once", "--ca-file", px.ca, "--es-password-file", badfile, "--log-level",
			    "debug"), 60, &out);
	cr_expect_eq(code, 1, "%s", out);
	expect_clean("run with a wrong password", out, canaries);
	free(out);

	/* credentials in a URL of the environment work, and stay hidden */
	snprintf(env_url, sizeof(env_url), "ESBRIDGE_ES=https://" USER ":%s@127.0.0.1:%d", pw, px.port);
	cr_assert_eq(setenv("ESBRIDGE_ES", env_url + strlen("ESBRIDGE_ES="), 1), 0);
	code = run_esb(NULL, ARGS("check-config"), 30, &out);
	cr_expect_eq(code, 0, "%s", out);
	expect_clean("check-config with credentials in ESBRIDGE_ES", out, canaries);
	free(out);
	code = run_esb(NULL, ARGS("run", "--once", "--projection", ALIAS, "--ca-file", px.ca, "--log-level", "debug"),
		       H_LONG, &out);
	cr_expect_eq(code, 0, "run --once with credentials in ESBRIDGE_ES: %s", out);
	expect_clean("run with credentials in ESBRIDGE_ES", out, canaries);
	free(out);
	cr_assert_eq(setenv("ESBRIDGE_ES", orig_es, 1), 0);
	free(orig_es);

	/* refused on the command line, without echoing the secret */
	snprintf(argv_pw, sizeof(argv_pw), "--es-password=%s", onargv);
	code = run_esb(ARGS(env_es, "ESBRIDGE_ES_USER=" USER), ARGS(argv_pw, "check-config"), 30, &out);
	cr_expect_eq(code, 2, "a password on the command line was accepted: exit %d", code);
	cr_expect_not_null(strstr(out, "ESBRIDGE_ES_PASSWORD"), "the error does not name the safe way: %s", out);
	expect_clean("--es-password=...", out, canaries);
	free(out);
	snprintf(argv_url, sizeof(argv_url), "https://" USER ":%s@127.0.0.1:%d", onargv, px.port);
	code = run_esb(NULL, ARGS("--es", argv_url, "check-config"), 30, &out);
	cr_expect_eq(code, 2, "credentials in --es were accepted: exit %d", code);
	cr_expect_not_null(strstr(out, "ESBRIDGE_ES_USER"), "the error does not name the safe way: %s", out);
	expect_clean("--es with credentials", out, canaries);
	free(out);
	proxy_stop();
}
