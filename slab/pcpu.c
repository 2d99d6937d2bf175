/* SPDX-License-Identifier: MIT */
/* Per-CPU magazines: the mode, the slot region, slow paths, remote drains. */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if USLAB_HAVE_SYS_RSEQ_H
#include <sys/rseq.h>
#endif

#include "internal.h"
#include "sanitize.h"

/*
 * Design
 *
 * 1. Slots. A cache's slots live in a shared arena (pcpu-arena.c): one
 *    index j of 1,024 per cache, and for every CPU i a 64-byte slot at
 *    region i + j * 64, so every rseq cpu_id below nslots has a slot and
 *    any other one reads a zero capacity from a guard and misses. nslots
 *    is the kernel's CPU bound (pcpu-mode.c), not what sysfs says. A slot
 *    (struct pcpu_slot, arch/fastpath.h) is the magazine's header, with a
 *    pointer to its rounds, which come from the depot's magazine classes
 *    when the slot starts; it never leaves this process. Its event
 *    counters (struct pcpu_counters) sit at +PCPU_CTR_DELTA, in memory the
 *    stats segment may share, the only per-CPU data another process may
 *    see. A slot reports its start to the cache's observer (observe.h)
 *    before its p_cap first becomes non-zero and before any slow path
 *    counts on it; this layer knows nothing of the segment. A remote
 *    drain adds what it took to the slot's pc_drained, so allocs and frees
 *    can be told apart. The slow paths count what they allocate and free
 *    in the counters of the CPU they run on (pc_slow_allocs,
 *    pc_slow_frees: atomic adds, since a thread may migrate meanwhile),
 *    successful operations only; a USLAB_NOMAGAZINE cache starts slots for
 *    that alone (their cap stays 0).
 *
 * 2. Hysteresis. A slot holds up to 2M rounds (M = the depot's magazine
 *    size). An alloc miss (empty) loads one magazine of M from the depot;
 *    a free miss (full) flushes M to the depot. Either way the slot is left
 *    half full, so alloc/free alternating at a boundary costs one depot
 *    trip per M operations, never one per operation. We chose this over
 *    Bonwick's loaded/previous pair because the fast path then touches one
 *    array at a fixed place, with no magazine pointer to follow or swap.
 *
 * 3. Modes, chosen once (pcpu-mode.c) and never mixed:
 *    - "rseq cpu_id": the assembly fast path (arch/x86_64.S); remote
 *      operations stop a slot (p_cap = 0), fence the CPU (membarrier
 *      PRIVATE_EXPEDITED_RSEQ; where a sandbox refuses it, migration onto
 *      the CPU; where that is refused too, only quiescent slots are
 *      drained), own it, then restart it.
 *    - "locked: <why>": the same slots, each with a spinlock, indexed by
 *      os_cpu() (sched_getcpu(); Windows: GetCurrentProcessorNumber()); the
 *      index is only a hint for locality, the lock
 *      gives correctness. Used when no thread can register rseq (valgrind,
 *      old kernels, a seccomp policy), with USLAB_RSEQ=0, without asm,
 *      under ThreadSanitizer (which cannot see the rseq hand-off), or when
 *      membarrier cannot fence rseq at start-up.
 *
 * 4. Signals: a hit in the rseq mode takes no lock and is async-signal
 *    safe. A slow path run by a handler that interrupted uslab on its
 *    thread never waits for a lock ("Re-entry" below): an
 *    allocation fails with EDEADLK, a free is deferred. Threads without
 *    an rseq registration (cpu_id < 0) miss every time and go through the
 *    depot.
 *
 * 5. Calls go down: to the depot for magazines, and straight to the slab
 *    layer where no magazine is involved (drains, USLAB_NOMAGAZINE caches,
 *    a free that finds its slot stopped). When the depot says that a
 *    working-set interval ended, the slow path folds the slots' hit counts
 *    that are due (§1 of arch/fastpath.h), since a CPU that never misses
 *    would not.
 *
 * 6. Stale entries and sweeps. The public free's hit trusts an object it
 *    finds just above the count (the memo, arch/fastpath.h), so the
 *    entries at and above the count must only ever be NULL or objects of
 *    this cache in slabs not yet released. Arrays are zeroed when a slot
 *    gets one and when a drain empties it; a sweep (pcpu_sweep) owns
 *    every started slot in turn and zeroes its entries above the count.
 *    The slab layer records c_sweep_started when a slab becomes empty and
 *    releases it only once a later sweep has reached every slot
 *    (c_sweep_done), asking for one with c_sweep_wanted: the end of a
 *    depot interval then sweeps, and reap sweeps after its drains. With
 *    no fence at all (pcpu-mode.c §3) a running slot cannot be swept, so
 *    its cache's slabs stay: memory, not safety, is what degrades.
 *
 * 7. Capacity that follows the load. A slot's cap is 2M << c_pcpu_grow.
 *    A slot whose misses change kind (an alloc miss after a free miss, or
 *    the other way) within 8 caps' worth of hits swings through more
 *    rounds than it holds: a batch of a thousand, allocated then freed,
 *    would pay a depot trip every M operations. Such a flip doubles the
 *    cache's cap (pcpu_grow), up to c_pcpu_rounds (depot_init: at most
 *    PCPU_GROW_ROUNDS and PCPU_GROW_SLOT_BYTES of objects) and within a
 *    budget per CPU shared by all caches (PCPU_GROW_BUDGET, first come
 *    first served); the slots follow at their next miss (pcpu_resize). A
 *    one-way flow (a producer CPU that only allocates) never flips, and a
 *    swing far larger than any cap (a batch of 100,000) flips too seldom:
 *    neither grows. A depot interval without a flip halves the growth, and
 *    a destroy gives it all back (pcpu_grow_reset); the slots shrink at
 *    their next miss (pcpu_shrink). A reap drains the slots but keeps the
 *    growth (only the arrays, 16 KiB a slot at most): a program that reaps
 *    often would else stop every slot to regrow it after each reap, and a
 *    cache in use flips again at once. A cache nobody touches keeps its
 *    growth, and its share of the budget, until it is destroyed.
 */

/* Largest stack buffer of rounds moved at once (>= every c_mag_max). */
#define PCPU_BUF 128

_Static_assert(2 * PCPU_BUF <= PCPU_MAX_ROUNDS, "a slot holds two of the largest magazines");
_Static_assert(PCPU_GROW_ROUNDS <= PCPU_MAX_ROUNDS &&
                       PCPU_GROW_ROUNDS <= (size_t)DEPOT_MAG_MIN << (DEPOT_MAG_CLASSES - 1),
               "a grown slot's array is a magazine of the largest class");

uint64_t pcpu_grow_bytes;

/* ---- Slots ---- */

static struct pcpu_slot *pcpu_slot(const struct uslab_cache *c, uint32_t i)
{
	return (struct pcpu_slot *)(c->c_pcpu + ((size_t)i << PCPU_SHIFT));
}

static struct pcpu_counters *pcpu_ctr(const struct uslab_cache *c, uint32_t i)
{
	return pcpu_slot_counters(pcpu_slot(c, i));
}

static bool pcpu_off(const struct uslab_cache *c)
{
	return (c->c_flags & USLAB_NOMAGAZINE) != 0;
}

/* Zero slot @s's entries from @count up (§6): the slot is owned, or not
 * started yet. */
static void pcpu_clear_stale(struct pcpu_slot *s, uint32_t count)
{
	if (s->p_mag != NULL && count < s->p_mag->m_cap)
		memset(s->p_rounds + count, 0, (s->p_mag->m_cap - count) * sizeof(void *));
}

