/* SPDX-License-Identifier: MIT */
/* uslab-bench's child side: the cells one backend runs, timed, with counters, sent as records. */
#include <dlfcn.h>
#include <inttypes.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/*
 * A child runs one backend (--child NAME) over the cells it is given: for
 * each, the backend's context (for uslab a new cache), a warm-up of a
 * tenth of the operations, then --runs timed runs, each an R record. The
 * parent asks for one run per child, so every round of a cell starts in a
 * new process and does its own warm-up (bench-parent.c says why); with
 * --inproc it calls this code itself, one run at a time, and by hand it
 * runs as many as --runs says. Setup (arrays, the floor's memory, threads)
 * stays outside the timing.
 *
 * Operations per timed run: pair 2 million; batch1k and batch100k 2 million
 * pairs (times 64 / size above 64 bytes: the same bytes touched per run);
 * threads 2 million over all threads; prodcons 500,000; --quick divides
 * them by 20 (fresh and mem by 50).
 *
 * Counters. Instructions and cycles per op come from perf_event_open, user
 * space only (exclude_kernel, exclude_hv), opened per thread and summed.
 * Where the kernel or hypervisor refuses them (this VM: "not supported")
 * they are -1 and the table says n/a. Under callgrind (--cg, see
 * bench-parent.c) a cell is one run of a fixed count, CG_OPS, without a
 * warm-up, and a C record gives that count.
 */

/* ---- Constants ---- */

#define FRESH_BYTES ((size_t)640 << 20)     /* 10 million objects of 24 and 64 bytes */
#define FRESH_BYTES_BIG ((size_t)256 << 20) /* above 64 bytes */
#define FRESH_MAX 10000000u
#define MEM_BYTES ((size_t)512 << 20)
#define MEM_SMALL 10000000u /* objects of 24 and 64 bytes: the core issue's targets */
#define QUICK_DIV 20
#define CG_OPS 200000u /* operations per callgrind cell */

#define OPS_PAIR 2000000u
#define OPS_BATCH 2000000u
#define OPS_THREADS 2000000u /* all threads together */
#define OPS_PRODCONS 500000u

/* ---- Small helpers ---- */

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
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

/* The file this process's uslab_cache_alloc() lives in, from
 * /proc/self/maps: the libuslab the loader really mapped. "?" if none. */
static void uslab_library(char *out, size_t len)
{
	uintptr_t fn = (uintptr_t)uslab_cache_alloc;
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/self/maps", "re");

	snprintf(out, len, "?");
	while (f != NULL && fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi;
		int path = 0;
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path) < 2 || path == 0)
			continue;
		if (fn >= lo && fn < hi) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, len, "%s", line + path);
			break;
		}
	}
	if (f != NULL)
		fclose(f);
}

/* ---- Hardware counters (perf_event_open, user space only) ---- */

struct pmu {
	int p_fd[2]; /* instructions, cycles; -1: unavailable */
	uint64_t p_val[2];
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
		p->p_fd[i] = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
		p->p_val[i] = 0;
	}
}

static void pmu_start(struct pmu *p)
{
	for (int i = 0; i < 2; i++)
		if (p->p_fd[i] >= 0) {
			ioctl(p->p_fd[i], PERF_EVENT_IOC_RESET, 0);
			ioctl(p->p_fd[i], PERF_EVENT_IOC_ENABLE, 0);
		}
}

static void pmu_stop(struct pmu *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->p_fd[i] < 0)
			continue;
		ioctl(p->p_fd[i], PERF_EVENT_IOC_DISABLE, 0);
		if (read(p->p_fd[i], &p->p_val[i], sizeof p->p_val[i]) !=
		    (ssize_t)sizeof p->p_val[i]) {
			close(p->p_fd[i]);
			p->p_fd[i] = -1;
		}
	}
}

static void pmu_close(struct pmu *p)
{
	for (int i = 0; i < 2; i++)
		if (p->p_fd[i] >= 0)
			close(p->p_fd[i]);
}

/* Sums of several threads' counters; negative once any thread had none. */
struct pmu_sum {
	_Atomic int64_t ps_v[2];
};

static void pmu_add(struct pmu_sum *s, const struct pmu *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->p_fd[i] < 0)
			atomic_store(&s->ps_v[i], INT64_MIN / 2);
		else
			atomic_fetch_add(&s->ps_v[i], (int64_t)p->p_val[i]);
	}
}

