/* SPDX-License-Identifier: MIT */
/* A cache's statistics from its raw figures (see derive.h). */
#include "config.h"

#include <string.h>

#include "derive.h"

uint64_t stats_add_cpu(struct stats_raw *r, uint64_t word, const struct pcpu_counters *k)
{
	uint64_t fill = pcpu_word_count(word);
	uint64_t a, f;

	if (fill > PCPU_MAX_ROUNDS)
		fill = PCPU_MAX_ROUNDS;
	/* Unsigned throughout: garbage wraps, it is never undefined. */
	pcpu_split_hits(word, k, &a, &f);
	r->sr_pcpu_objs += fill;
	r->sr_fast_allocs += a;
	r->sr_fast_frees += f;
	r->sr_slow_allocs += k->pc_slow_allocs;
	r->sr_slow_frees += k->pc_slow_frees;
	return fill;
}

void stats_derive(const struct stats_raw *r, struct uslab_stats *st)
{
	const struct slab_counts *sc = &r->sr_slab;
	uint64_t cached = r->sr_depot.dc_objs + r->sr_pcpu_objs + r->sr_rcu.rc_objs;

	memset(st, 0, sizeof *st);
	memcpy(st->name, r->sr_name, sizeof st->name);
	st->name[USLAB_NAME_MAX] = '\0';
	st->obj_size = r->sr_obj_size;
	st->slot_size = r->sr_slot_size;
	st->align = r->sr_align;
	st->flags = r->sr_flags;
	st->objs_per_slab = r->sr_objs_per_slab;
	st->slab_size = r->sr_slab_size;
	st->active_objs = sc->sc_inuse > cached ? sc->sc_inuse - cached : 0;
	st->total_objs = sc->sc_slabs * r->sr_objs_per_slab;
	st->active_slabs = sc->sc_slabs > sc->sc_empty ? sc->sc_slabs - sc->sc_empty : 0;
	st->total_slabs = sc->sc_slabs;
	st->bytes_active = st->active_objs * r->sr_slot_size;
	st->bytes_total = sc->sc_slabs * r->sr_slab_size;
	st->allocs = r->sr_fast_allocs + r->sr_slow_allocs;
	st->frees = r->sr_fast_frees + r->sr_slow_frees + r->sr_rcu.rc_freed;
	st->fast_allocs = r->sr_fast_allocs;
	st->fast_frees = r->sr_fast_frees;
	st->alloc_failures = sc->sc_fail;
	st->pcpu_objs = r->sr_pcpu_objs;
	st->depot_objs = r->sr_depot.dc_objs;
	st->depot_full = r->sr_depot.dc_full;
	st->depot_empty = r->sr_depot.dc_empty;
	st->mag_size = r->sr_depot.dc_mag_size;
	st->mag_max = r->sr_mag_max;
	st->depot_contended = r->sr_depot.dc_contended;
	st->slabs_created = sc->sc_created;
	st->slabs_released = sc->sc_released;
	st->purged_slabs = sc->sc_purged;
	st->bytes_purged = sc->sc_bytes_purged;
	st->rcu_objs = r->sr_rcu.rc_objs;
	st->rcu_bytes = r->sr_rcu.rc_objs * r->sr_slot_size;
	st->rcu_slabs = r->sr_rcu.rc_slabs;
	st->rcu_peak = r->sr_rcu.rc_peak;
	st->rcu_waits = r->sr_rcu.rc_waits;
	st->rcu_cap = r->sr_rcu.rc_cap;
}
