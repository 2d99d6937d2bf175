/* SPDX-License-Identifier: MIT */
/* The per-CPU mode, the number of slots, and how a remote operation fences a CPU. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#if USLAB_HAVE_SYS_RSEQ_H
#include <sys/rseq.h>
#endif
#include <linux/membarrier.h>

#include "internal.h"

/*
 * Design
 *
 * 1. The mode is chosen once (pcpu_init), before the first cache: "rseq
 *    cpu_id" when glibc registered rseq and the kernel fences rseq
 *    sections with membarrier; "rseq cpu_id (uslab registers)" when glibc
 *    did not (before 2.35, glibc.pthread.rseq=0) but the kernel lets
 *    uslab register an area of its own (§4); "locked: <why>" otherwise
 *    (pcpu.c §3).
 *
 * 2. The number of slots is the kernel's own bound on CPU ids, so no
 *    cpu_id can index past a cache's slots (the asm has no bound check).
 *
 * 3. Fences. A remote operation on a running CPU's slot (reap's drain, a
 *    resize, a fold) must know that no section on that CPU can still
 *    commit. membarrier(PRIVATE_EXPEDITED_RSEQ) does it. When the kernel
 *    refuses it at run time (a seccomp allow-list installed after
 *    start-up), the process does not abort: it fences by running on the
 *    CPU instead, and when that is refused too, remote operations skip the
 *    running slots (reap gives back less; destroy needs no fence, nobody
 *    uses a cache being destroyed). Each step is said once in
 *    uslab_mode() and to the mode hook (the stats segment).
 *
 * 4. uslab's own registration. When glibc registered no rseq area, uslab
 *    registers one per thread: pcpu_own_area, initial-exec TLS, so its
 *    offset from the thread pointer is the same in every thread and the
 *    asm's one offset (uslab_rseq_off) finds it. Never when glibc has
 *    registered: a thread has one registration, and glibc's sched_getcpu
 *    and other libraries read glibc's. A thread registers lazily, at its
 *    first slow path (pcpu_rseq_ready: a thread that never misses never
 *    hits either, its cpu_id is -1 and indexes a guard), and unregisters
 *    at its exit, in a thread-specific data destructor, before its TLS can
 *    go away; anything it frees later (glibc's own exit-time frees under
 *    the preloaded malloc) goes through the slow path, which then never
 *    registers again. A thread whose registration is refused (EBUSY:
 *    another library registered it; EPERM: seccomp) runs the same way, on
 *    the depot, and is counted (pcpu_rseq_refused). fork's child inherits
 *    the forking thread's registration with its memory; a thread created
 *    with CLONE_VM starts unregistered, as the kernel wants.
 */

/* What c_fast points at when the asm must always miss: a read-only zero
 * region laid out like an arena (guards, then nslots regions), so every
 * p_cap reads 0 (stopped). Untouched pages of it cost nothing; touched
 * ones are the shared zero page. */
char *pcpu_zero;

int pcpu_rseq;                                                 /* set once by pcpu_once_init */
int pcpu_rseq_own;                                             /* likewise (§4) */
uint32_t pcpu_nslots = 1;                                      /* likewise */
static const char *pcpu_mode_name = "locked: not initialised"; /* atomic: may change once more */
static pthread_once_t pcpu_once = PTHREAD_ONCE_INIT;
static void (*pcpu_mode_hook)(const char *mode); /* told when the mode changes (cache.c) */

static int pcpu_membarrier(int cmd, unsigned flags, int cpu)
{
	return (int)syscall(__NR_membarrier, cmd, flags, cpu);
}

/* ---- uslab's own rseq registration (§4) ---- */

/* The kernel's struct rseq (its ABI, 32 bytes, 32-aligned), under a name
 * of our own: glibc's <sys/rseq.h> and <linux/rseq.h> cannot both be
 * included, and glibc before 2.35 has neither. */
struct pcpu_rseq_area {
	uint32_t cpu_id_start;
	uint32_t cpu_id;
	uint64_t rseq_cs;
	uint32_t flags;
	uint32_t node_id;
	uint32_t mm_cid;
	uint32_t pad;
} __attribute__((aligned(32)));

_Static_assert(offsetof(struct pcpu_rseq_area, cpu_id) == PCPU_RSEQ_CPU_ID, "rseq ABI");
_Static_assert(offsetof(struct pcpu_rseq_area, rseq_cs) == PCPU_RSEQ_CS, "rseq ABI");
_Static_assert(sizeof(struct pcpu_rseq_area) == 32, "rseq ABI");

