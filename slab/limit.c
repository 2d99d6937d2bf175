/* SPDX-License-Identifier: MIT */
/* Per-cache limits: the count of objects a limited cache has handed out. */
#include "config.h"

#include <errno.h>

#include "internal.h"

/*
 * Design
 *
 * A cache with a limit (uslab_cache_set_limit, slab/memory.c) takes the
 * debug layer's route (debug-cache.c §1): its hits miss, and every
 * allocation and free of it passes here, so the count is exact with the
 * magazines on: one atomic add per operation, on c_limit_held, which
 * counts the objects the program holds (objects parked in magazines are
 * not held). An allocation adds first and undoes when the sum is past
 * the limit, so no interleaving of threads hands out max + 1 objects.
 *
 * At the limit, the conf's limit_hit runs (no uslab lock is held on this
 * path: a miss is called without one, and pgsrc_busy says when a signal
 * handler interrupted uslab, where it is not called) and the allocation
 * is retried once. A nested refusal inside the callback is not called
 * back again (limit_calling).
 */

static __thread unsigned limit_calling __attribute__((tls_model("initial-exec")));

bool limit_take(struct uslab_cache *c)
{
	uint64_t max = __atomic_load_n(&c->c_limit, __ATOMIC_ACQUIRE);

	for (int tries = 0; max != 0; tries++) {
		int64_t held = __atomic_add_fetch(&c->c_limit_held, 1, __ATOMIC_RELAXED);
		if (held <= (int64_t)max)
			return true;
		__atomic_sub_fetch(&c->c_limit_held, 1, __ATOMIC_RELAXED);
		void (*hit)(struct uslab_cache *, void *) = c->c_limit_hit;
		if (tries > 0 || hit == NULL || limit_calling != 0 || pgsrc_busy != 0)
			break;
		limit_calling++;
		hit(c, c->c_arg);
		limit_calling--;
		max = __atomic_load_n(&c->c_limit, __ATOMIC_ACQUIRE);
	}
	if (max == 0)
		return true;
	__atomic_fetch_add(&c->c_limit_fail, 1, __ATOMIC_RELAXED);
	PROBE2(alloc_fail, c, ENOBUFS);
	errno = ENOBUFS;
	return false;
}

void limit_put(struct uslab_cache *c)
{
	if (__atomic_load_n(&c->c_limit, __ATOMIC_RELAXED) != 0)
		__atomic_sub_fetch(&c->c_limit_held, 1, __ATOMIC_RELAXED);
}
