/* SPDX-License-Identifier: MIT */
/* Reading another process's statistics segment, trusting none of it. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "uslab.h"
#include "uslab/stats.h"
#include "../arch/fastpath.h"
#include "../derive.h"
#include "common.h"
#include "segment.h"

/*
 * Design
 *
 * 1. Copy, then parse. uslab_stats_read() copies the whole file into
 *    private memory with pread() and parses the copy, exactly as
 *    uslab_stats_parse() parses a caller's buffer (the fuzzed code). The
 *    file is never mapped: a publisher that truncates it under us would
 *    turn every access to the mapping into SIGBUS.
 *
 * 2. Nothing is trusted. Every offset and length is checked against the
 *    copy's size with overflow-free comparisons (off <= len && n <= len -
 *    off); table chunks must chain forward and may not overlap; records
 *    are copied out with memcpy (no alignment assumed); strings must end
 *    within their field and have control characters replaced; counts are
 *    bounded by the bytes they occupy, so no allocation exceeds a small
 *    multiple of the file size; the counters regions of live caches may not
 *    overlap in total (their lengths may not add up past the file). Any
 *    violation is EPROTO. Counters are numbers only, never offsets or
 *    indexes: the fill derived from them is clamped to [0, PCPU_MAX_ROUNDS]
 *    with wrap-free arithmetic, so garbage gives wrong figures, not a
 *    fault.
 *
 * 3. Consistency. Each live record is re-read from the file with its
 *    sequence lock (r_seq before, the record, r_seq after; even and equal),
 *    retried SEG_RETRIES times; if the writer keeps it busy beyond that, the
 *    last copy is used, each figure being one the writer stored. Per-CPU
 *    counters are the fast path's, read racily, as in uslab_cache_stats();
 *    a magazine's fill derived from them is exact at quiescence.
 *
 * 4. Liveness: a segment belongs to a live process when /proc/<pid>/stat
 *    gives the start time written in its header; otherwise the pid is gone
 *    or was reused.
 */

#define SEG_READ_MAX ((uint64_t)1 << 30) /* largest file read: 1 GiB */
#define SEG_RETRIES 64
#define SEG_MAX_CPUS 65536

/* ---- Helpers ---- */

/* Is [off, off + n) inside [0, len)? */
static bool seg_in(uint64_t off, uint64_t n, uint64_t len)
{
	return off <= len && n <= len - off;
}

