/* SPDX-License-Identifier: MIT */
/* Run under LD_PRELOAD=libuslab-malloc.so: what a program expects of its malloc. */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * A plain program: it links libc only, and sees uslab through the preload.
 * Each check prints a line; any failure exits 1. "--hold N" allocates a
 * mix, prints "ready" and sleeps N seconds (uslabtop -p looks at it).
 */

static int failures;
static int rounds = 100000; /* PROBE_QUICK (valgrind): fewer */

#define CHECK(e, ...)                                                                              \
	do {                                                                                       \
		if (!(e)) {                                                                        \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #e);               \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			failures++;                                                                \
		}                                                                                  \
	} while (0)

static void check_ours(void)
{
	Dl_info info;
	void *(*m)(size_t) = malloc;
	void *addr;

	memcpy(&addr, &m, sizeof addr);
	CHECK(dladdr(addr, &info) != 0 && info.dli_fname != NULL &&
	              strstr(info.dli_fname, "libuslab-malloc") != NULL,
	      "malloc is %s's", info.dli_fname != NULL ? info.dli_fname : "?");
}

/* Blocks from glibc's own malloc go back to glibc. */
static void check_glibc_pointers(void)
{
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	CHECK(libc != NULL, "no libc handle: %s", dlerror());
	if (libc == NULL)
		return;
	void *sym = dlsym(libc, "malloc");
	void *(*glibc_malloc)(size_t);
	memcpy(&glibc_malloc, &sym, sizeof sym);
	CHECK(glibc_malloc != NULL && glibc_malloc != malloc, "glibc's malloc not found");
	if (glibc_malloc == NULL || glibc_malloc == malloc)
		return;
	for (int i = 0; i < 100; i++) {
		char *p = glibc_malloc(100 + (size_t)i * 37);
		memset(p, 'g', 100);
		CHECK(malloc_usable_size(p) >= 100, "usable %zu", malloc_usable_size(p));
		if (i % 2 == 0) {
			char *q = realloc(p, 5000);
			CHECK(q != NULL && q[0] == 'g' && q[99] == 'g',
			      "realloc lost glibc's bytes");
			p = q;
		}
		int e = errno = 77;
		free(p);
		CHECK(errno == e, "free changed errno to %d", errno);
	}
	dlclose(libc);
}

static void check_errno_and_family(void)
{
	for (size_t n = 1; n < 200000; n = n * 3 + 1) {
		void *p = malloc(n);
		errno = 1234;
		free(p);
		CHECK(errno == 1234, "free(%zu bytes) set errno %d", n, errno);
	}
	for (size_t a = sizeof(void *); a <= 65536; a *= 2) {
		void *p = NULL;
		int e = errno = 55;
		CHECK(posix_memalign(&p, a, 100) == 0 && (uintptr_t)p % a == 0,
		      "posix_memalign %zu", a);
		CHECK(errno == e, "posix_memalign changed errno");
		free(p);
		p = aligned_alloc(a, 3 * a);
		CHECK(p != NULL && (uintptr_t)p % a == 0, "aligned_alloc %zu", a);
		free(p);
		p = memalign(a, 10);
		CHECK(p != NULL && (uintptr_t)p % a == 0, "memalign %zu", a);
		free(p);
	}
	void *p = NULL;
	CHECK(posix_memalign(&p, 24, 10) == EINVAL && p == NULL, "posix_memalign(24)");
	CHECK(posix_memalign(&p, 4, 10) == EINVAL, "posix_memalign(4)");
	p = memalign(24, 10); /* glibc rounds the alignment up */
	CHECK(p != NULL && (uintptr_t)p % 32 == 0, "memalign(24)");
	free(p);
	long page = sysconf(_SC_PAGESIZE);
	p = valloc(10);
	CHECK(p != NULL && (uintptr_t)p % (uintptr_t)page == 0, "valloc");
	free(p);
	p = pvalloc(10);
	CHECK(p != NULL && (uintptr_t)p % (uintptr_t)page == 0 &&
	              malloc_usable_size(p) >= (size_t)page,
	      "pvalloc");
	free(p);
	volatile size_t huge = SIZE_MAX / 2; /* not a constant: no compile-time warning */
	errno = 0;
	CHECK(reallocarray(NULL, huge, 3) == NULL && errno == ENOMEM, "reallocarray overflow");
	errno = 0;
	CHECK(calloc(huge, 3) == NULL && errno == ENOMEM, "calloc overflow");
	errno = 0;
	CHECK(malloc(huge * 2 + 1) == NULL && errno == ENOMEM, "malloc(SIZE_MAX)");
	char *s = strdup("a string libc copies with our malloc");
	CHECK(s != NULL && malloc_usable_size(s) >= strlen(s) + 1, "strdup");
	free(s);
	CHECK(malloc_usable_size(NULL) == 0, "usable(NULL)");
}

