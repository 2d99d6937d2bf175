/* SPDX-License-Identifier: MIT */
/* The per-CPU magazine routines: the C reference alone, and the rseq
 * assembly compared against it on identical slots (dav1d checkasm style). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#if USLAB_HAVE_SYS_RSEQ_H
#include <sys/rseq.h>
#endif

#include "internal.h"
#include "testutil.h"

#define ROUNDS 48                  /* rounds a test slot can hold */
#define ROUNDS_ALLOC (ROUNDS + 16) /* its array, with room to see stray writes */
/* Test slots have the caches' layout (arch/fastpath.h): regions of
 * 1 << SLOT_SHIFT bytes with the counters mirrored PCPU_CTR_DELTA above,
 * and an array of rounds per slot. */
#define SLOT_SHIFT PCPU_SHIFT

#define CTR(s) pcpu_slot_counters(s)

/* The count and the hits in a slot's word (arch/fastpath.h). */
static uint32_t count_of(const struct pcpu_slot *s)
{
	return pcpu_word_count(s->p_word);
}

static uint64_t hits_of(const struct pcpu_slot *s)
{
	return pcpu_word_hits(s->p_word);
}

/* Set the count, keeping the hits. */
static void set_count(struct pcpu_slot *s, uint32_t count)
{
	s->p_word = (s->p_word & ~PCPU_COUNT_MASK) | count;
}

/* The word is copied to the counters page after every commit. */
static void check_copy(struct pcpu_slot *s)
{
	ck_assert_uint_eq(CTR(s)->pc_word, s->p_word);
}

#define SENTINEL 0xee

/* An assertion for hot loops: Check records every passing ck_assert (a
 * write to the parent), this only a failing one. */
#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			ck_abort_msg(__VA_ARGS__);                                                 \
	} while (0)

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *obj(uintptr_t n)
{
	return (void *)(0x10000 + n * 16);
}

/* @nregions regions of slots with their counters mirror, in one mapping
 * (the gap between them is never touched). */
