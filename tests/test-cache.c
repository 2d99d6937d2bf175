/* SPDX-License-Identifier: MIT */
/* API tests of caches (public header and shared library only). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if USLAB_HAVE_SYS_RSEQ_H
#include <sys/rseq.h>
#endif

#include "uslab.h"
#include "testutil.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* An assertion for hot loops: Check records every passing ck_assert (a
 * write to the parent), this only a failing one. */
#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			ck_abort_msg(__VA_ARGS__);                                                 \
	} while (0)

/* Death tests need a child process: with CK_FORK=no (valgrind) they are left out. */
static bool can_fork(void)
{
	const char *e = getenv("CK_FORK");

	return e == NULL || strcmp(e, "no") != 0;
}

static size_t natural_align(size_t size)
{
	size_t a = size & -size;

	return a > 16 ? 16 : a;
}

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void shuffle(void **v, size_t n, uint64_t seed)
{
	uint64_t s = seed | 1;

	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(rng_next(&s) % i);
		void *t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;

	return x < y ? -1 : x > y;
}

/* Objects sorted by address are at least @spacing bytes apart (no overlap,
 * no duplicate). Sorts @objs. */
static void check_disjoint(void **objs, size_t n, size_t spacing)
{
	qsort(objs, n, sizeof *objs, cmp_ptr);
	for (size_t i = 1; i < n; i++)
		CHECK((uintptr_t)objs[i] - (uintptr_t)objs[i - 1] >= spacing,
		      "objects %p and %p overlap (%zu bytes)", objs[i - 1], objs[i], spacing);
}

/* ---- A counting page source over mmap, failing on demand ---- */

struct count_src {
	struct uslab_pagesrc src;
	size_t got, put; /* bytes */
	unsigned gets, puts, refused;
	long allow; /* get() calls left to succeed; negative: no limit */
};

/* The system's own source: mmap, or VirtualAlloc on Windows. */
static const struct uslab_pagesrc *sys_src(void)
{
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	return m != NULL ? m : uslab_pagesrc_virtualalloc();
}

static void *cs_get(void *arg, size_t size)
{
	struct count_src *s = arg;
	const struct uslab_pagesrc *m = sys_src();

	if (s->allow == 0) {
		s->refused++;
		return NULL;
	}
	void *p = m->get(m->arg, size);
	if (p != NULL) {
		if (s->allow > 0)
			s->allow--;
		s->got += size;
		s->gets++;
	}
	return p;
}

static void cs_put(void *arg, void *block, size_t size)
{
	struct count_src *s = arg;
	const struct uslab_pagesrc *m = sys_src();

	s->put += size;
	s->puts++;
	m->put(m->arg, block, size);
}

static void count_src_init(struct count_src *s)
{
	memset(s, 0, sizeof *s);
	s->src.name = "counting";
	s->src.get = cs_get;
	s->src.put = cs_put;
	s->src.arg = s;
	s->allow = -1;
}

static struct uslab_cache *make_cache(const char *name, size_t size, size_t align, unsigned flags,
                                      struct count_src *src)
{
	struct uslab_cache_conf conf = {
		.align = align, .flags = flags, .pagesrc = src != NULL ? &src->src : NULL};
	struct uslab_cache *c = uslab_cache_create(name, size, &conf);

	ck_assert_msg(c != NULL, "create %s size %zu align %zu: errno %d", name, size, align,
	              errno);
	return c;
}

/* The end of every test: the cache destroys (no object left out) and every
 * byte it got from its page source went back. */
static void destroy_balanced(struct uslab_cache *c, struct count_src *src)
{
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	if (src != NULL) {
		ck_assert_uint_eq(src->got, src->put);
		ck_assert_uint_eq(src->gets, src->puts);
	}
}

/* ---- Fixture: a fresh cache of 40-byte objects per test ---- */

#define FX_SIZE 40
static struct count_src fx_src;
static struct uslab_cache *fx;

static void fx_setup(void)
{
	count_src_init(&fx_src);
	fx = make_cache("fixture", FX_SIZE, 0, 0, &fx_src);
}

static void fx_teardown(void)
{
	destroy_balanced(fx, &fx_src);
	fx = NULL;
}

/* ---- Sizes and alignment ---- */

/* Loop index: the object size, 1 .. 1024. */
START_TEST(cache_size_sweep)
{
	size_t size = (size_t)_i;
	size_t align = natural_align(size);
	size_t n = 3 * 64 * KIB / size + 64;
	struct count_src src;

	if (n > 4096)
		n = 4096;
	count_src_init(&src);
	struct uslab_cache *c = make_cache("sweep", size, 0, 0, &src);
	ck_assert_uint_eq(uslab_cache_size(c), size);
	void **objs = malloc(n * sizeof *objs);
	ck_assert_ptr_nonnull(objs);
	for (size_t i = 0; i < n; i++) {
		objs[i] = uslab_cache_alloc(c);
		CHECK(objs[i] != NULL, "size %zu: alloc %zu failed", size, i);
		CHECK((uintptr_t)objs[i] % align == 0, "size %zu: %p not %zu-aligned", size,
		      objs[i], align);
	}
	check_disjoint(objs, n, size);
	for (size_t i = 0; i < n; i++)
		memset(objs[i], (int)(i * 7 + 1), size);
	for (size_t i = 0; i < n; i++) {
		const unsigned char *p = objs[i];
		CHECK(p[0] == (unsigned char)(i * 7 + 1) &&
		              p[size - 1] == (unsigned char)(i * 7 + 1),
		      "size %zu: object %p overwritten", size, objs[i]);
	}
	shuffle(objs, n, size);
	for (size_t i = 0; i < n; i++)
		uslab_cache_free(c, objs[i]);
	free(objs);
	destroy_balanced(c, &src);
}
END_TEST

/* Loop index k: objects of 2^k bytes, up to USLAB_MAX_SIZE. */
START_TEST(cache_power_of_two_sizes)
{
	size_t size = (size_t)1 << _i;
	size_t n = 8 * MIB / size;
	struct count_src src;

	n = n < 17 ? 17 : n > 1024 ? 1024 : n; /* 17: more than one slab of 1 MiB objects */
	count_src_init(&src);
	struct uslab_cache *c = make_cache("pow2", size, 0, 0, &src);
	void **objs = malloc(n * sizeof *objs);
	ck_assert_ptr_nonnull(objs);
	ck_assert_uint_eq(uslab_cache_alloc_bulk(c, objs, n), n);
	for (size_t i = 0; i < n; i++) {
		CHECK((uintptr_t)objs[i] % natural_align(size) == 0, "%p misaligned", objs[i]);
		memset(objs[i], 0x11, size);
	}
	check_disjoint(objs, n, size);
	uslab_cache_free_bulk(c, objs, n);
	free(objs);
	destroy_balanced(c, &src);
}
END_TEST

