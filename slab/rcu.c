/* SPDX-License-Identifier: MIT */
/* RCU: frees deferred past a grace period, batched per magazine, and type-safe caches. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <urcu/urcu-bp.h>
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define RCU_TSAN_RELEASE(p) __tsan_release(p)
#define RCU_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define RCU_TSAN_RELEASE(p) ((void)(p))
#define RCU_TSAN_ACQUIRE(p) ((void)(p))
#endif

#include "internal.h"

/*
 * Design (Linux's kfree_rcu batches and sheaves, FreeBSD UMA's SMR buckets)
 *
 * 1. Readers use liburcu's bp flavour (urcu_bp_read_lock/unlock, from the
 *    namespaced <urcu/urcu-bp.h>): it is the only flavour whose grace
 *    periods wait for threads the library never saw register. This layer
 *    only calls urcu_bp_call_rcu, urcu_bp_synchronize_rcu and
 *    urcu_bp_barrier, never while it holds a uslab lock.
 *
 * 2. uslab_cache_free_rcu() writes nothing into the object. It pushes the
 *    pointer into the rcu magazine of this CPU's rcu slot (a struct mag of
 *    the depot's magazine caches, c_mag_max rounds, under the slot's lock,
 *    a leaf). A full magazine is submitted: its own rcu_head (m_rcu) goes
 *    to urcu_bp_call_rcu(), one callback and one grace period for up to
 *    c_mag_max objects. After the grace period, liburcu's worker thread
 *    runs rcu_mag_cb(): the whole magazine joins the depot as a full
 *    magazine (depot_put_mag), so its objects are reused without passing
 *    through the slabs; when the depot holds enough already, or the cache
 *    takes the debug route, they go to their slabs (or through the debug
 *    layer's checks) instead. A magazine is never reused before its grace
 *    period: an object that left through free_rcu is handed out again only
 *    after every reader that could hold it has left its section.
 *
 * 3. Partial magazines are submitted by a flusher thread of this layer
 *    ("uslab-rcu", started at the first free_rcu, all signals blocked)
 *    once their first object waited RCU_FLUSH_NS, and by
 *    uslab_cache_reap(), uslab_cache_destroy(), uslab_rcu_barrier() and
 *    fork (the prepare handler leaves none behind in the child's copy: it
 *    has no flusher until its next free_rcu).
 *
 * 4. Bounded waiting: a cache has at most c_rcu_cap objects submitted and
 *    not yet completed (RCU_WAIT_BYTES of objects, at least four
 *    magazines per slot). Past it, magazines queue on c_rcu_waitq, and
 *    the free_rcu that fills the queue to RCU_WAITQ magazines waits for a
 *    grace period itself (urcu_bp_synchronize_rcu) and completes them on
 *    its own thread, so memory stays bounded when liburcu's worker falls
 *    behind (it naps 10 ms between batches, so a fast freer reaches the
 *    cap), and objects come back while they are still in the caches. It never waits inside a read-side section (that would
 *    deadlock), nor in a signal handler that interrupted uslab: there it
 *    submits past the cap. So free_rcu blocks only when the cap is passed.
 *
 * 5. USLAB_TYPESAFE_BY_RCU: objects are reused at once, but an empty slab
 *    that the slab layer releases (decay, reap, destroy) goes through
 *    c_slab_retire here: the chain waits a grace period (its first slab's
 *    s_rcu), then rcu_slabs_cb() runs the dtors and gives the blocks back
 *    (slab_destroy_retired). A reader in its section may still dereference
 *    an object that was freed meanwhile: the memory is an object of the
 *    same cache, constructed, and the reader re-checks its identity.
 *
 * 6. Signals: the rseq push is async-signal-safe. In a handler that
 *    interrupted uslab on this thread (pgsrc_busy != 0) free_rcu never
 *    waits for a lock nor allocates: when this CPU's slot has no room (or
 *    its lock is taken, in the locked mode) the object goes to c_rcu_over
 *    if its lock is free and it has room, else to the thread's short list
 *    of deferred frees (pcpu_defer_free), which the interrupted call
 *    hands back to free_rcu before it returns; only when that list is
 *    full too is it reported.
 *
 * 7. Fork: liburcu does not register its fork helpers; this layer calls
 *    them from the library's own atfork handlers (cache.c), first in
 *    prepare and last after, once it has used liburcu: the worker pauses
 *    between callbacks, which take cache locks, so before any is held.
 *
 * 8. Figures: waiting objects = the objects in rcu slots (read racily)
 *    plus c_rcu_flight (submitted, not completed), and c_rcu_slabs slabs of
 *    a type-safe cache; reported to the observer (o_rcu) on each
 *    submission and completion, so the stats segment lags by at most a
 *    flush delay.
 */

#define RCU_FLUSH_NS 10000000ull    /* a partial magazine waits at most ~this */
#define RCU_WAIT_BYTES (4ull << 20) /* c_rcu_cap: objects of this many bytes */
#define RCU_IDLE_NS 1000000000ull   /* the flusher's nap with nothing to do */
#define RCU_OBSERVE_NS 1000000ull   /* figures to the observer at most this often */
#define RCU_WAITQ 8                 /* magazines past the cap per grace period waited */
/* Full magazines the depot takes from RCU: what it holds at once anyway,
 * or as many as a quarter of the cap's objects (a grace period completes
 * many magazines together; the working set trims the surplus later). */
#define RCU_DEPOT_KEEP(c) (DEPOT_SPARE_MAX + (c)->c_rcu_cap / (c)->c_mag_max / 4)

/* Caches with rcu slots, for the flusher and the barrier. */
static struct uslab_lock rcu_lock = USLAB_LOCK_INITIALIZER; /* rcu_list; leaf */
static struct uslab_cache *rcu_list;