static char *tarena_new(size_t nregions)
{
	size_t len = PCPU_CTR_DELTA + (nregions << SLOT_SHIFT) + 4096;
	char *r = mmap(NULL, len, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	ck_assert_ptr_ne(r, MAP_FAILED);
	return r;
}

static void tarena_free(char *r, size_t nregions)
{
	munmap(r, PCPU_CTR_DELTA + (nregions << SLOT_SHIFT) + 4096);
}

/* A zeroed array of ROUNDS_ALLOC rounds, after a floor as a magazine's
 * (rounds[-1] is m_floor, which push compares with). */
static void **rounds_new(void)
{
	void **r = calloc(ROUNDS_ALLOC + 1, sizeof *r);

	ck_assert_ptr_nonnull(r);
	r[0] = (void *)MAG_FLOOR;
	return r + 1;
}

static void rounds_free(void **rounds)
{
	free(rounds - 1);
}

/* A zeroed slot holding rounds obj(1) .. obj(count) in an array of its own. */
static struct pcpu_slot *slot_new(uint32_t count, uint32_t cap)
{
	struct pcpu_slot *s = (struct pcpu_slot *)tarena_new(1);
	void **rounds = rounds_new();

	s->p_word = count;
	s->p_cap = cap;
	s->p_rounds = rounds;
	for (uint32_t i = 0; i < count; i++)
		s->p_rounds[i] = obj(i + 1);
	return s;
}

static void slot_free(struct pcpu_slot *s)
{
	rounds_free(s->p_rounds);
	tarena_free((char *)s, 1);
}

/* ---- The C reference on edge cases ---- */

START_TEST(fastpath_generic_pop_empty_or_stopped)
{
	struct pcpu_slot *s = slot_new(0, 8);

	ck_assert_ptr_null(pcpu_generic_pop(s));
	ck_assert_uint_eq(s->p_word, 0); /* no hit, no borrow into the hits */
	ck_assert_uint_eq(CTR(s)->pc_word, 0);

	set_count(s, 3);
	s->p_rounds[0] = obj(1);
	s->p_cap = 0; /* stopped: nothing comes out, even with rounds */
	ck_assert_ptr_null(pcpu_generic_pop(s));
	ck_assert_uint_eq(s->p_word, 3);
	ck_assert_uint_eq(CTR(s)->pc_word, 0);
	slot_free(s);
}
END_TEST

START_TEST(fastpath_generic_push_full_or_stopped)
{
	struct pcpu_slot *s = slot_new(4, 4);

	s->p_rounds[4] = obj(99);
	ck_assert_int_eq(pcpu_generic_push(s, obj(5)), 0);
	ck_assert_uint_eq(s->p_word, 4);
	ck_assert_ptr_eq(s->p_rounds[4], obj(99)); /* nothing written past the count */
	ck_assert_uint_eq(CTR(s)->pc_word, 0);

	set_count(s, 0);
	s->p_cap = 0;
	ck_assert_int_eq(pcpu_generic_push(s, obj(5)), 0);
	ck_assert_uint_eq(s->p_word, 0);
	ck_assert_ptr_eq(s->p_rounds[0], obj(1));
	slot_free(s);
}
END_TEST

START_TEST(fastpath_generic_push_pop_lifo_counted)
{
	struct pcpu_slot *s = slot_new(0, 3);

	ck_assert_int_eq(pcpu_generic_push(s, obj(1)), 1);
	ck_assert_int_eq(pcpu_generic_push(s, obj(2)), 1);
	ck_assert_int_eq(pcpu_generic_push(s, obj(3)), 1);
	ck_assert_int_eq(pcpu_generic_push(s, obj(4)), 0);
	ck_assert_uint_eq(hits_of(s), 3);
	ck_assert_uint_eq(count_of(s), 3);
	check_copy(s);
	uint64_t allocs, frees;
	pcpu_split_hits(s->p_word, CTR(s), &allocs, &frees);
	ck_assert_uint_eq(allocs, 0);
	ck_assert_uint_eq(frees, 3);
	ck_assert_ptr_eq(pcpu_generic_pop(s), obj(3));
	ck_assert_ptr_eq(pcpu_generic_pop(s), obj(2));
	ck_assert_ptr_eq(pcpu_generic_pop(s), obj(1));
	ck_assert_ptr_null(pcpu_generic_pop(s));
	ck_assert_uint_eq(hits_of(s), 6);
	ck_assert_uint_eq(count_of(s), 0);
	check_copy(s);
	pcpu_split_hits(CTR(s)->pc_word, CTR(s), &allocs, &frees);
	ck_assert_uint_eq(allocs, 3);
	ck_assert_uint_eq(frees, 3);
	slot_free(s);
}
END_TEST

START_TEST(fastpath_generic_pop_batch_clamps)
{
	struct pcpu_slot *s = slot_new(5, 8);
	void *out[16];

	/* The top k rounds, in slot order. */
	ck_assert_uint_eq(pcpu_generic_pop_batch(s, out, 3), 3);
	ck_assert_ptr_eq(out[0], obj(3));
	ck_assert_ptr_eq(out[1], obj(4));
	ck_assert_ptr_eq(out[2], obj(5));
	ck_assert_uint_eq(s->p_word, 2);
	check_copy(s);
	/* More than held: all of them. */
	out[2] = obj(77);
	ck_assert_uint_eq(pcpu_generic_pop_batch(s, out, 16), 2);
	ck_assert_ptr_eq(out[0], obj(1));
	ck_assert_ptr_eq(out[1], obj(2));
	ck_assert_ptr_eq(out[2], obj(77));
	ck_assert_uint_eq(s->p_word, 0);
	ck_assert_uint_eq(pcpu_generic_pop_batch(s, out, 16), 0);
	/* n = 0, and a stopped slot. */
	set_count(s, 4);
	ck_assert_uint_eq(pcpu_generic_pop_batch(s, out, 0), 0);
	ck_assert_uint_eq(s->p_word, 4);
	s->p_cap = 0;
	ck_assert_uint_eq(pcpu_generic_pop_batch(s, out, 2), 0);
	ck_assert_uint_eq(s->p_word, 4);
	/* Batches are not fast-path hits: counted apart, as rounds. */
	ck_assert_uint_eq(hits_of(s), 0);
	ck_assert_uint_eq(CTR(s)->pc_popped, 5);
	slot_free(s);
}
END_TEST

START_TEST(fastpath_generic_push_batch_clamps)
{
	struct pcpu_slot *s = slot_new(2, 6);
	void *in[16];

	for (uintptr_t i = 0; i < 16; i++)
		in[i] = obj(100 + i);
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, 0), 0);
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, 3), 3);
	ck_assert_uint_eq(s->p_word, 5);
	check_copy(s);
	ck_assert_ptr_eq(s->p_rounds[1], obj(2));
	ck_assert_ptr_eq(s->p_rounds[2], obj(100));
	ck_assert_ptr_eq(s->p_rounds[4], obj(102));
	/* More than the room: the room. */
	s->p_rounds[6] = obj(99);
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, 16), 1);
	ck_assert_uint_eq(s->p_word, 6);
	ck_assert_ptr_eq(s->p_rounds[5], obj(100));
	ck_assert_ptr_eq(s->p_rounds[6], obj(99));
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, 1), 0); /* full */
	/* Stopped. */
	set_count(s, 0);
	s->p_cap = 0;
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, 4), 0);
	ck_assert_uint_eq(s->p_word, 0);
	ck_assert_uint_eq(CTR(s)->pc_pushed, 4);
	slot_free(s);
}
END_TEST

/* The memo (arch/fastpath.h): push_memo takes only the entry at the
 * count; push refuses the top (a double free) and clears an equal entry
 * just above what it stored; so does push_batch. */
