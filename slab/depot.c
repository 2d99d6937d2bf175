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
 * holds if larger), an object of one of the library's magazine caches
 * ("uslab_magazine_<rounds>", one per size, flag USLAB_NOMAGAZINE, so they
 * have no depot of their own), as libumem does. The registry (cache.c)
 * creates them and registers them here; the depot takes and returns
 * magazine structures through their slab layer, never through the public
 * entry points, so a free never climbs back to the top of the stack.
 * Up to DEPOT_SPARE_MAX spare structures are kept on c_mag_spare. A depot
 * full of magazines costs a pointer per object it holds, plus a small
 * header per magazine, until the working set or a reap gives it back.
 * Being slab objects, the structures' pages go back when the depot gives
 * them up (reap trims those caches too), so the depot needs no bound of
 * its own: the working set below trims it.
 *
 * Working set: an interval lasts DEPOT_INTERVAL_NS (read from the coarse
 * vDSO clock on each depot operation); when one ends, the full magazines
 * that stayed in the depot during the whole interval (the minimum of
 * c_nfull over it) were not needed: they go back to the slab layer. The
 * interval is a time, not a count of operations: a program freeing a large
 * batch would otherwise send most of it to the slabs while it was still
 * freeing, and take it back through the slab layer on the next cycle. So
 * a depot in use trims what it does not use without a timer thread; one
 * nobody touches keeps its magazines until uslab_cache_reap(). The
 * magazines released are taken from the head of the list (the most
 * recently filled); which ones go does not matter for the count, only for
 * how warm the objects left behind are. get and put tell their caller when
 * an interval ended (the per-CPU layer folds its hit counts then, since a
 * CPU that never misses would not); the depot calls nothing above it.
 *
 * Magazine size: M = c_mag_size rounds per magazine (per-CPU slots hold
 * 2M). It starts from the object size and doubles, up to c_mag_max, when
 * more than 1/DEPOT_CONTENTION_SHARE of the lock acquisitions in a window
 * of DEPOT_CONTENTION_WINDOW operations had to wait: bigger magazines mean
 * fewer trips to the depot. When a whole interval passes without one
 * contention, it halves, down to where it started: the per-CPU arrays and
 * the depot's magazines follow (the slots at their next miss, the depot as
 * its working set turns over), so a cache that went quiet gives back the
 * memory its magazines took in a burst.
 *
 * Observing: before dropping c_depot_lock after a change, the depot
 * reports its figures (struct depot_counts, observe.h) to the cache's
 * observer.
 */

#define DEPOT_CONTENTION_WINDOW 256 /* depot operations */
#define DEPOT_CONTENTION_SHARE 8

/* The magazine caches by class, registered by cache.c and kept for the
 * life of the process. */
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

uint32_t depot_mag_rounds(unsigned k)
{
	return (uint32_t)DEPOT_MAG_MIN << k;
}

size_t depot_mag_bytes(unsigned k)
{
	return sizeof(struct mag) + (size_t)depot_mag_rounds(k) * sizeof(void *);
}

bool depot_mag_register(unsigned k, struct uslab_cache *mc)
{
	struct uslab_cache *none = NULL;

	VERIFY(k < DEPOT_MAG_CLASSES && mc->c_size >= depot_mag_bytes(k));
	return __atomic_compare_exchange_n(&depot_mag_caches[k], &none, mc, false, __ATOMIC_ACQ_REL,
	                                   __ATOMIC_ACQUIRE);
}

struct uslab_cache *depot_mag_cache(unsigned k)
{
	return k < DEPOT_MAG_CLASSES ? __atomic_load_n(&depot_mag_caches[k], __ATOMIC_ACQUIRE)
	                             : NULL;
}

/* A magazine of at least @n rounds; NULL when its class has no cache or
 * the cache has no memory (the caller then sends the objects to the
 * slabs). */
struct mag *depot_mag_get(size_t n)
{
	unsigned k = depot_mag_class(n);
	struct uslab_cache *mc = depot_mag_cache(k);
	void *m = NULL;

	if (mc == NULL || slab_alloc_bulk(mc, &m, 1) != 1)
		return NULL;
	((struct mag *)m)->m_cap = depot_mag_rounds(k);
	((struct mag *)m)->m_count = 0;
	((struct mag *)m)->m_floor = MAG_FLOOR;
	return m;
}

