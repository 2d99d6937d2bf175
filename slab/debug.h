/* SPDX-License-Identifier: MIT */
/* Assertions and the one-line misuse report. */
#ifndef USLAB_DEBUG_H
#define USLAB_DEBUG_H

#include "config.h"

#include <stdbool.h>

struct uslab_cache;

/* What went wrong, for uslab_report(). The names are printed. */
enum uslab_error {
	USLAB_E_FOREIGN,    /* pointer is not inside any slab of the cache */
	USLAB_E_BOUNDARY,   /* pointer is inside a slab but not at an object's start */
	USLAB_E_DUPFREE,    /* object is already free */
	USLAB_E_REENTRY,    /* the cache used from its own ctor or dtor, or while destroyed */
	USLAB_E_DEFER,      /* too many frees in a signal handler while uslab was busy */
	USLAB_E_ASSERT,     /* an internal invariant failed */
	USLAB_E_REDZONE,    /* the bytes after an object were written (detail: the offset) */
	USLAB_E_POISON,     /* a free object was written (detail: offset and bytes) */
	USLAB_E_LEAK,       /* an object still allocated (listed, not aborted) */
	USLAB_E_SLAB,       /* a slab's bitmap and counts disagree (validate) */
	USLAB_E_RCU_READER, /* a wait for a grace period inside a read-side section */
	USLAB_E_RCU_NOMEM,  /* free_rcu with no memory, where it cannot wait either */
};

/**
 * Report misuse or corruption in one line on stderr, naming the cache and the
 * object, then abort(). Async-signal-safe (write(2) only).
 */
__attribute__((noreturn, cold)) void uslab_report(const struct uslab_cache *cache, const void *obj,
                                                  enum uslab_error err);
/** The same with a detail, in parentheses after the kind ("red zone
 *  overwritten (offset 72)"); @detail may be NULL. */
__attribute__((noreturn, cold)) void uslab_report_detail(const struct uslab_cache *cache,
                                                         const void *obj, enum uslab_error err,
                                                         const char *detail);
/** The report line itself (with its newline), into @buf; its length. For
 *  reports that do not abort (uslab_cache_validate). */
size_t uslab_report_line(char *buf, size_t cap, const struct uslab_cache *cache, const void *obj,
                         enum uslab_error err, const char *detail);

/* Called by uslab_report() after the line, before abort(), if set: the
 * debug layer prints the object's audit records (its last allocation and
 * free) to @fd. */
extern void (*debug_report_more)(const struct uslab_cache *cache, const void *obj, int fd);

__attribute__((noreturn, cold)) void uslab_assert_fail(const char *expr, const char *file,
                                                       int line);

/* Called by uslab_report() just before abort() (async-signal-safe), if
 * set: the registry points it at the segment writer, which removes its
 * locator, so a process killed by a misuse report leaves no stale file. */
extern void (*debug_before_abort)(void);

/* VERIFY is always on; ASSERT from debug level 1; ASSERT_EXPENSIVE (the
 * _is_valid() walkers) from level 3. Both branches always compile. */
#define VERIFY(e) ((e) ? (void)0 : uslab_assert_fail(#e, __FILE__, __LINE__))
#define ASSERT(e)                                                                                  \
	((USLAB_DEBUG_LEVEL < 1 || (e)) ? (void)0 : uslab_assert_fail(#e, __FILE__, __LINE__))
#define ASSERT_EXPENSIVE(e)                                                                        \
	((USLAB_DEBUG_LEVEL < 3 || (e)) ? (void)0 : uslab_assert_fail(#e, __FILE__, __LINE__))

#endif /* USLAB_DEBUG_H */
