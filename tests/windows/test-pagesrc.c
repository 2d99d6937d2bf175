/* SPDX-License-Identifier: MIT */
/* The page sources and the platform layer on Windows (run under wine64). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "internal.h"
#include "testutil.h"
#include "uslab/stats.h"

/* ---- The VirtualAlloc source ---- */

static uint64_t calls(void)
{
	struct pgsrc_totals t;
	pgsrc_totals(&t);
	return t.pt_calls;
}

/* Blocks of every size the slab layer asks for: aligned to their size,
 * zeroed, writable, each a reservation of its own. */
START_TEST(va_blocks_aligned_zeroed_own_reservation)
{
	const struct uslab_pagesrc *va = uslab_pagesrc_virtualalloc();
	size_t size = (size_t)64 << (_i % 8); /* KiB: 64 .. 8192 */
	void *b[4];

	size <<= 10;
	ck_assert_ptr_nonnull(va);
	ck_assert_str_eq(va->name, "virtualalloc");
	ck_assert_ptr_eq(pgsrc_default(), va);
	for (int k = 0; k < 4; k++) {
		uint64_t c0 = calls();
		b[k] = pgsrc_get(va, size);
		ck_assert_ptr_nonnull(b[k]);
		ck_assert_uint_gt(calls(), c0);
		ck_assert_uint_eq((uintptr_t)b[k] & (size - 1), 0);
		unsigned char *p = b[k];
		for (size_t i = 0; i < size; i += 4096)
			ck_assert_uint_eq(p[i], 0);
		memset(p, 0xa5, size);
		MEMORY_BASIC_INFORMATION mi;
		ck_assert_uint_eq(VirtualQuery(p, &mi, sizeof mi), sizeof mi);
		ck_assert_ptr_eq(mi.AllocationBase, p);
		ck_assert_uint_eq(mi.State, MEM_COMMIT);
		ck_assert_uint_eq(mi.RegionSize, size);
	}
	for (int k = 0; k < 4; k++) {
		pgsrc_put(va, b[k], size);
		MEMORY_BASIC_INFORMATION mi;
		ck_assert_uint_eq(VirtualQuery(b[k], &mi, sizeof mi), sizeof mi);
		ck_assert_uint_eq(mi.State, MEM_FREE); /* released, not just decommitted */
	}
}
END_TEST

START_TEST(va_rejects_bad_sizes)
{
	const struct uslab_pagesrc *va = uslab_pagesrc_virtualalloc();
	size_t bad[] = {0, 3, 65536 + 4096, (size_t)1 << 41};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		ck_assert_ptr_null(va->get(va->arg, bad[i]));
		ck_assert_int_eq(errno, EINVAL);
	}
}
END_TEST

/* Purge keeps the block usable; purging for a reap takes its pages out of
 * the working set. */
START_TEST(va_purge_keeps_block_drops_pages)
{
	const struct uslab_pagesrc *va = uslab_pagesrc_virtualalloc();
	size_t size = (size_t)256 << 10, page = test_page_size();
	static unsigned char vec[(256 << 10) / 4096];
	unsigned char *p = pgsrc_get(va, size);

	ck_assert_ptr_nonnull(p);
	memset(p, 1, size);
	ck_assert_int_eq(test_resident(p, size, vec), 0);
	size_t before = 0, after = 0;
	for (size_t i = 0; i < size / page; i++)
		before += vec[i] & 1;
	ck_assert_uint_eq(before, size / page);
	uint64_t c0 = calls();
	pgsrc_purge(va, p, size, false);
	ck_assert_uint_gt(calls(), c0);
	memset(p, 2, size); /* still committed and writable */
	pgsrc_purge(va, p, size, true);
	ck_assert_int_eq(test_resident(p, size, vec), 0);
	for (size_t i = 0; i < size / page; i++)
		after += vec[i] & 1;
	ck_assert_msg(after < before, "resident pages %zu after a purge for reap (of %zu)", after,
	              before);
	p[0] = 3;
	ck_assert_uint_eq(p[0], 3);
	pgsrc_put(va, p, size);
}
END_TEST

