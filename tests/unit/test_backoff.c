/*
 * Unit tests of the retry delays (src/backoff.c): exponential, capped,
 * jittered, and seeded per process (an unseeded generator gives every
 * process the same delays, so that bridges that failed together retry
 * together).
 */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "esbridge/backoff.h"

#include "support.h"

TestSuite(backoff, .fini = test_leak_check);

Test(backoff, exponential_capped_and_jittered)
{
	for (int round = 0; round < 200; round++) {
		for (int attempt = 1; attempt <= 40; attempt++) {
			double full = 0.25;
			double d = backoff_delay(0.25, attempt, 30.0);
			for (int i = 1; i < attempt && full < 30.0; i++)
				full *= 2;
			if (full > 30.0)
				full = 30.0;
			cr_assert(d >= full * 0.5 && d < full, "attempt %d: %g outside [%g, %g)", attempt, d,
				  full * 0.5, full);
		}
	}
	for (int i = 0; i < 1000; i++) {
		double r = backoff_random();
		cr_assert(r >= 0.0 && r < 1.0);
	}
}

/* The first delays of a new process, as text. */
static void child_delays(char *out, size_t size)
{
	int fd[2];
	pid_t pid;
	ssize_t n;
	int status;

	cr_assert_eq(pipe(fd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char b[256];
		int len = 0;
		for (int i = 0; i < 8; i++)
			len += snprintf(b + len, sizeof(b) - (size_t)len, "%.6f ", backoff_delay(1.0, 3, 30.0));
		(void)!write(fd[1], b, (size_t)len);
		_exit(0);
	}
	close(fd[1]);
	n = read(fd[0], out, size - 1);
	cr_assert_gt(n, 0);
	out[n] = '\0';
	close(fd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
}

Test(backoff, each_process_draws_its_own_delays)
{
	char a[256], b[256];

	child_delays(a, sizeof(a));
	child_delays(b, sizeof(b));
	cr_assert(strcmp(a, b), "two processes drew the same delays: %s", a);
}

Test(backoff, next_doubles_up_to_the_cap)
{
	cr_assert_float_eq(backoff_next(0, 0.5, 30), 0.5, 1e-12);
	cr_assert_float_eq(backoff_next(0.5, 0.5, 30), 1.0, 1e-12);
	cr_assert_float_eq(backoff_next(16, 0.5, 30), 30, 1e-12);
	cr_assert_float_eq(backoff_next(30, 0.5, 30), 30, 1e-12);
	cr_assert_float_eq(backoff_next(0, 5, 2), 2, 1e-12);
}
