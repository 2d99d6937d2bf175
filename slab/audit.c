/* SPDX-License-Identifier: MIT */
/* Audit records: who allocated and freed an object, when, from which stack. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "internal.h"

/*
 * Design
 *
 * Each object of a cache with USLAB_DEBUG_AUDIT has two records (its last
 * allocation and its last free, struct audit_rec, in its slab's s_audit):
 * a thread id, a time, and a stack handle. Stacks are kept once each in a
 * stack depot (the kernel's stackdepot, in small): a hash table of unique
 * stacks of up to AUDIT_FRAMES return addresses, in the library's own
 * memory (meta.c), which a record names by index. So a record is 16
 * bytes, the thousands of objects allocated at one place share one stack,
 * and uslab_cache_validate() groups leaks by comparing handles.
 *
 * The stack walk (os_backtrace: backtrace(3) on Linux) is warmed up once when auditing starts (its first call may
 * load libgcc_s and call malloc), and never called in a signal handler
 * that interrupted uslab (pgsrc_busy): the record then has no stack. The
 * depot's lock is a leaf (taken with no other uslab lock held, or under
 * the debug paths' own). Records are written by the thread that owns the
 * object at that moment; readers (a report, validate) may see one torn
 * while another thread rewrites it, and then print a wrong stack: these
 * are diagnostics, never decisions.
 */

#define AUDIT_FRAMES 16
#define AUDIT_MORE 8           /* frames captured beyond AUDIT_FRAMES: the library's own, dropped */
#define AUDIT_SLOTS (1u << 16) /* hash table entries (a power of two) */
#define AUDIT_CHUNK_STACKS 1024 /* stacks per chunk of the depot */
#define AUDIT_MAX_CHUNKS 64     /* 65,536 distinct stacks at most */

struct audit_stack {
	uint32_t st_hash;
	uint32_t st_n;
	void *st_frames[AUDIT_FRAMES];
};

static struct uslab_lock audit_lock = USLAB_LOCK_INITIALIZER;
static uint32_t *audit_table; /* handle + 1, 0 = empty */
static struct audit_stack *audit_chunks[AUDIT_MAX_CHUNKS];
static uint32_t audit_nstacks;                 /* handles 1 .. audit_nstacks */
static int audit_ready;                        /* backtrace warmed up */
static uintptr_t audit_text_lo, audit_text_hi; /* the library's code */
static __thread uint32_t audit_tid __attribute__((tls_model("initial-exec")));

void audit_atfork_prepare(void)
{
	lock_take(&audit_lock);
}

void audit_atfork_release(void)
{
	lock_drop(&audit_lock);
}

void audit_init(void)
{
	void *f[4];

	if (__atomic_load_n(&audit_ready, __ATOMIC_ACQUIRE))
		return;
	(void)os_backtrace(f, 4); /* may load libgcc_s: before any lock */
	/* The executable segment holding this code: frames in it are the
	 * library's, not the program's, and a record's stack starts after them. */
	void (*me)(struct audit_rec *) = audit_record;
	uintptr_t addr;
	memcpy(&addr, &me, sizeof addr);
	(void)os_text_of((const void *)addr, &audit_text_lo, &audit_text_hi);
	lock_take(&audit_lock);
	if (audit_table == NULL)
		audit_table = meta_alloc(AUDIT_SLOTS * sizeof *audit_table);
	lock_drop(&audit_lock);
	__atomic_store_n(&audit_ready, audit_table != NULL, __ATOMIC_RELEASE);
}

static struct audit_stack *audit_at(uint32_t h)
{
	return &audit_chunks[(h - 1) / AUDIT_CHUNK_STACKS][(h - 1) % AUDIT_CHUNK_STACKS];
}

static uint32_t audit_hash(void *const *f, int n)
{
	uint64_t h = 1469598103934665603ull;

	for (int i = 0; i < n; i++) {
		h ^= (uintptr_t)f[i];
		h *= 1099511628211ull;
	}
	return (uint32_t)(h ^ (h >> 32));
}

