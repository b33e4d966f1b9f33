/*
 * What every unit test binary shares: the leak check a suite's .fini calls,
 * and the runner hooks that make a failure in a teardown fail the run.
 */
#include "support.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>

/*
 * Teardown failures and leaks. Criterion 2.4.1 runs each test in a child
 * process, and a failed assertion in a .fini, a crash or exit in a .fini, or
 * a leak LeakSanitizer reports as the child exits are only printed: the
 * test still passes. So:
 *  - the suite's .fini (run in the child after the test's own .fini) runs
 *    the LeakSanitizer check in ASan builds and fails an assertion on a leak;
 *  - hooks in the runner note which tests finished their teardown, and at
 *    the end turn every test that passed but failed an assertion in a .fini,
 *    or never finished its teardown, into a failure, so the run exits 1.
 */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_LSAN 1
#endif
#endif

#ifdef TEST_LSAN
#include <sanitizer/lsan_interface.h>

/* The suite .fini checks; the check at exit would only report twice. */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
	return "leak_check_at_exit=0";
}
#endif

void test_leak_check(void)
{
#ifdef TEST_LSAN
	if (__lsan_do_recoverable_leak_check())
		cr_expect_fail("memory leaked (LeakSanitizer report above)");
#endif
}

static const struct criterion_test_stats *torn_down[1024];
static size_t n_torn_down;

ReportHook(POST_FINI)(struct criterion_test_stats *t)
{
	if (n_torn_down < sizeof(torn_down) / sizeof(torn_down[0]))
		torn_down[n_torn_down++] = t;
}

static bool was_torn_down(const struct criterion_test_stats *t)
{
	for (size_t i = 0; i < n_torn_down; i++)
		if (torn_down[i] == t)
			return true;
	return false;
}

ReportHook(POST_ALL)(struct criterion_global_stats *all)
{
	for (struct criterion_suite_stats *s = all->suites; s; s = s->next) {
		for (struct criterion_test_stats *t = s->tests; t; t = t->next) {
			const char *why;
			if (t->test_status != CR_STATUS_PASSED)
				continue;
			if (t->failed_asserts)
				why = "an assertion failed in its teardown";
			else if (!was_torn_down(t))
				why = "it crashed or exited in its teardown";
			else
				continue;
			fprintf(stderr, "[FAIL] %s::%s: %s\n", s->suite->name, t->test->name, why);
			t->test_status = CR_STATUS_FAILED;
			s->tests_passed--;
			s->tests_failed++;
			all->tests_passed--;
			all->tests_failed++;
		}
	}
}
