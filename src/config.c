#include "esbridge/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "esbridge/log.h"

#ifndef ESBRIDGE_MAPPINGS_DIR
#define ESBRIDGE_MAPPINGS_DIR "mappings"
#endif

enum opt_type { OPT_STRING, OPT_INT, OPT_SECONDS, OPT_BOOL, OPT_LIST };

struct option_def {
	const char *name;
	enum opt_type type;
	size_t offset;
	const char *def;
	double min, max;
	int secret;     /* false, true (masked when printed) or ENV_ONLY */
	bool reloadable; /* SIGHUP changes it in a running daemon */
	const char *help;
};

/* A secret that is also refused as a flag (argv is public): environment or file only. */
#define ENV_ONLY 2

#define OFF(f) offsetof(struct config, f)

static const struct option_def options[] = {
	{ "pg", OPT_STRING, OFF(pg), "", 0, 0, true, false,
	  "PostgreSQL conninfo or URI of the event store (empty: libpq defaults and PG* variables)" },
	{ "es", OPT_STRING, OFF(es), "", 0, 0, true, false,
	  "Elasticsearch base URL, http:// or https:// (required); several nodes of one cluster: comma-separated" },
	{ "mappings-dir", OPT_STRING, OFF(mappings_dir), ESBRIDGE_MAPPINGS_DIR, 0, 0, false, false,
	  "folder holding the NAME.json index definitions" },
	{ "batch-size", OPT_INT, OFF(batch_size), "2000", 1, 100000, false, true,
	  "events read from PostgreSQL per query" },
	{ "bulk-actions", OPT_INT, OFF(bulk_actions), "1000", 1, 100000, false, true,
	  "maximum actions in one _bulk request" },
	{ "bulk-bytes", OPT_INT, OFF(bulk_bytes), "8388608", 4096, 104857600, false, true,
	  "maximum bytes of one _bulk request body" },
	{ "inflight", OPT_INT, OFF(inflight), "3", 1, 64, false, false,
	  "_bulk requests in flight per projection" },
	{ "poll-interval", OPT_SECONDS, OFF(poll_interval), "1", 0.01, 3600, false, false,
	  "seconds between polls of the event store when no NOTIFY arrives" },
	{ "request-timeout", OPT_SECONDS, OFF(request_timeout), "120", 1, 3600, false, true,
	  "seconds one Elasticsearch request may take before it counts as failed" },
	{ "retry-max", OPT_SECONDS, OFF(retry_max), "30", 0.01, 3600, false, true,
	  "seconds: the cap of the exponential retry backoff" },
	{ "drain-timeout", OPT_SECONDS, OFF(drain_timeout), "30", 0, 3600, false, true,
	  "seconds: on SIGTERM/SIGINT, how long requests in flight may take to finish before exiting non-zero" },
	{ "metrics-address", OPT_STRING, OFF(metrics_address), "", 0, 0, false, false,
	  "HOST:PORT serving Prometheus /metrics and /health (empty: off)" },
	{ "stats-interval", OPT_SECONDS, OFF(stats_interval), "30", 1, 86400, false, true,
	  "seconds between info log lines summing up each projection (events/s, lag)" },
	{ "stall-timeout", OPT_SECONDS, OFF(stall_timeout), "120", 1, 86400, false, true,
	  "seconds without checkpoint progress, while events wait, before /health reports a stall" },
	{ "max-event-bytes", OPT_INT, OFF(max_event_bytes), "1048576", 1024, 104857600, false, true,
	  "an event whose data is larger than this many bytes goes to the dead letters" },
	{ "max-unsettled-bytes", OPT_INT, OFF(max_unsettled_bytes), "16777216", 65536, 17179869184.0, false, true,
	  "bytes of event data read but not yet settled, per projection; reading waits above it (memory stays flat whatever the backlog)" },
	{ "log-level", OPT_STRING, OFF(log_level), "info", 0, 0, false, true,
	  "error, warn, info or debug" },
	{ "ca-file", OPT_STRING, OFF(ca_file), "", 0, 0, false, false,
	  "CA bundle to verify Elasticsearch's certificate (empty: system default)" },
	{ "insecure", OPT_BOOL, OFF(insecure), "false", 0, 0, false, false,
	  "skip TLS certificate verification (logs a warning)" },
	{ "coalesce", OPT_BOOL, OFF(coalesce), "true", 0, 0, false, true,
	  "fold the events of one document in one request into one action (off: one action per event, for comparison)" },
	{ "dump-bulk", OPT_STRING, OFF(dump_bulk), "", 0, 0, false, true,
	  "folder that receives a copy of every _bulk body sent (benchmarks and debugging)" },
	{ "compress", OPT_BOOL, OFF(compress), "false", 0, 0, false, false,
	  "gzip request bodies of 1 KiB or more (Content-Encoding: gzip); worth it when the cluster is remote" },
	{ "es-user", OPT_STRING, OFF(es_user), "", 0, 0, false, false,
	  "user name for basic auth (the password: ESBRIDGE_ES_PASSWORD or --es-password-file)" },
	{ "es-password", OPT_STRING, OFF(es_password), "", 0, 0, ENV_ONLY, false,
	  "password for basic auth, from the environment or the config file ('es-password = ...'), never a flag (or --es-password-file)" },
	{ "es-password-file", OPT_STRING, OFF(es_password_file), "", 0, 0, false, false,
	  "file holding the basic auth password (one line)" },
	{ "es-api-key", OPT_STRING, OFF(es_api_key), "", 0, 0, ENV_ONLY, false,
	  "API key (the encoded id:key) sent as 'Authorization: ApiKey', from the environment or the config file ('es-api-key = ...'), never a flag (or --es-api-key-file)" },
	{ "es-api-key-file", OPT_STRING, OFF(es_api_key_file), "", 0, 0, false, false,
	  "file holding the API key (one line)" },
	{ "projection", OPT_LIST, OFF(projections), "", 0, 0, false, false,
	  "run only this projection (repeatable; default: all)" },
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const struct option_def *find_option(const char *name)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (!strcmp(options[i].name, name))
			return &options[i];
	return NULL;
}

