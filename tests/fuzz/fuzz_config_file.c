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

/* The value of `key = VALUE` lines of the input (the last one), trimmed; "" if none. */
static void secret_of(const char *text, const char *key, char *out, size_t size)
{
	size_t klen = strlen(key);

	out[0] = '\0';
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *p = l + strspn(l, " \t");
		size_t n;
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
		if (n >= size)
			n = size - 1;
		memcpy(out, p, n);
		out[n] = '\0';
	}
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

/* Checked for a secret that the input holds once (as the value), not also where an error may quote it. */
static void no_secret(const char *input, const char *text, const char *secret, const char *where)
{
	const char *first = strstr(input, secret);

	if (first && !strstr(first + 1, secret) && distinctive(secret))
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
	secret_of(text, "es-password", password, sizeof(password));
	secret_of(text, "es-api-key", api_key, sizeof(api_key));
	config_init(&c);
	f = fmemopen(text, size ? size : 1, "r");
	FUZZ_CHECK(f != NULL, "fmemopen");
	rc = config_load_stream(&c, f, NAME, err, sizeof(err));
	fclose(f);
	if (rc == 0)
		rc = config_validate(&c, err, sizeof(err));
	if (rc) {
		FUZZ_CHECK(err[0] && !strchr(err, '\n'), "the error is not one line: '%s'", err);
		no_secret(text, err, password, "an error");
		no_secret(text, err, api_key, "an error");
	} else {
		size_t len;
		char *out = print(&c, &len);

		no_secret(text, out, password, "the printed settings");
		no_secret(text, out, api_key, "the printed settings");
		free(out);
	}
	config_release(&c);
	free(text);
	return 0;
}
