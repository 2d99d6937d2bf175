/* SPDX-License-Identifier: MIT */
/* Caches: the registry, create and destroy, and the public entry points. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "segment/writer.h"

/*
 * 1. Overview. A cache hands out objects of one size. An allocation is
 *    served, in order, by this CPU's magazine (slab/pcpu.c, through the
 *    assembly fast path), the cache's depot of full magazines
 *    (slab/depot.c), and the slab layer (slab/slab.c), which carves blocks
 *    from the cache's page source (pagesrc/). A free goes the other way.
 *    Calls only go down: a layer never calls the one above it, and learns
 *    nothing from it. The skips are deliberate and only downward: this
 *    file composes the layers and calls each of them (create, destroy,
 *    reap, the bulk entry points); the per-CPU layer calls the slab layer
 *    for drains, for USLAB_NOMAGAZINE caches and for a free that finds its
 *    slot stopped; the depot takes its magazine structures from the slab
 *    layer of the magazine caches. What a layer above must learn comes
 *    back as a return value (the depot says when a working-set interval
 *    ended; the per-CPU layer then folds its counts). Beside the column,
 *    observers: the layers report their figures through the hook table of
 *    the cache (slab/observe.h), which this file points at the stats
 *    segment's writer (slab/segment/writer.c) when the cache is published;
 *    the writer never reads a cache. Between the per-CPU layer and this
 *    file, the debug layer (slab/debug-cache.c): a cache with debug flags,
 *    failure injection, sampling or a sanitizer is routed through it once
 *    (at create, or uslab_cache_set_debug): its misses and bulk calls go
 *    there through the cache's function pointers, and it calls the
 *    per-CPU layer below for the magazines. Under every layer, the
 *    platform layer (pagesrc/os.h) makes the system calls; on Windows the
 *    Linux-only files are replaced by the ones its Design 2 names.
 *    tests/check-layers.sh checks the arrows on the built objects.
 *
 * 2. Object lifecycle (Bonwick). The ctor runs once per object when its
 *    slab is created; the dtor when the slab is released (reap, destroy, or
 *    a surplus of empty slabs). In between, objects pass between the
 *    program, magazines and the slab free bitmap without their bytes being
 *    written by uslab (but for what a debug flag asks: poison, red zones,
 *    and a deferred free's link, slab/pcpu.c, for caches without a ctor).
 *
 * 3. Invariants. Every object is in exactly one place: with the program,
 *    in a per-CPU magazine, in a depot magazine, waiting for a grace
 *    period (slab/rcu.c: an rcu slot, a magazine submitted or queued), or
 *    free in its slab. Hence, at quiescence:
 *        allocated by the program == sum(s_inuse) - objects in magazines
 *                                    - objects waiting for grace periods.
 *    uslab_cache_destroy() relies on it: it drains every magazine to the
 *    slabs, then refuses (EBUSY) while sum(s_inuse) != 0. cache_is_valid()
 *    checks each layer's invariants (slab_cache_is_valid, depot_is_valid,
 *    pcpu_is_valid), written beside their structures.
 *
 * 4. Lock order.
 *    1. cache_list_lock: the registry list (c_next, c_prev). Held while
 *       fork() runs, with every cache lock below.
 *    2. c_drain_lock: remote slot operations (drain, resize, fold) and
 *       starting a slot, in both modes; c_pcpu_cap.
 *    3. pcpu slot locks (locked mode only): one slot's magazine.
 *    4. c_depot_lock: the depot's magazine lists and magazine size.
 *    5. c_slab_lock: slab lists, slab headers and slab counts.
 *    6. seg_lock (slab/segment/writer.c): the stats segment's file,
 *       records and regions; taken last at fork, and by the slot-start hook
 *       under c_drain_lock. Its wr_lock (one per published cache, the
 *       record's writer) is a leaf under c_slab_lock or c_depot_lock.
 *    debug_lock (slab/debug-cache.c, uslab_cache_set_debug) comes before
 *    all of these; the sample pool's and the stack depot's locks
 *    (sample.c, audit.c) are leaves above meta_lock.
 *    arena_lock (slab/pcpu-arena.c) sits between the cache locks and
 *    seg_lock: a slot's arena is chosen at create, and the counters
 *    provider (the segment) is called under it. meta_lock (slab/meta.c),
 *    the library's own memory, is a leaf under any of them. fork() takes
 *    them in that order after the caches': arena_lock, seg_lock,
 *    meta_lock.
 *    Page sources, ctors and dtors are called with no uslab lock held (a
 *    dtor may free into any cache, a ctor allocate from one). The magazine
 *    caches are allocated from and freed to only through their slab layer,
 *    under no other lock, and created only by uslab_cache_create().
 *    fork(): the prepare handler takes all of them in this order, cache by
 *    cache, then the three global ones; the child gets consistent structures, but objects that another
 *    thread was moving between layers at that moment (in a slow path's
 *    local buffer) belong to no layer in the child, so a child that
 *    destroys a cache it inherited may get EBUSY.
 *
 * 5. RCU (slab/rcu.c), beside the column like the debug layer: free_rcu
 *    batches objects per CPU into magazines that wait for a grace period
 *    (liburcu-bp's call_rcu) and then join the depot; a
 *    USLAB_TYPESAFE_BY_RCU cache's released slabs wait the same way,
 *    through the slab layer's c_slab_retire. Destroy quiesces both first.
 *    Lock order: rcu_lock (its cache list) after cache_list_lock; the rcu
 *    slot locks are leaves. liburcu is never called with a uslab lock
 *    held; at fork its helpers run before any is taken. The registry
 *    itself is walked under cache_list_lock.
 *
 * 6. Fast-path contract: see slab/arch/fastpath.h. A hit takes no lock and
 *    executes no atomic read-modify-write.
 *
 * 7. Debug modes: USLAB_NOMAGAZINE sends every operation to the slab layer,
 *    where frees are checked at once (foreign pointer, double free).
 *    Otherwise the checks run when objects return to their slabs.
 *
 * 8. Observing: uslab_cache_stats() and uslab_slabinfo() (slab/stats.c),
 *    USDT probes on slow-path events (slab/probes.h), and the live segment
 *    that uslabtop reads (slab/segment/).
 *
 * 9. Signals: in the rseq mode a hit is async-signal-safe (a signal aborts
 *    an rseq section, it cannot corrupt it); a miss takes mutexes, and so
 *    does every operation of the locked mode (its slot lock). So the API
 *    as a whole is not async-signal-safe.
 */