/* A magazine structure back to its cache (it exists, since @m came from it). */
void depot_mag_put(struct mag *m)
{
	if (m != NULL) {
		void *p = m;
		slab_free_bulk(depot_mag_caches[depot_mag_class(m->m_cap)], &p, 1);
	}
}

void depot_mag_reap(void)
{
	for (unsigned k = 0; k < DEPOT_MAG_CLASSES; k++) {
		struct uslab_cache *mc = depot_mag_cache(k);
		if (mc != NULL)
			slab_reap(mc);
	}
}

/* Starting and largest magazine sizes by slot size: small objects get more
 * rounds, so a magazine holds a few KiB at most. */
static void depot_sizes(size_t slot, uint32_t *start, uint32_t *max)
{
	if (slot <= 256) {
		*start = 64; /* half the depot trips of 32 on batches (README) */
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

/* The largest per-CPU cap (pcpu.c §7): PCPU_GROW_SLOT_BYTES of objects,
 * a power of two between 2 * @max and PCPU_GROW_ROUNDS. */
static uint32_t depot_slot_rounds(size_t slot, uint32_t max)
{
	uint32_t r = 2 * max;

	while (2 * r <= PCPU_GROW_ROUNDS && 2 * r * slot <= PCPU_GROW_SLOT_BYTES)
		r *= 2;
	return r;
}

void depot_init(struct uslab_cache *c)
{
	depot_sizes(c->c_slot, &c->c_mag_size, &c->c_mag_max);
	c->c_mag_min = c->c_mag_size;
	c->c_pcpu_rounds = depot_slot_rounds(c->c_slot, c->c_mag_max);
	c->c_ws_start = uslab_coarse_ns();
	lock_init(&c->c_depot_lock);
}

void depot_mag_classes(const struct uslab_cache *c, unsigned *lo, unsigned *hi)
{
	/* From M (spares never go below it) up to a per-CPU array of the
	 * largest cap (c_pcpu_rounds, depot_init). */
	*lo = depot_mag_class(c->c_mag_size);
	*hi = depot_mag_class(c->c_pcpu_rounds);
}

void depot_fini(struct uslab_cache *c)
{
	struct mag *m;

	while ((m = c->c_mag_spare) != NULL) {
		c->c_mag_spare = m->m_next;
		depot_mag_put(m);
	}
	c->c_nempty = 0;
	lock_fini(&c->c_depot_lock);
}

void depot_lock(struct uslab_cache *c)
{
	lock_take(&c->c_depot_lock);
}

void depot_unlock(struct uslab_cache *c)
{
	lock_drop(&c->c_depot_lock);
}

/* Take c_depot_lock, counting a contention when it had to wait. */
static void depot_enter(struct uslab_cache *c)
{
	if (!lock_try(&c->c_depot_lock)) {
		lock_take(&c->c_depot_lock);
		c->c_ws_contended++;
		c->c_ws_int_contended++;
		c->c_depot_contended++;
	}
}

/* The figures an observer gets, read under c_depot_lock. */
static void depot_counts_locked(const struct uslab_cache *c, struct depot_counts *out)
{
	ASSERT_HELD(&c->c_depot_lock);
	memset(out, 0, sizeof *out);
	out->dc_objs = c->c_depot_objs;
	out->dc_full = c->c_nfull;
	out->dc_empty = c->c_nempty;
	out->dc_contended = c->c_depot_contended;
	out->dc_mag_size = c->c_mag_size;
}

/* Report the depot's figures to the observer and drop c_depot_lock. */
static void depot_leave(struct uslab_cache *c)
{
	if (c->c_obs != NULL) {
		struct depot_counts dc;
		depot_counts_locked(c, &dc);
		obs_depot_locked(c, &dc);
	}
	lock_drop(&c->c_depot_lock);
}

/* Count one operation; at the end of an interval, detach the full magazines
 * unused through it (returned as a chain), adapt the magazine size and set
 * *@ended. */
static struct mag *depot_tick_locked(struct uslab_cache *c, bool *ended)
{
	struct mag *idle = NULL;

	ASSERT_HELD(&c->c_depot_lock);
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
	/* A whole interval without a fight over the lock: the cache went
	 * quiet, and its magazines step back down (the per-CPU layer follows
	 * at its next miss, pcpu_resize). */
	if (c->c_ws_int_contended == 0 && c->c_mag_size > c->c_mag_min) {
		PROBE3(mag_resize, c, c->c_mag_size, c->c_mag_size / 2);
		__atomic_store_n(&c->c_mag_size, c->c_mag_size / 2, __ATOMIC_RELAXED);
	}
	c->c_ws_int_contended = 0;
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
		depot_mag_put(m);
	}
	return bytes;
}

size_t depot_get_full(struct uslab_cache *c, void **buf, bool *ended)
{
	depot_enter(c);
	struct mag *m = c->c_mag_full;
	if (m != NULL) {
		c->c_mag_full = m->m_next;
		c->c_nfull--;
		c->c_depot_objs -= m->m_count;
	}
	*ended = false;
	struct mag *idle = depot_tick_locked(c, ended);
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
	depot_mag_put(m); /* beyond the spares kept */
	depot_release(c, idle);
	PROBE2(depot_get, c, n);
	if (n == 0)
		n = slab_alloc_bulk(c, buf, want);
	return n;
}

void depot_put_full(struct uslab_cache *c, void *const *buf, size_t n, bool *ended)
{
	*ended = false;
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
		depot_mag_put(m);
		m = NULL;
	}
	if (m == NULL)
		m = depot_mag_get(want);
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
	struct mag *idle = depot_tick_locked(c, ended);
	depot_leave(c);
	depot_release(c, idle);
}

