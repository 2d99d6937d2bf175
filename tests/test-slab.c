/* SPDX-License-Identifier: MIT */
/* Unit tests of the slab layer: geometry, colour, lists, reap, misuse checks. */
#include "config.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sanitize.h"
#include "testutil.h"

/* Death tests need a child process: with CK_FORK=no (valgrind) they are left out. */
static bool can_fork(void)
{
	const char *e = getenv("CK_FORK");

	return e == NULL || strcmp(e, "no") != 0;
}

/* Object lifecycle counts, and the byte a ctor fills an object with. */
struct lifecycle {
	size_t size;
	uint64_t ctor, dtor;
};

#define CTOR_BYTE 0xc7

static int lc_ctor(void *obj, void *arg)
{
	struct lifecycle *l = arg;

	l->ctor++;
	memset(obj, CTOR_BYTE, l->size);
	return 0;
}

static void lc_dtor(void *obj, void *arg)
{
	struct lifecycle *l = arg;

	(void)obj;
	l->dtor++;
}

/* A cache whose slab layer the test drives directly (no magazines). */
static struct uslab_cache *slab_cache(size_t size, size_t align, struct lifecycle *l)
{
	struct uslab_cache_conf conf = {.align = align, .flags = USLAB_NOMAGAZINE};

	if (l != NULL) {
		l->size = size;
		conf.ctor = lc_ctor;
		conf.dtor = lc_dtor;
		conf.arg = l;
	}
	struct uslab_cache *c = uslab_cache_create("slabtest", size, &conf);
	ck_assert_ptr_nonnull(c);
	return c;
}

static void slab_cache_done(struct uslab_cache *c)
{
	ck_assert(cache_is_valid(c));
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}

static uintptr_t slab_start(const struct uslab_cache *c, const void *obj)
{
	return (uintptr_t)obj & c->c_slab_mask;
}

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Every geometry rule for the cache of @size bytes at @align (0: natural). */
static void check_geometry(size_t size, size_t align)
{
	struct uslab_cache *c = slab_cache(size, align, NULL);
	size_t a = c->c_align;
	size_t objs = c->c_slab_objs;

	ck_assert_msg(c->c_slab_size >= (size_t)1 << SLAB_MIN_SHIFT &&
	                      c->c_slab_size <= (size_t)1 << SLAB_MAX_SHIFT &&
	                      (c->c_slab_size & (c->c_slab_size - 1)) == 0,
	              "size %zu: slab size %zu", size, c->c_slab_size);
	ck_assert_uint_eq(c->c_slab_mask, ~(uintptr_t)(c->c_slab_size - 1));
	ck_assert_uint_eq(c->c_slot, round_up(size, a));
	ck_assert_msg(objs >= 1, "size %zu: no object per slab", size);
	ck_assert_uint_eq(c->c_slab_words, (objs + 63) / 64);
	/* The header is elsewhere: object 0 starts the block (before colour). */
	ck_assert_msg(c->c_first == 0, "size %zu: first %u", size, c->c_first);
	/* Every colour keeps every object inside the slab. */
	ck_assert_msg(c->c_colours >= 1 && c->c_colour_step >= 64 && c->c_colour_step % a == 0,
	              "size %zu: colours %u step %u", size, c->c_colours, c->c_colour_step);
	size_t spare = c->c_slab_size - objs * c->c_slot;
	ck_assert_msg(objs * c->c_slot <= c->c_slab_size, "size %zu: overflow", size);
	ck_assert_msg((size_t)(c->c_colours - 1) * c->c_colour_step <= spare &&
	                      spare < (size_t)c->c_colours * c->c_colour_step,
	              "size %zu: %u colours of %u for %zu spare bytes", size, c->c_colours,
	              c->c_colour_step, spare);
	/* Objects per slab is the most that fit. */
	ck_assert_msg((objs + 1) * c->c_slot > c->c_slab_size, "size %zu: %zu objs not maximal",
	              size, objs);
	/* Tail waste per slab (the header and its bit per object are in the
	 * metadata, not here). The largest objects waste at most 1/16 of the
	 * largest slab (internal.h). */
	size_t wasted = c->c_slab_size - objs * c->c_slot;
	double waste = (double)wasted / (double)c->c_slab_size;
	double bound = c->c_slot <= (1u << 17) ? 1.0 / 64 : 1.0 / 16;
	ck_assert_msg(waste <= bound, "size %zu: waste %.5f > %.5f (slab %zu, %zu objs)", size,
	              waste, bound, c->c_slab_size, objs);
	slab_cache_done(c);
}

