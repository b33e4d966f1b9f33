/*
 * Unit tests of the settings (src/config.c): defaults, config_set for each
 * option type, ESBRIDGE_* variables, validation, and that no secret ever
 * shows in redacted or printed settings or in an error message.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include "esbridge/config.h"

#include "support.h"

extern char **environ;

static struct config c;
static char err[512];

/* Unsets every ESBRIDGE_* variable, so that the caller's environment
 * cannot change a test. */
static void clear_env(void)
{
	char names[64][64];
	size_t n = 0;

	for (char **e = environ; e && *e && n < 64; e++) {
		const char *eq = strchr(*e, '=');
		size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
		if (strncmp(*e, "ESBRIDGE_", 9) || len >= sizeof(names[0]))
			continue;
		memcpy(names[n], *e, len);
		names[n++][len] = '\0';
	}
	for (size_t i = 0; i < n; i++)
		unsetenv(names[i]);
}

static void setup(void)
{
	clear_env();
	config_init(&c);
	err[0] = '\0';
}

static void teardown(void)
{
	config_release(&c);
	clear_env();
	test_leak_check();
}

TestSuite(config, .init = setup, .fini = teardown);

static void expect_one_line(const char *msg)
{
	cr_expect_neq(msg[0], '\0', "empty error message");
	cr_expect_null(strchr(msg, '\n'), "error message on several lines: %s", msg);
}

/* Expects `msg` to hold every one of the NULL-terminated words. */
static void expect_mentions(const char *msg, const char *const *words)
{
	for (; *words; words++)
		cr_expect_not_null(strstr(msg, *words), "'%s' does not mention '%s'", msg, *words);
}

#define MENTIONS(msg, ...) expect_mentions((msg), (const char *const[]){ __VA_ARGS__, NULL })

/* config_set that must succeed / fail */
static void set_ok(const char *name, const char *value)
{
	err[0] = '\0';
	cr_assert_eq(config_set(&c, name, value, err, sizeof(err)), 0, "%s=%s: %s", name, value, err);
}

static void set_fails(const char *name, const char *value)
{
	err[0] = '\0';
	cr_expect_eq(config_set(&c, name, value, err, sizeof(err)), -1, "%s='%s' accepted", name, value);
	expect_one_line(err);
}

/* ------------------------------------------------------------------ */

Test(config, defaults)
{
	cr_expect_str_eq(c.pg, "");
	cr_expect_str_eq(c.es, "");
	cr_expect_str_eq(c.mappings_dir, ESBRIDGE_MAPPINGS_DIR);
	cr_expect_eq(c.batch_size, 2000);
	cr_expect_eq(c.bulk_actions, 1000);
	cr_expect_eq(c.bulk_bytes, 8388608);
	cr_expect_eq(c.inflight, 3);
	cr_expect_eq(c.poll_interval, 1.0);
	cr_expect_eq(c.request_timeout, 120.0);
	cr_expect_eq(c.retry_max, 30.0);
	cr_expect_str_eq(c.log_level, "info");
	cr_expect_str_eq(c.ca_file, "");
	cr_expect_eq(c.insecure, false);
	cr_expect_eq(c.coalesce, true);
	cr_expect_str_eq(c.dump_bulk, "");
	cr_expect_eq(c.n_projections, 0);
}

Test(config, whole_numbers_within_bounds)
{
	set_ok("batch-size", "1");
	cr_expect_eq(c.batch_size, 1);
	set_ok("batch-size", "100000");
	cr_expect_eq(c.batch_size, 100000);
	set_ok("bulk-actions", "+7");
	cr_expect_eq(c.bulk_actions, 7);
	set_ok("bulk-bytes", "4096");
	cr_expect_eq(c.bulk_bytes, 4096);
	set_ok("inflight", "64");
	cr_expect_eq(c.inflight, 64);
}

Test(config, whole_numbers_out_of_bounds)
{
	set_fails("batch-size", "0");
	MENTIONS(err, "'batch-size'", "0", "1..100000");
	set_fails("batch-size", "100001");
	MENTIONS(err, "'batch-size'", "100001");
	set_fails("batch-size", "-1");
	set_fails("bulk-bytes", "4095");
	MENTIONS(err, "'bulk-bytes'", "4096..104857600");
	set_fails("inflight", "65");
	MENTIONS(err, "'inflight'");
	cr_expect_eq(c.batch_size, 2000, "a refused value changes nothing");
	cr_expect_eq(c.bulk_bytes, 8388608);
	cr_expect_eq(c.inflight, 3);
}

Test(config, whole_numbers_that_are_not_numbers)
{
	static const char *const bad[] = {
		"abc", "", "12abc", "1.5", " 5", "5 ", "0x10x", "99999999999999999999999",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_fails("batch-size", bad[i]);
		MENTIONS(err, "'batch-size'", "not a whole number");
	}
	cr_expect_eq(c.batch_size, 2000);
}

