/* SPDX-License-Identifier: MIT */
/* Unit tests of the per-CPU layer's slow paths, linked with the layers below it only. */
#include "config.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "layer-cache.h"
#include "testutil.h"

static struct uslab_cache *pc;
static struct layer_rec rec;

/* A cache of the slab layer, the depot and the per-CPU layer. */
static struct uslab_cache *pcpu_cache(const char *name, size_t size,
                                      const struct uslab_cache_conf *conf)
{
	struct uslab_cache *c = layer_cache(name, size, conf);
	ck_assert_int_eq(pcpu_cache_init(c), 0);
	return c;
}

static void pcpu_cache_free(struct uslab_cache *c)
{
	pcpu_drain(c, false);
	ck_assert(pcpu_is_valid(c));
	pcpu_cache_fini(c);
	layer_cache_free(c);
}

static void fx_setup(void)
{
	layer_mag_caches();
	pc = pcpu_cache("pcputest", 64, NULL);
	memset(&rec, 0, sizeof rec);
	pc->c_obs = &layer_rec_ops;
	pc->c_obs_rec = &rec;
}

static void fx_teardown(void)
{
	ck_assert(pcpu_is_valid(pc));
	ck_assert(depot_is_valid(pc));
	pcpu_cache_free(pc);
	pc = NULL;
}

/* Allocations and frees of @c, summed over its slots as the statistics
 * sum them (slab/derive.c): the hits split, plus the slow paths' counts. */
static void totals(struct uslab_cache *c, uint64_t *allocs, uint64_t *frees)
{
	*allocs = *frees = 0;
	for (uint32_t i = 0; i < pcpu_slots(); i++) {
		uint64_t w, a, f;
		struct pcpu_counters k;
		pcpu_slot_read(c, i, &w, &k);
		pcpu_split_hits(w, &k, &a, &f);
		*allocs += a + k.pc_slow_allocs;
		*frees += f + k.pc_slow_frees;
	}
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

/* Pin the calling thread to @cpu; false if it may not run there. */
static bool pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof set, &set) == 0 && sched_getcpu() == cpu;
}

/* ---- Slow paths ---- */

START_TEST(pcpu_slow_paths_round_trip)
{
	enum { N = 1000 };
	static void *objs[N], *sorted[N];
	uint64_t a, f;

	for (int i = 0; i < N; i++) {
		objs[i] = pcpu_alloc_slow(pc);
		ck_assert_ptr_nonnull(objs[i]);
	}
	memcpy(sorted, objs, sizeof objs);
	qsort(sorted, N, sizeof *sorted, cmp_ptr);
	for (int i = 1; i < N; i++)
		ck_assert_ptr_ne(sorted[i - 1], sorted[i]); /* never handed out twice */
	totals(pc, &a, &f);
	ck_assert_uint_eq(a, N);
	ck_assert_uint_eq(f, 0);
	for (int i = 0; i < N; i++)
		pcpu_free_slow(pc, objs[i]);
	totals(pc, &a, &f);
	ck_assert_uint_eq(a, N);
	ck_assert_uint_eq(f, N);
	ck_assert(pcpu_is_valid(pc));
	/* Every object is in exactly one place (DESIGN.md §3, invariant 1). */
	struct depot_counts d;
	depot_counts(pc, &d);
	ck_assert_uint_eq(slab_inuse(pc), pcpu_objects(pc) + d.dc_objs);
}
END_TEST

START_TEST(pcpu_bulk_paths_count_exactly)
{
	enum { N = 700 };
	static void *objs[N];
	uint64_t a, f;

	ck_assert_uint_eq(pcpu_alloc_bulk(pc, objs, N), N);
	totals(pc, &a, &f);
	ck_assert_uint_eq(a, N);
	void *kept = objs[5];
	objs[5] = NULL; /* skipped, not counted */
	pcpu_free_bulk(pc, objs, N);
	totals(pc, &a, &f);
	ck_assert_uint_eq(f, N - 1);
	pcpu_free_slow(pc, kept);
	pcpu_free_slow(pc, pcpu_alloc_slow(pc));
	totals(pc, &a, &f);
	ck_assert_uint_eq(a, N + 1);
	ck_assert_uint_eq(f, N + 1);
}
END_TEST

