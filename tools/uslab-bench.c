/* SPDX-License-Identifier: MIT */
/* uslab-bench: uslab against malloc implementations and a no-allocator floor. */

/*
 * 1. What it measures. Every figure is ns per operation, where an operation
 *    is one allocation and its free (a pair), except "fresh", where it is one
 *    allocation of a never-used object (page faults included; frees untimed).
 *    Workloads (--workload, comma-separated, default all):
 *      pair        alloc, write one word, free; one thread
 *      batch1k     alloc K = 1,000 objects, write one word in each, free them
 *                  in allocation order; repeat
 *      batch100k   the same with K = 100,000 (batch runs do 2 million
 *                  pairs, times 64 / size above 64 bytes)
 *      threads     pair and batch1k in T threads at once (--threads, default
 *                  2,16) on one shared cache; ns/op is wall time over all
 *                  threads' operations, so it is the inverse of aggregate
 *                  throughput
 *      prodcons    one thread allocates, another frees, through a
 *                  single-producer single-consumer ring of 256 slots
 *      fresh       10 million new objects of 24 or 64 bytes (256 MiB worth
 *                  above 64 bytes), alive at
 *                  once, in a new process (and, for uslab, a new cache)
 *      mem         resident bytes per live object: RSS (/proc/self/statm)
 *                  before and after allocating N objects (10 million for
 *                  24 and 64 bytes, 512 MiB worth above), after freeing all,
 *                  and after the backend's reap (uslab_cache_reap,
 *                  malloc_trim, jemalloc arena purge, tcmalloc
 *                  ReleaseFreeMemory, mi_collect). One run per cell: the
 *                  figures do not vary between runs.
 *    Sizes (--size): 24, 64, 256, 4096. Each cell runs a warm-up, then
 *    --runs timed runs (default 5; "fresh" uses at most 3, each in its own
 *    process) and reports the median and the minimum.
 *
 * 2. Backends (--backend): floor, uslab, uslab-locked, glibc, jemalloc,
 *    tcmalloc, mimalloc.
 *    - floor: the physical limit on this machine in this run: a per-thread
 *      array stack of objects with no synchronisation, behind the same
 *      non-inlined call an allocator has (objects come from a bump pointer
 *      over a fresh mapping the first time, so "fresh" and "mem" measure
 *      page faults and exactly size bytes per object). For prodcons the
 *      floor is the ring alone.
 *    - uslab: the library as linked, in whatever mode uslab_mode() reports
 *      ("rseq cpu_id" normally). uslab-locked is the same binary re-executed
 *      with USLAB_RSEQ=0, because the mode is chosen once per process.
 *    - glibc: the process's malloc/free.
 *    - jemalloc, tcmalloc, mimalloc: the Debian shared libraries; missing
 *      ones are skipped with a note.
 *
 * 3. How the other mallocs are loaded, and why. Every backend runs in a child
 *    process of its own (the same binary re-executed with --child), so
 *    heaps, RSS and thread caches never mix, and uslab-locked can set its
 *    environment. jemalloc, tcmalloc and mimalloc are loaded into their
 *    child with LD_PRELOAD (--load=preload, the default): each becomes the
 *    process's malloc, as in a program that links or preloads it, and the
 *    kernels call its own entry points found with dlsym on its handle:
 *    malloc/free for jemalloc (the Debian build exports only unprefixed
 *    names plus mallocx/dallocx), tc_malloc/tc_free, mi_malloc/mi_free.
 *    --load=dlopen instead dlopens the library RTLD_LOCAL into a child that
 *    keeps glibc as its malloc (same dlsym calls; dlsym on an RTLD_LOCAL
 *    handle returns that library's own symbol). We measured both on the
 *    2-CPU VM this was written on (64-byte objects, median of 5 runs, ns per
 *    pair, dlopen / preload): mimalloc pair 14.4-15.0 / 6.1, batch1k
 *    7.7 / 7.5; jemalloc pair 16.1 (39.0 in one run) / 15.5-16.0; tcmalloc
 *    8.2 / 8.2. A dlopen'd mimalloc is more than twice as slow on the pair
 *    loop, so dlopen is not an honest stand-in for "the program uses
 *    mimalloc"; preload is the default. dlopen also needs help for jemalloc,
 *    whose 2.6 KiB of initial-exec TLS does not fit glibc's 512-byte static
 *    TLS surplus ("cannot allocate memory in static TLS block"): the child
 *    gets GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384. Sanitizer
 *    builds cannot preload another malloc, so there the default is dlopen.
 * 4. Counters. Instructions and cycles per op come from perf_event_open,
 *    user space only (exclude_kernel, exclude_hv), opened per thread and
 *    summed. Where the kernel or hypervisor refuses them (this VM: "not
 *    supported") the columns say n/a. Instruction counts can instead come
 *    from callgrind, deterministically:
 *        uslab-bench --callgrind [--backend ...] [--size ...]
 *    runs pair, batch1k and batch100k once per cell with a fixed operation
 *    count under valgrind --tool=callgrind --collect-atstart=no
 *    --toggle-collect=bk_*, so only the measured loops (the bk_* functions
 *    and what they call) are counted, and reports Ir / operations. Times are
 *    meaningless under valgrind and shown as n/a. Note: valgrind does not
 *    implement rseq, so glibc registers none and uslab runs in locked mode
 *    under callgrind; its rseq fast path is 17 + 19 instructions a hit
 *    (tests/fastpath-asm.sh prints them). By hand, for one cell:
 *        valgrind --tool=callgrind --collect-atstart=no --toggle-collect='bk_*' \
 *          ./uslab-bench --child uslab --cg --workload pair --size 64
 *    and divide the "totals:" line of callgrind.out.<pid> by the "C" line's
 *    operation count.
 *
 * 5. Output: a markdown table (default) or --json, then the ratios asked for
 *    by the issue (64-byte objects, same run), then the memory table.
 *    --quick makes every run about 20 times shorter (CI smoke test).
 *    This is a measuring tool: it has no thresholds and never fails on a
 *    figure; the exit status is non-zero only when it could not run.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <malloc.h>

#include "uslab.h"

/* ---- Constants ---- */

#define MAX_RUNS 32
#define MAX_LIST 16
#define RING_CAP 256                        /* prodcons ring slots: a power of two */
#define FRESH_BYTES ((size_t)640 << 20)     /* 10 million objects of 24 and 64 bytes */
#define FRESH_BYTES_BIG ((size_t)256 << 20) /* above 64 bytes */
#define FRESH_MAX 10000000u
#define MEM_BYTES ((size_t)512 << 20)
#define MEM_SMALL 10000000u /* objects of 24 and 64 bytes: the core issue's targets */
#define QUICK_DIV 20
#define CG_OPS 200000u /* operations per callgrind cell */

/* Default operation counts per timed run (divided by QUICK_DIV with --quick). */
#define OPS_PAIR 2000000u
#define OPS_BATCH 2000000u
#define OPS_THREADS 2000000u /* all threads together */
#define OPS_PRODCONS 500000u

#define LIB_DIR "/usr/lib/x86_64-linux-gnu/"

enum bkind { BK_FLOOR, BK_USLAB, BK_LIBC, BK_DL };

struct backend_info {
	const char *name;
	enum bkind kind;
	const char *lib; /* shared object for BK_DL */
	const char *env; /* extra environment for the child, "NAME=value" */
};

static const struct backend_info backends[] = {
	{"floor", BK_FLOOR, NULL, NULL},
	{"uslab", BK_USLAB, NULL, NULL},
	{"uslab-locked", BK_USLAB, NULL, "USLAB_RSEQ=0"},
	{"glibc", BK_LIBC, NULL, NULL},
	{"jemalloc", BK_DL, LIB_DIR "libjemalloc.so.2", NULL},
	{"tcmalloc", BK_DL, LIB_DIR "libtcmalloc_minimal.so.4", NULL},
	{"mimalloc", BK_DL, LIB_DIR "libmimalloc.so.2", NULL},
};
#define NBACKENDS (sizeof backends / sizeof backends[0])

/* Workload names as reported; "threads" expands to the -tN rows. */
static const char *const workload_names[] = {"pair",     "batch1k", "batch100k", "threads",
                                             "prodcons", "fresh",   "mem"};
#define NWORKLOADS (sizeof workload_names / sizeof workload_names[0])

/* ---- Options ---- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
static const bool sanitized = true;
#else
static const bool sanitized = false;
#endif
#else
static const bool sanitized = false;
#endif

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer hook (its API, hence the reserved name): tcmalloc registers
 * a static MallocExtension with operator new and never frees it; that is
 * the library's, not ours, and would fail every tcmalloc child. */
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void);
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void)
{
	return "leak:libtcmalloc_minimal.so\n";
}
#endif

