/* SPDX-License-Identifier: MIT */
/* USDT probes (provider "uslab") on slow-path events; never on the fast path. */
#ifndef USLAB_PROBES_H
#define USLAB_PROBES_H

#include "config.h"

/*
 * Each probe is a nop until a tracer arms it (perf probe sdt_uslab:NAME).
 * Arguments are plain integers or pointers.
 *
 *   cache_create(cache, name, size)     cache_destroy(cache, name)
 *   slab_grow(cache, slab, bytes)        slab_release(cache, slab, bytes)
 *   depot_get(cache, rounds)             depot_put(cache, rounds)
 *   mag_resize(cache, old_size, new_size)
 *   reap(cache, bytes)                   alloc_fail(cache, errno)
 *   error(cache, obj, code)              (misuse report, just before abort)
 *   rcu_submit(cache, objects)           rcu_wait(cache, objects waiting)
 *   rcu_retire(cache, slabs)             (slab/rcu.c)
 */
#if USLAB_HAVE_SDT
#if defined(__clang__)
/* <sys/sdt.h> expands variadic macros with no variadic arguments. */
#pragma clang diagnostic ignored "-Wgnu-zero-variadic-macro-arguments"
#endif
#include <sys/sdt.h>
#define PROBE2(n, a, b) STAP_PROBE2(uslab, n, a, b)
#define PROBE3(n, a, b, c) STAP_PROBE3(uslab, n, a, b, c)
#else
#define PROBE2(n, a, b) ((void)(a), (void)(b))
#define PROBE3(n, a, b, c) ((void)(a), (void)(b), (void)(c))
#endif

#endif /* USLAB_PROBES_H */