Test(config, seconds)
{
	set_ok("poll-interval", "0.5");
	cr_expect_eq(c.poll_interval, 0.5);
	set_ok("poll-interval", "0.01");
	cr_expect_eq(c.poll_interval, 0.01);
	set_ok("request-timeout", "1e1");
	cr_expect_eq(c.request_timeout, 10.0);
	set_ok("retry-max", "3600");
	cr_expect_eq(c.retry_max, 3600.0);

	set_fails("poll-interval", "0");
	MENTIONS(err, "'poll-interval'", "seconds");
	set_fails("poll-interval", "3600.5");
	set_fails("request-timeout", "0.5");
	MENTIONS(err, "'request-timeout'");
	set_fails("retry-max", "-1");
	cr_expect_eq(c.poll_interval, 0.01, "a refused value changes nothing");
	cr_expect_eq(c.request_timeout, 10.0);
	cr_expect_eq(c.retry_max, 3600.0);
}

Test(config, seconds_that_are_not_numbers)
{
	static const char *const bad[] = { "abc", "", "5s", " 5", "nan", "inf", "-inf", "1e999" };
	double before;

	set_ok("poll-interval", "2.5");
	before = c.poll_interval;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_fails("poll-interval", bad[i]);
		MENTIONS(err, "'poll-interval'", "not a number of seconds");
	}
	cr_expect_eq(c.poll_interval, before);
	cr_expect_eq(before, 2.5);
}

Test(config, bool_words)
{
	static const char *const yes[] = { "true", "1", "yes", "on" };
	static const char *const no[] = { "false", "0", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		set_ok("insecure", yes[i]);
		cr_expect_eq(c.insecure, true, "%s", yes[i]);
		set_ok("insecure", no[i]);
		cr_expect_eq(c.insecure, false, "%s", no[i]);
	}
	set_ok("insecure", "yes");
	set_fails("insecure", "maybe");
	MENTIONS(err, "'insecure'", "maybe");
	set_fails("insecure", "");
	set_fails("insecure", "2");
	cr_expect_eq(c.insecure, true, "a refused value changes nothing");
}

Test(config, strings_are_copied_and_replaced)
{
	char url[] = "http://a:9200";

	set_ok("es", url);
	url[7] = 'X';
	cr_expect_str_eq(c.es, "http://a:9200");
	set_ok("es", "http://b:9200");
	cr_expect_str_eq(c.es, "http://b:9200");
	set_ok("log-level", "debug");
	cr_expect_str_eq(c.log_level, "debug");
	set_ok("ca-file", "/etc/ssl/ca.pem");
	cr_expect_str_eq(c.ca_file, "/etc/ssl/ca.pem");
	set_ok("pg", "");
	cr_expect_str_eq(c.pg, "");
}

Test(config, projections_are_a_list)
{
	char name[32];

	set_ok("projection", "products");
	set_ok("projection", "orders");
	set_ok("projection", "products");   /* a repeat is ignored */
	cr_assert_eq(c.n_projections, 2);
	cr_expect_str_eq(c.projections[0], "products");
	cr_expect_str_eq(c.projections[1], "orders");
	set_fails("projection", "");
	MENTIONS(err, "'projection'");

	for (int i = 2; i < CONFIG_MAX_PROJECTIONS; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		set_ok("projection", name);
	}
	cr_expect_eq(c.n_projections, CONFIG_MAX_PROJECTIONS);
	set_fails("projection", "one-too-many");
	MENTIONS(err, "'projection'", "16");
	cr_expect_eq(c.n_projections, CONFIG_MAX_PROJECTIONS);
}

Test(config, unknown_option)
{
	set_fails("batchsize", "5");
	MENTIONS(err, "unknown option", "'batchsize'");
	set_fails("", "5");
	set_fails("BATCH-SIZE", "5");
}

Test(config, has_option_is_for_options_with_a_value)
{
	cr_expect(config_has_option("batch-size"));
	cr_expect(config_has_option("es"));
	cr_expect(config_has_option("projection"));
	cr_expect_not(config_has_option("insecure"), "a bool flag takes no value");
	cr_expect_not(config_has_option("nope"));
	cr_expect_not(config_has_option(""));
}

/* ------------------------------------------------------------------ */
/* ESBRIDGE_* variables */

