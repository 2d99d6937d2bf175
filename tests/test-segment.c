/* SPDX-License-Identifier: MIT */
/* The live statistics segment: publishing, reading, cleanup, hostile images, fork. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uslab.h>
#include <uslab/stats.h>

#include "../slab/segment/segment.h"
#include "testutil.h"
#if USLAB_HAVE_VALGRIND_H
#include <valgrind/memcheck.h>
#define VG_DEFINED_TEST(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#else
#define VG_DEFINED_TEST(p, n) ((void)(p), (void)(n))
#endif

/*
 * The whole program publishes into a private directory (USLAB_STATS_DIR set
 * by a constructor before any cache exists), so other processes' segments
 * never show up. With CK_FORK (the default) each test is its own process
 * with its own segment; with CK_FORK=no every test shares one, so tests
 * look their caches up by name. Tests that need a fresh process (stats
 * off, another directory, exit) run this same binary again as a helper:
 * USLAB_TEST_HELPER selects what the constructor does before main().
 */

static char test_dir[PATH_MAX];
static pid_t test_owner;

/* The locator of @pid in @dir (segment.h: uslab.<pid>.<pidns>); the pid
 * namespace is ours (helpers and children share it). */
static void seg_path_of(char *buf, size_t n, const char *dir, pid_t pid)
{
	struct stat st;
	unsigned long long ns =
		stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
	if (snprintf(buf, n, "%s/uslab.%d.%llu", dir, (int)pid, ns) >= (int)n)
		abort();
}

/* The segment itself (the memfd the locator @path names), opened for
 * reading through /proc; -1 if there is none. */
static int seg_open_memfd(const char *path, int flags)
{
	struct seg_locator l;
	char p[96];
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	ssize_t k = pread(fd, &l, sizeof l, 0);
	close(fd);
	if (k != (ssize_t)sizeof l)
		return -1;
	snprintf(p, sizeof p, "/proc/%lld/fd/%lld", (long long)l.l_pid, (long long)l.l_fd);
	return open(p, flags);
}

/* Possible CPUs, as the library counts them. */
static uint32_t pcpu_cpus(void)
{
	struct uslab_global_stats g;
	if (uslab_global_stats(&g) != 0)
		abort();
	return g.cpus;
}

static bool file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* Helper mode: create a cache, report "<pid> <segment exists>" on stdout,
 * then exit normally (so the exit handler runs). */
static void helper_main(void)
{
	struct uslab_cache *c = uslab_cache_create("helper", 64, NULL);
	void *o = uslab_cache_alloc(c);
	char path[PATH_MAX];
	const char *dir = getenv("USLAB_STATS_DIR");

	seg_path_of(path, sizeof path, dir != NULL ? dir : "/dev/shm", getpid());
	printf("%d %d\n", (int)getpid(), file_exists(path));
	fflush(stdout);
	uslab_cache_free(c, o);
	exit(0);
}

static const char *test_exe = "/proc/self/exe";

/* glibc passes main's arguments to constructors: argv[0] is this program,
 * which /proc/self/exe is not under valgrind. */
__attribute__((constructor)) static void test_segment_setup(int argc, char **argv)
{
	if (argc > 0 && argv[0] != NULL && strchr(argv[0], '/') != NULL)
		test_exe = argv[0];
	if (getenv("USLAB_TEST_HELPER") != NULL)
		helper_main();
	snprintf(test_dir, sizeof test_dir, "/tmp/uslab-test-segment-XXXXXX");
	if (mkdtemp(test_dir) == NULL)
		abort();
	setenv("USLAB_STATS_DIR", test_dir, 1);
	test_owner = getpid();
}

__attribute__((destructor)) static void test_segment_teardown(void)
{
	if (getpid() != test_owner)
		return;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", test_dir);
}

/* Run this binary as a helper with @env added; returns the pid it printed
 * and whether it saw its segment. */
static pid_t run_helper(const char *env1, const char *env2, int *saw)
{
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		setenv("USLAB_TEST_HELPER", "1", 1);
		if (env1 != NULL)
			putenv((char *)env1);
		if (env2 != NULL)
			putenv((char *)env2);
		execl(test_exe, "test-segment", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	char buf[64] = {0};
	ssize_t k = read(fds[0], buf, sizeof buf - 1);
	close(fds[0]);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_gt(k, 0);
	int hp = 0;
	ck_assert_int_eq(sscanf(buf, "%d %d", &hp, saw), 2);
	ck_assert_int_eq(hp, pid);
	return pid;
}

/* The snapshot entry of the cache named @name, or NULL. */
static const struct uslab_stats *snap_find(const struct uslab_snapshot *s, const char *name,
                                           size_t *idx)
{
	for (size_t i = 0; i < s->ncaches; i++)
		if (strcmp(s->caches[i].name, name) == 0) {
			if (idx != NULL)
				*idx = i;
			return &s->caches[i];
		}
	return NULL;
}

static void snapshot_self(struct uslab_snapshot *s)
{
	struct uslab_reader *r = uslab_stats_open(getpid());
	ck_assert_msg(r != NULL, "open: %s", strerror(errno));
	ck_assert_int_eq(uslab_stats_read(r, s), 0);
	uslab_stats_close(r);
}

/* Some traffic: @n allocations, every other one freed; the rest in @keep. */
static void churn(struct uslab_cache *c, void **keep, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		keep[i] = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(keep[i]);
	}
	for (size_t i = 0; i < n; i += 2) {
		uslab_cache_free(c, keep[i]);
		keep[i] = NULL;
	}
}

