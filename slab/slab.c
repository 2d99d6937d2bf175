/* SPDX-License-Identifier: MIT */
/* The slab layer: carving size-aligned page blocks into objects. */
#include "config.h"

#include <errno.h>
#include <string.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "internal.h"
#include "sanitize.h"

/* LeakSanitizer does not scan memory it did not allocate: register slabs as
 * root regions, so a malloc'd block reachable only from a uslab object is
 * not reported as leaked. */
#if defined(__SANITIZE_ADDRESS__)
/* LSan's lock: a signal handler that interrupted it must not take it
 * again (free_rcu's slow path in a handler makes slabs): busy meanwhile. */
#define SLAB_LSAN_ROOT(p, n)                                                                       \
	(pgsrc_busy_enter(), __lsan_register_root_region((p), (n)), pgsrc_busy_leave())
#define SLAB_LSAN_UNROOT(p, n)                                                                     \
	(pgsrc_busy_enter(), __lsan_unregister_root_region((p), (n)), pgsrc_busy_leave())
#else
#define SLAB_LSAN_ROOT(p, n) ((void)(p), (void)(n))
#define SLAB_LSAN_UNROOT(p, n) ((void)(p), (void)(n))
#endif

/*
 * Design
 *
 * 1. A slab is one block of c_slab_size bytes (a power of two) from the
 *    cache's page source, aligned to its size, holding objects only: object
 *    0 sits at a colour offset that cycles from slab to slab in cache-line
 *    steps through the tail space the objects leave over, so equal-index
 *    objects of different slabs do not all fall on the same cache sets. The
 *    header (struct slab, with its free bitmap) lives apart, in the
 *    library's guarded metadata (slab/meta.c), and the slab map
 *    (slab/slabmap.c) leads from any address to it. So an overrun of the
 *    last object of a slab reaches the next block's objects at most, never
 *    a list link or a bitmap that the allocator would trust, and a pointer
 *    that is no object is told apart by a lookup, not a dereference.
 *
 * 2. Free objects are recorded in the header's bitmap, one bit per
 *    object, never in the objects: constructed state survives free (Bonwick
 *    §2), a bit already set on free is a double free, and the cost is one
 *    bit per object (24-byte objects: 0.5%). Allocation takes the lowest free
 *    bits, starting from a hint word, so a fresh slab is used front to back
 *    and its pages are touched in order, only as objects are handed out.
 *
 * 3. Lists: partial slabs sit in SLAB_BUCKETS buckets by fullness and
 *    allocation takes from the fullest non-empty bucket (a bitmask finds it
 *    in O(1)), so frees concentrate in the emptiest slabs and those become
 *    empty. Empty slabs are kept for reuse by their working set (Bonwick &
 *    Adams §3.7, applied to slabs): the slab layer notes the fewest empty
 *    slabs it saw during an interval of SLAB_DECAY_NS, and when the
 *    interval ends, that many (empty all through it) are released: every
 *    object destructed, the block given back. A program that cycles
 *    between many live objects and few keeps its slabs instead of unmapping
 *    and faulting them in again on every cycle (keeping a fixed share
 *    instead cost page faults on every cycle of a large batch); one that
 *    shrinks for good gives them back within two
 *    intervals of slab-layer activity, or at once with uslab_cache_reap().
 *    Time is read from the coarse vDSO clock, once per bulk call.
 *
 * 4. Locking: c_slab_lock covers the lists, every slab's header and the
 *    cache's slab counts. Page-source calls and ctor/dtor calls run without
 *    it (a ctor may allocate from another cache, or take its own locks), so
 *    a slab is built or torn down while on no list.
 *
 * 5. Observing: before dropping c_slab_lock after a change, the layer
 *    reports its figures (struct slab_counts, observe.h) to the cache's
 *    observer, and after giving pages back it says so; it knows nothing of
 *    who listens (the stats segment, a test).
 */

/* ---- Geometry ---- */

/* Natural alignment: the largest power of two dividing @size, at most 16. */
static size_t slab_natural_align(size_t size)
{
	size_t a = size & -size;
	return a > 16 ? 16 : a;
}

/* Objects fitting a slab of @size bytes (the header is elsewhere). */
static uint32_t slab_fit(const struct uslab_cache *c, size_t size)
{
	return (uint32_t)(size / c->c_slot);
}

/*
 * The object check's constants (struct uslab_cache, c_chk_*). With
 * c_slot = odd * 2^tz and inv the inverse of odd mod 2^64, an offset
 * x = q * c_slot gives x * inv = q * 2^tz, rotated right by tz: q. Any
 * other x gives a quotient no smaller than 2^64 / c_slot (an exact
 * multiple of 2^tz that odd does not divide maps above the multiples'
 * range, and low bits that are not zero rotate to the top), far above any
 * count of objects: so q < c_chk_objs is "an object start, in range", in
 * a multiply, a rotate and a compare, for negative offsets too.
 */
static void slab_check_init(struct uslab_cache *c)
{
	uint64_t odd = c->c_slot;
	uint8_t tz = 0;

	while ((odd & 1) == 0) {
		odd >>= 1;
		tz++;
	}
	uint64_t inv = odd; /* Newton: each step doubles the correct low bits */
	for (int i = 0; i < 5; i++)
		inv *= 2 - odd * inv;
	VERIFY(odd * inv == 1);
	c->c_chk_inv = inv;
	c->c_chk_tz = tz;
	c->c_chk_objs = c->c_slab_objs;
}

/* Bytes of a header of @c: struct slab and its bitmap. */
static size_t slab_hdr_size(const struct uslab_cache *c)
{
	return sizeof(struct slab) + (size_t)c->c_slab_words * 8;
}

/* The debug state of one slab (debug-cache.c): its bitmaps, its audit. */
static size_t slab_dbg_size(const struct uslab_cache *c)
{
	return (size_t)DBG_MAPS * c->c_slab_words * 8;
}