Test(config, env_sets_options)
{
	setenv("ESBRIDGE_BATCH_SIZE", "500", 1);
	setenv("ESBRIDGE_ES", "http://h:9200", 1);
	setenv("ESBRIDGE_PG", "host=db", 1);
	setenv("ESBRIDGE_MAPPINGS_DIR", "/srv/mappings", 1);
	setenv("ESBRIDGE_POLL_INTERVAL", "0.25", 1);
	setenv("ESBRIDGE_INSECURE", "yes", 1);
	setenv("ESBRIDGE_LOG_LEVEL", "warn", 1);
	setenv("ESBRIDGE_PROJECTION", "products,,orders,products", 1);
	setenv("ESBRIDGE_NOT_AN_OPTION", "whatever", 1);
	cr_assert_eq(config_load_env(&c, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(c.batch_size, 500);
	cr_expect_str_eq(c.es, "http://h:9200");
	cr_expect_str_eq(c.pg, "host=db");
	cr_expect_str_eq(c.mappings_dir, "/srv/mappings");
	cr_expect_eq(c.poll_interval, 0.25);
	cr_expect_eq(c.insecure, true);
	cr_expect_str_eq(c.log_level, "warn");
	cr_assert_eq(c.n_projections, 2);
	cr_expect_str_eq(c.projections[0], "products");
	cr_expect_str_eq(c.projections[1], "orders");
	/* untouched */
	cr_expect_eq(c.bulk_actions, 1000);
	cr_expect_eq(c.retry_max, 30.0);
}

Test(config, env_without_variables_changes_nothing)
{
	cr_assert_eq(config_load_env(&c, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(c.batch_size, 2000);
	cr_expect_str_eq(c.es, "");
}

Test(config, env_errors_name_the_variable)
{
	static const struct {
		const char *var, *value, *option;
	} cases[] = {
		{ "ESBRIDGE_BATCH_SIZE", "abc", "'batch-size'" },
		{ "ESBRIDGE_BATCH_SIZE", "", "'batch-size'" },
		{ "ESBRIDGE_BULK_BYTES", "1", "'bulk-bytes'" },
		{ "ESBRIDGE_REQUEST_TIMEOUT", "soon", "'request-timeout'" },
		{ "ESBRIDGE_INSECURE", "maybe", "'insecure'" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		clear_env();
		setenv(cases[i].var, cases[i].value, 1);
		err[0] = '\0';
		cr_expect_eq(config_load_env(&c, err, sizeof(err)), -1, "%s=%s accepted", cases[i].var,
			     cases[i].value);
		expect_one_line(err);
		MENTIONS(err, cases[i].var, cases[i].option);
	}
	cr_expect_eq(c.batch_size, 2000);
}

Test(config, env_too_many_projections)
{
	char list[512] = "";

	for (int i = 0; i <= CONFIG_MAX_PROJECTIONS; i++) {
		size_t n = strlen(list);
		snprintf(list + n, sizeof(list) - n, "%sp%d", i ? "," : "", i);
	}
	setenv("ESBRIDGE_PROJECTION", list, 1);
	cr_expect_eq(config_load_env(&c, err, sizeof(err)), -1);
	expect_one_line(err);
	MENTIONS(err, "ESBRIDGE_PROJECTION", "too many");
}

/* ------------------------------------------------------------------ */
/* config_validate */

static void make_valid(void)
{
	set_ok("es", "http://localhost:9200");
	set_ok("pg", "host=localhost dbname=events");
}

Test(config, a_valid_config)
{
	make_valid();
	cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
	/* credentials in the URL: from the environment only */
	setenv("ESBRIDGE_ES", "https://user:pw@es.example.com:9243/prefix", 1);
	/* a password in the conninfo: from the environment only, too */
	setenv("ESBRIDGE_PG", "postgresql://app:secret@db:5432/events?sslmode=require", 1);
	cr_assert_eq(config_load_env(&c, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
	set_ok("pg", "");   /* libpq defaults */
	cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
}

Test(config, es_is_required)
{
	set_ok("pg", "host=localhost");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1);
	expect_one_line(err);
	MENTIONS(err, "ESBRIDGE_ES");
}

Test(config, es_must_be_an_http_url)
{
	static const char *const bad[] = {
		"localhost:9200", "es.example.com", "ftp://h:21", "HTTP//h", "http://", "https://",
		"http:///path", "http://:9200", "http://h:9200/ x", "http://h:9200?pretty", "http://h#x",
		"http://h\t",
	};

	make_valid();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_ok("es", bad[i]);
		err[0] = '\0';
		cr_expect_eq(config_validate(&c, err, sizeof(err)), -1, "es='%s' accepted", bad[i]);
		expect_one_line(err);
		MENTIONS(err, "'es'");
	}
	set_ok("es", "localhost:9200");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1);
	MENTIONS(err, "http://");
}

Test(config, pg_must_be_a_conninfo)
{
	static const char *const bad[] = {
		"hostx=1",
		"host='unterminated",
		"host",
		"postgresql://h/db?nosuchparam=1",
		"host=a password=topsecret hostx=1",
		"host=a password='topsecret",
		"postgresql://app:topsecret@h/db?bogus=1",
	};

	make_valid();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_ok("pg", bad[i]);
		err[0] = '\0';
		cr_expect_eq(config_validate(&c, err, sizeof(err)), -1, "pg='%s' accepted", bad[i]);
		expect_one_line(err);
		MENTIONS(err, "'pg'");
		cr_expect_null(strstr(err, "topsecret"), "the error shows the password: %s", err);
	}
	set_ok("pg", "hostx=1");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1);
	MENTIONS(err, "hostx");
}

Test(config, pg_ports_must_be_ports)
{
	static const char *const bad[] = {
		"port=99999", "port=0", "port=abc", "host=a,b port=5432,70000", "postgresql://h:99999/db",
		"port=-1", "port=123456",
	};
	static const char *const good[] = {
		"port=5432", "host=a,b port=5432,5433", "host=a,b port=,5433", "postgresql://h:6432/db",
		"port=65535", "port=1",
	};

	make_valid();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_ok("pg", bad[i]);
		err[0] = '\0';
		cr_expect_eq(config_validate(&c, err, sizeof(err)), -1, "pg='%s' accepted", bad[i]);
		expect_one_line(err);
		MENTIONS(err, "'pg'");
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		set_ok("pg", good[i]);
		cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "pg='%s': %s", good[i], err);
	}
}