bool config_has_option(const char *name)
{
	const struct option_def *o = find_option(name);
	return o && o->type != OPT_BOOL;
}

bool config_is_switch(const char *name)
{
	const struct option_def *o = find_option(name);
	return o && o->type == OPT_BOOL;
}

static char **str_at(struct config *c, const struct option_def *o)
{
	return (char **)(void *)((char *)c + o->offset);
}

static int set_string(struct config *c, const struct option_def *o, const char *value, char *err,
		      size_t errsz)
{
	char *copy = strdup(value);
	char **slot = str_at(c, o);

	if (!copy) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	/* conninfo and URLs may hold a password too: every secret is wiped */
	if (o->secret)
		config_free_secret(*slot);
	else
		free(*slot);
	*slot = copy;
	return 0;
}

/* One more value of a list (the projections); a value given twice counts once. */
static int add_to_list(struct config *c, const struct option_def *o, const char *value, char *err,
		       size_t errsz)
{
	char *copy;

	if (!*value) {
		snprintf(err, errsz, "empty value for '%s'", o->name);
		return -1;
	}
	if (c->n_projections >= CONFIG_MAX_PROJECTIONS) {
		snprintf(err, errsz, "too many values for '%s' (at most %d)", o->name, CONFIG_MAX_PROJECTIONS);
		return -1;
	}
	for (int i = 0; i < c->n_projections; i++)
		if (!strcmp(c->projections[i], value))
			return 0;
	copy = strdup(value);
	if (!copy) {
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	c->projections[c->n_projections++] = copy;
	return 0;
}

static int set_int(struct config *c, const struct option_def *o, const char *value, char *err, size_t errsz)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno || end == value || *end || isspace((unsigned char)*value)) {
		snprintf(err, errsz, "invalid value for '%s': '%.64s' is not a whole number", o->name, value);
		return -1;
	}
	if ((double)v < o->min || (double)v > o->max) {
		snprintf(err, errsz, "invalid value for '%s': %ld is outside %.0f..%.0f", o->name, v, o->min,
			 o->max);
		return -1;
	}
	*(long *)(void *)((char *)c + o->offset) = v;
	return 0;
}

