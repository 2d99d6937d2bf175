/* SPDX-License-Identifier: MIT */
/* The per-CPU magazine fast-path contract, with C pseudocode per routine. */
#ifndef USLAB_FASTPATH_H
#define USLAB_FASTPATH_H

/*
 * Layout constants. x86_64.S includes this file (with __ASSEMBLER__
 * defined, so only these #defines), and the C part below asserts each one
 * against the structures, so the asm and C can never disagree.
 */
#define PCPU_SHIFT 16     /* per-CPU stride of an arena: 1024 slots of 64 B */
#define PCPU_SLOT_SIZE 64 /* sizeof(struct pcpu_slot) */
#define PCPU_GUARD 2      /* read-only zero regions below an arena */
#define PCPU_MAX_IDS 8192 /* CPU ids an arena can hold (Linux's x86-64 NR_CPUS) */
/* The counters of a slot are at slot + PCPU_CTR_DELTA: a mirror of the
 * arena, beyond the largest one, and 2 KiB off a page multiple so that the
 * copy and the commit never share their low 12 address bits (4K aliasing). */
#define PCPU_CTR_DELTA (((PCPU_MAX_IDS + PCPU_GUARD) << PCPU_SHIFT) + 2048)
#define PCPU_SLOT_WORD 0         /* offsetof(struct pcpu_slot, p_word) */
#define PCPU_SLOT_CAP 8          /* offsetof(struct pcpu_slot, p_cap) */
#define PCPU_SLOT_ROUNDS 16      /* offsetof(struct pcpu_slot, p_rounds) */
#define PCPU_HIT 0x10000         /* one hit, in p_word */
#define PCPU_CTR_WORD 0          /* offsetof(struct pcpu_counters, pc_word) */
#define PCPU_CTR_PUSHED 8        /* offsetof(struct pcpu_counters, pc_pushed) */
#define PCPU_CTR_POPPED 16       /* offsetof(struct pcpu_counters, pc_popped) */
#define PCPU_CACHE_FAST 0        /* offsetof(struct uslab_cache, c_fast), internal.h */
#define PCPU_CACHE_CHK_INV 8     /* offsetof(struct uslab_cache, c_chk_inv) */
#define PCPU_CACHE_CHK_OBJS 16   /* offsetof(struct uslab_cache, c_chk_objs) */
#define PCPU_CACHE_CHK_TZ 24     /* offsetof(struct uslab_cache, c_chk_tz) */
#define PCPU_CACHE_KMALLOC 25    /* offsetof(struct uslab_cache, c_kmalloc) */
#define PCPU_CACHE_ALLOC_MISS 32 /* offsetof(struct uslab_cache, c_alloc_miss) */
#define PCPU_CACHE_FREE_MISS 40  /* offsetof(struct uslab_cache, c_free_miss) */
#define PCPU_SLAB_CACHE 8        /* offsetof(struct slab, s_cache) */
#define PCPU_SLAB_BASE 40        /* offsetof(struct slab, s_base) */
/* The slab map (slabmap.c): uslab_map_top[addr >> 32] is a leaf, or NULL;
 * leaf[(addr >> 16) & 0xffff] the slab, or NULL. */
#define PCPU_MAP_TOP_SHIFT 32
#define PCPU_MAP_TOP_ENTRIES 32768 /* 47-bit user addresses */
#define PCPU_MAP_GRAIN_SHIFT 16    /* SLAB_MIN_SHIFT */
#define PCPU_RSEQ_SIG 0x53053053   /* x86 RSEQ_SIG, as glibc registers it */
#define PCPU_RSEQ_CPU_ID 4         /* offsetof(struct rseq, cpu_id) */
#define PCPU_RSEQ_CS 8             /* offsetof(struct rseq, rseq_cs) */

