/* SPDX-License-Identifier: MIT */
/* Reading the live statistics segment another process publishes. */
#ifndef USLAB_STATS_H
#define USLAB_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uslab.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every process using uslab publishes its caches in a sealed memfd, unless
 * USLAB_STATS=0, and names it in a small locator file,
 * $USLAB_STATS_DIR/uslab.<pid>.<pidns> (default directory /dev/shm), mode
 * 0600, removed at normal exit. A reader opens the memfd as
 * /proc/<pid>/fd/<n>, which takes the same rights as reading the process's
 * memory (same user, and a dumpable process or ptrace rights). These
 * functions read such segments from another process. They trust nothing in
 * the locator or the segment: every length, offset, count and string is
 * checked, and a truncated, corrupted, stale or hostile file gives an error
 * (EPROTO), never a crash, with bounded memory.
 */

/** Version of the segment layout this reader understands. */
#define USLAB_SEGMENT_VERSION 5

/** A process that publishes a segment. */
struct uslab_proc {
	pid_t pid;
	char comm[32]; /* from /proc/<pid>/comm, "" if unknown */
};

/**
 * List the live processes with a segment in the stats directory, at most
 * @n into @procs. Segments whose process is gone (or whose pid was reused
 * by a process that is not the publisher) are ignored, and removed when
 * this user may remove them. Returns how many live processes were found
 * (may exceed @n), or -1 with errno.
 */
USLAB_API int uslab_stats_list(struct uslab_proc *procs, size_t n);

/** One reading of a process's caches. */
struct uslab_snapshot {
	pid_t pid;
	uint64_t taken_ns;     /* CLOCK_MONOTONIC when read */
	char mode[48];         /* as uslab_mode() in that process */
	uint64_t bytes_mapped; /* page-source bytes held */
	uint32_t ncpus;        /* per-CPU slots per cache */
	size_t ncaches;
	struct uslab_stats *caches; /* ncaches entries */
	uint64_t *cpu_objs;         /* ncaches * ncpus: objects in each CPU's magazine */
};

struct uslab_reader;

/** Open the segment of @pid. NULL with errno: ENOENT (none), EACCES,
 *  EPROTO (not a segment of a version this reader understands), ENOMEM. */
USLAB_API struct uslab_reader *uslab_stats_open(pid_t pid);

/** Take a snapshot. Returns 0, or -1 with errno: EPROTO (corrupted),
 *  ESRCH (the process has exited), ENOMEM. Free with uslab_snapshot_free(). */
USLAB_API int uslab_stats_read(struct uslab_reader *r, struct uslab_snapshot *out);

/** Parse a segment image held in memory (what uslab_stats_read() does on
 *  the mapped file); for tools and fuzzers. Same return values. */
USLAB_API int uslab_stats_parse(const void *image, size_t len, struct uslab_snapshot *out);

USLAB_API void uslab_snapshot_free(struct uslab_snapshot *s);
USLAB_API void uslab_stats_close(struct uslab_reader *r);

#ifdef __cplusplus
}
#endif

#endif /* USLAB_STATS_H */
