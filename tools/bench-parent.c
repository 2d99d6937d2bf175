/* SPDX-License-Identifier: MIT */
/* uslab-bench's parent side: the rounds, one child process per run, and the records they return. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/*
 * 1. Rounds. For each cell (workload, size), round 1 runs every backend
 *    once in the order given (A B C ...), then round 2 does the same, and
 *    so on: --runs rounds, at most 3 for "fresh", one for "mem" (its
 *    figures do not vary). What drifts on a shared machine (a slow phase of
 *    the VM, a neighbour, the clock) then lands on all backends of a round
 *    alike, and bench-report.c divides figures of the same round.
 *
 * 2. One child process per run. Every run of every backend is this binary
 *    re-executed with --child for that one cell and --runs 1; it does its
 *    own warm-up (a tenth of the operations) before its timed run. So heaps,
 *    RSS and thread caches never mix, uslab-locked can set its environment,
 *    and each backend loads its own malloc. We chose this over one child
 *    per backend kept alive across the rounds: on the VM this was written
 *    on the same binary measures 5.3-6.5 ns or 8-9 ns per pair from one
 *    process to the next, a property of the process (where its code and
 *    heap landed), not of the moment. A child kept alive would carry its
 *    luck into every round and every per-round ratio (an A/A run of one
 *    build could differ by half); a new process per round draws again, and
 *    the median over rounds discards the outliers. The price is an exec and
 *    a warm-up per run, outside the timing.
 *
 * 3. How the other mallocs are loaded, and why. jemalloc, tcmalloc and
 *    mimalloc are loaded into their child with LD_PRELOAD (--load=preload,
 *    the default): each becomes the process's malloc, as in a program that
 *    links or preloads it, and the kernels call its own entry points.
 *    --load=dlopen instead dlopens the library RTLD_LOCAL into a child that
 *    keeps glibc as its malloc (same dlsym calls; dlsym on an RTLD_LOCAL
 *    handle returns that library's own symbol). We measured both on the
 *    2-CPU VM this was written on (64-byte objects, median of 5 runs, ns per
 *    pair, dlopen / preload): mimalloc pair 14.4-15.0 / 6.1, batch1k
 *    7.7 / 7.5; jemalloc pair 16.1 (39.0 in one run) / 15.5-16.0; tcmalloc
 *    8.2 / 8.2. A dlopen'd mimalloc is more than twice as slow on the pair
 *    loop, so dlopen is not an honest stand-in for "the program uses
 *    mimalloc"; preload is the default. dlopen also needs help for jemalloc,
 *    whose 2.6 KiB of initial-exec TLS does not fit glibc's 512-byte static
 *    TLS surplus ("cannot allocate memory in static TLS block"): the child
 *    gets GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384. Sanitizer
 *    builds cannot preload another malloc, so there the default is dlopen.
 *
 * 4. Two builds of uslab, A/B. --uslab-lib NAME=PATH adds a uslab backend
 *    NAME whose children run with LD_PRELOAD=PATH, another build's
 *    libuslab.so. It carries the soname libuslab.so.0, so the loader
 *    takes it for the program's own dependency and maps no second copy;
 *    RUNPATH does not matter. Each uslab child reports the file its
 *    uslab_cache_alloc() was mapped from (/proc/self/maps, the U record),
 *    and the parent stops when that is not PATH: a wrong path cannot
 *    silently measure the same build twice. Two backends that mapped the
 *    same file (an A/A run, to see the noise) get a note. --pagesrc
 *    variants (uslab+hugepage) are the same build with its caches on
 *    another page source: their children get --pagesrc too, so they make
 *    the same variants, and report the source (a P record).
 *
 * 5. Callgrind. Instruction counts can come from callgrind, beside or
 *    instead of perf, deterministically:
 *        uslab-bench --callgrind [--backend ...] [--size ...]
 *    runs pair, batch1k and batch100k once per cell and backend with a
 *    fixed operation count under valgrind --tool=callgrind
 *    --collect-atstart=no --toggle-collect=bk_*, so only the measured loops
 *    (the bk_* functions and what they call) are counted, and reports Ir /
 *    operations. Times are meaningless under valgrind and shown as n/a;
 *    counts do not vary, so there is one round. Note: valgrind does not
 *    implement rseq, so glibc registers none and uslab runs in locked mode
 *    under callgrind; its rseq fast path is 17 + 20 instructions a hit
 *    (tests/fastpath-asm.sh prints them). By hand, for one cell:
 *        valgrind --tool=callgrind --collect-atstart=no --toggle-collect='bk_*' \
 *          ./uslab-bench --child uslab --cg --workload pair --size 64
 *    and divide the "totals:" line of callgrind.out.<pid> by the "C" line's
 *    operation count.
 */

/* ---- Notes ---- */