#ifndef __ASSEMBLER__

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A cache's per-CPU slots live in an arena (slab/pcpu-arena.c) that many
 * caches share: slot i of a cache (i a CPU number from rseq cpu_id, or
 * sched_getcpu() in locked mode) is the 64-byte struct pcpu_slot at
 * base + (i << PCPU_SHIFT), where base (the cache's c_fast) and the shift
 * never change. PCPU_GUARD read-only zero regions sit below an arena, so
 * the asm may index with rseq's negative cpu_id values (-1 unregistered,
 * -2 registration failed) without testing them: those land on a slot
 * whose p_cap reads 0 and miss. An arena has a region for every id below
 * the kernel's bound on CPU numbers, so no cpu_id lands past it.
 *
 *   struct pcpu_slot: private to this process, never in a file: nothing
 *   another process writes can reach it.
 *     p_word    the commit word: bits 0-15 the count of rounds held
 *               (p_rounds[0 .. count) are objects), bits 16-63 the number
 *               of single pops and pushes (fast-path hits) since the last
 *               fold. One store changes both.
 *     p_cap     capacity; 0 means STOPPED: a remote operation owns the slot
 *     p_rounds  the rounds: the array of a magazine (p_mag) of at least
 *               p_cap entries; it changes only while the slot is stopped
 *     p_lock    locked mode only: the slot's lock (pcpu.c)
 *     p_live    1 once started (under c_drain_lock)
 *     p_owned   the cap a validation took it from, while it holds it
 *   struct pcpu_counters at slot + PCPU_CTR_DELTA: the only per-CPU data
 *   that may be shared. The arena's counters are one mapping, of the stats
 *   segment's file when the process publishes statistics, else private.
 *     pc_word     a copy of p_word, stored right before every commit
 *     pc_word     a copy of p_word, stored right before every commit
 *     pc_ops      hits folded out of p_word (pcpu.c, with the slot owned)
 *     pc_popped / pc_pushed   rounds moved by the batch routines
 *     pc_drained  rounds taken by remote drains (pcpu.c)
 *     pc_slow_allocs / pc_slow_frees   objects allocated and freed by the
 *                 slow paths (pcpu.c) while running on this CPU: relaxed
 *                 atomic adds, since a thread may migrate in a slow path
 *
 * Allocs and frees are not counted separately on the fast path: a hit
 * already loads and stores the count, so it adds to the hit count in the
 * same word (one add of a constant: pop 0xffff = +1 hit -1 round, push
 * 0x10001 = +1 hit +1 round) and copies the word to its counters with a
 * plain store. An increment of a separate counter would be a read-modify-write
 * of memory on every hit, several times the cost of the copy (the README
 * gives the measurement). From one CPU's figures (count = word & 0xffff, hits = pc_ops +
 * (word >> 16)):
 *
 *   frees - allocs = count - pc_pushed + pc_popped + pc_drained
 *   frees + allocs = hits
 *
 * exact at quiescence: every change of the count is one of those terms.
 * The library reads p_word, other processes pc_word. The copy is stored
 * inside the section, just before the commit: when a section aborts after
 * it, the copy is one operation ahead until the next operation on that
 * CPU stores it again; and once a drain's membarrier returns, no copy of
 * an earlier section can land over what the drainer stores.
 *
 * Folds: the hits field would wrap after 2^48 hits. With the slot owned
 * (stopped, or its lock held), pcpu.c moves the hits into pc_ops: on every
 * drain and resize, on a miss once the CPU's hits reach PCPU_FOLD_AT, and
 * for every slot past PCPU_FOLD_AT when a depot working-set interval ends.
 * Only a cache whose CPUs never miss and whose depot is never used for the
 * 2^48 - 2^46 hits after that (days of nothing but hits) could wrap; its
 * allocs and frees would then lose 2^47 each, the objects (computed from
 * structure) nothing.
 *
 * Invariants: count <= p_cap <= the capacity of p_mag, or p_cap == 0
 * (stopped) with count <= that capacity; while p_cap != 0, only code
 * running on CPU i changes p_word, and nothing changes p_rounds.
 *
 * The rseq routines (x86_64.S) run the whole body as one restartable
 * sequence on the current CPU's slot: the CPU number is read inside the
 * section, p_cap is loaded BEFORE p_word and p_rounds (a drainer stops a
 * slot by storing p_cap = 0 then fencing with membarrier; reading the
 * count or the array first could pair stale ones with a restarted cap),
 * and the only store the
 * allocator itself may read is the final store of p_word, the commit (the
 * copy before it is for statistics readers only). They return
 * 0/NULL when the slot is stopped, the thread has no rseq registration
 * (cpu_id < 0: a guard slot), or the magazine is empty/full. They take no
 * lock and make no call or syscall; a hit does no read-modify-write of
 * memory.
 *
 * The batches' `addq k` to pc_popped / pc_pushed comes right AFTER the
 * commit, outside the section (inside, an abort after the add would count
 * twice). A thread preempted between its commit and the add leaves allocs
 * and frees (derived from them) off by k / 2 until it runs again; one that
 * migrated there can race the new owner of that CPU and lose the add, for
 * good: rare, accepted, and the objects counts (from structure) are never
 * affected.
 *
 * The generic routines (generic.c) are the C reference of the same body on
 * a given slot. They are used by the locked mode, under the slot's lock,
 * and by tests that compare the two.
 */