START_TEST(cache_max_size_accepted)
{
	struct count_src src;

	count_src_init(&src);
	struct uslab_cache *c = make_cache("max", USLAB_MAX_SIZE, 0, 0, &src);
	char *p = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(p);
	p[0] = 1;
	p[USLAB_MAX_SIZE - 1] = 2;
	uslab_cache_free(c, p);
	destroy_balanced(c, &src);
}
END_TEST

/* Loop index i: alignment 8 << i, 8 .. 4096. */
START_TEST(cache_explicit_alignment)
{
	size_t align = (size_t)8 << _i;
	size_t sizes[] = {1, align / 2 + 1, align, align + 1, 3 * align};
	enum { N = 64 };

	if (align > test_page_size())
		return; /* above the page size: rejected, see cache_create_rejects_bad_arguments */
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		struct count_src src;
		void *objs[N];

		count_src_init(&src);
		struct uslab_cache *c = make_cache("aligned", sizes[k], align, 0, &src);
		for (size_t i = 0; i < N; i++) {
			objs[i] = uslab_cache_alloc(c);
			ck_assert_ptr_nonnull(objs[i]);
			ck_assert_msg((uintptr_t)objs[i] % align == 0,
			              "size %zu: %p not %zu-aligned", sizes[k], objs[i], align);
			memset(objs[i], 0x22, sizes[k]);
		}
		check_disjoint(objs, N, round_up(sizes[k], align));
		for (size_t i = 0; i < N; i++)
			uslab_cache_free(c, objs[i]);
		destroy_balanced(c, &src);
	}
}
END_TEST

/* ---- Constructor and destructor ---- */

#define OBJ_LIVE 0x4c495645u
#define OBJ_DEAD 0x44454144u

struct tobj {
	uint32_t magic;
	uint32_t constructed; /* times the ctor ran on this object */
	unsigned char payload[56];
};

struct life {
	uint64_t ctor, dtor, errors;
	uint64_t fail_at; /* construction number that fails (1-based); 0: never */
	int err;
};

static int life_ctor(void *obj, void *arg)
{
	struct life *l = arg;
	struct tobj *o = obj;

	if (l->fail_at != 0 && l->ctor + 1 == l->fail_at)
		return l->err; /* and again at every retry, until the test clears fail_at */
	l->ctor++;
	if (o->magic == OBJ_LIVE)
		l->errors++; /* constructed twice */
	o->magic = OBJ_LIVE;
	o->constructed = 1;
	return 0;
}

static void life_dtor(void *obj, void *arg)
{
	struct life *l = arg;
	struct tobj *o = obj;

	l->dtor++;
	if (o->magic != OBJ_LIVE || o->constructed != 1)
		l->errors++; /* destructed without construction, or twice */
	o->magic = OBJ_DEAD;
}

static struct uslab_cache *life_cache(struct life *l, unsigned flags, struct count_src *src)
{
	struct uslab_cache_conf conf = {.flags = flags,
	                                .ctor = life_ctor,
	                                .dtor = life_dtor,
	                                .arg = l,
	                                .pagesrc = &src->src};
	struct uslab_cache *c = uslab_cache_create("life", sizeof(struct tobj), &conf);

	ck_assert_ptr_nonnull(c);
	return c;
}

static void check_live(void *p)
{
	const struct tobj *o = p;

	CHECK(o != NULL, "allocation failed");
	CHECK(o->magic == OBJ_LIVE && o->constructed == 1,
	      "object %p not constructed once (%x, %u)", p, o->magic, o->constructed);
}

/* Without magazines every count is exact: the ctor runs for a whole slab
 * when it is created, and not again until another slab is needed. */
