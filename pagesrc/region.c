/* SPDX-License-Identifier: MIT */
/* A page source over a caller's region: size-aligned blocks from a free-page bitmap. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "pagesrc.h"

/*
 * Design
 *
 * The region [base, base + len) is the caller's: a static array, a
 * hugetlbfs or shared-memory mapping it made, or (inside uslab) a guarded
 * chunk of metadata. The source keeps all its bookkeeping at the start of
 * the region: a header and a bitmap with one bit per page of the rest (bit
 * set: the page is free), so it calls no malloc and maps nothing. A block
 * of 2^k pages must be aligned to its size in the address space (the slab
 * layer finds a slab with a mask), so get() looks at the candidate
 * addresses that are multiples of the size, next-fit from where the last
 * block was found, and takes the first whose pages are all free. put()
 * sets the bits again, so freed blocks coalesce by themselves and are
 * reused. The cost is a scan of the bitmap (a word per 64 pages) on a
 * slab's creation, never on an object's allocation.
 *
 * The lock is a pthread mutex counted in the thread's pgsrc_busy
 * (pagesrc.h), like every uslab lock, so a signal handler that interrupted
 * a get() or put() never waits for it.
 */

struct region {
	struct uslab_pagesrc r_src; /* what the caller gets; r_src.arg == this */
	pthread_mutex_t r_lock;     /* r_bits, r_hint, r_free */
	uintptr_t r_first;          /* address of page 0 of the bitmap */
	size_t r_pages;             /* pages after the header */
	size_t r_page;              /* the page size */
	size_t r_hint;              /* next-fit: the page to look from */
	size_t r_free;              /* free pages */
	uint64_t r_bits[];          /* bit i set: page i is free */
};

/* Are bits [i, i + n) of @bits all set? */
static bool region_all_set(const uint64_t *bits, size_t i, size_t n)
{
	while (n != 0) {
		size_t w = i / 64, b = i % 64;
		size_t k = 64 - b < n ? 64 - b : n;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
		if ((bits[w] & mask) != mask)
			return false;
		i += k;
		n -= k;
	}
	return true;
}

/* Are bits [i, i + n) of @bits all clear? */
static bool region_all_clear(const uint64_t *bits, size_t i, size_t n)
{
	while (n != 0) {
		size_t w = i / 64, b = i % 64;
		size_t k = 64 - b < n ? 64 - b : n;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
		if ((bits[w] & mask) != 0)
			return false;
		i += k;
		n -= k;
	}
	return true;
}

/* Set (@on) or clear bits [i, i + n). */
static void region_set(uint64_t *bits, size_t i, size_t n, bool on)
{
	while (n != 0) {
		size_t w = i / 64, b = i % 64;
		size_t k = 64 - b < n ? 64 - b : n;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
		bits[w] = on ? bits[w] | mask : bits[w] & ~mask;
		i += k;
		n -= k;
	}
}

static void *region_get(void *arg, size_t size)
{
	struct region *r = arg;

	if (size < r->r_page || (size & (size - 1)) != 0) {
		errno = EINVAL;
		return NULL;
	}
	size_t n = size / r->r_page;
	pgsrc_busy_enter();
	pthread_mutex_lock(&r->r_lock);
	/* Candidates: page indices whose address is a multiple of @size. */
	uintptr_t first = (r->r_first + size - 1) & ~(uintptr_t)(size - 1);
	size_t p0 = (first - r->r_first) / r->r_page;
	void *block = NULL;
	if (n <= r->r_free && p0 < r->r_pages && n <= r->r_pages - p0) {
		size_t last = r->r_pages - n; /* largest start index */
		size_t count = (last - p0) / n + 1;
		size_t start = r->r_hint > p0 ? (r->r_hint - p0) / n : 0;
		for (size_t t = 0; t < count; t++) {
			size_t p = p0 + ((start + t) % count) * n;
			if (region_all_set(r->r_bits, p, n)) {
				region_set(r->r_bits, p, n, false);
				r->r_free -= n;
				r->r_hint = p + n;
				block = (void *)(r->r_first + p * r->r_page);
				break;
			}
		}
	}
	pthread_mutex_unlock(&r->r_lock);
	pgsrc_busy_leave();
	if (block == NULL)
		errno = ENOMEM;
	return block;
}

static void region_put(void *arg, void *block, size_t size)
{
	struct region *r = arg;
	uintptr_t a = (uintptr_t)block;

	/* A block this source did not give out is ignored, never set free. */
	if (size < r->r_page || (size & (size - 1)) != 0 || (a & (size - 1)) != 0 ||
	    a < r->r_first || (a - r->r_first) / r->r_page + size / r->r_page > r->r_pages)
		return;
	size_t p = (a - r->r_first) / r->r_page, n = size / r->r_page;
	pgsrc_busy_enter();
	pthread_mutex_lock(&r->r_lock);
	if (region_all_clear(r->r_bits, p, n)) { /* else a block never given out */
		region_set(r->r_bits, p, n, true);
		r->r_free += n;
	}
	pthread_mutex_unlock(&r->r_lock);
	pgsrc_busy_leave();
}

/* See include/uslab.h */
struct uslab_pagesrc *uslab_pagesrc_region(void *base, size_t len)
{
	size_t page = pgsrc_page_size();
	uintptr_t a = (uintptr_t)base;

	if (base == NULL || (a & (page - 1)) != 0 || len < page || len > ((size_t)1 << 46)) {
		errno = EINVAL;
		return NULL;
	}
	len &= ~(page - 1);
	/* Header pages: the struct and a bit for each page that follows. */
	size_t total = len / page, hdr = 1;
	while (hdr < total &&
	       (sizeof(struct region) + ((total - hdr + 63) / 64) * 8 + page - 1) / page > hdr)
		hdr++;
	/* Not even one block of the smallest slab: a 64 KiB block must be
	 * aligned to 64 KiB, so 16 pages after the header are not enough
	 * when they straddle a 64 KiB boundary. */
	const size_t min = (size_t)1 << PGSRC_MIN_BLOCK_SHIFT;
	uintptr_t first = a + hdr * page, end = a + len;
	uintptr_t slot = (first + min - 1) & ~(uintptr_t)(min - 1);
	if (total <= hdr || slot < first || slot > end || end - slot < min) {
		errno = EINVAL;
		return NULL;
	}
	struct region *r = base;
	memset(r, 0, sizeof *r);
	r->r_first = a + hdr * page;
	r->r_pages = total - hdr;
	r->r_page = page;
	r->r_free = r->r_pages;
	memset(r->r_bits, 0, ((r->r_pages + 63) / 64) * 8);
	region_set(r->r_bits, 0, r->r_pages, true);
	pthread_mutex_init(&r->r_lock, NULL);
	r->r_src.name = "region";
	r->r_src.get = region_get;
	r->r_src.put = region_put;
	r->r_src.purge = NULL;
	r->r_src.arg = r;
	return &r->r_src;
}
