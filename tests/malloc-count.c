/* SPDX-License-Identifier: MIT */
/* An LD_PRELOAD shim that counts malloc-family calls between two SIGUSR2s. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * tests/memcached-nomalloc.sh preloads this into uslab-memcached: the
 * first SIGUSR2 arms the count (start-up, which may malloc, is over), the
 * second writes "malloc N calloc N realloc N aligned N" to the file named
 * by MALLOC_COUNT_FILE. The wrappers call glibc's __libc_* entry points
 * (dlsym could itself allocate). Only what reaches the program's malloc
 * is counted: glibc's own internal allocations that bypass the PLT are
 * not, which is what "no malloc on the request path" is about.
 */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t k);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t a, size_t n);
extern void __libc_free(void *p);

static volatile int armed;
static char count_file[256];    /* MALLOC_COUNT_FILE, read at start */
static unsigned long counts[4]; /* malloc, calloc, realloc, memalign */

static void count(int i)
{
	if (armed)
		__atomic_fetch_add(&counts[i], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
	count(0);
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t k)
{
	count(1);
	return __libc_calloc(n, k);
}

void *realloc(void *p, size_t n)
{
	count(2);
	return __libc_realloc(p, n);
}

void *memalign(size_t a, size_t n)
{
	count(3);
	return __libc_memalign(a, n);
}

int posix_memalign(void **out, size_t a, size_t n)
{
	count(3);
	void *p = __libc_memalign(a, n);
	if (p == NULL)
		return 12; /* ENOMEM */
	*out = p;
	return 0;
}

void *aligned_alloc(size_t a, size_t n)
{
	count(3);
	return __libc_memalign(a, n);
}

void free(void *p)
{
	__libc_free(p);
}

/* Async-signal-safe decimal. */
static size_t put_num(char *b, unsigned long v)
{
	char t[24];
	size_t n = 0, k = 0;

	do
		t[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		b[k++] = t[--n];
	return k;
}

static void on_usr2(int sig)
{
	(void)sig;
	if (!armed) {
		for (int i = 0; i < 4; i++)
			__atomic_store_n(&counts[i], 0, __ATOMIC_RELAXED);
		armed = 1;
		return;
	}
	static const char *const names[4] = {"malloc ", " calloc ", " realloc ", " aligned "};
	char line[160];
	size_t n = 0;
	for (int i = 0; i < 4; i++) {
		size_t l = strlen(names[i]);
		memcpy(line + n, names[i], l);
		n += l;
		n += put_num(line + n, __atomic_load_n(&counts[i], __ATOMIC_RELAXED));
	}
	line[n++] = '\n';
	int fd = count_file[0] != '\0' ? open(count_file, O_WRONLY | O_CREAT | O_TRUNC, 0644) : 2;
	if (fd >= 0) {
		(void)!write(fd, line, n);
		if (fd != 2)
			close(fd);
	}
}

__attribute__((constructor)) static void shim_init(void)
{
	struct sigaction sa;
	const char *path = getenv("MALLOC_COUNT_FILE");
	if (path != NULL && strlen(path) < sizeof count_file)
		strcpy(count_file, path);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL);
}
