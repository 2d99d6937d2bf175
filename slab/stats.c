/* SPDX-License-Identifier: MIT */
/* Cache statistics: snapshots, the registry walk, slabinfo output. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "derive.h"
#include "internal.h"
#include "kmalloc.h"
#include "segment/writer.h"

/*
 * Design
 *
 * Figures that the structure gives are computed from it, not counted:
 * slabs and objects come from the slab layer's counts (under c_slab_lock),
 * objects cached above it from the slots (the count in their p_word) and
 * the depot. Event counters are per-CPU (each slot's word counts its hits
 * in the same store as its count, and the batch, drain and slow-path
 * counters sit on its counters page; arch/fastpath.h explains how allocs
 * and frees follow from them); the reader sums them and accepts that
 * operations in flight are not yet counted. The formulas are in
 * slab/derive.c, shared with the segment reader, which sees the same
 * figures through the file with the copy of each word in place of the word.
 */

/* See include/uslab.h */
int uslab_cache_stats(struct uslab_cache *c, struct uslab_stats *st)
{
	struct stats_raw r;

	if (c == NULL || st == NULL) {
		errno = EINVAL;
		return -1;
	}
	memset(&r, 0, sizeof r);
	memcpy(r.sr_name, c->c_name, sizeof r.sr_name);
	r.sr_obj_size = c->c_size;
	r.sr_slot_size = c->c_slot;
	r.sr_align = c->c_align;
	/* The debug flags in force (uslab_cache_set_debug), the others as created. */
	r.sr_flags = (c->c_flags & USLAB_FLAGS_MASK & ~USLAB_DEBUG_MASK) |
	             __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED);
	r.sr_objs_per_slab = c->c_slab_objs;
	r.sr_slab_size = c->c_slab_size;
	r.sr_mag_max = c->c_mag_max;
	/* Outer layers first: an object moving down meanwhile is seen at most
	 * once more, never lost, and active_objs is clamped at zero. */
	uint32_t n = pcpu_slots();
	for (uint32_t i = 0; i < n; i++) {
		uint64_t word;
		struct pcpu_counters k;
		pcpu_slot_read(c, i, &word, &k);
		stats_add_cpu(&r, word, &k);
	}
	rcu_counts(c, &r.sr_rcu);
	depot_counts(c, &r.sr_depot);
	slab_counts(c, &r.sr_slab);
	stats_derive(&r, st);
	st->limit = __atomic_load_n(&c->c_limit, __ATOMIC_RELAXED);
	st->limit_failures = __atomic_load_n(&c->c_limit_fail, __ATOMIC_RELAXED);
	st->moved = __atomic_load_n(&c->c_moved, __ATOMIC_RELAXED);
	if (c->c_fail != NULL) /* injected failures (USLAB_FAIL) */
		st->alloc_failures += __atomic_load_n(&c->c_fail->f_failed, __ATOMIC_RELAXED);
	pcpu_deferred_flush();
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
	int ret = 0, old;

	if (fn == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* In a signal handler that interrupted uslab on this thread (outside a
	 * walk): the registry may be half changed under us. */
	if (!cache_walk_possible()) {
		errno = EDEADLK;
		return -1;
	}
	/* The callbacks run with the registry held: no cancellation point may
	 * act meanwhile (it would leave the lock held for good); a request
	 * waits until the walk is over. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	bool took = cache_list_enter();
	cache_walk_begin(took);
	struct uslab_cache *oldest = cache_list;
	while (oldest != NULL && oldest->c_next != NULL)
		oldest = oldest->c_next;
	for (struct uslab_cache *c = oldest; c != NULL && ret == 0; c = c->c_prev)
		ret = fn(c, arg);
	cache_walk_end(took);
	cache_list_leave(took);
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
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
	if (!cache_walk_possible()) {
		errno = EDEADLK;
		return -1;
	}
	memset(st, 0, sizeof *st);
	st->mode = uslab_mode();
	st->segment = seg_status();
	st->hugepage = uslab_pagesrc_hugepage_mode();
	st->cpus = pcpu_slots();
	pgsrc_totals(&t);
	st->bytes_got = t.pt_got;
	st->bytes_returned = t.pt_put;
	km_large_totals(&st->large_blocks, &st->large_bytes);
	st->bytes_mapped = t.pt_got - t.pt_put;
	st->bytes_purged = t.pt_purged;
	st->pagesrc_calls = t.pt_calls;
	bool took = cache_list_enter();
	for (const struct uslab_cache *c = cache_list; c != NULL; c = c->c_next)
		st->caches++;
	cache_list_leave(took);
	st->arenas = arena_mapped();
	st->meta_bytes = meta_mapped();
	return 0;
}

static int stats_slabinfo_line(struct uslab_cache *c, void *arg)
{
	FILE *out = arg;
	struct uslab_stats st;

	uslab_cache_stats(c, &st);
	/* Columns of /proc/slabinfo 2.1. pagesperslab is in system pages;
	 * the tunables are the magazine size (limit), a batch of one magazine
	 * and no sharing; slabdata gives active and total slabs. A last
	 * section, after the kernel's, gives the objects waiting for a grace
	 * period (free_rcu) and a type-safe cache's slabs waiting for theirs:
	 * parsers of the kernel's columns read past it. */
	int n = fprintf(out,
	                "%-17s %6llu %6llu %6llu %4u %4llu : tunables %4u %4u %4u : slabdata %6llu "
	                "%6llu %6u : rcu %6llu %6llu\n",
	                st.name, (unsigned long long)st.active_objs,
	                (unsigned long long)st.total_objs, (unsigned long long)st.slot_size,
	                st.objs_per_slab, (unsigned long long)(st.slab_size / pgsrc_page_size()),
	                2 * st.mag_size, st.mag_size, 0u, (unsigned long long)st.active_slabs,
	                (unsigned long long)st.total_slabs, 0u, (unsigned long long)st.rcu_objs,
	                (unsigned long long)st.rcu_slabs);
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
	                 "slabdata <active_slabs> <num_slabs> <sharedavail> : "
	                 "rcu <waiting_objs> <waiting_slabs>\n") < 0)
		return -1;
	if (uslab_foreach_cache(stats_slabinfo_line, out) != 0)
		return -1;
	return fflush(out) == 0 ? 0 : -1;
}
