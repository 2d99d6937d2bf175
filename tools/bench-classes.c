/* SPDX-License-Identifier: MIT */
/* uslab-bench --workload classes: mixed sizes with random lifetimes, uslab_alloc against the mallocs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/*
 * Larson-like (Larson and Krishnan's server benchmark, as mimalloc-bench
 * runs it): each of T threads owns CL_SLOTS slots of live blocks. An
 * operation frees the block of a random slot and puts a new one there, of
 * a size drawn uniformly from 8..1024 bytes, with a word written in it:
 * lifetimes are random. Every CL_ROUND operations the threads pass their
 * slots on to the next thread (a barrier), so with two threads the blocks
 * one thread allocated are freed by the other. The slots are filled before
 * the timing and emptied after it. ns/op is wall time over all threads'
 * operations (one alloc and one free each).
 * Backends: uslab (uslab_alloc/uslab_free, the size classes), glibc,
 * jemalloc, tcmalloc, mimalloc (malloc/free, the library preloaded), each
 * in a new process of its own (this program, "--classes-child"), called
 * through the same function pointers. "peak RSS" is the
 * child's maximum resident set (getrusage), the tool's own pages
 * included, so the same base for all. Rounds interleave the backends; the
 * ratios are per round (uslab / mimalloc, uslab / the best peer).
 */

#define CL_SLOTS 1000
#define CL_ROUND 20000
#define CL_MIN 8
#define CL_MAX 1024
#define CL_MAX_THREADS 2
#define CL_BACKENDS 5

static const char *const cl_names[CL_BACKENDS] = {"uslab", "glibc", "jemalloc", "tcmalloc",
                                                  "mimalloc"};

struct cl_run {
	void *(*r_malloc)(size_t);
	void (*r_free)(void *);
	void **r_slots[CL_MAX_THREADS]; /* thread t works on r_slots[(t + pass) % T] */
	int r_threads;
	long r_n;
	pthread_barrier_t r_start, r_pass;
};

struct cl_thread {
	struct cl_run *t_run;
	int t_index;
	unsigned t_seed;
	pthread_t t_id;
};

static unsigned cl_rand(unsigned *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void *cl_work(void *arg)
{
	struct cl_thread *t = arg;
	struct cl_run *r = t->t_run;
	unsigned s = t->t_seed;

	pthread_barrier_wait(&r->r_start);
	for (long done = 0, pass = 0; done < r->r_n; pass++) {
		void **slots = r->r_slots[(t->t_index + pass) % r->r_threads];
		long end = done + CL_ROUND < r->r_n ? done + CL_ROUND : r->r_n;
		for (; done < end; done++) {
			unsigned i = cl_rand(&s) % CL_SLOTS;
			void (*f)(void *) = __atomic_load_n(&r->r_free, __ATOMIC_RELAXED);
			f(slots[i]);
			size_t size = CL_MIN + cl_rand(&s) % (CL_MAX - CL_MIN + 1);
			void *(*m)(size_t) = __atomic_load_n(&r->r_malloc, __ATOMIC_RELAXED);
			char *p = m(size);
			if (p == NULL)
				abort();
			*(long *)p = done;
			__asm__ volatile("" : : "r"(p) : "memory");
			slots[i] = p;
		}
		pthread_barrier_wait(&r->r_pass); /* the slots go on to the next thread */
	}
	return NULL;
}

static double cl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* In the child: one timed run; "ns kib" on stdout. Backend 0 is uslab's
 * size classes; any other is this process's malloc (glibc's, or the
 * LD_PRELOAD one the parent chose). */