struct opts {
	const char *backends[MAX_LIST];
	int nbackends;
	const char *workloads[MAX_LIST];
	int nworkloads;
	size_t sizes[MAX_LIST];
	int nsizes;
	int threads[MAX_LIST];
	int nthreads;
	int runs;
	bool quick, json, inproc, callgrind, cg, preload;
	const char *child; /* backend name when running as a child */
	const char *self;  /* path of this executable */
};

static struct opts opt;

/* ---- Results (parent side) ---- */

struct result {
	char backend[24];
	char workload[24];
	size_t size;
	int threads;
	int nruns;
	double ns[MAX_RUNS];
	double ins, cyc; /* per op, median over runs; < 0: n/a */
	double ins_runs[MAX_RUNS], cyc_runs[MAX_RUNS];
};

struct memres {
	char backend[24];
	size_t size;
	uint64_t n;
	double rss0, rss1, rss2, rss3; /* before, live, after free, after reap */
};

static struct result *results;
static size_t nresults, cresults;
static struct memres *memres;
static size_t nmemres, cmemres;
static char notes[64][200];
static int nnotes;
static const char *uslab_mode_seen[NBACKENDS];

/* ---- Small utilities ---- */

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "uslab-bench: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (p == NULL)
		die("calloc");
	return p;
}

/* Anonymous mapping outside every backend (the tool's own arrays). */
static void *map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void note(const char *fmt, const char *a, const char *b)
{
	if (nnotes < (int)(sizeof notes / sizeof notes[0]))
		snprintf(notes[nnotes++], sizeof notes[0], fmt, a, b);
}

/* Resident bytes of this process (statm field 2, in pages). */
static double rss_bytes(void)
{
	unsigned long size, res;
	FILE *f = fopen("/proc/self/statm", "re");

	if (f == NULL)
		return -1;
	int n = fscanf(f, "%lu %lu", &size, &res);
	fclose(f);
	return n == 2 ? (double)res * (double)sysconf(_SC_PAGESIZE) : -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
	double tmp[MAX_RUNS];

	if (n <= 0)
		return -1;
	memcpy(tmp, v, (size_t)n * sizeof *v);
	qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
	return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static double minimum(const double *v, int n)
{
	double m = -1;
	for (int i = 0; i < n; i++)
		if (m < 0 || v[i] < m)
			m = v[i];
	return m;
}

/* ---- Hardware counters (perf_event_open, user space only) ---- */

struct pmu {
	int fd[2]; /* instructions, cycles; -1: unavailable */
	uint64_t val[2];
};

static void pmu_open(struct pmu *p)
{
	static const uint64_t cfg[2] = {PERF_COUNT_HW_INSTRUCTIONS, PERF_COUNT_HW_CPU_CYCLES};

	for (int i = 0; i < 2; i++) {
		struct perf_event_attr a;
		memset(&a, 0, sizeof a);
		a.size = sizeof a;
		a.type = PERF_TYPE_HARDWARE;
		a.config = cfg[i];
		a.disabled = 1;
		a.exclude_kernel = 1;
		a.exclude_hv = 1;
		p->fd[i] = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
		p->val[i] = 0;
	}
}

static void pmu_start(struct pmu *p)
{
	for (int i = 0; i < 2; i++)
		if (p->fd[i] >= 0) {
			ioctl(p->fd[i], PERF_EVENT_IOC_RESET, 0);
			ioctl(p->fd[i], PERF_EVENT_IOC_ENABLE, 0);
		}
}

static void pmu_stop(struct pmu *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->fd[i] < 0)
			continue;
		ioctl(p->fd[i], PERF_EVENT_IOC_DISABLE, 0);
		if (read(p->fd[i], &p->val[i], sizeof p->val[i]) != (ssize_t)sizeof p->val[i]) {
			close(p->fd[i]);
			p->fd[i] = -1;
		}
	}
}

static void pmu_close(struct pmu *p)
{
	for (int i = 0; i < 2; i++)
		if (p->fd[i] >= 0)
			close(p->fd[i]);
}

/* Sums of several threads' counters; -1 once any thread had none. */
struct pmu_sum {
	_Atomic int64_t v[2];
};

static void pmu_add(struct pmu_sum *s, const struct pmu *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->fd[i] < 0)
			atomic_store(&s->v[i], INT64_MIN / 2);
		else
			atomic_fetch_add(&s->v[i], (int64_t)p->val[i]);
	}
}

/* ---- Backends: context, floor, dlopen'd mallocs ---- */

/* One backend in one cell: what its kernels need. */
struct bctx {
	enum bkind kind;
	size_t size;
	struct uslab_cache *cache; /* BK_USLAB */
	size_t floor_live;         /* BK_FLOOR: objects each thread may hold */
};

/* The floor: per thread, a stack of free objects, fed by a bump pointer
 * over a private mapping. No synchronisation, no metadata. */
struct floor_tls {
	void **stk;
	size_t n;
	char *bump, *end, *base;
	size_t stk_bytes, map_bytes;
};
static _Thread_local struct floor_tls ftls;

static void floor_thread_init(size_t size, size_t live)
{
	size_t slot = (size + 7) & ~(size_t)7;
	ftls.stk_bytes = live * sizeof(void *);
	ftls.map_bytes = live * slot;
	ftls.stk = map(ftls.stk_bytes);
	ftls.base = ftls.bump = map(ftls.map_bytes);
	ftls.end = ftls.base + ftls.map_bytes;
	ftls.n = 0;
}

static void floor_thread_fini(void)
{
	if (ftls.stk == NULL)
		return;
	munmap(ftls.stk, ftls.stk_bytes);
	munmap(ftls.base, ftls.map_bytes);
	memset(&ftls, 0, sizeof ftls);
}

__attribute__((noinline)) static void *floor_alloc(size_t size)
{
	if (__builtin_expect(ftls.n != 0, 1))
		return ftls.stk[--ftls.n];
	if (ftls.bump + size > ftls.end)
		return NULL;
	void *p = ftls.bump;
	ftls.bump += (size + 7) & ~(size_t)7;
	return p;
}

__attribute__((noinline)) static void floor_free(void *p)
{
	ftls.stk[ftls.n++] = p;
}

/* The one dlopen'd malloc of this process (one backend per child). */
static void *(*dl_malloc)(size_t);
static void (*dl_free)(void *);
static int (*dl_mallctl)(const char *, void *, size_t *, void *, size_t); /* jemalloc */
static void (*dl_tc_release)(void);                                       /* tcmalloc */
static void (*dl_mi_collect)(bool);                                       /* mimalloc */

/* Load backend @b's library. Returns 0, or -1 with a reason in @why. */
static int dl_load(const struct backend_info *b, char *why, size_t len)
{
	static const char *const names[][2] = {
		{"jemalloc", "malloc"}, {"tcmalloc", "tc_malloc"}, {"mimalloc", "mi_malloc"}};
	static const char *const frees[] = {"free", "tc_free", "mi_free"};
	void *h = dlopen(b->lib, RTLD_NOW | RTLD_LOCAL);

	if (h == NULL) {
		snprintf(why, len, "%s", dlerror());
		return -1;
	}
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(b->name, names[i][0]) != 0)
			continue;
		*(void **)&dl_malloc = dlsym(h, names[i][1]);
		*(void **)&dl_free = dlsym(h, frees[i]);
	}
	*(void **)&dl_mallctl = dlsym(h, "mallctl");
	*(void **)&dl_tc_release = dlsym(h, "MallocExtension_ReleaseFreeMemory");
	*(void **)&dl_mi_collect = dlsym(h, "mi_collect");
	if (dl_malloc == NULL || dl_free == NULL) {
		snprintf(why, len, "%s: entry points not found", b->lib);
		return -1;
	}
	/* The handle stays open: tcmalloc and mimalloc cannot be unloaded. */
	return 0;
}

static void bctx_init(struct bctx *c, enum bkind kind, size_t size, size_t floor_live)
{
	memset(c, 0, sizeof *c);
	c->kind = kind;
	c->size = size;
	c->floor_live = floor_live;
	if (kind == BK_USLAB) {
		c->cache = uslab_cache_create("bench", size, NULL);
		if (c->cache == NULL)
			die("uslab_cache_create");
	}
}

