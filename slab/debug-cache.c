/* SPDX-License-Identifier: MIT */
/* Debug caches: objects checked as they leave and enter the per-CPU magazines. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "sanitize.h"

/*
 * Design
 *
 * 1. Routing, once. A cache with a debug flag, a failure rule (USLAB_FAIL),
 *    sampling (USLAB_SAMPLE), or under ASan or valgrind is routed here: its
 *    hits miss (c_fast is the zero region) and its misses and bulk calls
 *    come to dbg_alloc / dbg_free (pcpu_route, at create and at
 *    uslab_cache_set_debug). Objects still go through this CPU's magazine
 *    (pcpu_alloc_magazine, pcpu_free_magazine) and the depot, so bugs that
 *    depend on timing still show; they are checked here on the way out
 *    and in. Nothing in pcpu.c tests for debugging.
 *
 * 2. State per object, in its slab (s_dbg, four bitmaps, atomic bit
 *    operations; s_audit, two records):
 *      KNOWN   the object went through this layer under F or U since they
 *              were last switched on: its OUT bit means something
 *      OUT     with the program (set as it is handed out, cleared as it
 *              comes back)
 *      POISON  filled with DBG_POISON_BYTE as it came back (P)
 *      RZ      its red zone holds DBG_RZ_BYTE (Z): written as it was
 *              handed out; nothing but an overrun writes there after
 *    An object the layer has not seen under a flag is not checked by it:
 *    objects allocated before uslab_cache_set_debug() turned a flag on
 *    give no false report. A free of a KNOWN object whose OUT bit is
 *    clear is a double free only if the object is found free (its slab's
 *    bitmap, a depot or a per-CPU magazine, debug_obj_is_free): so an
 *    object another thread handed out through the old route, while the
 *    switch was under way, is adopted, not reported.
 *
 * 3. The checks, in order. Out: injected failure, sample, the magazine;
 *    then the poison (P; the report names the first damaged byte), the
 *    state bits, the red zone written (Z), the audit record (U), and the
 *    object opened for ASan/valgrind. In: the object check of every free
 *    (slab.c), the red zone (Z), the double free (F), the poison written
 *    (P, never with a ctor: the constructed state is the cache's), the
 *    audit record, and the object closed for ASan/valgrind; then the
 *    magazine, whose push refuses the round on top too.
 *
 * 4. Lock: debug_lock serialises uslab_cache_set_debug() (taken before any
 *    cache lock). The checks take none of their own; the audit's stack
 *    depot has a leaf lock (audit.c).
 */

static struct uslab_lock debug_lock = USLAB_LOCK_INITIALIZER;
static uint64_t debug_sample_period; /* USLAB_SAMPLE */
static int debug_tools;              /* ASan or valgrind: every object is annotated */

/* ---- Object state ---- */

struct dbg_ref {
	struct slab *r_slab;
	uint32_t r_idx;
	uint64_t *r_maps; /* NULL: no state (a slab made before the layer had any) */
};

static void dbg_ref(const struct uslab_cache *c, const void *obj, struct dbg_ref *r)
{
	r->r_slab = slab_locate(c, obj, &r->r_idx);
	r->r_maps = __atomic_load_n(&r->r_slab->s_dbg, __ATOMIC_ACQUIRE);
}

static void dbg_ref_at(struct slab *s, uint32_t idx, struct dbg_ref *r)
{
	r->r_slab = s;
	r->r_idx = idx;
	r->r_maps = __atomic_load_n(&s->s_dbg, __ATOMIC_ACQUIRE);
}

static uint64_t *dbg_word(const struct uslab_cache *c, const struct dbg_ref *r, unsigned map)
{
	return &r->r_maps[(size_t)map * c->c_slab_words + r->r_idx / 64];
}

static bool dbg_test(const struct uslab_cache *c, const struct dbg_ref *r, unsigned map)
{
	return (__atomic_load_n(dbg_word(c, r, map), __ATOMIC_RELAXED) >> (r->r_idx % 64)) & 1;
}

/* Set (@on) or clear bit @map of the object; its value before. */
static bool dbg_set(const struct uslab_cache *c, const struct dbg_ref *r, unsigned map, bool on)
{
	uint64_t bit = (uint64_t)1 << (r->r_idx % 64);
	uint64_t old = on ? __atomic_fetch_or(dbg_word(c, r, map), bit, __ATOMIC_RELAXED)
	                  : __atomic_fetch_and(dbg_word(c, r, map), ~bit, __ATOMIC_RELAXED);
	return (old & bit) != 0;
}

