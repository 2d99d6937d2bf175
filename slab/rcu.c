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
 *    magazines per slot). A free_rcu that would submit past it waits for a
 *    grace period itself (urcu_bp_synchronize_rcu) and completes the
 *    magazine on its own thread, so memory stays bounded when the worker
 *    falls behind. It never waits inside a read-side section (that would
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
 * 6. Signals: in a handler that interrupted uslab on this thread
 *    (pgsrc_busy != 0) free_rcu never waits for a lock: it tries each rcu
 *    slot's lock in turn, uses the slot's spare magazine when the current
 *    one is full (keeping the full one on rs_ready for the next caller or
 *    the flusher to submit), and reports only when no slot has room.
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

#define RCU_FLUSH_NS 10000000ull       /* a partial magazine waits at most ~this */
#define RCU_WAIT_BYTES (16ull << 20)   /* c_rcu_cap: objects of this many bytes */
#define RCU_IDLE_NS 1000000000ull      /* the flusher's nap with nothing to do */
#define RCU_DEPOT_KEEP DEPOT_SPARE_MAX /* full magazines the depot takes from RCU */

/* An rcu slot: one per CPU id (and one more, so that a handler always has
 * a slot its thread does not hold). */
struct rcu_slot {
	struct uslab_lock rs_lock; /* a leaf: nothing is called while held */
	struct mag *rs_mag;        /* objects not yet submitted, or NULL */
	struct mag *rs_spare;      /* an empty magazine, for when rs_mag fills */
	struct mag *rs_ready;      /* full magazines a handler left (m_next) */
	uint64_t rs_since;         /* coarse ns: rs_mag's first object */
	uint64_t rs_count;         /* objects in rs_mag and rs_ready (atomic stores) */
} __attribute__((aligned(64)));

/* Caches with rcu slots, for the flusher and the barrier. */
static struct uslab_lock rcu_lock = USLAB_LOCK_INITIALIZER; /* rcu_list; leaf */
static struct uslab_cache *rcu_list;

/* The flusher (under rcu_flush_lock). */
static pthread_mutex_t rcu_flush_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rcu_flush_cond = PTHREAD_COND_INITIALIZER;
static bool rcu_flusher_started, rcu_flusher_failed;
static unsigned rcu_pending; /* a partial magazine exists (atomic) */

static unsigned rcu_used; /* 0, 1 starting, 2 liburcu in use (atomic): see rcu_start */
static bool rcu_fork_helpers;  /* prepare called them (the forking thread) */
static char rcu_barrier_token; /* TSan: what the callbacks release, the barrier acquires */

#if USLAB_RCU_NEGATIVE_CONTROL
#warning "negative-control build: uslab_cache_free_rcu() frees at once, with no grace period"
#endif

static uint32_t rcu_nslots(void)
{
	return pcpu_slots() + 1;
}

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

static uint64_t rcu_slot_objects(struct uslab_cache *c)
{
	struct rcu_slot *sl = __atomic_load_n(&c->c_rcu_slots, __ATOMIC_ACQUIRE);
	uint64_t n = 0;

	if (sl == NULL)
		return 0;
	for (uint32_t i = 0; i < rcu_nslots(); i++)
		n += __atomic_load_n(&sl[i].rs_count, __ATOMIC_RELAXED);
	return n;
}

void rcu_counts(struct uslab_cache *c, struct rcu_counts *out)
{
	memset(out, 0, sizeof *out);
	/* Completion may subtract before submission added (rcu_submit). */
	int64_t flight = __atomic_load_n(&c->c_rcu_flight, __ATOMIC_RELAXED);
	out->rc_objs = rcu_slot_objects(c) + (flight > 0 ? (uint64_t)flight : 0) +
	               __atomic_load_n(&c->c_rcu_inline, __ATOMIC_RELAXED);
	out->rc_slabs = __atomic_load_n(&c->c_rcu_slabs, __ATOMIC_RELAXED);
	out->rc_peak = __atomic_load_n(&c->c_rcu_peak, __ATOMIC_RELAXED);
	out->rc_waits = __atomic_load_n(&c->c_rcu_waits, __ATOMIC_RELAXED);
	out->rc_freed = __atomic_load_n(&c->c_rcu_freed, __ATOMIC_RELAXED);
	out->rc_cap = c->c_rcu_cap;
}

static void rcu_observe(struct uslab_cache *c)
{
	const struct obs_ops *o = c->c_obs;

	if (o != NULL && o->o_rcu != NULL) {
		struct rcu_counts rc;
		rcu_counts(c, &rc);
		o->o_rcu(c->c_obs_rec, &rc);
	}
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
	unsigned zero = 0;

	if (__builtin_expect(__atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE) == 2, 1))
		return;
	if (__atomic_compare_exchange_n(&rcu_used, &zero, 1, false, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE)) {
		(void)urcu_bp_get_default_call_rcu_data();
		__atomic_store_n(&rcu_used, 2, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE) != 2)
		sched_yield();
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
		if ((c->c_flags & USLAB_NOMAGAZINE) != 0 || !depot_put_mag(c, m, RCU_DEPOT_KEEP)) {
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
		__atomic_fetch_add(&c->c_rcu_waits, 1, __ATOMIC_RELAXED);
		PROBE2(rcu_wait, c, flight);
		/* Counted apart: a fork child has no thread in here. */
		__atomic_fetch_add(&c->c_rcu_inline, n, __ATOMIC_RELAXED);
		urcu_bp_synchronize_rcu();
		rcu_mag_done(c, m, &c->c_rcu_inline);
		return;
	}
	PROBE2(rcu_submit, c, n);
	RCU_TSAN_RELEASE(m);
	/* Counted once submitted (the callback may run first: the count dips
	 * below zero meanwhile, read as 0): a fork between the two leaves the
	 * child's copy of @m in no layer and in no count, like a slow path's
	 * local buffer (cache.c §4). */
	urcu_bp_call_rcu((struct rcu_head *)(void *)m->m_rcu, rcu_mag_cb);
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
	urcu_bp_call_rcu((struct rcu_head *)(void *)chain->s_rcu, rcu_slabs_cb);
}