/* ---- Geometry ---- */

START_TEST(slab_geometry_small_sizes)
{
	for (size_t size = 1; size <= 4096; size++)
		check_geometry(size, 0);
}
END_TEST

START_TEST(slab_geometry_large_sizes)
{
	for (size_t size = 4097; size <= USLAB_MAX_SIZE; size += size / 5 + 13)
		check_geometry(size, 0);
	for (unsigned k = 12; k <= 20; k++) {
		check_geometry(((size_t)1 << k) - 1, 0);
		check_geometry((size_t)1 << k, 0);
		if (k < 20)
			check_geometry(((size_t)1 << k) + 1, 0);
	}
}
END_TEST

START_TEST(slab_geometry_explicit_alignment)
{
	static const size_t sizes[] = {1, 24, 100, 4095, 4097, 65536};

	for (size_t align = 1; align <= 4096; align *= 2)
		for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
			check_geometry(sizes[k], align);
}
END_TEST

/* Allocate @nslabs full slabs; returns the objects, slab by slab. */
static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

static void **fill_slabs(struct uslab_cache *c, size_t nslabs)
{
	size_t n = nslabs * c->c_slab_objs;
	void **objs = malloc(n * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	ck_assert_uint_eq(slab_alloc_bulk(c, objs, n), n);
	ck_assert_uint_eq(c->c_slabs, nslabs);
	/* Each slab is used up front to back before the next is made. */
	for (size_t s = 0; s < nslabs; s++)
		for (size_t i = 1; i < c->c_slab_objs; i++)
			ck_assert(slab_start(c, objs[s * c->c_slab_objs + i]) ==
			          slab_start(c, objs[s * c->c_slab_objs]));
	return objs;
}

START_TEST(slab_colour_cycles_through_spare)
{
	struct uslab_cache *c = slab_cache(1000, 0, NULL);
	ck_assert_uint_gt(c->c_colours, 2); /* the test needs spare space */
	size_t nslabs = c->c_colours + 2;
	void **objs = fill_slabs(c, nslabs);

	for (size_t s = 0; s < nslabs; s++) {
		void **so = objs + s * c->c_slab_objs;
		size_t off = (uintptr_t)so[0] - slab_start(c, so[0]);
		ck_assert_uint_eq(off, c->c_first + (s % c->c_colours) * c->c_colour_step);
		ck_assert_uint_eq((uintptr_t)so[0] % c->c_align, 0);
		/* The last object still ends inside the slab. */
		uintptr_t end = (uintptr_t)so[c->c_slab_objs - 1] + c->c_slot;
		ck_assert_uint_le(end, slab_start(c, so[0]) + c->c_slab_size);
		if (s > 0) {
			void **prev = objs + (s - 1) * c->c_slab_objs;
			ck_assert_uint_ne(off, (uintptr_t)prev[0] - slab_start(c, prev[0]));
		}
	}
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs, nslabs * c->c_slab_objs);
	free(objs);
	slab_cache_done(c);
}
END_TEST

START_TEST(slab_colour_single_without_spare)
{
	struct uslab_cache *c = slab_cache(64, 0, NULL);
	ck_assert_uint_eq(c->c_colours, 1);
	void **objs = fill_slabs(c, 3);

	for (size_t s = 0; s < 3; s++) {
		void *o = objs[s * c->c_slab_objs];
		ck_assert_uint_eq((uintptr_t)o - slab_start(c, o), c->c_first);
	}
	slab_free_bulk(c, objs, 3 * c->c_slab_objs);
	free(objs);
	slab_cache_done(c);
}
END_TEST

/* ---- Bulk alloc and free ---- */