int bench_classes_child(int b, int threads, long n)
{
	struct cl_run r = {.r_n = n};

	if (threads < 1 || threads > CL_MAX_THREADS || n < 1)
		return 2;
	r.r_malloc = b == 0 ? uslab_alloc : malloc;
	r.r_free = b == 0 ? uslab_free : free;
	r.r_threads = threads;
	unsigned s = 12345;
	for (int k = 0; k < threads; k++) {
		r.r_slots[k] = map(CL_SLOTS * sizeof(void *));
		for (int i = 0; i < CL_SLOTS; i++)
			r.r_slots[k][i] = r.r_malloc(CL_MIN + cl_rand(&s) % (CL_MAX - CL_MIN + 1));
	}
	struct cl_thread t[CL_MAX_THREADS];
	pthread_barrier_init(&r.r_start, NULL, (unsigned)threads + 1);
	pthread_barrier_init(&r.r_pass, NULL, (unsigned)threads);
	for (int i = 0; i < threads; i++) {
		t[i] = (struct cl_thread){
			.t_run = &r, .t_index = i, .t_seed = 2463534242u + (unsigned)i * 7919u};
		if (pthread_create(&t[i].t_id, NULL, cl_work, &t[i]) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&r.r_start);
	double t0 = cl_now();
	for (int i = 0; i < threads; i++)
		pthread_join(t[i].t_id, NULL);
	double ns = (cl_now() - t0) / ((double)n * threads);
	for (int k = 0; k < threads; k++)
		for (int i = 0; i < CL_SLOTS; i++)
			r.r_free(r.r_slots[k][i]);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("%.3f %ld\n", ns, ru.ru_maxrss);
	return 0;
}

/* One run in a new process (this program again, the malloc preloaded for
 * the peers); its ns/op and peak RSS (KiB), or false when the backend
 * cannot run here. */
static bool cl_fork(struct bench *bn, int b, int threads, long n, double *ns, double *kib)
{
	int p[2];
	char buf[256] = "";

	if (b >= 2) {
		struct backend *be = backend_find(bn, cl_names[b]);
		if (be == NULL || be->be_lib == NULL || access(be->be_lib, R_OK) != 0) {
			fprintf(stderr, "classes: %s skipped: not installed\n", cl_names[b]);
			return false;
		}
	}
	fflush(stdout);
	if (pipe(p) != 0)
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char sb[16], st[16], sn[32];
		snprintf(sb, sizeof sb, "%d", b);
		snprintf(st, sizeof st, "%d", threads);
		snprintf(sn, sizeof sn, "%ld", n);
		dup2(p[1], STDOUT_FILENO);
		close(p[0]);
		close(p[1]);
		if (b >= 2)
			setenv("LD_PRELOAD", backend_find(bn, cl_names[b])->be_lib, 1);
		execl(bn->bn_self, bn->bn_self, "--classes-child", sb, st, sn, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	ssize_t len = read(p[0], buf, sizeof buf - 1);
	close(p[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	if (len <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("a classes run failed");
	buf[len] = '\0';
	return sscanf(buf, "%lf %lf", ns, kib) == 2;
}

void bench_classes(struct bench *bn)
{
	int runs = bn->bn_opt.o_runs;
	long n = bn->bn_opt.o_quick ? 200000 : 2000000;
	static double ns[CL_MAX_THREADS][CL_BACKENDS][MAX_RUNS],
		kib[CL_MAX_THREADS][CL_BACKENDS][MAX_RUNS];
	static double vs_mi[CL_MAX_THREADS][MAX_RUNS], vs_best[CL_MAX_THREADS][MAX_RUNS];
	bool have[CL_BACKENDS] = {false};

	for (int t = 0; t < CL_MAX_THREADS; t++)
		for (int b = 0; b < CL_BACKENDS; b++)
			for (int r = 0; r < runs; r++)
				ns[t][b][r] = kib[t][b][r] = -1;
	for (int r = 0; r < runs; r++)
		for (int t = 1; t <= CL_MAX_THREADS; t++)
			for (int b = 0; b < CL_BACKENDS; b++)
				have[b] |=
					cl_fork(bn, b, t, n, &ns[t - 1][b][r], &kib[t - 1][b][r]);
	printf("\n### classes: sizes %d..%d B, random lifetimes, %d slots per thread passed on every "
	       "%d operations (%d rounds, uslab %s)\n\n",
	       CL_MIN, CL_MAX, CL_SLOTS, CL_ROUND, runs, uslab_mode());
	printf("| backend | threads | ns/op median | min | peak RSS MiB |\n|---|---:|---:|---:|---:|\n");
	for (int t = 0; t < CL_MAX_THREADS; t++)
		for (int b = 0; b < CL_BACKENDS; b++)
			if (have[b])
				printf("| %s | %d | %.2f | %.2f | %.1f |\n", cl_names[b], t + 1,
				       median(ns[t][b], runs), minimum(ns[t][b], runs),
				       median(kib[t][b], runs) / 1024);
	printf("\n| ratio (per round, median [min, max]) | threads | value |\n|---|---:|---:|\n");
	for (int t = 0; t < CL_MAX_THREADS; t++) {
		for (int r = 0; r < runs; r++) {
			double best = -1;
			for (int b = 1; b < CL_BACKENDS; b++)
				if (ns[t][b][r] > 0 && (best < 0 || ns[t][b][r] < best))
					best = ns[t][b][r];
			vs_mi[t][r] = ns[t][4][r] > 0 ? ns[t][0][r] / ns[t][4][r] : -1;
			vs_best[t][r] = best > 0 ? ns[t][0][r] / best : -1;
		}
		if (have[4])
			printf("| uslab / mimalloc (time) | %d | %.2f [%.2f, %.2f] |\n", t + 1,
			       median(vs_mi[t], runs), minimum(vs_mi[t], runs),
			       maximum(vs_mi[t], runs));
		printf("| uslab / best peer (time) | %d | %.2f [%.2f, %.2f] |\n", t + 1,
		       median(vs_best[t], runs), minimum(vs_best[t], runs),
		       maximum(vs_best[t], runs));
	}
	fflush(stdout);
}