struct mag;

struct pcpu_slot {
	uint64_t p_word;   /* asm: PCPU_SLOT_WORD */
	uint32_t p_cap;    /* asm: PCPU_SLOT_CAP */
	uint32_t p_lock;   /* locked mode: the slot's spinlock (pcpu.c); unused by the asm */
	void **p_rounds;   /* asm: PCPU_SLOT_ROUNDS; p_mag->m_rounds */
	struct mag *p_mag; /* the magazine whose array p_rounds is (pcpu.c) */
	uint64_t p_live;   /* 1 once started; written under c_drain_lock */
	uint64_t p_owned;  /* 1 << 32 | its cap while validate owns it (pcpu.c) */
	uint64_t p_miss;   /* the kind of its last miss (pcpu.c §7; relaxed, a hint) */
	uint64_t p_flip;   /* its hits when its misses last changed kind (likewise);
	                    * an rcu slot's count at the last look (rcu.c) */
};

/* p_word: the count in the low PCPU_COUNT_BITS bits, hits above them. */
#define PCPU_COUNT_BITS 16
#define PCPU_COUNT_MASK ((UINT64_C(1) << PCPU_COUNT_BITS) - 1)
/* Hits are folded into pc_ops (pcpu.c) long before they could wrap. */
#define PCPU_FOLD_AT (UINT64_C(1) << 46)

static inline uint32_t pcpu_word_count(uint64_t w)
{
	return (uint32_t)(w & PCPU_COUNT_MASK);
}

static inline uint64_t pcpu_word_hits(uint64_t w)
{
	return w >> PCPU_COUNT_BITS;
}

/* A slot's counters, at slot + PCPU_CTR_DELTA: what another process may
 * read (see above). */
struct pcpu_counters {
	uint64_t pc_word;        /* copy of p_word, stored after every commit */
	uint64_t pc_pushed;      /* rounds pushed by push_batch, added after the commit */
	uint64_t pc_popped;      /* rounds popped by pop_batch, added after the commit */
	uint64_t pc_drained;     /* rounds taken by remote drains, added by the drainer */
	uint64_t pc_ops;         /* hits folded out of p_word, by the slot's owner */
	uint64_t pc_slow_allocs; /* slow-path allocations on this CPU (atomic adds) */
	uint64_t pc_slow_frees;  /* slow-path frees on this CPU (atomic adds) */
	uint64_t pc_pad;
};

/* One CPU's allocs and frees on its slot, from its word and counters:
 * exact at quiescence (see above); clamped to [0, hits] when the figures
 * were read while they changed. */
static inline void pcpu_split_hits(uint64_t word, const struct pcpu_counters *k, uint64_t *allocs,
                                   uint64_t *frees)
{
	uint64_t hits = k->pc_ops + pcpu_word_hits(word);
	/* frees - allocs, as a signed difference modulo 2^64 */
	uint64_t net = pcpu_word_count(word) + k->pc_popped + k->pc_drained - k->pc_pushed;
	bool more_frees = (int64_t)net >= 0;
	uint64_t mag = more_frees ? net : 0 - net;

	if (mag > hits)
		*allocs = more_frees ? 0 : hits;
	else
		*allocs = more_frees ? (hits - mag) / 2 : hits - (hits - mag) / 2;
	*frees = hits - *allocs;
}

