/*
 * Unit tests of the growable buffer (src/buf.c).
 *
 * Every test works on the fixture buffer `b` (limit LIMIT, or another one set
 * with buf_init at the start of the test); the suite's .fini checks the
 * invariants of buf.h on it, whatever the test did, releases it and checks
 * for leaks.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include "esbridge/buf.h"

#include "support.h"

#define LIMIT ((size_t)1 << 20)

static struct buf b;

/* The invariants of buf.h, on any buffer, in any state. */
static void expect_invariants(const struct buf *x)
{
	cr_expect_not_null(x->data, "data is never NULL");
	if (!x->data)
		return;
	cr_expect_eq(x->data[x->len], '\0', "data[len] is always NUL (len %zu)", x->len);
	cr_expect_leq(x->len, x->limit, "len %zu passed the limit %zu", x->len, x->limit);
	if (x->alloc == 0)
		cr_expect_eq(x->data, buf_empty_, "a buffer without allocation points at buf_empty_");
	else
		cr_expect_lt(x->len, x->alloc, "len %zu leaves no room for the NUL in %zu bytes",
			     x->len, x->alloc);
	if (x->err != BUF_OK) {
		cr_expect_eq(x->len, 0, "a buffer in error holds nothing");
		cr_expect_eq(x->alloc, 0, "a buffer in error has freed its contents");
	}
	cr_expect_eq(buf_empty_[0], '\0', "the shared empty string was written to");
}

static void setup(void)
{
	buf_init(&b, LIMIT);
}

static void teardown(void)
{
	expect_invariants(&b);
	buf_release(&b);
	test_leak_check();
}

TestSuite(buf, .init = setup, .fini = teardown);

/* Expects the buffer to hold exactly the `n` bytes at `want`. */
static void expect_contents(const struct buf *x, const void *want, size_t n)
{
	cr_assert_eq(x->len, n, "len %zu, want %zu", x->len, n);
	cr_expect_eq(memcmp(x->data, want, n), 0, "contents differ");
	cr_expect_eq(x->data[n], '\0');
}

Test(buf, init_is_empty_and_allocates_nothing)
{
	cr_expect_eq(b.data, buf_empty_);
	cr_expect_eq(b.len, 0);
	cr_expect_eq(b.alloc, 0);
	cr_expect_eq(b.limit, LIMIT);
	cr_expect_eq(buf_error(&b), BUF_OK);
	cr_expect_str_eq(b.data, "");
}

Test(buf, static_initializer)
{
	struct buf s = BUF_INIT(8);

	expect_invariants(&s);
	cr_expect_eq(s.limit, 8);
	cr_expect_eq(buf_append_str(&s, "abc"), BUF_OK);
	expect_contents(&s, "abc", 3);
	expect_invariants(&s);
	buf_release(&s);
	expect_invariants(&s);
}

Test(buf, append_concatenates)
{
	cr_expect_eq(buf_append(&b, "abc", 3), BUF_OK);
	cr_expect_eq(buf_append_str(&b, "de"), BUF_OK);
	cr_expect_eq(buf_append_char(&b, 'f'), BUF_OK);
	expect_contents(&b, "abcdef", 6);
	expect_invariants(&b);
}

Test(buf, append_keeps_binary_bytes)
{
	cr_expect_eq(buf_append(&b, "a\0b", 3), BUF_OK);
	cr_expect_eq(buf_append_char(&b, '\0'), BUF_OK);
	expect_contents(&b, "a\0b\0", 4);
}

Test(buf, append_nothing_changes_nothing)
{
	cr_expect_eq(buf_append(&b, "", 0), BUF_OK);
	cr_expect_eq(buf_append_str(&b, ""), BUF_OK);
	cr_expect_eq(b.len, 0);
	cr_expect_eq(b.data, buf_empty_);
}

