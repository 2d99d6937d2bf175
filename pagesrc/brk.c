/* SPDX-License-Identifier: MIT */
/* The program break as a page source: size-aligned blocks above the break, beside glibc's malloc. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pagesrc.h"

/*
 * Design
 *
 * 1. Growing. A block of @size bytes must be aligned to @size, and the
 *    break is anywhere. get() rounds the break up to @size, moves it past
 *    the block, and keeps the alignment gap it skipped as a free range of
 *    its own: a smaller block fits there later (a 64 KiB slab in the gap
 *    below a 1 MiB one). Blocks given back that are not at the top are
 *    kept as free ranges too, purged with MADV_DONTNEED so they cost no
 *    RSS, and reused first: get() takes the lowest free range where an
 *    aligned block fits, and moves the break only when none does.
 *
 * 2. What is ours. The source keeps no list of the blocks it gave out,
 *    only the free ranges it holds (bk_free: sorted, coalesced). The break
 *    is moved down only when it sits exactly at the end of the topmost
 *    free range: the bytes just below the break are then ours and free,
 *    and nobody else's memory lies between them and the break, so the
 *    whole range goes back. When the break is anywhere else, someone else
 *    moved it (glibc's malloc grew its heap above our blocks, or trimmed
 *    its own top back down): nothing is given back by moving the break,
 *    the free ranges below stay in the table and are reused, and the next
 *    growth starts at that foreign break. The memory between two foreign
 *    moves is one run of ours; a program whose malloc keeps moving the
 *    break ends up with our runs and its heap interleaved, and loses
 *    nothing but the time to reuse the holes. Once glibc gives its top
 *    back (its trim only moves the break when the break is at the end of
 *    its own top chunk, which lies above everything ours below it), our
 *    topmost range ends at the break again and is given back in turn.
 *
 * 3. glibc. The break is moved with glibc's brk(), so glibc's cached
 *    break (which its sbrk(), and so its malloc, adds to) follows every
 *    move. The break is read with the raw system call (a query moves
 *    nothing): it is the kernel's truth, and it fails when the kernel
 *    refuses brk (seccomp), where glibc's wrapper would read the refusal
 *    as success and cache a break of -1. So a refusal makes get() fail
 *    with ENOMEM, before glibc's state could be damaged.
 *    What cannot be helped: glibc's malloc serialises its sbrk() calls
 *    with its main arena's lock, which this source cannot take. A thread
 *    growing glibc's main heap at the very moment this source moves the
 *    break can compute its new break from a stale one, and the two get
 *    overlapping memory. The source is for programs where that cannot
 *    happen: one thread moving the break at a time (single-threaded
 *    phases), or glibc's malloc replaced (libuslab-malloc.so).
 *
 * 4. Limits. The table holds BK_MAX_FREE free ranges (64 KiB of .bss);
 *    a range that finds the table full (4,096 holes, each between two
 *    blocks still in use or foreign memory) is purged and dropped from
 *    reuse, and counted in bk_lost; it stays mapped until the break moves
 *    below it. put() of a block the source did not give out is undefined,
 *    except one that overlaps a free range or lies above the break this
 *    source last set (a block put twice): ignored.
 *    RLIMIT_DATA and the kernel's address-space layout bound the growth
 *    (valgrind's brk segment is 8 MiB).
 *
 * 5. Lock. bk_lock is a pthread mutex counted in pgsrc_busy (pagesrc.h),
 *    like every uslab lock, so uslab never calls a source from a signal
 *    handler that interrupted a get() or put(); fork() takes it
 *    (pthread_atfork), so the child's table is whole, unless the fork
 *    comes from a handler that interrupted this thread holding it.
 */

#define BK_MAX_FREE 4096

/* A free range of ours, [r_lo, r_hi). r_hi is always page-aligned (a block
 * end or a block start); r_lo may not be (a gap that begins at a foreign
 * break, inside a page whose lower part is someone else's). */
struct bk_range {
	uintptr_t r_lo, r_hi;
};

static pthread_mutex_t bk_lock = PTHREAD_MUTEX_INITIALIZER; /* everything below */
static struct bk_range bk_free[BK_MAX_FREE];                /* sorted by address, never adjacent */
static size_t bk_nfree;
/* Where this source last set the break: every block it gave out ends at
 * or below it (foreign moves do not change it). */