START_TEST(slab_bulk_counts)
{
	struct uslab_cache *c = slab_cache(64, 0, NULL);
	size_t per = c->c_slab_objs;
	size_t n = 2 * per + per / 2;
	void **objs = malloc(n * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	ck_assert_uint_eq(slab_alloc_bulk(c, objs, n), n);
	ck_assert_uint_eq(c->c_inuse, n);
	ck_assert_uint_eq(slab_inuse(c), n);
	ck_assert_uint_eq(c->c_slabs, 3);
	ck_assert_uint_eq(c->c_slabs_created, 3);
	ck_assert(cache_is_valid(c));
	/* Distinct, slot-spaced objects. */
	for (size_t i = 1; i < n; i++)
		ck_assert_ptr_ne(objs[i], objs[i - 1]);

	/* Empty the first slab: it is kept for reuse. */
	slab_free_bulk(c, objs, per);
	ck_assert_uint_eq(slab_inuse(c), n - per);
	ck_assert_uint_eq(c->c_slabs, 3);
	ck_assert_uint_eq(c->c_empty_slabs, 1);
	ck_assert(cache_is_valid(c));

	/* Half of what is left. */
	slab_free_bulk(c, objs + per, (n - per) / 2);
	ck_assert_uint_eq(slab_inuse(c), n - per - (n - per) / 2);
	ck_assert(cache_is_valid(c));

	/* Everything: within the decay interval every empty slab is kept
	 * (slab_empty_slabs_decay_by_working_set covers their release). */
	slab_free_bulk(c, objs + per + (n - per) / 2, n - per - (n - per) / 2);
	ck_assert_uint_eq(slab_inuse(c), 0);
	ck_assert_uint_eq(c->c_slabs, 3);
	ck_assert_uint_eq(c->c_empty_slabs, 3);
	ck_assert_uint_eq(c->c_slabs_released, 0);
	ck_assert(cache_is_valid(c));

	/* Kept slabs serve the next allocation without a new slab. */
	ck_assert_uint_eq(slab_alloc_bulk(c, objs, per), per);
	ck_assert_uint_eq(c->c_slabs_created, 3);
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs, per);
	free(objs);
	slab_cache_done(c);
}
END_TEST

START_TEST(slab_bulk_zero_is_noop)
{
	struct uslab_cache *c = slab_cache(48, 0, NULL);
	void *objs[1] = {NULL};

	ck_assert_uint_eq(slab_alloc_bulk(c, objs, 0), 0);
	ck_assert_ptr_null(objs[0]);
	ck_assert_uint_eq(c->c_slabs, 0);
	slab_free_bulk(c, objs, 0);
	ck_assert_uint_eq(c->c_inuse, 0);
	slab_cache_done(c);
}
END_TEST

/* Empty slabs follow the working set: kept while the interval runs, and
 * once they stayed empty through a whole one, released (a cache with a
 * ctor: @l) or purged and kept, then released when they stayed purged for
 * SLAB_PURGED_KEEP_NS. The test ends intervals by moving their start into
 * the past, not by sleeping. */
static void decay_case(struct lifecycle *l)
{
	struct uslab_cache *c = slab_cache(4096, 0, l);
	size_t nslabs = 24;
	void **objs = fill_slabs(c, nslabs);
	void *one;

	slab_free_bulk(c, objs, nslabs * c->c_slab_objs);
	/* Within the interval, nothing is released: a new cycle reuses them. */
	ck_assert_uint_eq(c->c_slabs, nslabs);
	ck_assert_uint_eq(c->c_empty_slabs, nslabs);
	/* An interval ends: the low-water mark was 0 (slabs were in use), so
	 * nothing goes, and the next interval starts with all 24 empty. */
	c->c_decay_start = 0;
	ck_assert_uint_eq(slab_alloc_bulk(c, &one, 1), 1);
	ck_assert_uint_eq(c->c_slabs, nslabs);
	/* The next one ends: 23 stayed empty through it. */
	c->c_decay_start = 0;
	slab_free_bulk(c, &one, 1);
	ck_assert(cache_is_valid(c));
	/* Constructed objects, or valgrind (no purge, slab.c): released. */
	if (l != NULL || VG_RUNNING()) {
		ck_assert_uint_eq(c->c_slabs, 1);
		ck_assert_uint_eq(c->c_empty_slabs, 1);
		ck_assert_uint_eq(c->c_purged_slabs, 0);
	} else { /* purged, kept */
		ck_assert_uint_eq(c->c_slabs, nslabs);
		ck_assert_uint_eq(c->c_purged_slabs, nslabs - 1);
		ck_assert_uint_eq(c->c_bytes_purged, (nslabs - 1) * c->c_slab_size);
		/* Purged long ago: the next interval's end releases them but
		 * the one just reused (22), and purges the one never purged;
		 * the reused one is empty again, not yet through an interval. */
		slab_lock(c);
		for (struct slab *s = c->c_empty.l_head; s != NULL; s = s->s_next)
			if (s->s_purged_at != 0)
				s->s_purged_at = 1;
		slab_unlock(c);
		c->c_decay_start = 0;
		ck_assert_uint_eq(slab_alloc_bulk(c, &one, 1), 1);
		slab_free_bulk(c, &one, 1);
		ck_assert_uint_eq(c->c_slabs, 2);
		ck_assert_uint_eq(c->c_purged_slabs, 1);
		ck_assert_uint_eq(c->c_slabs_released, nslabs - 2);
	}
	ck_assert(cache_is_valid(c));
	free(objs);
	slab_cache_done(c);
}

