/* SPDX-License-Identifier: MIT */
/* Unit tests of the page sources: mmap, a region, brk, huge pages, and the counting wrappers. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if USLAB_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "internal.h"
#include "testutil.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* A source over mmap whose get() fails while @fail is set; counts calls. */
struct fake_src {
	bool fail;
	unsigned gets, puts, purges;
};

static void *fake_get(void *arg, size_t size)
{
	struct fake_src *f = arg;

	f->gets++;
	if (f->fail)
		return NULL;
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	return m->get(m->arg, size);
}

static void fake_put(void *arg, void *block, size_t size)
{
	struct fake_src *f = arg;

	f->puts++;
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	m->put(m->arg, block, size);
}

static void fake_purge(void *arg, void *block, size_t size)
{
	struct fake_src *f = arg;

	f->purges++;
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	m->purge(m->arg, block, size);
}

/* Write one byte per page of @block (and its last byte), then read them back. */
static void touch_pages(char *block, size_t size, unsigned char tag)
{
	size_t page = pgsrc_page_size();

	for (size_t off = 0; off < size; off += page)
		block[off] = (char)(tag ^ (unsigned char)(off / page));
	block[size - 1] = (char)tag;
	for (size_t off = page; off < size; off += page)
		ck_assert_int_eq((unsigned char)block[off],
		                 (unsigned char)(tag ^ (unsigned char)(off / page)));
	ck_assert_int_eq((unsigned char)block[size - 1], tag);
}

/* ---- mmap source ---- */

/* Loop index i: block size 64 KiB << i, up to 16 MiB. */
START_TEST(pagesrc_mmap_block_aligned_and_writable)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	size_t size = (64 * KIB) << _i;
	char *blocks[3];

	ck_assert_ptr_nonnull(src);
	ck_assert_str_eq(src->name, "mmap");
	/* Three in a row: the first may take the trimming path, the next ones
	 * the hint path; each must be aligned to its size. */
	for (int k = 0; k < 3; k++) {
		blocks[k] = src->get(src->arg, size);
		ck_assert_ptr_nonnull(blocks[k]);
		ck_assert_msg(((uintptr_t)blocks[k] & (size - 1)) == 0,
		              "block %p of %zu bytes unaligned", (void *)blocks[k], size);
		touch_pages(blocks[k], size, (unsigned char)(0x5a + k));
	}
	for (int k = 0; k < 3; k++)
		for (int j = 0; j < k; j++)
			ck_assert_msg(blocks[k] + size <= blocks[j] ||
			                      blocks[j] + size <= blocks[k],
			              "blocks %d and %d overlap", j, k);
	for (int k = 0; k < 3; k++)
		src->put(src->arg, blocks[k], size);
}
END_TEST

START_TEST(pagesrc_mmap_mixed_sizes_aligned)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	static const size_t sizes[] = {64 * KIB, 16 * MIB, 64 * KIB, 128 * KIB,
	                               2 * MIB,  64 * KIB, 4 * MIB};
	char *blocks[sizeof sizes / sizeof sizes[0]];

	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		blocks[k] = src->get(src->arg, sizes[k]);
		ck_assert_ptr_nonnull(blocks[k]);
		ck_assert_msg(((uintptr_t)blocks[k] & (sizes[k] - 1)) == 0, "block %zu unaligned",
		              k);
		blocks[k][0] = 1;
		blocks[k][sizes[k] - 1] = 2;
	}
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		src->put(src->arg, blocks[k], sizes[k]);
}
END_TEST

START_TEST(pagesrc_mmap_invalid_size_fails)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	static const size_t bad[] = {0, 3 * 64 * KIB, 64 * KIB + 1, 64 * KIB - 1, SIZE_MAX};

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		errno = 0;
		ck_assert_msg(src->get(src->arg, bad[k]) == NULL, "size %zu accepted", bad[k]);
		ck_assert_int_eq(errno, EINVAL);
	}
}
END_TEST

/* The purge contract (include/uslab.h): the range stays readable and
 * writable, and a read before a write gives zeros or the old bytes, page
 * by page (MADV_FREE, the default, keeps a page until the kernel needs it;
 * USLAB_PURGE=dontneed zeroes at once). */
START_TEST(pagesrc_mmap_purge_keeps_range_usable)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	size_t size = 64 * KIB, page = pgsrc_page_size();
	char *block = src->get(src->arg, size);

	ck_assert_ptr_nonnull(block);
	memset(block, 0xa5, size);
	ck_assert(src->purge != NULL);
	/* MADV_FREE: the bytes stay until the kernel wants the pages (zeros
	 * or the old ones), and the block stays usable. */
	src->purge(src->arg, block, size);
	for (size_t off = 0; off < size; off += page) {
		unsigned char first = (unsigned char)block[off];
		ck_assert_msg(first == 0 || first == 0xa5, "page %zu reads %#x", off / page, first);
		for (size_t k = 1; k < page; k += 509)
			ck_assert_int_eq((unsigned char)block[off + k], first);
	}
	memset(block, 0xa5, size);
	/* A caller that wants the memory now (a reap): MADV_DONTNEED, and
	 * private anonymous memory reads back as zero. */
	pgsrc_purge(src, block, size, true);
	for (size_t off = 0; off < size; off += 512)
		ck_assert_int_eq(block[off], 0);
	memset(block, 0x3c, size);
	ck_assert_int_eq(block[size - 1], 0x3c);
	src->put(src->arg, block, size);
}
END_TEST

/* ---- Counting wrappers ---- */

START_TEST(pagesrc_totals_count_get_put_purge)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	char *a = pgsrc_get(src, 64 * KIB);
	char *b = pgsrc_get(src, 1 * MIB);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq((uintptr_t)b & (MIB - 1), 0);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, 64 * KIB + MIB);
	ck_assert_uint_eq(t1.pt_put, t0.pt_put);
	ck_assert_uint_eq(t1.pt_purged, t0.pt_purged);
	ck_assert_uint_eq(t1.pt_failures, t0.pt_failures);

	pgsrc_purge(src, b, MIB, false);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_purged - t0.pt_purged, MIB);

	pgsrc_put(src, a, 64 * KIB);
	pgsrc_put(src, b, MIB);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, 64 * KIB + MIB);
	ck_assert_uint_eq(t1.pt_put - t0.pt_put, 64 * KIB + MIB);
	ck_assert_uint_eq(t1.pt_failures, t0.pt_failures);
}
END_TEST

