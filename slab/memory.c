/* SPDX-License-Identifier: MIT */
/* Memory on the program's terms: limits, reserves and compaction. */
#include "config.h"

#include <errno.h>
#include <pthread.h>

#include "internal.h"
#include "kmalloc.h"

/*
 * Design
 *
 * 1. Limits (uslab_cache_set_limit). The count lives in the routed path
 *    (limit.c); here the API: the count starts at the objects held now
 *    (the statistics' active_objs), and the debug layer re-routes the
 *    cache under its lock (debug_set_limit).
 *
 * 2. Reserves (uslab_cache_reserve). A reserve is objects taken in one
 *    bulk allocation into an array of its own (from the size classes); an
 *    allocation from it is a pop, so it cannot fail and takes no lock, and
 *    what is left goes back in one bulk free. The objects were allocated,
 *    so a limit counts them as held from the start: a reserve is how a
 *    critical section gets its objects before it commits to anything.
 *
 * 3. Compaction (uslab_cache_compact). The cache is reaped first (objects
 *    in magazines go back to their slabs, so the slabs' counts are the
 *    program's), then the slab layer takes the sparsest partial slabs off
 *    its lists (slab_compact_begin: as many as the others can absorb).
 *    For every object still out of a victim, a new object comes straight
 *    from the slab layer, which no longer offers the victims, and the
 *    owner's move callback decides: moved, the old one goes straight back
 *    to its victim; refused, the new one goes back. Neither passes a
 *    magazine, or the next new object would be the old one just freed.
 *    The debug layer sees both as they leave and enter (debug_obj_out,
 *    debug_obj_in). A limit's count does not change: the program holds as
 *    many objects after a move as before. Then the victims are listed
 *    again, and a reap releases the ones that became empty.
 */

/* See include/uslab.h */
int uslab_cache_set_limit(struct uslab_cache *c, size_t max_objs)
{
	struct uslab_stats st;

	if (c == NULL || c->c_kmalloc != 0 || (c->c_flags & CACHE_INTERNAL) != 0) {
		errno = EINVAL;
		return -1;
	}
	if (pgsrc_busy != 0) {
		errno = EDEADLK;
		return -1;
	}
	if (uslab_cache_stats(c, &st) != 0)
		return -1;
	return debug_set_limit(c, max_objs, st.active_objs);
}

/* ---- Reserves ---- */

#define RESERVE_MAX 65536u

struct uslab_reserve {
	struct uslab_cache *r_cache;
	uint32_t r_left; /* objects in r_objs[0 .. r_left) */
	void *r_objs[];
};

/* See include/uslab.h */
struct uslab_reserve *uslab_cache_reserve(struct uslab_cache *c, size_t n)
{
	if (c == NULL || n == 0 || n > RESERVE_MAX) {
		errno = EINVAL;
		return NULL;
	}
	struct uslab_reserve *r = uslab_alloc(sizeof *r + n * sizeof r->r_objs[0]);
	if (r == NULL)
		return NULL; /* ENOMEM */
	r->r_cache = c;
	size_t got = uslab_cache_alloc_bulk(c, r->r_objs, n);
	if (got < n) {
		int err = errno;
		uslab_cache_free_bulk(c, r->r_objs, got);
		uslab_free(r);
		errno = err;
		return NULL;
	}
	r->r_left = (uint32_t)n;
	return r;
}

/* See include/uslab.h */
void *uslab_reserve_alloc(struct uslab_reserve *r)
{
	if (r == NULL || r->r_left == 0) {
		errno = r == NULL ? EINVAL : ENOBUFS;
		return NULL;
	}
	return r->r_objs[--r->r_left];
}

/* See include/uslab.h */
size_t uslab_reserve_left(const struct uslab_reserve *r)
{
	return r != NULL ? r->r_left : 0;
}

/* See include/uslab.h */
size_t uslab_reserve_return(struct uslab_reserve *r)
{
	if (r == NULL)
		return 0;
	size_t left = r->r_left;
	uslab_cache_free_bulk(r->r_cache, r->r_objs, left);
	uslab_free(r);
	return left;
}

/* ---- Compaction ---- */

/* Evacuate one victim: the objects moved; *@err is set (ENOMEM) when no
 * new object could be had, and the pass stops there. */
static long compact_slab(struct uslab_cache *c, struct slab *s, void **objs, int *err)
{
	uint32_t n = slab_compact_objects(c, s, objs);
	long moved = 0;

	for (uint32_t i = 0; i < n; i++) {
		void *old = objs[i], *nw;
		if (slab_alloc_bulk(c, &nw, 1) != 1) {
			*err = errno;
			break;
		}
		nw = debug_obj_out(c, nw);
		void *back = c->c_move(old, nw, c->c_arg) == 0 ? old : nw;
		moved += back == old;
		debug_obj_in(c, back);
		slab_free_bulk(c, &back, 1);
	}
	return moved;
}

/* See include/uslab.h */
long uslab_cache_compact(struct uslab_cache *c)
{
	if (c == NULL || c->c_move == NULL || (c->c_flags & USLAB_TYPESAFE_BY_RCU) != 0 ||
	    c->c_kmalloc != 0 || (c->c_flags & CACHE_INTERNAL) != 0) {
		errno = EINVAL;
		return -1;
	}
	if (pgsrc_busy != 0 || slab_in_callback(c)) {
		errno = EDEADLK;
		return -1;
	}
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	(void)uslab_cache_reap(c);
	struct slab_counts sc;
	slab_counts(c, &sc);
	size_t cap = sc.sc_slabs != 0 ? sc.sc_slabs : 1;
	struct slab **victims = meta_alloc(cap * sizeof *victims);
	void **objs = meta_alloc((size_t)c->c_slab_objs * sizeof *objs);
	long moved = 0;
	int err = 0;
	if (victims == NULL || objs == NULL) {
		err = ENOMEM;
	} else {
		size_t n = slab_compact_begin(c, victims, cap);
		for (size_t i = 0; i < n && err == 0; i++)
			moved += compact_slab(c, victims[i], objs, &err);
		slab_compact_end(c, victims, n);
	}
	if (objs != NULL)
		meta_free(objs, (size_t)c->c_slab_objs * sizeof *objs);
	if (victims != NULL)
		meta_free(victims, cap * sizeof *victims);
	__atomic_fetch_add(&c->c_moved, (uint64_t)moved, __ATOMIC_RELAXED);
	(void)uslab_cache_reap(c); /* the victims emptied go back */
	pthread_setcancelstate(old, NULL);
	if (err != 0 && moved == 0) {
		errno = err;
		return -1;
	}
	return moved;
}
