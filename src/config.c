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
	bool secret;
	const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct option_def options[] = {
	{ "pg", OPT_STRING, OFF(pg), "", 0, 0, true,
	  "PostgreSQL conninfo or URI of the event store (empty: libpq defaults and PG* variables)" },
	{ "es", OPT_STRING, OFF(es), "", 0, 0, true,
	  "Elasticsearch base URL, http:// or https:// (required)" },
	{ "mappings-dir", OPT_STRING, OFF(mappings_dir), ESBRIDGE_MAPPINGS_DIR, 0, 0, false,
	  "folder holding the NAME.json index definitions" },
	{ "batch-size", OPT_INT, OFF(batch_size), "2000", 1, 100000, false,
	  "events read from PostgreSQL per query" },
	{ "bulk-actions", OPT_INT, OFF(bulk_actions), "1000", 1, 100000, false,
	  "maximum actions in one _bulk request" },
	{ "bulk-bytes", OPT_INT, OFF(bulk_bytes), "8388608", 4096, 104857600, false,
	  "maximum bytes of one _bulk request body" },
	{ "inflight", OPT_INT, OFF(inflight), "3", 1, 64, false,
	  "_bulk requests in flight per projection" },
	{ "poll-interval", OPT_SECONDS, OFF(poll_interval), "1", 0.01, 3600, false,
	  "seconds between polls of the event store when no NOTIFY arrives" },
	{ "request-timeout", OPT_SECONDS, OFF(request_timeout), "120", 1, 3600, false,
	  "seconds one Elasticsearch request may take before it counts as failed" },
	{ "retry-max", OPT_SECONDS, OFF(retry_max), "30", 0.01, 3600, false,
	  "seconds: the cap of the exponential retry backoff" },
	{ "drain-timeout", OPT_SECONDS, OFF(drain_timeout), "30", 0, 3600, false,
	  "seconds: on SIGTERM/SIGINT, how long requests in flight may take to finish before exiting non-zero" },
	{ "max-event-bytes", OPT_INT, OFF(max_event_bytes), "1048576", 1024, 104857600, false,
	  "an event whose data is larger than this many bytes goes to the dead letters" },
	{ "log-level", OPT_STRING, OFF(log_level), "info", 0, 0, false,
	  "error, warn, info or debug" },
	{ "ca-file", OPT_STRING, OFF(ca_file), "", 0, 0, false,
	  "CA bundle to verify Elasticsearch's certificate (empty: system default)" },
	{ "insecure", OPT_BOOL, OFF(insecure), "false", 0, 0, false,
	  "skip TLS certificate verification (logs a warning)" },
	{ "coalesce", OPT_BOOL, OFF(coalesce), "true", 0, 0, false,
	  "fold the events of one document in one request into one action (off: one action per event, for comparison)" },
	{ "dump-bulk", OPT_STRING, OFF(dump_bulk), "", 0, 0, false,
	  "folder that receives a copy of every _bulk body sent (benchmarks and debugging)" },
	{ "projection", OPT_LIST, OFF(projections), "", 0, 0, false,
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

static int set_value(struct config *c, const struct option_def *o, const char *value,
		     char *err, size_t errsz)
{
	char *end;

	switch (o->type) {
	case OPT_STRING: {
		char *copy = strdup(value);
		char **slot = str_at(c, o);
		if (!copy) {
			snprintf(err, errsz, "out of memory");
			return -1;
		}
		free(*slot);
		*slot = copy;
		return 0;
	}
	case OPT_LIST: {
		char *copy;
		if (!*value) {
			snprintf(err, errsz, "empty value for '%s'", o->name);
			return -1;
		}
		if (c->n_projections >= CONFIG_MAX_PROJECTIONS) {
			snprintf(err, errsz, "too many values for '%s' (at most %d)", o->name,
				 CONFIG_MAX_PROJECTIONS);
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
	case OPT_INT: {
		long v;
		errno = 0;
		v = strtol(value, &end, 10);
		if (errno || end == value || *end || isspace((unsigned char)*value)) {
			snprintf(err, errsz, "invalid value for '%s': '%.64s' is not a whole number",
				 o->name, value);
			return -1;
		}
		if ((double)v < o->min || (double)v > o->max) {
			snprintf(err, errsz, "invalid value for '%s': %ld is outside %.0f..%.0f",
				 o->name, v, o->min, o->max);
			return -1;
		}
		*(long *)(void *)((char *)c + o->offset) = v;
		return 0;
	}
	case OPT_SECONDS: {
		double v;
		errno = 0;
		v = strtod(value, &end);
		if (errno || end == value || *end || !isfinite(v) || isspace((unsigned char)*value)) {
			snprintf(err, errsz, "invalid value for '%s': '%.64s' is not a number of seconds",
				 o->name, value);
			return -1;
		}
		if (v < o->min || v > o->max) {
			snprintf(err, errsz, "invalid value for '%s': %g is outside %g..%g seconds",
				 o->name, v, o->min, o->max);
			return -1;
		}
		*(double *)(void *)((char *)c + o->offset) = v;
		return 0;
	}
	case OPT_BOOL: {
		bool v;
		if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes") ||
		    !strcmp(value, "on"))
			v = true;
		else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no") ||
			 !strcmp(value, "off"))
			v = false;
		else {
			snprintf(err, errsz, "invalid value for '%s': '%.64s' is not true or false",
				 o->name, value);
			return -1;
		}
		*(bool *)(void *)((char *)c + o->offset) = v;
		return 0;
	}
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
		if (options[i].type == OPT_STRING)
			free(*str_at(c, &options[i]));
	for (int i = 0; i < c->n_projections; i++)
		free(c->projections[i]);
	memset(c, 0, sizeof(*c));
}

int config_set(struct config *c, const char *name, const char *value, char *err, size_t errsz)
{
	const struct option_def *o = find_option(name);

	if (!o) {
		snprintf(err, errsz, "unknown option '%s'", name);
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

int config_load_env(struct config *c, char *err, size_t errsz)
{
	char var[64], inner[256];

	for (size_t i = 0; i < N_OPTIONS; i++) {
		const char *v;
		env_name(options[i].name, var, sizeof(var));
		v = getenv(var);
		if (!v)
			continue;
		if (options[i].type == OPT_LIST) {
			/* comma-separated list in the environment */
			char *copy = strdup(v), *save = NULL, *tok;
			if (!copy) {
				snprintf(err, errsz, "out of memory");
				return -1;
			}
			for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (set_value(c, &options[i], tok, inner, sizeof(inner))) {
					snprintf(err, errsz, "%s: %s", var, inner);
					free(copy);
					return -1;
				}
			}
			free(copy);
			continue;
		}
		if (set_value(c, &options[i], v, inner, sizeof(inner))) {
			snprintf(err, errsz, "%s: %s", var, inner);
			return -1;
		}
	}
	return 0;
}

static int validate_url(const char *url, char *err, size_t errsz)
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
		PQconninfoFree(opts);
	}
	if (log_level_parse(c->log_level) < 0) {
		snprintf(err, errsz, "invalid value for 'log-level': '%.32s' is not error, warn, info or debug",
			 c->log_level);
		return -1;
	}
	if (c->bulk_actions > c->batch_size * 64) {
		snprintf(err, errsz, "invalid value for 'bulk-actions': %ld is more than 64 batches", c->bulk_actions);
		return -1;
	}
	return 0;
}

void config_redact_url(const char *url, char *out, size_t outsz)
{
	const char *scheme_end = strstr(url, "://");
	const char *host = scheme_end ? scheme_end + 3 : url;
	/* the last '@' anywhere: a password may hold an unencoded '/' */
	const char *at = strrchr(host, '@');

	if (!at) {
		snprintf(out, outsz, "%s", url);
		return;
	}
	snprintf(out, outsz, "%.*s***%s", (int)(host - url), url, at);
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
		/* libpq marks every secret option (password, sslpassword...) with '*' */
		if (o->dispchar && o->dispchar[0] == '*')
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
			if (o->secret && !strcmp(o->name, "pg"))
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
		fprintf(f, "  --%-16s %-26s %s", options[i].name, var, options[i].help);
		if (*options[i].def && options[i].type != OPT_LIST)
			fprintf(f, " [%s]", options[i].def);
		fputc('\n', f);
	}
}