/* The flusher (under rcu_flush_lock). */
static pthread_mutex_t rcu_flush_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rcu_flush_cond = PTHREAD_COND_INITIALIZER;
static bool rcu_flusher_started, rcu_flusher_failed;
static unsigned rcu_pending; /* a partial magazine exists (atomic) */

static unsigned rcu_used; /* 2 once liburcu's worker exists (atomic): see rcu_start */
static pthread_mutex_t rcu_start_lock = PTHREAD_MUTEX_INITIALIZER;
static bool rcu_fork_helpers;  /* prepare called them (the forking thread) */
static char rcu_barrier_token; /* TSan: what the callbacks release, the barrier acquires */

/* A call into liburcu counts as busy (pgsrc_busy): it takes its own
 * mutexes and is not async-signal-safe, so a signal handler that
 * interrupted one must not call into it again (free_rcu then defers, §6). */
#define RCU_LIB(call)                                                                              \
	do {                                                                                       \
		pgsrc_busy_enter();                                                                \
		(void)call;                                                                        \
		pgsrc_busy_leave();                                                                \
	} while (0)

#if USLAB_RCU_NEGATIVE_CONTROL
#warning "negative-control build: uslab_cache_free_rcu() frees at once, with no grace period"
#endif

static struct mag *rcu_mag_of(struct rcu_head *h)
{
	return (struct mag *)((char *)h - offsetof(struct mag, m_rcu));
}

static struct slab *rcu_slab_of(struct rcu_head *h)
{
	return (struct slab *)((char *)h - offsetof(struct slab, s_rcu));
}

_Static_assert(sizeof(struct rcu_head) <= sizeof(((struct mag *)0)->m_rcu), "mag rcu_head");
_Static_assert(sizeof(struct rcu_head) <= sizeof(((struct slab *)0)->s_rcu), "slab rcu_head");

/* The rounds an rcu magazine of @c holds: what the depot can hand on. */
static uint32_t rcu_rounds(const struct uslab_cache *c, const struct mag *m)
{
	return m->m_cap < c->c_mag_max ? m->m_cap : c->c_mag_max;
}

/* ---- Figures ---- */

static struct pcpu_slot *rcu_slot(char *base, uint32_t i)
{
	return (struct pcpu_slot *)(base + ((size_t)i << PCPU_SHIFT));
}

static uint64_t rcu_slot_objects(struct uslab_cache *c)
{
	char *base = __atomic_load_n(&c->c_rcu_base, __ATOMIC_ACQUIRE);
	uint64_t n = __atomic_load_n(&c->c_rcu_over_n, __ATOMIC_RELAXED);

	for (uint32_t i = 0; base != NULL && i < pcpu_nslots; i++)
		n += pcpu_word_count(__atomic_load_n(&rcu_slot(base, i)->p_word, __ATOMIC_RELAXED));
	return n;
}

void rcu_counts(struct uslab_cache *c, struct rcu_counts *out)
{
	memset(out, 0, sizeof *out);
	/* Completion may subtract before submission added (rcu_submit). */
	int64_t flight = __atomic_load_n(&c->c_rcu_flight, __ATOMIC_RELAXED);
	out->rc_objs = rcu_slot_objects(c) + (flight > 0 ? (uint64_t)flight : 0) +
	               (uint64_t)__atomic_load_n(&c->c_rcu_inline, __ATOMIC_RELAXED) +
	               (uint64_t)__atomic_load_n(&c->c_rcu_queued, __ATOMIC_RELAXED);
	out->rc_slabs = __atomic_load_n(&c->c_rcu_slabs, __ATOMIC_RELAXED);
	out->rc_peak = __atomic_load_n(&c->c_rcu_peak, __ATOMIC_RELAXED);
	out->rc_waits = __atomic_load_n(&c->c_rcu_waits, __ATOMIC_RELAXED);
	out->rc_freed = __atomic_load_n(&c->c_rcu_freed, __ATOMIC_RELAXED);
	out->rc_cap = c->c_rcu_cap;
}

/* Report the figures to the observer: at most once per RCU_OBSERVE_NS
 * from the batches' paths (@now false; the sum over the slots is not
 * free), and on every flusher look and quiesce (@now true), so a reader
 * is at most a flush delay behind. */
static void rcu_observe_when(struct uslab_cache *c, bool now)
{
	const struct obs_ops *o = c->c_obs;

	if (o == NULL || o->o_rcu == NULL)
		return;
	uint64_t t = uslab_coarse_ns(),
		 last = __atomic_load_n(&c->c_rcu_observed, __ATOMIC_RELAXED);
	if (!now && t - last < RCU_OBSERVE_NS)
		return;
	__atomic_store_n(&c->c_rcu_observed, t, __ATOMIC_RELAXED);
	struct rcu_counts rc;
	rcu_counts(c, &rc);
	o->o_rcu(c->c_obs_rec, &rc);
}

static void rcu_observe(struct uslab_cache *c)
{
	rcu_observe_when(c, false);
}

/* ---- Starting liburcu ---- */

/*
 * liburcu's call_rcu_before_fork() holds its call_rcu mutex while it
 * waits for the worker to pause; a call_rcu() that makes the default
 * worker takes the same mutex inside a read-side section, which the
 * worker's grace period waits for: a fork racing the first call_rcu of
 * the process would deadlock. So the worker is made here, once, before
 * anything of this layer calls call_rcu, and fork calls the helpers only
 * once it exists (a fork while it is being made waits for it).
 */
