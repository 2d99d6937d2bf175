/* SPDX-License-Identifier: MIT */
/* The main() shared by every Check test program, and helpers for forked children. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
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

size_t test_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

int test_resident(void *addr, size_t len, unsigned char *vec)
{
	return mincore(addr, len, vec);
}

bool test_can_fork(void)
{
	const char *e = getenv("CK_FORK");

	return e == NULL || strcmp(e, "no") != 0;
}

int test_deny_syscalls(const int *nrs, int n)
{
	struct sock_filter f[2 + 2 * 32];
	int k = 0;

	if (n < 0 || n > 32) {
		errno = EINVAL;
		return -1;
	}
	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
	                                      offsetof(struct seccomp_data, nr));
	for (int i = 0; i < n; i++) {
		f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[i],
		                                      0, 1);
		f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
	}
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = (unsigned short)k, .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
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
