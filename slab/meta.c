/* SPDX-License-Identifier: MIT */
/* The library's own memory: guarded chunks that no object's overrun can reach. */
#include "config.h"

#include <errno.h>
#include <string.h>

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
 *      from 64 B to 32 KiB, carved from META_BLOCK-byte blocks with a
 *      free list and a count each (the chunk's first block holds that
 *      bookkeeping, one entry per META_BLOCK window), and larger ones as
 *      whole blocks. A class block whose structures have all come back is
 *      given back, but one empty block per class is kept (until
 *      meta_trim(), which uslab_reap_all() calls).
 *    Blocks given back (an empty class block, a reaped magazine slab, a
 *    large structure) have their pages released with MADV_DONTNEED, so
 *    what slab headers and magazines held leaves RSS when a reap frees
 *    them; chunks themselves are never unmapped. Nothing here calls
 *    malloc, so the library can serve malloc itself.
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

#define META_BLOCKS (META_CHUNK_SIZE / META_BLOCK + 1) /* windows a chunk spans */

/* A free structure, linked inside its block (its memory is ours). */
struct meta_free {
	struct meta_free *f_next;
};

/* A META_BLOCK-byte window of a chunk; a class block when b_class != 0. */
struct meta_blk {
	char *b_base;                     /* its first byte, once carved */
	struct meta_free *b_free;         /* its free structures */
	struct meta_blk *b_next, *b_prev; /* on meta_partial[class] while b_free != NULL */
	uint32_t b_used;                  /* structures given out */
	uint8_t b_class;                  /* class + 1; 0: not carved */
};

static struct uslab_lock meta_lock = USLAB_LOCK_INITIALIZER; /* everything below */
static char *meta_chunks[META_MAX_CHUNKS];                   /* chunk starts (guard page) */
static struct uslab_pagesrc *meta_regions[META_MAX_CHUNKS];  /* their region sources */
static struct meta_blk *meta_blks[META_MAX_CHUNKS];          /* their windows' bookkeeping */
static unsigned meta_nchunks;
static struct meta_blk *meta_partial[META_CLASSES]; /* class blocks with free structures */
static struct meta_blk *meta_spare[META_CLASSES];   /* one empty block kept per class */
static uint64_t meta_bytes; /* bytes of chunks mapped (atomic: read unlocked) */

/* ---- Chunks ---- */

/* Pages rounded up to a power of two, for a block. */
static size_t meta_big_size(size_t size)
{
	size_t b = pgsrc_page_size();

	while (b < size)
		b *= 2;
	return b;
}

