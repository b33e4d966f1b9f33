#ifndef ESBRIDGE_LOG_H
#define ESBRIDGE_LOG_H

/*
 * Logging: one logfmt line per message on stderr:
 *   ts=2026-11-26T04:10:00.123Z level=info proj=products gen=1 msg="caught up"
 * The macros test the level before formatting anything. `proj` may be NULL
 * (then neither proj nor gen is printed) and `gen` 0 (then gen is omitted).
 * Messages never contain secrets: callers log URLs and conninfo only through
 * the redacting helpers of config.h.
 */

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_level_;

/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level l);
void log_set_level(enum log_level l);

__attribute__((format(printf, 5, 6)))
void log_write(enum log_level l, const char *proj, int gen, const char *kv, const char *fmt, ...);

#define LOG_AT(lvl, proj, gen, ...) \
	do { if ((lvl) <= log_level_) log_write((lvl), (proj), (gen), NULL, __VA_ARGS__); } while (0)

#define log_error(...) LOG_AT(LOG_ERROR, NULL, 0, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_WARN, NULL, 0, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_INFO, NULL, 0, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, NULL, 0, __VA_ARGS__)

#define plog_error(p, g, ...) LOG_AT(LOG_ERROR, (p), (g), __VA_ARGS__)
#define plog_warn(p, g, ...)  LOG_AT(LOG_WARN, (p), (g), __VA_ARGS__)
#define plog_info(p, g, ...)  LOG_AT(LOG_INFO, (p), (g), __VA_ARGS__)
#define plog_debug(p, g, ...) LOG_AT(LOG_DEBUG, (p), (g), __VA_ARGS__)

/* Reports a broken invariant with file and line, then aborts. */
#define BUG(...) bug_at(__FILE__, __LINE__, __VA_ARGS__)
__attribute__((format(printf, 3, 4), noreturn))
void bug_at(const char *file, int line, const char *fmt, ...);

#endif