static int set_seconds(struct config *c, const struct option_def *o, const char *value, char *err,
		       size_t errsz)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(value, &end);
	if (errno || end == value || *end || !isfinite(v) || isspace((unsigned char)*value)) {
		snprintf(err, errsz, "invalid value for '%s': '%.64s' is not a number of seconds", o->name,
			 value);
		return -1;
	}
	if (v < o->min || v > o->max) {
		snprintf(err, errsz, "invalid value for '%s': %g is outside %g..%g seconds", o->name, v, o->min,
			 o->max);
		return -1;
	}
	*(double *)(void *)((char *)c + o->offset) = v;
	return 0;
}

static int set_bool(struct config *c, const struct option_def *o, const char *value, char *err, size_t errsz)
{
	static const char *const yes[] = { "true", "1", "yes", "on" }, *const no[] = { "false", "0", "no", "off" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcmp(value, yes[i]) || !strcmp(value, no[i])) {
			*(bool *)(void *)((char *)c + o->offset) = !strcmp(value, yes[i]);
			return 0;
		}
	}
	snprintf(err, errsz, "invalid value for '%s': '%.64s' is not true or false", o->name, value);
	return -1;
}

static int set_value(struct config *c, const struct option_def *o, const char *value,
		     char *err, size_t errsz)
{
	switch (o->type) {
	case OPT_STRING:
		return set_string(c, o, value, err, errsz);
	case OPT_LIST:
		return add_to_list(c, o, value, err, errsz);
	case OPT_INT:
		return set_int(c, o, value, err, errsz);
	case OPT_SECONDS:
		return set_seconds(c, o, value, err, errsz);
	case OPT_BOOL:
		return set_bool(c, o, value, err, errsz);
	}
	BUG("unknown option type %d", (int)o->type);
}

void config_init(struct config *c)
{
	char err[256];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < N_OPTIONS; i++) {
		if (options[i].type == OPT_LIST)
			continue;
		if (set_value(c, &options[i], options[i].def, err, sizeof(err)))
			BUG("bad default for %s: %s", options[i].name, err);
	}
}

void config_release(struct config *c)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (options[i].type == OPT_STRING && options[i].secret)
			config_free_secret(*str_at(c, &options[i]));
		else if (options[i].type == OPT_STRING)
			free(*str_at(c, &options[i]));
	for (int i = 0; i < c->n_projections; i++)
		free(c->projections[i]);
	memset(c, 0, sizeof(*c));
}

static void env_name(const char *name, char *out, size_t outsz);

/* True when the URL holds a user or password ("scheme://user:pw@host"). */
static bool url_has_credentials(const char *url)
{
	const char *scheme_end = strstr(url, "://");

	return strchr(scheme_end ? scheme_end + 3 : url, '@') != NULL;
}

/* libpq marks every secret option (password, sslpassword...) with '*'. */
static bool conninfo_option_is_secret(const PQconninfoOption *o)
{
	return o->dispchar && o->dispchar[0] == '*';
}

/* True when the conninfo or URI carries a password or another secret. */
static bool conninfo_has_password(const char *conninfo)
{
	char *pqerr = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &pqerr);
	bool has = false;

	if (!opts) {
		PQfreemem(pqerr);
		return false; /* refused later, by config_validate, without quoting it */
	}
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (conninfo_option_is_secret(o) && o->val && *o->val)
			has = true;
	PQconninfoFree(opts);
	return has;
}

