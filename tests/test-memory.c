/* SPDX-License-Identifier: MIT */
/* Unit tests of where memory goes back: purge, limits, reserves, reclaim, compaction. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uslab.h>

#include "testutil.h"

/* Under valgrind (CK_FORK=no) the suites run light, and nothing is purged
 * (slab.c: memcheck would take a purged range for defined memory). */
static bool light(void)
{
	return !test_can_fork();
}

/* The resident bytes the kernel cannot take back on its own: Rss minus
 * LazyFree (pages purged with MADV_FREE), from smaps_rollup. */
static size_t rss_fixed(void)
{
	char line[256];
	size_t rss = 0, lazy = 0, v;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "Rss: %zu kB", &v) == 1)
			rss = v;
		else if (sscanf(line, "LazyFree: %zu kB", &v) == 1)
			lazy = v;
	}
	fclose(f);
	return (rss - lazy) << 10;
}

static void stats_of(struct uslab_cache *c, struct uslab_stats *st)
{
	ck_assert_int_eq(uslab_cache_stats(c, st), 0);
}

/* ---- Purge ---- */

/* A burst, then quiet: the empty slabs are purged after two intervals of
 * slab-layer activity (not released: bytes_total stays), the resident set
 * falls by what they held, and the next burst maps nothing. */
static int purge_burst(void *arg)
{
	enum { N = 40000, SIZE = 256 };
	static void *objs[N];
	struct uslab_cache_conf conf = {.flags = USLAB_NOMAGAZINE};
	struct uslab_cache *c = uslab_cache_create("burst", SIZE, &conf);
	struct uslab_stats st0, st1, st2;
	struct uslab_global_stats g0, g1;
	(void)arg;

	for (int i = 0; i < N; i++) {
		objs[i] = uslab_cache_alloc(c);
		memset(objs[i], 0x5a, SIZE);
	}
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	size_t peak = rss_fixed();
	stats_of(c, &st0);
	for (int k = 0; k < 2; k++) { /* two intervals, each ended by activity */
		usleep(1100 * 1000);
		uslab_cache_free(c, uslab_cache_alloc(c));
	}
	stats_of(c, &st1);
	size_t quiet = rss_fixed();
	fprintf(stderr, "slabs %llu, purged %llu (%llu bytes), rss %zu KiB -> %zu KiB\n",
	        (unsigned long long)st1.total_slabs, (unsigned long long)st1.purged_slabs,
	        (unsigned long long)st1.bytes_purged, peak >> 10, quiet >> 10);
	if (st1.total_slabs != st0.total_slabs || st1.purged_slabs + 1 < st1.total_slabs)
		return 1;
	if (peak < quiet || peak - quiet < (size_t)N * SIZE * 8 / 10)
		return 2;
	uslab_global_stats(&g0);
	for (int i = 0; i < N; i++) {
		objs[i] = uslab_cache_alloc(c);
		memset(objs[i], 0x33, SIZE);
	}
	uslab_global_stats(&g1);
	stats_of(c, &st2);
	fprintf(stderr,
	        "second burst: page-source calls %llu -> %llu, slabs created %llu -> %llu\n",
	        (unsigned long long)g0.pagesrc_calls, (unsigned long long)g1.pagesrc_calls,
	        (unsigned long long)st1.slabs_created, (unsigned long long)st2.slabs_created);
	if (g1.pagesrc_calls != g0.pagesrc_calls || st2.slabs_created != st1.slabs_created ||
	    st2.purged_slabs != 0)
		return 3;
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	return uslab_cache_destroy(c) == 0 ? 0 : 4;
}

START_TEST(memory_empty_slabs_purged_and_reused)
{
	char err[4096];
	int rc = test_run_child(purge_burst, NULL, 60, err, sizeof err);
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
}
END_TEST

/* A cache with a ctor keeps its free objects constructed: its empty slabs
 * are never purged, they are released (objects destructed) instead. */
static int ctor_one(void *obj, void *arg)
{
	(void)arg;
	*(uint64_t *)obj = 0xc0ffee;
	return 0;
}