START_TEST(cache_ctor_runs_when_slab_created)
{
	struct life l = {0};
	struct count_src src;

	count_src_init(&src);
	struct uslab_cache *c = life_cache(&l, USLAB_NOMAGAZINE, &src);
	ck_assert_uint_eq(l.ctor, 0); /* nothing before the first allocation */
	void *first = uslab_cache_alloc(c);
	check_live(first);
	uint64_t per = l.ctor;
	ck_assert_uint_gt(per, 1);
	ck_assert_uint_eq(src.gets, 1);

	void **objs = malloc((per + 1) * sizeof *objs);
	ck_assert_ptr_nonnull(objs);
	objs[0] = first;
	for (size_t i = 1; i < per; i++) {
		objs[i] = uslab_cache_alloc(c);
		check_live(objs[i]);
	}
	ck_assert_uint_eq(l.ctor, per); /* the first slab served all of them */
	objs[per] = uslab_cache_alloc(c);
	check_live(objs[per]);
	ck_assert_uint_eq(l.ctor, 2 * per);
	ck_assert_uint_eq(l.dtor, 0);

	for (size_t i = 0; i <= per; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_uint_le(l.dtor, l.ctor);
	ck_assert_uint_gt(uslab_cache_reap(c), 0);
	ck_assert_uint_eq(l.dtor, l.ctor);
	ck_assert_uint_eq(src.got, src.put);
	ck_assert_uint_eq(l.errors, 0);
	free(objs);
	destroy_balanced(c, &src);
	ck_assert_uint_eq(l.dtor, l.ctor);
}
END_TEST

/* Loop index: flags 0 (magazines) or USLAB_NOMAGAZINE. */
START_TEST(cache_ctor_dtor_balanced_after_destroy)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	struct life l = {0};
	struct count_src src;
	enum { N = 5000 };
	void **objs = malloc(N * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	count_src_init(&src);
	struct uslab_cache *c = life_cache(&l, flags, &src);
	for (int round = 0; round < 3; round++) {
		size_t n = N >> round;
		for (size_t i = 0; i < n; i++) {
			objs[i] = uslab_cache_alloc(c);
			check_live(objs[i]);
		}
		shuffle(objs, n, (uint64_t)round + 7);
		for (size_t i = 0; i < n; i++)
			uslab_cache_free(c, objs[i]);
	}
	ck_assert_uint_ge(l.ctor, N);
	free(objs);
	destroy_balanced(c, &src);
	ck_assert_uint_eq(l.dtor, l.ctor);
	ck_assert_uint_eq(l.errors, 0);
}
END_TEST

/* A pattern the program leaves in its objects: a function of the address. */
static unsigned char pat(const void *obj, size_t i)
{
	uintptr_t a = (uintptr_t)obj;

	return (unsigned char)((a >> 4) * 13u + i * 5u + 3u);
}

static int pattern_ctor(void *obj, void *arg)
{
	memset(obj, 0xc7, *(size_t *)arg);
	return 0;
}

/* Loop index: flags 0 or USLAB_NOMAGAZINE. The program's state in an
 * object survives free and a later alloc: uslab writes no byte of a free
 * object, in a magazine, in the depot or in its slab. */
START_TEST(cache_constructed_state_kept)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	size_t size = 48;
	enum { N = 4000 };
	struct count_src src;
	struct uslab_cache_conf conf = {
		.flags = flags, .ctor = pattern_ctor, .arg = &size, .pagesrc = &src.src};
	void **objs = malloc(N * sizeof *objs), **freed = malloc(N / 2 * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	ck_assert_ptr_nonnull(freed);
	count_src_init(&src);
	struct uslab_cache *c = uslab_cache_create("state", size, &conf);
	ck_assert_ptr_nonnull(c);
	for (size_t i = 0; i < N; i++) {
		objs[i] = uslab_cache_alloc(c);
		CHECK(objs[i] != NULL, "alloc %zu failed", i);
		for (size_t b = 0; b < size; b++)
			CHECK(((unsigned char *)objs[i])[b] == 0xc7, "object %p not constructed",
			      objs[i]);
		for (size_t b = 0; b < size; b++)
			((unsigned char *)objs[i])[b] = pat(objs[i], b);
	}
	/* Free every other object: no slab empties, none is released. */
	for (size_t i = 0; i < N / 2; i++) {
		freed[i] = objs[2 * i];
		uslab_cache_free(c, freed[i]);
	}
	qsort(freed, N / 2, sizeof *freed, cmp_ptr);
	for (size_t i = 0; i < N / 2; i++) {
		void *o = uslab_cache_alloc(c);
		CHECK(o != NULL, "alloc failed");
		bool was_freed = bsearch(&o, freed, N / 2, sizeof *freed, cmp_ptr) != NULL;
		for (size_t b = 0; b < size; b++)
			CHECK(((unsigned char *)o)[b] == (was_freed ? pat(o, b) : 0xc7),
			      "object %p byte %zu changed while free", o, b);
		objs[2 * i] = o;
	}
	for (size_t i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	free(objs);
	free(freed);
	destroy_balanced(c, &src);
}
END_TEST

/* Loop index: flags 0 or USLAB_NOMAGAZINE. The 5th construction fails: the
 * allocation fails with the ctor's errno, the 4 constructed objects are
 * destructed and the block goes back. */
START_TEST(cache_ctor_failure_in_first_slab)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	struct life l = {.fail_at = 5, .err = EDOM};
	struct count_src src;

	count_src_init(&src);
	struct uslab_cache *c = life_cache(&l, flags, &src);
	errno = 0;
	ck_assert_ptr_null(uslab_cache_alloc(c));
	ck_assert_int_eq(errno, EDOM);
	ck_assert_uint_eq(l.ctor, 4);
	ck_assert_uint_eq(l.dtor, 4);
	ck_assert_uint_eq(src.got, src.put);
	ck_assert_uint_eq(src.gets, 1);
	errno = 0;
	ck_assert_ptr_null(uslab_cache_alloc(c)); /* fails again, at its first construction */
	ck_assert_int_eq(errno, EDOM);
	ck_assert_uint_eq(l.ctor, 4);
	ck_assert_uint_eq(l.dtor, 4);
	ck_assert_uint_eq(src.got, src.put);

	/* The failure is gone: the cache works. */
	l.fail_at = 0;
	void *p = uslab_cache_alloc(c);
	check_live(p);
	uslab_cache_free(c, p);
	destroy_balanced(c, &src);
	ck_assert_uint_eq(l.dtor, l.ctor);
	ck_assert_uint_eq(l.errors, 0);
}
END_TEST

/* Loop index: flags 0 or USLAB_NOMAGAZINE. A construction in the second slab
 * fails: the objects already handed out stay valid. */
START_TEST(cache_ctor_failure_in_later_slab)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	struct life l = {.err = ENOTRECOVERABLE};
	struct count_src src;

	count_src_init(&src);
	struct uslab_cache *c = life_cache(&l, flags, &src);
	void *first = uslab_cache_alloc(c);
	check_live(first);
	uint64_t per = l.ctor;
	l.fail_at = per + 3; /* the third object of the next slab */

	void **objs = malloc((per + 1) * sizeof *objs);
	ck_assert_ptr_nonnull(objs);
	size_t n = 0;
	objs[n++] = first;
	errno = 0;
	while (n <= per) {
		void *o = uslab_cache_alloc(c);
		if (o == NULL)
			break;
		check_live(o);
		objs[n++] = o;
	}
	/* Magazines may strand objects on another CPU: at most one slab. */
	ck_assert_uint_le(n, per);
	if (flags & USLAB_NOMAGAZINE)
		ck_assert_uint_eq(n, per);
	ck_assert_int_eq(errno, ENOTRECOVERABLE);
	/* The failed slab destructed the 2 objects it had constructed. */
	ck_assert_uint_eq(l.dtor, 2);
	ck_assert_uint_eq(l.ctor, per + 2);
	ck_assert_uint_eq(src.got - src.put, src.got / src.gets); /* one slab held */

	for (size_t i = 0; i < n; i++)
		uslab_cache_free(c, objs[i]);
	l.fail_at = 0;
	void *p = uslab_cache_alloc(c); /* works again */
	check_live(p);
	uslab_cache_free(c, p);
	free(objs);
	destroy_balanced(c, &src);
	ck_assert_uint_eq(l.dtor, l.ctor);
	ck_assert_uint_eq(l.errors, 0);
}
END_TEST

/* ---- Bad arguments ---- */

