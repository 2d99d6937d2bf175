/* SPDX-License-Identifier: MIT */
/* Misuse caught and named: the default checks of every free, and debug caches. */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "uslab.h"
#include "testutil.h"

/*
 * Death tests: each scenario runs in a child with its stderr captured. It
 * says which object it is about to misuse ("expect <ptr>" on stderr), then
 * misuses it; the child must die of SIGABRT with the report line
 * "uslab: cache '<name>': object <ptr>: <what>". The magazines are on
 * (no USLAB_NOMAGAZINE), and the suites run in both modes (scripts/check.sh
 * runs them again with USLAB_RSEQ=0).
 */

static void expect(const void *p)
{
	fprintf(stderr, "expect %p\n", p);
	fflush(stderr);
}

/* Run @fn in a child; it must abort with the report @what about the object
 * it named, for cache @name. */
static void check_report(int (*fn)(void *), void *arg, const char *name, const char *what)
{
	char err[8192], want[256];
	int rc = test_run_child(fn, arg, 60, err, sizeof err);
	const char *e = strstr(err, "expect ");
	ck_assert_msg(e != NULL, "the scenario did not get to its misuse (status %d): %s", rc, err);
	void *p = NULL;
	ck_assert_int_eq(sscanf(e, "expect %p", &p), 1);
	snprintf(want, sizeof want, "uslab: cache '%s': object %p: %s", name, p, what);
	ck_assert_msg(strstr(err, want) != NULL, "no \"%s\" in: %s", want, err);
	ck_assert_msg(rc == 128 + SIGABRT, "status %d, not SIGABRT: %s", rc, err);
}

static struct uslab_cache *victim(size_t size)
{
	struct uslab_cache *c = uslab_cache_create("victim", size, NULL);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* ---- The default checks of every free (no debug flag) ---- */

/* The glibc "fasttop" bug: the object freed twice is the one on top of
 * this CPU's magazine. @arg: how many allocations come before it (0: the
 * first, which a refill returns; 1: one popped from the magazine). */
static int double_free_top(void *arg)
{
	struct uslab_cache *c = victim(64);
	void *a = uslab_cache_alloc(c);
	for (intptr_t i = 0; i < (intptr_t)arg; i++)
		a = uslab_cache_alloc(c);
	uslab_cache_free(c, a);
	expect(a);
	uslab_cache_free(c, a);
	return 0;
}

START_TEST(default_double_free_on_top)
{
	check_report(double_free_top, (void *)(intptr_t)_i, "victim", "double free");
}
END_TEST

/* Which kind of foreign pointer a scenario frees. */
enum foreign {
	F_MALLOC,
	F_STACK,
	F_LOW,        /* 0x1000 */
	F_OTHER_SIZE, /* an object of a cache of another size */
	F_SAME_SIZE,  /* an object of another cache of the same size */
	F_BULK,       /* a malloc pointer among objects, through the bulk free */
	F_NFOREIGN,
};

static int free_foreign(void *arg)
{
	enum foreign f = (enum foreign)(intptr_t)arg;
	struct uslab_cache *c = victim(64);
	char on_stack[64];
	void *keep = uslab_cache_alloc(c), *p = NULL;

	/* Objects of the cache were allocated and freed here: the magazine
	 * is warm, and the memo has entries. */
	uslab_cache_free(c, uslab_cache_alloc(c));
	switch (f) {
	case F_MALLOC:
	case F_BULK:
		p = malloc(64);
		break;
	case F_STACK:
		p = on_stack;
		break;
	case F_LOW:
		p = (void *)(uintptr_t)0x1000;
		break;
	case F_OTHER_SIZE:
		p = uslab_cache_alloc(uslab_cache_create("other", 128, NULL));
		break;
	case F_SAME_SIZE:
		p = uslab_cache_alloc(uslab_cache_create("other", 64, NULL));
		break;
	case F_NFOREIGN:
		break;
	}
	expect(p);
	if (f == F_BULK) {
		void *objs[3] = {keep, p, uslab_cache_alloc(c)};
		uslab_cache_free_bulk(c, objs, 3);
	} else {
		uslab_cache_free(c, p);
	}
	return 0;
}

START_TEST(default_foreign_pointer_refused)
{
	check_report(free_foreign, (void *)(intptr_t)_i, "victim", "not an object of this cache");
}
END_TEST

static int free_interior(void *arg)
{
	struct uslab_cache *c = victim(64);
	char *a = uslab_cache_alloc(c);
	(void)arg;
	uslab_cache_free(c, uslab_cache_alloc(c));
	expect(a + 8);
	uslab_cache_free(c, a + 8);
	return 0;
}

START_TEST(default_interior_pointer_refused)
{
	check_report(free_interior, NULL, "victim", "interior pointer");
}
END_TEST

/*
 * The memo's safety (arch/fastpath.h): a free trusts an object found just
 * above the count of its CPU's magazine, so no stale pointer may stay
 * there once its slab went back. Here: on CPU 0 the magazine is emptied by
 * allocations (stale entries everywhere, count 0); the objects are freed
 * on CPU 1 and reaped, so the slab's block goes back to the page source,
 * which hands the same block to a cache "other" of the same size. The
 * object of "other" at the address of the last object allocated on CPU 0
 * is then freed to the victim on CPU 0: the victim's stale entry has that
 * address. It must be refused; it would be accepted, and handed out by
 * the victim, if reap released the slab without sweeping the slots.
 */
static char one_block[1 << 17] __attribute__((aligned(1 << 16)));
static int one_block_out;

static void *one_get(void *arg, size_t size)
{
	(void)arg;
	if (size != (1 << 16) || one_block_out) {
		errno = ENOMEM;
		return NULL;
	}
	one_block_out = 1;
	return one_block;
}

static void one_put(void *arg, void *block, size_t size)
{
	(void)arg;
	(void)size;
	ck_assert_ptr_eq(block, one_block);
	one_block_out = 0;
}

static const struct uslab_pagesrc one_src = {
	.name = "one-block", .get = one_get, .put = one_put, .purge = NULL, .arg = NULL};

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ck_assert_int_eq(sched_setaffinity(0, sizeof set, &set), 0);
}