/* Threads racing for blocks (the placement retries when another thread
 * takes the range it found): all distinct, aligned, released. */
static void *va_racer(void *arg)
{
	const struct uslab_pagesrc *va = uslab_pagesrc_virtualalloc();
	size_t size = (size_t)1 << 20;
	void *b[32];

	(void)arg;
	for (int round = 0; round < 20; round++) {
		for (int k = 0; k < 32; k++) {
			b[k] = pgsrc_get(va, size);
			if (b[k] == NULL || ((uintptr_t)b[k] & (size - 1)) != 0)
				return (void *)1;
			*(uintptr_t *)b[k] = (uintptr_t)b[k];
		}
		for (int k = 0; k < 32; k++) {
			if (*(uintptr_t *)b[k] != (uintptr_t)b[k])
				return (void *)2;
			pgsrc_put(va, b[k], size);
		}
	}
	return NULL;
}

START_TEST(va_threads_race_for_blocks)
{
	pthread_t t[6];
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, va_racer, NULL), 0);
	for (int i = 0; i < 6; i++) {
		void *r;
		ck_assert_int_eq(pthread_join(t[i], &r), 0);
		ck_assert_ptr_null(r);
	}
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, t1.pt_put - t0.pt_put);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, (uint64_t)6 * 20 * 32 << 20);
}
END_TEST

/* ---- What Windows does not have ---- */

START_TEST(linux_sources_answer_enosys)
{
	errno = 0;
	ck_assert_ptr_null(uslab_pagesrc_mmap());
	ck_assert_int_eq(errno, ENOSYS);
	errno = 0;
	ck_assert_ptr_null(uslab_pagesrc_brk());
	ck_assert_int_eq(errno, ENOSYS);
	errno = 0;
	ck_assert_ptr_null(uslab_pagesrc_hugepage());
	ck_assert_int_eq(errno, ENOSYS);
	ck_assert_str_eq(uslab_pagesrc_hugepage_mode(), "off: not on Windows");
}
END_TEST

START_TEST(absent_layers_say_so)
{
	struct uslab_global_stats g;
	struct uslab_cache_conf conf = {.flags = USLAB_TYPESAFE_BY_RCU};

	ck_assert_int_eq(strncmp(uslab_mode(), "locked: ", 8), 0);
	ck_assert_int_eq(uslab_global_stats(&g), 0);
	ck_assert_int_eq(strncmp(g.segment, "absent: ", 8), 0);
	ck_assert_uint_eq(g.cpus, (uint64_t)os_ncpus());
	errno = 0;
	ck_assert_ptr_null(uslab_cache_create("typesafe", 64, &conf));
	ck_assert_int_eq(errno, ENOSYS);
	errno = 0;
	ck_assert_ptr_null(uslab_stats_open(1));
	ck_assert_int_eq(errno, ENOSYS);

	/* free_rcu keeps the object (never reused) and says ENOSYS. */
	struct uslab_cache *c = uslab_cache_create("rcu_free", 64, NULL);
	ck_assert_ptr_nonnull(c);
	void *o = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(o);
	errno = 0;
	uslab_cache_free_rcu(c, o);
	ck_assert_int_eq(errno, ENOSYS);
	for (int i = 0; i < 1000; i++) {
		void *p = uslab_cache_alloc(c);
		ck_assert_ptr_ne(p, o);
		uslab_cache_free(c, p);
	}
}
END_TEST

/* ---- The default source and the region source under caches ---- */

/* A cache's whole life on the default source; the second time round the
 * library's own magazine caches are warm, and everything the cache mapped
 * goes back at destroy. */
