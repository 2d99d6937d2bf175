/* SPDX-License-Identifier: MIT */
/* uslab-bench's shared types and calls: options, backends, the run's context, one section a file. */
#ifndef USLAB_BENCH_H
#define USLAB_BENCH_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uslab.h"

/*
 * uslab-bench: uslab against malloc implementations and a floor that no
 * allocator can be below.
 *
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
 *                  above 64 bytes), alive at once, in a new process (and,
 *                  for uslab, a new cache)
 *      mem         resident bytes per live object: RSS (/proc/self/statm)
 *                  before and after allocating N objects (10 million for
 *                  24 and 64 bytes, 512 MiB worth above), after freeing all,
 *                  and after the backend's reap (uslab_cache_reap,
 *                  malloc_trim, jemalloc arena purge, tcmalloc
 *                  ReleaseFreeMemory, mi_collect). One run per cell: the
 *                  figures do not vary between runs.
 *    Sizes (--size): 24, 64, 256, 4096. A cell is a workload at a size. It
 *    runs --runs rounds (default 5; "fresh" at most 3), and a round runs
 *    every backend once, in the order given, each in a process of its own
 *    (bench-parent.c). The report gives each backend's median and minimum
 *    over the rounds, and ratios computed round by round (bench-report.c).
 *    Page sources (--pagesrc mmap,hugepage,brk): each uslab backend runs
 *    once per source listed, its caches on that source; "mmap" (uslab's
 *    default) keeps the backend's name, another source adds "+source"
 *    (uslab+hugepage), and the report divides each such row by its base
 *    row, round by round, in the A/B table.
 *
 * 2. The files, each calling only those below it:
 *      bench-main.c     options (getopt_long), main
 *      bench-report.c   the tables, the per-round ratios, --json
 *      bench-parent.c   the rounds: children, LD_PRELOAD, --uslab-lib,
 *                       callgrind; the records they send back
 *      bench-child.c    what a child runs: warm-up, timed runs, counters
 *      bench-kernels.c  the backends (floor, uslab, the mallocs) and the
 *                       measured loops
 *      bench-util.c     fatal errors, mappings, medians
 *
 * 3. Records: a child writes one tab-separated line per figure on stdout,
 *    and the parent reads them (in --inproc mode they go straight to it):
 *      R backend workload size threads ns/op ins/op cyc/op   one timed run
 *      M backend size objects rss-before rss-live rss-freed rss-reaped
 *      C backend workload size threads operations    one run under callgrind
 *      U backend mode library    a uslab backend's mode and the libuslab
 *                                file it mapped (/proc/self/maps)
 *      P backend source mode     a --pagesrc variant's page source, and for
 *                                hugepage uslab_pagesrc_hugepage_mode()
 *      S backend reason          the backend cannot run here
 *    A child can be run by hand the same way:
 *        uslab-bench --child uslab --workload pair --size 64 --runs 3
 *    Counters that are not available are negative (-1).
 */

/* ---- Constants ---- */

#define MAX_RUNS 32   /* --runs: rounds per cell */
#define MAX_LIST 16   /* entries of --workload, --size, --threads */
#define MAX_LIBS 8    /* --uslab-lib */
#define MAX_SOURCES 3 /* --pagesrc: mmap, hugepage, brk */
#define MAX_BACKENDS ((7 + MAX_LIBS) * MAX_SOURCES)
#define MAX_RATIOS 128
#define MAX_NOTES 64
#define NAME_LEN 24     /* backend and workload names, with the NUL */
#define RING_CAP 256    /* prodcons ring slots: a power of two */
#define RECORD_LEN 4400 /* a record line: a U record holds a path */

/* ---- Backends (bench-kernels.c) ---- */

struct bench;

enum bkind { BK_FLOOR, BK_USLAB, BK_LIBC, BK_DL };

/* A dlopen'd malloc's entry points, found with dlsym on its handle. */
struct dl_lib {
	bool dl_loaded;
	void *(*dl_malloc)(size_t);
	void (*dl_free)(void *);
	int (*dl_mallctl)(const char *, void *, size_t *, void *, size_t); /* jemalloc */
	void (*dl_tc_release)(void);                                       /* tcmalloc */
	void (*dl_mi_collect)(bool);                                       /* mimalloc */
};

/* A backend: what it is (set when options are read), then what this
 * process learnt about it. */