/* ---- Checks ---- */

/* The first byte of [p, p + n) that is not @want, or n. */
static size_t dbg_first_not(const unsigned char *p, size_t n, unsigned char want)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != want)
			return i;
	return n;
}

void debug_describe_poison(const unsigned char *obj, size_t at, size_t size, char *buf, size_t cap)
{
	size_t len = (size_t)snprintf(buf, cap, "offset %zu:", at);
	for (size_t i = at; i < size && i < at + 8 && len + 4 < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, " %02x", obj[i]);
}

/* P: the poison of a free object, as it leaves; reports a write. */
static void dbg_check_poison(struct uslab_cache *c, const unsigned char *obj)
{
	size_t at = dbg_first_not(obj, c->c_size, DBG_POISON_BYTE);

	if (at < c->c_size) {
		char detail[64];
		debug_describe_poison(obj, at, c->c_size, detail, sizeof detail);
		uslab_report_detail(c, obj, USLAB_E_POISON, detail);
	}
}

/* Z: the red zone of an object, as it comes back; reports an overrun. */
static void dbg_check_redzone(struct uslab_cache *c, const unsigned char *obj)
{
	size_t at = dbg_first_not(obj + c->c_size, c->c_rz, DBG_RZ_BYTE);

	if (at < c->c_rz) {
		char detail[32];
		snprintf(detail, sizeof detail, "offset %zu", c->c_size + at);
		uslab_report_detail(c, obj, USLAB_E_REDZONE, detail);
	}
}

bool debug_obj_is_free(struct uslab_cache *c, const void *obj)
{
	return slab_obj_free(c, obj) || depot_holds(c, obj) || pcpu_holds(c, obj);
}

/* The object leaves the cache: checks, state, annotations. */
static void *dbg_out(struct uslab_cache *c, void *obj)
{
	unsigned flags = __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED);
	struct dbg_ref r;

	dbg_ref(c, obj, &r);
	SAN_OPEN(obj, c->c_slot); /* read and written below */
	if (r.r_maps != NULL) {
		if ((flags & USLAB_DEBUG_POISON) != 0 && dbg_set(c, &r, DBG_POISON, false))
			dbg_check_poison(c, obj);
		if ((flags & (USLAB_DEBUG_CHECKS | USLAB_DEBUG_AUDIT)) != 0) {
			dbg_set(c, &r, DBG_OUT, true);
			dbg_set(c, &r, DBG_KNOWN, true);
		}
		if ((flags & USLAB_DEBUG_REDZONE) != 0 && c->c_rz != 0) {
			memset((char *)obj + c->c_size, DBG_RZ_BYTE, c->c_rz);
			dbg_set(c, &r, DBG_RZ, true);
		}
	}
	/* The bytes after the object are the program's to never touch. */
	SAN_POISON((char *)obj + c->c_size, c->c_rz);
	VG_NOACCESS((char *)obj + c->c_size, c->c_rz);
	struct audit_rec *a = __atomic_load_n(&r.r_slab->s_audit, __ATOMIC_ACQUIRE);
	if ((flags & USLAB_DEBUG_AUDIT) != 0 && a != NULL)
		audit_record(&a[2 * r.r_idx]);
	VG_MALLOCLIKE(obj, c->c_size);
	if (c->c_ctor != NULL)
		VG_DEFINED(obj, c->c_size); /* its constructed state is real */
	return obj;
}

/* The object comes back (checked already: slab @s, index @idx): checks,
 * state, annotations. */
