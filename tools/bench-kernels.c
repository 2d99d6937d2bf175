/* SPDX-License-Identifier: MIT */
/* uslab-bench's backends and measured loops: the floor, uslab, the mallocs, the bk_* kernels. */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"

/*
 * 1. Backends (--backend): floor, uslab, uslab-locked, glibc, jemalloc,
 *    tcmalloc, mimalloc, and one more uslab per --uslab-lib.
 *    - uslab: the library the process mapped (the one it is linked with,
 *      or with --uslab-lib NAME=PATH another build's, see bench-parent.c),
 *      in whatever mode uslab_mode() reports ("rseq cpu_id" normally),
 *      its caches on the backend's page source (--pagesrc), found with
 *      dlsym so that an older build without it still runs the others.
 *      uslab-locked is the same binary re-executed with USLAB_RSEQ=0,
 *      because the mode is chosen once per process.
 *    - glibc: the process's malloc/free.
 *    - jemalloc, tcmalloc, mimalloc: the Debian shared libraries, called
 *      through the entry points dlsym finds on their handle: malloc/free
 *      for jemalloc (the Debian build exports only unprefixed names plus
 *      mallocx/dallocx), tc_malloc/tc_free, mi_malloc/mi_free. Missing
 *      ones are skipped with a note.
 *
 * 2. One dispatch. Every kernel calls its allocator through a function
 *    pointer in its struct bctx, loaded again on each call (the call may
 *    change memory the compiler cannot see): a non-inlined indirect call,
 *    the same for every backend. The floor, glibc and the three peers run
 *    the very same kernel functions (bk_*_malloc); uslab's differ only in
 *    passing the cache as the argument.
 *
 * 3. The floor is a true lower bound: behind that same call, its alloc is
 *    one load (the thread's slot) and its free one store (into the slot).
 *    Any allocator must at least load a pointer to hand out and store the
 *    one it gets back, through the same call, so none can be below it. It
 *    hands out the same object every time (a pair, as every LIFO allocator
 *    does), so in the batch rows it does not keep K objects apart: those
 *    rows are the loop and the calls, not the memory of K objects. For
 *    fresh and mem, which need new objects, its alloc bumps a pointer over
 *    a mapping of its own (one load and one store too: read the pointer,
 *    write it advanced), so those rows show the page faults of exactly
 *    size bytes (rounded up to 8) per object. For prodcons the floor is
 *    the ring alone: the kernels pass a constant through it.
 *    The floor's state is thread-local (a thread's slot is what it
 *    measures) and set up outside the timing by floor_thread_init().
 *
 * The kernels write one word in each object, and the object escapes (an
 * empty asm), so no compiler can drop an alloc/free pair.
 */

/* ---- The floor ---- */

struct floor_tls {
	void *f_slot; /* the object floor_pop() hands out, floor_push() takes back */
	char *f_bump; /* the next new object (fresh, mem) */
	char *f_base; /* this thread's mapping, f_bytes long */
	size_t f_bytes;
};
static _Thread_local struct floor_tls ftls;

/* Bytes the floor gives an object of @size. */
static size_t floor_slot(size_t size)
{
	return (size + 7) & ~(size_t)7;
}

/* Alloc: one load. */
__attribute__((noinline)) static void *floor_pop(size_t size)
{
	(void)size;
	return ftls.f_slot;
}

/* Free: one store. */
__attribute__((noinline)) static void floor_push(void *p)
{
	ftls.f_slot = p;
}

/* Alloc of a new object: one load, one store. floor_thread_init() made room
 * for as many as the cell allocates; there is no check. */
__attribute__((noinline)) static void *floor_bump(size_t size)
{
	char *p = ftls.f_bump;
	ftls.f_bump = p + floor_slot(size);
	return p;
}

void floor_thread_init(size_t size, size_t live)
{
	ftls.f_bytes = live * floor_slot(size);
	ftls.f_base = ftls.f_bump = map(ftls.f_bytes);
	ftls.f_slot = ftls.f_base;
}

