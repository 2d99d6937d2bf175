/* SPDX-License-Identifier: MIT */
/* The per-CPU magazine fast-path contract, with C pseudocode per routine. */
#ifndef USLAB_FASTPATH_H
#define USLAB_FASTPATH_H

#include <stddef.h>
#include <stdint.h>

/*
 * A cache's per-CPU region is one mapping of nslots << shift bytes; slot i
 * (a CPU number from rseq cpu_id, or sched_getcpu() in locked mode) is the
 * struct pcpu_slot at base + (i << shift). base and shift never change.
 *
 *   p_count  rounds held: p_rounds[0 .. p_count) are objects
 *   p_cap    capacity; 0 means STOPPED: a remote operation owns the slot
 *
 * Invariants: p_count <= max rounds of the slot; p_cap <= max rounds;
 * while p_cap != 0, only code running on CPU i changes p_count.
 *
 * The rseq routines (x86_64.S) run the whole body as one restartable
 * sequence on the current CPU's slot: the CPU number is read inside the
 * section, p_cap is loaded BEFORE p_count (a drainer stops a slot by storing
 * p_cap = 0 then fencing with membarrier; reading count first could pair a
 * stale count with a restarted cap), and the only store visible to other
 * threads is the final store of p_count, the commit. They return 0/NULL
 * when the slot is stopped, the thread has no rseq registration
 * (cpu_id < 0), or the magazine is empty/full. They take no lock, make no
 * call or syscall, and touch no shared counter: cost, pop ~17 and push ~18
 * instructions including the call.
 *
 * Counters: pop and push add one to p_allocs / p_frees of the slot right
 * AFTER the commit, outside the section (inside, an abort after the
 * increment would count twice). It is a plain `incq mem`: preemption cannot
 * split one instruction, so the only lost update is a thread that migrated
 * between commit and increment racing the new owner of that CPU. Readers
 * sum the slots; the rare loss is accepted. The batch routines count
 * nothing (the slow paths that call them count with atomics).
 *
 * The generic routines (generic.c) are the C reference of the same body on
 * a given slot. They are used by the locked mode, under the slot's lock,
 * and by tests that compare the two.
 */

struct pcpu_slot {
	uint32_t p_count;
	uint32_t p_cap;
	uint64_t p_allocs; /* objects popped (fast-path hits), incremented after the commit */
	uint64_t p_frees;  /* objects pushed (fast-path hits), incremented after the commit */
	uint64_t p_live;   /* 1 once started; written under c_drain_lock (rseq) or the slot lock */
	void *p_rounds[]; /* asm: offset PCPU_SLOT_HDR */
};

#define PCPU_SLOT_HDR 32

/* Bytes per slot of a cache's region, as a shift: 4 KiB, room for
 * (4096 - 32) / 8 = 508 rounds, more than twice the largest magazine. The
 * cache entry points use this constant (one load and a register fewer);
 * the routines below take the shift as an argument for tests. */
#define PCPU_SHIFT 12

/* void *pop(slot):
 *	if (slot->p_count - 1 >= slot->p_cap) return NULL;   (unsigned: empty or stopped)
 *	obj = slot->p_rounds[slot->p_count - 1];
 *	slot->p_count--;                                      (commit)
 *	slot->p_allocs++;
 *	return obj;
 */
void *uslab_rseq_pop(char *base, unsigned shift);
void *pcpu_generic_pop(struct pcpu_slot *slot);

/* int push(slot, obj):
 *	if (slot->p_count >= slot->p_cap) return 0;           (full or stopped)
 *	slot->p_rounds[slot->p_count] = obj;
 *	slot->p_count++;                                      (commit)
 *	slot->p_frees++;
 *	return 1;
 */
int uslab_rseq_push(char *base, unsigned shift, void *obj);
int pcpu_generic_push(struct pcpu_slot *slot, void *obj);

/* size_t pop_batch(slot, out, n):
 *	if (slot->p_cap == 0) return 0;
 *	k = min(slot->p_count, n);
 *	out[0 .. k) = p_rounds[p_count - k .. p_count);
 *	slot->p_count -= k;                                   (commit)
 *	return k;
 */
size_t uslab_rseq_pop_batch(char *base, unsigned shift, void **out, size_t n);
size_t pcpu_generic_pop_batch(struct pcpu_slot *slot, void **out, size_t n);

/* size_t push_batch(slot, in, n):
 *	k = min(slot->p_cap - slot->p_count, n);             (cap 0: k = 0)
 *	p_rounds[p_count .. p_count + k) = in[0 .. k);
 *	slot->p_count += k;                                   (commit)
 *	return k;
 */
size_t uslab_rseq_push_batch(char *base, unsigned shift, void *const *in, size_t n);
size_t pcpu_generic_push_batch(struct pcpu_slot *slot, void *const *in, size_t n);

/* glibc's __rseq_offset, copied once at start (hidden, one RIP-relative load). */
extern long uslab_rseq_off;

#endif /* USLAB_FASTPATH_H */
