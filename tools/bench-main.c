/* SPDX-License-Identifier: MIT */
/* uslab-bench's options and entry point: parent (the rounds and the report) or child (one backend). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/*
 * The options of the parent and of its children are the same set: a child
 * is this program with --child NAME (and --cg under callgrind), which the
 * parent adds to the user's workload, size, runs, threads and --uslab-lib
 * options (bench-parent.c). Lists are comma-separated and split in place
 * in argv. The run's whole state lives in one struct bench, created here
 * and passed down; only the floor keeps thread-local state (bench-kernels.c).
 */

#define LIB_DIR "/usr/lib/x86_64-linux-gnu/"

/* ---- Backends and workloads there are ---- */

static const struct backend builtin_backends[] = {
	{.be_name = "floor", .be_kind = BK_FLOOR},
	{.be_name = "uslab", .be_kind = BK_USLAB},
	{.be_name = "uslab-locked", .be_kind = BK_USLAB, .be_env = "USLAB_RSEQ=0"},
	{.be_name = "glibc", .be_kind = BK_LIBC},
	{.be_name = "jemalloc", .be_kind = BK_DL, .be_lib = LIB_DIR "libjemalloc.so.2"},
	{.be_name = "tcmalloc", .be_kind = BK_DL, .be_lib = LIB_DIR "libtcmalloc_minimal.so.4"},
	{.be_name = "mimalloc", .be_kind = BK_DL, .be_lib = LIB_DIR "libmimalloc.so.2"},
};
#define NBUILTIN (sizeof builtin_backends / sizeof builtin_backends[0])

/* Workload names as --workload takes them; "threads" gives the -tN rows. */
static const char *const workload_names[] = {"pair",     "batch1k", "batch100k", "threads",
                                             "prodcons", "fresh",   "mem"};
#define NWORKLOADS (sizeof workload_names / sizeof workload_names[0])

/* ---- Sanitizer builds ---- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
static const bool sanitized = true;
#else
static const bool sanitized = false;
#endif
#else
static const bool sanitized = false;
#endif

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer hooks (its API, hence the reserved names): tcmalloc
 * registers a static MallocExtension with operator new and never frees it;
 * that is the library's, not ours, and would fail every tcmalloc child.
 * Each child would then print the suppression it used: one per run. */
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void);
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void)
{
	return "leak:libtcmalloc_minimal.so\n";
}
__attribute__((visibility("default"))) const char *__lsan_default_options(void);
__attribute__((visibility("default"))) const char *__lsan_default_options(void)
{
	return "print_suppressions=0";
}
#endif

/* ---- Options ---- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: uslab-bench [options]\n"
	        "  --workload LIST  pair,batch1k,batch100k,threads,prodcons,fresh,mem (default all;\n"
	        "                   \"batch\" = batch1k,batch100k), and rcu (only when named:\n"
	        "                   free_rcu against call_rcu and synchronize_rcu, 1 and 2 threads)\n"
	        "                   and classes (only when named: uslab_alloc against the mallocs,\n"
	        "                   sizes 8..1024 B with random lifetimes, 1 and 2 threads)\n"
	        "  --size LIST      object sizes (default 24,64,256,4096)\n"
	        "  --backend LIST   floor,uslab,uslab-locked,glibc,jemalloc,tcmalloc,mimalloc\n"
	        "  --runs N         timed runs per cell (default 5; --quick: 3), as rounds: each\n"
	        "                   round runs every backend once, in its own process\n"
	        "  --threads LIST   thread counts for \"threads\" (default 2,16)\n"
	        "  --uslab-lib NAME=PATH\n"
	        "                   one more uslab backend, NAME, running the libuslab.so at PATH\n"
	        "                   (another build, by LD_PRELOAD); repeatable, for A/B runs\n"
	        "  --pagesrc LIST   mmap,hugepage,brk: run each uslab backend once per page\n"
	        "                   source, its caches on it (default mmap); mmap keeps the\n"
	        "                   backend's name, the others add +SOURCE (uslab+hugepage), and\n"
	        "                   the A/B table divides each by its mmap row\n"
	        "  --quick          about 20x shorter runs (CI smoke test)\n"
	        "  --json           JSON instead of markdown\n"
	        "  --load MODE      preload (default: LD_PRELOAD per backend) or dlopen\n"
	        "  --inproc         run every backend in this process (no re-exec)\n"
	        "  --callgrind      instructions per op from valgrind --tool=callgrind\n"
	        "                   (pair, batch1k, batch100k; no times)\n");
}

__attribute__((noreturn, format(printf, 1, 2))) static void bad_usage(const char *fmt, ...);

/* Complain about an option (when @fmt is not NULL) and exit 2. */
static void bad_usage(const char *fmt, ...)
{
	if (fmt != NULL) {
		va_list ap;
		fprintf(stderr, "uslab-bench: ");
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	} else {
		usage(stderr);
	}
	exit(2);
}

