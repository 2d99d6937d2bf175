/* SPDX-License-Identifier: MIT */
/* uslab-bench's report: the table of medians and minima, the per-round ratios, memory, JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"

/*
 * Output: a markdown table (default) or --json, then the ratios against
 * the speed goals, each marked met or missed (64 and 256 bytes, same run;
 * issue_ratios), the A/B ratios of uslab builds
 * (--uslab-lib, every cell) and of page sources (--pagesrc: each variant
 * over the backend it varies, every cell), then the memory table. --quick makes every run
 * about 20 times shorter (CI smoke test).
 *
 * Each row gives a backend's median and minimum over the rounds of its cell.
 * Each ratio is computed per round, from the two figures of that round, and
 * the table shows the median of those per-round ratios with their range:
 * within a round the backends ran one right after the other (bench-parent.c),
 * so a slow phase of the machine divides out, where a ratio of two medians
 * could pair one backend's fast rounds with the other's slow ones. The
 * thread-scaling ratios are the exception: they divide rounds of two cells
 * (pair and pair-t2), which ran one cell after the other.
 *
 * This is a measuring tool: it has no thresholds and never fails on a
 * figure; the exit status is non-zero only when it could not run.
 */

/* ---- Rows ---- */

/* Counters per op: the median over the rounds with a figure, when every
 * such round has counters (callgrind set rs_ins already). */
static void result_finish(struct result *r)
{
	bool ins = true, cyc = true;
	int seen = 0;

	for (int i = 0; i < r->rs_nruns; i++) {
		if (r->rs_ns[i] < 0)
			continue;
		seen++;
		ins = ins && r->rs_ins_runs[i] >= 0;
		cyc = cyc && r->rs_cyc_runs[i] >= 0;
	}
	if (seen > 0 && ins)
		r->rs_ins = median(r->rs_ins_runs, r->rs_nruns);
	if (seen > 0 && cyc)
		r->rs_cyc = median(r->rs_cyc_runs, r->rs_nruns);
}

static int workload_rank(const char *w)
{
	static const char *const order[] = {"pair", "batch1k", "batch100k"};
	const char *t = strstr(w, "-t");

	for (int i = 0; i < 3; i++)
		if (strcmp(w, order[i]) == 0)
			return i;
	if (t != NULL)
		return 10 + 2 * atoi(t + 2) + (strncmp(w, "batch", 5) == 0);
	if (strcmp(w, "prodcons") == 0)
		return 100000;
	return 100001; /* fresh */
}

static int cmp_result(const void *pa, const void *pb)
{
	const struct result *a = pa, *b = pb;
	int d = workload_rank(a->rs_workload) - workload_rank(b->rs_workload);

	if (d == 0)
		d = (a->rs_size > b->rs_size) - (a->rs_size < b->rs_size);
	if (d == 0)
		d = a->rs_order - b->rs_order;
	return d;
}

static double row_median(const struct result *r)
{
	return r != NULL ? median(r->rs_ns, r->rs_nruns) : -1;
}

/* ---- Ratios, per round ---- */

/* Add the ratio @a / @b of two rows (time), or @b / @a (@throughput),
 * round by round; @la and @lb name the rows in the detail. */
static void ratio_add(struct bench *bn, const char *name, const struct result *a,
                      const struct result *b, bool throughput, bool ab, const char *la,
                      const char *lb, double goal)
{
	struct ratio *r;

	if (bn->bn_nratios >= MAX_RATIOS)
		return;
	r = &bn->bn_ratios[bn->bn_nratios++];
	memset(r, 0, sizeof *r);
	snprintf(r->rt_name, sizeof r->rt_name, "%s", name);
	r->rt_ab = ab;
	r->rt_goal = goal;
	for (int i = 0; a != NULL && b != NULL && i < a->rs_nruns && i < b->rs_nruns; i++)
		if (a->rs_ns[i] > 0 && b->rs_ns[i] > 0)
			r->rt_round[r->rt_n++] =
				throughput ? b->rs_ns[i] / a->rs_ns[i] : a->rs_ns[i] / b->rs_ns[i];
	r->rt_value = median(r->rt_round, r->rt_n);
	r->rt_lo = minimum(r->rt_round, r->rt_n);
	r->rt_hi = maximum(r->rt_round, r->rt_n);
	if (r->rt_n == 0)
		snprintf(r->rt_detail, sizeof r->rt_detail, "n/a (missing figure)");
	else
		snprintf(r->rt_detail, sizeof r->rt_detail, "%s %.2f ns/op, %s %.2f ns/op", la,
		         row_median(a), lb, row_median(b));
}