int pcpu_cache_init(struct uslab_cache *c)
{
	pcpu_init();
	if (pcpu_zero == NULL || arena_claim(&c->c_place) != 0)
		return -1;
	/* c_pcpu_rounds: depot_init's, a power of two up to PCPU_GROW_ROUNDS */
	if (pcpu_off(c))
		c->c_pcpu_rounds = 0;
	else
		VERIFY(c->c_pcpu_rounds <= PCPU_GROW_ROUNDS &&
		       c->c_pcpu_rounds >= 2 * c->c_mag_max);
	c->c_pcpu = c->c_place.pl_base;
	c->c_pcpu_cap = pcpu_off(c) ? 0 : 2 * c->c_mag_size;
	c->c_fast = pcpu_rseq && !pcpu_off(c) ? c->c_pcpu : pcpu_zero;
	c->c_alloc_miss = pcpu_alloc_slow;
	c->c_free_miss = pcpu_free_slow;
	lock_init(&c->c_drain_lock);
	return 0;
}

static void pcpu_grow_reset(struct uslab_cache *c);
static void pcpu_grow_tick(struct uslab_cache *c);

void pcpu_cache_fini(struct uslab_cache *c)
{
	if (c->c_pcpu == NULL)
		return;
	pcpu_grow_reset(c);
	/* Quiescent: the slots are drained; their arrays go back. */
	for (uint32_t i = 0; i < pcpu_nslots; i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		if (s->p_live != 0)
			depot_mag_put(s->p_mag);
	}
	lock_fini(&c->c_drain_lock);
	arena_release(&c->c_place);
	c->c_pcpu = NULL;
}

/* Locked mode's slot locks: a spinlock in the slot itself (p_lock, on the
 * cache line of p_word and p_cap; lock.h). */
static inline void pcpu_slot_lock(struct pcpu_slot *s)
{
	spin_take(&s->p_lock);
}

static inline void pcpu_slot_unlock(struct pcpu_slot *s)
{
	spin_drop(&s->p_lock);
}

/* fork(): every lock of the cache. Slots start under c_drain_lock in both
 * modes, so holding it, only started slots can be locked (and the pages of
 * the others are never written). A SCHED_FIFO thread spinning on the
 * lock of a preempted lower-priority holder on the same CPU yields in vain
 * (sched_yield does not run lower priorities): real-time programs should
 * use the rseq mode. */
void pcpu_lock_all(struct uslab_cache *c)
{
	lock_take(&c->c_drain_lock);
	if (!pcpu_rseq)
		for (uint32_t i = 0; i < pcpu_nslots; i++)
			if (pcpu_slot(c, i)->p_live != 0)
				pcpu_slot_lock(pcpu_slot(c, i));
}

void pcpu_unlock_all(struct uslab_cache *c)
{
	if (!pcpu_rseq)
		for (uint32_t i = 0; i < pcpu_nslots; i++)
			if (pcpu_slot(c, i)->p_live != 0)
				pcpu_slot_unlock(pcpu_slot(c, i));
	lock_drop(&c->c_drain_lock);
}

/* With slot @i owned (stopped by pcpu_stop, or its lock held): move its
 * hits into pc_ops, so they never wrap in the word, and set its count to
 * @count. */
static void pcpu_set_owned(struct uslab_cache *c, uint32_t i, uint32_t count)
{
	struct pcpu_slot *s = pcpu_slot(c, i);
	struct pcpu_counters *ctr = pcpu_ctr(c, i);
	uint64_t w = s->p_word;

	ASSERT(pcpu_word_count(w) <= c->c_pcpu_rounds);
	__atomic_store_n(&ctr->pc_ops,
	                 __atomic_load_n(&ctr->pc_ops, __ATOMIC_RELAXED) + pcpu_word_hits(w),
	                 __ATOMIC_RELAXED);
	__atomic_store_n(&s->p_word, (uint64_t)count, __ATOMIC_RELAXED);
	__atomic_store_n(&ctr->pc_word, (uint64_t)count, __ATOMIC_RELAXED);
}

static bool pcpu_stop(struct uslab_cache *c, uint32_t i, uint32_t *cap);
static void pcpu_restart(struct uslab_cache *c, uint32_t i, uint32_t cap);

/* Fold slot @i's hits into pc_ops once they reach PCPU_FOLD_AT (a racy
 * peek, confirmed with the slot owned). No uslab lock held. */
static void pcpu_fold_if_due(struct uslab_cache *c, uint32_t i)
{
	struct pcpu_slot *s = pcpu_slot(c, i);

	if (pcpu_word_hits(__atomic_load_n(&s->p_word, __ATOMIC_RELAXED)) < PCPU_FOLD_AT)
		return;
	lock_take(&c->c_drain_lock);
	uint32_t cap;
	if (pcpu_stop(c, i, &cap)) { /* else no fence: it folds another time */
		if (pcpu_word_hits(s->p_word) >= PCPU_FOLD_AT)
			pcpu_set_owned(c, i, pcpu_word_count(s->p_word));
		pcpu_restart(c, i, cap);
	}
	lock_drop(&c->c_drain_lock);
}

/* A depot working-set interval ended: fold every started slot that is
 * due, sweep if the slab layer waits for a sweep to release slabs, and
 * let the slab layer age its empty slabs, which it does only when called:
 * a cache whose magazines absorb every operation would keep them else. */
static void pcpu_fold_due(struct uslab_cache *c)
{
	for (uint32_t i = 0; i < pcpu_nslots && !pcpu_off(c); i++)
		if (__atomic_load_n(&pcpu_slot(c, i)->p_live, __ATOMIC_RELAXED) != 0)
			pcpu_fold_if_due(c, i);
	if (__atomic_load_n(&c->c_sweep_wanted, __ATOMIC_RELAXED) != 0)
		pcpu_sweep(c);
	pcpu_grow_tick(c);
	slab_tick(c);
}

/*
 * The slot of the CPU we run on (probably: the thread may migrate), started
 * if it never ran, so a cache touches the slots of the CPUs that use it and
 * no others. A slot starts under c_drain_lock, which every remote
 * operation and fork hold: first its observer may replace its counters
 * page (nothing has counted on it yet), then its cap is set (in rseq mode
 * that lets hits in) and it is marked live. In rseq mode, an already live
 * slot is folded here if it is due. No lock held on entry or exit.
 */
static uint32_t pcpu_here(struct uslab_cache *c)
{
	pcpu_rseq_ready();
	int cpu = os_cpu();
	/* cpu is below the slot count (pcpu_possible); no division here. */
	uint32_t i = cpu >= 0 && (uint32_t)cpu < pcpu_nslots ? (uint32_t)cpu : 0;
	struct pcpu_slot *s = pcpu_slot(c, i);

	if (__builtin_expect(__atomic_load_n(&s->p_live, __ATOMIC_ACQUIRE) != 0, 1)) {
		if (pcpu_rseq)
			pcpu_fold_if_due(c, i);
		return i;
	}
	/* Its array, before the lock: the depot's magazine cache may need a
	 * new slab. Without one the slot starts with cap 0 (every operation
	 * then goes to the depot) and gets one at the next resize. */
	struct mag *m = NULL;
	if (!pcpu_off(c))
		m = depot_mag_get(__atomic_load_n(&c->c_pcpu_cap, __ATOMIC_RELAXED));
	lock_take(&c->c_drain_lock);
	if (s->p_live == 0) {
		obs_slot_locked(c, i, pcpu_slot_counters(s));
		uint32_t cap = 0;
		if (m != NULL && m->m_cap >= c->c_pcpu_cap) {
			s->p_mag = m;
			s->p_rounds = m->m_rounds;
			pcpu_clear_stale(s, 0); /* another cache's rounds, maybe */
			cap = c->c_pcpu_cap;
			m = NULL;
		}
		__atomic_store_n(&s->p_cap, cap, __ATOMIC_RELEASE);
		__atomic_store_n(&s->p_live, 1, __ATOMIC_RELEASE);
	}
	lock_drop(&c->c_drain_lock);
	depot_mag_put(m); /* another thread started it first */
	return i;
}

