#ifndef ESBRIDGE_TEST_SUPPORT_H
#define ESBRIDGE_TEST_SUPPORT_H

/*
 * Call from every suite's .fini, after releasing the fixture: in ASan
 * builds it runs LeakSanitizer and fails the test on a leak. support.c also
 * installs runner hooks so that a test whose teardown failed or crashed
 * fails the run (Criterion 2.4.1 would only print it).
 */
void test_leak_check(void);

#endif