Test(buf, grows_past_the_first_allocation)
{
	/* one byte at a time, far past any first allocation */
	for (size_t i = 0; i < 10000; i++)
		cr_assert_eq(buf_append_char(&b, (char)('a' + i % 26)), BUF_OK, "at %zu", i);
	cr_assert_eq(b.len, 10000);
	for (size_t i = 0; i < 10000; i++)
		cr_assert_eq(b.data[i], (char)('a' + i % 26), "byte %zu", i);
	cr_expect_eq(b.data[10000], '\0');
	cr_expect_gt(b.alloc, 10000);
}

Test(buf, printf_formats_and_appends)
{
	cr_expect_eq(buf_printf(&b, "%d-%s", 42, "x"), BUF_OK);
	cr_expect_eq(buf_printf(&b, "|%05.1f|%c", 2.25, 'z'), BUF_OK);
	cr_expect_str_eq(b.data, "42-x|002.2|z");
	cr_expect_eq(b.len, strlen("42-x|002.2|z"));
}

Test(buf, printf_of_nothing)
{
	cr_expect_eq(buf_append_str(&b, "ab"), BUF_OK);
	cr_expect_eq(buf_printf(&b, "%s", ""), BUF_OK);
	expect_contents(&b, "ab", 2);
}

Test(buf, printf_longer_than_an_allocation)
{
	char big[3001];

	memset(big, 'q', 3000);
	big[3000] = '\0';
	cr_expect_eq(buf_append_str(&b, "<"), BUF_OK);
	cr_expect_eq(buf_printf(&b, "%s>", big), BUF_OK);
	cr_assert_eq(b.len, 3002);
	cr_expect_eq(b.data[0], '<');
	cr_expect_eq(b.data[1], 'q');
	cr_expect_eq(b.data[3000], 'q');
	cr_expect_eq(b.data[3001], '>');
	cr_expect_eq(b.data[3002], '\0');
}

Test(buf, reserve_makes_room_without_changing_len)
{
	char *before;

	cr_expect_eq(buf_append_str(&b, "xy"), BUF_OK);
	cr_assert_eq(buf_reserve(&b, 5000), BUF_OK);
	cr_expect_geq(b.alloc, 2 + 5000 + 1, "alloc %zu", b.alloc);
	expect_contents(&b, "xy", 2);
	/* the reserved room is used without moving the data */
	before = b.data;
	for (int i = 0; i < 5000; i++)
		cr_assert_eq(buf_append_char(&b, '.'), BUF_OK);
	cr_expect_eq(b.data, before, "appending into reserved room moved the data");
	cr_expect_eq(b.len, 5002);
}

Test(buf, reserve_up_to_the_limit_and_past_it)
{
	buf_init(&b, 100);
	cr_expect_eq(buf_reserve(&b, 100), BUF_OK);
	cr_expect_geq(b.alloc, 101);
	cr_expect_eq(buf_error(&b), BUF_OK);
	cr_expect_eq(buf_append_str(&b, "a"), BUF_OK);
	cr_expect_eq(buf_reserve(&b, 100), BUF_TOO_LARGE, "1 + 100 bytes pass a limit of 100");
	cr_expect_eq(buf_error(&b), BUF_TOO_LARGE);
	cr_expect_eq(b.len, 0);
}

Test(buf, append_up_to_exactly_the_limit)
{
	buf_init(&b, 16);
	cr_expect_eq(buf_append(&b, "0123456789abcdef", 16), BUF_OK);
	expect_contents(&b, "0123456789abcdef", 16);
	cr_expect_leq(b.alloc, 17, "never allocates more than limit + 1 (%zu)", b.alloc);
}