static uintptr_t bk_end;
static uint64_t bk_lost; /* bytes dropped from reuse with the table full */
static pthread_once_t bk_once = PTHREAD_ONCE_INIT;
static bool bk_fork_took; /* the fork's prepare handler took bk_lock */
/* This thread holds bk_lock (initial-exec TLS: no allocation, signal-safe). */
static __thread bool bk_mine __attribute__((tls_model("initial-exec")));

/* ---- The lock ---- */

static void bk_lock_take(void)
{
	pgsrc_busy_enter();
	pthread_mutex_lock(&bk_lock);
	bk_mine = true;
}

static void bk_lock_drop(void)
{
	bk_mine = false;
	pthread_mutex_unlock(&bk_lock);
	pgsrc_busy_leave();
}

/* ---- The break ---- */

/* The kernel's break, or 0 when the kernel refuses brk. */
static uintptr_t bk_break_now(void)
{
	pgsrc_count_call();
	long b = syscall(SYS_brk, 0);
	return b == -1 ? 0 : (uintptr_t)b;
}

/* Move the break to @to through glibc (its cached break follows); false
 * when the kernel refused, the break unchanged. */
static bool bk_move_locked(uintptr_t to)
{
	pgsrc_count_call();
	if (brk((void *)to) != 0)
		return false;
	bk_end = to;
	return true;
}

/* Drop the contents of [@lo, @lo + @len): page-aligned, ours, no user. */
static void bk_purge_range(uintptr_t lo, size_t len)
{
	int err = errno;

	pgsrc_count_call();
	(void)madvise((void *)lo, len, MADV_DONTNEED); /* refused: it costs RSS only */
	errno = err;
}

/* ---- The table of free ranges ---- */