/* The best peer of @workload at @size by median (NULL if none ran). */
static const struct result *best_peer(struct bench *bn, const char *workload, size_t size)
{
	static const char *const peers[] = {"glibc", "jemalloc", "tcmalloc", "mimalloc"};
	const struct result *best = NULL;

	for (size_t i = 0; i < 4; i++) {
		const struct result *p = bench_result(bn, peers[i], workload, size, 0, false);
		if (row_median(p) > 0 && (best == NULL || row_median(p) < row_median(best)))
			best = p;
	}
	return best;
}

/* The speed goals (issue 14), for 64- and 256-byte objects: uslab at most
 * 0.9x the best of the four mallocs on every row, at most 1.3x the floor
 * on pair, the locked mode at most 1.5x glibc on pair; then the thread
 * scaling and prodcons against the ring, which have no goal of their own. */
static void issue_ratios(struct bench *bn)
{
	static const char *const rows[] = {"pair",        "batch1k",    "batch100k",
	                                   "pair-t2",     "batch1k-t2", "pair-t16",
	                                   "batch1k-t16", "prodcons",   "fresh"};
	static const size_t sizes[] = {64, 256};
	char name[96];

#define ROW(backend, workload) bench_result(bn, (backend), (workload), S, 0, false)
	for (size_t k = 0; k < 2; k++) {
		const size_t S = sizes[k];
		for (size_t w = 0; w < sizeof rows / sizeof rows[0]; w++) {
			const struct result *best = best_peer(bn, rows[w], S);
			if (ROW("uslab", rows[w]) == NULL || best == NULL)
				continue;
			snprintf(name, sizeof name, "%s, %zu B: uslab / best peer [%s] (time)",
			         rows[w], S, best->rs_backend);
			ratio_add(bn, name, ROW("uslab", rows[w]), best, false, false, "uslab",
			          best->rs_backend, 0.9);
		}
		snprintf(name, sizeof name, "pair, %zu B: uslab / floor (time)", S);
		if (ROW("uslab", "pair") != NULL && ROW("floor", "pair") != NULL)
			ratio_add(bn, name, ROW("uslab", "pair"), ROW("floor", "pair"), false,
			          false, "uslab", "floor", 1.3);
		snprintf(name, sizeof name, "pair, %zu B: uslab-locked / glibc (time)", S);
		if (ROW("uslab-locked", "pair") != NULL && ROW("glibc", "pair") != NULL)
			ratio_add(bn, name, ROW("uslab-locked", "pair"), ROW("glibc", "pair"),
			          false, false, "uslab-locked", "glibc", 1.5);
	}
	{
		const size_t S = 64;
		for (int k = 0; k < 2; k++) {
			const char *w = k ? "batch1k" : "pair";
			char t2[32], t16[32];
			snprintf(t2, sizeof t2, "%s-t2", w);
			snprintf(t16, sizeof t16, "%s-t16", w);
			if (ROW("uslab", w) == NULL || ROW("uslab", t2) == NULL)
				continue; /* not run */
			snprintf(name, sizeof name,
			         "%s, 64 B: uslab 2-thread / 1-thread throughput", w);
			ratio_add(bn, name, ROW("uslab", t2), ROW("uslab", w), true, false,
			          "2 threads", "1 thread", 0);
			snprintf(name, sizeof name,
			         "%s, 64 B: uslab 16-thread / 2-thread throughput", w);
			ratio_add(bn, name, ROW("uslab", t16), ROW("uslab", t2), true, false,
			          "16 threads", "2 threads", 0);
		}
		if (ROW("uslab", "prodcons") != NULL && ROW("floor", "prodcons") != NULL)
			ratio_add(bn, "prodcons, 64 B: uslab / floor (ring alone) (time)",
			          ROW("uslab", "prodcons"), ROW("floor", "prodcons"), false, false,
			          "uslab", "ring", 0);
	}
#undef ROW
}

/* A/B of uslab builds, in every cell: each --uslab-lib backend after the
 * first against the first; a single one against "uslab" when it ran. */
