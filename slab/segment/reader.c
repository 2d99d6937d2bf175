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
 * 1. Parse by structure, from a source that is read, never mapped: the
 *    segment's descriptor (uslab_stats_read(), with pread) or a caller's
 *    buffer (uslab_stats_parse(), the fuzzed code); both go through the
 *    same parser. It reads the header, then the chain of record tables,
 *    then the counters of each arena that a live record points at: for
 *    every CPU that ever started a slot (h_cpus_seen), one read of that
 *    CPU's region of the arena, up to the highest index a live record
 *    uses (the counters of a cache of index j sit at j * 64).
 *
 * 2. Nothing is trusted. Every offset and length is checked against the
 *    source's size with overflow-free comparisons (off <= len && n <= len -
 *    off); table chunks must chain forward; records are copied out (no
 *    alignment assumed); strings must end within their field and have
 *    control characters replaced. Counters are numbers only, never offsets
 *    or indexes: the fill derived from them is clamped (slab/derive.c), so
 *    garbage gives wrong figures, not a fault. Any violation is EPROTO.
 *
 * 3. Bounded. A parse reads at most SEG_READ_MAX bytes (every read counts
 *    against it), and allocates two chunk buffers, the counters regions it
 *    read, and, per live record, a snapshot entry and a fill per seen CPU.
 *    Those are bounded before anything is allocated (at most
 *    SEG_MAX_RECORDS records, SEG_MAX_CELLS fills and SEG_MAX_ALLOC bytes
 *    of snapshot), so a hostile segment costs a parse at most about
 *    128 MiB plus what it read, whatever it says (uslab/stats.h).
 *
 * 4. Consistency. Records are guarded by a sequence lock (r_seq, the first
 *    field). A chunk is read twice in bulk; a record whose r_seq is even
 *    and equal in both copies was not written in between, since r_seq is
 *    read before the record's fields; any other is re-read alone (r_seq,
 *    the record, r_seq again), SEG_RETRIES times; if the writer keeps it
 *    busy beyond that, the last copy is used, each figure being one the
 *    writer stored. The counters are the fast path's, read racily, as in
 *    uslab_cache_stats().
 *
 * 5. Finding a segment (uslab_stats_open()): the locator
 *    uslab.<pid>.<pidns>[.<k>] in the stats directory must be a regular
 *    file owned by the user who owns /proc/<pid>, and say that pid, its
 *    namespace and its start time; then /proc/<pid>/fd/<fd> must be the
 *    memfd it names (st_dev, st_ino) and be owned by the same user, and
 *    its header must agree. A locator whose process is gone, was replaced
 *    (pid reuse, execve: the memfd is close-on-exec) or closed the memfd
 *    is stale: uslab_stats_list() removes the stale ones this user owns.
 */

#define SEG_READ_MAX ((uint64_t)256 << 20) /* bytes one parse may read */
#define SEG_MAX_RECORDS ((uint64_t)1 << 20)
#define SEG_MAX_CELLS ((uint64_t)1 << 22)   /* records x CPUs */
#define SEG_MAX_ALLOC ((uint64_t)128 << 20) /* bytes of snapshot, at most */
#define SEG_MAX_STRIDE ((uint64_t)1 << 24)
#define SEG_RETRIES 64
#define SEG_LOCATOR_SUFFIXES 16

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

/* ---- The source ---- */

struct seg_src {
	int s_fd;                   /* >= 0: pread from it */
	const unsigned char *s_img; /* else: this buffer */
	uint64_t s_len;             /* bytes in the source */
	uint64_t s_budget;          /* bytes this parse may still read */
};

/* Read [@off, +@n) into @buf; false if outside the source, over budget,
 * or short. */
static bool seg_read(struct seg_src *s, uint64_t off, void *buf, uint64_t n)
{
	if (!seg_in(off, n, s->s_len) || n > s->s_budget)
		return false;
	s->s_budget -= n;
	if (s->s_fd < 0) {
		memcpy(buf, s->s_img + off, n);
		return true;
	}
	for (uint64_t got = 0; got < n;) {
		ssize_t k = pread(s->s_fd, (char *)buf + got, n - got, (off_t)(off + got));
		if (k <= 0)
			return false;
		got += (uint64_t)k;
	}
	return true;
}

