/* SPDX-License-Identifier: MIT */
/* A cache's statistics from its raw figures: the one derivation of them. */
#ifndef USLAB_DERIVE_H
#define USLAB_DERIVE_H

#include <stdint.h>

#include "uslab.h"
#include "observe.h"
#include "arch/fastpath.h"

/*
 * struct uslab_stats is computed in two places from the same raw figures:
 * in the process (slab/stats.c, from the layers) and in another process
 * (the segment reader, from the file). Both fill a struct stats_raw and call
 * stats_derive(), so the formulas exist once:
 *
 *   active_objs = sum(s_inuse) - objects in per-CPU slots - objects in the depot
 *                 - objects waiting for a grace period (free_rcu)
 *   allocs      = sum over CPUs of the hits split by pcpu_split_hits()
 *                 + sum over CPUs of the slow-path allocations
 *
 * The first is exact at quiescence (DESIGN.md §3, invariant 1); while
 * threads run it is clamped at zero, since slots are read without stopping
 * them. This header uses only the public types, the observer's figures and
 * the fast-path contract, so the reader can include it.
 */
struct stats_raw {
	/* ---- fixed at create ---- */
	char sr_name[USLAB_NAME_MAX + 1];
	uint64_t sr_obj_size, sr_slot_size, sr_align, sr_slab_size;
	uint32_t sr_flags, sr_objs_per_slab, sr_mag_max;
	/* ---- the layers' figures ---- */
	struct slab_counts sr_slab;
	struct depot_counts sr_depot;
	struct rcu_counts sr_rcu;
	/* ---- summed over CPUs by stats_add_cpu() ---- */
	uint64_t sr_pcpu_objs, sr_fast_allocs, sr_fast_frees, sr_slow_allocs, sr_slow_frees;
};

/** Add one CPU's figures (its word, or the copy of it, and its counters)
 *  to @r. Returns that CPU's magazine fill, clamped to PCPU_MAX_ROUNDS
 *  whatever the numbers (they may come from a hostile file). */
uint64_t stats_add_cpu(struct stats_raw *r, uint64_t word, const struct pcpu_counters *k);

/** Fill @st from @r. */
void stats_derive(const struct stats_raw *r, struct uslab_stats *st);

#endif /* USLAB_DERIVE_H */