struct backend {
	const char *be_name; /* shorter than NAME_LEN */
	enum bkind be_kind;
	/* BK_DL: the malloc's shared object. BK_USLAB: NULL for the library
	 * this program is linked with, or (be_extra) another build's
	 * libuslab.so, resolved with realpath() and malloc'd. */
	const char *be_lib;
	const char *be_env; /* extra environment for its children, "NAME=value" */
	bool be_extra;      /* from --uslab-lib */
	/* BK_USLAB: the page source of its caches ("hugepage", "brk"; NULL:
	 * the default, mmap), and for a --pagesrc variant the backend it
	 * varies (its name is that one's plus "+source"). */
	const char *be_pagesrc;
	const struct backend *be_base;
	/* A process that runs it: */
	struct dl_lib be_dl; /* BK_DL, once backend_load() found it */
	/* The parent: */
	char be_mapped[PATH_MAX]; /* BK_USLAB: the libuslab its children mapped, "" before */
};

/* The backend named @name among the run's, or NULL. */
struct backend *backend_find(struct bench *bn, const char *name);

/* Load @be's library into this process (BK_DL; once). Returns 0, or -1
 * with a reason in @why. */
int backend_load(struct backend *be, char *why, size_t len);

/* One backend in one cell, as the kernels see it. Every kernel calls the
 * allocator through these pointers: one dispatch for all backends. */
struct bctx {
	enum bkind bc_kind;
	size_t bc_size;
	void *(*bc_malloc)(size_t); /* floor, glibc, the peers */
	void (*bc_free)(void *);
	void *(*bc_cache_alloc)(struct uslab_cache *); /* uslab */
	void (*bc_cache_free)(struct uslab_cache *, void *);
	struct uslab_cache *bc_cache;
	const struct dl_lib *bc_dl; /* BK_DL: for the reap */
};

/* The prodcons ring: single producer, single consumer. */
struct ring {
	_Alignas(64) _Atomic size_t r_head; /* written by the producer */
	_Alignas(64) _Atomic size_t r_tail; /* written by the consumer */
	_Alignas(64) void *r_slot[RING_CAP];
};

/* The measured loops of one backend; each is a bk_* function, the names
 * callgrind's --toggle-collect counts. */
struct kernels {
	void (*k_pair)(struct bctx *c, uint64_t n);
	void (*k_batch)(struct bctx *c, void **a, size_t k, uint64_t reps);
	void (*k_fill)(struct bctx *c, void **a, size_t n);
	void (*k_drain)(struct bctx *c, void **a, size_t n);
	void (*k_prod)(struct bctx *c, struct ring *r, uint64_t n);
	void (*k_cons)(struct bctx *c, struct ring *r, uint64_t n);
};

/* Set up @c for @be at @size (a new cache for uslab, on its page source).
 * @fresh: the cell needs new objects (fresh, mem), so the floor bumps a
 * pointer. */
void bctx_init(struct bctx *c, const struct backend *be, size_t size, bool fresh);
void bctx_fini(struct bctx *c);

/* Give free memory back to the system, the backend's way. */
void bctx_reap(struct bctx *c);

/* The page source named @name as the library mapped into this process
 * has it (dlsym: another build may lack it); NULL for "mmap" (the
 * default). Dies when the library has no such source. */
const struct uslab_pagesrc *bench_pagesrc(const char *name);

const struct kernels *kernels_of(enum bkind kind);

/* The floor's per-thread memory: room for @live objects of @size, set up
 * in each thread that runs the floor, outside the timing. */
void floor_thread_init(size_t size, size_t live);
void floor_thread_fini(void);

/* ---- Options and the run's context (bench-main.c fills them) ---- */

struct bench_opts {
	struct backend *o_backends[MAX_BACKENDS]; /* in the order each round runs them */
	int o_nbackends;
	const char *o_workloads[MAX_LIST];
	int o_nworkloads;
	size_t o_sizes[MAX_LIST];
	int o_nsizes;
	int o_threads[MAX_LIST];
	int o_nthreads;
	int o_runs; /* rounds per cell */
	bool o_quick, o_json, o_inproc, o_callgrind, o_preload;
	char o_pagesrc[64];      /* --pagesrc as given, for the children; "" without */
	bool o_cg;               /* a child under callgrind: fixed counts, no warm-up */
	struct backend *o_child; /* a child: the backend it runs */
	const char *o_self;      /* this executable, for the children */
};