Test(config, metrics_address_needs_a_port)
{
	static const char *const bad[] = {
		"127.0.0.1", "localhost", ":9187", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536", "[::1]",
		"[::1]9187", "[]:9187", "::1",
	};
	static const char *const good[] = { "", "127.0.0.1:9187", "localhost:0", "[::1]:9187", "0.0.0.0:65535" };

	make_valid();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_ok("metrics-address", bad[i]);
		err[0] = '\0';
		cr_expect_eq(config_validate(&c, err, sizeof(err)), -1, "metrics-address='%s' accepted", bad[i]);
		expect_one_line(err);
		MENTIONS(err, "HOST:PORT");
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		set_ok("metrics-address", good[i]);
		cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "metrics-address='%s': %s", good[i], err);
	}
}

Test(config, log_level_must_be_known)
{
	make_valid();
	set_ok("log-level", "verbose");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1);
	expect_one_line(err);
	MENTIONS(err, "'log-level'", "verbose");
	set_ok("log-level", "INFO");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1);
	for (const char *const *l = (const char *const[]){ "error", "warn", "info", "debug", NULL }; *l; l++) {
		set_ok("log-level", *l);
		cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "%s: %s", *l, err);
	}
}

Test(config, bulk_actions_against_batch_size)
{
	make_valid();
	set_ok("batch-size", "1");
	set_ok("bulk-actions", "64");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
	set_ok("bulk-actions", "65");
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1);
	expect_one_line(err);
	MENTIONS(err, "'bulk-actions'");
}

/* ------------------------------------------------------------------ */
/* Secrets */

Test(config, redact_url)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "https://user:secret@h:9200/x", "https://***@h:9200/x" },
		{ "http://elastic:secret@localhost:9200", "http://***@localhost:9200" },
		{ "https://user:se@cret@h/x", "https://***@h/x" },
		{ "https://user@h", "https://***@h" },
		{ "user:secret@h:9200", "***@h:9200" },
		{ "https://h:9200/x", "https://h:9200/x" },
		/* an unencoded '/' in a password must not stop the redaction; a
		 * path holding '@' is redacted too (safe side) */
		{ "https://u:pa/ss@h:9200", "https://***@h:9200" },
		{ "https://h:9200/path@x", "https://***@x" },
		{ "", "" },
	};
	char out[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		config_redact_url(cases[i].in, out, sizeof(out));
		cr_expect_str_eq(out, cases[i].out, "%s", cases[i].in);
		cr_expect_null(strstr(out, "secret"), "%s", out);
	}
}

Test(config, redact_url_into_a_small_buffer)
{
	char out[12];

	memset(out, 'X', sizeof(out));
	config_redact_url("https://user:secret@h:9200/x", out, sizeof(out));
	cr_expect_eq(strlen(out), sizeof(out) - 1);
	cr_expect_null(strstr(out, "secret"));
	cr_expect_null(strstr(out, "user"));
}

