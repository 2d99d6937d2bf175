/* SPDX-License-Identifier: MIT */
/* Types shared by the slab/ files, with a section per file. */
#ifndef USLAB_INTERNAL_H
#define USLAB_INTERNAL_H

#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

#include "uslab.h"
#include "../pagesrc/pagesrc.h"
#include "debug.h"
#include "arch/fastpath.h"
#include "probes.h"

#define USLAB_HIDDEN __attribute__((visibility("hidden")))

/* ======================================================================== */
/* ---- slab.c: slabs and their geometry ---- */

/* Slab sizes: powers of two from 64 KiB up to 16 MiB. 64 KiB keeps the slab
 * header plus the tail waste under 1% for objects up to ~256 bytes; larger
 * objects get larger slabs until the waste is under 1/64 (see
 * slab_geometry()). 16 MiB is the largest: with 1 MiB objects it holds 15,
 * wasting 1/16, and pages are only touched when objects are. */
#define SLAB_MIN_SHIFT 16
#define SLAB_MAX_SHIFT 24
#define SLAB_MAGIC 0x75736c6162736c62ull /* "uslabslb" */

/* Empty slabs that stayed empty through a whole interval of this length
 * are released (slab.c §3). */
#define SLAB_DECAY_NS 1000000000ull

/* Partial slabs are kept in buckets by fullness so the fullest is found in
 * O(1): bucket b holds slabs with b*capacity/8 <= inuse < (b+1)*capacity/8. */
#define SLAB_BUCKETS 8

enum slab_where {
	SLAB_ON_EMPTY = SLAB_BUCKETS, /* 0..SLAB_BUCKETS-1: a partial bucket */
	SLAB_ON_FULL,
	SLAB_ON_NONE, /* being built or released, on no list */
};

/*
 * A slab: one size-aligned block from the page source. The header sits at
 * the block's start; objects follow after a colour offset. Which objects are
 * in the slab (free) is a bitmap outside the objects, so a free object's
 * bytes are never written and a double free is a bit already set.
 *
 * Invariants (slab_is_valid()):
 *   s_magic == SLAB_MAGIC, s_cache == the owning cache
 *   s_inuse + popcount(s_free) == c_slab_objs
 *   no bit at or above c_slab_objs is set
 *   s_hint <= the first word of s_free with a bit set
 *   s_where == bucket of s_inuse (partial), FULL when s_inuse == c_slab_objs,
 *   EMPTY when s_inuse == 0
 */
struct slab {
	uint64_t s_magic;
	struct uslab_cache *s_cache; /* owner, checked on every free */
	/* ---- under c_slab_lock ---- */
	struct slab *s_next, *s_prev; /* list given by s_where */
	char *s_base;                 /* object 0 (after header and colour) */
	uint32_t s_inuse;             /* objects out of the slab */
	uint32_t s_hint;              /* no free bit below word s_hint */
	uint32_t s_where;             /* enum slab_where or a bucket */
	uint32_t s_pad;
	uint64_t s_free[]; /* bit i set: object i is free, in the slab */
};

struct slab_list {
	struct slab *l_head;
};

/** Compute a cache's slab geometry from its slot size and alignment.
 *  Returns false if no slab size holds an object. */
bool slab_geometry(struct uslab_cache *c);
/** Move up to @n objects from slabs to @objs (creating slabs as needed).
 *  Takes and drops c_slab_lock. Returns how many; errno is set when short. */
size_t slab_alloc_bulk(struct uslab_cache *c, void **objs, size_t n);
/** Give @n objects back to their slabs; reports misuse. Takes c_slab_lock.
 *  Returns the bytes of surplus empty slabs this released. */
size_t slab_free_bulk(struct uslab_cache *c, void *const *objs, size_t n);
/** Release every empty slab; returns the bytes given back. */
size_t slab_reap(struct uslab_cache *c);
/** Objects out of slabs (sum of s_inuse). Takes c_slab_lock. */
uint64_t slab_inuse(struct uslab_cache *c);
/** Slab counts of a cache, read together under c_slab_lock. */
struct slab_counts {
	uint64_t sc_inuse, sc_slabs, sc_empty, sc_created, sc_released, sc_fail;
};
void slab_counts(struct uslab_cache *c, struct slab_counts *out);
/** Release all slabs of a cache with no objects out. Caller guarantees no
 *  concurrent use. */
void slab_release_all(struct uslab_cache *c);
/** Full invariant check of every slab of @c (takes c_slab_lock). */
bool slab_cache_is_valid(struct uslab_cache *c);
/** The slab holding @obj, if @obj is an object of @c; reports otherwise. */
struct slab *slab_of_checked(struct uslab_cache *c, const void *obj, uint32_t *idx);

/** Coarse monotonic time in ns (vDSO, no syscall), for the working-set
 *  intervals of the depot and the slab layer. */
static inline uint64_t uslab_coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ======================================================================== */
/* ---- slabmap.c: which address ranges are slabs ---- */