START_TEST(pagesrc_totals_count_failures)
{
	struct fake_src f = {.fail = true};
	const struct uslab_pagesrc src = {
		.name = "fake", .get = fake_get, .put = fake_put, .purge = fake_purge, .arg = &f};
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	ck_assert_ptr_null(pgsrc_get(&src, 64 * KIB));
	ck_assert_ptr_null(pgsrc_get(&src, 128 * KIB));
	pgsrc_totals(&t1);
	ck_assert_uint_eq(f.gets, 2);
	ck_assert_uint_eq(t1.pt_failures - t0.pt_failures, 2);
	ck_assert_uint_eq(t1.pt_got, t0.pt_got);

	/* The same source recovers: counted as a success, not a failure. */
	f.fail = false;
	void *p = pgsrc_get(&src, 64 * KIB);
	ck_assert_ptr_nonnull(p);
	pgsrc_purge(&src, p, 64 * KIB, false);
	pgsrc_put(&src, p, 64 * KIB);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_failures - t0.pt_failures, 2);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, 64 * KIB);
	ck_assert_uint_eq(t1.pt_put - t0.pt_put, 64 * KIB);
	ck_assert_uint_eq(t1.pt_purged - t0.pt_purged, 64 * KIB);
	ck_assert_uint_eq(f.gets, 3);
	ck_assert_uint_eq(f.puts, 1);
	ck_assert_uint_eq(f.purges, 1);
}
END_TEST

START_TEST(pagesrc_invalid_size_counts_failure)
{
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	ck_assert_ptr_null(pgsrc_get(uslab_pagesrc_mmap(), 0));
	ck_assert_ptr_null(pgsrc_get(uslab_pagesrc_mmap(), 96 * KIB));
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_failures - t0.pt_failures, 2);
	ck_assert_uint_eq(t1.pt_got, t0.pt_got);
}
END_TEST

START_TEST(pagesrc_purge_without_callback_is_not_counted)
{
	struct fake_src f = {0};
	const struct uslab_pagesrc src = {
		.name = "nopurge", .get = fake_get, .put = fake_put, .arg = &f};
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	void *p = pgsrc_get(&src, 64 * KIB);
	ck_assert_ptr_nonnull(p);
	pgsrc_purge(&src, p, 64 * KIB, false);
	pgsrc_put(&src, p, 64 * KIB);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_purged, t0.pt_purged);
	ck_assert_uint_eq(t1.pt_put - t0.pt_put, 64 * KIB);
}
END_TEST

START_TEST(pagesrc_page_size_matches_system)
{
	ck_assert_uint_eq(pgsrc_page_size(), (size_t)sysconf(_SC_PAGESIZE));
	ck_assert_uint_eq(pgsrc_page_size() & (pgsrc_page_size() - 1), 0);
}
END_TEST

/* ---- Helpers for the sources below ---- */

/* Pin the thread to the CPU it is on, so that the objects a test frees
 * stay in the magazine its next allocations take from. */