Test(config, redact_conninfo)
{
	char out[512];

	config_redact_conninfo("host=a password=secret", out, sizeof(out));
	cr_expect_null(strstr(out, "secret"), "%s", out);
	MENTIONS(out, "host=a", "password=***");

	config_redact_conninfo("postgresql://app:secret@db:5433/events", out, sizeof(out));
	cr_expect_null(strstr(out, "secret"), "%s", out);
	MENTIONS(out, "user=app", "password=***", "host=db", "port=5433", "dbname=events");

	config_redact_conninfo("postgresql://db/events?password=secret", out, sizeof(out));
	cr_expect_null(strstr(out, "secret"), "%s", out);

	config_redact_conninfo("host=a password='secret", out, sizeof(out));
	cr_expect_null(strstr(out, "secret"), "unparsable: %s", out);

	config_redact_conninfo("", out, sizeof(out));
	cr_expect_str_eq(out, "");

	config_redact_conninfo("host=a dbname=b", out, sizeof(out));
	MENTIONS(out, "host=a", "dbname=b");
	cr_expect_null(strstr(out, "password"), "%s", out);
}

Test(config, redact_conninfo_into_a_small_buffer)
{
	for (size_t sz = 1; sz < 40; sz++) {
		char out[40];
		memset(out, 'X', sizeof(out));
		config_redact_conninfo("password=secret host=a", out, sz);
		cr_expect_lt(strlen(out), sz, "size %zu", sz);
		cr_expect_null(strstr(out, "secr"), "size %zu: %s", sz, out);
	}
}

/*
 * libpq knows other secrets than "password": every option whose dispchar
 * is "*" (in libpq 15 also sslpassword) must be masked too.
 */
Test(config, redact_conninfo_masks_sslpassword)
{
	char out[512];

	config_redact_conninfo("host=a sslpassword=keysecret", out, sizeof(out));
	cr_expect_null(strstr(out, "keysecret"), "%s", out);
}

static char *usage_text(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	config_usage(f);
	cr_assert_eq(fclose(f), 0);
	cr_assert_not_null(text);
	return text;
}

static size_t count_lines(const char *text)
{
	size_t n = 0;

	for (; *text; text++)
		n += *text == '\n';
	return n;
}

static char *print_config(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	config_print(&c, f);
	cr_assert_eq(fclose(f), 0);
	cr_assert_not_null(text);
	return text;
}

Test(config, print_shows_settings_without_secrets)
{
	char *text, *usage = usage_text();
	size_t lines = 0;

	setenv("ESBRIDGE_PG", "host=db user=app password=pgsecret dbname=events", 1);
	setenv("ESBRIDGE_ES", "https://elastic:essecret@es:9200", 1);
	setenv("ESBRIDGE_ES_API_KEY", "apikeysecret", 1);
	cr_assert_eq(config_load_env(&c, err, sizeof(err)), 0, "%s", err);
	set_ok("batch-size", "500");
	set_ok("poll-interval", "0.25");
	set_ok("projection", "products");
	set_ok("projection", "orders");
	text = print_config();

	cr_expect_null(strstr(text, "pgsecret"), "%s", text);
	cr_expect_null(strstr(text, "essecret"), "%s", text);
	cr_expect_null(strstr(text, "apikeysecret"), "%s", text);
	MENTIONS(text, "\nes = https://***@es:9200\n", "\nes-api-key = ***\n", "\nes-password = \n", "password=***", "host=db",
		 "\nbatch-size = 500\n", "\nbulk-actions = 1000\n", "\npoll-interval = 0.25\n",
		 "\ninsecure = false\n", "\nlog-level = info\n", "\nprojection = products orders\n");
	cr_expect_eq(strncmp(text, "pg = ", 5), 0, "%s", text);
	/* one "name = value" line per option, as many as --help lists */
	for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
		const char *nl = strchr(p, '\n');
		const char *eq = strstr(p, " = ");
		cr_assert_not_null(nl, "the last line has no newline: %s", p);
		cr_expect(eq && eq < nl, "not a 'name = value' line: %.*s", (int)(nl - p), p);
		lines++;
	}
	cr_expect_eq(lines, count_lines(usage), "one line per option:\n%s\nvs:\n%s", text, usage);
	free(text);
	free(usage);
}

Test(config, print_hides_a_password_it_cannot_parse)
{
	char *text;

	/* not a conninfo libpq can read: accepted as a flag, refused by validate, never printed */
	set_ok("pg", "host=db password='pgsecret");
	text = print_config();
	cr_expect_null(strstr(text, "pgsecret"), "%s", text);
	MENTIONS(text, "\nprojection = (all)\n");
	free(text);
}

Test(config, usage_lists_flags_and_variables)
{
	char *text = usage_text();

	MENTIONS(text, "--batch-size", "ESBRIDGE_BATCH_SIZE", "[2000]", "--es", "ESBRIDGE_ES",
		 "--mappings-dir", "ESBRIDGE_MAPPINGS_DIR", "--insecure", "--projection");
	free(text);
}

/* ------------------------------------------------------------------ */
/* Security: TLS, credentials from the environment or a file, compression */