static void unchurn(struct uslab_cache *c, void **keep, size_t n)
{
	for (size_t i = 0; i < n; i++)
		uslab_cache_free(c, keep[i]);
}

/* Every field of @c's snapshot entry equals uslab_cache_stats(). */
static void assert_same(const struct uslab_snapshot *s, struct uslab_cache *c)
{
	struct uslab_stats st;
	size_t idx;
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	const struct uslab_stats *got = snap_find(s, uslab_cache_name(c), &idx);
	ck_assert_ptr_nonnull(got);
	ck_assert_uint_eq(got->active_objs, st.active_objs);
	ck_assert_uint_eq(got->total_objs, st.total_objs);
	ck_assert_uint_eq(got->allocs, st.allocs);
	ck_assert_uint_eq(got->frees, st.frees);
	ck_assert_uint_eq(got->pcpu_objs, st.pcpu_objs);
	ck_assert_uint_eq(got->depot_objs, st.depot_objs);
	ck_assert_int_eq(memcmp(got, &st, sizeof st), 0);
	/* The reader lists the CPUs that ever started a slot; the others
	 * hold nothing. */
	uint64_t cpu[1024];
	size_t n = uslab_cache_cpu_objects(c, cpu, 1024);
	ck_assert_uint_le(s->ncpus, n);
	for (size_t i = 0; i < n && i < 1024; i++)
		ck_assert_uint_eq(i < s->ncpus ? s->cpu_objs[idx * s->ncpus + i] : 0, cpu[i]);
}

/* ---- Publishing ---- */