/* Copy a NUL-terminated string field, control characters replaced. */
static bool seg_str(char *dst, const char *src, size_t n)
{
	const char *end = memchr(src, '\0', n);

	if (end == NULL)
		return false;
	size_t k = (size_t)(end - src);
	for (size_t i = 0; i < k; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
	dst[k] = '\0';
	return true;
}

static bool seg_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* ---- Parsing ---- */

/* A live cache found while parsing, before sorting by creation order. */
struct seg_found {
	uint64_t f_id;
	size_t f_index;
};

static int seg_found_cmp(const void *a, const void *b)
{
	const struct seg_found *x = a, *y = b;
	return x->f_id < y->f_id ? -1 : x->f_id > y->f_id;
}

/* Read the record at @off from the file with its sequence lock. */
static int seg_read_rec(int fd, uint64_t off, struct seg_rec *rec)
{
	for (int i = 0; i < SEG_RETRIES; i++) {
		uint32_t s0, s1;
		if (pread(fd, &s0, sizeof s0, (off_t)off) != (ssize_t)sizeof s0)
			return -1;
		if (s0 & 1) {
			sched_yield();
			continue;
		}
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (pread(fd, rec, sizeof *rec, (off_t)off) != (ssize_t)sizeof *rec)
			return -1;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (pread(fd, &s1, sizeof s1, (off_t)off) != (ssize_t)sizeof s1)
			return -1;
		if (s0 == s1 && rec->r_seq == s0)
			return 0;
	}
	return 0; /* busy writer: the last copy (see Design §3) */
}

/* Fill one cache's figures from a validated record and its counters; false
 * when the record does not make sense. */
static bool seg_cache_fill(const unsigned char *img, uint64_t len, const struct seg_header *h,
                           const struct seg_rec *r, struct uslab_stats *st, uint64_t *cpu)
{
	struct stats_raw raw;

	memset(&raw, 0, sizeof raw);
	if (!seg_str(raw.sr_name, r->r_name, sizeof r->r_name))
		return false;
	if (r->r_obj_size == 0 || r->r_obj_size > USLAB_MAX_SIZE || !seg_pow2(r->r_align) ||
	    r->r_align > ((uint64_t)1 << 20) || r->r_slot_size < r->r_obj_size ||
	    r->r_slot_size > 2 * (uint64_t)USLAB_MAX_SIZE || r->r_objs_per_slab == 0 ||
	    !seg_pow2(r->r_slab_size) || r->r_slab_size > ((uint64_t)1 << 32) ||
	    r->r_slab_size / r->r_slot_size < r->r_objs_per_slab || r->r_mag_max > 65536 ||
	    r->r_mag_size > r->r_mag_max)
		return false;
	/* Counters region: ncpus pages, inside the image (the header check
	 * bounds ncpus and the page size, so the product cannot overflow). */
	if (r->r_ctr_len != (uint64_t)h->h_ncpus * h->h_page_size || r->r_ctr_off < h->h_hdr_size ||
	    r->r_ctr_off % h->h_page_size != 0 || !seg_in(r->r_ctr_off, r->r_ctr_len, len))
		return false;
	raw.sr_obj_size = r->r_obj_size;
	raw.sr_slot_size = r->r_slot_size;
	raw.sr_align = r->r_align;
	raw.sr_flags = r->r_flags;
	raw.sr_objs_per_slab = r->r_objs_per_slab;
	raw.sr_slab_size = r->r_slab_size;
	raw.sr_mag_max = r->r_mag_max;
	raw.sr_slab.sc_inuse = r->r_inuse;
	raw.sr_slab.sc_slabs = r->r_slabs;
	raw.sr_slab.sc_empty = r->r_empty_slabs;
	raw.sr_slab.sc_created = r->r_slabs_created;
	raw.sr_slab.sc_released = r->r_slabs_released;
	raw.sr_slab.sc_fail = r->r_alloc_fail;
	raw.sr_depot.dc_objs = r->r_depot_objs;
	raw.sr_depot.dc_full = r->r_depot_full;
	raw.sr_depot.dc_empty = r->r_depot_empty;
	raw.sr_depot.dc_contended = r->r_depot_contended;
	raw.sr_depot.dc_mag_size = r->r_mag_size;
	for (uint32_t i = 0; i < h->h_ncpus; i++) {
		struct pcpu_counters k;
		memcpy(&k, img + r->r_ctr_off + (uint64_t)i * h->h_page_size, sizeof k);
		/* The copy of the word stands in for the private word. */
		cpu[i] = stats_add_cpu(&raw, k.pc_word, &k);
	}
	stats_derive(&raw, st);
	return true;
}

/* Parse @img; with @fd >= 0, live records are re-read from the file
 * consistently (see Design §3). 0, or -1 with errno. */
static int seg_parse(const unsigned char *img, uint64_t len, int fd, struct uslab_snapshot *out)
{
	struct seg_header h;
	struct uslab_stats *caches = NULL, *sorted = NULL;
	uint64_t *cpu = NULL, *cpu_sorted = NULL;
	struct seg_found *found = NULL;
	int err = EPROTO;

	memset(out, 0, sizeof *out);
	if (len < sizeof h)
		goto fail;
	memcpy(&h, img, sizeof h);
	if (memcmp(h.h_magic, SEG_MAGIC, sizeof h.h_magic) != 0 ||
	    h.h_version != USLAB_SEGMENT_VERSION || h.h_hdr_size != sizeof h ||
	    h.h_rec_size != sizeof(struct seg_rec) ||
	    h.h_ctr_size != sizeof(struct pcpu_counters) || h.h_ncpus == 0 ||
	    h.h_ncpus > SEG_MAX_CPUS || !seg_pow2(h.h_page_size) || h.h_page_size < 1024 ||
	    h.h_page_size > ((uint32_t)1 << 20) || h.h_pid <= 0 || h.h_pid > INT_MAX ||
	    !seg_str(out->mode, h.h_mode, sizeof h.h_mode))
		goto fail;

	/* Pass 1: walk the chain and count live records. */
	uint64_t nlive = 0;
	for (uint64_t off = h.h_tab_off, prev_end = h.h_hdr_size; off != 0;) {
		struct seg_table t;
		if (off < prev_end || !seg_in(off, sizeof t, len))
			goto fail;
		memcpy(&t, img + off, sizeof t);
		uint64_t recs = off + sizeof t;
		if ((len - recs) / sizeof(struct seg_rec) < t.t_nrec)
			goto fail;
		for (uint32_t i = 0; i < t.t_nrec; i++) {
			uint32_t state;
			memcpy(&state,
			       img + recs + (uint64_t)i * sizeof(struct seg_rec) +
			               offsetof(struct seg_rec, r_state),
			       sizeof state);
			nlive += state == SEG_REC_LIVE;
		}
		prev_end = recs + (uint64_t)t.t_nrec * sizeof(struct seg_rec);
		off = t.t_next;
	}
	/* Bounded by the file: a live record takes 256 bytes, its counters at
	 * least 1 KiB per CPU (checked below as the sum of region lengths). */
	err = ENOMEM;
	if (nlive != 0) {
		caches = calloc(nlive, sizeof *caches);
		sorted = calloc(nlive, sizeof *sorted);
		found = calloc(nlive, sizeof *found);
		cpu = calloc(nlive * h.h_ncpus, sizeof *cpu);
		cpu_sorted = calloc(nlive * h.h_ncpus, sizeof *cpu_sorted);
		if (caches == NULL || sorted == NULL || found == NULL || cpu == NULL ||
		    cpu_sorted == NULL)
			goto fail;
	}

	/* Pass 2: validate and fill. */
	err = EPROTO;
	size_t n = 0;
	uint64_t region_total = 0;
	for (uint64_t off = h.h_tab_off; off != 0;) {
		struct seg_table t;
		memcpy(&t, img + off, sizeof t);
		uint64_t recs = off + sizeof t;
		for (uint32_t i = 0; i < t.t_nrec; i++) {
			uint64_t roff = recs + (uint64_t)i * sizeof(struct seg_rec);
			struct seg_rec r;
			memcpy(&r, img + roff, sizeof r);
			if (r.r_state != SEG_REC_LIVE)
				continue;
			if (fd >= 0 && seg_read_rec(fd, roff, &r) != 0) {
				err = errno == 0 ? EPROTO : errno;
				goto fail;
			}
			if (r.r_state == SEG_REC_FREE)
				continue; /* destroyed since the copy */
			if (r.r_state != SEG_REC_LIVE || n == nlive)
				goto fail;
			if (!seg_cache_fill(img, len, &h, &r, &caches[n], cpu + n * h.h_ncpus))
				goto fail;
			region_total += r.r_ctr_len;
			if (region_total > len)
				goto fail; /* regions overlap: hostile */
			found[n].f_id = r.r_id;
			found[n].f_index = n;
			n++;
		}
		off = t.t_next;
	}

	/* Creation order, as uslab_foreach_cache() walks. */
	if (n != 0)
		qsort(found, n, sizeof *found, seg_found_cmp);
	for (size_t i = 0; i < n; i++) {
		sorted[i] = caches[found[i].f_index];
		memcpy(cpu_sorted + i * h.h_ncpus, cpu + found[i].f_index * h.h_ncpus,
		       h.h_ncpus * sizeof *cpu);
	}
	free(caches);
	free(cpu);
	free(found);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	out->pid = (pid_t)h.h_pid;
	out->taken_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	out->bytes_mapped = h.h_bytes_got > h.h_bytes_put ? h.h_bytes_got - h.h_bytes_put : 0;
	out->ncpus = h.h_ncpus;
	out->ncaches = n;
	out->caches = sorted;
	out->cpu_objs = cpu_sorted;
	return 0;

fail:
	free(caches);
	free(sorted);
	free(cpu);
	free(cpu_sorted);
	free(found);
	memset(out, 0, sizeof *out);
	errno = err;
	return -1;
}

/* ---- Files ---- */

struct uslab_reader {
	pid_t rd_pid;
	int rd_fd;
	uint64_t rd_start; /* the publisher's start time */
};

/* Open @name in @dirfd (or a path) as a candidate segment: a regular file,
 * no symlink, no blocking on a FIFO. -1 with errno. */
static int seg_open_file(int dirfd, const char *name, struct stat *st)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);

	if (fd < 0)
		return errno == ELOOP ? (errno = EPROTO, -1) : -1;
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		errno = EPROTO;
		return -1;
	}
	return fd;
}

