/* SPDX-License-Identifier: MIT */
/* The size classes: uslab_alloc() and its family (API test, shared library). */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uslab.h>

#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

/* The classes as include/uslab.h and the README document them. */
static const size_t classes[] = {
	8,    16,   32,   48,   64,   80,    96,    112,   128,   160,   192,   224,   256,   320,
	384,  448,  512,  640,  768,  896,   1024,  1280,  1536,  1792,  2048,  2560,  3072,  3584,
	4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};
#define NCLASSES (sizeof classes / sizeof classes[0])

static size_t class_of(size_t size)
{
	for (size_t i = 0; i < NCLASSES; i++)
		if (classes[i] >= size)
			return classes[i];
	return 0; /* large */
}

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* Under valgrind (no fork) the suite does less: the bytes of a block
 * are patterned at its ends only, and the threads run fewer rounds. */
static bool light(void)
{
	static int cached = -1;

	if (cached < 0)
		cached = !test_can_fork();
	return cached != 0;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7);
}

static bool filled(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed + i * 7))
			return false;
	return true;
}

/* The same on the first and last 256 bytes only, when light(). */
static void fill_ends(unsigned char *p, size_t n, unsigned seed)
{
	if (!light() || n <= 512) {
		fill(p, n, seed);
		return;
	}
	fill(p, 256, seed);
	fill(p + n - 256, 256, seed + 1);
}

static bool filled_ends(const unsigned char *p, size_t n, unsigned seed)
{
	if (!light() || n <= 512)
		return filled(p, n, seed);
	return filled(p, 256, seed) && filled(p + n - 256, 256, seed + 1);
}

/* Every size from 0 to 64 KiB: the smallest documented class that holds
 * it (or a page-rounded large block), the promised alignment, and bytes
 * of its own: a window of live blocks is filled and checked before they
 * go. */
START_TEST(kmalloc_every_size)
{
	enum { WINDOW = 64 };
	unsigned char *live[WINDOW] = {0};
	size_t sizes[WINDOW] = {0};

	/* Under valgrind every size to 4 KiB, then every 17th. */
	for (size_t size = 0; size <= 65536; size += light() && size >= 4096 ? 17 : 1) {
		unsigned w = (unsigned)(size % WINDOW);
		if (live[w] != NULL) {
			ck_assert_msg(filled_ends(live[w], sizes[w], (unsigned)sizes[w]),
			              "size %zu overwritten", sizes[w]);
			uslab_free(live[w]);
		}
		unsigned char *p = uslab_alloc(size);
		ck_assert_msg(p != NULL, "size %zu: %s", size, strerror(errno));
		size_t usable = uslab_usable_size(p), want = class_of(size == 0 ? 1 : size);
		if (want == 0)
			want = (size + page_size() - 1) & ~(page_size() - 1);
		ck_assert_msg(usable == want, "size %zu: usable %zu, class %zu", size, usable,
		              want);
		ck_assert_msg((uintptr_t)p % (size >= 16 ? 16 : 8) == 0, "size %zu at %p", size, p);
		fill_ends(p, size, (unsigned)size);
		live[w] = p;
		sizes[w] = size;
	}
	for (unsigned w = 0; w < WINDOW; w++) {
		ck_assert(live[w] == NULL || filled_ends(live[w], sizes[w], (unsigned)sizes[w]));
		uslab_free(live[w]);
	}
}
END_TEST

/* Size 0 gives unique pointers; each is freed. */
START_TEST(kmalloc_zero_unique)
{
	void *a = uslab_alloc(0), *b = uslab_alloc(0);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(a, b);
	uslab_free(a);
	uslab_free(b);
	uslab_free(NULL); /* nothing */
	ck_assert_uint_eq(uslab_usable_size(NULL), 0);
}
END_TEST

