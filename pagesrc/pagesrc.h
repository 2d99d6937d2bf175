/* SPDX-License-Identifier: MIT */
/* The page-source contract: size-aligned power-of-two blocks of pages. */
#ifndef USLAB_PAGESRC_H
#define USLAB_PAGESRC_H

/*
 * Design
 *
 * A page source (struct uslab_pagesrc, public in include/uslab.h) hands out
 * blocks of 2^k pages aligned to their own size, so that the slab layer finds
 * an object's slab with a mask. The slab layer never calls a source's
 * callbacks directly: it goes through pgsrc_get()/pgsrc_put()/pgsrc_purge(),
 * which keep the process-wide byte counts (mapped, returned) that the stats
 * report. Counts are relaxed atomics: the slow path is the only caller.
 *
 * The default source (mmap.c) maps anonymous memory. See mmap.c for why it
 * maps at a hint first and trims only when the kernel's answer is not
 * aligned. The others, one a file: region.c (a caller's memory, no system
 * call), brk.c (the program break, beside glibc's malloc), hugepage.c
 * (2 MiB areas: hugetlb, THP or plain pages). None calls malloc. On
 * Windows the default is virtualalloc.c and the three Linux sources answer
 * ENOSYS (absent.c); os.h is the platform layer below them all.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uslab.h"

/* The smallest block the slab layer asks for: 64 KiB (SLAB_MIN_SHIFT). */
#define PGSRC_MIN_BLOCK_SHIFT 16

struct pgsrc_totals {
	uint64_t pt_got;      /* bytes handed out by get(), ever */
	uint64_t pt_put;      /* bytes given back by put(), ever */
	uint64_t pt_purged;   /* bytes purged, ever */
	uint64_t pt_failures; /* get() calls that returned NULL */
	uint64_t pt_calls;    /* system calls of the library's own sources */
};

/** The library's own sources count each system call they make here. */
void pgsrc_count_call(void);

/*
 * The re-entry guard (DESIGN.md §8). pgsrc_busy counts, per thread, the
 * uslab locks it holds (every layer's, the library's own page sources'
 * included). A signal handler that interrupted this thread inside uslab
 * sees it non-zero: the slow paths then fail an allocation or defer a free
 * instead of waiting for a lock that the interrupted code holds. It lives
 * here, in the lowest layer, because every layer takes locks.
 * Initial-exec TLS: no allocation, no call, async-signal-safe.
 */
extern __thread unsigned pgsrc_busy __attribute__((tls_model("initial-exec")));

static inline void pgsrc_busy_enter(void)
{
	pgsrc_busy++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST); /* before the lock is taken */
}

static inline void pgsrc_busy_leave(void)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST); /* after the lock is dropped */
	pgsrc_busy--;
}

/* Set while pgsrc_purge() calls a source's purge for a caller that wants
 * the memory back at once: the library's sources drop the pages then
 * (MADV_DONTNEED), not lazily. */
extern __thread bool pgsrc_purge_now __attribute__((tls_model("initial-exec")));

/** Bytes the brk source dropped from reuse because its table of free
 *  ranges was full (brk.c, Design 4). */
uint64_t pgsrc_brk_lost(void);

/**
 * Decide again what the hugepage source maps (hugepage.c, Design 2), from
 * the files under @root instead of / ("" or NULL: the real ones; the tests
 * pass a directory with their own proc/ and sys/ files). Only while it has
 * no area mapped: else NULL with EBUSY. Returns the new mode string.
 */
const char *pgsrc_hugepage_decide(const char *root);

/** A block of @size bytes aligned to @size from @src, or NULL. */
void *pgsrc_get(const struct uslab_pagesrc *src, size_t size);
/** Give back a block that pgsrc_get() returned from the same @src. */
void pgsrc_put(const struct uslab_pagesrc *src, void *block, size_t size);
/** Tell @src the contents of [@block, @block + @size) (page-aligned, inside
 *  a block it gave out) are no longer needed; the block stays in use.
 *  @now: the caller wants the memory back at once (a reap): the mmap
 *  source then drops the pages with MADV_DONTNEED instead of MADV_FREE.
 *  errno is kept. */
void pgsrc_purge(const struct uslab_pagesrc *src, void *block, size_t size, bool now);
/** The system's default source: mmap.c's on Linux, virtualalloc.c's on Windows. */
const struct uslab_pagesrc *pgsrc_default(void);
/** Read the process-wide totals. */
void pgsrc_totals(struct pgsrc_totals *out);
/** The system page size. */
size_t pgsrc_page_size(void);

#endif /* USLAB_PAGESRC_H */