START_TEST(slab_empty_slabs_decay_by_working_set)
{
	struct lifecycle l;

	memset(&l, 0, sizeof l);
	decay_case(NULL);
	decay_case(&l);
}
END_TEST

/* ---- Lists ---- */

/* After most of slab A and one object of slab B are freed, in either order,
 * the next allocation comes from B, the fuller one. */
static void check_fullest_first(bool a_first)
{
	struct uslab_cache *c = slab_cache(128, 0, NULL);
	size_t per = c->c_slab_objs;
	ck_assert_uint_ge(per, 2 * SLAB_BUCKETS);
	void **objs = fill_slabs(c, 2);
	void **a = objs, **b = objs + per;
	void *got;

	if (a_first)
		slab_free_bulk(c, a + 1, per - 1);
	slab_free_bulk(c, b + per / 2, 1);
	if (!a_first)
		slab_free_bulk(c, a + 1, per - 1);
	ck_assert(cache_is_valid(c));

	ck_assert_uint_eq(slab_alloc_bulk(c, &got, 1), 1);
	ck_assert_ptr_eq(got, b[per / 2]);
	ck_assert(cache_is_valid(c));
	/* B is full again: the next ones come from A, lowest index first. */
	ck_assert_uint_eq(slab_alloc_bulk(c, &got, 1), 1);
	ck_assert_ptr_eq(got, a[1]);
	ck_assert(cache_is_valid(c));

	slab_free_bulk(c, a, 2);
	slab_free_bulk(c, b, per);
	free(objs);
	slab_cache_done(c);
}

START_TEST(slab_alloc_prefers_fullest_partial)
{
	check_fullest_first(true);
	check_fullest_first(false);
}
END_TEST

/* ---- Reap and the object lifecycle ---- */

START_TEST(slab_reap_releases_empty_slabs_with_dtor)
{
	struct lifecycle l = {0};
	struct uslab_cache *c = slab_cache(256, 0, &l);
	size_t per = c->c_slab_objs;
	void **objs = fill_slabs(c, 3);

	ck_assert_uint_eq(l.ctor, 3 * per);
	ck_assert_uint_eq(l.dtor, 0);
	ck_assert_uint_eq(slab_reap(c), 0); /* nothing empty yet */
	ck_assert_uint_eq(l.dtor, 0);

	slab_free_bulk(c, objs, 3 * per);
	ck_assert_uint_eq(l.dtor, 0); /* empty slabs are kept within the interval */
	ck_assert(cache_is_valid(c));
	ck_assert_uint_eq(slab_reap(c), 3 * c->c_slab_size);
	ck_assert_uint_eq(l.dtor, 3 * per);
	ck_assert_uint_eq(c->c_slabs, 0);
	ck_assert_uint_eq(c->c_slabs_released, 3);
	ck_assert_uint_eq(slab_reap(c), 0);
	ck_assert(cache_is_valid(c));
	free(objs);
	slab_cache_done(c);
	ck_assert_uint_eq(l.ctor, l.dtor);
}
END_TEST

START_TEST(slab_reap_keeps_partial_slabs)
{
	struct lifecycle l = {0};
	struct uslab_cache *c = slab_cache(512, 0, &l);
	size_t per = c->c_slab_objs;
	void **objs = fill_slabs(c, 2);

	slab_free_bulk(c, objs, per - 1);   /* A keeps one object out */
	slab_free_bulk(c, objs + per, per); /* B is empty */
	ck_assert_uint_eq(slab_reap(c), c->c_slab_size);
	ck_assert_uint_eq(l.dtor, per);
	ck_assert_uint_eq(c->c_slabs, 1);
	ck_assert_uint_eq(slab_inuse(c), 1);
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs + per - 1, 1);
	free(objs);
	slab_cache_done(c);
	ck_assert_uint_eq(l.ctor, 2 * per);
	ck_assert_uint_eq(l.dtor, 2 * per);
}
END_TEST