static int class_cache(struct uslab_cache *c, void *arg)
{
	unsigned *seen = arg;
	size_t size;

	if (sscanf(uslab_cache_name(c), "size-%zu", &size) == 1)
		for (size_t i = 0; i < NCLASSES; i++)
			if (classes[i] == size) {
				ck_assert_uint_eq(uslab_cache_size(c), size);
				seen[i]++;
				/* A class belongs to the library. */
				ck_assert_int_eq(uslab_cache_destroy(c), -1);
				ck_assert_int_eq(errno, EPERM);
			}
	return 0;
}

/* Each class is one named cache, "size-<bytes>", that the registry lists. */
START_TEST(kmalloc_classes_are_named_caches)
{
	unsigned seen[NCLASSES] = {0};

	for (size_t i = 0; i < NCLASSES; i++)
		uslab_free(uslab_alloc(classes[i]));
	uslab_foreach_cache(class_cache, seen);
	for (size_t i = 0; i < NCLASSES; i++)
		ck_assert_msg(seen[i] == 1, "size-%zu listed %u times", classes[i], seen[i]);
}
END_TEST

/* Every power-of-two alignment up to 1 MiB, with sizes in classes and
 * large; other alignments are EINVAL. */
START_TEST(kmalloc_every_alignment)
{
	static const size_t sizes[] = {0,   1,    7,    8,    15,    16,    17,
	                               100, 1000, 4096, 5000, 40000, 100000};

	for (size_t align = 1; align <= ((size_t)1 << 20); align <<= 1)
		for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
			unsigned char *p = uslab_aligned_alloc(align, sizes[k]);
			ck_assert_msg(p != NULL, "align %zu size %zu: %s", align, sizes[k],
			              strerror(errno));
			ck_assert_msg((uintptr_t)p % align == 0, "align %zu size %zu: %p", align,
			              sizes[k], p);
			ck_assert(uslab_usable_size(p) >= sizes[k]);
			fill(p, sizes[k], 3);
			uslab_free(p);
		}
	static const size_t bad[] = {0, 3, 24, 48, 1000};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		errno = 0;
		ck_assert_ptr_null(uslab_aligned_alloc(bad[k], 64));
		ck_assert_int_eq(errno, EINVAL);
	}
}
END_TEST

/* realloc keeps the contents growing through every class into large
 * blocks and shrinking back; a block that still fits stays. */
START_TEST(kmalloc_realloc_across_classes)
{
	size_t size = 1;
	unsigned char *p = uslab_realloc(NULL, size);

	ck_assert_ptr_nonnull(p);
	fill(p, size, 9);
	while (size < 300000) {
		size_t next = size + size / 3 + 1;
		unsigned char *q = uslab_realloc(p, next);
		ck_assert_ptr_nonnull(q);
		ck_assert_msg(filled(q, size, 9), "grown to %zu", next);
		ck_assert(uslab_usable_size(q) >= next);
		fill(q, next, 9);
		p = q;
		size = next;
	}
	while (size > 1) {
		size_t next = size / 2;
		unsigned char *q = uslab_realloc(p, next);
		ck_assert_ptr_nonnull(q);
		ck_assert_msg(filled(q, next, 9), "shrunk to %zu", next);
		ck_assert(uslab_usable_size(q) >= next);
		/* A small class object shrinks into its class, not a large block. */
		if (next <= 16384)
			ck_assert_uint_le(uslab_usable_size(q), 2 * next + 16);
		p = q;
		size = next;
	}
	/* In place: within the class, and within a large block's block. */
	unsigned char *q = uslab_alloc(100);
	ck_assert_ptr_eq(uslab_realloc(q, 112), q);
	ck_assert_ptr_eq(uslab_realloc(q, 57), q);
	unsigned char *moved = uslab_realloc(q, 200);
	ck_assert_ptr_ne(moved, q);
	uslab_free(moved);
	q = uslab_alloc(40000); /* a 64 KiB block */
	ck_assert_ptr_eq(uslab_realloc(q, 60000), q);
	ck_assert_uint_ge(uslab_usable_size(q), 60000);
	q = uslab_realloc(q, 0); /* freed */
	ck_assert_ptr_null(q);
	uslab_free(p);
}
END_TEST

