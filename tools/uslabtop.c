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
#include "top-watch.h"

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
 * The files call one way, each only those after it in this chain:
 *
 *   uslabtop.c -> top-screen.c -> top-watch.c -> top-format.c
 *
 *   uslabtop.c    options, the batch mode (-o, --json, --csv), main
 *   top-screen.c  the interactive screen (top-screen.h)
 *   top-watch.c   the watch list: which processes, their readers, their
 *                 last two readings (top-watch.h)
 *   top-format.c  rows, sort keys, rates, slabtop lines, JSON, CSV (top.h;
 *                 a library of its own, so tests/ check it without curses)
 *
 * A file may skip links (this one calls the watch list and the formats
 * too), never go back up. nm -u on the objects shows it: none references a
 * symbol defined in a file before it.
 */

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
	      " RCU WAIT    objects freed with uslab_cache_free_rcu() waiting for their\n"
	      "             grace period\n"
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
	      "Statistics come from the memfd that $USLAB_STATS_DIR/uslab.<pid>.<pidns>\n"
	      "(default /dev/shm) names, which every uslab process publishes unless\n"
	      "USLAB_STATS=0.\n"
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
