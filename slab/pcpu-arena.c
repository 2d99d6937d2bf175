/* SPDX-License-Identifier: MIT */
/* Arenas of per-CPU slots that many caches share: a fixed number of mappings each. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "internal.h"

/*
 * Design
 *
 * 1. An arena holds the per-CPU slots of ARENA_CACHES caches for every CPU
 *    id below the slot bound (pcpu.c: the kernel's bound on CPU numbers,
 *    so no cpu_id lands past an arena). Region i, the slots of CPU i, is
 *    1 << PCPU_SHIFT bytes at base + (i << PCPU_SHIFT), and a cache owns
 *    the same 64-byte slot, its index, in every region: its c_fast is
 *    base + 64 * index and its slot i is c_fast + (i << PCPU_SHIFT), as
 *    the asm computes (arch/fastpath.h). Below region 0, PCPU_GUARD
 *    read-only zero regions catch cpu_id -1 and -2 (their caps read 0).
 *
 * 2. The counters mirror the slots at +PCPU_CTR_DELTA, one for one, in a
 *    single mapping: shared from the stats segment's file when the
 *    counters provider (set by cache.c, the segment writer) maps it, and
 *    private anonymous memory otherwise. So an arena is three mappings
 *    (guards, slots, counters) for ARENA_CACHES caches however many CPUs,
 *    where a cache used to cost two mappings per CPU, and memory (or file
 *    space) is touched only where a running CPU's slot started: 64 bytes
 *    of header and 64 of counters, by page.
 *
 * 3. Placement: the counters must sit exactly PCPU_CTR_DELTA above the
 *    slots. An arena is placed by reserving the whole span from its guards
 *    to the end of its counters (inaccessible, no memory), mapping both
 *    parts in place with MAP_FIXED inside the reservation, and giving the
 *    gap between them back.
 *
 * 4. Reuse: a destroyed cache's index goes back to its arena with its
 *    slots and counters zeroed where they were written (started slots
 *    only). Arenas are never unmapped. A fork child closes the arenas it
 *    inherited to new caches: their counters are the parent's file's (or
 *    private copies of them), so the caches the child creates go to
 *    arenas whose counters the child's own segment provides.
 *
 * Lock: arena_lock covers the arena list and their index maps; the
 * counters provider is called under it. It comes after every cache lock
 * and before the segment's seg_lock (cache.c §4).
 */

#define ARENA_CACHES ((1u << PCPU_SHIFT) / PCPU_SLOT_SIZE)
#define ARENA_WORDS (ARENA_CACHES / 64)

struct pcpu_arena {
	struct pcpu_arena *a_next;
	char *a_base;                 /* region 0 (the guards are below) */
	uint64_t a_used[ARENA_WORDS]; /* bit j: index j belongs to a cache */
	uint32_t a_nused;
	bool a_ctr_shared;  /* the counters are the provider's */
	bool a_closed;      /* inherited across fork: no new cache here */
	uint64_t a_ctr_off; /* then: where they start in its file */
};

static struct uslab_lock arena_lock = USLAB_LOCK_INITIALIZER; /* everything below */
static struct pcpu_arena *arena_list;
static uint32_t arena_nslots;
static const struct arena_counters_ops *arena_ctr_ops;
static uint64_t arena_count;

void arena_init(uint32_t nslots)
{
	arena_nslots = nslots;
}

void arena_set_counters_ops(const struct arena_counters_ops *ops)
{
	lock_take(&arena_lock);
	arena_ctr_ops = ops;
	lock_drop(&arena_lock);
}

/* Bytes from an arena's first guard to the end of its slots. */
static size_t arena_slots_span(void)
{
	return (size_t)(PCPU_GUARD + arena_nslots) << PCPU_SHIFT;
}

/* Bytes of counters: the slots' regions, mirrored. */
static size_t arena_ctr_len(void)
{
	return (size_t)arena_nslots << PCPU_SHIFT;
}

/* Map a new arena; NULL (ENOMEM) when the kernel refuses. */
static struct pcpu_arena *arena_new_locked(void)
{
	ASSERT_HELD(&arena_lock);
	size_t page = pgsrc_page_size();
	size_t span = arena_slots_span();
	size_t guard = (size_t)PCPU_GUARD << PCPU_SHIFT;
	size_t ctr_len = arena_ctr_len();
	/* The counters start PCPU_CTR_DELTA above region 0, at a 2 KiB
	 * offset into a page: map whole pages around them. */
	size_t ctr_lead = PCPU_CTR_DELTA % page;
	size_t ctr_map = (ctr_lead + ctr_len + page - 1) & ~(page - 1);
	size_t total = guard + PCPU_CTR_DELTA - ctr_lead + ctr_map;