/* ---- Records ---- */

/* One timed run: ns/op and counters/op (negative: n/a). */
struct sample {
	double s_ns, s_ins, s_cyc;
};

static void emit_sample(struct bench *bn, const char *backend, const char *workload, size_t size,
                        int threads, const struct sample *s)
{
	char line[RECORD_LEN];
	snprintf(line, sizeof line, "R\t%s\t%s\t%zu\t%d\t%.4f\t%.3f\t%.3f", backend, workload, size,
	         threads, s->s_ns, s->s_ins, s->s_cyc);
	bn->bn_emit(bn, line);
}

static void sample_counters(struct sample *s, const struct pmu_sum *sum, double ops)
{
	int64_t ins = atomic_load(&sum->ps_v[0]), cyc = atomic_load(&sum->ps_v[1]);
	s->s_ins = ins < 0 ? -1 : (double)ins / ops;
	s->s_cyc = cyc < 0 ? -1 : (double)cyc / ops;
}

/* Counters of one thread's run over @ops operations. */
static void sample_pmu(struct sample *s, const struct pmu *p, double ops)
{
	s->s_ins = p->p_fd[0] >= 0 ? (double)p->p_val[0] / ops : -1;
	s->s_cyc = p->p_fd[1] >= 0 ? (double)p->p_val[1] / ops : -1;
}

/* ---- Runners: one timed run ---- */

enum task { T_PAIR, T_BATCH };

/* Repetitions of a batch of @k in @ops pairs (at least one). */
static uint64_t batch_reps(uint64_t ops, size_t k)
{
	return ops / k > 0 ? ops / k : 1;
}

struct worker {
	pthread_t w_tid;
	const struct kernels *w_k;
	struct bctx *w_c;
	enum task w_task;
	uint64_t w_ops; /* pairs this thread runs */
	size_t w_batch_k;
	pthread_barrier_t *w_start;
	struct pmu_sum *w_sum;
	double w_t_start, w_t_end; /* this thread's own clock readings */
};

/* One thread's share of a threaded run: w_ops pairs of w_task. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pmu pmu;
	size_t k = w->w_batch_k;
	void **a = w->w_task == T_BATCH ? map(k * sizeof *a) : NULL;

	if (w->w_c->bc_kind == BK_FLOOR)
		floor_thread_init(w->w_c->bc_size, 1);
	pmu_open(&pmu);
	pthread_barrier_wait(w->w_start);
	pmu_start(&pmu);
	w->w_t_start = now_ns();
	if (w->w_task == T_PAIR)
		w->w_k->k_pair(w->w_c, w->w_ops);
	else
		w->w_k->k_batch(w->w_c, a, k, batch_reps(w->w_ops, k));
	w->w_t_end = now_ns();
	pmu_stop(&pmu);
	pmu_add(w->w_sum, &pmu);
	pmu_close(&pmu);
	if (a != NULL)
		munmap(a, k * sizeof *a);
	if (w->w_c->bc_kind == BK_FLOOR)
		floor_thread_fini();
	return NULL;
}

/* @threads threads each run ops/threads pairs of @task at once. */
static struct sample run_threads(struct bctx *c, enum task task, size_t k, uint64_t ops,
                                 int threads)
{
	struct worker *w = xcalloc((size_t)threads, sizeof *w);
	struct pmu_sum sum = {{0, 0}};
	pthread_barrier_t bar;
	struct sample s;
	uint64_t per = ops / (uint64_t)threads;

	if (task == T_BATCH)
		per = batch_reps(per, k) * k;
	pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
	for (int i = 0; i < threads; i++) {
		w[i] = (struct worker){.w_k = kernels_of(c->bc_kind),
		                       .w_c = c,
		                       .w_task = task,
		                       .w_ops = per,
		                       .w_batch_k = k,
		                       .w_start = &bar,
		                       .w_sum = &sum};
		if (pthread_create(&w[i].w_tid, NULL, worker_main, &w[i]) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&bar);
	/* Wall time from the first thread's start to the last one's end, read
	 * by the workers: the main thread may be descheduled right after the
	 * barrier, so its own clock reading would be late. */
	double t0 = 0, t1 = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(w[i].w_tid, NULL);
		if (i == 0 || w[i].w_t_start < t0)
			t0 = w[i].w_t_start;
		if (i == 0 || w[i].w_t_end > t1)
			t1 = w[i].w_t_end;
	}
	s.s_ns = (t1 - t0) / ((double)per * threads);
	pthread_barrier_destroy(&bar);
	free(w);
	sample_counters(&s, &sum, (double)per * threads);
	return s;
}