/* A pattern no ctor or allocator would write: a function of the address. */
static unsigned char pattern_at(const void *obj, size_t i)
{
	uintptr_t a = (uintptr_t)obj;

	return (unsigned char)((a >> 3) * 31u + (a >> 11) + i * 7u + 1u);
}

static void fill_pattern(void *obj, size_t size)
{
	for (size_t i = 0; i < size; i++)
		((unsigned char *)obj)[i] = pattern_at(obj, i);
}

static bool has_pattern(const void *obj, size_t size)
{
	for (size_t i = 0; i < size; i++)
		if (((const unsigned char *)obj)[i] != pattern_at(obj, i))
			return false;
	return true;
}

/* Loop index: object sizes 8, 24, 200. The program's state in free objects
 * survives free and alloc: the slab layer writes no byte of a free object. */
START_TEST(slab_free_never_writes_object)
{
	static const size_t sizes[] = {8, 24, 200};
	size_t size = sizes[_i];
	struct lifecycle l = {0};
	struct uslab_cache *c = slab_cache(size, 0, &l);
	size_t per = c->c_slab_objs;
	void **objs = fill_slabs(c, 2);
	uint64_t ctors = l.ctor;

	for (size_t i = 0; i < 2 * per; i++) {
		ck_assert_int_eq(*(unsigned char *)objs[i], CTOR_BYTE);
		fill_pattern(objs[i], size);
	}
	/* Slab A entirely (it becomes the empty reserve), B but its last object. */
	slab_free_bulk(c, objs, 2 * per - 1);
	ck_assert_uint_eq(c->c_slabs, 2);
	ck_assert(cache_is_valid(c));

	void **again = malloc(2 * per * sizeof *again);
	ck_assert_ptr_nonnull(again);
	ck_assert_uint_eq(slab_alloc_bulk(c, again, 2 * per - 1), 2 * per - 1);
	ck_assert_uint_eq(l.ctor, ctors); /* no new slab, no new construction */
	for (size_t i = 0; i < 2 * per - 1; i++)
		ck_assert_msg(has_pattern(again[i], size),
		              "object %p (size %zu) was written while free", again[i], size);
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, again, 2 * per - 1);
	slab_free_bulk(c, objs + 2 * per - 1, 1);
	free(again);
	free(objs);
	slab_cache_done(c);
	ck_assert_uint_eq(l.ctor, l.dtor);
}
END_TEST

/* ---- Object lookup ---- */

START_TEST(slab_of_checked_finds_every_object)
{
	static const size_t sizes[] = {24, 1000, 65536};

	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		struct uslab_cache *c = slab_cache(sizes[k], 0, NULL);
		void **objs = fill_slabs(c, 2);

		for (size_t i = 0; i < 2 * c->c_slab_objs; i++) {
			uint32_t idx = UINT32_MAX;
			struct slab *s = slab_of_checked(c, objs[i], &idx);
			ck_assert_uint_eq((uintptr_t)s->s_block, slab_start(c, objs[i]));
			ck_assert_ptr_eq(slabmap_lookup(objs[i]), s);
			ck_assert_uint_eq(idx, i % c->c_slab_objs);
			ck_assert_ptr_eq(s->s_base + (size_t)idx * c->c_slot, objs[i]);
		}
		slab_free_bulk(c, objs, 2 * c->c_slab_objs);
		free(objs);
		slab_cache_done(c);
	}
}
END_TEST

/* Slots of 1 byte: every address is an object start (no division). */
START_TEST(slab_of_checked_byte_objects)
{
	struct uslab_cache *c = slab_cache(1, 0, NULL);
	enum { N = 5000 };
	void **objs = malloc(N * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	ck_assert_uint_eq(slab_alloc_bulk(c, objs, N), N);
	for (size_t i = 0; i < N; i++) {
		uint32_t idx = UINT32_MAX;
		struct slab *s = slab_of_checked(c, objs[i], &idx);
		ck_assert_uint_eq((uintptr_t)s->s_block, slab_start(c, objs[i]));
		ck_assert_uint_eq(idx, i);
		ck_assert_ptr_eq(s->s_base + idx, objs[i]);
	}
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs, N);
	free(objs);
	slab_cache_done(c);
}
END_TEST

/* ---- Misuse: reported, then abort ---- */

