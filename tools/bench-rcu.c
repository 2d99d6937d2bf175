/* SPDX-License-Identifier: MIT */
/* uslab-bench --workload rcu: deferred frees, batched per magazine, against call_rcu and synchronize_rcu. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu/urcu-bp.h>

#include "bench.h"

/*
 * Each thread runs N times: allocate an object from a uslab cache, write a
 * word in it, free it after a grace period. Three ways to free it:
 *   free_rcu   uslab_cache_free_rcu(): no rcu_head, batched per CPU, one
 *              grace period per magazine (slab/rcu.c);
 *   call_rcu   liburcu-bp's urcu_bp_call_rcu() on an rcu_head in the object,
 *              whose callback uslab_cache_free()s it: one callback per object;
 *   sync       urcu_bp_synchronize_rcu(), then uslab_cache_free(): one grace
 *              period per free (N is 1/100 of the others: it is that slow).
 * The time is from the first allocation to the end of uslab_rcu_barrier()
 * or urcu_bp_barrier(), so the work of liburcu's worker thread (on the same
 * two cores) is inside it; ns per object = time / objects. "peak waiting"
 * is the most objects freed and not yet back at any time: sampled by the
 * main thread every millisecond for call_rcu (issued - completed), and
 * uslab's own high-water mark (rcu_peak, plus the partial batches) for
 * free_rcu. Rounds interleave the methods; the table gives the median and
 * minimum over rounds, and the per-round ratios.
 */

#define RCU_OBJ 64
#define RCU_METHODS 3
#define RCU_MAX_THREADS 2

struct rcu_obj {
	struct rcu_head o_head; /* call_rcu only; free_rcu needs none */
	uint64_t o_word;
	char o_pad[RCU_OBJ - sizeof(struct rcu_head) - sizeof(uint64_t)];
};

enum rcu_method { M_FREE_RCU, M_CALL_RCU, M_SYNC };
static const char *const rcu_method_names[RCU_METHODS] = {"uslab free_rcu", "liburcu call_rcu",
                                                          "synchronize_rcu per free"};

static struct uslab_cache *rcu_cache;
static uint64_t rcu_issued, rcu_done; /* call_rcu: objects given, callbacks run */

static void rcu_cb(struct rcu_head *h)
{
	uslab_cache_free(rcu_cache, h);
	__atomic_fetch_add(&rcu_done, 1, __ATOMIC_RELAXED);
}

struct rcu_worker {
	enum rcu_method w_method;
	long w_n;
	pthread_t w_thread;
};

static void *rcu_work(void *arg)
{
	struct rcu_worker *w = arg;

	for (long i = 0; i < w->w_n; i++) {
		struct rcu_obj *o = uslab_cache_alloc(rcu_cache);
		if (o == NULL)
			abort();
		o->o_word = (uint64_t)i;
		__asm__ volatile("" : : "r"(o) : "memory");
		switch (w->w_method) {
		case M_FREE_RCU:
			uslab_cache_free_rcu(rcu_cache, o);
			break;
		case M_CALL_RCU:
			__atomic_fetch_add(&rcu_issued, 1, __ATOMIC_RELAXED);
			urcu_bp_call_rcu(&o->o_head, rcu_cb);
			break;
		case M_SYNC:
			urcu_bp_synchronize_rcu();
			uslab_cache_free(rcu_cache, o);
			break;
		}
	}
	return NULL;
}