/* One run of @task in the calling thread, counters opened once. */
static struct sample run_single(struct bctx *c, enum task task, size_t k, uint64_t ops)
{
	const struct kernels *kern = kernels_of(c->bc_kind);
	struct pmu pmu;
	struct sample s;
	void **a = task == T_BATCH ? map(k * sizeof *a) : NULL;
	uint64_t reps = task == T_BATCH ? batch_reps(ops, k) : 0;
	double nops = task == T_BATCH ? (double)(reps * k) : (double)ops;

	pmu_open(&pmu);
	pmu_start(&pmu);
	double t0 = now_ns();
	if (task == T_PAIR)
		kern->k_pair(c, ops);
	else
		kern->k_batch(c, a, k, reps);
	s.s_ns = (now_ns() - t0) / nops;
	pmu_stop(&pmu);
	sample_pmu(&s, &pmu, nops);
	pmu_close(&pmu);
	if (a != NULL)
		munmap(a, k * sizeof *a);
	return s;
}

struct pc_arg {
	const struct kernels *pc_k;
	struct bctx *pc_c;
	struct ring *pc_r;
	uint64_t pc_n;
	bool pc_producer;
	pthread_barrier_t *pc_start;
	struct pmu_sum *pc_sum;
	double pc_t_start, pc_t_end;
};

static void *pc_main(void *arg)
{
	struct pc_arg *a = arg;
	struct pmu pmu;

	pmu_open(&pmu);
	pthread_barrier_wait(a->pc_start);
	pmu_start(&pmu);
	a->pc_t_start = now_ns();
	if (a->pc_producer)
		a->pc_k->k_prod(a->pc_c, a->pc_r, a->pc_n);
	else
		a->pc_k->k_cons(a->pc_c, a->pc_r, a->pc_n);
	a->pc_t_end = now_ns();
	pmu_stop(&pmu);
	pmu_add(a->pc_sum, &pmu);
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
		a[i] = (struct pc_arg){kernels_of(c->bc_kind), c, r, n, i == 0, &bar, &sum, 0, 0};
		if (pthread_create(&tid[i], NULL, pc_main, &a[i]) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&bar);
	for (int i = 0; i < 2; i++)
		pthread_join(tid[i], NULL);
	double t0 = a[0].pc_t_start < a[1].pc_t_start ? a[0].pc_t_start : a[1].pc_t_start;
	double t1 = a[0].pc_t_end > a[1].pc_t_end ? a[0].pc_t_end : a[1].pc_t_end;
	s.s_ns = (t1 - t0) / (double)n;
	pthread_barrier_destroy(&bar);
	munmap(r, sizeof *r);
	sample_counters(&s, &sum, (double)n);
	return s;
}

/* ---- Cells: warm-up and timed runs ---- */

static uint64_t scaled(const struct bench_opts *o, uint64_t n)
{
	if (o->o_cg)
		return CG_OPS;
	return o->o_quick ? n / QUICK_DIV : n;
}

/* Batch workloads touch every object, so their operation counts shrink
 * with the size above 64 bytes (same bytes touched per run): at 4096 bytes
 * some mallocs give memory back on every cycle and fault it in again
 * (microseconds per op), which would otherwise dominate the runtime. */
static uint64_t scaled_batch(const struct bench_opts *o, uint64_t n, size_t size, size_t k)
{
	uint64_t v = scaled(o, n);
	if (!o->o_cg && size > 64)
		v = v * 64 / size;
	return v < k ? k : v;
}

static size_t fresh_count(const struct bench_opts *o, size_t size)
{
	size_t n = (size <= 64 ? FRESH_BYTES : FRESH_BYTES_BIG) / size;
	if (n > FRESH_MAX)
		n = FRESH_MAX;
	return o->o_quick ? n / 50 : n;
}

static size_t mem_count(const struct bench_opts *o, size_t size)
{
	size_t n = size <= 64 ? MEM_SMALL : MEM_BYTES / size;
	return o->o_quick ? n / 50 : n;
}

