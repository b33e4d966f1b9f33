#include "esbridge/backoff.h"

#include <stdint.h>
#include <time.h>
#include <unistd.h>

static uint64_t state;

/* splitmix64, seeded on first use */
static uint64_t next(void)
{
	uint64_t z;

	if (!state) {
		struct timespec ts;
		(void)clock_gettime(CLOCK_REALTIME, &ts);
		state = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)ts.tv_nsec ^
			((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)&state;
		state |= 1;
	}
	z = (state += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

double backoff_random(void)
{
	return (double)(next() >> 11) / 9007199254740992.0; /* 2^53 */
}

double backoff_delay(double base, int attempt, double cap)
{
	double d = base;

	for (int i = 1; i < attempt && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	return d * (0.5 + 0.5 * backoff_random());
}

double backoff_next(double prev, double first, double max)
{
	double d = prev > 0 ? prev * 2 : first;

	return d < max ? d : max;
}