void note(struct bench *bn, const char *fmt, ...)
{
	char buf[sizeof bn->bn_notes[0]];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	for (int i = 0; i < bn->bn_nnotes; i++)
		if (strcmp(bn->bn_notes[i], buf) == 0)
			return;
	if (bn->bn_nnotes < MAX_NOTES)
		memcpy(bn->bn_notes[bn->bn_nnotes++], buf, sizeof buf);
}

/* ---- Records ---- */

struct result *bench_result(struct bench *bn, const char *backend, const char *workload,
                            size_t size, int threads, bool create)
{
	for (size_t i = 0; i < bn->bn_nresults; i++) {
		struct result *r = &bn->bn_results[i];
		if (strcmp(r->rs_backend, backend) == 0 && strcmp(r->rs_workload, workload) == 0 &&
		    r->rs_size == size)
			return r;
	}
	if (!create)
		return NULL;
	if (bn->bn_nresults == bn->bn_cresults) {
		bn->bn_cresults = bn->bn_cresults ? 2 * bn->bn_cresults : 64;
		bn->bn_results = xrealloc(bn->bn_results, bn->bn_cresults, sizeof *bn->bn_results);
	}
	struct result *r = &bn->bn_results[bn->bn_nresults++];
	const struct backend *be = backend_find(bn, backend);
	memset(r, 0, sizeof *r);
	snprintf(r->rs_backend, sizeof r->rs_backend, "%s", backend);
	snprintf(r->rs_workload, sizeof r->rs_workload, "%s", workload);
	r->rs_size = size;
	r->rs_threads = threads;
	r->rs_order = be != NULL ? (int)(be - bn->bn_backends) : bn->bn_nbackends;
	r->rs_ins = r->rs_cyc = -1;
	return r;
}

/* Store one timed run as round bn_round of its row; rounds before it that
 * have no figure stay -1. */
static void record_run(struct bench *bn, char **f)
{
	struct result *r = bench_result(bn, f[1], f[2], strtoul(f[3], NULL, 10), atoi(f[4]), true);
	int k = bn->bn_round;

	if (k >= MAX_RUNS)
		return;
	for (; r->rs_nruns <= k; r->rs_nruns++)
		r->rs_ns[r->rs_nruns] = r->rs_ins_runs[r->rs_nruns] = r->rs_cyc_runs[r->rs_nruns] =
			-1;
	r->rs_ns[k] = strtod(f[5], NULL);
	r->rs_ins_runs[k] = strtod(f[6], NULL);
	r->rs_cyc_runs[k] = strtod(f[7], NULL);
}

static void record_mem(struct bench *bn, char **f)
{
	if (bn->bn_nmem == bn->bn_cmem) {
		bn->bn_cmem = bn->bn_cmem ? 2 * bn->bn_cmem : 16;
		bn->bn_mem = xrealloc(bn->bn_mem, bn->bn_cmem, sizeof *bn->bn_mem);
	}
	struct memres *m = &bn->bn_mem[bn->bn_nmem++];
	snprintf(m->mr_backend, sizeof m->mr_backend, "%s", f[1]);
	m->mr_size = strtoul(f[2], NULL, 10);
	m->mr_n = strtoull(f[3], NULL, 10);
	m->mr_rss0 = strtod(f[4], NULL);
	m->mr_rss1 = strtod(f[5], NULL);
	m->mr_rss2 = strtod(f[6], NULL);
	m->mr_rss3 = strtod(f[7], NULL);
}

/* A uslab backend's mode and library: the first time, a note; for an
 * --uslab-lib backend, the check that the child mapped the file asked for. */
static void record_uslab(struct bench *bn, char **f)
{
	struct backend *be = backend_find(bn, f[1]);

	if (be == NULL)
		return;
	if (be->be_extra && strcmp(f[3], be->be_lib) != 0) {
		fprintf(stderr,
		        "uslab-bench: %s: asked for %s, but its child mapped %s; not measuring "
		        "another build than the one named\n",
		        be->be_name, be->be_lib, f[3]);
		exit(2);
	}
	if (be->be_mapped[0] != '\0')
		return;
	snprintf(be->be_mapped, sizeof be->be_mapped, "%s", f[3]);
	note(bn, "%s ran in mode \"%s\" from %s", f[1], f[2], f[3]);
	for (int i = 0; i < bn->bn_nbackends; i++) {
		const struct backend *o = &bn->bn_backends[i];
		if (o != be && strcmp(o->be_mapped, be->be_mapped) == 0 && o->be_env == NULL &&
		    be->be_env == NULL && o->be_pagesrc == NULL && be->be_pagesrc == NULL)
			note(bn, "%s and %s mapped the same file: an A/A run, their ratio is noise",
			     o->be_name, be->be_name);
	}
}

