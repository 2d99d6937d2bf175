/* SPDX-License-Identifier: MIT */
/* uslab-bench's report: the table of medians and minima, the ratios, memory, JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"

/*
 * Output: a markdown table (default) or --json, then the ratios asked for
 * by the issue (64-byte objects, same run), then the memory table.
 * --quick makes every run about 20 times shorter (CI smoke test).
 * This is a measuring tool: it has no thresholds and never fails on a
 * figure; the exit status is non-zero only when it could not run.
 */

/* ---- Rows ---- */

/* Counters per op: the median over the runs, when every run has counters
 * (callgrind set rs_ins already). */
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

/* ---- Ratios ---- */

/* Median ns/op of @backend in @workload at @size, or -1. */
static double med_ns(struct bench *bn, const char *backend, const char *workload, size_t size)
{
	return row_median(bench_result(bn, backend, workload, size, 0, false));
}

/* Ratio @a / @b of two ns figures (time ratio) or @b / @a (throughput). */
static void ratio_add(struct bench *bn, const char *name, double a, double b, bool throughput,
                      const char *unit_a, const char *unit_b)
{
	struct ratio *r;

	if (bn->bn_nratios >= MAX_RATIOS)
		return;
	r = &bn->bn_ratios[bn->bn_nratios++];
	snprintf(r->rt_name, sizeof r->rt_name, "%s", name);
	if (a <= 0 || b <= 0) {
		r->rt_value = -1;
		snprintf(r->rt_detail, sizeof r->rt_detail, "n/a (missing figure)");
		return;
	}
	r->rt_value = throughput ? b / a : a / b;
	snprintf(r->rt_detail, sizeof r->rt_detail, "%s %.2f ns/op, %s %.2f ns/op", unit_a, a,
	         unit_b, b);
}

/* The issue's ratios, on 64-byte objects. */
static void issue_ratios(struct bench *bn)
{
	static const char *const peers[] = {"glibc", "jemalloc", "tcmalloc", "mimalloc"};
	static const char *const best_of[] = {"pair", "batch100k"};
	const size_t S = 64;
	char name[96];

	ratio_add(bn, "pair: uslab / floor (time)", med_ns(bn, "uslab", "pair", S),
	          med_ns(bn, "floor", "pair", S), false, "uslab", "floor");
	for (size_t w = 0; w < 2; w++) {
		const char *best = NULL;
		double best_ns = -1;
		for (size_t i = 0; i < 4; i++) {
			double p = med_ns(bn, peers[i], best_of[w], S);
			if (p > 0 && (best_ns < 0 || p < best_ns)) {
				best_ns = p;
				best = peers[i];
			}
		}
		snprintf(name, sizeof name, "%s: uslab / best peer [%s] (time)", best_of[w],
		         best != NULL ? best : "none");
		ratio_add(bn, name, med_ns(bn, "uslab", best_of[w], S), best_ns, false, "uslab",
		          best != NULL ? best : "none");
	}
	for (int k = 0; k < 2; k++) {
		const char *w = k ? "batch1k" : "pair";
		char t2[32], t16[32];
		snprintf(t2, sizeof t2, "%s-t2", w);
		snprintf(t16, sizeof t16, "%s-t16", w);
		snprintf(name, sizeof name, "%s: uslab 2-thread / 1-thread throughput", w);
		ratio_add(bn, name, med_ns(bn, "uslab", t2, S), med_ns(bn, "uslab", w, S), true,
		          "2 threads", "1 thread");
		snprintf(name, sizeof name, "%s: uslab 16-thread / 2-thread throughput", w);
		ratio_add(bn, name, med_ns(bn, "uslab", t16, S), med_ns(bn, "uslab", t2, S), true,
		          "16 threads", "2 threads");
	}
	ratio_add(bn, "prodcons: uslab / floor (ring alone) (time)",
	          med_ns(bn, "uslab", "prodcons", S), med_ns(bn, "floor", "prodcons", S), false,
	          "uslab", "ring");
	ratio_add(bn, "pair: uslab-locked / glibc (time)", med_ns(bn, "uslab-locked", "pair", S),
	          med_ns(bn, "glibc", "pair", S), false, "uslab-locked", "glibc");
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

/* A list of figures. */
static void json_list(const double *v, int n)
{
	putchar('[');
	for (int i = 0; i < n; i++)
		printf("%s%.3f", i ? ", " : "", v[i]);
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
		printf(", \"value\": ");
		json_num(r->rt_value, "%.3f");
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

static void report_markdown(const struct bench *bn, const char *mach)
{
	const struct bench_opts *o = &bn->bn_opt;
	char a[32], b[32], c[32], d[32], e[32];

	printf("# uslab-bench\n\n%s; backends loaded by %s; %d run(s) per cell%s%s.\n\n", mach,
	       o->o_preload ? "LD_PRELOAD" : "dlopen", o->o_runs, o->o_quick ? ", --quick" : "",
	       o->o_callgrind ? ", instructions from callgrind" : "");
	printf("ns/op: one alloc + free (fresh: one alloc of a new object, page faults "
	       "included); -tN rows: wall time over all N threads' operations (1e3 / Mops/s).\n\n");
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
	if (bn->bn_nratios > 0) {
		printf("\n## Ratios (64-byte objects, medians of this run)\n\n| ratio | value | "
		       "from |\n|---|---:|---|\n");
		for (int i = 0; i < bn->bn_nratios; i++) {
			fmt_num(a, sizeof a, bn->bn_ratios[i].rt_value, "%.2f");
			printf("| %s | %s | %s |\n", bn->bn_ratios[i].rt_name, a,
			       bn->bn_ratios[i].rt_detail);
		}
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
	machine(mach, sizeof mach);
	if (bn->bn_opt.o_json)
		report_json(bn, mach);
	else
		report_markdown(bn, mach);
}