/* Count @n slow-path allocations (@frees false) or frees on slot @i. */
static void pcpu_count(struct uslab_cache *c, uint32_t i, bool frees, size_t n)
{
	struct pcpu_counters *k = pcpu_ctr(c, i);

	if (n != 0)
		__atomic_fetch_add(frees ? &k->pc_slow_frees : &k->pc_slow_allocs, (uint64_t)n,
		                   __ATOMIC_RELAXED);
}

/* Locked mode: the slot of the CPU we probably run on, locked; its hits
 * folded when they are due. */
static uint32_t pcpu_lock_mine(struct uslab_cache *c)
{
	uint32_t i = pcpu_here(c);
	struct pcpu_slot *s = pcpu_slot(c, i);

	pcpu_slot_lock(s);
	if (pcpu_word_hits(s->p_word) >= PCPU_FOLD_AT)
		pcpu_set_owned(c, i, pcpu_word_count(s->p_word));
	return i;
}

/* Move up to @n rounds from this CPU's slot to @out. */
static size_t pcpu_take(struct uslab_cache *c, void **out, size_t n)
{
#if USLAB_HAVE_ASM
	if (pcpu_rseq)
		return uslab_rseq_pop_batch(c->c_pcpu, PCPU_SHIFT, out, n);
#endif
	uint32_t i = pcpu_lock_mine(c);
	size_t k = pcpu_generic_pop_batch(pcpu_slot(c, i), out, n);
	pcpu_slot_unlock(pcpu_slot(c, i));
	return k;
}

/* Move up to @n rounds from @in to this CPU's slot. */
static size_t pcpu_give(struct uslab_cache *c, void *const *in, size_t n)
{
#if USLAB_HAVE_ASM
	if (pcpu_rseq)
		return uslab_rseq_push_batch(c->c_pcpu, PCPU_SHIFT, in, n);
#endif
	uint32_t i = pcpu_lock_mine(c);
	size_t k = pcpu_generic_push_batch(pcpu_slot(c, i), in, n);
	pcpu_slot_unlock(pcpu_slot(c, i));
	return k;
}

/* ---- Capacity that follows the load (§7) ---- */

/* The cap the slots should have now. */
static uint32_t pcpu_cap_target(const struct uslab_cache *c)
{
	uint32_t cap = (2 * __atomic_load_n(&c->c_mag_size, __ATOMIC_RELAXED))
	               << __atomic_load_n(&c->c_pcpu_grow, __ATOMIC_RELAXED);
	return cap < c->c_pcpu_rounds ? cap : c->c_pcpu_rounds;
}

/* What growth @g costs the budget: the rounds past 2M's start, in bytes
 * (a function of @g alone, so growing and shrinking charge alike). */
static uint64_t pcpu_grow_charge(const struct uslab_cache *c, uint32_t g)
{
	uint64_t base = 2 * (uint64_t)c->c_mag_min, cap = base << g;

	if (cap > c->c_pcpu_rounds)
		cap = c->c_pcpu_rounds > base ? c->c_pcpu_rounds : base;
	return (cap - base) * c->c_slot;
}

/* One doubling more, if the cap can still grow and the budget has room. */
static void pcpu_grow(struct uslab_cache *c)
{
	uint32_t g = __atomic_load_n(&c->c_pcpu_grow, __ATOMIC_RELAXED);

	if (g >= 16 || (2 * (uint64_t)c->c_mag_min << g) >= c->c_pcpu_rounds ||
	    pcpu_cap_target(c) >= c->c_pcpu_rounds)
		return; /* as large as a slot gets */
	uint64_t more = pcpu_grow_charge(c, g + 1) - pcpu_grow_charge(c, g);
	if (__atomic_add_fetch(&pcpu_grow_bytes, more, __ATOMIC_RELAXED) > PCPU_GROW_BUDGET ||
	    !__atomic_compare_exchange_n(&c->c_pcpu_grow, &g, g + 1, false, __ATOMIC_RELAXED,
	                                 __ATOMIC_RELAXED)) {
		__atomic_sub_fetch(&pcpu_grow_bytes, more, __ATOMIC_RELAXED);
		return;
	}
	__atomic_add_fetch(&c->c_pcpu_charged, more, __ATOMIC_RELAXED);
	PROBE3(mag_resize, c, c->c_mag_size, (c->c_mag_size << (g + 1)));
}

/* Halve the growth (@all: give it all back), returning its budget. */
static void pcpu_grow_less(struct uslab_cache *c, bool all)
{
	uint32_t g = __atomic_load_n(&c->c_pcpu_grow, __ATOMIC_RELAXED), to;

	do {
		if (g == 0)
			return;
		to = all ? 0 : g - 1;
	} while (!__atomic_compare_exchange_n(&c->c_pcpu_grow, &g, to, false, __ATOMIC_RELAXED,
	                                      __ATOMIC_RELAXED));
	uint64_t less = pcpu_grow_charge(c, g) - pcpu_grow_charge(c, to);
	__atomic_sub_fetch(&c->c_pcpu_charged, less, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&pcpu_grow_bytes, less, __ATOMIC_RELAXED);
}

static void pcpu_grow_reset(struct uslab_cache *c)
{
	pcpu_grow_less(c, true);
}

/* A miss on slot @i (@frees: a free that found it full): a flip grows the
 * cache when it came within 8 caps' worth of hits of the last one. The
 * slot's p_miss and p_flip are hints, written by whoever misses there. */
static void pcpu_note_miss(struct uslab_cache *c, uint32_t i, bool frees)
{
	struct pcpu_slot *s = pcpu_slot(c, i);
	uint64_t kind = frees ? 2 : 1;
	uint64_t last = __atomic_load_n(&s->p_miss, __ATOMIC_RELAXED);
	uint32_t cap = __atomic_load_n(&s->p_cap, __ATOMIC_RELAXED);
	uint32_t count = pcpu_word_count(__atomic_load_n(&s->p_word, __ATOMIC_RELAXED));

	/* Only a miss of capacity: not a stopped slot, not a thread without
	 * an rseq registration (it misses every time, in a guard slot). */
	if (last == kind || pcpu_off(c) || cap == 0 || (frees ? count < cap : count != 0) ||
	    (pcpu_rseq && pcpu_rseq_cpu_id() < 0))
		return;
	__atomic_store_n(&s->p_miss, kind, __ATOMIC_RELAXED);
	uint64_t hits = pcpu_word_hits(__atomic_load_n(&s->p_word, __ATOMIC_RELAXED)) +
	                __atomic_load_n(&pcpu_ctr(c, i)->pc_ops, __ATOMIC_RELAXED);
	uint64_t since = hits - __atomic_exchange_n(&s->p_flip, hits, __ATOMIC_RELAXED);
	if (last == 0)
		return; /* its first miss */
	__atomic_fetch_add(&c->c_pcpu_flips, 1, __ATOMIC_RELAXED);
	if (since <= 8 * (uint64_t)cap)
		pcpu_grow(c);
}

/* A depot interval ended: without a flip in it, the growth halves. */
static void pcpu_grow_tick(struct uslab_cache *c)
{
	if (__atomic_exchange_n(&c->c_pcpu_flips, 0, __ATOMIC_RELAXED) == 0)
		pcpu_grow_less(c, false);
}

