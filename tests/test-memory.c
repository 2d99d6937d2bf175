/* SPDX-License-Identifier: MIT */
/* Unit tests of where memory goes back: purge, limits, reserves, reclaim, compaction. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uslab.h>

#include "internal.h"
#include "sanitize.h"
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

TEST_IN_CHILD(memory_empty_slabs_purged_and_reused, purge_burst, NULL, 60)

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

TEST_IN_CHILD(memory_ctor_cache_releases_not_purges, ctor_released, NULL, 60)

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

/* ---- Limits ---- */

static struct uslab_cache *limit_cache;
static void *limit_spare;
static int limit_calls;

/* limit_hit: give back the one object kept for this, once. */
static void limit_free_spare(struct uslab_cache *c, void *arg)
{
	(void)arg;
	limit_calls++;
	ck_assert_ptr_eq(c, limit_cache);
	if (limit_spare != NULL) {
		uslab_cache_free(c, limit_spare);
		limit_spare = NULL;
	}
}

START_TEST(memory_limit_exact)
{
	enum { MAX = 100 };
	static void *objs[2 * MAX + 1];
	struct uslab_cache_conf conf = {.limit_hit = limit_free_spare};
	struct uslab_cache *c = limit_cache = uslab_cache_create("limited", 64, &conf);
	struct uslab_stats st;

	ck_assert_int_eq(uslab_cache_set_limit(NULL, 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	for (int i = 0; i < 50; i++) /* held before the limit: counted */
		objs[i] = uslab_cache_alloc(c);
	ck_assert_int_eq(uslab_cache_set_limit(c, MAX), 0);
	for (int i = 50; i < MAX; i++)
		ck_assert_ptr_nonnull(objs[i] = uslab_cache_alloc(c));
	errno = 0;
	ck_assert_ptr_null(uslab_cache_alloc(c)); /* max + 1 */
	ck_assert_int_eq(errno, ENOBUFS);
	ck_assert_int_eq(limit_calls, 1); /* called, had nothing to give */
	stats_of(c, &st);
	ck_assert_uint_eq(st.limit, MAX);
	ck_assert_uint_eq(st.limit_failures, 1);
	ck_assert_uint_eq(st.active_objs, MAX);

	/* The callback frees one: the retry gets it. */
	limit_spare = objs[MAX - 1];
	ck_assert_ptr_nonnull(objs[MAX - 1] = uslab_cache_alloc(c));
	ck_assert_int_eq(limit_calls, 2);
	ck_assert_ptr_null(limit_spare);

	/* Raised at run time. */
	ck_assert_int_eq(uslab_cache_set_limit(c, 2 * MAX), 0);
	for (int i = MAX; i < 2 * MAX; i++)
		ck_assert_ptr_nonnull(objs[i] = uslab_cache_alloc(c));
	ck_assert_ptr_null(uslab_cache_alloc(c));
	ck_assert_int_eq(errno, ENOBUFS);
	/* Bulk stops at it too. */
	void *two[2];
	uslab_cache_free(c, objs[0]);
	ck_assert_uint_eq(uslab_cache_alloc_bulk(c, two, 2), 1);
	objs[0] = two[0];
	/* Off again: no bound. */
	ck_assert_int_eq(uslab_cache_set_limit(c, 0), 0);
	ck_assert_ptr_nonnull(objs[2 * MAX] = uslab_cache_alloc(c));
	for (int i = 0; i <= 2 * MAX; i++)
		uslab_cache_free(c, objs[i]);
	stats_of(c, &st);
	ck_assert_uint_eq(st.active_objs, 0);
	ck_assert_uint_eq(st.limit_failures, 3);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* Threads racing for the last objects: exactly the limit is handed out. */
struct limit_race {
	struct uslab_cache *c;
	void *objs[4096];
	unsigned got;
};

static void *limit_racer(void *arg)
{
	struct limit_race *r = arg;

	while (r->got < 4096 && (r->objs[r->got] = uslab_cache_alloc(r->c)) != NULL)
		r->got++;
	return NULL;
}

START_TEST(memory_limit_threads)
{
	enum { T = 4, MAX = 3000 };
	static struct limit_race r[T];
	pthread_t t[T];
	struct uslab_cache *c = uslab_cache_create("limited-mt", 32, NULL);
	unsigned total = 0;

	ck_assert_int_eq(uslab_cache_set_limit(c, MAX), 0);
	for (int i = 0; i < T; i++) {
		r[i].c = c;
		r[i].got = 0;
		pthread_create(&t[i], NULL, limit_racer, &r[i]);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(t[i], NULL);
		total += r[i].got;
	}
	ck_assert_uint_eq(total, MAX);
	for (int i = 0; i < T; i++)
		uslab_cache_free_bulk(c, r[i].objs, r[i].got);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* ---- Reserves ---- */

/* The mmap source, failing while fail_gets is set. */
static bool fail_gets;

static void *failing_get(void *arg, size_t size)
{
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	(void)arg;
	if (fail_gets) {
		errno = ENOMEM;
		return NULL;
	}
	return m->get(m->arg, size);
}

static void failing_put(void *arg, void *block, size_t size)
{
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	(void)arg;
	m->put(m->arg, block, size);
}

static const struct uslab_pagesrc failing_src = {
	.name = "failing", .get = failing_get, .put = failing_put};

START_TEST(memory_reserve_cannot_fail)
{
	enum { N = 500 };
	static void *objs[100000];
	static void *mine[N];
	struct uslab_cache_conf conf = {.pagesrc = &failing_src};
	struct uslab_cache *c = uslab_cache_create("reserved", 128, &conf);
	size_t n = 0;

	fail_gets = false;
	struct uslab_reserve *res = uslab_cache_reserve(c, N);
	ck_assert_ptr_nonnull(res);
	ck_assert_uint_eq(uslab_reserve_left(res), N);
	fail_gets = true;
	while (n < 100000 && (objs[n] = uslab_cache_alloc(c)) != NULL) /* the rest of the slabs */
		n++;
	ck_assert_int_eq(errno, ENOMEM);
	for (int i = 0; i < N; i++) { /* the page source still fails */
		ck_assert_ptr_nonnull(mine[i] = uslab_reserve_alloc(res));
		memset(mine[i], i, 128);
	}
	ck_assert_ptr_null(uslab_reserve_alloc(res));
	ck_assert_int_eq(errno, ENOBUFS);
	ck_assert_uint_eq(uslab_reserve_return(res), 0);
	for (int i = 0; i < N; i++)
		for (int j = i + 1; j < N && j < i + 8; j++)
			ck_assert_ptr_ne(mine[i], mine[j]);
	uslab_cache_free_bulk(c, mine, N);
	uslab_cache_free_bulk(c, objs, n);

	/* Part of one goes back; at a limit a reserve is all or nothing. */
	fail_gets = false;
	res = uslab_cache_reserve(c, 10);
	ck_assert_ptr_nonnull(mine[0] = uslab_reserve_alloc(res));
	ck_assert_uint_eq(uslab_reserve_return(res), 9);
	uslab_cache_free(c, mine[0]);
	ck_assert_int_eq(uslab_cache_set_limit(c, 5), 0);
	ck_assert_ptr_null(uslab_cache_reserve(c, 6));
	ck_assert_int_eq(errno, ENOBUFS);
	ck_assert_ptr_nonnull(res = uslab_cache_reserve(c, 5));
	ck_assert_ptr_null(uslab_cache_alloc(c));
	ck_assert_uint_eq(uslab_reserve_return(res), 5);
	ck_assert_ptr_null(uslab_cache_reserve(c, 0));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* ---- Reclaim ---- */

#define REGION_BYTES ((size_t)1 << 20)
static char region_mem[REGION_BYTES] __attribute__((aligned(1 << 16)));
static struct uslab_cache *rc_a, *rc_b;
static void *rc_objs[REGION_BYTES / 256];
static size_t rc_n;
static int rc_calls, rc_destroy_errno;

/* B's reclaim: everything it holds is a rebuildable cache. */
static void reclaim_b(void *arg)
{
	(void)arg;
	rc_calls++;
	rc_destroy_errno = uslab_cache_destroy(rc_a) == 0 ? 0 : errno;
	uslab_cache_free_bulk(rc_b, rc_objs, rc_n);
	rc_n = 0;
}

START_TEST(memory_reclaim_once_then_retry)
{
	struct uslab_pagesrc *src = uslab_pagesrc_region(region_mem, REGION_BYTES);
	ck_assert_ptr_nonnull(src);
	struct uslab_cache_conf ca = {.pagesrc = src, .flags = USLAB_NOMAGAZINE};
	struct uslab_cache_conf cb = {.pagesrc = src, .reclaim = reclaim_b};
	static void *a[REGION_BYTES / 256];
	size_t na = 0;

	rc_a = uslab_cache_create("reclaim-a", 256, &ca);
	rc_b = uslab_cache_create("reclaim-b", 256, &cb);
	rc_calls = 0;
	/* B takes half the region. */
	for (rc_n = 0; rc_n < REGION_BYTES / 2 / 256; rc_n++)
		ck_assert_ptr_nonnull(rc_objs[rc_n] = uslab_cache_alloc(rc_b));
	/* A fills it: when the region is full, B's callback frees B's objects,
	 * the reap gives their slabs back, and A's allocation goes on. */
	while (na < REGION_BYTES / 256 && (a[na] = uslab_cache_alloc(rc_a)) != NULL)
		na++;
	ck_assert_int_eq(errno, ENOMEM);
	ck_assert_int_eq(rc_calls, 2); /* once when it freed, once when nothing was left */
	ck_assert_int_eq(rc_destroy_errno, EDEADLK);
	ck_assert_uint_gt(na, REGION_BYTES / 2 / 256 + REGION_BYTES / 4 / 256);
	ck_assert_uint_eq(rc_n, 0);
	uslab_cache_free_bulk(rc_a, a, na);
	ck_assert_uint_gt(uslab_cache_reclaim(), 0); /* A's slabs, empty now */
	ck_assert_int_eq(uslab_cache_destroy(rc_a), 0);
	ck_assert_int_eq(uslab_cache_destroy(rc_b), 0);
}
END_TEST

/* The kernel refuses the mapping (RLIMIT_AS): a large block's allocation
 * runs the reclaim pass, whose callback frees the ballast, and the retry
 * succeeds. */
#define BALLAST 256
static void *ballast[BALLAST];
static int ballast_calls;
static bool ballast_armed;

static void free_ballast(void *arg)
{
	(void)arg;
	if (!ballast_armed)
		return;
	ballast_calls++;
	for (int i = 0; i < BALLAST; i++) {
		uslab_free(ballast[i]);
		ballast[i] = NULL;
	}
}

static int reclaim_large(void *arg)
{
	const size_t big = (size_t)8 << 20;
	struct uslab_cache_conf conf = {.reclaim = free_ballast};
	struct uslab_cache *owner = uslab_cache_create("ballast-owner", 64, &conf);
	long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	(void)arg;

	if (owner == NULL || f == NULL || fscanf(f, "%ld", &pages) != 1)
		return 1;
	fclose(f);
	/* Address space for some 64 blocks more than the process has now. */
	size_t vm = (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
	struct rlimit rl = {.rlim_cur = vm + 64 * big, .rlim_max = vm + 64 * big};
	if (setrlimit(RLIMIT_AS, &rl) != 0)
		return 2;
	int n = 0;
	while (n < BALLAST && (ballast[n] = uslab_alloc(big)) != NULL)
		n++;
	if (n == BALLAST || n < 8) /* full: the kernel refused the next one */
		return 3;
	ballast_armed = true;
	void *p = uslab_alloc(big);
	fprintf(stderr, "ballast %d blocks, reclaim called %d times, block %p\n", n, ballast_calls,
	        p);
	if (p == NULL || ballast_calls != 1)
		return 4;
	uslab_free(p);
	return uslab_cache_destroy(owner) == 0 ? 0 : 5;
}

TEST_IN_CHILD(memory_reclaim_large_block, reclaim_large, NULL, 60)

/* ---- Compaction ---- */

/* A table of items behind striped locks, as a program keeps them. */
#define CT_STRIPES 64
struct item {
	uint64_t idx;
	uint64_t key;
	uint64_t body[6];
};

struct table {
	struct uslab_cache *c;
	size_t n;
	struct item **slot;
	pthread_mutex_t lock[CT_STRIPES];
	volatile bool stop;
	uint64_t looked, bad;
};

static uint64_t item_key(uint64_t idx)
{
	return idx * 0x9e3779b97f4a7c15ull + 1;
}

static bool item_ok(const struct item *it, uint64_t idx)
{
	if (it->idx != idx || it->key != item_key(idx))
		return false;
	for (int i = 0; i < 6; i++)
		if (it->body[i] != it->key + (uint64_t)i)
			return false;
	return true;
}

/* The owner's side of uslab_cache_compact(): under the item's lock, an
 * item the table holds at @old moves to @new_; anything else is refused. */
static int item_move(void *old, void *new_, void *arg)
{
	struct table *t = arg;
	uint64_t idx = ((const struct item *)old)->idx;

	if (idx >= t->n)
		return 1;
	pthread_mutex_lock(&t->lock[idx % CT_STRIPES]);
	bool mine = t->slot[idx] == old;
	if (mine) {
		memcpy(new_, old, sizeof(struct item));
		t->slot[idx] = new_;
	}
	pthread_mutex_unlock(&t->lock[idx % CT_STRIPES]);
	return mine ? 0 : 1;
}

static void *table_reader(void *arg)
{
	struct table *t = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;
	uint64_t looked = 0, bad = 0;

	while (!t->stop) {
		size_t idx = (size_t)rand_r(&seed) % t->n;
		pthread_mutex_lock(&t->lock[idx % CT_STRIPES]);
		const struct item *it = t->slot[idx];
		if (it != NULL) {
			looked++;
			bad += !item_ok(it, idx);
		}
		pthread_mutex_unlock(&t->lock[idx % CT_STRIPES]);
	}
	__atomic_fetch_add(&t->looked, looked, __ATOMIC_RELAXED);
	__atomic_fetch_add(&t->bad, bad, __ATOMIC_RELAXED);
	return NULL;
}

static int compact_table(void *arg)
{
	static struct table t;
	struct uslab_cache_conf conf = {.move = item_move, .arg = &t};
	struct uslab_stats st0, st1;
	pthread_t readers[2];
	unsigned seed = 5;
	size_t kept = 0;
	(void)arg;

	t.n = light() ? 20000 : 400000;
	t.slot = calloc(t.n, sizeof *t.slot);
	t.c = uslab_cache_create("item", sizeof(struct item), &conf);
	for (int i = 0; i < CT_STRIPES; i++)
		pthread_mutex_init(&t.lock[i], NULL);
	for (size_t i = 0; i < t.n; i++) {
		struct item *it = uslab_cache_alloc(t.c);
		it->idx = i;
		it->key = item_key(i);
		for (int k = 0; k < 6; k++)
			it->body[k] = it->key + (uint64_t)k;
		t.slot[i] = it;
	}
	for (size_t i = 0; i < t.n; i++) { /* 90% go, at random */
		if (rand_r(&seed) % 10 == 0) {
			kept++;
			continue;
		}
		uslab_cache_free(t.c, t.slot[i]);
		t.slot[i] = NULL;
	}
	uslab_cache_reap(t.c);
	stats_of(t.c, &st0);
	size_t rss0 = rss_fixed();
	for (int i = 0; i < 2; i++)
		pthread_create(&readers[i], NULL, table_reader, &t);
	long moved = uslab_cache_compact(t.c);
	t.stop = true;
	for (int i = 0; i < 2; i++)
		pthread_join(readers[i], NULL);
	size_t rss1 = rss_fixed();
	stats_of(t.c, &st1);
	fprintf(stderr,
	        "kept %zu of %zu: moved %ld; slabs %llu -> %llu (%llu objs each); rss %zu -> %zu KiB; "
	        "%llu lookups, %llu bad\n",
	        kept, t.n, moved, (unsigned long long)st0.total_slabs,
	        (unsigned long long)st1.total_slabs, (unsigned long long)st1.objs_per_slab,
	        rss0 >> 10, rss1 >> 10, (unsigned long long)t.looked, (unsigned long long)t.bad);
	if (moved <= 0 || t.bad != 0 || st1.moved != (uint64_t)moved)
		return 1;
	size_t found = 0;
	for (size_t i = 0; i < t.n; i++)
		if (t.slot[i] != NULL) {
			if (!item_ok(t.slot[i], i))
				return 2;
			found++;
		}
	if (found != kept || st1.active_objs != kept)
		return 3;
	/* Dense after: at most one partial slab's worth above the minimum. */
	uint64_t least = (kept + st1.objs_per_slab - 1) / st1.objs_per_slab;
	if (st1.total_slabs > least + 2 || st1.total_slabs * 2 > st0.total_slabs)
		return 4;
	if (!light() &&
	    (rss0 < rss1 || rss0 - rss1 < (st0.total_slabs - st1.total_slabs) * st1.slab_size / 2))
		return 5;
	long problems = uslab_cache_validate(t.c, stderr);
	if (problems != 0) {
		fprintf(stderr, "validate: %ld (%s)\n", problems, strerror(errno));
		return 6;
	}
	for (size_t i = 0; i < t.n; i++)
		uslab_cache_free(t.c, t.slot[i]);
	return uslab_cache_destroy(t.c) == 0 ? 0 : 7;
}

TEST_IN_CHILD(memory_compact_under_readers, compact_table, NULL, 120)

/* The contract's edges: no move callback, a type-safe cache; a callback
 * that refuses everything moves nothing and loses nothing. */
static int refuse_all(void *old, void *new_, void *arg)
{
	(void)old;
	(void)new_;
	(*(int *)arg)++;
	return 1;
}

START_TEST(memory_compact_refused)
{
	static void *objs[20000];
	int calls = 0;
	struct uslab_cache_conf conf = {.move = refuse_all, .arg = &calls};
	struct uslab_cache_conf rcu = {.move = refuse_all, .flags = USLAB_TYPESAFE_BY_RCU};
	struct uslab_cache *plain = uslab_cache_create("nomove", 64, NULL);
	struct uslab_cache *typesafe = uslab_cache_create("typesafe", 64, &rcu);
	struct uslab_cache *c = uslab_cache_create("refuse", 64, &conf);
	struct uslab_stats st0, st1;

	ck_assert_int_eq(uslab_cache_compact(NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(uslab_cache_compact(plain), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(uslab_cache_compact(typesafe), -1);
	ck_assert_int_eq(errno, EINVAL);
	for (int i = 0; i < 20000; i++)
		objs[i] = uslab_cache_alloc(c);
	for (int i = 0; i < 20000; i++)
		if (i % 7 != 0) {
			uslab_cache_free(c, objs[i]);
			objs[i] = NULL;
		}
	uslab_cache_reap(c);
	stats_of(c, &st0);
	ck_assert_int_eq(uslab_cache_compact(c), 0);
	stats_of(c, &st1);
	ck_assert_int_gt(calls, 0);
	ck_assert_uint_eq(st1.active_objs, st0.active_objs);
	ck_assert_uint_eq(st1.total_slabs, st0.total_slabs);
	ck_assert_int_eq(uslab_cache_validate(c, NULL), 0);
	for (int i = 0; i < 20000; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	ck_assert_int_eq(uslab_cache_destroy(plain), 0);
	ck_assert_int_eq(uslab_cache_destroy(typesafe), 0);
}
END_TEST

/* ---- Magazines that shrink ---- */

/* The largest per-CPU magazine fill. */
static uint64_t cpu_fill_max(struct uslab_cache *c)
{
	uint64_t counts[1024], most = 0;
	size_t n = uslab_cache_cpu_objects(c, counts, 1024);

	for (size_t i = 0; i < n && i < 1024; i++)
		most = counts[i] > most ? counts[i] : most;
	return most;
}

/* Magazines grown by contention (set here as the depot would) step back
 * down, one halving per quiet interval, to where they started; the
 * per-CPU arrays follow, and no object is lost on the way. */
static int mag_shrink(void *arg)
{
	enum { N = 600 };
	static void *objs[N];
	struct uslab_cache *c = uslab_cache_create("quiet", 1024, NULL);
	struct uslab_stats st;
	(void)arg;

	stats_of(c, &st);
	uint32_t start = st.mag_size;
	/* This test is about M: no growth past 2M (pcpu.c §7), which its
	 * batches would bring (grow() below): the budget is spent (in this
	 * child only). */
	__atomic_store_n(&pcpu_grow_bytes, PCPU_GROW_BUDGET, __ATOMIC_RELAXED);
	__atomic_store_n(&c->c_mag_size, c->c_mag_max, __ATOMIC_RELAXED);
	for (int round = 0; round < 2; round++) { /* the slots grow at a miss */
		for (int i = 0; i < N; i++)
			objs[i] = uslab_cache_alloc(c);
		for (int i = 0; i < N; i++)
			uslab_cache_free(c, objs[i]);
	}
	stats_of(c, &st);
	uint64_t grown = cpu_fill_max(c);
	fprintf(stderr, "start %u, grown to %u: per-CPU fill %llu\n", start, st.mag_size,
	        (unsigned long long)grown);
	if (st.mag_size != c->c_mag_max || grown <= 2 * start)
		return 1;
	for (int k = 0; k < 4; k++) { /* quiet intervals, each ended by depot traffic */
		usleep(1100 * 1000);
		for (int i = 0; i < N; i++)
			objs[i] = uslab_cache_alloc(c);
		for (int i = 0; i < N; i++)
			uslab_cache_free(c, objs[i]);
	}
	for (int i = 0; i < N; i++) /* a miss after the last halving */
		objs[i] = uslab_cache_alloc(c);
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	stats_of(c, &st);
	uint64_t after = cpu_fill_max(c);
	fprintf(stderr, "after: magazines of %u, per-CPU fill %llu, active %llu\n", st.mag_size,
	        (unsigned long long)after, (unsigned long long)st.active_objs);
	if (st.mag_size != start || after > 2 * start || st.active_objs != 0)
		return 2;
	if (uslab_cache_validate(c, stderr) != 0)
		return 3;
	return uslab_cache_destroy(c) == 0 ? 0 : 4;
}

TEST_IN_CHILD(memory_magazines_shrink_when_quiet, mag_shrink, NULL, 60)

/* ---- Per-CPU capacity that follows the load (pcpu.c §7) ---- */

/* @reps rounds of @k allocations then @k frees; the hits of the last. */
static uint64_t batches(struct uslab_cache *c, void **objs, int k, int reps)
{
	struct uslab_stats st0, st1;

	for (int r = 0; r < reps; r++) {
		stats_of(c, &st0);
		for (int i = 0; i < k; i++)
			objs[i] = uslab_cache_alloc(c);
		for (int i = 0; i < k; i++)
			uslab_cache_free(c, objs[i]);
	}
	stats_of(c, &st1);
	return st1.fast_allocs - st0.fast_allocs;
}

/* Batches of a thousand grow the slots' cap until a whole batch hits; a
 * reap drains them but keeps the growth; quiet intervals (traffic one way
 * only: no flip) halve it, and the budget comes back; batches of 100,000
 * (a swing no cap holds) and one-way traffic never grow; all caches
 * together stay within the budget, and a destroy gives a cache's share
 * back. One pinned thread, so its misses are one slot's. */
static int grow(void *arg)
{
	enum { K = 1000, BIG = 100000, NC = 40 };
	static void *objs[BIG];
	cpu_set_t one;
	(void)arg;

	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	if (sched_setaffinity(0, sizeof one, &one) != 0)
		return 1;
	uint64_t before = __atomic_load_n(&pcpu_grow_bytes, __ATOMIC_RELAXED);
	struct uslab_cache *c = uslab_cache_create("grow", 64, NULL);
	uint32_t start = c->c_pcpu_cap;
	uint64_t hits = batches(c, objs, K, 8);
	fprintf(stderr, "cap %u -> %u, last batch %llu of %d hits, budget %llu bytes\n", start,
	        c->c_pcpu_cap, (unsigned long long)hits, K,
	        (unsigned long long)__atomic_load_n(&pcpu_grow_bytes, __ATOMIC_RELAXED));
	if (c->c_pcpu_cap <= K || hits != K || pcpu_grow_bytes <= before)
		return 2;
	uint32_t grown = c->c_pcpu_grow;
	uslab_cache_reap(c);
	if (c->c_pcpu_grow != grown || cpu_fill_max(c) != 0)
		return 3;
	int kept = 0;
	for (int k = 0; k < 6 && c->c_pcpu_grow != 0; k++) {
		usleep(1100 * 1000);          /* a depot interval (1 s) */
		for (int i = 0; i < 300; i++) /* allocation misses only: no flip */
			objs[kept++] = uslab_cache_alloc(c);
	}
	uint32_t cap_quiet = c->c_pcpu_cap;
	for (int i = 0; i < kept; i++)
		uslab_cache_free(c, objs[i]);
	fprintf(stderr, "grow %u -> %u after quiet intervals, cap %u, budget %llu\n", grown,
	        c->c_pcpu_grow, cap_quiet,
	        (unsigned long long)__atomic_load_n(&pcpu_grow_bytes, __ATOMIC_RELAXED));
	if (c->c_pcpu_grow != 0 || pcpu_grow_bytes != before || c->c_pcpu_charged != 0 ||
	    cap_quiet != start)
		return 4;

	/* A swing of 100,000: flips hundreds of caps apart. The first batch
	 * may grow once (its first flip comes soon after the frees above). */
	batches(c, objs, BIG, 1);
	uint32_t g100k = c->c_pcpu_grow;
	batches(c, objs, BIG, 4);
	if (c->c_pcpu_grow != g100k)
		return 5;
	/* One way: allocations only, then frees only. */
	for (int i = 0; i < BIG; i++)
		objs[i] = uslab_cache_alloc(c);
	if (c->c_pcpu_grow > g100k + 1)
		return 6;
	for (int i = 0; i < BIG; i++)
		uslab_cache_free(c, objs[i]);
	if (c->c_pcpu_grow > g100k + 1 || uslab_cache_validate(c, stderr) != 0)
		return 7;

	/* Many busy caches: the budget holds, first come first served. */
	static struct uslab_cache *cs[NC];
	for (int j = 0; j < NC; j++) {
		cs[j] = uslab_cache_create("grow-many", 256, NULL);
		batches(cs[j], objs, K, 8);
	}
	uint64_t used = __atomic_load_n(&pcpu_grow_bytes, __ATOMIC_RELAXED);
	uint32_t first = cs[0]->c_pcpu_cap, last = cs[NC - 1]->c_pcpu_cap;
	fprintf(stderr, "%d caches: budget %llu of %u bytes, caps %u (first) %u (last)\n", NC,
	        (unsigned long long)used, PCPU_GROW_BUDGET, first, last);
	if (used > PCPU_GROW_BUDGET || first <= K || last >= first)
		return 8;
	for (int j = 0; j < NC; j++)
		if (uslab_cache_validate(cs[j], stderr) != 0 || uslab_cache_destroy(cs[j]) != 0)
			return 9;
	if (uslab_cache_destroy(c) != 0 || pcpu_grow_bytes != before)
		return 10;
	return 0;
}

TEST_IN_CHILD(memory_pcpu_cap_follows_load, grow, NULL, 60)

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

	tc = tcase_create("limits");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, memory_limit_exact);
	tcase_add_test(tc, memory_limit_threads);
	tcase_add_test(tc, memory_reserve_cannot_fail);
	tcase_add_test(tc, memory_reclaim_once_then_retry);
	if (test_can_fork() && !USLAB_ASAN)
		tcase_add_test(tc, memory_reclaim_large_block);
	suite_add_tcase(s, tc);

	tc = tcase_create("compact");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, memory_compact_refused);
	if (test_can_fork())
		tcase_add_test(tc, memory_compact_under_readers);
	suite_add_tcase(s, tc);

	tc = tcase_create("magazines");
	tcase_set_timeout(tc, 120);
	if (test_can_fork())
		tcase_add_test(tc, memory_magazines_shrink_when_quiet);
	if (test_can_fork())
		tcase_add_test(tc, memory_pcpu_cap_follows_load);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {memory_suite, NULL};