Test(buf, append_past_the_limit_fails_frees_and_sticks)
{
	buf_init(&b, 16);
	cr_assert_eq(buf_append(&b, "0123456789", 10), BUF_OK);
	cr_expect_eq(buf_append(&b, "abcdefg", 7), BUF_TOO_LARGE);
	cr_expect_eq(buf_error(&b), BUF_TOO_LARGE);
	/* the contents are gone */
	cr_expect_eq(b.len, 0);
	cr_expect_eq(b.alloc, 0);
	cr_expect_eq(b.data, buf_empty_);
	cr_expect_eq(b.limit, 16, "the limit survives the failure");
	/* every later append is a no-op that reports the error */
	cr_expect_eq(buf_append(&b, "x", 1), BUF_TOO_LARGE);
	cr_expect_eq(buf_append_str(&b, "x"), BUF_TOO_LARGE);
	cr_expect_eq(buf_append_char(&b, 'x'), BUF_TOO_LARGE);
	cr_expect_eq(buf_printf(&b, "%d", 1), BUF_TOO_LARGE);
	cr_expect_eq(buf_reserve(&b, 1), BUF_TOO_LARGE);
	cr_expect_eq(buf_append(&b, "", 0), BUF_TOO_LARGE, "even an empty append reports it");
	cr_expect_eq(b.len, 0);
	cr_expect_str_eq(b.data, "");
	expect_invariants(&b);
}

Test(buf, printf_past_the_limit_fails)
{
	buf_init(&b, 8);
	cr_expect_eq(buf_printf(&b, "%s", "12345678"), BUF_OK);
	buf_reset(&b);
	cr_expect_eq(buf_printf(&b, "%s", "123456789"), BUF_TOO_LARGE);
	cr_expect_eq(b.len, 0);
	cr_expect_eq(buf_error(&b), BUF_TOO_LARGE);
}

Test(buf, limit_zero_takes_nothing)
{
	buf_init(&b, 0);
	cr_expect_eq(buf_append_char(&b, 'x'), BUF_TOO_LARGE);
	cr_expect_eq(b.len, 0);
}

Test(buf, huge_sizes_do_not_overflow)
{
	cr_expect_eq(buf_append_str(&b, "abc"), BUF_OK);
	/* len + n would wrap around: must be refused, not wrapped */
	cr_expect_eq(buf_reserve(&b, SIZE_MAX), BUF_TOO_LARGE);
	buf_reset(&b);
	cr_expect_eq(buf_append_str(&b, "abc"), BUF_OK);
	cr_expect_eq(buf_reserve(&b, SIZE_MAX - 1), BUF_TOO_LARGE);
	buf_reset(&b);
	cr_expect_eq(buf_append_str(&b, "abc"), BUF_OK);
	cr_expect_eq(buf_append(&b, "x", SIZE_MAX - 2), BUF_TOO_LARGE);
	cr_expect_eq(b.len, 0);
}

Test(buf, strerror_names_every_error)
{
	const char *ok = buf_strerror(BUF_OK);
	const char *nomem = buf_strerror(BUF_NOMEM);
	const char *large = buf_strerror(BUF_TOO_LARGE);

	cr_assert(ok && nomem && large);
	cr_expect_str_neq(ok, nomem);
	cr_expect_str_neq(nomem, large);
	cr_expect_str_neq(ok, large);
	cr_expect_str_eq(large, "too large");
}

Test(buf, take_hands_over_the_bytes)
{
	char *p;
	size_t n = 12345;

	cr_assert_eq(buf_append_str(&b, "hello"), BUF_OK);
	p = buf_take(&b, &n);
	cr_assert_not_null(p);
	cr_expect_eq(n, 5);
	cr_expect_str_eq(p, "hello");
	cr_expect_neq(p, buf_empty_);
	/* the buffer is empty, owns nothing and is usable again */
	cr_expect_eq(b.data, buf_empty_);
	cr_expect_eq(b.len, 0);
	cr_expect_eq(b.alloc, 0);
	cr_expect_eq(b.limit, LIMIT);
	cr_expect_eq(buf_append_str(&b, "again"), BUF_OK);
	cr_expect_str_eq(b.data, "again");
	cr_expect_neq(b.data, p, "the buffer reuses memory it gave away");
	/* the caller frees it (ASan flags a bad free or a leak) */
	free(p);
}