static void ab_ratios(struct bench *bn)
{
	const struct bench_opts *o = &bn->bn_opt;
	const struct backend *ref = NULL, *uslab = NULL;
	int nextra = 0;

	for (int i = 0; i < o->o_nbackends; i++) {
		nextra += o->o_backends[i]->be_extra && o->o_backends[i]->be_base == NULL;
		if (strcmp(o->o_backends[i]->be_name, "uslab") == 0)
			uslab = o->o_backends[i];
	}
	for (int i = 0; i < o->o_nbackends && ref == NULL; i++)
		if (o->o_backends[i]->be_extra && o->o_backends[i]->be_base == NULL)
			ref = nextra == 1 ? uslab : o->o_backends[i];
	if (ref == NULL)
		return;
	for (size_t i = 0; i < bn->bn_nresults; i++) {
		const struct result *b = &bn->bn_results[i];
		const struct backend *be = backend_find(bn, b->rs_backend);
		if (be == NULL || !be->be_extra || be->be_base != NULL || be == ref)
			continue;
		const struct result *a =
			bench_result(bn, ref->be_name, b->rs_workload, b->rs_size, 0, false);
		char name[96];
		snprintf(name, sizeof name, "%s, %zu B: %s / %s (time)", b->rs_workload, b->rs_size,
		         be->be_name, ref->be_name);
		ratio_add(bn, name, b, a, false, true, be->be_name, ref->be_name, 0);
	}
}

/* --pagesrc, in every cell: each variant (uslab+hugepage) against the
 * backend it varies, when that one ran too. */
static void pagesrc_ratios(struct bench *bn)
{
	for (size_t i = 0; i < bn->bn_nresults; i++) {
		const struct result *v = &bn->bn_results[i];
		const struct backend *be = backend_find(bn, v->rs_backend);
		if (be == NULL || be->be_base == NULL)
			continue;
		const struct result *base = bench_result(bn, be->be_base->be_name, v->rs_workload,
		                                         v->rs_size, 0, false);
		if (base == NULL)
			continue;
		char name[96];
		snprintf(name, sizeof name, "%s, %zu B: %s / %s (time)", v->rs_workload, v->rs_size,
		         be->be_name, be->be_base->be_name);
		ratio_add(bn, name, v, base, false, true, be->be_name, be->be_base->be_name, 0);
	}
}

/* ---- Formatting ---- */

static void fmt_num(char *buf, size_t len, double v, const char *f)
{
	if (v < 0)
		snprintf(buf, len, "n/a");
	else
		snprintf(buf, len, f, v);
}