START_TEST(cache_create_rejects_bad_arguments)
{
	size_t page = test_page_size();
	struct {
		const char *name;
		size_t size;
		struct uslab_cache_conf conf;
	} bad[] = {
		{NULL, 8, {0}},
		{"zero", 0, {0}},
		{"big", USLAB_MAX_SIZE + 1, {0}},
		{"huge", SIZE_MAX, {0}},
		{"align3", 8, {.align = 3}},
		{"align24", 48, {.align = 24}},
		{"alignpage", 8, {.align = 2 * page}},
		{"alignodd", 8, {.align = SIZE_MAX}},
		{"flags", 8, {.flags = USLAB_FLAGS_MASK + 1}},
		{"flagshigh", 8, {.flags = 0x80000000u}},
		/* Names are printed as they are (slabinfo columns, reports). */
		{"", 8, {0}},
		{" ", 8, {0}},
		{"two words", 8, {0}},
		{"tab\tname", 8, {0}},
		{"forged\nuslab 1 1 1 1 1", 8, {0}},
		{"cr\r", 8, {0}},
		{"del\x7f", 8, {0}},
		{"ctl\x01", 8, {0}},
	};

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		errno = 0;
		ck_assert_msg(uslab_cache_create(bad[k].name, bad[k].size, &bad[k].conf) == NULL,
		              "case %zu (%s) accepted", k, bad[k].name ? bad[k].name : "NULL");
		ck_assert_msg(errno == EINVAL, "case %zu: errno %d", k, errno);
	}
	errno = 0;
	ck_assert_ptr_null(uslab_cache_create("zero", 0, NULL));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(uslab_cache_create(NULL, 8, NULL));
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(cache_create_accepts_limits)
{
	size_t page = test_page_size();
	struct count_src src;

	unsigned all = USLAB_FLAGS_MASK;
	/* Every flag, but type-safe RCU where the system has no RCU (Windows:
	 * refused with ENOSYS, as documented). */
	struct uslab_cache_conf rcu = {.flags = USLAB_TYPESAFE_BY_RCU};
	struct uslab_cache *t = uslab_cache_create("t", 8, &rcu);
	if (t == NULL) {
		ck_assert_int_eq(errno, ENOSYS);
		all &= ~USLAB_TYPESAFE_BY_RCU;
	} else {
		ck_assert_int_eq(uslab_cache_destroy(t), 0);
	}
	count_src_init(&src);
	struct uslab_cache *c = make_cache("x", 1, page, all, &src);
	ck_assert_str_eq(uslab_cache_name(c), "x");
	void *p = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq((uintptr_t)p % page, 0);
	uslab_cache_free(c, p);
	destroy_balanced(c, &src);
}
END_TEST

START_TEST(cache_name_truncated_and_copied)
{
	char name[100];
	struct count_src src;

	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	count_src_init(&src);
	struct uslab_cache *c = make_cache(name, 24, 0, 0, &src);
	name[0] = 'X'; /* the cache keeps its own copy */
	ck_assert_uint_eq(strlen(uslab_cache_name(c)), USLAB_NAME_MAX);
	ck_assert_int_eq(uslab_cache_name(c)[0], 'n');
	ck_assert_uint_eq(uslab_cache_size(c), 24);
	destroy_balanced(c, &src);
}
END_TEST

/* Finding 11: what a NULL cache gets, off the hit path (the two hit paths,
 * uslab_cache_alloc and uslab_cache_free, say NULL is undefined). */
