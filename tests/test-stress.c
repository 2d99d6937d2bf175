/* SPDX-License-Identifier: MIT */
/* Multi-threaded stress suite: oversubscription, signals, cross-thread frees, reap, churn, fork. */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#if USLAB_TEST_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "uslab.h"
#include "testutil.h"

/*
 * Design
 *
 * 1. The oracle is an owner tag in every object. A thread that gets an
 *    object claims it with a compare-and-swap of the tag from 0 to its own
 *    id, and sets it back to 0 just before freeing it. Objects inside the
 *    allocator therefore always carry tag 0, so a claim that finds another
 *    id means the object was handed out twice. A stamp word beside the tag
 *    (written by the owner, checked before the free) catches an owner whose
 *    object was overwritten. Caches keep object bytes intact (DESIGN.md §2),
 *    so the tags survive inside the allocator.
 *
 * 2. Accounting. Every thread counts its allocations and frees per cache
 *    and frees whatever it holds before it exits; after the join, both sums
 *    agree, uslab_cache_destroy() must return 0 (any object lost in a
 *    magazine keeps a slab busy: EBUSY), and for the cache with a ctor and
 *    a dtor the two call counts must be equal after the destroy.
 *
 * 3. Abort paths. A SIGUSR1 handler looks at the interrupted instruction
 *    pointer: if the 4 bytes before it inside libuslab's text are the rseq
 *    signature, the kernel has just moved the thread to an abort handler,
 *    so the signal hit a critical section. That counts signal aborts in
 *    process, and there (the thread is inside the assembly, holding no lock
 *    and not in malloc) the handler may use the SAME cache: if the kernel
 *    did not abort the section, the resumed section would commit a stale
 *    count and the tags would catch it. Preemption aborts are counted from
 *    outside by tests/stress-aborts.sh with perf (rseq:rseq_ip_fixup).
 *
 * 4. Negative control: a build with -Drseq_negative_control=true leaves out
 *    the arming store; the oversubscribed test must then fail
 *    (tests/negative-control.sh).
 *
 * Durations: USLAB_STRESS_SECONDS (per test, default 3; 0.5 under
 * valgrind). Failures are reported once on stderr from the thread that saw
 * them, and asserted in the test after the join.
 */

#define HOLD_MAX 512  /* objects a worker holds per cache, at most */
#define PLAIN_SIZE 64 /* cache without ctor */
#define CTOR_SIZE 200 /* cache with ctor/dtor: crosses the 64..256 magazine class */
#define CTOR_MAGIC 0xc7011eda5eedull
#define HANDLER_BIT (1ull << 63) /* tag of objects a signal handler holds */
#define CHILD_BIT (1ull << 62)   /* tag of objects a forked child holds */
#define RING_SIZE 256
#define RSEQ_SIG_BYTES 0x53053053u

/* The start of every object: owner tag (atomic), stamp, ctor magic. */
struct obj {
	uint64_t o_owner;
	uint64_t o_stamp;
	uint64_t o_magic;
};

enum { C_PLAIN, C_CTOR, NCACHES };

/* One thread's state. Counters are private until the join. */
struct worker {
	pthread_t w_thread;
	uint64_t w_tag;
	uint64_t w_rng;
	uint64_t w_seq;
	uint64_t w_max_ops; /* 0: until g_stop */
	uint64_t w_ops;
	uint64_t w_allocs[NCACHES], w_frees[NCACHES];
	volatile uint64_t w_sigs, w_sig_aborts, w_sig_ops; /* written by the handler */
	volatile uint64_t w_sig_busy; /* handler allocations refused: EDEADLK */
	size_t w_nheld[NCACHES];
	void *w_held[NCACHES][HOLD_MAX];
	uint64_t w_stamp[NCACHES][HOLD_MAX];
};

/* A single-producer single-consumer ring for cross-thread frees. */
struct ring {
	void *r_obj[RING_SIZE];
	uint64_t r_stamp[RING_SIZE];
	size_t r_head; /* consumer, atomic */
	size_t r_tail; /* producer, atomic */
	int r_done;    /* producer finished, atomic */
};

struct plan {
	const char *p_name;
	unsigned p_workers; /* random alloc/free workers */
	unsigned p_pairs;   /* producer/consumer pairs */
	unsigned p_churn;   /* short-lived threads kept alive */
	bool p_signals;     /* a thread sending SIGUSR1 to the workers */
	bool p_reaper;      /* a thread calling uslab_cache_reap() */
	bool p_fork;        /* fork() from the test thread while busy */
	bool p_debug;       /* a thread switching the caches' debug flags */
};

/* ---- Static data ---- */

static struct uslab_cache *g_cache[NCACHES];
static const char *const g_cache_name[NCACHES] = {"stress-plain", "stress-ctor"};
static int g_stop;                                      /* atomic: workers leave their loops */
static uint64_t g_next_tag;                             /* atomic: thread tags */
static uint64_t g_ctor_calls, g_dtor_calls, g_dtor_bad; /* atomic */
static uint64_t g_errors;                               /* atomic: oracle violations */
static char g_first_error[512];                         /* written once, by the first error */
static int g_error_claimed;                             /* atomic */
static bool g_rseq;                                     /* uslab_mode() says rseq */
static uintptr_t g_text_lo, g_text_hi;                  /* libuslab's executable segment */
static __thread struct worker *tl_worker;

static pthread_mutex_t g_orphan_lock = PTHREAD_MUTEX_INITIALIZER; /* g_orphan*, below */
static void *g_orphan[NCACHES][4096];
static uint64_t g_orphan_tag[NCACHES][4096];
static size_t g_norphan[NCACHES];
static uint64_t g_orphan_allocs[NCACHES], g_orphan_frees[NCACHES]; /* accounting moved here */