static void machine(char *buf, size_t len)
{
	char model[160] = "unknown CPU", line[256];
	static const int model_max = 150;
	struct utsname u;
	FILE *f = fopen("/proc/cpuinfo", "re");

	while (f != NULL && fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "model name", 10) == 0) {
			char *p = strchr(line, ':');
			snprintf(model, sizeof model, "%.*s", model_max, p ? p + 2 : line);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	if (f != NULL)
		fclose(f);
	uname(&u);
	snprintf(buf, len, "%s, %ld CPUs online, Linux %s", model, sysconf(_SC_NPROCESSORS_ONLN),
	         u.release);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void json_num(double v, const char *f)
{
	if (v < 0)
		printf("null");
	else
		printf(f, v);
}

/* A list of figures, -1 as null. */
static void json_list(const double *v, int n)
{
	putchar('[');
	for (int i = 0; i < n; i++) {
		printf("%s", i ? ", " : "");
		json_num(v[i], "%.3f");
	}
	putchar(']');
}

static void mem_figures(const struct memres *m, double *delta, double *per, double *ovh,
                        double *freed, double *kept)
{
	*delta = m->mr_rss1 - m->mr_rss0;
	*per = *delta / (double)m->mr_n;
	*ovh = 100.0 * (*per / (double)m->mr_size - 1.0);
	*freed = m->mr_rss2 - m->mr_rss0;
	*kept = m->mr_rss3 - m->mr_rss0;
}

/* ---- JSON ---- */

static void report_json(const struct bench *bn, const char *mach)
{
	const struct bench_opts *o = &bn->bn_opt;

	printf("{\n  \"tool\": \"uslab-bench\",\n  \"machine\": ");
	json_str(mach);
	printf(",\n  \"load\": \"%s\",\n  \"runs\": %d,\n  \"quick\": %s,\n  \"callgrind\": %s,\n",
	       o->o_preload ? "preload" : "dlopen", o->o_runs, o->o_quick ? "true" : "false",
	       o->o_callgrind ? "true" : "false");
	printf("  \"method\": \"rounds: each round runs every backend once, one process per run; "
	       "ratios: median of per-round ratios\",\n");
	printf("  \"unit\": \"ns per alloc+free pair (fresh: per alloc); threads: wall time / all "
	       "threads' pairs\",\n  \"results\": [");
	for (size_t i = 0; i < bn->bn_nresults; i++) {
		const struct result *r = &bn->bn_results[i];
		printf("%s\n    {\"workload\": ", i ? "," : "");
		json_str(r->rs_workload);
		printf(", \"size\": %zu, \"backend\": ", r->rs_size);
		json_str(r->rs_backend);
		printf(", \"threads\": %d, \"runs\": %d, \"median_ns\": ", r->rs_threads,
		       r->rs_nruns);
		json_num(median(r->rs_ns, r->rs_nruns), "%.3f");
		printf(", \"min_ns\": ");
		json_num(minimum(r->rs_ns, r->rs_nruns), "%.3f");
		printf(", \"samples_ns\": ");
		json_list(r->rs_ns, r->rs_nruns);
		printf(", \"instructions_per_op\": ");
		json_num(r->rs_ins, "%.2f");
		printf(", \"cycles_per_op\": ");
		json_num(r->rs_cyc, "%.2f");
		printf("}");
	}
	printf("\n  ],\n  \"ratios\": [");
	for (int i = 0; i < bn->bn_nratios; i++) {
		const struct ratio *r = &bn->bn_ratios[i];
		printf("%s\n    {\"name\": ", i ? "," : "");
		json_str(r->rt_name);
		printf(", \"ab\": %s, \"goal_max\": ", r->rt_ab ? "true" : "false");
		json_num(r->rt_goal > 0 ? r->rt_goal : -1, "%.2f");
		printf(", \"value\": ");
		json_num(r->rt_value, "%.3f");
		printf(", \"min\": ");
		json_num(r->rt_lo, "%.3f");
		printf(", \"max\": ");
		json_num(r->rt_hi, "%.3f");
		printf(", \"per_round\": ");
		json_list(r->rt_round, r->rt_n);
		printf(", \"detail\": ");
		json_str(r->rt_detail);
		printf("}");
	}
	printf("\n  ],\n  \"memory\": [");
	for (size_t i = 0; i < bn->bn_nmem; i++) {
		const struct memres *m = &bn->bn_mem[i];
		double delta, per, ovh, freed, kept;
		mem_figures(m, &delta, &per, &ovh, &freed, &kept);
		printf("%s\n    {\"backend\": ", i ? "," : "");
		json_str(m->mr_backend);
		printf(", \"size\": %zu, \"objects\": %" PRIu64 ", \"rss_before\": %.0f, "
		       "\"rss_live\": %.0f, \"rss_after_free\": %.0f, \"rss_after_reap\": %.0f, "
		       "\"bytes_per_object\": %.3f, \"overhead_pct\": %.3f, "
		       "\"after_reap_vs_before_pct\": %.3f}",
		       m->mr_size, m->mr_n, m->mr_rss0, m->mr_rss1, m->mr_rss2, m->mr_rss3, per,
		       ovh, 100.0 * kept / m->mr_rss0);
	}
	printf("\n  ],\n  \"notes\": [");
	for (int i = 0; i < bn->bn_nnotes; i++) {
		printf("%s\n    ", i ? "," : "");
		json_str(bn->bn_notes[i]);
	}
	printf("\n  ]\n}\n");
}

/* ---- Markdown ---- */

/* The rows of the ratio table that are (@ab) or are not A/B ones. */
static void markdown_ratios(const struct bench *bn, bool ab)
{
	char v[32], range[80], goal[48];

	printf("\n| ratio | median per round | range over rounds | rounds | goal | medians of the "
	       "rows |\n|---|---:|---:|---:|---|---|\n");
	for (int i = 0; i < bn->bn_nratios; i++) {
		const struct ratio *r = &bn->bn_ratios[i];
		if (r->rt_ab != ab)
			continue;
		fmt_num(v, sizeof v, r->rt_value, "%.3f");
		if (r->rt_n > 0)
			snprintf(range, sizeof range, "%.3f-%.3f", r->rt_lo, r->rt_hi);
		else
			snprintf(range, sizeof range, "n/a");
		if (r->rt_goal <= 0)
			snprintf(goal, sizeof goal, "-");
		else if (r->rt_n == 0)
			snprintf(goal, sizeof goal, "<= %.2f: n/a", r->rt_goal);
		else
			snprintf(goal, sizeof goal, "<= %.2f: %s", r->rt_goal,
			         r->rt_value <= r->rt_goal ? "met" : "**missed**");
		printf("| %s | %s | %s | %d | %s | %s |\n", r->rt_name, v, range, r->rt_n, goal,
		       r->rt_detail);
	}
}

static void report_markdown(const struct bench *bn, const char *mach)
{
	const struct bench_opts *o = &bn->bn_opt;
	char a[32], b[32], c[32], d[32], e[32];
	int nab = 0, nissue = 0;

	printf("# uslab-bench\n\n%s; backends loaded by %s; %d round(s) per cell, each running "
	       "every backend once %s%s%s.\n\n",
	       mach,
	       o->o_inproc    ? "dlopen"
	       : o->o_preload ? "LD_PRELOAD"
	                      : "dlopen",
	       o->o_runs, o->o_inproc ? "in this process (--inproc)" : "in a process of its own",
	       o->o_quick ? ", --quick" : "",
	       o->o_callgrind ? ", instructions from callgrind" : "");
	printf("ns/op: one alloc + free (fresh: one alloc of a new object, page faults "
	       "included); -tN rows: wall time over all N threads' operations (1e3 / Mops/s). "
	       "Median and minimum over the rounds.\n\n");
	if (bn->bn_nresults > 0) {
		printf("| workload | size | backend | median ns/op | min ns/op | Mops/s | ins/op | "
		       "cyc/op |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
		for (size_t i = 0; i < bn->bn_nresults; i++) {
			const struct result *r = &bn->bn_results[i];
			double med = median(r->rs_ns, r->rs_nruns);
			fmt_num(a, sizeof a, med, "%.2f");
			fmt_num(b, sizeof b, minimum(r->rs_ns, r->rs_nruns), "%.2f");
			fmt_num(c, sizeof c, med > 0 ? 1e3 / med : -1, "%.1f");
			fmt_num(d, sizeof d, r->rs_ins, "%.1f");
			fmt_num(e, sizeof e, r->rs_cyc, "%.1f");
			printf("| %s | %zu | %s | %s | %s | %s | %s | %s |\n", r->rs_workload,
			       r->rs_size, r->rs_backend, a, b, c, d, e);
		}
	}
	for (int i = 0; i < bn->bn_nratios; i++) {
		nab += bn->bn_ratios[i].rt_ab;
		nissue += !bn->bn_ratios[i].rt_ab;
	}
	if (nissue > 0) {
		printf("\n## Ratios and goals (the median of the per-round ratios)\n\n"
		       "Each ratio is computed in every round from the two figures of that round, "
		       "then the median over the rounds is shown, with the range. Thread ratios "
		       "divide rounds of two cells run one after the other.\n");
		markdown_ratios(bn, false);
	}
	if (nab > 0) {
		printf("\n## A/B of uslab builds and page sources (the median of the per-round "
		       "ratios)\n\n"
		       "B / A is B's time over A's: below 1, B is faster. An A/A run (one file "
		       "twice) shows the noise.\n");
		markdown_ratios(bn, true);
	}
	if (bn->bn_nmem > 0) {
		printf("\n## Memory (RSS from /proc/self/statm; delta over N live objects, each "
		       "written)\n\n| backend | size | objects | RSS delta MB | bytes/object | "
		       "overhead %% | after free MB | after reap MB | after reap vs before |\n"
		       "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
		for (size_t i = 0; i < bn->bn_nmem; i++) {
			const struct memres *m = &bn->bn_mem[i];
			double delta, per, ovh, freed, kept;
			mem_figures(m, &delta, &per, &ovh, &freed, &kept);
			printf("| %s | %zu | %" PRIu64 " | %.1f | %.2f | %+.2f%% | %+.1f | %+.1f | "
			       "%.1f / %.1f MB (%+.2f%%) |\n",
			       m->mr_backend, m->mr_size, m->mr_n, delta / 1048576, per, ovh,
			       freed / 1048576, kept / 1048576, m->mr_rss3 / 1048576,
			       m->mr_rss0 / 1048576, 100.0 * kept / m->mr_rss0);
		}
		printf("\n\"after free\" and \"after reap\" are RSS above \"before\"; \"before\" "
		       "includes the tool's pointer array (8 bytes per object).\n");
	}
	if (bn->bn_nnotes > 0) {
		printf("\nNotes:\n");
		for (int i = 0; i < bn->bn_nnotes; i++)
			printf("- %s\n", bn->bn_notes[i]);
	}
}

/* ---- Exported: see bench.h ---- */

void bench_report(struct bench *bn)
{
	char mach[320];

	for (size_t i = 0; i < bn->bn_nresults; i++)
		result_finish(&bn->bn_results[i]);
	qsort(bn->bn_results, bn->bn_nresults, sizeof *bn->bn_results, cmp_result);
	issue_ratios(bn);
	ab_ratios(bn);
	pagesrc_ratios(bn);
	machine(mach, sizeof mach);
	if (bn->bn_opt.o_json)
		report_json(bn, mach);
	else
		report_markdown(bn, mach);
}