int config_set(struct config *c, const char *name, const char *value, char *err, size_t errsz)
{
	const struct option_def *o = find_option(name);

	if (!o) {
		snprintf(err, errsz, "unknown option '%s'", name);
		return -1;
	}
	/* flags are visible to every user (ps, /proc): no secret from argv */
	if (o->secret == ENV_ONLY) {
		char var[64];
		env_name(o->name, var, sizeof(var));
		snprintf(err, errsz, "'--%s' is not accepted on the command line, where other users can read it: "
			 "set %s or use --%s-file FILE", o->name, var, o->name);
		return -1;
	}
	if (!strcmp(o->name, "pg") && conninfo_has_password(value)) {
		snprintf(err, errsz, "a password in '--pg' is not accepted on the command line, where other users "
			 "can read it: set ESBRIDGE_PG or PGPASSWORD, or use a ~/.pgpass file");
		return -1;
	}
	if (!strcmp(o->name, "es") && url_has_credentials(value)) {
		snprintf(err, errsz, "credentials in '--es' are not accepted on the command line, where other users "
			 "can read them: set ESBRIDGE_ES_USER and ESBRIDGE_ES_PASSWORD (or --es-password-file), "
			 "or ESBRIDGE_ES_API_KEY (or --es-api-key-file)");
		return -1;
	}
	return set_value(c, o, value, err, errsz);
}

static void env_name(const char *name, char *out, size_t outsz)
{
	size_t i = 0;
	const char *prefix = "ESBRIDGE_";

	for (; *prefix && i + 1 < outsz; prefix++)
		out[i++] = *prefix;
	for (; *name && i + 1 < outsz; name++)
		out[i++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
	out[i] = '\0';
}

static char *trim(char *s);

/*
 * Sets `o` from `value` as read at `where` (a variable, or a file with the
 * `line` number when not 0), which starts an error message. A list takes
 * comma-separated values, each trimmed of spaces when `trim_items`.
 */
static int set_from(struct config *c, const struct option_def *o, const char *value, bool trim_items,
		    const char *where, int line, char *err, size_t errsz)
{
	char inner[512], *copy, *save = NULL;
	int rc = 0;

	if (o->type != OPT_LIST) {
		rc = set_value(c, o, value, inner, sizeof(inner));
	} else if (!(copy = strdup(value))) {
		snprintf(inner, sizeof(inner), "out of memory");
		rc = -1;
	} else {
		for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save))
			rc = set_value(c, o, trim_items ? trim(tok) : tok, inner, sizeof(inner));
		free(copy);
	}
	if (rc && line)
		snprintf(err, errsz, "%s:%d: %s", where, line, inner);
	else if (rc)
		snprintf(err, errsz, "%s: %s", where, inner);
	return rc;
}

int config_load_env(struct config *c, char *err, size_t errsz)
{
	char var[64];

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const char *v;
		env_name(options[i].name, var, sizeof(var));
		v = getenv(var);
		/* a list: comma-separated, each value as it is */
		if (v && set_from(c, &options[i], v, false, var, 0, err, errsz))
			return -1;
	}
	return 0;
}

static int validate_one_url(const char *url, char *err, size_t errsz);

/* The es option: one URL, or several separated by commas (the nodes of one cluster). */
static int validate_url(const char *url, char *err, size_t errsz)
{
	char one[2048];
	int n = 0;

	if (!*url)
		return validate_one_url(url, err, errsz);
	for (const char *p = url;; ) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len >= sizeof(one)) {
			snprintf(err, errsz, "invalid value for 'es': a URL is longer than %zu bytes", sizeof(one) - 1);
			return -1;
		}
		memcpy(one, p, len);
		one[len] = '\0';
		if (++n > ES_MAX_NODES) {
			snprintf(err, errsz, "invalid value for 'es': more than %d URLs", ES_MAX_NODES);
			return -1;
		}
		if (validate_one_url(one, err, errsz))
			return -1;
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

static int validate_one_url(const char *url, char *err, size_t errsz)
{
	const char *rest;

	if (!*url) {
		snprintf(err, errsz, "missing Elasticsearch URL: set ESBRIDGE_ES or --es");
		return -1;
	}
	if (!strncmp(url, "http://", 7))
		rest = url + 7;
	else if (!strncmp(url, "https://", 8))
		rest = url + 8;
	else {
		snprintf(err, errsz, "invalid value for 'es': the URL must start with http:// or https://");
		return -1;
	}
	if (!*rest || *rest == '/' || *rest == ':') {
		snprintf(err, errsz, "invalid value for 'es': the URL has no host");
		return -1;
	}
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '?' || *p == '#') {
			snprintf(err, errsz, "invalid value for 'es': the URL holds a space, control character, '?' or '#'");
			return -1;
		}
	return 0;
}