/* The handle of @f[0 .. n), added if new; 0 when the depot is full. */
static uint32_t audit_intern(void *const *f, int n)
{
	uint32_t hash = audit_hash(f, n), h = 0;

	lock_take(&audit_lock);
	for (uint32_t i = hash & (AUDIT_SLOTS - 1), probes = 0; probes < AUDIT_SLOTS;
	     i = (i + 1) & (AUDIT_SLOTS - 1), probes++) {
		uint32_t e = audit_table[i];
		if (e == 0) {
			uint32_t k = audit_nstacks;
			if (k / AUDIT_CHUNK_STACKS >= AUDIT_MAX_CHUNKS)
				break;
			if (audit_chunks[k / AUDIT_CHUNK_STACKS] == NULL &&
			    (audit_chunks[k / AUDIT_CHUNK_STACKS] = meta_alloc(
				     AUDIT_CHUNK_STACKS * sizeof(struct audit_stack))) == NULL)
				break;
			h = k + 1;
			struct audit_stack *st = audit_at(h);
			st->st_hash = hash;
			st->st_n = (uint32_t)n;
			memcpy(st->st_frames, f, (size_t)n * sizeof *f);
			__atomic_store_n(&audit_nstacks, h, __ATOMIC_RELEASE);
			audit_table[i] = h;
			break;
		}
		struct audit_stack *st = audit_at(e);
		if (st->st_hash == hash && st->st_n == (uint32_t)n &&
		    memcmp(st->st_frames, f, (size_t)n * sizeof *f) == 0) {
			h = e;
			break;
		}
	}
	lock_drop(&audit_lock);
	return h;
}

void audit_record(struct audit_rec *r)
{
	void *f[AUDIT_FRAMES + AUDIT_MORE];
	uint32_t stack = 0;

	if (audit_tid == 0)
		audit_tid = os_tid();
	if (__atomic_load_n(&audit_ready, __ATOMIC_ACQUIRE) && pgsrc_busy == 0) {
		int n = os_backtrace(f, AUDIT_FRAMES + AUDIT_MORE), skip = 0;
		while (skip < n && (uintptr_t)f[skip] >= audit_text_lo &&
		       (uintptr_t)f[skip] < audit_text_hi)
			skip++;
		if (n - skip > AUDIT_FRAMES)
			n = skip + AUDIT_FRAMES;
		if (n > skip)
			stack = audit_intern(f + skip, n - skip);
	}
	r->a_stack = stack;
	r->a_tid = audit_tid;
	r->a_ns = uslab_coarse_ns() | 1; /* never 0: 0 is "no record" */
}

/* Append @s to @buf at *@len (bounded). */
static void audit_put(char *buf, size_t cap, size_t *len, const char *s)
{
	while (*s != '\0' && *len + 1 < cap)
		buf[(*len)++] = *s++;
}

void audit_print(int fd, const char *what, const struct audit_rec *r)
{
	char line[160];
	size_t len = 0;

	if (r->a_ns == 0) {
		snprintf(line, sizeof line, "uslab:   %s: never, as far as the audit saw\n", what);
		os_write_fd(fd, line, strlen(line));
		return;
	}
	uint64_t now = uslab_coarse_ns(), ago = now > r->a_ns ? now - r->a_ns : 0;
	snprintf(line, sizeof line, "uslab:   %s by thread %u, %llu.%03llu s ago", what,
	         (unsigned)r->a_tid, (unsigned long long)(ago / 1000000000u),
	         (unsigned long long)(ago / 1000000u % 1000u));
	len = strlen(line);
	uint32_t h = r->a_stack;
	if (h == 0 || h > __atomic_load_n(&audit_nstacks, __ATOMIC_ACQUIRE)) {
		audit_put(line, sizeof line, &len, " (no stack)\n");
		os_write_fd(fd, line, len);
		return;
	}
	audit_put(line, sizeof line, &len, ":\n");
	os_write_fd(fd, line, len);
	const struct audit_stack *st = audit_at(h);
	os_backtrace_print(st->st_frames, (int)st->st_n, fd);
}

bool audit_same_stack(const struct audit_rec *a, const struct audit_rec *b)
{
	return a->a_stack == b->a_stack;
}
