/* SPDX-License-Identifier: MIT */
/* The default page source: anonymous private mappings. */
#include "config.h"

#include <errno.h>
#include <sys/mman.h>

#include "pagesrc.h"

/*
 * Alignment. Slabs must be aligned to their size (a power of two, usually
 * 64 KiB or more) while mmap only promises page alignment. Two classic
 * answers: reserve one huge range and carve it (one syscall per block, but
 * the range must be managed and holes can only be reused by the carver), or
 * map twice the size and trim the ends (three syscalls per block). We do a
 * third thing: the kernel places anonymous mappings top-down, each just
 * below the previous one, so we ask for the address just below our last
 * block. When the answer is aligned (the common case once one block is
 * aligned: every block has the same or a larger power-of-two size) it costs
 * one syscall; otherwise we fall back to map-and-trim, which always works.
 * Adjacent anonymous mappings merge into one VMA, so neither path
 * multiplies kernel objects.
 */

/* Where the next block will probably fit; a hint only, racy by design. */
static uintptr_t mm_hint;

static void *mm_trimmed(size_t size)
{
	size_t len = size * 2;
	char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t start = ((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1);
	size_t head = start - (uintptr_t)raw;
	size_t tail = len - head - size;
	if (head != 0)
		munmap(raw, head);
	if (tail != 0)
		munmap((char *)start + size, tail);
	return (void *)start;
}

static void *mm_get(void *arg, size_t size)
{
	(void)arg;
	if (size == 0 || (size & (size - 1)) != 0 || size > ((size_t)1 << 40)) {
		errno = EINVAL;
		return NULL;
	}
	uintptr_t hint = __atomic_load_n(&mm_hint, __ATOMIC_RELAXED);
	void *p = NULL;
	if (hint != 0 && hint > size && (hint & (size - 1)) == 0) {
		p = mmap((void *)(hint - size), size, PROT_READ | PROT_WRITE,
		         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			p = NULL;
		} else if (((uintptr_t)p & (size - 1)) != 0) {
			munmap(p, size);
			p = NULL;
		}
	}
	if (p == NULL)
		p = mm_trimmed(size);
	if (p != NULL)
		__atomic_store_n(&mm_hint, (uintptr_t)p, __ATOMIC_RELAXED);
	return p;
}

static void mm_put(void *arg, void *block, size_t size)
{
	(void)arg;
	munmap(block, size);
}

static void mm_purge(void *arg, void *block, size_t size)
{
	(void)arg;
	madvise(block, size, MADV_DONTNEED);
}

static const struct uslab_pagesrc mm_source = {
	.name = "mmap",
	.get = mm_get,
	.put = mm_put,
	.purge = mm_purge,
	.arg = NULL,
};

/* See include/uslab.h */
const struct uslab_pagesrc *uslab_pagesrc_mmap(void)
{
	return &mm_source;
}