static void pin_cpu(void)
{
	cpu_set_t one;
	int cpu = sched_getcpu();

	if (cpu < 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	(void)sched_setaffinity(0, sizeof one, &one);
}

/* The lines of /proc/self/maps: the process's mappings (read with
 * open/read, which map nothing). */
static long maps_count(void)
{
	static char buf[64 * 1024];
	long lines = 0;
	ssize_t k;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	while ((k = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < k; i++)
			lines += buf[i] == '\n';
	close(fd);
	return lines;
}

/* The sanitizers bring a malloc of their own, which never moves the break. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const bool glibc_malloc = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
static const bool glibc_malloc = false;
#else
static const bool glibc_malloc = true;
#endif
#else
static const bool glibc_malloc = true;
#endif

#if USLAB_HAVE_VALGRIND_H
static bool on_valgrind(void)
{
	return RUNNING_ON_VALGRIND != 0;
}
#else
static bool on_valgrind(void)
{
	return false;
}
#endif

/* ---- Region source: a static array, no system call ---- */

#define REGION_BYTES ((size_t)8 << 20)
#define REGION_OBJS (REGION_BYTES / 64)

/* In .bss. Aligned by hand: a loader need not honour a section's 64 KiB
 * alignment (valgrind's does not). */
static char region_raw[REGION_BYTES + 64 * KIB];
#define region_mem ((char *)(((uintptr_t)region_raw + 64 * KIB - 1) & ~(uintptr_t)(64 * KIB - 1)))
static void *region_objs[REGION_OBJS];

/* Allocate from @c until it fails; each object gets its index. Returns
 * the count, errno as the failing allocation left it. */
static size_t region_fill(struct uslab_cache *c)
{
	size_t n = 0;

	errno = 0;
	while (n < REGION_OBJS && (region_objs[n] = uslab_cache_alloc(c)) != NULL) {
		*(uint64_t *)region_objs[n] = n;
		n++;
	}
	return n;
}

/* Free the @n objects of region_fill(); false when one lost its index or
 * lies outside the region. */
static bool region_drain(struct uslab_cache *c, size_t n)
{
	bool ok = true;

	for (size_t i = 0; i < n; i++) {
		char *p = region_objs[i];
		ok = ok && p >= region_mem && p + 64 <= region_mem + REGION_BYTES &&
		     *(uint64_t *)p == i;
		uslab_cache_free(c, p);
	}
	return ok;
}

static struct uslab_cache *region_cache(const char *name)
{
	struct uslab_pagesrc *src = uslab_pagesrc_region(region_mem, REGION_BYTES);
	struct uslab_cache_conf conf = {.pagesrc = src};

	return src != NULL ? uslab_cache_create(name, 64, &conf) : NULL;
}

START_TEST(pagesrc_region_bad_arguments)
{
	size_t page = pgsrc_page_size();
	static const struct {
		size_t off, len;
		const char *what;
	} bad[] = {
		{1, 1 << 20, "unaligned base"},
		{0, 0, "empty"},
		{0, 64 * KIB, "64 KiB: the header leaves 15 pages"},
		/* 16 pages after the header, but across a 64 KiB boundary: no
		 * aligned 64 KiB block fits. */
		{0, 64 * KIB + 4096, "no aligned 64 KiB block"},
	};

	errno = 0;
	ck_assert_ptr_null(uslab_pagesrc_region(NULL, 1 << 20));
	ck_assert_int_eq(errno, EINVAL);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		ck_assert_msg(uslab_pagesrc_region(region_mem + bad[i].off, bad[i].len) == NULL,
		              "%s accepted", bad[i].what);
		ck_assert_int_eq(errno, EINVAL);
	}
	/* The smallest region that works: a header page just below a 64 KiB
	 * boundary and one block above it, given out once. */
	struct uslab_pagesrc *src =
		uslab_pagesrc_region(region_mem + 64 * KIB - page, page + 64 * KIB);
	ck_assert_ptr_nonnull(src);
	char *b = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_eq(b, region_mem + 64 * KIB);
	errno = 0;
	ck_assert_ptr_null(src->get(src->arg, 64 * KIB));
	ck_assert_int_eq(errno, ENOMEM);
	errno = 0;
	ck_assert_ptr_null(src->get(src->arg, 96 * KIB));
	ck_assert_int_eq(errno, EINVAL);
	src->put(src->arg, b, 64 * KIB);
	ck_assert_ptr_eq(src->get(src->arg, 64 * KIB), b);
}
END_TEST

/* Bytes of every cache's slabs, the library's magazine caches included. */
static int add_slab_bytes(struct uslab_cache *c, void *arg)
{
	struct uslab_stats st;

	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	*(uint64_t *)arg += st.bytes_total;
	return 0;
}

/* bytes_mapped beyond the caches' slabs: what was got but is no slab. */
static uint64_t mapped_beyond_slabs(const struct uslab_global_stats *g)
{
	uint64_t slabs = 0;

	uslab_foreach_cache(add_slab_bytes, &slabs);
	return g->bytes_mapped - slabs;
}

/* Filled to ENOMEM through a real cache, emptied, filled again to the same
 * count; meanwhile no page-source system call, no new mapping, no new
 * metadata chunk. bytes_mapped counts every source's blocks (the region's,
 * and the magazine caches' carved from metadata already mapped), so it
 * grows, but only by slabs: what it holds beyond them does not move. */
START_TEST(pagesrc_region_cache_fills_without_syscalls)
{
	struct uslab_global_stats g0, g1, g2;
	struct uslab_stats s0, s1, s2;

	pin_cpu();
	struct uslab_cache *c = region_cache("region64");
	ck_assert_ptr_nonnull(c);
	void *warm = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(warm);
	uslab_cache_free(c, warm);
	ck_assert_int_eq(uslab_cache_stats(c, &s0), 0);
	ck_assert_int_eq(uslab_global_stats(&g0), 0);
	uint64_t x0 = mapped_beyond_slabs(&g0);
	long m0 = maps_count();

	size_t n1 = region_fill(c);
	ck_assert_int_eq(errno, ENOMEM);
	ck_assert_int_eq(uslab_cache_stats(c, &s1), 0);
	ck_assert_int_eq(uslab_global_stats(&g1), 0);
	uint64_t x1 = mapped_beyond_slabs(&g1);
	long m1 = maps_count();
	ck_assert(region_drain(c, n1));
	/* Every slab back to the region: the refill gets them again. */
	ck_assert_uint_eq(uslab_cache_reap(c), s1.bytes_total);
	ck_assert_int_eq(uslab_cache_stats(c, &s2), 0);
	ck_assert_uint_eq(s2.total_slabs, 0);
	size_t n2 = region_fill(c);
	ck_assert_int_eq(errno, ENOMEM);
	ck_assert_int_eq(uslab_global_stats(&g2), 0);
	uint64_t x2 = mapped_beyond_slabs(&g2);
	long m2 = maps_count();
	ck_assert(region_drain(c, n2));

	ck_assert_uint_eq(n2, n1);
	/* All of the region but its header and the last block's slack. */
	ck_assert_uint_ge(n1, (REGION_BYTES / (64 * KIB) - 2) * s1.objs_per_slab);
	ck_assert_uint_eq(s1.slab_size, 64 * KIB);
	ck_assert_uint_eq(g1.pagesrc_calls, g0.pagesrc_calls);
	ck_assert_uint_eq(g2.pagesrc_calls, g0.pagesrc_calls);
	if (m1 != m0) { /* say which mapping came: a flake seen once (+2) */
		int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
		char b[4096];
		ssize_t k;
		while (fd >= 0 && (k = read(fd, b, sizeof b)) > 0)
			(void)!write(2, b, (size_t)k);
		if (fd >= 0)
			close(fd);
	}
	ck_assert_int_eq(m1, m0);
	ck_assert_int_eq(m2, m0);
	ck_assert_uint_eq(g1.meta_bytes, g0.meta_bytes);
	ck_assert_uint_eq(g2.meta_bytes, g0.meta_bytes);
	ck_assert_uint_ge(g1.bytes_mapped - g0.bytes_mapped, s1.bytes_total - s0.bytes_total);
	ck_assert_uint_eq(x1, x0);
	ck_assert_uint_eq(x2, x0);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* Empty @c and give every slab back to its region: the next fill takes
 * them from the source again. */
static bool region_release(struct uslab_cache *c)
{
	struct uslab_stats st;

	uslab_cache_reap(c);
	return uslab_cache_stats(c, &st) == 0 && st.total_slabs == 0;
}

/* In a child: the memory system calls fail (seccomp, EPERM) and the region
 * cache fills to ENOMEM, empties and fills again exactly as before, its
 * slabs going back to the region and coming again in between. */
static int region_seccomp_child(void *arg)
{
	static const int deny[] = {SYS_mmap,    SYS_munmap,   SYS_mremap,
	                           SYS_madvise, SYS_mprotect, SYS_brk};
	struct uslab_global_stats g0, g1;

	(void)arg;
	pin_cpu();
	struct uslab_cache *c = region_cache("region-seccomp");
	if (c == NULL)
		return 10;
	size_t n0 = region_fill(c);
	if (errno != ENOMEM || !region_drain(c, n0) || !region_release(c))
		return 11;
	if (uslab_global_stats(&g0) != 0)
		return 12;
	if (test_deny_syscalls(deny, (int)(sizeof deny / sizeof deny[0])) != 0)
		return 77;
	/* The filter is in force, or the test would test nothing. */
	errno = 0;
	if (mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED ||
	    errno != EPERM || syscall(SYS_brk, 0) != -1 || errno != EPERM)
		return 13;
	size_t n1 = region_fill(c);
	int e1 = errno;
	bool ok1 = region_drain(c, n1) && region_release(c);
	size_t n2 = region_fill(c);
	int e2 = errno;
	bool ok2 = region_drain(c, n2) && region_release(c);
	if (uslab_global_stats(&g1) != 0)
		return 14;
	fprintf(stderr, "objects: %zu before the filter, %zu and %zu under it (errno %d, %d)\n", n0,
	        n1, n2, e1, e2);
	if (n1 != n0 || n2 != n0 || e1 != ENOMEM || e2 != ENOMEM || !ok1 || !ok2)
		return 15;
	if (g1.pagesrc_calls != g0.pagesrc_calls)
		return 16;
	return uslab_cache_destroy(c) == 0 ? 0 : 17; /* what destroy unmaps is refused: no abort */
}

START_TEST(pagesrc_region_cache_under_seccomp)
{
	char err[512];

	if (on_valgrind())
		return; /* valgrind's own mappings would be refused */
	int rc = test_run_child(region_seccomp_child, NULL, 60, err, sizeof err);
	if (rc == 77) {
		fprintf(stderr, "pagesrc_region_cache_under_seccomp: no seccomp here, skipped\n");
		return;
	}
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
}
END_TEST

/* ---- brk source ---- */

/* The kernel's break (the truth; glibc's sbrk(0) is its cached copy). */
static uintptr_t break_now(void)
{
	return (uintptr_t)syscall(SYS_brk, 0);
}

/* Move the break to @to through glibc, as a foreign party would. */
static void break_set(uintptr_t to)
{
	ck_assert_int_eq(brk((void *)to), 0);
	ck_assert_uint_eq(break_now(), to);
}

static bool all_bytes(const char *p, size_t n, unsigned char v)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] != v)
			return false;
	return true;
}