#define PCPU_RSEQ_UNREGISTER 1 /* RSEQ_FLAG_UNREGISTER */

/* cpu_id -1 (RSEQ_CPU_ID_UNINITIALIZED) until registered: a guard slot. */
static __thread struct pcpu_rseq_area pcpu_own_area
	__attribute__((tls_model("initial-exec"))) = {.cpu_id = (uint32_t)-1};
__thread int pcpu_rseq_state __attribute__((tls_model("initial-exec")));
uint64_t pcpu_rseq_refused; /* atomic: threads whose registration was refused */
static pthread_key_t pcpu_rseq_key;
static int pcpu_rseq_key_ok;

static long pcpu_sys_rseq(struct pcpu_rseq_area *a, int flags)
{
	return syscall(__NR_rseq, a, (uint32_t)sizeof *a, flags, PCPU_RSEQ_SIG);
}

/* Unregister, so the kernel never writes the area again, and leave
 * cpu_id at -1 (a guard: every later hit misses). */
static void pcpu_rseq_unregister(void)
{
	if (pcpu_sys_rseq(&pcpu_own_area, PCPU_RSEQ_UNREGISTER) == 0)
		__atomic_store_n(&pcpu_own_area.cpu_id, (uint32_t)-1, __ATOMIC_RELAXED);
}

/* The thread's exit. */
static void pcpu_rseq_gone(void *unused)
{
	(void)unused;
	if (pcpu_rseq_state != PCPU_RSEQ_MINE)
		return;
	pcpu_rseq_state = PCPU_RSEQ_NEVER;
	pcpu_rseq_unregister();
}

/* Register this thread's area (pcpu_rseq_ready found it never tried). A
 * handler that interrupts this and registers first makes our call fail
 * with EBUSY while our area has a cpu_id: that is ours too. */
void pcpu_rseq_register(void)
{
	int err = errno;

	pcpu_rseq_state = PCPU_RSEQ_NEVER; /* a handler meanwhile: slow path */
	if (pcpu_sys_rseq(&pcpu_own_area, 0) == 0 ||
	    (errno == EBUSY &&
	     (int32_t)__atomic_load_n(&pcpu_own_area.cpu_id, __ATOMIC_RELAXED) >= 0)) {
		pcpu_rseq_state = PCPU_RSEQ_MINE;
		/* The destructor runs only for a non-NULL value. Keys below 32
		 * need no allocation; a failure leaves the area registered to
		 * the thread's end, which is safe: initial-exec TLS lives with
		 * the thread's stack block until the kernel is done with it. */
		if (pcpu_rseq_key_ok)
			(void)pthread_setspecific(pcpu_rseq_key, &pcpu_own_area);
	} else {
		__atomic_fetch_add(&pcpu_rseq_refused, 1, __ATOMIC_RELAXED);
	}
	errno = err;
}

/* Whether the rseq syscall takes this thread's area: asked once, at the
 * mode's choice, on the thread that makes the first cache. */
static const char *pcpu_rseq_own_choose(void)
{
	static char why[64];

	if (pcpu_sys_rseq(&pcpu_own_area, 0) != 0) {
		snprintf(why, sizeof why, "locked: rseq refused (%s)",
		         errno == ENOSYS  ? "ENOSYS"
		         : errno == EPERM ? "EPERM"
		                          : strerror(errno));
		return why;
	}
	if (pcpu_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) != 0) {
		pcpu_rseq_unregister();
		return "locked: membarrier cannot fence rseq";
	}
	pcpu_rseq_key_ok = pthread_key_create(&pcpu_rseq_key, pcpu_rseq_gone) == 0;
	pcpu_rseq_state = PCPU_RSEQ_MINE;
	if (pcpu_rseq_key_ok)
		(void)pthread_setspecific(pcpu_rseq_key, &pcpu_own_area);
	pcpu_rseq_own = 1;
	pcpu_rseq = 1;
	return "rseq cpu_id (uslab registers)";
}

/* This thread's rseq cpu_id, as the asm reads it (< 0: not registered). */
int32_t pcpu_rseq_cpu_id(void)
{
	return __atomic_load_n(
		(int32_t *)((char *)__builtin_thread_pointer() + uslab_rseq_off + PCPU_RSEQ_CPU_ID),
		__ATOMIC_RELAXED);
}

/* ---- Mode selection ---- */