/* Racy peeks, confirmed under c_drain_lock by pcpu_resize: the cap
 * should change, or slot @i lacks an array of the cap. */
static void pcpu_resize(struct uslab_cache *c);

static void pcpu_resize_if_due(struct uslab_cache *c, uint32_t i)
{
	uint32_t cap = __atomic_load_n(&c->c_pcpu_cap, __ATOMIC_RELAXED);

	if (pcpu_cap_target(c) != cap ||
	    __atomic_load_n(&pcpu_slot(c, i)->p_cap, __ATOMIC_RELAXED) != cap)
		pcpu_resize(c);
}

/* ---- Remote operations ---- */

bool pcpu_slot_stop(struct pcpu_slot *s, uint32_t i, uint32_t *cap)
{
	if (!pcpu_rseq) {
		pcpu_slot_lock(s);
		*cap = s->p_cap;
		return true;
	}
	*cap = s->p_cap;
	__atomic_store_n(&s->p_cap, 0, __ATOMIC_RELAXED);
	/* Every section running on CPU i now commits or aborts before the
	 * fence returns; later ones see cap 0. */
	if (pcpu_fence_cpu(i))
		return true;
	__atomic_store_n(&s->p_cap, *cap, __ATOMIC_RELEASE);
	return false;
}

void pcpu_slot_restart(struct pcpu_slot *s, uint32_t cap)
{
	if (!pcpu_rseq) {
		/* Slow paths peek at p_cap unlocked (pcpu_alloc_slow). */
		__atomic_store_n(&s->p_cap, cap, __ATOMIC_RELAXED);
		pcpu_slot_unlock(s);
		return;
	}
	__atomic_store_n(&s->p_cap, cap, __ATOMIC_RELEASE);
}

/* Own slot @i of @c (pcpu_slot_stop). c_drain_lock held. */
static bool pcpu_stop(struct uslab_cache *c, uint32_t i, uint32_t *cap)
{
	ASSERT_HELD(&c->c_drain_lock);
	return pcpu_slot_stop(pcpu_slot(c, i), i, cap);
}

/* Give slot @i back with capacity @cap, after its count was set. */
static void pcpu_restart(struct uslab_cache *c, uint32_t i, uint32_t cap)
{
	pcpu_slot_restart(pcpu_slot(c, i), cap);
}

/* @n rounds left stopped slot @i other than by its owner's operations
 * (a drain, a shrink). We own the slot; its owner writes other counters
 * only. */
static void pcpu_count_drained(struct uslab_cache *c, uint32_t i, uint32_t n)
{
	struct pcpu_counters *ctr = pcpu_ctr(c, i);

	__atomic_store_n(&ctr->pc_drained, __atomic_load_n(&ctr->pc_drained, __ATOMIC_RELAXED) + n,
	                 __ATOMIC_RELAXED);
}

/* Stopped slot @s takes array @m (NULL: keeps its own) with its first
 * @keep rounds; returns the array it gave up, or NULL. */
static struct mag *pcpu_swap_array(struct pcpu_slot *s, struct mag *m, uint32_t keep)
{
	if (m == NULL)
		return NULL;
	if (keep != 0) /* a slot that started without an array has none */
		memcpy(m->m_rounds, s->p_rounds, keep * sizeof(void *));
	struct mag *gone = s->p_mag;
	s->p_mag = m;
	s->p_rounds = m->m_rounds;
	return gone;
}

/* Drain slot @i: its rounds go to the slabs, the top 2 * PCPU_BUF at a
 * time (a grown slot holds more than a stack buffer), each under its own
 * stop; at most as many as it held at the first, so an owner freeing into
 * it meanwhile cannot keep the drain going. */
static size_t pcpu_drain_slot(struct uslab_cache *c, uint32_t i, bool quiescent)
{
	struct pcpu_slot *s = pcpu_slot(c, i);
	void *buf[2 * PCPU_BUF];
	size_t bytes = 0;
	uint32_t left = PCPU_MAX_ROUNDS; /* set at the first stop */

	for (;;) {
		uint32_t cap = 0;
		/* Skip empty slots without a fence or a lock; the peek is racy
		 * (the owner may be filling it), which a drain of running CPUs
		 * accepts. Slot counts are relaxed atomics on both sides. */
		if (pcpu_word_count(__atomic_load_n(&s->p_word, __ATOMIC_RELAXED)) == 0)
			return bytes;
		if (!quiescent) {
			lock_take(&c->c_drain_lock);
			if (!pcpu_stop(c, i, &cap)) {
				lock_drop(&c->c_drain_lock);
				return bytes; /* no fence: this CPU keeps its objects */
			}
		}
		uint32_t n = pcpu_word_count(s->p_word);
		ASSERT(n <= c->c_pcpu_rounds);
		if (left == PCPU_MAX_ROUNDS)
			left = n;
		uint32_t k = n < 2 * PCPU_BUF ? n : 2 * PCPU_BUF;
		k = k < left ? k : left;
		left -= k;
		memcpy(buf, s->p_rounds + (n - k), k * sizeof(void *));
		pcpu_set_owned(c, i, n - k);
		pcpu_clear_stale(s, n - k);
		pcpu_count_drained(c, i, k);
		if (!quiescent) {
			pcpu_restart(c, i, cap);
			lock_drop(&c->c_drain_lock);
		}
		/* With no lock held: releasing slabs runs dtors, which may free
		 * into any cache, and calls the page source. */
		bytes += slab_free_bulk(c, buf, k);
		if (k == n || left == 0)
			return bytes;
	}
}

size_t pcpu_drain(struct uslab_cache *c, bool quiescent)
{
	size_t bytes = 0;

	if (pcpu_off(c))
		return 0;
	for (uint32_t i = 0; i < pcpu_nslots; i++)
		bytes += pcpu_drain_slot(c, i, quiescent);
	return bytes;
}

void pcpu_sweep(struct uslab_cache *c)
{
	if (pcpu_off(c))
		return;
	__atomic_store_n(&c->c_sweep_wanted, 0, __ATOMIC_RELAXED);
	lock_take(&c->c_drain_lock);
	uint64_t n = c->c_sweep_started + 1;
	__atomic_store_n(&c->c_sweep_started, n, __ATOMIC_RELEASE);
	bool all = true;
	for (uint32_t i = 0; i < pcpu_nslots; i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		uint32_t cap;
		if (__atomic_load_n(&s->p_live, __ATOMIC_RELAXED) == 0)
			continue; /* its array is zeroed when it gets one */
		if (!pcpu_stop(c, i, &cap)) {
			all = false; /* no fence: this sweep does not count */
			continue;
		}
		pcpu_clear_stale(s, pcpu_word_count(s->p_word));
		pcpu_restart(c, i, cap);
	}
	if (all)
		__atomic_store_n(&c->c_sweep_done, n, __ATOMIC_RELEASE);
	lock_drop(&c->c_drain_lock);
}

void pcpu_route(struct uslab_cache *c, void *(*alloc_miss)(struct uslab_cache *),
                void (*free_miss)(struct uslab_cache *, void *))
{
	bool fast = alloc_miss == pcpu_alloc_slow && pcpu_rseq && !pcpu_off(c);

	lock_take(&c->c_drain_lock);
	__atomic_store_n(&c->c_alloc_miss, alloc_miss, __ATOMIC_RELEASE);
	__atomic_store_n(&c->c_free_miss, free_miss, __ATOMIC_RELEASE);
	__atomic_store_n(&c->c_fast, fast ? c->c_pcpu : pcpu_zero, __ATOMIC_RELEASE);
	/* Own and give back every started slot: each section that loaded
	 * the old base has committed or aborted once its CPU is fenced. */
	for (uint32_t i = 0; i < pcpu_nslots && pcpu_rseq; i++) {
		uint32_t cap;
		if (__atomic_load_n(&pcpu_slot(c, i)->p_live, __ATOMIC_RELAXED) != 0 &&
		    pcpu_stop(c, i, &cap))
			pcpu_restart(c, i, cap);
	}
	lock_drop(&c->c_drain_lock);
}