static void dbg_in(struct uslab_cache *c, void *obj, unsigned flags, struct slab *s, uint32_t idx)
{
	struct dbg_ref r;

	dbg_ref_at(s, idx, &r);
	if (r.r_maps != NULL) {
		if ((flags & USLAB_DEBUG_REDZONE) != 0 && dbg_test(c, &r, DBG_RZ)) {
			SAN_OPEN((char *)obj + c->c_size, c->c_rz);
			dbg_check_redzone(c, obj);
		}
		if ((flags & (USLAB_DEBUG_CHECKS | USLAB_DEBUG_AUDIT)) != 0) {
			bool was_out = dbg_set(c, &r, DBG_OUT, false);
			bool known = dbg_set(c, &r, DBG_KNOWN, true);
			/* The search takes locks: not in a handler that
			 * interrupted uslab (the report is lost then). */
			if ((flags & USLAB_DEBUG_CHECKS) != 0 && known && !was_out &&
			    pgsrc_busy == 0 && debug_obj_is_free(c, obj))
				uslab_report(c, obj, USLAB_E_DUPFREE);
		}
	}
	struct audit_rec *a = __atomic_load_n(&r.r_slab->s_audit, __ATOMIC_ACQUIRE);
	if ((flags & USLAB_DEBUG_AUDIT) != 0 && a != NULL)
		audit_record(&a[2 * r.r_idx + 1]);
	if (r.r_maps != NULL && (flags & USLAB_DEBUG_POISON) != 0 && c->c_ctor == NULL) {
		memset(obj, DBG_POISON_BYTE, c->c_size);
		dbg_set(c, &r, DBG_POISON, true);
	}
	VG_FREELIKE(obj);
	if ((c->c_flags & USLAB_TYPESAFE_BY_RCU) != 0) {
		/* Readers may still read a freed object of a type-safe cache
		 * (uslab.h): for the tools it is free, not inaccessible. */
		VG_DEFINED(obj, c->c_size);
		return;
	}
	VG_NOACCESS(obj, c->c_size);
	SAN_POISON(obj, c->c_slot);
}

/* ---- Failure injection ---- */

/* Whether this allocation fails (USLAB_FAIL). */
static bool dbg_fail_now(struct dbg_fail *f)
{
	const struct dbg_fail_rule *r = &f->f_rule;
	bool fail;

	if (__atomic_load_n(&f->f_failed, __ATOMIC_RELAXED) >= r->r_times)
		return false;
	if (r->r_every != 0) {
		fail = (__atomic_add_fetch(&f->f_count, 1, __ATOMIC_RELAXED) % r->r_every) == 0;
	} else {
		uint64_t x = __atomic_load_n(&f->f_rng, __ATOMIC_RELAXED), y;
		do {
			y = x;
			y ^= y << 13;
			y ^= y >> 7;
			y ^= y << 17;
		} while (!__atomic_compare_exchange_n(&f->f_rng, &x, y, false, __ATOMIC_RELAXED,
		                                      __ATOMIC_RELAXED));
		fail = y < r->r_threshold || r->r_threshold == UINT64_MAX;
	}
	if (fail && __atomic_add_fetch(&f->f_failed, 1, __ATOMIC_RELAXED) > r->r_times) {
		__atomic_sub_fetch(&f->f_failed, 1, __ATOMIC_RELAXED);
		fail = false;
	}
	return fail;
}

/* ---- The route ---- */

static void *dbg_alloc_checked(struct uslab_cache *c);

/* A limited cache counts here (limit.c), around the rest of the route. */
static void *dbg_alloc(struct uslab_cache *c)
{
	if (!limit_take(c))
		return NULL;
	void *obj = dbg_alloc_checked(c);
	if (obj == NULL)
		limit_put(c);
	return obj;
}

static void *dbg_alloc_checked(struct uslab_cache *c)
{
	if (c->c_fail != NULL && dbg_fail_now(c->c_fail)) {
		PROBE2(alloc_fail, c, ENOMEM);
		errno = ENOMEM;
		return NULL;
	}
	void *obj = debug_sample_period != 0 ? sample_alloc(c) : NULL;
	if (obj != NULL)
		return obj;
	obj = pcpu_alloc_magazine(c);
	if (obj == NULL || (__atomic_load_n(&c->c_debug, __ATOMIC_RELAXED) == 0 && !debug_tools))
		return obj; /* routed for sampling or failures only */
	return dbg_out(c, obj);
}

static void dbg_free(struct uslab_cache *c, void *obj)
{
	struct slab *s = slabmap_lookup(obj);
	uint32_t idx;
	int err = errno; /* a free keeps errno (pcpu_free_slow) */

	if (s == NULL && debug_sample_period != 0 && sample_free(c, obj)) {
		errno = err;
		return; /* a sample is in no slab */
	}
	slab_check_free_at(c, obj, s, &idx); /* not an object of this cache, interior */
	unsigned flags = __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED);
	if (flags != 0 || debug_tools)
		dbg_in(c, obj, flags, s, idx);
	pcpu_free_magazine(c, obj);
	limit_put(c);
	errno = err;
}

