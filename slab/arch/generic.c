/* SPDX-License-Identifier: MIT */
/* C reference of the per-CPU magazine routines (see fastpath.h). */
#include "config.h"

#include "fastpath.h"

/* The rseq area's offset (fastpath.h), set once at start; read by the asm. It
 * lives here, below both, since this file is built on every architecture. */
long uslab_rseq_off;

/* Stores that statistics readers may load at any time without the slot's
 * lock: relaxed atomics, plain moves on x86, so no data race for them.
 * Batch counters are added after the commit, as the asm does (fastpath.h). */
static void pcpu_generic_set64(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* The copy, then the commit, as the asm does. */
static void pcpu_generic_commit(struct pcpu_slot *slot, uint64_t w)
{
	pcpu_generic_set64(&pcpu_slot_counters(slot)->pc_word, w);
	pcpu_generic_set64(&slot->p_word, w);
}

void *pcpu_generic_pop(struct pcpu_slot *slot)
{
	uint32_t cap = slot->p_cap;
	uint64_t w = slot->p_word + PCPU_HIT - 1;

	if (pcpu_word_count(w) >= cap) /* count was 0 (0xffff now), or stopped */
		return NULL;
	void *obj = slot->p_rounds[pcpu_word_count(w)];
	pcpu_generic_commit(slot, w);
	return obj;
}

int pcpu_generic_push(struct pcpu_slot *slot, void *obj)
{
	uint32_t cap = slot->p_cap;
	uint64_t w = slot->p_word;

	if (pcpu_word_count(w) >= cap)
		return 0;
	/* rounds[-1] is the magazine's m_floor, never an object */
	uint32_t count = pcpu_word_count(w);
	if (slot->p_rounds[(long)count - 1] == obj)
		return -1;
	slot->p_rounds[count] = obj;
	if (count + 1 < cap && slot->p_rounds[count + 1] == obj)
		slot->p_rounds[count + 1] = NULL; /* the memo rule (fastpath.h) */
	pcpu_generic_commit(slot, w + PCPU_HIT + 1);
	return 1;
}

int pcpu_generic_push_memo(struct pcpu_slot *slot, void *obj)
{
	uint32_t cap = slot->p_cap;
	uint64_t w = slot->p_word;

	if (pcpu_word_count(w) >= cap)
		return 0;
	if (slot->p_rounds[pcpu_word_count(w)] != obj)
		return 2;
	pcpu_generic_commit(slot, w + PCPU_HIT + 1);
	return 1;
}

size_t pcpu_generic_pop_batch(struct pcpu_slot *slot, void **out, size_t n)
{
	uint32_t cap = slot->p_cap;
	uint64_t w = slot->p_word;
	uint32_t count = pcpu_word_count(w);

	if (cap == 0)
		return 0;
	size_t k = count < n ? count : n;
	if (k == 0)
		return 0;
	for (size_t i = 0; i < k; i++)
		out[i] = slot->p_rounds[count - k + i];
	pcpu_generic_commit(slot, w - k);
	struct pcpu_counters *ctr = pcpu_slot_counters(slot);
	pcpu_generic_set64(&ctr->pc_popped, ctr->pc_popped + k);
	return k;
}

size_t pcpu_generic_push_batch(struct pcpu_slot *slot, void *const *in, size_t n)
{
	uint32_t cap = slot->p_cap;
	uint64_t w = slot->p_word;
	uint32_t count = pcpu_word_count(w);

	if (count >= cap)
		return 0;
	size_t k = cap - count < n ? cap - count : n;
	if (k == 0)
		return 0;
	for (size_t i = 0; i < k; i++)
		slot->p_rounds[count + i] = in[i];
	if (count + k < cap && slot->p_rounds[count + k] == in[k - 1])
		slot->p_rounds[count + k] = NULL; /* the memo rule (fastpath.h) */
	pcpu_generic_commit(slot, w + k);
	struct pcpu_counters *ctr = pcpu_slot_counters(slot);
	pcpu_generic_set64(&ctr->pc_pushed, ctr->pc_pushed + k);
	return k;
}
