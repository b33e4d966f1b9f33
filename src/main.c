/*
 * esbridge: projects an event store in PostgreSQL into Elasticsearch.
 *
 *   esbridge [options] run [--once]     catch up, then follow (or stop with --once)
 *   esbridge [options] status           generations and checkpoints
 *   esbridge [options] check-config     validate and print the settings
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <ev.h>
#include <libpq-fe.h>
#include <yajl/yajl_version.h>

#include "esbridge/config.h"
#include "esbridge/es.h"
#include "esbridge/log.h"
#include "esbridge/pipeline.h"
#include "esbridge/projection.h"
#include "esbridge/state.h"

#ifndef ESBRIDGE_VERSION
#define ESBRIDGE_VERSION "0.0.0"
#endif

#define EXIT_USAGE 2

static void usage(FILE *f)
{
	fprintf(f,
		"usage: esbridge [options] <command>\n"
		"\n"
		"commands:\n"
		"  run [--once]      catch up from the checkpoint, then follow new events until\n"
		"                    SIGTERM/SIGINT; with --once, stop at the head as it was at start\n"
		"  status            generations, indices, checkpoints and pending dead letters\n"
		"  check-config      validate the settings and print them (secrets masked)\n"
		"\n"
		"options (flag, environment variable, description [default]):\n");
	config_usage(f);
	fprintf(f,
		"  --help             show this help\n"
		"  --version          show the version and the libraries' versions\n"
		"\nprojections:");
	for (const struct projection *const *p = projection_registry; *p; p++)
		fprintf(f, " %s", (*p)->name);
	fputc('\n', f);
}

static void version(void)
{
	int y = yajl_version();

	printf("esbridge %s\n", ESBRIDGE_VERSION);
	printf("libev %d.%d, %s, libpq %d, yajl %d.%d.%d\n", ev_version_major(), ev_version_minor(),
	       curl_version(), PQlibVersion(), y / 10000, y / 100 % 100, y % 100);
}

__attribute__((format(printf, 2, 3)))
static int die(int code, const char *fmt, ...);

static int die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("esbridge: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

struct run_ctx {
	struct ev_loop *loop;
	struct pipeline **pipes;
	int n;
	int finished;
	int signals;
};

static void on_finish(void *arg, struct pipeline *p)
{
	struct run_ctx *ctx = arg;

	(void)p;
	if (++ctx->finished == ctx->n)
		ev_break(ctx->loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct run_ctx *ctx = w->data;

	(void)revents;
	if (++ctx->signals > 1) {
		log_warn("second signal: exiting without waiting for the requests in flight");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	log_info("signal %d: draining", w->signum);
	for (int i = 0; i < ctx->n; i++)
		pipeline_stop(ctx->pipes[i]);
}

static int cmd_run(const struct config *cfg, bool once)
{
	const struct projection *projs[64];
	struct pipeline *pipes[64] = { NULL };
	struct run_ctx ctx = { 0 };
	struct es_client *es;
	struct ev_loop *loop;
	ev_signal sigterm, sigint;
	char err[1024];
	int n = 0, rc = 0;

	if (cfg->n_projections) {
		for (int i = 0; i < cfg->n_projections; i++) {
			projs[n] = projection_find(cfg->projections[i]);
			if (!projs[n])
				return die(EXIT_USAGE, "unknown projection '%s'", cfg->projections[i]);
			n++;
		}
	} else {
		for (const struct projection *const *p = projection_registry; *p && n < 64; p++)
			projs[n++] = *p;
	}
	loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop)
		return die(1, "cannot initialise the event loop");
	if (cfg->insecure)
		log_warn("TLS certificate verification is off (insecure = true)");
	es = es_client_new(loop, cfg, err, sizeof(err));
	if (!es)
		return die(1, "%s", err);
	for (int i = 0; i < n; i++) {
		pipes[i] = pipeline_new(loop, cfg, projs[i], es, once, err, sizeof(err));
		if (!pipes[i]) {
			rc = die(1, "%s: %s", projs[i]->name, err);
			goto out;
		}
	}
	ctx.loop = loop;
	ctx.pipes = pipes;
	ctx.n = n;
	ev_signal_init(&sigterm, on_signal, SIGTERM);
	ev_signal_init(&sigint, on_signal, SIGINT);
	sigterm.data = sigint.data = &ctx;
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	for (int i = 0; i < n; i++)
		pipeline_start(pipes[i], on_finish, &ctx);
	ev_run(loop, 0);
	ev_signal_stop(loop, &sigterm);
	ev_signal_stop(loop, &sigint);
	for (int i = 0; i < n; i++)
		if (!pipeline_finished(pipes[i]) || pipeline_exit_code(pipes[i]))
			rc = 1;
out:
	/* the client first: it drops transfers whose callbacks name the pipelines */
	es_client_free(es);
	for (int i = 0; i < n; i++)
		pipeline_free(pipes[i]);
	ev_loop_destroy(loop);
	return rc;
}