START_TEST(cache_null_cache_einval)
{
	void *objs[2] = {NULL, NULL};

	errno = 0;
	ck_assert_uint_eq(uslab_cache_alloc_bulk(NULL, objs, 2), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	uslab_cache_free_bulk(NULL, objs, 2);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(uslab_cache_reap(NULL), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(uslab_cache_name(NULL));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(uslab_cache_size(NULL), 0);
	ck_assert_int_eq(errno, EINVAL);
	struct uslab_stats st;
	errno = 0;
	ck_assert_int_eq(uslab_cache_stats(NULL, &st), -1);
	ck_assert_int_eq(errno, EINVAL);
	uint64_t counts[2];
	errno = 0;
	ck_assert_uint_eq(uslab_cache_cpu_objects(NULL, counts, 2), 0);
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(cache_destroy_null_fails)
{
	errno = 0;
	ck_assert_int_eq(uslab_cache_destroy(NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* Loop index: flags 0 or USLAB_NOMAGAZINE. */
START_TEST(cache_destroy_busy_keeps_cache)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	struct count_src src;
	void *objs[100];

	count_src_init(&src);
	struct uslab_cache *c = make_cache("busy", 72, 0, flags, &src);
	for (size_t i = 0; i < 100; i++) {
		objs[i] = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(objs[i]);
		memset(objs[i], (int)i, 72);
	}
	for (size_t i = 1; i < 100; i++)
		uslab_cache_free(c, objs[i]);
	errno = 0;
	ck_assert_int_eq(uslab_cache_destroy(c), -1);
	ck_assert_int_eq(errno, EBUSY);

	/* Unchanged and usable: the live object kept its bytes, new ones come. */
	ck_assert_str_eq(uslab_cache_name(c), "busy");
	for (size_t b = 0; b < 72; b++)
		ck_assert_int_eq(((unsigned char *)objs[0])[b], 0);
	for (size_t i = 1; i < 100; i++) {
		objs[i] = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(objs[i]);
		ck_assert_ptr_ne(objs[i], objs[0]);
	}
	for (size_t i = 1; i < 100; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_int_eq(uslab_cache_destroy(c), -1);
	ck_assert_int_eq(errno, EBUSY);
	uslab_cache_free(c, objs[0]);
	destroy_balanced(c, &src);
}
END_TEST

START_TEST(cache_free_null_is_noop)
{
	void *nulls[4] = {NULL, NULL, NULL, NULL};

	uslab_cache_free(fx, NULL);
	uslab_cache_free_bulk(fx, nulls, 4);
	uslab_cache_free_bulk(fx, nulls, 0);
	void *p = uslab_cache_alloc(fx);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(fx, NULL);
	uslab_cache_free(fx, p);
}
END_TEST

START_TEST(cache_free_null_is_noop_nomagazine)
{
	struct count_src src;

	count_src_init(&src);
	struct uslab_cache *c = make_cache("nomag", 40, 0, USLAB_NOMAGAZINE, &src);
	uslab_cache_free(c, NULL);
	void *p = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, NULL);
	uslab_cache_free(c, p);
	destroy_balanced(c, &src);
}
END_TEST

/* ---- Out of memory ---- */

/* Loop index: flags 0 or USLAB_NOMAGAZINE. */
START_TEST(cache_oom_fails_cleanly)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	struct count_src src;
	void *objs[16];

	count_src_init(&src);
	src.allow = 0;
	struct uslab_cache *c = make_cache("oom", 100, 0, flags, &src); /* takes no memory */
	ck_assert_uint_eq(src.gets + src.refused, 0);
	errno = 0;
	ck_assert_ptr_null(uslab_cache_alloc(c));
	ck_assert_int_eq(errno, ENOMEM);
	errno = 0;
	ck_assert_uint_eq(uslab_cache_alloc_bulk(c, objs, 16), 0);
	ck_assert_int_eq(errno, ENOMEM);
	ck_assert_uint_gt(src.refused, 0);
	/* Failures are failures, not allocations (uslab.h: allocs counts the
	 * successful ones). */
	struct uslab_stats st;
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.allocs, 0);
	ck_assert_uint_ge(st.alloc_failures, 2);

	src.allow = -1; /* memory is back */
	for (size_t i = 0; i < 16; i++) {
		objs[i] = uslab_cache_alloc(c);
		ck_assert_ptr_nonnull(objs[i]);
	}
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.allocs, 16);
	uslab_cache_free_bulk(c, objs, 16);
	destroy_balanced(c, &src);
}
END_TEST

/* Loop index: flags 0 or USLAB_NOMAGAZINE. One slab's worth, then no more. */
START_TEST(cache_oom_after_one_slab)
{
	unsigned flags = _i ? USLAB_NOMAGAZINE : 0;
	struct count_src src;
	enum { MAX = 100000 };
	void **objs = malloc(MAX * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	count_src_init(&src);
	src.allow = 1;
	struct uslab_cache *c = make_cache("oom1", 64, 0, flags, &src);
	size_t n = 0;
	errno = 0;
	while (n < MAX && (objs[n] = uslab_cache_alloc(c)) != NULL)
		memset(objs[n++], 0x33, 64);
	ck_assert_uint_lt(n, MAX);
	ck_assert_uint_gt(n, 0);
	ck_assert_int_eq(errno, ENOMEM);
	ck_assert_uint_eq(src.gets, 1);

	/* alloc_bulk stops short with ENOMEM, keeping what it got. */
	src.allow = 1;
	errno = 0;
	size_t k = uslab_cache_alloc_bulk(c, objs + n, MAX - n);
	ck_assert_uint_gt(k, 0);
	ck_assert_uint_lt(k, MAX - n);
	ck_assert_int_eq(errno, ENOMEM);
	n += k;
	check_disjoint(objs, n, 64);

	src.allow = -1;
	void *p = uslab_cache_alloc(c);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p);
	uslab_cache_free_bulk(c, objs, n);
	free(objs);
	destroy_balanced(c, &src);
}
END_TEST

/* ---- Overruns ---- */

/* The reliability issue's reproducer: for 64-byte objects the last object
 * of a slab ended where the next slab's header began, so a 32-byte overrun
 * rewrote its list links and 8 more bytes its free bitmap. Slab headers now
 * live apart from objects: the same overrun damages only the neighbouring
 * object, and the cache keeps handing out every object once. */
START_TEST(cache_overrun_spares_the_allocator)
{
	enum { N = 4 * 1024 };
	void **objs = malloc(N * sizeof *objs);
	struct uslab_cache *c = uslab_cache_create("overrun", 64, NULL);
	int hits = 0;

	ck_assert_ptr_nonnull(objs);
	ck_assert_ptr_nonnull(c);
	for (size_t i = 0; i < N; i++)
		ck_assert_ptr_nonnull(objs[i] = uslab_cache_alloc(c));
	qsort(objs, N, sizeof *objs, cmp_ptr);
	for (size_t i = 0; i + 1 < N; i++) {
		uintptr_t end = (uintptr_t)objs[i] + 64;
		/* The last object of a block, and the next block is a slab of
		 * this cache (we hold an object in it). */
		if (end % 65536 == 0 && (uintptr_t)objs[i + 1] - end < 65536) {
			memset((char *)objs[i] + 64, 0x41, 40);
			hits++;
		}
	}
	ck_assert_int_gt(hits, 0);
	for (size_t i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_uint_eq(uslab_cache_reap(c) > 0, 1);
	for (size_t i = 0; i < N; i++)
		ck_assert_ptr_nonnull(objs[i] = uslab_cache_alloc(c));
	check_disjoint(objs, N, 64);
	for (size_t i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	free(objs);
}
END_TEST

/* ---- Bulk ---- */

START_TEST(cache_bulk_alloc_free)
{
	enum { N = 1000 };
	void *objs[N], *held[N];
	size_t nheld = 0;

	ck_assert_uint_eq(uslab_cache_alloc_bulk(fx, objs, 0), 0);
	ck_assert_uint_eq(uslab_cache_alloc_bulk(fx, objs, N), N);
	for (size_t i = 0; i < N; i++) {
		ck_assert_ptr_nonnull(objs[i]);
		ck_assert_uint_eq((uintptr_t)objs[i] % natural_align(FX_SIZE), 0);
		memset(objs[i], 0x44, FX_SIZE);
	}
	check_disjoint(objs, N, FX_SIZE);
	/* NULL entries are skipped: those objects are freed one by one. */
	for (size_t i = 0; i < N; i += 3) {
		held[nheld++] = objs[i];
		objs[i] = NULL;
	}
	uslab_cache_free_bulk(fx, objs, N);
	for (size_t i = 0; i < nheld; i++)
		uslab_cache_free(fx, held[i]);

	/* Single allocations freed in bulk, and the reverse. */
	for (size_t i = 0; i < N; i++)
		objs[i] = uslab_cache_alloc(fx);
	uslab_cache_free_bulk(fx, objs, N);
	ck_assert_uint_eq(uslab_cache_alloc_bulk(fx, objs, N), N);
	for (size_t i = 0; i < N; i++)
		uslab_cache_free(fx, objs[i]);
}
END_TEST

START_TEST(cache_bulk_nomagazine)
{
	enum { N = 3000 };
	struct count_src src;
	void **objs = malloc(N * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	count_src_init(&src);
	struct uslab_cache *c = make_cache("bulk-nomag", 40, 0, USLAB_NOMAGAZINE, &src);
	ck_assert_uint_eq(uslab_cache_alloc_bulk(c, objs, N), N);
	check_disjoint(objs, N, 40);
	struct uslab_stats st;
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0); /* counted, as single ones are */
	ck_assert_uint_eq(st.allocs, N);
	ck_assert_uint_eq(st.active_objs, N);
	void *skipped = objs[N / 2];
	objs[N / 2] = NULL;
	uslab_cache_free_bulk(c, objs, N);
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.frees, N - 1);
	errno = 0;
	ck_assert_int_eq(uslab_cache_destroy(c), -1); /* the skipped object is still out */
	ck_assert_int_eq(errno, EBUSY);
	uslab_cache_free(c, skipped);
	free(objs);
	destroy_balanced(c, &src);
}
END_TEST

/* ---- Reap ---- */

START_TEST(cache_reap_returns_bytes)
{
	enum { N = 6000 };
	void **objs = malloc(N * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	for (size_t i = 0; i < N; i++) {
		objs[i] = uslab_cache_alloc(fx);
		ck_assert_ptr_nonnull(objs[i]);
	}
	ck_assert_uint_gt(fx_src.gets, 1);
	ck_assert_uint_eq(uslab_cache_reap(fx), 0); /* nothing free: nothing to give */
	ck_assert_uint_eq(fx_src.put, 0);

	/* Every other object: no slab empties. */
	for (size_t i = 0; i < N; i += 2)
		uslab_cache_free(fx, objs[i]);
	ck_assert_uint_eq(uslab_cache_reap(fx), 0);
	for (size_t i = 1; i < N; i += 2) /* live objects are untouched by reap */
		memset(objs[i], 0x55, FX_SIZE);

	for (size_t i = 1; i < N; i += 2)
		uslab_cache_free(fx, objs[i]);
	size_t put_before = fx_src.put;
	size_t bytes = uslab_cache_reap(fx);
	ck_assert_uint_gt(bytes, 0);
	ck_assert_uint_eq(bytes % (64 * KIB), 0);
	ck_assert_uint_eq(bytes, fx_src.put - put_before);
	ck_assert_uint_eq(fx_src.got, fx_src.put); /* all of it */
	ck_assert_uint_eq(uslab_cache_reap(fx), 0);

	/* Still usable after a reap. */
	for (size_t i = 0; i < 100; i++)
		objs[i] = uslab_cache_alloc(fx);
	for (size_t i = 0; i < 100; i++)
		uslab_cache_free(fx, objs[i]);
	free(objs);
}
END_TEST

static int find_magazines(struct uslab_cache *c, void *arg)
{
	if (strcmp(uslab_cache_name(c), "uslab_magazine_64") == 0) /* M = 64 at 64 B */
		*(struct uslab_cache **)arg = c;
	return 0;
}

/* Depot magazines are objects of a magazine cache: listed with the others,
 * counted, given back by reap, and never destroyed under the depots. */
START_TEST(cache_magazines_are_a_cache)
{
	enum { N = 4000 };
	struct uslab_cache *c = uslab_cache_create("mags", 64, NULL), *mags = NULL;
	void **objs = malloc(N * sizeof *objs);
	struct uslab_stats st, ms;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(objs);
	/* Without CK_FORK (valgrind) other tests' caches may hold magazines. */
	uint64_t before = 0;
	uslab_foreach_cache(find_magazines, &mags);
	if (mags != NULL) {
		ck_assert_int_eq(uslab_cache_stats(mags, &ms), 0);
		before = ms.active_objs;
	}
	for (size_t i = 0; i < N; i++)
		objs[i] = uslab_cache_alloc(c);
	for (size_t i = 0; i < N; i++) /* far more than a slot holds: the depot */
		uslab_cache_free(c, objs[i]);
	uslab_foreach_cache(find_magazines, &mags);
	ck_assert_ptr_nonnull(mags);
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_int_eq(uslab_cache_stats(mags, &ms), 0);
	ck_assert_uint_gt(st.depot_full, 0);
	ck_assert_uint_eq(ms.active_objs - before, st.depot_full + st.depot_empty);
	ck_assert_uint_eq(ms.flags, USLAB_NOMAGAZINE);
	ck_assert_int_eq(uslab_cache_destroy(mags), -1);
	ck_assert_int_eq(errno, EPERM);
	/* Reap sends every magazine back, and their cache's slabs with them. */
	uslab_cache_reap(c);
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.depot_full + st.depot_empty, 0);
	ck_assert_int_eq(uslab_cache_stats(mags, &ms), 0);
	ck_assert_uint_eq(ms.active_objs, before);
	if (before == 0)
		ck_assert_uint_eq(ms.total_slabs, 0);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	free(objs);
}
END_TEST

/* A magazine cache is never created on an alloc or a free: one that frees
 * inside a uslab_foreach_cache() callback (cache_list_lock held) returns. */
static void **cb_objs;
static int free_in_walk(struct uslab_cache *c, void *arg)
{
	if (c == arg)
		uslab_cache_free_bulk(c, cb_objs, 300);
	return 0;
}

START_TEST(cache_free_inside_foreach)
{
	struct uslab_cache *c = uslab_cache_create("walked", 48, NULL);
	void *objs[300];

	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(uslab_cache_alloc_bulk(c, objs, 300), 300);
	cb_objs = objs;
	uslab_foreach_cache(free_in_walk, c); /* hung before: see above */
	struct uslab_stats st;
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.active_objs, 0);
	ck_assert_uint_gt(st.depot_full, 0);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* The depot keeps at most a few spare magazine structures: emptied ones
 * beyond them go back to their cache, not onto a list nobody trims. */
START_TEST(cache_depot_spares_bounded)
{
	enum { N = 100000 };
	struct uslab_cache *c = uslab_cache_create("spares", 64, NULL);
	void **objs = malloc(N * sizeof *objs);
	struct uslab_stats st;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(objs);
	for (int round = 0; round < 2; round++) {
		ck_assert_uint_eq(uslab_cache_alloc_bulk(c, objs, N), N);
		uslab_cache_free_bulk(c, objs, N); /* thousands of full magazines */
	}
	ck_assert_uint_eq(uslab_cache_alloc_bulk(c, objs, N), N); /* ... emptied */
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_le(st.depot_empty, 16);
	uslab_cache_free_bulk(c, objs, N);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
	free(objs);
}
END_TEST

START_TEST(cache_reap_runs_dtor)
{
	struct life l = {0};
	struct count_src src;
	enum { N = 3000 };
	void **objs = malloc(N * sizeof *objs);

	ck_assert_ptr_nonnull(objs);
	count_src_init(&src);
	struct uslab_cache *c = life_cache(&l, 0, &src);
	for (size_t i = 0; i < N; i++)
		objs[i] = uslab_cache_alloc(c);
	for (size_t i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	ck_assert_uint_gt(uslab_cache_reap(c), 0);
	ck_assert_uint_eq(l.dtor, l.ctor);
	ck_assert_uint_eq(src.got, src.put);
	free(objs);
	destroy_balanced(c, &src);
	ck_assert_uint_eq(l.errors, 0);
}
END_TEST

/* ---- Typed caches ---- */

struct conn {
	int fd;
	char buf[37];
	long long seq;
};

struct wide {
	_Alignas(64) unsigned char line[64];
	int tag;
};

USLAB_DEFINE_TYPED(conn, conn_cache)
USLAB_DEFINE_TYPED(wide, wide_cache)

START_TEST(cache_typed_macros)
{
	conn_cache = USLAB_CACHE(conn, 0);
	wide_cache = USLAB_CACHE(wide, USLAB_NOMAGAZINE);
	ck_assert_ptr_nonnull(conn_cache);
	ck_assert_ptr_nonnull(wide_cache);
	ck_assert_str_eq(uslab_cache_name(conn_cache), "conn");
	ck_assert_str_eq(uslab_cache_name(wide_cache), "wide");
	ck_assert_uint_eq(uslab_cache_size(conn_cache), sizeof(struct conn));
	ck_assert_uint_eq(uslab_cache_size(wide_cache), sizeof(struct wide));

	struct conn *cs[50];
	struct wide *ws[50];
	for (int i = 0; i < 50; i++) {
		cs[i] = conn_alloc();
		ws[i] = wide_alloc();
		ck_assert_ptr_nonnull(cs[i]);
		ck_assert_ptr_nonnull(ws[i]);
		ck_assert_uint_eq((uintptr_t)cs[i] % _Alignof(struct conn), 0);
		ck_assert_uint_eq((uintptr_t)ws[i] % 64, 0);
		cs[i]->fd = i;
		ws[i]->tag = i;
	}
	for (int i = 0; i < 50; i++) {
		ck_assert_int_eq(cs[i]->fd, i);
		ck_assert_int_eq(ws[i]->tag, i);
		conn_free(cs[i]);
		wide_free(ws[i]);
	}
	ck_assert_int_eq(uslab_cache_destroy(conn_cache), 0);
	ck_assert_int_eq(uslab_cache_destroy(wide_cache), 0);
}
END_TEST

/* ---- Mode ---- */

START_TEST(cache_mode_named)
{
	const char *mode = uslab_mode();
	const char *env = getenv("USLAB_RSEQ");

	ck_assert_ptr_nonnull(mode);
	ck_assert_msg(strcmp(mode, "rseq cpu_id") == 0 ||
	                      strcmp(mode, "rseq cpu_id (uslab registers)") == 0 ||
	                      (strncmp(mode, "locked: ", 8) == 0 && mode[8] != '\0'),
	              "mode \"%s\"", mode);
	if (env != NULL && strcmp(env, "0") == 0)
		ck_assert_str_eq(mode, "locked: USLAB_RSEQ=0");
#if USLAB_HAVE_SYS_RSEQ_H
	/* uslab registers only where glibc did not, and says so. */
	if (strncmp(mode, "rseq", 4) == 0)
		ck_assert_str_eq(mode, __rseq_size != 0 ? "rseq cpu_id"
		                                        : "rseq cpu_id (uslab registers)");
#endif
	ck_assert_ptr_eq(uslab_mode(), mode); /* chosen once */
	/* Whatever the mode, the fixture cache works. */
	void *p = uslab_cache_alloc(fx);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(fx, p);
}
END_TEST

/* ---- Misuse: reported, then abort ---- */

static struct uslab_cache *nomag(const char *name, size_t size)
{
	return make_cache(name, size, 0, USLAB_NOMAGAZINE, NULL);
}

START_TEST(cache_free_malloc_pointer_aborts)
{
	struct uslab_cache *c = nomag("victim", 64);
	void *keep = uslab_cache_alloc(c); /* the cache has a slab */
	void *p = malloc(64);

	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p);
}
END_TEST

START_TEST(cache_free_other_cache_pointer_aborts)
{
	struct uslab_cache *c = nomag("victim", 64);
	struct uslab_cache *d = nomag("other", 64);
	void *keep = uslab_cache_alloc(c);
	void *p = uslab_cache_alloc(d);

	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p);
}
END_TEST

/* The other cache has smaller slabs than the victim: the victim must not
 * read a slab header at the pointer masked with its own (bigger) slab size,
 * which may not be mapped. */
START_TEST(cache_free_smaller_slab_cache_pointer_aborts)
{
	struct uslab_cache *c = nomag("victim", USLAB_MAX_SIZE);
	struct uslab_cache *d = nomag("other", 64);
	void *keep = uslab_cache_alloc(c);
	void *p = uslab_cache_alloc(d);

	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p);
}
END_TEST

START_TEST(cache_free_bigger_slab_cache_pointer_aborts)
{
	struct uslab_cache *c = nomag("victim", 64);
	struct uslab_cache *d = nomag("other", USLAB_MAX_SIZE);
	void *keep = uslab_cache_alloc(c);
	char *p = uslab_cache_alloc(d);

	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p + 4096);
}
END_TEST