/* A temporary file holding `content` (`len` bytes); its path in `path`. */
static void temp_file(char *path, size_t size, const char *content, size_t len)
{
	int fd;

	snprintf(path, size, "/tmp/esbridge-test-config-XXXXXX");
	fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp");
	cr_assert_eq(write(fd, content, len), (ssize_t)len);
	cr_assert_eq(close(fd), 0);
}

static void env_ok(const char *var, const char *value)
{
	setenv(var, value, 1);
	err[0] = '\0';
	cr_assert_eq(config_load_env(&c, err, sizeof(err)), 0, "%s=%s: %s", var, value, err);
}

static void validate_fails(const char *const *must_mention, const char *secret)
{
	err[0] = '\0';
	cr_expect_eq(config_validate(&c, err, sizeof(err)), -1, "accepted");
	expect_one_line(err);
	expect_mentions(err, must_mention);
	if (secret)
		cr_expect_null(strstr(err, secret), "the error shows the secret: %s", err);
}

#define VALIDATE_FAILS(secret, ...) validate_fails((const char *const[]){ __VA_ARGS__, NULL }, (secret))

static void validate_ok(void)
{
	err[0] = '\0';
	cr_expect_eq(config_validate(&c, err, sizeof(err)), 0, "%s", err);
}

Test(config, security_defaults)
{
	cr_expect_eq(c.compress, false, "compression is off by default (loopback measurement, README)");
	cr_expect_str_eq(c.es_user, "");
	cr_expect_str_eq(c.es_password, "");
	cr_expect_str_eq(c.es_password_file, "");
	cr_expect_str_eq(c.es_api_key, "");
	cr_expect_str_eq(c.es_api_key_file, "");
	cr_expect_eq(c.insecure, false, "TLS verification is on by default");
	set_ok("compress", "true");
	cr_expect_eq(c.compress, true);
	cr_expect_not(config_has_option("compress"), "--compress is a switch");
	cr_expect(config_is_switch("compress"));
}

Test(config, secrets_are_refused_as_flags)
{
	static const char *const secret_opts[][2] = {
		{ "es-password", "ESBRIDGE_ES_PASSWORD" },
		{ "es-api-key", "ESBRIDGE_ES_API_KEY" },
	};

	for (size_t i = 0; i < 2; i++) {
		char file_flag[64];
		snprintf(file_flag, sizeof(file_flag), "--%s-file", secret_opts[i][0]);
		/* the flag parser must take the value along, not read it as a command */
		cr_expect(config_has_option(secret_opts[i][0]), "%s", secret_opts[i][0]);
		set_fails(secret_opts[i][0], "flagsecret");
		MENTIONS(err, secret_opts[i][0], secret_opts[i][1], file_flag);
		cr_expect_null(strstr(err, "flagsecret"), "the error shows the secret: %s", err);
	}
	cr_expect_str_eq(c.es_password, "", "a refused value changes nothing");
	cr_expect_str_eq(c.es_api_key, "");
	/* the file and the user name are no secrets: flags are fine */
	set_ok("es-password-file", "/run/secrets/es-password");
	set_ok("es-api-key-file", "/run/secrets/es-api-key");
	set_ok("es-user", "indexer");
	cr_expect_str_eq(c.es_user, "indexer");
}

Test(config, credentials_in_an_es_flag_are_refused)
{
	static const char *const bad[] = {
		"https://user:urlsecret@h:9200", "http://user:urlsecret@h", "https://urlsecret@h",
		"https://u:url/secret@h:9200", "user:urlsecret@h:9200",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_fails("es", bad[i]);
		MENTIONS(err, "'--es'", "ESBRIDGE_ES_USER", "ESBRIDGE_ES_PASSWORD", "--es-password-file");
		cr_expect_null(strstr(err, "secret"), "the error shows the URL: %s", err);
	}
	cr_expect_str_eq(c.es, "");
	set_ok("es", "https://es.example.com:9243/prefix");
	/* the environment may carry them */
	env_ok("ESBRIDGE_ES", "https://user:envsecret@h:9200");
	cr_expect_str_eq(c.es, "https://user:envsecret@h:9200");
	validate_ok();
}

Test(config, secrets_come_from_the_environment)
{
	env_ok("ESBRIDGE_ES", "https://h:9200");
	env_ok("ESBRIDGE_ES_USER", "indexer");
	env_ok("ESBRIDGE_ES_PASSWORD", "pw from env");
	cr_expect_str_eq(c.es_user, "indexer");
	cr_expect_str_eq(c.es_password, "pw from env");
	validate_ok();
	clear_env();
	config_release(&c);
	config_init(&c);
	env_ok("ESBRIDGE_ES", "https://h:9200");
	env_ok("ESBRIDGE_ES_API_KEY", "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==");
	cr_expect_str_eq(c.es_api_key, "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==");
	validate_ok();
}