START_TEST(segment_appears_owner_only)
{
	struct uslab_cache *c = uslab_cache_create("appears", 64, NULL);
	char path[PATH_MAX];
	struct stat st;

	ck_assert_ptr_nonnull(c);
	seg_path_of(path, sizeof path, test_dir, getpid());
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_uint_eq(st.st_uid, geteuid());
	/* The segment: a memfd of ours, sealed so that nobody can shrink it. */
	int fd = seg_open_memfd(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq(st.st_uid, geteuid());
	int seals = fcntl(fd, F_GET_SEALS);
	ck_assert_int_ge(seals, 0);
	ck_assert(seals & F_SEAL_SHRINK);
	ck_assert(seals & F_SEAL_SEAL);
	errno = 0;
	ck_assert_int_ne(ftruncate(fd, 0), 0);
	ck_assert_int_eq(errno, EPERM);
	close(fd);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

START_TEST(segment_reader_same_numbers)
{
	struct uslab_cache *a = uslab_cache_create("same-a", 64, NULL);
	struct uslab_cache *b = uslab_cache_create(
		"same-b", 200, &(struct uslab_cache_conf){.flags = USLAB_NOMAGAZINE});
	void *ka[3000], *kb[500];
	struct uslab_snapshot s;

	churn(a, ka, 3000);
	churn(b, kb, 500);
	snapshot_self(&s);
	assert_same(&s, a);
	assert_same(&s, b);
	struct uslab_global_stats g;
	ck_assert_int_eq(uslab_global_stats(&g), 0);
	ck_assert_str_eq(s.mode, g.mode);
	ck_assert_uint_ge(s.ncpus, 1); /* the CPUs that started a slot */
	ck_assert_uint_le(s.ncpus, g.cpus);
	ck_assert_uint_eq(s.bytes_mapped, g.bytes_mapped);
	ck_assert_int_eq(s.pid, getpid());
	size_t ia, ib;
	snap_find(&s, "same-a", &ia);
	snap_find(&s, "same-b", &ib);
	ck_assert_uint_lt(ia, ib); /* creation order */
	uslab_snapshot_free(&s);

	/* A forked child reads the parent, which stays still until it is done. */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct uslab_snapshot cs;
		struct uslab_stats st;
		struct uslab_reader *r = uslab_stats_open(getppid());
		if (r == NULL || uslab_stats_read(r, &cs) != 0)
			_exit(2);
		uslab_stats_close(r);
		const struct uslab_stats *got = snap_find(&cs, "same-a", NULL);
		uslab_cache_stats(a, &st); /* our copy of the parent, as at the fork */
		int same = got != NULL && memcmp(got, &st, sizeof st) == 0;
		uslab_snapshot_free(&cs);
		_exit(same ? 0 : 3);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);

	unchurn(a, ka, 3000);
	unchurn(b, kb, 500);
	snapshot_self(&s);
	assert_same(&s, a);
	assert_same(&s, b);
	uslab_snapshot_free(&s);
	ck_assert_int_eq(uslab_cache_destroy(a), 0);
	ck_assert_int_eq(uslab_cache_destroy(b), 0);
	snapshot_self(&s);
	ck_assert_ptr_null(snap_find(&s, "same-a", NULL));
	ck_assert_ptr_null(snap_find(&s, "same-b", NULL));
	uslab_snapshot_free(&s);
}
END_TEST

/* Destroyed caches give their file space to later ones: create/destroy in
 * a loop does not grow the file. */
START_TEST(segment_space_reused)
{
	char path[PATH_MAX];
	struct stat st;
	off_t size = 0;

	seg_path_of(path, sizeof path, test_dir, getpid());
	for (int i = 0; i < 200; i++) {
		struct uslab_cache *c = uslab_cache_create("reuse", 64, NULL);
		void *o = uslab_cache_alloc(c);
		uslab_cache_free(c, o);
		ck_assert_int_eq(uslab_cache_destroy(c), 0);
		int fd = seg_open_memfd(path, O_RDONLY);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(fstat(fd, &st), 0);
		close(fd);
		if (i == 10)
			size = st.st_size;
	}
	ck_assert_int_eq(st.st_size, size);
}
END_TEST

START_TEST(segment_off_publishes_nothing)
{
	char env[PATH_MAX + 32], path[PATH_MAX];
	int saw = -1;

	snprintf(env, sizeof env, "USLAB_STATS_DIR=%s", test_dir);
	pid_t pid = run_helper(env, "USLAB_STATS=0", &saw);
	ck_assert_int_eq(saw, 0);
	seg_path_of(path, sizeof path, test_dir, pid);
	ck_assert(!file_exists(path));
}
END_TEST

START_TEST(segment_dir_moves_and_removed_at_exit)
{
	char dir[] = "/tmp/uslab-test-segdir-XXXXXX", env[PATH_MAX + 32], path[PATH_MAX];
	int saw = -1;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(env, sizeof env, "USLAB_STATS_DIR=%s", dir);
	pid_t pid = run_helper(env, NULL, &saw);
	ck_assert_int_eq(saw, 1); /* it was there while the helper ran */
	seg_path_of(path, sizeof path, dir, pid);
	ck_assert(!file_exists(path)); /* and removed at exit */
	seg_path_of(path, sizeof path, test_dir, pid);
	ck_assert(!file_exists(path));
	ck_assert_int_eq(rmdir(dir), 0); /* nothing left behind, not even a temporary */
}
END_TEST

/* A forked child creating a cache publishes its own segment, removed when
 * it exits; the parent's stays. */
START_TEST(segment_child_own_and_removed)
{
	char path[PATH_MAX];
	struct uslab_cache *c = uslab_cache_create("parent", 64, NULL);
	int fds[2];

	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct uslab_cache *k = uslab_cache_create("child", 64, NULL);
		char p[PATH_MAX], ok = 0;
		seg_path_of(p, sizeof p, test_dir, getpid());
		if (k != NULL && file_exists(p)) {
			struct uslab_snapshot s;
			struct uslab_reader *r = uslab_stats_open(getpid());
			/* the child's segment has its own caches, not the parent's */
			if (r != NULL && uslab_stats_read(r, &s) == 0) {
				ok = snap_find(&s, "child", NULL) != NULL &&
				     snap_find(&s, "parent", NULL) == NULL;
				uslab_snapshot_free(&s);
			}
			uslab_stats_close(r);
		}
		if (write(fds[1], &ok, 1) != 1)
			_exit(1);
		exit(0);
	}
	close(fds[1]);
	char ok = 0;
	ck_assert_int_eq(read(fds[0], &ok, 1), 1);
	close(fds[0]);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(ok, 1);
	seg_path_of(path, sizeof path, test_dir, pid);
	ck_assert(!file_exists(path));
	seg_path_of(path, sizeof path, test_dir, getpid());
	ck_assert(file_exists(path));
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* ---- A real image, made by a fresh child ---- */

/* Bytes of a segment holding two caches with traffic, from a child
 * process (so the image holds nothing else). Caller frees. */
static unsigned char *make_image(size_t *len, pid_t *child)
{
	char path[PATH_MAX];
	int fds[2];

	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		void *ka[2000], *kb[300];
		struct uslab_cache *a = uslab_cache_create("img-a", 64, NULL);
		struct uslab_cache *b = uslab_cache_create(
			"img-b", 1000, &(struct uslab_cache_conf){.flags = USLAB_NOMAGAZINE});
		for (int i = 0; i < 2000; i++)
			ka[i] = uslab_cache_alloc(a);
		for (int i = 0; i < 300; i++)
			kb[i] = uslab_cache_alloc(b);
		for (int i = 0; i < 2000; i += 3)
			uslab_cache_free(a, ka[i]);
		for (int i = 0; i < 300; i += 2)
			uslab_cache_free(b, kb[i]);
		char p[PATH_MAX], buf[65536];
		seg_path_of(p, sizeof p, test_dir, getpid());
		int fd = seg_open_memfd(p, O_RDONLY);
		ssize_t k;
		while (fd >= 0 && (k = read(fd, buf, sizeof buf)) > 0)
			if (write(fds[1], buf, (size_t)k) != k)
				_exit(1);
		_exit(fd >= 0 ? 0 : 1);
	}
	close(fds[1]);
	size_t cap = 1 << 16, n = 0;
	unsigned char *img = malloc(cap);
	ssize_t k;
	while ((k = read(fds[0], img + n, cap - n)) > 0) {
		n += (size_t)k;
		if (n == cap)
			img = realloc(img, cap *= 2);
	}
	close(fds[0]);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	seg_path_of(path, sizeof path, test_dir, pid);
	ck_assert(file_exists(path)); /* _exit: no exit handler, a dead process's file */
	if (child != NULL)
		*child = pid;
	else
		unlink(path);
	*len = n;
	return img;
}