static int cmd_status(const struct config *cfg)
{
	char err[1024];
	struct state *st = state_open(cfg->pg, err, sizeof(err));
	int rc;

	if (!st)
		return die(1, "%s", err);
	rc = state_print_status(st, err, sizeof(err)) ? die(1, "%s", err) : 0;
	state_close(st);
	return rc;
}

int main(int argc, char **argv)
{
	struct config cfg;
	char err[1024];
	const char *command = NULL;
	bool once = false;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	config_init(&cfg);
	if (config_load_env(&cfg, err, sizeof(err))) {
		config_release(&cfg);
		return die(EXIT_USAGE, "%s", err);
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char name[64];
		const char *value, *eq;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			config_release(&cfg);
			return 0;
		}
		if (!strcmp(a, "--version")) {
			version();
			config_release(&cfg);
			return 0;
		}
		if (!strcmp(a, "--once")) {
			once = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			if (command) {
				config_release(&cfg);
				return die(EXIT_USAGE, "unexpected argument '%s' (see --help)", a);
			}
			command = a;
			continue;
		}
		eq = strchr(a + 2, '=');
		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
		if (!eq && config_is_switch(name)) {
			value = "true";
		} else if (!eq && !strncmp(name, "no-", 3) && config_is_switch(name + 3)) {
			memmove(name, name + 3, strlen(name + 3) + 1);
			value = "false";
		} else if (eq) {
			value = eq + 1;
		} else if (config_has_option(name)) {
			if (i + 1 >= argc) {
				config_release(&cfg);
				return die(EXIT_USAGE, "option '--%s' needs a value", name);
			}
			value = argv[++i];
		} else {
			config_release(&cfg);
			return die(EXIT_USAGE, "unknown option '--%s' (see --help)", name);
		}
		if (config_set(&cfg, name, value, err, sizeof(err))) {
			config_release(&cfg);
			return die(EXIT_USAGE, "%s", err);
		}
	}
	if (!command) {
		usage(stderr);
		config_release(&cfg);
		return EXIT_USAGE;
	}
	if (strcmp(command, "run") && strcmp(command, "status") && strcmp(command, "check-config")) {
		config_release(&cfg);
		return die(EXIT_USAGE, "unknown command '%s' (see --help)", command);
	}
	if (config_validate(&cfg, err, sizeof(err))) {
		config_release(&cfg);
		return die(EXIT_USAGE, "%s", err);
	}
	log_set_level((enum log_level)log_level_parse(cfg.log_level));
	if (!strcmp(command, "check-config")) {
		config_print(&cfg, stdout);
		rc = 0;
	} else if (!strcmp(command, "status")) {
		rc = cmd_status(&cfg);
	} else {
		rc = cmd_run(&cfg, once);
	}
	config_release(&cfg);
	return rc;
}
