/*
 * libFuzzer target: arbitrary bytes as what a client sent to the /metrics
 * and /health server (src/httpd.c, httpd_request_complete and
 * httpd_request_line), cut at the server's 8 KiB limit and NUL-terminated
 * as the server holds it.
 *
 * Invariants, besides no crash or undefined behaviour:
 *  - the answer is 0, 400 or 405;
 *  - 0 only for a line that starts with "GET " or "HEAD " (`head` set for
 *    HEAD alone) and names a version "HTTP/1.x";
 *  - the path is NUL-terminated inside its buffer, holds no '?', blank or
 *    line break, and is a prefix of what follows the method;
 *  - a too small path buffer cuts the path, never overflows (a canary).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "esbridge/httpd.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *req, size_t pathsz)
{
	char buf[600];
	bool head = true;
	int rc;

	FUZZ_CHECK(pathsz + 8 <= sizeof(buf), "test setup");
	memset(buf, 'Z', sizeof(buf));
	rc = httpd_request_line(req, buf, pathsz, &head);
	FUZZ_CHECK(rc == 0 || rc == 400 || rc == 405, "answer %d", rc);
	for (size_t i = pathsz; i < sizeof(buf); i++)
		FUZZ_CHECK(buf[i] == 'Z', "wrote past the path buffer of %zu bytes", pathsz);
	if (rc != 0) {
		FUZZ_CHECK(!head, "head set on a refused request");
		return;
	}
	FUZZ_CHECK(!strncmp(req, "GET ", 4) || !strncmp(req, "GET\t", 4) || !strncmp(req, "HEAD ", 5) ||
			   !strncmp(req, "HEAD\t", 5), "accepted method of %.16s", req);
	FUZZ_CHECK(head == !strncmp(req, "HEAD", 4), "head flag");
	FUZZ_CHECK(strstr(req, "HTTP/1.") != NULL, "no version");
	FUZZ_CHECK(memchr(buf, '\0', pathsz) != NULL, "path not terminated");
	FUZZ_CHECK(strlen(buf) > 0 || pathsz <= 1 || buf[0] == '\0', "path");
	FUZZ_CHECK(strpbrk(buf, "? \t\r\n") == NULL, "path holds a separator: %s", buf);
	{
		const char *after = req + (head ? 4 : 3);
		after += strspn(after, " \t");
		FUZZ_CHECK(!strncmp(after, buf, strlen(buf)), "the path is not the request's");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char req[HTTPD_REQUEST_MAX + 1];
	bool complete;
	size_t n = size < HTTPD_REQUEST_MAX ? size : HTTPD_REQUEST_MAX;

	memcpy(req, data, n);
	req[n] = '\0';
	complete = httpd_request_complete(req);
	FUZZ_CHECK(complete == (strstr(req, "\n\n") || strstr(req, "\r\n\r\n")), "completeness");
	check(req, 512);
	check(req, 8);
	check(req, 1);
	return 0;
}
