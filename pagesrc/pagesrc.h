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
 * aligned.
 */

#include <stddef.h>
#include <stdint.h>

#include "uslab.h"

struct pgsrc_totals {
	uint64_t pt_got;      /* bytes handed out by get(), ever */
	uint64_t pt_put;      /* bytes given back by put(), ever */
	uint64_t pt_purged;   /* bytes purged, ever */
	uint64_t pt_failures; /* get() calls that returned NULL */
};

/** A block of @size bytes aligned to @size from @src, or NULL. */
void *pgsrc_get(const struct uslab_pagesrc *src, size_t size);
/** Give back a block that pgsrc_get() returned from the same @src. */
void pgsrc_put(const struct uslab_pagesrc *src, void *block, size_t size);
/** Tell @src the contents of @block are no longer needed (it stays mapped). */
void pgsrc_purge(const struct uslab_pagesrc *src, void *block, size_t size);
/** Read the process-wide totals. */
void pgsrc_totals(struct pgsrc_totals *out);
/** The system page size. */
size_t pgsrc_page_size(void);

#endif /* USLAB_PAGESRC_H */