static void bctx_fini(struct bctx *c)
{
	if (c->cache != NULL && uslab_cache_destroy(c->cache) != 0)
		die("uslab_cache_destroy");
	c->cache = NULL;
}

/* Give free memory back to the system, the backend's way. */
static void bctx_reap(struct bctx *c)
{
	switch (c->kind) {
	case BK_USLAB:
		uslab_cache_reap(c->cache);
		break;
	case BK_LIBC:
		malloc_trim(0);
		break;
	case BK_DL:
		if (dl_mallctl != NULL)
			dl_mallctl("arena.4096.purge", NULL, NULL, NULL,
			           0); /* MALLCTL_ARENAS_ALL */
		if (dl_tc_release != NULL)
			dl_tc_release();
		if (dl_mi_collect != NULL)
			dl_mi_collect(true);
		break;
	case BK_FLOOR:
		floor_thread_fini();
		break;
	}
}

/* ---- Kernels: the measured loops, one set per backend kind ---- */

/* The object is written (one word) and escapes, so no compiler can drop an
 * alloc/free pair. */
#define TOUCH(p, v)                                                                                \
	do {                                                                                       \
		*(uint64_t *)(p) = (v);                                                            \
		__asm__ volatile("" : : "r"(p) : "memory");                                        \
	} while (0)

static void oom(void)
{
	fprintf(stderr, "uslab-bench: allocation failed: %s\n", strerror(errno));
	exit(3);
}

struct ring {
	_Alignas(64) _Atomic size_t r_head; /* written by the producer */
	_Alignas(64) _Atomic size_t r_tail; /* written by the consumer */
	_Alignas(64) void *r_slot[RING_CAP];
};

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

struct kernels {
	void (*pair)(struct bctx *c, uint64_t n);
	void (*batch)(struct bctx *c, void **a, size_t k, uint64_t reps);
	void (*fill)(struct bctx *c, void **a, size_t n);
	void (*drain)(struct bctx *c, void **a, size_t n);
	void (*prod)(struct bctx *c, struct ring *r, uint64_t n);
	void (*cons)(struct bctx *c, struct ring *r, uint64_t n);
};

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

#define DEFINE_KERNELS(nm, ALLOC, FREE, PC_ALLOC, PC_FREE)                                         \
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
			for (size_t i = 0; i < k; i++) {                                           \
				void *p = ALLOC(c);                                                \
				if (__builtin_expect(p == NULL, 0))                                \
					oom();                                                     \
				TOUCH(p, i);                                                       \
				a[i] = p;                                                          \
			}                                                                          \
			for (size_t i = 0; i < k; i++)                                             \
				FREE(c, a[i]);                                                     \
		}                                                                                  \
	}                                                                                          \
	__attribute__((noinline)) static void bk_fill_##nm(struct bctx *c, void **a, size_t n)     \
	{                                                                                          \
		for (size_t i = 0; i < n; i++) {                                                   \
			void *p = ALLOC(c);                                                        \
			if (__builtin_expect(p == NULL, 0))                                        \
				oom();                                                             \
			TOUCH(p, i);                                                               \
			a[i] = p;                                                                  \
		}                                                                                  \
	}                                                                                          \
	__attribute__((noinline)) static void bk_drain_##nm(struct bctx *c, void **a, size_t n)    \
	{                                                                                          \
		(void)c;                                                                           \
		for (size_t i = 0; i < n; i++)                                                     \
			FREE(c, a[i]);                                                             \
	}                                                                                          \
	__attribute__((noinline)) static void bk_prod_##nm(struct bctx *c, struct ring *r,         \
	                                                   uint64_t n)                             \
	{                                                                                          \
		size_t head = 0, tail = 0;                                                         \
		for (uint64_t i = 0; i < n; i++) {                                                 \
			void *p = PC_ALLOC(c);                                                     \
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
			PC_FREE(c, p);                                                             \
		}                                                                                  \
	}                                                                                          \
	static const struct kernels kern_##nm = {bk_pair_##nm,  bk_batch_##nm, bk_fill_##nm,       \
	                                         bk_drain_##nm, bk_prod_##nm,  bk_cons_##nm};

#define USLAB_ALLOC(c) uslab_cache_alloc((c)->cache)
#define USLAB_FREE(c, p) uslab_cache_free((c)->cache, (p))
#define LIBC_ALLOC(c) malloc((c)->size)
#define LIBC_FREE(c, p) free(p)
#define DL_ALLOC(c) dl_malloc((c)->size)
#define DL_FREE(c, p) dl_free(p)
#define FLOOR_ALLOC(c) floor_alloc((c)->size)
#define FLOOR_FREE(c, p) floor_free(p)
#define RING_ONLY_ALLOC(c) ((void *)(c)) /* any non-NULL pointer */
#define RING_ONLY_FREE(c, p) ((void)(c), (void)(p))

DEFINE_KERNELS(floor, FLOOR_ALLOC, FLOOR_FREE, RING_ONLY_ALLOC, RING_ONLY_FREE)
DEFINE_KERNELS(uslab, USLAB_ALLOC, USLAB_FREE, USLAB_ALLOC, USLAB_FREE)
DEFINE_KERNELS(libc, LIBC_ALLOC, LIBC_FREE, LIBC_ALLOC, LIBC_FREE)
DEFINE_KERNELS(dl, DL_ALLOC, DL_FREE, DL_ALLOC, DL_FREE)

static const struct kernels *kernels_of(enum bkind k)
{
	switch (k) {
	case BK_FLOOR:
		return &kern_floor;
	case BK_USLAB:
		return &kern_uslab;
	case BK_LIBC:
		return &kern_libc;
	case BK_DL:
		break;
	}
	return &kern_dl;
}

/* ---- Workload runners (child side) ---- */

/* One sample: ns/op and counters/op (negative: n/a). */
struct sample {
	double ns, ins, cyc;
};

static void emit(const char *line);

static void emit_sample(const char *backend, const char *workload, size_t size, int threads,
                        const struct sample *s)
{
	char line[256];
	snprintf(line, sizeof line, "R\t%s\t%s\t%zu\t%d\t%.4f\t%.3f\t%.3f", backend, workload, size,
	         threads, s->ns, s->ins, s->cyc);
	emit(line);
}

static void sample_counters(struct sample *s, const struct pmu_sum *sum, double ops)
{
	int64_t ins = atomic_load(&sum->v[0]), cyc = atomic_load(&sum->v[1]);
	s->ins = ins < 0 ? -1 : (double)ins / ops;
	s->cyc = cyc < 0 ? -1 : (double)cyc / ops;
}

enum task { T_PAIR, T_BATCH };

struct worker {
	pthread_t tid;
	const struct kernels *k;
	struct bctx *c;
	enum task task;
	uint64_t ops; /* pairs this thread runs */
	size_t batch_k;
	pthread_barrier_t *start;
	struct pmu_sum *sum;
	double t_start, t_end; /* this thread's own clock readings */
};

/* Run one thread's share: @ops pairs of @task. Counters go to w->sum. */
static void worker_body(struct worker *w, bool timed)
{
	struct pmu pmu;
	void **a = NULL;
	size_t k = w->batch_k;

	if (w->c->kind == BK_FLOOR)
		floor_thread_init(w->c->size, w->task == T_BATCH ? k : 1);
	if (w->task == T_BATCH)
		a = map(k * sizeof *a);
	pmu_open(&pmu);
	if (w->start != NULL)
		pthread_barrier_wait(w->start);
	if (timed)
		pmu_start(&pmu);
	w->t_start = now_ns();
	if (w->task == T_PAIR)
		w->k->pair(w->c, w->ops);
	else
		w->k->batch(w->c, a, k, w->ops / k > 0 ? w->ops / k : 1);
	w->t_end = now_ns();
	if (timed)
		pmu_stop(&pmu);
	pmu_add(w->sum, &pmu);
	pmu_close(&pmu);
	if (a != NULL)
		munmap(a, k * sizeof *a);
	if (w->c->kind == BK_FLOOR)
		floor_thread_fini();
}

static void *worker_main(void *arg)
{
	worker_body(arg, true);
	return NULL;
}

/* @threads threads (0: the calling thread alone) each run ops/threads pairs. */
static struct sample run_task(struct bctx *c, enum task task, size_t k, uint64_t ops, int threads)
{
	const struct kernels *kern = kernels_of(c->kind);
	struct pmu_sum sum = {{0, 0}};
	struct sample s;
	int nt = threads > 0 ? threads : 1;
	uint64_t per = ops / (uint64_t)nt;