bool depot_put_mag(struct uslab_cache *c, struct mag *m, uint64_t keep)
{
	bool ended = false;

	VERIFY(m->m_count > 0 && m->m_count <= c->c_mag_max && m->m_count <= m->m_cap);
	depot_enter(c);
	if (c->c_nfull >= keep) {
		depot_leave(c);
		return false;
	}
	PROBE2(depot_put, c, m->m_count);
	m->m_next = c->c_mag_full;
	c->c_mag_full = m;
	c->c_nfull++;
	c->c_depot_objs += m->m_count;
	struct mag *idle = depot_tick_locked(c, &ended);
	depot_leave(c);
	depot_release(c, idle);
	return true;
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
		depot_mag_put(m);
	}
	return bytes;
}

void depot_counts(struct uslab_cache *c, struct depot_counts *out)
{
	lock_take(&c->c_depot_lock);
	depot_counts_locked(c, out);
	lock_drop(&c->c_depot_lock);
}

/* ---- For the debug layer ---- */

bool depot_holds(struct uslab_cache *c, const void *obj)
{
	bool found = false;

	lock_take(&c->c_depot_lock);
	for (const struct mag *m = c->c_mag_full; m != NULL && !found; m = m->m_next)
		for (uint32_t i = 0; i < m->m_count && !found; i++)
			found = m->m_rounds[i] == obj;
	lock_drop(&c->c_depot_lock);
	return found;
}

void depot_lock_objects(struct uslab_cache *c, void (*fn)(void *obj, void *arg), void *arg)
{
	lock_take(&c->c_depot_lock);
	for (const struct mag *m = c->c_mag_full; m != NULL; m = m->m_next)
		for (uint32_t i = 0; i < m->m_count; i++)
			fn(m->m_rounds[i], arg);
}

void depot_unlock_objects(struct uslab_cache *c)
{
	lock_drop(&c->c_depot_lock);
}

/* ---- Validation ---- */

/* One list of magazines: its length and rounds, every magazine sane. */
static bool depot_list_is_valid(const struct mag *m, bool full, uint64_t *len, uint64_t *rounds)
{
	*len = *rounds = 0;
	for (; m != NULL; m = m->m_next) {
		unsigned k = depot_mag_class(m->m_cap);
		if (depot_mag_rounds(k) != m->m_cap || m->m_count > m->m_cap ||
		    (full && m->m_count == 0) || (*len)++ > (1ull << 40))
			return false;
		*rounds += m->m_count;
	}
	return true;
}

bool depot_is_valid(struct uslab_cache *c)
{
	uint64_t nfull, nspare, rounds, spare_rounds;

	lock_take(&c->c_depot_lock);
	bool ok = depot_list_is_valid(c->c_mag_full, true, &nfull, &rounds) &&
	          depot_list_is_valid(c->c_mag_spare, false, &nspare, &spare_rounds) &&
	          nfull == c->c_nfull && nspare == c->c_nempty && nspare <= DEPOT_SPARE_MAX &&
	          rounds == c->c_depot_objs && c->c_ws_min_full <= c->c_nfull &&
	          c->c_mag_size <= c->c_mag_max && c->c_mag_size >= DEPOT_MAG_MIN;
	lock_drop(&c->c_depot_lock);
	return ok;
}
