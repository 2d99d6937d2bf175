/* SPDX-License-Identifier: MIT */
/* What programs, their environment and other processes do to uslab: each finding of
 * the reliability issue, as a test that failed before its fix. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uslab.h>
#include <uslab/stats.h>

#include "../slab/segment/segment.h"
#include "testutil.h"

/*
 * Every test runs its subject in a child process of its own (run_child):
 * a fresh process, so "the first cache" is really the first, and a crash,
 * an abort or a hang there is a test failure here, not the end of the run.
 * Segments go to a private directory.
 */

static char test_dir[64]; /* "/tmp/uslab-test-rel-XXXXXX" */
static pid_t test_owner;

__attribute__((constructor)) static void rel_setup(void)
{
	snprintf(test_dir, sizeof test_dir, "/tmp/uslab-test-rel-XXXXXX");
	if (mkdtemp(test_dir) == NULL)
		abort();
	setenv("USLAB_STATS_DIR", test_dir, 1);
	test_owner = getpid();
}

__attribute__((destructor)) static void rel_teardown(void)
{
	char cmd[PATH_MAX + 16];

	if (getpid() != test_owner)
		return;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", test_dir);
}

#define run_child test_run_child

static bool rseq_mode(void)
{
	return strncmp(uslab_mode(), "rseq", 4) == 0;
}

/* The locator of @pid in the test directory (segment.h). */
static void locator_of(char *buf, size_t n, pid_t pid)
{
	struct stat st;
	unsigned long long ns =
		stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
	snprintf(buf, n, "%s/uslab.%d.%llu", test_dir, (int)pid, ns);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* This process's locator, read. */
static bool my_locator(struct seg_locator *l)
{
	char loc[PATH_MAX];
	locator_of(loc, sizeof loc, getpid());
	int fd = open(loc, O_RDONLY);
	bool ok = fd >= 0 && pread(fd, l, sizeof *l, 0) == (ssize_t)sizeof *l;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Allocate @n objects of @c, write them, free them; 0 when every object
 * was new to this round (no double hand-out). */
static int churn(struct uslab_cache *c, size_t n, size_t size)
{
	void **v = malloc(n * sizeof *v);
	if (v == NULL)
		return 1;
	for (size_t i = 0; i < n; i++) {
		v[i] = uslab_cache_alloc(c);
		if (v[i] == NULL)
			return 2;
		memset(v[i], 0x5a, size);
		*(size_t *)v[i] = i;
	}
	for (size_t i = 0; i < n; i++)
		if (*(size_t *)v[i] != i)
			return 3; /* handed out twice */
	for (size_t i = 0; i < n; i++)
		uslab_cache_free(c, v[i]);
	free(v);
	return 0;
}

/* ---- Finding 1: descriptors it cannot vouch for ---- */

/* The program closes every descriptor it does not know of (closefrom(3)),
 * opens a file of its own and gets the number back, then uses caches in
 * every way that once touched the segment's descriptor (new record chunks,
 * a new arena, reap, destroy): its file must not change by a byte. */
static int descriptors_child(void *arg)
{
	(void)arg;
	struct uslab_cache *first = uslab_cache_create("before-close", 64, NULL);
	struct seg_locator l;
	if (first == NULL || churn(first, 1000, 64) != 0 || !my_locator(&l))
		return 10;
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/victim.%d", test_dir, (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0 && fd != (int)l.l_fd) { /* the segment's number, for the program */
		if (dup2(fd, (int)l.l_fd) != (int)l.l_fd)
			return 11;
		close(fd);
		fd = (int)l.l_fd;
	}
	static unsigned char pattern[16384], check[sizeof pattern];
	for (size_t i = 0; i < sizeof pattern; i++)
		pattern[i] = (unsigned char)(i * 7 + 3);
	if (write(fd, pattern, sizeof pattern) != (ssize_t)sizeof pattern)
		return 12;
	/* New records (a chunk holds 63) and a new arena (1024 caches each). */
	enum { N = 1200 };
	static struct uslab_cache *cs[N];
	for (int i = 0; i < N; i++)
		if ((cs[i] = uslab_cache_create("after-close", 64, NULL)) == NULL)
			return 13;
	for (int i = 0; i < N; i += 97)
		if (churn(cs[i], 300, 64) != 0)
			return 14;
	uslab_cache_reap(first);
	for (int i = 0; i < N; i++)
		if (uslab_cache_destroy(cs[i]) != 0)
			return 15;
	if (uslab_cache_destroy(first) != 0)
		return 16;
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_size != (off_t)sizeof pattern ||
	    pread(fd, check, sizeof check, 0) != (ssize_t)sizeof check ||
	    memcmp(check, pattern, sizeof pattern) != 0)
		return 17; /* the program's file was written */
	struct uslab_global_stats g;
	if (uslab_global_stats(&g) != 0 || strncmp(g.segment, "lost:", 5) != 0)
		return 18; /* and uslab says why it stopped publishing */
	close(fd);
	unlink(path);
	return 0;
}

