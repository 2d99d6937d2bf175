/* SPDX-License-Identifier: MIT */
/* The default page source on Windows: VirtualAlloc and VirtualFree. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <windows.h>

#include "pagesrc.h"

/*
 * Design
 *
 * 1. One reservation per block. Windows releases only whole reservations
 *    (VirtualFree MEM_RELEASE takes the base and size 0), so a block that
 *    is its own reservation goes back exactly when the slab layer puts it;
 *    carving blocks out of one large reservation would keep that address
 *    space until every block of it is back, and needs a carver of our own.
 *
 * 2. Alignment. Reservations start at the allocation granularity (64 KiB
 *    on every Windows so far), which is the smallest block the slab layer
 *    asks for: a 64 KiB block costs one call. A larger one is placed like
 *    this: ask at the address just below the last block (blocks of one
 *    size fill downwards, each aligned when the first was); failing that,
 *    reserve size + alignment to find a free range, release it, and
 *    reserve the aligned block inside it. Another thread may take that
 *    range between the two calls, so this retries, a bounded number of
 *    times. (VirtualAlloc2's alignment request would do it in one call, but
 *    only from Windows 10 1803 on.)
 *
 * 3. Purge. MEM_RESET, the analogue of Linux's MADV_FREE: the contents
 *    no longer matter, and the system takes the pages without writing them
 *    to the page file. A caller that wants the memory back at once (a
 *    reap) adds VirtualUnlock, which on an unlocked range takes its pages
 *    out of the working set now. Not MEM_DECOMMIT: the block stays in use
 *    by its slab, and a commit refused afterwards (commit charge is a
 *    limit on Windows) would leave it faulting; DiscardVirtualMemory is
 *    Windows 8.1's and does the same as MEM_RESET here. Every call counts
 *    in pagesrc_calls.
 */

#define VA_PLACE_TRIES 8

static uintptr_t va_hint; /* the last block: a hint only, racy by design */

static void *va_reserve(void *at, size_t size)
{
	pgsrc_count_call();
	return VirtualAlloc(at, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
}

static void va_release(void *p)
{
	pgsrc_count_call();
	VirtualFree(p, 0, MEM_RELEASE);
}

/* A block aligned to @size, by finding a free range first (§2). */
static void *va_placed(size_t size)
{
	for (int i = 0; i < VA_PLACE_TRIES; i++) {
		pgsrc_count_call();
		char *raw = VirtualAlloc(NULL, 2 * size, MEM_RESERVE, PAGE_NOACCESS);
		if (raw == NULL)
			return NULL;
		uintptr_t start = ((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1);
		va_release(raw);
		void *p = va_reserve((void *)start, size);
		if (p != NULL)
			return p;
	}
	return NULL;
}

static void *va_get(void *arg, size_t size)
{
	(void)arg;
	if (size == 0 || (size & (size - 1)) != 0 || size > ((size_t)1 << 40)) {
		errno = EINVAL;
		return NULL;
	}
	void *p = NULL;
	uintptr_t hint = __atomic_load_n(&va_hint, __ATOMIC_RELAXED);
	if (size <= ((size_t)1 << PGSRC_MIN_BLOCK_SHIFT)) {
		p = va_reserve(NULL, size);
		if (p != NULL && ((uintptr_t)p & (size - 1)) != 0) {
			va_release(p);
			p = NULL;
		}
	} else if (hint > size && (hint & (size - 1)) == 0) {
		p = va_reserve((void *)(hint - size), size);
	}
	if (p == NULL)
		p = va_placed(size);
	if (p == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	__atomic_store_n(&va_hint, (uintptr_t)p, __ATOMIC_RELAXED);
	return p;
}

static void va_put(void *arg, void *block, size_t size)
{
	(void)arg;
	(void)size;
	va_release(block);
}

static void va_purge(void *arg, void *block, size_t size)
{
	(void)arg;
	pgsrc_count_call();
	if (VirtualAlloc(block, size, MEM_RESET, PAGE_READWRITE) != NULL && pgsrc_purge_now) {
		pgsrc_count_call();
		(void)VirtualUnlock(block, size); /* "not locked" is its answer: expected */
	}
}

static const struct uslab_pagesrc va_source = {
	.name = "virtualalloc",
	.get = va_get,
	.put = va_put,
	.purge = va_purge,
	.arg = NULL,
};

/* See include/uslab.h */
const struct uslab_pagesrc *uslab_pagesrc_virtualalloc(void)
{
	return &va_source;
}

const struct uslab_pagesrc *pgsrc_default(void)
{
	return &va_source;
}