/* A failed allocation counts as a failure, not as an allocation. */
START_TEST(pcpu_failed_alloc_not_counted)
{
	unsigned flag = _i == 0 ? USLAB_NOMAGAZINE : 0;
	struct uslab_cache *c = pcpu_cache(
		"nomagfail", 256,
		&(struct uslab_cache_conf){.flags = flag, .pagesrc = &layer_failing_src});
	uint64_t a, f;
	void *objs[4];

	layer_fail = 1;
	ck_assert_ptr_null(pcpu_alloc_slow(c));
	ck_assert_uint_eq(pcpu_alloc_bulk(c, objs, 4), 0);
	layer_fail = 0;
	totals(c, &a, &f);
	ck_assert_uint_eq(a, 0);
	struct slab_counts sc;
	slab_counts(c, &sc);
	ck_assert_uint_ge(sc.sc_fail, 2);
	void *o = pcpu_alloc_slow(c);
	ck_assert_ptr_nonnull(o);
	totals(c, &a, &f);
	ck_assert_uint_eq(a, 1);
	pcpu_free_slow(c, o);
	pcpu_cache_free(c);
}
END_TEST

/* ---- Slots ---- */

/* A slot reports its start while nothing can have counted on its page. */
START_TEST(pcpu_slot_start_reported_before_it_counts)
{
	int cpu = sched_getcpu();
	void *o = pcpu_alloc_slow(pc);

	ck_assert_ptr_nonnull(o);
	ck_assert_uint_ge(rec.lr_nslot, 1);
	ck_assert_uint_eq(rec.lr_slot_not_quiet, 0);
	ck_assert_uint_ne(rec.lr_slot_mask, 0);
	if (cpu >= 0 && cpu < 64 && rec.lr_nslot == 1) /* no migration meanwhile */
		ck_assert_uint_eq(rec.lr_slot_mask, 1ull << cpu);
	unsigned n = rec.lr_nslot;
	pcpu_free_slow(pc, o);
	pcpu_free_slow(pc, pcpu_alloc_slow(pc));
	ck_assert_uint_le(rec.lr_nslot, n + 1); /* once per slot, not per call */
}
END_TEST

START_TEST(pcpu_drain_empties_every_slot)
{
	enum { N = 300 };
	static void *objs[N];

	for (int i = 0; i < N; i++)
		objs[i] = pcpu_alloc_slow(pc);
	for (int i = 0; i < N; i++)
		pcpu_free_slow(pc, objs[i]);
	ck_assert_uint_gt(pcpu_objects(pc) + slab_inuse(pc), 0);
	pcpu_drain(pc, false);
	ck_assert_uint_eq(pcpu_objects(pc), 0);
	depot_drain(pc);
	ck_assert_uint_eq(slab_inuse(pc), 0);
	ck_assert(pcpu_is_valid(pc));
}
END_TEST

/* When the depot says a working-set interval ended, every slot whose hits
 * are due is folded, including one whose CPU never misses. */
START_TEST(pcpu_folds_when_the_depot_interval_ends)
{
	cpu_set_t saved;
	sched_getaffinity(0, sizeof saved, &saved);
	if (pcpu_slots() < 2 || !pin(1)) {
		/* One CPU: the slot would fold at its own miss instead. */
		ck_assert_msg(pcpu_slots() < 2 || CPU_COUNT(&saved) < 2, "cannot pin to CPU 1");
		return;
	}
	pcpu_free_slow(pc, pcpu_alloc_slow(pc)); /* starts slot 1 */
	ck_assert(pin(0));
	struct pcpu_slot *s1 = (struct pcpu_slot *)(pc->c_pcpu + ((size_t)1 << PCPU_SHIFT));
	struct pcpu_counters *k1 = pcpu_slot_counters(s1);
	ck_assert_uint_ne(s1->p_live, 0);
	/* Quiescent: no section runs on slot 1, so the word may be set. */
	uint64_t ops0 = k1->pc_ops;
	s1->p_word = (s1->p_word & PCPU_COUNT_MASK) | (PCPU_FOLD_AT << PCPU_COUNT_BITS);
	depot_lock(pc);
	pc->c_ws_start -= DEPOT_INTERVAL_NS;
	depot_unlock(pc);
	void *o = pcpu_alloc_slow(pc); /* on CPU 0: a depot trip ends the interval */
	ck_assert_ptr_nonnull(o);
	ck_assert_uint_eq(pcpu_word_hits(s1->p_word), 0);
	ck_assert_uint_eq(k1->pc_ops - ops0, PCPU_FOLD_AT);
	pcpu_free_slow(pc, o);
	sched_setaffinity(0, sizeof saved, &saved);
}
END_TEST

static Suite *pcpu_suite(void)
{
	Suite *s = suite_create("pcpu");
	TCase *tc = tcase_create("slow-paths");

	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, pcpu_slow_paths_round_trip);
	tcase_add_test(tc, pcpu_bulk_paths_count_exactly);
	tcase_add_loop_test(tc, pcpu_failed_alloc_not_counted, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("slots");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, pcpu_slot_start_reported_before_it_counts);
	tcase_add_test(tc, pcpu_drain_empties_every_slot);
	tcase_add_test(tc, pcpu_folds_when_the_depot_interval_ends);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {pcpu_suite, NULL};
