/* SPDX-License-Identifier: MIT */
/* uslabtop's interactive screen, and the watch list it shares with the batch mode. */
#ifndef USLABTOP_TOP_SCREEN_H
#define USLABTOP_TOP_SCREEN_H

#include <stdbool.h>
#include <stddef.h>

#include "top.h"

enum top_format { TOP_FMT_TEXT, TOP_FMT_JSON, TOP_FMT_CSV };

/** Command-line options. */
struct top_opts {
	double o_delay;   /* seconds between readings */
	bool o_delay_set; /* -d given: --once takes two readings and shows rates */
	bool o_once;
	char o_sort; /* a sort key of top_sort_keys */
	enum top_format o_format;
};

/** The processes being watched, each with its open reader (in uslabtop.c). */
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

/** Run the interactive screen until the user quits. With @w NULL, start
 *  from the process list (attaching at once when exactly one process
 *  publishes). Returns 0, or -1 when the terminal could not be set up. */
int top_screen_run(const struct top_opts *o, struct watch *w);

#endif /* USLABTOP_TOP_SCREEN_H */
