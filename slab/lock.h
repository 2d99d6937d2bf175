/* SPDX-License-Identifier: MIT */
/* The library's mutex: a pthread mutex that knows its holder in debug builds. */
#ifndef USLAB_LOCK_H
#define USLAB_LOCK_H

#include "config.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

#include "../pagesrc/pagesrc.h"
#include "debug.h"

/*
 * Every uslab mutex is a struct uslab_lock. From debug level 2 it records
 * the thread that holds it, so a function named _locked can assert, as its
 * first line, that its caller holds the lock it needs (SLUB's
 * lockdep_assert_held): ASSERT_HELD(&c->c_slab_lock). Below level 2 the
 * owner is never written and the checks compile to nothing. The holder is
 * a pthread_t (no syscall); the fork child's only thread keeps its value.
 *
 * Every lock also counts in the thread's pgsrc_busy (pagesrc.h) from just
 * before it is taken to just after it is dropped: a signal handler running
 * on the same thread in between sees that uslab is busy here.
 */

struct uslab_lock {
	pthread_mutex_t l_mutex;
	pthread_t l_owner; /* debug level >= 2: the holder while l_held */
	int l_held;        /* debug level >= 2: 1 while held */
};

#define USLAB_LOCK_INITIALIZER                                                                     \
	{                                                                                          \
		PTHREAD_MUTEX_INITIALIZER, 0, 0                                                    \
	}

static const bool lock_track = USLAB_DEBUG_LEVEL >= 2;

static inline void lock_init(struct uslab_lock *l)
{
	pthread_mutex_init(&l->l_mutex, NULL);
	l->l_held = 0;
}

static inline void lock_fini(struct uslab_lock *l)
{
	pthread_mutex_destroy(&l->l_mutex);
}

static inline void lock_mark(struct uslab_lock *l)
{
	if (lock_track) {
		__atomic_store_n(&l->l_owner, pthread_self(), __ATOMIC_RELAXED);
		__atomic_store_n(&l->l_held, 1, __ATOMIC_RELAXED);
	}
}

static inline void lock_take(struct uslab_lock *l)
{
	pgsrc_busy_enter();
	pthread_mutex_lock(&l->l_mutex);
	lock_mark(l);
}

/* Take @l if it is free; true when taken. */
static inline bool lock_try(struct uslab_lock *l)
{
	pgsrc_busy_enter();
	if (pthread_mutex_trylock(&l->l_mutex) != 0) {
		pgsrc_busy_leave();
		return false;
	}
	lock_mark(l);
	return true;
}

static inline void lock_drop(struct uslab_lock *l)
{
	if (lock_track)
		__atomic_store_n(&l->l_held, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&l->l_mutex);
	pgsrc_busy_leave();
}

/* Whether this thread holds @l (meaningful from debug level 2). */
static inline bool lock_is_held(const struct uslab_lock *l)
{
	return __atomic_load_n(&l->l_held, __ATOMIC_RELAXED) != 0 &&
	       pthread_equal(__atomic_load_n(&l->l_owner, __ATOMIC_RELAXED), pthread_self());
}

#define ASSERT_HELD(l)                                                                             \
	((USLAB_DEBUG_LEVEL < 2 || lock_is_held(l))                                                \
	         ? (void)0                                                                         \
	         : uslab_assert_fail("held: " #l, __FILE__, __LINE__))

/*
 * Spinlocks in one word, for per-CPU structures whose critical sections are
 * a few stores (the locked mode's slots, pcpu.c; the rcu slots, rcu.c): the
 * lock is one exchange and the unlock a release store, where a pthread
 * mutex costs an atomic read-modify-write each way. Indexed by the CPU the
 * thread runs on, two threads meet on one only when one was preempted or
 * migrated inside: the waiter spins briefly, then yields the CPU to the
 * holder (16 threads on 2 CPUs run the stress suite through this). They
 * count in pgsrc_busy like the mutexes.
 */
#define SPIN_SPINS 128

static inline void spin_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield" ::: "memory");
#endif
}

static inline void spin_wait(uint32_t *l)
{
	unsigned spins = 0;

	do {
		while (__atomic_load_n(l, __ATOMIC_RELAXED) != 0) {
			if (++spins < SPIN_SPINS)
				spin_relax();
			else
				sched_yield();
		}
	} while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) != 0);
}

static inline void spin_take(uint32_t *l)
{
	pgsrc_busy_enter();
	if (__builtin_expect(__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) != 0, 0))
		spin_wait(l);
}

/* Take @l if it is free (never waits: for signal handlers). */
static inline bool spin_try(uint32_t *l)
{
	pgsrc_busy_enter();
	if (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) == 0)
		return true;
	pgsrc_busy_leave();
	return false;
}

static inline void spin_drop(uint32_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
	pgsrc_busy_leave();
}

#endif /* USLAB_LOCK_H */