/* Map a new chunk with its two guard pages; false when the kernel refuses. */
static bool meta_chunk_add_locked(void)
{
	ASSERT_HELD(&meta_lock);
	size_t page = pgsrc_page_size();
	if (meta_nchunks == META_MAX_CHUNKS)
		return false;
	char *p = os_map(META_CHUNK_SIZE, OS_RW);
	if (p == NULL)
		return false;
	struct uslab_pagesrc *r = NULL;
	if (!os_protect(p, page, OS_NONE) ||
	    !os_protect(p + META_CHUNK_SIZE - page, page, OS_NONE) ||
	    (r = uslab_pagesrc_region(p + page, META_CHUNK_SIZE - 2 * page)) == NULL) {
		os_unmap(p, META_CHUNK_SIZE);
		return false;
	}
	/* The windows' bookkeeping is the chunk's first block (zero pages). */
	size_t tab = meta_big_size(META_BLOCKS * sizeof(struct meta_blk));
	struct meta_blk *blks = r->get(r->arg, tab);
	if (blks == NULL) {
		os_unmap(p, META_CHUNK_SIZE);
		return false;
	}
	meta_chunks[meta_nchunks] = p;
	meta_regions[meta_nchunks] = r;
	meta_blks[meta_nchunks] = blks;
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

/*
 * Give a block back to its chunk, and its pages back to the kernel: the
 * chunk stays mapped, but a reaped magazine slab must not stay resident
 * (its next user gets zero pages). A refused madvise only costs memory.
 */
/* The chunk holding @p; a pointer outside every chunk is a bug of ours. */
static unsigned meta_chunk_of_locked(const void *p)
{
	ASSERT_HELD(&meta_lock);
	for (unsigned i = 0; i < meta_nchunks; i++)
		if ((const char *)p > meta_chunks[i] &&
		    (const char *)p < meta_chunks[i] + META_CHUNK_SIZE)
			return i;
	VERIFY(!"a metadata block outside every chunk");
	return 0;
}

static void meta_block_put_locked(void *block, size_t size)
{
	ASSERT_HELD(&meta_lock);
	unsigned i = meta_chunk_of_locked(block);
	os_discard(block, size);
	meta_regions[i]->put(meta_regions[i]->arg, block, size);
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

/* The bookkeeping of the class block holding @p. */
static struct meta_blk *meta_blk_of_locked(const void *p)
{
	unsigned i = meta_chunk_of_locked(p);
	uintptr_t w0 = (uintptr_t)meta_chunks[i] & ~(uintptr_t)(META_BLOCK - 1);
	uintptr_t w = (uintptr_t)p & ~(uintptr_t)(META_BLOCK - 1);
	return &meta_blks[i][(w - w0) / META_BLOCK];
}

static void meta_partial_add(unsigned k, struct meta_blk *b)
{
	b->b_prev = NULL;
	b->b_next = meta_partial[k];
	if (b->b_next != NULL)
		b->b_next->b_prev = b;
	meta_partial[k] = b;
}

static void meta_partial_del(unsigned k, struct meta_blk *b)
{
	if (b->b_prev != NULL)
		b->b_prev->b_next = b->b_next;
	else
		meta_partial[k] = b->b_next;
	if (b->b_next != NULL)
		b->b_next->b_prev = b->b_prev;
	b->b_next = b->b_prev = NULL;
}

/* A fresh block carved into structures of class @k; NULL when none. */
static struct meta_blk *meta_carve_locked(unsigned k)
{
	size_t size = (size_t)1 << (META_MIN_SHIFT + k);
	char *m = meta_block_get_locked(META_BLOCK);
	if (m == NULL)
		return NULL;
	struct meta_blk *b = meta_blk_of_locked(m);
	VERIFY(b->b_class == 0 && b->b_used == 0);
	b->b_class = (uint8_t)(k + 1);
	b->b_base = m;
	b->b_free = NULL;
	for (size_t off = META_BLOCK; off >= size; off -= size) {
		struct meta_free *f = (struct meta_free *)(m + off - size);
		f->f_next = b->b_free;
		b->b_free = f;
	}
	meta_partial_add(k, b);
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
		struct meta_blk *b = meta_partial[k];
		if (b == NULL)
			b = meta_carve_locked(k);
		if (b != NULL) {
			struct meta_free *f = b->b_free;
			b->b_free = f->f_next;
			b->b_used++;
			if (b == meta_spare[k])
				meta_spare[k] = NULL;
			if (b->b_free == NULL)
				meta_partial_del(k, b);
			p = f;
		}
	}
	lock_drop(&meta_lock);
	if (p == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	memset(p, 0, size);
	return p;
}

/*
 * A class block whose last structure comes back is returned to its chunk
 * (and its pages to the kernel), except one per class kept as a spare so
 * that a structure freed and allocated in turn costs no system call.
 */
void meta_free(void *p, size_t size)
{
	unsigned k = meta_class(size);

	if (p == NULL)
		return;
	lock_take(&meta_lock);
	if (k == META_CLASSES) {
		meta_block_put_locked(p, meta_big_size(size));
		lock_drop(&meta_lock);
		return;
	}
	struct meta_blk *b = meta_blk_of_locked(p);
	VERIFY(b->b_class == k + 1 && b->b_used != 0);
	struct meta_free *f = p;
	f->f_next = b->b_free;
	if (b->b_free == NULL)
		meta_partial_add(k, b);
	b->b_free = f;
	if (--b->b_used == 0) {
		struct meta_blk *old = meta_spare[k];
		meta_spare[k] = b;
		if (old != NULL) {
			meta_partial_del(k, old);
			old->b_class = 0;
			old->b_free = NULL;
			meta_block_put_locked(old->b_base, META_BLOCK);
		}
	}
	lock_drop(&meta_lock);
}

void meta_trim(void)
{
	lock_take(&meta_lock);
	for (unsigned k = 0; k < META_CLASSES; k++) {
		struct meta_blk *b = meta_spare[k];
		if (b == NULL)
			continue;
		meta_spare[k] = NULL;
		meta_partial_del(k, b);
		b->b_class = 0;
		b->b_free = NULL;
		meta_block_put_locked(b->b_base, META_BLOCK);
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