/* A secret file must be readable now, not at the first request. */
static int check_secret_file(const char *option, const char *path, char *err, size_t errsz)
{
	char *secret = NULL;

	if (!*path)
		return 0;
	if (config_read_secret(option, path, &secret, err, errsz))
		return -1;
	config_free_secret(secret);
	return 0;
}

/*
 * A readable CA file; basic auth (user + one password source) or an API key
 * (one source), not both.
 */
static int validate_security(const struct config *c, char *err, size_t errsz)
{
	bool password = *c->es_password || *c->es_password_file;
	bool api_key = *c->es_api_key || *c->es_api_key_file;
	FILE *f;

	if (*c->ca_file) {
		if (!(f = fopen(c->ca_file, "rb"))) {
			snprintf(err, errsz, "cannot read 'ca-file' '%s': %s", c->ca_file, strerror(errno));
			return -1;
		}
		fclose(f);
	}

	if (*c->es_password && *c->es_password_file) {
		snprintf(err, errsz, "both ESBRIDGE_ES_PASSWORD and 'es-password-file' are set: keep one");
		return -1;
	}
	if (*c->es_api_key && *c->es_api_key_file) {
		snprintf(err, errsz, "both ESBRIDGE_ES_API_KEY and 'es-api-key-file' are set: keep one");
		return -1;
	}
	if (password && !*c->es_user) {
		snprintf(err, errsz, "a password is set but no user: set ESBRIDGE_ES_USER or --es-user");
		return -1;
	}
	if (*c->es_user && !password) {
		snprintf(err, errsz, "'es-user' needs a password: set ESBRIDGE_ES_PASSWORD or --es-password-file FILE");
		return -1;
	}
	if (strchr(c->es_user, ':')) {
		snprintf(err, errsz, "invalid value for 'es-user': a basic auth user name cannot hold ':'");
		return -1;
	}
	if (password && api_key) {
		snprintf(err, errsz, "both basic auth and an API key are set: use one");
		return -1;
	}
	if ((password || api_key) && url_has_credentials(c->es)) {
		snprintf(err, errsz, "the 'es' URL holds credentials and others are set too: use one");
		return -1;
	}
	for (const char *p = c->es_api_key; *p; p++)
		if ((unsigned char)*p < ' ' || *p == 0x7f) {
			snprintf(err, errsz, "invalid value for ESBRIDGE_ES_API_KEY: it holds a control character");
			return -1;
		}
	if (check_secret_file("es-password-file", c->es_password_file, err, errsz) ||
	    check_secret_file("es-api-key-file", c->es_api_key_file, err, errsz))
		return -1;
	return 0;
}

/* Zeroes `n` bytes through a volatile pointer, so that the compiler keeps it. */
void config_wipe(char *s, size_t n)
{
	for (volatile char *p = s; n--; p++)
		*p = '\0';
}

int config_read_secret(const char *option, const char *path, char **out, char *err, size_t errsz)
{
	enum { SECRET_MAX = 16384 };
	FILE *f = fopen(path, "rb");
	char *s;
	size_t n;
	int rderr;

	*out = NULL;
	if (!f) {
		snprintf(err, errsz, "cannot read '%s' file '%s': %s", option, path, strerror(errno));
		return -1;
	}
	s = calloc(1, SECRET_MAX + 1);
	if (!s) {
		fclose(f);
		snprintf(err, errsz, "out of memory");
		return -1;
	}
	n = fread(s, 1, SECRET_MAX + 1, f);
	rderr = ferror(f);
	fclose(f);
	if (rderr)
		snprintf(err, errsz, "cannot read '%s' file '%s': read error", option, path);
	else if (n > SECRET_MAX)
		snprintf(err, errsz, "'%s' file '%s' is larger than %d bytes", option, path, SECRET_MAX);
	if (rderr || n > SECRET_MAX)
		goto fail;
	s[n] = '\0';
	if (n && s[n - 1] == '\n')
		s[--n] = '\0';
	if (n && s[n - 1] == '\r')
		s[--n] = '\0';
	if (!n) {
		snprintf(err, errsz, "'%s' file '%s' is empty", option, path);
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < ' ' || s[i] == 0x7f) {
			snprintf(err, errsz, "'%s' file '%s' must hold one line without control characters",
				 option, path);
			goto fail;
		}
	*out = s;
	return 0;
fail:
	config_wipe(s, SECRET_MAX + 1);
	free(s);
	return -1;
}

