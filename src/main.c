/*
 * esbridge: projects an event store in PostgreSQL into Elasticsearch.
 *
 *   esbridge [options] run [--once]     catch up, then follow (or stop with --once)
 *   esbridge [options] status           generations and checkpoints
 *   esbridge [options] dead-letters list|retry|discard
 *   esbridge [options] wait --projection NAME --position P [--timeout S]
 *   esbridge [options] check-config     validate and print the settings
 */
#include "cli.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <ev.h>
#include <libpq-fe.h>
#include <yajl/yajl_version.h>
#include <zlib.h>

#include "esbridge/config.h"
#include "esbridge/log.h"
#include "esbridge/projection.h"

#ifndef ESBRIDGE_VERSION
#define ESBRIDGE_VERSION "0.0.0"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: esbridge [options] <command>\n"
		"\n"
		"commands:\n"
		"  run [--once]      catch up from the checkpoint, then follow new events until\n"
		"                    SIGTERM/SIGINT; with --once, stop at the head as it was at start\n"
		"  rebuild NAME [--keep N]\n"
		"                    build a new generation of NAME beside the active one, then move\n"
		"                    the alias to it; keeps N retired indices [1]. Runs in this\n"
		"                    process, or asks the running daemon that owns NAME\n"
		"  status [--json]   per projection its owner and alias, per generation its state,\n"
		"                    index, checkpoint, head, lag, events held back by open\n"
		"                    transactions and open dead letters; the oldest open writer;\n"
		"                    --projection NAME narrows it\n"
		"  wait --projection NAME --position P [--timeout S]\n"
		"                    return once NAME's active generation has applied the event at\n"
		"                    global position P (or read past it, for an event it does not\n"
		"                    read) (exit 0), became a dead letter (exit 3), or after S\n"
		"                    seconds (exit 1) [30]\n"
		"  dead-letters list [--all]\n"
		"                    the open dead letters (--all: also retried and discarded ones);\n"
		"                    --projection NAME narrows every dead-letters command\n"
		"  dead-letters retry ID|--all [--wait [--timeout S]]\n"
		"                    apply the letter's document's open letters again, in order\n"
		"                    (--all: every open letter); --wait: until they are applied\n"
		"                    (exit 0) or one failed again (exit 1), at most S seconds [30]\n"
		"  dead-letters discard ID --reason TEXT [--wait [--timeout S]]\n"
		"                    drop one letter; the other open letters of its document are\n"
		"                    applied again\n"
		"  check-config [--connect]\n"
		"                    validate the settings as a start would and print them (secrets\n"
		"                    masked); --connect: also reach PostgreSQL and the cluster and\n"
		"                    say what they hold (versions, each projection's generation)\n"
		"\n"
		"options (flag, environment variable, description [default]):\n");
	fprintf(f, "  --%-16s %-26s %s\n", "config FILE", "ESBRIDGE_CONFIG",
		"settings file of 'name = value' lines, read again on SIGHUP");
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
	printf("libev %d.%d, %s, libpq %d.%d, yajl %d.%d.%d, zlib %s\n", ev_version_major(),
	       ev_version_minor(), curl_version(), PQlibVersion() / 10000, PQlibVersion() % 100,
	       y / 10000, y / 100 % 100, y % 100, zlibVersion());
}

/* The value of a flag of main's own: "--NAME=V" or "--NAME V". */
static const char *own_flag(int argc, char **argv, int *i, const char *name, bool *bad)
{
	const char *a = argv[*i] + 2;
	size_t n = strlen(name);

	*bad = false;
	if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (*i + 1 >= argc) {
		*bad = true;
		return NULL;
	}
	return argv[++*i];
}