START_TEST(cache_free_interior_pointer_aborts)
{
	struct uslab_cache *c = nomag("victim", 64);
	char *p = uslab_cache_alloc(c);

	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p + 16);
}
END_TEST

START_TEST(cache_double_free_aborts)
{
	struct uslab_cache *c = nomag("victim", 64);
	void *p = uslab_cache_alloc(c);
	void *q = uslab_cache_alloc(c);

	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(q);
	uslab_cache_free(c, p);
	uslab_cache_free(c, p);
}
END_TEST

/* With magazines the second free is caught when the object reaches its slab:
 * here, when reap flushes the magazines. */
START_TEST(cache_double_free_caught_at_reap)
{
	struct uslab_cache *c = make_cache("victim", 64, 0, 0, NULL);
	void *p = uslab_cache_alloc(c);
	void *q = uslab_cache_alloc(c);

	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(q);
	uslab_cache_free(c, p);
	uslab_cache_free(c, p);
	uslab_cache_reap(c);
}
END_TEST

START_TEST(cache_double_free_caught_at_destroy)
{
	struct uslab_cache *c = make_cache("victim", 64, 0, 0, NULL);
	void *p = uslab_cache_alloc(c);

	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p);
	uslab_cache_free(c, p);
	uslab_cache_destroy(c);
}
END_TEST