/* The most rounds a slot can hold: the count field's range. */
#define PCPU_MAX_ROUNDS 4096

/* The asm's constants, checked against the structures. */
_Static_assert(offsetof(struct pcpu_slot, p_word) == PCPU_SLOT_WORD, "PCPU_SLOT_WORD");
_Static_assert(offsetof(struct pcpu_slot, p_cap) == PCPU_SLOT_CAP, "PCPU_SLOT_CAP");
_Static_assert(offsetof(struct pcpu_slot, p_rounds) == PCPU_SLOT_ROUNDS, "PCPU_SLOT_ROUNDS");
_Static_assert(sizeof(struct pcpu_slot) == PCPU_SLOT_SIZE, "PCPU_SLOT_SIZE");
_Static_assert(PCPU_HIT == UINT64_C(1) << PCPU_COUNT_BITS && PCPU_MAX_ROUNDS < PCPU_COUNT_MASK,
               "PCPU_HIT: the hits sit above a count field that holds every count");
_Static_assert(offsetof(struct pcpu_counters, pc_word) == PCPU_CTR_WORD, "PCPU_CTR_WORD");
_Static_assert(offsetof(struct pcpu_counters, pc_pushed) == PCPU_CTR_PUSHED, "PCPU_CTR_PUSHED");
_Static_assert(offsetof(struct pcpu_counters, pc_popped) == PCPU_CTR_POPPED, "PCPU_CTR_POPPED");
_Static_assert(sizeof(struct pcpu_counters) == PCPU_SLOT_SIZE,
               "the counters mirror the slots, one for one");
_Static_assert(PCPU_CTR_DELTA % 4096 == 2048 && PCPU_CTR_DELTA < (INT64_C(1) << 31),
               "a 32-bit displacement, off the 4 KiB grid");

static inline struct pcpu_counters *pcpu_slot_counters(struct pcpu_slot *s)
{
	return (struct pcpu_counters *)((char *)s + PCPU_CTR_DELTA);
}

/* void *pop(slot):
 *	w = slot->p_word + PCPU_HIT - 1;                      (cap loaded first)
 *	if (count(w) >= slot->p_cap) return NULL;             (was 0: 0xffff; or stopped)
 *	obj = slot->p_rounds[count(w)];                       (the array loaded after the cap)
 *	slot->p_word = w;                                     (commit)
 *	counters->pc_word = w;
 *	return obj;
 */
void *uslab_rseq_pop(char *base, unsigned shift);
void *pcpu_generic_pop(struct pcpu_slot *slot);

/* int push(slot, obj), for an object already checked:
 *	w = slot->p_word;                                     (cap loaded first)
 *	if (count(w) >= slot->p_cap) return 0;                (full or stopped)
 *	if (slot->p_rounds[count(w) - 1] == obj) return -1;   (double free of the top;
 *	                                                       rounds[-1] is m_floor)
 *	slot->p_rounds[count(w)] = obj;
 *	if (count(w) + 1 < slot->p_cap && slot->p_rounds[count(w) + 1] == obj)
 *		slot->p_rounds[count(w) + 1] = NULL;          (the memo rule, below)
 *	slot->p_word = w + PCPU_HIT + 1;                      (commit)
 *	counters->pc_word = w + PCPU_HIT + 1;
 *	return 1;
 *
 * int push_memo(slot, obj), the public free's hit (x86_64-entry.S):
 *	w = slot->p_word;                                     (cap loaded first)
 *	if (count(w) >= slot->p_cap) return 0;                (full or stopped)
 *	if (slot->p_rounds[count(w)] != obj) return 2;        (not known: check it,
 *	                                                       then push())
 *	slot->p_word = w + PCPU_HIT + 1;                      (commit: obj is there)
 *	counters->pc_word = w + PCPU_HIT + 1;
 *	return 1;
 *
 * The memo. A pop leaves the object it took in the array, just above the
 * new count: freed back on the same CPU (the common case: alloc and free
 * in turn, or in reverse order), it is found there and is known to be an
 * object of this cache, so the hit skips the check of every free (the
 * slab map, x86_64-entry.S) and even the store. That rests on two rules
 * for the entries at and above count (the stale ones):
 *  - each is NULL or an object of this cache in a slab that is not
 *    released: arrays are zeroed when a slot gets one and when a drain
 *    empties it, and a slab is released only after every slot's stale
 *    entries were cleared since it became empty (pcpu.c, sweeps);
 *  - the one at count never equals the one below it (the top): push() and
 *    push_batch() clear an equal entry above what they stored, and pops
 *    move the top two apart, which differ unless the magazine held one
 *    object twice. So a memo hit is never a free of the object on top
 *    (a double free that push() reports), unless an earlier double free
 *    put one object in the magazine twice; that one is caught when the
 *    object reaches its slab. */