START_TEST(rel_descriptors_never_touched)
{
	ck_assert_int_eq(run_child(descriptors_child, NULL, 60, NULL, 0), 0);
}
END_TEST

/* ---- Finding 2: truncation by another process ---- */

static int truncation_child(void *arg)
{
	(void)arg;
	struct uslab_cache *c = uslab_cache_create("truncated", 64, NULL);
	char loc[PATH_MAX], mem[96];
	struct seg_locator l;

	if (c == NULL || churn(c, 5000, 64) != 0 || !my_locator(&l))
		return 10;
	locator_of(loc, sizeof loc, getpid());
	pid_t pid = fork();
	if (pid == 0) {
		/* What `truncate -s 0` did to the old segment file: the locator
		 * now, and the segment through /proc (refused: it is sealed). */
		snprintf(mem, sizeof mem, "/proc/%d/fd/%lld", (int)getppid(), (long long)l.l_fd);
		int m = open(mem, O_RDWR);
		_exit(truncate(loc, 0) == 0 && m >= 0 && ftruncate(m, 0) != 0 && errno == EPERM
		              ? 0
		              : 1);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 12;
	/* Every store into the segment (the fast path's counters) goes on. */
	for (int i = 0; i < 20; i++)
		if (churn(c, 5000, 64) != 0)
			return 13;
	return uslab_cache_destroy(c) == 0 ? 0 : 14;
}

START_TEST(rel_truncation_no_sigbus)
{
	ck_assert_int_eq(run_child(truncation_child, NULL, 60, NULL, 0), 0);
}
END_TEST

/* ---- Finding 4: membarrier refused at run time ---- */

struct pinned {
	struct uslab_cache *p_cache;
	int p_cpu;
};

/* Fill this CPU's magazine: objects for reap to take from a running CPU. */
static void *fill_on_cpu(void *arg)
{
	struct pinned *p = arg;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(p->p_cpu, &one);
	if (sched_setaffinity(0, sizeof one, &one) != 0)
		return NULL;
	void *v[40];
	for (int i = 0; i < 40; i++)
		v[i] = uslab_cache_alloc(p->p_cache);
	for (int i = 0; i < 40; i++)
		uslab_cache_free(p->p_cache, v[i]);
	return NULL;
}

/* With @also_affinity, migration is refused too. Magazines grow under
 * contention (a resize: the third operation that fenced). */
static int membarrier_child(void *arg)
{
	bool also_affinity = arg != NULL;
	struct uslab_cache *c = uslab_cache_create("fenced", 64, NULL);
	struct uslab_stats st;
	pthread_t t[2];
	struct pinned p[2] = {{c, 0}, {c, 1}};

	if (c == NULL)
		return 10;
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 2 : 1;
	for (int i = 0; i < ncpu; i++)
		pthread_create(&t[i], NULL, fill_on_cpu, &p[i]);
	for (int i = 0; i < ncpu; i++)
		pthread_join(t[i], NULL);
	int deny[] = {SYS_membarrier, SYS_sched_setaffinity};
	if (test_deny_syscalls(deny, also_affinity ? 2 : 1) != 0) /* testutil.c */
		return 11;
	if (syscall(SYS_membarrier, 0, 0, 0) != -1 || errno != EPERM)
		return 12;   /* the filter is not in force: the test tests nothing */
	uslab_cache_reap(c); /* drained through a fence that now fails */
	if (uslab_cache_stats(c, &st) != 0)
		return 13;
	if (rseq_mode()) {
		const char *want = also_affinity ? "no remote drain" : "fences by migration";
		if (strstr(uslab_mode(), want) == NULL)
			return 14;
		if (!also_affinity && st.pcpu_objs != 0)
			return 15; /* migration fenced every CPU: all came back */
	}
	if (churn(c, 200000, 64) != 0)
		return 16;
	return uslab_cache_destroy(c) == 0 ? 0 : 17;
}

START_TEST(rel_membarrier_refused_degrades)
{
	char err[4096];
	int rc = run_child(membarrier_child, NULL, 60, err, sizeof err);
	ck_assert_msg(rc == 0, "membarrier refused: status %d: %s", rc, err);
	rc = run_child(membarrier_child, (void *)1, 60, err, sizeof err);
	ck_assert_msg(rc == 0, "membarrier and migration refused: status %d: %s", rc, err);
}
END_TEST

/* ---- Finding 6: cancellation ---- */

static int cancel_ctor_calls, cancel_dtor_calls; /* one thread at a time */
static long cancel_blocks;                       /* blocks out of cancel_src (atomic) */

static void *cancel_get(void *arg, size_t size)
{
	(void)arg;
	void *b = uslab_pagesrc_mmap()->get(NULL, size);
	if (b != NULL)
		__atomic_fetch_add(&cancel_blocks, 1, __ATOMIC_RELAXED);
	return b;
}

static void cancel_put(void *arg, void *block, size_t size)
{
	(void)arg;
	__atomic_fetch_sub(&cancel_blocks, 1, __ATOMIC_RELAXED);
	uslab_pagesrc_mmap()->put(NULL, block, size);
}

static const struct uslab_pagesrc cancel_src = {"cancel", cancel_get, cancel_put, NULL, NULL};

/* A ctor that is a cancellation point from its 100th object on. */
static int cancel_ctor(void *obj, void *arg)
{
	(void)obj;
	(void)arg;
	if (++cancel_ctor_calls > 100)
		pthread_testcancel();
	return 0;
}

static void cancel_dtor(void *obj, void *arg)
{
	(void)obj;
	(void)arg;
	cancel_dtor_calls++;
}

static void *alloc_then_wait(void *arg)
{
	void *o = uslab_cache_alloc(arg);
	pthread_testcancel();
	return o;
}

/* A request made before the call acts at the first cancellation point:
 * inside uslab_cache_create, it would once have left the stats lock held. */
static void *create_cancelled(void *arg)
{
	(void)arg;
	pthread_cancel(pthread_self());
	struct uslab_cache *c = uslab_cache_create("cancelled-create", 64, NULL);
	pthread_testcancel();
	return c;
}

static int foreach_sleepy(struct uslab_cache *c, void *arg)
{
	(void)c;
	(void)arg;
	usleep(1000); /* a cancellation point, under the registry lock */
	return 0;
}

static void *foreach_cancelled(void *arg)
{
	(void)arg;
	pthread_cancel(pthread_self());
	uslab_foreach_cache(foreach_sleepy, NULL);
	pthread_testcancel();
	return NULL;
}

static int cancel_child(void *arg)
{
	(void)arg;
	pthread_t t;
	void *ret;

	/* 1. The first create of the process, in a thread already cancelled. */
	pthread_create(&t, NULL, create_cancelled, NULL);
	pthread_join(t, &ret);
	if (ret != PTHREAD_CANCELED)
		return 10;
	/* 2. A walk cancelled while its callbacks sleep. */
	pthread_create(&t, NULL, foreach_cancelled, NULL);
	pthread_join(t, &ret);
	if (ret != PTHREAD_CANCELED)
		return 11;
	/* Every later create, destroy and fork still works (no lock held). */
	struct uslab_cache *d = uslab_cache_create("after-cancel", 64, NULL);
	if (d == NULL || uslab_cache_destroy(d) != 0)
		return 12;
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	int status;
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 13;
	/* 3. A ctor cancelled in the middle of a slab: nothing leaks. */
	struct uslab_cache *c = uslab_cache_create(
		"cancel-ctor", 64,
		&(struct uslab_cache_conf){
			.ctor = cancel_ctor, .dtor = cancel_dtor, .pagesrc = &cancel_src});
	if (c == NULL)
		return 14;
	pthread_create(&t, NULL, alloc_then_wait, c);
	pthread_cancel(t);
	pthread_join(t, &ret);
	if (ret != PTHREAD_CANCELED || cancel_ctor_calls <= 100)
		return 15;
	if (cancel_dtor_calls != cancel_ctor_calls - 1)
		return 16; /* each constructed object destructed, the cancelled one never made */
	if (__atomic_load_n(&cancel_blocks, __ATOMIC_RELAXED) != 0)
		return 17; /* the slab's block went back */
	return uslab_cache_destroy(c) == 0 ? 0 : 18;
}

START_TEST(rel_cancellation_leaves_nothing_held)
{
	ck_assert_int_eq(run_child(cancel_child, NULL, 30, NULL, 0), 0);
}
END_TEST

/* ---- Finding 7: the cost of a cache ---- */

static long count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	long n = 0;
	int ch;

	if (f == NULL)
		return -1;
	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

/* 100,000 caches with the stats on: mappings grow by at most one per 64
 * caches, and shared memory is taken for slots that start, not per CPU at
 * create. */
static int many_caches_child(void *arg)
{
	(void)arg;
	enum { N = 100000 };
	struct uslab_cache **cs = malloc(N * sizeof *cs);
	if (cs == NULL)
		return 10;
	struct uslab_cache *warm =
		uslab_cache_create("warm", 64, NULL); /* the segment, the magazines */
	if (warm == NULL || churn(warm, 100, 64) != 0)
		return 11;
	long before = count_maps();
	for (int i = 0; i < N; i++)
		if ((cs[i] = uslab_cache_create("many", 64, NULL)) == NULL)
			return 12;
	long after = count_maps();
	fprintf(stderr, "# %d caches: %ld -> %ld mappings\n", N, before, after);
	if (after - before > N / 64)
		return 13;
	/* Their records are published, and no slot started: the segment holds
	 * records (256 bytes each) and little else. */
	char mem[96];
	struct seg_locator l;
	if (!my_locator(&l))
		return 14;
	snprintf(mem, sizeof mem, "/proc/self/fd/%lld", (long long)l.l_fd);
	struct stat st;
	if (stat(mem, &st) != 0)
		return 15;
	uint64_t used = (uint64_t)st.st_blocks * 512, records = (uint64_t)N * 256;
	fprintf(stderr, "# segment: %llu KiB in use for %llu KiB of records\n",
	        (unsigned long long)(used >> 10), (unsigned long long)(records >> 10));
	if (used > records + records / 4 + (4u << 20))
		return 16;
	for (int i = 0; i < N; i += 1000)
		if (churn(cs[i], 10, 64) != 0)
			return 17;
	for (int i = 0; i < N; i++)
		if (uslab_cache_destroy(cs[i]) != 0)
			return 18;
	free(cs);
	return 0;
}

START_TEST(rel_many_caches_bounded)
{
	ck_assert_int_eq(run_child(many_caches_child, NULL, 240, NULL, 0), 0);
}
END_TEST

/* Entries of /proc/self/fd (-1 when unreadable). */
static long count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	long n = 0;
	if (d == NULL)
		return -1;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* Resident bytes (statm), -1 when unreadable. */
static long long resident_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	long long size, res;
	int ok = f != NULL && fscanf(f, "%lld %lld", &size, &res) == 2;
	if (f != NULL)
		fclose(f);
	return ok ? res * sysconf(_SC_PAGESIZE) : -1;
}

