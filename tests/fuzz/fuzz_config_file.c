/*
 * libFuzzer target: arbitrary bytes as a config file (src/config.c,
 * config_load_stream, then config_validate and config_print as `esbridge
 * check-config` runs them).
 *
 * Invariants, besides no crash, leak or undefined behaviour:
 *  - a refusal says why in one line that names the file ("fuzz.conf:");
 *  - the value of a secret set in the file (es-password, es-api-key),
 *    written once and distinctive (see distinctive()), appears in no error
 *    and not in the printed settings.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esbridge/config.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.conf"

/*
 * The value of the last `key = VALUE` line of the input (`size` bytes),
 * trimmed, as the loader reads lines: split at '\n', each cut at its first
 * NUL byte. "" if none.
 */
static void secret_of(const char *text, size_t size, const char *key, char *out, size_t outsz)
{
	size_t klen = strlen(key);

	out[0] = '\0';
	for (size_t at = 0; at < size;) {
		const char *l = text + at, *nl = memchr(l, '\n', size - at);
		size_t len = nl ? (size_t)(nl - l) : size - at;
		char line[4096];
		const char *p;
		size_t n;

		at += len + 1;
		if (len >= sizeof(line))
			continue;
		memcpy(line, l, len);
		line[len] = '\0'; /* and cut at a NUL inside, as strlen() does */
		p = line + strspn(line, " \t");
		if (strncmp(p, key, klen))
			continue;
		p += klen;
		p += strspn(p, " \t");
		if (*p != '=')
			continue;
		p++;
		p += strspn(p, " \t");
		n = strcspn(p, "\r\n");
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
			p++;
			n -= 2;
		}
		if (n >= outsz)
			n = outsz - 1;
		memcpy(out, p, n);
		out[n] = '\0';
	}
}

/* How many times `needle` stands in the `size` bytes at `buf` (NUL bytes included). */
static size_t occurrences(const char *buf, size_t size, const char *needle)
{
	size_t n = strlen(needle), count = 0;

	for (size_t i = 0; n && i + n <= size; i++)
		if (!memcmp(buf + i, needle, n))
			count++;
	return count;
}

static char *print(const struct config *c, size_t *len);

/*
 * Whether `secret` is one that cannot show in a message by chance: at least
 * 8 bytes, a letter and a digit, no blank, and not in what the settings
 * print anyway (option names, defaults: a secret "request-timeout" would).
 */
static bool distinctive(const char *secret)
{
	static char *baseline;
	bool letter = false, digit = false;

	if (!baseline) {
		struct config c;
		size_t len;
		config_init(&c);
		baseline = print(&c, &len); /* kept for the process */
		config_release(&c);
	}
	if (strlen(secret) < 8 || strstr(baseline, secret) || strstr(NAME, secret))
		return false;
	for (const char *p = secret; *p; p++) {
		if (*p == ' ' || *p == '\t')
			return false;
		letter = letter || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
		digit = digit || (*p >= '0' && *p <= '9');
	}
	return letter && digit;
}

/*
 * Checked for a secret that the whole input holds once (as the value), not
 * also where an error may quote it (another line's name, say).
 */
static void no_secret(const char *input, size_t size, const char *text, const char *secret, const char *where)
{
	/* an error's "fuzz.conf:N: " is the loader's, not the input's */
	if (!strncmp(text, NAME ":", strlen(NAME) + 1)) {
		const char *p = text + strlen(NAME) + 1;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p[0] == ':' && p[1] == ' ')
			text = p + 2;
	}
	if (occurrences(input, size, secret) == 1 && distinctive(secret))
		FUZZ_CHECK(!strstr(text, secret), "the secret '%s' shows in %s: %s", secret, where, text);
}

static char *print(const struct config *c, size_t *len)
{
	char *out = NULL;
	FILE *f = open_memstream(&out, len);

	FUZZ_CHECK(f != NULL, "open_memstream");
	config_print(c, f);
	FUZZ_CHECK(fclose(f) == 0, "fclose");
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	char err[512] = "", password[256], api_key[256];
	struct config c;
	FILE *f;
	int rc;

	FUZZ_CHECK(text != NULL, "malloc");
	memcpy(text, data, size);
	text[size] = '\0';
	secret_of(text, size, "es-password", password, sizeof(password));
	secret_of(text, size, "es-api-key", api_key, sizeof(api_key));
	config_init(&c);
	f = fmemopen(text, size ? size : 1, "r");
	FUZZ_CHECK(f != NULL, "fmemopen");
	rc = config_load_stream(&c, f, NAME, err, sizeof(err));
	fclose(f);
	if (rc == 0)
		rc = config_validate(&c, err, sizeof(err));
	if (rc) {
		FUZZ_CHECK(err[0] && !strchr(err, '\n'), "the error is not one line: '%s'", err);
		no_secret(text, size, err, password, "an error");
		no_secret(text, size, err, api_key, "an error");
	} else {
		size_t len;
		char *out = print(&c, &len);

		no_secret(text, size, out, password, "the printed settings");
		no_secret(text, size, out, api_key, "the printed settings");
		free(out);
	}
	config_release(&c);
	free(text);
	return 0;
}