/* Read the record at @off, with its sequence lock when from a descriptor. */
static bool seg_read_rec(struct seg_src *s, uint64_t off, struct seg_rec *rec)
{
	if (!seg_read(s, off, rec, sizeof *rec))
		return false;
	for (int i = 0; s->s_fd >= 0 && i < SEG_RETRIES; i++) {
		uint32_t s1;
		if ((rec->r_seq & 1) == 0) {
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (!seg_read(s, off, &s1, sizeof s1))
				return false;
			if (s1 == rec->r_seq)
				return true;
		} else {
			sched_yield();
		}
		if (!seg_read(s, off, rec, sizeof *rec))
			return false;
	}
	return true; /* a busy writer: the last copy (Design §4) */
}

/* ---- Parsing ---- */

/* A live record found while parsing, before sorting by creation order. */
struct seg_found {
	uint64_t f_id;
	size_t f_index;
};

static int seg_found_cmp(const void *a, const void *b)
{
	const struct seg_found *x = a, *y = b;
	return x->f_id < y->f_id ? -1 : x->f_id > y->f_id;
}

/* An arena's counters as read: for each CPU, indices 0 .. a_max. */
struct seg_arena {
	uint64_t a_base;
	uint32_t a_max;           /* the highest index a live record named */
	unsigned char *a_regions; /* ncpus runs of (a_max + 1) counters (unseen: zero) */
};

/* The arena of @base in @arenas (adding it with index @index if new, when
 * there is room for @cap); NULL if absent and not added. */
static struct seg_arena *seg_arena_at(struct seg_arena *arenas, size_t *n, size_t cap,
                                      uint64_t base, uint32_t index)
{
	for (size_t a = 0; a < *n; a++)
		if (arenas[a].a_base == base) {
			if (index > arenas[a].a_max)
				arenas[a].a_max = index;
			return &arenas[a];
		}
	if (*n == cap)
		return NULL;
	arenas[*n].a_base = base;
	arenas[*n].a_max = index;
	return &arenas[(*n)++];
}

/* The record's fixed figures, checked. */
static bool seg_rec_sane(const struct seg_rec *r)
{
	return memchr(r->r_name, '\0', sizeof r->r_name) != NULL && r->r_obj_size != 0 &&
	       r->r_obj_size <= USLAB_MAX_SIZE && seg_pow2(r->r_align) &&
	       r->r_align <= ((uint64_t)1 << 20) && r->r_slot_size >= r->r_obj_size &&
	       r->r_slot_size <= 2 * (uint64_t)USLAB_MAX_SIZE && r->r_objs_per_slab != 0 &&
	       seg_pow2(r->r_slab_size) && r->r_slab_size <= ((uint64_t)1 << 32) &&
	       r->r_slab_size / r->r_slot_size >= r->r_objs_per_slab && r->r_mag_max <= 65536 &&
	       r->r_mag_size <= r->r_mag_max;
}

/* Fill one cache's figures from a checked record and, when it has them,
 * its counters (@ctr: CPU 0's, then every h_ctr_stride bytes). */
static void seg_cache_fill(const struct seg_rec *r, const unsigned char *ctr, uint64_t stride,
                           uint32_t ncpus, struct uslab_stats *st, uint64_t *cpu)
{
	struct stats_raw raw;

	memset(&raw, 0, sizeof raw);
	seg_str(raw.sr_name, r->r_name, sizeof r->r_name);
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
	raw.sr_rcu.rc_objs = r->r_rcu_objs;
	raw.sr_rcu.rc_slabs = r->r_rcu_slabs;
	raw.sr_rcu.rc_peak = r->r_rcu_peak;
	raw.sr_rcu.rc_waits = r->r_rcu_waits;
	raw.sr_rcu.rc_freed = r->r_rcu_freed;
	raw.sr_rcu.rc_cap = r->r_rcu_cap;
	for (uint32_t i = 0; i < ncpus; i++) {
		struct pcpu_counters k;
		if (ctr == NULL) {
			cpu[i] = 0;
			continue;
		}
		memcpy(&k, ctr + (uint64_t)i * stride, sizeof k);
		/* The copy of the word stands in for the private word. */
		cpu[i] = stats_add_cpu(&raw, k.pc_word, &k);
	}
	stats_derive(&raw, st);
}