void bench_record(struct bench *bn, char *line)
{
	char *f[12];
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	for (char *save = NULL, *t = strtok_r(line, "\t", &save); t != NULL && n < 12;
	     t = strtok_r(NULL, "\t", &save))
		f[n++] = t;
	if (n == 8 && strcmp(f[0], "R") == 0)
		record_run(bn, f);
	else if (n == 8 && strcmp(f[0], "M") == 0)
		record_mem(bn, f);
	else if (n == 3 && strcmp(f[0], "S") == 0)
		note(bn, "%s skipped: %s", f[1], f[2]);
	else if (n == 4 && strcmp(f[0], "U") == 0)
		record_uslab(bn, f);
	else if (n == 4 && strcmp(f[0], "P") == 0)
		note(bn, "%s: caches on the %s page source%s%s%s", f[1], f[2],
		     strcmp(f[3], "-") != 0 ? " (mode \"" : "", strcmp(f[3], "-") != 0 ? f[3] : "",
		     strcmp(f[3], "-") != 0 ? "\")" : "");
	else if (n == 6 && strcmp(f[0], "C") == 0)
		bn->bn_cg_ops = strtoull(f[5], NULL, 10);
}

/* bn_emit with --inproc: the record goes straight to bench_record(). */
static void emit_inproc(struct bench *bn, const char *line)
{
	char buf[RECORD_LEN];
	snprintf(buf, sizeof buf, "%s", line);
	bench_record(bn, buf);
}

/* ---- Children ---- */

static void push_arg(char **argv, int *argc, const char *a)
{
	argv[(*argc)++] = (char *)a;
}

/* A library with initial-exec TLS (jemalloc: 2.6 KiB) can only be dlopen'd
 * when the loader's static TLS surplus holds it; glibc keeps 512 bytes unless
 * told otherwise. Called in the child before exec. */
static void tls_tunable(void)
{
	const char *old = getenv("GLIBC_TUNABLES");
	char buf[1024];

	snprintf(buf, sizeof buf, "%.900s%sglibc.rtld.optional_static_tls=16384",
	         old != NULL ? old : "", old != NULL && *old ? ":" : "");
	setenv("GLIBC_TUNABLES", buf, 1);
}

/* In the forked child, before exec: @be's environment. */
static void child_env(const struct bench *bn, const struct backend *be)
{
	if (be->be_env != NULL)
		putenv((char *)be->be_env);
	if (be->be_kind == BK_DL && bn->bn_opt.o_preload)
		setenv("LD_PRELOAD", be->be_lib, 1);
	if (be->be_kind == BK_DL && !bn->bn_opt.o_preload)
		tls_tunable();
	if (be->be_extra)
		setenv("LD_PRELOAD", be->be_lib, 1);
}

/* Run this program as a child for one run of backend @be in cell @ce, and
 * read its records. @prefix (NULL-terminated) runs it under a tool. */
static void spawn(struct bench *bn, const struct backend *be, const struct cell *ce,
                  const char *const *prefix)
{
	const struct bench_opts *o = &bn->bn_opt;
	char *argv[48], size_s[24], threads_s[16], lib_s[NAME_LEN + PATH_MAX + 2];
	const struct backend *lib = be->be_base != NULL ? be->be_base : be;
	int argc = 0, fd[2];

	for (; prefix != NULL && *prefix != NULL; prefix++)
		push_arg(argv, &argc, *prefix);
	snprintf(size_s, sizeof size_s, "%zu", ce->ce_size);
	push_arg(argv, &argc, o->o_self);
	push_arg(argv, &argc, "--child");
	push_arg(argv, &argc, be->be_name);
	push_arg(argv, &argc, "--workload");
	push_arg(argv, &argc, ce->ce_workload);
	push_arg(argv, &argc, "--size");
	push_arg(argv, &argc, size_s);
	push_arg(argv, &argc, "--runs");
	push_arg(argv, &argc, "1");
	if (ce->ce_threads > 0) {
		snprintf(threads_s, sizeof threads_s, "%d", ce->ce_threads);
		push_arg(argv, &argc, "--threads");
		push_arg(argv, &argc, threads_s);
	}
	if (be->be_extra) { /* a variant's library goes by its base's name */
		snprintf(lib_s, sizeof lib_s, "%s=%s", lib->be_name, lib->be_lib);
		push_arg(argv, &argc, "--uslab-lib");
		push_arg(argv, &argc, lib_s);
	}
	if (o->o_pagesrc[0] != '\0') {
		push_arg(argv, &argc, "--pagesrc");
		push_arg(argv, &argc, o->o_pagesrc);
	}
	if (o->o_quick)
		push_arg(argv, &argc, "--quick");
	if (o->o_callgrind)
		push_arg(argv, &argc, "--cg");
	argv[argc] = NULL;

	fflush(NULL);
	if (pipe(fd) != 0)
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		dup2(fd[1], STDOUT_FILENO);
		close(fd[0]);
		close(fd[1]);
		/* A child that hangs (a library bug) must not hang the report: the
		 * alarm survives exec and SIGALRM kills it; the parent notes it. */
		alarm(o->o_callgrind ? 3600 : o->o_quick ? 60 : 600);
		child_env(bn, be);
		execvp(argv[0], argv);
		fprintf(stderr, "uslab-bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fd[1]);
	FILE *in = fdopen(fd[0], "r");
	if (in == NULL)
		die("fdopen");
	char line[RECORD_LEN];
	while (fgets(line, sizeof line, in) != NULL)
		bench_record(bn, line);
	fclose(in);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		note(bn, "child for %.24s %.24s size %zu failed (status %s)", be->be_name,
		     ce->ce_workload, ce->ce_size,
		     WIFEXITED(st) ? (WEXITSTATUS(st) == 127 ? "127: exec failed" : "nonzero exit")
		                   : "killed by a signal");
}

/* ---- Callgrind ---- */

/* Read the "totals:" (or "summary:") event count of a callgrind output file. */
static double cg_totals(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[512];
	double v = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "totals:", 7) == 0 ||
		    (v < 0 && strncmp(line, "summary:", 8) == 0))
			v = strtod(strchr(line, ':') + 1, NULL);
	fclose(f);
	return v;
}