START_TEST(fastpath_generic_memo_rule)
{
	struct pcpu_slot *s = slot_new(2, 8); /* obj(1), obj(2) */

	s->p_rounds[2] = obj(3); /* stale: popped from here */
	ck_assert_int_eq(pcpu_generic_push_memo(s, obj(9)), 2);
	ck_assert_uint_eq(count_of(s), 2);
	ck_assert_int_eq(pcpu_generic_push_memo(s, obj(3)), 1);
	ck_assert_uint_eq(count_of(s), 3);
	ck_assert_uint_eq(hits_of(s), 1);
	check_copy(s);
	ck_assert_int_eq(pcpu_generic_push(s, obj(3)), -1); /* the top again */
	ck_assert_uint_eq(count_of(s), 3);
	s->p_rounds[4] = obj(7);
	ck_assert_int_eq(pcpu_generic_push(s, obj(7)), 1);
	ck_assert_ptr_eq(s->p_rounds[3], obj(7));
	ck_assert_ptr_null(s->p_rounds[4]); /* never equal to the top */
	s->p_rounds[6] = obj(11);
	void *in[2] = {obj(10), obj(11)};
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, 2), 2);
	ck_assert_ptr_null(s->p_rounds[6]);
	set_count(s, 8); /* full: no entry above to compare */
	ck_assert_int_eq(pcpu_generic_push_memo(s, obj(1)), 0);
	set_count(s, 0); /* empty: the floor is below, never an object */
	ck_assert_int_eq(pcpu_generic_push(s, obj(20)), 1);
	slot_free(s);
}
END_TEST

START_TEST(fastpath_generic_batch_round_trip)
{
	struct pcpu_slot *s = slot_new(0, ROUNDS);
	void *in[ROUNDS], *out[ROUNDS];

	for (uintptr_t i = 0; i < ROUNDS; i++)
		in[i] = obj(i + 1);
	ck_assert_uint_eq(pcpu_generic_push_batch(s, in, ROUNDS), ROUNDS);
	ck_assert_int_eq(pcpu_generic_push(s, obj(0)), 0);
	ck_assert_uint_eq(pcpu_generic_pop_batch(s, out, ROUNDS), ROUNDS);
	ck_assert_int_eq(memcmp(in, out, sizeof in), 0);
	slot_free(s);
}
END_TEST

/* ---- The rseq assembly against the C reference ---- */

/* The asm works on the slot of the CPU it runs on: base + (cpu << shift).
 * The arena holds regions 0 .. cpu + 1; every byte of them and of their
 * counters but our slot's stays SENTINEL. Each slot has its own array. */
struct pair {
	char *region;
	size_t nregions;
	unsigned cpu;
	struct pcpu_slot *asm_slot;
	void **asm_rounds;
	struct pcpu_slot *ref; /* the generic routines' copy */
	void **ref_rounds;
};

static void pair_init(struct pair *p, unsigned cpu)
{
	p->cpu = cpu;
	p->nregions = (size_t)cpu + 2;
	p->region = tarena_new(p->nregions);
	memset(p->region, SENTINEL, p->nregions << SLOT_SHIFT);
	memset(p->region + PCPU_CTR_DELTA, SENTINEL, p->nregions << SLOT_SHIFT);
	p->asm_slot = (struct pcpu_slot *)(p->region + ((size_t)cpu << SLOT_SHIFT));
	p->ref = (struct pcpu_slot *)tarena_new(1);
	p->asm_rounds = rounds_new();
	p->ref_rounds = rounds_new();
}

/* Copy the reference's state (slot, counters, rounds) to the asm's. */
static void pair_copy(struct pair *p)
{
	*p->asm_slot = *p->ref;
	p->asm_slot->p_rounds = p->asm_rounds;
	*CTR(p->asm_slot) = *CTR(p->ref);
	memcpy(p->asm_rounds, p->ref_rounds, ROUNDS_ALLOC * sizeof(void *));
}

/* Give both slots the same random state: cap 0 (stopped), empty, full, or
 * anything between; random counters and round values. */
static void pair_randomise(struct pair *p, uint64_t *rng)
{
	struct pcpu_slot *s = p->ref;
	uint64_t r = rng_next(rng);

	memset(s, SENTINEL, sizeof *s);
	memset(CTR(s), SENTINEL, sizeof *CTR(s));
	s->p_rounds = p->ref_rounds;
	/* Any hits, up to the largest (the add wraps the same in both). */
	s->p_word = rng_next(rng) & ~PCPU_COUNT_MASK;
	switch (r % 6) {
	case 0:
		s->p_cap = 0;
		set_count(s, (uint32_t)(rng_next(rng) % (ROUNDS + 1)));
		break;
	case 1:
		s->p_cap = 1 + (uint32_t)(rng_next(rng) % ROUNDS);
		set_count(s, 0);
		break;
	case 2:
		s->p_cap = 1 + (uint32_t)(rng_next(rng) % ROUNDS);
		set_count(s, s->p_cap);
		break;
	default:
		s->p_cap = 1 + (uint32_t)(rng_next(rng) % ROUNDS);
		set_count(s, (uint32_t)(rng_next(rng) % (s->p_cap + 1)));
		break;
	}
	if (r % 7 == 0)
		s->p_word |= ~PCPU_COUNT_MASK; /* the largest hit count */
	CTR(s)->pc_word = rng_next(rng);
	CTR(s)->pc_ops = rng_next(rng);
	CTR(s)->pc_pushed = rng_next(rng);
	CTR(s)->pc_popped = rng_next(rng);
	CTR(s)->pc_drained = rng_next(rng);
	s->p_live = rng_next(rng);
	/* Few distinct values one time in three, so that pushes meet equal
	 * entries (the double-free check, the memo rule's clearing). */
	uint64_t spread = r % 3 == 0 ? 8 : 100000;
	for (uint32_t i = 0; i < ROUNDS_ALLOC; i++)
		s->p_rounds[i] = obj(rng_next(rng) % spread);
	pair_copy(p);
}