/* What held up before issue 8 and must stay so: 100,000 create, use and
 * destroy cycles leave mappings, descriptors and resident memory flat
 * (every structure, record, slot and page of a destroyed cache reused). */
static int cycles_child(void *arg)
{
	int n = *(int *)arg;
	struct uslab_cache *keep = uslab_cache_create("keep", 64, NULL);
	if (keep == NULL || churn(keep, 100, 64) != 0)
		return 10;
	long maps = 0, fds = 0;
	long long rss = 0;
	for (int i = 0; i < n + 1000; i++) {
		if (i == 999 || i == 1000) { /* warmed up: the magazines, arenas,
		                              * chunks exist (and the measuring's
		                              * own buffers, once: ASan maps) */
			maps = count_maps();
			fds = count_fds();
			rss = resident_bytes();
		}
		/* No malloc in the loop: ASan's quarantine would map memory. */
		struct uslab_cache *c =
			uslab_cache_create(i % 2 ? "cycle" : "item", 64 + 8 * (i % 8), NULL);
		if (c == NULL)
			return 11;
		void *x = uslab_cache_alloc(c), *y = uslab_cache_alloc(c);
		if (x == NULL || y == NULL || x == y)
			return 11;
		memset(x, 0x5a, 64);
		uslab_cache_free(c, x);
		uslab_cache_free(c, y);
		if (uslab_cache_destroy(c) != 0)
			return 11;
	}
	long maps2 = count_maps(), fds2 = count_fds();
	long long rss2 = resident_bytes();
	fprintf(stderr,
	        "# %d cycles: mappings %ld -> %ld, descriptors %ld -> %ld, RSS %lld -> %lld KiB\n",
	        n, maps, maps2, fds, fds2, rss >> 10, rss2 >> 10);
	/* Two mappings of slack: adjacent anonymous mappings merge or not
	 * depending on where the kernel placed them (one check.sh run saw a
	 * difference with nothing leaked); a leak grows by one per 16 MiB
	 * chunk (the control: 53 -> 69). */
	if (maps2 > maps + 2)
		return 12;
	if (fds2 != fds)
		return 13;
	if (rss2 - rss > (1 << 20))
		return 14;
	return uslab_cache_destroy(keep) == 0 ? 0 : 15;
}

