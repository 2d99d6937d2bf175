/* SPDX-License-Identifier: MIT */
/* The live statistics segment: publishing this process's caches. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uslab/stats.h"
#include "../../pagesrc/pagesrc.h"
#include "../arch/fastpath.h"
#include "../debug.h"
#include "../lock.h"
#include "../meta.h"
#include "common.h"
#include "segment.h"
#include "writer.h"

/*
 * Design
 *
 * 1. What is published. Every process using uslab publishes its caches
 *    (unless USLAB_STATS=0) in a sealed memfd, created at the first cache
 *    or arena, and tells other processes where it is with a small locator
 *    file, $USLAB_STATS_DIR/uslab.<pid>.<pidns> (default /dev/shm), mode
 *    0600, created exclusively (segment.h). A reader opens
 *    /proc/<pid>/fd/<fd> and checks it is the memfd the locator names. The
 *    layout is in segment.h; reader.c trusts none of it. The writer is an
 *    observer (slab/observe.h): the registry (cache.c) publishes a cache
 *    with the figures that never change, the layers report the others
 *    through the hooks below, and the per-CPU arenas ask it for their
 *    counters (seg_counters); it never reads a cache, a slot or a depot.
 *
 * 2. Nothing another process does can hurt the publisher. The memfd is
 *    sealed against shrinking, so no truncation can turn a store into
 *    SIGBUS; the locator is never mapped, and replacing or deleting it only
 *    hides the segment. Whatever another process writes into the memfd
 *    changes numbers in a report, never what the allocator does: the
 *    magazines are private memory, and the writer never reads back what it
 *    published to make a decision (offsets, record ownership, sequence
 *    numbers are kept privately).
 *
 * 3. No descriptor it cannot vouch for. The writer holds one descriptor,
 *    the memfd's, and uses it rarely (to grow the file and map a new
 *    record chunk or an arena's counters). Before every use it checks with
 *    fstat that the number still names its memfd (st_dev, st_ino): a
 *    program that closed it (closefrom, a daemon's start-up) and got the
 *    number back for a file of its own is never touched. The segment is
 *    then lost: it stops growing, new caches stay unpublished, and
 *    uslab_global_stats() says why. The writer never closes a descriptor
 *    it has not just checked.
 *
 * 4. One plain store on the fast path. The fast path copies its commit
 *    word to the slot's counters, PCPU_CTR_DELTA above the slot, and the
 *    slow paths count beside it (arch/fastpath.h). An arena's counters are
 *    one region of the memfd mapped MAP_SHARED over their place
 *    (seg_counters), so a reader finds every cache's counters from its
 *    record (the arena's region, the cache's index). When stats are off
 *    or the file cannot grow, the arena's counters are private memory and
 *    its caches' fast-path figures stay local.
 *
 * 5. Slow-changing figures (slab and object counts, depot contents,
 *    magazine size) go in a per-cache record. The slab layer reports them
 *    before dropping c_slab_lock, the depot before dropping c_depot_lock:
 *    a dozen stores, under a sequence lock (r_seq) so a reader gets the
 *    record's figures from one moment. Both may report at once, so the
 *    sequence is serialised by wr_lock, a leaf nobody waits on for long.
 *    Hence at quiescence the file says exactly what uslab_cache_stats()
 *    says.
 *
 * 6. Fork. The child publishes none of the caches it inherited (their
 *    numbers are the parent's record): it makes every counters region it
 *    shares with the parent private again (a copy mapped in place), drops
 *    the parent's records and mappings and lets the parent's descriptor
 *    go; caches it creates later go to a segment of its own. Any failure
 *    there (no memory for a copy) leaves that region shared and is said in
 *    the child's status; the child never aborts for it.
 *
 * 7. Cleanup. The memfd dies with the process, however it ends (even
 *    SIGKILL). The locator is unlinked at normal exit and before a misuse
 *    abort; one left behind (_exit, a signal) names a descriptor that no
 *    longer is the memfd, which readers recognise, also after execve
 *    (the memfd is close-on-exec), and remove when they may.
 *
 * 8. Cancellation: the writer's system calls that are cancellation points
 *    run with cancellation disabled, so a cancelled thread never leaves
 *    seg_lock held.
 *
 * Lock order: seg_lock comes after every cache lock and arena_lock
 * (cache.c §4): fork takes it after them, the arenas call seg_counters
 * under arena_lock. wr_lock is a leaf, taken with c_slab_lock, c_depot_lock
 * or seg_lock held; meta_lock may be taken under seg_lock.
 */