START_TEST(cache_foreign_pointer_caught_at_reap)
{
	struct uslab_cache *c = make_cache("victim", 64, 0, 0, NULL);
	void *keep = uslab_cache_alloc(c);
	void *p = malloc(64);

	ck_assert_ptr_nonnull(keep);
	ck_assert_ptr_nonnull(p);
	uslab_cache_free(c, p);
	uslab_cache_reap(c);
}
END_TEST

/* ---- Threads ---- */

/*
 * Eight threads (oversubscribed on a small machine) allocate, stamp each
 * object with its owner and a sequence number, and hand every other one
 * to the next thread through a mailbox, which frees what it receives after
 * checking the stamp: an object handed out twice, or written by the
 * allocator while held, breaks a stamp. At the end every object is back:
 * validate finds nothing, active_objs is 0, and destroy succeeds.
 */
enum { MT_THREADS = 8, MT_ROUNDS = 20000, MT_BOX = 64 };

struct mt_box {
	pthread_mutex_t lock;
	void *objs[MT_BOX];
	unsigned n;
};

struct mt_stamp {
	uint32_t owner, seq;
	uint64_t check;
};

static struct uslab_cache *mt_cache;
static struct mt_box mt_boxes[MT_THREADS];
static uint64_t mt_bad;

static uint64_t mt_check(uint32_t owner, uint32_t seq)
{
	return ((uint64_t)owner << 32 | seq) * 0x9e3779b97f4a7c15ull;
}