/* Both slots, counters and arrays equal, and no other byte written. */
static void pair_check(const struct pair *p, unsigned step)
{
	const struct pcpu_counters *a = CTR(p->asm_slot), *r = CTR(p->ref);
	struct pcpu_slot sa = *p->asm_slot, sr = *p->ref;

	CHECK(sa.p_rounds == p->asm_rounds, "step %u: the asm changed p_rounds", step);
	sa.p_rounds = sr.p_rounds = NULL;
	CHECK(memcmp(&sa, &sr, sizeof sa) == 0 && memcmp(a, r, sizeof *a) == 0,
	      "step %u: slots differ (asm word %#llx cap %u copy %#llx pushed %llu popped %llu; "
	      "ref word %#llx cap %u copy %#llx pushed %llu popped %llu)",
	      step, (unsigned long long)p->asm_slot->p_word, p->asm_slot->p_cap,
	      (unsigned long long)a->pc_word, (unsigned long long)a->pc_pushed,
	      (unsigned long long)a->pc_popped, (unsigned long long)p->ref->p_word, p->ref->p_cap,
	      (unsigned long long)r->pc_word, (unsigned long long)r->pc_pushed,
	      (unsigned long long)r->pc_popped);
	CHECK(memcmp(p->asm_rounds, p->ref_rounds, ROUNDS_ALLOC * sizeof(void *)) == 0,
	      "step %u: rounds differ", step);
	size_t mine = (size_t)p->cpu << SLOT_SHIFT, len = p->nregions << SLOT_SHIFT;
	for (size_t i = 0; i < len; i++) {
		if (i >= mine && i < mine + PCPU_SLOT_SIZE)
			continue;
		CHECK((unsigned char)p->region[i] == SENTINEL,
		      "step %u: byte %zu of another slot written", step, i);
		CHECK((unsigned char)p->region[PCPU_CTR_DELTA + i] == SENTINEL,
		      "step %u: byte %zu of another slot's counters written", step, i);
	}
}

static void pair_fini(struct pair *p)
{
	tarena_free(p->region, p->nregions);
	tarena_free((char *)p->ref, 1);
	rounds_free(p->asm_rounds);
	rounds_free(p->ref_rounds);
}

/* One operation through both; compares the return values and buffers. */
static void pair_step(struct pair *p, uint64_t *rng, unsigned step)
{
	void *ain[ROUNDS + 8], *aout[ROUNDS + 8], *rout[ROUNDS + 8];
	size_t n = (size_t)(rng_next(rng) % (ROUNDS + 8 + 1));
	unsigned op = (unsigned)(rng_next(rng) % 4);

	for (size_t i = 0; i < ROUNDS + 8; i++) {
		ain[i] = obj(200000 + rng_next(rng) % 1000);
		aout[i] = rout[i] = obj(999999);
	}
	/* Half the time, push an entry of the array from around the count:
	 * the top (a double free), the one above, the one above that. */
	if (rng_next(rng) % 2 == 0) {
		uint32_t c = count_of(p->ref);
		uint32_t at = c + (uint32_t)(rng_next(rng) % 3);
		if (at >= 1 && at - 1 < ROUNDS_ALLOC)
			ain[0] = p->ref_rounds[at - 1];
		if (n > 0 && c + n < ROUNDS_ALLOC && rng_next(rng) % 2 == 0)
			ain[n - 1] = p->ref_rounds[c + n]; /* the entry above the batch */
	}
	CHECK(sched_getcpu() == (int)p->cpu, "step %u: not on CPU %u", step, p->cpu);
	switch (op) {
	case 0: {
		void *a = uslab_rseq_pop(p->region, SLOT_SHIFT);
		void *r = pcpu_generic_pop(p->ref);
		CHECK(a == r, "step %u: pop %p, reference %p", step, a, r);
		break;
	}
	case 1: {
		int a = uslab_rseq_push(p->region, SLOT_SHIFT, ain[0]);
		int r = pcpu_generic_push(p->ref, ain[0]);
		CHECK(a == r, "step %u: push %d, reference %d", step, a, r);
		break;
	}
	case 2: {
		size_t a = uslab_rseq_pop_batch(p->region, SLOT_SHIFT, aout, n);
		size_t r = pcpu_generic_pop_batch(p->ref, rout, n);
		CHECK(a == r, "step %u: pop_batch(%zu) %zu, reference %zu", step, n, a, r);
		CHECK(memcmp(aout, rout, sizeof aout) == 0, "step %u: pop_batch output", step);
		break;
	}
	default: {
		size_t a = uslab_rseq_push_batch(p->region, SLOT_SHIFT, ain, n);
		size_t r = pcpu_generic_push_batch(p->ref, ain, n);
		CHECK(a == r, "step %u: push_batch(%zu) %zu, reference %zu", step, n, a, r);
		break;
	}
	}
	pair_check(p, step);
}