/* On failure realloc leaves the block as it was. */
START_TEST(kmalloc_realloc_failure_keeps_block)
{
	unsigned char *p = uslab_alloc(500);

	fill(p, 500, 5);
	errno = 0;
	ck_assert_ptr_null(uslab_realloc(p, SIZE_MAX - 4096));
	ck_assert_int_eq(errno, ENOMEM);
	ck_assert(filled(p, 500, 5));
	uslab_free(p);
}
END_TEST

START_TEST(kmalloc_calloc_zero_and_overflow)
{
	/* Dirty a block of each class, then calloc must still give zeros. */
	for (size_t i = 0; i < NCLASSES; i++) {
		unsigned char *d = uslab_alloc(classes[i]);
		memset(d, 0xa5, classes[i]);
		uslab_free(d);
		unsigned char *z = uslab_calloc(1, classes[i]);
		for (size_t b = 0; b < classes[i]; b++)
			ck_assert_msg(z[b] == 0, "class %zu byte %zu", classes[i], b);
		uslab_free(z);
	}
	unsigned char *big = uslab_calloc(3, 100000);
	for (size_t b = 0; b < 300000; b += 997)
		ck_assert(big[b] == 0);
	uslab_free(big);
	errno = 0;
	ck_assert_ptr_null(uslab_calloc(SIZE_MAX / 2, 3));
	ck_assert_int_eq(errno, ENOMEM);
	errno = 0;
	ck_assert_ptr_null(uslab_calloc((size_t)1 << 33, (size_t)1 << 33));
	ck_assert_int_eq(errno, ENOMEM);
	void *z = uslab_calloc(0, 10);
	ck_assert_ptr_nonnull(z);
	uslab_free(z);
}
END_TEST

START_TEST(kmalloc_errno)
{
	errno = 0;
	ck_assert_ptr_null(uslab_alloc(SIZE_MAX));
	ck_assert_int_eq(errno, ENOMEM);
	errno = 0;
	ck_assert_ptr_null(uslab_alloc(((size_t)1 << 47)));
	ck_assert_int_eq(errno, ENOMEM);
	/* A free keeps errno: class objects (hit and the slabs' path) and
	 * large blocks (their munmap). */
	enum { N = 5000 };
	static void *p[N];
	for (int i = 0; i < N; i++)
		p[i] = uslab_alloc(i % 3 == 0 ? 50000 : 64);
	for (int i = 0; i < N; i++) {
		errno = 4242;
		uslab_free(p[i]);
		ck_assert_int_eq(errno, 4242);
	}
	errno = 4242;
	uslab_reap_all();
	uslab_free(NULL);
	ck_assert_int_eq(errno, 4242);
}
END_TEST

/* A free keeps errno even when a syscall under it fails: munmap and
 * madvise are refused (seccomp, EPERM) while large blocks are freed. (The
 * same restore in the per-CPU layer's free path, pcpu_free_slow, is for a
 * slab released inside a free, which no test here could provoke: slabs go
 * on the allocation side and at reap.) */
static int deny_unmap(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_madvise, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
}

static int errno_refused(void *arg)
{
	int bad = 0;
	(void)arg;

	void *big[8];
	for (int i = 0; i < 8; i++)
		big[i] = uslab_alloc(40000 << i);
	if (deny_unmap() != 0)
		return 77;
	for (int i = 0; i < 8; i++) {
		errno = 4242;
		uslab_free(big[i]); /* its munmap fails */
		bad += errno != 4242;
	}
	fprintf(stderr, "%d frees changed errno\n", bad);
	return bad == 0 ? 0 : 1;
}

START_TEST(kmalloc_errno_when_syscalls_fail)
{
	char err[512];
	int rc = test_run_child(errno_refused, NULL, 60, err, sizeof err);
	if (rc == 77)
		return; /* no seccomp here */
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
}
END_TEST