static void rcu_start(void)
{
	if (__builtin_expect(__atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE) == 2, 1))
		return;
	/* Signals blocked first: a handler on this thread must not find the
	 * start half done and wait for itself. The worker inherits the mask:
	 * no signal of the program's lands on liburcu's thread. fork's
	 * prepare takes rcu_start_lock too, so a child never inherits a start
	 * half made (rcu_atfork_prepare). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_mutex_lock(&rcu_start_lock);
	if (__atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE) != 2) {
		RCU_LIB(urcu_bp_get_default_call_rcu_data());
		__atomic_store_n(&rcu_used, 2, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&rcu_start_lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- Completion: after the grace period ---- */

/* @m's objects are past their grace period: to the depot as a full
 * magazine, or to their slabs (or the debug layer's free, which checks
 * and poisons each), and the structure back to its cache. */
static void rcu_mag_done(struct uslab_cache *c, struct mag *m, int64_t *count)
{
	uint32_t n = m->m_count;

	if (__atomic_load_n(&c->c_routed, __ATOMIC_ACQUIRE)) {
		void (*free_miss)(struct uslab_cache *, void *) =
			__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE);
		for (uint32_t i = 0; i < n; i++)
			free_miss(c, m->m_rounds[i]); /* counted as frees there */
		depot_mag_put(m);
	} else if (n != 0) {
		__atomic_fetch_add(&c->c_rcu_freed, n, __ATOMIC_RELAXED);
		if ((c->c_flags & USLAB_NOMAGAZINE) != 0 ||
		    !depot_put_mag(c, m, RCU_DEPOT_KEEP(c))) {
			slab_free_bulk(c, m->m_rounds, n);
			depot_mag_put(m);
		}
	} else {
		depot_mag_put(m);
	}
	__atomic_fetch_sub(count, n, __ATOMIC_RELAXED);
	rcu_observe(c);
}

static void rcu_mag_cb(struct rcu_head *h)
{
	struct mag *m = rcu_mag_of(h);

	RCU_TSAN_ACQUIRE(m);
	rcu_mag_done(m->m_rcu_cache, m, &m->m_rcu_cache->c_rcu_flight);
	RCU_TSAN_RELEASE(&rcu_barrier_token);
}

/* Give @m (objects of @c, m_count of them) a grace period. @may_wait:
 * past the cap, wait for one here rather than let the backlog grow. */
