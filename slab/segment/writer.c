/* SPDX-License-Identifier: MIT */
/* The live statistics segment: publishing this process's caches in a file. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
 * 1. What is published. Every process using uslab writes its caches to
 *    $USLAB_STATS_DIR/uslab.<pid> (default /dev/shm), mode 0600, created at
 *    the first cache creation, unless USLAB_STATS=0. The layout is in
 *    segment.h; reader.c reads it from other processes and trusts none of
 *    it. The writer is an observer (slab/observe.h): the registry
 *    (cache.c) publishes a cache with the figures that never change, and
 *    the layers report the others through the hooks below; the writer
 *    never reads a cache, a slot or a depot.
 *
 * 2. One plain store on the fast path, and nothing to trust. The fast
 *    path copies its commit word (count and hits) to the second page of
 *    each per-CPU slot (struct pcpu_counters, arch/fastpath.h). Those
 *    pages, and only those, come from the file: when a slot starts
 *    (pcpu.c, before its p_cap first becomes non-zero and before anything
 *    counts on it), the slot hook maps the CPU's counters page
 *    MAP_SHARED|MAP_FIXED over the slot's private one, so the fast path
 *    and the slow paths store where they always do and a reader sums the
 *    pages. The
 *    magazines (counts, caps, object pointers) are private anonymous memory
 *    that no other process can reach: whatever another process writes in
 *    the file changes numbers in a report, never what the allocator does
 *    (DESIGN.md §3, invariant 6). A reader takes each magazine's fill from
 *    the copy of its word and splits its hits into allocs and frees
 *    (segment.h). When stats are off, the file cannot
 *    grow, or a map fails, the counters page stays private (that CPU's
 *    figures then stay local).
 *
 * 3. Slow-changing figures (slab and object counts, depot contents,
 *    magazine size) go in a per-cache record. The slab layer reports its
 *    figures before dropping c_slab_lock, the depot before dropping
 *    c_depot_lock: a dozen stores, under a sequence lock (r_seq) so a
 *    reader gets the record's figures from one moment. Both may report at
 *    once, so the sequence is serialised by wr_lock, a leaf lock nobody
 *    waits on for long. The slow-path counters live on the counters pages
 *    beside the fast path's, so they need no publishing step. Hence at
 *    quiescence the file says exactly what uslab_cache_stats() says.
 *
 * 4. Space. The file grows by fallocate() at its end, in page multiples;
 *    existing mappings never move. fallocate (not ftruncate) reserves the
 *    tmpfs pages up front, so a full /dev/shm is an error at create time
 *    (the cache falls back to a private region) and never a SIGBUS on the
 *    fast path. Each published cache gets h_ncpus counters pages at
 *    create (mapped later, slot by slot). A destroyed cache's region is
 *    hole-punched and reused for a later region of the same length. Records are claimed from chained
 *    table chunks; which records are in use is tracked privately, never
 *    read back from the file.
 *
 * 5. Fork. The magazines are private memory, so the child simply has its
 *    copy. Only the counters pages are shared: the child handler (single
 *    threaded) replaces each page this process mapped from the file by a
 *    private anonymous page holding the same counters (copy, MAP_FIXED,
 *    copy back), so the child's hits never show in the parent's segment.
 *    The child stops publishing the caches it inherited (their numbers are
 *    the parent's record, and a child that execs would otherwise leave a
 *    segment that looks alive under the new program); caches the child
 *    creates later go to a segment of its own. The prepare handler only
 *    holds seg_lock, so no record or page is half made at the fork.
 * 6. Cleanup. The file is created under a temporary name and renamed into
 *    place once its header is written, so readers never see a half-made
 *    header; it is unlinked at normal exit (atexit) by the process that
 *    created it. Segments of processes that died without exiting are
 *    recognised by uslab_stats_list() (pid gone, or a different start time
 *    in /proc/<pid>/stat) and removed.
 *
 * 7. Trust. The writer never reads back what it published to make a
 *    decision: offsets, record ownership, sequence numbers and which pages
 *    are shared are kept in private memory, and the counters pages only
 *    ever feed statistics. A process that can write the file (only this
 *    user: it is 0600 in a sticky directory) can falsify the figures, not
 *    the allocator.
 *
 * Lock order: seg_lock comes after every cache lock (cache.c §4): fork
 * takes it last, and the slot hook takes it under c_drain_lock. wr_lock is
 * a leaf, taken with c_slab_lock, c_depot_lock or seg_lock held.
 */