static int ctor_released(void *arg)
{
	enum { N = 4000 };
	static void *objs[N];
	struct uslab_cache_conf conf = {.flags = USLAB_NOMAGAZINE, .ctor = ctor_one};
	struct uslab_cache *c = uslab_cache_create("ctor", 256, &conf);
	struct uslab_stats st;
	(void)arg;

	for (int i = 0; i < N; i++)
		objs[i] = uslab_cache_alloc(c);
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	for (int k = 0; k < 2; k++) {
		usleep(1100 * 1000);
		void *o = uslab_cache_alloc(c);
		if (*(uint64_t *)o != 0xc0ffee)
			return 1;
		uslab_cache_free(c, o);
	}
	stats_of(c, &st);
	fprintf(stderr, "slabs %llu released %llu purged %llu\n",
	        (unsigned long long)st.total_slabs, (unsigned long long)st.slabs_released,
	        (unsigned long long)st.bytes_purged);
	if (st.bytes_purged != 0 || st.purged_slabs != 0 || st.total_slabs > 1)
		return 2;
	return uslab_cache_destroy(c) == 0 ? 0 : 3;
}

START_TEST(memory_ctor_cache_releases_not_purges)
{
	char err[4096];
	int rc = test_run_child(ctor_released, NULL, 60, err, sizeof err);
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
}
END_TEST

/* 90% of the objects freed at random: reap gives the resident pages
 * inside the free objects of the partial slabs back, and the live objects
 * keep every byte. */
static int reap_partial(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg, n = ((size_t)24 << 20) / size;
	void **objs = calloc(n, sizeof *objs);
	char *keep = calloc(n, 1);
	struct uslab_cache *c = uslab_cache_create("partial", size, NULL);
	struct uslab_stats st;
	unsigned seed = 11;

	for (size_t i = 0; i < n; i++) {
		objs[i] = uslab_cache_alloc(c);
		memset(objs[i], (int)(i & 0x7f) + 1, size);
	}
	size_t freed = 0;
	for (size_t i = 0; i < n; i++) {
		keep[i] = rand_r(&seed) % 10 == 0;
		if (!keep[i]) {
			uslab_cache_free(c, objs[i]);
			freed += size;
		}
	}
	size_t before = rss_fixed();
	size_t back = uslab_cache_reap(c);
	size_t after = rss_fixed();
	stats_of(c, &st);
	fprintf(stderr,
	        "size %zu: freed %zu KiB, reap gave %zu KiB (%llu purged), rss %zu -> %zu KiB\n",
	        size, freed >> 10, back >> 10, (unsigned long long)st.bytes_purged, before >> 10,
	        after >> 10);
	for (size_t i = 0; i < n; i++)
		if (keep[i])
			for (size_t b = 0; b < size; b++)
				if (((unsigned char *)objs[i])[b] != (i & 0x7f) + 1)
					return 1;
	/* 4 KiB objects: a page is free when its two neighbours are (81%);
	 * 1 KiB: when four in a row are (66%). Half of the freed bytes at least. */
	if (st.bytes_purged < freed / 2 || before < after || before - after < freed / 2)
		return 2;
	for (size_t i = 0; i < n; i++) /* the purged objects are usable again */
		if (!keep[i]) {
			objs[i] = uslab_cache_alloc(c);
			memset(objs[i], 0x11, size);
		}
	for (size_t i = 0; i < n; i++)
		uslab_cache_free(c, objs[i]);
	free(objs);
	free(keep);
	return uslab_cache_destroy(c) == 0 ? 0 : 3;
}

START_TEST(memory_reap_purges_free_objects)
{
	static const size_t sizes[] = {4096, 1024};
	char err[4096];
	int rc = test_run_child(reap_partial, (void *)(uintptr_t)sizes[_i], 60, err, sizeof err);
	ck_assert_msg(rc == 0, "size %zu: status %d: %s", sizes[_i], rc, err);
}
END_TEST

static Suite *memory_suite(void)
{
	Suite *s = suite_create("memory");
	TCase *tc = tcase_create("purge");
	tcase_set_timeout(tc, 120);
	if (!light()) {
		tcase_add_test(tc, memory_empty_slabs_purged_and_reused);
		tcase_add_test(tc, memory_ctor_cache_releases_not_purges);
		tcase_add_loop_test(tc, memory_reap_purges_free_objects, 0, 2);
	}
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {memory_suite, NULL};