/* The switches of main's own (no value); true when `a` is one. */
static bool own_switch(const char *a, struct cli *cli)
{
	static const struct {
		const char *flag;
		size_t offset;
	} switches[] = {
		{ "--once", offsetof(struct cli, once) },       { "--all", offsetof(struct cli, all) },
		{ "--json", offsetof(struct cli, json) },       { "--connect", offsetof(struct cli, connect) },
		{ "--wait", offsetof(struct cli, wait) },       { "--help", offsetof(struct cli, help) },
		{ "-h", offsetof(struct cli, help) },           { "--version", offsetof(struct cli, version) },
	};

	for (size_t k = 0; k < sizeof(switches) / sizeof(switches[0]); k++) {
		if (!strcmp(a, switches[k].flag)) {
			*(bool *)(void *)((char *)cli + switches[k].offset) = true;
			return true;
		}
	}
	return false;
}

/*
 * A flag of main's own with a value (--reason, --position, --timeout,
 * --config, --keep) at argv[*i]: 1 if it was one (taken), 0 if not, or
 * EXIT_USAGE with `err` set.
 */
static int own_value(int argc, char **argv, int *i, struct cli *cli, char *err, size_t errsz)
{
	static const char *const own[] = { "reason", "position", "timeout", "config", "keep" };

	for (size_t k = 0; k < sizeof(own) / sizeof(own[0]); k++) {
		bool bad;
		char *end;
		long kv;
		const char *v = own_flag(argc, argv, i, own[k], &bad);

		if (bad) {
			snprintf(err, errsz, "option '--%s' needs a value", own[k]);
			return EXIT_USAGE;
		}
		if (!v)
			continue;
		if (!strcmp(own[k], "reason"))
			cli->reason = v;
		else if (!strcmp(own[k], "position"))
			cli->position = v;
		else if (!strcmp(own[k], "timeout"))
			cli->timeout = v;
		else if (!strcmp(own[k], "keep")) {
			kv = strtol(v, &end, 10);
			if (!*v || *end || kv < 0 || kv > 32) {
				snprintf(err, errsz, "invalid value for '--keep': '%s' is not a number from 0 to 32", v);
				return EXIT_USAGE;
			}
			cli->keep = (int)kv;
		}
		return 1;
	}
	return 0;
}

/* A word that is not a flag: the command, then rebuild's NAME or dead-letters' SUB and ID. */
static int word(const char *a, struct cli *cli, char *err, size_t errsz)
{
	if (cli->command && (!strcmp(cli->command, "rebuild") || !strcmp(cli->command, "dead-letters")) &&
	    !cli->target) {
		cli->target = a;
		return 0;
	}
	if (cli->command && !strcmp(cli->command, "dead-letters") && !cli->arg) {
		cli->arg = a;
		return 0;
	}
	if (cli->command) {
		snprintf(err, errsz, "unexpected argument '%s' (see --help)", a);
		return EXIT_USAGE;
	}
	cli->command = a;
	return 0;
}

/* A setting's flag at argv[*i]: "--NAME=V", "--NAME V", "--SWITCH" or "--no-SWITCH". */
static int setting_flag(int argc, char **argv, int *i, struct config *cfg, char *err, size_t errsz)
{
	const char *a = argv[*i], *value, *eq = strchr(a + 2, '=');
	char name[64];

	snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
	if (!eq && config_is_switch(name)) {
		value = "true";
	} else if (!eq && !strncmp(name, "no-", 3) && config_is_switch(name + 3)) {
		memmove(name, name + 3, strlen(name + 3) + 1);
		value = "false";
	} else if (eq) {
		value = eq + 1;
	} else if (config_has_option(name)) {
		if (*i + 1 >= argc) {
			snprintf(err, errsz, "option '--%s' needs a value", name);
			return EXIT_USAGE;
		}
		value = argv[++*i];
	} else {
		snprintf(err, errsz, "unknown option '--%s' (see --help)", name);
		return EXIT_USAGE;
	}
	return config_set(cfg, name, value, err, errsz) ? EXIT_USAGE : 0;
}