/* ---- State ---- */

/* One chunk of the record table, mapped. */
struct seg_chunk {
	struct seg_chunk *k_next;
	struct seg_table *k_tab;
	uint64_t k_off, k_len;
	uint64_t k_used; /* bit i: record i claimed (private truth) */
	uint32_t k_nrec;
};

/* A punched region of the file, free for a region of the same length. */
struct seg_hole {
	struct seg_hole *o_next;
	uint64_t o_off, o_len;
};

/* A published cache (writer side, private): what was published, and
 * which counters pages the file shares. */
struct seg_wrec {
	struct seg_wrec *wr_next, *wr_prev; /* under seg_lock */
	struct seg_rec *wr_rec;
	struct seg_chunk *wr_chunk;
	uint32_t wr_index;         /* record index in wr_chunk */
	uint32_t wr_ncpus;         /* counters pages of the region */
	uint64_t wr_off, wr_len;   /* the counters region in the file */
	void **wr_pages;           /* [i]: slot i's counters page, mapped from the
	                          * file (under seg_lock); NULL while private */
	struct uslab_lock wr_lock; /* serialises the writers of wr_rec (leaf) */
	uint32_t wr_seq;           /* r_seq as written, under wr_lock */
};

static struct uslab_lock seg_lock = USLAB_LOCK_INITIALIZER; /* all state below */
static int seg_enabled = -1; /* -1 undecided, 0 off (or failed), 1 on */
static int seg_fd = -1;      /* the file, while this process publishes */
static pid_t seg_pid;        /* the process that created seg_path */
static char seg_path[PATH_MAX];
static struct seg_header *seg_hdr; /* read without the lock by seg_totals_publish */
static uint64_t seg_end;           /* file size */
static struct seg_chunk *seg_chunks;
static struct seg_hole *seg_holes;
static struct seg_wrec *seg_recs;
static uint64_t seg_next_id;
static bool seg_atexit_set;

#define SEG_PUT(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* ---- Helpers ---- */

static uint64_t seg_round_page(uint64_t v)
{
	uint64_t p = pgsrc_page_size();
	return (v + p - 1) & ~(p - 1);
}

/* Reserve @len bytes at the end of the file; returns the offset, or
 * UINT64_MAX when the file cannot grow (ENOSPC, quota). */
static uint64_t seg_grow_locked(uint64_t len)
{
	uint64_t off = seg_end;

	ASSERT_HELD(&seg_lock);
	if (len > (uint64_t)INT64_MAX - off)
		return UINT64_MAX;
	if (fallocate(seg_fd, 0, (off_t)off, (off_t)len) != 0) {
		if (errno != EOPNOTSUPP || ftruncate(seg_fd, (off_t)(off + len)) != 0)
			return UINT64_MAX;
	}
	seg_end = off + len;
	return off;
}

static void *seg_map_locked(uint64_t off, uint64_t len)
{
	ASSERT_HELD(&seg_lock);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, seg_fd, (off_t)off);
	return p == MAP_FAILED ? NULL : p;
}

/* Append a record table chunk and link it after the last one. */
static struct seg_chunk *seg_chunk_add_locked(void)
{
	uint64_t len = seg_round_page(SEG_CHUNK_SIZE);
	struct seg_chunk *k = meta_alloc(sizeof *k);

