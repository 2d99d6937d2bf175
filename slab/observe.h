/* SPDX-License-Identifier: MIT */
/* Observer hooks: how the layers report their figures to whoever watches. */
#ifndef USLAB_OBSERVE_H
#define USLAB_OBSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A layer never calls the code that watches it (the stats segment, a
 * test's recorder). It reports figures that it read under its own lock, in
 * a struct that it owns, through the hook table of the cache (c_obs, with
 * the observer's record c_obs_rec). A NULL table means nobody watches.
 * Hooks run on slow paths only, never on the fast path; they must be
 * cheap, may take a leaf lock of their own, and never call back into the
 * layers. The table and record are set before the cache is listed (no
 * other thread can see it yet) and cleared only where no other thread can
 * use the cache: at destroy, and in the fork child.
 */

/* The slab layer's figures of one cache, read together under c_slab_lock. */
struct slab_counts {
	uint64_t sc_inuse;        /* objects out of slabs: sum of s_inuse */
	uint64_t sc_slabs;        /* slabs on any list */
	uint64_t sc_empty;        /* slabs with no object out */
	uint64_t sc_created;      /* slabs ever created */
	uint64_t sc_released;     /* slabs ever released */
	uint64_t sc_fail;         /* slab-layer allocations that failed */
	uint64_t sc_purged;       /* empty slabs kept purged */
	uint64_t sc_bytes_purged; /* bytes purged, ever */
};

/* The depot's figures of one cache, read together under c_depot_lock. */
struct depot_counts {
	uint64_t dc_objs;      /* objects in full magazines */
	uint64_t dc_full;      /* full magazines */
	uint64_t dc_empty;     /* spare magazine structures */
	uint64_t dc_contended; /* lock acquisitions that had to wait, ever */
	uint32_t dc_mag_size;  /* rounds per magazine now */
	uint32_t dc_pad;
};

/* The RCU layer's figures of one cache (rcu.c), read racily. */
struct rcu_counts {
	uint64_t rc_objs;  /* objects freed with free_rcu, not yet past their grace period */
	uint64_t rc_slabs; /* USLAB_TYPESAFE_BY_RCU: released slabs waiting for theirs */
	uint64_t rc_peak;  /* most objects submitted at once, ever */
	uint64_t rc_waits; /* free_rcu calls that waited for a grace period (the cap) */
	uint64_t rc_cap;   /* objects submitted at most before free_rcu waits */
	uint64_t rc_freed; /* objects past their grace period that went to the depot or
	                    * the slabs directly (counted as frees) */
};

struct obs_ops {
	/* The slab figures changed (c_slab_lock held). */
	void (*o_slab)(void *rec, const struct slab_counts *sc);
	/* The depot figures changed (c_depot_lock held). */
	void (*o_depot)(void *rec, const struct depot_counts *dc);
	/* Pages went back to the page source (no uslab lock held). */
	void (*o_pages)(void *rec);
	/* Per-CPU slot @cpu starts: @page (its counters, PCPU_COUNTERS_OFF
	 * bytes, all zero, arch/fastpath.h) may be replaced with a shared page
	 * of the same size. Called under c_drain_lock, before anything counts
	 * on the page. */
	void (*o_slot)(void *rec, uint32_t cpu, void *page);
	/* The RCU figures changed (no uslab lock held). */
	void (*o_rcu)(void *rec, const struct rcu_counts *rc);
};

/*
 * Process-wide: who may provide the per-CPU arenas' counters as shared
 * memory (the segment writer, installed by cache.c). ac_map maps @len
 * bytes at @addr (a range the arena reserved, so MAP_FIXED) and says where
 * they start in its file; false to decline, with @addr left reserved or
 * unmapped (the arena then maps private memory there). Called under
 * arena_lock (slab/pcpu-arena.c).
 */
struct arena_counters_ops {
	bool (*ac_map)(void *addr, size_t len, uint64_t *file_off);
};

#endif /* USLAB_OBSERVE_H */
