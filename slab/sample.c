/* SPDX-License-Identifier: MIT */
/* Sampled guard allocations (USLAB_SAMPLE): KFENCE and GWP-ASan for a slab cache. */
#include "config.h"

#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/*
 * Design
 *
 * With USLAB_SAMPLE=N every cache takes the debug route, and about one
 * allocation in N (a per-thread countdown drawn between 1 and 2N) is
 * served from a page of its own followed by an inaccessible guard page,
 * with the object placed so that it ends where the guard begins (rounded
 * down to the cache's alignment; the few bytes between are filled with
 * DBG_RZ_BYTE and checked at free). An overrun faults on the guard at
 * once; at free the object's page becomes inaccessible too, so a use
 * after free faults. Objects up to a page come from a pool mapped once
 * (SAMPLE_SLOTS pairs of pages, the guards never accessible), so a sample
 * costs two mprotect calls, one to open its page and one to close it;
 * larger objects get a mapping of their own. Freed samples stay in
 * quarantine, inaccessible, until their slot (oldest first) is needed
 * again; at most SAMPLE_SLOTS are live, and beyond that an allocation is
 * simply not sampled.
 *
 * A SIGSEGV handler (installed once, the previous action kept) looks up
 * the faulting address: in a sample, it prints one report line naming the
 * cache and the object ("use after free" or "red zone overwritten", each
 * with "sampled guard page" and the offset), the faulting stack and the
 * sample's allocation and free, then restores the previous action and
 * returns, so the access faults again and the process dies as it would
 * have (a core, or the program's own handler). Any other fault goes to
 * the previous action at once. If sigaction is refused, sampling goes on
 * without names, and says so once.
 *
 * A sampled object of a cache with a ctor is constructed when it is made
 * and destructed when it is freed: it is never reused. The cache counts
 * its live samples (c_sampled), which uslab_cache_destroy() treats as
 * objects still out.
 */

#define SAMPLE_SLOTS 256

struct sample {
	char *sm_base; /* data pages, then the guard */
	size_t sm_len;
	bool sm_own; /* a mapping of its own (larger than a page), not the pool's */
	char *sm_obj;
	size_t sm_size;
	struct uslab_cache *sm_cache;
	char sm_name[USLAB_NAME_MAX + 1]; /* the cache may be gone when a late access faults */
	int sm_state;                     /* 0 empty, 1 live, 2 freed (quarantine), 3 being made */
	struct audit_rec sm_alloc, sm_free;
};

static struct uslab_lock sample_lock = USLAB_LOCK_INITIALIZER;
static struct sample sample_pool[SAMPLE_SLOTS];
static char *sample_pages;   /* the pool: slot i's page at 2i pages, its guard after */
static unsigned sample_next; /* the slot to take next (oldest first) */
static uint64_t sample_period;
static struct sigaction sample_old_segv;
static __thread uint64_t sample_left __attribute__((tls_model("initial-exec")));
static __thread uint64_t sample_rng __attribute__((tls_model("initial-exec")));

static uint64_t sample_draw(void)
{
	if (sample_rng == 0)
		sample_rng = ((uint64_t)(uintptr_t)&sample_rng ^ uslab_coarse_ns()) | 1;
	sample_rng ^= sample_rng << 13;
	sample_rng ^= sample_rng >> 7;
	sample_rng ^= sample_rng << 17;
	return 1 + sample_rng % (2 * sample_period);
}

/* The sample holding @addr (its object's pages or its guard), or NULL.
 * No lock: a handler calls it; entries change only under sample_lock, and
 * a stale view names the wrong sample at worst. */
static struct sample *sample_find(const void *addr)
{
	for (unsigned i = 0; i < SAMPLE_SLOTS; i++) {
		struct sample *sm = &sample_pool[i];
		if (__atomic_load_n(&sm->sm_state, __ATOMIC_ACQUIRE) != 0 &&
		    (const char *)addr >= sm->sm_base &&
		    (const char *)addr < sm->sm_base + sm->sm_len)
			return sm;
	}
	return NULL;
}

static void sample_say(const char *s)
{
	(void)!write(STDERR_FILENO, s, strlen(s));
}

static void sample_segv(int sig, siginfo_t *si, void *uc)
{
	struct sample *sm = sample_find(si->si_addr);

	if (sm != NULL) {
		char line[256];
		long off = (const char *)si->si_addr - sm->sm_obj;
		bool freed = __atomic_load_n(&sm->sm_state, __ATOMIC_ACQUIRE) == 2;
		snprintf(line, sizeof line,
		         "uslab: cache '%s': object %p: %s (sampled guard page, offset %ld)\n",
		         sm->sm_name, (void *)sm->sm_obj,
		         freed ? "use after free" : "red zone overwritten", off);
		sample_say(line);
		void *f[32];
		int n = backtrace(f, 32);
		sample_say("uslab:   the access:\n");
		if (n > 2) /* this handler and the signal trampoline first */
			backtrace_symbols_fd(f + 2, n - 2, STDERR_FILENO);
		audit_print(STDERR_FILENO, "allocated", &sm->sm_alloc);
		if (freed)
			audit_print(STDERR_FILENO, "freed", &sm->sm_free);
		sigaction(SIGSEGV, &sample_old_segv, NULL); /* the access faults again */
		return;
	}
	if (sample_old_segv.sa_flags & SA_SIGINFO) {
		if (sample_old_segv.sa_sigaction != NULL) {
			sample_old_segv.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (sample_old_segv.sa_handler != SIG_DFL && sample_old_segv.sa_handler != SIG_IGN) {
		sample_old_segv.sa_handler(sig);
		return;
	}
	sigaction(SIGSEGV, &sample_old_segv, NULL); /* default: dies at the retry */
}

static void sample_install(void)
{
	struct sigaction sa;
	size_t page = pgsrc_page_size();

	sample_pages = mmap(NULL, 2 * page * SAMPLE_SLOTS, PROT_NONE,
	                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (sample_pages == MAP_FAILED)
		sample_pages = NULL; /* every sample then maps its own */

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = sample_segv;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	audit_init();
	if (sigaction(SIGSEGV, &sa, &sample_old_segv) != 0)
		fprintf(stderr,
		        "uslab: USLAB_SAMPLE: no SIGSEGV handler (%s): faults on sampled "
		        "objects will not be named\n",
		        strerror(errno));
}

void sample_atfork_prepare(void)
{
	lock_take(&sample_lock);
}

void sample_atfork_release(void)
{
	lock_drop(&sample_lock);
}

void sample_init(uint64_t period)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	sample_period = period;
	pthread_once(&once, sample_install);
}

/* Give slot @sm's old mapping back (sample_lock held). */
static void sample_drop_locked(struct sample *sm)
{
	if (sm->sm_state != 0 && sm->sm_own)
		munmap(sm->sm_base, sm->sm_len);
	__atomic_store_n(&sm->sm_state, 0, __ATOMIC_RELEASE);
}

void *sample_alloc(struct uslab_cache *c)
{
	if (pgsrc_busy != 0)
		return NULL; /* a handler that interrupted uslab: no lock, no mmap */
	if (sample_left == 0)
		sample_left = sample_draw();
	if (--sample_left != 0)
		return NULL;
	sample_left = sample_draw();

	size_t page = pgsrc_page_size();
	size_t data = (c->c_size + page - 1) / page * page, len = data + page;
	lock_take(&sample_lock);
	struct sample *sm = NULL;
	unsigned slot = 0;
	for (unsigned k = 0; k < SAMPLE_SLOTS && sm == NULL; k++) {
		slot = (sample_next + k) % SAMPLE_SLOTS;
		int st = sample_pool[slot].sm_state;
		if (st == 0 || st == 2) { /* empty, or a quarantined one: the oldest */
			sm = &sample_pool[slot];
			sample_next = (slot + 1) % SAMPLE_SLOTS;
		}
	}
	char *base = NULL;
	if (sm != NULL) {
		sample_drop_locked(sm);
		bool pooled = data == page && sample_pages != NULL;
		base = pooled ? sample_pages + 2 * page * slot
		              : mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (base == MAP_FAILED || mprotect(base, data, PROT_READ | PROT_WRITE) != 0) {
			if (base != MAP_FAILED && !pooled)
				munmap(base, len);
			sm = NULL;
		} else {
			sm->sm_base = base;
			sm->sm_len = len;
			sm->sm_own = !pooled;
			sm->sm_state = 3; /* being made: no other thread takes it */
		}
	}
	lock_drop(&sample_lock);
	if (sm == NULL)
		return NULL; /* every slot live, or no memory: not this time */
	char *obj = (char *)(((uintptr_t)(base + data) - c->c_size) & ~(uintptr_t)(c->c_align - 1));
	memset(obj + c->c_size, DBG_RZ_BYTE, (size_t)(base + data - obj) - c->c_size);
	if (c->c_ctor != NULL && c->c_ctor(obj, c->c_arg) != 0) {
		mprotect(base, data, PROT_NONE);
		if (sm->sm_own)
			munmap(base, len);
		__atomic_store_n(&sm->sm_state, 0, __ATOMIC_RELEASE);
		return NULL;
	}
	sm->sm_obj = obj;
	sm->sm_size = c->c_size;
	sm->sm_cache = c;
	memcpy(sm->sm_name, c->c_name, sizeof sm->sm_name);
	audit_record(&sm->sm_alloc);
	memset(&sm->sm_free, 0, sizeof sm->sm_free);
	__atomic_add_fetch(&c->c_sampled, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&sm->sm_state, 1, __ATOMIC_RELEASE);
	return obj;
}

bool sample_is_live(const struct uslab_cache *c, const void *obj)
{
	const struct sample *sm = sample_find(obj);

	return sm != NULL && sm->sm_obj == obj && sm->sm_cache == c &&
	       __atomic_load_n(&sm->sm_state, __ATOMIC_ACQUIRE) == 1;
}

struct uslab_cache *sample_owner(const void *obj)
{
	const struct sample *sm = sample_find(obj);

	return sm != NULL && sm->sm_obj == obj ? sm->sm_cache : NULL;
}

bool sample_free(struct uslab_cache *c, void *obj)
{
	struct sample *sm = sample_find(obj);
	if (sm == NULL || sm->sm_obj != obj)
		return false; /* the object check of the normal path reports it */
	if (sm->sm_cache != c)
		uslab_report(c, obj, USLAB_E_FOREIGN);
	if (__atomic_load_n(&sm->sm_state, __ATOMIC_ACQUIRE) != 1)
		uslab_report(c, obj, USLAB_E_DUPFREE);
	size_t tail = (size_t)(sm->sm_base + sm->sm_len - pgsrc_page_size() - sm->sm_obj);
	for (size_t i = sm->sm_size; i < tail; i++)
		if ((unsigned char)sm->sm_obj[i] != DBG_RZ_BYTE) {
			char detail[48];
			snprintf(detail, sizeof detail, "offset %zu, sampled", i);
			uslab_report_detail(c, obj, USLAB_E_REDZONE, detail);
		}
	if (c->c_dtor != NULL)
		c->c_dtor(obj, c->c_arg);
	audit_record(&sm->sm_free); /* before the lock: a lock held means no stack */
	lock_take(&sample_lock);
	mprotect(sm->sm_base, sm->sm_len - pgsrc_page_size(), PROT_NONE);
	__atomic_store_n(&sm->sm_state, 2, __ATOMIC_RELEASE);
	__atomic_sub_fetch(&c->c_sampled, 1, __ATOMIC_RELAXED);
	lock_drop(&sample_lock);
	return true;
}
