/* What the commands share: errors and the projections a command names. */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esbridge/indices.h"

int die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("esbridge: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* "one of products, orders, ...": the names a --projection takes, for errors. */
const char *projection_names(void)
{
	static char names[512];

	if (!names[0]) {
		size_t len = (size_t)snprintf(names, sizeof(names), "one of");
		for (const struct projection *const *p = projection_registry; *p && len < sizeof(names); p++)
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%s %s",
						p == projection_registry ? "" : ",", (*p)->name);
	}
	return names;
}

/*
 * An unknown projection name (of `--projection` when `flag`, else of
 * rebuild's NAME): exit 2, naming the known ones, or the projection that
 * writes an alias of that name.
 */
int unknown_projection(const char *name, bool flag)
{
	const char *in = flag ? " in --projection" : "";

	for (const struct projection *const *p = projection_registry; *p; p++)
		for (size_t i = 0; i < projection_n_indices(*p); i++)
			if (!strcmp(projection_alias(*p, i), name))
				return die(EXIT_USAGE, "unknown projection '%s'%s: the alias '%s' is written by the"
					   " projection '%s'", name, in, name, (*p)->name);
	return die(EXIT_USAGE, "unknown projection '%s'%s (%s)", name, in, projection_names());
}

/* The projections `run` runs: --projection's, or every one. 0, or EXIT_USAGE (said). */
int selected_projections(const struct config *cfg, const struct projection **projs, int *n)
{
	*n = 0;
	if (!cfg->n_projections) {
		for (const struct projection *const *p = projection_registry; *p && *n < MAX_RUNNERS; p++)
			projs[(*n)++] = *p;
		return 0;
	}
	for (int i = 0; i < cfg->n_projections && *n < MAX_RUNNERS; i++) {
		projs[*n] = projection_find(cfg->projections[i]);
		if (!projs[*n])
			return unknown_projection(cfg->projections[i], true);
		(*n)++;
	}
	return 0;
}

/*
 * What a start would refuse besides the option values, checked before
 * anything connects: the mapping files of the projections. 0, or
 * EXIT_USAGE (said).
 */
int preflight(const struct config *cfg, const struct projection *const *projs, int n)
{
	char err[1024];

	for (int i = 0; i < n; i++)
		if (indices_check_mappings(cfg, projs[i], err, sizeof(err)))
			return die(EXIT_USAGE, "%s", err);
	return 0;
}

int parse_timeout(const char *text, double *seconds)
{
	char *end;

	*seconds = strtod(text, &end);
	if (!*text || *end || !(*seconds >= 0 && *seconds <= 86400))
		return die(EXIT_USAGE, "invalid value for '--timeout': '%s' is not seconds from 0 to 86400", text);
	return 0;
}