/* Read and check the header of an open segment; false if it is not one. */
static bool seg_read_header(int fd, struct seg_header *h)
{
	if (pread(fd, h, sizeof *h, 0) != (ssize_t)sizeof *h)
		return false;
	return memcmp(h->h_magic, SEG_MAGIC, sizeof h->h_magic) == 0 &&
	       h->h_version == USLAB_SEGMENT_VERSION && h->h_hdr_size == sizeof *h &&
	       h->h_pid > 0 && h->h_pid <= INT_MAX;
}

static void seg_comm(pid_t pid, char *comm, size_t n)
{
	char path[64], buf[64];

	comm[0] = '\0';
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t k = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (k <= 0)
		return;
	buf[k] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	buf[n - 1 < sizeof buf - 1 ? n - 1 : sizeof buf - 1] = '\0';
	seg_str(comm, buf, n);
}

/* See include/uslab/stats.h */
int uslab_stats_list(struct uslab_proc *procs, size_t n)
{
	if (procs == NULL && n != 0) {
		errno = EINVAL;
		return -1;
	}
	DIR *d = opendir(seg_dir());
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	int found = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		const char *p = e->d_name;
		if (strncmp(p, "uslab.", 6) != 0 || p[6] < '1' || p[6] > '9' ||
		    strspn(p + 6, "0123456789") != strlen(p + 6) || strlen(p + 6) > 9)
			continue;
		pid_t pid = (pid_t)strtol(p + 6, NULL, 10);
		struct stat st;
		struct seg_header h;
		int fd = seg_open_file(dirfd(d), p, &st);
		if (fd < 0)
			continue;
		bool ok = seg_read_header(fd, &h) && h.h_pid == pid;
		close(fd);
		if (!ok)
			continue; /* not a segment (or not ours to judge): leave it */
		uint64_t start = seg_proc_start_time(pid);
		if (start != UINT64_MAX && start != h.h_start_time) {
			/* Dead, or the pid was reused: remove it if it is still the
			 * file we judged and we own it. */
			struct stat now;
			if (st.st_uid == geteuid() &&
			    fstatat(dirfd(d), p, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
			    now.st_dev == st.st_dev && now.st_ino == st.st_ino)
				unlinkat(dirfd(d), p, 0);
			continue;
		}
		if ((size_t)found < n) {
			procs[found].pid = pid;
			seg_comm(pid, procs[found].comm, sizeof procs[found].comm);
		}
		if (found < INT_MAX)
			found++;
	}
	closedir(d);
	return found;
}