static int find_magazine_cache(struct uslab_cache *c, void *arg)
{
	if (strcmp(uslab_cache_name(c), "uslab_magazine_64") == 0)
		*(bool *)arg = true;
	return 0;
}

/* Whether this process already has the magazine cache make_image uses. */
static bool magazine_cache_inherited(void)
{
	bool found = false;
	uslab_foreach_cache(find_magazine_cache, &found);
	return found;
}

START_TEST(segment_parse_real_image)
{
	size_t len;
	unsigned char *img = make_image(&len, NULL);
	struct uslab_snapshot s;

	ck_assert_int_eq(uslab_stats_parse(img, len, &s), 0);
	/* Creating img-a created the magazine caches its depot and per-CPU
	 * arrays can use (slab/depot.c: 64 to 2,048 rounds for 64 B, six),
	 * listed before it, in creation order. A runner without CK_FORK (valgrind) may have created
	 * them before make_image forked: a child does not publish what it
	 * inherits. */
	bool inherited = magazine_cache_inherited();
	ck_assert_uint_eq(s.ncaches, inherited ? 2 : 8);
	const struct uslab_stats *a = &s.caches[s.ncaches - 2], *b = &s.caches[s.ncaches - 1];
	ck_assert_str_eq(a->name, "img-a");
	ck_assert_str_eq(b->name, "img-b");
	ck_assert_uint_eq(a->active_objs, 2000 - 667);
	ck_assert_uint_eq(b->active_objs, 150);
	ck_assert_uint_eq(b->allocs, 300);
	ck_assert_uint_eq(b->frees, 150);
	ck_assert_uint_eq(a->allocs, 2000);
	ck_assert_uint_eq(a->frees, 667);
	ck_assert_uint_gt(a->depot_full, 0);
	if (!inherited) {
		ck_assert_str_eq(s.caches[0].name, "uslab_magazine_64");
		ck_assert_str_eq(s.caches[1].name, "uslab_magazine_128");
		ck_assert_str_eq(s.caches[2].name, "uslab_magazine_256");
		/* Every magazine structure in use is one of img-a's: its depot's,
		 * and the array of each per-CPU slot it started (at most one per
		 * CPU that ran it). */
		uint64_t mags =
			s.caches[0].active_objs + s.caches[1].active_objs + s.caches[2].active_objs;
		ck_assert_uint_ge(mags, a->depot_full + a->depot_empty + 1);
		ck_assert_uint_le(mags, a->depot_full + a->depot_empty + s.ncpus);
	}
	uslab_snapshot_free(&s);
	free(img);
}
END_TEST

/* ---- Dead processes ---- */

static void write_file(const char *path, const void *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
	close(fd);
}

START_TEST(segment_dead_pid_ignored_and_removed)
{
	size_t len;
	pid_t dead;
	unsigned char *img = make_image(&len, &dead);
	char path[PATH_MAX], reused[PATH_MAX], junk[PATH_MAX];
	struct uslab_proc procs[16];

	/* The dead child's own file, left by _exit. */
	seg_path_of(path, sizeof path, test_dir, dead);
	ck_assert(file_exists(path));
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(dead));
	ck_assert_int_eq(errno, ENOENT);
	/* A live pid (ours... our parent's) with another start time: reused. */
	struct seg_locator l;
	int lfd = open(path, O_RDONLY);
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(pread(lfd, &l, sizeof l, 0), (ssize_t)sizeof l);
	close(lfd);
	l.l_pid = getppid();
	l.l_start_time += 12345;
	seg_path_of(reused, sizeof reused, test_dir, getppid());
	write_file(reused, &l, sizeof l);
	/* Not a segment at all: left alone. */
	seg_path_of(junk, sizeof junk, test_dir, 1);
	write_file(junk, "hello", 5);

	int n = uslab_stats_list(procs, 16);
	ck_assert_int_ge(n, 0);
	for (int i = 0; i < n && i < 16; i++) {
		ck_assert_int_ne(procs[i].pid, dead);
		ck_assert_int_ne(procs[i].pid, getppid());
		ck_assert_int_ne(procs[i].pid, 1);
	}
	ck_assert(!file_exists(path));
	ck_assert(!file_exists(reused));
	ck_assert(file_exists(junk));
	unlink(junk);
	free(img);
}
END_TEST