START_TEST(rel_create_destroy_cycles_flat)
{
	const char *f = getenv("CK_FORK"); /* "no": the valgrind setup, 20x slower */
	int n = f != NULL && strcmp(f, "no") == 0 ? 2000 : 100000;
	ck_assert_int_eq(run_child(cycles_child, &n, 240, NULL, 0), 0);
}
END_TEST

/* ---- Finding 8: a CPU bound that sysfs under-reports ---- */

struct cpu_run {
	struct uslab_cache *r_cache;
	int r_cpu;
	int r_rc;
};

static void *run_on_cpu(void *arg)
{
	struct cpu_run *r = arg;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(r->r_cpu, &one);
	r->r_rc = sched_setaffinity(0, sizeof one, &one) != 0 ? 20 : churn(r->r_cache, 100000, 64);
	return NULL;
}

/* In a mount namespace whose /sys says there is one CPU (a container's
 * view): threads on every CPU still get sound objects. */
static int fake_possible_child(void *arg)
{
	(void)arg;
	char fake[PATH_MAX];
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return 77;
	snprintf(fake, sizeof fake, "%s/possible", test_dir);
	FILE *f = fopen(fake, "w");
	if (f == NULL || fputs("0\n", f) < 0 || fclose(f) != 0 ||
	    mount(fake, "/sys/devices/system/cpu/possible", NULL, MS_BIND, NULL) != 0)
		return 77;
	/* A new program reads the fake list when uslab starts. */
	setenv("USLAB_TEST_FAKE_POSSIBLE", "1", 1);
	execl("/proc/self/exe", "test-reliability", (char *)NULL);
	return 12;
}

