/* SPDX-License-Identifier: MIT */
/* uslab-frag: resident memory against live bytes after random frees, uslab and the mallocs. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uslab.h>

/*
 * One child process per (round, size, allocator): `--one NAME --size S
 * --objs N`, with LD_PRELOAD set for jemalloc, tcmalloc and mimalloc, so
 * that no allocator sees another's heap. The child mmaps a pointer table
 * of N slots and touches it, reads a baseline RSS, allocates N objects of
 * S bytes (each filled: its table index in the first 8 bytes, a pattern
 * after), frees 90% of them in the order of a fixed-seed shuffle (the same
 * for every allocator), and reads the RSS after the frees, after the trim
 * (malloc_trim, the allocator's purge, or uslab_cache_reap) and, for
 * uslab, after uslab_cache_compact and another reap. Figures are above the
 * baseline, so the table and the libraries are not counted. It prints one
 * RESULT line, which the parent (--all, the default) collects; the parent
 * prints the medians over the rounds as markdown tables. The shuffle's
 * index array is unmapped before the first reading. uslab_cache_compact
 * is a weak reference: a libuslab without it reads as "not available".
 */

#pragma weak uslab_cache_compact

#define LIB_DIR "/usr/lib/x86_64-linux-gnu/"
#define MIB (1024.0 * 1024.0)
#define MAXSIZES 8
#define MAXROUNDS 99

static const struct allocator {
	const char *name;
	const char *lib;   /* LD_PRELOAD for the child; NULL: none */
	const char *purge; /* its trim, found with dlsym; NULL: malloc_trim */
} allocators[] = {
	{"uslab", NULL, NULL},
	{"glibc", NULL, NULL},
	{"jemalloc", LIB_DIR "libjemalloc.so.2", "mallctl"},
	{"tcmalloc", LIB_DIR "libtcmalloc.so.4", "MallocExtension_ReleaseFreeMemory"},
	{"mimalloc", LIB_DIR "libmimalloc.so.2", "mi_collect"},
};
#define NALLOC (sizeof allocators / sizeof allocators[0])

/* A child's figures, at the points PEAK (all allocated), FREED, TRIM (trim
 * or reap), COMPACT (compact + reap): v[NET + k] is Rss - LazyFree and
 * v[RSS + k] Rss, in MiB above the baseline; v[MS] and v[MS + 1] the trim
 * and the compact in ms. */
enum { PEAK, FREED, TRIM, COMPACT, NET = 0, RSS = 4, MS = 8, NV = 10 };
struct result {
	bool ok;
	double v[NV];
	long moved; /* by compact; -1: failed, errno in cerr */
	int cerr;
	long bad; /* kept objects whose contents changed */
};

static void **table; /* the objects held; NULL: freed */
static size_t nobjs, objsize;

/* Rss and LazyFree of the process, in kB. */
static int rss_read(double *rss, double *lazy)
{
	char buf[4096];
	int fd = open("/proc/self/smaps_rollup", O_RDONLY);
	ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);

	if (fd >= 0)
		close(fd);
	buf[len > 0 ? len : 0] = '\0';
	char *r = strstr(buf, "\nRss:"), *l = strstr(buf, "\nLazyFree:");
	*rss = r ? strtod(r + 5, NULL) : 0;
	*lazy = l ? strtod(l + 10, NULL) : 0;
	return r ? 0 : -1;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The cache's move callback: the object's tag names its table slot. */
static int frag_move(void *old, void *new_, void *arg)
{
	uint64_t idx;

	(void)arg;
	memcpy(&idx, old, sizeof idx);
	if (idx >= nobjs || table[idx] != old)
		return 1; /* not ours (a freed object, say) */
	memcpy(new_, old, objsize);
	table[idx] = new_;
	return 0;
}

/* The malloc's own purge: malloc_trim for glibc, else its own entry point. */
static int malloc_purge(const struct allocator *a)
{
	union {
		void *p;
		void (*collect)(bool);
		int (*ctl)(const char *, void *, size_t *, void *, size_t);
		void (*release)(void);
	} fn = {.p = a->purge ? dlsym(RTLD_DEFAULT, a->purge) : NULL};

	if (a->purge == NULL) {
		malloc_trim(0);
	} else if (fn.p == NULL) {
		fprintf(stderr, "uslab-frag: %s: no %s in the process (LD_PRELOAD?)\n", a->name,
		        a->purge);
		return -1;
	} else if (strcmp(a->name, "mimalloc") == 0) {
		fn.collect(true);
	} else if (strcmp(a->name, "jemalloc") == 0) {
		fn.ctl("thread.tcache.flush", NULL, NULL, NULL, 0);
		if (fn.ctl("arena.4096.purge", NULL, NULL, NULL, 0) != 0) /* MALLCTL_ARENAS_ALL */
			fprintf(stderr, "uslab-frag: mallctl arena.4096.purge failed\n");
	} else {
		fn.release();
	}
	return 0;
}

