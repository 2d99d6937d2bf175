/* SPDX-License-Identifier: MIT */
/* The fuzzer's seeds: compact images of this process's own segment, checked. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uslab.h>
#include <uslab/stats.h>

#include "segment/segment.h"

/*
 * A live segment is megabytes, mostly zero counters regions of CPUs and
 * caches that do not exist, and a fuzzer mutating it mostly mutates
 * nothing the reader looks at. This program builds caches, reads its own
 * segment through its locator, and re-lays it out small: the header, the
 * record tables trimmed to the records in use, and each arena's counters
 * for the CPUs seen with a stride just wide enough for the indexes in use.
 * Each image must parse to exactly the snapshot of the live segment (the
 * same caches, figures and per-CPU fills), so a seed is a real segment,
 * only smaller.
 *
 *   fuzz-seeds --write DIR   write the seeds (tests/fuzz-corpus)
 *   fuzz-seeds --check DIR   every file in DIR must parse: run as a test,
 *                            it fails when the format changed and the
 *                            committed seeds were not regenerated
 */

static char stats_dir[] = "/tmp/uslab-seeds-XXXXXX"; /* USLAB_STATS_DIR (--write) */

static void die(const char *what)
{
	fprintf(stderr, "fuzz-seeds: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The whole file at @path (its size in *@len). */
static unsigned char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		die(path);
	unsigned char *b = malloc((size_t)st.st_size + 1);
	if (b == NULL)
		die("malloc");
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
		if (n <= 0)
			die(path);
		got += (size_t)n;
	}
	close(fd);
	*len = got;
	return b;
}

/* This process's segment, read through the locator in @dir. */
static unsigned char *own_segment(const char *dir, size_t *len)
{
	char prefix[64], path[4096];
	snprintf(prefix, sizeof prefix, "uslab.%d.", (int)getpid());
	DIR *d = opendir(dir);
	if (d == NULL)
		die(dir);
	struct dirent *e;
	while ((e = readdir(d)) != NULL && strncmp(e->d_name, prefix, strlen(prefix)) != 0)
		;
	if (e == NULL) {
		errno = ENOENT;
		die("no locator of this process");
	}
	snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
	closedir(d);
	size_t n;
	unsigned char *loc = slurp(path, &n);
	struct seg_locator l;
	if (n != sizeof l) {
		errno = EPROTO;
		die(path);
	}
	memcpy(&l, loc, sizeof l);
	free(loc);
	snprintf(path, sizeof path, "/proc/self/fd/%lld", (long long)l.l_fd);
	return slurp(path, len);
}

/* An image under construction. */
struct image {
	unsigned char *i_buf;
	size_t i_len;
};

/* Append @n bytes (NULL: zeros) at a multiple of @align; their offset. */
static uint64_t put(struct image *im, const void *p, size_t n, size_t align)
{
	size_t off = (im->i_len + align - 1) / align * align;
	im->i_buf = realloc(im->i_buf, off + n);
	if (im->i_buf == NULL)
		die("realloc");
	memset(im->i_buf + im->i_len, 0, off - im->i_len);
	if (p != NULL)
		memcpy(im->i_buf + off, p, n);
	else
		memset(im->i_buf + off, 0, n);
	im->i_len = off + n;
	return off;
}

/*
 * Lay @seg out small. Records in use are copied in order into @chunks
 * tables (0: none, a header alone, the records dropped); with @chunks 2
 * they are split over two chained tables and the last live record's
 * counters are moved to an arena of their own (two arenas for the reader
 * to tell apart). A record of an arena keeps its index.
 */
static struct image compact(const unsigned char *seg, size_t len, int chunks)
{
	struct seg_header h;
	memcpy(&h, seg, sizeof h);
	uint32_t ncpus = 0;
	for (uint32_t i = 0; i < h.h_ncpus; i++)
		if ((h.h_cpus_seen[i / 64] >> (i % 64)) & 1)
			ncpus = i + 1;