static int fake_possible_main(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	char line[64] = "";
	if (f == NULL || fgets(line, sizeof line, f) == NULL || strcmp(line, "0\n") != 0)
		return 13; /* not the fake: the test tests nothing */
	fclose(f);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct uslab_cache *c = uslab_cache_create("undercounted", 64, NULL);
	struct uslab_global_stats g;
	if (c == NULL || uslab_global_stats(&g) != 0 || (long)g.cpus < ncpu)
		return 14;
	struct cpu_run r[64];
	pthread_t t[64];
	int n = ncpu < 64 ? (int)ncpu : 64;
	for (int i = 0; i < n; i++) {
		r[i] = (struct cpu_run){c, i, 0};
		pthread_create(&t[i], NULL, run_on_cpu, &r[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (r[i].r_rc != 0)
			return 30 + r[i].r_rc;
	}
	return uslab_cache_destroy(c) == 0 ? 0 : 15;
}

START_TEST(rel_cpu_bound_from_the_kernel)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "# skipped: one CPU, nothing can be under-reported\n");
		return;
	}
	int rc = run_child(fake_possible_child, NULL, 60, NULL, 0);
	if (rc == 77) {
		fprintf(stderr, "# skipped: no mount namespace here (needs root)\n");
		return;
	}
	ck_assert_int_eq(rc, 0);
}
END_TEST

/* ---- Finding 9: stale and spoofed segments ---- */

enum { END_EXIT, END_KILL, END_ABORT, END_EXEC };

/* A process that publishes, then ends the way @how says. */
static int publisher_child(void *arg)
{
	int how = (int)(intptr_t)arg;
	struct uslab_cache *c = uslab_cache_create(
		"stale", 64, &(struct uslab_cache_conf){.flags = USLAB_NOMAGAZINE});
	if (c == NULL)
		return 10;
	void *o = uslab_cache_alloc(c);
	switch (how) {
	case END_EXIT:
		_exit(0);
	case END_KILL:
		raise(SIGKILL);
		break;
	case END_ABORT:
		uslab_cache_free(c, o);
		uslab_cache_free(c, o); /* a double free: the misuse report aborts */
		break;
	case END_EXEC:
		execl("/bin/sleep", "sleep", "30", (char *)NULL);
		break;
	}
	return 11;
}

START_TEST(rel_stale_segments_recognised)
{
	static const char *const names[] = {"_exit", "SIGKILL", "misuse abort"};
	char loc[PATH_MAX];
	struct uslab_proc procs[64];

	for (int how = END_EXIT; how <= END_ABORT; how++) {
		int fds[2];
		ck_assert_int_eq(pipe(fds), 0);
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			dup2(fds[1], 2); /* the report goes here, not into the log */
			_exit(publisher_child((void *)(intptr_t)how));
		}
		close(fds[1]);
		char buf[512];
		while (read(fds[0], buf, sizeof buf) > 0)
			;
		close(fds[0]);
		int status;
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		locator_of(loc, sizeof loc, pid);
		errno = 0;
		ck_assert_msg(uslab_stats_open(pid) == NULL && errno == ENOENT,
		              "%s: open gave errno %d", names[how], errno);
		if (how == END_ABORT) /* the report removed it before abort() */
			ck_assert_msg(!exists(loc), "%s: locator left", names[how]);
		int n = uslab_stats_list(procs, 64);
		for (int i = 0; i < n && i < 64; i++)
			ck_assert_int_ne(procs[i].pid, pid);
		ck_assert_msg(!exists(loc), "%s: stale locator not removed", names[how]);
	}

	/* execve: the same pid and start time, but the memfd is gone. */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(publisher_child((void *)(intptr_t)END_EXEC));
	locator_of(loc, sizeof loc, pid);
	for (int i = 0; i < 500; i++) { /* until the new program runs */
		char exe[64], target[PATH_MAX] = "";
		snprintf(exe, sizeof exe, "/proc/%d/exe", (int)pid);
		ssize_t k = readlink(exe, target, sizeof target - 1);
		if (k > 0 && strstr(target, "sleep") != NULL && exists(loc))
			break;
		usleep(10000);
	}
	ck_assert(exists(loc));
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(pid));
	ck_assert_int_eq(errno, ENOENT);
	uslab_stats_list(procs, 64);
	ck_assert(!exists(loc));
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}
END_TEST

/* Another user pre-creates our locator with forged contents: we publish
 * under another name, and the reader does not show the forgery. */
