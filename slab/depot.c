/* SPDX-License-Identifier: MIT */
/* The depot: a cache's full and empty magazines, between CPUs and slabs. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Design (Bonwick & Adams 2001, §3)
 *
 * The depot holds full magazines that per-CPU slots flushed and will
 * reload, under one lock per cache (c_depot_lock). A magazine is a
 * structure of M rounds (M = c_mag_size when it was made, or the batch it
 * holds if larger), an object of an internal cache per magazine size
 * ("uslab_magazine_<rounds>", flag USLAB_NOMAGAZINE, so it has no depot
 * of its own), as libumem does, created with the first cache that can use
 * it. Up to DEPOT_SPARE_MAX spare structures are kept on c_mag_spare. A
 * depot full of magazines costs 8.25 bytes per object it holds (M = 64:
 * 16 + 8 * 64 bytes for 64 objects) until the working set or a reap gives
 * it back. Being slab objects, their pages go back when the depot gives
 * them up (reap trims those caches too), which malloc'd structures did
 * not: glibc kept 300 MB of them after a program freed 10 million
 * objects, so the depot had to be bounded, and a burst of frees beyond the
 * bound went to the slab layer one object at a time (batch100k 4x
 * mimalloc). The depot is now unbounded: the working set below trims it.
 *
 * Working set: an interval lasts DEPOT_INTERVAL_NS (read from the coarse
 * vDSO clock on each depot operation); when one ends, the full magazines
 * that stayed in the depot during the whole interval (the minimum of
 * c_nfull over it) were not needed: they go back to the slab layer. (The
 * first version ended an interval every 256 operations; a program freeing
 * 100,000 objects then sent most of them to the slabs while it was still
 * freeing, and took them back through the slab layer on the next cycle:
 * a third of the benchmark's batch100k time was slab_free_bulk.) So a
 * depot in use trims what it does not use without a timer thread; one
 * nobody touches keeps its
 * magazines until uslab_cache_reap(). The magazines released are taken
 * from the head of the list (the most recently filled); which ones go does
 * not matter for the count, only for how warm the objects left behind are.
 * An interval's end also folds the per-CPU hit counts due (pcpu.c), since
 * a CPU that never misses would not.
 *
 * Magazine size: M = c_mag_size rounds per magazine (per-CPU slots hold
 * 2M). It starts from the object size and doubles, up to c_mag_max, when
 * more than 1/DEPOT_CONTENTION_SHARE of the lock acquisitions in a window
 * of DEPOT_CONTENTION_WINDOW operations had to wait: bigger magazines mean
 * fewer trips to the depot. It never shrinks
 * (left for later: shrinking needs a working-set signal that small
 * magazines would do as well).
 */

#define DEPOT_INTERVAL_NS 1000000000ull
#define DEPOT_CONTENTION_WINDOW 256 /* depot operations */
#define DEPOT_CONTENTION_SHARE 8
#define DEPOT_SPARE_MAX 16

/* The magazine caches, one per size: 4 << k rounds for class k (every
 * c_mag_size and c_mag_max of depot_sizes is one of them), created by
 * depot_init() and kept for the life of the process. */
#define DEPOT_MAG_CLASSES 6
#define DEPOT_MAG_MIN 4
static struct uslab_cache *depot_mag_caches[DEPOT_MAG_CLASSES];

/* The class of the smallest magazine of at least @n rounds. */
static unsigned depot_mag_class(size_t n)
{
	unsigned k = 0;

	while (k + 1 < DEPOT_MAG_CLASSES && ((size_t)DEPOT_MAG_MIN << k) < n)
		k++;
	VERIFY(((size_t)DEPOT_MAG_MIN << k) >= n);
	return k;
}

/* Create the magazine cache of class @k unless it exists. Called only by
 * depot_init(), from uslab_cache_create() before the new cache is listed:
 * never from an alloc or a free, which may run where cache_list_lock is
 * held (a uslab_foreach_cache() callback). Holds no lock of its own (two
 * racing threads both create one; the loser destroys its own), so fork()
 * needs no handler for it. */
static void depot_mag_create(unsigned k)
{
	struct uslab_cache *mc = __atomic_load_n(&depot_mag_caches[k], __ATOMIC_ACQUIRE);
	if (mc != NULL)
		return;
	uint32_t rounds = DEPOT_MAG_MIN << k;
	char name[USLAB_NAME_MAX + 1];
	snprintf(name, sizeof name, "uslab_magazine_%u", (unsigned)rounds);
	mc = cache_create(name, sizeof(struct mag) + (size_t)rounds * sizeof(void *),
	                  &(struct uslab_cache_conf){.flags = USLAB_NOMAGAZINE}, CACHE_INTERNAL);
	if (mc == NULL)
		return; /* out of memory: that size's magazines go to the slabs */
	struct uslab_cache *none = NULL;
	if (!__atomic_compare_exchange_n(&depot_mag_caches[k], &none, mc, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE))
		cache_destroy(mc); /* ours: never handed out */
}

