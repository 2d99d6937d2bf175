/* SPDX-License-Identifier: MIT */
/* Shared helpers for the Check suites. */
#ifndef USLAB_TESTUTIL_H
#define USLAB_TESTUTIL_H

#include <check.h>

#include <stdbool.h>
#include <stddef.h>

/* Each test program defines this: the suites it runs (NULL-terminated). */
extern Suite *(*const test_suites[])(void);

/* Run @fn(@arg) in a child (with @secs of alarm) and return its exit status,
 * or 128 + the signal that ended it; its stderr is kept in @err (@errlen
 * bytes, NUL-terminated) when @err is not NULL. */
int test_run_child(int (*fn)(void *), void *arg, unsigned secs, char *err, size_t errlen);

/* A Check test @name that runs @fn(@arg) in a child (test_run_child) and
 * fails with the child's status and stderr unless it returned 0. */
#define TEST_IN_CHILD(name, fn, arg, secs)                                                         \
	START_TEST(name)                                                                           \
	{                                                                                          \
		char err_[4096];                                                                   \
		int rc_ = test_run_child((fn), (arg), (secs), err_, sizeof err_);                  \
		ck_assert_msg(rc_ == 0, "status %d: %s", rc_, err_);                               \
	}                                                                                          \
	END_TEST

/* The system page size. */
size_t test_page_size(void);

/* mincore(2): for each page of [@addr, @addr + @len) (page-aligned), bit 0
 * of @vec[i] set when it is resident. 0, or -1 with errno. (Windows:
 * QueryWorkingSetEx, tests/windows/runner.c.) */
int test_resident(void *addr, size_t len, unsigned char *vec);

/* Whether death tests can run (CK_FORK=no under valgrind: they skip). */
bool test_can_fork(void);

/* Install a seccomp filter on every thread (SECCOMP_FILTER_FLAG_TSYNC) under
 * which the @n system calls @nrs fail with EPERM and the rest run. Returns
 * 0, or -1 with errno when the kernel refuses the filter (no seccomp). */
int test_deny_syscalls(const int *nrs, int n);

#endif
