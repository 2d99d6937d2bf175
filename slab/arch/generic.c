/* SPDX-License-Identifier: MIT */
/* C reference of the per-CPU magazine routines (see fastpath.h). */
#include "config.h"

#include "fastpath.h"

/* Stores that statistics readers may load at any time without the slot's
 * lock: relaxed atomics, plain moves on x86, so no data race for them.
 * Counters are added after the commit, as the asm does (fastpath.h). */
static void pcpu_generic_set(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static void pcpu_generic_set64(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

void *pcpu_generic_pop(struct pcpu_slot *slot)
{
	uint32_t cap = slot->p_cap;
	uint32_t count = slot->p_count;

	if (count - 1 >= cap)
		return NULL;
	void *obj = slot->p_rounds[count - 1];
	pcpu_generic_set(&slot->p_count, count - 1);
	struct pcpu_counters *ctr = pcpu_slot_counters(slot);
	pcpu_generic_set64(&ctr->pc_allocs, ctr->pc_allocs + 1);
	return obj;
}

int pcpu_generic_push(struct pcpu_slot *slot, void *obj)
{
	uint32_t cap = slot->p_cap;
	uint32_t count = slot->p_count;

	if (count >= cap)
		return 0;
	slot->p_rounds[count] = obj;
	pcpu_generic_set(&slot->p_count, count + 1);
	struct pcpu_counters *ctr = pcpu_slot_counters(slot);
	pcpu_generic_set64(&ctr->pc_frees, ctr->pc_frees + 1);
	return 1;
}

size_t pcpu_generic_pop_batch(struct pcpu_slot *slot, void **out, size_t n)
{
	uint32_t cap = slot->p_cap;
	uint32_t count = slot->p_count;

	if (cap == 0)
		return 0;
	size_t k = count < n ? count : n;
	if (k == 0)
		return 0;
	for (size_t i = 0; i < k; i++)
		out[i] = slot->p_rounds[count - k + i];
	pcpu_generic_set(&slot->p_count, count - (uint32_t)k);
	struct pcpu_counters *ctr = pcpu_slot_counters(slot);
	pcpu_generic_set64(&ctr->pc_popped, ctr->pc_popped + k);
	return k;
}

size_t pcpu_generic_push_batch(struct pcpu_slot *slot, void *const *in, size_t n)
{
	uint32_t cap = slot->p_cap;
	uint32_t count = slot->p_count;

	if (count >= cap)
		return 0;
	size_t k = cap - count < n ? cap - count : n;
	if (k == 0)
		return 0;
	for (size_t i = 0; i < k; i++)
		slot->p_rounds[count + i] = in[i];
	pcpu_generic_set(&slot->p_count, count + (uint32_t)k);
	struct pcpu_counters *ctr = pcpu_slot_counters(slot);
	pcpu_generic_set64(&ctr->pc_pushed, ctr->pc_pushed + k);
	return k;
}