/* A magazine of at least @n rounds (n <= c_mag_max, whose class depot_init
 * created); NULL when out of memory. */
static struct mag *depot_mag_alloc(size_t n)
{
	unsigned k = depot_mag_class(n);
	struct uslab_cache *mc = __atomic_load_n(&depot_mag_caches[k], __ATOMIC_ACQUIRE);
	struct mag *m = mc != NULL ? uslab_cache_alloc(mc) : NULL;

	if (m != NULL)
		m->m_cap = DEPOT_MAG_MIN << k;
	return m;
}

/* A magazine structure back to its cache (it exists, since @m came from it). */
static void depot_mag_free(struct mag *m)
{
	if (m != NULL)
		uslab_cache_free(depot_mag_caches[depot_mag_class(m->m_cap)], m);
}

void depot_mag_reap(void)
{
	for (unsigned k = 0; k < DEPOT_MAG_CLASSES; k++) {
		struct uslab_cache *mc = __atomic_load_n(&depot_mag_caches[k], __ATOMIC_ACQUIRE);
		if (mc != NULL)
			slab_reap(mc);
	}
}

/* Starting and largest magazine sizes by slot size: small objects get more
 * rounds, so a magazine holds a few KiB at most. */
static void depot_sizes(size_t slot, uint32_t *start, uint32_t *max)
{
	if (slot <= 256) {
		*start = 64; /* batch1k: 18% faster than 32 (a depot trip per 64) */
		*max = 128;
	} else if (slot <= 1024) {
		*start = 16;
		*max = 64;
	} else if (slot <= 8192) {
		*start = 8;
		*max = 32;
	} else {
		*start = 4;
		*max = 8;
	}
}

int depot_init(struct uslab_cache *c)
{
	depot_sizes(c->c_slot, &c->c_mag_size, &c->c_mag_max);
	/* Every magazine size this depot can ask for: from M (spares never
	 * go below it) up to the largest batch, c_mag_max. */
	if ((c->c_flags & USLAB_NOMAGAZINE) == 0)
		for (unsigned k = depot_mag_class(c->c_mag_size);
		     k <= depot_mag_class(c->c_mag_max); k++)
			depot_mag_create(k);
	return pthread_mutex_init(&c->c_depot_lock, NULL) == 0 ? 0 : -1;
}

void depot_fini(struct uslab_cache *c)
{
	struct mag *m;

	while ((m = c->c_mag_spare) != NULL) {
		c->c_mag_spare = m->m_next;
		depot_mag_free(m);
	}
	c->c_nempty = 0;
	pthread_mutex_destroy(&c->c_depot_lock);
}

void depot_lock(struct uslab_cache *c)
{
	pthread_mutex_lock(&c->c_depot_lock);
}

void depot_unlock(struct uslab_cache *c)
{
	pthread_mutex_unlock(&c->c_depot_lock);
}

/* Take c_depot_lock, counting a contention when it had to wait. */
static void depot_enter(struct uslab_cache *c)
{
	if (pthread_mutex_trylock(&c->c_depot_lock) != 0) {
		pthread_mutex_lock(&c->c_depot_lock);
		c->c_ws_contended++;
		c->c_depot_contended++;
	}
}

/* Publish the depot's figures to the stats segment and drop c_depot_lock. */
static void depot_leave(struct uslab_cache *c)
{
	seg_depot_publish_locked(c);
	pthread_mutex_unlock(&c->c_depot_lock);
}

/* Count one operation; at the end of an interval, detach the full magazines
 * unused through it (returned as a chain), adapt the magazine size and set
 * *@ended. */
static struct mag *depot_tick_locked(struct uslab_cache *c, bool *ended)
{
	struct mag *idle = NULL;

	if (c->c_nfull < c->c_ws_min_full)
		c->c_ws_min_full = c->c_nfull;
	/* Contention is judged over a window of operations, so magazines grow
	 * within milliseconds of a fight over the lock, not a second later. */
	if (++c->c_ws_ops >= DEPOT_CONTENTION_WINDOW) {
		if (c->c_ws_contended * DEPOT_CONTENTION_SHARE > c->c_ws_ops &&
		    c->c_mag_size < c->c_mag_max)
			__atomic_store_n(&c->c_mag_size, c->c_mag_size * 2, __ATOMIC_RELAXED);
		c->c_ws_ops = 0;
		c->c_ws_contended = 0;
	}
	uint64_t now = uslab_coarse_ns();
	if (now - c->c_ws_start < DEPOT_INTERVAL_NS)
		return NULL;
	*ended = true;
	c->c_ws_start = now;
	for (uint64_t n = c->c_ws_min_full; n > 0; n--) {
		struct mag *m = c->c_mag_full;
		c->c_mag_full = m->m_next;
		c->c_nfull--;
		c->c_depot_objs -= m->m_count;
		m->m_next = idle;
		idle = m;
	}
	c->c_ws_min_full = c->c_nfull;
	return idle;
}