static int spoofed_child(void *arg)
{
	(void)arg;
	char loc[PATH_MAX];
	locator_of(loc, sizeof loc, getpid());
	int fd = open(loc, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0 || write(fd, "USLABLOC forged by somebody else", 32) != 32 ||
	    fchown(fd, 65534, 65534) != 0)
		return 77;
	close(fd);
	struct uslab_cache *c = uslab_cache_create("genuine", 64, NULL);
	struct uslab_global_stats g;
	if (c == NULL || uslab_global_stats(&g) != 0 || strstr(g.segment, "/uslab.") == NULL ||
	    strcmp(g.segment, loc) == 0)
		return 10; /* not published under another name */
	struct uslab_reader *r = uslab_stats_open(getpid());
	struct uslab_snapshot s;
	if (r == NULL || uslab_stats_read(r, &s) != 0)
		return 11;
	bool genuine = false;
	for (size_t i = 0; i < s.ncaches; i++)
		genuine |= strcmp(s.caches[i].name, "genuine") == 0;
	uslab_snapshot_free(&s);
	uslab_stats_close(r);
	if (!genuine)
		return 12;
	struct stat st;
	if (lstat(loc, &st) != 0 || st.st_uid != 65534)
		return 13; /* somebody else's file is left alone */
	unlink(loc);
	return uslab_cache_destroy(c) == 0 ? 0 : 14;
}

START_TEST(rel_spoofed_locator_refused)
{
	if (geteuid() != 0) {
		fprintf(stderr, "# skipped: another user's file needs root to make\n");
		return;
	}
	ck_assert_int_eq(run_child(spoofed_child, NULL, 30, NULL, 0), 0);
}
END_TEST

/* Two processes with the same pid in two pid namespaces, one directory:
 * the namespace is in the name, so neither touches the other's. */
static int pidns_inner(void *arg)
{
	(void)arg;
	struct uslab_cache *c = uslab_cache_create("inner", 64, NULL);
	struct uslab_global_stats g;
	if (getpid() != 1 || c == NULL || uslab_global_stats(&g) != 0)
		return 20;
	/* Tell the outer test where we published, then wait to be killed. */
	if (write(3, g.segment, strlen(g.segment) + 1) < 0)
		return 21;
	pause();
	return 0;
}

static int pidns_child(void *arg)
{
	(void)arg;
	if (unshare(CLONE_NEWPID) != 0)
		return 77;
	pid_t pid = fork(); /* pid 1 of the new namespace */
	if (pid == 0)
		_exit(pidns_inner(NULL));
	int status;
	waitpid(pid, &status, 0);
	return 0;
}

START_TEST(rel_pid_namespaces_apart)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(fds[1], 3);
		_exit(pidns_child(NULL));
	}
	close(fds[1]);
	char where[PATH_MAX] = "";
	ssize_t k = read(fds[0], where, sizeof where - 1);
	close(fds[0]);
	if (k <= 0) {
		int status;
		waitpid(pid, &status, 0);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 77,
		              "namespace child status %#x", status);
		fprintf(stderr, "# skipped: no pid namespace here (needs root)\n");
		return;
	}
	/* Its locator says pid 1 and its own namespace: not ours to list or
	 * to remove as stale, though our pid 1 is another process. */
	char mine[PATH_MAX];
	locator_of(mine, sizeof mine, 1);
	ck_assert_str_ne(where, mine);
	ck_assert(exists(where));
	struct uslab_proc procs[64];
	int n = uslab_stats_list(procs, 64);
	for (int i = 0; i < n && i < 64; i++)
		ck_assert_int_ne(procs[i].pid, 1);
	ck_assert(exists(where));
	kill(pid, SIGKILL); /* the namespace's init goes with it */
	waitpid(pid, NULL, 0);
	unlink(where);
}
END_TEST

/* ---- Finding 10: the reader's memory ---- */

/* A hostile segment image of 3 MB that claims everything it can: the
 * reader refuses it (or reads it) within its documented ceiling, under an
 * address-space limit a 4 GiB reservation would not fit. */