void floor_thread_fini(void)
{
	if (ftls.f_base == NULL)
		return;
	munmap(ftls.f_base, ftls.f_bytes);
	memset(&ftls, 0, sizeof ftls);
}

/* ---- Backends ---- */

struct backend *backend_find(struct bench *bn, const char *name)
{
	for (int i = 0; i < bn->bn_nbackends; i++)
		if (strcmp(bn->bn_backends[i].be_name, name) == 0)
			return &bn->bn_backends[i];
	return NULL;
}

int backend_load(struct backend *be, char *why, size_t len)
{
	static const char *const entry[][3] = {{"jemalloc", "malloc", "free"},
	                                       {"tcmalloc", "tc_malloc", "tc_free"},
	                                       {"mimalloc", "mi_malloc", "mi_free"}};
	struct dl_lib *d = &be->be_dl;

	if (be->be_kind != BK_DL || d->dl_loaded)
		return 0;
	void *h = dlopen(be->be_lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		snprintf(why, len, "%s", dlerror());
		return -1;
	}
	for (size_t i = 0; i < sizeof entry / sizeof entry[0]; i++) {
		if (strcmp(be->be_name, entry[i][0]) != 0)
			continue;
		*(void **)&d->dl_malloc = dlsym(h, entry[i][1]);
		*(void **)&d->dl_free = dlsym(h, entry[i][2]);
	}
	*(void **)&d->dl_mallctl = dlsym(h, "mallctl");
	*(void **)&d->dl_tc_release = dlsym(h, "MallocExtension_ReleaseFreeMemory");
	*(void **)&d->dl_mi_collect = dlsym(h, "mi_collect");
	if (d->dl_malloc == NULL || d->dl_free == NULL) {
		snprintf(why, len, "%s: entry points not found", be->be_lib);
		return -1;
	}
	/* The handle stays open: tcmalloc and mimalloc cannot be unloaded. */
	d->dl_loaded = true;
	return 0;
}

const struct uslab_pagesrc *bench_pagesrc(const char *name)
{
	char sym[64];
	const struct uslab_pagesrc *(*fn)(void);

	if (name == NULL || strcmp(name, "mmap") == 0)
		return NULL;
	snprintf(sym, sizeof sym, "uslab_pagesrc_%s", name);
	*(void **)&fn = dlsym(RTLD_DEFAULT, sym);
	if (fn == NULL) {
		fprintf(stderr, "uslab-bench: this libuslab has no %s()\n", sym);
		exit(1);
	}
	return fn();
}

void bctx_init(struct bctx *c, const struct backend *be, size_t size, bool fresh)
{
	memset(c, 0, sizeof *c);
	c->bc_kind = be->be_kind;
	c->bc_size = size;
	switch (be->be_kind) {
	case BK_FLOOR:
		c->bc_malloc = fresh ? floor_bump : floor_pop;
		c->bc_free = floor_push;
		break;
	case BK_USLAB: {
		struct uslab_cache_conf conf = {.pagesrc = bench_pagesrc(be->be_pagesrc)};
		c->bc_cache = uslab_cache_create("bench", size, &conf);
		if (c->bc_cache == NULL)
			die("uslab_cache_create");
		c->bc_cache_alloc = uslab_cache_alloc;
		c->bc_cache_free = uslab_cache_free;
		break;
	}
	case BK_LIBC:
		c->bc_malloc = malloc;
		c->bc_free = free;
		break;
	case BK_DL:
		c->bc_dl = &be->be_dl;
		c->bc_malloc = be->be_dl.dl_malloc;
		c->bc_free = be->be_dl.dl_free;
		break;
	}
}

void bctx_fini(struct bctx *c)
{
	if (c->bc_cache != NULL && uslab_cache_destroy(c->bc_cache) != 0)
		die("uslab_cache_destroy");
	c->bc_cache = NULL;
}