/* Send a chain of full magazines to the slab layer and keep (or free) the
 * structures. No lock held on entry or exit. */
static size_t depot_release(struct uslab_cache *c, struct mag *chain)
{
	size_t bytes = 0;

	while (chain != NULL) {
		struct mag *m = chain;
		chain = m->m_next;
		bytes += slab_free_bulk(c, m->m_rounds, m->m_count);
		depot_enter(c);
		if (c->c_nempty < DEPOT_SPARE_MAX) {
			m->m_next = c->c_mag_spare;
			c->c_mag_spare = m;
			c->c_nempty++;
			m = NULL;
		}
		depot_leave(c);
		depot_mag_free(m);
	}
	return bytes;
}

size_t depot_get_full(struct uslab_cache *c, void **buf)
{
	depot_enter(c);
	struct mag *m = c->c_mag_full;
	if (m != NULL) {
		c->c_mag_full = m->m_next;
		c->c_nfull--;
		c->c_depot_objs -= m->m_count;
	}
	bool ended = false;
	struct mag *idle = depot_tick_locked(c, &ended);
	size_t n = 0;
	if (m != NULL) {
		n = m->m_count;
		memcpy(buf, m->m_rounds, n * sizeof(void *));
		if (c->c_nempty < DEPOT_SPARE_MAX) {
			m->m_next = c->c_mag_spare;
			c->c_mag_spare = m;
			c->c_nempty++;
			m = NULL;
		}
	}
	uint32_t want = c->c_mag_size;
	depot_leave(c);
	depot_mag_free(m); /* beyond the spares kept */
	depot_release(c, idle);
	if (ended)
		pcpu_fold_due(c); /* a second of depot activity: a slot may be due */
	PROBE2(depot_get, c, n);
	if (n == 0)
		n = slab_alloc_bulk(c, buf, want);
	return n;
}

void depot_put_full(struct uslab_cache *c, void *const *buf, size_t n)
{
	if (n == 0)
		return;
	depot_enter(c);
	struct mag *m = c->c_mag_spare;
	if (m != NULL) {
		c->c_mag_spare = m->m_next;
		c->c_nempty--;
	}
	size_t want = n > c->c_mag_size ? n : c->c_mag_size;
	depot_leave(c);
	if (m != NULL && m->m_cap < want) { /* made before M grew */
		depot_mag_free(m);
		m = NULL;
	}
	if (m == NULL)
		m = depot_mag_alloc(want);
	if (m == NULL) { /* out of memory: straight to the slabs */
		slab_free_bulk(c, buf, n);
		return;
	}
	memcpy(m->m_rounds, buf, n * sizeof(void *));
	m->m_count = (uint32_t)n;
	PROBE2(depot_put, c, n);
	depot_enter(c);
	m->m_next = c->c_mag_full;
	c->c_mag_full = m;
	c->c_nfull++;
	c->c_depot_objs += n;
	bool ended = false;
	struct mag *idle = depot_tick_locked(c, &ended);
	depot_leave(c);
	depot_release(c, idle);
	if (ended)
		pcpu_fold_due(c);
}

size_t depot_drain(struct uslab_cache *c)
{
	depot_enter(c);
	struct mag *all = c->c_mag_full;
	c->c_mag_full = NULL;
	c->c_nfull = 0;
	c->c_depot_objs = 0;
	c->c_ws_min_full = 0;
	depot_leave(c);
	size_t bytes = depot_release(c, all);
	/* And the spare structures (depot_release kept some): reap gives
	 * back everything unused. */
	depot_enter(c);
	struct mag *spare = c->c_mag_spare;
	c->c_mag_spare = NULL;
	c->c_nempty = 0;
	depot_leave(c);
	while (spare != NULL) {
		struct mag *m = spare;
		spare = m->m_next;
		depot_mag_free(m);
	}
	return bytes;
}

uint64_t depot_objects(struct uslab_cache *c, uint64_t *full, uint64_t *spare)
{
	pthread_mutex_lock(&c->c_depot_lock);
	uint64_t n = c->c_depot_objs;
	*full = c->c_nfull;
	*spare = c->c_nempty;
	pthread_mutex_unlock(&c->c_depot_lock);
	return n;
}