/* ---- The rcu slots ---- */

static size_t rcu_slots_bytes(void)
{
	return (size_t)rcu_nslots() * sizeof(struct rcu_slot);
}

/* @c's rcu slots, made at its first free_rcu; NULL when out of memory. */
static struct rcu_slot *rcu_slots(struct uslab_cache *c)
{
	struct rcu_slot *sl = __atomic_load_n(&c->c_rcu_slots, __ATOMIC_ACQUIRE);

	if (__builtin_expect(sl != NULL, 1))
		return sl;
	if (pgsrc_busy != 0)
		return NULL; /* a handler: meta_alloc takes a lock */
	rcu_start();
	struct rcu_slot *fresh = meta_alloc(rcu_slots_bytes()); /* zeroed */
	if (fresh == NULL)
		return NULL;
	for (uint32_t i = 0; i < rcu_nslots(); i++)
		lock_init(&fresh[i].rs_lock);
	lock_take(&rcu_lock);
	sl = c->c_rcu_slots;
	if (sl == NULL) {
		__atomic_store_n(&c->c_rcu_slots, fresh, __ATOMIC_RELEASE);
		c->c_rcu_next = rcu_list;
		c->c_rcu_prev = NULL;
		if (rcu_list != NULL)
			rcu_list->c_rcu_prev = c;
		rcu_list = c;
	}
	lock_drop(&rcu_lock);
	if (sl != NULL) { /* another thread made them first */
		meta_free(fresh, rcu_slots_bytes());
		return sl;
	}
	return fresh;
}

/* A fresh rcu magazine: of c_mag_max rounds, or any size that has a
 * magazine cache (a USLAB_NOMAGAZINE cache's sizes may have none). */
static struct mag *rcu_mag_new(struct uslab_cache *c)
{
	struct mag *m = depot_mag_get(c->c_mag_max);

	for (unsigned k = DEPOT_MAG_CLASSES; m == NULL && k-- > 0;)
		if (depot_mag_cache(k) != NULL)
			m = depot_mag_get(depot_mag_rounds(k));
	return m;
}

/* Detach what slot @s holds for submission: rs_ready, and rs_mag when it
 * has objects and (unless @all) waited RCU_FLUSH_NS. Slot lock held. */
static struct mag *rcu_slot_take(struct rcu_slot *s, bool all, uint64_t now, bool *left)
{
	struct mag *chain = s->rs_ready;

