/* SPDX-License-Identifier: MIT */
/* uslabtop's watch list: which processes are watched, their readers, their readings. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "top-watch.h"

/*
 * A watch is either one process (-p, or one picked from the list) or every
 * process that publishes statistics, re-listed on each refresh so that
 * programs started later appear. Each refresh reads every watched process
 * once; the reading before stays beside it, so top-format.c can turn the
 * two into rates. A single watched process that goes away keeps its last
 * reading (tp_exited, w_err say why); with all of them, it is dropped.
 *
 * This is the layer between the screen and the formats: it calls the stats
 * reader (include/uslab/stats.h) and top-format.c, and nothing above it.
 */

/* ---- Processes ---- */

/* @pid's command name from /proc, "" when gone. */
static void read_comm(pid_t pid, char *out, size_t len)
{
	char path[64], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof path, "/proc/%ld/comm", (long)pid);
	f = fopen(path, "r");
	if (f != NULL) {
		if (fgets(buf, sizeof buf, f) == NULL)
			buf[0] = '\0';
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = '\0';
	top_sanitize(out, len, buf);
}

/* Free a process's snapshots and rate arrays (not @p itself). */
static void proc_fini(struct top_proc *p)
{
	if (p->tp_snap.caches != NULL || p->tp_snap.cpu_objs != NULL)
		uslab_snapshot_free(&p->tp_snap);
	if (p->tp_have_prev)
		uslab_snapshot_free(&p->tp_prev);
	free(p->tp_alloc_rate);
	p->tp_alloc_rate = p->tp_free_rate = NULL;
	p->tp_fast_alloc_ival = p->tp_fast_free_ival = NULL;
	memset(&p->tp_snap, 0, sizeof p->tp_snap);
	p->tp_have_prev = false;
}

/* Replace @p's reading by @snap (ownership moves to @p); the former one
 * becomes tp_prev, and rates are recomputed. Returns 0, or -1 (ENOMEM). */
static int proc_push(struct top_proc *p, struct uslab_snapshot *snap)
{
	if (p->tp_have_prev)
		uslab_snapshot_free(&p->tp_prev);
	p->tp_have_prev = p->tp_snap.taken_ns != 0;
	if (p->tp_have_prev)
		p->tp_prev = p->tp_snap;
	p->tp_snap = *snap;
	memset(snap, 0, sizeof *snap);
	return top_proc_rates(p);
}

/* ---- The list ---- */

/* Index of @pid in @w, or -1. */
static long watch_find(const struct watch *w, pid_t pid)
{
	for (size_t i = 0; i < w->w_n; i++)
		if (w->w_procs[i].tp_pid == pid)
			return (long)i;
	return -1;
}

/* Drop entry @i (its process is gone), keeping the order of the rest. */
static void watch_remove(struct watch *w, size_t i)
{
	proc_fini(&w->w_procs[i]);
	uslab_stats_close(w->w_readers[i]);
	memmove(&w->w_procs[i], &w->w_procs[i + 1], (w->w_n - i - 1) * sizeof *w->w_procs);
	memmove(&w->w_readers[i], &w->w_readers[i + 1], (w->w_n - i - 1) * sizeof *w->w_readers);
	w->w_n--;
}

/* ---- Exported: see top-watch.h ---- */

struct uslab_proc *watch_list_procs(int *count)
{
	size_t cap = 16;

	for (;;) {
		struct uslab_proc *v = calloc(cap, sizeof *v);
		if (v == NULL)
			return NULL;
		int n = uslab_stats_list(v, cap);
		if (n < 0) {
			free(v);
			return NULL;
		}
		if ((size_t)n <= cap) {
			*count = n;
			return v;
		}
		free(v);
		cap = (size_t)n + 16;
	}
}

void watch_init(struct watch *w, bool all)
{
	memset(w, 0, sizeof *w);
	w->w_all = all;
}

void watch_fini(struct watch *w)
{
	for (size_t i = 0; i < w->w_n; i++) {
		proc_fini(&w->w_procs[i]);
		if (w->w_readers[i] != NULL)
			uslab_stats_close(w->w_readers[i]);
	}
	free(w->w_procs);
	free(w->w_readers);
	memset(w, 0, sizeof *w);
}

int watch_add(struct watch *w, pid_t pid, const char *comm)
{
	struct uslab_reader *r = uslab_stats_open(pid);

	if (r == NULL)
		return -1;
	struct top_proc *np = realloc(w->w_procs, (w->w_n + 1) * sizeof *np);
	if (np == NULL)
		goto nomem;
	w->w_procs = np;
	struct uslab_reader **nr = realloc(w->w_readers, (w->w_n + 1) * sizeof *nr);
	if (nr == NULL)
		goto nomem;
	w->w_readers = nr;

	struct top_proc *p = &w->w_procs[w->w_n];
	memset(p, 0, sizeof *p);
	p->tp_pid = pid;
	if (comm != NULL && comm[0] != '\0')
		top_sanitize(p->tp_comm, sizeof p->tp_comm, comm);
	else
		read_comm(pid, p->tp_comm, sizeof p->tp_comm);
	w->w_readers[w->w_n++] = r;
	return 0;
nomem:
	uslab_stats_close(r);
	errno = ENOMEM;
	return -1;
}

int watch_refresh(struct watch *w, char *msg, size_t msglen)
{
	if (msg != NULL && msglen > 0)
		msg[0] = '\0';
	if (w->w_all) {
		/* Pick up processes that started publishing since last time. */
		int n = 0;
		struct uslab_proc *v = watch_list_procs(&n);
		for (int k = 0; v != NULL && k < n; k++)
			if (watch_find(w, v[k].pid) < 0)
				(void)watch_add(w, v[k].pid, v[k].comm);
		free(v);
	}
	for (size_t i = 0; i < w->w_n; i++) {
		struct top_proc *p = &w->w_procs[i];
		struct uslab_snapshot s;

		if (p->tp_exited)
			continue;
		memset(&s, 0, sizeof s);
		if (uslab_stats_read(w->w_readers[i], &s) == 0) {
			if (proc_push(p, &s) != 0)
				return -1;
			continue;
		}
		int err = errno;
		if (msg != NULL)
			snprintf(msg, msglen, "process %ld %s", (long)p->tp_pid,
			         err == ESRCH ? "has exited" : strerror(err));
		if (w->w_all) {
			watch_remove(w, i--);
		} else {
			p->tp_exited = true;
			w->w_err = err;
		}
	}
	return 0;
}

struct top_row *watch_rows(const struct watch *w, size_t *n, char sort)
{
	size_t total = 0;

	for (size_t i = 0; i < w->w_n; i++)
		total += w->w_procs[i].tp_snap.ncaches;
	struct top_row *rows = calloc(total ? total : 1, sizeof *rows);
	if (rows == NULL)
		return NULL;
	/* Names carry the pid only when they could be confused. */
	*n = top_rows_fill(rows, w->w_procs, w->w_n, w->w_n > 1);
	top_sort(rows, *n, sort);
	return rows;
}