struct uslab_lock cache_list_lock = USLAB_LOCK_INITIALIZER; /* the registry list */
struct uslab_cache *cache_list;                             /* under cache_list_lock */

/* This thread walks the registry (uslab_foreach_cache() holds
 * cache_list_lock around its callbacks): nested walks, counts and fork()
 * go on without taking the lock again; create and destroy refuse. And a
 * fork() that found it so skipped the lock. Initial-exec TLS. */
static __thread unsigned cache_walking __attribute__((tls_model("initial-exec")));
static __thread bool cache_fork_skipped __attribute__((tls_model("initial-exec")));

/* Reclaim passes in progress, process-wide (uslab_cache_destroy waits for
 * none to run), and whether this thread runs one. */
static uint64_t cache_reclaiming;
static __thread bool cache_in_reclaim __attribute__((tls_model("initial-exec")));

/* ---- The registry lock, for the walks (stats.c) ---- */

bool cache_list_enter(void)
{
	if (cache_walking != 0)
		return false; /* held by this very thread, around a callback */
	lock_take(&cache_list_lock);
	return true;
}

void cache_list_leave(bool took)
{
	if (took)
		lock_drop(&cache_list_lock);
}

void cache_walk_begin(bool took)
{
	cache_walking++;
	/* The callbacks may allocate and free: nothing those need is this
	 * lock, so a signal handler in a callback need not hold back. */
	if (took)
		pgsrc_busy_leave();
}