/* One run of a single-threaded (@threads 0) or threaded cell. */
static struct sample run_task(struct bctx *c, enum task task, size_t k, uint64_t ops, int threads)
{
	return threads == 0 ? run_single(c, task, k, ops) : run_threads(c, task, k, ops, threads);
}

/* Warm-up plus @runs timed runs of a pair or batch cell, row @label. */
static void cell_task(struct bench *bn, const struct backend *be, const char *label, size_t size,
                      enum task task, size_t k, uint64_t ops, int threads, int runs)
{
	struct bctx c;

	bctx_init(&c, be, size, false);
	if (threads == 0 && c.bc_kind == BK_FLOOR)
		floor_thread_init(size, 1);
	if (bn->bn_opt.o_cg) {
		/* callgrind: one fixed-count run, no warm-up; count what bk_* ran */
		char line[RECORD_LEN];
		uint64_t done = task == T_BATCH ? batch_reps(ops, k) * k : ops;
		run_single(&c, task, k, ops);
		snprintf(line, sizeof line, "C\t%s\t%s\t%zu\t%d\t%" PRIu64, be->be_name, label,
		         size, threads, done);
		bn->bn_emit(bn, line);
	} else {
		run_task(&c, task, k, ops / 10 > k ? ops / 10 : k, threads);
		for (int r = 0; r < runs; r++) {
			struct sample s = run_task(&c, task, k, ops, threads);
			emit_sample(bn, be->be_name, label, size, threads, &s);
		}
	}
	if (threads == 0 && c.bc_kind == BK_FLOOR)
		floor_thread_fini();
	bctx_fini(&c);
}

static void cell_prodcons(struct bench *bn, const struct backend *be, size_t size, int runs)
{
	struct bctx c;
	uint64_t n = scaled(&bn->bn_opt, OPS_PRODCONS);

	bctx_init(&c, be, size, false);
	run_prodcons(&c, n / 10);
	for (int r = 0; r < runs; r++) {
		struct sample s = run_prodcons(&c, n);
		emit_sample(bn, be->be_name, "prodcons", size, 2, &s);
	}
	bctx_fini(&c);
}

/* n new objects, timed; one run per process (the parent spawns one each). */
static void cell_fresh(struct bench *bn, const struct backend *be, size_t size)
{
	size_t n = fresh_count(&bn->bn_opt, size);
	void **a = map(n * sizeof *a);
	struct bctx c;
	struct pmu pmu;
	struct sample s;

	memset(a, 0, n * sizeof *a); /* the array's own faults stay out of the timing */
	bctx_init(&c, be, size, true);
	if (c.bc_kind == BK_FLOOR)
		floor_thread_init(size, n);
	pmu_open(&pmu);
	pmu_start(&pmu);
	double t0 = now_ns();
	kernels_of(c.bc_kind)->k_fill(&c, a, n);
	s.s_ns = (now_ns() - t0) / (double)n;
	pmu_stop(&pmu);
	sample_pmu(&s, &pmu, (double)n);
	pmu_close(&pmu);
	kernels_of(c.bc_kind)->k_drain(&c, a, n);
	emit_sample(bn, be->be_name, "fresh", size, 1, &s);
	if (c.bc_kind == BK_FLOOR)
		floor_thread_fini();
	bctx_fini(&c);
	munmap(a, n * sizeof *a);
}

static void cell_mem(struct bench *bn, const struct backend *be, size_t size)
{
	size_t n = mem_count(&bn->bn_opt, size);
	void **a = map(n * sizeof *a);
	struct bctx c;
	char line[RECORD_LEN];

	memset(a, 0, n * sizeof *a); /* resident in "before" and every later figure */
	bctx_init(&c, be, size, true);
	if (c.bc_kind == BK_FLOOR)
		floor_thread_init(size, n);
	double r0 = rss_bytes();
	kernels_of(c.bc_kind)->k_fill(&c, a, n);
	double r1 = rss_bytes();
	kernels_of(c.bc_kind)->k_drain(&c, a, n);
	double r2 = rss_bytes();
	bctx_reap(&c);
	double r3 = rss_bytes();
	snprintf(line, sizeof line, "M\t%s\t%zu\t%zu\t%.0f\t%.0f\t%.0f\t%.0f", be->be_name, size, n,
	         r0, r1, r2, r3);
	bn->bn_emit(bn, line);
	bctx_fini(&c);
	munmap(a, n * sizeof *a);
}