	struct pcpu_arena *a = meta_alloc(sizeof *a);
	if (a == NULL)
		return NULL;
	char *r = os_map(total, OS_NONE);
	if (r == NULL)
		goto fail;
	char *base = r + guard;
	char *ctr = base + PCPU_CTR_DELTA - ctr_lead;
	/* Guards stay readable zeros; the slots become writable. */
	if (!os_protect(r, guard, OS_READ) || !os_commit(base, span - guard))
		goto fail_unmap;
	uint64_t off = 0;
	bool shared = arena_ctr_ops != NULL && arena_ctr_ops->ac_map(ctr, ctr_map, &off);
	if (!shared && !os_commit(ctr, ctr_map))
		goto fail_unmap;
	/* The gap between the slots and the counters goes back. */
	os_trim(r + span, (size_t)(ctr - (r + span)));
	a->a_base = base;
	a->a_ctr_shared = shared;
	a->a_ctr_off = off + ctr_lead;
	a->a_next = arena_list;
	arena_list = a;
	arena_count++;
	return a;

fail_unmap:
	os_unmap(r, total);
fail:
	meta_free(a, sizeof *a);
	errno = ENOMEM;
	return NULL;
}

int arena_claim(struct pcpu_place *out)
{
	lock_take(&arena_lock);
	struct pcpu_arena *a = arena_list;
	while (a != NULL && (a->a_nused == ARENA_CACHES || a->a_closed))
		a = a->a_next;
	if (a == NULL && (a = arena_new_locked()) == NULL) {
		lock_drop(&arena_lock);
		return -1;
	}
	uint32_t w = 0;
	while (a->a_used[w] == ~0ull)
		w++;
	uint32_t j = w * 64 + (uint32_t)__builtin_ctzll(~a->a_used[w]);
	a->a_used[w] |= 1ull << (j % 64);
	a->a_nused++;
	lock_drop(&arena_lock);
	out->pl_arena = a;
	out->pl_index = j;
	out->pl_base = a->a_base + (size_t)j * PCPU_SLOT_SIZE;
	return 0;
}

void arena_release(struct pcpu_place *pl)
{
	struct pcpu_arena *a = pl->pl_arena;

	if (a == NULL)
		return;
	/* Quiescent (the cache is being destroyed): zero what was written,
	 * so the next owner of the index starts from nothing. */
	for (uint32_t i = 0; i < arena_nslots; i++) {
		struct pcpu_slot *s = (struct pcpu_slot *)(pl->pl_base + ((size_t)i << PCPU_SHIFT));
		if (s->p_live == 0)
			continue;
		memset(pcpu_slot_counters(s), 0, sizeof(struct pcpu_counters));
		memset(s, 0, sizeof *s);
	}
	lock_take(&arena_lock);
	a->a_used[pl->pl_index / 64] &= ~(1ull << (pl->pl_index % 64));
	a->a_nused--;
	lock_drop(&arena_lock);
	pl->pl_arena = NULL;
}

bool arena_counters_in_file(const struct pcpu_place *pl, uint64_t *off, uint64_t *stride)
{
	if (pl->pl_arena == NULL || !pl->pl_arena->a_ctr_shared)
		return false;
	*off = pl->pl_arena->a_ctr_off + (uint64_t)pl->pl_index * sizeof(struct pcpu_counters);
	*stride = (uint64_t)1 << PCPU_SHIFT;
	return true;
}

uint64_t arena_mapped(void)
{
	lock_take(&arena_lock);
	uint64_t n = arena_count;
	lock_drop(&arena_lock);
	return n;
}

void arena_atfork_prepare(void)
{
	lock_take(&arena_lock);
}

void arena_atfork_release(void)
{
	lock_drop(&arena_lock);
}

void arena_atfork_child(void)
{
	for (struct pcpu_arena *a = arena_list; a != NULL; a = a->a_next)
		a->a_closed = true;
	lock_drop(&arena_lock);
}