void *pcpu_alloc_magazine(struct uslab_cache *c)
{
#if USLAB_HAVE_ASM
	if (pcpu_rseq && !pcpu_off(c) && pgsrc_busy == 0) {
		void *obj = uslab_rseq_pop(c->c_pcpu, PCPU_SHIFT);
		if (obj != NULL)
			return obj;
	}
#endif
	return pcpu_alloc_slow(c);
}

void pcpu_free_magazine(struct uslab_cache *c, void *obj)
{
#if USLAB_HAVE_ASM
	if (pcpu_rseq && !pcpu_off(c) && pgsrc_busy == 0) {
		int r = uslab_rseq_push(c->c_pcpu, PCPU_SHIFT, obj);
		if (r < 0)
			slab_free_dup(c, obj);
		if (r > 0)
			return;
	}
#endif
	pcpu_free_slow(c, obj);
}

bool pcpu_holds(struct uslab_cache *c, const void *obj)
{
	bool found = false;

	if (pcpu_off(c))
		return false;
	lock_take(&c->c_drain_lock);
	for (uint32_t i = 0; i < pcpu_nslots && !found; i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		uint32_t cap;
		if (__atomic_load_n(&s->p_live, __ATOMIC_RELAXED) == 0 || !pcpu_stop(c, i, &cap))
			continue;
		for (uint32_t k = 0; k < pcpu_word_count(s->p_word) && !found; k++)
			found = s->p_rounds[k] == obj;
		pcpu_restart(c, i, cap);
	}
	lock_drop(&c->c_drain_lock);
	return found;
}

bool pcpu_stop_objects(struct uslab_cache *c, void (*fn)(void *obj, void *arg), void *arg)
{
	bool all = true;

	lock_take(&c->c_drain_lock);
	if (pcpu_off(c))
		return true;
	for (uint32_t i = 0; i < pcpu_nslots; i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		uint32_t cap;
		if (__atomic_load_n(&s->p_live, __ATOMIC_RELAXED) == 0)
			continue;
		if (!pcpu_stop(c, i, &cap)) {
			all = false;
			continue;
		}
		s->p_owned = (uint64_t)cap | ((uint64_t)1 << 32);
		for (uint32_t k = 0; k < pcpu_word_count(s->p_word); k++)
			fn(s->p_rounds[k], arg);
	}
	return all;
}

void pcpu_restart_all(struct uslab_cache *c)
{
	for (uint32_t i = 0; i < pcpu_nslots && !pcpu_off(c); i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		if ((s->p_owned >> 32) != 0) {
			uint32_t cap = (uint32_t)s->p_owned;
			s->p_owned = 0;
			pcpu_restart(c, i, cap);
		}
	}
	lock_drop(&c->c_drain_lock);
}

void pcpu_cache_stop(struct uslab_cache *c)
{
	/* Quiescent (destroy): nothing is in a section of this cache. */
	__atomic_store_n(&c->c_dying, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&c->c_fast, pcpu_zero, __ATOMIC_RELEASE);
}

/* Bring every slot's capacity to 2 * c_mag_size after the depot grew it:
 * each started slot gets an array of the new size, swapped in while it is
 * stopped (p_rounds changes only then, arch/fastpath.h). A slot whose new
 * array cannot be had keeps its old one, and its cap; it is tried again at
 * the next miss. With no fence at all, nothing grows. */
static void pcpu_shrink(struct uslab_cache *c);

static void pcpu_resize(struct uslab_cache *c)
{
	if (pcpu_rseq && !pcpu_fence_possible())
		return;
	lock_take(&c->c_drain_lock);
	uint32_t cap = pcpu_cap_target(c);
	uint32_t old = c->c_pcpu_cap;
	if (cap < old) {
		lock_drop(&c->c_drain_lock);
		pcpu_shrink(c);
		return;
	}
	if (cap > old) {
		PROBE3(mag_resize, c, old / 2, cap / 2);
		/* Slots started from now on take the new cap; started ones are
		 * stopped and restarted with it. */
		__atomic_store_n(&c->c_pcpu_cap, cap, __ATOMIC_RELAXED);
	}
	bool larger = false;
	for (uint32_t i = 0; i < pcpu_nslots; i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		if (__atomic_load_n(&s->p_live, __ATOMIC_RELAXED) == 0 ||
		    (s->p_mag != NULL && s->p_mag->m_cap >= c->c_pcpu_cap &&
		     __atomic_load_n(&s->p_cap, __ATOMIC_RELAXED) == c->c_pcpu_cap))
			continue;
		/* A slot above the cap (a shrink under way, or one that found
		 * no fence) may hold more rounds than the cap: pcpu_shrink's,
		 * which gives the extra rounds back first. */
		if (__atomic_load_n(&s->p_cap, __ATOMIC_RELAXED) > c->c_pcpu_cap) {
			larger = true;
			continue;
		}
		/* A leaf allocation (the magazine cache's slab layer, on the
		 * library's own page source) under c_drain_lock. */
		struct mag *m = s->p_mag != NULL && s->p_mag->m_cap >= c->c_pcpu_cap
		                        ? NULL
		                        : depot_mag_get(c->c_pcpu_cap);
		uint32_t had;
		if (!pcpu_stop(c, i, &had)) {
			depot_mag_put(m);
			break; /* no fence now: no more */
		}
		uint32_t count = pcpu_word_count(s->p_word);
		struct mag *gone = pcpu_swap_array(s, m, count);
		if (m != NULL)
			pcpu_clear_stale(s, count);
		pcpu_set_owned(c, i, count);
		pcpu_restart(c, i,
		             s->p_mag != NULL && s->p_mag->m_cap >= c->c_pcpu_cap ? c->c_pcpu_cap
		                                                                  : had);
		depot_mag_put(gone);
	}
	lock_drop(&c->c_drain_lock);
	if (larger)
		pcpu_shrink(c);
}

/* The depot's magazines shrank (a quiet interval, depot.c): every started
 * slot gets the new cap and, when its array is twice too large, a smaller
 * one; the rounds above the cap go back to the slabs, counted as drained,
 * once the slot runs again (as pcpu_drain gives them back). One slot at a
 * time under c_drain_lock. A slot that cannot be fenced keeps its cap
 * until the next miss tries again. */
