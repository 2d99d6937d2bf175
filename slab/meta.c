/* SPDX-License-Identifier: MIT */
/* The library's own memory: guarded chunks that no object's overrun can reach. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/*
 * Design
 *
 * 1. Everything the allocator trusts lives here: slab headers and their
 *    free bitmaps, cache structures, the slab map's leaves, the slabs of
 *    the magazine caches (whose magazines hold the object pointers that
 *    allocations return), the segment writer's records. None of it is
 *    next to a program's objects: metadata comes in chunks of
 *    META_CHUNK_SIZE bytes, each a mapping of its own with an inaccessible
 *    guard page at both ends, so an overrun or underrun of an object in a
 *    neighbouring mapping faults on the guard instead of rewriting a list
 *    link or a bitmap (SLUB keeps struct slab in struct page for the same
 *    reason). Overruns inside a slab still damage other objects of that
 *    slab, never the allocator.
 *
 * 2. Inside a chunk, blocks are carved by a region page source
 *    (pagesrc/region.c), which keeps its bitmap in the chunk itself. Two
 *    interfaces sit on that:
 *    - meta_pagesrc(): size-aligned blocks, for the library's internal
 *      caches (the magazines);
 *    - meta_alloc()/meta_free(): zeroed structures in power-of-two classes
 *      from META_MIN to META_MAX bytes, carved from META_BLOCK-byte blocks
 *      and kept on a free list per class (reused, not unmapped), and larger
 *      ones as whole blocks.
 *    Nothing here calls malloc, so the library can serve malloc itself.
 *
 * 3. Lock: meta_lock covers the chunk list, the class lists and every call
 *    into a chunk's region (so holding it across fork keeps the regions
 *    whole too). It is a leaf: taken with any other uslab lock held, never
 *    around one.
 */

#define META_CHUNK_SIZE ((size_t)16 << 20)
#define META_BLOCK ((size_t)64 << 10)
#define META_MIN_SHIFT 6  /* 64 B */
#define META_MAX_SHIFT 15 /* 32 KiB */
#define META_CLASSES (META_MAX_SHIFT - META_MIN_SHIFT + 1)
#define META_MAX_CHUNKS 4096 /* 64 GiB of metadata */

/* A free structure on its class list (its memory is ours). */
struct meta_free {
	struct meta_free *f_next;
};

static struct uslab_lock meta_lock = USLAB_LOCK_INITIALIZER; /* everything below */
static char *meta_chunks[META_MAX_CHUNKS];                   /* chunk starts (guard page) */
static struct uslab_pagesrc *meta_regions[META_MAX_CHUNKS];  /* their region sources */
static unsigned meta_nchunks;
static struct meta_free *meta_lists[META_CLASSES];
static uint64_t meta_bytes; /* bytes of chunks mapped (atomic: read unlocked) */

/* ---- Chunks ---- */