START_TEST(segment_list_finds_self)
{
	struct uslab_cache *c = uslab_cache_create("listed", 64, NULL);
	struct uslab_proc procs[64];
	int found = 0;

	int n = uslab_stats_list(procs, 64);
	for (int i = 0; i < n && i < 64; i++)
		if (procs[i].pid == getpid()) {
			found++;
			ck_assert_str_ne(procs[i].comm, "");
		}
	ck_assert_int_eq(found, 1);
	ck_assert_int_eq(uslab_stats_list(NULL, 0), n); /* counting only */
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* ---- Hostile images ---- */

/* Parse @img and require either a clean EPROTO or a sane snapshot. */
static int parse_checked(const unsigned char *img, size_t len)
{
	struct uslab_snapshot s;
	errno = 0;
	int ret = uslab_stats_parse(img, len, &s);
	if (ret != 0) {
		ck_assert_int_eq(ret, -1);
		ck_assert_int_eq(errno, EPROTO);
		ck_assert_ptr_null(s.caches);
		return -1;
	}
	ck_assert_uint_le(s.ncaches, len / sizeof(struct seg_rec));
	for (size_t i = 0; i < s.ncaches; i++) {
		ck_assert_uint_lt(strlen(s.caches[i].name), sizeof s.caches[i].name);
		ck_assert_uint_ge(s.caches[i].obj_size, 1);
	}
	uint64_t sum = 0;
	for (size_t i = 0; i < s.ncaches * s.ncpus; i++)
		sum += s.cpu_objs[i];
	(void)sum; /* every entry readable (ASan) */
	uslab_snapshot_free(&s);
	return 0;
}

START_TEST(segment_parse_truncated)
{
	size_t len;
	unsigned char *img = make_image(&len, NULL);

	ck_assert_int_eq(parse_checked(img, len), 0);
	/* Every cut inside the header and the record table, then cuts at
	 * every page through the counters. */
	for (size_t n = 0; n < len; n += n < 4096 + 16384 ? 1 : 65536 + n % 61) {
		unsigned char *cut = malloc(n != 0 ? n : 1); /* exact size: ASan sees overreads */
		memcpy(cut, img, n);
		ck_assert_msg(parse_checked(cut, n) == -1, "truncated to %zu accepted", n);
		free(cut);
	}
	free(img);
}
END_TEST

START_TEST(segment_parse_flipped_bytes)
{
	size_t len;
	unsigned char *img = make_image(&len, NULL);
	static const unsigned char pats[] = {0xff, 0x00, 0x80, 0x01, 0x7f};
	unsigned char *m = malloc(len);

	/* Header, first table and its live records: every byte, five ways. */
	size_t meta = 4096 + sizeof(struct seg_table) + 2 * sizeof(struct seg_rec);
	memcpy(m, img, len);
	for (size_t i = 0; i < meta && i < len; i++)
		for (size_t p = 0; p < sizeof pats; p++) {
			m[i] = img[i] == pats[p] ? (unsigned char)~pats[p] : pats[p];
			parse_checked(m, len);
			m[i] = img[i];
		}
	free(m);
	free(img);
}
END_TEST

static void put64(unsigned char *img, size_t off, uint64_t v)
{
	memcpy(img + off, &v, sizeof v);
}

static void put32(unsigned char *img, size_t off, uint32_t v)
{
	memcpy(img + off, &v, sizeof v);
}

START_TEST(segment_parse_huge_fields)
{
	size_t len;
	unsigned char *img = make_image(&len, NULL);
	unsigned char *m = malloc(len);
	struct seg_header h;
	memcpy(&h, img, sizeof h);
	size_t rec0 = h.h_tab_off + sizeof(struct seg_table);
	static const uint64_t vals[] = {
		UINT64_MAX, UINT64_MAX - 7, INT64_MAX, 1ull << 32, (1ull << 32) - 1,
		0x80000000, 65536,          65537,     0};
	static const size_t hdr_fields64[] = {offsetof(struct seg_header, h_tab_off),
	                                      offsetof(struct seg_header, h_pid),
	                                      offsetof(struct seg_header, h_ctr_stride),
	                                      offsetof(struct seg_header, h_cpus_seen)};
	static const size_t hdr_fields32[] = {
		offsetof(struct seg_header, h_ncpus), offsetof(struct seg_header, h_page_size),
		offsetof(struct seg_header, h_rec_size), offsetof(struct seg_header, h_hdr_size)};
	static const size_t rec_fields64[] = {
		offsetof(struct seg_rec, r_ctr_base), offsetof(struct seg_rec, r_slab_size),
		offsetof(struct seg_rec, r_obj_size), offsetof(struct seg_rec, r_slot_size),
		offsetof(struct seg_rec, r_inuse),    offsetof(struct seg_rec, r_slabs)};
	static const size_t rec_fields32[] = {
		offsetof(struct seg_rec, r_mag_max), offsetof(struct seg_rec, r_objs_per_slab),
		offsetof(struct seg_rec, r_state), offsetof(struct seg_rec, r_mag_size),
		offsetof(struct seg_rec, r_ctr_index)};

	/* Each field set to each value, then put back (the image is large:
	 * only the bytes changed are restored). */
	memcpy(m, img, len);
#define TRY_FIELD(off, w, v)                                                                       \
	do {                                                                                       \
		if ((w) == 8)                                                                      \
			put64(m, (off), (v));                                                      \
		else                                                                               \
			put32(m, (off), (uint32_t)(v));                                            \
		parse_checked(m, len);                                                             \
		memcpy(m + (off), img + (off), (w));                                               \
	} while (0)
	for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
		for (size_t f = 0; f < sizeof hdr_fields64 / sizeof hdr_fields64[0]; f++)
			TRY_FIELD(hdr_fields64[f], 8, vals[v]);
		for (size_t f = 0; f < sizeof hdr_fields32 / sizeof hdr_fields32[0]; f++)
			TRY_FIELD(hdr_fields32[f], 4, vals[v]);
		for (size_t f = 0; f < sizeof rec_fields64 / sizeof rec_fields64[0]; f++)
			TRY_FIELD(rec0 + rec_fields64[f], 8, vals[v]);
		for (size_t f = 0; f < sizeof rec_fields32 / sizeof rec_fields32[0]; f++)
			TRY_FIELD(rec0 + rec_fields32[f], 4, vals[v]);
		/* a huge table and a chain pointing anywhere */
		TRY_FIELD(h.h_tab_off + offsetof(struct seg_table, t_nrec), 4, vals[v]);
		TRY_FIELD(h.h_tab_off + offsetof(struct seg_table, t_next), 8, vals[v]);
	}
#undef TRY_FIELD
	memcpy(m, img, len);
	put64(m, h.h_tab_off, h.h_tab_off); /* t_next = itself: a loop */
	ck_assert_int_eq(parse_checked(m, len), -1);
	memcpy(m, img, len);
	memset(m + offsetof(struct seg_header, h_mode), 'x', sizeof h.h_mode); /* no NUL */
	ck_assert_int_eq(parse_checked(m, len), -1);
	memcpy(m, img, len);
	memset(m + rec0 + offsetof(struct seg_rec, r_name), 'x', 32);
	ck_assert_int_eq(parse_checked(m, len), -1);
	/* A copy of the first record in every slot of the table: many live
	 * caches pointing at one arena index, parsed cleanly either way. */
	memcpy(m, img, len);
	for (uint32_t i = 1; i < 63; i++)
		memcpy(m + rec0 + i * sizeof(struct seg_rec), img + rec0, sizeof(struct seg_rec));
	parse_checked(m, len);
	ck_assert_int_eq(parse_checked(NULL, 0), -1);
	free(m);
	free(img);
}
END_TEST

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