static void pcpu_shrink(struct uslab_cache *c)
{
	void *buf[2 * PCPU_BUF];

	lock_take(&c->c_drain_lock);
	uint32_t cap = pcpu_cap_target(c);
	if (cap < c->c_pcpu_cap) {
		PROBE3(mag_resize, c, c->c_pcpu_cap / 2, cap / 2);
		__atomic_store_n(&c->c_pcpu_cap, cap, __ATOMIC_RELAXED);
	}
	cap = c->c_pcpu_cap;
	lock_drop(&c->c_drain_lock);
	for (uint32_t i = 0; i < pcpu_nslots; i++) {
		struct pcpu_slot *s = pcpu_slot(c, i);
		lock_take(&c->c_drain_lock);
		if (__atomic_load_n(&s->p_live, __ATOMIC_RELAXED) == 0 ||
		    __atomic_load_n(&s->p_cap, __ATOMIC_RELAXED) <= c->c_pcpu_cap) {
			lock_drop(&c->c_drain_lock);
			continue;
		}
		cap = c->c_pcpu_cap;
		struct mag *m =
			s->p_mag != NULL && s->p_mag->m_cap >= 2 * cap ? depot_mag_get(cap) : NULL;
		uint32_t had;
		if (!pcpu_stop(c, i, &had)) {
			lock_drop(&c->c_drain_lock);
			depot_mag_put(m);
			break; /* no fence now: no more */
		}
		uint32_t count = pcpu_word_count(s->p_word);
		uint32_t keep = count < cap ? count : cap, extra = count - keep;
		if (extra > 2 * PCPU_BUF) {
			/* A grown slot holds more than the buffer: its top rounds
			 * go first, and the slot is done again (i--), restarted
			 * full (cap = what it keeps), so its owner cannot refill
			 * it meanwhile and each pass leaves it smaller. */
			keep = count - 2 * PCPU_BUF;
			memcpy(buf, s->p_rounds + keep, 2 * PCPU_BUF * sizeof(void *));
			pcpu_set_owned(c, i, keep);
			pcpu_clear_stale(s, keep);
			pcpu_count_drained(c, i, 2 * PCPU_BUF);
			pcpu_restart(c, i, keep);
			lock_drop(&c->c_drain_lock);
			depot_mag_put(m);
			slab_free_bulk(c, buf, 2 * PCPU_BUF);
			i--;
			continue;
		}
		memcpy(buf, s->p_rounds + keep, extra * sizeof(void *));
		struct mag *gone = pcpu_swap_array(s, m, keep);
		pcpu_clear_stale(s, keep);
		pcpu_set_owned(c, i, keep);
		pcpu_count_drained(c, i, extra);
		pcpu_restart(c, i, cap);
		lock_drop(&c->c_drain_lock);
		depot_mag_put(gone);
		slab_free_bulk(c, buf, extra); /* no lock held: dtors may run */
	}
}

uint64_t pcpu_objects(struct uslab_cache *c)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < pcpu_nslots && !pcpu_off(c); i++)
		n += pcpu_word_count(__atomic_load_n(&pcpu_slot(c, i)->p_word, __ATOMIC_RELAXED));
	return n;
}

size_t pcpu_slot_objects(struct uslab_cache *c, uint64_t *counts, size_t n)
{
	for (uint32_t i = 0; i < pcpu_nslots && i < n; i++)
		counts[i] = pcpu_off(c) ? 0
		                        : pcpu_word_count(__atomic_load_n(&pcpu_slot(c, i)->p_word,
		                                                          __ATOMIC_RELAXED));
	return pcpu_nslots;
}

void pcpu_slot_read(struct uslab_cache *c, uint32_t i, uint64_t *word, struct pcpu_counters *k)
{
	const struct pcpu_counters *ctr = pcpu_ctr(c, i);
	const uint64_t *wp = &pcpu_slot(c, i)->p_word;
	uint64_t w0, w;

	/* The private word (exact, where other processes see its copy), read
	 * around pc_ops: a fold moves hits from one to the other, and the hits
	 * going down says one ran in between. */
	for (int tries = 0;; tries++) {
		w0 = __atomic_load_n(wp, __ATOMIC_ACQUIRE);
		k->pc_ops = __atomic_load_n(&ctr->pc_ops, __ATOMIC_ACQUIRE);
		w = __atomic_load_n(wp, __ATOMIC_ACQUIRE);
		if (pcpu_word_hits(w) >= pcpu_word_hits(w0) || tries == 3)
			break;
	}
	*word = w;
	k->pc_word = __atomic_load_n(&ctr->pc_word, __ATOMIC_RELAXED);
	k->pc_pushed = __atomic_load_n(&ctr->pc_pushed, __ATOMIC_RELAXED);
	k->pc_popped = __atomic_load_n(&ctr->pc_popped, __ATOMIC_RELAXED);
	k->pc_drained = __atomic_load_n(&ctr->pc_drained, __ATOMIC_RELAXED);
	k->pc_slow_allocs = __atomic_load_n(&ctr->pc_slow_allocs, __ATOMIC_RELAXED);
	k->pc_slow_frees = __atomic_load_n(&ctr->pc_slow_frees, __ATOMIC_RELAXED);
	k->pc_pad = 0;
}

/* ---- Slow paths ---- */

/* Store @n objects in the depot as full magazines; fold the slots that
 * are due if the depot says an interval ended. */
static void pcpu_to_depot(struct uslab_cache *c, void *const *objs, size_t n)
{
	bool ended = false, any = false;

	for (size_t k = 0; k < n;) {
		size_t m = n - k < c->c_mag_max ? n - k : c->c_mag_max;
		depot_put_full(c, objs + k, m, &ended);
		any |= ended;
		k += m;
	}
	if (any)
		pcpu_fold_due(c);
}

/* Up to c_mag_size objects from the depot (or the slabs below it) into
 * @buf; folds as pcpu_to_depot() does. 0 with errno when out of memory. */
static size_t pcpu_from_depot(struct uslab_cache *c, void **buf)
{
	bool ended = false;
	size_t n = depot_get_full(c, buf, &ended);

	if (ended)
		pcpu_fold_due(c);
	return n;
}

/* Hand @n objects to this CPU's slot; what does not fit goes to the depot. */
static void pcpu_stash(struct uslab_cache *c, void *const *objs, size_t n)
{
	size_t k = pcpu_give(c, objs, n);

	pcpu_to_depot(c, objs + k, n - k);
}

/* Locked mode: one round from this CPU's slot, counted as a slot hit. */
static void *pcpu_locked_pop(struct uslab_cache *c)
{
	uint32_t i = pcpu_lock_mine(c);
	void *obj = pcpu_generic_pop(pcpu_slot(c, i));
	pcpu_slot_unlock(pcpu_slot(c, i));
	return obj;
}

/* Locked mode: @obj onto this CPU's slot, as the rseq hit does: the memo
 * (arch/fastpath.h), else the object check, then the push with the
 * double-free check. false when the slot is full or stopped (@obj was not
 * checked then). */
static bool pcpu_locked_push(struct uslab_cache *c, void *obj)
{
	uint32_t i = pcpu_lock_mine(c);
	struct pcpu_slot *s = pcpu_slot(c, i);
	int ok = pcpu_generic_push_memo(s, obj);
	if (ok == 2) {
		if (!slab_is_object(c, obj)) {
			pcpu_slot_unlock(s);
			slab_check_free(c, obj); /* reports */
		}
		ok = pcpu_generic_push(s, obj);
	}
	pcpu_slot_unlock(s);
	if (ok < 0)
		slab_free_dup(c, obj);
	return ok != 0;
}

/*
 * Re-entry (DESIGN.md §8). A signal handler that runs on a thread while
 * that thread is inside uslab holding a lock (pgsrc_busy != 0) must not
 * wait for any uslab lock: the lock may be the one the interrupted code
 * holds. In the locked mode it may still take this CPU's slot if the slot
 * lock is free (a try, never a wait); otherwise an allocation fails with
 * EDEADLK, as the kernel's kmalloc_nolock does where it cannot spin, and a
 * free is deferred: kept in a small per-thread list (or, when that is
 * full, linked through the free object itself, for caches without a ctor),
 * and freed for real by the interrupted call before it returns
 * (pcpu_deferred_flush). The rseq fast path needs none of this: a hit
 * takes no lock.
 */
#define PCPU_DEFER 16

struct pcpu_deferred {
	struct uslab_cache *d_cache;
	void *d_obj;
	bool d_rcu; /* a free_rcu (rcu.c): through pcpu_rcu_hook */
};