/* The config file named by --config (the last one) or ESBRIDGE_CONFIG; 0, or EXIT_USAGE. */
static int config_file_of(int argc, char **argv, struct cli *cli, char *err, size_t errsz)
{
	cli->config_file = getenv("ESBRIDGE_CONFIG");
	for (int i = 1; i < argc; i++) {
		bool bad;
		const char *v;
		if (strncmp(argv[i], "--", 2) != 0)
			continue;
		v = own_flag(argc, argv, &i, "config", &bad);
		if (bad) {
			snprintf(err, errsz, "option '--config' needs a value");
			return EXIT_USAGE;
		}
		if (v)
			cli->config_file = v;
	}
	return 0;
}

/*
 * Builds the settings: defaults, then the config file (--config FILE or
 * ESBRIDGE_CONFIG), then ESBRIDGE_* variables, then flags. Also used to
 * reload on SIGHUP. 0, or EXIT_USAGE with `err` set.
 */
static int load_settings(int argc, char **argv, struct config *cfg, struct cli *cli, char *err,
			 size_t errsz)
{
	memset(cli, 0, sizeof(*cli));
	cli->keep = 1;
	config_init(cfg);
	if (config_file_of(argc, argv, cli, err, errsz))
		return EXIT_USAGE;
	if (cli->config_file && *cli->config_file &&
	    config_load_file(cfg, cli->config_file, err, errsz))
		return EXIT_USAGE;
	if (config_load_env(cfg, err, errsz))
		return EXIT_USAGE;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int rc;

		if (own_switch(a, cli)) {
			if (cli->help || cli->version)
				return 0;
			continue;
		}
		if (strncmp(a, "--", 2) != 0)
			rc = word(a, cli, err, errsz);
		else if ((rc = own_value(argc, argv, &i, cli, err, errsz)) == 1)
			rc = 0;
		else if (rc == 0)
			rc = setting_flag(argc, argv, &i, cfg, err, errsz);
		if (rc)
			return rc;
	}
	return 0;
}

/* The command line, kept for cli_reload. */
static int main_argc;
static char **main_argv;

int cli_reload(struct config *next, char *err, size_t errsz)
{
	struct cli cli;

	return load_settings(main_argc, main_argv, next, &cli, err, errsz);
}

/* The commands, as git's builtin table. */
static const struct command {
	const char *name;
	int (*fn)(struct config *cfg, const struct cli *cli);
} commands[] = {
	{ "run", cmd_run },
	{ "rebuild", cmd_rebuild },
	{ "status", cmd_status },
	{ "wait", cmd_wait },
	{ "dead-letters", cmd_dead_letters },
	{ "check-config", cmd_check_config },
};

int main(int argc, char **argv)
{
	const struct command *cmd = NULL;
	struct config cfg;
	struct cli cli;
	char err[1024];
	int rc;

	signal(SIGPIPE, SIG_IGN);
	main_argc = argc;
	main_argv = argv;
	rc = load_settings(argc, argv, &cfg, &cli, err, sizeof(err));
	if (rc) {
		config_release(&cfg);
		return die(rc, "%s", err);
	}
	if (cli.help || cli.version) {
		if (cli.help)
			usage(stdout);
		else
			version();
		config_release(&cfg);
		return 0;
	}
	if (!cli.command) {
		usage(stderr);
		config_release(&cfg);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]) && !cmd; i++)
		if (!strcmp(cli.command, commands[i].name))
			cmd = &commands[i];
	if (!cmd) {
		config_release(&cfg);
		return die(EXIT_USAGE, "unknown command '%s' (see --help)", cli.command);
	}
	if (cli.wait && strcmp(cli.command, "dead-letters")) {
		config_release(&cfg);
		return die(EXIT_USAGE, "'--wait' is an option of dead-letters retry and discard");
	}
	if (cli.connect && strcmp(cli.command, "check-config")) {
		config_release(&cfg);
		return die(EXIT_USAGE, "'--connect' is an option of check-config only");
	}
	if (config_validate(&cfg, err, sizeof(err))) {
		config_release(&cfg);
		return die(EXIT_USAGE, "%s", err);
	}
	log_set_level((enum log_level)log_level_parse(cfg.log_level));
	rc = cmd->fn(&cfg, &cli);
	config_release(&cfg);
	return rc;
}