static size_t slab_audit_size(const struct uslab_cache *c)
{
	return (size_t)2 * c->c_slab_objs * sizeof(struct audit_rec);
}

/* Give @s what c_dbg_slabs asks for; false (ENOMEM) when it cannot. Set
 * once each, with a release store: the debug paths read them unlocked. */
static bool slab_dbg_give(struct uslab_cache *c, struct slab *s, unsigned want)
{
	if (want >= 1 && s->s_dbg == NULL) {
		uint64_t *d = meta_alloc(slab_dbg_size(c));
		if (d == NULL)
			return false;
		__atomic_store_n(&s->s_dbg, d, __ATOMIC_RELEASE);
	}
	if (want >= 2 && s->s_audit == NULL) {
		struct audit_rec *a = meta_alloc(slab_audit_size(c));
		if (a == NULL)
			return false;
		__atomic_store_n(&s->s_audit, a, __ATOMIC_RELEASE);
	}
	return true;
}

bool slab_geometry(struct uslab_cache *c)
{
	size_t best_size = 0;
	uint32_t best_objs = 0;
	double best_waste = 2.0;

	for (unsigned shift = SLAB_MIN_SHIFT; shift <= SLAB_MAX_SHIFT; shift++) {
		size_t size = (size_t)1 << shift;
		uint32_t objs = slab_fit(c, size);
		if (objs == 0)
			continue;
		double waste = (double)(size - (size_t)objs * c->c_slot) / (double)size;
		if (waste < best_waste) {
			best_waste = waste;
			best_size = size;
			best_objs = objs;
		}
		if (waste <= 1.0 / 64)
			break;
	}
	if (best_objs == 0)
		return false;
	c->c_slab_size = best_size;
	c->c_slab_mask = ~(uintptr_t)(best_size - 1);
	c->c_slab_objs = best_objs;
	c->c_slab_words = (best_objs + 63) / 64;
	c->c_first = 0;
	size_t spare = best_size - (size_t)best_objs * c->c_slot;
	c->c_colour_step = (uint32_t)(c->c_align > 64 ? c->c_align : 64);
	c->c_colours = (uint32_t)(spare / c->c_colour_step) + 1;
	slab_check_init(c);
	return true;
}

/* Object index of byte offset @off in a slab, if @off is an object start:
 * the check the fast path runs on every free (x86_64-entry.S), in C. */
static bool slab_index(const struct uslab_cache *c, size_t off, uint32_t *idx)
{
	uint64_t q = slab_check_quotient(c, off);

	*idx = (uint32_t)q;
	return q < c->c_chk_objs;
}

static void *slab_obj(const struct uslab_cache *c, const struct slab *s, uint32_t idx)
{
	return s->s_base + (size_t)idx * c->c_slot;
}

/* ---- Lists (c_slab_lock held) ---- */

static uint32_t slab_where_for(const struct uslab_cache *c, uint32_t inuse)
{
	if (inuse == 0)
		return SLAB_ON_EMPTY;
	if (inuse == c->c_slab_objs)
		return SLAB_ON_FULL;
	return (uint32_t)(((uint64_t)inuse * SLAB_BUCKETS) / c->c_slab_objs);
}

static struct slab_list *slab_list_of(struct uslab_cache *c, uint32_t where)
{
	if (where < SLAB_BUCKETS)
		return &c->c_partial[where];
	return where == SLAB_ON_FULL ? &c->c_full : &c->c_empty;
}

static void slab_unlink_locked(struct uslab_cache *c, struct slab *s)
{
	ASSERT_HELD(&c->c_slab_lock);
	struct slab_list *l = slab_list_of(c, s->s_where);

	if (s->s_prev != NULL)
		s->s_prev->s_next = s->s_next;
	else
		l->l_head = s->s_next;
	if (s->s_next != NULL)
		s->s_next->s_prev = s->s_prev;
	if (s->s_where < SLAB_BUCKETS && l->l_head == NULL)
		c->c_partial_mask &= ~(1u << s->s_where);
	if (s->s_where == SLAB_ON_EMPTY) {
		c->c_empty_slabs--;
		if (s->s_purged_at != 0) /* leaving the empty list: in use, or released */
			c->c_purged_slabs--;
		s->s_purged_at = 0;
	}
	s->s_where = SLAB_ON_NONE;
}

static void slab_link_locked(struct uslab_cache *c, struct slab *s, uint32_t where)
{
	ASSERT_HELD(&c->c_slab_lock);
	struct slab_list *l = slab_list_of(c, where);

	s->s_where = where;
	s->s_prev = NULL;
	s->s_next = l->l_head;
	if (l->l_head != NULL)
		l->l_head->s_prev = s;
	l->l_head = s;
	if (where < SLAB_BUCKETS)
		c->c_partial_mask |= 1u << where;
	if (where == SLAB_ON_EMPTY) {
		c->c_empty_slabs++;
		c->c_purged_slabs += s->s_purged_at != 0;
		s->s_empty_gen = __atomic_load_n(&c->c_sweep_started, __ATOMIC_ACQUIRE);
	}
}

/*
 * May @s (empty) go back to the page source? The per-CPU slots may hold
 * stale pointers to its objects, which their free's memo would take for
 * objects of this cache (arch/fastpath.h): not once a sweep that started
 * after it became empty has cleared every slot. Caches without slot
 * arrays (USLAB_NOMAGAZINE, the library's magazine caches) have none.
 */
static bool slab_releasable(struct uslab_cache *c, const struct slab *s)
{
	if ((c->c_flags & (USLAB_NOMAGAZINE | CACHE_INTERNAL)) != 0 || s->s_empty_gen == SLAB_CLEAN)
		return true;
	if (__atomic_load_n(&c->c_sweep_done, __ATOMIC_ACQUIRE) > s->s_empty_gen)
		return true;
	__atomic_store_n(&c->c_sweep_wanted, 1, __ATOMIC_RELAXED);
	return false;
}