/* Pin to CPU 0 (or the first CPU we may run on); returns it. */
static unsigned pin_cpu(cpu_set_t *saved)
{
	cpu_set_t one;
	unsigned cpu = 0;

	ck_assert_int_eq(sched_getaffinity(0, sizeof *saved, saved), 0);
	while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, saved))
		cpu++;
	ck_assert_uint_lt(cpu, CPU_SETSIZE);
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
	ck_assert_int_eq(sched_getcpu(), (int)cpu);
	return cpu;
}

START_TEST(fastpath_rseq_matches_generic)
{
	cpu_set_t saved;
	unsigned cpu = pin_cpu(&saved);
	struct pair p;
	uint64_t rng = 0x9e3779b97f4a7c15ull;

	pair_init(&p, (unsigned)sched_getcpu());
	ck_assert_uint_eq(p.cpu, cpu);
	for (unsigned step = 0; step < 20000; step++) {
		if (step % 16 == 0)
			pair_randomise(&p, &rng);
		pair_step(&p, &rng, step);
	}
	pair_fini(&p);
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
}
END_TEST

/* Every operation from each boundary state: stopped with and without rounds,
 * empty, one round, one short of full, full; n of 0, 1, the count, the
 * room and beyond. */
START_TEST(fastpath_rseq_matches_generic_edges)
{
	static const uint32_t states[][2] = {
		/* count, cap */
		{0, 0},           {5, 0},      {ROUNDS, 0}, {0, 1},
		{1, 1},           {0, ROUNDS}, {1, ROUNDS}, {ROUNDS - 1, ROUNDS},
		{ROUNDS, ROUNDS}, {7, 16},     {16, 16},
	};
	static const size_t ns[] = {0, 1, 2, 7, 9, 16, ROUNDS - 1, ROUNDS, ROUNDS + 8};
	cpu_set_t saved;
	unsigned cpu = pin_cpu(&saved);
	struct pair p;
	unsigned step = 0;

	pair_init(&p, cpu);
	for (size_t k = 0; k < sizeof states / sizeof states[0]; k++) {
		for (unsigned op = 0; op < 4; op++) {
			for (size_t j = 0; j < (op < 2 ? 1 : sizeof ns / sizeof ns[0]);
			     j++, step++) {
				void *in[ROUNDS + 8], *aout[ROUNDS + 8], *rout[ROUNDS + 8];
				size_t n = ns[j];

				memset(p.ref, SENTINEL, sizeof *p.ref);
				memset(CTR(p.ref), SENTINEL, sizeof *CTR(p.ref));
				p.ref->p_rounds = p.ref_rounds;
				p.ref->p_word =
					((uint64_t)(k + 1) << PCPU_COUNT_BITS) | states[k][0];
				p.ref->p_cap = states[k][1];
				CTR(p.ref)->pc_word = 10;
				CTR(p.ref)->pc_ops = 20;
				CTR(p.ref)->pc_pushed = 30;
				CTR(p.ref)->pc_popped = 40;
				CTR(p.ref)->pc_drained = 50;
				for (uintptr_t i = 0; i < ROUNDS_ALLOC; i++)
					p.ref->p_rounds[i] = obj(i + 1);
				pair_copy(&p);
				for (uintptr_t i = 0; i < ROUNDS + 8; i++) {
					in[i] = obj(500 + i);
					aout[i] = rout[i] = NULL;
				}
				size_t a, r;
				switch (op) {
				case 0:
					a = (uintptr_t)uslab_rseq_pop(p.region, SLOT_SHIFT);
					r = (uintptr_t)pcpu_generic_pop(p.ref);
					break;
				case 1:
					a = (size_t)uslab_rseq_push(p.region, SLOT_SHIFT, in[0]);
					r = (size_t)pcpu_generic_push(p.ref, in[0]);
					break;
				case 2:
					a = uslab_rseq_pop_batch(p.region, SLOT_SHIFT, aout, n);
					r = pcpu_generic_pop_batch(p.ref, rout, n);
					break;
				default:
					a = uslab_rseq_push_batch(p.region, SLOT_SHIFT, in, n);
					r = pcpu_generic_push_batch(p.ref, in, n);
					break;
				}
				ck_assert_msg(a == r,
				              "count %u cap %u op %u n %zu: %zu, reference %zu",
				              states[k][0], states[k][1], op, n, a, r);
				ck_assert_int_eq(memcmp(aout, rout, sizeof aout), 0);
				pair_check(&p, step);
			}
		}
	}
	pair_fini(&p);
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
}
END_TEST

/* On a real cache's slot region: what the asm pushes on this CPU, the slow
 * path's drain finds (the cache stays valid and destroys cleanly). */