/* Map a new chunk with its two guard pages; false when the kernel refuses. */
static bool meta_chunk_add_locked(void)
{
	ASSERT_HELD(&meta_lock);
	size_t page = pgsrc_page_size();
	if (meta_nchunks == META_MAX_CHUNKS)
		return false;
	char *p = mmap(NULL, META_CHUNK_SIZE, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return false;
	struct uslab_pagesrc *r = NULL;
	if (mprotect(p, page, PROT_NONE) != 0 ||
	    mprotect(p + META_CHUNK_SIZE - page, page, PROT_NONE) != 0 ||
	    (r = uslab_pagesrc_region(p + page, META_CHUNK_SIZE - 2 * page)) == NULL) {
		munmap(p, META_CHUNK_SIZE);
		return false;
	}
	meta_chunks[meta_nchunks] = p;
	meta_regions[meta_nchunks] = r;
	meta_nchunks++;
	__atomic_fetch_add(&meta_bytes, META_CHUNK_SIZE, __ATOMIC_RELAXED);
	return true;
}

/* A size-aligned block of @size bytes from some chunk; NULL (ENOMEM). */
static void *meta_block_get_locked(size_t size)
{
	ASSERT_HELD(&meta_lock);
	if (size > META_CHUNK_SIZE / 4) {
		errno = ENOMEM; /* larger than any internal need */
		return NULL;
	}
	for (unsigned tries = 0; tries < 2; tries++) {
		for (unsigned i = meta_nchunks; i-- > 0;) {
			void *b = meta_regions[i]->get(meta_regions[i]->arg, size);
			if (b != NULL)
				return b;
		}
		if (!meta_chunk_add_locked())
			break;
	}
	errno = ENOMEM;
	return NULL;
}

static void meta_block_put_locked(void *block, size_t size)
{
	ASSERT_HELD(&meta_lock);
	for (unsigned i = 0; i < meta_nchunks; i++)
		if ((char *)block > meta_chunks[i] &&
		    (char *)block < meta_chunks[i] + META_CHUNK_SIZE) {
			meta_regions[i]->put(meta_regions[i]->arg, block, size);
			return;
		}
	VERIFY(!"a metadata block outside every chunk");
}

/* ---- The page source of internal caches ---- */

static void *meta_src_get(void *arg, size_t size)
{
	(void)arg;
	lock_take(&meta_lock);
	void *b = meta_block_get_locked(size);
	lock_drop(&meta_lock);
	return b;
}

static void meta_src_put(void *arg, void *block, size_t size)
{
	(void)arg;
	lock_take(&meta_lock);
	meta_block_put_locked(block, size);
	lock_drop(&meta_lock);
}

static const struct uslab_pagesrc meta_src = {
	.name = "meta",
	.get = meta_src_get,
	.put = meta_src_put,
	.purge = NULL,
	.arg = NULL,
};

const struct uslab_pagesrc *meta_pagesrc(void)
{
	return &meta_src;
}

/* ---- Structures ---- */

/* The class of @size (META_CLASSES: a whole block of its own). */
static unsigned meta_class(size_t size)
{
	unsigned k = 0;

	while (k < META_CLASSES && ((size_t)1 << (META_MIN_SHIFT + k)) < size)
		k++;
	return k;
}

/* Pages rounded up to a power of two, for a structure above META_MAX. */
static size_t meta_big_size(size_t size)
{
	size_t b = pgsrc_page_size();

	while (b < size)
		b *= 2;
	return b;
}

void *meta_alloc(size_t size)
{
	unsigned k = meta_class(size);
	void *p = NULL;

	lock_take(&meta_lock);
	if (k == META_CLASSES) {
		size = meta_big_size(size);
		p = meta_block_get_locked(size);
	} else {
		size = (size_t)1 << (META_MIN_SHIFT + k);
		if (meta_lists[k] == NULL) {
			char *b = meta_block_get_locked(META_BLOCK);
			for (size_t off = 0; b != NULL && off < META_BLOCK; off += size) {
				struct meta_free *f = (struct meta_free *)(b + off);
				f->f_next = meta_lists[k];
				meta_lists[k] = f;
			}
		}
		if ((p = meta_lists[k]) != NULL)
			meta_lists[k] = meta_lists[k]->f_next;
	}
	lock_drop(&meta_lock);
	if (p == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	memset(p, 0, size);
	return p;
}

void meta_free(void *p, size_t size)
{
	unsigned k = meta_class(size);

	if (p == NULL)
		return;
	lock_take(&meta_lock);
	if (k == META_CLASSES) {
		meta_block_put_locked(p, meta_big_size(size));
	} else {
		struct meta_free *f = p;
		f->f_next = meta_lists[k];
		meta_lists[k] = f;
	}
	lock_drop(&meta_lock);
}

uint64_t meta_mapped(void)
{
	return __atomic_load_n(&meta_bytes, __ATOMIC_RELAXED);
}

void meta_atfork_prepare(void)
{
	lock_take(&meta_lock);
}

void meta_atfork_release(void)
{
	lock_drop(&meta_lock);
}