/* Put @s on the list its s_inuse calls for. */
static void slab_relist_locked(struct uslab_cache *c, struct slab *s)
{
	ASSERT_HELD(&c->c_slab_lock);
	uint32_t where = slab_where_for(c, s->s_inuse);

	/* Off every list (being evacuated, slab_compact_begin): its owner
	 * lists it again. */
	if (where == s->s_where || s->s_where == SLAB_ON_NONE)
		return;
	slab_unlink_locked(c, s);
	slab_link_locked(c, s, where);
}

/* Detach empty slabs above @keep onto a private chain (through s_next):
 * releasable ones only, unless @all (a cache with no slot left). */
static struct slab *slab_detach_empty_locked(struct uslab_cache *c, uint64_t keep, bool all)
{
	struct slab *chain = NULL, *next;

	ASSERT_HELD(&c->c_slab_lock);
	for (struct slab *s = c->c_empty.l_head; s != NULL && c->c_empty_slabs > keep; s = next) {
		next = s->s_next;
		if (!all && !slab_releasable(c, s))
			continue;
		slab_unlink_locked(c, s);
		c->c_slabs--;
		c->c_slabs_released++;
		s->s_next = chain;
		chain = s;
	}
	return chain;
}

/*
 * May @c's free memory be purged (slab.c §3)? Not with a ctor (free
 * objects keep their constructed state), a debug flag (poison and red
 * zones live in free objects), USLAB_TYPESAFE_BY_RCU (readers may read a
 * free object), under valgrind (which would take the purged range for
 * defined memory), or when the page source cannot.
 */
static bool slab_purgeable(const struct uslab_cache *c)
{
	return c->c_src->purge != NULL && c->c_ctor == NULL &&
	       (c->c_flags & USLAB_TYPESAFE_BY_RCU) == 0 &&
	       __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED) == 0 && !VG_RUNNING();
}

/* A cache that purges: of the @stayed slabs that stayed empty through the
 * interval, detach onto @release those purged long enough ago, and onto
 * @purge (off every list, counted in c_purging) those not purged yet. */
static uint64_t slab_age_locked(struct uslab_cache *c, uint64_t stayed, uint64_t now,
                                struct slab **release, struct slab **purge)
{
	uint64_t purging = 0;

	ASSERT_HELD(&c->c_slab_lock);
	for (struct slab *s = c->c_empty.l_head, *next; s != NULL && stayed != 0; s = next) {
		next = s->s_next;
		if (s->s_purged_at == 0) {
			uint64_t gen = s->s_empty_gen;
			slab_unlink_locked(c, s);
			s->s_empty_gen = gen;
			c->c_offlist++;
			purging++;
			s->s_next = *purge;
			*purge = s;
		} else if (now - s->s_purged_at >= SLAB_PURGED_KEEP_NS && slab_releasable(c, s)) {
			slab_unlink_locked(c, s);
			c->c_slabs--;
			c->c_slabs_released++;
			s->s_next = *release;
			*release = s;
		} else {
			continue;
		}
		stayed--;
	}
	return purging;
}

/* Note the empty slabs' low-water mark; at the end of an interval, detach
 * the slabs that stayed empty through it: a chain to destroy and one to
 * purge (slab_purge_chain), both unlocked. */
static struct slab *slab_decay_locked(struct uslab_cache *c, struct slab **purge)
{
	ASSERT_HELD(&c->c_slab_lock);
	*purge = NULL;
	if (c->c_empty_slabs < c->c_decay_min)
		c->c_decay_min = c->c_empty_slabs;
	uint64_t now = uslab_coarse_ns();
	if (now - c->c_decay_start < SLAB_DECAY_NS)
		return NULL;
	struct slab *chain = NULL;
	uint64_t purging = 0; /* empty again once purged: they count as empty */
	if (slab_purgeable(c))
		purging = slab_age_locked(c, c->c_decay_min, now, &chain, purge);
	else
		chain = slab_detach_empty_locked(c, c->c_empty_slabs - c->c_decay_min, false);
	c->c_decay_start = now;
	c->c_decay_min = c->c_empty_slabs + purging;
	return chain;
}

/* ---- Callbacks: the ctor and dtor ---- */

/* The caches whose ctor or dtor runs on this thread, innermost last (a ctor
 * may allocate from another cache, whose ctor then runs): the slow paths
 * refuse a cache found here (slab_in_callback), since a ctor allocating
 * from its own cache would recurse without end and a dtor using its own
 * cache runs while that cache is being torn down. Deeper nests than
 * SLAB_CB_DEPTH are not tracked. Initial-exec TLS. */
#define SLAB_CB_DEPTH 4
static __thread const struct uslab_cache *slab_cb[SLAB_CB_DEPTH]
	__attribute__((tls_model("initial-exec")));
static __thread unsigned slab_ncb __attribute__((tls_model("initial-exec")));

static void slab_cb_enter(const struct uslab_cache *c)
{
	if (slab_ncb < SLAB_CB_DEPTH)
		slab_cb[slab_ncb] = c;
	slab_ncb++;
}

static void slab_cb_leave(void)
{
	slab_ncb--;
}

bool slab_in_callback(const struct uslab_cache *c)
{
	for (unsigned i = 0; i < slab_ncb && i < SLAB_CB_DEPTH; i++)
		if (slab_cb[i] == c)
			return true;
	return false;
}

/* ---- Reclaim ---- */

size_t (*slab_reclaim_hook)(void);

/* A page source failed: run the registry's reclaim pass if this thread
 * holds no uslab lock and runs no ctor or dtor (the callbacks run outside
 * every uslab lock, uslab.h). True when one ran: worth a retry. */
