/* SPDX-License-Identifier: MIT */
/* Shared helpers for the Check suites. */
#ifndef USLAB_TESTUTIL_H
#define USLAB_TESTUTIL_H

#include <check.h>

/* Each test program defines this: the suites it runs (NULL-terminated). */
extern Suite *(*const test_suites[])(void);

#endif
