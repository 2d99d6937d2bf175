/* SPDX-License-Identifier: MIT */
/* The per-CPU magazine fast-path contract, with C pseudocode per routine. */
#ifndef USLAB_FASTPATH_H
#define USLAB_FASTPATH_H

#include <stddef.h>
#include <stdint.h>

/*
 * A cache's per-CPU region is one private anonymous mapping of
 * nslots << PCPU_SHIFT bytes; slot i (a CPU number from rseq cpu_id, or
 * sched_getcpu() in locked mode) is two pages at base + (i << PCPU_SHIFT).
 * base and shift never change.
 *
 *   page 0  struct pcpu_slot: the magazine. Private to this process, never
 *           in a file: nothing another process writes can reach it.
 *     p_count  rounds held: p_rounds[0 .. p_count) are objects
 *     p_cap    capacity; 0 means STOPPED: a remote operation owns the slot
 *     p_live   1 once started (under c_drain_lock, or the slot lock)
 *   page 1  struct pcpu_counters at slot + PCPU_COUNTERS_OFF: event
 *           counters, the only per-CPU data that may be shared. Private
 *           until the slot starts; when the process publishes statistics,
 *           the stats segment maps this page MAP_SHARED from its file
 *           (segment.c) before the slot's p_cap first becomes non-zero.
 *     pc_allocs / pc_frees    single pops / pushes (fast-path hits)
 *     pc_popped / pc_pushed   rounds moved by the batch routines
 *     pc_drained              rounds taken by remote drains (pcpu.c)
 *
 * A process that only sees page 1 (uslabtop) derives the magazine's fill:
 *
 *   fill = pc_frees + pc_pushed - pc_allocs - pc_popped - pc_drained
 *
 * exact at quiescence, since every change of p_count is counted there.
 * The library itself reads p_count.
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
 * call or syscall, and touch no shared counter: cost, pop 18 and push 19
 * instructions for a hit, counter included.
 *
 * Counters: every routine adds to its counter of page 1 right AFTER the
 * commit, outside the section (inside, an abort after the add would count
 * twice): pop and push `incq`, the batches `addq k`. A plain RMW of memory:
 * preemption cannot split one instruction, so the only lost update is a
 * thread that migrated between commit and add racing the new owner of that
 * CPU. The rare loss is accepted (it skews other processes' view of the
 * fill; the library's own figures come from p_count).
 *
 * The generic routines (generic.c) are the C reference of the same body on
 * a given slot. They are used by the locked mode, under the slot's lock,
 * and by tests that compare the two.
 */

struct pcpu_slot {
	/* p_count sits 64 bytes into the page, not at its start: the fast
	 * path's counter increment (page 1, offset 0) right after the count
	 * store would otherwise share its low 12 address bits and stall on
	 * 4K aliasing (measured: 5.93 vs 4.93 ns per alloc+free pair). */
	uint8_t p_skew[64];
	uint32_t p_count;
	uint32_t p_cap;
	uint64_t p_live;   /* 1 once started; written under c_drain_lock (rseq) or the slot lock */
	uint64_t p_pad[2];
	void *p_rounds[]; /* asm: offset PCPU_SLOT_HDR */
};

#define PCPU_SLOT_HDR 96

/* Page 1 of a slot: the per-CPU event counters (see above). */
struct pcpu_counters {
	uint64_t pc_allocs;  /* single pops, incremented after the commit */
	uint64_t pc_frees;   /* single pushes, incremented after the commit */
	uint64_t pc_pushed;  /* rounds pushed by push_batch, added after the commit */
	uint64_t pc_popped;  /* rounds popped by pop_batch, added after the commit */
	uint64_t pc_drained; /* rounds taken by remote drains, added by the drainer */
};

/* Bytes per slot of a cache's region, as a shift: two 4 KiB pages, the
 * magazine (room for (4096 - 32) / 8 = 508 rounds, more than twice the
 * largest magazine) and the counters. The cache entry points use this
 * constant (one load and a register fewer); the routines below take the
 * shift as an argument for tests, which must keep the two-page layout. */
#define PCPU_SHIFT 13
#define PCPU_COUNTERS_OFF 4096
#define PCPU_MAX_ROUNDS ((PCPU_COUNTERS_OFF - PCPU_SLOT_HDR) / sizeof(void *))

static inline struct pcpu_counters *pcpu_slot_counters(struct pcpu_slot *s)
{
	return (struct pcpu_counters *)((char *)s + PCPU_COUNTERS_OFF);
}

/* void *pop(slot):
 *	if (slot->p_count - 1 >= slot->p_cap) return NULL;   (unsigned: empty or stopped)
 *	obj = slot->p_rounds[slot->p_count - 1];
 *	slot->p_count--;                                      (commit)
 *	counters->pc_allocs++;
 *	return obj;
 */
void *uslab_rseq_pop(char *base, unsigned shift);
void *pcpu_generic_pop(struct pcpu_slot *slot);

/* int push(slot, obj):
 *	if (slot->p_count >= slot->p_cap) return 0;           (full or stopped)
 *	slot->p_rounds[slot->p_count] = obj;
 *	slot->p_count++;                                      (commit)
 *	counters->pc_frees++;
 *	return 1;
 */
int uslab_rseq_push(char *base, unsigned shift, void *obj);
int pcpu_generic_push(struct pcpu_slot *slot, void *obj);

/* size_t pop_batch(slot, out, n):
 *	if (slot->p_cap == 0) return 0;
 *	k = min(slot->p_count, n);
 *	out[0 .. k) = p_rounds[p_count - k .. p_count);
 *	slot->p_count -= k;                                   (commit)
 *	counters->pc_popped += k;
 *	return k;
 */
size_t uslab_rseq_pop_batch(char *base, unsigned shift, void **out, size_t n);
size_t pcpu_generic_pop_batch(struct pcpu_slot *slot, void **out, size_t n);

/* size_t push_batch(slot, in, n):
 *	k = min(slot->p_cap - slot->p_count, n);             (cap 0: k = 0)
 *	p_rounds[p_count .. p_count + k) = in[0 .. k);
 *	slot->p_count += k;                                   (commit)
 *	counters->pc_pushed += k;
 *	return k;
 */
size_t uslab_rseq_push_batch(char *base, unsigned shift, void *const *in, size_t n);
size_t pcpu_generic_push_batch(struct pcpu_slot *slot, void *const *in, size_t n);

/* glibc's __rseq_offset, copied once at start (hidden, one RIP-relative load). */
extern long uslab_rseq_off;

#endif /* USLAB_FASTPATH_H */