void cache_walk_end(bool took)
{
	if (took)
		pgsrc_busy_enter();
	cache_walking--;
}

bool cache_walk_possible(void)
{
	return cache_walking != 0 || pgsrc_busy == 0;
}

/* ---- Fork ---- */

/* Every lock is taken before fork and released on both sides, so the child
 * inherits consistent caches whatever other threads were doing. */
static void cache_atfork_prepare(void)
{
	/* fork() in a walk's callback: this thread holds the registry. */
	cache_fork_skipped = cache_walking != 0;
	rcu_atfork_prepare();   /* liburcu's helpers, before any uslab lock */
	debug_atfork_prepare(); /* above every cache lock (set_debug) */
	if (!cache_fork_skipped)
		lock_take(&cache_list_lock);
	rcu_atfork_locks();
	for (struct uslab_cache *c = cache_list; c != NULL; c = c->c_next) {
		pcpu_lock_all(c);
		rcu_lock_all(c);
		depot_lock(c);
		slab_lock_all(c);
	}
	arena_atfork_prepare();  /* no arena half made */
	seg_atfork_prepare();    /* holds seg_lock: no record or mapping half made */
	sample_atfork_prepare(); /* leaves: no sample or stack half made */
	audit_atfork_prepare();
	meta_atfork_prepare(); /* the leaf under all: last */
}

static void cache_atfork_release(void)
{
	for (struct uslab_cache *c = cache_list; c != NULL; c = c->c_next) {
		slab_unlock_all(c);
		depot_unlock(c);
		rcu_unlock_all(c);
		pcpu_unlock_all(c);
	}
	if (!cache_fork_skipped)
		lock_drop(&cache_list_lock);
	debug_atfork_release();
}

static void cache_atfork_parent(void)
{
	meta_atfork_release();
	audit_atfork_release();
	sample_atfork_release();
	seg_atfork_parent();
	arena_atfork_release();
	cache_atfork_release();
	rcu_atfork_parent();
	pcpu_deferred_flush();
}

/* The child publishes none of the caches it inherited (their figures are
 * the parent's record): they lose their observer first, then the writer
 * makes the counters it shared private, before anything can touch them. */
static void cache_atfork_child(void)
{
	meta_atfork_release();
	audit_atfork_release();
	sample_atfork_release();
	for (struct uslab_cache *c = cache_list; c != NULL; c = c->c_next) {
		c->c_obs = NULL;
		c->c_obs_rec = NULL;
	}
	seg_atfork_child();
	arena_atfork_child();
	cache_atfork_release();
	rcu_atfork_child();
	/* The child has this thread only: its pass, if it forked in one. */
	__atomic_store_n(&cache_reclaiming, cache_in_reclaim ? 1 : 0, __ATOMIC_RELAXED);
	pcpu_deferred_flush();
}

/* ---- Reclaim (uslab.h: uslab_cache_reclaim) ---- */

#define RECLAIM_BATCH 64

static bool cache_registry_busy(void);

/* Reap every cache, call the reclaim callbacks with no uslab lock held
 * (RECLAIM_BATCH at a time, taken under the registry lock with the pass
 * counted, so that a cache destroyed meanwhile waits for its callback),
 * and reap again what they freed. (size_t)-1 when it cannot run here. */
