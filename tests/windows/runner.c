/* SPDX-License-Identifier: MIT */
/* The Windows test runner: Check's API (check.h) over a child process per test, TAP out. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>
#include <psapi.h>

#include "check.h"
#include "testutil.h"

/*
 * Design
 *
 * main() builds the suites (test_suites[], as tests/testutil.c's main
 * does with Check) and numbers every test run (a loop test counts once
 * per index). The parent runs each in a child: this program again, with
 * "--ck-child N", which builds the same suites, runs run N's fixtures and
 * test, and exits 0; a failed assertion exits 1 after its message. The
 * parent waits up to the test case's timeout (its own, at least 60 s for
 * Wine's slowness, times CK_TIMEOUT_MULTIPLIER) and kills a child that
 * takes longer. A test added with tcase_add_test_raise_signal(SIGABRT)
 * passes when the child ends as abort() ends a Windows process (status 3)
 * and fails when it returns.
 */

#define CK_WIN_MAX_TESTS 64
#define CK_WIN_ABORT_STATUS 3 /* what abort() exits with on Windows */

struct ck_win_test {
	const TTest *t;
	int signal, start, end;
};

struct TCase {
	const char *name;
	double timeout;
	SFun setup[4], teardown[4];
	int nsetup, nteardown;
	struct ck_win_test tests[CK_WIN_MAX_TESTS];
	int ntests;
	TCase *next;
};

struct Suite {
	const char *name;
	TCase *first, *last;
	Suite *next;
};

static Suite *ck_suites, *ck_suites_last;

static void *ck_win_zalloc(size_t n)
{
	void *p = calloc(1, n);
	if (p == NULL) {
		fprintf(stderr, "runner: out of memory\n");
		exit(99);
	}
	return p;
}

Suite *suite_create(const char *name)
{
	Suite *s = ck_win_zalloc(sizeof *s);
	s->name = name;
	return s;
}

TCase *tcase_create(const char *name)
{
	TCase *tc = ck_win_zalloc(sizeof *tc);
	tc->name = name;
	tc->timeout = 4;
	return tc;
}

void suite_add_tcase(Suite *s, TCase *tc)
{
	if (s->last != NULL)
		s->last->next = tc;
	else
		s->first = tc;
	s->last = tc;
}

void tcase_set_timeout(TCase *tc, double seconds)
{
	tc->timeout = seconds;
}

static void ck_win_fixture(TCase *tc, SFun setup, SFun teardown)
{
	if (tc->nsetup == 4) {
		fprintf(stderr, "runner: too many fixtures in %s\n", tc->name);
		exit(99);
	}
	tc->setup[tc->nsetup++] = setup;
	tc->teardown[tc->nteardown++] = teardown;
}

void tcase_add_checked_fixture(TCase *tc, SFun setup, SFun teardown)
{
	ck_win_fixture(tc, setup, teardown);
}

/* Check runs these once in its parent; without fork, once in each child. */
void tcase_add_unchecked_fixture(TCase *tc, SFun setup, SFun teardown)
{
	ck_win_fixture(tc, setup, teardown);
}

void ck_win_add(TCase *tc, const TTest *t, int signal, int start, int end)
{
	if (tc->ntests == CK_WIN_MAX_TESTS) {
		fprintf(stderr, "runner: more than %d tests in %s\n", CK_WIN_MAX_TESTS, tc->name);
		exit(99);
	}
	tc->tests[tc->ntests++] = (struct ck_win_test){t, signal, start, end};
}

