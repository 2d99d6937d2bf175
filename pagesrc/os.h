/* SPDX-License-Identifier: MIT */
/* The platform layer: what the library asks of the operating system. */
#ifndef USLAB_OS_H
#define USLAB_OS_H

/*
 * Design
 *
 * 1. Every system call of the layers above the page sources goes through
 *    here: virtual memory (reserve, commit, protect, give back), the CPU a
 *    thread runs on, thread ids, yielding, signal masks, fork hooks, stack
 *    traces, stderr, name patterns. One file per system implements it:
 *    os-linux.c (POSIX and Linux calls) and os-windows.c (Win32). This
 *    header is the only place that tells the two apart (_WIN32); the
 *    layers above call os_*() and stay portable C.
 *
 * 2. What is Linux-only is not here but a file of its own that the build
 *    replaces on Windows (meson.build): the rseq per-CPU mode
 *    (slab/pcpu-mode.c; Windows runs locked, pcpu-mode-locked.c), the stats
 *    segment (slab/segment/; absent, segment/absent.c), RCU (slab/rcu.c:
 *    liburcu has no Windows port; rcu-absent.c), sampled guard pages
 *    (sample.c: a SIGSEGV handler; sample-absent.c), the preloaded malloc,
 *    and the mmap, brk and hugepage page sources (Windows has
 *    virtualalloc.c). Each absent one answers ENOSYS or "absent", never
 *    a crash.
 *
 * 3. Memory. os_map() maps anonymous zeroed memory at OS_NONE, OS_READ or
 *    OS_RW: on Windows OS_NONE only reserves address space, and
 *    os_protect() to OS_READ/OS_RW commits the pages as it opens them.
 *    os_unmap() takes a whole mapping back (Windows releases only whole
 *    reservations); os_trim() gives back part of one (Linux unmaps it,
 *    Windows decommits it: the address space stays reserved). os_discard()
 *    drops a range's pages now; they read as zeros after.
 *
 * 4. Time: the coarse monotonic clock the depot and slab intervals use is
 *    OS_CLOCK_COARSE for clock_gettime (winpthreads has it on Windows).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef _WIN32
#define OS_WINDOWS 1
#define OS_CLOCK_COARSE CLOCK_MONOTONIC
typedef int os_sigset; /* no signal masks on Windows */
int os_cpu_now(void);  /* GetCurrentProcessorNumber(), in os-windows.c */
#else
#include <sched.h>
#include <signal.h>
#define OS_WINDOWS 0
#define OS_CLOCK_COARSE CLOCK_MONOTONIC_COARSE
typedef sigset_t os_sigset;
#endif

enum os_prot { OS_NONE, OS_READ, OS_RW };

/** @len bytes of anonymous zeroed memory at @prot, or NULL. */
void *os_map(size_t len, enum os_prot prot);
/** The whole of a mapping os_map() returned. */
void os_unmap(void *p, size_t len);
/** Part of a mapping (page-aligned): never touched again. */
void os_trim(void *p, size_t len);
/** Change [p, p+len) (page-aligned, in one mapping) to @prot; false if refused. */
bool os_protect(void *p, size_t len, enum os_prot prot);
/** Fresh zeroed writable pages at [p, p+len), replacing what was there. */
bool os_commit(void *p, size_t len);
/** Drop the pages of [p, p+len) now; they read as zeros after. */
void os_discard(void *p, size_t len);
/** The system page size. */
size_t os_page_size(void);

/** The CPU this thread runs on now (a hint: it may move at once), or -1. */
static inline int os_cpu(void)
{
#if OS_WINDOWS
	return os_cpu_now();
#else
	return sched_getcpu();
#endif
}
/** The number of CPUs the system may have. */
long os_ncpus(void);
/** This thread's id, for records and reports. */
uint32_t os_tid(void);
/** Let another thread run. */
void os_yield(void);
/** Sleep about @ns nanoseconds. */
void os_sleep_ns(uint64_t ns);

/** Block every signal, the old mask in @old (no-op on Windows). */
void os_sig_block_all(os_sigset *old);
/** Put back the mask os_sig_block_all() saved. */
void os_sig_restore(const os_sigset *old);
/** pthread_atfork(); nothing on Windows, which has no fork. */
int os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/** Write @len bytes to stderr, with no allocation (async-signal-safe on Linux). */
void os_write_stderr(const char *s, size_t len);
/** Write to the file descriptor @fd (stderr on Windows when @fd is 2). */
void os_write_fd(int fd, const char *s, size_t len);
/** Up to @n return addresses of the caller's stack into @f; how many. */
int os_backtrace(void **f, int n);
/** Print @n frames to @fd, one a line (with symbols where the OS has them). */
void os_backtrace_print(void *const *f, int n, int fd);
/** The executable segment of the module holding @addr: [*lo, *hi). */
bool os_text_of(const void *addr, uintptr_t *lo, uintptr_t *hi);
/** Whether @name matches the shell pattern @pattern (*, ?, [...]). */
bool os_match(const char *pattern, const char *name);

#endif /* USLAB_OS_H */