static size_t cache_reclaim_pass(void)
{
	struct {
		void (*fn)(void *);
		void *arg;
	} cb[RECLAIM_BATCH];

	if (cache_in_reclaim || cache_registry_busy())
		return (size_t)-1;
	cache_in_reclaim = true;
	size_t bytes = uslab_reap_all();
	const struct uslab_cache *from = NULL; /* the last cache called */
	for (;;) {
		size_t n = 0;
		lock_take(&cache_list_lock);
		const struct uslab_cache *c = cache_list;
		if (from != NULL) { /* still listed: go on after it, else from the top */
			const struct uslab_cache *f = cache_list;
			while (f != NULL && f != from)
				f = f->c_next;
			c = f != NULL ? f->c_next : cache_list;
		}
		for (; c != NULL && n < RECLAIM_BATCH; c = c->c_next)
			if (c->c_reclaim != NULL) {
				cb[n].fn = c->c_reclaim;
				cb[n++].arg = c->c_arg;
				from = c;
			}
		if (n != 0)
			__atomic_fetch_add(&cache_reclaiming, 1, __ATOMIC_ACQ_REL);
		lock_drop(&cache_list_lock);
		for (size_t i = 0; i < n; i++)
			cb[i].fn(cb[i].arg);
		if (n != 0)
			__atomic_fetch_sub(&cache_reclaiming, 1, __ATOMIC_ACQ_REL);
		if (n < RECLAIM_BATCH)
			break;
	}
	bytes += uslab_reap_all();
	cache_in_reclaim = false;
	return bytes;
}

/* See include/uslab.h */
size_t uslab_cache_reclaim(void)
{
	size_t bytes = cache_reclaim_pass();

	if (bytes == (size_t)-1) {
		errno = EDEADLK;
		return 0;
	}
	return bytes;
}

/* Wire the observers once, before the first cache (and so before the
 * first arena): the writer learns the slot bound and the mode, provides
 * the arenas' counters, and removes its locator before a misuse abort. */
static void cache_once_init(void)
{
	pcpu_init();
	seg_configure(pcpu_slots(), uslab_mode());
	arena_set_counters_ops(&seg_counters);
	pcpu_set_mode_hook(seg_mode_changed);
	pcpu_set_rcu_hook(uslab_cache_free_rcu); /* a handler's deferred free_rcu (rcu.c §6) */
	__atomic_store_n(&slab_reclaim_hook, cache_reclaim_pass, __ATOMIC_RELEASE);
	debug_before_abort = seg_before_abort;
	os_atfork(cache_atfork_prepare, cache_atfork_parent, cache_atfork_child);
}

static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

__attribute__((constructor)) static void cache_init(void)
{
	pthread_once(&cache_once, cache_once_init);
}

void cache_ensure_init(void)
{
	pthread_once(&cache_once, cache_once_init);
}

/* ---- Create and destroy ---- */

static struct uslab_cache *cache_create(const char *name, size_t size,
                                        const struct uslab_cache_conf *conf, unsigned internal);
static int cache_destroy(struct uslab_cache *c);
static void cache_teardown(struct uslab_cache *c);
static size_t cache_reap(struct uslab_cache *c);

/* Create the magazine caches that @c's depot may ask for, unless they
 * exist. Only from uslab_cache_create(), before @c is listed: never from an
 * alloc or a free, which may run where cache_list_lock is held (a
 * uslab_foreach_cache() callback). No lock of its own: two racing threads
 * may both create one, and the loser destroys its own, never handed out.
 * Out of memory leaves a class without a cache: its magazines then go
 * to the slabs. */
static void cache_mag_create(const struct uslab_cache *c)
{
	unsigned lo, hi;

	if ((c->c_flags & USLAB_NOMAGAZINE) != 0)
		return;
	depot_mag_classes(c, &lo, &hi);
	for (unsigned k = lo; k <= hi; k++) {
		if (depot_mag_cache(k) != NULL)
			continue;
		char name[USLAB_NAME_MAX + 1];
		snprintf(name, sizeof name, "uslab_magazine_%u", (unsigned)depot_mag_rounds(k));
		/* Their slabs hold the pointers allocations hand out: in the
		 * guarded metadata, out of every object's reach. */
		struct uslab_cache *mc =
			cache_create(name, depot_mag_bytes(k),
		                     &(struct uslab_cache_conf){.flags = USLAB_NOMAGAZINE,
		                                                .pagesrc = meta_pagesrc()},
		                     CACHE_INTERNAL);
		if (mc != NULL && !depot_mag_register(k, mc))
			cache_destroy(mc);
	}
}