	/* The records in use, and the widest index. */
	struct seg_rec recs[64];
	size_t nrec = 0;
	uint32_t max_index = 0;
	for (uint64_t off = chunks == 0 ? 0 : h.h_tab_off; off != 0;) {
		struct seg_table t;
		memcpy(&t, seg + off, sizeof t);
		for (uint32_t i = 0; i < t.t_nrec; i++) {
			struct seg_rec r;
			memcpy(&r, seg + off + sizeof t + (size_t)i * sizeof r, sizeof r);
			if (r.r_state == SEG_REC_FREE && r.r_id == 0)
				continue; /* never used */
			if (nrec == 64) {
				errno = E2BIG;
				die("more than 64 records");
			}
			recs[nrec++] = r;
			if (r.r_ctr_index > max_index)
				max_index = r.r_ctr_index;
		}
		off = t.t_next;
	}
	uint64_t stride = h.h_ctr_size;
	while (stride < (uint64_t)(max_index + 1) * h.h_ctr_size)
		stride *= 2;

	struct image im = {NULL, 0};
	struct seg_header nh = h;
	nh.h_ncpus = ncpus == 0 ? 1 : ncpus;
	nh.h_ctr_stride = stride;
	put(&im, &nh, sizeof nh, 1);

	/* Counters: one new arena per old base (and one more when split). */
	uint64_t old_base[65], new_base[65];
	size_t nbase = 0;
	for (size_t i = 0; i < nrec; i++) {
		bool own = chunks == 2 && i + 1 == nrec && recs[i].r_state == SEG_REC_LIVE;
		uint64_t b = recs[i].r_ctr_base;
		if (b == 0)
			continue;
		size_t k = 0;
		while (!own && k < nbase && old_base[k] != b)
			k++;
		if (own || k == nbase) {
			if (b + (uint64_t)h.h_ncpus * h.h_ctr_stride > len) {
				errno = EPROTO;
				die("counters outside the segment");
			}
			k = nbase++;
			old_base[k] = b;
			new_base[k] = put(&im, NULL, (size_t)nh.h_ncpus * stride, 64);
			for (uint32_t c = 0; c < nh.h_ncpus; c++)
				memcpy(im.i_buf + new_base[k] + c * stride,
				       seg + b + (uint64_t)c * h.h_ctr_stride, stride);
		}
		recs[i].r_ctr_base = new_base[k];
	}

	/* Tables, after the counters so that chains go forward. */
	size_t split = chunks == 2 ? nrec / 2 : nrec;
	uint64_t prev = 0;
	for (int t = 0; t < chunks; t++) {
		size_t from = t == 0 ? 0 : split, to = t == 0 ? split : nrec;
		struct seg_table tab = {.t_next = 0, .t_nrec = (uint32_t)(to - from)};
		uint64_t off = put(&im, &tab, sizeof tab, 64);
		put(&im, recs + from, (to - from) * sizeof *recs, 1);
		if (t == 0)
			((struct seg_header *)im.i_buf)->h_tab_off = off;
		else
			((struct seg_table *)(im.i_buf + prev))->t_next = off;
		prev = off;
	}
	if (chunks == 0)
		((struct seg_header *)im.i_buf)->h_tab_off = 0;
	return im;
}

/* Do two snapshots say the same? */
static bool same(const struct uslab_snapshot *a, const struct uslab_snapshot *b)
{
	if (a->ncaches != b->ncaches || a->ncpus != b->ncpus || strcmp(a->mode, b->mode) != 0 ||
	    a->bytes_mapped != b->bytes_mapped)
		return false;
	for (size_t i = 0; i < a->ncaches; i++)
		if (memcmp(&a->caches[i], &b->caches[i], sizeof a->caches[i]) != 0)
			return false;
	return a->ncaches == 0 ||
	       memcmp(a->cpu_objs, b->cpu_objs, a->ncaches * a->ncpus * sizeof *a->cpu_objs) == 0;
}