bool slabmap_set(const void *block, size_t size);
void slabmap_clear(const void *block, size_t size);
bool slabmap_test(const void *p);

/* ======================================================================== */
/* ---- cache.c: the cache ---- */

struct uslab_cache {
	/* ---- fast path, read by the asm (offset 0); immutable ---- */
	char *c_fast; /* c_pcpu in rseq mode; a zero region (all caps 0) otherwise */

	/* ---- immutable after create ---- */
	unsigned c_flags;
	char *c_pcpu;          /* per-CPU slots, private: slot i at c_pcpu + (i << PCPU_SHIFT) */
	uint32_t c_slot;       /* object spacing: size rounded up to c_align */
	uintptr_t c_slab_mask; /* ~(c_slab_size - 1) */

	/* ---- immutable after create ---- */
	char c_name[USLAB_NAME_MAX + 1];
	size_t c_size;
	size_t c_align;
	size_t c_slab_size;
	uint32_t c_slab_objs;   /* objects per slab */
	uint32_t c_slab_words;  /* 64-bit words in s_free */
	uint32_t c_first;       /* offset of object 0 before colour */
	uint32_t c_colour_step; /* bytes between successive colours */
	uint32_t c_colours;     /* number of distinct colour offsets */
	uint64_t c_div;         /* ceil(2^64 / c_slot), for exact offset division */
	int (*c_ctor)(void *, void *);
	void (*c_dtor)(void *, void *);
	void *c_arg;
	const struct uslab_pagesrc *c_src;
	uint32_t c_pcpu_rounds; /* rounds a slot can hold (the largest cap) */

	/* ---- under c_drain_lock ---- */
	pthread_mutex_t c_drain_lock; /* serialises remote slot operations (drain, resize) */
	uint32_t c_pcpu_cap;          /* cap of running slots: 2 * magazine size */

	/* ---- under c_depot_lock (c_mag_size also read racily by pcpu.c) ---- */
	pthread_mutex_t c_depot_lock; /* protects the depot lists and counts below */
	struct mag *c_mag_full;       /* full magazines, LIFO */
	struct mag *c_mag_spare;      /* spare magazine structures */
	uint64_t c_nfull, c_nempty;
	uint32_t c_mag_size;        /* rounds per depot magazine (M) */
	uint32_t c_mag_max;         /* largest M, fixed at create */
	uint64_t c_ws_min_full;     /* working set: fewest full magazines this interval */
	uint64_t c_ws_start;        /* ns (coarse clock): this interval's start */
	uint32_t c_ws_ops;          /* depot operations this interval */
	uint32_t c_ws_contended;    /* lock contentions this interval */
	uint64_t c_depot_contended; /* lock contentions, ever */
	uint64_t c_depot_objs;      /* rounds in c_mag_full magazines */

	/* ---- slow-path counters: relaxed atomics, no lock ---- */
	uint64_t *c_slow_allocs; /* allocations not served by a slot hit: in the
	                               * stats segment record, or c_slow_own[0] */
	uint64_t *c_slow_frees;  /* likewise, or c_slow_own[1] */
	uint64_t c_slow_own[2];
	struct seg_cache *c_seg; /* stats record (segment.c); NULL: unpublished */

	/* ---- under c_slab_lock ---- */
	pthread_mutex_t c_slab_lock; /* protects the lists, slab contents and counts below */
	struct slab_list c_partial[SLAB_BUCKETS];
	unsigned c_partial_mask; /* bit b set: c_partial[b] is not empty */
	struct slab_list c_full;
	struct slab_list c_empty;
	uint32_t c_colour_next;
	uint64_t c_slabs;       /* slabs on any list */
	uint64_t c_empty_slabs; /* slabs on c_empty */
	uint64_t c_decay_start; /* ns (CLOCK_MONOTONIC_COARSE): this interval's start */
	uint64_t c_decay_min;   /* fewest empty slabs seen this interval */
	uint64_t c_inuse;       /* sum of s_inuse */
	uint64_t c_slabs_created;
	uint64_t c_slabs_released;
	uint64_t c_alloc_fail;

	/* ---- under cache_list_lock ---- */
	struct uslab_cache *c_next, *c_prev;
};

/** Lock order 1: the registry. Held across atfork. */
extern pthread_mutex_t cache_list_lock;
/** The newest cache (list head, under cache_list_lock). */
extern struct uslab_cache *cache_list;

/** Test hook: full invariant check of a cache. */
bool cache_is_valid(struct uslab_cache *c);
/* c_flags bit (beyond USLAB_FLAGS_MASK) of the library's own caches, which
 * uslab_cache_destroy() refuses. */
#define CACHE_INTERNAL 0x80000000u
/** uslab_cache_create() for the library: @internal is 0 or CACHE_INTERNAL. */
struct uslab_cache *cache_create(const char *name, size_t size, const struct uslab_cache_conf *conf,
                                 unsigned internal);
/** uslab_cache_destroy() without the internal-cache check. */
int cache_destroy(struct uslab_cache *c);