static double rcu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One run: ns per object and the peak waiting. */
static void rcu_run(enum rcu_method m, int threads, long n, double *ns, uint64_t *peak)
{
	struct rcu_worker w[RCU_MAX_THREADS];
	uint64_t most = 0;

	rcu_cache = uslab_cache_create("bench_rcu", sizeof(struct rcu_obj), NULL);
	if (rcu_cache == NULL)
		abort();
	rcu_issued = rcu_done = 0;
	double t0 = rcu_now();
	for (int i = 0; i < threads; i++) {
		w[i] = (struct rcu_worker){.w_method = m, .w_n = n};
		if (pthread_create(&w[i].w_thread, NULL, rcu_work, &w[i]) != 0)
			abort();
	}
	int live = threads;
	while (live > 0) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
		uint64_t waiting = __atomic_load_n(&rcu_issued, __ATOMIC_RELAXED) -
		                   __atomic_load_n(&rcu_done, __ATOMIC_RELAXED);
		if (m == M_FREE_RCU) {
			struct uslab_stats st;
			uslab_cache_stats(rcu_cache, &st);
			waiting = st.rcu_objs;
		}
		if (waiting > most)
			most = waiting;
		live = 0;
		for (int i = 0; i < threads; i++)
			if (!pthread_equal(w[i].w_thread, pthread_self())) {
				if (pthread_tryjoin_np(w[i].w_thread, NULL) == 0)
					w[i].w_thread = pthread_self();
				else
					live++;
			}
	}
	if (m == M_FREE_RCU)
		uslab_rcu_barrier();
	else
		urcu_bp_barrier();
	double t1 = rcu_now();
	if (m == M_FREE_RCU) {
		struct uslab_stats st;
		uslab_cache_stats(rcu_cache, &st);
		if (st.rcu_peak > most)
			most = st.rcu_peak;
	}
	if (uslab_cache_destroy(rcu_cache) != 0)
		abort();
	*ns = (t1 - t0) * 1e9 / ((double)n * threads);
	*peak = most;
}

static int rcu_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double rcu_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, rcu_cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_rcu(const struct bench *bn)
{
	int runs = bn->bn_opt.o_runs;
	long n = bn->bn_opt.o_quick ? 100000 : 2000000;
	static double ns[RCU_MAX_THREADS][RCU_METHODS][MAX_RUNS];
	static double ratio_call[RCU_MAX_THREADS][MAX_RUNS], ratio_sync[RCU_MAX_THREADS][MAX_RUNS];
	static uint64_t peak[RCU_MAX_THREADS][RCU_METHODS];

	memset(peak, 0, sizeof peak);
	for (int r = 0; r < runs; r++)
		for (int t = 1; t <= RCU_MAX_THREADS; t++)
			for (int m = 0; m < RCU_METHODS; m++) {
				uint64_t p;
				rcu_run((enum rcu_method)m, t, m == M_SYNC ? n / 100 : n,
				        &ns[t - 1][m][r], &p);
				if (p > peak[t - 1][m])
					peak[t - 1][m] = p;
			}
	printf("\n### rcu: free after a grace period, %d-byte objects (%d rounds, %s)\n\n", RCU_OBJ,
	       runs, uslab_mode());
	printf("| method | threads | ns/object median | min | peak waiting |\n");
	printf("|---|---:|---:|---:|---:|\n");
	for (int t = 0; t < RCU_MAX_THREADS; t++)
		for (int m = 0; m < RCU_METHODS; m++) {
			double v[MAX_RUNS];
			memcpy(v, ns[t][m], sizeof(double) * (size_t)runs);
			double med = rcu_median(v, runs);
			printf("| %s | %d | %.1f | %.1f | %llu |\n", rcu_method_names[m], t + 1,
			       med, v[0], (unsigned long long)peak[t][m]);
		}
	printf("\n| ratio (per round, median [min, max]) | threads | value |\n|---|---:|---:|\n");
	for (int t = 0; t < RCU_MAX_THREADS; t++) {
		for (int r = 0; r < runs; r++) {
			ratio_call[t][r] = ns[t][M_CALL_RCU][r] / ns[t][M_FREE_RCU][r];
			ratio_sync[t][r] = ns[t][M_SYNC][r] / ns[t][M_FREE_RCU][r];
		}
		double med = rcu_median(ratio_call[t], runs);
		printf("| call_rcu / free_rcu (time per object) | %d | %.1fx [%.1f, %.1f] |\n",
		       t + 1, med, ratio_call[t][0], ratio_call[t][runs - 1]);
		med = rcu_median(ratio_sync[t], runs);
		printf("| synchronize_rcu / free_rcu (time per object) | %d | %.0fx [%.0f, %.0f] |\n",
		       t + 1, med, ratio_sync[t][0], ratio_sync[t][runs - 1]);
	}
	fflush(stdout);
}