static void check_trim(void)
{
	enum { N = 20000 };
	void **p = malloc(N * sizeof *p);
	for (int i = 0; i < N; i++)
		p[i] = malloc((size_t)(i % 2000) + 1);
	for (int i = 0; i < N; i++)
		free(p[i]);
	free(p);
	CHECK(malloc_trim(0) == 1, "malloc_trim gave nothing back");
}

static void *churn(void *arg)
{
	void **shared = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;

	for (int i = 0; i < rounds; i++) {
		seed = seed * 1103515245u + 12345u;
		size_t n = (seed >> 8) % 3000;
		char *p = malloc(n + 1);
		p[0] = 'x';
		p[n] = 'y';
		/* Swap with the shared slot: another thread frees it. */
		char *q = __atomic_exchange_n(&shared[(seed >> 4) % 64], p, __ATOMIC_ACQ_REL);
		free(q);
	}
	return NULL;
}

static int threads_and_exit(void)
{
	static void *shared[64];
	pthread_t t[8];

	for (int i = 0; i < 8; i++)
		if (pthread_create(&t[i], NULL, churn, shared) != 0)
			return 1;
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 64; i++) {
		free(shared[i]);
		shared[i] = NULL;
	}
	return 0;
}

/* fork while other threads allocate: the child allocates in threads too. */
static void check_fork(void)
{
	static void *shared[64];
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn, shared);
	for (int k = 0; k < (rounds < 100000 ? 3 : 20); k++) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(threads_and_exit());
		int st = 0;
		CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
		              WEXITSTATUS(st) == 0,
		      "fork child %d: status %#x", k, st);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 64; i++) {
		free(shared[i]);
		shared[i] = NULL;
	}
}

/* A library loaded later allocates through us. */
static void check_dlopen(void)
{
	void *h = dlopen("libsqlite3.so.0", RTLD_NOW);
	if (h == NULL) {
		printf("skip dlopen: %s\n", dlerror());
		return;
	}
	void *s_open = dlsym(h, "sqlite3_open"), *s_exec = dlsym(h, "sqlite3_exec"),
	     *s_close = dlsym(h, "sqlite3_close");
	int (*db_open)(const char *, void **);
	int (*db_exec)(void *, const char *, void *, void *, char **);
	int (*db_close)(void *);
	memcpy(&db_open, &s_open, sizeof s_open);
	memcpy(&db_exec, &s_exec, sizeof s_exec);
	memcpy(&db_close, &s_close, sizeof s_close);
	void *db = NULL;
	CHECK(db_open(":memory:", &db) == 0, "sqlite3_open");
	CHECK(db_exec(db,
	              "create table t(a, b); "
	              "with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000) "
	              "insert into t select x, hex(randomblob(40)) from c; "
	              "create index ti on t(b); delete from t where a % 3 = 0;",
	              NULL, NULL, NULL) == 0,
	      "sqlite3_exec");
	db_close(db);
	dlclose(h);
}

static void hold(unsigned secs)
{
	enum { N = 5000 };
	static void *keep[N];
	for (int i = 0; i < N; i++)
		keep[i] = malloc((size_t)(i % 700) + 1);
	printf("ready\n");
	fflush(stdout);
	sleep(secs);
	for (int i = 0; i < N; i++)
		free(keep[i]);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--hold") == 0) {
		hold((unsigned)atoi(argv[2]));
		return 0;
	}
	if (getenv("PROBE_QUICK") != NULL)
		rounds = 2000;
	check_ours();
	check_glibc_pointers();
	check_errno_and_family();
	check_trim();
	CHECK(threads_and_exit() == 0, "threads");
	check_fork();
	check_dlopen();
	printf("%s: %d failures\n", argv[0], failures);
	return failures == 0 ? 0 : 1;
}