void bctx_reap(struct bctx *c)
{
	switch (c->bc_kind) {
	case BK_USLAB:
		uslab_cache_reap(c->bc_cache);
		break;
	case BK_LIBC:
		malloc_trim(0);
		break;
	case BK_DL:
		if (c->bc_dl->dl_mallctl != NULL) /* arena 4096: MALLCTL_ARENAS_ALL */
			c->bc_dl->dl_mallctl("arena.4096.purge", NULL, NULL, NULL, 0);
		if (c->bc_dl->dl_tc_release != NULL)
			c->bc_dl->dl_tc_release();
		if (c->bc_dl->dl_mi_collect != NULL)
			c->bc_dl->dl_mi_collect(true);
		break;
	case BK_FLOOR:
		floor_thread_fini();
		break;
	}
}

/* ---- Kernels: the measured loops ---- */

#define TOUCH(p, v)                                                                                \
	do {                                                                                       \
		*(uint64_t *)(p) = (v);                                                            \
		__asm__ volatile("" : : "r"(p) : "memory");                                        \
	} while (0)

__attribute__((noreturn, cold)) static void oom(void)
{
	fprintf(stderr, "uslab-bench: allocation failed: %s\n", strerror(errno));
	exit(3);
}

static inline void cpu_relax(unsigned *spins)
{
	if (++*spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else {
		sched_yield();
		*spins = 0;
	}
}

/* The producer pushes; the ring holds non-NULL pointers. */
#define RING_PUSH(r, head, tail, p)                                                                \
	do {                                                                                       \
		unsigned spins_ = 0;                                                               \
		while ((head) - (tail) == RING_CAP) {                                              \
			(tail) = atomic_load_explicit(&(r)->r_tail, memory_order_acquire);         \
			if ((head) - (tail) == RING_CAP)                                           \
				cpu_relax(&spins_);                                                \
		}                                                                                  \
		(r)->r_slot[(head) & (RING_CAP - 1)] = (p);                                        \
		atomic_store_explicit(&(r)->r_head, ++(head), memory_order_release);               \
	} while (0)

#define RING_POP(r, head, tail, p)                                                                 \
	do {                                                                                       \
		unsigned spins_ = 0;                                                               \
		while ((head) == (tail)) {                                                         \
			(head) = atomic_load_explicit(&(r)->r_head, memory_order_acquire);         \
			if ((head) == (tail))                                                      \
				cpu_relax(&spins_);                                                \
		}                                                                                  \
		(p) = (r)->r_slot[(tail) & (RING_CAP - 1)];                                        \
		atomic_store_explicit(&(r)->r_tail, ++(tail), memory_order_release);               \
	} while (0)

/* pair, batch, fill and drain of one allocator shape. fill_ and drain_ are
 * inlined into bk_batch_, bk_fill_ and bk_drain_: one loop, three kernels. */
#define DEFINE_LOOPS(nm, ALLOC, FREE)                                                              \
	__attribute__((always_inline)) static inline void fill_##nm(struct bctx *c, void **a,      \
	                                                            size_t n)                      \
	{                                                                                          \
		for (size_t i = 0; i < n; i++) {                                                   \
			void *p = ALLOC(c);                                                        \
			if (__builtin_expect(p == NULL, 0))                                        \
				oom();                                                             \
			TOUCH(p, i);                                                               \
			a[i] = p;                                                                  \
		}                                                                                  \
	}                                                                                          \
	__attribute__((always_inline)) static inline void drain_##nm(struct bctx *c, void **a,     \
	                                                             size_t n)                     \
	{                                                                                          \
		for (size_t i = 0; i < n; i++)                                                     \
			FREE(c, a[i]);                                                             \
	}                                                                                          \
	__attribute__((noinline)) static void bk_pair_##nm(struct bctx *c, uint64_t n)             \
	{                                                                                          \
		for (uint64_t i = 0; i < n; i++) {                                                 \
			void *p = ALLOC(c);                                                        \
			if (__builtin_expect(p == NULL, 0))                                        \
				oom();                                                             \
			TOUCH(p, i);                                                               \
			FREE(c, p);                                                                \
		}                                                                                  \
	}                                                                                          \
	__attribute__((noinline)) static void bk_batch_##nm(struct bctx *c, void **a, size_t k,    \
	                                                    uint64_t reps)                         \
	{                                                                                          \
		for (uint64_t r = 0; r < reps; r++) {                                              \
			fill_##nm(c, a, k);                                                        \
			drain_##nm(c, a, k);                                                       \
		}                                                                                  \
	}                                                                                          \
	__attribute__((noinline)) static void bk_fill_##nm(struct bctx *c, void **a, size_t n)     \
	{                                                                                          \
		fill_##nm(c, a, n);                                                                \
	}                                                                                          \
	__attribute__((noinline)) static void bk_drain_##nm(struct bctx *c, void **a, size_t n)    \
	{                                                                                          \
		drain_##nm(c, a, n);                                                               \
	}