static void rcu_submit(struct uslab_cache *c, struct mag *m, bool may_wait)
{
	int64_t n = m->m_count;
	int64_t flight = __atomic_load_n(&c->c_rcu_flight, __ATOMIC_RELAXED) + n;
	uint64_t peak = __atomic_load_n(&c->c_rcu_peak, __ATOMIC_RELAXED);

	while (flight > 0 && (uint64_t)flight > peak &&
	       !__atomic_compare_exchange_n(&c->c_rcu_peak, &peak, (uint64_t)flight, false,
	                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	m->m_rcu_cache = c;
	if (may_wait && flight > (int64_t)c->c_rcu_cap && pgsrc_busy == 0 &&
	    !urcu_bp_read_ongoing()) {
		/* Past the cap (§4): into c_rcu_waitq; the free that fills it
		 * to RCU_WAITQ magazines waits one grace period for them all. */
		int64_t moved = 0;
		lock_take(&c->c_rcu_lock);
		m->m_next = c->c_rcu_waitq;
		c->c_rcu_waitq = m;
		__atomic_fetch_add(&c->c_rcu_queued, n, __ATOMIC_RELAXED);
		struct mag *chain = NULL;
		if (++c->c_rcu_waitq_n >= RCU_WAITQ) {
			chain = c->c_rcu_waitq;
			c->c_rcu_waitq = NULL;
			c->c_rcu_waitq_n = 0;
			for (struct mag *q = chain; q != NULL; q = q->m_next)
				moved += q->m_count;
			/* Counted apart: a fork child has no thread in here. */
			__atomic_fetch_add(&c->c_rcu_inline, moved, __ATOMIC_RELAXED);
			__atomic_fetch_sub(&c->c_rcu_queued, moved, __ATOMIC_RELAXED);
			__atomic_fetch_add(&c->c_rcu_submitting, 1, __ATOMIC_ACQ_REL);
		}
		lock_drop(&c->c_rcu_lock);
		if (chain == NULL)
			return;
		__atomic_fetch_add(&c->c_rcu_waits, 1, __ATOMIC_RELAXED);
		PROBE2(rcu_wait, c, flight);
		RCU_LIB(urcu_bp_synchronize_rcu());
		while (chain != NULL) {
			struct mag *q = chain;
			chain = q->m_next;
			rcu_mag_done(c, q, &c->c_rcu_inline);
		}
		__atomic_fetch_sub(&c->c_rcu_submitting, 1, __ATOMIC_ACQ_REL);
		return;
	}
	PROBE2(rcu_submit, c, n);
	RCU_TSAN_RELEASE(m);
	/* Counted once submitted (the callback may run first: the count dips
	 * below zero meanwhile, read as 0). A fork between the two leaves
	 * the child's count n low for good (liburcu moves the callback to
	 * the child's worker), clamped at 0 where it is read. */
	RCU_LIB(urcu_bp_call_rcu((struct rcu_head *)(void *)m->m_rcu, rcu_mag_cb));
	__atomic_fetch_add(&c->c_rcu_flight, n, __ATOMIC_RELAXED);
	rcu_observe(c);
}

/* Submit a chain of magazines (through m_next). */
static void rcu_submit_chain(struct uslab_cache *c, struct mag *chain, bool may_wait)
{
	while (chain != NULL) {
		struct mag *m = chain;
		chain = m->m_next;
		m->m_next = NULL;
		rcu_submit(c, m, may_wait);
	}
}

/* ---- Type-safe caches: slabs wait a grace period ---- */

static void rcu_slabs_cb(struct rcu_head *h)
{
	struct slab *chain = rcu_slab_of(h);
	uint64_t n = 0;

	RCU_TSAN_ACQUIRE(chain);
	struct uslab_cache *c = chain->s_cache;
	for (struct slab *s = chain; s != NULL; s = s->s_next)
		n++;
	slab_destroy_retired(c, chain);
	__atomic_fetch_sub(&c->c_rcu_slabs, n, __ATOMIC_RELAXED);
	rcu_observe(c);
	RCU_TSAN_RELEASE(&rcu_barrier_token);
}

/* The slab layer's c_slab_retire for USLAB_TYPESAFE_BY_RCU caches: @chain
 * (through s_next, detached, every object free) waits a grace period. */
static void rcu_slabs_retire(struct uslab_cache *c, struct slab *chain)
{
	uint64_t n = 0;

	for (struct slab *s = chain; s != NULL; s = s->s_next)
		n++;
	__atomic_fetch_add(&c->c_rcu_slabs, n, __ATOMIC_RELAXED);
	rcu_start();
	PROBE2(rcu_retire, c, n);
	rcu_observe(c);
	RCU_TSAN_RELEASE(chain);
	RCU_LIB(urcu_bp_call_rcu((struct rcu_head *)(void *)chain->s_rcu, rcu_slabs_cb));
}

/* ---- The rcu slots ---- */

/*
 * The rcu slots are per-CPU slots of their own (struct pcpu_slot, in an
 * arena place of the cache, c_rcu_place), with the per-CPU layer's
 * contract: in the rseq mode free_rcu pushes with uslab_rseq_push(), no
 * lock and no atomic read-modify-write, and a full slot gives its rounds
 * to a fresh magazine with uslab_rseq_pop_batch(); in the locked mode the
 * same, under the slot's spinlock (lock.h). Starting a slot (its first
 * magazine) and owning one from another thread (the flusher, reap,
 * destroy, barrier: pcpu_slot_stop, a fence in the rseq mode) happen under
 * c_rcu_lock. An owner swaps the slot's magazine for an empty one and
 * submits the old one. Frees that no slot takes (its CPU's slot stopped
 * by an owner, a thread without rseq registration) go to c_rcu_over under
 * c_rcu_lock. p_pad[0] is the flusher's note of the count it saw last.
 */

/* @c's rcu slots, made at its first free_rcu; NULL when out of memory.
 * The cache joins the flusher's and the barrier's list first, so that no
 * object can be in a slot that a barrier does not visit. */
static char *rcu_slots(struct uslab_cache *c)
{
	char *base = __atomic_load_n(&c->c_rcu_base, __ATOMIC_ACQUIRE);

	if (__builtin_expect(base != NULL, 1))
		return base;
	if (pgsrc_busy != 0)
		return NULL; /* a handler: an arena takes locks */
	rcu_start();
	lock_take(&rcu_lock);
	if (!c->c_rcu_listed) {
		c->c_rcu_next = rcu_list;
		c->c_rcu_prev = NULL;
		if (rcu_list != NULL)
			rcu_list->c_rcu_prev = c;
		rcu_list = c;
		c->c_rcu_listed = true;
	}
	lock_drop(&rcu_lock);
	lock_take(&c->c_rcu_lock);
	if (c->c_rcu_base == NULL && arena_claim(&c->c_rcu_place) == 0)
		__atomic_store_n(&c->c_rcu_base, c->c_rcu_place.pl_base, __ATOMIC_RELEASE);
	base = c->c_rcu_base;
	lock_drop(&c->c_rcu_lock);
	return base;
}

/* A fresh rcu magazine: of c_mag_max rounds, or any size that has a
 * magazine cache (a USLAB_NOMAGAZINE cache's sizes may have none). */
static struct mag *rcu_mag_new(struct uslab_cache *c)
{
	struct mag *m = depot_mag_get(c->c_mag_max);

	/* The smallest class with a cache that holds c_mag_max rounds, else
	 * the largest smaller one: a grown slot's array only when nothing
	 * else has a cache. */
	unsigned lo = 0;
	while (lo + 1 < DEPOT_MAG_CLASSES && depot_mag_rounds(lo) < c->c_mag_max)
		lo++;
	for (unsigned k = lo; m == NULL && k < DEPOT_MAG_CLASSES; k++)
		if (depot_mag_cache(k) != NULL)
			m = depot_mag_get(depot_mag_rounds(k));
	for (unsigned k = lo; m == NULL && k-- > 0;)
		if (depot_mag_cache(k) != NULL)
			m = depot_mag_get(depot_mag_rounds(k));
	return m;
}

/* Point slot @s at magazine @m, empty (owned, or not started). */
static void rcu_slot_set(struct pcpu_slot *s, struct mag *m)
{
	__atomic_store_n(&s->p_mag, m, __ATOMIC_RELEASE); /* free_rcu peeks at it */
	s->p_rounds = m->m_rounds;
	__atomic_store_n(&s->p_word, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&pcpu_slot_counters(s)->pc_word, 0, __ATOMIC_RELAXED);
}

/* Give slot @i its first magazine. false when out of memory. A slot that
 * never started has cap 0, so no section can commit on it: the magazine
 * is set, then the cap stored (release; sections load the cap first), no
 * fence needed. */
static bool rcu_slot_start(struct uslab_cache *c, char *base, uint32_t i)
{
	struct pcpu_slot *s = rcu_slot(base, i);
	bool ok = true;

	lock_take(&c->c_rcu_lock);
	if (__atomic_load_n(&s->p_mag, __ATOMIC_ACQUIRE) == NULL) {
		struct mag *m = rcu_mag_new(c);
		if (m != NULL) {
			if (!pcpu_rseq)
				spin_take(&s->p_lock);
			rcu_slot_set(s, m);
			__atomic_store_n(&s->p_cap, rcu_rounds(c, m), __ATOMIC_RELEASE);
			if (!pcpu_rseq)
				spin_drop(&s->p_lock);
		} else {
			ok = false;
		}
	}
	lock_drop(&c->c_rcu_lock);
	return ok;
}

/* Take what @c's slots and c_rcu_over hold, as a chain to submit: all of
 * it, or (the flusher) what was there at its last look too; *@left when a
 * partial batch stays for later. c_rcu_lock held. */
static struct mag *rcu_cache_take_locked(struct uslab_cache *c, bool all, bool *left)
{
	char *base = c->c_rcu_base;
	struct mag *chain = NULL;

	ASSERT_HELD(&c->c_rcu_lock);
	for (uint32_t i = 0; base != NULL && i < pcpu_nslots; i++) {
		struct pcpu_slot *s = rcu_slot(base, i);
		if (s->p_mag == NULL)
			continue;
		uint64_t count = pcpu_word_count(__atomic_load_n(&s->p_word, __ATOMIC_RELAXED));
		uint64_t seen = s->p_flip;
		s->p_flip = count;
		if (count == 0)
			continue;
		struct mag *fresh = all || seen != 0 ? rcu_mag_new(c) : NULL;
		uint32_t cap;
		if (fresh == NULL || !pcpu_slot_stop(s, i, &cap)) {
			depot_mag_put(fresh);
			*left = true; /* young, no memory, or no fence: later */
			continue;
		}
		struct mag *m = s->p_mag;
		m->m_count = pcpu_word_count(s->p_word);
		rcu_slot_set(s, fresh);
		s->p_flip = 0;
		pcpu_slot_restart(s, rcu_rounds(c, fresh));
		m->m_next = chain;
		chain = m;
	}
	struct mag *o = c->c_rcu_over;
	if (o != NULL && o->m_count != 0) {
		c->c_rcu_over = NULL;
		__atomic_store_n(&c->c_rcu_over_n, 0, __ATOMIC_RELAXED);
		o->m_next = chain;
		chain = o;
	}
	/* The magazines past the cap: to liburcu now. */
	while ((o = c->c_rcu_waitq) != NULL) {
		c->c_rcu_waitq = o->m_next;
		__atomic_fetch_sub(&c->c_rcu_queued, (int64_t)o->m_count, __ATOMIC_RELAXED);
		o->m_next = chain;
		chain = o;
	}
	c->c_rcu_waitq_n = 0;
	return chain;
}

/* Magazines out of every list of @c, on their way to liburcu or to an
 * inline completion: the barrier waits for none to be left. */
static void rcu_submitting(struct uslab_cache *c, int d)
{
	__atomic_fetch_add(&c->c_rcu_submitting, d, __ATOMIC_ACQ_REL);
}

static void rcu_submitting_wait(struct uslab_cache *c)
{
	while (__atomic_load_n(&c->c_rcu_submitting, __ATOMIC_ACQUIRE) != 0)
		sched_yield();
}

/* Submit what @c's slots hold (all, or what waited long enough); true
 * when a partial batch was left for later. */
static bool rcu_cache_flush(struct uslab_cache *c, bool all, bool may_wait)
{
	bool left = false;

	if (__atomic_load_n(&c->c_rcu_base, __ATOMIC_ACQUIRE) == NULL)
		return false;
	lock_take(&c->c_rcu_lock);
	struct mag *chain = rcu_cache_take_locked(c, all, &left);
	if (chain != NULL)
		rcu_submitting(c, 1);
	lock_drop(&c->c_rcu_lock);
	if (chain != NULL) {
		rcu_submit_chain(c, chain, may_wait);
		rcu_submitting(c, -1);
	}
	rcu_observe_when(c, true);
	return left;
}

/* ---- The flusher ---- */

/* Every cache's slots (rcu_lock held around the walk, c_rcu_flushing
 * counting the cache while its magazines are submitted without it). */
static bool rcu_flush_all(bool all, bool wait)
{
	bool left = false;

	lock_take(&rcu_lock);
	for (struct uslab_cache *c = rcu_list; c != NULL; c = c->c_rcu_next) {
		/* Counted under rcu_lock, and uncounted with the read of the
		 * next cache under it too: rcu_cache_unlist() takes @c off the
		 * list only with no walker on it. */
		__atomic_fetch_add(&c->c_rcu_flushing, 1, __ATOMIC_ACQUIRE);
		lock_drop(&rcu_lock);
		left |= rcu_cache_flush(c, all, false);
		if (wait) /* the barrier: what other threads are submitting too */
			rcu_submitting_wait(c);
		lock_take(&rcu_lock);
		__atomic_fetch_sub(&c->c_rcu_flushing, 1, __ATOMIC_RELEASE);
	}
	lock_drop(&rcu_lock);
	return left;
}

/* Every RCU_FLUSH_NS while batches wait (rcu_pending), a look at every
 * slot: a batch that had objects at the last look too is submitted, so
 * an object waits two looks at most. With nothing waiting, a nap until a
 * free_rcu finds rcu_pending clear and wakes it. */
static void *rcu_flusher(void *arg)
{
	unsigned empty = 0; /* looks in a row that found nothing */

	(void)arg;
	pthread_mutex_lock(&rcu_flush_lock);
	for (;;) {
		/* Nap long only after two empty looks: a free whose store the
		 * first look missed (still in its CPU's store buffer, while
		 * that free saw rcu_pending still set) is seen by the second. */
		if (__atomic_load_n(&rcu_pending, __ATOMIC_ACQUIRE) == 0 && empty >= 2) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += (time_t)(RCU_IDLE_NS / 1000000000ull);
			pthread_cond_timedwait(&rcu_flush_cond, &rcu_flush_lock, &until);
		}
		pthread_mutex_unlock(&rcu_flush_lock);
		struct timespec d = {0, (long)RCU_FLUSH_NS};
		nanosleep(&d, NULL);
		/* Cleared before the look: a free after it sets it again. */
		__atomic_store_n(&rcu_pending, 0, __ATOMIC_SEQ_CST);
		if (rcu_flush_all(false, false)) {
			__atomic_store_n(&rcu_pending, 1, __ATOMIC_RELEASE);
			empty = 0;
		} else {
			empty++;
		}
		pthread_mutex_lock(&rcu_flush_lock);
	}
	return NULL;
}

/* Objects wait in a slot: make sure the flusher will look (one load when
 * it will already). */
static void rcu_kick(void)
{
	if (__builtin_expect(__atomic_load_n(&rcu_pending, __ATOMIC_RELAXED) != 0, 1))
		return;
	__atomic_store_n(&rcu_pending, 1, __ATOMIC_SEQ_CST);
	if (pgsrc_busy != 0)
		return;     /* a handler: the flusher's next look, or its nap's end */
	pgsrc_busy_enter(); /* a handler must not wait for this mutex */
	pthread_mutex_lock(&rcu_flush_lock);
	if (!rcu_flusher_started && !rcu_flusher_failed) {
		pthread_t t;
		pthread_attr_t attr;
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		/* Refused (a thread limit, a sandbox): partial batches then
		 * wait for the next reap, destroy, barrier or fork. */
		if (pthread_create(&t, &attr, rcu_flusher, NULL) == 0) {
			rcu_flusher_started = true;
			pthread_setname_np(t, "uslab-rcu");
		} else {
			rcu_flusher_failed = true;
		}
		pthread_attr_destroy(&attr);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	pthread_cond_signal(&rcu_flush_cond);
	pthread_mutex_unlock(&rcu_flush_lock);
	pgsrc_busy_leave();
	pcpu_deferred_flush(); /* what a handler deferred in that window */
}

/* ---- free_rcu ---- */

/* No memory for a batch: wait for a grace period here, then free @obj as
 * a plain free would (never in a read-side section or a handler: then
 * there is nothing left to do but report). */
static void rcu_free_waiting(struct uslab_cache *c, void *obj)
{
	if (pgsrc_busy != 0 || urcu_bp_read_ongoing())
		uslab_report(c, obj, USLAB_E_RCU_NOMEM);
	__atomic_fetch_add(&c->c_rcu_waits, 1, __ATOMIC_RELAXED);
	RCU_LIB(urcu_bp_synchronize_rcu());
	__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE)(c, obj);
}

/* The slot index of the CPU this thread probably runs on. */
static uint32_t rcu_here(void)
{
	int cpu = sched_getcpu();

	return cpu >= 0 && (uint32_t)cpu < pcpu_nslots ? (uint32_t)cpu : 0;
}

/* One push onto this CPU's slot: 1 done, 0 full or stopped or not
 * started, -1 @obj is the round on top (a double free). In a handler
 * that interrupted uslab (@busy), the locked mode only tries the lock. */
static int rcu_push(struct uslab_cache *c, char *base, void *obj, bool busy)
{
#if USLAB_HAVE_ASM
	if (pcpu_rseq) {
		int r = uslab_rseq_push_rcu(base, __atomic_load_n(&c->c_fast, __ATOMIC_RELAXED),
		                            obj);
		return r > 0 ? 1 : r;
	}
#endif
	struct pcpu_slot *s = rcu_slot(base, rcu_here());
	if (busy ? !spin_try(&s->p_lock) : (spin_take(&s->p_lock), false))
		return 0;
	int r = pcpu_generic_push(s, obj);
	spin_drop(&s->p_lock);
	return r;
}

/* Up to @n rounds of this CPU's slot into @out (its top ones). */
static size_t rcu_pop(char *base, void **out, size_t n)
{
#if USLAB_HAVE_ASM
	if (pcpu_rseq)
		return uslab_rseq_pop_batch(base, PCPU_SHIFT, out, n);
#endif
	struct pcpu_slot *s = rcu_slot(base, rcu_here());
	spin_take(&s->p_lock);
	size_t k = pcpu_generic_pop_batch(s, out, n);
	/* The generic push counts hits above the count: none kept here. */
	__atomic_store_n(&s->p_word, pcpu_word_count(s->p_word), __ATOMIC_RELAXED);
	spin_drop(&s->p_lock);
	return k;
}

/* @obj into c_rcu_over; false if it cannot be (a handler found the lock
 * taken or no room). A full one is submitted. */
static bool rcu_over_push(struct uslab_cache *c, void *obj, bool busy)
{
	struct mag *fresh = busy ? NULL : rcu_mag_new(c);
	struct mag *full = NULL;
	bool done = false;

	if (busy ? !lock_try(&c->c_rcu_lock) : (lock_take(&c->c_rcu_lock), false)) {
		depot_mag_put(fresh);
		return false;
	}
	struct mag *o = c->c_rcu_over;
	if (o == NULL && fresh != NULL) {
		o = c->c_rcu_over = fresh;
		fresh = NULL;
	}
	if (o != NULL && o->m_count < rcu_rounds(c, o)) {
		if (o->m_count != 0 && o->m_rounds[o->m_count - 1] == obj) {
			lock_drop(&c->c_rcu_lock);
			slab_free_dup(c, obj);
		}
		o->m_rounds[o->m_count++] = obj;
		done = true;
		if (o->m_count == rcu_rounds(c, o) && !busy) {
			full = o;
			c->c_rcu_over = NULL;
			rcu_submitting(c, 1);
		}
	}
	__atomic_store_n(&c->c_rcu_over_n, c->c_rcu_over != NULL ? c->c_rcu_over->m_count : 0,
	                 __ATOMIC_RELAXED);
	lock_drop(&c->c_rcu_lock);
	depot_mag_put(fresh);
	if (full != NULL) {
		rcu_submit(c, full, true);
		rcu_submitting(c, -1);
	}
	return done;
}

/* The check of every free, at the call: a pointer that is no object of
 * @c is reported here, not on liburcu's thread (a sampled object is in
 * no slab; the debug layer checks the rest after the grace period). */
static void rcu_check(struct uslab_cache *c, const void *obj)
{
	struct slab *in = slabmap_lookup(obj);
	uint32_t idx;

	if (in != NULL || !sample_is_live(c, obj))
		slab_check_free_at(c, obj, in, &idx);
}

/* free_rcu past the hit: slots to make, a full or stopped slot, a
 * handler, no memory. */
static void rcu_free_slow(struct uslab_cache *c, void *obj)
{
	pcpu_rseq_ready();
	char *base = rcu_slots(c);
	if (base == NULL) {
		if (pgsrc_busy == 0)
			rcu_free_waiting(c, obj);
		else if (!rcu_over_push(c, obj, true) && !pcpu_defer_free(c, obj, true))
			uslab_report(c, obj, USLAB_E_DEFER);
		return;
	}
	bool busy = pgsrc_busy != 0;
	if (!busy)
		pcpu_defer_reserve(); /* room for what a handler may defer here */
	for (;;) {
		int r = rcu_push(c, base, obj, busy);
		if (__builtin_expect(r > 0, 1)) {
			rcu_kick();
			return;
		}
		if (r < 0)
			slab_free_dup(c, obj); /* the same object twice in a row */
		if (busy) {                    /* a handler: no magazine can be had here */
			if (!rcu_over_push(c, obj, true) && !pcpu_defer_free(c, obj, true))
				uslab_report(c, obj, USLAB_E_DEFER);
			return;
		}
		/* Full, not started, stopped by an owner, or no rseq here. */
		uint32_t i = rcu_here();
		if (__atomic_load_n(&rcu_slot(base, i)->p_mag, __ATOMIC_ACQUIRE) == NULL) {
			if (!rcu_slot_start(c, base, i)) {
				rcu_free_waiting(c, obj);
				return;
			}
			continue;
		}
		struct mag *m = rcu_mag_new(c);
		if (m == NULL) {
			rcu_free_waiting(c, obj);
			return;
		}
		rcu_submitting(c, 1); /* from the pop to the submission */
		m->m_count = (uint32_t)rcu_pop(base, m->m_rounds, rcu_rounds(c, m));
		if (m->m_count == 0) { /* stopped, or no rseq registration */
			rcu_submitting(c, -1);
			depot_mag_put(m);
			if (!rcu_over_push(c, obj, false))
				rcu_free_waiting(c, obj);
			rcu_kick();
			return;
		}
		/* A full slot misses before the on-top check: compare here. */
		if (m->m_rounds[m->m_count - 1] == obj)
			slab_free_dup(c, obj);
		rcu_submit(c, m, true);
		rcu_submitting(c, -1);
	}
}

/* See include/uslab.h */
void uslab_cache_free_rcu(struct uslab_cache *c, void *obj)
{
	if (c == NULL) {
		errno = EINVAL;
		return;
	}
	if (obj == NULL)
		return;
#if USLAB_HAVE_ASM
	/* The hit: pushed, and known to be an object of @c by the memo of the
	 * magazine it came from; or pushed, then checked (a bad one aborts). */
	char *slots = __atomic_load_n(&c->c_rcu_base, __ATOMIC_ACQUIRE);
	if (__builtin_expect(slots != NULL && pcpu_rseq && !USLAB_RCU_NEGATIVE_CONTROL, 1)) {
		int r = uslab_rseq_push_rcu(slots, __atomic_load_n(&c->c_fast, __ATOMIC_RELAXED),
		                            obj);
		if (__builtin_expect(r > 0, 1)) {
			if (r == 2)
				rcu_check(c, obj);
			rcu_kick();
			return;
		}
	}
#endif
	rcu_check(c, obj);
#if USLAB_RCU_NEGATIVE_CONTROL
	__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE)(c, obj); /* no grace period */
	return;
#endif
	rcu_free_slow(c, obj);
	pcpu_deferred_flush(); /* what handlers deferred meanwhile */
}