/* Instructions per op of @be in cell @ce, from one run under callgrind. */
static void run_callgrind(struct bench *bn, const struct backend *be, const struct cell *ce)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char outarg[600], path[512];

	snprintf(path, sizeof path, "%s/uslab-bench-cg.%d", tmp, (int)getpid());
	snprintf(outarg, sizeof outarg, "--callgrind-out-file=%s", path);
	const char *prefix[] = {"valgrind",
	                        "--tool=callgrind",
	                        "--collect-atstart=no",
	                        "--toggle-collect=bk_*",
	                        outarg,
	                        "-q",
	                        NULL};
	bn->bn_cg_ops = 0;
	spawn(bn, be, ce, prefix);
	double ir = cg_totals(path);
	unlink(path);
	if (ir < 0 || bn->bn_cg_ops == 0)
		return;
	struct result *r = bench_result(bn, be->be_name, ce->ce_workload, ce->ce_size, 0, true);
	r->rs_ins = ir / (double)bn->bn_cg_ops;
}

/* ---- Rounds ---- */

/* Rounds of cell @ce: --runs, at most 3 for fresh (a process each, and
 * slow), 1 for mem, under callgrind 1 for pair and the batches, else 0. */
static int cell_rounds(const struct bench_opts *o, const struct cell *ce)
{
	const char *w = ce->ce_workload;

	if (o->o_callgrind)
		return strcmp(w, "pair") == 0 || strncmp(w, "batch", 5) == 0;
	if (strcmp(w, "mem") == 0)
		return 1;
	if (strcmp(w, "fresh") == 0)
		return o->o_runs < 3 ? o->o_runs : 3;
	return o->o_runs;
}

/* One run of @be in @ce: a child, under callgrind, or in this process. */
static void run_one(struct bench *bn, struct backend *be, const struct cell *ce)
{
	const struct bench_opts *o = &bn->bn_opt;

	if (o->o_callgrind) {
		run_callgrind(bn, be, ce);
	} else if (!o->o_inproc) {
		spawn(bn, be, ce, NULL);
	} else if (be->be_extra ||
	           (be->be_env != NULL && strncmp(uslab_mode(), "locked", 6) != 0)) {
		note(bn, "%s skipped: needs its own process (not with --inproc)", be->be_name);
	} else {
		child_run(bn, be, ce, 1, 1);
	}
}

void bench_run(struct bench *bn)
{
	const struct bench_opts *o = &bn->bn_opt;
	size_t n;
	struct cell *cells = bench_cells(o, &n);

	bn->bn_emit = emit_inproc;
	for (size_t i = 0; i < n; i++) {
		const struct cell *ce = &cells[i];
		int rounds = cell_rounds(o, ce);
		if (rounds > 0 && !o->o_json)
			fprintf(stderr,
			        "uslab-bench: %s%s%.0d, %zu bytes: %d round(s) of %d backend(s)\n",
			        ce->ce_workload, ce->ce_threads > 0 ? " -t" : "", ce->ce_threads,
			        ce->ce_size, rounds, o->o_nbackends);
		for (int r = 0; r < rounds; r++) {
			bn->bn_round = r;
			for (int b = 0; b < o->o_nbackends; b++)
				run_one(bn, o->o_backends[b], ce);
		}
	}
	free(cells);
}