/* The highest number in a CPU list ("0-3,8"), plus one; 0 if none. */
static long pcpu_list_bound(const char *path)
{
	long n = 0;
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return 0;
	char line[256];
	if (fgets(line, sizeof line, f) != NULL) {
		for (char *p = line; *p != '\0'; p++) {
			if (*p < '0' || *p > '9')
				continue;
			long v = strtol(p, &p, 10);
			if (v + 1 > n)
				n = v + 1;
			if (*p == '\0')
				break;
		}
	}
	fclose(f);
	return n;
}

/*
 * The kernel's own bound on CPU numbers: sched_getaffinity refuses
 * (EINVAL) a mask shorter than nr_cpu_ids bits, and the masks it accepts
 * are whole longs, so the shortest accepted length, in bits, is nr_cpu_ids
 * rounded up to 64. Unlike /sys, which a container may fake or a program
 * may not be allowed to read, it cannot under-report. 0 when the call is
 * refused outright (seccomp).
 */
static long pcpu_kernel_bound(void)
{
	unsigned long mask[PCPU_MAX_IDS / (8 * sizeof(unsigned long))];

	for (size_t len = sizeof(unsigned long); len <= sizeof mask; len += sizeof(unsigned long)) {
		long r = syscall(SYS_sched_getaffinity, 0, len, mask);
		if (r > 0)
			return (long)(len * 8);
		if (errno != EINVAL)
			return 0;
	}
	return 0;
}

/*
 * Number of slots: at least the kernel's bound on CPU numbers, so that no
 * rseq cpu_id (and no sched_getcpu()) can index past a cache's slots (the
 * asm does no bound check): the most of that bound, /sys's possible list
 * and the configured count. When the kernel cannot be asked, the largest
 * count an arena can hold: slots are virtual memory, touched only when a
 * CPU starts its own.
 */
static uint32_t pcpu_possible(void)
{
	long n = os_ncpus();
	long k = pcpu_kernel_bound();
	long sys = pcpu_list_bound("/sys/devices/system/cpu/possible");

	if (k == 0)
		return PCPU_MAX_IDS;
	if (sys > n)
		n = sys;
	if (k > n)
		n = k;
	return n > PCPU_MAX_IDS ? PCPU_MAX_IDS + 1 : (uint32_t)n;
}

/* The zero region: PCPU_GUARD + nslots read-only regions; returns region 0. */
static char *pcpu_zero_map(void)
{
	size_t guard = (size_t)PCPU_GUARD << PCPU_SHIFT;
	char *p = os_map(guard + ((size_t)pcpu_nslots << PCPU_SHIFT), OS_READ);

	return p == NULL ? NULL : p + guard;
}

static const char *pcpu_choose(void)
{
	const char *env = getenv("USLAB_RSEQ");

	/* The asm entry points run in every mode (in locked mode they always
	 * miss on the zero region), so they need a valid offset even then:
	 * glibc's area when glibc registered it, else ours (cpu_id -1 until
	 * registered: a guard). */
#if USLAB_HAVE_SYS_RSEQ_H
	if (__rseq_size != 0)
		uslab_rseq_off = (long)__rseq_offset;
	else
#endif
		uslab_rseq_off =
			(long)((char *)&pcpu_own_area - (char *)__builtin_thread_pointer());
	if (env != NULL && strcmp(env, "0") == 0)
		return "locked: USLAB_RSEQ=0";
	if (pcpu_nslots > PCPU_MAX_IDS)
		return "locked: more CPU ids than an arena holds";
#if !USLAB_HAVE_ASM
	return "locked: built without the rseq fast path";
#elif defined(__SANITIZE_THREAD__)
	return "locked: ThreadSanitizer build";
#else
#if USLAB_HAVE_SYS_RSEQ_H
	if (__rseq_size == 0)
		return pcpu_rseq_own_choose();
	if (pcpu_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) != 0)
		return "locked: membarrier cannot fence rseq";
	pcpu_rseq = 1;
	return "rseq cpu_id";
#else
	return pcpu_rseq_own_choose();
#endif
#endif
}

static void pcpu_once_init(void)
{
	pcpu_nslots = pcpu_possible();
	pcpu_mode_name = pcpu_choose();
	if (pcpu_nslots > PCPU_MAX_IDS)
		pcpu_nslots = PCPU_MAX_IDS; /* locked: the index is bounded in C */
	arena_init(pcpu_nslots);
	pcpu_zero = pcpu_zero_map();
}

void pcpu_init(void)
{
	pthread_once(&pcpu_once, pcpu_once_init);
}