START_TEST(pagesrc_brk_invalid_size_fails)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_brk();
	const size_t bad[] = {0, 3 * 64 * KIB, 64 * KIB + 1, pgsrc_page_size() / 2, SIZE_MAX};

	ck_assert_str_eq(src->name, "brk");
	uintptr_t b0 = break_now();
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		errno = 0;
		ck_assert_msg(src->get(src->arg, bad[k]) == NULL, "size %zu accepted", bad[k]);
		ck_assert_int_eq(errno, EINVAL);
	}
	ck_assert_uint_eq(break_now(), b0);
}
END_TEST

/* Grow, fill the alignment gaps with smaller blocks, reuse a block given
 * back below the top, then give everything back: the break returns to
 * where it was. No malloc runs meanwhile (the break is ours alone). */
START_TEST(pagesrc_brk_grows_and_shrinks_back)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_brk();
	size_t page = pgsrc_page_size();

	if (on_valgrind())
		return; /* valgrind's brk segment is 8 MiB and its own */
	/* Start one page past a 2 MiB boundary, so that the gaps are known. */
	uintptr_t start = break_now();
	uintptr_t b0 = ((start + 2 * MIB - 1) & ~(uintptr_t)(2 * MIB - 1)) + page;
	break_set(b0);

	char *big = src->get(src->arg, 1 * MIB);
	ck_assert_ptr_eq(big, (char *)(b0 - page + 1 * MIB));
	ck_assert_uint_eq(break_now(), (uintptr_t)big + 1 * MIB);
	/* In the gap [b0, big): below the big block, the break unmoved. */
	char *g64 = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_eq(g64, (char *)(b0 - page + 64 * KIB));
	char *g4 = src->get(src->arg, page);
	ck_assert_ptr_eq(g4, (char *)b0);
	char *g128 = src->get(src->arg, 128 * KIB);
	ck_assert_ptr_eq(g128, (char *)(b0 - page + 128 * KIB));
	ck_assert_uint_eq(break_now(), (uintptr_t)big + 1 * MIB);
	touch_pages(big, 1 * MIB, 1);
	touch_pages(g64, 64 * KIB, 2);
	touch_pages(g4, page, 3);
	touch_pages(g128, 128 * KIB, 4);

	/* Above: a 2 MiB block grows the break again; a block given back
	 * below the top is kept, purged, and the next get of its size reuses
	 * it without moving the break. */
	char *top = src->get(src->arg, 2 * MIB);
	ck_assert_ptr_nonnull(top);
	ck_assert_uint_eq((uintptr_t)top & (2 * MIB - 1), 0);
	ck_assert_uint_eq(break_now(), (uintptr_t)top + 2 * MIB);
	touch_pages(top, 2 * MIB, 5);
	uintptr_t high = break_now();
	src->put(src->arg, g128, 128 * KIB);
	ck_assert_uint_eq(break_now(), high);
	char *again = src->get(src->arg, 128 * KIB);
	ck_assert_ptr_eq(again, g128);
	ck_assert(all_bytes(again, 128 * KIB, 0)); /* purged when given back */
	ck_assert_uint_eq(break_now(), high);
	src->purge(src->arg, big, 64 * KIB); /* stays usable */
	ck_assert(all_bytes(big, 64 * KIB, 0));
	big[0] = 7;

	/* Back in a mixed order: the break falls as the top comes back. */
	src->put(src->arg, top, 2 * MIB);
	ck_assert_uint_eq(break_now(), (uintptr_t)big + 1 * MIB);
	src->put(src->arg, g64, 64 * KIB);
	src->put(src->arg, big, 1 * MIB);
	ck_assert_uint_eq(break_now(), (uintptr_t)again + 128 * KIB);
	src->put(src->arg, again, 128 * KIB);
	ck_assert_uint_eq(break_now(), b0 + page);
	src->put(src->arg, g4, page);
	ck_assert_uint_eq(break_now(), b0);
	src->put(src->arg, g4, page); /* a second put: ignored */
	ck_assert_uint_eq(break_now(), b0);
	break_set(start);
}
END_TEST

/* glibc's malloc moves the break between our blocks: a foreign move. Its
 * memory is never given back by our puts; our blocks below it are kept
 * and reused. */