void config_free_secret(char *secret)
{
	if (!secret)
		return;
	config_wipe(secret, strlen(secret));
	free(secret);
}

/* True if `s` (of `len` bytes) is a port number from `min` to 65535. */
static bool is_port(const char *s, size_t len, long min)
{
	long v = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	return v >= min && v <= 65535;
}

/* HOST:PORT or [V6]:PORT, as the metrics endpoint reads it (port 0: any free one). */
static int validate_metrics_address(const char *a, char *err, size_t errsz)
{
	const char *colon;

	if (!*a)
		return 0;
	if (a[0] == '[') {
		const char *end = strchr(a, ']');
		colon = end && end[1] == ':' && end > a + 1 ? end + 1 : NULL;
	} else {
		colon = strchr(a, ':');
		/* an IPv6 address goes in brackets */
		if (colon == a || (colon && strchr(colon + 1, ':')))
			colon = NULL;
	}
	if (!colon || !is_port(colon + 1, strlen(colon + 1), 0)) {
		snprintf(err, errsz, "invalid value for 'metrics-address': '%.200s' is not HOST:PORT"
			 " (a port from 0 to 65535)", a);
		return -1;
	}
	return 0;
}

/* libpq takes any text as a port and refuses it only when it connects: a list of 1..65535. */
static int validate_pg_ports(const PQconninfoOption *opts, char *err, size_t errsz)
{
	for (const PQconninfoOption *o = opts; o->keyword; o++) {
		const char *v = o->val;
		if (strcmp(o->keyword, "port") || !v || !*v)
			continue;
		for (const char *item = v;;) {
			size_t len = strcspn(item, ",");
			/* an empty item of a list is the default port */
			if (len && !is_port(item, len, 1)) {
				snprintf(err, errsz, "invalid value for 'pg': port '%.*s' is not a number from 1"
					 " to 65535", (int)(len > 32 ? 32 : len), item);
				return -1;
			}
			if (!item[len])
				break;
			item += len + 1;
		}
	}
	return 0;
}

int config_validate(const struct config *c, char *err, size_t errsz)
{
	char *pqerr = NULL;
	PQconninfoOption *opts;

	if (validate_url(c->es, err, errsz))
		return -1;
	if (*c->pg) {
		opts = PQconninfoParse(c->pg, &pqerr);
		if (!opts) {
			char line[200];
			size_t n;
			snprintf(line, sizeof(line), "%s", pqerr ? pqerr : "out of memory");
			n = strlen(line);
			while (n && (line[n - 1] == '\n' || line[n - 1] == '.'))
				line[--n] = '\0';
			snprintf(err, errsz, "invalid value for 'pg': %s", line);
			PQfreemem(pqerr);
			return -1;
		}
		if (validate_pg_ports(opts, err, errsz)) {
			PQconninfoFree(opts);
			return -1;
		}
		PQconninfoFree(opts);
	}
	if (validate_metrics_address(c->metrics_address, err, errsz))
		return -1;
	if (log_level_parse(c->log_level) < 0) {
		snprintf(err, errsz, "invalid value for 'log-level': '%.32s' is not error, warn, info or debug",
			 c->log_level);
		return -1;
	}
	if (c->bulk_actions > c->batch_size * 64) {
		snprintf(err, errsz, "invalid value for 'bulk-actions': %ld is more than 64 batches", c->bulk_actions);
		return -1;
	}
	return validate_security(c, err, errsz);
}