/* See include/uslab.h */
const char *uslab_mode(void)
{
	pcpu_init();
	return __atomic_load_n(&pcpu_mode_name, __ATOMIC_ACQUIRE);
}

uint32_t pcpu_slots(void)
{
	pcpu_init();
	return pcpu_nslots;
}

void pcpu_set_mode_hook(void (*hook)(const char *mode))
{
	__atomic_store_n(&pcpu_mode_hook, hook, __ATOMIC_RELEASE);
}

/* ---- Fences ---- */

/* How a remote operation fences a CPU in rseq mode: membarrier while the
 * kernel allows it, then by running on that CPU, then not at all. Each
 * step down happens once and is said in uslab_mode(). */
enum pcpu_fence {
	PCPU_FENCE_MEMBARRIER,
	PCPU_FENCE_MIGRATE,
	PCPU_FENCE_NONE,
};

static int pcpu_fence_how = PCPU_FENCE_MEMBARRIER; /* atomic, only grows */

static const char *const pcpu_fence_mode[2][3] = {
	{
		[PCPU_FENCE_MEMBARRIER] = "rseq cpu_id",
		[PCPU_FENCE_MIGRATE] = "rseq cpu_id; membarrier refused: fences by migration",
		[PCPU_FENCE_NONE] =
			"rseq cpu_id; membarrier and migration refused: no remote drain",
	},
	{
		[PCPU_FENCE_MEMBARRIER] = "rseq cpu_id (uslab registers)",
		[PCPU_FENCE_MIGRATE] =
			"rseq cpu_id (uslab registers); membarrier refused: fences by migration",
		[PCPU_FENCE_NONE] = "rseq cpu_id (uslab registers); membarrier and migration "
				    "refused: no remote drain",
	},
};

/* Step down to @how (if lower than now), once, and say so. */
static void pcpu_fence_degrade(int how)
{
	int old = __atomic_load_n(&pcpu_fence_how, __ATOMIC_RELAXED);
	while (old < how && !__atomic_compare_exchange_n(&pcpu_fence_how, &old, how, false,
	                                                 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		;
	if (old >= how)
		return;
	const char *mode = pcpu_fence_mode[pcpu_rseq_own][how];
	__atomic_store_n(&pcpu_mode_name, mode, __ATOMIC_RELEASE);
	PROBE2(alloc_fail, NULL, how == PCPU_FENCE_NONE ? EPERM : 0);
	void (*hook)(const char *) = __atomic_load_n(&pcpu_mode_hook, __ATOMIC_ACQUIRE);
	if (hook != NULL)
		hook(mode);
}

/*
 * Fence by running on CPU @cpu: once this thread runs there, no other
 * thread does, and every one that was in a section there was preempted,
 * so its section aborts when it runs again (rseq.md §1.5); one that starts
 * later sees the cap the caller stored first. The thread's affinity is
 * restored after. A CPU this thread may not run on (offline, outside the
 * cpuset) runs no thread of the process either: EINVAL counts as fenced.
 * False when the kernel refuses the calls themselves (EPERM: seccomp).
 */
static bool pcpu_fence_migrate(uint32_t cpu)
{
	cpu_set_t old, one;

	if (cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof old, &old) != 0)
		return false;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof one, &one) != 0)
		return errno == EINVAL;
	bool there = sched_getcpu() == (int)cpu;
	sched_setaffinity(0, sizeof old, &old);
	return there;
}

bool pcpu_fence_cpu(uint32_t cpu)
{
	int how = __atomic_load_n(&pcpu_fence_how, __ATOMIC_RELAXED);

	if (how == PCPU_FENCE_MEMBARRIER) {
		/* A CPU that is not online runs no section; fence all CPUs if
		 * the kernel refuses a targeted fence. */
		if (pcpu_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU,
		                    (int)cpu) == 0 ||
		    pcpu_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0)
			return true;
		pcpu_fence_degrade(PCPU_FENCE_MIGRATE);
		how = PCPU_FENCE_MIGRATE;
	}
	if (how == PCPU_FENCE_MIGRATE) {
		if (pcpu_fence_migrate(cpu))
			return true;
		if (errno == EPERM || errno == ENOSYS)
			pcpu_fence_degrade(PCPU_FENCE_NONE);
	}
	return false;
}

bool pcpu_fence_possible(void)
{
	return __atomic_load_n(&pcpu_fence_how, __ATOMIC_RELAXED) != PCPU_FENCE_NONE;
}
