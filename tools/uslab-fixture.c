/* SPDX-License-Identifier: MIT */
/* uslab-fixture: a process with known caches and counts, for uslabtop's tests. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uslab.h>

/*
 * The fixture creates the caches below, allocates exactly `alloc` objects
 * from each and frees `free` of them, so the program holds alloc - free.
 * It then prints
 *
 *   pid <pid>
 *   mode <uslab_mode()>
 *   {"name":..., every field of struct uslab_stats}   one line per cache
 *   READY
 *
 * and waits on standard input for commands, one per line, until EOF,
 * "exit", SIGTERM or SIGINT (all exit normally, so the statistics segment
 * is removed):
 *
 *   alloc <cache> <n>   allocate and hold n more objects
 *   free <cache> <n>    free n held objects (the newest first)
 *   churn <cache> <n>   n alloc/free pairs (counters move, counts do not)
 *   stats               print the cache lines and READY again
 *
 * Each command answers with "ok" (or "error: ...") so a test knows when
 * it is done. The test controls the lifetime: close stdin to end it.
 */

struct fixture_cache {
	const char *fc_name;
	size_t fc_size;
	unsigned fc_flags;
	size_t fc_alloc, fc_free;
	struct uslab_cache *fc_cache;
	void **fc_held;
	size_t fc_nheld, fc_cap;
};

static struct fixture_cache caches[] = {
	{"fixture-conn", 64, 0, 1000, 100, NULL, NULL, 0, 0},
	{"fixture-item", 200, 0, 500, 0, NULL, NULL, 0, 0},
	{"fixture-page", 4096, 0, 40, 10, NULL, NULL, 0, 0},
	{"fixture-nomag", 24, USLAB_NOMAGAZINE, 77, 0, NULL, NULL, 0, 0},
	{"fixture-idle", 128, 0, 0, 0, NULL, NULL, 0, 0},
};
#define NCACHES (sizeof caches / sizeof caches[0])

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static struct fixture_cache *find(const char *name)
{
	for (size_t i = 0; i < NCACHES; i++)
		if (strcmp(caches[i].fc_name, name) == 0)
			return &caches[i];
	return NULL;
}

/* Allocate @n objects into @fc's held list. Returns 0, or -1 with errno. */
static int hold(struct fixture_cache *fc, size_t n)
{
	if (fc->fc_nheld + n > fc->fc_cap) {
		size_t cap = (fc->fc_nheld + n) * 2;
		void **v = realloc(fc->fc_held, cap * sizeof *v);
		if (v == NULL)
			return -1;
		fc->fc_held = v;
		fc->fc_cap = cap;
	}
	for (size_t i = 0; i < n; i++) {
		void *obj = uslab_cache_alloc(fc->fc_cache);
		if (obj == NULL)
			return -1;
		memset(obj, 0xa5, fc->fc_size);
		fc->fc_held[fc->fc_nheld++] = obj;
	}
	return 0;
}

static void release(struct fixture_cache *fc, size_t n)
{
	while (n-- > 0 && fc->fc_nheld > 0)
		uslab_cache_free(fc->fc_cache, fc->fc_held[--fc->fc_nheld]);
}

static int print_cache(struct uslab_cache *c, void *arg)
{
	struct uslab_stats st;

	(void)arg;
	if (uslab_cache_stats(c, &st) != 0)
		return -1;
	printf("{\"name\":\"%s\"", st.name);
	/* clang-format off */
#define F(f) printf(",\"" #f "\":%" PRIu64, (uint64_t)st.f);
	F(obj_size) F(slot_size) F(align) F(flags) F(objs_per_slab) F(slab_size)
	F(active_objs) F(total_objs) F(active_slabs) F(total_slabs) F(bytes_active)
	F(bytes_total) F(allocs) F(frees) F(fast_allocs) F(fast_frees) F(alloc_failures)
	F(pcpu_objs) F(depot_objs) F(depot_full) F(depot_empty) F(mag_size) F(mag_max)
	F(depot_contended) F(slabs_created) F(slabs_released)
#undef F
		/* clang-format on */
		printf("}\n");
	return 0;
}

static void print_stats(void)
{
	uslab_foreach_cache(print_cache, NULL);
	printf("READY\n");
	fflush(stdout);
}

/* Run one command line; prints the answer. */
static void command(char *line)
{
	char verb[16], name[64];
	size_t n = 0;
	int k = sscanf(line, "%15s %63s %zu", verb, name, &n);

	if (k >= 1 && strcmp(verb, "stats") == 0) {
		print_stats();
		return;
	}
	struct fixture_cache *fc = k == 3 ? find(name) : NULL;
	if (fc == NULL) {
		printf("error: %s", line);
	} else if (strcmp(verb, "alloc") == 0) {
		printf(hold(fc, n) == 0 ? "ok\n" : "error: %s\n", strerror(errno));
	} else if (strcmp(verb, "free") == 0) {
		release(fc, n);
		printf("ok\n");
	} else if (strcmp(verb, "churn") == 0) {
		for (size_t i = 0; i < n; i++)
			uslab_cache_free(fc->fc_cache, uslab_cache_alloc(fc->fc_cache));
		printf("ok\n");
	} else {
		printf("error: %s", line);
	}
	fflush(stdout);
}

int main(void)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: fgets returns */
	char line[256];

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < NCACHES; i++) {
		struct fixture_cache *fc = &caches[i];
		struct uslab_cache_conf conf = {.flags = fc->fc_flags};
		fc->fc_cache = uslab_cache_create(fc->fc_name, fc->fc_size, &conf);
		if (fc->fc_cache == NULL || hold(fc, fc->fc_alloc) != 0) {
			fprintf(stderr, "uslab-fixture: %s: %s\n", fc->fc_name, strerror(errno));
			return 1;
		}
		release(fc, fc->fc_free);
	}
	printf("pid %ld\nmode %s\n", (long)getpid(), uslab_mode());
	print_stats();

	while (!stop && fgets(line, sizeof line, stdin) != NULL) {
		if (strncmp(line, "exit", 4) == 0)
			break;
		command(line);
	}
	for (size_t i = 0; i < NCACHES; i++) {
		release(&caches[i], caches[i].fc_nheld);
		uslab_cache_destroy(caches[i].fc_cache);
		free(caches[i].fc_held);
	}
	return 0;
}
