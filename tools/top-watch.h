/* SPDX-License-Identifier: MIT */
/* uslabtop's watch list: the processes being watched, their readers, their last two readings. */
#ifndef USLABTOP_TOP_WATCH_H
#define USLABTOP_TOP_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "top.h"

/** The processes being watched, each with its open reader. */
struct watch {
	bool w_all; /* every publishing process, re-listed each refresh */
	size_t w_n;
	struct top_proc *w_procs;        /* w_n entries */
	struct uslab_reader **w_readers; /* w_n entries, parallel to w_procs */
	int w_err;                       /* errno of the single process's last failed read */
};

void watch_init(struct watch *w, bool all);
void watch_fini(struct watch *w);

/** Open @pid's segment and add it. Returns 0, or -1 with errno from
 *  uslab_stats_open() (ENOENT: no segment) or ENOMEM. */
int watch_add(struct watch *w, pid_t pid, const char *comm);

/** Read every watched process once. A process whose read fails is marked
 *  exited (single process) or dropped (all), and @msg says so. Returns 0,
 *  or -1 (ENOMEM). */
int watch_refresh(struct watch *w, char *msg, size_t msglen);

/** Rows of every watched cache, sorted by @sort; free() them. NULL on ENOMEM. */
struct top_row *watch_rows(const struct watch *w, size_t *n, char sort);

/** Every process publishing statistics now (uslab_stats_list()), in
 *  *@count entries; free() it. NULL when the list cannot be read. */
struct uslab_proc *watch_list_procs(int *count);

#endif /* USLABTOP_TOP_WATCH_H */