static void ck_win_vfail(const char *file, int line, const char *expr, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s:%d: ", file, line);
	if (expr != NULL)
		fprintf(stderr, "Assertion '%s' failed: ", expr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(stderr);
	exit(1);
}

void ck_win_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ck_win_vfail(file, line, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

void ck_win_fail_expr(const char *file, int line, const char *expr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	ck_win_vfail(file, line, expr, fmt, ap);
	va_end(ap);
	exit(1);
}

size_t test_page_size(void)
{
	SYSTEM_INFO si;
	GetSystemInfo(&si);
	return si.dwPageSize;
}

/* mincore's answer from the working set (QueryWorkingSetEx). */
int test_resident(void *addr, size_t len, unsigned char *vec)
{
	size_t page = test_page_size(), n = len / page;
	PSAPI_WORKING_SET_EX_INFORMATION info[64];

	for (size_t done = 0; done < n;) {
		size_t k = n - done < 64 ? n - done : 64;
		for (size_t i = 0; i < k; i++)
			info[i].VirtualAddress = (char *)addr + (done + i) * page;
		if (!QueryWorkingSetEx(GetCurrentProcess(), info, (DWORD)(k * sizeof info[0]))) {
			errno = EINVAL;
			return -1;
		}
		for (size_t i = 0; i < k; i++)
			vec[done + i] = (unsigned char)info[i].VirtualAttributes.Valid;
		done += k;
	}
	return 0;
}

bool test_can_fork(void)
{
	return true; /* a child process per test: death tests run */
}

static bool ck_win_selected(const char *env, const char *name)
{
	const char *want = getenv(env);
	return want == NULL || *want == '\0' || strcmp(want, name) == 0;
}

/* Run @n (numbered across every suite) in this process: the child's part. */
static int ck_win_child(int n)
{
	int k = 0;
	for (Suite *s = ck_suites; s != NULL; s = s->next)
		for (TCase *tc = s->first; tc != NULL; tc = tc->next)
			for (int j = 0; j < tc->ntests; j++)
				for (int i = tc->tests[j].start; i < tc->tests[j].end; i++, k++) {
					if (k != n)
						continue;
					for (int f = 0; f < tc->nsetup; f++)
						if (tc->setup[f] != NULL)
							tc->setup[f]();
					tc->tests[j].t->fn(i);
					for (int f = tc->nteardown - 1; f >= 0; f--)
						if (tc->teardown[f] != NULL)
							tc->teardown[f]();
					fflush(NULL);
					return 0;
				}
	fprintf(stderr, "runner: no test %d\n", n);
	return 99;
}

/* Run test @n in a child; its exit status, or -1 if it timed out. */
static long ck_win_spawn(int n, double timeout)
{
	char exe[MAX_PATH], cmd[MAX_PATH + 64];
	STARTUPINFOA si = {.cb = sizeof si};
	PROCESS_INFORMATION pi;

	if (GetModuleFileNameA(NULL, exe, sizeof exe) == 0)
		return 98;
	snprintf(cmd, sizeof cmd, "\"%s\" --ck-child %d", exe, n);
	fflush(NULL);
	/* Wine's server may be on its way out between two programs: a refused
	 * start is tried again, and said. */
	int tries = 0;
	while (!CreateProcessA(exe, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
		fprintf(stderr, "runner: CreateProcess for test %d failed (error %lu)%s\n", n,
		        (unsigned long)GetLastError(), tries < 4 ? ", trying again" : "");
		if (++tries == 5)
			return 98;
		Sleep(500);
	}
	DWORD ms = (DWORD)(timeout * 1000);
	DWORD status = 0;
	long rc;
	if (WaitForSingleObject(pi.hProcess, ms) != WAIT_OBJECT_0) {
		TerminateProcess(pi.hProcess, 124);
		WaitForSingleObject(pi.hProcess, INFINITE);
		rc = -1;
	} else {
		GetExitCodeProcess(pi.hProcess, &status);
		rc = (long)status;
	}
	CloseHandle(pi.hThread);
	CloseHandle(pi.hProcess);
	return rc;
}

int main(int argc, char **argv)
{
	for (int i = 0; test_suites[i] != NULL; i++) {
		Suite *s = test_suites[i]();
		if (ck_suites_last != NULL)
			ck_suites_last->next = s;
		else
			ck_suites = s;
		ck_suites_last = s;
	}
	if (argc == 3 && strcmp(argv[1], "--ck-child") == 0)
		return ck_win_child(atoi(argv[2]));

	const char *mult_env = getenv("CK_TIMEOUT_MULTIPLIER");
	double mult = mult_env != NULL && atof(mult_env) > 0 ? atof(mult_env) : 1;
	int k = 0, ran = 0, failed = 0;
	for (Suite *s = ck_suites; s != NULL; s = s->next)
		for (TCase *tc = s->first; tc != NULL; tc = tc->next)
			for (int j = 0; j < tc->ntests; j++)
				for (int i = tc->tests[j].start; i < tc->tests[j].end; i++, k++) {
					const struct ck_win_test *t = &tc->tests[j];
					if (!ck_win_selected("CK_RUN_SUITE", s->name) ||
					    !ck_win_selected("CK_RUN_CASE", tc->name))
						continue;
					double to = (tc->timeout > 60 ? tc->timeout : 60) * mult;
					long rc = ck_win_spawn(k, to);
					bool ok = t->signal != 0 ? rc == CK_WIN_ABORT_STATUS
					                         : rc == 0;
					ran++;
					failed += !ok;
					printf("%s %d - %s:%s:%s", ok ? "ok" : "not ok", ran,
					       s->name, tc->name, t->t->name);
					if (t->end - t->start > 1)
						printf(":%d", i);
					if (!ok) {
						if (rc == -1)
							printf(": timed out after %.0f s", to);
						else if (t->signal != 0)
							printf(": expected abort (status %d), got status %ld",
							       CK_WIN_ABORT_STATUS, rc);
						else
							printf(": status %ld", rc);
					}
					printf("\n");
					fflush(stdout);
				}
	printf("1..%d\n", ran);
	return failed != 0;
}
