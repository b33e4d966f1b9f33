/*
 * Unit tests of the /metrics server's request reader (src/httpd.c):
 * httpd_request_complete and httpd_request_line.
 */
#include <stdbool.h>
#include <string.h>

#include <criterion/criterion.h>

#include "esbridge/httpd.h"

#include "support.h"

TestSuite(httpd, .fini = test_leak_check);

static int line(const char *req, char *path, size_t size, bool *head)
{
	return httpd_request_line(req, path, size, head);
}

Test(httpd, get_and_head)
{
	char path[64];
	bool head;

	cr_assert_eq(line("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", path, sizeof(path), &head), 0);
	cr_assert_str_eq(path, "/metrics");
	cr_assert(!head);
	cr_assert_eq(line("HEAD /health?verbose=1 HTTP/1.0\r\n\r\n", path, sizeof(path), &head), 0);
	cr_assert_str_eq(path, "/health");
	cr_assert(head);
}

Test(httpd, refusals)
{
	char path[64];
	bool head;

	cr_assert_eq(line("POST /metrics HTTP/1.1\r\n\r\n", path, sizeof(path), &head), 405);
	cr_assert_eq(line("GETS /metrics HTTP/1.1\r\n\r\n", path, sizeof(path), &head), 405);
	cr_assert_eq(line("GET /metrics\r\n\r\n", path, sizeof(path), &head), 400);
	cr_assert_eq(line("GET /metrics FTP/1.1\r\n\r\n", path, sizeof(path), &head), 400);
	cr_assert_eq(line("\r\n\r\n", path, sizeof(path), &head), 400);
	cr_assert_eq(line("", path, sizeof(path), &head), 400);
	cr_assert_eq(line("CONNECTED /x HTTP/1.1\r\n", path, sizeof(path), &head), 400);
	cr_assert(!head);
}

Test(httpd, a_long_path_is_cut)
{
	char path[8];
	bool head;

	cr_assert_eq(line("GET /abcdefghijkl HTTP/1.1\r\n\r\n", path, sizeof(path), &head), 0);
	cr_assert_str_eq(path, "/abcdef");
}

Test(httpd, complete_heads)
{
	cr_assert(httpd_request_complete("GET / HTTP/1.1\r\n\r\n"));
	cr_assert(httpd_request_complete("GET / HTTP/1.1\n\n"));
	cr_assert(!httpd_request_complete("GET / HTTP/1.1\r\nHost: x\r\n"));
	cr_assert(!httpd_request_complete(""));
}