/* Take a reading at point @k: the figures above the baseline @base. */
static void reading(struct result *res, int k, const double *base)
{
	double rss, lazy;

	rss_read(&rss, &lazy);
	res->v[RSS + k] = (rss - base[0]) / 1024.0;
	res->v[NET + k] = (rss - lazy - base[0] + base[1]) / 1024.0;
}

/* One allocator, one size: the workload and the RESULT line. */
static int child(const struct allocator *a, size_t size, size_t n)
{
	bool us = a == &allocators[0];
	struct result res = {.moved = -1};
	struct uslab_cache *cache = NULL;
	double base[2];

	nobjs = n;
	objsize = size;
	table = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	             -1, 0);
	uint32_t *perm = mmap(NULL, n * sizeof(uint32_t), PROT_READ | PROT_WRITE,
	                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (table == MAP_FAILED || perm == MAP_FAILED) {
		fprintf(stderr, "uslab-frag: mmap of the tables: %s\n", strerror(errno));
		return 1;
	}
	if (!us && malloc_purge(a) != 0) /* also checks that the preload took */
		return 1;
	struct uslab_cache_conf conf = {.move = frag_move};
	if (us && (cache = uslab_cache_create("frag", size, &conf)) == NULL) {
		fprintf(stderr, "uslab-frag: uslab_cache_create: %s\n", strerror(errno));
		return 1;
	}
	memset(table, 0, n * sizeof(void *)); /* resident before the baseline */
	if (rss_read(&base[0], &base[1]) != 0)
		return 1;

	for (size_t i = 0; i < n; i++) {
		char *p = us ? uslab_cache_alloc(cache) : malloc(size);
		uint64_t tag = i;
		if (p == NULL) {
			fprintf(stderr, "uslab-frag: %s: allocation %zu of %zu (%zu B): %s\n",
			        a->name, i, n, size, strerror(errno));
			return 1;
		}
		memset(p, (int)(i & 0x7f) | 0x80, size);
		memcpy(p, &tag, sizeof tag);
		table[i] = p;
	}
	reading(&res, PEAK, base);

	uint64_t seed = 1;
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = splitmix64(&seed) % (i + 1);
		uint32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (size_t i = 0; i < n - n / 10; i++) {
		void *p = table[perm[i]];
		table[perm[i]] = NULL;
		if (us)
			uslab_cache_free(cache, p);
		else
			free(p);
	}
	munmap(perm, n * sizeof(uint32_t));
	reading(&res, FREED, base);

	double t0 = now_ms();
	if (us)
		uslab_cache_reap(cache);
	else if (malloc_purge(a) != 0)
		return 1;
	res.v[MS] = now_ms() - t0;
	reading(&res, TRIM, base);

	if (us) {
		t0 = now_ms();
		errno = ENOSYS;
		res.moved = uslab_cache_compact ? uslab_cache_compact(cache) : -1;
		res.cerr = res.moved < 0 ? errno : 0;
		if (res.moved >= 0)
			uslab_cache_reap(cache);
		res.v[MS + 1] = now_ms() - t0;
		reading(&res, COMPACT, base);
		if (res.moved < 0)
			printf("compact: not available (%s)\n", strerror(res.cerr));
	}

	for (size_t i = 0; i < n; i++) {
		const unsigned char *p = table[i];
		uint64_t tag;
		if (p == NULL)
			continue;
		memcpy(&tag, p, sizeof tag);
		if (tag != i || p[size - 1] != ((i & 0x7f) | 0x80))
			res.bad++;
	}
	if (res.bad)
		fprintf(stderr, "uslab-frag: %s: %ld kept objects changed\n", a->name, res.bad);

	printf("# %s, %zu x %zu B, %.1f MiB live. MiB above the baseline, Rss - LazyFree and Rss "
	       "at: peak, freed, trim, compact; trim ms, compact ms; moved, errno, bad\nRESULT",
	       a->name, n, size, (double)(n / 10) * (double)size / MIB);
	for (int k = 0; k < NV; k++)
		printf(" %.3f", res.v[k]);
	printf(" %ld %d %ld\n", res.moved, res.cerr, res.bad);
	return res.bad ? 1 : 0;
}

