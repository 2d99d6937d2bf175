/* SPDX-License-Identifier: MIT */
/* The part of Check's API the suites use, for the Windows build (runner.c). */
#ifndef USLAB_WIN_CHECK_H
#define USLAB_WIN_CHECK_H

/*
 * Design
 *
 * Check is not packaged for mingw-w64 and its fork mode, which isolates
 * each test and lets a death test abort, does not exist on Windows. So the
 * Windows build compiles the same suites (tests/test-slab.c,
 * tests/test-cache.c, ...) against this header, found first on the
 * include path, and tests/windows/runner.c runs them: each test in a child
 * process of its own (the program again, told which test to run), with
 * its fixtures, a timeout, and for tcase_add_test_raise_signal(SIGABRT)
 * the exit status abort() gives on Windows (3). Results are TAP on
 * stdout; a failed assertion's message goes to stderr, as Check's does.
 * CK_RUN_SUITE and CK_RUN_CASE select as in Check.
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
	const char *name;
	void (*fn)(int _i);
	const char *file;
	int line;
} TTest;

typedef struct TCase TCase;
typedef struct Suite Suite;
typedef void (*SFun)(void);

#define START_TEST(__testname)                                                                     \
	static void __testname##_fn(int _i);                                                       \
	static const TTest __testname##_ttest = {#__testname, __testname##_fn, __FILE__,           \
	                                         __LINE__};                                        \
	static const TTest *__testname = &__testname##_ttest;                                      \
	static void __testname##_fn(int _i __attribute__((unused)))
#define END_TEST

Suite *suite_create(const char *name);
TCase *tcase_create(const char *name);
void suite_add_tcase(Suite *s, TCase *tc);
void tcase_set_timeout(TCase *tc, double seconds);
void tcase_add_checked_fixture(TCase *tc, SFun setup, SFun teardown);
void tcase_add_unchecked_fixture(TCase *tc, SFun setup, SFun teardown);
void ck_win_add(TCase *tc, const TTest *t, int signal, int start, int end);

#define tcase_add_test(tc, tf) ck_win_add((tc), (tf), 0, 0, 1)
#define tcase_add_test_raise_signal(tc, tf, sig) ck_win_add((tc), (tf), (sig), 0, 1)
#define tcase_add_loop_test(tc, tf, s, e) ck_win_add((tc), (tf), 0, (s), (e))
#define tcase_add_loop_test_raise_signal(tc, tf, sig, s, e) ck_win_add((tc), (tf), (sig), (s), (e))

/** A failed assertion: the message on stderr, then the child ends. */
__attribute__((noreturn, format(__MINGW_PRINTF_FORMAT, 3, 4))) void
ck_win_fail(const char *file, int line, const char *fmt, ...);

/** The same for ck_assert_msg: the expression, then the caller's message. */
__attribute__((noreturn, format(__MINGW_PRINTF_FORMAT, 4, 5))) void
ck_win_fail_expr(const char *file, int line, const char *expr, const char *fmt, ...);

#define ck_abort_msg(...) ck_win_fail(__FILE__, __LINE__, __VA_ARGS__)
#define ck_abort() ck_abort_msg("Failed")
#define ck_assert_msg(expr, ...)                                                                   \
	do {                                                                                       \
		if (!(expr))                                                                       \
			ck_win_fail_expr(__FILE__, __LINE__, #expr, __VA_ARGS__);                  \
	} while (0)
#define ck_assert(expr) ck_assert_msg(expr, "%s", "")

#define CK_WIN_CMP(T, F, X, OP, Y)                                                                 \
	do {                                                                                       \
		T ck_x_ = (X);                                                                     \
		T ck_y_ = (Y);                                                                     \
		if (!(ck_x_ OP ck_y_))                                                             \
			ck_win_fail(__FILE__, __LINE__,                                            \
			            "Assertion '%s' failed: %s == %" F ", %s == %" F,              \
			            #X " " #OP " " #Y, #X, ck_x_, #Y, ck_y_);                      \
	} while (0)
#define ck_assert_int_eq(X, Y) CK_WIN_CMP(intmax_t, PRIdMAX, X, ==, Y)
#define ck_assert_int_ne(X, Y) CK_WIN_CMP(intmax_t, PRIdMAX, X, !=, Y)
#define ck_assert_int_lt(X, Y) CK_WIN_CMP(intmax_t, PRIdMAX, X, <, Y)
#define ck_assert_int_le(X, Y) CK_WIN_CMP(intmax_t, PRIdMAX, X, <=, Y)
#define ck_assert_int_gt(X, Y) CK_WIN_CMP(intmax_t, PRIdMAX, X, >, Y)
#define ck_assert_int_ge(X, Y) CK_WIN_CMP(intmax_t, PRIdMAX, X, >=, Y)
#define ck_assert_uint_eq(X, Y) CK_WIN_CMP(uintmax_t, PRIuMAX, X, ==, Y)
#define ck_assert_uint_ne(X, Y) CK_WIN_CMP(uintmax_t, PRIuMAX, X, !=, Y)
#define ck_assert_uint_lt(X, Y) CK_WIN_CMP(uintmax_t, PRIuMAX, X, <, Y)
#define ck_assert_uint_le(X, Y) CK_WIN_CMP(uintmax_t, PRIuMAX, X, <=, Y)
#define ck_assert_uint_gt(X, Y) CK_WIN_CMP(uintmax_t, PRIuMAX, X, >, Y)
#define ck_assert_uint_ge(X, Y) CK_WIN_CMP(uintmax_t, PRIuMAX, X, >=, Y)
#define ck_assert_ptr_eq(X, Y) CK_WIN_CMP(const void *, "p", X, ==, Y)
#define ck_assert_ptr_ne(X, Y) CK_WIN_CMP(const void *, "p", X, !=, Y)
#define ck_assert_ptr_null(X) ck_assert_ptr_eq(X, NULL)
#define ck_assert_ptr_nonnull(X) ck_assert_ptr_ne(X, NULL)
#define ck_assert_str_eq(X, Y)                                                                     \
	do {                                                                                       \
		const char *ck_x_ = (X), *ck_y_ = (Y);                                             \
		if (ck_x_ == NULL || ck_y_ == NULL || strcmp(ck_x_, ck_y_) != 0)                   \
			ck_win_fail(__FILE__, __LINE__,                                            \
			            "Assertion '%s' failed: %s == \"%s\", %s == \"%s\"",           \
			            #X " == " #Y, #X, ck_x_ ? ck_x_ : "(null)", #Y,                \
			            ck_y_ ? ck_y_ : "(null)");                                     \
	} while (0)

#endif