/* One URL of a list: scheme, then "***" for any user:password, then the rest. */
static void redact_one(const char *url, size_t len, char *out, size_t outsz)
{
	const char *end = url + len, *host = url, *at = NULL;

	for (const char *p = url; p + 3 <= end; p++)
		if (!memcmp(p, "://", 3)) {
			host = p + 3;
			break;
		}
	/* the last '@' anywhere: a password may hold an unencoded '/' */
	for (const char *p = host; p < end; p++)
		if (*p == '@')
			at = p;
	if (!at)
		snprintf(out, outsz, "%.*s", (int)len, url);
	else
		snprintf(out, outsz, "%.*s***%.*s", (int)(host - url), url, (int)(end - at), at);
}

void config_redact_url(const char *url, char *out, size_t outsz)
{
	size_t pos = 0;

	if (outsz)
		out[0] = '\0';
	/* a comma-separated list: each URL on its own */
	for (const char *p = url;; ) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (pos < outsz) {
			redact_one(p, len, out + pos, outsz - pos);
			pos += strlen(out + pos);
		}
		if (!comma)
			break;
		if (pos + 1 < outsz) {
			out[pos++] = ',';
			out[pos] = '\0';
		}
		p = comma + 1;
	}
}

void config_redact_conninfo(const char *conninfo, char *out, size_t outsz)
{
	PQconninfoOption *opts, *o;
	size_t pos = 0;
	char *pqerr = NULL;

	if (!*conninfo) {
		snprintf(out, outsz, "%s", "");
		return;
	}
	opts = PQconninfoParse(conninfo, &pqerr);
	if (!opts) {
		PQfreemem(pqerr);
		snprintf(out, outsz, "(unparsable conninfo)");
		return;
	}
	out[0] = '\0';
	for (o = opts; o->keyword; o++) {
		int n;
		if (!o->val)
			continue;
		if (conninfo_option_is_secret(o))
			n = snprintf(out + pos, outsz - pos, "%s%s=***", pos ? " " : "", o->keyword);
		else
			n = snprintf(out + pos, outsz - pos, "%s%s=%s", pos ? " " : "", o->keyword, o->val);
		if (n < 0 || (size_t)n >= outsz - pos)
			break;
		pos += (size_t)n;
	}
	PQconninfoFree(opts);
}

void config_print(const struct config *c, FILE *f)
{
	char red[1024];

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option_def *o = &options[i];
		const char *base = (const char *)c + o->offset;
		switch (o->type) {
		case OPT_STRING: {
			const char *v = *(char *const *)(const void *)base;
			if (o->secret == ENV_ONLY)
				v = *v ? "***" : "";
			else if (o->secret && !strcmp(o->name, "pg"))
				config_redact_conninfo(v, red, sizeof(red)), v = red;
			else if (o->secret)
				config_redact_url(v, red, sizeof(red)), v = red;
			fprintf(f, "%s = %s\n", o->name, v);
			break;
		}
		case OPT_INT:
			fprintf(f, "%s = %ld\n", o->name, *(const long *)(const void *)base);
			break;
		case OPT_SECONDS:
			fprintf(f, "%s = %g\n", o->name, *(const double *)(const void *)base);
			break;
		case OPT_BOOL:
			fprintf(f, "%s = %s\n", o->name, *(const bool *)(const void *)base ? "true" : "false");
			break;
		case OPT_LIST:
			fprintf(f, "%s =", o->name);
			if (!c->n_projections)
				fprintf(f, " (all)");
			for (int k = 0; k < c->n_projections; k++)
				fprintf(f, " %s", c->projections[k]);
			fputc('\n', f);
			break;
		}
	}
}

void config_usage(FILE *f)
{
	char var[64];

	for (size_t i = 0; i < N_OPTIONS; i++) {
		env_name(options[i].name, var, sizeof(var));
		/* a secret that is never a flag is not shown as one */
		if (options[i].secret == ENV_ONLY)
			fprintf(f, "  %-18s %-26s %s", "(no flag)", var, options[i].help);
		else
			fprintf(f, "  --%-16s %-26s %s", options[i].name, var, options[i].help);
		if (*options[i].def && options[i].type != OPT_LIST)
			fprintf(f, " [%s]", options[i].def);
		if (options[i].reloadable)
			fputs(" (SIGHUP reloads it)", f);
		fputc('\n', f);
	}
}