START_TEST(pagesrc_brk_beside_glibc_malloc)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_brk();

	if (on_valgrind() || !glibc_malloc) {
		fprintf(stderr,
		        "pagesrc_brk_beside_glibc_malloc: malloc is not glibc's, skipped\n");
		return;
	}
	/* glibc's main heap serves big requests from the break and pads
	 * nothing; it trims only when told to below. (Trimming while it grows
	 * over a foreign move would fail that malloc: sysmalloc frees the old
	 * top, and with no pad the free trims the new top it just got.) */
	ck_assert_int_eq(mallopt(M_MMAP_THRESHOLD, 32 << 20), 1);
	ck_assert_int_eq(mallopt(M_TOP_PAD, 0), 1);
	ck_assert_int_eq(mallopt(M_TRIM_THRESHOLD, 64 << 20), 1);
	char *low = malloc(1000); /* glibc's, below all of ours */
	ck_assert_ptr_nonnull(low);
	memset(low, 0x11, 1000);

	char *a = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_nonnull(a);
	touch_pages(a, 64 * KIB, 0x21);
	uintptr_t ours = break_now();
	ck_assert_uint_eq(ours, (uintptr_t)a + 64 * KIB);

	/* More than all of glibc's free memory: it must move the break. */
	struct mallinfo2 mi = mallinfo2();
	size_t gsize = mi.fordblks + 512 * KIB;
	char *g = malloc(gsize);
	ck_assert_ptr_nonnull(g);
	uintptr_t foreign = break_now();
	ck_assert_msg(foreign > ours, "glibc did not move the break (%#lx, ours %#lx)",
	              (unsigned long)foreign, (unsigned long)ours);
	ck_assert_uint_ge((uintptr_t)g, ours); /* above ours */
	memset(g, 0x33, gsize);

	char *b = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_ge((uintptr_t)b, foreign);
	touch_pages(b, 64 * KIB, 0x22);

	/* a is below glibc's memory: kept, the break untouched. */
	src->put(src->arg, a, 64 * KIB);
	ck_assert_uint_eq(break_now(), (uintptr_t)b + 64 * KIB);
	/* b is at the top: the break goes back to glibc's end, not below. */
	src->put(src->arg, b, 64 * KIB);
	ck_assert_uint_eq(break_now(), foreign);
	ck_assert(all_bytes(g, gsize, 0x33));
	ck_assert(all_bytes(low, 1000, 0x11));
	memset(g, 0x44, gsize);

	/* Our memory below glibc's is reused first, the break unmoved. */
	char *c = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_eq(c, a);
	ck_assert(all_bytes(c, 64 * KIB, 0));
	ck_assert_uint_eq(break_now(), foreign);
	touch_pages(c, 64 * KIB, 0x23);

	/* glibc trims its top back (a foreign move down); our block below
	 * it stays ours and intact, and glibc's first block too. */
	ck_assert_int_eq(mallopt(M_TRIM_THRESHOLD, 128 << 10), 1);
	free(g);
	uintptr_t trimmed = break_now();
	ck_assert_uint_lt(trimmed, foreign);
	ck_assert_uint_ge(trimmed, (uintptr_t)c + 64 * KIB);
	touch_pages(c, 64 * KIB, 0x24);
	src->put(src->arg, c, 64 * KIB);
	ck_assert_uint_eq(break_now(), trimmed); /* not ours to move */
	ck_assert(all_bytes(low, 1000, 0x11));
	/* glibc grows over it all again, unharmed. */
	char *g2 = malloc(gsize);
	ck_assert_ptr_nonnull(g2);
	memset(g2, 0x55, gsize);
	ck_assert(all_bytes(g2, gsize, 0x55));
	free(g2);
	free(low);
}
END_TEST

/* The source under a real cache: every object lies in the heap, and when
 * the cache is destroyed the break is back where it was. */
START_TEST(pagesrc_brk_cache_round_trip)
{
	enum { N = 40000 };
	static char *objs[N];
	struct uslab_cache_conf conf = {.pagesrc = uslab_pagesrc_brk()};

	if (on_valgrind())
		return;
	uintptr_t b0 = break_now();
	struct uslab_cache *c = uslab_cache_create("brk64", 64, &conf);
	ck_assert_ptr_nonnull(c);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++) {
			objs[i] = uslab_cache_alloc(c);
			ck_assert_ptr_nonnull(objs[i]);
			memset(objs[i], (char)i, 64);
		}
		uintptr_t hi = break_now();
		ck_assert_uint_ge(hi - b0, (size_t)N * 64);
		for (int i = 0; i < N; i++) {
			ck_assert((uintptr_t)objs[i] >= b0 && (uintptr_t)objs[i] + 64 <= hi);
			ck_assert(all_bytes(objs[i], 64, (unsigned char)i));
			uslab_cache_free(c, objs[i]);
		}
	}
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	ck_assert_uint_eq(break_now(), b0);
}
END_TEST

/* The table's limit: 4,097 holes. The one that finds the table full is
 * purged and counted lost, and nothing else goes wrong. */
START_TEST(pagesrc_brk_full_table_loses_one_block)
{
	enum { HOLES = 4097, BLOCKS = 2 * HOLES };
	static char *b[BLOCKS];
	const struct uslab_pagesrc *src = uslab_pagesrc_brk();
	size_t page = pgsrc_page_size();

	if (on_valgrind())
		return;
	uintptr_t start = break_now();
	break_set((start + page - 1) & ~(uintptr_t)(page - 1));
	uint64_t lost0 = pgsrc_brk_lost();
	for (int i = 0; i < BLOCKS; i++) {
		b[i] = src->get(src->arg, page);
		ck_assert_ptr_nonnull(b[i]);
		b[i][0] = 1;
	}
	for (int i = 0; i < BLOCKS; i += 2)
		src->put(src->arg, b[i], page);
	ck_assert_uint_eq(pgsrc_brk_lost() - lost0, page);
	ck_assert_int_eq(b[BLOCKS - 2][0], 0); /* the lost one: purged, still mapped */
	b[BLOCKS - 2][0] = 2;
	for (int i = 1; i < BLOCKS; i += 2)
		src->put(src->arg, b[i], page);
	/* All but the lost block came back: the break stays above it. */
	ck_assert_uint_eq(break_now(), (uintptr_t)b[BLOCKS - 1]);
	char *again = src->get(src->arg, page);
	ck_assert_ptr_eq(again, b[0]);
	src->put(src->arg, again, page);
}
END_TEST

/* ---- Hugepage source ---- */