/* Large blocks are counted while they live. */
START_TEST(kmalloc_large_counted)
{
	struct uslab_global_stats g0, g1, g2;

	ck_assert_int_eq(uslab_global_stats(&g0), 0);
	void *a = uslab_alloc(USLAB_CLASS_MAX + 1), *b = uslab_alloc(1 << 20);
	ck_assert_int_eq(uslab_global_stats(&g1), 0);
	ck_assert_uint_eq(g1.large_blocks, g0.large_blocks + 2);
	ck_assert_uint_eq(g1.large_bytes,
	                  g0.large_bytes + uslab_usable_size(a) + uslab_usable_size(b));
	ck_assert_uint_eq(uslab_usable_size(a),
	                  (USLAB_CLASS_MAX + 1 + page_size() - 1) & ~(page_size() - 1));
	uslab_free(a);
	uslab_free(b);
	ck_assert_int_eq(uslab_global_stats(&g2), 0);
	ck_assert_uint_eq(g2.large_blocks, g0.large_blocks);
	ck_assert_uint_eq(g2.large_bytes, g0.large_bytes);
}
END_TEST

/* ---- Misuse: each reported in one line, then abort ---- */

static void expect(const void *p)
{
	fprintf(stderr, "expect %p\n", p);
	fflush(stderr);
}

static void check_report(int (*fn)(void *), void *arg, const char *name, const char *what)
{
	char err[8192], want[256];
	int rc = test_run_child(fn, arg, 60, err, sizeof err);
	const char *e = strstr(err, "expect ");
	ck_assert_msg(e != NULL, "the scenario did not get to its misuse (status %d): %s", rc, err);
	void *p = NULL;
	ck_assert_int_eq(sscanf(e, "expect %p", &p), 1);
	snprintf(want, sizeof want, "uslab: cache '%s': object %p: %s", name, p, what);
	ck_assert_msg(strstr(err, want) != NULL, "no \"%s\" in: %s", want, err);
	ck_assert_msg(rc == 128 + SIGABRT, "status %d, not SIGABRT: %s", rc, err);
}

static int free_stack(void *arg)
{
	char buf[64];
	(void)arg;
	expect(buf);
	uslab_free(buf);
	return 0;
}

static int free_malloc(void *arg)
{
	void *p = malloc(100);
	(void)arg;
	expect(p);
	uslab_free(p);
	return 0;
}

static int usable_foreign(void *arg)
{
	static char data[64];
	(void)arg;
	expect(data + 8);
	return (int)uslab_usable_size(data + 8);
}

static int free_interior(void *arg)
{
	char *p = uslab_alloc(100);
	(void)arg;
	expect(p + 16);
	uslab_free(p + 16);
	return 0;
}

static int free_large_interior(void *arg)
{
	char *p = uslab_alloc(100000);
	(void)arg;
	expect(p + 4096);
	uslab_free(p + 4096);
	return 0;
}

static int free_large_twice(void *arg)
{
	char *p = uslab_alloc(100000);
	(void)arg;
	uslab_free(p);
	expect(p);
	uslab_free(p);
	return 0;
}

static int free_class_twice(void *arg)
{
	char *p = uslab_alloc(100);
	(void)arg;
	uslab_free(p);
	expect(p);
	uslab_free(p);
	return 0;
}

static int free_typed(void *arg)
{
	struct uslab_cache *c = uslab_cache_create("conn", 100, NULL);
	void *p = uslab_cache_alloc(c);
	(void)arg;
	expect(p);
	uslab_free(p);
	return 0;
}

static int free_class_to_cache(void *arg)
{
	struct uslab_cache *c = uslab_cache_create("conn", 128, NULL);
	void *p = uslab_alloc(128);
	(void)arg;
	expect(p);
	uslab_cache_free(c, p);
	return 0;
}

