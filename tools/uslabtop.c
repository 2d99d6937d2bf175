/* SPDX-License-Identifier: MIT */
/* uslabtop: slabtop for the caches of running uslab programs. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uslab.h>
#include <uslab/stats.h>

#include "top.h"
#include "top-screen.h"

#ifndef USLABTOP_VERSION
#define USLABTOP_VERSION "unknown"
#endif

/*
 * uslabtop reads the statistics segment every uslab process publishes
 * (include/uslab/stats.h) and shows it the way procps slabtop shows
 * /proc/slabinfo: same options, same summary lines, same columns, same sort
 * keys. What slabtop cannot show comes on top: the process (-p, or a list
 * to pick from, or all of them), the per-CPU mode, alloc/s and free/s, a
 * detail view of one cache, and --json / --csv for scripts.
 *
 * This file holds the options, the watch list (which processes, their
 * readers, their last two snapshots) and the batch mode; the screen lives
 * in top-screen.c and the formats in top-format.c.
 */

/* ---- The watch list ---- */

/* Proc list with room for @n entries; grows as uslab_stats_list() says. */
static struct uslab_proc *list_procs(int *count)
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

void top_proc_fini(struct top_proc *p)
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

int top_proc_push(struct top_proc *p, struct uslab_snapshot *snap)
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

void watch_init(struct watch *w, bool all)
{
	memset(w, 0, sizeof *w);
	w->w_all = all;
}

void watch_fini(struct watch *w)
{
	for (size_t i = 0; i < w->w_n; i++) {
		top_proc_fini(&w->w_procs[i]);
		if (w->w_readers[i] != NULL)
			uslab_stats_close(w->w_readers[i]);
	}
	free(w->w_procs);
	free(w->w_readers);
	memset(w, 0, sizeof *w);
}

