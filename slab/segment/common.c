/* SPDX-License-Identifier: MIT */
/* Where segments live, and what /proc says of their processes. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

const char *seg_dir(void)
{
	const char *d = secure_getenv("USLAB_STATS_DIR");
	return d != NULL && d[0] != '\0' ? d : "/dev/shm";
}

uint64_t seg_proc_start_time(pid_t pid)
{
	char path[64], buf[1024];

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ESRCH ? 0 : UINT64_MAX;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return n == 0 || errno == ESRCH ? 0 : UINT64_MAX;
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
	if (p == NULL)
		return UINT64_MAX;
	p++;
	for (int field = 2; field < 21 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL)
		return UINT64_MAX;
	char *end;
	unsigned long long v = strtoull(p + 1, &end, 10);
	return end == p + 1 ? UINT64_MAX : (uint64_t)v;
}

void seg_proc_comm(pid_t pid, char *comm, size_t n)
{
	char path[64], buf[64];

	comm[0] = '\0';
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t k = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (k <= 0)
		return;
	buf[k] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	size_t i = 0;
	for (; buf[i] != '\0' && i + 1 < n; i++)
		comm[i] = (unsigned char)buf[i] < 0x20 || buf[i] == 0x7f ? '?' : buf[i];
	comm[i] = '\0';
}