/* See include/uslab.h */
void uslab_rcu_barrier(void)
{
	if (urcu_bp_read_ongoing())
		uslab_report(NULL, NULL, USLAB_E_RCU_READER);
	if (pgsrc_busy != 0)
		uslab_report(NULL, NULL, USLAB_E_REENTRY);
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	rcu_flush_all(true, true);
	if (__atomic_load_n(&rcu_used, __ATOMIC_RELAXED) != 0)
		RCU_LIB(urcu_bp_barrier());
	RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
}

/* ---- The cache's life ---- */

void rcu_cache_init(struct uslab_cache *c)
{
	uint64_t cap = RCU_WAIT_BYTES / c->c_slot;
	uint64_t least = 4ull * (pcpu_slots() + 1) * c->c_mag_max;

	lock_init(&c->c_rcu_lock);
	c->c_rcu_cap = cap > least ? cap : least;
	if ((c->c_flags & USLAB_TYPESAFE_BY_RCU) != 0)
		c->c_slab_retire = rcu_slabs_retire;
}

size_t rcu_cache_reap(struct uslab_cache *c)
{
	rcu_cache_flush(c, true, false);
	return 0;
}

int rcu_cache_quiesce(struct uslab_cache *c)
{
	bool slots = __atomic_load_n(&c->c_rcu_base, __ATOMIC_ACQUIRE) != NULL;

	if (!slots && (c->c_flags & USLAB_TYPESAFE_BY_RCU) == 0)
		return 0;
	if (urcu_bp_read_ongoing()) {
		errno = EDEADLK; /* a grace period cannot end while we wait in one */
		return -1;
	}
	rcu_cache_flush(c, true, false);
	rcu_submitting_wait(c);
	if (__atomic_load_n(&rcu_used, __ATOMIC_RELAXED) != 0)
		RCU_LIB(urcu_bp_barrier());
	RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	return 0;
}