/* Where a deferred free_rcu goes once the handlers returned (set by
 * rcu.c, the layer beside this one; this layer does not know it). */
static void (*pcpu_rcu_hook)(struct uslab_cache *c, void *obj);

void pcpu_set_rcu_hook(void (*hook)(struct uslab_cache *c, void *obj))
{
	__atomic_store_n(&pcpu_rcu_hook, hook, __ATOMIC_RELEASE);
}

static __thread struct pcpu_deferred pcpu_defer[PCPU_DEFER]
	__attribute__((tls_model("initial-exec")));
static __thread unsigned pcpu_ndefer __attribute__((tls_model("initial-exec")));
static __thread void *pcpu_defer_chain __attribute__((tls_model("initial-exec")));
/* A thread's reserve of PCPU_DEFER_MORE more entries, made by
 * pcpu_defer_reserve() (a free_rcu cannot link through its object), freed
 * when the thread exits. */
#define PCPU_DEFER_MORE 256
static __thread struct pcpu_deferred *pcpu_defer_more __attribute__((tls_model("initial-exec")));

/* Locked mode, in a handler: slot @i of this CPU if its lock is free. */
static bool pcpu_slot_try(struct pcpu_slot *s)
{
	return spin_try(&s->p_lock);
}

static void *pcpu_alloc_nolock(struct uslab_cache *c)
{
	if (!pcpu_rseq && !pcpu_off(c)) {
		int cpu = os_cpu();
		struct pcpu_slot *s =
			pcpu_slot(c, cpu >= 0 && (uint32_t)cpu < pcpu_nslots ? (uint32_t)cpu : 0);
		if (__atomic_load_n(&s->p_live, __ATOMIC_ACQUIRE) != 0 && pcpu_slot_try(s)) {
			void *obj = pcpu_generic_pop(s);
			pcpu_slot_unlock(s);
			if (obj != NULL)
				return obj;
		}
	}
	PROBE2(alloc_fail, c, EDEADLK);
	errno = EDEADLK;
	return NULL;
}

/* Entry @i of the thread's list: the static ones, then its reserve. */
static struct pcpu_deferred *pcpu_defer_at(unsigned i)
{
	return i < PCPU_DEFER ? &pcpu_defer[i] : &pcpu_defer_more[i - PCPU_DEFER];
}

static pthread_key_t pcpu_defer_key;
static pthread_once_t pcpu_defer_once = PTHREAD_ONCE_INIT;

static void pcpu_defer_gone(void *d)
{
	pcpu_deferred_flush(); /* nothing deferred is lost with the thread */
	pcpu_defer_more = NULL;
	meta_free(d, PCPU_DEFER_MORE * sizeof(struct pcpu_deferred));
}

static void pcpu_defer_key_make(void)
{
	if (pthread_key_create(&pcpu_defer_key, pcpu_defer_gone) != 0)
		pcpu_defer_key = (pthread_key_t)-1;
}

void pcpu_defer_reserve(void)
{
	if (__builtin_expect(pcpu_defer_more != NULL, 1) || pgsrc_busy != 0)
		return;
	pthread_once(&pcpu_defer_once, pcpu_defer_key_make);
	if (pcpu_defer_key == (pthread_key_t)-1)
		return; /* no key, no reserve: the 16 entries only */
	struct pcpu_deferred *d = meta_alloc(PCPU_DEFER_MORE * sizeof *d);
	if (d == NULL || pthread_setspecific(pcpu_defer_key, d) != 0) {
		meta_free(d, PCPU_DEFER_MORE * sizeof *d);
		return;
	}
	__atomic_signal_fence(__ATOMIC_SEQ_CST); /* filled before a handler sees it */
	pcpu_defer_more = d;
}

bool pcpu_defer_free(struct uslab_cache *c, void *obj, bool rcu)
{
	/* Handlers nest (another signal, SA_NODEFER): claim an entry with
	 * one read-modify-write, which no signal can split, before filling
	 * it; the list is only read once every handler has returned. */
	unsigned cap = PCPU_DEFER + (pcpu_defer_more != NULL ? PCPU_DEFER_MORE : 0);
	unsigned n = __atomic_fetch_add(&pcpu_ndefer, 1, __ATOMIC_RELAXED);
	if (n < cap) {
		struct pcpu_deferred *d = pcpu_defer_at(n);
		d->d_cache = c;
		d->d_obj = obj;
		d->d_rcu = rcu;
		return true;
	}
	__atomic_fetch_sub(&pcpu_ndefer, 1, __ATOMIC_RELAXED);
	return false;
}