int uslab_rseq_push(char *base, unsigned shift, void *obj);
int pcpu_generic_push(struct pcpu_slot *slot, void *obj);
int pcpu_generic_push_memo(struct pcpu_slot *slot, void *obj);

/* int push_rcu(rcu, fast, obj), free_rcu's push (rcu.c) onto the slot of
 * this CPU in region rcu, whose word is its count alone, with the memo
 * test on this CPU's slot of region fast (obj is the round that slot
 * handed out last: an object of the cache), in one section (x86_64.S only):
 *	if (rcu->p_word >= rcu->p_cap) return 0;               (cap loaded first)
 *	if (rcu->p_rounds[rcu->p_word - 1] == obj) return -1;  (rounds[-1]: m_floor)
 *	w = fast->p_word;                                      (cap loaded first)
 *	k = count(w) < fast->p_cap && fast->p_rounds[count(w)] == obj;
 *	rcu->p_rounds[rcu->p_word] = obj;
 *	rcu->p_word += 1;                                      (commit; no copy)
 *	return k ? 1 : 2;
 */
int uslab_rseq_push_rcu(char *rcu, char *fast, void *obj);

/* size_t pop_batch(slot, out, n):
 *	w = slot->p_word;                                     (cap loaded first)
 *	if (slot->p_cap == 0) return 0;
 *	k = min(count(w), n);
 *	out[0 .. k) = p_rounds[count(w) - k .. count(w));
 *	slot->p_word = w - k;                                 (commit; hits unchanged)
 *	counters->pc_word = w - k;
 *	counters->pc_popped += k;
 *	return k;
 */
size_t uslab_rseq_pop_batch(char *base, unsigned shift, void **out, size_t n);
size_t pcpu_generic_pop_batch(struct pcpu_slot *slot, void **out, size_t n);

/* size_t push_batch(slot, in, n):
 *	w = slot->p_word;                                     (cap loaded first)
 *	k = min(slot->p_cap - count(w), n);                   (cap 0: k = 0)
 *	p_rounds[count(w) .. count(w) + k) = in[0 .. k);
 *	if (count(w) + k < slot->p_cap && p_rounds[count(w) + k] == in[k - 1])
 *		p_rounds[count(w) + k] = NULL;                (the memo rule, above)
 *	slot->p_word = w + k;                                 (commit; hits unchanged)
 *	counters->pc_word = w + k;
 *	counters->pc_pushed += k;
 *	return k;
 */
size_t uslab_rseq_push_batch(char *base, unsigned shift, void *const *in, size_t n);
size_t pcpu_generic_push_batch(struct pcpu_slot *slot, void *const *in, size_t n);

/* The rseq area's offset from the thread pointer: glibc's __rseq_offset, or
 * uslab's own area's (pcpu-mode.c §4); set once at start (generic.c
 * defines it; hidden, one RIP-relative load in the asm). */
extern long uslab_rseq_off;

#endif /* !__ASSEMBLER__ */

#endif /* USLAB_FASTPATH_H */