#define AREA ((size_t)2 << 20)

static uintptr_t area_of(const void *p)
{
	return (uintptr_t)p & ~(uintptr_t)(AREA - 1);
}

/* Does a mapping of /proc/self/maps overlap [@p, @p + @len)? */
static bool is_mapped(const void *p, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	bool hit = false;

	ck_assert_ptr_nonnull(f);
	while (!hit && fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi;
		hit = sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && (uintptr_t)p < hi &&
		      (uintptr_t)p + len > lo;
	}
	fclose(f);
	return hit;
}

/* The mapping of /proc/self/smaps that holds @p: its AnonHugePages (kB)
 * and whether its VmFlags has @flag ("hg": MADV_HUGEPAGE, "ht": hugetlb).
 * False when no mapping holds @p. */
static bool smaps_of(const void *p, long *anon_huge_kb, const char *flag, bool *has_flag)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in = false, found = false;

	ck_assert_ptr_nonnull(f);
	*anon_huge_kb = -1;
	*has_flag = false;
	while (fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line */
			if (found)
				break;
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
			found = in;
			continue;
		}
		if (!in)
			continue;
		if (strncmp(line, "AnonHugePages:", 14) == 0)
			*anon_huge_kb = strtol(line + 14, NULL, 10);
		if (strncmp(line, "VmFlags:", 8) == 0) {
			for (char *save = NULL, *t = strtok_r(line + 8, " \n", &save); t != NULL;
			     t = strtok_r(NULL, " \n", &save))
				*has_flag = *has_flag || strcmp(t, flag) == 0;
		}
	}
	fclose(f);
	return found;
}

/* What the real kernel offers: the mode the source should decide. */
static const char *expected_real_mode(void)
{
	char buf[256] = "";
	FILE *f = fopen("/proc/meminfo", "re");
	long free_pages = 0;

	for (char line[256]; f != NULL && fgets(line, sizeof line, f) != NULL;)
		sscanf(line, "HugePages_Free: %ld", &free_pages);
	if (f != NULL)
		fclose(f);
	if (free_pages > 0)
		return "hugetlb";
	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
	if (f == NULL)
		return "off";
	if (fgets(buf, sizeof buf, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	return strstr(buf, "[never]") != NULL ? "off" : "thp";
}

START_TEST(pagesrc_hugepage_invalid_size_fails)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_hugepage();
	const size_t bad[] = {0, 3 * 64 * KIB, 64 * KIB + 1, pgsrc_page_size() / 2, SIZE_MAX};

	ck_assert_str_eq(src->name, "hugepage");
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		errno = 0;
		ck_assert_msg(src->get(src->arg, bad[k]) == NULL, "size %zu accepted", bad[k]);
		ck_assert_int_eq(errno, EINVAL);
	}
}
END_TEST

/* Blocks are carved from 2 MiB areas, aligned to their size; one given
 * back is reused (purged); an area goes when its last block is back. */
START_TEST(pagesrc_hugepage_blocks_carved_from_areas)
{
	enum { N = 40 };
	const struct uslab_pagesrc *src = uslab_pagesrc_hugepage();
	char *b[N];

	const char *mode = uslab_pagesrc_hugepage_mode();
	ck_assert_ptr_nonnull(mode);
	ck_assert_msg(strncmp(mode, expected_real_mode(), strlen(expected_real_mode())) == 0,
	              "mode \"%s\", expected \"%s\"", mode, expected_real_mode());
	for (int i = 0; i < N; i++) {
		b[i] = src->get(src->arg, 64 * KIB);
		ck_assert_ptr_nonnull(b[i]);
		ck_assert_uint_eq((uintptr_t)b[i] & (64 * KIB - 1), 0);
		touch_pages(b[i], 64 * KIB, (unsigned char)i);
	}
	/* 32 blocks of 64 KiB fill one area; the next ones open another. */
	for (int i = 1; i < 32; i++)
		ck_assert_uint_eq(area_of(b[i]), area_of(b[0]));
	for (int i = 33; i < N; i++)
		ck_assert_uint_eq(area_of(b[i]), area_of(b[32]));
	ck_assert_uint_ne(area_of(b[32]), area_of(b[0]));
	for (int i = 0; i < N; i++)
		for (int j = 0; j < i; j++)
			ck_assert_ptr_ne(b[i], b[j]);
	/* A 1 MiB block shares the second area; 2 and 4 MiB get their own. */
	char *m1 = src->get(src->arg, 1 * MIB);
	char *m2 = src->get(src->arg, 2 * MIB);
	char *m4 = src->get(src->arg, 4 * MIB);
	ck_assert_ptr_nonnull(m1);
	ck_assert_ptr_nonnull(m2);
	ck_assert_ptr_nonnull(m4);
	ck_assert_uint_eq((uintptr_t)m1 & (MIB - 1), 0);
	ck_assert_uint_eq(area_of(m1), area_of(b[32]));
	ck_assert_uint_eq((uintptr_t)m2 & (2 * MIB - 1), 0);
	ck_assert_uint_eq((uintptr_t)m4 & (4 * MIB - 1), 0);
	touch_pages(m1, 1 * MIB, 0x71);
	touch_pages(m2, 2 * MIB, 0x72);
	touch_pages(m4, 4 * MIB, 0x74);

	/* Given back and taken again: the same block, purged (a hugetlb
	 * area keeps the bytes: its page cannot be split). */
	memset(b[5], 0x5a, 64 * KIB);
	src->put(src->arg, b[5], 64 * KIB);
	ck_assert(is_mapped(b[5], 64 * KIB));
	char *again = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_eq(again, b[5]);
	if (strcmp(mode, "hugetlb") != 0)
		ck_assert(all_bytes(again, 64 * KIB, 0));
	src->purge(src->arg, m4, 2 * MIB); /* whole huge pages: dropped in every kind */
	ck_assert(all_bytes(m4, 2 * MIB, 0));
	ck_assert_int_eq((unsigned char)m4[2 * MIB],
	                 (unsigned char)(0x74 ^ (unsigned char)(2 * MIB / pgsrc_page_size())));

	uintptr_t a0 = area_of(b[0]), a1 = area_of(b[32]);
	for (int i = 0; i < N; i++)
		src->put(src->arg, b[i], 64 * KIB);
	ck_assert(is_mapped((void *)a1, AREA)); /* m1 is still in it */
	ck_assert(!is_mapped((void *)a0, AREA));
	src->put(src->arg, m1, 1 * MIB);
	ck_assert(!is_mapped((void *)a1, AREA));
	src->put(src->arg, m2, 2 * MIB);
	src->put(src->arg, m4, 4 * MIB);
	ck_assert(!is_mapped(m2, 2 * MIB));
	ck_assert(!is_mapped(m4, 4 * MIB));
	src->put(src->arg, m4, 4 * MIB); /* not a block any more: ignored */
}
END_TEST