Test(config, auth_settings_must_agree)
{
	char path[64];

	temp_file(path, sizeof(path), "filesecret\n", 11);
	set_ok("es", "https://h:9200");

	env_ok("ESBRIDGE_ES_PASSWORD", "envsecret");
	VALIDATE_FAILS("envsecret", "no user", "ESBRIDGE_ES_USER");
	set_ok("es-user", "indexer");
	validate_ok();
	set_ok("es-password-file", path);
	VALIDATE_FAILS("envsecret", "ESBRIDGE_ES_PASSWORD", "'es-password-file'", "keep one");
	unsetenv("ESBRIDGE_ES_PASSWORD");
	config_release(&c);
	config_init(&c);
	set_ok("es", "https://h:9200");
	set_ok("es-user", "indexer");
	VALIDATE_FAILS(NULL, "'es-user'", "ESBRIDGE_ES_PASSWORD", "--es-password-file");
	set_ok("es-password-file", path);
	validate_ok();
	set_ok("es-user", "in:dexer");
	VALIDATE_FAILS("filesecret", "'es-user'", "':'");
	set_ok("es-user", "indexer");

	/* basic auth and an API key: one or the other */
	set_ok("es-api-key-file", path);
	VALIDATE_FAILS("filesecret", "basic auth", "API key");
	set_ok("es-user", "");
	set_ok("es-password-file", "");
	validate_ok();
	env_ok("ESBRIDGE_ES_API_KEY", "envkeysecret");
	VALIDATE_FAILS("envkeysecret", "ESBRIDGE_ES_API_KEY", "'es-api-key-file'", "keep one");
	set_ok("es-api-key-file", "");
	validate_ok();

	/* an API key goes into a header: no control character */
	env_ok("ESBRIDGE_ES_API_KEY", "key\r\nX-Injected: envkeysecret");
	VALIDATE_FAILS("envkeysecret", "ESBRIDGE_ES_API_KEY", "control character");
	unsetenv("ESBRIDGE_ES_API_KEY");
	config_release(&c);
	config_init(&c);

	/* credentials in the URL and elsewhere too */
	env_ok("ESBRIDGE_ES", "https://u:urlsecret@h:9200");
	set_ok("es-api-key-file", path);
	VALIDATE_FAILS("urlsecret", "'es' URL", "credentials");
	cr_assert_eq(unlink(path), 0);
}

Test(config, secret_files_are_read_at_start)
{
	static const struct {
		const char *content;
		size_t len;
		const char *want; /* NULL: refused */
		const char *why;
	} cases[] = {
		{ "s3cret\n", 7, "s3cret", NULL },
		{ "s3cret", 6, "s3cret", NULL },
		{ "s3cret\r\n", 8, "s3cret", NULL },
		{ "with spaces and :@/\n", 20, "with spaces and :@/", NULL },
		{ "", 0, NULL, "empty" },
		{ "\n", 1, NULL, "empty" },
		{ "s3cret\nline2\n", 13, NULL, "one line" },
		{ "s3cret\n\n", 8, NULL, "one line" },
		{ "s3c\0ret\n", 8, NULL, "one line" },
	};
	char path[64], *secret;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;
		temp_file(path, sizeof(path), cases[i].content, cases[i].len);
		err[0] = '\0';
		secret = NULL;
		rc = config_read_secret("es-password-file", path, &secret, err, sizeof(err));
		if (cases[i].want) {
			cr_expect_eq(rc, 0, "case %zu: %s", i, err);
			cr_expect_str_eq(secret ? secret : "(null)", cases[i].want, "case %zu", i);
		} else {
			cr_expect_eq(rc, -1, "case %zu accepted", i);
			cr_expect_null(secret);
			expect_one_line(err);
			MENTIONS(err, "'es-password-file'", path, cases[i].why);
			cr_expect_null(strstr(err, "s3c"), "the error shows the content: %s", err);
		}
		config_free_secret(secret);
		cr_assert_eq(unlink(path), 0);
	}

	/* unreadable: a clear error at validation, before anything starts */
	set_ok("es", "https://h:9200");
	set_ok("es-user", "indexer");
	set_ok("es-password-file", "/nonexistent/es-password");
	VALIDATE_FAILS(NULL, "'es-password-file'", "/nonexistent/es-password", "No such file");
	set_ok("es-user", "");
	set_ok("es-password-file", "");
	set_ok("es-api-key-file", "/nonexistent/es-api-key");
	VALIDATE_FAILS(NULL, "'es-api-key-file'", "/nonexistent/es-api-key");
	set_ok("es-api-key-file", "");
	temp_file(path, sizeof(path), "", 0);
	set_ok("es-api-key-file", path);
	VALIDATE_FAILS(NULL, "'es-api-key-file'", "empty");
	cr_assert_eq(unlink(path), 0);
}