START_TEST(segment_parse_random_mutations)
{
	size_t len;
	unsigned char *img = make_image(&len, NULL);
	unsigned char *m = malloc(len);
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	int accepted = 0;

	memcpy(m, img, len);
	for (int it = 0; it < 20000; it++) {
		size_t at_[8], w_[8];
		int edits = 1 + (int)(xorshift(&seed) % 8);
		for (int e = 0; e < edits; e++) {
			/* mostly the metadata, sometimes anywhere */
			size_t span = xorshift(&seed) % 4 ? 4096 + 16384 : len;
			size_t at = xorshift(&seed) % (span < len ? span : len);
			uint64_t v = xorshift(&seed);
			size_t w = 1u << (xorshift(&seed) % 4);
			if (at + w > len)
				w = len - at;
			memcpy(m + at, &v, w);
			at_[e] = at;
			w_[e] = w;
		}
		size_t cut = xorshift(&seed) % 16 == 0 ? xorshift(&seed) % (len + 1) : len;
		accepted += parse_checked(m, cut) == 0;
		for (int e = 0; e < edits; e++) /* undo: the image again */
			memcpy(m + at_[e], img + at_[e], w_[e]);
	}
	ck_assert_int_gt(accepted, 0); /* some mutations only change numbers */
	free(m);
	free(img);
}
END_TEST

/* uslab_stats_read() on a file that is not a segment, or shrinks. */
START_TEST(segment_open_rejects_bad_files)
{
	char path[PATH_MAX];
	pid_t me = getpid();

	/* Only meaningful where this process has no segment yet. */
	seg_path_of(path, sizeof path, test_dir, me);
	if (file_exists(path))
		return;
	write_file(path, "not a segment", 13);
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(me));
	ck_assert_int_eq(errno, EPROTO);
	unlink(path);
	ck_assert_int_eq(symlink("/dev/zero", path), 0);
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(me));
	ck_assert_int_eq(errno, EPROTO);
	unlink(path);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(me)); /* and does not block */
	ck_assert_int_eq(errno, EPROTO);
	unlink(path);
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(me));
	ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* ---- Fork ---- */

#define FORK_HELD 256
#define MARK_HELD 0x48454c4448454c44ull
#define MARK_FREE 0x4652454546524545ull

/* Alloc/free churn that fails (exit status 1) if an object handed out is
 * one this process already holds: what a slot region shared with another
 * process would do. */
static int fork_churn(struct uslab_cache *c, long iters, uint64_t seed)
{
	void *held[FORK_HELD] = {0};

	for (long it = 0; it < iters; it++) {
		size_t i = xorshift(&seed) % FORK_HELD;
		if (held[i] == NULL) {
			uint64_t *o = uslab_cache_alloc(c);
			/* Its bytes are the last owner's (no ctor): memcheck calls
			 * them undefined, and here they are the evidence. */
			if (o != NULL)
				VG_DEFINED_TEST(o, sizeof *o);
			if (o == NULL || *o == MARK_HELD)
				return 1;
			*o = MARK_HELD;
			held[i] = o;
		} else {
			*(uint64_t *)held[i] = MARK_FREE;
			uslab_cache_free(c, held[i]);
			held[i] = NULL;
		}
	}
	for (size_t i = 0; i < FORK_HELD; i++)
		if (held[i] != NULL) {
			*(uint64_t *)held[i] = MARK_FREE;
			uslab_cache_free(c, held[i]);
		}
	return 0;
}