static bool slab_may_reclaim(void)
{
	size_t (*pass)(void) = __atomic_load_n(&slab_reclaim_hook, __ATOMIC_ACQUIRE);

	if (pass == NULL || pgsrc_busy != 0 || slab_ncb != 0)
		return false;
	int err = errno;
	bool ran = pass() != (size_t)-1;
	errno = err;
	return ran;
}

/* ---- Building and tearing down slabs (no lock held) ---- */

/* A slab being built or torn down, for the cancellation cleanups: a ctor
 * or dtor may be a cancellation point, and a cancelled thread must leak
 * nothing (objects constructed so far are destructed, the block goes back). */
struct slab_undo {
	struct uslab_cache *u_cache;
	struct slab *u_slab;
	uint32_t u_done; /* objects constructed (building) or destructed (tearing down) */
	bool u_building;
};

/* Give the block and header of @s back (its objects are already destructed). */
static void slab_free_block(struct uslab_cache *c, struct slab *s)
{
	char *block = s->s_block;

	s->s_magic = 0;
	SLAB_LSAN_UNROOT(block, c->c_slab_size);
	slabmap_clear(block, c->c_slab_size);
	/* The block goes back to the page source, which may reuse it: no
	 * byte of it may stay poisoned for ASan (sanitize.h). */
	SAN_UNPOISON(block, c->c_slab_size);
	if (s->s_dbg != NULL)
		meta_free(s->s_dbg, slab_dbg_size(c));
	if (s->s_audit != NULL)
		meta_free(s->s_audit, slab_audit_size(c));
	meta_free(s, slab_hdr_size(c));
	pgsrc_put(c->c_src, block, c->c_slab_size);
}

/* Cancellation cleanup: undo a half-built slab, or finish releasing a
 * half-destructed one (without its remaining dtors: the thread is being
 * cancelled in one, and the rest of the slab may not outlive it). */
static void slab_undo_cancelled(void *arg)
{
	struct slab_undo *u = arg;
	struct uslab_cache *c = u->u_cache;

	slab_cb_leave();
	if (u->u_building && c->c_dtor != NULL)
		for (uint32_t i = u->u_done; i-- > 0;)
			c->c_dtor(slab_obj(c, u->u_slab, i), c->c_arg);
	if (!u->u_building && c->c_dtor != NULL) /* the rest stay undestructed: open them */
		for (uint32_t i = u->u_done; i < c->c_slab_objs; i++)
			SAN_OPEN(slab_obj(c, u->u_slab, i), c->c_size);
	slab_free_block(c, u->u_slab);
}

/* A new slab with every object free and constructed, on no list; NULL with
 * errno (ENOMEM, or the ctor's value) on failure, nothing leaked. */
static struct slab *slab_create(struct uslab_cache *c)
{
	char *block = pgsrc_get(c->c_src, c->c_slab_size);

	if (block == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	VERIFY(((uintptr_t)block & ~c->c_slab_mask) == 0);
	struct slab *s = meta_alloc(slab_hdr_size(c));
	if (s == NULL || !slabmap_set(block, c->c_slab_size, s)) {
		meta_free(s, slab_hdr_size(c));
		pgsrc_put(c->c_src, block, c->c_slab_size);
		errno = ENOMEM;
		return NULL;
	}
	uint32_t colour = __atomic_fetch_add(&c->c_colour_next, 1, __ATOMIC_RELAXED) % c->c_colours;
	s->s_magic = SLAB_MAGIC;
	s->s_cache = c;
	s->s_next = s->s_prev = NULL;
	s->s_block = block;
	s->s_base = block + c->c_first + (size_t)colour * c->c_colour_step;
	s->s_inuse = 0;
	s->s_hint = 0;
	s->s_purged_at = 0;
	s->s_where = SLAB_ON_NONE;
	if (c->c_rand_seq != NULL) /* a start of its own in the cache's secret order */
		s->s_rpos = (uint32_t)(((uintptr_t)block >> SLAB_MIN_SHIFT) * 2654435761u %
		                       c->c_slab_objs);
	memset(s->s_free, 0xff, (size_t)c->c_slab_words * 8);
	if (c->c_slab_objs % 64 != 0)
		s->s_free[c->c_slab_words - 1] = ((uint64_t)1 << (c->c_slab_objs % 64)) - 1;
	if (!slab_dbg_give(c, s, __atomic_load_n(&c->c_dbg_slabs, __ATOMIC_ACQUIRE))) {
		slab_free_block(c, s);
		errno = ENOMEM;
		return NULL;
	}

	PROBE3(slab_grow, c, s, c->c_slab_size);
	SLAB_LSAN_ROOT(block, c->c_slab_size);
	if (c->c_ctor != NULL) {
		struct slab_undo u = {.u_cache = c, .u_slab = s, .u_building = true};
		int err = 0;
		slab_cb_enter(c);
		pthread_cleanup_push(slab_undo_cancelled, &u);
		for (; u.u_done < c->c_slab_objs; u.u_done++)
			if ((err = c->c_ctor(slab_obj(c, s, u.u_done), c->c_arg)) != 0)
				break;
		pthread_cleanup_pop(0);
		slab_cb_leave();
		if (err != 0) {
			if (c->c_dtor != NULL) {
				slab_cb_enter(c);
				while (u.u_done-- > 0)
					c->c_dtor(slab_obj(c, s, u.u_done), c->c_arg);
				slab_cb_leave();
			}
			slab_free_block(c, s);
			errno = err;
			return NULL;
		}
	}
	return s;
}

/* Destruct every object of an empty slab and give its block back. */
static void slab_destroy(struct uslab_cache *c, struct slab *s)
{
	VERIFY(s->s_inuse == 0);
	PROBE3(slab_release, c, s, c->c_slab_size);
	if (c->c_dtor != NULL) {
		struct slab_undo u = {.u_cache = c, .u_slab = s, .u_building = false};
		slab_cb_enter(c);
		pthread_cleanup_push(slab_undo_cancelled, &u);
		for (; u.u_done < c->c_slab_objs; u.u_done++) {
			/* Free objects may be poisoned for ASan or valgrind
			 * (sanitize.h): the dtor may touch their bytes. */
			SAN_OPEN(slab_obj(c, s, u.u_done), c->c_size);
			c->c_dtor(slab_obj(c, s, u.u_done), c->c_arg);
		}
		pthread_cleanup_pop(0);
		slab_cb_leave();
	}
	slab_free_block(c, s);
}

static void slab_leave(struct uslab_cache *c);

/* Purge the blocks of a chain from slab_age_locked() and put the slabs
 * back on the empty list, purged (their sweep generation kept). */
static void slab_purge_chain(struct uslab_cache *c, struct slab *chain)
{
	uint64_t bytes = 0, now = uslab_coarse_ns() | 1;

	if (chain == NULL)
		return;
	for (struct slab *s = chain; s != NULL; s = s->s_next) {
		pgsrc_purge(c->c_src, s->s_block, c->c_slab_size, false);
		bytes += c->c_slab_size;
	}
	lock_take(&c->c_slab_lock);
	while (chain != NULL) {
		struct slab *next = chain->s_next;
		uint64_t gen = chain->s_empty_gen;
		chain->s_purged_at = now;
		c->c_offlist--;
		slab_link_locked(c, chain, SLAB_ON_EMPTY);
		chain->s_empty_gen = gen;
		chain = next;
	}
	c->c_bytes_purged += bytes;
	slab_leave(c);
}

/* Purge the pages of @s (a partial slab) that lie wholly inside runs of
 * free objects, the colour and tail space at the ends included; returns
 * the bytes purged. The lock stays held: an object of the range cannot be
 * handed out, and written, before its page is purged. */
static size_t slab_purge_free_locked(struct uslab_cache *c, struct slab *s)
{
	size_t page = pgsrc_page_size(), bytes = 0;
	uint32_t n = c->c_slab_objs, i = 0;

	ASSERT_HELD(&c->c_slab_lock);
	if ((size_t)(n - s->s_inuse) * c->c_slot < page)
		return 0;
	while (i < n) {
		if (((s->s_free[i / 64] >> (i % 64)) & 1) == 0) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < n && ((s->s_free[j / 64] >> (j % 64)) & 1) != 0)
			j++;
		uintptr_t lo = i == 0 ? (uintptr_t)s->s_block : (uintptr_t)slab_obj(c, s, i);
		uintptr_t hi = j == n ? (uintptr_t)s->s_block + c->c_slab_size
		                      : (uintptr_t)slab_obj(c, s, j);
		lo = (lo + page - 1) & ~(uintptr_t)(page - 1);
		hi &= ~(uintptr_t)(page - 1);
		if (hi > lo) {
			pgsrc_purge(c->c_src, (void *)lo, hi - lo, true);
			bytes += hi - lo;
		}
		i = j;
	}
	return bytes;
}