static int split(char *s, const char **out, int max)
{
	int n = 0;
	for (char *save = NULL, *t = strtok_r(s, ",", &save); t != NULL && n < max;
	     t = strtok_r(NULL, ",", &save))
		out[n++] = t;
	return n;
}

/* A list of positive numbers of --size or --threads, each at most @max. */
static int split_numbers(char *s, const char *opt, long max, long *out)
{
	const char *items[MAX_LIST];
	int n = split(s, items, MAX_LIST);

	for (int k = 0; k < n; k++) {
		out[k] = strtol(items[k], NULL, 10);
		if (out[k] <= 0 || out[k] > max)
			bad_usage("bad %s value %s", opt, items[k]);
	}
	return n;
}

/* --uslab-lib NAME=PATH: one more uslab backend, PATH resolved. */
static void add_uslab_lib(struct bench *bn, char *arg)
{
	char *eq = strchr(arg, '=');

	if (sanitized)
		bad_usage("--uslab-lib cannot work in a sanitizer build (LD_PRELOAD would come "
		          "before the sanitizer's runtime)");
	if (eq == NULL || eq == arg || eq[1] == '\0')
		bad_usage("--uslab-lib wants NAME=PATH, not %s", arg);
	*eq = '\0';
	if (strlen(arg) >= NAME_LEN || strpbrk(arg, "\t\n,") != NULL)
		bad_usage("--uslab-lib: NAME %s: at most %d characters, no comma", arg,
		          NAME_LEN - 1);
	if (backend_find(bn, arg) != NULL)
		bad_usage("--uslab-lib: backend %s exists already", arg);
	if (bn->bn_nbackends >= MAX_BACKENDS)
		bad_usage("--uslab-lib: at most %d", MAX_LIBS);
	char *path = realpath(eq + 1, NULL);
	if (path == NULL)
		bad_usage("--uslab-lib %s: %s: %s", arg, eq + 1, strerror(errno));
	bn->bn_backends[bn->bn_nbackends++] = (struct backend){
		.be_name = arg, .be_kind = BK_USLAB, .be_lib = path, .be_extra = true};
}

/* The page sources --pagesrc takes. */
static const char *const pagesrc_names[MAX_SOURCES] = {"mmap", "hugepage", "brk"};

/* --pagesrc: every uslab backend of the run, in place, becomes one backend
 * per source of @list (@n names): "mmap" is the backend itself, another
 * source a variant named NAME+SOURCE. The children are given the same
 * list, so they make the same variants and find theirs by name. */
static void pagesrc_variants(struct bench *bn, const char **list, int n)
{
	struct bench_opts *o = &bn->bn_opt;
	struct backend *old[MAX_BACKENDS];
	int nold = o->o_nbackends;

	for (int i = 0; i < n; i++) {
		bool known = false;
		for (int k = 0; k < MAX_SOURCES; k++)
			known = known || strcmp(list[i], pagesrc_names[k]) == 0;
		if (!known)
			bad_usage("unknown page source %s (mmap, hugepage, brk)", list[i]);
		for (int k = 0; k < i; k++)
			if (strcmp(list[i], list[k]) == 0)
				bad_usage("--pagesrc: %s twice", list[i]);
	}
	memcpy(old, o->o_backends, sizeof old);
	o->o_nbackends = 0;
	for (int i = 0; i < nold; i++) {
		struct backend *be = old[i];
		if (be->be_kind != BK_USLAB) {
			o->o_backends[o->o_nbackends++] = be;
			continue;
		}
		for (int k = 0; k < n; k++) {
			if (strcmp(list[k], "mmap") == 0) {
				o->o_backends[o->o_nbackends++] = be;
				continue;
			}
			if (bn->bn_nbackends >= MAX_BACKENDS)
				bad_usage("--pagesrc: too many backends");
			struct backend *v = &bn->bn_backends[bn->bn_nbackends++];
			*v = *be;
			v->be_pagesrc = list[k];
			v->be_base = be;
			v->be_mapped[0] = '\0';
			char *name = xcalloc(NAME_LEN, 1);
			if (snprintf(name, NAME_LEN, "%s+%s", be->be_name, list[k]) >= NAME_LEN)
				bad_usage("--pagesrc: backend name %s+%s is longer than %d",
				          be->be_name, list[k], NAME_LEN - 1);
			v->be_name = name;
			o->o_backends[o->o_nbackends++] = v;
		}
	}
}

