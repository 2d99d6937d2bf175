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

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

/* Write a byte where the cache's tools may have closed the memory (ASan
 * poisons free objects and red zones): corruption that no tool saw, for
 * uslab's own checks to find. */
static void plant(void *p, char v)
{
#if UNDER_ASAN
	__asan_unpoison_memory_region(p, 1);
	*(volatile char *)p = v;
	__asan_poison_memory_region(p, 1);
#else
	*(volatile char *)p = v;
#endif
}

/* In ASan builds the cache poisons what the program must not touch (free
 * objects, red zones): a planted overrun or use after free is ASan's
 * report, at the access. */
static void check_asan_report(int (*fn)(void *), void *arg)
{
	char err[8192];
	int rc = test_run_child(fn, arg, 60, err, sizeof err);
	ck_assert_msg(strstr(err, "ERROR: AddressSanitizer: use-after-poison") != NULL, "%s", err);
	ck_assert_msg(rc != 0, "the scenario went on: %s", err);
}

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

/* Run @fn in a child; it must die of @sig with the report @what about the
 * object it named, for cache @name; its stderr is left in @err. */
static void check_report_sig(int (*fn)(void *), void *arg, const char *name, const char *what,
                             int sig, char *err, size_t errlen)
{
	char want[256];
	int rc = test_run_child(fn, arg, 60, err, errlen);
	const char *e = strstr(err, "expect ");
	ck_assert_msg(e != NULL, "the scenario did not get to its misuse (status %d): %s", rc, err);
	void *p = NULL;
	ck_assert_int_eq(sscanf(e, "expect %p", &p), 1);
	snprintf(want, sizeof want, "uslab: cache '%s': object %p: %s", name, p, what);
	ck_assert_msg(strstr(err, want) != NULL, "no \"%s\" in: %s", want, err);
	ck_assert_msg(rc == 128 + sig, "status %d, not signal %d: %s", rc, sig, err);
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

static struct uslab_cache *victim_with(size_t size, unsigned flags)
{
	struct uslab_cache *c =
		uslab_cache_create("victim", size, &(struct uslab_cache_conf){.flags = flags});
	ck_assert_ptr_nonnull(c);
	return c;
}

#define ALL_DEBUG                                                                                  \
	(USLAB_DEBUG_CHECKS | USLAB_DEBUG_REDZONE | USLAB_DEBUG_POISON | USLAB_DEBUG_AUDIT)

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

/* ---- Debug caches (magazines on) ---- */

/* F: a double free that is not on top of the magazine, caught at once. */
static int deep_double_free(void *arg)
{
	struct uslab_cache *c = victim_with(64, USLAB_DEBUG_CHECKS | (unsigned)(uintptr_t)arg);
	void *a = uslab_cache_alloc(c), *b = uslab_cache_alloc(c);
	uslab_cache_free(c, a);
	uslab_cache_free(c, b);
	expect(a);
	uslab_cache_free(c, a);
	return 0;
}

START_TEST(debug_double_free_anywhere)
{
	check_report(deep_double_free, (void *)(uintptr_t)(_i ? USLAB_DEBUG_AUDIT : 0), "victim",
	             "double free");
}
END_TEST

/* The same without F: not caught at the free (the object is not on top);
 * the free returns. */
static int deep_double_free_default(void *arg)
{
	(void)arg;
	struct uslab_cache *c = victim(64);
	void *a = uslab_cache_alloc(c), *b = uslab_cache_alloc(c);
	uslab_cache_free(c, a);
	uslab_cache_free(c, b);
	uslab_cache_free(c, a);
	return 42;
}

START_TEST(debug_default_misses_deep_double_free)
{
	ck_assert_int_eq(test_run_child(deep_double_free_default, NULL, 30, NULL, 0), 42);
}
END_TEST

/* Z: one byte past the object. */
static int overrun(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg;
	struct uslab_cache *c = victim_with(size, USLAB_DEBUG_REDZONE);
	char *a = uslab_cache_alloc(c);
	a[size] = 'X';
	expect(a);
	uslab_cache_free(c, a);
	return 0;
}

START_TEST(debug_redzone_overrun)
{
	static const size_t sizes[] = {64, 24, 100};
	char what[64], err[8192];
	snprintf(what, sizeof what, "red zone overwritten (offset %zu)", sizes[_i]);
	if (UNDER_ASAN)
		check_asan_report(overrun, (void *)(uintptr_t)sizes[_i]);
	else
		check_report_sig(overrun, (void *)(uintptr_t)sizes[_i], "victim", what, SIGABRT,
		                 err, sizeof err);
}
END_TEST

/* P: a write into a freed object, caught when it is allocated again. */
static int write_after_free(void *arg)
{
	(void)arg;
	struct uslab_cache *c = victim_with(64, USLAB_DEBUG_POISON);
	char *a = uslab_cache_alloc(c);
	uslab_cache_free(c, a);
	a[8] = 'A';
	expect(a);
	if (uslab_cache_alloc(c) != a)
		return 10;
	return 0;
}

START_TEST(debug_poison_write_after_free)
{
	if (UNDER_ASAN)
		check_asan_report(write_after_free, NULL);
	else
		check_report(write_after_free, NULL, "victim",
		             "use after free (offset 8: 41 6b 6b 6b");
}
END_TEST

/* U: the report is followed by the object's last allocation and free. */
static int audited_double_free(void *arg)
{
	(void)arg;
	return deep_double_free((void *)(uintptr_t)USLAB_DEBUG_AUDIT);
}

START_TEST(debug_audit_names_the_stacks)
{
	char err[8192];
	check_report_sig(audited_double_free, NULL, "victim", "double free", SIGABRT, err,
	                 sizeof err);
	const char *r = strstr(err, ": double free");
	ck_assert_ptr_nonnull(strstr(r, "uslab:   last allocated by thread "));
	ck_assert_ptr_nonnull(strstr(r, "uslab:   last freed by thread "));
	ck_assert_ptr_nonnull(strstr(r, "test-debug")); /* a frame of the program */
}
END_TEST

/* Validate: a poisoned free object written, a red zone damaged, and the
 * count is exactly 2; no abort. */
START_TEST(debug_validate_counts_exactly)
{
	struct uslab_cache *c = victim_with(64, ALL_DEBUG);
	char *a = uslab_cache_alloc(c), *b = uslab_cache_alloc(c), *k = uslab_cache_alloc(c);
	FILE *out = tmpfile();
	ck_assert_ptr_nonnull(out);
	ck_assert_int_eq(uslab_cache_validate(c, out), 0); /* clean (k, a, b are out) */
	uslab_cache_free(c, b);
	plant(b + 3, 'B');  /* into a free, poisoned object */
	plant(a + 70, 'Z'); /* into a red zone */
	rewind(out);
	ck_assert_int_eq(uslab_cache_validate(c, out), 2);
	char text[4096] = "";
	rewind(out);
	size_t n = fread(text, 1, sizeof text - 1, out);
	text[n] = '\0';
	char want[128];
	snprintf(want, sizeof want, "object %p: use after free (offset 3: 42", (void *)b);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	snprintf(want, sizeof want, "object %p: red zone overwritten (offset 70)", (void *)a);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	/* The two objects still out are listed (U), not counted. */
	snprintf(want, sizeof want, "object %p: leak", (void *)k);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	fclose(out);
}
END_TEST

/* Validate with the audit: leaks grouped by allocation stack. */
static __attribute__((noinline)) void *leak_here(struct uslab_cache *c)
{
	return uslab_cache_alloc(c);
}

static __attribute__((noinline)) void *leak_there(struct uslab_cache *c)
{
	return uslab_cache_alloc(c);
}

START_TEST(debug_validate_groups_leaks)
{
	struct uslab_cache *c = victim_with(48, USLAB_DEBUG_AUDIT);
	static volatile int three = 3, two = 2; /* one call site each: no unrolling */
	for (int i = 0; i < three; i++)
		(void)leak_here(c);
	for (int i = 0; i < two; i++)
		(void)leak_there(c);
	uslab_cache_free(c, uslab_cache_alloc(c)); /* not a leak */
	FILE *out = tmpfile();
	ck_assert_int_eq(uslab_cache_validate(c, out), 0);
	char text[16384] = "";
	rewind(out);
	size_t n = fread(text, 1, sizeof text - 1, out);
	text[n] = '\0';
	int leaks = 0;
	for (const char *p = text; (p = strstr(p, ": leak\n")) != NULL; p++)
		leaks++;
	ck_assert_int_eq(leaks, 5);
	ck_assert_msg(strstr(text, "3 of them allocated") != NULL, "%s", text);
	ck_assert_msg(strstr(text, "2 of them allocated") != NULL, "%s", text);
	fclose(out);
	ck_assert_int_eq(uslab_cache_destroy(c), -1);
	ck_assert_int_eq(errno, EBUSY);
}
END_TEST

/* Validate finds an object free twice in the magazines (a double free the
 * default mode let through), and an object in a magazine and its slab. */
START_TEST(debug_validate_finds_magazine_double_free)
{
	struct uslab_cache *c = victim(64);
	void *a = uslab_cache_alloc(c), *b = uslab_cache_alloc(c);
	uslab_cache_free(c, a);
	uslab_cache_free(c, b);
	uslab_cache_free(c, a); /* not on top: the default lets it in */
	FILE *out = tmpfile();
	ck_assert_int_eq(uslab_cache_validate(c, out), 1);
	char text[4096] = "", want[96];
	rewind(out);
	size_t n = fread(text, 1, sizeof text - 1, out);
	text[n] = '\0';
	snprintf(want, sizeof want, "object %p: double free (in two magazines)", a);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	fclose(out);
}
END_TEST

/* set_debug: refusals. */
START_TEST(debug_set_refuses_what_cannot_be)
{
	struct uslab_cache *c = victim(64); /* no padding: no red zone room */
	ck_assert_int_eq(uslab_cache_set_debug(c, USLAB_DEBUG_REDZONE), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(uslab_cache_set_debug(c, USLAB_NOMAGAZINE), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(uslab_cache_set_debug(NULL, 0), -1);
	ck_assert_int_eq(errno, EINVAL);
	struct uslab_cache_conf conf = {.ctor = NULL};
	(void)conf;
	ck_assert_int_eq(uslab_cache_set_debug(c, USLAB_DEBUG_CHECKS | USLAB_DEBUG_POISON), 0);
	struct uslab_stats st;
	ck_assert_int_eq(uslab_cache_stats(c, &st), 0);
	ck_assert_uint_eq(st.flags & USLAB_DEBUG_MASK, USLAB_DEBUG_CHECKS | USLAB_DEBUG_POISON);
	ck_assert_int_eq(uslab_cache_set_debug(c, 0), 0);
	ck_assert_int_eq(uslab_cache_destroy(c), 0);
}
END_TEST

/* Objects allocated before set_debug() are not falsely reported, and a
 * double free after it is caught. */
static int switched_on_live(void *arg)
{
	(void)arg;
	struct uslab_cache *c = victim(64);
	enum { N = 500 };
	static void *objs[N];
	for (int i = 0; i < N; i++)
		objs[i] = uslab_cache_alloc(c);
	for (int i = 0; i < N; i += 2)
		uslab_cache_free(c, objs[i]);
	if (uslab_cache_set_debug(c, USLAB_DEBUG_CHECKS | USLAB_DEBUG_POISON | USLAB_DEBUG_AUDIT) !=
	    0)
		return 10;
	for (int i = 1; i < N; i += 2) /* allocated before: no report */
		uslab_cache_free(c, objs[i]);
	for (int i = 0; i < N; i++)
		objs[i] = uslab_cache_alloc(c);
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	if (uslab_cache_validate(c, NULL) != 0)
		return 11;
	expect(objs[7]);
	uslab_cache_free(c, objs[7]);
	return 0;
}

START_TEST(debug_set_on_live_cache)
{
	check_report(switched_on_live, NULL, "victim", "double free");
}
END_TEST

/* P switched off: the objects it poisoned go out through the fast path
 * (which keeps their poison bits), are written and come back unpoisoned.
 * uslab_cache_validate must not call that a use after free (it did, and
 * the threaded test below met it one run in fifty). */
START_TEST(debug_poison_off_then_validate)
{
	struct uslab_cache *c = victim_with(64, USLAB_DEBUG_POISON);
	void *o[8];
	for (int i = 0; i < 8; i++)
		ck_assert_ptr_nonnull(o[i] = uslab_cache_alloc(c));
	for (int i = 0; i < 8; i++)
		uslab_cache_free(c, o[i]);
	ck_assert_int_eq(uslab_cache_set_debug(c, 0), 0);
	for (int i = 0; i < 8; i++) {
		ck_assert_ptr_nonnull(o[i] = uslab_cache_alloc(c));
		memset(o[i], 0x11, 64);
	}
	for (int i = 0; i < 8; i++)
		uslab_cache_free(c, o[i]);
	ck_assert_int_eq(uslab_cache_validate(c, NULL), 0);
	/* Switched on again, P checks what is poisoned from then on. */
	ck_assert_int_eq(uslab_cache_set_debug(c, USLAB_DEBUG_POISON), 0);
	ck_assert_int_eq(uslab_cache_validate(c, NULL), 0);
	void *a = uslab_cache_alloc(c);
	uslab_cache_free(c, a);
	plant((char *)a + 5, 1); /* a write after free, while P is on */
	FILE *quiet = fopen("/dev/null", "w");
	ck_assert_int_eq(uslab_cache_validate(c, quiet), 1);
	fclose(quiet);
	plant((char *)a + 5, 0x6b);
	ck_assert_int_eq(uslab_cache_validate(c, NULL), 0);
	uslab_cache_destroy(c);
}
END_TEST

/* Switched on and off while threads allocate and free: no false report,
 * nothing lost (the cache destroys cleanly). */
struct toggle_run {
	struct uslab_cache *t_cache;
	volatile int t_stop;
};

static void *toggle_worker(void *arg)
{
	struct toggle_run *t = arg;
	void *keep[64] = {NULL};
	unsigned long long i = 0;
	while (!t->t_stop) {
		unsigned k = (unsigned)(i++ % 64);
		if (keep[k] != NULL) {
			if (*(unsigned long long *)keep[k] != (uintptr_t)keep[k])
				abort(); /* handed out twice, or written while free */
			uslab_cache_free(t->t_cache, keep[k]);
		}
		keep[k] = uslab_cache_alloc(t->t_cache);
		if (keep[k] != NULL)
			*(unsigned long long *)keep[k] = (uintptr_t)keep[k];
	}
	for (unsigned k = 0; k < 64; k++)
		uslab_cache_free(t->t_cache, keep[k]);
	return NULL;
}

static int toggling(void *arg)
{
	(void)arg;
	struct toggle_run t = {.t_cache = victim_with(64, USLAB_DEBUG_REDZONE)};
	FILE *quiet = fopen("/dev/null", "w"); /* validate lists the objects out (U) */
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, toggle_worker, &t);
	static const unsigned modes[] = {
		ALL_DEBUG,
		0,
		USLAB_DEBUG_CHECKS,
		USLAB_DEBUG_POISON | USLAB_DEBUG_REDZONE,
		USLAB_DEBUG_AUDIT,
		USLAB_DEBUG_CHECKS | USLAB_DEBUG_POISON,
		0,
	};
	for (int round = 0; round < 300; round++) {
		if (uslab_cache_set_debug(t.t_cache, modes[round % 7]) != 0)
			return 10;
		if (round % 50 == 0 && uslab_cache_validate(t.t_cache, quiet) != 0)
			return 11;
		usleep(1000);
	}
	t.t_stop = 1;
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	uslab_cache_set_debug(t.t_cache, USLAB_DEBUG_CHECKS);
	if (uslab_cache_validate(t.t_cache, NULL) != 0)
		return 12;
	fclose(quiet);
	/* After all that switching, a double free is still caught at once. */
	void *a = uslab_cache_alloc(t.t_cache), *b = uslab_cache_alloc(t.t_cache);
	uslab_cache_free(t.t_cache, a);
	uslab_cache_free(t.t_cache, b);
	expect(a);
	uslab_cache_free(t.t_cache, a);
	return 0;
}

START_TEST(debug_set_while_threads_run)
{
	check_report(toggling, NULL, "victim", "double free");
}
END_TEST

/* ---- The environment (read at the first create: each scenario runs in a
 *      fresh child that sets it first) ---- */

static unsigned debug_flags_of(struct uslab_cache *c)
{
	struct uslab_stats st;
	return uslab_cache_stats(c, &st) == 0 ? st.flags & (USLAB_DEBUG_MASK | USLAB_RANDOM) : ~0u;
}

static int ctor_nop(void *obj, void *arg)
{
	(void)obj;
	(void)arg;
	return 0;
}

static int env_debug(void *arg)
{
	(void)arg;
	setenv("USLAB_DEBUG", "U;FZ,conn,item*;P,req*;-,item2;X,bad", 1);
	struct uslab_cache *conn = uslab_cache_create("conn", 64, NULL);
	struct uslab_cache *item1 = uslab_cache_create("item1", 64, NULL);
	struct uslab_cache *item2 = uslab_cache_create("item2", 64, NULL);
	struct uslab_cache *req = uslab_cache_create("req", 64, NULL);
	struct uslab_cache *reqc =
		uslab_cache_create("reqc", 64, &(struct uslab_cache_conf){.ctor = ctor_nop});
	struct uslab_cache *other = uslab_cache_create("other", 64, NULL);
	if (debug_flags_of(conn) != (USLAB_DEBUG_CHECKS | USLAB_DEBUG_REDZONE))
		return 10;
	if (debug_flags_of(item1) != (USLAB_DEBUG_CHECKS | USLAB_DEBUG_REDZONE))
		return 11;
	if (debug_flags_of(item2) != 0)
		return 12; /* a later named block wins */
	if (debug_flags_of(req) != USLAB_DEBUG_POISON)
		return 13;
	if (debug_flags_of(reqc) != 0)
		return 14; /* no poison for a cache with a ctor */
	if (debug_flags_of(other) != USLAB_DEBUG_AUDIT)
		return 15; /* the block without names */
	return 0;
}

START_TEST(debug_env_syntax)
{
	char err[4096];
	int rc = test_run_child(env_debug, NULL, 30, err, sizeof err);
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
	ck_assert_msg(strstr(err, "uslab: USLAB_DEBUG: bad block \"X\", ignored") != NULL, "%s",
	              err);
}
END_TEST

/* USLAB_DEBUG=FZPU with R: every cache; R hands a new slab's objects out
 * in a random order (without R, in address order). */
static int env_all_random(void *arg)
{
	setenv("USLAB_DEBUG", arg != NULL ? "FZPUR" : "FZPU", 1);
	struct uslab_cache *c = uslab_cache_create("any", 64, NULL);
	unsigned want = ALL_DEBUG | (arg != NULL ? USLAB_RANDOM : 0);
	if (debug_flags_of(c) != want)
		return 10;
	enum { N = 200 };
	void *objs[N];
	int ascending = 0;
	for (int i = 0; i < N; i++)
		if ((objs[i] = uslab_cache_alloc(c)) == NULL)
			return 11;
	/* Within each magazine refill the slab layer hands out a batch; the
	 * per-CPU layer pops it from the top: count the steps that go one
	 * slot down, as they all do in address order. */
	for (int i = 1; i < N; i++)
		ascending += (char *)objs[i - 1] - (char *)objs[i] == 80 /* the slot, with Z */;
	for (int i = 0; i < N; i++)
		uslab_cache_free(c, objs[i]);
	if (uslab_cache_validate(c, NULL) != 0)
		return 12;
	return ascending > N / 2 ? 100 : 101; /* in order, or not */
}

START_TEST(debug_env_all_and_random)
{
	ck_assert_int_eq(test_run_child(env_all_random, NULL, 30, NULL, 0), 100);
	ck_assert_int_eq(test_run_child(env_all_random, (void *)1, 30, NULL, 0), 101);
}
END_TEST

/* USLAB_FAIL: every third allocation of "failing" fails, through single
 * and bulk allocations, with exact counts; no other cache is touched;
 * nothing leaks. A bounded rule stops at its bound. */
static int env_fail(void *arg)
{
	(void)arg;
	setenv("USLAB_FAIL", "3,failing;p0.5@7x5,bounded", 1);
	struct uslab_cache *c = uslab_cache_create("failing", 64, NULL);
	struct uslab_cache *o = uslab_cache_create("other", 64, NULL);
	struct uslab_cache *b = uslab_cache_create("bounded", 64, NULL);
	enum { N = 300 };
	static void *objs[N + 40];
	size_t nobj = 0, failed = 0;
	for (int i = 0; i < N; i++) {
		errno = 0;
		void *p = uslab_cache_alloc(c);
		if (p == NULL && errno == ENOMEM)
			failed++;
		else if (p != NULL)
			objs[nobj++] = p;
		void *q = uslab_cache_alloc(o);
		if (q == NULL)
			return 10;
		uslab_cache_free(o, q);
	}
	if (failed != N / 3)
		return 11;
	for (int k = 0; k < 10; k++) {
		errno = 0;
		size_t got = uslab_cache_alloc_bulk(c, objs + nobj, 30);
		if (got != 2 || errno != ENOMEM)
			return 12; /* allocations 3k+1 and 3k+2, then a failure */
		nobj += got;
		failed++;
		uslab_cache_free_bulk(c, objs + nobj - got, got);
		nobj -= got;
	}
	struct uslab_stats st;
	if (uslab_cache_stats(c, &st) != 0 || st.alloc_failures != failed)
		return 13;
	uslab_cache_free_bulk(c, objs, nobj);
	if (uslab_cache_destroy(c) != 0)
		return 14; /* nothing leaked */
	size_t bfail = 0;
	for (int i = 0; i < 1000; i++) {
		void *p = uslab_cache_alloc(b);
		if (p == NULL)
			bfail++;
		uslab_cache_free(b, p);
	}
	if (bfail != 5)
		return 15;
	return uslab_cache_destroy(b) == 0 && uslab_cache_destroy(o) == 0 ? 0 : 16;
}

START_TEST(debug_env_failure_injection)
{
	char err[4096];
	int rc = test_run_child(env_fail, NULL, 30, err, sizeof err);
	ck_assert_msg(rc == 0, "status %d: %s", rc, err);
}
END_TEST

/* USLAB_SAMPLE: a sampled object ends against an inaccessible page. An
 * overrun, and a use after free, fault at once and are named. */
static char *sampled(struct uslab_cache *c)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int fds[2];
	if (pipe(fds) != 0)
		return NULL;
	for (int i = 0; i < 1000; i++) {
		char *p = uslab_cache_alloc(c);
		/* Ends at a page boundary, and the next page is inaccessible
		 * (write(2) says EFAULT instead of faulting). */
		if (p != NULL && ((uintptr_t)p + 64) % page == 0 && write(fds[1], p + 64, 1) < 0 &&
		    errno == EFAULT)
			return p;
	}
	return NULL;
}

static int sample_overrun(void *arg)
{
	(void)arg;
	setenv("USLAB_SAMPLE", "2", 1);
	struct uslab_cache *c = uslab_cache_create("sampled", 64, NULL);
	char *p = sampled(c);
	if (p == NULL)
		return 10;
	expect(p);
	((volatile char *)p)[64] = 'X';
	return 0;
}

static int sample_uaf(void *arg)
{
	(void)arg;
	setenv("USLAB_SAMPLE", "2", 1);
	struct uslab_cache *c = uslab_cache_create("sampled", 64, NULL);
	char *p = sampled(c);
	if (p == NULL)
		return 10;
	uslab_cache_free(c, p);
	expect(p);
	((volatile char *)p)[8] = 'X';
	return 0;
}

START_TEST(debug_sample_guard)
{
	char err[8192];
	check_report_sig(sample_overrun, NULL, "sampled",
	                 "red zone overwritten (sampled guard page, offset 64)", SIGSEGV, err,
	                 sizeof err);
	check_report_sig(sample_uaf, NULL, "sampled",
	                 "use after free (sampled guard page, offset 8)", SIGSEGV, err, sizeof err);
	ck_assert_msg(strstr(err, "uslab:   freed by thread") != NULL, "%s", err);
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

	tc = tcase_create("debug");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, debug_set_refuses_what_cannot_be);
	/* The rest plant bugs: under valgrind (no fork) memcheck would report
	 * them before uslab's own checks (tests/sanitizer-tools.sh shows it). */
	if (test_can_fork()) {
		tcase_add_test(tc, debug_validate_counts_exactly);
		tcase_add_test(tc, debug_validate_groups_leaks);
		tcase_add_test(tc, debug_validate_finds_magazine_double_free);
		tcase_add_loop_test(tc, debug_double_free_anywhere, 0, 2);
		tcase_add_test(tc, debug_default_misses_deep_double_free);
		tcase_add_loop_test(tc, debug_redzone_overrun, 0, 3);
		tcase_add_test(tc, debug_poison_write_after_free);
		tcase_add_test(tc, debug_audit_names_the_stacks);
		tcase_add_test(tc, debug_set_on_live_cache);
		tcase_add_test(tc, debug_set_while_threads_run);
		tcase_add_test(tc, debug_poison_off_then_validate);
	}
	suite_add_tcase(s, tc);

	tc = tcase_create("environment");
	tcase_set_timeout(tc, 60);
	if (test_can_fork()) {
		tcase_add_test(tc, debug_env_syntax);
		tcase_add_test(tc, debug_env_all_and_random);
		tcase_add_test(tc, debug_env_failure_injection);
		if (!UNDER_ASAN) /* ASan keeps SIGSEGV for itself */
			tcase_add_test(tc, debug_sample_guard);
	}
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {debug_suite, NULL};