START_TEST(fastpath_rseq_on_cache_region)
{
	cpu_set_t saved;
	unsigned cpu = pin_cpu(&saved);
	struct uslab_cache *c = uslab_cache_create("fastpath", 64, NULL);
	void *objs[8];

	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < 8; i++) { /* the slot now holds the rest of a magazine */
		objs[i] = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(objs[i]);
	}
	struct pcpu_slot *s = (struct pcpu_slot *)(c->c_pcpu + ((size_t)cpu << PCPU_SHIFT));
	uint32_t count = count_of(s);
	ck_assert_uint_gt(count, 0);
	void *top = s->p_rounds[count - 1];
	uint64_t a0, f0, a1, f1;
	pcpu_split_hits(s->p_word, CTR(s), &a0, &f0);
	ck_assert_ptr_eq(uslab_rseq_pop(c->c_pcpu, PCPU_SHIFT), top);
	ck_assert_uint_eq(count_of(s), count - 1);
	ck_assert_int_eq(uslab_rseq_push(c->c_pcpu, PCPU_SHIFT, top), 1);
	ck_assert_uint_eq(count_of(s), count);
	check_copy(s);
	/* The word and counters account for every hit and every round. */
	pcpu_split_hits(s->p_word, CTR(s), &a1, &f1);
	ck_assert_uint_eq(a1, a0 + 1);
	ck_assert_uint_eq(f1, f0 + 1);
	ck_assert_uint_eq(a1, 8); /* the first alloc missed: loaded a magazine */
	ck_assert_uint_eq(f1, 1);
	for (int i = 0; i < 8; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert(cache_is_valid(c));
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
}
END_TEST

/* free_rcu's push (arch/fastpath.h, push_rcu) on a real cache: known when
 * the object is the round this CPU's magazine handed out last, a miss on a
 * slot that has not started, the double free on top caught, and the count
 * is the whole word. */
START_TEST(fastpath_rseq_push_rcu)
{
	cpu_set_t saved;
	unsigned cpu = pin_cpu(&saved);
	struct uslab_cache *c = uslab_cache_create("fastpath_rcu", 64, NULL);
	void *a = uslab_cache_alloc(c), *b = uslab_cache_alloc(c);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	uslab_cache_free_rcu(c, a); /* makes and starts the rcu slots */
	char *rcu = c->c_rcu_base;
	ck_assert_ptr_nonnull(rcu);
	struct pcpu_slot *r = (struct pcpu_slot *)(rcu + ((size_t)cpu << PCPU_SHIFT));
	uint64_t w = r->p_word;
	ck_assert_uint_eq(w, 1);
	ck_assert_ptr_eq(r->p_rounds[0], a);
	/* b is the round handed out last: the memo (a debug-routed cache, as
	 * under ASan, has the zero region for c_fast: never known) */
	ck_assert_int_eq(uslab_rseq_push_rcu(rcu, c->c_fast, b), c->c_routed ? 2 : 1);
	ck_assert_uint_eq(r->p_word, 2);
	ck_assert_int_eq(uslab_rseq_push_rcu(rcu, c->c_fast, b), -1); /* on top */
	ck_assert_uint_eq(r->p_word, 2);
	void *x = uslab_cache_alloc(c), *y = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(y);
	ck_assert_int_eq(uslab_rseq_push_rcu(rcu, c->c_fast, x), 2); /* y is the memo */
	ck_assert_uint_eq(r->p_word, 3);
	uslab_cache_free(c, y);
	/* A stopped slot: a miss, nothing pushed. */
	uint32_t cap = r->p_cap;
	r->p_cap = 0;
	void *e = uslab_cache_alloc(c);
	ck_assert_int_eq(uslab_rseq_push_rcu(rcu, c->c_fast, e), 0);
	ck_assert_uint_eq(r->p_word, 3);
	r->p_cap = cap;
	uslab_cache_free_rcu(c, e);
	uslab_rcu_barrier();
	ck_assert(cache_is_valid(c));
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
}
END_TEST

#if USLAB_HAVE_SYS_RSEQ_H
/* A thread without an rseq registration: the entry points index a guard
 * slot with its cpu_id (-1, or -2 when registration failed) and miss, and
 * every object still comes and goes through the slow path. */
static void *unregistered_thread(void *arg)
{
	struct uslab_cache *c = arg;
	struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
	void *objs[300];

	/* glibc registers a length of its own (32 when __rseq_size is 20);
	 * unregistering needs the same, which the kernel checks. */
	uint32_t len = (uint32_t)__rseq_size;
	while (len <= 256 && syscall(__NR_rseq, rs, len, RSEQ_FLAG_UNREGISTER, 0x53053053) != 0)
		len += 4;
	if (len > 256)
		return "unregister failed";
	for (int round = 0; round < 2; round++) {
		int32_t id = round == 0 ? -1 : -2; /* uninitialised, registration failed */
		if (round == 1)
			__atomic_store_n(&rs->cpu_id, (uint32_t)id, __ATOMIC_RELAXED);
		if ((int32_t)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED) != id)
			return "unexpected cpu_id";
		for (int i = 0; i < 300; i++) {
			objs[i] = uslab_cache_alloc(c);
			if (objs[i] == NULL)
				return "alloc failed";
			memset(objs[i], 0x5a, 64);
			for (int j = 0; j < i; j++)
				if (objs[j] == objs[i])
					return "object handed out twice";
		}
		for (int i = 0; i < 300; i++)
			uslab_cache_free(c, objs[i]);
	}
	return NULL;
}