/* The producer and the consumer of prodcons. */
#define DEFINE_RING(nm, ALLOC, FREE)                                                               \
	__attribute__((noinline)) static void bk_prod_##nm(struct bctx *c, struct ring *r,         \
	                                                   uint64_t n)                             \
	{                                                                                          \
		size_t head = 0, tail = 0;                                                         \
		for (uint64_t i = 0; i < n; i++) {                                                 \
			void *p = ALLOC(c);                                                        \
			if (__builtin_expect(p == NULL, 0))                                        \
				oom();                                                             \
			RING_PUSH(r, head, tail, p);                                               \
		}                                                                                  \
	}                                                                                          \
	__attribute__((noinline)) static void bk_cons_##nm(struct bctx *c, struct ring *r,         \
	                                                   uint64_t n)                             \
	{                                                                                          \
		size_t head = 0, tail = 0;                                                         \
		(void)c;                                                                           \
		for (uint64_t i = 0; i < n; i++) {                                                 \
			void *p;                                                                   \
			RING_POP(r, head, tail, p);                                                \
			FREE(c, p);                                                                \
		}                                                                                  \
	}

#define MALLOC_ALLOC(c) (c)->bc_malloc((c)->bc_size)
#define MALLOC_FREE(c, p) (c)->bc_free(p)
#define USLAB_ALLOC(c) (c)->bc_cache_alloc((c)->bc_cache)
#define USLAB_FREE(c, p) (c)->bc_cache_free((c)->bc_cache, (p))
#define RING_ONLY_ALLOC(c) ((void *)(c)) /* any non-NULL pointer */
#define RING_ONLY_FREE(c, p) ((void)(c), (void)(p))

DEFINE_LOOPS(malloc, MALLOC_ALLOC, MALLOC_FREE)
DEFINE_RING(malloc, MALLOC_ALLOC, MALLOC_FREE)
DEFINE_LOOPS(uslab, USLAB_ALLOC, USLAB_FREE)
DEFINE_RING(uslab, USLAB_ALLOC, USLAB_FREE)
DEFINE_RING(ring, RING_ONLY_ALLOC, RING_ONLY_FREE)

static const struct kernels kern_malloc = {bk_pair_malloc,  bk_batch_malloc, bk_fill_malloc,
                                           bk_drain_malloc, bk_prod_malloc,  bk_cons_malloc};
static const struct kernels kern_floor = {bk_pair_malloc,  bk_batch_malloc, bk_fill_malloc,
                                          bk_drain_malloc, bk_prod_ring,    bk_cons_ring};
static const struct kernels kern_uslab = {bk_pair_uslab,  bk_batch_uslab, bk_fill_uslab,
                                          bk_drain_uslab, bk_prod_uslab,  bk_cons_uslab};

const struct kernels *kernels_of(enum bkind kind)
{
	switch (kind) {
	case BK_FLOOR:
		return &kern_floor;
	case BK_USLAB:
		return &kern_uslab;
	case BK_LIBC:
	case BK_DL:
		break;
	}
	return &kern_malloc;
}