	if (task == T_BATCH)
		per = (per / k > 0 ? per / k : 1) * k;
	if (threads == 0) {
		struct worker w = {
			.k = kern, .c = c, .task = task, .ops = per, .batch_k = k, .sum = &sum};
		worker_body(&w, true);
		s.ns = (w.t_end - w.t_start) / (double)per;
	} else {
		struct worker *w = xcalloc((size_t)nt, sizeof *w);
		pthread_barrier_t bar;
		pthread_barrier_init(&bar, NULL, (unsigned)nt + 1);
		for (int i = 0; i < nt; i++) {
			w[i] = (struct worker){.k = kern,
			                       .c = c,
			                       .task = task,
			                       .ops = per,
			                       .batch_k = k,
			                       .start = &bar,
			                       .sum = &sum};
			if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0)
				die("pthread_create");
		}
		pthread_barrier_wait(&bar);
		/* Wall time from the first thread's start to the last one's end,
		 * read by the workers: the main thread may be descheduled right
		 * after the barrier, so its own clock reading would be late. */
		double t0 = 0, t1 = 0;
		for (int i = 0; i < nt; i++) {
			pthread_join(w[i].tid, NULL);
			if (i == 0 || w[i].t_start < t0)
				t0 = w[i].t_start;
			if (i == 0 || w[i].t_end > t1)
				t1 = w[i].t_end;
		}
		s.ns = (t1 - t0) / ((double)per * nt);
		pthread_barrier_destroy(&bar);
		free(w);
	}
	sample_counters(&s, &sum, (double)per * nt);
	return s;
}

/* Single-threaded single-cell runs (T_PAIR or T_BATCH): the calling thread,
 * counters opened once. Setup (floor stack, array) happens outside timing. */
static struct sample run_single(struct bctx *c, enum task task, size_t k, uint64_t ops)
{
	const struct kernels *kern = kernels_of(c->kind);
	struct pmu pmu;
	struct sample s;
	void **a = task == T_BATCH ? map(k * sizeof *a) : NULL;
	uint64_t reps = task == T_BATCH ? (ops / k > 0 ? ops / k : 1) : 0;
	double nops = task == T_BATCH ? (double)(reps * k) : (double)ops;

	pmu_open(&pmu);
	pmu_start(&pmu);
	double t0 = now_ns();
	if (task == T_PAIR)
		kern->pair(c, ops);
	else
		kern->batch(c, a, k, reps);
	s.ns = (now_ns() - t0) / nops;
	pmu_stop(&pmu);
	s.ins = pmu.fd[0] >= 0 ? (double)pmu.val[0] / nops : -1;
	s.cyc = pmu.fd[1] >= 0 ? (double)pmu.val[1] / nops : -1;
	pmu_close(&pmu);
	if (a != NULL)
		munmap(a, k * sizeof *a);
	return s;
}

struct pc_arg {
	const struct kernels *k;
	struct bctx *c;
	struct ring *r;
	uint64_t n;
	bool producer;
	pthread_barrier_t *start;
	struct pmu_sum *sum;
	double t_start, t_end;
};

static void *pc_main(void *arg)
{
	struct pc_arg *a = arg;
	struct pmu pmu;

	pmu_open(&pmu);
	pthread_barrier_wait(a->start);
	pmu_start(&pmu);
	a->t_start = now_ns();
	if (a->producer)
		a->k->prod(a->c, a->r, a->n);
	else
		a->k->cons(a->c, a->r, a->n);
	a->t_end = now_ns();
	pmu_stop(&pmu);
	pmu_add(a->sum, &pmu);
	pmu_close(&pmu);
	return NULL;
}

static struct sample run_prodcons(struct bctx *c, uint64_t n)
{
	struct ring *r = map(sizeof *r);
	struct pmu_sum sum = {{0, 0}};
	pthread_barrier_t bar;
	struct pc_arg a[2];
	pthread_t tid[2];
	struct sample s;

