/* SPDX-License-Identifier: MIT */
/* The per-CPU mode where there is no rseq (Windows): always locked. */
#include "config.h"

#include <pthread.h>
#include <stdint.h>

#include "internal.h"

/*
 * Design
 *
 * pcpu-mode.c chooses between rseq and the locked mode on Linux; on a
 * system without rseq (Windows) the build takes this file instead, and
 * the mode is always "locked" (pcpu.c §3): the same slots, each with its
 * spinlock, indexed by the CPU the thread runs on (os_cpu():
 * GetCurrentProcessorNumber()), an index that is only a hint for
 * locality. Slots: the CPUs the system may have, bounded by an arena's
 * PCPU_MAX_IDS (pcpu.c bounds the index in C in the locked mode). No
 * registration, no fences: a remote operation takes the slot's lock.
 */

char *pcpu_zero;
int pcpu_rseq;     /* always 0 */
int pcpu_rseq_own; /* always 0 */
uint32_t pcpu_nslots = 1;
__thread int pcpu_rseq_state __attribute__((tls_model("initial-exec"))) = PCPU_RSEQ_NEVER;
uint64_t pcpu_rseq_refused;
static pthread_once_t pcpu_once = PTHREAD_ONCE_INIT;

void pcpu_rseq_register(void)
{
	pcpu_rseq_state = PCPU_RSEQ_NEVER;
}

int32_t pcpu_rseq_cpu_id(void)
{
	return -1;
}

static void pcpu_once_init(void)
{
	long n = os_ncpus();

	pcpu_nslots = n < 1 ? 1 : n > PCPU_MAX_IDS ? PCPU_MAX_IDS : (uint32_t)n;
	arena_init(pcpu_nslots);
	/* The region c_fast points at when the fast path must miss: read-only
	 * zeros laid out like an arena (pcpu-mode.c). */
	size_t guard = (size_t)PCPU_GUARD << PCPU_SHIFT;
	char *p = os_map(guard + ((size_t)pcpu_nslots << PCPU_SHIFT), OS_READ);
	pcpu_zero = p == NULL ? NULL : p + guard;
}

void pcpu_init(void)
{
	pthread_once(&pcpu_once, pcpu_once_init);
}

/* See include/uslab.h */
const char *uslab_mode(void)
{
	pcpu_init();
	return "locked: no rseq on this system";
}

uint32_t pcpu_slots(void)
{
	pcpu_init();
	return pcpu_nslots;
}

void pcpu_set_mode_hook(void (*hook)(const char *mode))
{
	(void)hook; /* the mode never changes */
}

bool pcpu_fence_cpu(uint32_t cpu)
{
	(void)cpu; /* only the rseq mode fences */
	return false;
}

bool pcpu_fence_possible(void)
{
	return true;
}