static size_t dbg_alloc_bulk(struct uslab_cache *c, void **objs, size_t n)
{
	size_t got = 0;

	while (got < n && (objs[got] = dbg_alloc(c)) != NULL)
		got++;
	return got;
}

static void dbg_free_bulk(struct uslab_cache *c, void *const *objs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (objs[i] != NULL)
			dbg_free(c, objs[i]);
}

/* Does @c take this layer's route? */
static bool dbg_wants_route(const struct uslab_cache *c, unsigned flags)
{
	return (flags & USLAB_DEBUG_MASK) != 0 || c->c_fail != NULL || debug_sample_period != 0 ||
	       __atomic_load_n(&c->c_limit, __ATOMIC_RELAXED) != 0 || USLAB_ASAN || VG_RUNNING();
}

static void dbg_route(struct uslab_cache *c, unsigned flags)
{
	bool routed = dbg_wants_route(c, flags);

	__atomic_store_n(&c->c_routed, routed, __ATOMIC_RELEASE);
	__atomic_store_n(&c->c_alloc_bulk, routed ? dbg_alloc_bulk : pcpu_alloc_bulk,
	                 __ATOMIC_RELEASE);
	__atomic_store_n(&c->c_free_bulk, routed ? dbg_free_bulk : pcpu_free_bulk,
	                 __ATOMIC_RELEASE);
	if (routed)
		pcpu_route(c, dbg_alloc, dbg_free);
	else
		pcpu_route(c, pcpu_alloc_slow, pcpu_free_slow);
}

/* ---- Switching ---- */

/* A report's epilogue (debug.c): the object's audit records. */
static void dbg_report_more(const struct uslab_cache *c, const void *obj, int fd)
{
	if (c == NULL || (c->c_debug & USLAB_DEBUG_AUDIT) == 0 || !slab_is_object(c, obj))
		return;
	uint32_t idx;
	struct slab *s = slab_locate(c, obj, &idx);
	struct audit_rec *a = __atomic_load_n(&s->s_audit, __ATOMIC_ACQUIRE);
	if (a == NULL)
		return;
	audit_print(fd, "last allocated", &a[2 * idx]);
	audit_print(fd, "last freed", &a[2 * idx + 1]);
}

/* Clear bitmap @map in every slab (a flag switched on: what it said of
 * objects before is not known any more). */
static void dbg_clear_map(struct uslab_cache *c, struct slab *s, void *arg)
{
	unsigned map = (unsigned)(uintptr_t)arg;

	if (s->s_dbg != NULL)
		for (uint32_t w = 0; w < c->c_slab_words; w++)
			__atomic_store_n(&s->s_dbg[(size_t)map * c->c_slab_words + w], 0,
			                 __ATOMIC_RELAXED);
}

/* Refuse what @c cannot take; EINVAL. */
static bool dbg_flags_ok(const struct uslab_cache *c, unsigned flags)
{
	if ((flags & ~USLAB_DEBUG_MASK) != 0)
		return false;
	if ((flags & USLAB_DEBUG_REDZONE) != 0 && c->c_rz == 0)
		return false; /* no byte after the objects */
	if ((flags & USLAB_DEBUG_POISON) != 0 && c->c_ctor != NULL)
		return false; /* the constructed state is the cache's */
	return true;
}

/* debug_lock held. */
static int dbg_set_locked(struct uslab_cache *c, unsigned flags)
{
	unsigned old = c->c_debug;

	if (!dbg_flags_ok(c, flags)) {
		errno = EINVAL;
		return -1;
	}
	if ((flags & USLAB_DEBUG_AUDIT) != 0) {
		audit_init();
		__atomic_store_n(&debug_report_more, dbg_report_more, __ATOMIC_RELEASE);
	}
	if ((flags & USLAB_DEBUG_MASK) != 0 &&
	    slab_debug_attach(c, (flags & USLAB_DEBUG_AUDIT) != 0) != 0)
		return -1; /* ENOMEM */
	/* What a bit said before a flag went on is not known: start afresh. */
	unsigned track = USLAB_DEBUG_CHECKS | USLAB_DEBUG_AUDIT;
	slab_lock(c);
	if ((flags & track) != 0 && (old & track) == 0) {
		slab_walk_locked(c, dbg_clear_map, (void *)(uintptr_t)DBG_KNOWN);
		slab_walk_locked(c, dbg_clear_map, (void *)(uintptr_t)DBG_OUT);
	}
	if ((flags & USLAB_DEBUG_POISON) != 0 && (old & USLAB_DEBUG_POISON) == 0)
		slab_walk_locked(c, dbg_clear_map, (void *)(uintptr_t)DBG_POISON);
	slab_unlock(c);
	__atomic_store_n(&c->c_debug, flags, __ATOMIC_RELEASE);
	dbg_route(c, flags);
	return 0;
}