/* One row of the table: a backend in a cell, one figure per round. */
struct result {
	char rs_backend[NAME_LEN];
	char rs_workload[NAME_LEN]; /* "pair-t2" for the threads cells */
	size_t rs_size;
	int rs_threads;
	int rs_order;           /* the backend's index in bn_backends */
	int rs_nruns;           /* rounds 0 .. rs_nruns - 1 */
	double rs_ns[MAX_RUNS]; /* per round; < 0: no figure that round */
	double rs_ins_runs[MAX_RUNS], rs_cyc_runs[MAX_RUNS];
	double rs_ins, rs_cyc; /* per op, median over rounds; < 0: n/a */
};

struct memres {
	char mr_backend[NAME_LEN];
	size_t mr_size;
	uint64_t mr_n;
	double mr_rss0, mr_rss1, mr_rss2, mr_rss3; /* before, live, after free, after reap */
};

/* A ratio of two rows, computed per round (bench-report.c). */
struct ratio {
	char rt_name[96];
	bool rt_ab;                    /* an A/B of two uslab builds (its own table) */
	int rt_n;                      /* rounds with both figures */
	double rt_round[MAX_RUNS];     /* the per-round ratios */
	double rt_value, rt_lo, rt_hi; /* their median, minimum, maximum; < 0: n/a */
	double rt_goal;                /* the value must be at most this (0: none) */
	char rt_detail[160];
};

struct bench {
	struct bench_opts bn_opt;
	struct backend bn_backends[MAX_BACKENDS]; /* the built-in ones, then --uslab-lib */
	int bn_nbackends;
	/* Where this process's records go: stdout in a child, bench_record()
	 * in the parent with --inproc. */
	void (*bn_emit)(struct bench *bn, const char *line);
	/* The parent: */
	int bn_round;       /* the round the records being read belong to */
	uint64_t bn_cg_ops; /* operations of the last C record */
	struct result *bn_results;
	size_t bn_nresults, bn_cresults;
	struct memres *bn_mem;
	size_t bn_nmem, bn_cmem;
	struct ratio bn_ratios[MAX_RATIOS];
	int bn_nratios;
	char bn_notes[MAX_NOTES][240];
	int bn_nnotes;
	char bn_self[PATH_MAX];
};

/* ---- A child's side (bench-child.c) ---- */

/* One cell: a workload (a name of --workload, not "batch") at a size; for
 * "threads", one thread count. */
struct cell {
	const char *ce_workload;
	size_t ce_size;
	int ce_threads;
};

/* The cells of the options, workload by workload, size by size (then
 * thread count); free() them. */
struct cell *bench_cells(const struct bench_opts *o, size_t *n);

/* Run @n cells of backend @be in this process, @runs timed runs each,
 * sending the records to bn->bn_emit. */
void child_run(struct bench *bn, struct backend *be, const struct cell *cells, size_t n, int runs);

/* bn_emit of a child: the record on stdout. */
void child_emit_stdout(struct bench *bn, const char *line);

/* ---- The parent's side (bench-parent.c) ---- */

/* Add a note to the report, unless it is there already. */
__attribute__((format(printf, 2, 3))) void note(struct bench *bn, const char *fmt, ...);

/* The row of @backend in a cell, or NULL; with @create, a new one. */
struct result *bench_result(struct bench *bn, const char *backend, const char *workload,
                            size_t size, int threads, bool create);

/* Read one record line (it is modified) into the results. */
void bench_record(struct bench *bn, char *line);

/* Run every cell, round by round, each round every backend once. */
void bench_run(struct bench *bn);

/* ---- The report (bench-report.c) ---- */

/* Medians, ratios, then the markdown (or --json) on stdout. */
void bench_report(struct bench *bn);

/* ---- Utilities (bench-util.c) ---- */

__attribute__((noreturn)) void die(const char *what);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n, size_t size);

/* Anonymous mapping outside every backend (the tool's own arrays). */
void *map(size_t bytes);

/* Median, minimum and maximum of the figures of @v that are >= 0; -1 when
 * there are none. */
double median(const double *v, int n);
double minimum(const double *v, int n);
double maximum(const double *v, int n);

/** The rcu workload's own table (bench-rcu.c), printed to stdout. */
void bench_rcu(const struct bench *bn);

/** The classes workload's own table (bench-classes.c), printed to stdout. */
void bench_classes(struct bench *bn);
/** A classes run in this process ("--classes-child B T N"); the exit status. */
int bench_classes_child(int backend, int threads, long n);

#endif /* USLAB_BENCH_H */