/* Fill in what was not given, expand "batch", check the names. */
static void opts_defaults(struct bench *bn, const char **names, int nnames, bool runs_set,
                          bool load_set, const char **srcs, int nsrcs)
{
	struct bench_opts *o = &bn->bn_opt;

	if (o->o_quick && !runs_set)
		o->o_runs = 3;
	if (o->o_nworkloads == 0)
		for (size_t i = 0; i < NWORKLOADS; i++)
			o->o_workloads[o->o_nworkloads++] = workload_names[i];
	for (int i = 0; i < o->o_nworkloads; i++)
		if (strcmp(o->o_workloads[i], "batch") == 0) {
			o->o_workloads[i] = "batch1k";
			o->o_workloads[o->o_nworkloads++] = "batch100k";
		}
	for (int i = 0; i < o->o_nworkloads; i++) {
		bool ok = false;
		for (size_t k = 0; k < NWORKLOADS; k++)
			ok = ok || strcmp(o->o_workloads[i], workload_names[k]) == 0;
		ok = ok || strcmp(o->o_workloads[i], "rcu") == 0; /* bench-rcu.c, only when named */
		ok = ok || strcmp(o->o_workloads[i], "classes") == 0; /* bench-classes.c, too */
		if (!ok)
			bad_usage("unknown workload %s", o->o_workloads[i]);
	}
	/* The backends named (default: the built-in ones), then every
	 * --uslab-lib one not named. */
	for (size_t i = 0; nnames == 0 && i < NBUILTIN; i++)
		o->o_backends[o->o_nbackends++] = &bn->bn_backends[i];
	for (int i = 0; i < nnames; i++) {
		o->o_backends[o->o_nbackends] = backend_find(bn, names[i]);
		if (o->o_backends[o->o_nbackends++] == NULL)
			bad_usage("unknown backend %s", names[i]);
	}
	for (int i = (int)NBUILTIN; i < bn->bn_nbackends; i++) {
		bool named = false;
		for (int k = 0; k < nnames; k++)
			named = named || strcmp(names[k], bn->bn_backends[i].be_name) == 0;
		if (!named)
			o->o_backends[o->o_nbackends++] = &bn->bn_backends[i];
	}
	if (nsrcs > 0)
		pagesrc_variants(bn, srcs, nsrcs);
	if (o->o_nsizes == 0) {
		static const size_t def[] = {24, 64, 256, 4096};
		for (size_t i = 0; i < 4; i++)
			o->o_sizes[o->o_nsizes++] = def[i];
	}
	if (o->o_nthreads == 0) {
		o->o_threads[o->o_nthreads++] = 2;
		o->o_threads[o->o_nthreads++] = 16;
	}
	if (o->o_preload && sanitized) {
		if (load_set)
			bad_usage("--load=preload cannot work in a sanitizer build");
		o->o_preload = false;
	}
}