START_TEST(segment_fork_no_shared_objects)
{
	struct uslab_cache *c = uslab_cache_create("forked", 64, NULL);
	cpu_set_t saved, one;

	/* One CPU for both processes: they take turns on the same slot. */
	ck_assert_int_eq(sched_getaffinity(0, sizeof saved, &saved), 0);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
	ck_assert_int_eq(fork_churn(c, 20000, 1), 0); /* slots hold objects now */
	for (int round = 0; round < 3; round++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			_exit(fork_churn(c, 2000000, 7 + (uint64_t)round));
		int mine = fork_churn(c, 2000000, 11 + (uint64_t)round);
		int status;
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		              "child saw a shared object (status %#x)", status);
		ck_assert_int_eq(mine, 0);
	}
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
	/* The parent's numbers are still its own, and exact. */
	struct uslab_snapshot s;
	snapshot_self(&s);
	assert_same(&s, c);
	ck_assert_uint_eq(snap_find(&s, "forked", NULL)->active_objs, 0);
	uslab_snapshot_free(&s);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* Pin to the CPU we run on; returns the previous affinity in @saved. */
static void pin_here(cpu_set_t *saved)
{
	cpu_set_t one;
	ck_assert_int_eq(sched_getaffinity(0, sizeof *saved, saved), 0);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
}

/* Overwrite every byte of the file @fd with garbage. */
static int scribble(int fd, uint64_t seed)
{
	struct stat st;
	uint64_t buf[512];

	if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0)
		return -1;
	for (off_t off = 0; off < st.st_size; off += (off_t)sizeof buf) {
		for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
			buf[i] = xorshift(&seed);
		size_t n = st.st_size - off < (off_t)sizeof buf ? (size_t)(st.st_size - off)
		                                                : sizeof buf;
		if (pwrite(fd, buf, n, off) != (ssize_t)n)
			return -1;
	}
	return 0;
}

/* The hostile process: garbage over the whole segment, an attempt to
 * truncate it (refused: it is sealed), and the locator truncated then
 * replaced by garbage. 0 when all of that was done as expected. */
static int hostile_writer(const char *locator, const struct seg_locator *l)
{
	char p[96];

	snprintf(p, sizeof p, "/proc/%lld/fd/%lld", (long long)l->l_pid, (long long)l->l_fd);
	int fd = open(p, O_RDWR);
	if (fd < 0 || scribble(fd, 0x5eed) != 0)
		return 1;
	if (ftruncate(fd, 0) == 0 || errno != EPERM)
		return 2; /* the SIGBUS of finding 2 */
	close(fd);
	if (truncate(locator, 0) != 0 || unlink(locator) != 0)
		return 3;
	int g = open(locator, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (g < 0 || write(g, "garbage", 7) != 7)
		return 4;
	close(g);
	return 0;
}

/* The victim of segment_hostile_writer: its own process (so its segment
 * is its own whatever CK_FORK says). 0 when the allocator was unaffected. */
static int hostile_victim(void)
{
	struct uslab_cache *c = uslab_cache_create("victim", 64, NULL);
	char path[PATH_MAX], self[96];
	struct seg_locator l;

	if (c == NULL)
		return 10;
	if (fork_churn(c, 200000, 21) != 0) /* magazines full of objects */
		return 11;
	seg_path_of(path, sizeof path, test_dir, getpid());
	int lfd = open(path, O_RDONLY);
	if (lfd < 0 || pread(lfd, &l, sizeof l, 0) != (ssize_t)sizeof l)
		return 12;
	close(lfd);
	pid_t pid = fork();
	if (pid < 0)
		return 13;
	if (pid == 0) /* another process of this user */
		_exit(hostile_writer(path, &l));
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 14;
	char magic[8];
	snprintf(self, sizeof self, "/proc/self/fd/%lld", (long long)l.l_fd);
	int fd = open(self, O_RDONLY);
	if (fd < 0 || pread(fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic)
		return 15;
	close(fd);
	if (memcmp(magic, SEG_MAGIC, sizeof magic) == 0)
		return 16; /* the file was not overwritten: the test tests nothing */
	/* The allocator goes on as if nothing happened: no object handed out
	 * twice (owner tags), across every slot and the slow paths. */
	if (fork_churn(c, 2000000, 22) != 0)
		return 17;
	struct uslab_cache *d = uslab_cache_create("after", 200, NULL); /* more records */
	if (d == NULL || fork_churn(d, 100000, 23) != 0 || uslab_cache_destroy(d) != 0)
		return 18;
	struct uslab_stats st;
	if (uslab_cache_stats(c, &st) != 0 || st.pcpu_objs > 2u * 256 * pcpu_cpus())
		return 19;
	if (uslab_cache_reap(c), uslab_cache_destroy(c) != 0)
		return 20;
	return 0;
}

/* DESIGN.md invariant 6, and the reliability issue's finding 2: a process
 * that writes garbage over the whole segment, tries to truncate it and
 * replaces its locator changes nothing the allocator does (no SIGBUS). */
START_TEST(segment_hostile_writer)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(hostile_victim());
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "victim failed (status %#x)",
	              status);
}
END_TEST

/* Fast-path hits as another process sees them: a reader in a child sees
 * the parent's counters move between two reads. */