/* ---- State ---- */

/* One chunk of the record table, mapped. */
struct seg_chunk {
	struct seg_chunk *k_next;
	struct seg_table *k_tab;
	uint64_t k_off, k_len;
	uint64_t k_used[SEG_CHUNK_MAX_REC / 64]; /* bit i: record i claimed (private truth) */
	uint32_t k_nrec;
};

/* A region of the file mapped over an arena's counters (for fork). */
struct seg_ctrmap {
	struct seg_ctrmap *m_next;
	void *m_addr;
	size_t m_len;
};

/* A published cache (writer side, private). */
struct seg_wrec {
	struct seg_wrec *wr_next, *wr_prev; /* under seg_lock */
	struct seg_rec *wr_rec;
	struct seg_chunk *wr_chunk;
	uint32_t wr_index;         /* record index in wr_chunk */
	struct uslab_lock wr_lock; /* serialises the writers of wr_rec (leaf) */
	uint32_t wr_seq;           /* r_seq as written, under wr_lock */
};

static struct uslab_lock seg_lock = USLAB_LOCK_INITIALIZER; /* all state below */
static int seg_enabled = -1; /* -1 undecided, 0 off (or lost), 1 on */
static int seg_fd = -1;      /* the memfd, while this process publishes */
static dev_t seg_dev;        /* and what it must be */
static ino_t seg_ino;
static pid_t seg_pid;                             /* the process that created seg_loc */
static char seg_loc[PATH_MAX];                    /* the locator */
static const char *seg_why = "not yet published"; /* uslab_global_stats() */
static struct seg_header *seg_hdr;                /* read without the lock by the hooks */
static uint64_t seg_end;                          /* file size */
static struct seg_chunk *seg_chunks;
static struct seg_ctrmap *seg_ctrmaps;
static struct seg_wrec *seg_recs;
static uint64_t seg_next_id;
static uint32_t seg_ncpus = 1;
static char seg_mode[64];
static bool seg_atexit_set;

#define SEG_PUT(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* ---- The descriptor ---- */

/* Give up publishing: keep what is mapped, never touch the descriptor
 * again (it may not be ours any more), say why. */
static void seg_lose_locked(const char *why)
{
	ASSERT_HELD(&seg_lock);
	seg_enabled = 0;
	seg_fd = -1;
	seg_why = why;
}

/* Whether seg_fd is still the memfd; loses the segment otherwise. */
static bool seg_fd_ok_locked(void)
{
	struct stat st;

	ASSERT_HELD(&seg_lock);
	if (seg_fd < 0)
		return false;
	if (fstat(seg_fd, &st) != 0 || st.st_dev != seg_dev || st.st_ino != seg_ino) {
		seg_lose_locked("lost: the program closed or reused the segment's descriptor");
		return false;
	}
	return true;
}

/* Grow the file by @len bytes (sparse: a memfd takes memory as it is
 * touched); the offset of the new space, or UINT64_MAX. */
static uint64_t seg_grow_locked(uint64_t len)
{
	ASSERT_HELD(&seg_lock);
	uint64_t off = seg_end;
	if (len > (uint64_t)INT64_MAX - off || !seg_fd_ok_locked() ||
	    ftruncate(seg_fd, (off_t)(off + len)) != 0)
		return UINT64_MAX;
	seg_end = off + len;
	return off;
}

/* Map [@off, +@len) of the file at @addr (NULL: anywhere; else MAP_FIXED
 * over a range the caller reserved); NULL on failure. */
static void *seg_map_locked(void *addr, uint64_t off, uint64_t len)
{
	ASSERT_HELD(&seg_lock);
	if (!seg_fd_ok_locked())
		return NULL;
	void *p = mmap(addr, len, PROT_READ | PROT_WRITE,
	               MAP_SHARED | (addr != NULL ? MAP_FIXED : 0), seg_fd, (off_t)off);
	return p == MAP_FAILED ? NULL : p;
}

/* ---- Record table ---- */

static uint64_t seg_round_page(uint64_t v)
{
	uint64_t p = pgsrc_page_size();
	return (v + p - 1) & ~(p - 1);
}