/* Trims spaces at both ends, in place. */
static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errsz)
{
	FILE *f = fopen(path, "r");
	int rc;

	if (!f) {
		snprintf(err, errsz, "cannot read the config file %s: %s", path, strerror(errno));
		return -1;
	}
	rc = config_load_stream(c, f, path, err, errsz);
	fclose(f);
	return rc;
}

int config_load_stream(struct config *c, FILE *f, const char *path, char *err, size_t errsz)
{
	char line[4096];
	int n = 0, rc = 0;

	while (rc == 0 && fgets(line, sizeof(line), f)) {
		const struct option_def *o;
		char *name, *value, *eq;
		size_t len = strlen(line);

		n++;
		if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
			snprintf(err, errsz, "%s:%d: line too long", path, n);
			rc = -1;
			break;
		}
		name = trim(line);
		if (!*name || *name == '#')
			continue;
		eq = strchr(name, '=');
		if (!eq) {
			snprintf(err, errsz, "%s:%d: expected 'name = value'", path, n);
			rc = -1;
			break;
		}
		*eq = '\0';
		name = trim(name);
		value = trim(eq + 1);
		len = strlen(value);
		if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
			value[len - 1] = '\0';
			value++;
		}
		o = find_option(name);
		if (!o) {
			snprintf(err, errsz, "%s:%d: unknown option '%.64s'", path, n, name);
			rc = -1;
			break;
		}
		/* a list: comma-separated, each value trimmed; a file is not argv:
		 * secrets may be set here (keep it private) */
		if (set_from(c, o, value, true, path, n, err, errsz))
			rc = -1;
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errsz, "cannot read the config file %s", path);
		rc = -1;
	}
	return rc;
}

/* Whether option `o` has the same value in both. */
static bool same_value(const struct config *a, const struct config *b, const struct option_def *o)
{
	const char *pa = (const char *)a + o->offset, *pb = (const char *)b + o->offset;

	switch (o->type) {
	case OPT_STRING:
		return !strcmp(*(char *const *)(const void *)pa, *(char *const *)(const void *)pb);
	case OPT_INT:
		return *(const long *)(const void *)pa == *(const long *)(const void *)pb;
	case OPT_SECONDS:
		return *(const double *)(const void *)pa == *(const double *)(const void *)pb;
	case OPT_BOOL:
		return *(const bool *)(const void *)pa == *(const bool *)(const void *)pb;
	case OPT_LIST:
		if (a->n_projections != b->n_projections)
			return false;
		for (int i = 0; i < a->n_projections; i++)
			if (strcmp(a->projections[i], b->projections[i]))
				return false;
		return true;
	}
	return false;
}

int config_reload(struct config *live, struct config *next)
{
	int changed = 0;

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option_def *o = &options[i];
		char *pl = (char *)live + o->offset, *pn = (char *)next + o->offset;

		if (same_value(live, next, o))
			continue;
		if (!o->reloadable) {
			log_warn("reload: '%s' changed; it takes effect at the next start", o->name);
			continue;
		}
		changed++;
		log_info("reload: '%s' changed", o->name);
		switch (o->type) {
		case OPT_STRING: {
			/* swapped: `next` frees the old value */
			char *tmp = *(char **)(void *)pl;
			*(char **)(void *)pl = *(char **)(void *)pn;
			*(char **)(void *)pn = tmp;
			break;
		}
		case OPT_INT:
			*(long *)(void *)pl = *(long *)(void *)pn;
			break;
		case OPT_SECONDS:
			*(double *)(void *)pl = *(double *)(void *)pn;
			break;
		case OPT_BOOL:
			*(bool *)(void *)pl = *(bool *)(void *)pn;
			break;
		case OPT_LIST:
			break; /* not reloadable */
		}
	}
	return changed;
}