/* Publish @c in the stats segment (it may stay unpublished: stats off, no
 * space); either way the writer never sees @c itself. */
static void cache_publish(struct uslab_cache *c)
{
	struct seg_info info = {
		.si_name = c->c_name,
		.si_obj_size = c->c_size,
		.si_slot_size = c->c_slot,
		.si_align = c->c_align,
		.si_slab_size = c->c_slab_size,
		.si_flags = c->c_flags & USLAB_FLAGS_MASK,
		.si_objs_per_slab = c->c_slab_objs,
		.si_mag_size = c->c_mag_size,
		.si_mag_max = c->c_mag_max,
		.si_ctr_index = c->c_place.pl_index,
		.si_rcu_cap = c->c_rcu_cap,
	};
	uint64_t off, stride;
	if (arena_counters_in_file(&c->c_place, &off, &stride))
		info.si_ctr_base = off - (uint64_t)info.si_ctr_index * sizeof(struct pcpu_counters);
	c->c_obs_rec = seg_cache_publish(&info);
	c->c_obs = c->c_obs_rec != NULL ? &seg_obs : NULL;
}

/* A name that slabinfo and the misuse reports can print as it is: not
 * empty, no control character and no whitespace (slabinfo's columns are
 * separated by spaces and have no quoting). */