static uint64_t g_short_allocs[NCACHES], g_short_frees[NCACHES]; /* atomic: churn threads */
static uint64_t g_short_threads;                                 /* atomic */

/* ---- Helpers ---- */

static double stress_seconds(void)
{
	const char *env = getenv("USLAB_STRESS_SECONDS");
	if (env != NULL && atof(env) > 0)
		return atof(env);
#if USLAB_TEST_HAVE_VALGRIND_H
	if (RUNNING_ON_VALGRIND)
		return 0.5;
#endif
	return 3.0;
}

static bool under_valgrind(void)
{
#if USLAB_TEST_HAVE_VALGRIND_H
	return RUNNING_ON_VALGRIND;
#else
	return false;
#endif
}

static bool under_tsan(void)
{
#if defined(__SANITIZE_THREAD__)
	return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
	return true;
#else
	return false;
#endif
#else
	return false;
#endif
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static bool stopping(void)
{
	return __atomic_load_n(&g_stop, __ATOMIC_RELAXED) != 0;
}

/* Record an oracle violation: the first one is kept and printed; all stop the run. */
__attribute__((format(printf, 1, 2))) static void stress_error(const char *fmt, ...)
{
	__atomic_add_fetch(&g_errors, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
	if (__atomic_exchange_n(&g_error_claimed, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g_first_error, sizeof g_first_error, fmt, ap);
	va_end(ap);
	fprintf(stderr, "# stress: %s\n", g_first_error);
}

/* Batch sizes: mostly small (fast-path hits), some across magazine
 * boundaries (M = 16..128 rounds, slots of 2M). */
static size_t pick_batch(uint64_t *rng)
{
	uint64_t r = rnd(rng) % 100;
	if (r < 55)
		return 1 + rnd(rng) % 4;
	if (r < 80)
		return 5 + rnd(rng) % 36;
	if (r < 95)
		return 41 + rnd(rng) % 100;
	return 141 + rnd(rng) % 160;
}

/* ---- The oracle ---- */

/* Claim @o (just allocated from cache @ci) for @tag; false if someone owns it. */
static bool obj_claim(int ci, struct obj *o, uint64_t tag)
{
	uint64_t expected = 0;

	if (!__atomic_compare_exchange_n(&o->o_owner, &expected, tag, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE)) {
		stress_error("double hand-out: %s object %p claimed by %#llx but owned by %#llx",
		             g_cache_name[ci], (void *)o, (unsigned long long)tag,
		             (unsigned long long)expected);
		return false;
	}
	if (ci == C_CTOR && o->o_magic != CTOR_MAGIC) {
		stress_error("%s object %p not in its constructed state (magic %#llx)",
		             g_cache_name[ci], (void *)o, (unsigned long long)o->o_magic);
		return false;
	}
	return true;
}

/* Release @o (owned by @tag, stamped @stamp) before it is freed. */
static void obj_release(int ci, struct obj *o, uint64_t tag, uint64_t stamp)
{
	uint64_t expected = tag;

	if (o->o_stamp != stamp)
		stress_error("%s object %p of %#llx overwritten: stamp %#llx, expected %#llx",
		             g_cache_name[ci], (void *)o, (unsigned long long)tag,
		             (unsigned long long)o->o_stamp, (unsigned long long)stamp);
	if (!__atomic_compare_exchange_n(&o->o_owner, &expected, 0, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE))
		stress_error("%s object %p of %#llx taken over by %#llx while held",
		             g_cache_name[ci], (void *)o, (unsigned long long)tag,
		             (unsigned long long)expected);
}

static int ctor_obj(void *p, void *arg)
{
	struct obj *o = p;

	(void)arg;
	o->o_owner = 0;
	o->o_stamp = 0;
	o->o_magic = CTOR_MAGIC;
	__atomic_add_fetch(&g_ctor_calls, 1, __ATOMIC_RELAXED);
	return 0;
}

static void dtor_obj(void *p, void *arg)
{
	struct obj *o = p;

	(void)arg;
	if (o->o_magic != CTOR_MAGIC || __atomic_load_n(&o->o_owner, __ATOMIC_RELAXED) != 0)
		__atomic_add_fetch(&g_dtor_bad, 1, __ATOMIC_RELAXED);
	o->o_magic = 0;
	__atomic_add_fetch(&g_dtor_calls, 1, __ATOMIC_RELAXED);
}

/* ---- Random workers ---- */

/* Allocate @n objects of cache @ci into the worker's hand. */
static void worker_alloc(struct worker *w, int ci, size_t n)
{
	void *objs[HOLD_MAX];
	size_t got = 0;

	if (rnd(&w->w_rng) % 3 == 0) {
		got = uslab_cache_alloc_bulk(g_cache[ci], objs, n);
		if (got < n)
			stress_error("alloc_bulk(%s, %zu) gave %zu: %s", g_cache_name[ci], n, got,
			             strerror(errno));
	} else {
		for (; got < n; got++) {
			objs[got] = uslab_cache_alloc(g_cache[ci]);
			if (objs[got] == NULL) {
				stress_error("alloc(%s) failed: %s", g_cache_name[ci],
				             strerror(errno));
				break;
			}
		}
	}
	w->w_allocs[ci] += got;
	for (size_t i = 0; i < got; i++) {
		struct obj *o = objs[i];
		if (!obj_claim(ci, o, w->w_tag)) {
			w->w_frees[ci]++; /* not ours to free: leave it out of the books */
			continue;
		}
		uint64_t stamp = w->w_tag << 32 ^ ++w->w_seq;
		o->o_stamp = stamp;
		w->w_held[ci][w->w_nheld[ci]] = o;
		w->w_stamp[ci][w->w_nheld[ci]++] = stamp;
	}
}

/* Free @n of the worker's objects of cache @ci: newest, oldest or random ones,
 * one by one, in bulk (with a NULL or two that free_bulk skips), or with
 * free_rcu. */
static void worker_free(struct worker *w, int ci, size_t n)
{
	void *objs[HOLD_MAX + HOLD_MAX / 32]; /* room for the NULLs */
	size_t k = 0, *nh = &w->w_nheld[ci];
	unsigned how = (unsigned)(rnd(&w->w_rng) % 3);

	for (size_t i = 0; i < n; i++) {
		size_t at = how == 0 ? *nh - 1 : how == 1 ? 0 : (size_t)(rnd(&w->w_rng) % *nh);
		struct obj *o = w->w_held[ci][at];
		obj_release(ci, o, w->w_tag, w->w_stamp[ci][at]);
		w->w_held[ci][at] = w->w_held[ci][*nh - 1];
		w->w_stamp[ci][at] = w->w_stamp[ci][*nh - 1];
		--*nh;
		objs[k++] = o;
		if (k % 64 == 17) /* one NULL per 64 */
			objs[k++] = NULL;
	}
	unsigned way = (unsigned)(rnd(&w->w_rng) % 4);
	if (way == 0) {
		uslab_cache_free_bulk(g_cache[ci], objs, k);
	} else if (way == 1) { /* after a grace period: back some ms later */
		for (size_t i = 0; i < k; i++)
			uslab_cache_free_rcu(g_cache[ci], objs[i]);
	} else {
		for (size_t i = 0; i < k; i++)
			uslab_cache_free(g_cache[ci], objs[i]);
	}
	w->w_frees[ci] += n;
}

/* One step of the random walk: allocate or free a batch, biased so the hand
 * hovers around half of HOLD_MAX. */
static void worker_step(struct worker *w)
{
	int ci = rnd(&w->w_rng) % 4 == 0 ? C_CTOR : C_PLAIN;
	size_t held = w->w_nheld[ci];
	size_t n = pick_batch(&w->w_rng);

	if (held == 0 || (held < HOLD_MAX && rnd(&w->w_rng) % HOLD_MAX >= held)) {
		if (n > HOLD_MAX - held)
			n = HOLD_MAX - held;
		worker_alloc(w, ci, n);
	} else {
		if (n > held)
			n = held;
		worker_free(w, ci, n);
	}
	w->w_ops++;
}

static void worker_free_all(struct worker *w)
{
	for (int ci = 0; ci < NCACHES; ci++)
		if (w->w_nheld[ci] != 0)
			worker_free(w, ci, w->w_nheld[ci]);
}

static void worker_init(struct worker *w, uint64_t max_ops)
{
	memset(w, 0, sizeof *w);
	w->w_tag = __atomic_add_fetch(&g_next_tag, 1, __ATOMIC_RELAXED);
	w->w_rng = 0x9e3779b97f4a7c15ull * (w->w_tag + 1) ^ (uint64_t)time(NULL);
	w->w_max_ops = max_ops;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	tl_worker = w;
	while (!stopping() && (w->w_max_ops == 0 || w->w_ops < w->w_max_ops))
		worker_step(w);
	worker_free_all(w);
	return NULL;
}

/* ---- Signals ---- */

/* The handler's use of the cache: two objects, claimed, released and freed
 * in swapped order, so the slot's top rounds change under the interrupted
 * section. Only called when that section was aborted (see §3). */
/* A signal handler allocates and frees, whatever the thread was doing: in
 * a hit, in a slow path holding a lock (the allocation may then fail with
 * EDEADLK, and a free is deferred: uslab.h), in both modes. Any other
 * failure is an error. */
static void handler_ops(struct worker *w)
{
	errno = 0;
	struct obj *a = uslab_cache_alloc(g_cache[C_PLAIN]);
	if (a == NULL && errno != EDEADLK)
		stress_error("handler alloc: %s", strerror(errno));
	struct obj *b = uslab_cache_alloc(g_cache[C_PLAIN]);
	if (b == NULL && errno != EDEADLK)
		stress_error("handler alloc: %s", strerror(errno));
	w->w_sig_busy += (a == NULL) + (b == NULL);
	uint64_t tag = w->w_tag | HANDLER_BIT;

	if (a != NULL && obj_claim(C_PLAIN, a, tag))
		obj_release(C_PLAIN, a, tag, a->o_stamp);
	if (b != NULL && obj_claim(C_PLAIN, b, tag))
		obj_release(C_PLAIN, b, tag, b->o_stamp);
	uslab_cache_free(g_cache[C_PLAIN], b);
	/* free_rcu from a handler too: never waits for a lock there */
	if (w->w_sig_ops % 2 == 0)
		uslab_cache_free_rcu(g_cache[C_PLAIN], a);
	else
		uslab_cache_free(g_cache[C_PLAIN], a);
	w->w_sig_ops++;
}

static void on_sigusr1(int sig, siginfo_t *si, void *ucv)
{
	struct worker *w = tl_worker;
	int saved = errno;

	(void)sig;
	(void)si;
	if (w == NULL)
		return;
	/* relaxed atomics: the signaller reads it (signaller_main) */
	__atomic_fetch_add(&w->w_sigs, 1, __ATOMIC_RELAXED);
	/* SA_NODEFER: a signal may land in this handler and nest (uslab's
	 * deferred frees must survive that); three levels at most. (The
	 * signaller keeps the kernel from stacking frames faster than the
	 * thread runs: signaller_main.) */
	static __thread unsigned depth;
	if (depth == 3)
		return;
	depth++;
#if defined(__x86_64__)
	const ucontext_t *uc = ucv;
	uintptr_t ip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
	uint32_t before;
	if (ip >= g_text_lo + 4 && ip < g_text_hi) {
		memcpy(&before, (const void *)(ip - 4), 4);
		if (before == RSEQ_SIG_BYTES)
			w->w_sig_aborts++;
	}
#else
	(void)ucv;
#endif
	handler_ops(w);
	depth--;
	errno = saved;
}

static int text_of(struct dl_phdr_info *info, size_t size, void *arg)
{
	uintptr_t base = *(uintptr_t *)arg;

	(void)size;
	if (info->dlpi_addr != base)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		void *(*f)(struct uslab_cache *) = uslab_cache_alloc;
		uintptr_t fn;
		memcpy(&fn, &f, sizeof fn);
		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && fn >= lo &&
		    fn < lo + ph->p_memsz) {
			g_text_lo = lo;
			g_text_hi = lo + ph->p_memsz;
			return 1;
		}
	}
	return 0;
}

/* Find libuslab's executable segment (the one holding uslab_cache_alloc). */
static void find_text(void)
{
	void *(*fn)(struct uslab_cache *) = uslab_cache_alloc;
	void *addr;
	Dl_info di;

	if (g_text_hi != 0)
		return;
	memcpy(&addr, &fn, sizeof addr);
	if (dladdr(addr, &di) == 0)
		return;
	uintptr_t base = (uintptr_t)di.dli_fbase;
	/* dlpi_addr is the load bias: 0 for a non-PIE executable. */
	dl_iterate_phdr(text_of, &base);
	if (g_text_hi == 0) {
		base = 0;
		dl_iterate_phdr(text_of, &base);
	}
}

struct signaller {
	pthread_t s_thread;
	struct worker **s_workers;
	unsigned s_n;
	uint64_t s_sent;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A storm the threads can live through: a worker gets its next signal
 * 100 us after the last once its handler was entered for it (so signals
 * still land in handlers and nest), or after 1 ms (SIGUSR1 does not queue:
 * one sent while another was pending merges with it). The 100 us keep the
 * handlers' frees during one busy stretch of the thread (a lock holder
 * preempted for a time slice) within what uslab can defer. Sent blindly, signals came
 * faster than the kernel could build their frames on this VM's AVX-512
 * CPU (~3.5 KiB each, a new stack page every other frame): the thread
 * stacked frames without running an instruction until its stack
 * overflowed (SA_NODEFER). */
static void *signaller_main(void *arg)
{
	struct signaller *s = arg;
	uint64_t *seen = calloc(s->s_n, sizeof *seen);
	uint64_t *when = calloc(s->s_n, sizeof *when);

	if (seen == NULL || when == NULL) {
		stress_error("signaller: out of memory");
		free(seen);
		free(when);
		return NULL;
	}
	while (!stopping()) {
		uint64_t now = mono_ns();
		for (unsigned i = 0; i < s->s_n && !stopping(); i++) {
			uint64_t sigs = __atomic_load_n(&s->s_workers[i]->w_sigs, __ATOMIC_RELAXED);
			if (when[i] != 0 && (now - when[i] < 100000 ||
			                     (sigs == seen[i] && now - when[i] < 1000000)))
				continue;
			seen[i] = sigs;
			when[i] = now;
			if (pthread_kill(s->s_workers[i]->w_thread, SIGUSR1) == 0)
				s->s_sent++;
		}
	}
	free(seen);
	free(when);
	return NULL;
}

/* ---- Reaper ---- */

struct reaper {
	pthread_t r_thread;
	uint64_t r_reaps, r_bytes;
};

static void *reaper_main(void *arg)
{
	struct reaper *r = arg;

	while (!stopping()) {
		for (int ci = 0; ci < NCACHES; ci++)
			r->r_bytes += uslab_cache_reap(g_cache[ci]);
		r->r_reaps++;
		if (r->r_reaps % 16 == 0)
			sched_yield();
	}
	return NULL;
}

/* ---- Debug switching ---- */

/* Switch F and U on and off on both caches while everything runs: no
 * false report (an abort), and the oracle's invariants hold (P is left
 * out: the oracle reads free objects' bytes, which poison rewrites). */
struct debugger {
	pthread_t d_thread;
	uint64_t d_switches;
};

static void *debugger_main(void *arg)
{
	static const unsigned modes[] = {0, USLAB_DEBUG_CHECKS, USLAB_DEBUG_AUDIT,
	                                 USLAB_DEBUG_CHECKS | USLAB_DEBUG_AUDIT};
	struct debugger *d = arg;

	while (!stopping()) {
		for (int ci = 0; ci < NCACHES; ci++) {
			unsigned m = modes[(d->d_switches + (uint64_t)ci) % 4];
			if (uslab_cache_set_debug(g_cache[ci], m) != 0)
				stress_error("set_debug(%#x): %s", m, strerror(errno));
		}
		d->d_switches++;
		sleep_s(0.002);
	}
	for (int ci = 0; ci < NCACHES; ci++)
		uslab_cache_set_debug(g_cache[ci], 0);
	return NULL;
}

/* ---- Producers and consumers ---- */

struct pair {
	pthread_t p_prod, p_cons;
	struct ring p_ring;
	uint64_t p_tag_prod, p_tag_cons;
	uint64_t p_rng, p_rng_cons; /* the producer's and the consumer's */
	uint64_t p_produced[NCACHES], p_consumed[NCACHES];
};

static int obj_cache(void *o)
{
	/* Stamp bit 0 says which cache the producer took it from. */
	return (int)(((struct obj *)o)->o_stamp & 1);
}

static void *producer_main(void *arg)
{
	struct pair *p = arg;
	struct ring *r = &p->p_ring;
	void *objs[64];
	uint64_t seq = 0;

	while (!stopping()) {
		int ci = rnd(&p->p_rng) % 4 == 0 ? C_CTOR : C_PLAIN;
		size_t n = 1 + (size_t)(rnd(&p->p_rng) % 64), got = 0;
		if (rnd(&p->p_rng) % 2 == 0) {
			got = uslab_cache_alloc_bulk(g_cache[ci], objs, n);
		} else {
			while (got < n && (objs[got] = uslab_cache_alloc(g_cache[ci])) != NULL)
				got++;
		}
		if (got < n)
			stress_error("producer: alloc(%s) failed: %s", g_cache_name[ci],
			             strerror(errno));
		for (size_t i = 0; i < got; i++) {
			struct obj *o = objs[i];
			p->p_produced[ci]++;
			if (!obj_claim(ci, o, p->p_tag_prod)) {
				p->p_consumed[ci]++; /* keep the books even */
				continue;
			}
			uint64_t stamp = (++seq << 1) | (uint64_t)ci;
			o->o_stamp = stamp;
			size_t tail = __atomic_load_n(&r->r_tail, __ATOMIC_RELAXED);
			while (tail - __atomic_load_n(&r->r_head, __ATOMIC_ACQUIRE) == RING_SIZE)
				sched_yield();
			r->r_obj[tail % RING_SIZE] = o;
			r->r_stamp[tail % RING_SIZE] = stamp;
			__atomic_store_n(&r->r_tail, tail + 1, __ATOMIC_RELEASE);
		}
	}
	__atomic_store_n(&r->r_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *consumer_main(void *arg)
{
	struct pair *p = arg;
	struct ring *r = &p->p_ring;
	void *batch[NCACHES][128];
	size_t nb[NCACHES] = {0, 0};
	uint64_t rng = p->p_rng_cons;

	for (;;) {
		size_t head = __atomic_load_n(&r->r_head, __ATOMIC_RELAXED);
		int done = __atomic_load_n(&r->r_done, __ATOMIC_ACQUIRE);
		if (head == __atomic_load_n(&r->r_tail, __ATOMIC_ACQUIRE)) {
			if (done)
				break;
			sched_yield();
			continue;
		}
		struct obj *o = r->r_obj[head % RING_SIZE];
		uint64_t stamp = r->r_stamp[head % RING_SIZE];
		__atomic_store_n(&r->r_head, head + 1, __ATOMIC_RELEASE);
		int ci = obj_cache(o);
		/* Take ownership over from the producer, then give it up. */
		uint64_t expected = p->p_tag_prod;
		if (!__atomic_compare_exchange_n(&o->o_owner, &expected, p->p_tag_cons, false,
		                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			stress_error(
				"cross-thread: %s object %p from %#llx owned by %#llx on arrival",
				g_cache_name[ci], (void *)o, (unsigned long long)p->p_tag_prod,
				(unsigned long long)expected);
		obj_release(ci, o, p->p_tag_cons, stamp);
		batch[ci][nb[ci]++] = o;
		p->p_consumed[ci]++;
		size_t want = 1 + (size_t)(rnd(&rng) % 128);
		if (nb[ci] >= want) {
			if (rnd(&rng) % 2 == 0) {
				uslab_cache_free_bulk(g_cache[ci], batch[ci], nb[ci]);
			} else {
				for (size_t i = 0; i < nb[ci]; i++)
					uslab_cache_free(g_cache[ci], batch[ci][i]);
			}
			nb[ci] = 0;
		}
	}
	for (int ci = 0; ci < NCACHES; ci++)
		uslab_cache_free_bulk(g_cache[ci], batch[ci], nb[ci]);
	return NULL;
}

/* ---- Short-lived threads ---- */

/* A short thread: a few random steps, then it either frees what it holds or
 * leaves it in the orphan pool for another thread to free. */
static void *short_main(void *arg)
{
	struct worker *w = arg;

	worker_main(w); /* frees everything at the end... */
	return NULL;
}

static void *short_orphaning_main(void *arg)
{
	struct worker *w = arg;

	tl_worker = w;
	while (!stopping() && w->w_ops < w->w_max_ops)
		worker_step(w);
	pthread_mutex_lock(&g_orphan_lock);
	for (int ci = 0; ci < NCACHES; ci++) {
		while (w->w_nheld[ci] > 0 && g_norphan[ci] < 4096) {
			size_t i = --w->w_nheld[ci];
			struct obj *o = w->w_held[ci][i];
			if (o->o_stamp != w->w_stamp[ci][i])
				stress_error("orphan %p overwritten", (void *)o);
			g_orphan[ci][g_norphan[ci]] = o;
			g_orphan_tag[ci][g_norphan[ci]++] = w->w_tag;
			w->w_frees[ci]++;
			g_orphan_allocs[ci]++;
		}
	}
	pthread_mutex_unlock(&g_orphan_lock);
	worker_free_all(w); /* what did not fit in the pool */
	return NULL;
}

/* Free every orphan (objects whose allocating thread has exited). */
static void orphans_free(uint64_t tag)
{
	pthread_mutex_lock(&g_orphan_lock);
	for (int ci = 0; ci < NCACHES; ci++) {
		for (size_t i = 0; i < g_norphan[ci]; i++) {
			struct obj *o = g_orphan[ci][i];
			uint64_t expected = g_orphan_tag[ci][i];
			if (!__atomic_compare_exchange_n(&o->o_owner, &expected, tag, false,
			                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
				stress_error("orphan %p of %#llx owned by %#llx", (void *)o,
				             (unsigned long long)g_orphan_tag[ci][i],
				             (unsigned long long)expected);
			__atomic_store_n(&o->o_owner, 0, __ATOMIC_RELEASE);
			uslab_cache_free(g_cache[ci], o);
			g_orphan_frees[ci]++;
		}
		g_norphan[ci] = 0;
	}
	pthread_mutex_unlock(&g_orphan_lock);
}

struct spawner {
	pthread_t sp_thread;
	/* The live threads' workers; kept here, on the forking thread's stack,
	 * so a forked child under valgrind still sees them reachable. */
	struct worker *sp_w[16];
	unsigned sp_live;
	uint64_t sp_created;
	uint64_t sp_rng;
};

/* Add a joined short thread's books to the totals. */
static void short_account(const struct worker *w)
{
	for (int ci = 0; ci < NCACHES; ci++) {
		__atomic_add_fetch(&g_short_allocs[ci], w->w_allocs[ci], __ATOMIC_RELAXED);
		__atomic_add_fetch(&g_short_frees[ci], w->w_frees[ci], __ATOMIC_RELAXED);
	}
}

/* Keep sp_live short threads running, each replaced as soon as the oldest
 * is joined. The workers (sp_w) are allocated by run_plan(). */
static void *spawner_main(void *arg)
{
	struct spawner *sp = arg;
	bool running[16] = {false};
	uint64_t tag = __atomic_add_fetch(&g_next_tag, 1, __ATOMIC_RELAXED);
	unsigned next = 0;
	/* ThreadSanitizer keeps per-thread state: bound the number of threads. */
	uint64_t limit = under_tsan() || under_valgrind() ? 1000 : UINT64_MAX;

	while (!stopping() && sp->sp_created < limit) {
		struct worker *w = sp->sp_w[next];
		if (running[next]) {
			pthread_join(w->w_thread, NULL);
			short_account(w);
			running[next] = false;
		}
		worker_init(w, 20 + rnd(&sp->sp_rng) % 2000);
		bool orphaning = rnd(&sp->sp_rng) % 3 == 0;
		int err = pthread_create(&w->w_thread, NULL,
		                         orphaning ? short_orphaning_main : short_main, w);
		if (err != 0) {
			stress_error("spawner: pthread_create: %s", strerror(err));
			break;
		}
		running[next] = true;
		next = (next + 1) % sp->sp_live;
		sp->sp_created++;
		if (sp->sp_created % 8 == 0)
			orphans_free(tag);
	}
	for (unsigned i = 0; i < sp->sp_live; i++) {
		if (running[i]) {
			pthread_join(sp->sp_w[i]->w_thread, NULL);
			short_account(sp->sp_w[i]);
		}
	}
	orphans_free(tag);
	__atomic_add_fetch(&g_short_threads, sp->sp_created, __ATOMIC_RELAXED);
	return NULL;
}

/* ---- fork ---- */

/* In the child: only this thread exists; objects other parent threads held
 * stay out. Allocate and free in both caches (every object must be
 * unowned), reap (drains and fences), use a fresh cache. Exit codes:
 * 0 ok, 2 double hand-out, 3 alloc failed, 4 new cache not destroyed,
 * 5 stamp overwritten; SIGALRM: hung (a lock left held across fork). */
static void fork_child(void)
{
	uint64_t tag = CHILD_BIT | (uint64_t)getpid();
	void *objs[300];

	alarm(20);
	for (int round = 0; round < 3; round++) {
		for (int ci = 0; ci < NCACHES; ci++) {
			size_t n = round == 1 ? uslab_cache_alloc_bulk(g_cache[ci], objs, 300) : 0;
			for (; n < 300; n++)
				if ((objs[n] = uslab_cache_alloc(g_cache[ci])) == NULL)
					_exit(3);
			for (size_t i = 0; i < n; i++) {
				struct obj *o = objs[i];
				uint64_t expected = 0;
				if (!__atomic_compare_exchange_n(&o->o_owner, &expected, tag, false,
				                                 __ATOMIC_ACQ_REL,
				                                 __ATOMIC_ACQUIRE))
					_exit(2);
				if (ci == C_CTOR && o->o_magic != CTOR_MAGIC)
					_exit(2);
				o->o_stamp = tag + i;
			}
			for (size_t i = 0; i < n; i++) {
				struct obj *o = objs[i];
				if (o->o_stamp != tag + i)
					_exit(5);
				o->o_owner = 0;
			}
			if (round == 2)
				uslab_cache_free_bulk(g_cache[ci], objs, n);
			else
				for (size_t i = 0; i < n; i++)
					uslab_cache_free(g_cache[ci], objs[n - 1 - i]);
		}
		if (round == 0)
			for (int ci = 0; ci < NCACHES; ci++)
				uslab_cache_reap(g_cache[ci]);
	}
	struct uslab_cache *c = uslab_cache_create("stress-child", 40, NULL);
	if (c == NULL)
		_exit(3);
	for (int i = 0; i < 1000; i++) {
		void *p = uslab_cache_alloc(c);
		if (p == NULL)
			_exit(3);
		uslab_cache_free(c, p);
	}
	_exit(uslab_cache_destroy(c) == 0 ? 0 : 4);
}

/* Fork now and then until @until; returns the number of children that passed. */
static unsigned fork_loop(double until, uint64_t *rng)
{
	unsigned good = 0;

	/* At least one fork, even when the run is short (valgrind). */
	for (bool first = true; !stopping() && (first || now() < until); first = false) {
		sleep_s(first ? 0.02 : 0.05 + (double)(rnd(rng) % 200) / 1000.0);
		pid_t pid = fork();
		if (pid < 0) {
			stress_error("fork: %s", strerror(errno));
			break;
		}
		if (pid == 0)
			fork_child();
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
			good++;
		} else if (WIFEXITED(status)) {
			stress_error(
				"fork: child exited with %d (2 double hand-out, 3 alloc failed, "
				"4 destroy failed, 5 overwritten)",
				WEXITSTATUS(status));
		} else {
			stress_error("fork: child killed by signal %d (%s)", WTERMSIG(status),
			             WTERMSIG(status) == SIGALRM ? "hung: a lock held across fork?"
			                                         : strsignal(WTERMSIG(status)));
		}
	}
	return good;
}

/* ---- The run ---- */

static void run_plan(const struct plan *pl)
{
	double secs = stress_seconds();
	struct worker **ws = calloc(pl->p_workers, sizeof *ws);
	struct pair *pairs = calloc(pl->p_pairs ? pl->p_pairs : 1, sizeof *pairs);
	struct signaller sig = {0};
	struct reaper reap = {0};
	struct debugger dbg = {0};
	struct spawner sp = {0};
	uint64_t rng = 0x1234567 ^ (uint64_t)time(NULL);
	unsigned forks = 0;
	int err;

	ck_assert(ws != NULL && pairs != NULL);
	const char *mode = uslab_mode();
	g_rseq = strncmp(mode, "rseq", 4) == 0;
	find_text();
	__atomic_store_n(&g_stop, 0, __ATOMIC_RELAXED);
	g_errors = 0;
	g_error_claimed = 0;
	g_first_error[0] = '\0';
	g_ctor_calls = g_dtor_calls = g_dtor_bad = 0;
	g_short_threads = 0;
	memset(g_short_allocs, 0, sizeof g_short_allocs);
	memset(g_short_frees, 0, sizeof g_short_frees);
	memset(g_orphan_allocs, 0, sizeof g_orphan_allocs);
	memset(g_orphan_frees, 0, sizeof g_orphan_frees);

	g_cache[C_PLAIN] = uslab_cache_create(g_cache_name[C_PLAIN], PLAIN_SIZE, NULL);
	ck_assert_msg(g_cache[C_PLAIN] != NULL, "create: %s", strerror(errno));
	struct uslab_cache_conf conf = {.ctor = ctor_obj, .dtor = dtor_obj};
	g_cache[C_CTOR] = uslab_cache_create(g_cache_name[C_CTOR], CTOR_SIZE, &conf);
	ck_assert_msg(g_cache[C_CTOR] != NULL, "create: %s", strerror(errno));

	if (pl->p_signals) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_sigusr1;
		sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		ck_assert(sigaction(SIGUSR1, &sa, NULL) == 0);
	}

	double t0 = now();
	for (unsigned i = 0; i < pl->p_workers; i++) {
		ws[i] = malloc(sizeof *ws[i]);
		ck_assert(ws[i] != NULL);
		worker_init(ws[i], 0);
		err = pthread_create(&ws[i]->w_thread, NULL, worker_main, ws[i]);
		ck_assert_msg(err == 0, "pthread_create: %s", strerror(err));
	}
	for (unsigned i = 0; i < pl->p_pairs; i++) {
		struct pair *p = &pairs[i];
		p->p_tag_prod = __atomic_add_fetch(&g_next_tag, 1, __ATOMIC_RELAXED);
		p->p_tag_cons = __atomic_add_fetch(&g_next_tag, 1, __ATOMIC_RELAXED);
		p->p_rng = rnd(&rng) | 1;
		p->p_rng_cons = rnd(&rng) | 1;
		ck_assert(pthread_create(&p->p_prod, NULL, producer_main, p) == 0);
		ck_assert(pthread_create(&p->p_cons, NULL, consumer_main, p) == 0);
	}
	if (pl->p_signals) {
		sig.s_workers = ws;
		sig.s_n = pl->p_workers;
		ck_assert(pthread_create(&sig.s_thread, NULL, signaller_main, &sig) == 0);
	}
	if (pl->p_reaper)
		ck_assert(pthread_create(&reap.r_thread, NULL, reaper_main, &reap) == 0);
	if (pl->p_debug)
		ck_assert(pthread_create(&dbg.d_thread, NULL, debugger_main, &dbg) == 0);
	if (pl->p_churn) {
		sp.sp_live = pl->p_churn < 16 ? pl->p_churn : 16;
		sp.sp_rng = rnd(&rng) | 1;
		for (unsigned i = 0; i < sp.sp_live; i++) {
			sp.sp_w[i] = malloc(sizeof *sp.sp_w[i]);
			ck_assert(sp.sp_w[i] != NULL);
		}
		ck_assert(pthread_create(&sp.sp_thread, NULL, spawner_main, &sp) == 0);
	}

	if (pl->p_fork && !under_tsan())
		forks = fork_loop(t0 + secs, &rng);
	while (!stopping() && now() < t0 + secs)
		sleep_s(0.02);
	__atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);

	if (pl->p_signals)
		pthread_join(sig.s_thread, NULL);
	if (pl->p_reaper)
		pthread_join(reap.r_thread, NULL);
	if (pl->p_debug)
		pthread_join(dbg.d_thread, NULL);
	if (pl->p_churn)
		pthread_join(sp.sp_thread, NULL);

	uint64_t allocs[NCACHES] = {0}, frees[NCACHES] = {0};
	uint64_t ops = 0, sigs = 0, sig_aborts = 0, sig_ops = 0, sig_busy = 0;
	for (unsigned i = 0; i < pl->p_workers; i++) {
		struct worker *w = ws[i];
		pthread_join(w->w_thread, NULL);
		for (int ci = 0; ci < NCACHES; ci++) {
			allocs[ci] += w->w_allocs[ci];
			frees[ci] += w->w_frees[ci];
			ck_assert_msg(w->w_nheld[ci] == 0, "worker %u still holds %zu", i,
			              w->w_nheld[ci]);
		}
		ops += w->w_ops;
		sigs += w->w_sigs;
		sig_aborts += w->w_sig_aborts;
		sig_ops += w->w_sig_ops;
		sig_busy += w->w_sig_busy;
	}
	for (unsigned i = 0; i < pl->p_pairs; i++) {
		pthread_join(pairs[i].p_prod, NULL);
		pthread_join(pairs[i].p_cons, NULL);
		for (int ci = 0; ci < NCACHES; ci++) {
			allocs[ci] += pairs[i].p_produced[ci];
			frees[ci] += pairs[i].p_consumed[ci];
		}
	}
	for (int ci = 0; ci < NCACHES; ci++) {
		allocs[ci] += g_short_allocs[ci];
		frees[ci] += g_short_frees[ci] - g_orphan_allocs[ci] + g_orphan_frees[ci];
	}
	if (pl->p_signals) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = SIG_DFL;
		sigaction(SIGUSR1, &sa, NULL);
	}
	double elapsed = now() - t0;

	fprintf(stderr,
	        "# stress %s: mode=%s, %.1f s, workers=%u pairs=%u, ops=%llu, allocs=%llu+%llu, "
	        "signals sent=%llu got=%llu sig-aborts=%llu handler-ops=%llu (edeadlk %llu), "
	        "reaps=%llu "
	        "(%llu KiB), short threads=%llu, forks=%u, ctor=%llu, debug switches=%llu\n",
	        pl->p_name, mode, elapsed, pl->p_workers, pl->p_pairs, (unsigned long long)ops,
	        (unsigned long long)allocs[C_PLAIN], (unsigned long long)allocs[C_CTOR],
	        (unsigned long long)sig.s_sent, (unsigned long long)sigs,
	        (unsigned long long)sig_aborts, (unsigned long long)sig_ops,
	        (unsigned long long)sig_busy, (unsigned long long)reap.r_reaps,
	        (unsigned long long)(reap.r_bytes >> 10),
	        (unsigned long long)__atomic_load_n(&g_short_threads, __ATOMIC_RELAXED), forks,
	        (unsigned long long)g_ctor_calls, (unsigned long long)dbg.d_switches);

	ck_assert_msg(g_errors == 0, "%llu oracle violations, first: %s",
	              (unsigned long long)g_errors, g_first_error);
	for (int ci = 0; ci < NCACHES; ci++)
		ck_assert_msg(allocs[ci] == frees[ci], "%s: %llu allocated, %llu freed",
		              g_cache_name[ci], (unsigned long long)allocs[ci],
		              (unsigned long long)frees[ci]);
	for (int ci = 0; ci < NCACHES; ci++) {
		int rc = uslab_cache_destroy(g_cache[ci]);
		ck_assert_msg(rc == 0, "destroy(%s) after all frees: %s (objects lost)",
		              g_cache_name[ci], strerror(errno));
		g_cache[ci] = NULL;
	}
	ck_assert_msg(g_ctor_calls == g_dtor_calls, "ctor ran %llu times, dtor %llu",
	              (unsigned long long)g_ctor_calls, (unsigned long long)g_dtor_calls);
	ck_assert_msg(g_dtor_bad == 0, "%llu objects destructed out of their constructed state",
	              (unsigned long long)g_dtor_bad);
	ck_assert_msg(ops > 0 || pl->p_workers == 0, "no work done");
	/* Proof that signal aborts happen: thousands are seen in a normal run;
	 * with the negative control (no arming) there are none. */
	if (pl->p_signals && g_rseq && g_text_hi != 0 && sigs >= 1000)
		ck_assert_msg(sig_aborts > 0, "%llu signals hit no rseq critical section",
		              (unsigned long long)sigs);
	if (pl->p_fork && !under_tsan())
		ck_assert_msg(forks > 0, "no fork completed");
	for (unsigned i = 0; i < pl->p_workers; i++)
		free(ws[i]);
	for (unsigned i = 0; i < sp.sp_live; i++)
		free(sp.sp_w[i]);
	free(ws);
	free(pairs);
}

/* ---- Tests ---- */

static unsigned oversubscribed_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned t = n > 0 ? 8 * (unsigned)n : 16;
	return t < 16 ? 16 : t > 64 ? 64 : t;
}

START_TEST(stress_oversubscribed_no_double_handout)
{
	struct plan pl = {.p_name = "oversubscribed", .p_workers = oversubscribed_threads()};
	run_plan(&pl);
}
END_TEST

START_TEST(stress_signal_storm_no_double_handout)
{
	struct plan pl = {.p_name = "signals", .p_workers = 8, .p_signals = true};
	run_plan(&pl);
}
END_TEST

START_TEST(stress_cross_thread_frees_balance)
{
	struct plan pl = {.p_name = "cross-thread", .p_workers = 4, .p_pairs = 4};
	run_plan(&pl);
}
END_TEST

START_TEST(stress_concurrent_reap_keeps_objects)
{
	struct plan pl = {.p_name = "reap", .p_workers = 8, .p_reaper = true};
	run_plan(&pl);
}
END_TEST

START_TEST(stress_thread_churn_strands_nothing)
{
	struct plan pl = {.p_name = "churn", .p_workers = 4, .p_churn = 8};
	run_plan(&pl);
}
END_TEST

START_TEST(stress_fork_child_allocates)
{
	if (under_tsan()) {
		fprintf(stderr, "# stress fork: skipped under ThreadSanitizer\n");
		return;
	}
	struct plan pl = {.p_name = "fork", .p_workers = 8, .p_fork = true};
	run_plan(&pl);
}
END_TEST

START_TEST(stress_everything_at_once)
{
	struct plan pl = {.p_name = "everything",
	                  .p_workers = 8,
	                  .p_pairs = 2,
	                  .p_churn = 4,
	                  .p_signals = true,
	                  .p_reaper = true,
	                  .p_fork = true,
	                  .p_debug = true};
	run_plan(&pl);
}
END_TEST

static Suite *stress_suite(void)
{
	Suite *s = suite_create("stress");
	int timeout = 60 + (int)(10 * stress_seconds());
	struct {
		const char *name;
		const TTest *test;
	} cases[] = {
		{"oversubscribed", stress_oversubscribed_no_double_handout},
		{"signals", stress_signal_storm_no_double_handout},
		{"cross-thread", stress_cross_thread_frees_balance},
		{"reap", stress_concurrent_reap_keeps_objects},
		{"churn", stress_thread_churn_strands_nothing},
		{"fork", stress_fork_child_allocates},
		{"everything", stress_everything_at_once},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_set_timeout(tc, timeout);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	return s;
}

Suite *(*const test_suites[])(void) = {stress_suite, NULL};