/* Where the kernel has THP in "madvise" (or "always") mode: an area is
 * advised MADV_HUGEPAGE, and after it is touched it holds huge pages
 * (unless the kernel had none to give: then a message, no failure). */
START_TEST(pagesrc_hugepage_thp_backs_areas)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_hugepage();
	const char *mode = uslab_pagesrc_hugepage_mode();
	long anon_kb;
	bool advised;

	if (strcmp(mode, "thp") != 0) {
		fprintf(stderr, "pagesrc_hugepage_thp_backs_areas: mode \"%s\", skipped\n", mode);
		return;
	}
	char *b[32];
	for (int i = 0; i < 32; i++) {
		b[i] = src->get(src->arg, 64 * KIB);
		ck_assert_ptr_nonnull(b[i]);
		memset(b[i], 1, 64 * KIB);
	}
	ck_assert_uint_eq(area_of(b[31]), area_of(b[0]));
	ck_assert(smaps_of(b[0], &anon_kb, "hg", &advised));
	ck_assert_msg(advised, "the area at %p is not advised MADV_HUGEPAGE", (void *)b[0]);
	if (anon_kb <= 0)
		fprintf(stderr,
		        "pagesrc_hugepage_thp_backs_areas: the kernel gave no huge page "
		        "(AnonHugePages %ld kB): fragmented memory? not checked\n",
		        anon_kb);
	else
		ck_assert_int_ge(anon_kb, 2048);
	for (int i = 0; i < 32; i++)
		src->put(src->arg, b[i], 64 * KIB);
}
END_TEST

/* ---- The decision, from files the test writes ---- */

static void write_file(const char *root, const char *rel, const char *text)
{
	char path[512];

	snprintf(path, sizeof path, "%s/%s", root, rel);
	for (char *s = strchr(path + strlen(root) + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		ck_assert(mkdir(path, 0700) == 0 || errno == EEXIST);
		*s = '/';
	}
	FILE *f = fopen(path, "we");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* A fake root: THP setting @thp (NULL: no sysfs file), @nr reserved huge
 * pages with @nfree free, PMD size @pmd (NULL: no file). */
static void fake_root(char *root, size_t len, const char *thp, const char *nr, const char *nfree,
                      const char *pmd)
{
	char meminfo[256];

	snprintf(root, len, "/tmp/uslab-hp.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(root));
	if (thp != NULL)
		write_file(root, "sys/kernel/mm/transparent_hugepage/enabled", thp);
	if (pmd != NULL)
		write_file(root, "sys/kernel/mm/transparent_hugepage/hpage_pmd_size", pmd);
	write_file(root, "proc/sys/vm/nr_hugepages", nr);
	snprintf(meminfo, sizeof meminfo,
	         "MemTotal:        4000000 kB\nHugePages_Total:       %s\n"
	         "HugePages_Free:        %s\nHugepagesize:       2048 kB\n",
	         nr, nfree);
	write_file(root, "proc/meminfo", meminfo);
}

static void rm_root(const char *root)
{
	char cmd[600];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	ck_assert_int_eq(system(cmd), 0);
}

/* Blocks of the source in the mode just decided: they work, and their
 * area is advised MADV_HUGEPAGE exactly when @advised. */
static void check_blocks(bool advised)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_hugepage();
	char *b[3];
	long anon_kb;
	bool hg;

	for (int i = 0; i < 3; i++) {
		b[i] = src->get(src->arg, 64 * KIB);
		ck_assert_ptr_nonnull(b[i]);
		ck_assert_uint_eq(area_of(b[i]), area_of(b[0]));
		touch_pages(b[i], 64 * KIB, (unsigned char)(0x30 + i));
	}
	ck_assert(smaps_of(b[0], &anon_kb, "hg", &hg));
	ck_assert_msg(hg == advised, "area %p advised %d, expected %d", (void *)b[0], hg, advised);
	for (int i = 0; i < 3; i++)
		src->put(src->arg, b[i], 64 * KIB);
}

START_TEST(pagesrc_hugepage_fallback_in_mode)
{
	static const struct {
		const char *thp, *nr, *nfree, *pmd, *mode;
	} cases[] = {
		{"always madvise [never]\n", "0", "0", "2097152\n",
	         "off: transparent huge pages are"},
		{NULL, "0", "0", NULL, "off: no transparent huge pages"},
		{"always [madvise] never\n", "0", "0", "1073741824\n", "off: the transparent huge"},
		{"[always] madvise never\n", "0", "0", "2097152\n", "thp"},
		/* The pool claims pages: the trial MAP_HUGETLB decides. */
		{"always [madvise] never\n", "8", "8", "2097152\n", NULL},
	};
	char root[64];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		fake_root(root, sizeof root, cases[i].thp, cases[i].nr, cases[i].nfree,
		          cases[i].pmd);
		const char *mode = pgsrc_hugepage_decide(root);
		rm_root(root);
		ck_assert_ptr_nonnull(mode);
		ck_assert_ptr_eq(uslab_pagesrc_hugepage_mode(), mode);
		const char *want = cases[i].mode;
		if (want == NULL) /* this kernel's pool: hugetlb if it has pages */
			want = strcmp(expected_real_mode(), "hugetlb") == 0 ? "hugetlb" : "thp";
		ck_assert_msg(strncmp(mode, want, strlen(want)) == 0, "case %zu: mode \"%s\"", i,
		              mode);
		if (strcmp(mode, "hugetlb") != 0)
			check_blocks(strcmp(mode, "thp") == 0);
	}
	/* Not while an area is mapped. */
	const struct uslab_pagesrc *src = uslab_pagesrc_hugepage();
	void *b = src->get(src->arg, 64 * KIB);
	ck_assert_ptr_nonnull(b);
	errno = 0;
	ck_assert_ptr_null(pgsrc_hugepage_decide(NULL));
	ck_assert_int_eq(errno, EBUSY);
	src->put(src->arg, b, 64 * KIB);
	ck_assert_ptr_nonnull(pgsrc_hugepage_decide(NULL)); /* the real files again */
	struct uslab_global_stats g;
	ck_assert_int_eq(uslab_global_stats(&g), 0);
	ck_assert_ptr_eq(g.hugepage, uslab_pagesrc_hugepage_mode());
}
END_TEST

/* ---- Both sources from several threads ---- */

struct hammer {
	const struct uslab_pagesrc *h_src;
	pthread_barrier_t *h_start, *h_end;
	unsigned h_id;
	unsigned h_bad; /* blocks that were not ours alone, or failures */
};

/* Tag the first word of every page of @p with @tag, or check the tags. */
static bool tag_pages(char *p, size_t size, uint64_t tag, bool check)
{
	size_t page = pgsrc_page_size();

	for (size_t off = 0; off < size; off += page) {
		if (check && *(uint64_t *)(p + off) != tag)
			return false;
		*(uint64_t *)(p + off) = tag;
	}
	return true;
}

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	struct {
		char *l_p;
		size_t l_size;
		uint64_t l_tag;
	} live[8] = {{0}};
	uint64_t x = 0x9e3779b97f4a7c15ull * (h->h_id + 1);

	pthread_barrier_wait(h->h_start);
	for (unsigned it = 0; it < 3000; it++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		unsigned k = (unsigned)(x % 8);
		if (live[k].l_p != NULL) {
			h->h_bad += !tag_pages(live[k].l_p, live[k].l_size, live[k].l_tag, true);
			h->h_src->put(h->h_src->arg, live[k].l_p, live[k].l_size);
			live[k].l_p = NULL;
			continue;
		}
		size_t size = (64 * KIB) << ((x >> 8) % 4);
		char *p = h->h_src->get(h->h_src->arg, size);
		if (p == NULL || ((uintptr_t)p & (size - 1)) != 0) {
			h->h_bad++;
			continue;
		}
		live[k].l_p = p;
		live[k].l_size = size;
		live[k].l_tag = ((uint64_t)h->h_id << 32) | it;
		tag_pages(p, size, live[k].l_tag, false);
	}
	for (unsigned k = 0; k < 8; k++)
		if (live[k].l_p != NULL) {
			h->h_bad += !tag_pages(live[k].l_p, live[k].l_size, live[k].l_tag, true);
			h->h_src->put(h->h_src->arg, live[k].l_p, live[k].l_size);
		}
	pthread_barrier_wait(h->h_end);
	return NULL;
}

