/* SPDX-License-Identifier: MIT */
/* RCU where it is absent (Windows): no grace periods, so nothing waits for one. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "internal.h"

/*
 * Design
 *
 * rcu.c is built on liburcu-bp, which has no Windows port, so on Windows
 * the build takes this file. Without an RCU flavour there is no read-side
 * section for uslab to wait on, and nothing safe to do with an object
 * freed "after a grace period" that no one can define: uslab_cache_free_rcu()
 * keeps the object (never reused: no reader can see it change), counts it
 * in the cache's rcu figures (objects waiting, never done) and sets
 * ENOSYS, and says so once on stderr. USLAB_TYPESAFE_BY_RCU caches are
 * refused at create (ENOSYS, cache.c asks rcu_available()). Everything
 * else here has nothing to do.
 */

bool rcu_available(void)
{
	return false;
}

void rcu_cache_init(struct uslab_cache *c)
{
	(void)c;
}

size_t rcu_cache_reap(struct uslab_cache *c)
{
	(void)c;
	return 0;
}

int rcu_cache_quiesce(struct uslab_cache *c)
{
	(void)c;
	return 0;
}

void rcu_cache_unlist(struct uslab_cache *c)
{
	(void)c;
}

void rcu_cache_fini(struct uslab_cache *c)
{
	(void)c;
}

void rcu_counts(struct uslab_cache *c, struct rcu_counts *out)
{
	memset(out, 0, sizeof *out);
	out->rc_objs = __atomic_load_n(&c->c_rcu_queued, __ATOMIC_RELAXED) > 0
	                       ? (uint64_t)__atomic_load_n(&c->c_rcu_queued, __ATOMIC_RELAXED)
	                       : 0;
}

void rcu_atfork_prepare(void)
{
}

void rcu_atfork_locks(void)
{
}

void rcu_atfork_parent(void)
{
}

void rcu_atfork_child(void)
{
}

void rcu_lock_all(struct uslab_cache *c)
{
	(void)c;
}

void rcu_unlock_all(struct uslab_cache *c)
{
	(void)c;
}

/* See include/uslab.h */
void uslab_cache_free_rcu(struct uslab_cache *cache, void *obj)
{
	static int said;
	static const char msg[] =
		"uslab: uslab_cache_free_rcu: no RCU on this system: the object is kept, not freed\n";

	if (cache == NULL) {
		errno = EINVAL;
		return;
	}
	if (obj == NULL)
		return;
	__atomic_fetch_add(&cache->c_rcu_queued, 1, __ATOMIC_RELAXED);
	if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
		os_write_stderr(msg, sizeof msg - 1);
	errno = ENOSYS;
}

/* See include/uslab.h */
void uslab_rcu_barrier(void)
{
}
