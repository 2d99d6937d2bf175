/* SPDX-License-Identifier: MIT */
/* The default page source: anonymous private mappings. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
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
	pgsrc_count_call();
	char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t start = ((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1);
	size_t head = start - (uintptr_t)raw;
	size_t tail = len - head - size;
	if (head != 0) {
		pgsrc_count_call();
		munmap(raw, head);
	}
	if (tail != 0) {
		pgsrc_count_call();
		munmap((char *)start + size, tail);
	}
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
		pgsrc_count_call();
		p = mmap((void *)(hint - size), size, PROT_READ | PROT_WRITE,
		         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			p = NULL;
		} else if (((uintptr_t)p & (size - 1)) != 0) {
			pgsrc_count_call();
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
	pgsrc_count_call();
	munmap(block, size);
}

/*
 * Purge. MADV_FREE by default: the kernel takes the pages when it needs
 * memory (until then they still count in the RSS, as LazyFree in
 * /proc/<pid>/smaps), and a page written before that comes back without a
 * fault. USLAB_PURGE=dontneed (read once) uses MADV_DONTNEED: the RSS falls
 * at once, and each page costs a fault and zeroing when it is used again.
 * A kernel without MADV_FREE (before 4.5) gets MADV_DONTNEED, and so does
 * a caller that wants the memory back at once (pgsrc_purge_now: a reap).
 */
static int mm_advice; /* 0: not read yet */

static void mm_purge(void *arg, void *block, size_t size)
{
	int advice = __atomic_load_n(&mm_advice, __ATOMIC_RELAXED);

	(void)arg;
	if (advice == 0) {
		const char *env = secure_getenv("USLAB_PURGE");
		advice = env != NULL && strcmp(env, "dontneed") == 0 ? MADV_DONTNEED : MADV_FREE;
		__atomic_store_n(&mm_advice, advice, __ATOMIC_RELAXED);
	}
	if (pgsrc_purge_now)
		advice = MADV_DONTNEED;
	pgsrc_count_call();
	if (madvise(block, size, advice) != 0 && errno == EINVAL && advice == MADV_FREE) {
		__atomic_store_n(&mm_advice, MADV_DONTNEED, __ATOMIC_RELAXED); /* no MADV_FREE */
		pgsrc_count_call();
		(void)madvise(block, size, MADV_DONTNEED);
	}
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

const struct uslab_pagesrc *pgsrc_default(void)
{
	return &mm_source;
}