/* Loop index: 0 the brk source, 1 the hugepage source. Four threads get,
 * tag, check and give back blocks; no block is ever two threads'. With
 * brk, once all are back the break is where it was. */
START_TEST(pagesrc_sources_threaded)
{
	enum { T = 4 };
	const struct uslab_pagesrc *src = _i == 0 ? uslab_pagesrc_brk() : uslab_pagesrc_hugepage();
	pthread_barrier_t start, end;
	pthread_t t[T];
	struct hammer h[T];

	if (_i == 0 && on_valgrind())
		return;
	ck_assert_int_eq(pthread_barrier_init(&start, NULL, T + 1), 0);
	ck_assert_int_eq(pthread_barrier_init(&end, NULL, T + 1), 0);
	for (unsigned i = 0; i < T; i++) {
		h[i] = (struct hammer){.h_src = src, .h_start = &start, .h_end = &end, .h_id = i};
		ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
	}
	/* Threads made (glibc may have moved the break for them): measure. */
	uintptr_t b0 = break_now();
	pthread_barrier_wait(&start);
	pthread_barrier_wait(&end);
	uintptr_t b1 = break_now();
	for (unsigned i = 0; i < T; i++) {
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
		ck_assert_msg(h[i].h_bad == 0, "thread %u: %u bad blocks", i, h[i].h_bad);
	}
	if (_i == 0)
		ck_assert_uint_eq(b1, b0);
	pthread_barrier_destroy(&start);
	pthread_barrier_destroy(&end);
}
END_TEST

static Suite *pagesrc_suite(void)
{
	Suite *s = suite_create("pagesrc");
	TCase *tc;

	tc = tcase_create("mmap");
	tcase_add_loop_test(tc, pagesrc_mmap_block_aligned_and_writable, 0,
	                    9); /* 64 KiB .. 16 MiB */
	tcase_add_test(tc, pagesrc_mmap_mixed_sizes_aligned);
	tcase_add_test(tc, pagesrc_mmap_invalid_size_fails);
	tcase_add_test(tc, pagesrc_mmap_purge_keeps_range_usable);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);

	tc = tcase_create("totals");
	tcase_add_test(tc, pagesrc_totals_count_get_put_purge);
	tcase_add_test(tc, pagesrc_totals_count_failures);
	tcase_add_test(tc, pagesrc_invalid_size_counts_failure);
	tcase_add_test(tc, pagesrc_purge_without_callback_is_not_counted);
	tcase_add_test(tc, pagesrc_page_size_matches_system);
	suite_add_tcase(s, tc);

	tc = tcase_create("region");
	tcase_add_test(tc, pagesrc_region_bad_arguments);
	tcase_add_test(tc, pagesrc_region_cache_fills_without_syscalls);
	tcase_add_test(tc, pagesrc_region_cache_under_seccomp);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("brk");
	tcase_add_test(tc, pagesrc_brk_invalid_size_fails);
	tcase_add_test(tc, pagesrc_brk_grows_and_shrinks_back);
	tcase_add_test(tc, pagesrc_brk_beside_glibc_malloc);
	tcase_add_test(tc, pagesrc_brk_cache_round_trip);
	tcase_add_test(tc, pagesrc_brk_full_table_loses_one_block);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("hugepage");
	tcase_add_test(tc, pagesrc_hugepage_invalid_size_fails);
	tcase_add_test(tc, pagesrc_hugepage_blocks_carved_from_areas);
	tcase_add_test(tc, pagesrc_hugepage_thp_backs_areas);
	tcase_add_test(tc, pagesrc_hugepage_fallback_in_mode);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_add_loop_test(tc, pagesrc_sources_threaded, 0, 2); /* brk, hugepage */
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {pagesrc_suite, NULL};