static void mt_take(struct mt_stamp *o)
{
	if (o->check != mt_check(o->owner, o->seq))
		__atomic_fetch_add(&mt_bad, 1, __ATOMIC_RELAXED);
	o->check = 0;
	uslab_cache_free(mt_cache, o);
}

static void *mt_worker(void *arg)
{
	uint32_t me = (uint32_t)(uintptr_t)arg;
	struct mt_box *next = &mt_boxes[(me + 1) % MT_THREADS], *mine = &mt_boxes[me];
	void *held[16];
	unsigned nheld = 0;

	for (uint32_t i = 0; i < MT_ROUNDS; i++) {
		struct mt_stamp *o = uslab_cache_alloc(mt_cache);
		if (o == NULL) {
			__atomic_fetch_add(&mt_bad, 1, __ATOMIC_RELAXED);
			continue;
		}
		*o = (struct mt_stamp){me, i, mt_check(me, i)};
		if (i % 2 == 0) {
			pthread_mutex_lock(&next->lock);
			bool full = next->n == MT_BOX;
			if (!full)
				next->objs[next->n++] = o;
			pthread_mutex_unlock(&next->lock);
			if (full)
				mt_take(o);
		} else if (nheld < 16) {
			held[nheld++] = o;
		} else {
			for (unsigned k = 0; k < nheld; k++)
				mt_take(held[k]);
			nheld = 0;
			mt_take(o);
		}
		if (i % 7 == 0) {
			pthread_mutex_lock(&mine->lock);
			for (unsigned k = 0; k < mine->n; k++)
				mt_take(mine->objs[k]);
			mine->n = 0;
			pthread_mutex_unlock(&mine->lock);
		}
	}
	for (unsigned k = 0; k < nheld; k++)
		mt_take(held[k]);
	return NULL;
}

START_TEST(cache_threads_cross_free)
{
	pthread_t t[MT_THREADS];
	struct uslab_stats st;

	mt_cache = uslab_cache_create("test_mt", sizeof(struct mt_stamp) + 8, NULL);
	ck_assert_ptr_nonnull(mt_cache);
	for (int i = 0; i < MT_THREADS; i++) {
		pthread_mutex_init(&mt_boxes[i].lock, NULL);
		mt_boxes[i].n = 0;
	}
	for (int i = 0; i < MT_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, mt_worker, (void *)(uintptr_t)i), 0);
	for (int i = 0; i < MT_THREADS; i++)
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
	for (int i = 0; i < MT_THREADS; i++)
		for (unsigned k = 0; k < mt_boxes[i].n; k++)
			mt_take(mt_boxes[i].objs[k]);
	ck_assert_uint_eq(__atomic_load_n(&mt_bad, __ATOMIC_RELAXED), 0);
	ck_assert_int_eq(uslab_cache_validate(mt_cache, stderr), 0);
	ck_assert_int_eq(uslab_cache_stats(mt_cache, &st), 0);
	ck_assert_uint_eq(st.active_objs, 0);
	ck_assert_int_eq(uslab_cache_destroy(mt_cache), 0);
}
END_TEST

static Suite *cache_suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc;

	tc = tcase_create("sizes");
	tcase_add_loop_test(tc, cache_size_sweep, 1, 1025);
	tcase_add_loop_test(tc, cache_power_of_two_sizes, 0, 21);
	tcase_add_test(tc, cache_max_size_accepted);
	tcase_add_loop_test(tc, cache_explicit_alignment, 0, 10);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifecycle");
	tcase_add_test(tc, cache_ctor_runs_when_slab_created);
	tcase_add_loop_test(tc, cache_ctor_dtor_balanced_after_destroy, 0, 2);
	tcase_add_loop_test(tc, cache_constructed_state_kept, 0, 2);
	tcase_add_loop_test(tc, cache_ctor_failure_in_first_slab, 0, 2);
	tcase_add_loop_test(tc, cache_ctor_failure_in_later_slab, 0, 2);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);

	tc = tcase_create("arguments");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, cache_create_rejects_bad_arguments);
	tcase_add_test(tc, cache_create_accepts_limits);
	tcase_add_test(tc, cache_name_truncated_and_copied);
	tcase_add_test(tc, cache_destroy_null_fails);
	tcase_add_test(tc, cache_null_cache_einval);
	tcase_add_loop_test(tc, cache_destroy_busy_keeps_cache, 0, 2);
	tcase_add_test(tc, cache_free_null_is_noop);
	tcase_add_test(tc, cache_free_null_is_noop_nomagazine);
	suite_add_tcase(s, tc);

	tc = tcase_create("oom");
	tcase_add_loop_test(tc, cache_oom_fails_cleanly, 0, 2);
	tcase_add_loop_test(tc, cache_oom_after_one_slab, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_add_test(tc, cache_threads_cross_free);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);

	tc = tcase_create("bulk");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, cache_overrun_spares_the_allocator);
	tcase_add_test(tc, cache_bulk_alloc_free);
	tcase_add_test(tc, cache_bulk_nomagazine);
	suite_add_tcase(s, tc);

	tc = tcase_create("reap");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, cache_reap_returns_bytes);
	tcase_add_test(tc, cache_reap_runs_dtor);
	tcase_add_test(tc, cache_magazines_are_a_cache);
	tcase_add_test(tc, cache_free_inside_foreach);
	tcase_add_test(tc, cache_depot_spares_bounded);
	suite_add_tcase(s, tc);

	tc = tcase_create("typed");
	tcase_add_test(tc, cache_typed_macros);
	suite_add_tcase(s, tc);

	tc = tcase_create("mode");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, cache_mode_named);
	suite_add_tcase(s, tc);

	if (can_fork()) {
		tc = tcase_create("misuse");
		tcase_add_test_raise_signal(tc, cache_free_malloc_pointer_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, cache_free_other_cache_pointer_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, cache_free_smaller_slab_cache_pointer_aborts,
		                            SIGABRT);
		tcase_add_test_raise_signal(tc, cache_free_bigger_slab_cache_pointer_aborts,
		                            SIGABRT);
		tcase_add_test_raise_signal(tc, cache_free_interior_pointer_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, cache_double_free_aborts, SIGABRT);
		tcase_add_test_raise_signal(tc, cache_double_free_caught_at_reap, SIGABRT);
		tcase_add_test_raise_signal(tc, cache_double_free_caught_at_destroy, SIGABRT);
		tcase_add_test_raise_signal(tc, cache_foreign_pointer_caught_at_reap, SIGABRT);
		suite_add_tcase(s, tc);
	}
	return s;
}

Suite *(*const test_suites[])(void) = {cache_suite, NULL};
