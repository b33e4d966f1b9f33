#ifndef ESBRIDGE_BACKOFF_H
#define ESBRIDGE_BACKOFF_H

/*
 * Retry delays: exponential, capped, with jitter drawn from a generator
 * seeded per process (pid, time, address), so that processes that failed
 * together do not all come back at the same moment.
 */

/*
 * The delay before retry number `attempt` (1 for the first): `base` times
 * 2^(attempt - 1), at most `cap`, times a random factor in [0.5, 1).
 */
double backoff_delay(double base, int attempt, double cap);

/*
 * The next delay of a doubling backoff without jitter: `first` after none
 * (`prev` 0), then twice `prev`; at most `max` either way.
 */
double backoff_next(double prev, double first, double max);

/* A uniform random number in [0, 1) from the same generator. */
double backoff_random(void);

#endif