	pthread_barrier_init(&bar, NULL, 3);
	for (int i = 0; i < 2; i++) {
		a[i] = (struct pc_arg){kernels_of(c->kind), c, r, n, i == 0, &bar, &sum, 0, 0};
		if (pthread_create(&tid[i], NULL, pc_main, &a[i]) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&bar);
	for (int i = 0; i < 2; i++)
		pthread_join(tid[i], NULL);
	double t0 = a[0].t_start < a[1].t_start ? a[0].t_start : a[1].t_start;
	double t1 = a[0].t_end > a[1].t_end ? a[0].t_end : a[1].t_end;
	s.ns = (t1 - t0) / (double)n;
	pthread_barrier_destroy(&bar);
	munmap(r, sizeof *r);
	sample_counters(&s, &sum, (double)n);
	return s;
}

/* ---- Child: run the requested cells for one backend ---- */

static uint64_t scaled(uint64_t n)
{
	if (opt.cg)
		return CG_OPS;
	return opt.quick ? n / QUICK_DIV : n;
}

/* Batch workloads touch every object, so their operation counts shrink
 * with the size above 64 bytes (same bytes touched per run): at 4096 bytes
 * some mallocs give memory back on every cycle and fault it in again
 * (microseconds per op), which would otherwise dominate the runtime. */
static uint64_t scaled_batch(uint64_t n, size_t size, size_t k)
{
	uint64_t v = scaled(n);
	if (!opt.cg && size > 64)
		v = v * 64 / size;
	return v < k ? k : v;
}

static size_t fresh_count(size_t size)
{
	size_t n = (size <= 64 ? FRESH_BYTES : FRESH_BYTES_BIG) / size;
	if (n > FRESH_MAX)
		n = FRESH_MAX;
	return opt.quick ? n / 50 : n;
}

static size_t mem_count(size_t size)
{
	size_t n = size <= 64 ? MEM_SMALL : MEM_BYTES / size;
	return opt.quick ? n / 50 : n;
}

/* Warm-up plus timed runs of one single-threaded or threaded cell. */
static void cell_task(const struct backend_info *b, const char *label, size_t size, enum task task,
                      size_t k, uint64_t ops, int threads)
{
	struct bctx c;
	size_t live = task == T_BATCH ? k : 1;

	bctx_init(&c, b->kind, size, live);
	if (threads == 0 && c.kind == BK_FLOOR)
		floor_thread_init(size, live);
	if (opt.cg) {
		/* callgrind: one fixed-count run, no warm-up; count what bk_* ran */
		struct sample s = run_single(&c, task, k, ops);
		char line[160];
		uint64_t done = task == T_BATCH ? (ops / k > 0 ? ops / k : 1) * k : ops;
		snprintf(line, sizeof line, "C\t%s\t%s\t%zu\t%d\t%" PRIu64, b->name, label, size,
		         threads, done);
		emit(line);
		(void)s;
	} else {
		if (threads == 0)
			run_single(&c, task, k, ops / 10 > k ? ops / 10 : k);
		else
			run_task(&c, task, k, ops / 10 > k ? ops / 10 : k, threads);
		for (int r = 0; r < opt.runs; r++) {
			struct sample s = threads == 0 ? run_single(&c, task, k, ops)
			                               : run_task(&c, task, k, ops, threads);
			emit_sample(b->name, label, size, threads, &s);
		}
	}
	if (threads == 0 && c.kind == BK_FLOOR)
		floor_thread_fini();
	bctx_fini(&c);
}

static void cell_prodcons(const struct backend_info *b, size_t size)
{
	struct bctx c;
	uint64_t n = scaled(OPS_PRODCONS);

	bctx_init(&c, b->kind, size, 0);
	run_prodcons(&c, n / 10);
	for (int r = 0; r < opt.runs; r++) {
		struct sample s = run_prodcons(&c, n);
		emit_sample(b->name, "prodcons", size, 2, &s);
	}
	bctx_fini(&c);
}

static void cell_fresh(const struct backend_info *b, size_t size)
{
	size_t n = fresh_count(size);
	void **a = map(n * sizeof *a);
	struct bctx c;
	struct pmu pmu;
	struct sample s;

	memset(a, 0, n * sizeof *a); /* the array's own faults stay out of the timing */
	bctx_init(&c, b->kind, size, n);
	if (c.kind == BK_FLOOR)
		floor_thread_init(size, n);
	pmu_open(&pmu);
	pmu_start(&pmu);
	double t0 = now_ns();
	kernels_of(c.kind)->fill(&c, a, n);
	s.ns = (now_ns() - t0) / (double)n;
	pmu_stop(&pmu);
	s.ins = pmu.fd[0] >= 0 ? (double)pmu.val[0] / (double)n : -1;
	s.cyc = pmu.fd[1] >= 0 ? (double)pmu.val[1] / (double)n : -1;
	pmu_close(&pmu);
	kernels_of(c.kind)->drain(&c, a, n);
	emit_sample(b->name, "fresh", size, 1, &s);
	if (c.kind == BK_FLOOR)
		floor_thread_fini();
	bctx_fini(&c);
	munmap(a, n * sizeof *a);
}

static void cell_mem(const struct backend_info *b, size_t size)
{
	size_t n = mem_count(size);
	void **a = map(n * sizeof *a);
	struct bctx c;
	char line[256];

	memset(a, 0, n * sizeof *a); /* resident in "before" and every later figure */
	bctx_init(&c, b->kind, size, n);
	if (c.kind == BK_FLOOR)
		floor_thread_init(size, n);
	double r0 = rss_bytes();
	kernels_of(c.kind)->fill(&c, a, n);
	double r1 = rss_bytes();
	kernels_of(c.kind)->drain(&c, a, n);
	double r2 = rss_bytes();
	bctx_reap(&c);
	double r3 = rss_bytes();
	snprintf(line, sizeof line, "M\t%s\t%zu\t%zu\t%.0f\t%.0f\t%.0f\t%.0f", b->name, size, n, r0,
	         r1, r2, r3);
	emit(line);
	bctx_fini(&c);
	munmap(a, n * sizeof *a);
}

static bool want(const char *const *list, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

static const struct backend_info *backend_by_name(const char *name)
{
	for (size_t i = 0; i < NBACKENDS; i++)
		if (strcmp(backends[i].name, name) == 0)
			return &backends[i];
	return NULL;
}

/* Run every requested workload and size for backend @b in this process. */
static int child_run(const struct backend_info *b)
{
	char why[256], line[320];

	if (b->kind == BK_DL && dl_load(b, why, sizeof why) != 0) {
		snprintf(line, sizeof line, "S\t%s\t%s", b->name, why);
		emit(line);
		return 0;
	}
	if (b->kind == BK_USLAB) {
		snprintf(line, sizeof line, "U\t%s\t%s", b->name, uslab_mode());
		emit(line);
	}
	for (int si = 0; si < opt.nsizes; si++) {
		size_t size = opt.sizes[si];
		for (int wi = 0; wi < opt.nworkloads; wi++) {
			const char *w = opt.workloads[wi];
			if (strcmp(w, "pair") == 0)
				cell_task(b, "pair", size, T_PAIR, 1, scaled(OPS_PAIR), 0);
			else if (strcmp(w, "batch1k") == 0)
				cell_task(b, "batch1k", size, T_BATCH, 1000,
				          scaled_batch(OPS_BATCH, size, 1000), 0);
			else if (strcmp(w, "batch100k") == 0)
				cell_task(b, "batch100k", size, T_BATCH, opt.cg ? 20000 : 100000,
				          scaled_batch(OPS_BATCH, size, opt.cg ? 20000 : 100000),
				          0);
			else if (strcmp(w, "threads") == 0)
				for (int ti = 0; ti < opt.nthreads; ti++) {
					int t = opt.threads[ti];
					char l1[24], l2[24];
					snprintf(l1, sizeof l1, "pair-t%d", t);
					snprintf(l2, sizeof l2, "batch1k-t%d", t);
					cell_task(b, l1, size, T_PAIR, 1, scaled(OPS_THREADS), t);
					cell_task(b, l2, size, T_BATCH, 1000,
					          scaled_batch(OPS_THREADS, size, 1000 * (size_t)t),
					          t);
				}
			else if (strcmp(w, "prodcons") == 0)
				cell_prodcons(b, size);
			else if (strcmp(w, "fresh") == 0)
				cell_fresh(b, size);
			else if (strcmp(w, "mem") == 0)
				cell_mem(b, size);
		}
	}
	return 0;
}

/* ---- Parent: collecting records ---- */

static bool emit_to_stdout;
static uint64_t cg_ops; /* from the last "C" record */

static struct result *result_get(const char *backend, const char *workload, size_t size,
                                 int threads, bool create)
{
	for (size_t i = 0; i < nresults; i++) {
		struct result *r = &results[i];
		if (strcmp(r->backend, backend) == 0 && strcmp(r->workload, workload) == 0 &&
		    r->size == size)
			return r;
	}
	if (!create)
		return NULL;
	if (nresults == cresults) {
		cresults = cresults ? 2 * cresults : 64;
		results = realloc(results, cresults * sizeof *results);
		if (results == NULL)
			die("realloc");
	}
	struct result *r = &results[nresults++];
	memset(r, 0, sizeof *r);
	snprintf(r->backend, sizeof r->backend, "%s", backend);
	snprintf(r->workload, sizeof r->workload, "%s", workload);
	r->size = size;
	r->threads = threads;
	r->ins = r->cyc = -1;
	return r;
}

static void result_finish(struct result *r)
{
	bool ins = r->nruns > 0, cyc = r->nruns > 0;

	for (int i = 0; i < r->nruns; i++) {
		ins = ins && r->ins_runs[i] >= 0;
		cyc = cyc && r->cyc_runs[i] >= 0;
	}
	if (ins)
		r->ins = median(r->ins_runs, r->nruns);
	if (cyc)
		r->cyc = median(r->cyc_runs, r->nruns);
}

/* Parse one tab-separated record (see emit_sample, cell_mem, child_run). */
static void parse_line(char *line)
{
	char *f[12];
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	for (char *save = NULL, *t = strtok_r(line, "\t", &save); t != NULL && n < 12;
	     t = strtok_r(NULL, "\t", &save))
		f[n++] = t;
	if (n == 8 && strcmp(f[0], "R") == 0) {
		struct result *r =
			result_get(f[1], f[2], strtoul(f[3], NULL, 10), atoi(f[4]), true);
		if (r->nruns < MAX_RUNS) {
			r->ns[r->nruns] = strtod(f[5], NULL);
			r->ins_runs[r->nruns] = strtod(f[6], NULL);
			r->cyc_runs[r->nruns] = strtod(f[7], NULL);
			r->nruns++;
		}
	} else if (n == 8 && strcmp(f[0], "M") == 0) {
		if (nmemres == cmemres) {
			cmemres = cmemres ? 2 * cmemres : 16;
			memres = realloc(memres, cmemres * sizeof *memres);
			if (memres == NULL)
				die("realloc");
		}
		struct memres *m = &memres[nmemres++];
		snprintf(m->backend, sizeof m->backend, "%s", f[1]);
		m->size = strtoul(f[2], NULL, 10);
		m->n = strtoull(f[3], NULL, 10);
		m->rss0 = strtod(f[4], NULL);
		m->rss1 = strtod(f[5], NULL);
		m->rss2 = strtod(f[6], NULL);
		m->rss3 = strtod(f[7], NULL);
	} else if (n == 3 && strcmp(f[0], "S") == 0) {
		note("%s skipped: %s", f[1], f[2]);
	} else if (n == 3 && strcmp(f[0], "U") == 0) {
		for (size_t i = 0; i < NBACKENDS; i++)
			if (strcmp(backends[i].name, f[1]) == 0 && uslab_mode_seen[i] == NULL) {
				uslab_mode_seen[i] = strdup(f[2]);
				note("%s ran in mode \"%s\"", f[1], f[2]);
			}
	} else if (n == 6 && strcmp(f[0], "C") == 0) {
		cg_ops = strtoull(f[5], NULL, 10);
	}
}

static void emit(const char *line)
{
	if (emit_to_stdout) {
		printf("%s\n", line);
		return;
	}
	char buf[512];
	snprintf(buf, sizeof buf, "%s", line);
	parse_line(buf);
}

/* ---- Parent: children ---- */

static void push_arg(char **argv, int *argc, const char *a)
{
	argv[(*argc)++] = (char *)a;
}

/* A library with initial-exec TLS (jemalloc: 2.6 KiB) can only be dlopen'd
 * when the loader's static TLS surplus holds it; glibc keeps 512 bytes unless
 * told otherwise. Called in the child before exec. */
static void tls_tunable(void)
{
	const char *old = getenv("GLIBC_TUNABLES");
	char buf[1024];

	snprintf(buf, sizeof buf, "%.900s%sglibc.rtld.optional_static_tls=16384",
	         old != NULL ? old : "", old != NULL && *old ? ":" : "");
	setenv("GLIBC_TUNABLES", buf, 1);
}

/* Run this program as a child for backend @b with the workloads and sizes
 * given; parse its records. @prefix (NULL-terminated) runs it under a tool. */
static void spawn(const struct backend_info *b, const char *workloads, const char *sizes, int runs,
                  const char *const *prefix)
{
	char *argv[48], runs_s[16], threads_s[96] = "";
	int argc = 0, fd[2];

	for (; prefix != NULL && *prefix != NULL; prefix++)
		push_arg(argv, &argc, *prefix);
	snprintf(runs_s, sizeof runs_s, "%d", runs);
	for (int i = 0; i < opt.nthreads; i++)
		snprintf(threads_s + strlen(threads_s), sizeof threads_s - strlen(threads_s),
		         "%s%d", i ? "," : "", opt.threads[i]);
	push_arg(argv, &argc, opt.self);
	push_arg(argv, &argc, "--child");
	push_arg(argv, &argc, b->name);
	push_arg(argv, &argc, "--workload");
	push_arg(argv, &argc, workloads);
	push_arg(argv, &argc, "--size");
	push_arg(argv, &argc, sizes);
	push_arg(argv, &argc, "--runs");
	push_arg(argv, &argc, runs_s);
	push_arg(argv, &argc, "--threads");
	push_arg(argv, &argc, threads_s);
	if (opt.quick)
		push_arg(argv, &argc, "--quick");
	if (opt.callgrind)
		push_arg(argv, &argc, "--cg");
	argv[argc] = NULL;

	fflush(NULL);
	if (pipe(fd) != 0)
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		dup2(fd[1], STDOUT_FILENO);
		close(fd[0]);
		close(fd[1]);
		/* A child that hangs (a library bug) must not hang the report: the
		 * alarm survives exec and SIGALRM kills it; the parent notes it. */
		alarm(opt.callgrind ? 3600 : opt.quick ? 60 : 600);
		if (b->env != NULL)
			putenv((char *)b->env);
		if (opt.preload && b->kind == BK_DL)
			setenv("LD_PRELOAD", b->lib, 1);
		if (!opt.preload && b->kind == BK_DL)
			tls_tunable();
		execvp(argv[0], argv);
		fprintf(stderr, "uslab-bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fd[1]);
	FILE *in = fdopen(fd[0], "r");
	if (in == NULL)
		die("fdopen");
	char line[512];
	while (fgets(line, sizeof line, in) != NULL)
		parse_line(line);
	fclose(in);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char what[128];
		snprintf(what, sizeof what, "%.24s %.60s size %.30s", b->name, workloads, sizes);
		note("child for %s failed (status %s)", what,
		     WIFEXITED(st) ? (WEXITSTATUS(st) == 127 ? "127: exec failed" : "nonzero exit")
		                   : "killed by a signal");
	}
}

/* Read the "totals:" (or "summary:") event count of a callgrind output file. */
static double cg_totals(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[512];
	double v = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "totals:", 7) == 0 ||
		    (v < 0 && strncmp(line, "summary:", 8) == 0))
			v = strtod(strchr(line, ':') + 1, NULL);
	fclose(f);
	return v;
}