int uslab_cache_set_debug(struct uslab_cache *c, unsigned flags)
{
	if (c == NULL || (c->c_flags & CACHE_INTERNAL) != 0) {
		errno = EINVAL;
		return -1;
	}
	if (pgsrc_busy != 0) {
		errno = EDEADLK;
		return -1;
	}
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	lock_take(&debug_lock);
	int ret = dbg_set_locked(c, flags);
	int err = errno;
	lock_drop(&debug_lock);
	pthread_setcancelstate(old, NULL);
	errno = err;
	return ret;
}

void *debug_obj_out(struct uslab_cache *c, void *obj)
{
	if (__atomic_load_n(&c->c_debug, __ATOMIC_RELAXED) == 0 && !debug_tools)
		return obj;
	return dbg_out(c, obj);
}

void debug_obj_in(struct uslab_cache *c, void *obj)
{
	unsigned flags = __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED);
	uint32_t idx;
	struct slab *s = slabmap_lookup(obj);

	if (flags == 0 && !debug_tools)
		return;
	slab_check_free_at(c, obj, s, &idx);
	dbg_in(c, obj, flags, s, idx);
}

int debug_set_limit(struct uslab_cache *c, uint64_t max, uint64_t held)
{
	int old;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	lock_take(&debug_lock);
	if (__atomic_load_n(&c->c_limit, __ATOMIC_RELAXED) == 0)
		__atomic_store_n(&c->c_limit_held, (int64_t)held, __ATOMIC_RELAXED);
	/* The count starts at what is held, then the limit, then the route
	 * (dbg_wants_route reads the limit). An object the fast route takes
	 * back meanwhile stays counted: the count errs high, never low. */
	if (max != 0 && __atomic_load_n(&c->c_limit, __ATOMIC_RELAXED) == 0) {
		__atomic_store_n(&c->c_limit, max, __ATOMIC_RELEASE);
		dbg_route(c, __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED));
	} else {
		__atomic_store_n(&c->c_limit, max, __ATOMIC_RELEASE);
		if (max == 0)
			dbg_route(c, __atomic_load_n(&c->c_debug, __ATOMIC_RELAXED));
	}
	lock_drop(&debug_lock);
	pthread_setcancelstate(old, NULL);
	return 0;
}

/* ---- fork ---- */

void debug_atfork_prepare(void)
{
	lock_take(&debug_lock);
}

void debug_atfork_release(void)
{
	lock_drop(&debug_lock);
}

/* ---- Create and destroy ---- */

size_t debug_redzone_bytes(unsigned flags, size_t size)
{
	(void)size;
	return (flags & USLAB_DEBUG_REDZONE) != 0 ? DBG_RZ_MIN : 0;
}

int debug_cache_init(struct uslab_cache *c, unsigned flags)
{
	struct dbg_fail_rule rule;

	debug_tools = USLAB_ASAN || VG_RUNNING();
	debug_sample_period = debug_conf_sample();
	if (debug_sample_period != 0)
		sample_init(debug_sample_period);
	c->c_alloc_bulk = pcpu_alloc_bulk;
	c->c_free_bulk = pcpu_free_bulk;
	if ((c->c_flags & CACHE_INTERNAL) != 0)
		return 0; /* the magazines' caches: through their slab layer only */
	if (debug_conf_fail(c->c_name, &rule)) {
		struct dbg_fail *f = meta_alloc(sizeof *f);
		if (f == NULL)
			return -1;
		f->f_rule = rule;
		f->f_rng = rule.r_seed;
		c->c_fail = f;
	}
	flags &= USLAB_DEBUG_MASK;
	lock_take(&debug_lock);
	int ret = dbg_set_locked(c, flags);
	lock_drop(&debug_lock);
	return ret;
}

void debug_cache_fini(struct uslab_cache *c)
{
	meta_free(c->c_fail, sizeof *c->c_fail);
	c->c_fail = NULL;
}