Test(config, ca_file_must_be_readable)
{
	char path[64];

	set_ok("es", "https://h:9200");
	set_ok("ca-file", "/nonexistent/ca.pem");
	VALIDATE_FAILS(NULL, "'ca-file'", "/nonexistent/ca.pem", "No such file");
	temp_file(path, sizeof(path), "-----BEGIN CERTIFICATE-----\n", 28);
	set_ok("ca-file", path);
	validate_ok();
	cr_assert_eq(unlink(path), 0);
}

Test(config, print_masks_the_secrets)
{
	char *text;

	env_ok("ESBRIDGE_ES_USER", "indexer");
	env_ok("ESBRIDGE_ES_PASSWORD", "printsecret");
	set_ok("es-api-key-file", "/run/secrets/key");
	text = print_config();
	cr_expect_null(strstr(text, "printsecret"), "%s", text);
	MENTIONS(text, "\nes-user = indexer\n", "\nes-password = ***\n", "\nes-password-file = \n",
		 "\nes-api-key = \n", "\nes-api-key-file = /run/secrets/key\n", "\ncompress = false\n");
	free(text);
}

Test(config, pg_password_refused_as_a_flag)
{
	set_fails("pg", "host=db user=app password=hunter2");
	expect_one_line(err);
	MENTIONS(err, "--pg", "PGPASSWORD");
	cr_expect_null(strstr(err, "hunter2"), "%s", err);
	set_fails("pg", "postgresql://app:hunter2@db/events");
	cr_expect_null(strstr(err, "hunter2"), "%s", err);
	/* without a password it is fine */
	set_ok("pg", "postgresql://app@db/events");
}

/* Every secret libpq knows is refused on argv, as it is masked when printed. */
Test(config, pg_sslpassword_refused_as_a_flag)
{
	set_fails("pg", "host=db sslkey=/etc/key.pem sslpassword=keysecret");
	MENTIONS(err, "--pg");
	cr_expect_null(strstr(err, "keysecret"), "%s", err);
	cr_expect_str_eq(c.pg, "", "a refused value changes nothing");
	set_fails("pg", "postgresql://db/events?sslpassword=keysecret");
	cr_expect_null(strstr(err, "keysecret"), "%s", err);
	/* from the environment it is fine */
	env_ok("ESBRIDGE_PG", "host=db sslpassword=keysecret");
	cr_expect_str_eq(c.pg, "host=db sslpassword=keysecret");
}

/* A file: name = value lines; a list's values are comma-separated and trimmed. */
Test(config, file_sets_options_and_errors_name_the_line)
{
	static const char good[] = "# settings\n\nbatch-size = 500\nprojection = products , orders,,products\n"
				   "es = \"http://h:9200\"\n";
	static const char bad[] = "projection = a\nprojection = b, ,c\nbatch-size = 1\n";
	char path[64], where[80];

	temp_file(path, sizeof(path), good, sizeof(good) - 1);
	cr_assert_eq(config_load_file(&c, path, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(c.batch_size, 500);
	cr_expect_str_eq(c.es, "http://h:9200");
	cr_assert_eq(c.n_projections, 2);
	cr_expect_str_eq(c.projections[0], "products");
	cr_expect_str_eq(c.projections[1], "orders");
	cr_assert_eq(unlink(path), 0);

	temp_file(path, sizeof(path), bad, sizeof(bad) - 1);
	err[0] = '\0';
	cr_expect_eq(config_load_file(&c, path, err, sizeof(err)), -1, "an empty list value was accepted");
	expect_one_line(err);
	snprintf(where, sizeof(where), "%s:2: ", path);
	MENTIONS(err, where, "'projection'");
	cr_expect_eq(c.batch_size, 500, "a line after the error was applied");
	cr_assert_eq(unlink(path), 0);
}

/* --help shows the secrets that are never flags as such, not as --NAME */
Test(config, usage_shows_no_flag_for_environment_secrets)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	config_usage(f);
	cr_assert_eq(fclose(f), 0);
	cr_expect_null(strstr(text, "--es-password "), "--es-password shown as a flag:\n%s", text);
	cr_expect_null(strstr(text, "--es-api-key "), "--es-api-key shown as a flag:\n%s", text);
	cr_expect_not_null(strstr(text, "(no flag)          ESBRIDGE_ES_PASSWORD "), "%s", text);
	cr_expect_not_null(strstr(text, "(no flag)          ESBRIDGE_ES_API_KEY "), "%s", text);
	cr_expect_not_null(strstr(text, "--es-password-file ESBRIDGE_ES_PASSWORD_FILE"), "%s", text);
	free(text);
}
