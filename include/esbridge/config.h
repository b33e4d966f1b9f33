#ifndef ESBRIDGE_CONFIG_H
#define ESBRIDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/*
 * Settings: built-in defaults, overridden by ESBRIDGE_* environment
 * variables, overridden by command-line flags. Every option is declared once
 * in the table in config.c (name, type, default, bounds, help); the flag is
 * "--NAME", the variable "ESBRIDGE_" + NAME upper-cased with '-' as '_'.
 *
 * Errors are one line, lowercase, naming the option and the problem, written
 * into a caller-owned buffer.
 */

#define CONFIG_MAX_PROJECTIONS 16
#define ES_MAX_NODES 16           /* URLs in the es option (comma-separated) */

struct config {
	char *pg;               /* libpq conninfo or URI; "" = libpq defaults (PG*) */
	char *es;               /* Elasticsearch base URL */
	char *mappings_dir;     /* folder with NAME.json mapping files */
	long batch_size;        /* events read per query */
	long bulk_actions;      /* max actions in one _bulk request */
	long bulk_bytes;        /* max bytes of one _bulk body */
	long inflight;          /* _bulk requests in flight per projection */
	double poll_interval;   /* seconds between polls when no NOTIFY comes */
	double request_timeout; /* seconds one HTTP request may take */
	double retry_max;       /* seconds: cap of the retry backoff */
	double drain_timeout;   /* seconds in-flight requests may take after SIGTERM */
	long max_event_bytes;   /* larger event data is dead-lettered */
	long max_unsettled_bytes; /* event data read but not settled; reading waits above it */
	char *metrics_address;  /* HOST:PORT for /metrics and /health; "" = off */
	double stats_interval;  /* seconds between summary log lines */
	double stall_timeout;   /* seconds without progress before /health says stalled */
	char *log_level;        /* error, warn, info, debug */
	char *ca_file;          /* CA bundle for https; "" = system default */
	bool insecure;          /* skip TLS verification (explicit only) */
	bool coalesce;          /* fold a document's events in a request into one action */
	char *dump_bulk;        /* folder that receives a copy of every _bulk body; "" = none */
	bool compress;          /* gzip request bodies (Content-Encoding: gzip) */
	char *es_user;          /* basic auth user name; "" = none */
	char *es_password;      /* basic auth password: environment only (secret) */
	char *es_password_file; /* file holding the password instead */
	char *es_api_key;       /* API key (the encoded id:key): environment only (secret) */
	char *es_api_key_file;  /* file holding the API key instead */
	/* --projection NAME, repeatable; none = every registered projection */
	char *projections[CONFIG_MAX_PROJECTIONS];
	int n_projections;
};

/* Fills in the defaults; config_release() frees what it owns. */
void config_init(struct config *c);
void config_release(struct config *c);

/*
 * Sets one option by its name ("batch-size") as a command-line flag does;
 * 0 or -1 with `err` set. Secrets are refused here, since every user can
 * read a process's argv: the options that hold one (es-password,
 * es-api-key) and an `es` URL with credentials in it come only from the
 * environment or a file.
 */
__attribute__((warn_unused_result))
int config_set(struct config *c, const char *name, const char *value, char *err, size_t errsz);

/*
 * Applies a config file: one "name = value" a line (the flag's name without
 * "--", the value optionally in double quotes), '#' starts a comment line,
 * a list option takes comma-separated values. Secrets may be set here (a
 * file is not argv): keep it readable by the service only. Errors name the
 * file and line.
 */
__attribute__((warn_unused_result))
int config_load_file(struct config *c, const char *path, char *err, size_t errsz);

/* The same from an open stream, `path` naming it in errors (tests and fuzzing). */
__attribute__((warn_unused_result))
int config_load_stream(struct config *c, FILE *f, const char *path, char *err, size_t errsz);

/*
 * SIGHUP: copies the settings marked reloadable from `next` into `live`
 * (values are swapped, so releasing `next` frees the old ones) and logs a
 * warning for each other setting that differs. Returns how many changed.
 */
int config_reload(struct config *live, struct config *next);

/* Applies every ESBRIDGE_* variable that names an option. */
__attribute__((warn_unused_result))
int config_load_env(struct config *c, char *err, size_t errsz);

/* True if `name` is an option taking a value (for the flag parser). */
bool config_has_option(const char *name);

/* True if `name` is a true/false option: `--NAME` sets it, `--no-NAME` clears it. */
bool config_is_switch(const char *name);

/* Checks what single options cannot: required settings, URL forms. */
__attribute__((warn_unused_result))
int config_validate(const struct config *c, char *err, size_t errsz);

/*
 * Reads a secret from the file `path` (for the option `option`, named in
 * errors) into `*out` (malloc'd; wipe and free it with config_free_secret):
 * one line, a trailing newline removed, not empty. The content never shows
 * in `err`.
 */
__attribute__((warn_unused_result))
int config_read_secret(const char *option, const char *path, char **out, char *err, size_t errsz);
void config_free_secret(char *secret);

/* Zeroes `n` bytes of `s` in a way the compiler keeps (a secret about to be freed). */
void config_wipe(char *s, size_t n);

/* Prints the effective settings, one `name = value` a line, secrets masked. */
void config_print(const struct config *c, FILE *f);

/* Prints the option table for --help. */
void config_usage(FILE *f);

/*
 * Copies `url` into `out` with any user:password replaced by "***".
 * Copies `conninfo` with any password replaced by "***".
 */
void config_redact_url(const char *url, char *out, size_t outsz);
void config_redact_conninfo(const char *conninfo, char *out, size_t outsz);

#endif