/* Index of @pid in @w, or -1. */
static long watch_find(const struct watch *w, pid_t pid)
{
	for (size_t i = 0; i < w->w_n; i++)
		if (w->w_procs[i].tp_pid == pid)
			return (long)i;
	return -1;
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

/* Drop entry @i (its process is gone), keeping the order of the rest. */
static void watch_remove(struct watch *w, size_t i)
{
	top_proc_fini(&w->w_procs[i]);
	uslab_stats_close(w->w_readers[i]);
	memmove(&w->w_procs[i], &w->w_procs[i + 1], (w->w_n - i - 1) * sizeof *w->w_procs);
	memmove(&w->w_readers[i], &w->w_readers[i + 1], (w->w_n - i - 1) * sizeof *w->w_readers);
	w->w_n--;
}

int watch_refresh(struct watch *w, char *msg, size_t msglen)
{
	if (msg != NULL && msglen > 0)
		msg[0] = '\0';
	if (w->w_all) {
		/* Pick up processes that started publishing since last time. */
		int n = 0;
		struct uslab_proc *v = list_procs(&n);
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
			if (top_proc_push(p, &s) != 0)
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

/* ---- Options ---- */

static void usage(FILE *out)
{
	fputs("Usage:\n"
	      " uslabtop [options]\n"
	      "\n"
	      "Options:\n"
	      " -d, --delay <secs>  delay updates\n"
	      " -o, --once          only display once, then exit\n"
	      " -s, --sort <char>   specify sort criteria by character (see below)\n"
	      " -p, --pid <pid>     watch this process (default: pick from a list,\n"
	      "                     or all of them with --once)\n"
	      "     --json          print once as JSON, then exit\n"
	      "     --csv           print once as CSV, then exit\n"
	      "\n"
	      " -h, --help     display this help and exit\n"
	      " -V, --version  output version information and exit\n"
	      "\n"
	      "The following are valid sort criteria:\n",
	      out);
	for (const char *k = top_sort_keys; *k != '\0'; k++)
		fprintf(out, " %c: sort by %s\n", *k, top_sort_desc(*k));
	fputs("\n"
	      "Columns (one line per cache):\n"
	      " OBJS        objects in the cache's slabs (total_objs)\n"
	      " ACTIVE      objects the program holds (active_objs)\n"
	      " USE         ACTIVE / OBJS, in percent\n"
	      " OBJ SIZE    bytes an object occupies (slot_size), in KiB\n"
	      " SLABS       slabs of the cache (total_slabs)\n"
	      " OBJ/SLAB    objects per slab\n"
	      " CACHE SIZE  memory of all its slabs (bytes_total), in KiB\n"
	      " NAME        cache name (pid:name when several processes are shown)\n"
	      " ALLOC/s     allocations per second over the last interval (screen,\n"
	      " FREE/s      or --once with -d); '-' before two readings\n"
	      "\n"
	      "Keys while running:\n"
	      " a b c l v n o p s u  sort, as above\n"
	      " Up Down PgUp PgDn    select a cache\n"
	      " Enter, Right         detail view of the selected cache: per-CPU magazine\n"
	      "                      fill, fast-path hit rate, depot, slab counts\n"
	      " Esc, Left            back from the detail view\n"
	      " w                    choose another process (or all)\n"
	      " Space                refresh now\n"
	      " ?                    key help\n"
	      " q                    quit\n"
	      "\n"
	      "Statistics come from $USLAB_STATS_DIR/uslab.<pid> (default /dev/shm),\n"
	      "which every uslab process publishes unless USLAB_STATS=0.\n"
	      "For more details see tools/uslabtop.md.\n",
	      out);
}

/* Parse a delay in seconds: a positive decimal, at most a day. */
static int parse_delay(const char *s, double *out)
{
	char *end;
	errno = 0;
	double d = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(d > 0) || d > 86400)
		return -1;
	*out = d;
	return 0;
}

static int parse_pid(const char *s, pid_t *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > INT_MAX)
		return -1;
	*out = (pid_t)v;
	return 0;
}

/* ---- Batch mode (-o, --json, --csv) ---- */

static void sleep_secs(double secs)
{
	struct timespec ts = {(time_t)secs, (long)((secs - floor(secs)) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int run_once(struct watch *w, const struct top_opts *o)
{
	char msg[128];
	size_t n = 0;

	if (watch_refresh(w, msg, sizeof msg) != 0)
		goto fail;
	if (o->o_delay_set) {
		/* Two readings, so the rates are known. */
		sleep_secs(o->o_delay);
		if (watch_refresh(w, msg, sizeof msg) != 0)
			goto fail;
	}
	if (!w->w_all && w->w_n == 1 && w->w_procs[0].tp_snap.taken_ns == 0) {
		fprintf(stderr, "uslabtop: %s\n", msg[0] ? msg : "no reading");
		return 1;
	}
	if (w->w_all && w->w_n == 0 && o->o_format == TOP_FMT_TEXT) {
		fprintf(stderr, "uslabtop: no process publishes uslab statistics\n");
		return 1;
	}
	struct top_row *rows = watch_rows(w, &n, o->o_sort);
	if (rows == NULL)
		goto fail;
	int ret;
	if (o->o_format == TOP_FMT_JSON)
		ret = top_print_json(stdout, w->w_procs, w->w_n, rows, n, o->o_sort);
	else if (o->o_format == TOP_FMT_CSV)
		ret = top_print_csv(stdout, rows, n);
	else
		ret = top_print_text(stdout, rows, n, o->o_delay_set);
	free(rows);
	return ret == 0 ? 0 : 1;
fail:
	fprintf(stderr, "uslabtop: %s\n", strerror(errno));
	return 1;
}

/* ---- Main ---- */

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"delay", required_argument, NULL, 'd'},
		{"once", no_argument, NULL, 'o'},
		{"sort", required_argument, NULL, 's'},
		{"pid", required_argument, NULL, 'p'},
		{"json", no_argument, NULL, 'J'},
		{"csv", no_argument, NULL, 'C'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct top_opts o = {.o_delay = 3, .o_sort = 'o', .o_format = TOP_FMT_TEXT};
	pid_t pid = 0;
	int c;

	setlocale(LC_ALL, "");
	while ((c = getopt_long(argc, argv, "d:os:p:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (parse_delay(optarg, &o.o_delay) != 0) {
				fprintf(stderr, "uslabtop: illegal delay: %s\n", optarg);
				return 1;
			}
			o.o_delay_set = true;
			break;
		case 'o':
			o.o_once = true;
			break;
		case 's':
			if (strlen(optarg) != 1 || !top_sort_key(optarg[0])) {
				fprintf(stderr, "uslabtop: invalid sort criterion: %s\n", optarg);
				usage(stderr);
				return 1;
			}
			o.o_sort = top_sort_key(optarg[0]);
			break;
		case 'p':
			if (parse_pid(optarg, &pid) != 0) {
				fprintf(stderr, "uslabtop: invalid pid: %s\n", optarg);
				return 1;
			}
			break;
		case 'J':
			o.o_format = TOP_FMT_JSON;
			o.o_once = true;
			break;
		case 'C':
			o.o_format = TOP_FMT_CSV;
			o.o_once = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("uslabtop from uslab %s\n", USLABTOP_VERSION);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "uslabtop: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		return 1;
	}

	struct watch w;
	int ret;
	if (pid != 0) {
		watch_init(&w, false);
		if (watch_add(&w, pid, NULL) != 0) {
			fprintf(stderr, "uslabtop: pid %ld: %s\n", (long)pid,
			        errno == ENOENT
			                ? "no uslab statistics segment (not a uslab process, "
			                  "or USLAB_STATS=0)"
			                : strerror(errno));
			return 1;
		}
	} else if (o.o_once) {
		/* Batch without -p: every publishing process. */
		watch_init(&w, true);
	} else {
		return top_screen_run(&o, NULL) == 0 ? 0 : 1;
	}
	if (o.o_once)
		ret = run_once(&w, &o);
	else
		ret = top_screen_run(&o, &w) == 0 ? 0 : 1;
	watch_fini(&w);
	return ret;
}
