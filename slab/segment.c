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

#include "internal.h"
#include "segment.h"
#include "uslab/stats.h"

/*
 * Design
 *
 * 1. What is published. Every process using uslab writes its caches to
 *    $USLAB_STATS_DIR/uslab.<pid> (default /dev/shm), mode 0600, created at
 *    the first cache creation, unless USLAB_STATS=0. The layout is in
 *    segment.h; slab/reader.c reads it from other processes and trusts
 *    none of it.
 *
 * 2. One plain store on the fast path, and nothing to trust. The fast
 *    path copies its commit word (count and hits) to the second page of
 *    each per-CPU slot (struct pcpu_counters, arch/fastpath.h). Those
 *    pages, and only those, come from the file: when a slot starts
 *    (pcpu.c, before its p_cap first becomes non-zero),
 *    seg_counters_share() maps the CPU's counters page
 *    MAP_SHARED|MAP_FIXED over the slot's private one, so the fast path
 *    stores where it always does and a reader sums the pages. The
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
 *    magazine size, slow-path counters) go in a per-cache record. The slab
 *    layer publishes its figures before dropping c_slab_lock, the depot
 *    before dropping c_depot_lock: a dozen stores, under a sequence lock
 *    (r_seq) so a reader gets the record's figures from one moment. Both
 *    writers may run at once, so the sequence is serialised by sc_lock,
 *    a leaf lock nobody waits on for long. The slow-path counters are the
 *    cache's own relaxed atomics, placed in the record (c_slow_allocs and
 *    c_slow_frees point there), so they need no publishing step. Hence at
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
 * takes it last. sc_lock is a leaf, taken with c_slab_lock, c_depot_lock or
 * seg_lock held.
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

/* A published cache (writer side, private). */
struct seg_cache {
	struct seg_cache *sc_next, *sc_prev; /* under seg_lock */
	struct uslab_cache *sc_cache;
	struct seg_rec *sc_rec;
	struct seg_chunk *sc_chunk;
	uint32_t sc_index;        /* record index in sc_chunk */
	uint64_t sc_off, sc_len;  /* the counters region in the file */
	unsigned char *sc_shared; /* [i]: slot i's counters page is mapped from the
	                           * file (under seg_lock) */
	pthread_mutex_t sc_lock;  /* serialises the writers of sc_rec (leaf) */
	uint32_t sc_seq;          /* r_seq as written, under sc_lock */
};

static pthread_mutex_t seg_lock = PTHREAD_MUTEX_INITIALIZER; /* all state below */
static int seg_enabled = -1; /* -1 undecided, 0 off (or failed), 1 on */
static int seg_fd = -1;      /* the file, while this process publishes */
static pid_t seg_pid;        /* the process that created seg_path */
static char seg_path[PATH_MAX];
static struct seg_header *seg_hdr; /* read without the lock by seg_totals_publish */
static uint64_t seg_end;           /* file size */
static struct seg_chunk *seg_chunks;
static struct seg_hole *seg_holes;
static struct seg_cache *seg_caches;
static uint64_t seg_next_id;
static bool seg_atexit_set;

#define SEG_PUT(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* ---- Helpers ---- */

static uint64_t seg_round_page(uint64_t v)
{
	uint64_t p = pgsrc_page_size();
	return (v + p - 1) & ~(p - 1);
}

/* The stats directory: USLAB_STATS_DIR (ignored in setuid programs). */
static const char *seg_dir(void)
{
	const char *d = secure_getenv("USLAB_STATS_DIR");
	return d != NULL && d[0] != '\0' ? d : "/dev/shm";
}

/* Reserve @len bytes at the end of the file; returns the offset, or
 * UINT64_MAX when the file cannot grow (ENOSPC, quota). */
static uint64_t seg_grow_locked(uint64_t len)
{
	uint64_t off = seg_end;

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
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, seg_fd, (off_t)off);
	return p == MAP_FAILED ? NULL : p;
}

