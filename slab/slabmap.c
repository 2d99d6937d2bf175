/* SPDX-License-Identifier: MIT */
/* Which 64 KiB granules of the address space belong to uslab slabs. */
#include "config.h"

#include <sys/mman.h>

#include "internal.h"

/*
 * A free of a foreign pointer must be reported, not crash inside uslab while
 * reading a slab header that is not there. Before dereferencing the header
 * that an object's address masks to, the slab layer asks this map whether the
 * address lies inside any slab at all. Slabs are at least 2^SLAB_MIN_SHIFT
 * bytes and aligned to their size, so one bit per granule of that size is
 * exact. The map is a two-level radix: a static top array indexed by
 * address bits 47..32 (BSS: untouched entries cost nothing) pointing to
 * 8 KiB leaves of 2^16 bits, mapped on first use and never freed.
 * Lookups take no lock: leaves are published with a release CAS and bits
 * change with atomic OR/AND.
 */

#define MAP_TOP_SHIFT 32
#define MAP_TOP_ENTRIES ((size_t)1 << (47 - MAP_TOP_SHIFT))
#define MAP_LEAF_BITS ((size_t)1 << (MAP_TOP_SHIFT - SLAB_MIN_SHIFT))
#define MAP_LEAF_WORDS (MAP_LEAF_BITS / 64)

static uint64_t *map_top[MAP_TOP_ENTRIES]; /* leaves; published by CAS */

/* The leaf covering @addr, creating it when @create; NULL if none (or no memory). */
static uint64_t *map_leaf(uintptr_t addr, bool create)
{
	size_t top = addr >> MAP_TOP_SHIFT;

	if (top >= MAP_TOP_ENTRIES)
		return NULL;
	uint64_t *leaf = __atomic_load_n(&map_top[top], __ATOMIC_ACQUIRE);
	if (leaf != NULL || !create)
		return leaf;
	void *fresh = mmap(NULL, MAP_LEAF_WORDS * 8, PROT_READ | PROT_WRITE,
	                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED)
		return NULL;
	uint64_t *expected = NULL;
	if (!__atomic_compare_exchange_n(&map_top[top], &expected, (uint64_t *)fresh, false,
	                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		munmap(fresh, MAP_LEAF_WORDS * 8);
		return expected;
	}
	return fresh;
}

/** Mark [block, block+size) as slab memory. Returns false without memory
 *  for a leaf (the slab must then not be used). */
bool slabmap_set(const void *block, size_t size)
{
	uintptr_t a = (uintptr_t)block;

	for (uintptr_t g = a; g < a + size; g += (uintptr_t)1 << SLAB_MIN_SHIFT) {
		uint64_t *leaf = map_leaf(g, true);
		if (leaf == NULL) {
			slabmap_clear(block, g - a);
			return false;
		}
		size_t bit = (g >> SLAB_MIN_SHIFT) & (MAP_LEAF_BITS - 1);
		__atomic_fetch_or(&leaf[bit / 64], (uint64_t)1 << (bit % 64), __ATOMIC_RELEASE);
	}
	return true;
}

/** Unmark [block, block+size). */
void slabmap_clear(const void *block, size_t size)
{
	uintptr_t a = (uintptr_t)block;

	for (uintptr_t g = a; g < a + size; g += (uintptr_t)1 << SLAB_MIN_SHIFT) {
		uint64_t *leaf = map_leaf(g, false);
		if (leaf == NULL)
			continue;
		size_t bit = (g >> SLAB_MIN_SHIFT) & (MAP_LEAF_BITS - 1);
		__atomic_fetch_and(&leaf[bit / 64], ~((uint64_t)1 << (bit % 64)), __ATOMIC_RELEASE);
	}
}

/** Whether @p lies inside some slab. */
bool slabmap_test(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	uint64_t *leaf = map_leaf(a, false);

	if (leaf == NULL)
		return false;
	size_t bit = (a >> SLAB_MIN_SHIFT) & (MAP_LEAF_BITS - 1);
	return (__atomic_load_n(&leaf[bit / 64], __ATOMIC_ACQUIRE) >> (bit % 64)) & 1;
}