Test(buf, take_of_an_empty_buffer_is_a_fresh_allocation)
{
	char *p;
	size_t n = 99;

	p = buf_take(&b, &n);
	cr_assert_not_null(p);
	cr_expect_neq(p, buf_empty_, "must never hand out the static empty string");
	cr_expect_eq(n, 0);
	cr_expect_eq(p[0], '\0');
	free(p);

	/* emptied after use, too */
	cr_assert_eq(buf_append_str(&b, "x"), BUF_OK);
	buf_reset(&b);
	p = buf_take(&b, &n);
	cr_assert_not_null(p);
	cr_expect_eq(n, 0);
	cr_expect_str_eq(p, "");
	free(p);
}

Test(buf, take_of_a_buffer_in_error_is_null)
{
	size_t n = 7;

	buf_init(&b, 4);
	cr_assert_eq(buf_append_str(&b, "12345"), BUF_TOO_LARGE);
	cr_expect_null(buf_take(&b, &n));
	cr_expect_eq(b.len, 0);
	cr_expect_str_eq(b.data, "");
}

Test(buf, reset_empties_and_keeps_the_allocation)
{
	char *data;
	size_t alloc;

	cr_assert_eq(buf_append_str(&b, "some text"), BUF_OK);
	data = b.data;
	alloc = b.alloc;
	buf_reset(&b);
	cr_expect_eq(b.len, 0);
	cr_expect_str_eq(b.data, "");
	cr_expect_eq(b.data, data, "reset keeps the allocation");
	cr_expect_eq(b.alloc, alloc);
	cr_expect_eq(buf_append_str(&b, "z"), BUF_OK);
	cr_expect_str_eq(b.data, "z");
}

Test(buf, reset_clears_the_error)
{
	buf_init(&b, 4);
	cr_assert_eq(buf_append_str(&b, "12345"), BUF_TOO_LARGE);
	buf_reset(&b);
	cr_expect_eq(buf_error(&b), BUF_OK);
	cr_expect_eq(b.limit, 4);
	cr_expect_eq(buf_append_str(&b, "1234"), BUF_OK);
	cr_expect_str_eq(b.data, "1234");
}

Test(buf, reset_of_a_never_allocated_buffer)
{
	buf_reset(&b);
	cr_expect_eq(b.data, buf_empty_);
	cr_expect_eq(b.len, 0);
}

Test(buf, release_frees_and_leaves_a_usable_buffer)
{
	cr_assert_eq(buf_append_str(&b, "to be freed"), BUF_OK);
	buf_release(&b);
	cr_expect_eq(b.data, buf_empty_);
	cr_expect_eq(b.len, 0);
	cr_expect_eq(b.alloc, 0);
	cr_expect_eq(b.limit, LIMIT);
	cr_expect_eq(buf_append_str(&b, "new"), BUF_OK);
	cr_expect_str_eq(b.data, "new");
	buf_release(&b);
	buf_release(&b); /* twice is fine */
	cr_expect_eq(b.data, buf_empty_);
}

Test(buf, release_clears_the_error)
{
	buf_init(&b, 2);
	cr_assert_eq(buf_append_str(&b, "abc"), BUF_TOO_LARGE);
	buf_release(&b);
	cr_expect_eq(buf_error(&b), BUF_OK);
	cr_expect_eq(buf_append_str(&b, "ab"), BUF_OK);
	cr_expect_str_eq(b.data, "ab");
}

Test(buf, truncate_keeps_the_terminating_nul)
{
	cr_expect_eq(buf_append_str(&b, "abcdef"), BUF_OK);
	buf_truncate(&b, 2);
	expect_contents(&b, "ab", 2);
	cr_expect_str_eq(b.data, "ab");
	buf_truncate(&b, 5); /* not longer: nothing changes */
	expect_contents(&b, "ab", 2);
	buf_truncate(&b, 0);
	expect_contents(&b, "", 0);
	expect_invariants(&b);
	cr_expect_eq(buf_append_str(&b, "xy"), BUF_OK);
	expect_contents(&b, "xy", 2);
}