/* Append a record table chunk and link it after the last one. */
static struct seg_chunk *seg_chunk_add_locked(void)
{
	ASSERT_HELD(&seg_lock);
	uint64_t len = seg_round_page(SEG_CHUNK_SIZE);
	struct seg_chunk *k = meta_alloc(sizeof *k);
	if (k == NULL)
		return NULL;
	uint64_t off = seg_grow_locked(len);
	if (off == UINT64_MAX || (k->k_tab = seg_map_locked(NULL, off, len)) == NULL) {
		meta_free(k, sizeof *k);
		return NULL;
	}
	k->k_off = off;
	k->k_len = len;
	k->k_nrec = (uint32_t)((len - sizeof(struct seg_table)) / sizeof(struct seg_rec));
	if (k->k_nrec > SEG_CHUNK_MAX_REC)
		k->k_nrec = SEG_CHUNK_MAX_REC;
	SEG_PUT(k->k_tab->t_nrec, k->k_nrec);
	struct seg_chunk *last = seg_chunks;
	while (last != NULL && last->k_next != NULL)
		last = last->k_next;
	if (last == NULL) {
		seg_chunks = k;
		SEG_PUT(seg_hdr->h_tab_off, off);
	} else {
		last->k_next = k;
		__atomic_store_n(&last->k_tab->t_next, off, __ATOMIC_RELEASE);
	}
	return k;
}

/* Claim a free record; NULL when no chunk can be added. */
static struct seg_chunk *seg_rec_claim_locked(uint32_t *index)
{
	ASSERT_HELD(&seg_lock);
	for (struct seg_chunk *k = seg_chunks;; k = k->k_next) {
		if (k == NULL && (k = seg_chunk_add_locked()) == NULL)
			return NULL;
		for (uint32_t w = 0; w * 64 < k->k_nrec; w++) {
			if (k->k_used[w] == ~0ull)
				continue;
			uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(~k->k_used[w]);
			if (i >= k->k_nrec)
				break;
			k->k_used[w] |= 1ull << (i % 64);
			*index = i;
			return k;
		}
	}
}

static struct seg_rec *seg_rec_at(const struct seg_chunk *k, uint32_t i)
{
	return (struct seg_rec *)((char *)k->k_tab + sizeof(struct seg_table)) + i;
}

