#include "esbridge/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum log_level log_level_ = LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, level_names[i]))
			return i;
	return -1;
}

const char *log_level_name(enum log_level l)
{
	return (unsigned)l < 4 ? level_names[l] : "unknown";
}

void log_set_level(enum log_level l)
{
	log_level_ = l;
}

/* Appends `s` as a logfmt value: quoted, with quotes, backslashes and
 * control characters escaped, so one message is always one line. */
static size_t put_quoted(char *out, size_t pos, size_t cap, const char *s)
{
	if (pos < cap)
		out[pos++] = '"';
	for (; *s && pos + 6 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[pos++] = '\\';
			out[pos++] = (char)c;
		} else if (c == '\n') {
			out[pos++] = '\\';
			out[pos++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			pos += (size_t)snprintf(out + pos, cap - pos, "\\x%02x", c);
		} else {
			out[pos++] = (char)c;
		}
	}
	if (pos < cap)
		out[pos++] = '"';
	return pos;
}

void log_write(enum log_level l, const char *proj, int gen, const char *kv, const char *fmt, ...)
{
	char msg[2048], line[4608];
	struct timespec ts;
	struct tm tm;
	size_t pos;
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000L, log_level_name(l));
	pos = n > 0 ? (size_t)n : 0;
	if (proj) {
		n = snprintf(line + pos, sizeof(line) - pos, " proj=%s", proj);
		pos += n > 0 ? (size_t)n : 0;
		if (gen > 0) {
			n = snprintf(line + pos, sizeof(line) - pos, " gen=%d", gen);
			pos += n > 0 ? (size_t)n : 0;
		}
	}
	if (kv && pos < sizeof(line)) {
		n = snprintf(line + pos, sizeof(line) - pos, " %s", kv);
		pos += n > 0 ? (size_t)n : 0;
	}
	if (pos + 5 < sizeof(line)) {
		memcpy(line + pos, " msg=", 5);
		pos = put_quoted(line, pos + 5, sizeof(line) - 2, msg);
	}
	if (pos > sizeof(line) - 2)
		pos = sizeof(line) - 2;
	line[pos++] = '\n';
	fwrite(line, 1, pos, stderr);
}

void bug_at(const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "BUG: %s:%d: %s\n", file, line, msg);
	abort();
}