static int reader_bound_child(void *arg)
{
	(void)arg;
	size_t len = (size_t)3 << 20;
	unsigned char *img = calloc(1, len);
	/* What is mapped now, plus 192 MiB: enough for the documented
	 * ceiling (128 MiB), far from a reservation by what the file claims. */
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long pages = 0;
	if (img == NULL || f == NULL || fscanf(f, "%lu", &pages) != 1)
		return 10;
	fclose(f);
	rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)192 << 20);
	struct rlimit rl = {lim, lim};
	if (setrlimit(RLIMIT_AS, &rl) != 0)
		return 10;
	/* A header and a table of every record live, each claiming every CPU. */
	struct seg_header h = {
		.h_version = USLAB_SEGMENT_VERSION,
		.h_hdr_size = sizeof h,
		.h_rec_size = sizeof(struct seg_rec),
		.h_ctr_size = 64,
		.h_ncpus = SEG_MAX_CPUS,
		.h_page_size = 4096,
		.h_ctr_stride = 1 << 16,
		.h_pid = 1,
		.h_tab_off = 4096,
	};
	memcpy(h.h_magic, SEG_MAGIC, sizeof h.h_magic);
	memset(h.h_cpus_seen, 0xff, sizeof h.h_cpus_seen); /* every CPU seen */
	memcpy(img, &h, sizeof h);
	/* Tables as full as a reader accepts, chained to the end of the file,
	 * every record live: only the allocation ceilings stand in the way. */
	size_t tab = 4096;
	size_t chunk = sizeof(struct seg_table) + (SEG_CHUNK_MAX_REC - 1) * sizeof(struct seg_rec);
	while (tab + chunk <= len) {
		struct seg_table t = {.t_nrec = SEG_CHUNK_MAX_REC - 1};
		if (tab + 2 * chunk <= len)
			t.t_next = tab + chunk;
		memcpy(img + tab, &t, sizeof t);
		for (uint32_t i = 0; i < t.t_nrec; i++) {
			struct seg_rec r = {.r_state = SEG_REC_LIVE,
			                    .r_name = "x",
			                    .r_obj_size = 8,
			                    .r_slot_size = 8,
			                    .r_align = 8,
			                    .r_objs_per_slab = 1,
			                    .r_slab_size = 65536};
			memcpy(img + tab + sizeof t + (size_t)i * sizeof r, &r, sizeof r);
		}
		tab += chunk;
	}
	struct uslab_snapshot s;
	errno = 0;
	int ret = uslab_stats_parse(img, len, &s);
	if (ret == 0)
		uslab_snapshot_free(&s);
	free(img);
	return ret == 0 || errno == EPROTO ? 0 : 11;
}

START_TEST(rel_reader_allocations_bounded)
{
	ck_assert_int_eq(run_child(reader_bound_child, NULL, 60, NULL, 0), 0);
}
END_TEST

/* ---- Finding 13: re-entry ---- */

static struct uslab_cache *reentry_cache;

static int ctor_allocates_own(void *obj, void *arg)
{
	(void)obj;
	(void)arg;
	return uslab_cache_alloc(reentry_cache) != NULL ? 0 : ENOMEM;
}

static void dtor_allocates_own(void *obj, void *arg)
{
	(void)obj;
	(void)arg;
	uslab_cache_free(reentry_cache, uslab_cache_alloc(reentry_cache));
}

static int reentry_child(void *arg)
{
	const struct uslab_cache_conf conf_ctor = {.ctor = ctor_allocates_own};
	const struct uslab_cache_conf conf_dtor = {.dtor = dtor_allocates_own};
	reentry_cache = uslab_cache_create("reentered", 64, arg != NULL ? &conf_dtor : &conf_ctor);
	if (reentry_cache == NULL)
		return 10;
	if (arg == NULL) {
		uslab_cache_alloc(reentry_cache); /* the ctor recurses: reported */
		return 11;
	}
	uslab_cache_free(reentry_cache, uslab_cache_alloc(reentry_cache));
	uslab_cache_destroy(reentry_cache); /* the dtor uses the dying cache: reported */
	return 12;
}

START_TEST(rel_reentry_reported)
{
	char err[1024];
	for (int dtor = 0; dtor < 2; dtor++) {
		int rc = run_child(reentry_child, dtor ? (void *)1 : NULL, 30, err, sizeof err);
		ck_assert_msg(rc == 128 + SIGABRT, "%s: status %d: %s", dtor ? "dtor" : "ctor", rc,
		              err);
		ck_assert_msg(strstr(err, "uslab: cache 'reentered': object ") != NULL &&
		                      strstr(err, "cache used from its own ctor or dtor") != NULL &&
		                      strchr(err, '\n') == err + strlen(err) - 1,
		              "not the one-line report: %s", err);
	}
}
END_TEST

struct nested {
	int n_caches;
	int n_inner;
	int n_fork_ok;
	int n_create_errno, n_destroy_errno;
	struct uslab_cache *n_victim;
};

static int count_inner(struct uslab_cache *c, void *arg)
{
	(void)c;
	((struct nested *)arg)->n_inner++;
	return 0;
}

static int nested_cb(struct uslab_cache *c, void *arg)
{
	struct nested *n = arg;
	struct uslab_global_stats g;
	FILE *devnull = fopen("/dev/null", "w");

	n->n_caches++;
	if (uslab_global_stats(&g) != 0 || devnull == NULL || uslab_slabinfo(devnull) != 0 ||
	    uslab_foreach_cache(count_inner, n) != 0)
		return 1;
	fclose(devnull);
	void *o = uslab_cache_alloc(c);
	uslab_cache_free(c, o);
	uslab_cache_reap(c);
	errno = 0;
	if (uslab_cache_create("inside", 64, NULL) == NULL)
		n->n_create_errno = errno;
	errno = 0;
	if (uslab_cache_destroy(n->n_victim) != 0)
		n->n_destroy_errno = errno;
	pid_t pid = fork();
	if (pid == 0) {
		/* The child is inside the callback too (it holds the registry):
		 * what a callback may do works, creating still refuses. */
		void *k = uslab_cache_alloc(c);
		uslab_cache_free(c, k);
		struct uslab_global_stats cg;
		errno = 0;
		_exit(uslab_global_stats(&cg) == 0 &&
		                      uslab_cache_create("in-child", 64, NULL) == NULL &&
		                      errno == EDEADLK
		              ? 0
		              : 1);
	}
	int status;
	if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0)
		n->n_fork_ok++;
	return n->n_caches >= 2; /* enough: stop the walk */
}