START_TEST(slab_of_checked_interior_aborts)
{
	struct uslab_cache *c = slab_cache(24, 0, NULL);
	void *obj;

	ck_assert_uint_eq(slab_alloc_bulk(c, &obj, 1), 1);
	ck_assert(cache_is_valid(c));
	uint32_t idx;
	slab_of_checked(c, (char *)obj + 8, &idx);
}
END_TEST

/* A pointer into the colour gap before object 0 is no object. */
START_TEST(slab_of_checked_before_first_aborts)
{
	struct uslab_cache *c = slab_cache(1000, 0, NULL);
	/* Two slabs: colours cycle, so the second starts after a gap. */
	void **objs = fill_slabs(c, 2);
	struct slab *s = slabmap_lookup(objs[c->c_slab_objs]);

	ck_assert_ptr_nonnull(s);
	ck_assert((uintptr_t)s->s_base > (uintptr_t)s->s_block);
	uint32_t idx;
	slab_of_checked(c, s->s_block, &idx);
}
END_TEST

/* Finding 3 of the reliability issue: the last object of a slab ended where
 * the next block's header began, so an overrun rewrote list links and the
 * free bitmap. Headers now live in the guarded metadata: overwrite every
 * byte of a full slab's block, as overruns of all its objects would, and
 * every invariant still holds, every object is handed out once. */
START_TEST(slab_overrun_never_reaches_a_header)
{
	struct uslab_cache *c = slab_cache(64, 0, NULL);
	void **objs = fill_slabs(c, 3);
	size_t n = 3 * (size_t)c->c_slab_objs;

	for (size_t k = 0; k < 3; k++) {
		struct slab *s = slabmap_lookup(objs[k * c->c_slab_objs]);
		memset(s->s_block, 0x41, c->c_slab_size);
	}
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs, n);
	ck_assert(cache_is_valid(c));
	void **again = fill_slabs(c, 3);
	qsort(again, n, sizeof *again, cmp_ptr);
	for (size_t i = 1; i < n; i++)
		ck_assert_ptr_ne(again[i - 1], again[i]);
	slab_free_bulk(c, again, n);
	free(again);
	free(objs);
	slab_cache_done(c);
}
END_TEST

/* Resident pages of the META_BLOCK-aligned 64 KiB blocks holding @p[0..n). */
static size_t resident_blocks_pages(void **p, size_t n)
{
	size_t page = pgsrc_page_size(), blk = (size_t)64 << 10, total = 0;
	unsigned char vec[(64 << 10) / 4096];
	uintptr_t seen[64];
	size_t nseen = 0;

	ck_assert_uint_le(blk / page, sizeof vec);
	for (size_t i = 0; i < n; i++) {
		uintptr_t b = (uintptr_t)p[i] & ~(uintptr_t)(blk - 1);
		bool dup = false;
		for (size_t j = 0; j < nseen; j++)
			dup |= seen[j] == b;
		if (dup)
			continue;
		ck_assert_uint_lt(nseen, 64);
		seen[nseen++] = b;
		ck_assert_int_eq(test_resident((void *)b, blk, vec), 0);
		for (size_t k = 0; k < blk / page; k++)
			total += vec[k] & 1;
	}
	return total;
}

/* A reap that frees slabs frees their headers; the blocks that held the
 * headers must leave RSS too (they once stayed on free lists forever, and
 * a reaped cache kept 2.5% of its peak). 8 KiB structures, 8 per block:
 * once all come back, at most one block stays resident (the spare), and
 * the structures handed out again are zeroed. */
START_TEST(meta_empty_blocks_leave_rss)
{
	enum { N = 64, SZ = 4096 + 1 };
	void *p[N];

	for (size_t i = 0; i < N; i++) {
		ck_assert_ptr_nonnull(p[i] = meta_alloc(SZ));
		memset(p[i], 0x5a, SZ);
	}
	size_t page = pgsrc_page_size();
	ck_assert_uint_ge(resident_blocks_pages(p, N), N * 8192 / page);
	void *q[N];
	memcpy(q, p, sizeof q);
	for (size_t i = 0; i < N; i++)
		meta_free(p[i], SZ);
	ck_assert_uint_le(resident_blocks_pages(q, N), ((size_t)64 << 10) / page);
	for (size_t i = 0; i < N; i++) {
		unsigned char *r = meta_alloc(SZ);
		ck_assert_ptr_nonnull(r);
		for (size_t k = 0; k < SZ; k++)
			ck_assert_uint_eq(r[k], 0);
		p[i] = r;
	}
	for (size_t i = 0; i < N; i++)
		meta_free(p[i], SZ);
}
END_TEST