static bool cache_name_ok(const char *name)
{
	if (name == NULL || name[0] == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* What cannot run here: in a walk's callback (this thread holds the
 * registry), or in a signal handler that interrupted uslab on this thread
 * while it held a lock. */
static bool cache_registry_busy(void)
{
	return cache_walking != 0 || pgsrc_busy != 0;
}

/* See include/uslab.h */
struct uslab_cache *uslab_cache_create(const char *name, size_t size,
                                       const struct uslab_cache_conf *conf)
{
	static const struct uslab_cache_conf defaults;
	int old;

	if (conf == NULL)
		conf = &defaults;
	if ((conf->flags & ~USLAB_FLAGS_MASK) != 0 || !cache_name_ok(name)) {
		errno = EINVAL;
		return NULL;
	}
	if ((conf->flags & USLAB_TYPESAFE_BY_RCU) != 0 && !rcu_available()) {
		errno = ENOSYS; /* no RCU on this system (Windows: rcu-absent.c) */
		return NULL;
	}
	if (cache_registry_busy()) {
		errno = EDEADLK;
		return NULL;
	}
	/* No cancellation point may act while a uslab lock is held. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	struct uslab_cache *c = cache_create(name, size, conf, 0);
	int err = errno;
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
	errno = err;
	return c;
}

static struct uslab_cache *cache_create(const char *name, size_t size,
                                        const struct uslab_cache_conf *conf, unsigned internal)
{
	pthread_once(&cache_once, cache_once_init);
	if (name == NULL || size == 0 || size > USLAB_MAX_SIZE ||
	    (conf->align & (conf->align - 1)) != 0 || conf->align > pgsrc_page_size()) {
		errno = EINVAL;
		return NULL;
	}
	/* USLAB_DEBUG adds to what the program asked for; poison does not
	 * apply to a cache with a ctor (uslab.h). */
	unsigned flags = conf->flags | internal;
	if (internal == 0)
		flags |= debug_conf_flags(name) & ~(conf->ctor != NULL ? USLAB_DEBUG_POISON : 0u);
	struct uslab_cache *c = meta_alloc(sizeof *c); /* zeroed, guarded, no malloc */
	if (c == NULL)
		return NULL; /* ENOMEM */
	if (!slab_cache_init(c, name, size, conf, flags)) {
		meta_free(c, sizeof *c);
		return NULL; /* errno EINVAL */
	}
	c->c_limit_hit = conf->limit_hit;
	c->c_reclaim = conf->reclaim;
	c->c_move = conf->move;
	depot_init(c);
	rcu_cache_init(c);
	if (internal == 0)
		cache_mag_create(c); /* before @c: creation order lists them first */
	if (pcpu_cache_init(c) != 0) {
		depot_fini(c);
		slab_cache_fini(c);
		meta_free(c, sizeof *c);
		errno = ENOMEM;
		return NULL;
	}
	if (debug_cache_init(c, flags) != 0) {
		int err = errno;
		cache_teardown(c);
		errno = err;
		return NULL;
	}
	cache_publish(c);

	lock_take(&cache_list_lock);
	c->c_next = cache_list;
	if (cache_list != NULL)
		cache_list->c_prev = c;
	cache_list = c;
	lock_drop(&cache_list_lock);
	PROBE3(cache_create, c, c->c_name, size);
	return c;
}

/* See include/uslab.h */
int uslab_cache_destroy(struct uslab_cache *c)
{
	int old;

	if (c == NULL) {
		errno = EINVAL;
		return -1;
	}
	if ((c->c_flags & CACHE_INTERNAL) != 0 || c->c_kmalloc != 0) {
		errno = EPERM; /* a magazine cache (the depots point at it) or a size class */
		return -1;
	}
	if (cache_registry_busy() || cache_in_reclaim) { /* a reclaim pass waits for none */
		errno = EDEADLK;
		return -1;
	}
	if (slab_in_callback(c))
		uslab_report(c, NULL, USLAB_E_REENTRY);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	int ret = cache_destroy(c);
	int err = errno;
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
	errno = err;
	return ret;
}

/* Undo a create that failed after the per-CPU layer's part. */
static void cache_teardown(struct uslab_cache *c)
{
	debug_cache_fini(c);
	pcpu_cache_fini(c);
	depot_fini(c);
	slab_cache_fini(c);
	meta_free(c, sizeof *c);
}

static int cache_destroy(struct uslab_cache *c)
{
	/* Objects waiting for a grace period come back first (EDEADLK inside
	 * a read-side section, where no grace period can end). */
	if (rcu_cache_quiesce(c) != 0)
		return -1;
	/* Nobody uses the cache while it is destroyed (uslab.h): the slots are
	 * emptied without fencing anyone. */
	pcpu_drain(c, true);
	depot_drain(c);
	if (slab_inuse(c) != 0 || __atomic_load_n(&c->c_sampled, __ATOMIC_RELAXED) != 0) {
		/* With the audit on, say which (as uslab_cache_validate does). */
		if ((__atomic_load_n(&c->c_debug, __ATOMIC_RELAXED) & USLAB_DEBUG_AUDIT) != 0)
			(void)validate_leaks(c, stderr);
		errno = EBUSY;
		return -1;
	}
	/* From here on the cache is dying: a dtor that uses it is reported (the
	 * fast path misses, and the slow paths check). */
	pcpu_cache_stop(c);
	lock_take(&cache_list_lock);
	if (c->c_prev != NULL)
		c->c_prev->c_next = c->c_next;
	else
		cache_list = c->c_next;
	if (c->c_next != NULL)
		c->c_next->c_prev = c->c_prev;
	lock_drop(&cache_list_lock);
	/* A reclaim pass may be calling its callback, with its argument. */
	while (__atomic_load_n(&cache_reclaiming, __ATOMIC_ACQUIRE) != 0)
		sched_yield();

	PROBE2(cache_destroy, c, c->c_name);
	rcu_cache_unlist(c); /* no flusher reports to the record any more */
	/* The record goes first: the writer retires it while the cache's
	 * counters are still where the record says. */
	void *rec = c->c_obs_rec;
	c->c_obs = NULL;
	c->c_obs_rec = NULL;
	seg_cache_retire(rec);
	slab_release_all(c);
	rcu_cache_fini(c); /* a type-safe cache's slabs: after their grace period */
	cache_teardown(c);
	return 0;
}

/* ---- Objects ---- */

#if !USLAB_HAVE_ASM
/* Without the asm (other architectures, -Dasm=disabled) every operation is
 * a "miss": the locked mode serves it from the slot under its lock. With
 * the asm these two are defined in arch/x86_64.S. */

/* See include/uslab.h */
void *uslab_cache_alloc(struct uslab_cache *c)
{
	return __atomic_load_n(&c->c_alloc_miss, __ATOMIC_ACQUIRE)(c);
}

/* See include/uslab.h */
void uslab_cache_free(struct uslab_cache *c, void *obj)
{
	if (obj != NULL)
		__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE)(c, obj); /* checks the object */
}
#endif