/* The header, checked; false if it is not one of ours. */
static bool seg_header_sane(const struct seg_header *h)
{
	return memcmp(h->h_magic, SEG_MAGIC, sizeof h->h_magic) == 0 &&
	       h->h_version == USLAB_SEGMENT_VERSION && h->h_hdr_size == sizeof *h &&
	       h->h_rec_size == sizeof(struct seg_rec) &&
	       h->h_ctr_size == sizeof(struct pcpu_counters) && h->h_ncpus != 0 &&
	       h->h_ncpus <= SEG_MAX_CPUS && seg_pow2(h->h_page_size) && h->h_page_size >= 1024 &&
	       h->h_page_size <= ((uint32_t)1 << 20) && seg_pow2(h->h_ctr_stride) &&
	       h->h_ctr_stride >= sizeof(struct pcpu_counters) &&
	       h->h_ctr_stride <= SEG_MAX_STRIDE && h->h_pid > 0 && h->h_pid <= INT_MAX;
}

/* The CPUs with figures: one past the highest seen (bounded by h_ncpus). */
static uint32_t seg_cpus_seen(const struct seg_header *h)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < h->h_ncpus; i++)
		if ((h->h_cpus_seen[i / 64] >> (i % 64)) & 1)
			n = i + 1;
	return n;
}