void rcu_cache_unlist(struct uslab_cache *c)
{
	/* A type-safe cache's slabs that the drains retired: their callbacks
	 * report to the observer, which destroy takes away next. */
	if ((c->c_flags & USLAB_TYPESAFE_BY_RCU) != 0 &&
	    __atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE) == 2) {
		RCU_LIB(urcu_bp_barrier());
		RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	}
	if (!c->c_rcu_listed)
		return;
	lock_take(&rcu_lock);
	/* No walker on @c (rcu_flush_all counts it under this lock). */
	while (__atomic_load_n(&c->c_rcu_flushing, __ATOMIC_ACQUIRE) != 0) {
		lock_drop(&rcu_lock);
		sched_yield();
		lock_take(&rcu_lock);
	}
	if (c->c_rcu_prev != NULL)
		c->c_rcu_prev->c_rcu_next = c->c_rcu_next;
	else
		rcu_list = c->c_rcu_next;
	if (c->c_rcu_next != NULL)
		c->c_rcu_next->c_rcu_prev = c->c_rcu_prev;
	c->c_rcu_listed = false;
	lock_drop(&rcu_lock);
}

void rcu_cache_fini(struct uslab_cache *c)
{
	char *base = __atomic_load_n(&c->c_rcu_base, __ATOMIC_ACQUIRE);

	/* The slabs slab_release_all() retired, and nothing left in flight. */
	if ((c->c_flags & USLAB_TYPESAFE_BY_RCU) != 0 &&
	    __atomic_load_n(&rcu_used, __ATOMIC_RELAXED) != 0)
		RCU_LIB(urcu_bp_barrier());
	RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	if (base != NULL) {
		for (uint32_t i = 0; i < pcpu_nslots; i++) {
			struct pcpu_slot *s = rcu_slot(base, i);
			VERIFY(pcpu_word_count(s->p_word) == 0); /* quiesced */
			depot_mag_put(s->p_mag);
			s->p_mag = NULL;
			s->p_rounds = NULL;
			s->p_cap = 0;
			s->p_flip = 0;
		}
		arena_release(&c->c_rcu_place);
		c->c_rcu_base = NULL;
	}
	VERIFY(c->c_rcu_over == NULL || c->c_rcu_over->m_count == 0);
	VERIFY(c->c_rcu_waitq == NULL);
	depot_mag_put(c->c_rcu_over);
	c->c_rcu_over = NULL;
	lock_fini(&c->c_rcu_lock);
}

