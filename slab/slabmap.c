/* SPDX-License-Identifier: MIT */
/* The slab map: from any address to the header of the slab that holds it. */
#include "config.h"

#include "internal.h"

/*
 * Slab headers live apart from their objects (slab/meta.c), so the slab of
 * an object is found here: one pointer per 2^SLAB_MIN_SHIFT-byte granule of
 * the address space, NULL where no slab is. Slabs are at least one granule
 * and aligned to their size, so every granule belongs to at most one slab,
 * and a lookup is exact: a pointer that lies in no slab (a malloc pointer,
 * a stack address, 0x1000) gets NULL, never a dereference of a header that
 * is not there. The map is a two-level radix: a static top array indexed
 * by address bits 47..32 (BSS: untouched entries cost nothing) pointing to
 * leaves of 2^16 pointers (512 KiB, for 4 GiB of address space), each a
 * mapping of its own with a guard page at both ends, made on first use and
 * never freed; their pages are touched only where slabs are.
 *
 * The same lookup runs on every free, in the fast path's object check
 * (x86_64-entry.S): the entry's owner and offset say whether the pointer
 * is an object of the cache it is freed to.
 *
 * Lookups take no lock: leaves are published with a release CAS, entries
 * are stored with release and read with acquire, so whoever finds a slab
 * here sees its header as it was built. An entry changes only when the
 * slab is created or released, both of which its cache serialises.
 */

#define MAP_TOP_SHIFT PCPU_MAP_TOP_SHIFT
#define MAP_TOP_ENTRIES ((size_t)PCPU_MAP_TOP_ENTRIES)
#define MAP_LEAF_ENTRIES ((size_t)1 << (MAP_TOP_SHIFT - SLAB_MIN_SHIFT))
#define MAP_LEAF_BYTES (MAP_LEAF_ENTRIES * sizeof(struct slab *))
_Static_assert(MAP_TOP_ENTRIES << MAP_TOP_SHIFT == (size_t)1 << 47, "47-bit user addresses");

/* Leaves, published by CAS. The fast path's check of every free reads it
 * too (x86_64-entry.S), hence a hidden global with a prefixed name. */
struct slab **uslab_map_top[MAP_TOP_ENTRIES];
#define map_top uslab_map_top

/* A new zeroed leaf between two guard pages; NULL when the kernel refuses. */
static struct slab **map_leaf_new(void)
{
	size_t page = pgsrc_page_size();
	char *p = os_map(MAP_LEAF_BYTES + 2 * page, OS_NONE);

	if (p == NULL)
		return NULL;
	if (!os_protect(p + page, MAP_LEAF_BYTES, OS_RW)) {
		os_unmap(p, MAP_LEAF_BYTES + 2 * page);
		return NULL;
	}
	return (struct slab **)(p + page);
}

static void map_leaf_drop(struct slab **leaf)
{
	size_t page = pgsrc_page_size();

	os_unmap((char *)leaf - page, MAP_LEAF_BYTES + 2 * page);
}

/* The leaf covering @addr, creating it when @create; NULL if none (or no memory). */
static struct slab **map_leaf(uintptr_t addr, bool create)
{
	size_t top = addr >> MAP_TOP_SHIFT;

	if (top >= MAP_TOP_ENTRIES)
		return NULL;
	struct slab **leaf = __atomic_load_n(&map_top[top], __ATOMIC_ACQUIRE);
	if (leaf != NULL || !create)
		return leaf;
	struct slab **fresh = map_leaf_new();
	if (fresh == NULL)
		return NULL;
	struct slab **expected = NULL;
	if (!__atomic_compare_exchange_n(&map_top[top], &expected, fresh, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE)) {
		map_leaf_drop(fresh);
		return expected;
	}
	return fresh;
}

static size_t map_index(uintptr_t a)
{
	return (a >> SLAB_MIN_SHIFT) & (MAP_LEAF_ENTRIES - 1);
}

bool slabmap_set(const void *block, size_t size, struct slab *s)
{
	uintptr_t a = (uintptr_t)block;

	for (uintptr_t g = a; g < a + size; g += (uintptr_t)1 << SLAB_MIN_SHIFT) {
		struct slab **leaf = map_leaf(g, true);
		if (leaf == NULL) {
			slabmap_clear(block, g - a);
			return false;
		}
		__atomic_store_n(&leaf[map_index(g)], s, __ATOMIC_RELEASE);
	}
	return true;
}

void slabmap_clear(const void *block, size_t size)
{
	uintptr_t a = (uintptr_t)block;

	for (uintptr_t g = a; g < a + size; g += (uintptr_t)1 << SLAB_MIN_SHIFT) {
		struct slab **leaf = map_leaf(g, false);
		if (leaf != NULL)
			__atomic_store_n(&leaf[map_index(g)], NULL, __ATOMIC_RELEASE);
	}
}

_Static_assert(MAP_LEAF_ENTRIES == 0x10000, "slabmap_lookup (internal.h) masks with 0xffff");