/* Parse the segment in @s. 0, or -1 with errno. */
static int seg_parse(struct seg_src *s, struct uslab_snapshot *out)
{
	struct seg_header h;
	struct uslab_stats *caches = NULL, *sorted = NULL;
	uint64_t *cpu = NULL, *cpu_sorted = NULL;
	struct seg_found *found = NULL;
	struct seg_arena *arenas = NULL;
	struct seg_rec *ca = NULL, *cb = NULL;
	size_t narenas = 0;
	int err = EPROTO;

	memset(out, 0, sizeof *out);
	if (!seg_read(s, 0, &h, sizeof h) || !seg_header_sane(&h) ||
	    !seg_str(out->mode, h.h_mode,
	             sizeof out->mode < sizeof h.h_mode ? sizeof out->mode : sizeof h.h_mode))
		goto fail;
	uint32_t ncpus = seg_cpus_seen(&h);

	/* Two buffers of one chunk's records (Design §4). */
	err = ENOMEM;
	size_t chunk_bytes = SEG_CHUNK_MAX_REC * sizeof(struct seg_rec);
	ca = malloc(chunk_bytes);
	cb = malloc(chunk_bytes);
	if (ca == NULL || cb == NULL)
		goto fail;

	/* Pass 1: walk the chain; count live records and note the arenas
	 * their counters are in, with the highest index of each. */
	err = EPROTO;
	uint64_t nlive = 0, nrec = 0;
	for (uint64_t off = h.h_tab_off, prev_end = h.h_hdr_size; off != 0;) {
		struct seg_table t;
		if (off < prev_end || !seg_read(s, off, &t, sizeof t))
			goto fail;
		uint64_t recs = off + sizeof t;
		if (t.t_nrec > SEG_CHUNK_MAX_REC || (nrec += t.t_nrec) > SEG_MAX_RECORDS ||
		    !seg_read(s, recs, ca, (uint64_t)t.t_nrec * sizeof(struct seg_rec)))
			goto fail;
		for (uint32_t i = 0; i < t.t_nrec; i++)
			nlive += ca[i].r_state == SEG_REC_LIVE;
		prev_end = recs + (uint64_t)t.t_nrec * sizeof(struct seg_rec);
		off = t.t_next;
	}
	uint64_t per = 2 * sizeof(struct uslab_stats) + sizeof(struct seg_found) +
	               sizeof(struct seg_arena) + 2 * sizeof(uint64_t) * (ncpus != 0 ? ncpus : 1);
	if (nlive * (ncpus != 0 ? ncpus : 1) > SEG_MAX_CELLS || nlive > SEG_MAX_ALLOC / per)
		goto fail;
	err = ENOMEM;
	if (nlive != 0) {
		caches = calloc(nlive, sizeof *caches);
		sorted = calloc(nlive, sizeof *sorted);
		found = calloc(nlive, sizeof *found);
		arenas = calloc(nlive, sizeof *arenas);
		cpu = calloc(nlive * ncpus + 1, sizeof *cpu);
		cpu_sorted = calloc(nlive * ncpus + 1, sizeof *cpu_sorted);
		if (caches == NULL || sorted == NULL || found == NULL || arenas == NULL ||
		    cpu == NULL || cpu_sorted == NULL)
			goto fail;
	}
	for (uint64_t off = h.h_tab_off; off != 0 && ncpus != 0;) {
		struct seg_table t;
		err = EPROTO;
		if (!seg_read(s, off, &t, sizeof t) || t.t_nrec > SEG_CHUNK_MAX_REC ||
		    !seg_read(s, off + sizeof t, ca, (uint64_t)t.t_nrec * sizeof(struct seg_rec)))
			goto fail;
		for (uint32_t i = 0; i < t.t_nrec; i++) {
			const struct seg_rec *r = &ca[i];
			if (r->r_state != SEG_REC_LIVE || r->r_ctr_base == 0)
				continue;
			if ((uint64_t)r->r_ctr_index * sizeof(struct pcpu_counters) >=
			            h.h_ctr_stride ||
			    r->r_ctr_base % sizeof(struct pcpu_counters) != 0 ||
			    !seg_in(r->r_ctr_base, (uint64_t)h.h_ncpus * h.h_ctr_stride, s->s_len))
				goto fail;
			if (seg_arena_at(arenas, &narenas, nlive, r->r_ctr_base, r->r_ctr_index) ==
			    NULL)
				goto fail; /* more arenas than live records: impossible */
		}
		off = t.t_next;
	}
	for (size_t a = 0; a < narenas; a++) {
		uint64_t run = ((uint64_t)arenas[a].a_max + 1) * sizeof(struct pcpu_counters);
		err = ENOMEM;
		arenas[a].a_regions = calloc(ncpus, run);
		if (arenas[a].a_regions == NULL)
			goto fail;
		err = EPROTO;
		for (uint32_t c = 0; c < ncpus; c++)
			if (((h.h_cpus_seen[c / 64] >> (c % 64)) & 1) &&
			    !seg_read(s, arenas[a].a_base + (uint64_t)c * h.h_ctr_stride,
			              arenas[a].a_regions + c * run, run))
				goto fail;
	}

	/* Pass 2: each chunk read twice; a record whose sequence is even and
	 * the same in both copies was not written meanwhile (its r_seq is
	 * read before its fields), others are read again alone. */
	size_t n = 0;
	for (uint64_t off = h.h_tab_off; off != 0;) {
		struct seg_table t;
		err = EPROTO;
		uint64_t bytes;
		if (!seg_read(s, off, &t, sizeof t) || t.t_nrec > SEG_CHUNK_MAX_REC ||
		    !seg_read(s, off + sizeof t, ca,
		              bytes = (uint64_t)t.t_nrec * sizeof(struct seg_rec)) ||
		    !seg_read(s, off + sizeof t, cb, bytes))
			goto fail;
		for (uint32_t i = 0; i < t.t_nrec; i++) {
			struct seg_rec r = ca[i];
			if (r.r_seq != cb[i].r_seq || (r.r_seq & 1) != 0)
				if (!seg_read_rec(s, off + sizeof t + (uint64_t)i * sizeof r, &r))
					goto fail;
			if (r.r_state == SEG_REC_FREE)
				continue; /* never live, or destroyed since pass 1 */
			if (r.r_state != SEG_REC_LIVE || n == nlive || !seg_rec_sane(&r))
				goto fail;
			/* Its counters, if pass 1 read them (a record reused since
			 * then for another index has none this time). */
			const unsigned char *ctr = NULL;
			uint64_t run = 0;
			for (size_t a = 0; a < narenas && r.r_ctr_base != 0; a++)
				if (arenas[a].a_base == r.r_ctr_base &&
				    r.r_ctr_index <= arenas[a].a_max) {
					run = ((uint64_t)arenas[a].a_max + 1) *
					      sizeof(struct pcpu_counters);
					ctr = arenas[a].a_regions +
					      (uint64_t)r.r_ctr_index *
					              sizeof(struct pcpu_counters);
					break;
				}
			seg_cache_fill(&r, ctr, run, ncpus, &caches[n], cpu + n * ncpus);
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
		memcpy(cpu_sorted + i * ncpus, cpu + found[i].f_index * ncpus, ncpus * sizeof *cpu);
	}
	for (size_t a = 0; a < narenas; a++)
		free(arenas[a].a_regions);
	free(arenas);
	free(caches);
	free(cpu);
	free(found);
	free(ca);
	free(cb);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	out->pid = (pid_t)h.h_pid;
	out->taken_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	out->bytes_mapped = h.h_bytes_got > h.h_bytes_put ? h.h_bytes_got - h.h_bytes_put : 0;
	out->ncpus = ncpus;
	out->ncaches = n;
	out->caches = sorted;
	out->cpu_objs = cpu_sorted;
	return 0;

fail:
	for (size_t a = 0; arenas != NULL && a < narenas; a++)
		free(arenas[a].a_regions);
	free(arenas);
	free(ca);
	free(cb);
	free(caches);
	free(sorted);
	free(cpu);
	free(cpu_sorted);
	free(found);
	memset(out, 0, sizeof *out);
	errno = err;
	return -1;
}

/* ---- Finding a segment ---- */

struct uslab_reader {
	pid_t rd_pid;
	int rd_fd;         /* the memfd, through /proc/<pid>/fd */
	uint64_t rd_start; /* the publisher's start time */
};

/* The pid namespace inode of @pid (0: unknown). */
static uint64_t seg_pidns_of(pid_t pid)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof path, "/proc/%d/ns/pid", (int)pid);
	return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* The user who owns process @pid; -1 if none. */