/* ======================================================================== */
/* ---- depot.c: full and empty magazines of a cache ---- */

/* A depot magazine: m_count objects in m_rounds (m_cap slots, a power of
 * two from 4 to 128: an object of the magazine cache of that size). */
struct mag {
	struct mag *m_next;
	uint32_t m_count;
	uint32_t m_cap;
	void *m_rounds[];
};

int depot_init(struct uslab_cache *c);
void depot_fini(struct uslab_cache *c);
void depot_lock(struct uslab_cache *c);
void depot_unlock(struct uslab_cache *c);
/** Fill @buf (room for c_mag_max) with up to c_mag_size objects: a full
 *  magazine, or a batch from the slab layer. 0 with errno on failure. */
size_t depot_get_full(struct uslab_cache *c, void **buf);
/** Store @n (<= c_mag_max) objects as a full magazine (or send them to the
 *  slab layer when no magazine structure can be had). */
void depot_put_full(struct uslab_cache *c, void *const *buf, size_t n);
/** Send every object of every magazine to the slab layer; returns the
 *  bytes of slabs that this released. */
size_t depot_drain(struct uslab_cache *c);
/** Release the empty slabs of the magazine caches (uncounted by reap). */
void depot_mag_reap(void);
/** Objects and magazines held in the depot (takes c_depot_lock). */
uint64_t depot_objects(struct uslab_cache *c, uint64_t *full, uint64_t *spare);

/* ======================================================================== */
/* ---- pcpu.c: per-CPU magazines, the mode, the slow paths ---- */

/* 1 when the rseq fast path is in use; set once before the first cache. */
extern int pcpu_rseq;

void pcpu_init(void);
int pcpu_cache_init(struct uslab_cache *c);
void pcpu_cache_fini(struct uslab_cache *c);
void pcpu_lock_all(struct uslab_cache *c);
void pcpu_unlock_all(struct uslab_cache *c);
/** Move every object held in any per-CPU slot to the slab layer; returns
 *  the bytes of slabs that this released. */
/** Fold the hits of every slot past PCPU_FOLD_AT (arch/fastpath.h); no
 * uslab lock held. Called when a depot working-set interval ends. */
void pcpu_fold_due(struct uslab_cache *c);
size_t pcpu_drain(struct uslab_cache *c);
/** Objects held in per-CPU slots (racy unless quiescent). */
uint64_t pcpu_objects(struct uslab_cache *c);
/** Per-CPU figures summed over slots. */
void pcpu_counts(struct uslab_cache *c, uint64_t *allocs, uint64_t *frees);
/** Per-slot object counts; returns the number of slots. */
size_t pcpu_slot_objects(struct uslab_cache *c, uint64_t *counts, size_t n);
/** Number of per-CPU slots (possible CPUs). */
uint32_t pcpu_slots(void);
__attribute__((noinline, cold)) void *pcpu_alloc_slow(struct uslab_cache *c);
__attribute__((noinline, cold)) void pcpu_free_slow(struct uslab_cache *c, void *obj);
size_t pcpu_alloc_bulk(struct uslab_cache *c, void **objs, size_t n);
void pcpu_free_bulk(struct uslab_cache *c, void *const *objs, size_t n);

/* With the asm, uslab_cache_alloc/free ARE the fast path (arch/x86_64.S):
 * a hit returns from the asm and a miss tail-calls the _slow function. */

/* ======================================================================== */
/* ---- segment.c: the live statistics segment (see its design comment) ---- */

struct seg_cache;

/** Publish @c (c_pcpu mapped) in a record of the stats segment, when
 *  stats are on and the file can grow. Sets c_seg and the slow-counter
 *  pointers either way. */
void seg_cache_publish(struct uslab_cache *c);
/** Retire the cache's record and its counters pages (before c_pcpu is
 *  unmapped). */
void seg_cache_retire(struct uslab_cache *c);
/** Slot @i starts (p_cap still 0; c_drain_lock or the slot lock held):
 *  map its counters page shared from the file if @c is published. On
 *  failure the page stays private. */
void seg_counters_share(struct uslab_cache *c, uint32_t i);
/** Publish the slab counts; c_slab_lock held. Cheap; no-op if unpublished. */
void seg_slab_publish_locked(struct uslab_cache *c);
/** Publish the depot figures; c_depot_lock held. */
void seg_depot_publish_locked(struct uslab_cache *c);
/** Publish the page-source totals (no lock needed). */
void seg_totals_publish(void);
/** Fork handlers, called last in prepare and first in parent and child
 *  (cache.c), with every cache lock held. The child stops sharing the
 *  counters pages and publishes none of the caches it inherited. */
void seg_atfork_prepare(void);
void seg_atfork_parent(void);
void seg_atfork_child(void);
/** Start time of @pid from /proc (reader.c): 0 none, UINT64_MAX unknown. */
uint64_t seg_proc_start_time(pid_t pid);

#endif /* USLAB_INTERNAL_H */