/* Destroy a chain from slab_detach_empty_locked(); returns bytes released.
 * A USLAB_TYPESAFE_BY_RCU cache's chain goes to c_slab_retire instead,
 * which destroys it after a grace period (slab_destroy_retired): its
 * bytes count as released now, since nothing can stop them going. */
static size_t slab_destroy_chain(struct uslab_cache *c, struct slab *chain)
{
	size_t bytes = 0;

	if (c->c_slab_retire != NULL && chain != NULL) {
		for (struct slab *s = chain; s != NULL; s = s->s_next)
			bytes += c->c_slab_size;
		c->c_slab_retire(c, chain);
		return bytes;
	}
	return slab_destroy_retired(c, chain);
}

size_t slab_destroy_retired(struct uslab_cache *c, struct slab *chain)
{
	size_t bytes = 0;

	while (chain != NULL) {
		struct slab *next = chain->s_next;
		slab_destroy(c, chain);
		bytes += c->c_slab_size;
		chain = next;
	}
	if (bytes != 0)
		obs_pages(c);
	return bytes;
}

/* ---- Taking and returning objects (c_slab_lock held) ---- */

static bool slab_is_valid(const struct uslab_cache *c, const struct slab *s, uint32_t where);

/* USLAB_RANDOM's generator (xorshift), under c_slab_lock. */
static uint32_t slab_rand(struct uslab_cache *c, uint32_t bound)
{
	if (c->c_rng == 0)
		c->c_rng = ((uint64_t)(uintptr_t)c ^ uslab_coarse_ns()) | 1;
	c->c_rng ^= c->c_rng << 13;
	c->c_rng ^= c->c_rng >> 7;
	c->c_rng ^= c->c_rng << 17;
	return (uint32_t)(c->c_rng % bound);
}

/* USLAB_RANDOM: the cache's random order of object indexes (SLUB's
 * random_seq), drawn once; each slab walks it from a random start of its
 * own. NULL without the flag, or when out of memory (then address order). */
static void slab_random_init(struct uslab_cache *c)
{
	if ((c->c_flags & USLAB_RANDOM) == 0 ||
	    (c->c_rand_seq = meta_alloc((size_t)c->c_slab_objs * sizeof(uint32_t))) == NULL)
		return;
	for (uint32_t i = 0; i < c->c_slab_objs; i++)
		c->c_rand_seq[i] = i;
	for (uint32_t i = c->c_slab_objs; i > 1; i--) { /* Fisher-Yates */
		uint32_t j = slab_rand(c, i), t = c->c_rand_seq[i - 1];
		c->c_rand_seq[i - 1] = c->c_rand_seq[j];
		c->c_rand_seq[j] = t;
	}
}

/* USLAB_RANDOM: up to @n free objects of @s, in the cache's random order
 * from the slab's cursor (s_rpos). A bitmap has no list to shuffle, so the
 * order is the sequence's; on a new slab each object costs one step, and
 * objects freed behind the cursor come out after it wraps. */