	s->rs_ready = NULL;
	if (s->rs_mag != NULL && s->rs_mag->m_count != 0) {
		if (all || now - s->rs_since >= RCU_FLUSH_NS) {
			s->rs_mag->m_next = chain;
			chain = s->rs_mag;
			s->rs_mag = NULL;
		} else {
			*left = true;
		}
	}
	__atomic_store_n(&s->rs_count, s->rs_mag != NULL ? s->rs_mag->m_count : 0,
	                 __ATOMIC_RELAXED);
	return chain;
}

/* Submit what @c's slots hold (all, or what waited long enough); true
 * when a partial magazine was left for later. */
static bool rcu_cache_flush(struct uslab_cache *c, bool all, bool may_wait)
{
	struct rcu_slot *sl = __atomic_load_n(&c->c_rcu_slots, __ATOMIC_ACQUIRE);
	uint64_t now = uslab_coarse_ns();
	bool left = false;

	if (sl == NULL)
		return false;
	for (uint32_t i = 0; i < rcu_nslots(); i++) {
		lock_take(&sl[i].rs_lock);
		struct mag *chain = rcu_slot_take(&sl[i], all, now, &left);
		lock_drop(&sl[i].rs_lock);
		rcu_submit_chain(c, chain, may_wait);
	}
	return left;
}

/* ---- The flusher ---- */

/* Every cache's slots (rcu_lock held around the walk, c_rcu_flushing
 * counting the cache while its magazines are submitted without it). */
static bool rcu_flush_all(bool all)
{
	bool left = false;

	lock_take(&rcu_lock);
	for (struct uslab_cache *c = rcu_list; c != NULL; c = c->c_rcu_next) {
		__atomic_fetch_add(&c->c_rcu_flushing, 1, __ATOMIC_ACQUIRE);
		lock_drop(&rcu_lock);
		left |= rcu_cache_flush(c, all, false);
		lock_take(&rcu_lock);
		__atomic_fetch_sub(&c->c_rcu_flushing, 1, __ATOMIC_RELEASE);
	}
	lock_drop(&rcu_lock);
	return left;
}

static void *rcu_flusher(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&rcu_flush_lock);
	for (;;) {
		bool pending = __atomic_exchange_n(&rcu_pending, 0, __ATOMIC_ACQUIRE) != 0;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		uint64_t nap = pending ? RCU_FLUSH_NS : RCU_IDLE_NS;
		until.tv_nsec += (long)(nap % 1000000000ull);
		until.tv_sec += (time_t)(nap / 1000000000ull) + until.tv_nsec / 1000000000;
		until.tv_nsec %= 1000000000;
		if (!pending)
			pthread_cond_timedwait(&rcu_flush_cond, &rcu_flush_lock, &until);
		pthread_mutex_unlock(&rcu_flush_lock);
		if (pending) {
			struct timespec d = {0, (long)RCU_FLUSH_NS};
			nanosleep(&d, NULL);
		}
		if (rcu_flush_all(false))
			__atomic_store_n(&rcu_pending, 1, __ATOMIC_RELEASE);
		pthread_mutex_lock(&rcu_flush_lock);
	}
	return NULL;
}

