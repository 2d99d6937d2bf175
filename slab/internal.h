/* SPDX-License-Identifier: MIT */
/* Types shared by the slab/ files, with a section per file. */
#ifndef USLAB_INTERNAL_H
#define USLAB_INTERNAL_H

#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

#include "uslab.h"
#include "../pagesrc/os.h"
#include "../pagesrc/pagesrc.h"
#include "debug.h"
#include "lock.h"
#include "meta.h"
#include "observe.h"
#include "arch/fastpath.h"
#include "probes.h"

/* ======================================================================== */
/* ---- slab.c: slabs and their geometry ---- */

/* Slab sizes: powers of two from 64 KiB up to 16 MiB. 64 KiB keeps the tail
 * waste under 1% for objects up to ~256 bytes; larger objects get larger
 * slabs until the waste is under 1/64 (see slab_geometry()). 16 MiB is the
 * largest: it holds 16 objects of 1 MiB, and pages are only touched when
 * objects are. The headers are elsewhere (slab/meta.c). */
#define SLAB_MIN_SHIFT 16
#define SLAB_MAX_SHIFT 24
#define SLAB_MAGIC 0x75736c6162736c62ull /* "uslabslb" */
#define SLAB_CLEAN UINT64_MAX            /* s_empty_gen of a slab never used */

/* Empty slabs that stayed empty through a whole interval of this length
 * are purged (caches that can, slab_purgeable()) or released; purged ones
 * are released once they stayed empty for SLAB_PURGED_KEEP_NS (slab.c §3). */
#define SLAB_DECAY_NS 1000000000ull
#define SLAB_PURGED_KEEP_NS (10 * SLAB_DECAY_NS)

/* Partial slabs are kept in buckets by fullness so the fullest is found in
 * O(1): bucket b holds slabs with b*capacity/8 <= inuse < (b+1)*capacity/8. */
#define SLAB_BUCKETS 8

enum slab_where {
	SLAB_ON_EMPTY = SLAB_BUCKETS, /* 0..SLAB_BUCKETS-1: a partial bucket */
	SLAB_ON_FULL,
	SLAB_ON_NONE, /* being built or released, on no list */
};

/*
 * A slab: one size-aligned block from the page source, holding objects
 * only (after a colour offset); this header lives in the guarded metadata
 * (slab/meta.c) and the slab map leads to it from every granule of the
 * block. Which objects are in the slab (free) is a bitmap outside the
 * objects, so a free object's bytes are never written and a double free is
 * a bit already set.
 *
 * Invariants (slab_is_valid(), slab_cache_is_valid()):
 *   s_magic == SLAB_MAGIC, s_cache == the owning cache
 *   slabmap_lookup(any byte of s_block .. + c_slab_size) == this header
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
	char *s_block;                /* the block from the page source */
	char *s_base;                 /* object 0 (s_block + colour) */
	uint32_t s_inuse;             /* objects out of the slab */
	uint32_t s_hint;              /* no free bit below word s_hint */
	uint32_t s_where;             /* enum slab_where or a bucket */
	uint32_t s_rpos;              /* USLAB_RANDOM: its cursor in c_rand_seq */
	uint64_t s_empty_gen;         /* c_sweep_started when it last became empty,
	                       * or SLAB_CLEAN: no object of it ever went out */
	uint64_t s_purged_at;         /* empty and purged since (coarse ns); 0: not purged */
	/* Debug state (debug-cache.c), set once and kept until release:
	 * four bitmaps of c_slab_words words (DBG_KNOWN, DBG_OUT, DBG_POISON,
	 * DBG_RZ), and two audit records per object (alloc, free). */
	uint64_t *s_dbg;
	struct audit_rec *s_audit;
	/* USLAB_TYPESAFE_BY_RCU (rcu.c): liburcu's rcu_head while a retired
	 * chain waits for its grace period (the chain's first slab). */
	void *s_rcu[2];
	uint64_t s_free[]; /* bit i set: object i is free, in the slab */
};

struct slab_list {
	struct slab *l_head;
};

/** Fill the slab layer's part of @c (name, size, alignment, ctor/dtor,
 *  page source, geometry, lock) and @flags. false with errno EINVAL when
 *  no slab size holds an object. */
bool slab_cache_init(struct uslab_cache *c, const char *name, size_t size,
                     const struct uslab_cache_conf *conf, unsigned flags);
/** Undo slab_cache_init() once every slab is gone. */
void slab_cache_fini(struct uslab_cache *c);
/** Age the empty slabs (purge, release) as any slab-layer call does; for
 *  the layers above, whose magazines may absorb every call for a while.
 *  Returns the bytes released. */
size_t slab_tick(struct uslab_cache *c);
/** The registry's reclaim pass (cache.c), run when a page source fails
 *  and this thread holds no uslab lock; (size_t)-1 when it did not run. */
extern size_t (*slab_reclaim_hook)(void);
/** Compaction: take the sparsest partial slabs off every list (at most
 *  @cap, as many as the denser ones can absorb) into @victims; their
 *  objects are then drawn from other slabs. Returns how many. */
size_t slab_compact_begin(struct uslab_cache *c, struct slab **victims, size_t cap);
/** The objects of victim @s that are out of it, into @objs (room for
 *  c_slab_objs); how many. */
uint32_t slab_compact_objects(struct uslab_cache *c, struct slab *s, void **objs);
/** List the victims again (empty ones go to the empty list). */
void slab_compact_end(struct uslab_cache *c, struct slab **victims, size_t n);
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
/** The slab figures of @c (observe.h), read together under c_slab_lock. */
void slab_counts(struct uslab_cache *c, struct slab_counts *out);
/** Release all slabs of a cache with no objects out. Caller guarantees no
 *  concurrent use. */