static size_t slab_take_random_locked(struct uslab_cache *c, struct slab *s, void **objs, size_t n)
{
	size_t got = 0;
	uint32_t nobj = c->c_slab_objs, free = nobj - s->s_inuse, pos = s->s_rpos;

	while (got < n && got < free) {
		uint32_t idx = c->c_rand_seq[pos];
		pos = pos + 1 == nobj ? 0 : pos + 1;
		uint64_t bit = (uint64_t)1 << (idx % 64);
		if ((s->s_free[idx / 64] & bit) == 0)
			continue;
		s->s_free[idx / 64] &= ~bit;
		objs[got++] = slab_obj(c, s, idx);
	}
	s->s_rpos = pos;
	while (s->s_hint < c->c_slab_words && s->s_free[s->s_hint] == 0)
		s->s_hint++;
	return got;
}

/* Move up to @n free objects of @s to @objs; returns how many. */
static size_t slab_take_locked(struct uslab_cache *c, struct slab *s, void **objs, size_t n)
{
	size_t got = 0;
	uint32_t w = s->s_hint;

	ASSERT_HELD(&c->c_slab_lock);
	if (c->c_rand_seq != NULL) {
		got = slab_take_random_locked(c, s, objs, n);
		w = s->s_hint;
		n = got; /* nothing more below */
	}
	while (got < n && w < c->c_slab_words) {
		uint64_t bits = s->s_free[w];
		while (bits != 0 && got < n) {
			uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			objs[got++] = slab_obj(c, s, idx);
		}
		s->s_free[w] = bits;
		if (bits == 0)
			w++;
	}
	s->s_hint = w;
	s->s_inuse += (uint32_t)got;
	c->c_inuse += got;
	slab_relist_locked(c, s);
	ASSERT(s->s_inuse <= c->c_slab_objs);
	ASSERT_EXPENSIVE(slab_is_valid(c, s, s->s_where));
	return got;
}

struct slab *slab_of_checked(struct uslab_cache *c, const void *obj, uint32_t *idx)
{
	struct slab *s = slabmap_lookup(obj);

	/* No slab there (a malloc pointer, the stack), or another cache's. */
	if (s == NULL || s->s_cache != c)
		uslab_report(c, obj, USLAB_E_FOREIGN);
	VERIFY(s->s_magic == SLAB_MAGIC);
	if ((const char *)obj < s->s_base ||
	    !slab_index(c, (size_t)((const char *)obj - s->s_base), idx) || *idx >= c->c_slab_objs)
		uslab_report(c, obj, USLAB_E_BOUNDARY);
	return s;
}

bool slab_is_object(const struct uslab_cache *c, const void *obj)
{
	const struct slab *s = slabmap_lookup(obj);

	return s != NULL && s->s_cache == c &&
	       slab_check_quotient(c, (uint64_t)((uintptr_t)obj - (uintptr_t)s->s_base)) <
	               c->c_chk_objs;
}

void slab_check_free_at(struct uslab_cache *c, const void *obj, const struct slab *s, uint32_t *idx)
{
	uint64_t q =
		s != NULL
			? slab_check_quotient(c, (uint64_t)((uintptr_t)obj - (uintptr_t)s->s_base))
			: UINT64_MAX;

	if (s == NULL || s->s_cache != c || q >= c->c_chk_objs)
		(void)slab_of_checked(c, obj, idx); /* reports which */
	*idx = (uint32_t)q;
}

void slab_check_free(struct uslab_cache *c, const void *obj)
{
	uint32_t idx;

	slab_check_free_at(c, obj, slabmap_lookup(obj), &idx);
}

void slab_free_bad(struct uslab_cache *c, void *obj)
{
	slab_check_free(c, obj);
	__atomic_load_n(&c->c_free_miss, __ATOMIC_ACQUIRE)(c, obj);
}

void slab_free_dup(struct uslab_cache *c, void *obj)
{
	uslab_report(c, obj, USLAB_E_DUPFREE);
}

/* Return one object to its slab; reports misuse. */
static void slab_put_locked(struct uslab_cache *c, void *obj)
{
	ASSERT_HELD(&c->c_slab_lock);
	uint32_t idx;
	struct slab *s = slab_of_checked(c, obj, &idx);
	uint64_t bit = (uint64_t)1 << (idx % 64);

	if (s->s_free[idx / 64] & bit)
		uslab_report(c, obj, USLAB_E_DUPFREE);
	s->s_free[idx / 64] |= bit;
	if (idx / 64 < s->s_hint)
		s->s_hint = idx / 64;
	ASSERT(s->s_inuse > 0);
	s->s_inuse--;
	c->c_inuse--;
	slab_relist_locked(c, s);
	ASSERT_EXPENSIVE(slab_is_valid(c, s, s->s_where));
}

/* The figures an observer gets, read under c_slab_lock. */
static void slab_counts_locked(const struct uslab_cache *c, struct slab_counts *out)
{
	ASSERT_HELD(&c->c_slab_lock);
	out->sc_inuse = c->c_inuse;
	out->sc_slabs = c->c_slabs;
	out->sc_empty = c->c_empty_slabs;
	out->sc_created = c->c_slabs_created;
	out->sc_released = c->c_slabs_released;
	out->sc_fail = c->c_alloc_fail;
	out->sc_purged = c->c_purged_slabs;
	out->sc_bytes_purged = c->c_bytes_purged;
}

/* Report the figures to the observer, then drop c_slab_lock. */
static void slab_leave(struct uslab_cache *c)
{
	if (c->c_obs != NULL) {
		struct slab_counts sc;
		slab_counts_locked(c, &sc);
		obs_slab_locked(c, &sc);
	}
	lock_drop(&c->c_slab_lock);
}

/* ---- Entry points for the layers above ---- */