	ASSERT_HELD(&seg_lock);
	if (k == NULL)
		return NULL;
	uint64_t off = seg_grow_locked(len);
	if (off == UINT64_MAX || (k->k_tab = seg_map_locked(off, len)) == NULL) {
		meta_free(k, sizeof *k);
		return NULL;
	}
	k->k_off = off;
	k->k_len = len;
	k->k_nrec = (uint32_t)((len - sizeof(struct seg_table)) / sizeof(struct seg_rec));
	if (k->k_nrec > 64)
		k->k_nrec = 64; /* k_used has 64 bits */
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

static void seg_exit(void)
{
	if (seg_pid != 0 && seg_pid == getpid())
		unlink(seg_path);
}

/* Create this process's file: header and first chunk under a temporary
 * name, then renamed into place (replacing a dead namesake's file). */
static int seg_open_locked(uint32_t ncpus, const char *mode)
{
	char tmp[PATH_MAX];
	pid_t pid = getpid();
	size_t page = pgsrc_page_size();

	ASSERT_HELD(&seg_lock);
	if (snprintf(seg_path, sizeof seg_path, "%s/uslab.%d", seg_dir(), (int)pid) >=
	            (int)sizeof seg_path ||
	    snprintf(tmp, sizeof tmp, "%s.new", seg_path) >= (int)sizeof tmp)
		return -1;
	unlink(tmp); /* left by a dead process that had our pid */
	seg_fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (seg_fd < 0)
		return -1;
	struct seg_header *h = NULL, h0;
	seg_end = 0;
	/* The header is written before the rename and mapped only after it:
	 * valgrind 3.19 aborts (aspacem get_refcount) on a mapping made after
	 * the file it maps was renamed. */
	memset(&h0, 0, sizeof h0);
	memcpy(h0.h_magic, SEG_MAGIC, sizeof h0.h_magic);
	h0.h_version = USLAB_SEGMENT_VERSION;
	h0.h_hdr_size = sizeof h0;
	h0.h_rec_size = sizeof(struct seg_rec);
	h0.h_ctr_size = sizeof(struct pcpu_counters);
	h0.h_ncpus = ncpus;
	h0.h_page_size = (uint32_t)page;
	h0.h_pid = pid;
	h0.h_start_time = seg_proc_start_time(pid);
	snprintf(h0.h_mode, sizeof h0.h_mode, "%s", mode);
	bool named = false;
	if (fchmod(seg_fd, 0600) != 0 || seg_grow_locked(page) != 0 ||
	    pwrite(seg_fd, &h0, sizeof h0, 0) != (ssize_t)sizeof h0 || rename(tmp, seg_path) != 0)
		goto fail;
	named = true;
	if ((h = seg_map_locked(0, page)) == NULL)
		goto fail;
	seg_hdr = h;
	if (seg_chunk_add_locked() == NULL) /* adds nothing when it fails */
		goto fail;
	seg_pid = pid;
	if (!seg_atexit_set)
		seg_atexit_set = atexit(seg_exit) == 0;
	return 0;
fail:
	seg_hdr = NULL;
	if (h != NULL)
		munmap(h, page);
	unlink(named ? seg_path : tmp);
	close(seg_fd);
	seg_fd = -1;
	return -1;
}

/* Claim a free record; NULL when no chunk can be added. */
static struct seg_chunk *seg_rec_claim_locked(uint32_t *index)
{
	struct seg_chunk *k;