static int nested_child(void *arg)
{
	(void)arg;
	struct nested n = {0};
	struct uslab_cache *a = uslab_cache_create("walked-a", 64, NULL);
	n.n_victim = uslab_cache_create("walked-b", 64, NULL);
	if (a == NULL || n.n_victim == NULL)
		return 10;
	if (uslab_foreach_cache(nested_cb, &n) != 1)
		return 11;
	if (n.n_caches != 2 || n.n_inner < 4 || n.n_fork_ok != 2 || n.n_create_errno != EDEADLK ||
	    n.n_destroy_errno != EDEADLK)
		return 12;
	/* And after the walk, all of it works again. */
	struct uslab_cache *d = uslab_cache_create("after-walk", 64, NULL);
	if (d == NULL || uslab_cache_destroy(d) != 0 || uslab_cache_destroy(n.n_victim) != 0 ||
	    uslab_cache_destroy(a) != 0)
		return 13;
	return 0;
}

START_TEST(rel_foreach_callbacks_may_call_back)
{
	ck_assert_int_eq(run_child(nested_child, NULL, 30, NULL, 0), 0);
}
END_TEST

/* ---- Finding 14: resource failure in the fork child ---- */

static int fork_fail_child(void *arg)
{
	(void)arg;
	struct uslab_cache *c = uslab_cache_create("forked-short", 64, NULL);
	if (c == NULL || churn(c, 10000, 64) != 0)
		return 10;
	/* Just enough address space for what is mapped now: the child's copy
	 * of its counters (a new mapping) cannot be made. */
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long pages = 0;
	if (f == NULL || fscanf(f, "%lu", &pages) != 1)
		return 11;
	fclose(f);
	rlim_t now = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE);
	struct rlimit rl = {now + (64 << 10), RLIM_INFINITY};
	if (setrlimit(RLIMIT_AS, &rl) != 0)
		return 12;
	pid_t pid = fork();
	if (pid == 0) {
		struct uslab_global_stats g;
		int bad = uslab_global_stats(&g) != 0 || strstr(g.segment, "shared") == NULL;
		rl.rlim_cur = RLIM_INFINITY;
		setrlimit(RLIMIT_AS, &rl);
		_exit(bad ? 2 : churn(c, 10000, 64));
	}
	rl.rlim_cur = RLIM_INFINITY;
	setrlimit(RLIMIT_AS, &rl);
	int status;
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 13;
	if (!WIFEXITED(status))
		return 14; /* the child aborted */
	return WEXITSTATUS(status) == 0 ? 0 : 20 + WEXITSTATUS(status);
}

START_TEST(rel_fork_child_never_aborts)
{
	ck_assert_int_eq(run_child(fork_fail_child, NULL, 30, NULL, 0), 0);
}
END_TEST

static Suite *reliability_suite(void)
{
	Suite *s = suite_create("reliability");
	TCase *tc = tcase_create("environment");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, rel_descriptors_never_touched);
	tcase_add_test(tc, rel_truncation_no_sigbus);
	tcase_add_test(tc, rel_membarrier_refused_degrades);
	tcase_add_test(tc, rel_cancellation_leaves_nothing_held);
	tcase_add_test(tc, rel_many_caches_bounded);
	tcase_add_test(tc, rel_create_destroy_cycles_flat);
	tcase_add_test(tc, rel_cpu_bound_from_the_kernel);
	tcase_add_test(tc, rel_fork_child_never_aborts);
	suite_add_tcase(s, tc);

	tc = tcase_create("segments");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, rel_stale_segments_recognised);
	tcase_add_test(tc, rel_spoofed_locator_refused);
	tcase_add_test(tc, rel_pid_namespaces_apart);
	tcase_add_test(tc, rel_reader_allocations_bounded);
	suite_add_tcase(s, tc);

	tc = tcase_create("reentry");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, rel_reentry_reported);
	tcase_add_test(tc, rel_foreach_callbacks_may_call_back);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {reliability_suite, NULL};

/* The program re-executed in a fake mount namespace (finding 8) runs its
 * subject from main's constructor, before Check. */
__attribute__((constructor(200))) static void rel_exec_helper(void)
{
	if (getenv("USLAB_TEST_FAKE_POSSIBLE") != NULL)
		_exit(fake_possible_main());
}
