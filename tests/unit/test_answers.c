/*
 * Unit tests of src/answers.c: the answers whose shape differs between
 * Elasticsearch versions, from the samples in tests/data/answers/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "esbridge/answers.h"

#include "support.h"

/* Run from the top of the tree, as `make unit` does. */
#define DATA_DIR "tests/data/answers"

static char *slurp(const char *name, size_t *len)
{
	char path[256];
	FILE *f;
	long n;
	char *data;

	snprintf(path, sizeof(path), "%s/%s", DATA_DIR, name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s", path);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	cr_assert_geq(n, 0);
	rewind(f);
	data = malloc((size_t)n + 1);
	cr_assert_not_null(data);
	cr_assert_eq(fread(data, 1, (size_t)n, f), (size_t)n, "short read of %s", path);
	data[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return data;
}

static int aliases_file(const char *name, char *err, size_t errsz)
{
	size_t len;
	char *body = slurp(name, &len);
	int rc = answers_aliases(body, len, err, errsz);

	free(body);
	return rc;
}

TestSuite(answers, .fini = test_leak_check);

Test(answers, aliases_applied_on_every_version)
{
	static const char *const files[] = { "aliases_7.json", "aliases_8.14.json" };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char err[256] = "";
		cr_expect_eq(aliases_file(files[i], err, sizeof(err)), 0, "%s: %s", files[i], err);
		cr_expect_str_empty(err, "%s", files[i]);
	}
}

/* 8.14 and later: 200, yet one action failed; the first failed one is named */
Test(answers, aliases_applied_in_part)
{
	char err[256] = "";

	cr_assert_eq(aliases_file("aliases_8.14_partial.json", err, sizeof(err)), -1);
	cr_expect_str_eq(err, "POST /_aliases: action 2 (remove) failed: HTTP 404 aliases_not_found_exception:"
			      " aliases [test_non_existing] missing");
}

Test(answers, aliases_unreadable)
{
	static const char *const bodies[] = { "", "<html>", "[]", "{\"errors\":true}",
					      "{\"errors\":true,\"action_results\":[{\"status\":200}]}" };
	static const char *const want[] = { "unreadable answer", "unreadable answer", "not an object",
					    "without a failed action", "without a failed action" };

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char err[256] = "";
		cr_expect_eq(answers_aliases(bodies[i], strlen(bodies[i]), err, sizeof(err)), -1, "'%s'", bodies[i]);
		cr_expect_not_null(strstr(err, want[i]), "'%s': %s", bodies[i], err);
	}
	cr_expect_eq(answers_aliases(NULL, 0, (char[64]){ 0 }, 64), -1);
}