/* ---- Fork ---- */

/* First of all (no uslab lock held): partial magazines are submitted, so
 * that neither copy keeps them; then liburcu's helpers, whose worker
 * pauses between callbacks, which take cache locks. */
void rcu_atfork_prepare(void)
{
	pthread_mutex_lock(&rcu_start_lock); /* until after: no start half made */
	rcu_fork_helpers = __atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE) == 2;
	if (!rcu_fork_helpers)
		return;
	if (pgsrc_busy == 0)
		rcu_flush_all(true, false); /* no wait: fork may come from a handler */
	urcu_bp_call_rcu_before_fork();
	urcu_bp_before_fork();
}

/* After cache_list_lock (a walk's callback may call the barrier). */
void rcu_atfork_locks(void)
{
	pthread_mutex_lock(&rcu_flush_lock);
	lock_take(&rcu_lock);
}

void rcu_lock_all(struct uslab_cache *c)
{
	lock_take(&c->c_rcu_lock); /* then the base: made under this lock */
	char *base = c->c_rcu_base;

	for (uint32_t i = 0; base != NULL && !pcpu_rseq && i < pcpu_nslots; i++)
		spin_take(&rcu_slot(base, i)->p_lock);
}

void rcu_unlock_all(struct uslab_cache *c)
{
	char *base = c->c_rcu_base;

	for (uint32_t i = 0; base != NULL && !pcpu_rseq && i < pcpu_nslots; i++)
		spin_drop(&rcu_slot(base, i)->p_lock);
	lock_drop(&c->c_rcu_lock);
}