	ASSERT_HELD(&seg_lock);
	for (k = seg_chunks; k != NULL; k = k->k_next)
		if (k->k_nrec == 64 ? ~k->k_used != 0 : k->k_used + 1 < (1ull << k->k_nrec))
			break;
	if (k == NULL && (k = seg_chunk_add_locked()) == NULL)
		return NULL;
	uint32_t i = (uint32_t)__builtin_ctzll(~k->k_used);
	k->k_used |= 1ull << i;
	*index = i;
	return k;
}

static struct seg_rec *seg_rec_at(const struct seg_chunk *k, uint32_t i)
{
	return (struct seg_rec *)((char *)k->k_tab + sizeof(struct seg_table)) + i;
}

/* A zeroed region of @len bytes in the file: a hole of that length, or
 * new space. UINT64_MAX when neither. */
static uint64_t seg_region_get_locked(uint64_t len)
{
	ASSERT_HELD(&seg_lock);
	for (struct seg_hole **pp = &seg_holes; *pp != NULL; pp = &(*pp)->o_next) {
		struct seg_hole *o = *pp;
		if (o->o_len != len)
			continue;
		if (fallocate(seg_fd, 0, (off_t)o->o_off, (off_t)len) != 0 && errno != EOPNOTSUPP)
			return UINT64_MAX;
		uint64_t off = o->o_off;
		*pp = o->o_next;
		meta_free(o, sizeof *o);
		return off;
	}
	return seg_grow_locked(len);
}

/* Give a region back: its pages are freed (reads give zeros) and it is
 * kept for reuse. */
static void seg_region_put_locked(uint64_t off, uint64_t len)
{
	struct seg_hole *o = meta_alloc(sizeof *o);

	ASSERT_HELD(&seg_lock);
	if (fallocate(seg_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) !=
	            0 ||
	    o == NULL) {
		meta_free(o, sizeof *o); /* not zeroed, or no memory to remember it: never reused */
		return;
	}
	o->o_off = off;
	o->o_len = len;
	o->o_next = seg_holes;
	seg_holes = o;
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

/* Store @v in @field unless it holds more already (monotonic totals). */
static void seg_store_max(uint64_t *field, uint64_t v)
{
	uint64_t old = __atomic_load_n(field, __ATOMIC_RELAXED);
	while (old < v && !__atomic_compare_exchange_n(field, &old, v, true, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}

/* Publish @info in a new record with a counters region of si_ncpus pages;
 * NULL when the cache stays unpublished. */
static struct seg_wrec *seg_publish_locked(const struct seg_info *info)
{
	ASSERT_HELD(&seg_lock);
	if (seg_enabled < 0) {
		const char *env = getenv("USLAB_STATS");
		seg_enabled = env == NULL || strcmp(env, "0") != 0;
	}
	if (seg_enabled == 0)
		return NULL;
	if (seg_fd < 0 && seg_open_locked(info->si_ncpus, info->si_mode) != 0) {
		seg_enabled = 0; /* do not retry at every create */
		return NULL;
	}
	struct seg_wrec *w = meta_alloc(sizeof *w);
	if (w == NULL)
		return NULL;
	w->wr_ncpus = info->si_ncpus;
	w->wr_pages = meta_alloc(w->wr_ncpus * sizeof *w->wr_pages);
	if (w->wr_pages == NULL)
		goto fail;
	w->wr_chunk = seg_rec_claim_locked(&w->wr_index);
	if (w->wr_chunk == NULL)
		goto fail;
	/* Zeroed: new space, or a hole that was punched (only those are kept). */
	uint64_t len = (uint64_t)w->wr_ncpus * pgsrc_page_size();
	w->wr_off = seg_region_get_locked(len);
	if (w->wr_off == UINT64_MAX)
		goto fail_rec;
	w->wr_len = len;
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
	SEG_PUT(r->r_pad0, 0);
	SEG_PUT(r->r_ctr_off, w->wr_off);
	SEG_PUT(r->r_ctr_len, len);
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
	SEG_PUT(r->r_state, SEG_REC_LIVE);
	seg_rec_end(w);

	w->wr_next = seg_recs;
	if (seg_recs != NULL)
		seg_recs->wr_prev = w;
	seg_recs = w;
	return w;

fail_rec:
	w->wr_chunk->k_used &= ~(1ull << w->wr_index);
fail:
	meta_free(w->wr_pages, w->wr_ncpus * sizeof *w->wr_pages);
	meta_free(w, sizeof *w);
	return NULL;
}

/* Make @page (PCPU_COUNTERS_OFF bytes) private anonymous memory again,
 * holding what it holds. Only where nothing else touches it: the fork
 * child (single-threaded), or a page nothing has stored on yet. False when
 * the kernel refused the mapping (the page may be gone). */
static bool seg_page_privatise(void *page, bool keep)
{
	static uint64_t save[PCPU_COUNTERS_OFF / sizeof(uint64_t)];

	if (keep)
		memcpy(save, page, sizeof save);
	void *p = mmap(page, PCPU_COUNTERS_OFF, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	if (p != page)
		return false;
	if (keep)
		memcpy(page, save, sizeof save);
	return true;
}

/* ---- Fork ---- */

/* Nothing to stop or save: the magazines are private memory. Holding
 * seg_lock keeps records and counters pages whole across the fork. */
void seg_atfork_prepare(void)
{
	lock_take(&seg_lock);
}

void seg_atfork_parent(void)
{
	lock_drop(&seg_lock);
}

/* The child: every counters page shared with the file becomes private, the
 * records are dropped (cache.c took them from the caches first), and the
 * parent's file is let go. */
void seg_atfork_child(void)
{
	while (seg_recs != NULL) {
		struct seg_wrec *w = seg_recs;
		seg_recs = w->wr_next;
		/* Every listed record's pages are mapped (cache.c retires a
		 * record before unmapping the slots), even those of a cache that
		 * a thread the child lacks was creating or destroying. */
		for (uint32_t i = 0; i < w->wr_ncpus; i++)
			if (w->wr_pages[i] != NULL)
				VERIFY(seg_page_privatise(w->wr_pages[i], true));
		lock_fini(&w->wr_lock);
		meta_free(w->wr_pages, w->wr_ncpus * sizeof *w->wr_pages);
		meta_free(w, sizeof *w);
	}
	while (seg_chunks != NULL) {
		struct seg_chunk *k = seg_chunks;
		seg_chunks = k->k_next;
		munmap(k->k_tab, k->k_len);
		meta_free(k, sizeof *k);
	}
	while (seg_holes != NULL) {
		struct seg_hole *o = seg_holes;
		seg_holes = o->o_next;
		meta_free(o, sizeof *o);
	}
	struct seg_header *h = seg_hdr;
	__atomic_store_n(&seg_hdr, NULL, __ATOMIC_RELEASE);
	if (h != NULL)
		munmap(h, pgsrc_page_size());
	if (seg_fd >= 0)
		close(seg_fd);
	seg_fd = -1;
	seg_pid = 0; /* the parent's file is the parent's to remove */
	if (seg_enabled == 0)
		seg_enabled = -1; /* a failure in the parent need not hold here */
	/* Taken by this thread in the prepare handler: released, not
	 * re-initialised (ThreadSanitizer would still count it as held, and
	 * the child now takes it whenever a slot starts). */
	lock_drop(&seg_lock);
}

/* ---- The registry's entry points ---- */

void *seg_cache_publish(const struct seg_info *info)
{
	lock_take(&seg_lock);
	struct seg_wrec *w = seg_publish_locked(info);
	lock_drop(&seg_lock);
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
	w->wr_chunk->k_used &= ~(1ull << w->wr_index);
	/* The caller unmaps the slots with their shared pages right after; no
	 * thread uses the cache any more, so nothing writes them meanwhile. */
	seg_region_put_locked(w->wr_off, w->wr_len);
	lock_drop(&seg_lock);
	lock_fini(&w->wr_lock);
	meta_free(w->wr_pages, w->wr_ncpus * sizeof *w->wr_pages);
	meta_free(w, sizeof *w);
}

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

/* Slot @cpu starts: map its counters page from the file over @page. On
 * failure the page stays private (that CPU's figures stay local). */
static void seg_hook_slot(void *rec, uint32_t cpu, void *page)
{
	struct seg_wrec *w = rec;

	/* Only where the slot's second 4 KiB is a page of its own. */
	if (cpu >= w->wr_ncpus || pgsrc_page_size() != PCPU_COUNTERS_OFF)
		return;
	lock_take(&seg_lock);
	if (seg_fd >= 0 && w->wr_pages[cpu] == NULL) {
		void *p = mmap(page, PCPU_COUNTERS_OFF, PROT_READ | PROT_WRITE,
		               MAP_SHARED | MAP_FIXED, seg_fd,
		               (off_t)(w->wr_off + (uint64_t)cpu * PCPU_COUNTERS_OFF));
		if (p == page)
			w->wr_pages[cpu] = page;
		else
			/* A failed MAP_FIXED may have unmapped the old page: put a
			 * private one back (the counters were zero, nothing ran). */
			VERIFY(seg_page_privatise(page, false));
	}
	lock_drop(&seg_lock);
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
};