/* Write the compact image of the segment as it is now to @dir/@name. */
static void seed(const char *dir, const char *name, int chunks)
{
	size_t len;
	unsigned char *seg = own_segment(stats_dir, &len);
	struct image im = compact(seg, len, chunks);
	struct uslab_snapshot live, small;
	if (uslab_stats_parse(seg, len, &live) != 0)
		die("parsing the live segment");
	if (uslab_stats_parse(im.i_buf, im.i_len, &small) != 0)
		die("parsing the compact image");
	if (chunks == 0 ? small.ncaches != 0 || strcmp(small.mode, live.mode) != 0
	                : !same(&live, &small)) {
		errno = EPROTO;
		die("the compact image does not say what the segment says");
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (f == NULL || fwrite(im.i_buf, 1, im.i_len, f) != im.i_len || fclose(f) != 0)
		die(path);
	printf("%s: %zu bytes (segment %zu), %zu caches\n", path, im.i_len, len, small.ncaches);
	uslab_snapshot_free(&live);
	uslab_snapshot_free(&small);
	free(im.i_buf);
	free(seg);
}

/* Registered before the library's own handler, so it runs after it, once
 * the locator is gone. */
static void remove_stats_dir(void)
{
	if (rmdir(stats_dir) != 0)
		fprintf(stderr, "fuzz-seeds: %s left: %s\n", stats_dir, strerror(errno));
}

static int write_seeds(const char *dir)
{
	if (mkdtemp(stats_dir) == NULL || atexit(remove_stats_dir) != 0)
		die("mkdtemp");
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		die(dir);
	setenv("USLAB_STATS_DIR", stats_dir, 1);
	struct uslab_cache *conn = uslab_cache_create("conn", 200, NULL);
	if (conn == NULL)
		die("creating a cache");
	seed(dir, "header-only", 0); /* no table */
	void *objs[100];
	for (int i = 0; i < 100; i++)
		objs[i] = uslab_cache_alloc(conn);
	for (int i = 0; i < 60; i++)
		uslab_cache_free(conn, objs[i]);
	seed(dir, "one-cache", 1);
	for (int i = 60; i < 100; i++)
		uslab_cache_free(conn, objs[i]);
	struct uslab_cache *item =
		uslab_cache_create("item", 48, &(struct uslab_cache_conf){.align = 16});
	struct uslab_cache *tmp = uslab_cache_create("tmp", 4000, NULL);
	if (item == NULL || tmp == NULL)
		die("creating caches");
	uslab_cache_free(item, uslab_cache_alloc(item));
	uslab_cache_free(tmp, uslab_cache_alloc(tmp));
	uslab_cache_destroy(tmp);
	seed(dir, "two-caches-one-destroyed", 1);
	struct uslab_cache *sess = uslab_cache_create("sess", 96, NULL);
	if (sess == NULL)
		die("creating a cache");
	uslab_cache_free(sess, uslab_cache_alloc(sess));
	seed(dir, "chained-two-arenas", 2);
	uslab_cache_destroy(conn);
	uslab_cache_destroy(item);
	uslab_cache_destroy(sess);
	return 0;
}

static int check_seeds(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int bad = 0, n = 0;
	if (d == NULL)
		die(dir);
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		size_t len;
		unsigned char *b = slurp(path, &len);
		struct uslab_snapshot s;
		n++;
		if (uslab_stats_parse(b, len, &s) != 0) {
			printf("not ok: %s does not parse (%s): regenerate the seeds with "
			       "fuzz-seeds --write tests/fuzz-corpus\n",
			       path, strerror(errno));
			bad++;
		} else {
			printf("ok: %s, %zu caches\n", path, s.ncaches);
			uslab_snapshot_free(&s);
		}
		free(b);
	}
	closedir(d);
	return bad != 0 || n == 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write") == 0)
		return write_seeds(argv[2]);
	if (argc == 3 && strcmp(argv[1], "--check") == 0)
		return check_seeds(argv[2]);
	fprintf(stderr, "usage: fuzz-seeds --write DIR | --check DIR\n");
	return 2;
}
