/* SPDX-License-Identifier: MIT */
/* What ASan and valgrind's memcheck are told about cache objects. */
#ifndef USLAB_SANITIZE_H
#define USLAB_SANITIZE_H

#include "config.h"

#include <stddef.h>

/*
 * A free object sits in a magazine or its slab with its bytes intact (its
 * constructed state, Bonwick's contract), so a use after free reads or
 * writes memory that is still mapped and still looks like an object: no
 * tool can see it unless it is told. The debug layer (debug-cache.c) tells
 * them as an object leaves and enters the cache:
 *  - ASan builds: a free object is poisoned (ASAN_POISON_MEMORY_REGION:
 *    no byte changes, so the constructed state survives) and unpoisoned
 *    when it is handed out; the library's own accesses to free objects
 *    (the dtor's, a deferred free's link) unpoison first.
 *  - under valgrind (found at run time), an object handed out is a
 *    MALLOCLIKE block (defined when the cache has a ctor: its state is
 *    real), a freed one a FREELIKE block, NOACCESS: memcheck then reports
 *    a use after free and, at exit, the objects nobody points to as lost.
 * Outside those, every macro is nothing.
 */

#if defined(__SANITIZE_ADDRESS__)
#define USLAB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USLAB_ASAN 1
#endif
#endif
#ifndef USLAB_ASAN
#define USLAB_ASAN 0
#endif

#if USLAB_ASAN
#include <sanitizer/asan_interface.h>
#define SAN_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define SAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SAN_POISON(p, n) ((void)(p), (void)(n))
#define SAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#if USLAB_HAVE_VALGRIND_H
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define VG_RUNNING() (RUNNING_ON_VALGRIND != 0)
#define VG_MALLOCLIKE(p, n) VALGRIND_MALLOCLIKE_BLOCK((p), (n), 0, 0)
#define VG_FREELIKE(p) VALGRIND_FREELIKE_BLOCK((p), 0)
#define VG_NOACCESS(p, n) VALGRIND_MAKE_MEM_NOACCESS((p), (n))
#define VG_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#else
#define VG_RUNNING() 0
#define VG_MALLOCLIKE(p, n) ((void)(p), (void)(n))
#define VG_FREELIKE(p) ((void)(p))
#define VG_NOACCESS(p, n) ((void)(p), (void)(n))
#define VG_DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* Reading bytes another thread may own at that moment (validate, looking
 * at a red zone or a free object): a function with SAN_NO_ASAN, inside
 * SAN_PEEK_BEGIN/END, reads them without changing what either tool knows
 * of them (opening and closing them again would race with their owner). */
#if USLAB_ASAN
#define SAN_NO_ASAN __attribute__((no_sanitize_address))
#else
#define SAN_NO_ASAN
#endif
#if USLAB_HAVE_VALGRIND_H
#define SAN_PEEK_BEGIN() VALGRIND_DISABLE_ERROR_REPORTING
#define SAN_PEEK_END() VALGRIND_ENABLE_ERROR_REPORTING
#else
#define SAN_PEEK_BEGIN() ((void)0)
#define SAN_PEEK_END() ((void)0)
#endif

/* Before the library itself touches a free object's bytes (a dtor, a
 * link through it): make them accessible to both tools. */
#define SAN_OPEN(p, n)                                                                             \
	do {                                                                                       \
		SAN_UNPOISON((p), (n));                                                            \
		VG_DEFINED((p), (n));                                                              \
	} while (0)

#endif /* USLAB_SANITIZE_H */