static int64_t seg_owner_of(pid_t pid)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof path, "/proc/%d", (int)pid);
	return stat(path, &st) == 0 ? (int64_t)st.st_uid : -1;
}

/* Read and check the locator @name (in @dirfd); false if it is not one, or
 * not owned by @uid. */
static bool seg_locator_read(int dirfd, const char *name, int64_t uid, struct seg_locator *l,
                             struct stat *st)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);

	if (fd < 0)
		return false;
	bool ok = fstat(fd, st) == 0 && S_ISREG(st->st_mode) && (int64_t)st->st_uid == uid &&
	          pread(fd, l, sizeof *l, 0) == (ssize_t)sizeof *l &&
	          memcmp(l->l_magic, SEG_LOC_MAGIC, sizeof l->l_magic) == 0 &&
	          l->l_version == USLAB_SEGMENT_VERSION && l->l_size == sizeof *l && l->l_pid > 0 &&
	          l->l_pid <= INT_MAX && l->l_uid == uid && l->l_fd >= 0 && l->l_fd <= INT_MAX;
	close(fd);
	return ok;
}

/* Whether the locator's process is the publisher and still holds the
 * memfd it names. With @fdout, open that memfd and return it there. */
static bool seg_locator_live(const struct seg_locator *l, int64_t uid, int *fdout)
{
	char path[96];
	struct stat st;

	if (seg_proc_start_time((pid_t)l->l_pid) != l->l_start_time)
		return false;
	snprintf(path, sizeof path, "/proc/%lld/fd/%lld", (long long)l->l_pid, (long long)l->l_fd);
	if (fdout == NULL)
		return stat(path, &st) == 0 && (uint64_t)st.st_dev == l->l_dev &&
		       (uint64_t)st.st_ino == l->l_ino && (int64_t)st.st_uid == uid;
	/* A magic link of /proc: followed to the file it names, checked below. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return false;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_dev != l->l_dev ||
	    (uint64_t)st.st_ino != l->l_ino || (int64_t)st.st_uid != uid) {
		close(fd);
		return false;
	}
	*fdout = fd;
	return true;
}

/* The locator names of @pid in its namespace @ns: k == 0 the plain one. */
static bool seg_locator_name(char *buf, size_t n, pid_t pid, uint64_t ns, int k)
{
	int w = k == 0 ? snprintf(buf, n, "uslab.%d.%llu", (int)pid, (unsigned long long)ns)
	               : snprintf(buf, n, "uslab.%d.%llu.%d", (int)pid, (unsigned long long)ns, k);
	return w > 0 && (size_t)w < n;
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
	uint64_t my_ns = seg_pidns_of(getpid());
	int found = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		const char *p = e->d_name;
		long long pid;
		unsigned long long ns;
		int k = 0, used = 0;
		if (strncmp(p, "uslab.", 6) != 0 ||
		    (sscanf(p + 6, "%lld.%llu%n.%d%n", &pid, &ns, &used, &k, &used) < 2) ||
		    p[6 + used] != '\0' || pid <= 0 || pid > INT_MAX)
			continue;
		char expect[64];
		if (!seg_locator_name(expect, sizeof expect, (pid_t)pid, ns, k) ||
		    strcmp(expect, p) != 0)
			continue;
		/* Another namespace's pid is not ours to look up: neither list
		 * nor judge it. */
		if (ns != 0 && my_ns != 0 && ns != my_ns)
			continue;
		struct seg_locator l;
		struct stat st;
		if (fstatat(dirfd(d), p, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !seg_locator_read(dirfd(d), p, (int64_t)st.st_uid, &l, &st) || l.l_pid != pid ||
		    l.l_pidns != ns)
			continue; /* not a locator: leave it */
		/* Live: the pid's process is the locator's user's, started when
		 * it says, and holds the memfd it names. */
		int64_t owner = seg_owner_of((pid_t)pid);
		uint64_t start = seg_proc_start_time((pid_t)pid);
		if (owner == l.l_uid && seg_locator_live(&l, owner, NULL)) {
			if ((size_t)found < n) {
				procs[found].pid = (pid_t)pid;
				seg_proc_comm((pid_t)pid, procs[found].comm,
				              sizeof procs[found].comm);
			}
			if (found < INT_MAX)
				found++;
			continue;
		}
		/* Stale only when /proc could tell: the process is gone, is
		 * another user's or another start's, or lost the memfd. */
		bool mine = start != UINT64_MAX && st.st_uid == geteuid();
		/* Stale: remove it if it is still the file we judged and ours. */
		struct stat now;
		if (mine && fstatat(dirfd(d), p, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
		    now.st_dev == st.st_dev && now.st_ino == st.st_ino)
			unlinkat(dirfd(d), p, 0);
	}
	closedir(d);
	return found;
}

/* See include/uslab/stats.h */
struct uslab_reader *uslab_stats_open(pid_t pid)
{
	if (pid <= 0) {
		errno = EINVAL;
		return NULL;
	}
	int64_t owner = seg_owner_of(pid);
	if (owner < 0) {
		errno = ENOENT;
		return NULL;
	}
	int dirfd = open(seg_dir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return NULL;
	uint64_t ns = seg_pidns_of(pid);
	if (ns == 0)
		ns = seg_pidns_of(getpid());
	int fd = -1, err = ENOENT;
	struct seg_locator l;
	for (int k = 0; k < SEG_LOCATOR_SUFFIXES && fd < 0; k++) {
		char name[64];
		struct stat st;
		if (!seg_locator_name(name, sizeof name, pid, ns, k))
			break;
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (!seg_locator_read(dirfd, name, owner, &l, &st) || l.l_pid != pid ||
		    l.l_pidns != ns) {
			err = EPROTO; /* somebody else's file, or not a locator */
			continue;
		}
		if (!seg_locator_live(&l, owner, &fd))
			err = errno == EACCES || errno == EPERM ? EACCES : ENOENT;
	}
	close(dirfd);
	struct seg_header h;
	if (fd >= 0 && (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || !seg_header_sane(&h) ||
	                h.h_pid != pid || h.h_start_time != l.l_start_time)) {
		close(fd);
		fd = -1;
		err = EPROTO;
	}
	struct uslab_reader *r = fd >= 0 ? malloc(sizeof *r) : NULL;
	if (r == NULL) {
		if (fd >= 0) {
			close(fd);
			err = ENOMEM;
		}
		errno = err;
		return NULL;
	}
	r->rd_pid = pid;
	r->rd_fd = fd;
	r->rd_start = l.l_start_time;
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
	struct stat st;
	if (fstat(r->rd_fd, &st) != 0)
		return -1;
	/* Our descriptor keeps the memfd alive: the process is what says it
	 * is over. */
	if (seg_proc_start_time(r->rd_pid) != r->rd_start) {
		errno = ESRCH;
		return -1;
	}
	struct seg_src s = {
		.s_fd = r->rd_fd,
		.s_len = st.st_size > 0 ? (uint64_t)st.st_size : 0,
		.s_budget = SEG_READ_MAX,
	};
	int ret = seg_parse(&s, out);
	if (ret == 0 && out->pid != r->rd_pid) {
		uslab_snapshot_free(out);
		errno = EPROTO;
		return -1;
	}
	return ret;
}

/* See include/uslab/stats.h */
int uslab_stats_parse(const void *image, size_t len, struct uslab_snapshot *out)
{
	if ((image == NULL && len != 0) || out == NULL) {
		errno = EINVAL;
		return -1;
	}
	struct seg_src s = {
		.s_fd = -1,
		.s_img = image,
		.s_len = len,
		.s_budget = SEG_READ_MAX,
	};
	return seg_parse(&s, out);
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