/* See include/uslab/stats.h */
struct uslab_reader *uslab_stats_open(pid_t pid)
{
	char path[PATH_MAX];
	struct stat st;
	struct seg_header h;

	if (pid <= 0) {
		errno = EINVAL;
		return NULL;
	}
	if (snprintf(path, sizeof path, "%s/uslab.%d", seg_dir(), (int)pid) >= (int)sizeof path) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	int fd = seg_open_file(AT_FDCWD, path, &st);
	if (fd < 0)
		return NULL;
	if (!seg_read_header(fd, &h) || h.h_pid != pid) {
		close(fd);
		errno = EPROTO;
		return NULL;
	}
	uint64_t start = seg_proc_start_time(pid);
	if (start != UINT64_MAX && start != h.h_start_time) {
		close(fd);
		errno = ENOENT; /* a dead process's segment is no segment */
		return NULL;
	}
	struct uslab_reader *r = malloc(sizeof *r);
	if (r == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	r->rd_pid = pid;
	r->rd_fd = fd;
	r->rd_start = h.h_start_time;
	return r;
}

/* See include/uslab/stats.h */
int uslab_stats_read(struct uslab_reader *r, struct uslab_snapshot *out)
{
	if (r == NULL || out == NULL) {
		errno = EINVAL;
		return -1;
	}
	memset(out, 0, sizeof *out);
	for (int attempt = 0;; attempt++) {
		struct stat st;
		if (fstat(r->rd_fd, &st) != 0)
			return -1;
		uint64_t start = seg_proc_start_time(r->rd_pid);
		if (st.st_nlink == 0 || (start != UINT64_MAX && start != r->rd_start)) {
			errno = ESRCH;
			return -1;
		}
		if (st.st_size < 0 || (uint64_t)st.st_size > SEG_READ_MAX) {
			errno = EPROTO;
			return -1;
		}
		size_t len = (size_t)st.st_size;
		unsigned char *img = malloc(len != 0 ? len : 1);
		if (img == NULL) {
			errno = ENOMEM;
			return -1;
		}
		size_t got = 0;
		while (got < len) {
			ssize_t k = pread(r->rd_fd, img + got, len - got, (off_t)got);
			if (k <= 0)
				break;
			got += (size_t)k;
		}
		if (got < len && attempt < 3) {
			free(img); /* the file changed size under us */
			continue;
		}
		int ret = seg_parse(img, got, r->rd_fd, out);
		int err = errno;
		free(img);
		if (ret == 0 && out->pid != r->rd_pid) {
			uslab_snapshot_free(out);
			err = EPROTO;
			ret = -1;
		}
		errno = err;
		return ret;
	}
}

/* See include/uslab/stats.h */
int uslab_stats_parse(const void *image, size_t len, struct uslab_snapshot *out)
{
	if ((image == NULL && len != 0) || out == NULL) {
		errno = EINVAL;
		return -1;
	}
	return seg_parse(image, len, -1, out);
}

/* See include/uslab/stats.h */
void uslab_snapshot_free(struct uslab_snapshot *s)
{
	if (s == NULL)
		return;
	free(s->caches);
	free(s->cpu_objs);
	s->caches = NULL;
	s->cpu_objs = NULL;
	s->ncaches = 0;
}

/* See include/uslab/stats.h */
void uslab_stats_close(struct uslab_reader *r)
{
	if (r == NULL)
		return;
	close(r->rd_fd);
	free(r);
}