START_TEST(slab_of_checked_tail_aborts)
{
	struct uslab_cache *c = slab_cache(1000, 0, NULL);
	void *obj;

	ck_assert_uint_eq(slab_alloc_bulk(c, &obj, 1), 1);
	ck_assert(cache_is_valid(c));
	/* Where an object past the last would start: inside the spare space. */
	struct slab *s = slabmap_lookup(obj);
	ck_assert_uint_lt((uintptr_t)s->s_base + (size_t)c->c_slab_objs * c->c_slot,
	                  (uintptr_t)s->s_block + c->c_slab_size);
	uint32_t idx;
	slab_of_checked(c, s->s_base + (size_t)c->c_slab_objs * c->c_slot, &idx);
}
END_TEST

START_TEST(slab_of_checked_foreign_aborts)
{
	struct uslab_cache *c = slab_cache(24, 0, NULL);
	static char not_slab[64];
	uint32_t idx;

	ck_assert(cache_is_valid(c));
	slab_of_checked(c, not_slab, &idx);
}
END_TEST

START_TEST(slab_free_other_cache_aborts)
{
	struct uslab_cache *c = slab_cache(24, 0, NULL);
	struct uslab_cache *d = slab_cache(24, 0, NULL);
	void *obj;

	ck_assert_uint_eq(c->c_slab_size, d->c_slab_size);
	ck_assert_uint_eq(slab_alloc_bulk(d, &obj, 1), 1);
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, &obj, 1);
}
END_TEST

START_TEST(slab_double_free_aborts)
{
	struct uslab_cache *c = slab_cache(24, 0, NULL);
	void *objs[2];

	ck_assert_uint_eq(slab_alloc_bulk(c, objs, 2), 2);
	slab_free_bulk(c, objs, 1);
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs, 1);
}
END_TEST

START_TEST(slab_double_free_in_one_batch_aborts)
{
	struct uslab_cache *c = slab_cache(24, 0, NULL);
	void *objs[3];

	ck_assert_uint_eq(slab_alloc_bulk(c, objs, 2), 2);
	objs[2] = objs[0];
	ck_assert(cache_is_valid(c));
	slab_free_bulk(c, objs, 3);
}
END_TEST

static Suite *slab_suite(void)
{
	Suite *s = suite_create("slab");
	TCase *tc;

	tc = tcase_create("geometry");
	tcase_add_test(tc, slab_geometry_small_sizes);
	tcase_add_test(tc, slab_geometry_large_sizes);
	tcase_add_test(tc, slab_geometry_explicit_alignment);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("colour");
	tcase_add_test(tc, slab_colour_cycles_through_spare);
	tcase_add_test(tc, slab_colour_single_without_spare);
	suite_add_tcase(s, tc);

	tc = tcase_create("bulk");
	tcase_add_test(tc, slab_bulk_counts);
	tcase_add_test(tc, slab_bulk_zero_is_noop);
	tcase_add_test(tc, slab_empty_slabs_decay_by_working_set);
	suite_add_tcase(s, tc);

	tc = tcase_create("lists");
	tcase_add_test(tc, slab_alloc_prefers_fullest_partial);
	suite_add_tcase(s, tc);

	tc = tcase_create("reap");
	tcase_add_test(tc, slab_reap_releases_empty_slabs_with_dtor);
	tcase_add_test(tc, slab_reap_keeps_partial_slabs);
	tcase_add_test(tc, meta_empty_blocks_leave_rss);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifecycle");
	tcase_add_loop_test(tc, slab_free_never_writes_object, 0, 3);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);

	tc = tcase_create("lookup");
	tcase_add_test(tc, slab_of_checked_finds_every_object);
	tcase_add_test(tc, slab_of_checked_byte_objects);
	tcase_add_test(tc, slab_overrun_never_reaches_a_header);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);

	if (can_fork()) {
		tc = tcase_create("misuse");
		tcase_add_test_raise_signal(tc, slab_of_checked_interior_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, slab_of_checked_before_first_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, slab_of_checked_tail_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, slab_of_checked_foreign_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, slab_free_other_cache_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, slab_double_free_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, slab_double_free_in_one_batch_aborts, SIGABRT);
		suite_add_tcase(s, tc);
	}
	return s;
}

Suite *(*const test_suites[])(void) = {slab_suite, NULL};