static void va_cache_cycle(struct uslab_global_stats *during)
{
	enum { N = 20000 };
	static void *objs[N];

	struct uslab_cache *c = uslab_cache_create("va_cache", 200, NULL);
	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < N; i++) {
		objs[i] = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(objs[i]);
		memset(objs[i], i, 200);
	}
	ck_assert_int_eq(uslab_global_stats(during), 0);
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}

START_TEST(cache_on_default_source_maps_and_returns)
{
	struct uslab_global_stats g0, g1, g2;

	va_cache_cycle(&g1);
	ck_assert_int_eq(uslab_global_stats(&g0), 0);
	va_cache_cycle(&g1);
	ck_assert_int_eq(uslab_global_stats(&g2), 0);
	ck_assert_uint_ge(g1.bytes_mapped - g0.bytes_mapped, (uint64_t)20000 * 200);
	ck_assert_uint_gt(g1.pagesrc_calls, g0.pagesrc_calls);
	ck_assert_uint_eq(g2.bytes_mapped, g0.bytes_mapped);
	ck_assert_uint_ge(g2.bytes_returned - g0.bytes_returned, (uint64_t)20000 * 200);
}
END_TEST

START_TEST(region_cache_fills_without_system_calls)
{
	size_t len = (size_t)4 << 20;
	void *raw = os_map(len + ((size_t)64 << 10), OS_RW);
	ck_assert_ptr_nonnull(raw);
	char *base = (char *)(((uintptr_t)raw + 0xffff) & ~(uintptr_t)0xffff);
	struct uslab_pagesrc *r = uslab_pagesrc_region(base, len);
	ck_assert_ptr_nonnull(r);
	struct uslab_cache_conf conf = {.pagesrc = r};
	struct uslab_cache *c = uslab_cache_create("region_cache", 256, &conf);
	ck_assert_ptr_nonnull(c);

	void *warm = uslab_cache_alloc(c); /* the library's own first structures */
	ck_assert_ptr_nonnull(warm);
	uint64_t c0 = calls();
	void *objs[4000];
	int n = 0;
	while (n < 4000 && (objs[n] = uslab_cache_alloc(c)) != NULL) {
		ck_assert_uint_ge((uintptr_t)objs[n], (uintptr_t)base);
		ck_assert_uint_lt((uintptr_t)objs[n], (uintptr_t)base + len);
		n++;
	}
	ck_assert_int_eq(n, 4000);
	ck_assert_uint_eq(calls(), c0);
	for (int i = 0; i < n; i++)
		uslab_cache_free(c, objs[i]);
	uslab_cache_free(c, warm);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	os_unmap(raw, len + ((size_t)64 << 10));
}
END_TEST

/* ---- The platform layer's Win32 side ---- */

START_TEST(os_memory_calls)
{
	size_t page = os_page_size(), len = 16 * page;

	ck_assert_uint_eq(page, test_page_size());
	char *p = os_map(len, OS_NONE);
	ck_assert_ptr_nonnull(p);
	MEMORY_BASIC_INFORMATION mi;
	ck_assert_uint_eq(VirtualQuery(p, &mi, sizeof mi), sizeof mi);
	ck_assert_uint_eq(mi.State, MEM_RESERVE); /* address space only */
	ck_assert(os_protect(p + page, 4 * page, OS_RW));
	memset(p + page, 7, 4 * page);
	ck_assert(os_protect(p + page, page, OS_READ));
	ck_assert_uint_eq(VirtualQuery(p + page, &mi, sizeof mi), sizeof mi);
	ck_assert_uint_eq(mi.Protect, PAGE_READONLY);
	ck_assert(os_protect(p + page, page, OS_NONE));
	ck_assert(os_protect(p + 8 * page, page, OS_NONE)); /* never committed */
	os_discard(p + 2 * page, 2 * page);
	ck_assert_uint_eq((unsigned char)p[2 * page], 0);
	ck_assert_uint_eq((unsigned char)p[4 * page], 7);
	ck_assert(os_commit(p + 4 * page, page));
	ck_assert_uint_eq((unsigned char)p[4 * page], 0);
	os_trim(p + 2 * page, 2 * page);
	ck_assert_uint_eq(VirtualQuery(p + 2 * page, &mi, sizeof mi), sizeof mi);
	ck_assert_uint_eq(mi.State, MEM_RESERVE);
	os_unmap(p, len);
	ck_assert_uint_eq(VirtualQuery(p, &mi, sizeof mi), sizeof mi);
	ck_assert_uint_eq(mi.State, MEM_FREE);
}
END_TEST