/* A partial magazine exists: make sure the flusher will look. */
static void rcu_kick(void)
{
	if (__atomic_load_n(&rcu_pending, __ATOMIC_RELAXED) != 0)
		return;
	__atomic_store_n(&rcu_pending, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&rcu_flush_lock);
	if (!rcu_flusher_started && !rcu_flusher_failed) {
		pthread_t t;
		pthread_attr_t attr;
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		/* Refused (a thread limit, a sandbox): partial magazines then
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
}

/* ---- free_rcu ---- */

/* No room anywhere, or no memory: wait for a grace period here, then free
 * @obj as a plain free would (never in a read-side section or a handler:
 * then there is nothing left to do but report). */
static void rcu_free_waiting(struct uslab_cache *c, void *obj)
{
	if (pgsrc_busy != 0 || urcu_bp_read_ongoing())
		uslab_report(c, obj, USLAB_E_RCU_NOMEM);
	__atomic_fetch_add(&c->c_rcu_waits, 1, __ATOMIC_RELAXED);
	urcu_bp_synchronize_rcu();
	__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE)(c, obj);
}

/* In a signal handler that interrupted uslab on this thread: never wait
 * for a lock (§6). */
static void rcu_free_nolock(struct uslab_cache *c, struct rcu_slot *sl, uint32_t first, void *obj)
{
	uint32_t n = rcu_nslots();

	for (uint32_t k = 0; k < n; k++) {
		struct rcu_slot *s = &sl[(first + k) % n];
		if (!lock_try(&s->rs_lock))
			continue;
		struct mag *m = s->rs_mag;
		if ((m == NULL || m->m_count >= rcu_rounds(c, m)) && s->rs_spare != NULL) {
			if (m != NULL) {
				m->m_next = s->rs_ready;
				s->rs_ready = m;
			}
			m = s->rs_mag = s->rs_spare;
			s->rs_spare = NULL;
		}
		if (m != NULL && m->m_count < rcu_rounds(c, m)) {
			if (m->m_count == 0)
				s->rs_since = uslab_coarse_ns();
			m->m_rounds[m->m_count++] = obj;
			__atomic_store_n(&s->rs_count, s->rs_count + 1, __ATOMIC_RELAXED);
			lock_drop(&s->rs_lock);
			__atomic_store_n(&rcu_pending, 1,
			                 __ATOMIC_RELEASE); /* the flusher's next look */
			return;
		}
		lock_drop(&s->rs_lock);
	}
	uslab_report(c, obj, USLAB_E_DEFER);
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
	/* The check of every free, at the call: a pointer that is no object
	 * of @c is reported here, not on liburcu's thread (a sampled object is
	 * in no slab; the debug layer checks the rest after the grace period). */
	if (!sample_is_live(c, obj))
		slab_check_free(c, obj);
#if USLAB_RCU_NEGATIVE_CONTROL
	__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE)(c, obj); /* no grace period */
	return;
#endif
	struct rcu_slot *sl = rcu_slots(c);
	if (sl == NULL) {
		rcu_free_waiting(c, obj);
		return;
	}
	int cpu = sched_getcpu();
	uint32_t i = cpu >= 0 && (uint32_t)cpu < pcpu_slots() ? (uint32_t)cpu : pcpu_slots();
	if (pgsrc_busy != 0) {
		rcu_free_nolock(c, sl, i, obj);
		return;
	}
	struct rcu_slot *s = &sl[i];
	for (;;) {
		lock_take(&s->rs_lock);
		struct mag *m = s->rs_mag;
		if (m != NULL && m->m_count < rcu_rounds(c, m)) {
			uint32_t n = m->m_count;
			if (n != 0 && m->m_rounds[n - 1] == obj) {
				lock_drop(&s->rs_lock);
				slab_free_dup(c, obj); /* the same object twice in a row */
			}
			m->m_rounds[n] = obj;
			m->m_count = n + 1;
			__atomic_store_n(&s->rs_count, s->rs_count + 1, __ATOMIC_RELAXED);
			if (n == 0)
				s->rs_since = uslab_coarse_ns();
			struct mag *ready = s->rs_ready;
			s->rs_ready = NULL;
			if (ready != NULL)
				__atomic_store_n(&s->rs_count, m->m_count, __ATOMIC_RELAXED);
			lock_drop(&s->rs_lock);
			rcu_submit_chain(c, ready, true);
			if (n == 0)
				rcu_kick();
			return;
		}
		/* Full, or none yet: the spare goes in, the full one is submitted. */
		struct mag *full = m;
		s->rs_mag = s->rs_spare;
		s->rs_spare = NULL;
		struct mag *ready = s->rs_ready;
		s->rs_ready = NULL;
		__atomic_store_n(&s->rs_count, s->rs_mag != NULL ? s->rs_mag->m_count : 0,
		                 __ATOMIC_RELAXED);
		lock_drop(&s->rs_lock);
		if (full != NULL) {
			full->m_next = ready;
			ready = full;
		}
		rcu_submit_chain(c, ready, true);
		struct mag *fresh = rcu_mag_new(c);
		if (fresh == NULL) {
			rcu_free_waiting(c, obj); /* out of memory: no batch */
			return;
		}
		lock_take(&s->rs_lock);
		if (s->rs_spare == NULL) {
			s->rs_spare = fresh;
			fresh = NULL;
		}
		lock_drop(&s->rs_lock);
		depot_mag_put(fresh);
	}
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
	rcu_flush_all(true);
	if (__atomic_load_n(&rcu_used, __ATOMIC_RELAXED) != 0)
		urcu_bp_barrier();
	RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	pthread_setcancelstate(old, NULL);
}

