/* SPDX-License-Identifier: MIT */
/* uslabtop's model and formatting: rows, sort keys, slabtop lines, JSON, CSV. */
#ifndef USLABTOP_TOP_H
#define USLABTOP_TOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <uslab.h>
#include <uslab/stats.h>

/*
 * Everything here works on snapshots only (struct uslab_snapshot, from
 * uslab_stats_read() or uslab_stats_parse() or built by hand in a test), so
 * the display logic is tested without a live process and without curses.
 * Snapshot contents came from another process: names are sanitised before
 * they are printed, and nothing is assumed about counts beyond what the
 * snapshot's own sizes say.
 */

/* slabtop prints NAME in a 23-column field; uslab names may be longer. */
#define TOP_NAME_WIDTH 23
/* A row's label: "name", or "pid:name" when several processes are shown. */
#define TOP_LABEL_MAX (USLAB_NAME_MAX + 16)
/* A formatted line: widest row plus rate columns, with room to spare. */
#define TOP_LINE_MAX 256

/** One watched process: its last two readings, so rates can be computed. */
struct top_proc {
	pid_t tp_pid;
	char tp_comm[32];
	struct uslab_snapshot tp_snap; /* newest reading; ncaches == 0 before the first */
	struct uslab_snapshot tp_prev; /* the one before, for rates */
	bool tp_have_prev;
	bool tp_exited; /* the last read said ESRCH */
	/* Per cache of tp_snap (ncaches entries, NULL when none): */
	double *tp_alloc_rate; /* objects/s over the last interval, or -1 */
	double *tp_free_rate;
	double *tp_fast_alloc_ival; /* fast-path share of the interval's allocs, or -1 */
	double *tp_fast_free_ival;
};

/** One line of the table: a cache of some process. */
struct top_row {
	const struct top_proc *r_proc;
	size_t r_index; /* into r_proc->tp_snap.caches */
	const struct uslab_stats *r_st;
	char r_label[TOP_LABEL_MAX];      /* sanitised, NUL-terminated */
	double r_alloc_rate, r_free_rate; /* -1 when unknown */
};

/** The summary lines, summed over the rows as slabtop sums /proc/slabinfo. */
struct top_totals {
	uint64_t t_active_objs, t_total_objs;
	uint64_t t_active_slabs, t_total_slabs;
	uint64_t t_active_caches, t_caches; /* active: has at least one object */
	double t_active_size, t_total_size; /* bytes: objects * slot size */
	uint64_t t_min_obj, t_max_obj;      /* slot sizes */
	double t_avg_obj;                   /* total size / total objects */
};

/* ---- Sort keys (the letters of slabtop -s) ---- */

/** The sort keys in slabtop's order, "abclvnopsu". */
extern const char top_sort_keys[];

/** A valid key for @c (either case), or 0. */
char top_sort_key(int c);

/** What @key sorts by, in slabtop --help words ("number of objects"). */
const char *top_sort_desc(char key);

/** A short name for the status line ("objs", "name", ...). */
const char *top_sort_short(char key);

/** Sort @rows by @key: descending, except by name (ascending); ties by label. */
void top_sort(struct top_row *rows, size_t n, char key);

/* ---- Building rows from processes ---- */

/** Copy @name (at most USLAB_NAME_MAX bytes, maybe not terminated) into
 *  @out as printable ASCII, other bytes as '?'. */
void top_sanitize(char *out, size_t outlen, const char *name);

/** Compute a process's per-cache rates from tp_prev to tp_snap, matching
 *  caches by name and occurrence. Returns -1 (ENOMEM) on failure. */
int top_proc_rates(struct top_proc *p);

/** Rows for @nprocs processes into @rows (room for every cache of every
 *  process); labels carry the pid when @with_pid. Returns the row count. */
size_t top_rows_fill(struct top_row *rows, const struct top_proc *procs, size_t nprocs,
                     bool with_pid);

/** Sum @rows as slabtop's five summary lines do. */
void top_totals(const struct top_row *rows, size_t n, struct top_totals *t);

/* ---- slabtop lines ---- */

/** Summary line @i (0..4) into @buf, exactly as slabtop prints it. */
void top_format_summary(char *buf, size_t len, const struct top_totals *t, int i);

/** The column header; @namew >= 23 pads NAME; @rates adds ALLOC/s FREE/s. */
void top_format_header(char *buf, size_t len, int namew, bool rates);

/** One row in slabtop's columns (then the rate columns with @rates). */
void top_format_row(char *buf, size_t len, const struct top_row *r, int namew, bool rates);

/** Name field width for @rows: 23, or the longest label when @rates need
 *  the columns after NAME aligned. */
int top_name_width(const struct top_row *rows, size_t n, bool rates);

/* ---- Batch output (-o) ---- */

/** slabtop -o text: five summary lines, a blank line, header, rows. */
int top_print_text(FILE *out, const struct top_row *rows, size_t n, bool rates);

/** JSON: every process with its caches (in @rows order) and totals. */
int top_print_json(FILE *out, const struct top_proc *procs, size_t nprocs,
                   const struct top_row *rows, size_t n, char sort);

/** CSV: a header line, then one line per row with every stats field. */
int top_print_csv(FILE *out, const struct top_row *rows, size_t n);

#endif /* USLABTOP_TOP_H */