bool slab_cache_init(struct uslab_cache *c, const char *name, size_t size,
                     const struct uslab_cache_conf *conf, unsigned flags)
{
	strncpy(c->c_name, name, USLAB_NAME_MAX);
	c->c_name[USLAB_NAME_MAX] = '\0';
	c->c_flags = flags;
	c->c_size = size;
	c->c_align = conf->align != 0 ? conf->align : slab_natural_align(size);
	/* A red zone (USLAB_DEBUG_REDZONE) is part of the layout: bytes
	 * after the object, up to the next slot. */
	size_t rz = (flags & USLAB_DEBUG_REDZONE) != 0 ? DBG_RZ_MIN : 0;
	c->c_slot = (uint32_t)((size + rz + c->c_align - 1) & ~(c->c_align - 1));
	c->c_rz = c->c_slot - (uint32_t)size;
	c->c_ctor = conf->ctor;
	c->c_dtor = conf->dtor;
	c->c_arg = conf->arg;
	c->c_src = conf->pagesrc != NULL ? conf->pagesrc : pgsrc_default();
	if (!slab_geometry(c)) {
		errno = EINVAL;
		return false;
	}
	slab_random_init(c);
	c->c_decay_start = uslab_coarse_ns();
	lock_init(&c->c_slab_lock);
	return true;
}

void slab_cache_fini(struct uslab_cache *c)
{
	if (c->c_rand_seq != NULL)
		meta_free(c->c_rand_seq, (size_t)c->c_slab_objs * sizeof(uint32_t));
	lock_fini(&c->c_slab_lock);
}

void slab_lock_all(struct uslab_cache *c)
{
	lock_take(&c->c_slab_lock);
}

void slab_unlock_all(struct uslab_cache *c)
{
	lock_drop(&c->c_slab_lock);
}

size_t slab_alloc_bulk(struct uslab_cache *c, void **objs, size_t n)
{
	size_t got = 0;

	lock_take(&c->c_slab_lock);
	while (got < n) {
		struct slab *s;
		if (c->c_partial_mask != 0) {
			unsigned b = 31 - (unsigned)__builtin_clz(c->c_partial_mask);
			s = c->c_partial[b].l_head;
		} else if (c->c_empty.l_head != NULL) {
			s = c->c_empty.l_head;
		} else {
			lock_drop(&c->c_slab_lock);
			s = slab_create(c);
			if (s == NULL && errno == ENOMEM && slab_may_reclaim())
				s = slab_create(c); /* once more, after a reclaim pass */
			lock_take(&c->c_slab_lock);
			if (s == NULL) {
				int err = errno;
				PROBE2(alloc_fail, c, err);
				c->c_alloc_fail++;
				errno = err;
				break;
			}
			c->c_slabs++;
			c->c_slabs_created++;
			slab_link_locked(c, s, SLAB_ON_EMPTY);
			s->s_empty_gen = SLAB_CLEAN;
		}
		got += slab_take_locked(c, s, objs + got, n - got);
	}
	struct slab *purge, *chain = slab_decay_locked(c, &purge);
	slab_leave(c);
	int err = errno;
	slab_destroy_chain(c, chain);
	slab_purge_chain(c, purge);
	errno = err;
	return got;
}

size_t slab_free_bulk(struct uslab_cache *c, void *const *objs, size_t n)
{
	lock_take(&c->c_slab_lock);
	for (size_t i = 0; i < n; i++)
		slab_put_locked(c, objs[i]);
	struct slab *purge, *chain = slab_decay_locked(c, &purge);
	slab_leave(c);
	size_t bytes = slab_destroy_chain(c, chain);
	slab_purge_chain(c, purge);
	return bytes;
}

size_t slab_tick(struct uslab_cache *c)
{
	return slab_free_bulk(c, NULL, 0);
}

static size_t slab_release_empty(struct uslab_cache *c, bool all)
{
	lock_take(&c->c_slab_lock);
	struct slab *chain = slab_detach_empty_locked(c, 0, all);
	slab_leave(c);
	return slab_destroy_chain(c, chain);
}

size_t slab_reap(struct uslab_cache *c)
{
	size_t bytes = slab_release_empty(c, false), purged = 0;

	if (!slab_purgeable(c))
		return bytes;
	lock_take(&c->c_slab_lock);
	for (uint32_t b = 0; b < SLAB_BUCKETS; b++)
		for (struct slab *s = c->c_partial[b].l_head; s != NULL; s = s->s_next)
			purged += slab_purge_free_locked(c, s);
	c->c_bytes_purged += purged;
	slab_leave(c);
	return bytes + purged;
}

uint64_t slab_inuse(struct uslab_cache *c)
{
	lock_take(&c->c_slab_lock);
	uint64_t n = c->c_inuse;
	lock_drop(&c->c_slab_lock);
	return n;
}

void slab_counts(struct uslab_cache *c, struct slab_counts *out)
{
	lock_take(&c->c_slab_lock);
	slab_counts_locked(c, out);
	lock_drop(&c->c_slab_lock);
}

void slab_release_all(struct uslab_cache *c)
{
	VERIFY(c->c_inuse == 0);
	slab_release_empty(c, true); /* no slot left to hold a stale pointer */
	VERIFY(c->c_slabs == 0);
}

/* ---- For the debug layer ---- */

void slab_lock(struct uslab_cache *c)
{
	lock_take(&c->c_slab_lock);
}

void slab_unlock(struct uslab_cache *c)
{
	lock_drop(&c->c_slab_lock);
}

void slab_walk_locked(struct uslab_cache *c,
                      void (*fn)(struct uslab_cache *, struct slab *, void *), void *arg)
{
	ASSERT_HELD(&c->c_slab_lock);
	for (uint32_t w = 0; w <= SLAB_ON_FULL; w++)
		for (struct slab *s = slab_list_of(c, w)->l_head, *next; s != NULL; s = next) {
			next = s->s_next;
			fn(c, s, arg);
		}
}