static void seg_rec_begin(struct seg_wrec *w)
{
	lock_take(&w->wr_lock);
	SEG_PUT(w->wr_rec->r_seq, ++w->wr_seq);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void seg_rec_end(struct seg_wrec *w)
{
	__atomic_store_n(&w->wr_rec->r_seq, ++w->wr_seq, __ATOMIC_RELEASE);
	lock_drop(&w->wr_lock);
}

/* ---- Opening ---- */

static void seg_exit(void)
{
	if (seg_pid != 0 && seg_pid == getpid())
		unlink(seg_loc);
}

/* Our pid namespace's inode (0 when /proc does not say). */
static uint64_t seg_pidns(void)
{
	struct stat st;
	return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Create the locator exclusively: under its name, or, when somebody else
 * holds that name, under the name with a suffix. A locator of our own name
 * that we did not write now is stale (a dead process with our pid, our
 * own image before execve) and is replaced when it is ours to remove. */
static bool seg_locator_create_locked(const struct seg_locator *l)
{
	ASSERT_HELD(&seg_lock);
	const char *dir = seg_dir();
	for (int k = 0; k < 16; k++) {
		int n = k == 0 ? snprintf(seg_loc, sizeof seg_loc, "%s/uslab.%lld.%llu", dir,
		                          (long long)l->l_pid, (unsigned long long)l->l_pidns)
		               : snprintf(seg_loc, sizeof seg_loc, "%s/uslab.%lld.%llu.%d", dir,
		                          (long long)l->l_pid, (unsigned long long)l->l_pidns, k);
		if (n < 0 || (size_t)n >= sizeof seg_loc)
			return false;
		for (int tries = 0; tries < 2; tries++) {
			int fd = open(seg_loc, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			              0600);
			if (fd >= 0) {
				bool ok = fchmod(fd, 0600) == 0 &&
				          write(fd, l, sizeof *l) == (ssize_t)sizeof *l;
				close(fd);
				if (ok)
					return true;
				unlink(seg_loc);
				return false;
			}
			if (errno != EEXIST)
				return false;
			struct stat st;
			if (lstat(seg_loc, &st) != 0 || !S_ISREG(st.st_mode) ||
			    st.st_uid != geteuid())
				break; /* not ours: another name */
			unlink(seg_loc);
		}
	}
	return false;
}

/* Create this process's segment: a sealed memfd with its header and first
 * chunk, then the locator that names it. */
static int seg_open_locked(void)
{
	ASSERT_HELD(&seg_lock);
	size_t page = pgsrc_page_size();
	pid_t pid = getpid();
	struct stat st;

	int fd = memfd_create("uslab-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		seg_why = "off: memfd_create refused";
		return -1;
	}
	if (fstat(fd, &st) != 0 || ftruncate(fd, (off_t)page) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
		close(fd);
		seg_why = "off: the memfd could not be sized and sealed";
		return -1;
	}
	seg_fd = fd;
	seg_dev = st.st_dev;
	seg_ino = st.st_ino;
	seg_end = page;
	struct seg_header *h = seg_map_locked(NULL, 0, page);
	if (h == NULL)
		goto fail;
	memcpy(h->h_magic, SEG_MAGIC, sizeof h->h_magic);
	h->h_version = USLAB_SEGMENT_VERSION;
	h->h_hdr_size = sizeof *h;
	h->h_rec_size = sizeof(struct seg_rec);
	h->h_ctr_size = sizeof(struct pcpu_counters);
	h->h_ncpus = seg_ncpus;
	h->h_page_size = (uint32_t)page;
	h->h_ctr_stride = (uint64_t)1 << PCPU_SHIFT;
	h->h_pid = pid;
	h->h_pidns = seg_pidns();
	h->h_start_time = seg_proc_start_time(pid);
	snprintf(h->h_mode, sizeof h->h_mode, "%s", seg_mode);
	seg_hdr = h;
	if (seg_chunk_add_locked() == NULL)
		goto fail_unmap;
	struct seg_locator l = {
		.l_version = USLAB_SEGMENT_VERSION,
		.l_size = sizeof l,
		.l_pid = pid,
		.l_pidns = h->h_pidns,
		.l_start_time = h->h_start_time,
		.l_uid = (int64_t)geteuid(),
		.l_fd = fd,
		.l_dev = (uint64_t)seg_dev,
		.l_ino = (uint64_t)seg_ino,
	};
	memcpy(l.l_magic, SEG_LOC_MAGIC, sizeof l.l_magic);
	if (!seg_locator_create_locked(&l)) {
		seg_why = "off: no locator could be created in the stats directory";
		goto fail_chunks;
	}
	seg_pid = pid;
	seg_why = seg_loc;
	if (!seg_atexit_set)
		seg_atexit_set = atexit(seg_exit) == 0;
	return 0;

fail_chunks:
	for (struct seg_chunk *k; (k = seg_chunks) != NULL;) {
		seg_chunks = k->k_next;
		munmap(k->k_tab, k->k_len);
		meta_free(k, sizeof *k);
	}
fail_unmap:
	seg_hdr = NULL;
	munmap(h, page);
fail:
	close(fd);
	seg_fd = -1;
	if (seg_why == NULL || strncmp(seg_why, "off", 3) != 0)
		seg_why = "off: the memfd could not be mapped";
	return -1;
}

/* Publishing is on and the segment open (opened now if need be). */
static bool seg_ready_locked(void)
{
	ASSERT_HELD(&seg_lock);
	if (seg_enabled < 0) {
		const char *env = getenv("USLAB_STATS");
		seg_enabled = env == NULL || strcmp(env, "0") != 0;
		if (seg_enabled == 0)
			seg_why = "off: USLAB_STATS=0";
	}
	if (seg_enabled == 0)
		return false;
	if (seg_fd < 0 && seg_open_locked() != 0) {
		seg_enabled = 0; /* do not retry at every create */
		return false;
	}
	return seg_fd_ok_locked();
}

/* Store @v in @field unless it holds more already (monotonic totals). */
static void seg_store_max(uint64_t *field, uint64_t v)
{
	uint64_t old = __atomic_load_n(field, __ATOMIC_RELAXED);
	while (old < v && !__atomic_compare_exchange_n(field, &old, v, true, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}

/* Publish @info in a new record; NULL when the cache stays unpublished. */
static struct seg_wrec *seg_publish_locked(const struct seg_info *info)
{
	ASSERT_HELD(&seg_lock);
	if (!seg_ready_locked())
		return NULL;
	struct seg_wrec *w = meta_alloc(sizeof *w);
	if (w == NULL)
		return NULL;
	w->wr_chunk = seg_rec_claim_locked(&w->wr_index);
	if (w->wr_chunk == NULL) {
		meta_free(w, sizeof *w);
		return NULL;
	}
	w->wr_rec = seg_rec_at(w->wr_chunk, w->wr_index);
	lock_init(&w->wr_lock);
	w->wr_seq = __atomic_load_n(&w->wr_rec->r_seq, __ATOMIC_RELAXED) & ~1u;

	struct seg_rec *r = w->wr_rec;
	seg_rec_begin(w);
	SEG_PUT(r->r_id, ++seg_next_id);
	memset(r->r_name, 0, sizeof r->r_name);
	strncpy(r->r_name, info->si_name, sizeof r->r_name - 1);
	SEG_PUT(r->r_obj_size, info->si_obj_size);
	SEG_PUT(r->r_slot_size, info->si_slot_size);
	SEG_PUT(r->r_align, info->si_align);
	SEG_PUT(r->r_flags, info->si_flags);
	SEG_PUT(r->r_objs_per_slab, info->si_objs_per_slab);
	SEG_PUT(r->r_slab_size, info->si_slab_size);
	SEG_PUT(r->r_mag_max, info->si_mag_max);
	SEG_PUT(r->r_mag_size, info->si_mag_size);
	SEG_PUT(r->r_ctr_index, info->si_ctr_index);
	SEG_PUT(r->r_ctr_base, info->si_ctr_base);
	SEG_PUT(r->r_inuse, 0);
	SEG_PUT(r->r_slabs, 0);
	SEG_PUT(r->r_empty_slabs, 0);
	SEG_PUT(r->r_slabs_created, 0);
	SEG_PUT(r->r_slabs_released, 0);
	SEG_PUT(r->r_alloc_fail, 0);
	SEG_PUT(r->r_depot_objs, 0);
	SEG_PUT(r->r_depot_full, 0);
	SEG_PUT(r->r_depot_empty, 0);
	SEG_PUT(r->r_depot_contended, 0);
	SEG_PUT(r->r_rcu_objs, 0);
	SEG_PUT(r->r_rcu_slabs, 0);
	SEG_PUT(r->r_rcu_peak, 0);
	SEG_PUT(r->r_rcu_waits, 0);
	SEG_PUT(r->r_rcu_freed, 0);
	SEG_PUT(r->r_rcu_cap, info->si_rcu_cap);
	SEG_PUT(r->r_state, SEG_REC_LIVE);
	seg_rec_end(w);

	w->wr_next = seg_recs;
	if (seg_recs != NULL)
		seg_recs->wr_prev = w;
	seg_recs = w;
	return w;
}

/* ---- Fork ---- */

/* Replace the shared mapping [@addr, +@len) by private memory holding the
 * same bytes: a copy made elsewhere, then moved in place (mremap replaces
 * the old mapping in one step, so there is never a hole). Only pages that
 * are resident are copied (the rest read as zeros either way). Returns
 * false, leaving the mapping shared, when there is no memory for a copy. */
static bool seg_privatise(void *addr, size_t len)
{
	size_t page = pgsrc_page_size();
	char *copy = mmap(NULL, len, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (copy == MAP_FAILED)
		return false;
	unsigned char vec[256];
	for (size_t off = 0; off < len;) {
		size_t n = (len - off) / page < sizeof vec ? (len - off) / page : sizeof vec;
		if (mincore((char *)addr + off, n * page, vec) != 0)
			memset(vec, 1, n); /* cannot tell: copy them all */
		for (size_t i = 0; i < n; i++)
			if (vec[i] & 1)
				memcpy(copy + off + i * page, (char *)addr + off + i * page, page);
		off += n * page;
	}
	if (mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr) != addr) {
		munmap(copy, len);
		return false;
	}
	return true;
}

/* Nothing to stop or save: the magazines are private memory. Holding
 * seg_lock keeps records and mappings whole across the fork. */
void seg_atfork_prepare(void)
{
	lock_take(&seg_lock);
}

void seg_atfork_parent(void)
{
	lock_drop(&seg_lock);
}

/* The child: the counters regions become private, the records are dropped
 * (cache.c took them from the caches first), the parent's file let go. */
void seg_atfork_child(void)
{
	bool shared = false;

	while (seg_ctrmaps != NULL) {
		struct seg_ctrmap *m = seg_ctrmaps;
		seg_ctrmaps = m->m_next;
		shared |= !seg_privatise(m->m_addr, m->m_len);
		meta_free(m, sizeof *m);
	}
	while (seg_recs != NULL) {
		struct seg_wrec *w = seg_recs;
		seg_recs = w->wr_next;
		lock_fini(&w->wr_lock);
		meta_free(w, sizeof *w);
	}
	while (seg_chunks != NULL) {
		struct seg_chunk *k = seg_chunks;
		seg_chunks = k->k_next;
		munmap(k->k_tab, k->k_len);
		meta_free(k, sizeof *k);
	}
	struct seg_header *h = seg_hdr;
	__atomic_store_n(&seg_hdr, NULL, __ATOMIC_RELEASE);
	if (h != NULL)
		munmap(h, pgsrc_page_size());
	/* The parent's descriptor, inherited: closed only if it still is it. */
	struct stat st;
	if (seg_fd >= 0 && fstat(seg_fd, &st) == 0 && st.st_dev == seg_dev && st.st_ino == seg_ino)
		close(seg_fd);
	seg_fd = -1;
	seg_pid = 0;      /* the parent's locator is the parent's to remove */
	seg_enabled = -1; /* the child decides for itself */
	seg_why = shared ? "not yet published (fork: some counters still shared with the parent)"
	                 : "not yet published";
	/* Taken by this thread in the prepare handler: released, not
	 * re-initialised (ThreadSanitizer would still count it as held). */
	lock_drop(&seg_lock);
}

/* ---- The registry's entry points ---- */

void seg_configure(uint32_t ncpus, const char *mode)
{
	lock_take(&seg_lock);
	seg_ncpus = ncpus;
	snprintf(seg_mode, sizeof seg_mode, "%s", mode);
	lock_drop(&seg_lock);
}

void *seg_cache_publish(const struct seg_info *info)
{
	int old;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	lock_take(&seg_lock);
	struct seg_wrec *w = seg_publish_locked(info);
	lock_drop(&seg_lock);
	pthread_setcancelstate(old, NULL);
	return w;
}

void seg_cache_retire(void *rec)
{
	struct seg_wrec *w = rec;

	if (w == NULL)
		return;
	lock_take(&seg_lock);
	seg_rec_begin(w);
	SEG_PUT(w->wr_rec->r_state, SEG_REC_FREE);
	seg_rec_end(w);
	if (w->wr_prev != NULL)
		w->wr_prev->wr_next = w->wr_next;
	else
		seg_recs = w->wr_next;
	if (w->wr_next != NULL)
		w->wr_next->wr_prev = w->wr_prev;
	w->wr_chunk->k_used[w->wr_index / 64] &= ~(1ull << (w->wr_index % 64));
	lock_drop(&seg_lock);
	lock_fini(&w->wr_lock);
	meta_free(w, sizeof *w);
}

void seg_mode_changed(const char *mode)
{
	lock_take(&seg_lock);
	snprintf(seg_mode, sizeof seg_mode, "%s", mode);
	struct seg_header *h = seg_hdr;
	if (h != NULL) {
		SEG_PUT(h->h_mode_seq, h->h_mode_seq + 1);
		__atomic_thread_fence(__ATOMIC_RELEASE);
		for (size_t i = 0; i < sizeof h->h_mode; i++)
			SEG_PUT(h->h_mode[i], i + 1 < sizeof h->h_mode ? seg_mode[i] : '\0');
		__atomic_store_n(&h->h_mode_seq, h->h_mode_seq + 1, __ATOMIC_RELEASE);
	}
	lock_drop(&seg_lock);
}

const char *seg_status(void)
{
	lock_take(&seg_lock);
	const char *why = seg_why;
	lock_drop(&seg_lock);
	return why;
}

void seg_before_abort(void)
{
	/* Async-signal-safe: a misuse report is about to abort. No lock: the
	 * path was written once, before seg_pid was set. */
	if (seg_pid != 0 && seg_pid == getpid())
		unlink(seg_loc);
}

/* ---- The arenas' counters ---- */

static bool seg_counters_map(void *addr, size_t len, uint64_t *file_off)
{
	int old;
	bool ok = false;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	lock_take(&seg_lock);
	struct seg_ctrmap *m = NULL;
	if (seg_ready_locked() && (m = meta_alloc(sizeof *m)) != NULL) {
		uint64_t off = seg_grow_locked(len);
		if (off != UINT64_MAX && seg_map_locked(addr, off, len) == addr) {
			m->m_addr = addr;
			m->m_len = len;
			m->m_next = seg_ctrmaps;
			seg_ctrmaps = m;
			m = NULL;
			*file_off = off;
			ok = true;
		}
	}
	meta_free(m, sizeof *m);
	lock_drop(&seg_lock);
	pthread_setcancelstate(old, NULL);
	return ok;
}

const struct arena_counters_ops seg_counters = {
	.ac_map = seg_counters_map,
};

/* ---- Hooks (slab/observe.h) ---- */

static void seg_totals_publish(void)
{
	struct seg_header *h = __atomic_load_n(&seg_hdr, __ATOMIC_ACQUIRE);
	struct pgsrc_totals t;

	if (h == NULL)
		return;
	pgsrc_totals(&t);
	seg_store_max(&h->h_bytes_got, t.pt_got);
	seg_store_max(&h->h_bytes_put, t.pt_put);
}

/* A slot of @cpu starts: readers learn which CPUs have figures. */
static void seg_hook_slot(void *rec, uint32_t cpu, void *page)
{
	struct seg_header *h = __atomic_load_n(&seg_hdr, __ATOMIC_ACQUIRE);

	(void)rec;
	(void)page;
	if (h != NULL && cpu < SEG_MAX_CPUS)
		__atomic_fetch_or(&h->h_cpus_seen[cpu / 64], 1ull << (cpu % 64), __ATOMIC_RELAXED);
}

static void seg_hook_slab(void *rec, const struct slab_counts *sc)
{
	struct seg_wrec *w = rec;
	struct seg_rec *r = w->wr_rec;

	seg_rec_begin(w);
	SEG_PUT(r->r_inuse, sc->sc_inuse);
	SEG_PUT(r->r_slabs, sc->sc_slabs);
	SEG_PUT(r->r_empty_slabs, sc->sc_empty);
	SEG_PUT(r->r_slabs_created, sc->sc_created);
	SEG_PUT(r->r_slabs_released, sc->sc_released);
	SEG_PUT(r->r_alloc_fail, sc->sc_fail);
	seg_rec_end(w);
	seg_totals_publish();
}

static void seg_hook_depot(void *rec, const struct depot_counts *dc)
{
	struct seg_wrec *w = rec;
	struct seg_rec *r = w->wr_rec;

	seg_rec_begin(w);
	SEG_PUT(r->r_depot_objs, dc->dc_objs);
	SEG_PUT(r->r_depot_full, dc->dc_full);
	SEG_PUT(r->r_depot_empty, dc->dc_empty);
	SEG_PUT(r->r_depot_contended, dc->dc_contended);
	SEG_PUT(r->r_mag_size, dc->dc_mag_size);
	seg_rec_end(w);
}

static void seg_hook_rcu(void *rec, const struct rcu_counts *rc)
{
	struct seg_wrec *w = rec;
	struct seg_rec *r = w->wr_rec;

	seg_rec_begin(w);
	SEG_PUT(r->r_rcu_objs, rc->rc_objs);
	SEG_PUT(r->r_rcu_slabs, rc->rc_slabs);
	SEG_PUT(r->r_rcu_peak, rc->rc_peak);
	SEG_PUT(r->r_rcu_waits, rc->rc_waits);
	SEG_PUT(r->r_rcu_freed, rc->rc_freed);
	SEG_PUT(r->r_rcu_cap, rc->rc_cap);
	seg_rec_end(w);
}

static void seg_hook_pages(void *rec)
{
	(void)rec;
	seg_totals_publish();
}

const struct obs_ops seg_obs = {
	.o_slab = seg_hook_slab,
	.o_depot = seg_hook_depot,
	.o_pages = seg_hook_pages,
	.o_slot = seg_hook_slot,
	.o_rcu = seg_hook_rcu,
};