START_TEST(os_match_patterns)
{
	ck_assert(os_match("conn", "conn"));
	ck_assert(!os_match("conn", "conn2"));
	ck_assert(os_match("item-*", "item-48"));
	ck_assert(os_match("*", ""));
	ck_assert(os_match("*-4?", "item-48"));
	ck_assert(!os_match("*-4?", "item-4"));
	ck_assert(os_match("item-[0-9]*", "item-48"));
	ck_assert(!os_match("item-[!0-9]*", "item-48"));
	ck_assert(os_match("a*b*c", "axxbyyc"));
	ck_assert(!os_match("a*b*c", "axxbyy"));
	ck_assert(os_match("[]x]", "]"));
	ck_assert(os_match("\\*", "*"));
	ck_assert(!os_match("\\*", "a"));
}
END_TEST

static void os_probe(void)
{
}

START_TEST(os_threads_cpus_stacks)
{
	long n = os_ncpus();
	ck_assert_int_ge(n, 1);
	for (int i = 0; i < 100; i++) {
		int cpu = os_cpu();
		ck_assert_int_ge(cpu, 0);
		ck_assert_int_lt(cpu, n);
	}
	ck_assert_uint_eq(os_tid(), GetCurrentThreadId());
	void *f[8];
	ck_assert_int_gt(os_backtrace(f, 8), 0);
	uintptr_t lo = 0, hi = 0;
	void (*fn)(void) = os_probe;
	uintptr_t at;
	memcpy(&at, &fn, sizeof at);
	ck_assert(os_text_of((const void *)at, &lo, &hi));
	ck_assert_uint_le(lo, at);
	ck_assert_uint_lt(at, hi);
	int local = 0;
	ck_assert(!os_text_of(&local, &lo, &hi)); /* a stack is no module */
	os_sigset old;
	os_sig_block_all(&old);
	os_sig_restore(&old);
	ck_assert_int_eq(os_atfork(NULL, NULL, NULL), 0);
	os_yield();
	os_sleep_ns(1000);
}
END_TEST

static Suite *pagesrc_suite(void)
{
	Suite *s = suite_create("pagesrc-windows");
	TCase *tc;

	tc = tcase_create("virtualalloc");
	tcase_add_loop_test(tc, va_blocks_aligned_zeroed_own_reservation, 0, 8);
	tcase_add_test(tc, va_rejects_bad_sizes);
	tcase_add_test(tc, va_purge_keeps_block_drops_pages);
	tcase_add_test(tc, va_threads_race_for_blocks);
	suite_add_tcase(s, tc);

	tc = tcase_create("absent");
	tcase_add_test(tc, linux_sources_answer_enosys);
	tcase_add_test(tc, absent_layers_say_so);
	suite_add_tcase(s, tc);

	tc = tcase_create("caches");
	tcase_add_test(tc, cache_on_default_source_maps_and_returns);
	tcase_add_test(tc, region_cache_fills_without_system_calls);
	suite_add_tcase(s, tc);

	tc = tcase_create("os");
	tcase_add_test(tc, os_memory_calls);
	tcase_add_test(tc, os_match_patterns);
	tcase_add_test(tc, os_threads_cpus_stacks);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {pagesrc_suite, NULL};