static void run_callgrind(const struct backend_info *b)
{
	static const char *const wl[] = {"pair", "batch1k", "batch100k"};
	char outarg[600], path[512], size_s[24];

	for (int si = 0; si < opt.nsizes; si++) {
		snprintf(size_s, sizeof size_s, "%zu", opt.sizes[si]);
		for (size_t wi = 0; wi < 3; wi++) {
			if (!want(opt.workloads, opt.nworkloads, wl[wi]))
				continue;
			const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
			snprintf(path, sizeof path, "%s/uslab-bench-cg.%d", tmp, (int)getpid());
			snprintf(outarg, sizeof outarg, "--callgrind-out-file=%s", path);
			const char *prefix[] = {"valgrind",
			                        "--tool=callgrind",
			                        "--collect-atstart=no",
			                        "--toggle-collect=bk_*",
			                        outarg,
			                        "-q",
			                        NULL};
			cg_ops = 0;
			spawn(b, wl[wi], size_s, 1, prefix);
			double ir = cg_totals(path);
			unlink(path);
			if (ir < 0 || cg_ops == 0)
				continue;
			struct result *r = result_get(b->name, wl[wi], opt.sizes[si], 0, true);
			r->ins = ir / (double)cg_ops;
		}
	}
}

/* All cells of one backend: a child for the steady-state workloads, one
 * per run and size for "fresh", one per size for "mem". */
static void run_backend(const struct backend_info *b)
{
	static const char *const steady[] = {"pair", "batch1k", "batch100k", "threads", "prodcons"};
	char wl[128] = "", size_s[24], all_sizes[128] = "";
	bool any = false;

	if (opt.inproc) {
		if (b->env != NULL && strncmp(uslab_mode(), "locked", 6) != 0) {
			note("%s skipped: %s", b->name,
			     "needs its own process (not with --inproc)");
			return;
		}
		child_run(b);
		return;
	}
	if (opt.callgrind) {
		run_callgrind(b);
		return;
	}
	for (int i = 0; i < opt.nsizes; i++)
		snprintf(all_sizes + strlen(all_sizes), sizeof all_sizes - strlen(all_sizes),
		         "%s%zu", i ? "," : "", opt.sizes[i]);
	for (size_t i = 0; i < sizeof steady / sizeof steady[0]; i++)
		if (want(opt.workloads, opt.nworkloads, steady[i])) {
			snprintf(wl + strlen(wl), sizeof wl - strlen(wl), "%s%s", any ? "," : "",
			         steady[i]);
			any = true;
		}
	if (any)
		spawn(b, wl, all_sizes, opt.runs, NULL);
	for (int si = 0; si < opt.nsizes; si++) {
		snprintf(size_s, sizeof size_s, "%zu", opt.sizes[si]);
		if (want(opt.workloads, opt.nworkloads, "fresh"))
			for (int r = 0; r < (opt.runs < 3 ? opt.runs : 3); r++)
				spawn(b, "fresh", size_s, 1, NULL);
		if (want(opt.workloads, opt.nworkloads, "mem"))
			spawn(b, "mem", size_s, 1, NULL);
	}
}

/* ---- Parent: reports ---- */

static int workload_rank(const char *w)
{
	static const char *const order[] = {"pair", "batch1k", "batch100k"};
	const char *t = strstr(w, "-t");

	for (int i = 0; i < 3; i++)
		if (strcmp(w, order[i]) == 0)
			return i;
	if (t != NULL)
		return 10 + 2 * atoi(t + 2) + (strncmp(w, "batch", 5) == 0);
	if (strcmp(w, "prodcons") == 0)
		return 100000;
	return 100001; /* fresh */
}

static int backend_rank(const char *b)
{
	for (size_t i = 0; i < NBACKENDS; i++)
		if (strcmp(backends[i].name, b) == 0)
			return (int)i;
	return (int)NBACKENDS;
}

static int cmp_result(const void *pa, const void *pb)
{
	const struct result *a = pa, *b = pb;
	int d = workload_rank(a->workload) - workload_rank(b->workload);

	if (d == 0)
		d = (a->size > b->size) - (a->size < b->size);
	if (d == 0)
		d = backend_rank(a->backend) - backend_rank(b->backend);
	return d;
}

static double med_ns(const char *backend, const char *workload, size_t size)
{
	struct result *r = result_get(backend, workload, size, 0, false);
	return r != NULL && r->nruns > 0 ? median(r->ns, r->nruns) : -1;
}

struct ratio {
	char name[96];
	double value;
	char detail[128];
};

static struct ratio ratios[16];
static int nratios;

/* Ratio @a / @b of two ns figures (time ratio) or @b / @a (throughput). */
static void ratio_add(const char *name, double a, double b, bool throughput, const char *unit_a,
                      const char *unit_b)
{
	struct ratio *r = &ratios[nratios];

	if (nratios >= (int)(sizeof ratios / sizeof ratios[0]))
		return;
	nratios++;
	snprintf(r->name, sizeof r->name, "%s", name);
	if (a <= 0 || b <= 0) {
		r->value = -1;
		snprintf(r->detail, sizeof r->detail, "n/a (missing figure)");
		return;
	}
	r->value = throughput ? b / a : a / b;
	snprintf(r->detail, sizeof r->detail, "%s %.2f ns/op, %s %.2f ns/op", unit_a, a, unit_b, b);
}