void slab_release_all(struct uslab_cache *c);
/** Full invariant check of every slab of @c (takes c_slab_lock). */
bool slab_cache_is_valid(struct uslab_cache *c);
/** The slab holding @obj, if @obj is an object of @c; reports otherwise. */
struct slab *slab_of_checked(struct uslab_cache *c, const void *obj, uint32_t *idx);
/** Whether @obj is an object of @c (the check of every free), no report. */
bool slab_is_object(const struct uslab_cache *c, const void *obj);
/** The check of every free: returns if @obj is an object of @c, reports
 *  (not an object of this cache, or an interior pointer) otherwise. */
void slab_check_free(struct uslab_cache *c, const void *obj);
/** The same, with @obj's slab looked up already (@s, maybe NULL); its
 *  index in *@idx. */
void slab_check_free_at(struct uslab_cache *c, const void *obj, const struct slab *s,
                        uint32_t *idx);
/** A free that failed the fast path's check (x86_64-entry.S): reports,
 *  or, if @obj is an object of @c after all, frees it. */
void slab_free_bad(struct uslab_cache *c, void *obj);
/** A free of the object on top of this CPU's magazine: reports. */
__attribute__((noreturn)) void slab_free_dup(struct uslab_cache *c, void *obj);
/** Whether @c's ctor or dtor is running on this thread (the slow paths
 *  then report: a cache re-entered from its own callbacks). */
bool slab_in_callback(const struct uslab_cache *c);
/** Destruct and give back a chain of slabs that c_slab_retire got (their
 *  grace period is over); returns the bytes. */
size_t slab_destroy_retired(struct uslab_cache *c, struct slab *chain);
/** Lock and unlock every cache's c_slab_lock across fork (cache.c). */
void slab_lock_all(struct uslab_cache *c);
void slab_unlock_all(struct uslab_cache *c);

/** Coarse monotonic time in ns (vDSO, no syscall), for the working-set
 *  intervals of the depot and the slab layer. */