int slab_debug_attach(struct uslab_cache *c, bool audit)
{
	unsigned want = audit ? 2 : 1;
	bool ok = true;

	lock_take(&c->c_slab_lock);
	if (__atomic_load_n(&c->c_dbg_slabs, __ATOMIC_RELAXED) < want)
		__atomic_store_n(&c->c_dbg_slabs, want, __ATOMIC_RELEASE); /* new slabs */
	for (uint32_t w = 0; w <= SLAB_ON_FULL && ok; w++)
		for (struct slab *s = slab_list_of(c, w)->l_head; s != NULL && ok; s = s->s_next)
			ok = slab_dbg_give(c, s, want);
	lock_drop(&c->c_slab_lock);
	if (!ok)
		errno = ENOMEM;
	return ok ? 0 : -1;
}

bool slab_obj_free_locked(struct uslab_cache *c, const void *obj)
{
	uint32_t idx;

	ASSERT_HELD(&c->c_slab_lock);
	struct slab *s = slab_locate(c, obj, &idx);
	return (s->s_free[idx / 64] >> (idx % 64)) & 1;
}

bool slab_obj_free(struct uslab_cache *c, const void *obj)
{
	lock_take(&c->c_slab_lock);
	bool free = slab_obj_free_locked(c, obj);
	lock_drop(&c->c_slab_lock);
	return free;
}

uint64_t slab_inuse_locked(struct uslab_cache *c)
{
	ASSERT_HELD(&c->c_slab_lock);
	return c->c_inuse;
}

/* ---- Compaction (memory.c) ---- */

size_t slab_compact_begin(struct uslab_cache *c, struct slab **victims, size_t cap)
{
	uint64_t live = 0, partial = 0;
	size_t n = 0;

	lock_take(&c->c_slab_lock);
	for (uint32_t b = 0; b < SLAB_BUCKETS; b++)
		for (struct slab *s = c->c_partial[b].l_head; s != NULL; s = s->s_next) {
			live += s->s_inuse;
			partial++;
		}
	/* The denser slabs left must hold what the victims hold. */
	uint64_t need = (live + c->c_slab_objs - 1) / c->c_slab_objs;
	uint64_t want = partial > need ? partial - need : 0;
	for (uint32_t b = 0; b < SLAB_BUCKETS && n < want && n < cap; b++)
		while (c->c_partial[b].l_head != NULL && n < want && n < cap) {
			struct slab *s = c->c_partial[b].l_head;
			slab_unlink_locked(c, s);
			c->c_offlist++;
			victims[n++] = s;
		}
	slab_leave(c);
	return n;
}

uint32_t slab_compact_objects(struct uslab_cache *c, struct slab *s, void **objs)
{
	uint32_t n = 0;

	lock_take(&c->c_slab_lock);
	for (uint32_t i = 0; i < c->c_slab_objs; i++)
		if (((s->s_free[i / 64] >> (i % 64)) & 1) == 0)
			objs[n++] = slab_obj(c, s, i);
	lock_drop(&c->c_slab_lock);
	return n;
}

void slab_compact_end(struct uslab_cache *c, struct slab **victims, size_t n)
{
	lock_take(&c->c_slab_lock);
	for (size_t i = 0; i < n; i++) {
		c->c_offlist--;
		slab_link_locked(c, victims[i], slab_where_for(c, victims[i]->s_inuse));
	}
	slab_leave(c);
}

/* ---- Validation ---- */

/* The invariants written beside struct slab, for one slab. */
static bool slab_is_valid(const struct uslab_cache *c, const struct slab *s, uint32_t where)
{
	uint64_t free_count = 0;
	uint32_t first_free_word = c->c_slab_words;

	if (s->s_magic != SLAB_MAGIC || s->s_cache != c || s->s_where != where)
		return false;
	for (uint32_t w = 0; w < c->c_slab_words; w++) {
		free_count += (uint64_t)__builtin_popcountll(s->s_free[w]);
		if (s->s_free[w] != 0 && first_free_word == c->c_slab_words)
			first_free_word = w;
	}
	if (c->c_slab_objs % 64 != 0 &&
	    (s->s_free[c->c_slab_words - 1] >> (c->c_slab_objs % 64)) != 0)
		return false;
	/* Off every list (evacuated, slab_compact_begin): any fullness. */
	return s->s_inuse + free_count == c->c_slab_objs && s->s_hint <= first_free_word &&
	       (where == SLAB_ON_NONE || slab_where_for(c, s->s_inuse) == where);
}

bool slab_cache_is_valid(struct uslab_cache *c)
{
	uint64_t slabs = 0, inuse = 0, empty = 0, purged = 0;
	bool ok = true;

	lock_take(&c->c_slab_lock);
	for (uint32_t where = 0; where <= SLAB_ON_FULL && ok; where++) {
		const struct slab_list *l = slab_list_of(c, where);
		if (where < SLAB_BUCKETS &&
		    ((c->c_partial_mask >> where) & 1) != (l->l_head != NULL))
			ok = false;
		const struct slab *prev = NULL;
		for (const struct slab *s = l->l_head; s != NULL && ok; s = s->s_next) {
			ok = slab_is_valid(c, s, where) && s->s_prev == prev &&
			     slabmap_lookup(s->s_block) == s &&
			     slabmap_lookup(s->s_block + c->c_slab_size - 1) == s;
			prev = s;
			slabs++;
			inuse += s->s_inuse;
			empty += where == SLAB_ON_EMPTY;
			purged += s->s_purged_at != 0;
			ok = ok && (s->s_purged_at == 0 || where == SLAB_ON_EMPTY);
		}
	}
	ok = ok && slabs + c->c_offlist == c->c_slabs && inuse == c->c_inuse &&
	     empty == c->c_empty_slabs && purged == c->c_purged_slabs &&
	     c->c_slabs_created - c->c_slabs_released == c->c_slabs;
	lock_drop(&c->c_slab_lock);
	return ok;
}
