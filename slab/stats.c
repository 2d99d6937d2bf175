/* SPDX-License-Identifier: MIT */
/* Cache statistics: snapshots, the registry walk, slabinfo output. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "internal.h"

/*
 * Design
 *
 * Figures that the structure gives are computed from it, not counted:
 * slabs and objects come from the slab layer's counts (under c_slab_lock),
 * objects cached above it from the slots (the count in their p_word) and
 * the depot. Event counters are per-CPU (each slot's word counts its hits
 * in the same store as its count, and the batch and drain counters sit on
 * its counters page; arch/fastpath.h explains how allocs and frees follow
 * from them) plus per-cache relaxed atomics bumped by the slow paths; the
 * reader sums them and accepts that operations in flight are not yet
 * counted. Another process (slab/reader.c) sees the same figures through
 * the stats segment, with the copy of each word in place of the word.
 *
 *   allocs = sum over CPUs of pcpu_split_hits() + c_slow_allocs
 *   active_objs = sum(s_inuse) - objects in slots - objects in the depot
 *
 * The second is exact at quiescence (DESIGN.md §3, invariant 1); while
 * threads run it is clamped at zero, since slots are read without stopping
 * them.
 */

/* See include/uslab.h */
int uslab_cache_stats(struct uslab_cache *c, struct uslab_stats *st)
{
	if (c == NULL || st == NULL) {
		errno = EINVAL;
		return -1;
	}
	memset(st, 0, sizeof *st);
	memcpy(st->name, c->c_name, sizeof st->name);
	st->obj_size = c->c_size;
	st->slot_size = c->c_slot;
	st->align = c->c_align;
	st->flags = c->c_flags & USLAB_FLAGS_MASK;
	st->objs_per_slab = c->c_slab_objs;
	st->slab_size = c->c_slab_size;

	st->depot_objs = depot_objects(c, &st->depot_full, &st->depot_empty);
	st->pcpu_objs = pcpu_objects(c);
	struct slab_counts sc;
	slab_counts(c, &sc);
	uint64_t cached = st->depot_objs + st->pcpu_objs;
	st->active_objs = sc.sc_inuse > cached ? sc.sc_inuse - cached : 0;
	st->total_objs = sc.sc_slabs * c->c_slab_objs;
	st->active_slabs = sc.sc_slabs - sc.sc_empty;
	st->total_slabs = sc.sc_slabs;
	st->bytes_active = st->active_objs * c->c_slot;
	st->bytes_total = sc.sc_slabs * c->c_slab_size;
	st->slabs_created = sc.sc_created;
	st->slabs_released = sc.sc_released;
	st->alloc_failures = sc.sc_fail;

	pcpu_counts(c, &st->fast_allocs, &st->fast_frees);
	st->allocs = st->fast_allocs + __atomic_load_n(c->c_slow_allocs, __ATOMIC_RELAXED);
	st->frees = st->fast_frees + __atomic_load_n(c->c_slow_frees, __ATOMIC_RELAXED);
	st->mag_size = __atomic_load_n(&c->c_mag_size, __ATOMIC_RELAXED);
	st->mag_max = c->c_mag_max;
	st->depot_contended = __atomic_load_n(&c->c_depot_contended, __ATOMIC_RELAXED);
	return 0;
}

/* See include/uslab.h */
size_t uslab_cache_cpu_objects(struct uslab_cache *c, uint64_t *counts, size_t n)
{
	if (c == NULL || (counts == NULL && n != 0)) {
		errno = EINVAL;
		return 0;
	}
	return pcpu_slot_objects(c, counts, n);
}

/* See include/uslab.h */
int uslab_foreach_cache(int (*fn)(struct uslab_cache *, void *), void *arg)
{
	int ret = 0;

	if (fn == NULL) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&cache_list_lock);
	struct uslab_cache *oldest = cache_list;
	while (oldest != NULL && oldest->c_next != NULL)
		oldest = oldest->c_next;
	for (struct uslab_cache *c = oldest; c != NULL && ret == 0; c = c->c_prev)
		ret = fn(c, arg);
	pthread_mutex_unlock(&cache_list_lock);
	return ret;
}

/* See include/uslab.h */
int uslab_global_stats(struct uslab_global_stats *st)
{
	struct pgsrc_totals t;

	if (st == NULL) {
		errno = EINVAL;
		return -1;
	}
	memset(st, 0, sizeof *st);
	st->mode = uslab_mode();
	st->cpus = pcpu_slots();
	pgsrc_totals(&t);
	st->bytes_got = t.pt_got;
	st->bytes_returned = t.pt_put;
	st->bytes_mapped = t.pt_got - t.pt_put;
	pthread_mutex_lock(&cache_list_lock);
	for (const struct uslab_cache *c = cache_list; c != NULL; c = c->c_next)
		st->caches++;
	pthread_mutex_unlock(&cache_list_lock);
	return 0;
}

static int stats_slabinfo_line(struct uslab_cache *c, void *arg)
{
	FILE *out = arg;
	struct uslab_stats st;

	uslab_cache_stats(c, &st);
	/* Columns of /proc/slabinfo 2.1. pagesperslab is in system pages;
	 * the tunables are the magazine size (limit), a batch of one magazine
	 * and no sharing; slabdata gives active and total slabs. */
	int n = fprintf(out,
	                "%-17s %6llu %6llu %6llu %4u %4llu : tunables %4u %4u %4u : slabdata %6llu "
	                "%6llu %6u\n",
	                st.name, (unsigned long long)st.active_objs,
	                (unsigned long long)st.total_objs, (unsigned long long)st.slot_size,
	                st.objs_per_slab, (unsigned long long)(st.slab_size / pgsrc_page_size()),
	                2 * st.mag_size, st.mag_size, 0u, (unsigned long long)st.active_slabs,
	                (unsigned long long)st.total_slabs, 0u);
	return n < 0 ? -1 : 0;
}

/* See include/uslab.h */
int uslab_slabinfo(FILE *out)
{
	if (out == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (fprintf(out, "slabinfo - version: 2.1\n"
	                 "# name            <active_objs> <num_objs> <objsize> <objperslab> "
	                 "<pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : "
	                 "slabdata <active_slabs> <num_slabs> <sharedavail>\n") < 0)
		return -1;
	if (uslab_foreach_cache(stats_slabinfo_line, out) != 0)
		return -1;
	return fflush(out) == 0 ? 0 : -1;
}
