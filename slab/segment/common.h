/* SPDX-License-Identifier: MIT */
/* What the segment's writer and reader share: where segments live, /proc. */
#ifndef USLAB_SEG_COMMON_H
#define USLAB_SEG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** The stats directory: $USLAB_STATS_DIR (ignored in setuid programs), or
 *  /dev/shm. */
const char *seg_dir(void);

/** Start time of @pid (field 22 of /proc/<pid>/stat, clock ticks since
 *  boot): 0 if there is no such process, UINT64_MAX if it cannot be read. */
uint64_t seg_proc_start_time(pid_t pid);

/** The name of @pid from /proc/<pid>/comm, control characters replaced,
 *  in @comm (@n bytes); "" if unknown. */
void seg_proc_comm(pid_t pid, char *comm, size_t n);

#endif /* USLAB_SEG_COMMON_H */