START_TEST(fastpath_unregistered_thread_uses_guard)
{
	struct uslab_cache *c = uslab_cache_create("unregistered", 64, NULL);
	struct uslab_stats st;
	pthread_t t;
	void *err;

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pthread_create(&t, NULL, unregistered_thread, c), 0);
	ck_assert_int_eq(pthread_join(t, &err), 0);
	ck_assert_msg(err == NULL, "%s", (const char *)err);
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.allocs, 600);
	ck_assert_uint_eq(st.frees, 600);
	ck_assert_uint_eq(st.fast_allocs, 0); /* every one missed */
	ck_assert_uint_eq(st.fast_frees, 0);
	ck_assert_uint_eq(st.active_objs, 0);
	ck_assert(cache_is_valid(c));
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST
#endif

/* ---- uslab's own rseq registration (pcpu-mode.c §4) ---- */

/* This thread's area in the own mode: the asm's offset from the thread
 * pointer, which pcpu-mode.c points at its initial-exec TLS area. */
static volatile int32_t *own_cpu_id(void)
{
	return (volatile int32_t *)((char *)__builtin_thread_pointer() + uslab_rseq_off +
	                            PCPU_RSEQ_CPU_ID);
}

static pthread_key_t own_probe_key;

/* Runs after uslab's destructor (a key made later; glibc calls them in
 * key order): the thread must be unregistered by then, so the kernel takes
 * a registration of another area (EINVAL while uslab's is still on). */
static void own_probe_gone(void *arg)
{
	static __thread struct {
		uint32_t w[8];
	} probe __attribute__((aligned(32)));
	int *verdict = arg;

	*verdict = syscall(__NR_rseq, &probe, 32, 0, PCPU_RSEQ_SIG) == 0 ? 1 : -errno;
	if (*verdict == 1)
		syscall(__NR_rseq, &probe, 32, 1 /* unregister */, PCPU_RSEQ_SIG);
}

struct own_run {
	struct uslab_cache *c;
	bool deny;   /* refuse rseq in this thread first (seccomp) */
	int verdict; /* own_probe_gone's */
	const char *err;
};

static void *own_thread(void *arg)
{
	struct own_run *r = arg;
	void *objs[300];

	if (r->deny) {
		int nr = SYS_rseq;
		if (test_deny_syscalls(&nr, 1) != 0) {
			r->err = "seccomp filter refused";
			return NULL;
		}
	}
	pthread_setspecific(own_probe_key, &r->verdict);
	if (*own_cpu_id() != -1) {
		r->err = "registered before any slow path";
		return NULL;
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 300; i++) {
			objs[i] = uslab_cache_alloc(r->c);
			if (objs[i] == NULL) {
				r->err = "alloc failed";
				return NULL;
			}
			memset(objs[i], 0x5a, 64);
			for (int j = 0; j < i; j++)
				if (objs[j] == objs[i]) {
					r->err = "object handed out twice";
					return NULL;
				}
		}
		for (int i = 0; i < 300; i++)
			uslab_cache_free(r->c, objs[i]);
	}
	bool on = *own_cpu_id() >= 0;
	if (on == r->deny)
		r->err = r->deny ? "registered through the filter" : "not registered by its misses";
	return NULL;
}

static void own_run(struct own_run *r, struct uslab_stats *st)
{
	pthread_t t;

	r->c = uslab_cache_create("own", 64, NULL);
	ck_assert_ptr_nonnull(r->c);
	ck_assert_int_eq(pthread_key_create(&own_probe_key, own_probe_gone), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, own_thread, r), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(r->err == NULL, "%s", r->err);
	ck_assert_int_eq(uslab_cache_stats(r->c, st), 0);
	ck_assert_uint_eq(st->allocs, 600);
	ck_assert_uint_eq(st->frees, 600);
	ck_assert_uint_eq(st->active_objs, 0);
	ck_assert(cache_is_valid(r->c));
	ck_assert_int_eq(uslab_cache_destroy(r->c), 0);
	pthread_key_delete(own_probe_key);
}

/* A new thread's first miss registers it (until then its cpu_id is -1, a
 * guard), its later operations hit, and its exit unregisters it. */
START_TEST(fastpath_own_registration_lazy_then_gone)
{
	struct own_run r = {0};
	struct uslab_stats st;

	own_run(&r, &st);
	ck_assert_uint_gt(st.fast_allocs, 0);
	ck_assert_uint_gt(st.fast_frees, 0);
	ck_assert_msg(r.verdict == 1, "still registered at exit (rseq: %s)", strerror(-r.verdict));
}
END_TEST