static inline uint64_t uslab_coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(OS_CLOCK_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/** With c_slab_lock held, @fn for every slab of @c (validate). */
void slab_walk_locked(struct uslab_cache *c,
                      void (*fn)(struct uslab_cache *, struct slab *, void *), void *arg);
/** Lock and unlock c_slab_lock around slab_walk_locked(). */
void slab_lock(struct uslab_cache *c);
void slab_unlock(struct uslab_cache *c);
/** Give every slab of @c debug bitmaps (and, with @audit, audit records),
 *  and new slabs too from now on; -1 with ENOMEM (slabs that got some keep
 *  them). */
int slab_debug_attach(struct uslab_cache *c, bool audit);
/** Whether @obj (an object of @c) is free in its slab. */
bool slab_obj_free(struct uslab_cache *c, const void *obj);
bool slab_obj_free_locked(struct uslab_cache *c, const void *obj);
/** c_inuse, with c_slab_lock held. */
uint64_t slab_inuse_locked(struct uslab_cache *c);

/* ======================================================================== */
/* ---- slabmap.c: from an address to its slab ---- */

/** Point every granule of [block, block + size) at @s. false (nothing
 *  set) when a leaf cannot be mapped. */
bool slabmap_set(const void *block, size_t size, struct slab *s);
void slabmap_clear(const void *block, size_t size);
/* The map's top level (slabmap.c): leaves of 2^16 slab pointers. */
extern struct slab **uslab_map_top[PCPU_MAP_TOP_ENTRIES];

/** The slab whose block holds @p, or NULL. No lock, no fault. Inline: every
 *  checked free runs it (x86_64-entry.S runs the same in asm). */
static inline struct slab *slabmap_lookup(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	size_t top = a >> PCPU_MAP_TOP_SHIFT;

	if (top >= PCPU_MAP_TOP_ENTRIES)
		return NULL;
	struct slab **leaf = __atomic_load_n(&uslab_map_top[top], __ATOMIC_ACQUIRE);
	return leaf != NULL ? __atomic_load_n(&leaf[(a >> PCPU_MAP_GRAIN_SHIFT) & 0xffff],
	                                      __ATOMIC_ACQUIRE)
	                    : NULL;
}

/* ======================================================================== */
/* ---- depot.c: full and empty magazines of a cache ---- */

/* A depot magazine: m_count objects in m_rounds (m_cap slots, a power of
 * two from DEPOT_MAG_MIN up: an object of the magazine cache of that size). */
struct mag {
	struct mag *m_next;
	uint32_t m_count;
	uint32_t m_cap;
	/* RCU (rcu.c): liburcu's rcu_head and the cache while the magazine
	 * waits for its grace period. */
	void *m_rcu[2];
	struct uslab_cache *m_rcu_cache;
	uintptr_t m_floor; /* MAG_FLOOR: what the fast path's double-free check
	                    * reads as rounds[-1] (no object is at that address) */
	void *m_rounds[];
};
#define MAG_FLOOR UINTPTR_MAX

/* Magazine caches, one per magazine size: class k holds DEPOT_MAG_MIN << k
 * rounds. The registry (cache.c) creates them; the depot allocates from
 * them through their slab layer. */
#define DEPOT_MAG_CLASSES 10
#define DEPOT_MAG_MIN 4
/* A working-set interval of the depot (depot.c), and the spare magazine
 * structures a depot keeps at most. */
#define DEPOT_INTERVAL_NS 1000000000ull
#define DEPOT_SPARE_MAX 16

/** Magazine sizes of @c (from its slot size) and its lock. */
void depot_init(struct uslab_cache *c);
void depot_fini(struct uslab_cache *c);
/** Across fork: c_depot_lock. */
void depot_lock(struct uslab_cache *c);
void depot_unlock(struct uslab_cache *c);
/** The magazine classes @c may ask for: [*lo, *hi] (the per-CPU layer's
 *  arrays of up to 2 * c_mag_max rounds included). */
void depot_mag_classes(const struct uslab_cache *c, unsigned *lo, unsigned *hi);
/** A magazine structure of at least @rounds rounds (m_count 0), for the
 *  per-CPU layer's arrays; NULL when out of memory. */
struct mag *depot_mag_get(size_t rounds);
/** Give one back (NULL: nothing). */
void depot_mag_put(struct mag *m);
/** Rounds of a class-@k magazine, and the bytes of its structure. */
uint32_t depot_mag_rounds(unsigned k);
size_t depot_mag_bytes(unsigned k);
/** Use @mc for magazines of class @k; false (nothing changed) when a
 *  cache is registered for @k already. */
bool depot_mag_register(unsigned k, struct uslab_cache *mc);
/** The magazine cache of class @k, or NULL. */
struct uslab_cache *depot_mag_cache(unsigned k);
/** Fill @buf (room for c_mag_max) with up to c_mag_size objects: a full
 *  magazine, or a batch from the slab layer. 0 with errno on failure.
 *  *@ended is set when a working-set interval ended during the call (the
 *  caller may then fold per-CPU counts). */
size_t depot_get_full(struct uslab_cache *c, void **buf, bool *ended);
/** Store @n (<= c_mag_max) objects as a full magazine (or send them to the
 *  slab layer when no magazine structure can be had). *@ended as above. */
void depot_put_full(struct uslab_cache *c, void *const *buf, size_t n, bool *ended);
/** Take @m (0 < m_count <= c_mag_max) as a full magazine, unless the depot
 *  holds @keep full magazines already (then false: nothing changed). */
bool depot_put_mag(struct uslab_cache *c, struct mag *m, uint64_t keep);
/** Send every object of every magazine to the slab layer; returns the
 *  bytes of slabs that this released. */
size_t depot_drain(struct uslab_cache *c);
/** Release the empty slabs of the magazine caches (uncounted by reap). */
void depot_mag_reap(void);
/** The depot figures of @c (observe.h), read together under c_depot_lock. */
void depot_counts(struct uslab_cache *c, struct depot_counts *out);
/** Whether @obj is in one of @c's depot magazines (takes c_depot_lock). */
bool depot_holds(struct uslab_cache *c, const void *obj);
/** Across validate: c_depot_lock, and @fn for every object in a full
 *  magazine (with the lock held). */
void depot_lock_objects(struct uslab_cache *c, void (*fn)(void *obj, void *arg), void *arg);
void depot_unlock_objects(struct uslab_cache *c);
/** The invariants beside the depot's fields in struct uslab_cache. */
bool depot_is_valid(struct uslab_cache *c);

/* ======================================================================== */
/* ---- pcpu-arena.c: slot memory that many caches share ---- */

struct pcpu_arena;

/* Where a cache's slots are: its index in an arena, and its slot 0. */
struct pcpu_place {
	struct pcpu_arena *pl_arena;
	uint32_t pl_index;
	char *pl_base; /* slot i at pl_base + (i << PCPU_SHIFT) */
};

/** The slot bound (pcpu.c), before the first arena. */
void arena_init(uint32_t nslots);
void arena_set_counters_ops(const struct arena_counters_ops *ops);
/** A free index for a new cache; -1 (ENOMEM) when no arena can be mapped. */
int arena_claim(struct pcpu_place *out);
/** Give the index back, zeroing what its slots wrote (quiescent slots). */
void arena_release(struct pcpu_place *pl);
/** Where the counters of @pl's slot 0 are in the provider's file, and the
 *  distance between CPUs; false when they are private. */
bool arena_counters_in_file(const struct pcpu_place *pl, uint64_t *off, uint64_t *stride);
/** Arenas mapped. */
uint64_t arena_mapped(void);
/** Across fork: arena_lock (cache.c); the child also closes every arena
 *  it inherited to new caches. */
void arena_atfork_prepare(void);
void arena_atfork_release(void);
void arena_atfork_child(void);

/* ======================================================================== */
/* ---- pcpu.c: per-CPU magazines, the mode, the slow paths ---- */

/* ======================================================================== */
/* ---- pcpu-mode.c: the mode, the slot bound, fences ---- */

/* 1 when the rseq fast path is in use; set once before the first cache. */
extern int pcpu_rseq;
/* 1 when uslab registers each thread's rseq area itself (pcpu-mode.c §4). */
extern int pcpu_rseq_own;
/* This thread's own registration: not tried yet, registered, or never. */
enum { PCPU_RSEQ_UNTRIED, PCPU_RSEQ_MINE, PCPU_RSEQ_NEVER };
extern __thread int pcpu_rseq_state __attribute__((tls_model("initial-exec")));
/* Threads whose own registration the kernel refused (atomic). */
extern uint64_t pcpu_rseq_refused;
void pcpu_rseq_register(void);
/** This thread's rseq cpu_id, as the asm reads it (< 0: not registered). */
int32_t pcpu_rseq_cpu_id(void);

/* Every slow path calls this before it touches a slot: with uslab's own
 * registration, a thread's first one registers it. */
static inline void pcpu_rseq_ready(void)
{
	if (__builtin_expect(pcpu_rseq_own != 0 && pcpu_rseq_state == PCPU_RSEQ_UNTRIED, 0))
		pcpu_rseq_register();
}
/* Slots per cache: the kernel's bound on CPU ids; set once likewise. */
extern uint32_t pcpu_nslots;
/* A read-only zero region laid out like an arena (every cap reads 0). */
extern char *pcpu_zero;

/* Capacity that follows the load (pcpu.c §7): a slot's cap grows to at
 * most PCPU_GROW_ROUNDS rounds and PCPU_GROW_SLOT_BYTES of objects, and
 * all caches together grow by at most PCPU_GROW_BUDGET bytes per CPU. */
#define PCPU_GROW_ROUNDS 2048
#define PCPU_GROW_SLOT_BYTES (512u << 10)
#define PCPU_GROW_BUDGET (8u << 20)
/* Bytes of growth all caches hold now, per CPU (atomic). */
extern uint64_t pcpu_grow_bytes;

void pcpu_init(void);
/** Number of per-CPU slots (possible CPUs). */
uint32_t pcpu_slots(void);
/** Make sure no rseq section on CPU @cpu can still commit (the caller
 *  stopped its slot first); false when the kernel refuses every way. */
bool pcpu_fence_cpu(uint32_t cpu);
/** Whether fences are possible at all now (pcpu-mode.c §3). */
bool pcpu_fence_possible(void);
/** Told the new mode when it changes at run time (cache.c: the segment). */
void pcpu_set_mode_hook(void (*hook)(const char *mode));

/* ======================================================================== */
/* ---- pcpu.c: per-CPU magazines, the slow paths ---- */

int pcpu_cache_init(struct uslab_cache *c);
void pcpu_cache_fini(struct uslab_cache *c);
void pcpu_lock_all(struct uslab_cache *c);
void pcpu_unlock_all(struct uslab_cache *c);
/** Clear every started slot's stale entries, so that slabs that became
 *  empty before may be released (§6 of pcpu.c). */
void pcpu_sweep(struct uslab_cache *c);
/** Move every object held in any per-CPU slot to the slab layer; returns
 *  the bytes of slabs that this released. @quiescent: nobody uses the
 *  cache (destroy), so no slot is stopped or fenced. Otherwise a slot
 *  whose CPU cannot be fenced keeps its objects. */
size_t pcpu_drain(struct uslab_cache *c, bool quiescent);
/** The cache is being destroyed: every fast-path operation misses from
 *  now on, and the slow paths report a use (a dtor using its cache). */
void pcpu_cache_stop(struct uslab_cache *c);
/** Own slot @s (CPU @i) of any slot region: stop it (p_cap = 0) and make
 *  sure no section on its CPU can commit, or, in the locked mode, take its
 *  lock; *@cap is the cap it had. False, the slot left as it was, when the
 *  CPU cannot be fenced (pcpu-mode.c §3). The caller serialises owners. */
bool pcpu_slot_stop(struct pcpu_slot *s, uint32_t i, uint32_t *cap);
/** Give slot @s back with capacity @cap, after its count was set. */
void pcpu_slot_restart(struct pcpu_slot *s, uint32_t cap);
/** In a signal handler that interrupted uslab on this thread: keep @obj in
 *  the thread's short list of deferred frees (a free_rcu when @rcu, given
 *  to the hook below), freed by the interrupted call before it returns;
 *  false when the list is full. */
bool pcpu_defer_free(struct uslab_cache *c, void *obj, bool rcu);
/** Give this thread a reserve of more such entries (once; not in a
 *  handler): free_rcu does, since its objects cannot hold a link. */
void pcpu_defer_reserve(void);
/** Where deferred free_rcu calls go (rcu.c sets it). */
void pcpu_set_rcu_hook(void (*hook)(struct uslab_cache *c, void *obj));
/** Free what signal handlers deferred on this thread, when it holds no
 *  uslab lock; a no-op otherwise (a test of two words). */
void pcpu_deferred_flush(void);
/** Objects held in per-CPU slots (racy unless quiescent). */
uint64_t pcpu_objects(struct uslab_cache *c);
/** Slot @i's word (its count and unfolded hits, private and exact) and a
 *  copy of its counters, read so that a fold in between is not seen
 *  twice. */
void pcpu_slot_read(struct uslab_cache *c, uint32_t i, uint64_t *word, struct pcpu_counters *k);
/** Per-slot object counts; returns the number of slots. */
size_t pcpu_slot_objects(struct uslab_cache *c, uint64_t *counts, size_t n);
__attribute__((noinline, cold)) void *pcpu_alloc_slow(struct uslab_cache *c);
__attribute__((noinline, cold)) void pcpu_free_slow(struct uslab_cache *c, void *obj);
/** Where @c's misses go, and whether its hits may use the asm (only with
 *  the per-CPU layer's own miss functions, in rseq mode): stores both,
 *  then owns and restarts every started slot, so that no section still
 *  uses the old slot base (x86_64-entry.S loads it inside the section). */
void pcpu_route(struct uslab_cache *c, void *(*alloc_miss)(struct uslab_cache *),
                void (*free_miss)(struct uslab_cache *, void *));
/** One object through this CPU's magazine, as a hit would, then as a miss
 *  (for the debug layer: @obj checked already). */
void *pcpu_alloc_magazine(struct uslab_cache *c);
void pcpu_free_magazine(struct uslab_cache *c, void *obj);
/** Whether @obj is in a per-CPU magazine of @c: every started slot is
 *  owned in turn (a fence each) and its rounds compared. */
bool pcpu_holds(struct uslab_cache *c, const void *obj);
/** Across validate: own every started slot (true: all were) and call @fn
 *  for each round they hold; then give them back. */
bool pcpu_stop_objects(struct uslab_cache *c, void (*fn)(void *obj, void *arg), void *arg);
void pcpu_restart_all(struct uslab_cache *c);
size_t pcpu_alloc_bulk(struct uslab_cache *c, void **objs, size_t n);
void pcpu_free_bulk(struct uslab_cache *c, void *const *objs, size_t n);
/** The invariants beside struct pcpu_slot (arch/fastpath.h) for slot @i;
 *  the slot must be quiescent. */
bool pcpu_slot_is_valid(struct uslab_cache *c, uint32_t i);
/** pcpu_slot_is_valid() for every slot of @c. */
bool pcpu_is_valid(struct uslab_cache *c);

/* With the asm, uslab_cache_alloc/free ARE the fast path (arch/x86_64.S):
 * a hit returns from the asm and a miss tail-calls the _slow function. */

/* ======================================================================== */
/* ---- debug-conf.c, audit.c, debug-cache.c, validate.c, sample.c ---- */

/* A failure-injection rule (USLAB_FAIL): every Nth allocation, or each
 * with probability r_threshold / 2^64, at most r_times. */
struct dbg_fail_rule {
	uint64_t r_every;
	uint64_t r_threshold;
	uint64_t r_seed;
	uint64_t r_times;
};

/* A cache's failure injection: the rule and its state (atomics). */
struct dbg_fail {
	struct dbg_fail_rule f_rule;
	uint64_t f_count;  /* allocations seen */
	uint64_t f_rng;    /* xorshift state */
	uint64_t f_failed; /* failures injected */
};

/* An audit record: an allocation or a free of one object. */
struct audit_rec {
	uint32_t a_stack; /* stack depot handle (audit.c), 0: none */
	uint32_t a_tid;   /* thread id */
	uint64_t a_ns;    /* coarse monotonic time; 0: no record */
};

/* The debug bitmaps of a slab (s_dbg): DBG_* * c_slab_words words on. */
enum { DBG_KNOWN, DBG_OUT, DBG_POISON, DBG_RZ, DBG_MAPS };
#define DBG_POISON_BYTE 0x6b
#define DBG_RZ_BYTE 0xbb
#define DBG_RZ_MIN 8 /* red zone bytes that USLAB_DEBUG_REDZONE adds at create */

/** USLAB_DEBUG's flags for a cache named @name (the variables are read at
 *  the first call of any of these three). */
unsigned debug_conf_flags(const char *name);
/** USLAB_FAIL's rule for @name, if any. */
bool debug_conf_fail(const char *name, struct dbg_fail_rule *rule);
/** USLAB_SAMPLE (0: off). */
uint64_t debug_conf_sample(void);

void audit_init(void);
/** Across fork (cache.c): the stack depot's lock, a leaf above meta_lock. */
void audit_atfork_prepare(void);
void audit_atfork_release(void);
/** Fill @r: this thread, now, this stack. */
void audit_record(struct audit_rec *r);
/** "uslab:   @what by thread T, S s ago:" and the stack, to @fd. */
void audit_print(int fd, const char *what, const struct audit_rec *r);
bool audit_same_stack(const struct audit_rec *a, const struct audit_rec *b);

/* ---- limit.c: the count of a limited cache (routed by debug-cache.c) ---- */
/** Count one object handed out; false with ENOBUFS (counted) when @c is at
 *  its limit, after its limit_hit callback and one retry. */
bool limit_take(struct uslab_cache *c);
/** One object came back (or an allocation counted by limit_take failed). */
void limit_put(struct uslab_cache *c);
/** Set @c's limit under debug_lock and re-route it: the count starts at
 *  @held when the cache had none (debug-cache.c). 0, or -1 with errno. */
int debug_set_limit(struct uslab_cache *c, uint64_t max, uint64_t held);

/** An object taken from (given to) the slab layer directly, by
 *  compaction: the checks, state and annotations of the route's way out
 *  (in), when the cache has debug flags or runs under a tool. */
void *debug_obj_out(struct uslab_cache *c, void *obj);
void debug_obj_in(struct uslab_cache *c, void *obj);

/** At create (cache.c): the debug flags from @flags and USLAB_DEBUG, the
 *  failure rule, sampling and the sanitizers decide the cache's route.
 *  -1 with errno (EINVAL: a flag refused; ENOMEM). */
int debug_cache_init(struct uslab_cache *c, unsigned flags);
void debug_cache_fini(struct uslab_cache *c);
/** The red zone @flags ask for at create (slab_cache_init). */
size_t debug_redzone_bytes(unsigned flags, size_t size);
/** Whether @obj is an object of @c that is free right now (in its slab or
 *  a magazine): the proof a double-free report needs. */
bool debug_obj_is_free(struct uslab_cache *c, const void *obj);
/** "offset N: b0 b1 ..." for the poison of @obj damaged at @at, into @buf. */
void debug_describe_poison(const unsigned char *obj, size_t at, size_t size, char *buf, size_t cap);

/** With the audit on: a "leak" line for each object of @c still
 *  allocated, grouped by allocation stack, to @out; how many (validate.c). */
long validate_leaks(struct uslab_cache *c, FILE *out);

/** Guarded sampling (sample.c, USLAB_SAMPLE): an object of @c on a page
 *  of its own, or NULL (not this time, or no memory). */
void *sample_alloc(struct uslab_cache *c);
/** Whether @obj (in no slab) is a sampled object; if so it is freed (and
 *  its page made inaccessible). */
bool sample_free(struct uslab_cache *c, void *obj);
void sample_init(uint64_t period);
/** Whether @obj is a live sampled object of @c (no lock, as the handler). */
bool sample_is_live(const struct uslab_cache *c, const void *obj);
/** The cache of @obj if it is a sampled object (live or freed), else NULL. */
struct uslab_cache *sample_owner(const void *obj);
/** Across fork: the sample pool's lock (a leaf). */
void sample_atfork_prepare(void);
void sample_atfork_release(void);
/** Across fork: debug_lock, which uslab_cache_set_debug() holds around
 *  cache locks, so taken before them (cache.c §4). */
void debug_atfork_prepare(void);
void debug_atfork_release(void);

/* ======================================================================== */
/* ---- rcu.c: frees after a grace period, type-safe caches ---- */

/** Whether this build has RCU (rcu.c: liburcu-bp); false where rcu-absent.c
 *  stands in for it (Windows). */
bool rcu_available(void);
/** At create: the cap on waiting objects, and for USLAB_TYPESAFE_BY_RCU
 *  caches the slab layer's c_slab_retire. */
void rcu_cache_init(struct uslab_cache *c);
/** Reap: submit every partial rcu magazine of @c (no wait); returns 0. */
size_t rcu_cache_reap(struct uslab_cache *c);
/** Destroy, first: submit everything of @c and wait for every callback.
 *  -1 with EDEADLK inside a read-side critical section (nothing done). */
int rcu_cache_quiesce(struct uslab_cache *c);
/** Destroy, once it cannot fail: the flusher and the barrier forget @c
 *  (before its observer goes). */
void rcu_cache_unlist(struct uslab_cache *c);
/** Destroy, after slab_release_all(): wait for retired slabs, free the
 *  rcu slots. */
void rcu_cache_fini(struct uslab_cache *c);
/** @c's waiting figures (racy, like the slots'). */
void rcu_counts(struct uslab_cache *c, struct rcu_counts *out);
/** Across fork (cache.c): prepare first (liburcu's helpers, then the rcu
 *  layer's locks), parent and child last; each cache's rcu slot locks
 *  with its other locks. */
void rcu_atfork_prepare(void);
void rcu_atfork_locks(void);
void rcu_atfork_parent(void);
void rcu_atfork_child(void);
void rcu_lock_all(struct uslab_cache *c);
void rcu_unlock_all(struct uslab_cache *c);

/* ======================================================================== */
/* ---- cache.c: the cache ---- */

struct uslab_cache {
	/* ---- fast path, read by the asm (offsets in arch/fastpath.h) ---- */
	char *c_fast; /* c_pcpu in rseq mode; a zero region (all caps 0) otherwise;
	               * changed only with every slot stopped (pcpu_route) */
	/* The object check of every free (slab_index): an object of slab s is
	 * at s_base + q * c_slot, q < c_chk_objs, and for any other offset x,
	 * ror(x * c_chk_inv, c_chk_tz) >= c_chk_objs. Immutable. */
	uint64_t c_chk_inv;  /* inverse of c_slot's odd part, mod 2^64 */
	uint64_t c_chk_objs; /* c_slab_objs */
	uint8_t c_chk_tz;    /* trailing zero bits of c_slot */
	uint8_t c_kmalloc;   /* a size class (kmalloc.c): 1 + its index; 0 otherwise */
	/* Where a miss goes (the asm tail-calls them): pcpu_alloc_slow and
	 * pcpu_free_slow, or a debug cache's (pcpu_route). */
	void *(*c_alloc_miss)(struct uslab_cache *c);
	void (*c_free_miss)(struct uslab_cache *c, void *obj);

	/* ---- registry and slab layer: immutable after create ---- */
	unsigned c_flags;
	uint32_t c_slot;       /* object spacing: size rounded up to c_align */
	uintptr_t c_slab_mask; /* ~(c_slab_size - 1) */
	char c_name[USLAB_NAME_MAX + 1];
	size_t c_size;
	size_t c_align;
	size_t c_slab_size;
	uint32_t c_slab_objs;   /* objects per slab */
	uint32_t c_slab_words;  /* 64-bit words in s_free */
	uint32_t c_first;       /* offset of object 0 before colour */
	uint32_t c_colour_step; /* bytes between successive colours */
	uint32_t c_colours;     /* number of distinct colour offsets */
	int (*c_ctor)(void *, void *);
	void (*c_dtor)(void *, void *);
	void *c_arg;
	const struct uslab_pagesrc *c_src;

	/* ---- observer (observe.h): set before listing, cleared at destroy
	 *      and in the fork child ---- */
	const struct obs_ops *c_obs;
	void *c_obs_rec;

	/* ---- per-CPU layer: immutable after create ---- */
	char *c_pcpu; /* per-CPU slots, private: slot i at c_pcpu + (i << PCPU_SHIFT) */
	struct pcpu_place c_place; /* where they are in an arena */
	uint32_t c_pcpu_rounds;    /* the largest cap a slot may get */

	unsigned c_dying; /* being destroyed: a use is reported (pcpu.c) */

	/* ---- per-CPU layer: under c_drain_lock ---- */
	struct uslab_lock c_drain_lock; /* remote slot operations (drain, resize, fold,
	                                 * sweep) and starting a slot; c_pcpu_cap */
	uint32_t c_pcpu_cap;            /* cap of running slots: 2M << c_pcpu_grow */
	/* Capacity that follows the load (pcpu.c §7; atomics): how many
	 * times the slots' cap doubled past 2M, the flips seen this depot
	 * interval, the budget bytes this cache holds. */
	uint32_t c_pcpu_grow, c_pcpu_flips;
	uint64_t c_pcpu_charged;
	/* Sweeps of the slots' stale entries (pcpu.c §6): the number of the
	 * last one started, and of the last one that reached every slot. The
	 * slab layer releases a slab only once c_sweep_done > its
	 * s_empty_gen, and asks for a sweep with c_sweep_wanted (atomics). */
	uint64_t c_sweep_started, c_sweep_done;
	unsigned c_sweep_wanted;

	/* ---- depot: under c_depot_lock (c_mag_size also read racily by pcpu.c) ----
	 * Invariants (depot_is_valid()):
	 *   c_nfull == |c_mag_full|, c_nempty == |c_mag_spare| <= DEPOT_SPARE_MAX
	 *   c_depot_objs == sum of m_count over c_mag_full
	 *   every magazine: 0 < m_count <= m_cap (full), m_cap a class size
	 *   c_ws_min_full <= c_nfull, c_mag_size <= c_mag_max */
	struct uslab_lock c_depot_lock; /* the depot lists and counts below */
	struct mag *c_mag_full;         /* full magazines, LIFO */
	struct mag *c_mag_spare;        /* spare magazine structures */
	uint64_t c_nfull, c_nempty;
	uint32_t c_mag_size;         /* rounds per depot magazine (M) */
	uint32_t c_mag_max;          /* largest M, fixed at create */
	uint64_t c_ws_min_full;      /* working set: fewest full magazines this interval */
	uint64_t c_ws_start;         /* ns (coarse clock): this interval's start */
	uint32_t c_ws_ops;           /* depot operations this interval */
	uint32_t c_ws_contended;     /* lock contentions this window of operations */
	uint32_t c_ws_int_contended; /* lock contentions this interval */
	uint32_t c_mag_min;          /* the starting M: magazines shrink back to it */
	uint64_t c_depot_contended;  /* lock contentions, ever */
	uint64_t c_depot_objs;       /* rounds in c_mag_full magazines */

	/* ---- slab layer: under c_slab_lock ---- */
	struct uslab_lock c_slab_lock; /* the lists, slab contents and counts below */
	struct slab_list c_partial[SLAB_BUCKETS];
	unsigned c_partial_mask; /* bit b set: c_partial[b] is not empty */
	struct slab_list c_full;
	struct slab_list c_empty;
	uint32_t c_colour_next;
	uint64_t c_rng;         /* USLAB_RANDOM's generator (xorshift; 0: unseeded) */
	uint32_t *c_rand_seq;   /* USLAB_RANDOM: a random order of c_slab_objs indexes */
	uint64_t c_slabs;       /* slabs on any list */
	uint64_t c_empty_slabs; /* slabs on c_empty */
	uint64_t c_decay_start; /* ns (CLOCK_MONOTONIC_COARSE): this interval's start */
	uint64_t c_decay_min;   /* fewest empty slabs seen this interval */
	uint64_t c_inuse;       /* sum of s_inuse */
	uint64_t c_slabs_created;
	uint64_t c_slabs_released;
	uint64_t c_alloc_fail;
	uint64_t c_purged_slabs; /* slabs on c_empty with s_purged_at != 0 */
	uint64_t c_offlist;      /* slabs off every list: being purged or evacuated */
	uint64_t c_bytes_purged; /* ever (empty slabs and free objects' pages) */

	/* ---- debug layer (debug-cache.c) ---- */
	/* ---- memory (limit.c, memory.c): set at create, or atomics ---- */
	uint64_t c_limit;      /* uslab_cache_set_limit(); 0: none (atomic; debug_lock) */
	int64_t c_limit_held;  /* objects held while limited (atomic) */
	uint64_t c_limit_fail; /* allocations refused at the limit (atomic) */
	void (*c_limit_hit)(struct uslab_cache *, void *);
	void (*c_reclaim)(void *);
	int (*c_move)(void *, void *, void *);
	uint64_t c_moved;        /* objects moved by compaction (atomic) */
	unsigned c_debug;        /* USLAB_DEBUG_* in force (atomic; changed under debug_lock) */
	unsigned c_routed;       /* misses and bulk go through the debug layer */
	uint32_t c_rz;           /* red zone: bytes from c_size to c_slot (Z) */
	unsigned c_dbg_slabs;    /* 1: slabs get s_dbg; 2: and s_audit (atomic) */
	struct dbg_fail *c_fail; /* failure injection, or NULL (immutable) */
	uint64_t c_sampled;      /* live sampled objects (sample.c; atomic) */
	size_t (*c_alloc_bulk)(struct uslab_cache *c, void **objs, size_t n);
	void (*c_free_bulk)(struct uslab_cache *c, void *const *objs, size_t n);

	/* ---- RCU layer (rcu.c) ---- */
	char *c_rcu_base;              /* rcu slots (made at the first free_rcu; atomic) */
	struct pcpu_place c_rcu_place; /* where they are in an arena */
	struct uslab_lock c_rcu_lock;  /* starting and owning rcu slots; c_rcu_over */
	struct mag *c_rcu_over;        /* frees no rcu slot could take (c_rcu_lock) */
	uint64_t c_rcu_over_n;         /* its m_count (atomic) */
	uint64_t c_rcu_cap;            /* objects submitted at most before free_rcu waits */
	int64_t c_rcu_flight;          /* objects submitted, not yet past their grace period */
	int64_t c_rcu_inline;          /* objects whose free_rcu waits for their grace period */
	int64_t c_rcu_queued;          /* objects in c_rcu_waitq (atomic; c_rcu_lock) */
	struct mag *c_rcu_waitq;       /* magazines past the cap, waiting for a waiter */
	uint32_t c_rcu_waitq_n;        /* how many (c_rcu_lock) */
	uint64_t c_rcu_slabs;          /* USLAB_TYPESAFE_BY_RCU: slabs waiting */
	uint64_t c_rcu_peak;           /* most objects submitted at once, ever */
	uint64_t c_rcu_waits;          /* free_rcu calls that waited for a grace period */
	uint64_t c_rcu_freed;          /* objects completed straight to depot or slabs */
	unsigned c_rcu_flushing;       /* a walker (flusher, barrier) works on it (atomic) */
	int c_rcu_submitting;          /* magazines between a list and liburcu (atomic) */
	bool c_rcu_listed;             /* on rcu_list (rcu_lock) */
	uint64_t c_rcu_observed;       /* coarse ns: figures last sent to the observer */
	struct uslab_cache *c_rcu_next, *c_rcu_prev; /* caches with rcu slots (rcu_lock) */
	/* The slab layer hands released slabs here instead of destroying them
	 * (rcu.c, USLAB_TYPESAFE_BY_RCU); NULL: destroyed at once. Immutable. */
	void (*c_slab_retire)(struct uslab_cache *c, struct slab *chain);

	/* ---- registry: under cache_list_lock ---- */
	struct uslab_cache *c_next, *c_prev;
};

_Static_assert(offsetof(struct uslab_cache, c_fast) == PCPU_CACHE_FAST, "PCPU_CACHE_FAST");
_Static_assert(offsetof(struct uslab_cache, c_chk_inv) == PCPU_CACHE_CHK_INV, "PCPU_CACHE_CHK_INV");
_Static_assert(offsetof(struct uslab_cache, c_chk_objs) == PCPU_CACHE_CHK_OBJS,
               "PCPU_CACHE_CHK_OBJS");
_Static_assert(offsetof(struct uslab_cache, c_chk_tz) == PCPU_CACHE_CHK_TZ, "PCPU_CACHE_CHK_TZ");
_Static_assert(offsetof(struct uslab_cache, c_kmalloc) == PCPU_CACHE_KMALLOC, "PCPU_CACHE_KMALLOC");
_Static_assert(offsetof(struct uslab_cache, c_alloc_miss) == PCPU_CACHE_ALLOC_MISS,
               "PCPU_CACHE_ALLOC_MISS");
_Static_assert(offsetof(struct uslab_cache, c_free_miss) == PCPU_CACHE_FREE_MISS,
               "PCPU_CACHE_FREE_MISS");
_Static_assert(offsetof(struct slab, s_cache) == PCPU_SLAB_CACHE, "PCPU_SLAB_CACHE");
_Static_assert(offsetof(struct slab, s_base) == PCPU_SLAB_BASE, "PCPU_SLAB_BASE");
_Static_assert(PCPU_MAP_GRAIN_SHIFT == SLAB_MIN_SHIFT, "the map's granule is the smallest slab");

/** Lock order 1: the registry. Held across atfork. */
extern struct uslab_lock cache_list_lock;
/** The newest cache (list head, under cache_list_lock). */
extern struct uslab_cache *cache_list;

/** The registry lock for a walk (stats.c): taken, unless this thread holds
 *  it already around a walk's callback (then false, and nothing to drop). */
bool cache_list_enter(void);
void cache_list_leave(bool took);
/** Around a walk's callbacks: nested walks and fork() go on without the
 *  lock; the callbacks are not "busy" for the signal guard. */
void cache_walk_begin(bool took);
void cache_walk_end(bool took);
/** Whether a walk or a count may take the registry here: not in a signal
 *  handler that interrupted uslab on this thread outside a walk. */
bool cache_walk_possible(void);

/** The library's one-time start (the observers, the fork handlers), if
 *  it has not run yet. */
void cache_ensure_init(void);

/** Test hook: full invariant check of a cache (slab, depot and pcpu). */
bool cache_is_valid(struct uslab_cache *c);
/* c_flags bit (beyond USLAB_FLAGS_MASK) of the library's own caches, which
 * uslab_cache_destroy() refuses. */
#define CACHE_INTERNAL 0x80000000u

/* Reports to the observer of @c (observe.h), if any. */
static inline void obs_slab_locked(struct uslab_cache *c, const struct slab_counts *sc)
{
	ASSERT_HELD(&c->c_slab_lock);
	if (c->c_obs != NULL)
		c->c_obs->o_slab(c->c_obs_rec, sc);
}

static inline void obs_depot_locked(struct uslab_cache *c, const struct depot_counts *dc)
{
	ASSERT_HELD(&c->c_depot_lock);
	if (c->c_obs != NULL)
		c->c_obs->o_depot(c->c_obs_rec, dc);
}

static inline void obs_pages(struct uslab_cache *c)
{
	if (c->c_obs != NULL)
		c->c_obs->o_pages(c->c_obs_rec);
}

static inline void obs_slot_locked(struct uslab_cache *c, uint32_t cpu, void *page)
{
	ASSERT_HELD(&c->c_drain_lock);
	if (c->c_obs != NULL)
		c->c_obs->o_slot(c->c_obs_rec, cpu, page);
}

/* The object check's quotient of byte offset @off from a slab's s_base
 * (slab.c, slab_check_init): below c_chk_objs exactly for object starts. */
static inline uint64_t slab_check_quotient(const struct uslab_cache *c, uint64_t off)
{
	uint64_t x = off * c->c_chk_inv;
	unsigned t = c->c_chk_tz;

	return t == 0 ? x : (x >> t) | (x << (64 - t));
}

/** The slab and index of @obj, an object of @c (checked before). */
static inline struct slab *slab_locate(const struct uslab_cache *c, const void *obj, uint32_t *idx)
{
	struct slab *s = slabmap_lookup(obj);

	*idx = (uint32_t)slab_check_quotient(c, (uint64_t)((uintptr_t)obj - (uintptr_t)s->s_base));
	return s;
}

#endif /* USLAB_INTERNAL_H */