void rcu_atfork_parent(void)
{
	lock_drop(&rcu_lock);
	pthread_mutex_unlock(&rcu_flush_lock);
	if (rcu_fork_helpers) {
		urcu_bp_after_fork_parent();
		urcu_bp_call_rcu_after_fork_parent();
	}
	pthread_mutex_unlock(&rcu_start_lock);
}

void rcu_atfork_child(void)
{
	/* No flusher here; a flush that was under way in the parent is the
	 * parent's (its magazines belong to no layer in this copy). */
	rcu_flusher_started = false;
	rcu_flusher_failed = false;
	__atomic_store_n(&rcu_pending, 0, __ATOMIC_RELAXED);
	for (struct uslab_cache *c = rcu_list; c != NULL; c = c->c_rcu_next) {
		c->c_rcu_flushing = 0;
		c->c_rcu_inline = 0;
		c->c_rcu_submitting = 0; /* those threads are the parent's */
	}
	lock_drop(&rcu_lock);
	pthread_mutex_unlock(&rcu_flush_lock);
	if (rcu_fork_helpers) {
		urcu_bp_after_fork_child();
		sigset_t all, old; /* the child's new worker: no signals, as in rcu_start */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		urcu_bp_call_rcu_after_fork_child();
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	pthread_mutex_unlock(&rcu_start_lock);
}

bool rcu_available(void)
{
	return true;
}