/* ---- The cache's life ---- */

void rcu_cache_init(struct uslab_cache *c)
{
	uint64_t cap = RCU_WAIT_BYTES / c->c_slot;
	uint64_t least = 4ull * rcu_nslots() * c->c_mag_max;

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
	bool slots = __atomic_load_n(&c->c_rcu_slots, __ATOMIC_ACQUIRE) != NULL;

	if (!slots && (c->c_flags & USLAB_TYPESAFE_BY_RCU) == 0)
		return 0;
	if (urcu_bp_read_ongoing()) {
		errno = EDEADLK; /* a grace period cannot end while we wait in one */
		return -1;
	}
	rcu_cache_flush(c, true, false);
	if (__atomic_load_n(&rcu_used, __ATOMIC_RELAXED) != 0)
		urcu_bp_barrier();
	RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	return 0;
}

void rcu_cache_fini(struct uslab_cache *c)
{
	struct rcu_slot *sl = __atomic_load_n(&c->c_rcu_slots, __ATOMIC_ACQUIRE);

	/* The slabs slab_release_all() retired, and nothing left in flight. */
	if ((c->c_flags & USLAB_TYPESAFE_BY_RCU) != 0 &&
	    __atomic_load_n(&rcu_used, __ATOMIC_RELAXED) != 0)
		urcu_bp_barrier();
	RCU_TSAN_ACQUIRE(&rcu_barrier_token);
	if (sl == NULL)
		return;
	lock_take(&rcu_lock);
	if (c->c_rcu_prev != NULL)
		c->c_rcu_prev->c_rcu_next = c->c_rcu_next;
	else
		rcu_list = c->c_rcu_next;
	if (c->c_rcu_next != NULL)
		c->c_rcu_next->c_rcu_prev = c->c_rcu_prev;
	lock_drop(&rcu_lock);
	/* A flusher that took @c before it left the list: until it is done. */
	while (__atomic_load_n(&c->c_rcu_flushing, __ATOMIC_ACQUIRE) != 0)
		sched_yield();
	for (uint32_t i = 0; i < rcu_nslots(); i++) {
		VERIFY(sl[i].rs_ready == NULL &&
		       (sl[i].rs_mag == NULL || sl[i].rs_mag->m_count == 0));
		depot_mag_put(sl[i].rs_mag);
		depot_mag_put(sl[i].rs_spare);
		lock_fini(&sl[i].rs_lock);
	}
	meta_free(sl, rcu_slots_bytes());
	c->c_rcu_slots = NULL;
}

/* ---- Fork ---- */

/* First of all (no uslab lock held): partial magazines are submitted, so
 * that neither copy keeps them; then liburcu's helpers, whose worker
 * pauses between callbacks, which take cache locks. */
void rcu_atfork_prepare(void)
{
	unsigned used;
	while ((used = __atomic_load_n(&rcu_used, __ATOMIC_ACQUIRE)) == 1)
		sched_yield(); /* another thread makes liburcu's worker */
	rcu_fork_helpers = used == 2;
	if (!rcu_fork_helpers)
		return;
	if (pgsrc_busy == 0)
		rcu_flush_all(true);
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
	struct rcu_slot *sl = c->c_rcu_slots;

	for (uint32_t i = 0; sl != NULL && i < rcu_nslots(); i++)
		lock_take(&sl[i].rs_lock);
}

void rcu_unlock_all(struct uslab_cache *c)
{
	struct rcu_slot *sl = c->c_rcu_slots;

	for (uint32_t i = 0; sl != NULL && i < rcu_nslots(); i++)
		lock_drop(&sl[i].rs_lock);
}

void rcu_atfork_parent(void)
{
	lock_drop(&rcu_lock);
	pthread_mutex_unlock(&rcu_flush_lock);
	if (rcu_fork_helpers) {
		urcu_bp_after_fork_parent();
		urcu_bp_call_rcu_after_fork_parent();
	}
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
	}
	lock_drop(&rcu_lock);
	pthread_mutex_unlock(&rcu_flush_lock);
	if (rcu_fork_helpers) {
		urcu_bp_after_fork_child();
		urcu_bp_call_rcu_after_fork_child();
	}
}