/* Run cell @ce of backend @be: @runs timed runs after a warm-up. */
static void child_cell(struct bench *bn, const struct backend *be, const struct cell *ce, int runs)
{
	const struct bench_opts *o = &bn->bn_opt;
	const char *w = ce->ce_workload;
	size_t size = ce->ce_size;

	if (strcmp(w, "pair") == 0) {
		cell_task(bn, be, "pair", size, T_PAIR, 1, scaled(o, OPS_PAIR), 0, runs);
	} else if (strcmp(w, "batch1k") == 0) {
		cell_task(bn, be, "batch1k", size, T_BATCH, 1000,
		          scaled_batch(o, OPS_BATCH, size, 1000), 0, runs);
	} else if (strcmp(w, "batch100k") == 0) {
		size_t k = o->o_cg ? 20000 : 100000;
		cell_task(bn, be, "batch100k", size, T_BATCH, k,
		          scaled_batch(o, OPS_BATCH, size, k), 0, runs);
	} else if (strcmp(w, "threads") == 0) {
		int t = ce->ce_threads;
		char l1[NAME_LEN], l2[NAME_LEN];
		snprintf(l1, sizeof l1, "pair-t%d", t);
		snprintf(l2, sizeof l2, "batch1k-t%d", t);
		cell_task(bn, be, l1, size, T_PAIR, 1, scaled(o, OPS_THREADS), t, runs);
		cell_task(bn, be, l2, size, T_BATCH, 1000,
		          scaled_batch(o, OPS_THREADS, size, 1000 * (size_t)t), t, runs);
	} else if (strcmp(w, "prodcons") == 0) {
		cell_prodcons(bn, be, size, runs);
	} else if (strcmp(w, "fresh") == 0) {
		cell_fresh(bn, be, size);
	} else if (strcmp(w, "mem") == 0) {
		cell_mem(bn, be, size);
	}
}

/* ---- Exported: see bench.h ---- */

struct cell *bench_cells(const struct bench_opts *o, size_t *n)
{
	struct cell *v = xcalloc((size_t)o->o_nworkloads * (size_t)o->o_nsizes *
	                                 (size_t)(o->o_nthreads > 0 ? o->o_nthreads : 1),
	                         sizeof *v);
	size_t k = 0;

	for (int wi = 0; wi < o->o_nworkloads; wi++) {
		const char *w = o->o_workloads[wi];
		bool threads = strcmp(w, "threads") == 0;
		for (int si = 0; si < o->o_nsizes; si++)
			for (int ti = 0; ti < (threads ? o->o_nthreads : 1); ti++)
				v[k++] = (struct cell){w, o->o_sizes[si],
				                       threads ? o->o_threads[ti] : 0};
	}
	*n = k;
	return v;
}

void child_run(struct bench *bn, struct backend *be, const struct cell *cells, size_t n, int runs)
{
	char why[256], lib[PATH_MAX], line[RECORD_LEN];

	if (backend_load(be, why, sizeof why) != 0) {
		snprintf(line, sizeof line, "S\t%s\t%s", be->be_name, why);
		bn->bn_emit(bn, line);
		return;
	}
	if (be->be_kind == BK_USLAB) {
		uslab_library(lib, sizeof lib);
		snprintf(line, sizeof line, "U\t%s\t%s\t%s", be->be_name, uslab_mode(), lib);
		bn->bn_emit(bn, line);
	}
	if (be->be_kind == BK_USLAB && be->be_pagesrc != NULL) {
		const char *(*mode)(void) = NULL;
		if (strcmp(be->be_pagesrc, "hugepage") == 0)
			*(void **)&mode = dlsym(RTLD_DEFAULT, "uslab_pagesrc_hugepage_mode");
		snprintf(line, sizeof line, "P\t%s\t%s\t%s", be->be_name, be->be_pagesrc,
		         mode != NULL ? mode() : "-");
		bn->bn_emit(bn, line);
	}
	for (size_t i = 0; i < n; i++)
		child_cell(bn, be, &cells[i], runs);
}

void child_emit_stdout(struct bench *bn, const char *line)
{
	(void)bn;
	printf("%s\n", line);
}