static void compute_ratios(void)
{
	static const char *const peers[] = {"glibc", "jemalloc", "tcmalloc", "mimalloc"};
	char name[96], peer_pair[24] = "", peer_b100k[24] = "";
	double best_pair = -1, best_b100k = -1;
	const size_t S = 64;

	for (size_t i = 0; i < 4; i++) {
		double p = med_ns(peers[i], "pair", S), q = med_ns(peers[i], "batch100k", S);
		if (p > 0 && (best_pair < 0 || p < best_pair)) {
			best_pair = p;
			snprintf(peer_pair, sizeof peer_pair, "%s", peers[i]);
		}
		if (q > 0 && (best_b100k < 0 || q < best_b100k)) {
			best_b100k = q;
			snprintf(peer_b100k, sizeof peer_b100k, "%s", peers[i]);
		}
	}
	double up = med_ns("uslab", "pair", S);
	ratio_add("pair: uslab / floor (time)", up, med_ns("floor", "pair", S), false, "uslab",
	          "floor");
	snprintf(name, sizeof name, "pair: uslab / best peer [%s] (time)",
	         peer_pair[0] ? peer_pair : "none");
	ratio_add(name, up, best_pair, false, "uslab", peer_pair);
	snprintf(name, sizeof name, "batch100k: uslab / best peer [%s] (time)",
	         peer_b100k[0] ? peer_b100k : "none");
	ratio_add(name, med_ns("uslab", "batch100k", S), best_b100k, false, "uslab", peer_b100k);
	for (int k = 0; k < 2; k++) {
		const char *w = k ? "batch1k" : "pair";
		char t1[32], t2[32], t16[32];
		snprintf(t1, sizeof t1, "%s", w);
		snprintf(t2, sizeof t2, "%s-t2", w);
		snprintf(t16, sizeof t16, "%s-t16", w);
		snprintf(name, sizeof name, "%s: uslab 2-thread / 1-thread throughput", w);
		ratio_add(name, med_ns("uslab", t2, S), med_ns("uslab", t1, S), true, "2 threads",
		          "1 thread");
		snprintf(name, sizeof name, "%s: uslab 16-thread / 2-thread throughput", w);
		ratio_add(name, med_ns("uslab", t16, S), med_ns("uslab", t2, S), true, "16 threads",
		          "2 threads");
	}
	ratio_add("prodcons: uslab / floor (ring alone) (time)", med_ns("uslab", "prodcons", S),
	          med_ns("floor", "prodcons", S), false, "uslab", "ring");
	ratio_add("pair: uslab-locked / glibc (time)", med_ns("uslab-locked", "pair", S),
	          med_ns("glibc", "pair", S), false, "uslab-locked", "glibc");
}

static void fmt_num(char *buf, size_t len, double v, const char *f)
{
	if (v < 0)
		snprintf(buf, len, "n/a");
	else
		snprintf(buf, len, f, v);
}