/* Run `--one NAME` in a fresh process; parse its RESULT line into @res. */
static void spawn(const struct allocator *a, size_t size, size_t n, struct result *res)
{
	char sz[32], nb[32], out[8192];
	int fds[2], st = 0;
	size_t len = 0;
	ssize_t r;

	snprintf(sz, sizeof sz, "%zu", size);
	snprintf(nb, sizeof nb, "%zu", n);
	fflush(stdout);
	pid_t pid = pipe(fds) == 0 ? fork() : -1;
	if (pid == 0) {
		char *argv[] = {"uslab-frag", "--one", (char *)a->name, "--size", sz, "--objs",
		                nb,           NULL};
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		if (a->lib)
			setenv("LD_PRELOAD", a->lib, 1);
		else
			unsetenv("LD_PRELOAD");
		execv("/proc/self/exe", argv);
		perror("uslab-frag: exec /proc/self/exe");
		_exit(127);
	}
	if (pid < 0) {
		perror("uslab-frag: pipe/fork");
		return;
	}
	close(fds[1]);
	while ((r = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
		if ((len += (size_t)r) == sizeof out - 1)
			len = 0; /* much output: keep reading, the RESULT line is last */
	out[len] = '\0';
	close(fds[0]);
	waitpid(pid, &st, 0);
	char *p = strstr(out, "RESULT "), *end;
	if (p != NULL) {
		p += 7;
		for (int k = 0; k < NV; k++, p = end)
			res->v[k] = strtod(p, &end);
		res->ok = sscanf(p, "%ld %d %ld", &res->moved, &res->cerr, &res->bad) == 3;
	}
	if (!res->ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fprintf(stderr, "uslab-frag: %s, %zu B: child failed (status %#x)%s\n", a->name,
		        size, st, res->ok ? "" : ", no result");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median of figure @k over the rounds that produced a result. */
static double median(const struct result *rs, int nr, int k)
{
	double v[MAXROUNDS];
	int m = 0;

	for (int r = 0; r < nr; r++)
		if (rs[r].ok)
			v[m++] = rs[r].v[k];
	qsort(v, (size_t)m, sizeof v[0], cmp_double);
	return m == 0 ? 0 : m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
}

static void cell(const struct result *rs, int nr, int k, double live)
{
	double net = median(rs, nr, NET + k);
	printf(" %.1f (%.2fx), Rss %.1f |", net, net / live, median(rs, nr, RSS + k));
}

/* --objs, or 10 million objects and 2 GiB at most. */
/* --burst: 400,000 objects of 256 bytes allocated and written, all freed,
 * then four quiet seconds that allocate and free 300 a second (the purge
 * of empty slabs needs activity, not a timer); then the same burst again,
 * counting the page sources' system calls it makes. */
static int burst(void)
{
	enum { N = 400000, S = 256, QUIET = 4 };
	struct uslab_cache *c = uslab_cache_create("burst", S, NULL);
	struct uslab_global_stats g0, g1;
	struct uslab_stats st;
	double rss[2] = {0, 0}, lazy[2] = {0, 0};
	void **o = calloc(N, sizeof *o), *x[300];

	if (c == NULL || o == NULL) {
		perror("uslab-frag: burst");
		return 1;
	}
	for (int round = 0; round < 2; round++) {
		uslab_global_stats(&g0);
		for (size_t i = 0; i < N; i++)
			if ((o[i] = uslab_cache_alloc(c)) != NULL)
				memset(o[i], 1, S);
		uslab_global_stats(&g1);
		if (round == 1)
			break;
		rss_read(&rss[0], &lazy[0]);
		for (size_t i = 0; i < N; i++)
			uslab_cache_free(c, o[i]);
		for (int k = 0; k < QUIET; k++) {
			sleep(1);
			usleep(100 * 1000);
			size_t n = uslab_cache_alloc_bulk(c, x, 300);
			uslab_cache_free_bulk(c, x, n);
		}
		rss_read(&rss[1], &lazy[1]);
		uslab_cache_stats(c, &st);
	}
	const char *purge = getenv("USLAB_PURGE");
	/* smaps_rollup is in KiB */
	printf("| after the burst | %.1f MiB | %.1f MiB | |\n", rss[0] / 1024,
	       (rss[0] - lazy[0]) / 1024);
	printf("| quiet, USLAB_PURGE=%s | %.1f MiB | %.1f MiB | %llu |\n",
	       purge != NULL ? purge : "(default: MADV_FREE)", rss[1] / 1024,
	       (rss[1] - lazy[1]) / 1024,
	       (unsigned long long)(g1.pagesrc_calls - g0.pagesrc_calls));
	printf("(%llu of %llu slabs were purged when the quiet time ended)\n",
	       (unsigned long long)st.purged_slabs, (unsigned long long)st.total_slabs);
	return 0;
}

static size_t nobj(size_t objs, size_t size)
{
	size_t max = (size_t)2 << 30;
	return objs ? objs : size * 10000000 <= max ? 10000000 : max / size;
}

static void usage(void)
{
	fprintf(stderr, "usage: uslab-frag [--all] [--size S[,S...]] [--objs N] [--rounds R]\n"
	                "       uslab-frag --burst\n"
	                "       uslab-frag --one uslab|glibc|jemalloc|tcmalloc|mimalloc --size S "
	                "[--objs N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"all", no_argument, NULL, 'a'},
		{"one", required_argument, NULL, 'o'},
		{"size", required_argument, NULL, 's'},
		{"objs", required_argument, NULL, 'n'},
		{"rounds", required_argument, NULL, 'r'},
		{"burst", no_argument, NULL, 'b'},
		{NULL, 0, NULL, 0},
	};
	static struct result res[MAXSIZES][NALLOC][MAXROUNDS];
	size_t sizes[MAXSIZES] = {64, 1024, 4096}, objs = 0, n;
	int nsizes = 3, rounds = 1, c;
	const char *one = NULL;
	char *s, *end = "";

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 'b') {
			return burst();
		} else if (c == 'a') {
			one = NULL;
		} else if (c == 'o') {
			one = optarg;
		} else if (c == 's') {
			for (nsizes = 0, s = strtok(strdup(optarg), ","); s;
			     s = strtok(NULL, ",")) {
				sizes[nsizes] = strtoull(s, &end, 0);
				if (*end || sizes[nsizes] < 8 || sizes[nsizes] > USLAB_MAX_SIZE ||
				    ++nsizes == MAXSIZES)
					usage(); /* 8 bytes at least: the tag */
			}
		} else if (c == 'n') {
			objs = strtoull(optarg, &end, 0);
			if (objs < 10 || objs > UINT32_MAX)
				usage();
		} else if (c == 'r') {
			rounds = (int)strtol(optarg, &end, 0);
			if (rounds < 1 || rounds > MAXROUNDS)
				usage();
		}
		if (c == '?' || *end)
			usage();
	}
	if (optind != argc || nsizes == 0)
		usage();
	for (size_t a = 0; one != NULL && a < NALLOC; a++)
		if (strcmp(one, allocators[a].name) == 0)
			return child(&allocators[a], sizes[0], nobj(objs, sizes[0]));
	if (one != NULL)
		usage();

	bool have[NALLOC];
	for (size_t a = 0; a < NALLOC; a++) {
		have[a] = allocators[a].lib == NULL || access(allocators[a].lib, R_OK) == 0;
		if (!have[a])
			fprintf(stderr, "uslab-frag: %s skipped: no %s\n", allocators[a].name,
			        allocators[a].lib);
	}
	/* Rounds outermost, then sizes, then the allocators, whose order
	 * rotates from round to round. */
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < nsizes; k++)
			for (size_t i = 0, a; i < NALLOC; i++)
				if (have[a = (i + (size_t)r) % NALLOC])
					spawn(&allocators[a], sizes[k], nobj(objs, sizes[k]),
					      &res[k][a][r]);

	printf("Command:");
	for (int i = 0; i < argc; i++)
		printf(" %s", argv[i]);
	printf("\nEach row: fresh processes (`--one NAME --size S --objs N`, LD_PRELOAD for the "
	       "mallocs), median of %d round(s).\nCells: MiB above the RSS before the first "
	       "allocation, Rss - LazyFree (its ratio to the live bytes), then Rss.\n",
	       rounds);
	for (int k = 0; k < nsizes; k++) {
		n = nobj(objs, sizes[k]);
		double live = (double)(n / 10) * (double)sizes[k] / MIB;
		int cerr = 0;
		printf("\n### %zu B objects: %zu allocated, %zu kept, 90%% freed at random (seed 1)\n\n"
		       "| allocator | live MiB | after frees | after trim/reap | after compact + reap "
		       "| trim / compact ms |\n|---|---:|---:|---:|---:|---:|\n",
		       sizes[k], n, n / 10);
		for (size_t a = 0; a < NALLOC; a++) {
			const struct result *rs = res[k][a];
			int ok = 0; /* the first round with a result, for moved and cerr */
			while (ok < rounds && !rs[ok].ok)
				ok++;
			if (!have[a])
				continue;
			printf("| %s | %.1f |", allocators[a].name, live);
			if (ok == rounds) {
				printf(" failed | | | |\n");
				continue;
			}
			cell(rs, rounds, FREED, live);
			cell(rs, rounds, TRIM, live);
			if (a == 0 && rs[ok].moved < 0)
				cerr = rs[ok].cerr;
			if (a == 0 && cerr == 0)
				cell(rs, rounds, COMPACT, live);
			else
				printf(" %s |", a == 0 ? "n/a" : "-");
			printf(" %.1f", median(rs, rounds, MS));
			if (a == 0 && cerr == 0)
				printf(" / %.1f (%ld moved)", median(rs, rounds, MS + 1),
				       rs[ok].moved);
			printf(" |\n");
		}
		if (cerr)
			printf("\ncompact: not available (%s)\n", strerror(cerr));
	}
	return 0;
}