static void pcpu_free_nolock(struct uslab_cache *c, void *obj)
{
	if (!pcpu_rseq && !pcpu_off(c)) {
		int cpu = os_cpu();
		struct pcpu_slot *s =
			pcpu_slot(c, cpu >= 0 && (uint32_t)cpu < pcpu_nslots ? (uint32_t)cpu : 0);
		if (__atomic_load_n(&s->p_live, __ATOMIC_ACQUIRE) != 0 && pcpu_slot_try(s)) {
			int ok = pcpu_generic_push(s, obj);
			pcpu_slot_unlock(s);
			if (ok < 0)
				slab_free_dup(c, obj);
			if (ok)
				return;
		}
	}
	if (pcpu_defer_free(c, obj, false))
		return;
	/* The list is full. A free object's bytes are the allocator's when
	 * the cache has no ctor (DESIGN.md §2): link it through them. */
	if (c->c_ctor == NULL && c->c_slot >= 2 * sizeof(void *)) {
		void **o = obj;
		SAN_OPEN(o, 2 * sizeof(void *)); /* a debug cache closed it (sanitize.h) */
		o[1] = c;
		o[0] = __atomic_load_n(&pcpu_defer_chain, __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(&pcpu_defer_chain, &o[0], obj, false,
		                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
		return;
	}
	uslab_report(c, obj, USLAB_E_DEFER);
}

void pcpu_deferred_flush(void)
{
	if (__builtin_expect(pcpu_ndefer == 0 && pcpu_defer_chain == NULL, 1) || pgsrc_busy != 0)
		return;
	/* Take entries from the end with signals blocked, a handful at a
	 * time: a handler appends meanwhile, and a free here may defer no
	 * more (nothing is held), but the hook's free_rcu flushes too. */
	unsigned cap = PCPU_DEFER + (pcpu_defer_more != NULL ? PCPU_DEFER_MORE : 0);
	os_sigset old;
	for (;;) {
		struct pcpu_deferred local[PCPU_DEFER];
		os_sig_block_all(&old);
		unsigned n = pcpu_ndefer < cap ? pcpu_ndefer : cap;
		unsigned k = n < PCPU_DEFER ? n : PCPU_DEFER;
		for (unsigned i = 0; i < k; i++)
			local[i] = *pcpu_defer_at(n - k + i);
		pcpu_ndefer = n - k;
		void *chain = pcpu_defer_chain;
		pcpu_defer_chain = NULL;
		os_sig_restore(&old);
		if (k == 0 && chain == NULL)
			return;
		for (unsigned i = 0; i < k; i++)
			if (local[i].d_rcu)
				__atomic_load_n(&pcpu_rcu_hook, __ATOMIC_ACQUIRE)(local[i].d_cache,
				                                                  local[i].d_obj);
			else
				pcpu_free_slow(local[i].d_cache, local[i].d_obj);
		while (chain != NULL) {
			void **o = chain;
			chain = o[0];
			pcpu_free_slow(o[1], o);
		}
	}
}

/* A cache used from its own ctor or dtor, or while it is destroyed: a
 * report, not a recursion without end or a use of freed memory. */
static void pcpu_check_use(struct uslab_cache *c, const void *obj)
{
	if (__builtin_expect(
		    __atomic_load_n(&c->c_dying, __ATOMIC_RELAXED) != 0 || slab_in_callback(c), 0))
		uslab_report(c, obj, USLAB_E_REENTRY);
}

void *pcpu_alloc_slow(struct uslab_cache *c)
{
	void *buf[PCPU_BUF];
	void *obj;

	pcpu_check_use(c, NULL);
	if (__builtin_expect(pgsrc_busy != 0, 0))
		return pcpu_alloc_nolock(c);
	if (!pcpu_rseq && !pcpu_off(c) && (obj = pcpu_locked_pop(c)) != NULL)
		return obj;
	uint32_t i = pcpu_here(c);
	if (pcpu_off(c)) {
		obj = slab_alloc_bulk(c, &obj, 1) == 1 ? obj : NULL;
		if (obj != NULL)
			pcpu_count(c, i, false, 1);
		pcpu_deferred_flush();
		return obj;
	}
	pcpu_note_miss(c, i, false);
	pcpu_resize_if_due(c, i);
	size_t n = pcpu_from_depot(c, buf);
	if (n == 0) {
		int err = errno;
		pcpu_deferred_flush();
		errno = err;
		return NULL;
	}
	obj = buf[--n];
	pcpu_stash(c, buf, n);
	pcpu_count(c, i, false, 1);
	pcpu_deferred_flush();
	return obj;
}

static void pcpu_free_slow_body(struct uslab_cache *c, void *obj);

/* A free never changes errno (POSIX 2024, and the preloaded free()): the
 * slow path's syscalls (futex, membarrier, munmap) may. */
void pcpu_free_slow(struct uslab_cache *c, void *obj)
{
	int err = errno;

	pcpu_free_slow_body(c, obj);
	errno = err;
}

static void pcpu_free_slow_body(struct uslab_cache *c, void *obj)
{
	void *buf[PCPU_BUF];

	pcpu_check_use(c, obj);
	if (!pcpu_rseq && !pcpu_off(c) && pgsrc_busy == 0 && pcpu_locked_push(c, obj))
		return;
	/* Not checked yet: a miss of the rseq hit (full or stopped), a full
	 * slot in the locked mode, a USLAB_NOMAGAZINE cache, a handler. */
	slab_check_free(c, obj);
	if (__builtin_expect(pgsrc_busy != 0, 0)) {
		pcpu_free_nolock(c, obj);
		return;
	}
	uint32_t i = pcpu_here(c);
	pcpu_count(c, i, true, 1);
	if (pcpu_off(c)) {
		slab_free_bulk(c, &obj, 1);
	} else {
		pcpu_note_miss(c, i, true);
		size_t n = pcpu_take(c, buf, __atomic_load_n(&c->c_mag_size, __ATOMIC_RELAXED));
		/* A full magazine misses before the hit path compares the
		 * round on top: compare the rounds taken (the top ones). */
		for (size_t j = 0; j < n; j++)
			if (buf[j] == obj)
				slab_free_dup(c, obj);
		pcpu_to_depot(c, buf, n);
		/* Only now: a shrink gives rounds above the new cap back to the
		 * slabs, and one of them could be @obj, freed twice. */
		pcpu_resize_if_due(c, i);
		/* The slot is stopped by a remote operation, or this thread has
		 * no rseq registration: straight to the slab layer, not a depot
		 * magazine of one. */
		if (pcpu_give(c, &obj, 1) != 1)
			slab_free_bulk(c, &obj, 1);
	}
	pcpu_deferred_flush();
}

size_t pcpu_alloc_bulk(struct uslab_cache *c, void **objs, size_t n)
{
	void *buf[PCPU_BUF];
	size_t got = 0;

	pcpu_check_use(c, NULL);
	if (__builtin_expect(pgsrc_busy != 0, 0)) {
		while (got < n && (objs[got] = pcpu_alloc_nolock(c)) != NULL)
			got++;
		return got;
	}
	uint32_t i = pcpu_here(c);
	if (pcpu_off(c)) {
		got = slab_alloc_bulk(c, objs, n);
		pcpu_count(c, i, false, got);
		return got;
	}
	/* Take from the slot through a private buffer: an aborted section may
	 * have written rounds it did not take into its output, and those
	 * must never reach the caller's array. */
	while (got < n) {
		size_t want = n - got < PCPU_BUF ? n - got : PCPU_BUF;
		size_t k = pcpu_take(c, buf, want);
		memcpy(objs + got, buf, k * sizeof(void *));
		got += k;
		if (k < want)
			break;
	}
	while (got < n) {
		size_t k = pcpu_from_depot(c, buf);
		if (k == 0)
			break;
		size_t use = k < n - got ? k : n - got;
		memcpy(objs + got, buf + (k - use), use * sizeof(void *));
		got += use;
		pcpu_stash(c, buf, k - use);
	}
	pcpu_count(c, i, false, got);
	int err = errno;
	pcpu_deferred_flush();
	errno = err;
	return got;
}

void pcpu_free_bulk(struct uslab_cache *c, void *const *objs, size_t n)
{
	void *buf[PCPU_BUF];
	size_t k = 0;

	pcpu_check_use(c, NULL);
	if (__builtin_expect(pgsrc_busy != 0, 0)) {
		for (size_t i = 0; i < n; i++)
			if (objs[i] != NULL) {
				slab_check_free(c, objs[i]);
				pcpu_free_nolock(c, objs[i]);
			}
		return;
	}
	uint32_t here = pcpu_here(c);
	for (size_t i = 0; i <= n; i++) {
		if (i < n && objs[i] != NULL) {
			slab_check_free(c, objs[i]);
			buf[k++] = objs[i];
		}
		if (k == 0 || (k < c->c_mag_max && i < n))
			continue;
		pcpu_count(c, here, true, k);
		if (pcpu_off(c))
			slab_free_bulk(c, buf, k);
		else
			pcpu_stash(c, buf, k);
		k = 0;
	}
	pcpu_deferred_flush();
}

/* ---- Validation ---- */

bool pcpu_slot_is_valid(struct uslab_cache *c, uint32_t i)
{
	const struct pcpu_slot *s = pcpu_slot(c, i);
	uint64_t w = __atomic_load_n(&s->p_word, __ATOMIC_RELAXED);
	uint32_t cap = __atomic_load_n(&s->p_cap, __ATOMIC_RELAXED);
	uint32_t count = pcpu_word_count(w);

	/* A slot that never started holds nothing, has no cap and no array. */
	if (s->p_live == 0)
		return w == 0 && cap == 0 && s->p_mag == NULL && s->p_rounds == NULL;
	/* A counting-only slot (USLAB_NOMAGAZINE) stays empty. */
	if (pcpu_off(c))
		return count == 0 && cap == 0 && s->p_mag == NULL;
	/* count <= cap <= the array's capacity <= the largest cap; the array
	 * is its magazine's; without one, nothing is held and cap is 0. */
	if (s->p_mag == NULL)
		return count == 0 && cap == 0 && s->p_rounds == NULL;
	return s->p_rounds == s->p_mag->m_rounds && cap <= s->p_mag->m_cap &&
	       cap <= c->c_pcpu_rounds && count <= s->p_mag->m_cap && (cap == 0 || count <= cap);
}

bool pcpu_is_valid(struct uslab_cache *c)
{
	for (uint32_t i = 0; i < pcpu_nslots; i++)
		if (!pcpu_slot_is_valid(c, i))
			return false;
	return true;
}