/* A thread whose registration the kernel refuses (seccomp here; EBUSY if
 * another library registered it) misses every time, correctly, and is
 * counted. */
START_TEST(fastpath_own_registration_refused)
{
	struct own_run r = {.deny = true};
	struct uslab_stats st;
	uint64_t refused = __atomic_load_n(&pcpu_rseq_refused, __ATOMIC_RELAXED);

	own_run(&r, &st);
	ck_assert_uint_eq(st.fast_allocs, 0);
	ck_assert_uint_eq(st.fast_frees, 0);
	ck_assert_uint_eq(__atomic_load_n(&pcpu_rseq_refused, __ATOMIC_RELAXED), refused + 1);
}
END_TEST

/* Hits fold into pc_ops once they reach PCPU_FOLD_AT, at the next miss,
 * and allocs and frees carry on exactly across the fold. */
START_TEST(fastpath_hits_fold_at_a_miss)
{
	cpu_set_t saved;
	unsigned cpu = pin_cpu(&saved);
	struct uslab_cache *c = uslab_cache_create("fold", 64, NULL);
	struct uslab_stats st0, st1;
	void *objs[PCPU_MAX_ROUNDS + 1];

	ck_assert_ptr_nonnull(c);
	uslab_cache_free(c, uslab_cache_alloc(c)); /* start this CPU's slot */
	struct pcpu_slot *s = (struct pcpu_slot *)(c->c_pcpu + ((size_t)cpu << PCPU_SHIFT));
	uint32_t count = count_of(s);
	ck_assert_uint_gt(count, 0);
	/* Pretend this CPU had almost PCPU_FOLD_AT more hits (an even number
	 * more: as many allocs as frees); only this pinned thread uses it. */
	s->p_word += (PCPU_FOLD_AT - 2) << PCPU_COUNT_BITS;
	ck_assert_int_eq(uslab_cache_stats(c, &st0), 0);
	for (int i = 0; i < 10; i++) /* hits: past PCPU_FOLD_AT, no fold yet */
		uslab_cache_free(c, uslab_cache_alloc(c));
	ck_assert_uint_ge(hits_of(s), PCPU_FOLD_AT);
	ck_assert_uint_eq(CTR(s)->pc_ops, 0);
	for (uint32_t i = 0; i <= count; i++) /* the slot's rounds, then a miss */
		objs[i] = uslab_cache_alloc(c);
	ck_assert_uint_lt(hits_of(s), 1000);             /* folded ... */
	ck_assert_uint_ge(CTR(s)->pc_ops, PCPU_FOLD_AT); /* ... into pc_ops */
	check_copy(s);
	ck_assert_int_eq(uslab_cache_stats(c, &st1), 0);
	ck_assert_uint_eq(st1.allocs - st0.allocs, 10 + count + 1);
	ck_assert_uint_eq(st1.frees - st0.frees, 10);
	ck_assert_uint_eq(st1.fast_allocs - st0.fast_allocs, 10 + count);
	for (uint32_t i = 0; i <= count; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
}
END_TEST

static Suite *fastpath_suite(void)
{
	Suite *s = suite_create("fastpath");
	TCase *tc;

	tc = tcase_create("generic");
	tcase_add_test(tc, fastpath_generic_pop_empty_or_stopped);
	tcase_add_test(tc, fastpath_generic_push_full_or_stopped);
	tcase_add_test(tc, fastpath_generic_push_pop_lifo_counted);
	tcase_add_test(tc, fastpath_generic_pop_batch_clamps);
	tcase_add_test(tc, fastpath_generic_push_batch_clamps);
	tcase_add_test(tc, fastpath_generic_batch_round_trip);
	tcase_add_test(tc, fastpath_generic_memo_rule);
	suite_add_tcase(s, tc);

	/* The asm indexes slots by rseq cpu_id, read through the offset that
	 * only the rseq mode sets up: in any other mode there is nothing to run. */
#if USLAB_HAVE_ASM
	if (strncmp(uslab_mode(), "rseq cpu_id", 11) == 0) {
		tc = tcase_create("rseq");
		tcase_add_test(tc, fastpath_rseq_matches_generic);
		tcase_add_test(tc, fastpath_rseq_matches_generic_edges);
		tcase_add_test(tc, fastpath_rseq_on_cache_region);
		tcase_add_test(tc, fastpath_rseq_push_rcu);
		tcase_add_test(tc, fastpath_hits_fold_at_a_miss);
#if USLAB_HAVE_SYS_RSEQ_H
		if (!pcpu_rseq_own) /* glibc's registration: the test undoes it */
			tcase_add_test(tc, fastpath_unregistered_thread_uses_guard);
#endif
		if (pcpu_rseq_own) {
			tcase_add_test(tc, fastpath_own_registration_lazy_then_gone);
			tcase_add_test(tc, fastpath_own_registration_refused);
		}
		tcase_set_timeout(tc, 30);
		suite_add_tcase(s, tc);
	}
#endif
	return s;
}

Suite *(*const test_suites[])(void) = {fastpath_suite, NULL};