/* The index of the first range whose r_lo is at or above @a. */
static size_t bk_search_locked(uintptr_t a)
{
	size_t lo = 0, hi = bk_nfree;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (bk_free[mid].r_lo < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Open a slot at index @i; false when the table is full. */
static bool bk_open_locked(size_t i)
{
	if (bk_nfree == BK_MAX_FREE)
		return false;
	for (size_t k = bk_nfree; k > i; k--)
		bk_free[k] = bk_free[k - 1];
	bk_nfree++;
	return true;
}

static void bk_close_locked(size_t i)
{
	for (size_t k = i; k + 1 < bk_nfree; k++)
		bk_free[k] = bk_free[k + 1];
	bk_nfree--;
}

/* Does [@lo, @hi) overlap a free range? (A block put twice.) */
static bool bk_overlaps_locked(uintptr_t lo, uintptr_t hi)
{
	size_t i = bk_search_locked(lo);

	return (i < bk_nfree && bk_free[i].r_lo < hi) || (i > 0 && bk_free[i - 1].r_hi > lo);
}

/* Add [@lo, @hi) (free, not in the table) and merge it with its neighbours.
 * Returns the index of the range that holds it, or -1 when the table is
 * full and it touched neither neighbour (then it is counted lost). */
static long bk_insert_locked(uintptr_t lo, uintptr_t hi)
{
	size_t i = bk_search_locked(lo);
	bool left = i > 0 && bk_free[i - 1].r_hi == lo;
	bool right = i < bk_nfree && bk_free[i].r_lo == hi;

	if (left && right) {
		bk_free[i - 1].r_hi = bk_free[i].r_hi;
		bk_close_locked(i);
		return (long)i - 1;
	}
	if (left) {
		bk_free[i - 1].r_hi = hi;
		return (long)i - 1;
	}
	if (right) {
		bk_free[i].r_lo = lo;
		return (long)i;
	}
	if (!bk_open_locked(i)) {
		bk_lost += hi - lo;
		return -1;
	}
	bk_free[i] = (struct bk_range){lo, hi};
	return (long)i;
}

/* Cut [@a, @a + @size) out of range @i, which holds it. With the table
 * full and a piece left on both sides, the smaller piece is dropped. */
static void bk_cut_locked(size_t i, uintptr_t a, size_t size)
{
	struct bk_range r = bk_free[i];
	uintptr_t end = a + size;

	if (r.r_lo == a && r.r_hi == end) {
		bk_close_locked(i);
	} else if (r.r_lo == a) {
		bk_free[i].r_lo = end;
	} else if (r.r_hi == end) {
		bk_free[i].r_hi = a;
	} else if (bk_open_locked(i + 1)) {
		bk_free[i].r_hi = a;
		bk_free[i + 1] = (struct bk_range){end, r.r_hi};
	} else if (a - r.r_lo >= r.r_hi - end) {
		bk_free[i].r_hi = a;
		bk_lost += r.r_hi - end;
	} else {
		bk_free[i].r_lo = end;
		bk_lost += a - r.r_lo;
	}
}

/* A block of @size from the free ranges, lowest address first; 0 if none. */
static uintptr_t bk_take_locked(size_t size)
{
	for (size_t i = 0; i < bk_nfree; i++) {
		uintptr_t a = (bk_free[i].r_lo + size - 1) & ~(uintptr_t)(size - 1);
		if (a >= bk_free[i].r_lo && a < bk_free[i].r_hi && bk_free[i].r_hi - a >= size) {
			bk_cut_locked(i, a, size);
			return a;
		}
	}
	return 0;
}

/* ---- Moving the break ---- */

/* A block of @size above the break (see Design 1); 0 when the kernel
 * refuses. The topmost free range is extended when it ends at the break;
 * otherwise the gap between the break and the block becomes one. */
static uintptr_t bk_grow_locked(size_t size)
{
	uintptr_t cur = bk_break_now();

	if (cur == 0)
		return 0;
	bool top = bk_nfree > 0 && bk_free[bk_nfree - 1].r_hi == cur;
	uintptr_t base = top ? bk_free[bk_nfree - 1].r_lo : cur;
	uintptr_t a = (base + size - 1) & ~(uintptr_t)(size - 1);
	if (a < base || a + size < a || a + size <= cur || !bk_move_locked(a + size))
		return 0;
	if (top) { /* the top range now ends where the block begins */
		if (a > base)
			bk_free[bk_nfree - 1].r_hi = a;
		else
			bk_close_locked(bk_nfree - 1);
	} else if (a > cur) {
		(void)bk_insert_locked(cur, a); /* the gap: never touched, no RSS */
	}
	return a;
}

/* Give the topmost free range back when the break is at its end. */
static bool bk_trim_locked(void)
{
	if (bk_nfree == 0)
		return false;
	struct bk_range r = bk_free[bk_nfree - 1];
	if (bk_break_now() != r.r_hi || !bk_move_locked(r.r_lo))
		return false;
	bk_close_locked(bk_nfree - 1);
	return true;
}

/* ---- Fork ---- */

static void bk_fork_prepare(void)
{
	/* A fork from a handler that interrupted this thread in the source:
	 * the lock is this thread's own; leave it. */
	bk_fork_took = !bk_mine;
	if (bk_fork_took)
		pthread_mutex_lock(&bk_lock);
}

static void bk_fork_release(void)
{
	if (bk_fork_took)
		pthread_mutex_unlock(&bk_lock);
}

static void bk_init(void)
{
	(void)pthread_atfork(bk_fork_prepare, bk_fork_release, bk_fork_release);
}

/* ---- The source ---- */

static bool bk_size_ok(size_t size)
{
	return size >= pgsrc_page_size() && (size & (size - 1)) == 0 && size <= ((size_t)1 << 40);
}

static void *bk_get(void *arg, size_t size)
{
	(void)arg;
	if (!bk_size_ok(size)) {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&bk_once, bk_init);
	bk_lock_take();
	uintptr_t a = bk_take_locked(size);
	if (a == 0)
		a = bk_grow_locked(size);
	bk_lock_drop();
	if (a == 0)
		errno = ENOMEM;
	return (void *)a;
}

static void bk_put(void *arg, void *block, size_t size)
{
	uintptr_t a = (uintptr_t)block;

	(void)arg;
	if (!bk_size_ok(size) || a == 0 || (a & (size - 1)) != 0 || a + size < a)
		return;
	int err = errno;
	bk_lock_take();
	if (a + size <= bk_end && !bk_overlaps_locked(a, a + size)) {
		long i = bk_insert_locked(a, a + size);
		/* At the top, the break goes down; anywhere else the block is
		 * kept, without its pages, until a get() reuses it. */
		if (i < 0 || (size_t)i + 1 != bk_nfree || !bk_trim_locked())
			bk_purge_range(a, size);
	}
	bk_lock_drop();
	errno = err;
}

static void bk_purge(void *arg, void *block, size_t size)
{
	(void)arg;
	bk_purge_range((uintptr_t)block, size);
}

uint64_t pgsrc_brk_lost(void)
{
	bk_lock_take();
	uint64_t lost = bk_lost;
	bk_lock_drop();
	return lost;
}

static const struct uslab_pagesrc bk_source = {
	.name = "brk",
	.get = bk_get,
	.put = bk_put,
	.purge = bk_purge,
	.arg = NULL,
};

/* See include/uslab.h */
const struct uslab_pagesrc *uslab_pagesrc_brk(void)
{
	return &bk_source;
}