START_TEST(segment_reader_sees_live_counters)
{
	struct uslab_cache *c = uslab_cache_create("live", 64, NULL);
	int go[2], done[2];

	ck_assert_ptr_nonnull(c);
	uslab_cache_free(c, uslab_cache_alloc(c));
	ck_assert_int_eq(pipe(go), 0);
	ck_assert_int_eq(pipe(done), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct uslab_snapshot s1, s2;
		struct uslab_reader *r = uslab_stats_open(getppid());
		char b = 0;
		if (r == NULL || uslab_stats_read(r, &s1) != 0)
			_exit(2);
		if (write(go[1], &b, 1) != 1 || read(done[0], &b, 1) != 1)
			_exit(3);
		if (uslab_stats_read(r, &s2) != 0)
			_exit(4);
		const struct uslab_stats *a = snap_find(&s1, "live", NULL);
		const struct uslab_stats *z = snap_find(&s2, "live", NULL);
		if (a == NULL || z == NULL)
			_exit(5);
		int ok = z->fast_allocs >= a->fast_allocs + 10000 &&
		         z->fast_frees >= a->fast_frees + 10000;
		uslab_snapshot_free(&s1);
		uslab_snapshot_free(&s2);
		uslab_stats_close(r);
		_exit(ok ? 0 : 6);
	}
	char b;
	ck_assert_int_eq(read(go[0], &b, 1), 1);
	struct uslab_stats st0, st1;
	ck_assert_int_eq(uslab_cache_stats(c, &st0), 0);
	for (int i = 0; i < 20000; i++) {
		void *o = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(o);
		uslab_cache_free(c, o);
	}
	ck_assert_int_eq(uslab_cache_stats(c, &st1), 0);
	ck_assert_uint_ge(st1.fast_allocs, st0.fast_allocs + 10000); /* they were hits */
	ck_assert_int_eq(write(done[1], &b, 1), 1);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader status %#x", status);
	for (int i = 0; i < 2; i++) {
		close(go[i]);
		close(done[i]);
	}
	/* And at rest, the reader's per-CPU fill is the magazines' own. */
	struct uslab_snapshot s;
	snapshot_self(&s);
	assert_same(&s, c);
	uslab_snapshot_free(&s);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* After fork, the child's hits stay the child's: the parent's published
 * counters do not move. Both run on one CPU, so the child uses the very
 * slot whose counters page the parent shares with its file. */
START_TEST(segment_fork_child_counters_private)
{
	struct uslab_cache *c = uslab_cache_create("fork-ctr", 64, NULL);
	cpu_set_t saved;
	struct uslab_snapshot s1, s2;

	ck_assert_ptr_nonnull(c);
	pin_here(&saved);
	ck_assert_int_eq(fork_churn(c, 20000, 31), 0);
	snapshot_self(&s1);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct uslab_stats a, z;
		uslab_cache_stats(c, &a);
		for (int i = 0; i < 100000; i++)
			uslab_cache_free(c, uslab_cache_alloc(c));
		uslab_cache_stats(c, &z);
		_exit(z.fast_allocs >= a.fast_allocs + 50000 ? 0 : 2); /* the child did hit */
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	snapshot_self(&s2);
	const struct uslab_stats *a = snap_find(&s1, "fork-ctr", NULL);
	const struct uslab_stats *z = snap_find(&s2, "fork-ctr", NULL);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(z);
	ck_assert_uint_eq(z->fast_allocs, a->fast_allocs);
	ck_assert_uint_eq(z->fast_frees, a->fast_frees);
	ck_assert_uint_eq(z->pcpu_objs, a->pcpu_objs);
	assert_same(&s2, c);
	uslab_snapshot_free(&s1);
	uslab_snapshot_free(&s2);
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

static Suite *segment_suite(void)
{
	Suite *s = suite_create("segment");
	TCase *tc = tcase_create("publish");
	tcase_add_test(tc, segment_appears_owner_only);
	tcase_add_test(tc, segment_reader_same_numbers);
	tcase_add_test(tc, segment_space_reused);
	tcase_add_test(tc, segment_off_publishes_nothing);
	tcase_add_test(tc, segment_dir_moves_and_removed_at_exit);
	tcase_add_test(tc, segment_child_own_and_removed);
	suite_add_tcase(s, tc);

	tc = tcase_create("liveness");
	tcase_add_test(tc, segment_dead_pid_ignored_and_removed);
	tcase_add_test(tc, segment_list_finds_self);
	tcase_add_test(tc, segment_open_rejects_bad_files);
	suite_add_tcase(s, tc);

	tc = tcase_create("hostile");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, segment_parse_real_image);
	tcase_add_test(tc, segment_parse_truncated);
	tcase_add_test(tc, segment_parse_flipped_bytes);
	tcase_add_test(tc, segment_parse_huge_fields);
	tcase_add_test(tc, segment_parse_random_mutations);
	suite_add_tcase(s, tc);

	tc = tcase_create("fork");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, segment_fork_no_shared_objects);
	tcase_add_test(tc, segment_fork_child_counters_private);
	suite_add_tcase(s, tc);

	tc = tcase_create("isolation");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, segment_reader_sees_live_counters);
	tcase_add_test(tc, segment_hostile_writer);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {segment_suite, NULL};