START_TEST(kmalloc_misuse_reported)
{
	check_report(free_stack, NULL, "uslab_alloc",
	             "not an object of this cache (not from uslab_alloc())");
	check_report(free_malloc, NULL, "uslab_alloc",
	             "not an object of this cache (not from uslab_alloc())");
	check_report(usable_foreign, NULL, "uslab_alloc",
	             "not an object of this cache (not from uslab_alloc())");
	check_report(free_interior, NULL, "size-112", "interior pointer");
	check_report(free_large_interior, NULL, "large", "interior pointer");
	check_report(free_large_twice, NULL, "uslab_alloc",
	             "not an object of this cache (not from uslab_alloc())");
	check_report(free_class_twice, NULL, "size-112", "double free");
	check_report(free_typed, NULL, "conn",
	             "not an object of this cache (freed as uslab_alloc() memory)");
	check_report(free_class_to_cache, NULL, "conn", "not an object of this cache");
}
END_TEST

/* ---- Threads: allocated here, freed there ---- */

#define RING 4096
struct ring {
	pthread_mutex_t lock;
	void *slot[RING];
	size_t size[RING];
	unsigned head, tail;
	unsigned producers_left;
};

static unsigned rnd(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static size_t rnd_size(unsigned *s)
{
	unsigned r = rnd(s);
	switch (r % 8) {
	case 0:
		return r % 40000 + 1; /* some large blocks */
	case 1:
	case 2:
		return r % 4096;
	default:
		return r % 256;
	}
}

static void *producer(void *arg)
{
	struct ring *rg = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;

	for (int i = 0, rounds = light() ? 20000 : 200000; i < rounds; i++) {
		size_t n = rnd_size(&seed);
		unsigned char *p = uslab_alloc(n);
		ck_assert_ptr_nonnull(p);
		fill(p, n < 64 ? n : 64, (unsigned)n);
		for (;;) {
			pthread_mutex_lock(&rg->lock);
			if (rg->head - rg->tail < RING)
				break;
			pthread_mutex_unlock(&rg->lock);
			sched_yield();
		}
		rg->slot[rg->head % RING] = p;
		rg->size[rg->head % RING] = n;
		rg->head++;
		pthread_mutex_unlock(&rg->lock);
		/* And some of its own, kept briefly. */
		void *own = uslab_alloc(n / 2);
		uslab_free(own);
	}
	pthread_mutex_lock(&rg->lock);
	rg->producers_left--;
	pthread_mutex_unlock(&rg->lock);
	return NULL;
}

static void *consumer(void *arg)
{
	struct ring *rg = arg;

	for (;;) {
		pthread_mutex_lock(&rg->lock);
		if (rg->head == rg->tail) {
			bool done = rg->producers_left == 0;
			pthread_mutex_unlock(&rg->lock);
			if (done)
				return NULL;
			sched_yield();
			continue;
		}
		unsigned char *p = rg->slot[rg->tail % RING];
		size_t n = rg->size[rg->tail % RING];
		rg->tail++;
		pthread_mutex_unlock(&rg->lock);
		ck_assert_msg(filled(p, n < 64 ? n : 64, (unsigned)n), "cross-thread block");
		p = uslab_realloc(p, n + 10);
		ck_assert_ptr_nonnull(p);
		uslab_free(p);
	}
}

static int count_inuse(struct uslab_cache *c, void *arg)
{
	uint64_t *sum = arg;
	struct uslab_stats st;
	size_t size;

	if (sscanf(uslab_cache_name(c), "size-%zu", &size) == 1 && uslab_cache_stats(c, &st) == 0)
		*sum += st.active_objs;
	return 0;
}

START_TEST(kmalloc_cross_thread)
{
	enum { P = 3, C = 3 };
	struct ring rg = {.lock = PTHREAD_MUTEX_INITIALIZER, .producers_left = P};
	pthread_t t[P + C];
	uint64_t before = 0, after = 0;
	struct uslab_global_stats g0, g1;

	uslab_foreach_cache(count_inuse, &before);
	uslab_global_stats(&g0);
	for (int i = 0; i < P; i++)
		pthread_create(&t[i], NULL, producer, &rg);
	for (int i = 0; i < C; i++)
		pthread_create(&t[P + i], NULL, consumer, &rg);
	for (int i = 0; i < P + C; i++)
		pthread_join(t[i], NULL);
	uslab_reap_all();
	uslab_foreach_cache(count_inuse, &after);
	uslab_global_stats(&g1);
	ck_assert_uint_eq(after, before); /* every class object came back */
	ck_assert_uint_eq(g1.large_blocks, g0.large_blocks);
}
END_TEST

/* ---- Memory ---- */

static size_t rss_bytes(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL || fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = -1;
	if (f != NULL)
		fclose(f);
	return resident < 0 ? 0 : (size_t)resident * page_size();
}

/* Objects of a 32-byte class cost 32 bytes and well under 2% more. */
START_TEST(kmalloc_small_objects_cost_their_size)
{
	const int N = light() ? 1 << 17 : 1 << 20;
	void **p = uslab_alloc((size_t)N * sizeof *p);
	struct uslab_global_stats g0, g1;

	uslab_reap_all();
	uslab_global_stats(&g0);
	for (int i = 0; i < N; i++)
		p[i] = uslab_alloc(32);
	uslab_global_stats(&g1);
	double per =
		(double)(g1.bytes_mapped - g0.bytes_mapped + g1.meta_bytes - g0.meta_bytes) / N;
	ck_assert_msg(per < 32 * 1.02, "%.2f bytes per 32-byte object", per);
	for (int i = 0; i < N; i++)
		uslab_free(p[i]);
	uslab_free(p);
}
END_TEST

/* A program that frees everything and trims is back within 5% of the
 * resident set it had before its burst. */
static int rss_after_trim(void *arg)
{
	enum { N = 100000 };
	unsigned seed = 7;
	(void)arg;

	for (size_t i = 0; i < NCLASSES; i++) /* the classes exist: the start */
		uslab_free(uslab_alloc(classes[i]));
	size_t start = rss_bytes();
	void **p = uslab_alloc(N * sizeof *p); /* a large block: part of the burst */
	for (int i = 0; i < N; i++) {
		size_t n = rnd_size(&seed);
		p[i] = uslab_alloc(n);
		memset(p[i], 1, n);
	}
	size_t peak = rss_bytes();
	for (int i = 0; i < N; i++)
		uslab_free(p[i]);
	uslab_free(p);
	uslab_reap_all();
	size_t end = rss_bytes();
	fprintf(stderr, "rss start %zu KiB, peak %zu KiB, after trim %zu KiB\n", start >> 10,
	        peak >> 10, end >> 10);
	return peak > 4 * start && end <= start + start / 20 ? 0 : 1;
}

START_TEST(kmalloc_rss_back_after_trim)
{
	char err[4096];
	int rc = test_run_child(rss_after_trim, NULL, 120, err, sizeof err);
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
}
END_TEST

static Suite *kmalloc_suite(void)
{
	Suite *s = suite_create("kmalloc");
	TCase *tc = tcase_create("api");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, kmalloc_every_size);
	tcase_add_test(tc, kmalloc_zero_unique);
	tcase_add_test(tc, kmalloc_classes_are_named_caches);
	tcase_add_test(tc, kmalloc_every_alignment);
	tcase_add_test(tc, kmalloc_realloc_across_classes);
	tcase_add_test(tc, kmalloc_realloc_failure_keeps_block);
	tcase_add_test(tc, kmalloc_calloc_zero_and_overflow);
	tcase_add_test(tc, kmalloc_errno);
	tcase_add_test(tc, kmalloc_large_counted);
	tcase_add_test(tc, kmalloc_cross_thread);
	tcase_add_test(tc, kmalloc_small_objects_cost_their_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("process");
	tcase_set_timeout(tc, 120);
	if (test_can_fork()) {
		tcase_add_test(tc, kmalloc_misuse_reported);
		tcase_add_test(tc, kmalloc_errno_when_syscalls_fail);
		/* ASan's shadow and quarantine are in the resident set too. */
		if (!UNDER_ASAN)
			tcase_add_test(tc, kmalloc_rss_back_after_trim);
	}
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {kmalloc_suite, NULL};
