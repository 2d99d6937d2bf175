/* SPDX-License-Identifier: MIT */
/* The main() shared by every Check test program. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

int test_run_child(int (*fn)(void *), void *arg, unsigned secs, char *err, size_t errlen)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(fds[0]);
		if (err != NULL)
			dup2(fds[1], 2);
		alarm(secs);
		_exit(fn(arg));
	}
	close(fds[1]);
	size_t n = 0;
	ssize_t k;
	char sink[256];
	while ((k = read(fds[0], err != NULL && n + 1 < errlen ? err + n : sink,
	                 err != NULL && n + 1 < errlen ? errlen - 1 - n : sizeof sink)) > 0)
		if (err != NULL && n + 1 < errlen)
			n += (size_t)k;
	close(fds[0]);
	if (err != NULL)
		err[n] = '\0';
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool test_can_fork(void)
{
	const char *e = getenv("CK_FORK");

	return e == NULL || strcmp(e, "no") != 0;
}

int main(void)
{
	SRunner *sr = srunner_create(NULL);

	for (size_t i = 0; test_suites[i] != NULL; i++)
		srunner_add_suite(sr, test_suites[i]());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