/* Append a record table chunk and link it after the last one. */
static struct seg_chunk *seg_chunk_add_locked(void)
{
	uint64_t len = seg_round_page(SEG_CHUNK_SIZE);
	struct seg_chunk *k = calloc(1, sizeof *k);
	if (k == NULL)
		return NULL;
	uint64_t off = seg_grow_locked(len);
	if (off == UINT64_MAX || (k->k_tab = seg_map_locked(off, len)) == NULL) {
		free(k);
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
static int seg_open_locked(void)
{
	char tmp[PATH_MAX];
	pid_t pid = getpid();
	size_t page = pgsrc_page_size();

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
	h0.h_ncpus = pcpu_slots();
	h0.h_page_size = (uint32_t)page;
	h0.h_pid = pid;
	h0.h_start_time = seg_proc_start_time(pid);
	snprintf(h0.h_mode, sizeof h0.h_mode, "%s", uslab_mode());
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
	for (struct seg_hole **pp = &seg_holes; *pp != NULL; pp = &(*pp)->o_next) {
		struct seg_hole *o = *pp;
		if (o->o_len != len)
			continue;
		if (fallocate(seg_fd, 0, (off_t)o->o_off, (off_t)len) != 0 && errno != EOPNOTSUPP)
			return UINT64_MAX;
		uint64_t off = o->o_off;
		*pp = o->o_next;
		free(o);
		return off;
	}
	return seg_grow_locked(len);
}

/* Give a region back: its pages are freed (reads give zeros) and it is
 * kept for reuse. */
static void seg_region_put_locked(uint64_t off, uint64_t len)
{
	struct seg_hole *o = malloc(sizeof *o);

	if (fallocate(seg_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) !=
	            0 ||
	    o == NULL) {
		free(o); /* not zeroed, or no memory to remember it: never reused */
		return;
	}
	o->o_off = off;
	o->o_len = len;
	o->o_next = seg_holes;
	seg_holes = o;
}

static void seg_rec_begin(struct seg_cache *sc)
{
	pthread_mutex_lock(&sc->sc_lock);
	SEG_PUT(sc->sc_rec->r_seq, ++sc->sc_seq);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void seg_rec_end(struct seg_cache *sc)
{
	__atomic_store_n(&sc->sc_rec->r_seq, ++sc->sc_seq, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sc->sc_lock);
}

/* Store @v in @field unless it holds more already (monotonic totals). */
static void seg_store_max(uint64_t *field, uint64_t v)
{
	uint64_t old = __atomic_load_n(field, __ATOMIC_RELAXED);
	while (old < v && !__atomic_compare_exchange_n(field, &old, v, true, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}

/* Publish @c in a new record with a counters region of @len bytes; false
 * when the cache stays unpublished. */
static bool seg_publish_locked(struct uslab_cache *c, uint64_t len)
{
	if (seg_enabled < 0) {
		const char *env = getenv("USLAB_STATS");
		seg_enabled = env == NULL || strcmp(env, "0") != 0;
	}
	if (seg_enabled == 0)
		return false;
	if (seg_fd < 0 && seg_open_locked() != 0) {
		seg_enabled = 0; /* do not retry at every create */
		return false;
	}
	struct seg_cache *sc = calloc(1, sizeof *sc);
	if (sc == NULL)
		return false;
	sc->sc_shared = calloc(pcpu_slots(), 1);
	if (sc->sc_shared == NULL)
		goto fail;
	sc->sc_chunk = seg_rec_claim_locked(&sc->sc_index);
	if (sc->sc_chunk == NULL)
		goto fail;
	/* Zeroed: new space, or a hole that was punched (only those are kept). */
	sc->sc_off = seg_region_get_locked(len);
	if (sc->sc_off == UINT64_MAX)
		goto fail_rec;
	sc->sc_len = len;
	sc->sc_cache = c;
	sc->sc_rec = seg_rec_at(sc->sc_chunk, sc->sc_index);
	pthread_mutex_init(&sc->sc_lock, NULL);
	sc->sc_seq = __atomic_load_n(&sc->sc_rec->r_seq, __ATOMIC_RELAXED) & ~1u;

	struct seg_rec *r = sc->sc_rec;
	seg_rec_begin(sc);
	SEG_PUT(r->r_id, ++seg_next_id);
	memcpy(r->r_name, c->c_name, sizeof r->r_name);
	r->r_name[sizeof r->r_name - 1] = '\0';
	SEG_PUT(r->r_obj_size, c->c_size);
	SEG_PUT(r->r_slot_size, c->c_slot);
	SEG_PUT(r->r_align, c->c_align);
	SEG_PUT(r->r_flags, c->c_flags & USLAB_FLAGS_MASK);
	SEG_PUT(r->r_objs_per_slab, c->c_slab_objs);
	SEG_PUT(r->r_slab_size, c->c_slab_size);
	SEG_PUT(r->r_mag_max, c->c_mag_max);
	SEG_PUT(r->r_mag_size, c->c_mag_size);
	SEG_PUT(r->r_pad0, 0);
	SEG_PUT(r->r_ctr_off, sc->sc_off);
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
	SEG_PUT(r->r_slow_allocs, 0);
	SEG_PUT(r->r_slow_frees, 0);
	SEG_PUT(r->r_state, SEG_REC_LIVE);
	seg_rec_end(sc);

	c->c_seg = sc;
	c->c_slow_allocs = &r->r_slow_allocs;
	c->c_slow_frees = &r->r_slow_frees;
	sc->sc_next = seg_caches;
	if (seg_caches != NULL)
		seg_caches->sc_prev = sc;
	seg_caches = sc;
	return true;

fail_rec:
	sc->sc_chunk->k_used &= ~(1ull << sc->sc_index);
fail:
	free(sc->sc_shared);
	free(sc);
	return false;
}

/* ---- Fork ---- */

/* Slot @i's counters page in @c's region. */
static void *seg_counters_page(const struct uslab_cache *c, uint32_t i)
{
	return c->c_pcpu + ((size_t)i << PCPU_SHIFT) + PCPU_COUNTERS_OFF;
}

/* Nothing to stop or save: the magazines are private memory. Holding
 * seg_lock keeps records and counters pages whole across the fork. */
void seg_atfork_prepare(void)
{
	pthread_mutex_lock(&seg_lock);
}

void seg_atfork_parent(void)
{
	pthread_mutex_unlock(&seg_lock);
}

/* Replace the shared counters page at @page by a private one with the same
 * contents. The child is single-threaded here: nothing else touches it. */
static void seg_page_privatise(void *page)
{
	static uint64_t save[PCPU_COUNTERS_OFF / sizeof(uint64_t)];

	memcpy(save, page, sizeof save);
	void *p = mmap(page, PCPU_COUNTERS_OFF, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	VERIFY(p == page); /* a shared page must not survive in the child */
	memcpy(page, save, sizeof save);
}

/* The child: every counters page shared with the file becomes private, the
 * inherited caches are unpublished, and the parent's file is let go. */
void seg_atfork_child(void)
{
	uint32_t n = pcpu_slots();

	while (seg_caches != NULL) {
		struct seg_cache *sc = seg_caches;
		struct uslab_cache *c = sc->sc_cache;
		seg_caches = sc->sc_next;
		/* Every listed cache has its region mapped (pcpu.c retires the
		 * record before unmapping), even one that a thread the child
		 * lacks was creating or destroying. */
		for (uint32_t i = 0; i < n; i++)
			if (sc->sc_shared[i])
				seg_page_privatise(seg_counters_page(c, i));
		c->c_slow_own[0] = __atomic_load_n(c->c_slow_allocs, __ATOMIC_RELAXED);
		c->c_slow_own[1] = __atomic_load_n(c->c_slow_frees, __ATOMIC_RELAXED);
		c->c_slow_allocs = &c->c_slow_own[0];
		c->c_slow_frees = &c->c_slow_own[1];
		c->c_seg = NULL;
		pthread_mutex_destroy(&sc->sc_lock);
		free(sc->sc_shared);
		free(sc);
	}
	while (seg_chunks != NULL) {
		struct seg_chunk *k = seg_chunks;
		seg_chunks = k->k_next;
		munmap(k->k_tab, k->k_len);
		free(k);
	}
	while (seg_holes != NULL) {
		struct seg_hole *o = seg_holes;
		seg_holes = o->o_next;
		free(o);
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
	pthread_mutex_unlock(&seg_lock);
}

/* ---- Entry points for the layers ---- */

void seg_cache_publish(struct uslab_cache *c)
{
	c->c_slow_allocs = &c->c_slow_own[0];
	c->c_slow_frees = &c->c_slow_own[1];
	c->c_seg = NULL;
	pthread_mutex_lock(&seg_lock);
	seg_publish_locked(c, (uint64_t)pcpu_slots() * pgsrc_page_size());
	pthread_mutex_unlock(&seg_lock);
}

void seg_counters_share(struct uslab_cache *c, uint32_t i)
{
	/* c_seg changes only at destroy (no concurrent use) and in the fork
	 * child (single-threaded). */
	struct seg_cache *sc = c->c_seg;

	/* The page goes over the slot's second 4 KiB: only where that is a
	 * page of its own. */
	if (sc == NULL || pgsrc_page_size() != PCPU_COUNTERS_OFF)
		return;
	pthread_mutex_lock(&seg_lock);
	if (seg_fd >= 0 && !sc->sc_shared[i]) {
		void *page = seg_counters_page(c, i);
		void *p = mmap(page, PCPU_COUNTERS_OFF, PROT_READ | PROT_WRITE,
		               MAP_SHARED | MAP_FIXED, seg_fd,
		               (off_t)(sc->sc_off + (uint64_t)i * PCPU_COUNTERS_OFF));
		if (p == page) {
			sc->sc_shared[i] = 1;
		} else {
			/* A failed MAP_FIXED may have unmapped the old page: put a
			 * private one back (the counters were zero, the slot never
			 * ran). */
			p = mmap(page, PCPU_COUNTERS_OFF, PROT_READ | PROT_WRITE,
			         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
			VERIFY(p == page);
		}
	}
	pthread_mutex_unlock(&seg_lock);
}

void seg_cache_retire(struct uslab_cache *c)
{
	struct seg_cache *sc = c->c_seg;

	if (sc == NULL)
		return;
	pthread_mutex_lock(&seg_lock);
	seg_rec_begin(sc);
	SEG_PUT(sc->sc_rec->r_state, SEG_REC_FREE);
	seg_rec_end(sc);
	c->c_slow_own[0] = __atomic_load_n(c->c_slow_allocs, __ATOMIC_RELAXED);
	c->c_slow_own[1] = __atomic_load_n(c->c_slow_frees, __ATOMIC_RELAXED);
	c->c_slow_allocs = &c->c_slow_own[0];
	c->c_slow_frees = &c->c_slow_own[1];
	c->c_seg = NULL;
	if (sc->sc_prev != NULL)
		sc->sc_prev->sc_next = sc->sc_next;
	else
		seg_caches = sc->sc_next;
	if (sc->sc_next != NULL)
		sc->sc_next->sc_prev = sc->sc_prev;
	sc->sc_chunk->k_used &= ~(1ull << sc->sc_index);
	/* The caller unmaps the region with its shared pages right after; no
	 * thread uses the cache any more, so nothing writes them meanwhile. */
	seg_region_put_locked(sc->sc_off, sc->sc_len);
	pthread_mutex_unlock(&seg_lock);
	pthread_mutex_destroy(&sc->sc_lock);
	free(sc->sc_shared);
	free(sc);
}

void seg_totals_publish(void)
{
	struct seg_header *h = __atomic_load_n(&seg_hdr, __ATOMIC_ACQUIRE);
	struct pgsrc_totals t;

	if (h == NULL)
		return;
	pgsrc_totals(&t);
	seg_store_max(&h->h_bytes_got, t.pt_got);
	seg_store_max(&h->h_bytes_put, t.pt_put);
}

void seg_slab_publish_locked(struct uslab_cache *c)
{
	struct seg_cache *sc = c->c_seg;

	if (sc == NULL)
		return;
	struct seg_rec *r = sc->sc_rec;
	seg_rec_begin(sc);
	SEG_PUT(r->r_inuse, c->c_inuse);
	SEG_PUT(r->r_slabs, c->c_slabs);
	SEG_PUT(r->r_empty_slabs, c->c_empty_slabs);
	SEG_PUT(r->r_slabs_created, c->c_slabs_created);
	SEG_PUT(r->r_slabs_released, c->c_slabs_released);
	SEG_PUT(r->r_alloc_fail, c->c_alloc_fail);
	seg_rec_end(sc);
	seg_totals_publish();
}

void seg_depot_publish_locked(struct uslab_cache *c)
{
	struct seg_cache *sc = c->c_seg;

	if (sc == NULL)
		return;
	struct seg_rec *r = sc->sc_rec;
	seg_rec_begin(sc);
	SEG_PUT(r->r_depot_objs, c->c_depot_objs);
	SEG_PUT(r->r_depot_full, c->c_nfull);
	SEG_PUT(r->r_depot_empty, c->c_nempty);
	SEG_PUT(r->r_depot_contended, c->c_depot_contended);
	SEG_PUT(r->r_mag_size, __atomic_load_n(&c->c_mag_size, __ATOMIC_RELAXED));
	seg_rec_end(sc);
}