/* See include/uslab.h */
size_t uslab_cache_alloc_bulk(struct uslab_cache *c, void **objs, size_t n)
{
	if (c == NULL || (objs == NULL && n != 0)) {
		errno = EINVAL;
		return 0;
	}
	/* the per-CPU layer's, or the debug layer's: switched while others run */
	return __atomic_load_n(&c->c_alloc_bulk, __ATOMIC_ACQUIRE)(c, objs, n);
}

/* See include/uslab.h */
void uslab_cache_free_bulk(struct uslab_cache *c, void **objs, size_t n)
{
	if (c == NULL || (objs == NULL && n != 0)) {
		errno = EINVAL;
		return;
	}
	__atomic_load_n(&c->c_free_bulk, __ATOMIC_ACQUIRE)(c, objs, n);
}

/* See include/uslab.h */
size_t uslab_cache_reap(struct uslab_cache *c)
{
	int old;

	if (c == NULL) {
		errno = EINVAL;
		return 0;
	}
	if (slab_in_callback(c))
		uslab_report(c, NULL, USLAB_E_REENTRY);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	size_t bytes = cache_reap(c);
	/* The magazine structures the drain gave up: their own cache's pages,
	 * not counted as this cache's. */
	depot_mag_reap();
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
	return bytes;
}

/* The reap of one cache, with the registry held or not. */
static size_t cache_reap(struct uslab_cache *c)
{
	size_t bytes = rcu_cache_reap(c); /* partial rcu magazines: submitted */
	bytes += pcpu_drain(c, false);
	bytes += depot_drain(c);
	pcpu_sweep(c); /* after this, the slabs the drains emptied may go */
	bytes += slab_reap(c);
	PROBE2(reap, c, bytes);
	return bytes;
}

/* See include/uslab.h */
size_t uslab_reap_all(void)
{
	int old;

	if (cache_registry_busy()) {
		errno = EDEADLK;
		return 0;
	}
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	size_t bytes = 0;
	lock_take(&cache_list_lock);
	for (struct uslab_cache *c = cache_list; c != NULL; c = c->c_next)
		bytes += cache_reap(c);
	lock_drop(&cache_list_lock);
	depot_mag_reap(); /* the magazine structures the drains gave up */
	meta_trim();      /* and the headers' spare blocks */
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
	return bytes;
}

/* See include/uslab.h */
const char *uslab_cache_name(const struct uslab_cache *c)
{
	if (c == NULL) {
		errno = EINVAL;
		return NULL;
	}
	return c->c_name;
}

/* See include/uslab.h */
size_t uslab_cache_size(const struct uslab_cache *c)
{
	if (c == NULL) {
		errno = EINVAL;
		return 0;
	}
	return c->c_size;
}

bool cache_is_valid(struct uslab_cache *c)
{
	return slab_cache_is_valid(c) && depot_is_valid(c) && pcpu_is_valid(c);
}