struct frees {
	struct uslab_cache *f_cache;
	void **f_objs;
	size_t f_n;
};

static void *free_on_cpu1(void *arg)
{
	struct frees *f = arg;
	pin(1);
	for (size_t i = 0; i < f->f_n; i++)
		uslab_cache_free(f->f_cache, f->f_objs[i]);
	return NULL;
}

static int stale_memo(void *arg)
{
	(void)arg;
	pin(0);
	struct uslab_cache_conf conf = {.pagesrc = &one_src};
	struct uslab_cache *c = uslab_cache_create("victim", 64, &conf);
	/* One slab of 64 KiB holds 1,024 objects: take them all, so every
	 * magazine round on CPU 0 was popped (the memo holds each). */
	enum { N = 1024 };
	static void *objs[N];
	size_t n = 0;
	while (n < N && (objs[n] = uslab_cache_alloc(c)) != NULL)
		n++;
	if (n < 2)
		return 10;
	/* CPU 0's magazine is empty now. One object goes in and out again:
	 * it is the entry at the count, for certain. */
	void *last = objs[n - 1];
	uslab_cache_free(c, last);
	if (uslab_cache_alloc(c) != last)
		return 14;
	struct frees f = {c, objs, n};
	pthread_t t;
	pthread_create(&t, NULL, free_on_cpu1, &f);
	pthread_join(t, NULL);
	uslab_cache_reap(c);
	if (one_block_out)
		return 11; /* the slab did not go back: the test tests nothing */
	struct uslab_cache *o = uslab_cache_create("other", 64, &conf);
	void *p = NULL;
	for (size_t i = 0; i < N && p != last; i++)
		if ((p = uslab_cache_alloc(o)) == NULL)
			return 12;
	if (p != last)
		return 13;
	expect(p);
	uslab_cache_free(c, p);
	return 0;
}

START_TEST(default_stale_memo_never_trusted)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "# skipped: one CPU\n");
		return;
	}
	check_report(stale_memo, NULL, "victim", "not an object of this cache");
}
END_TEST

static Suite *debug_suite(void)
{
	Suite *s = suite_create("debug");
	TCase *tc = tcase_create("default");

	if (test_can_fork()) {
		tcase_add_loop_test(tc, default_double_free_on_top, 0, 2);
		tcase_add_loop_test(tc, default_foreign_pointer_refused, 0, F_NFOREIGN);
		tcase_add_test(tc, default_interior_pointer_refused);
		tcase_add_test(tc, default_stale_memo_never_trusted);
	}
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {debug_suite, NULL};