static void parse_opts(struct bench *bn, int argc, char **argv)
{
	enum {
		OPT_WORKLOAD = 256,
		OPT_SIZE,
		OPT_BACKEND,
		OPT_RUNS,
		OPT_THREADS,
		OPT_USLAB_LIB,
		OPT_QUICK,
		OPT_JSON,
		OPT_LOAD,
		OPT_INPROC,
		OPT_CALLGRIND,
		OPT_PAGESRC,
		OPT_CHILD, /* internal: run as the child for one backend */
		OPT_CG,    /* internal: a child under callgrind */
	};
	static const struct option longopts[] = {
		{"workload", required_argument, NULL, OPT_WORKLOAD},
		{"size", required_argument, NULL, OPT_SIZE},
		{"backend", required_argument, NULL, OPT_BACKEND},
		{"runs", required_argument, NULL, OPT_RUNS},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"uslab-lib", required_argument, NULL, OPT_USLAB_LIB},
		{"quick", no_argument, NULL, OPT_QUICK},
		{"json", no_argument, NULL, OPT_JSON},
		{"load", required_argument, NULL, OPT_LOAD},
		{"inproc", no_argument, NULL, OPT_INPROC},
		{"callgrind", no_argument, NULL, OPT_CALLGRIND},
		{"pagesrc", required_argument, NULL, OPT_PAGESRC},
		{"child", required_argument, NULL, OPT_CHILD},
		{"cg", no_argument, NULL, OPT_CG},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct bench_opts *o = &bn->bn_opt;
	const char *names[MAX_LIST], *srcs[MAX_SOURCES + 1], *child = NULL;
	long nums[MAX_LIST];
	int nnames = 0, nsrcs = 0, c;
	bool runs_set = false, load_set = false;

	o->o_runs = 5;
	o->o_preload = true;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_WORKLOAD:
			o->o_nworkloads = split(optarg, o->o_workloads, MAX_LIST - 1);
			break;
		case OPT_SIZE:
			o->o_nsizes = split_numbers(optarg, "--size", (long)USLAB_MAX_SIZE, nums);
			for (int k = 0; k < o->o_nsizes; k++)
				o->o_sizes[k] = (size_t)nums[k];
			break;
		case OPT_THREADS:
			o->o_nthreads = split_numbers(optarg, "--threads", 1024, nums);
			for (int k = 0; k < o->o_nthreads; k++)
				o->o_threads[k] = (int)nums[k];
			break;
		case OPT_BACKEND:
			nnames = split(optarg, names, MAX_LIST);
			break;
		case OPT_RUNS:
			o->o_runs = atoi(optarg);
			runs_set = true;
			if (o->o_runs < 1 || o->o_runs > MAX_RUNS)
				bad_usage("--runs must be 1..%d", MAX_RUNS);
			break;
		case OPT_USLAB_LIB:
			add_uslab_lib(bn, optarg);
			break;
		case OPT_QUICK:
			o->o_quick = true;
			break;
		case OPT_JSON:
			o->o_json = true;
			break;
		case OPT_LOAD:
			if (strcmp(optarg, "preload") != 0 && strcmp(optarg, "dlopen") != 0)
				bad_usage(NULL);
			o->o_preload = strcmp(optarg, "preload") == 0;
			load_set = true;
			break;
		case OPT_INPROC:
			o->o_inproc = true;
			break;
		case OPT_CALLGRIND:
			o->o_callgrind = true;
			break;
		case OPT_PAGESRC:
			if (strlen(optarg) >= sizeof o->o_pagesrc)
				bad_usage("--pagesrc %s: too long", optarg);
			snprintf(o->o_pagesrc, sizeof o->o_pagesrc, "%s", optarg);
			nsrcs = split(optarg, srcs, MAX_SOURCES + 1);
			if (nsrcs == 0 || nsrcs > MAX_SOURCES)
				bad_usage("--pagesrc wants 1 to %d of mmap,hugepage,brk",
				          MAX_SOURCES);
			break;
		case OPT_CHILD:
			child = optarg;
			break;
		case OPT_CG:
			o->o_cg = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			bad_usage(NULL);
		}
	}
	if (optind < argc)
		bad_usage(NULL);
	opts_defaults(bn, names, nnames, runs_set, load_set, srcs, nsrcs);
	if (child != NULL && (o->o_child = backend_find(bn, child)) == NULL)
		bad_usage("unknown backend %s", child);
	/* callgrind runs each cell in a child under valgrind */
	if (o->o_callgrind)
		o->o_inproc = false;
}

/* ---- Entry point ---- */

int main(int argc, char **argv)
{
	struct bench bench;
	struct bench *bn = &bench;

	if (argc == 5 && strcmp(argv[1], "--classes-child") == 0)
		return bench_classes_child(atoi(argv[2]), atoi(argv[3]), atol(argv[4]));
	memset(bn, 0, sizeof *bn);
	memcpy(bn->bn_backends, builtin_backends, sizeof builtin_backends);
	bn->bn_nbackends = (int)NBUILTIN;
	parse_opts(bn, argc, argv);
	bn->bn_opt.o_self = "/proc/self/exe";
	if (bn->bn_opt.o_child != NULL) {
		size_t n;
		struct cell *cells = bench_cells(&bn->bn_opt, &n);
		bn->bn_emit = child_emit_stdout;
		child_run(bn, bn->bn_opt.o_child, cells, n, bn->bn_opt.o_runs);
		free(cells);
		fflush(stdout);
		return 0;
	}
	/* Children are this same file; resolve it now, before anything execs. */
	ssize_t len = readlink("/proc/self/exe", bn->bn_self, sizeof bn->bn_self - 1);
	if (len > 0) {
		bn->bn_self[len] = '\0';
		bn->bn_opt.o_self = bn->bn_self;
	}
	/* "rcu" is a table of its own, run in this process (bench-rcu.c). */
	struct bench_opts *o = &bn->bn_opt;
	bool rcu = false, classes = false;
	for (int i = 0; i < o->o_nworkloads; i++)
		if (strcmp(o->o_workloads[i], "rcu") == 0) {
			rcu = true;
			o->o_workloads[i--] = o->o_workloads[--o->o_nworkloads];
		} else if (strcmp(o->o_workloads[i], "classes") == 0) {
			classes = true; /* a table of its own too (bench-classes.c) */
			o->o_workloads[i--] = o->o_workloads[--o->o_nworkloads];
		}
	if (o->o_nworkloads > 0) {
		bench_run(bn);
		bench_report(bn);
	}
	if (rcu)
		bench_rcu(bn);
	if (classes)
		bench_classes(bn);
	free(bn->bn_results);
	free(bn->bn_mem);
	for (int i = (int)NBUILTIN; i < bn->bn_nbackends; i++) {
		const struct backend *be = &bn->bn_backends[i];
		if (be->be_base != NULL)
			free((void *)be->be_name); /* its library is its base's */
		else
			free((void *)be->be_lib);
	}
	return 0;
}