static void machine(char *buf, size_t len)
{
	char model[160] = "unknown CPU", line[256];
	static const int model_max = 150;
	struct utsname u;
	FILE *f = fopen("/proc/cpuinfo", "re");

	while (f != NULL && fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "model name", 10) == 0) {
			char *p = strchr(line, ':');
			snprintf(model, sizeof model, "%.*s", model_max, p ? p + 2 : line);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	if (f != NULL)
		fclose(f);
	uname(&u);
	snprintf(buf, len, "%s, %ld CPUs online, Linux %s", model, sysconf(_SC_NPROCESSORS_ONLN),
	         u.release);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void json_num(double v, const char *f)
{
	if (v < 0)
		printf("null");
	else
		printf(f, v);
}

static void mem_figures(const struct memres *m, double *delta, double *per, double *ovh,
                        double *freed, double *kept)
{
	*delta = m->rss1 - m->rss0;
	*per = *delta / (double)m->n;
	*ovh = 100.0 * (*per / (double)m->size - 1.0);
	*freed = m->rss2 - m->rss0;
	*kept = m->rss3 - m->rss0;
}

static void report_json(const char *mach)
{
	printf("{\n  \"tool\": \"uslab-bench\",\n  \"machine\": ");
	json_str(mach);
	printf(",\n  \"load\": \"%s\",\n  \"runs\": %d,\n  \"quick\": %s,\n  \"callgrind\": %s,\n",
	       opt.preload ? "preload" : "dlopen", opt.runs, opt.quick ? "true" : "false",
	       opt.callgrind ? "true" : "false");
	printf("  \"unit\": \"ns per alloc+free pair (fresh: per alloc); threads: wall time / all "
	       "threads' pairs\",\n  \"results\": [");
	for (size_t i = 0; i < nresults; i++) {
		const struct result *r = &results[i];
		printf("%s\n    {\"workload\": ", i ? "," : "");
		json_str(r->workload);
		printf(", \"size\": %zu, \"backend\": ", r->size);
		json_str(r->backend);
		printf(", \"threads\": %d, \"runs\": %d, \"median_ns\": ", r->threads, r->nruns);
		json_num(r->nruns ? median(r->ns, r->nruns) : -1, "%.3f");
		printf(", \"min_ns\": ");
		json_num(r->nruns ? minimum(r->ns, r->nruns) : -1, "%.3f");
		printf(", \"samples_ns\": [");
		for (int j = 0; j < r->nruns; j++)
			printf("%s%.3f", j ? ", " : "", r->ns[j]);
		printf("], \"instructions_per_op\": ");
		json_num(r->ins, "%.2f");
		printf(", \"cycles_per_op\": ");
		json_num(r->cyc, "%.2f");
		printf("}");
	}
	printf("\n  ],\n  \"ratios\": [");
	for (int i = 0; i < nratios; i++) {
		printf("%s\n    {\"name\": ", i ? "," : "");
		json_str(ratios[i].name);
		printf(", \"value\": ");
		json_num(ratios[i].value, "%.3f");
		printf(", \"detail\": ");
		json_str(ratios[i].detail);
		printf("}");
	}
	printf("\n  ],\n  \"memory\": [");
	for (size_t i = 0; i < nmemres; i++) {
		const struct memres *m = &memres[i];
		double delta, per, ovh, freed, kept;
		mem_figures(m, &delta, &per, &ovh, &freed, &kept);
		printf("%s\n    {\"backend\": ", i ? "," : "");
		json_str(m->backend);
		printf(", \"size\": %zu, \"objects\": %" PRIu64 ", \"rss_before\": %.0f, "
		       "\"rss_live\": %.0f, \"rss_after_free\": %.0f, \"rss_after_reap\": %.0f, "
		       "\"bytes_per_object\": %.3f, \"overhead_pct\": %.3f, "
		       "\"after_reap_vs_before_pct\": %.3f}",
		       m->size, m->n, m->rss0, m->rss1, m->rss2, m->rss3, per, ovh,
		       100.0 * kept / m->rss0);
	}
	printf("\n  ],\n  \"notes\": [");
	for (int i = 0; i < nnotes; i++) {
		printf("%s\n    ", i ? "," : "");
		json_str(notes[i]);
	}
	printf("\n  ]\n}\n");
}

static void report_markdown(const char *mach)
{
	char a[32], b[32], c[32], d[32], e[32];

	printf("# uslab-bench\n\n%s; backends loaded by %s; %d run(s) per cell%s%s.\n\n", mach,
	       opt.preload ? "LD_PRELOAD" : "dlopen", opt.runs, opt.quick ? ", --quick" : "",
	       opt.callgrind ? ", instructions from callgrind" : "");
	printf("ns/op: one alloc + free (fresh: one alloc of a new object, page faults "
	       "included); -tN rows: wall time over all N threads' operations (1e3 / Mops/s).\n\n");
	if (nresults > 0) {
		printf("| workload | size | backend | median ns/op | min ns/op | Mops/s | ins/op | "
		       "cyc/op |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
		for (size_t i = 0; i < nresults; i++) {
			const struct result *r = &results[i];
			double med = r->nruns ? median(r->ns, r->nruns) : -1;
			fmt_num(a, sizeof a, med, "%.2f");
			fmt_num(b, sizeof b, r->nruns ? minimum(r->ns, r->nruns) : -1, "%.2f");
			fmt_num(c, sizeof c, med > 0 ? 1e3 / med : -1, "%.1f");
			fmt_num(d, sizeof d, r->ins, "%.1f");
			fmt_num(e, sizeof e, r->cyc, "%.1f");
			printf("| %s | %zu | %s | %s | %s | %s | %s | %s |\n", r->workload, r->size,
			       r->backend, a, b, c, d, e);
		}
	}
	if (nratios > 0) {
		printf("\n## Ratios (64-byte objects, medians of this run)\n\n| ratio | value | "
		       "from |\n|---|---:|---|\n");
		for (int i = 0; i < nratios; i++) {
			fmt_num(a, sizeof a, ratios[i].value, "%.2f");
			printf("| %s | %s | %s |\n", ratios[i].name, a, ratios[i].detail);
		}
	}
	if (nmemres > 0) {
		printf("\n## Memory (RSS from /proc/self/statm; delta over N live objects, each "
		       "written)\n\n| backend | size | objects | RSS delta MB | bytes/object | "
		       "overhead %% | after free MB | after reap MB | after reap vs before |\n"
		       "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
		for (size_t i = 0; i < nmemres; i++) {
			const struct memres *m = &memres[i];
			double delta, per, ovh, freed, kept;
			mem_figures(m, &delta, &per, &ovh, &freed, &kept);
			printf("| %s | %zu | %" PRIu64 " | %.1f | %.2f | %+.2f%% | %+.1f | %+.1f | "
			       "%.1f / %.1f MB (%+.2f%%) |\n",
			       m->backend, m->size, m->n, delta / 1048576, per, ovh,
			       freed / 1048576, kept / 1048576, m->rss3 / 1048576,
			       m->rss0 / 1048576, 100.0 * kept / m->rss0);
		}
		printf("\n\"after free\" and \"after reap\" are RSS above \"before\"; \"before\" "
		       "includes the tool's pointer array (8 bytes per object).\n");
	}
	if (nnotes > 0) {
		printf("\nNotes:\n");
		for (int i = 0; i < nnotes; i++)
			printf("- %s\n", notes[i]);
	}
}

/* ---- Options ---- */

static int split(char *s, const char **out, int max)
{
	int n = 0;
	for (char *save = NULL, *t = strtok_r(s, ",", &save); t != NULL && n < max;
	     t = strtok_r(NULL, ",", &save))
		out[n++] = t;
	return n;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: uslab-bench [options]\n"
	        "  --workload LIST  pair,batch1k,batch100k,threads,prodcons,fresh,mem (default all;\n"
	        "                   \"batch\" = batch1k,batch100k)\n"
	        "  --size LIST      object sizes (default 24,64,256,4096)\n"
	        "  --backend LIST   floor,uslab,uslab-locked,glibc,jemalloc,tcmalloc,mimalloc\n"
	        "  --runs N         timed runs per cell (default 5; --quick: 3)\n"
	        "  --threads LIST   thread counts for \"threads\" (default 2,16)\n"
	        "  --quick          about 20x shorter runs (CI smoke test)\n"
	        "  --json           JSON instead of markdown\n"
	        "  --load MODE      preload (default: LD_PRELOAD per backend) or dlopen\n"
	        "  --inproc         run every backend in this process (no re-exec)\n"
	        "  --callgrind      instructions per op from valgrind --tool=callgrind\n"
	        "                   (pair, batch1k, batch100k; no times)\n");
}

static void parse_opts(int argc, char **argv)
{
	static char *dup_lists[8];
	int ndup = 0;
	bool runs_set = false, load_set = false;

	opt.runs = 5;
	opt.preload = true;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char *val = NULL;
		bool has = i + 1 < argc;
		if (strcmp(a, "--quick") == 0) {
			opt.quick = true;
			continue;
		}
		if (strcmp(a, "--json") == 0) {
			opt.json = true;
			continue;
		}
		if (strcmp(a, "--inproc") == 0) {
			opt.inproc = true;
			continue;
		}
		if (strcmp(a, "--callgrind") == 0) {
			opt.callgrind = true;
			continue;
		}
		if (strcmp(a, "--cg") == 0) {
			opt.cg = true;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(0);
		}
		if (!has || ndup >= 8) {
			usage(stderr);
			exit(2);
		}
		val = dup_lists[ndup++] = strdup(argv[++i]);
		if (val == NULL)
			die("strdup");
		if (strcmp(a, "--workload") == 0) {
			opt.nworkloads = split(val, opt.workloads, MAX_LIST - 1);
		} else if (strcmp(a, "--backend") == 0) {
			opt.nbackends = split(val, opt.backends, MAX_LIST);
		} else if (strcmp(a, "--size") == 0 || strcmp(a, "--threads") == 0) {
			const char *items[MAX_LIST];
			int n = split(val, items, MAX_LIST);
			bool is_size = strcmp(a, "--size") == 0;
			for (int k = 0; k < n; k++) {
				long v = strtol(items[k], NULL, 10);
				if (v <= 0 || (is_size && v > (long)USLAB_MAX_SIZE) ||
				    (!is_size && v > 1024)) {
					fprintf(stderr, "uslab-bench: bad %s value %s\n", a,
					        items[k]);
					exit(2);
				}
				if (is_size)
					opt.sizes[k] = (size_t)v;
				else
					opt.threads[k] = (int)v;
			}
			if (is_size)
				opt.nsizes = n;
			else
				opt.nthreads = n;
		} else if (strcmp(a, "--runs") == 0) {
			opt.runs = atoi(val);
			runs_set = true;
			if (opt.runs < 1 || opt.runs > MAX_RUNS) {
				fprintf(stderr, "uslab-bench: --runs must be 1..%d\n", MAX_RUNS);
				exit(2);
			}
		} else if (strcmp(a, "--load") == 0) {
			if (strcmp(val, "preload") != 0 && strcmp(val, "dlopen") != 0) {
				usage(stderr);
				exit(2);
			}
			opt.preload = strcmp(val, "preload") == 0;
			load_set = true;
		} else if (strcmp(a, "--child") == 0) {
			opt.child = val;
		} else {
			usage(stderr);
			exit(2);
		}
	}
	if (opt.quick && !runs_set)
		opt.runs = 3;
	if (opt.nworkloads == 0)
		for (size_t i = 0; i < NWORKLOADS; i++)
			opt.workloads[opt.nworkloads++] = workload_names[i];
	/* "batch" means both batch sizes */
	for (int i = 0; i < opt.nworkloads; i++)
		if (strcmp(opt.workloads[i], "batch") == 0) {
			opt.workloads[i] = "batch1k";
			opt.workloads[opt.nworkloads++] = "batch100k";
		}
	for (int i = 0; i < opt.nworkloads; i++) {
		bool ok = false;
		for (size_t k = 0; k < NWORKLOADS; k++)
			ok = ok || strcmp(opt.workloads[i], workload_names[k]) == 0;
		if (!ok) {
			fprintf(stderr, "uslab-bench: unknown workload %s\n", opt.workloads[i]);
			exit(2);
		}
	}
	if (opt.nbackends == 0)
		for (size_t i = 0; i < NBACKENDS; i++)
			opt.backends[opt.nbackends++] = backends[i].name;
	for (int i = 0; i < opt.nbackends; i++)
		if (backend_by_name(opt.backends[i]) == NULL) {
			fprintf(stderr, "uslab-bench: unknown backend %s\n", opt.backends[i]);
			exit(2);
		}
	if (opt.nsizes == 0) {
		static const size_t def[] = {24, 64, 256, 4096};
		for (size_t i = 0; i < 4; i++)
			opt.sizes[opt.nsizes++] = def[i];
	}
	if (opt.nthreads == 0) {
		opt.threads[opt.nthreads++] = 2;
		opt.threads[opt.nthreads++] = 16;
	}
	if (opt.preload && sanitized) {
		if (load_set) {
			fprintf(stderr,
			        "uslab-bench: --load=preload cannot work in a sanitizer build\n");
			exit(2);
		}
		opt.preload = false;
	}
}

/* ---- Entry point ---- */

int main(int argc, char **argv)
{
	char mach[320];

	parse_opts(argc, argv);
	opt.self = "/proc/self/exe";
	if (opt.child != NULL) {
		emit_to_stdout = true;
		int rc = child_run(backend_by_name(opt.child));
		fflush(stdout);
		return rc;
	}
	/* Children are this same file; resolve it now, before anything execs. */
	static char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = '\0';
		opt.self = self;
	}
	if (opt.callgrind)
		opt.inproc = false;
	for (int i = 0; i < opt.nbackends; i++) {
		const struct backend_info *b = backend_by_name(opt.backends[i]);
		if (!opt.json) {
			fprintf(stderr, "uslab-bench: %s...\n", b->name);
		}
		run_backend(b);
	}
	for (size_t i = 0; i < nresults; i++)
		result_finish(&results[i]);
	qsort(results, nresults, sizeof *results, cmp_result);
	compute_ratios();
	machine(mach, sizeof mach);
	if (opt.json)
		report_json(mach);
	else
		report_markdown(mach);
	free(results);
	free(memres);
	for (size_t i = 0; i < NBACKENDS; i++)
		free((void *)uslab_mode_seen[i]);
	return 0;
}
