/* SPDX-License-Identifier: MIT */
/* Items: their caches, the hash table, CAS, expiry, eviction and the memory limit. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-bp.h>

#include "uslab.h"
#include "mc.h"

/*
 * Design
 *
 * 1. An item is one object: a 32-byte header, the key, the value (no
 *    "\r\n": the protocols add it as they write). Its cache is the item
 *    class that holds it: 48 bytes to 2 KiB in steps of 8 (a class is a
 *    cache's metadata until it is used), then steps of a 32nd up to 4
 *    KiB and a 16th up to ITEM_INLINE_MAX (341 classes; under 1%, 3%,
 *    then 6% lost to rounding),
 *    each a uslab cache of its own ("item-80"), so `stats slabs` lists uslab's caches and uslabtop
 *    shows them. A larger value lives in uslab's size classes and the
 *    item (class "item-large") points at it. The header keeps no LRU
 *    links: eviction is CLOCK over the hash table (§4), which saves the
 *    16 bytes memcached spends per item on its lists.
 *
 * 2. The hash table: chains through the items' first word, 2^power
 *    buckets, at most two items per bucket on average before it doubles.
 *    Lookups take no lock: an RCU read section (liburcu-bp) and a
 *    sequence count that a resize makes odd. Items are unlinked with one
 *    release store and freed with uslab_cache_free_rcu, so a reader on a
 *    chain never reads freed memory. Writers lock one of ITEM_STRIPES
 *    locks (bucket & (ITEM_STRIPES - 1): the same stripe at every table
 *    size, which starts at ITEM_STRIPES buckets); a resize holds them
 *    all, relinks every item into the new table and frees the old one
 *    after a grace period. A reader that misses while a resize ran (the
 *    count moved) looks again under its stripe's lock.
 *
 * 3. A store never changes a linked item in place (bar exptime, by
 *    touch, one aligned store): append, incr and the rest build a new
 *    item and swap it in, so a reader sees the old value or the new one,
 *    never half of each. CAS values come from one counter; flush_all
 *    records the counter at the moment it takes effect, and an item whose
 *    CAS is not above it is gone (a delayed flush waits for the clock).
 *
 * 4. Memory. items_mem_used() is what the item objects take, as their
 *    caches' object sizes (and large values' usable sizes). Past -m an
 *    allocation evicts: a clock hand walks the buckets, an item touched
 *    since the hand last passed loses its mark, one without is evicted.
 *    Expired and flushed items it meets are reclaimed, and the crawler
 *    (the same walk, in the maintenance thread) reclaims them in the
 *    background. With -M the allocation fails instead. What uslab holds
 *    for the items (items_mem_held: the item caches' slabs, from
 *    uslab_cache_stats) is read every 200 ms: past -m the item caches
 *    are reaped, and what they still hold beyond the objects counts
 *    against -m too, up to an eighth of it (mem_over), so -m bounds the
 *    memory, not just the objects, without evicting the cache empty.
 */

#define ITEM_HDR 32
#define ITEM_INLINE_MAX (256u << 10)
#define ITEM_STRIPES 1024u
#define ITEM_POWER_START 16 /* at least log2(ITEM_STRIPES): a stripe per bucket's residue */
#define ITEM_POWER_MAX 30
#define ITEM_MAX_CLASSES 384

enum {
	IT_LINKED = 1,
	IT_ACCESSED = 2, /* CLOCK's mark */
	IT_FETCHED = 4,
	IT_LARGE = 8,
};

struct item {
	struct item *hnext; /* the chain (readers follow it under RCU) */
	uint64_t cas;
	uint32_t exptime; /* mc_now time, 0 never (touch stores it in place) */
	uint32_t flags;
	uint32_t nbytes;
	uint8_t nkey;
	uint8_t iflags; /* atomic */
	uint16_t cls;
	char data[]; /* key, value; or key, then struct large */
};

_Static_assert(offsetof(struct item, data) == ITEM_HDR, "the item header is 32 bytes");

/* After the key of a large item. */
struct large {
	struct rcu_head head;
	char *value;        /* uslab_alloc */
	struct item *owner; /* the header, freed with the value (large_free_cb) */
};

struct item_class {
	uint32_t size;
	struct uslab_cache *cache;
	uint64_t items, evicted, expired_unfetched, evicted_unfetched, reclaimed; /* atomic */
	char name[24];
};

struct table {
	uint32_t power;
	struct item *b[]; /* atomic pointers */
};

_Static_assert(((size_t)1 << ITEM_POWER_START) >= ITEM_STRIPES, "a stripe per bucket residue");

static struct item_class classes[ITEM_MAX_CLASSES];
static unsigned nclasses;
static unsigned large_cls; /* the class of large items' headers */
static struct table *tab;  /* atomic: readers load it with acquire */
static uint64_t tab_seq;   /* odd while a resize relinks */
static pthread_mutex_t stripes[ITEM_STRIPES];
static uint64_t cas_next = 1;
static uint64_t flush_cas; /* items with cas <= this are gone */
static uint32_t flush_at;  /* a delayed flush: mc_now when it takes effect (0: none) */
static uint64_t mem_objs;  /* bytes of item objects allocated (atomic) */
static uint64_t mem_large; /* of which large values (atomic) */
static uint64_t mem_held;  /* what uslab holds for items (held_update) */
static uint64_t mem_slack; /* of which beyond the objects: counted against -m */
static uint64_t hand;      /* the clock hand (a bucket index, atomic) */
static pthread_t maint;
static volatile int maint_stop;

/* ---- Hashing ---- */

static uint64_t hash_key(const char *k, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, k + i, 8);
		h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 31;
	}
	uint64_t t = 0;
	memcpy(&t, k + i, n - i);
	h = (h ^ t) * 0x94d049bb133111ebull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	return h ^ (h >> 32);
}

/* ---- Classes ---- */

static int classes_init(void)
{
	uint32_t size = 48;

	while (nclasses < ITEM_MAX_CLASSES - 1) {
		struct item_class *k = &classes[nclasses];
		k->size = size;
		snprintf(k->name, sizeof k->name, "item-%u", size);
		nclasses++; /* its cache at its first item (class_cache) */
		if (size >= ITEM_INLINE_MAX)
			break;
		uint32_t step = size < 2048   ? 8
		                : size < 4096 ? (size / 32) & ~7u
		                              : (size / 16) & ~7u;
		size += step;
		if (size > ITEM_INLINE_MAX)
			size = ITEM_INLINE_MAX;
	}
	large_cls = nclasses;
	struct item_class *k = &classes[nclasses];
	k->size = ITEM_HDR + MC_KEY_MAX + sizeof(struct large);
	k->size = (k->size + 7) & ~7u;
	snprintf(k->name, sizeof k->name, "item-large");
	k->cache = uslab_cache_create(k->name, k->size, &(struct uslab_cache_conf){.align = 8});
	if (k->cache == NULL)
		return -1;
	nclasses++;
	return 0;
}

/* Class @i's cache, made at its first use (a cache costs its metadata). */
static struct uslab_cache *class_cache(unsigned i)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct item_class *k = &classes[i];
	struct uslab_cache *c = __atomic_load_n(&k->cache, __ATOMIC_ACQUIRE);

	if (c != NULL)
		return c;
	pthread_mutex_lock(&lock);
	c = k->cache;
	if (c == NULL) {
		c = uslab_cache_create(k->name, k->size, &(struct uslab_cache_conf){.align = 8});
		__atomic_store_n(&k->cache, c, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&lock);
	return c;
}

static unsigned class_of(size_t total)
{
	unsigned lo = 0, hi = large_cls; /* first class with size >= total */

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (classes[mid].size >= total)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static struct large *item_large(struct item *it)
{
	return (struct large *)(it->data + ((it->nkey + 7u) & ~7u));
}

static size_t item_bytes(const struct item *it)
{
	size_t n = classes[it->cls].size;

	if (it->iflags & IT_LARGE)
		n += uslab_usable_size(
			((struct large *)(it->data + ((it->nkey + 7u) & ~7u)))->value);
	return n;
}

/* Count @it's bytes in (@in) or out. */
static void mem_account(const struct item *it, bool in)
{
	uint64_t n = item_bytes(it), big = n - classes[it->cls].size;

	if (in) {
		__atomic_fetch_add(&mem_objs, n, __ATOMIC_RELAXED);
		__atomic_fetch_add(&mem_large, big, __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_sub(&mem_objs, n, __ATOMIC_RELAXED);
		__atomic_fetch_sub(&mem_large, big, __ATOMIC_RELAXED);
	}
}

/* ---- The clock and exptime ---- */

uint32_t mc_exptime(int64_t exptime)
{
	if (exptime == 0)
		return MC_NEVER;
	if (exptime < 0)
		return 1; /* in the past (mc_now starts at 2) */
	if (exptime <= 60 * 60 * 24 * 30)
		return mc_now + (uint32_t)exptime;
	if (exptime <= mc_started + 1)
		return 1;
	int64_t rel = exptime - mc_started;
	return rel > UINT32_MAX ? UINT32_MAX : (uint32_t)rel;
}

static bool item_dead(const struct item *it)
{
	uint32_t e = __atomic_load_n(&it->exptime, __ATOMIC_RELAXED);

	return (e != 0 && e <= mc_now) || it->cas <= __atomic_load_n(&flush_cas, __ATOMIC_ACQUIRE);
}

/* ---- Allocation ---- */

static void item_free_now(struct item *it);

/* A grace period after a large item was unlinked: its value and header. */
static void large_free_cb(struct rcu_head *h)
{
	struct large *l = caa_container_of(h, struct large, head);
	struct item *it = l->owner;

	uslab_free(l->value);
	uslab_cache_free(classes[it->cls].cache, it);
}

static bool evict_some(size_t want);

/* Would @need bytes more pass -m? The objects, and what uslab holds for
 * them beyond their sizes (partly empty slabs, frees waiting for a grace
 * period), as held_update last saw it. */
static bool objs_fit(size_t need)
{
	return __atomic_load_n(&mem_objs, __ATOMIC_RELAXED) + need <= mc_set.maxbytes;
}

static bool mem_over(size_t need)
{
	uint64_t slack = __atomic_load_n(&mem_slack, __ATOMIC_RELAXED);

	/* At most an eighth of -m: an eviction frees an object into a slab
	 * still in use, which gives nothing back until the slab is empty, so
	 * counting all the slack would evict the cache down to nothing. */
	if (slack > mc_set.maxbytes / 8)
		slack = mc_set.maxbytes / 8;
	return __atomic_load_n(&mem_objs, __ATOMIC_RELAXED) + slack + need > mc_set.maxbytes;
}

struct item *item_alloc(const char *key, size_t nkey, uint32_t flags, uint32_t exptime,
                        size_t nbytes)
{
	if (nbytes > mc_set.item_max || nkey > MC_KEY_MAX) {
		errno = E2BIG;
		return NULL;
	}
	size_t total = ITEM_HDR + nkey + nbytes;
	bool large = total > ITEM_INLINE_MAX;
	unsigned cls = large ? large_cls : class_of(total);
	size_t need = classes[cls].size + (large ? nbytes : 0);

	/* -M fails a store when the objects would not fit (what a delete
	 * frees fits again at once). Without it, past -m the clock evicts,
	 * and what it cannot win back of uslab's slack does not fail the
	 * store: only the objects must fit then. */
	bool refuse = false;
	if (mc_set.no_evict)
		refuse = !objs_fit(need);
	else if (mem_over(need) && !evict_some(need))
		refuse = !objs_fit(need);
	if (refuse) {
		__atomic_fetch_add(&mc_g.outofmemory, 1, __ATOMIC_RELAXED);
		errno = ENOMEM;
		return NULL;
	}
	struct uslab_cache *kc = class_cache(cls);
	struct item *it = kc != NULL ? uslab_cache_alloc(kc) : NULL;
	if (it == NULL) {
		__atomic_fetch_add(&mc_g.outofmemory, 1, __ATOMIC_RELAXED);
		errno = ENOMEM;
		return NULL;
	}
	memset(it, 0, ITEM_HDR);
	it->nkey = (uint8_t)nkey;
	it->cls = (uint16_t)cls;
	it->flags = flags;
	it->exptime = exptime;
	it->nbytes = (uint32_t)nbytes;
	memcpy(it->data, key, nkey);
	if (large) {
		struct large *l = item_large(it);
		l->value = uslab_alloc(nbytes ? nbytes : 1);
		if (l->value == NULL) {
			uslab_cache_free(classes[cls].cache, it);
			__atomic_fetch_add(&mc_g.outofmemory, 1, __ATOMIC_RELAXED);
			errno = ENOMEM;
			return NULL;
		}
		l->owner = it;
		it->iflags = IT_LARGE;
	}
	mem_account(it, true);
	return it;
}

char *item_value(struct item *it)
{
	return (it->iflags & IT_LARGE) ? item_large(it)->value : it->data + it->nkey;
}

static const char *item_cvalue(const struct item *it)
{
	return item_value((struct item *)it);
}

/* Never linked (or unlinked and never seen by a reader): free at once. */
static void item_free_now(struct item *it)
{
	mem_account(it, false);
	if (it->iflags & IT_LARGE)
		uslab_free(item_large(it)->value);
	uslab_cache_free(classes[it->cls].cache, it);
}

void item_discard(struct item *it)
{
	if (it != NULL)
		item_free_now(it);
}

/* Unlinked: free once no reader can hold it. */
static void item_retire(struct item *it)
{
	mem_account(it, false);
	__atomic_fetch_sub(&classes[it->cls].items, 1, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&mc_g.curr_items, 1, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&mc_g.bytes, (uint64_t)it->nkey + it->nbytes, __ATOMIC_RELAXED);
	if (it->iflags & IT_LARGE) {
		/* The header holds the rcu_head: the callback frees both. */
		urcu_bp_call_rcu(&item_large(it)->head, large_free_cb);
		return;
	}
	uslab_cache_free_rcu(classes[it->cls].cache, it);
}

/* ---- The table ---- */

static struct table *table_new(uint32_t power)
{
	size_t n = (size_t)1 << power;
	struct table *t = uslab_calloc(1, sizeof *t + n * sizeof(struct item *));

	if (t != NULL)
		t->power = power;
	return t;
}

static size_t bucket_of(const struct table *t, uint64_t h)
{
	return (size_t)(h & (((uint64_t)1 << t->power) - 1));
}

static pthread_mutex_t *stripe_of(uint64_t h)
{
	return &stripes[h & (ITEM_STRIPES - 1)];
}

static bool key_is(const struct item *it, const char *key, size_t nkey)
{
	return it->nkey == nkey && memcmp(it->data, key, nkey) == 0;
}

/* With the stripe held: the link that points at @key's item (or at the
 * chain's end). */
static struct item **find_link(struct table *t, uint64_t h, const char *key, size_t nkey)
{
	struct item **p = &t->b[bucket_of(t, h)];

	for (struct item *it; (it = *p) != NULL; p = &it->hnext)
		if (key_is(it, key, nkey))
			return p;
	return p;
}

/* With the stripe held: unlink *@p (an item), count why. */
static void unlink_at(struct item **p)
{
	struct item *it = *p;

	__atomic_store_n(p, it->hnext, __ATOMIC_RELEASE);
	__atomic_and_fetch(&it->iflags, (uint8_t)~IT_LINKED, __ATOMIC_RELAXED);
	item_retire(it);
}

/* With the stripe held: link @it in place of *@p (NULL: at the end). */
static void link_at(struct item **p, struct item *it)
{
	struct item *old = *p;

	it->hnext = old != NULL ? old->hnext : NULL;
	it->iflags |= IT_LINKED | IT_ACCESSED;
	if (it->cas == 0)
		it->cas = __atomic_fetch_add(&cas_next, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&classes[it->cls].items, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&mc_g.curr_items, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&mc_g.total_items, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&mc_g.bytes, (uint64_t)it->nkey + it->nbytes, __ATOMIC_RELAXED);
	__atomic_store_n(p, it, __ATOMIC_RELEASE);
	if (old != NULL) {
		__atomic_and_fetch(&old->iflags, (uint8_t)~IT_LINKED, __ATOMIC_RELAXED);
		item_retire(old);
	}
}

/* Lock the stripe of @h; the table it may be read under. */
static struct table *lock_key(uint64_t h)
{
	pthread_mutex_lock(stripe_of(h));
	return __atomic_load_n(&tab, __ATOMIC_ACQUIRE);
}

static void unlock_key(uint64_t h)
{
	pthread_mutex_unlock(stripe_of(h));
}

/* With the stripe held: the live item of @key (a dead one is unlinked). */
static struct item **find_live(struct table *t, uint64_t h, const char *key, size_t nkey)
{
	struct item **p = find_link(t, h, key, nkey);

	if (*p != NULL && item_dead(*p)) {
		struct item *it = *p;
		__atomic_fetch_add(&classes[it->cls].reclaimed, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&mc_g.reclaimed, 1, __ATOMIC_RELAXED);
		if (!(it->iflags & IT_FETCHED) && it->exptime != 0 && it->exptime <= mc_now)
			__atomic_fetch_add(&classes[it->cls].expired_unfetched, 1,
			                   __ATOMIC_RELAXED);
		unlink_at(p);
		p = find_link(t, h, key, nkey);
	}
	return p;
}

static int grow_wanted; /* atomic: a store asks the maintenance thread to resize */

static void maybe_grow(void)
{
	struct table *t = __atomic_load_n(&tab, __ATOMIC_RELAXED);

	if (t->power < ITEM_POWER_MAX &&
	    __atomic_load_n(&mc_g.curr_items, __ATOMIC_RELAXED) > ((uint64_t)2 << t->power))
		__atomic_store_n(&grow_wanted, 1, __ATOMIC_RELAXED);
}

/* The maintenance thread: double the table with every stripe held. */
static void table_resize(void)
{
	struct table *old = tab, *t = table_new(old->power + 1);

	if (t == NULL)
		return;
	for (unsigned i = 0; i < ITEM_STRIPES; i++)
		pthread_mutex_lock(&stripes[i]);
	__atomic_fetch_add(&tab_seq, 1, __ATOMIC_ACQ_REL);
	size_t n = (size_t)1 << old->power;
	for (size_t i = 0; i < n; i++) {
		struct item *it = old->b[i];
		while (it != NULL) {
			struct item *next = it->hnext;
			struct item **b = &t->b[bucket_of(t, hash_key(it->data, it->nkey))];
			__atomic_store_n(&it->hnext, *b, __ATOMIC_RELEASE);
			*b = it;
			it = next;
		}
	}
	__atomic_store_n(&tab, t, __ATOMIC_RELEASE);
	__atomic_store_n(&mc_g.hash_power, t->power, __ATOMIC_RELAXED);
	__atomic_store_n(&mc_g.hash_bytes, ((uint64_t)8 << t->power), __ATOMIC_RELAXED);
	__atomic_fetch_add(&tab_seq, 1, __ATOMIC_ACQ_REL);
	for (unsigned i = ITEM_STRIPES; i-- > 0;)
		pthread_mutex_unlock(&stripes[i]);
	urcu_bp_synchronize_rcu();
	uslab_free(old);
}

/* ---- Readers ---- */

static void view_of(const struct item *it, struct item_view *v)
{
	uint8_t f = __atomic_load_n(&it->iflags, __ATOMIC_RELAXED);

	v->key = it->data;
	v->nkey = it->nkey;
	v->value = item_cvalue(it);
	v->nbytes = it->nbytes;
	v->flags = it->flags;
	v->exptime = __atomic_load_n(&it->exptime, __ATOMIC_RELAXED);
	v->cas = mc_set.cas_off ? 0 : it->cas;
	v->last_access = 0;
	v->fetched = (f & IT_FETCHED) != 0;
}

/* An access: the clock's mark and the fetched bit, set only if not yet
 * (no store on a cache line every reader shares otherwise). */
static void item_mark(struct item *it)
{
	uint8_t f = __atomic_load_n(&it->iflags, __ATOMIC_RELAXED);

	if ((f & (IT_ACCESSED | IT_FETCHED)) != (IT_ACCESSED | IT_FETCHED))
		__atomic_or_fetch(&it->iflags, IT_ACCESSED | IT_FETCHED, __ATOMIC_RELAXED);
}

/* Lock-free: the item of @key in the current table, or NULL. */
static struct item *lookup_rcu(uint64_t h, const char *key, size_t nkey, bool *raced)
{
	uint64_t seq = __atomic_load_n(&tab_seq, __ATOMIC_ACQUIRE);
	struct table *t = __atomic_load_n(&tab, __ATOMIC_ACQUIRE);

	for (struct item *it = __atomic_load_n(&t->b[bucket_of(t, h)], __ATOMIC_ACQUIRE);
	     it != NULL; it = __atomic_load_n(&it->hnext, __ATOMIC_ACQUIRE))
		if (key_is(it, key, nkey))
			return it;
	*raced = (seq & 1) != 0 || __atomic_load_n(&tab_seq, __ATOMIC_ACQUIRE) != seq;
	return NULL;
}

bool item_get(const char *key, size_t nkey, bool touch, uint32_t exptime,
              void (*fn)(void *arg, const struct item_view *v), void *arg)
{
	uint64_t h = hash_key(key, nkey);
	struct item_view v;
	bool raced = false, hit = false;

	urcu_bp_read_lock();
	struct item *it = lookup_rcu(h, key, nkey, &raced);
	if (it == NULL && raced) {
		/* A resize moved the chains under us: look again with the
		 * stripe held (the resize holds it while it relinks). */
		struct table *t = lock_key(h);
		it = *find_link(t, h, key, nkey);
		unlock_key(h);
	}
	if (it != NULL && item_dead(it)) {
		struct mc_tstats *ts = mc_tstats();
		if (it->cas <= __atomic_load_n(&flush_cas, __ATOMIC_ACQUIRE))
			ts->get_flushed++;
		else
			ts->get_expired++;
		it = NULL;
		/* Gone at once, as memcached drops it (find_live unlinks it). */
		struct table *t = lock_key(h);
		(void)find_live(t, h, key, nkey);
		unlock_key(h);
	}
	if (it != NULL) {
		if (touch)
			__atomic_store_n(&it->exptime, exptime, __ATOMIC_RELAXED);
		view_of(it, &v);
		if (touch)
			v.exptime = exptime;
		item_mark(it);
		fn(arg, &v);
		hit = true;
	}
	urcu_bp_read_unlock();
	return hit;
}

/* ---- Writers ---- */

enum mc_res item_store(struct item *it, enum mc_store op, uint64_t cas, uint64_t *cas_out)
{
	uint64_t h = hash_key(it->data, it->nkey);
	struct table *t = lock_key(h);
	struct item **p = find_live(t, h, it->data, it->nkey);
	struct item *old = *p;
	enum mc_res r = MC_STORED;

	switch (op) {
	case MC_ADD:
		if (old != NULL) {
			item_mark(old); /* memcached bumps it */
			r = MC_NOT_STORED;
		}
		break;
	case MC_REPLACE:
		if (old == NULL)
			r = MC_NOT_STORED;
		break;
	case MC_CAS:
		if (old == NULL)
			r = MC_NOT_FOUND;
		else if (old->cas != cas)
			r = MC_EXISTS;
		break;
	case MC_APPEND:
	case MC_PREPEND:
		if (old == NULL) {
			r = MC_NOT_STORED;
			break;
		}
		if (cas != 0 && old->cas != cas) {
			r = MC_EXISTS;
			break;
		}
		{
			/* it holds the new part; build old + new in a new item */
			size_t n = (size_t)old->nbytes + it->nbytes;
			struct item *both =
				item_alloc(it->data, it->nkey, old->flags, old->exptime, n);
			if (both == NULL) {
				r = errno == E2BIG ? MC_TOO_LARGE : MC_NO_MEMORY;
				break;
			}
			char *d = item_value(both);
			if (op == MC_APPEND) {
				memcpy(d, item_cvalue(old), old->nbytes);
				memcpy(d + old->nbytes, item_cvalue(it), it->nbytes);
			} else {
				memcpy(d, item_cvalue(it), it->nbytes);
				memcpy(d + it->nbytes, item_cvalue(old), old->nbytes);
			}
			item_free_now(it);
			it = both;
		}
		break;
	case MC_SET:
		break;
	}
	if (r == MC_STORED) {
		it->cas = __atomic_fetch_add(&cas_next, 1, __ATOMIC_RELAXED);
		if (cas_out != NULL)
			*cas_out = mc_set.cas_off ? 0 : it->cas;
		link_at(p, it);
		it = NULL;
	}
	unlock_key(h);
	if (it != NULL)
		item_free_now(it);
	if (r == MC_STORED)
		maybe_grow();
	return r;
}

enum mc_res item_delete(const char *key, size_t nkey, uint64_t cas)
{
	uint64_t h = hash_key(key, nkey);
	struct table *t = lock_key(h);
	struct item **p = find_live(t, h, key, nkey);
	enum mc_res r = MC_NOT_FOUND;

	if (*p != NULL) {
		if (cas != 0 && (*p)->cas != cas) {
			r = MC_EXISTS;
		} else {
			unlink_at(p);
			r = MC_DELETED;
		}
	}
	unlock_key(h);
	return r;
}

enum mc_res item_touch(const char *key, size_t nkey, uint32_t exptime)
{
	uint64_t h = hash_key(key, nkey);
	struct table *t = lock_key(h);
	struct item **p = find_live(t, h, key, nkey);
	enum mc_res r = MC_NOT_FOUND;

	if (*p != NULL) {
		__atomic_store_n(&(*p)->exptime, exptime, __ATOMIC_RELAXED);
		item_mark(*p);
		r = MC_TOUCHED;
	}
	unlock_key(h);
	return r;
}

/* The decimal value of @s (@n bytes): memcached's rule, digits only
 * (a trailing "\r\n" or spaces stop it), at most 20 digits. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < n && s[i] == ' ')
		i++;
	if (i == n || s[i] < '0' || s[i] > '9')
		return false;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	for (; i < n; i++)
		if (s[i] != ' ' && s[i] != '\r' && s[i] != '\n' && s[i] != '\0')
			return false;
	*out = v;
	return true;
}

enum mc_res item_delta(const char *key, size_t nkey, bool incr, uint64_t delta, bool create,
                       uint64_t initial, uint32_t exptime, uint64_t cas, uint64_t *value,
                       uint64_t *cas_out)
{
	uint64_t h = hash_key(key, nkey);
	struct table *t = lock_key(h);
	struct item **p = find_live(t, h, key, nkey);
	struct item *old = *p;
	enum mc_res r = MC_STORED;
	uint64_t v;
	char num[24];

	if (old == NULL && !create) {
		r = MC_NOT_FOUND;
		goto out;
	}
	if (old != NULL && cas != 0 && old->cas != cas) {
		r = MC_EXISTS;
		goto out;
	}
	if (old == NULL) {
		v = initial;
	} else {
		if (old->nbytes > 20 || !parse_u64(item_cvalue(old), old->nbytes, &v)) {
			r = MC_NON_NUMERIC;
			goto out;
		}
		if (incr)
			v += delta; /* wraps at 64 bits, as memcached */
		else
			v = delta > v ? 0 : v - delta;
		exptime = old->exptime;
	}
	int n = snprintf(num, sizeof num, "%llu", (unsigned long long)v);
	struct item *it = item_alloc(key, nkey, old != NULL ? old->flags : 0, exptime, (size_t)n);
	if (it == NULL) {
		r = MC_NO_MEMORY;
		goto out;
	}
	memcpy(item_value(it), num, (size_t)n);
	it->cas = __atomic_fetch_add(&cas_next, 1, __ATOMIC_RELAXED);
	link_at(p, it);
	*value = v;
	if (cas_out != NULL)
		*cas_out = mc_set.cas_off ? 0 : it->cas;
out:
	unlock_key(h);
	return r;
}

void item_flush(uint32_t delay)
{
	if (delay == 0) {
		__atomic_store_n(&flush_at, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&flush_cas, __atomic_fetch_add(&cas_next, 1, __ATOMIC_RELAXED),
		                 __ATOMIC_RELEASE);
		return;
	}
	__atomic_store_n(&flush_at, mc_now + delay, __ATOMIC_RELAXED);
}

/* ---- Eviction and the crawler ---- */

/* Walk @nb buckets from the hand: reclaim the dead, clear marks, and
 * (@evict) evict unmarked items until @want bytes went. Returns the bytes
 * that went. */
static size_t clock_walk(size_t nb, bool evict, size_t want)
{
	size_t freed = 0;

	for (size_t k = 0; k < nb && (!evict || freed < want); k++) {
		uint64_t b = __atomic_fetch_add(&hand, 1, __ATOMIC_RELAXED);
		/* A try: the caller may hold a stripe (an append's allocation). */
		if (pthread_mutex_trylock(stripe_of(b)) != 0)
			continue;
		struct table *t = __atomic_load_n(&tab, __ATOMIC_ACQUIRE);
		struct item **p = &t->b[bucket_of(t, b)];
		struct item *it;
		while ((it = *p) != NULL) {
			struct item_class *kc = &classes[it->cls];
			if (item_dead(it)) {
				freed += item_bytes(it);
				__atomic_fetch_add(&kc->reclaimed, 1, __ATOMIC_RELAXED);
				__atomic_fetch_add(&mc_g.crawler_reclaimed, 1, __ATOMIC_RELAXED);
				unlink_at(p);
				continue;
			}
			uint8_t f = __atomic_load_n(&it->iflags, __ATOMIC_RELAXED);
			if (evict && !(f & IT_ACCESSED) && freed < want) {
				freed += item_bytes(it);
				__atomic_fetch_add(&kc->evicted, 1, __ATOMIC_RELAXED);
				__atomic_fetch_add(&mc_g.evictions, 1, __ATOMIC_RELAXED);
				if (!(f & IT_FETCHED)) {
					__atomic_fetch_add(&kc->evicted_unfetched, 1,
					                   __ATOMIC_RELAXED);
					__atomic_fetch_add(&mc_g.evicted_unfetched, 1,
					                   __ATOMIC_RELAXED);
				}
				unlink_at(p);
				continue;
			}
			if (evict && (f & IT_ACCESSED))
				__atomic_and_fetch(&it->iflags, (uint8_t)~IT_ACCESSED,
				                   __ATOMIC_RELAXED);
			p = &it->hnext;
		}
		unlock_key(b);
	}
	return freed;
}

/* Make room for @want bytes: at most two sweeps of the clock over the
 * table (the first clears every mark). */
static bool evict_some(size_t want)
{
	struct table *t = __atomic_load_n(&tab, __ATOMIC_ACQUIRE);
	size_t n = (size_t)1 << t->power, left = 2 * n + 1;

	while (left > 0) {
		size_t step = left < 64 ? left : 64;
		clock_walk(step, true, want);
		left -= step;
		if (!mem_over(want))
			return true;
	}
	return !mem_over(want);
}

uint64_t items_mem_used(void)
{
	return __atomic_load_n(&mem_objs, __ATOMIC_RELAXED);
}

uint64_t items_mem_held(void)
{
	return __atomic_load_n(&mem_held, __ATOMIC_RELAXED);
}

/* The item caches' slabs, from uslab's own statistics, and the large
 * values (in the size classes, counted as their usable sizes). */
static uint64_t held_now(void)
{
	uint64_t held = __atomic_load_n(&mem_large, __ATOMIC_RELAXED);

	for (unsigned i = 0; i < nclasses; i++) {
		struct uslab_stats st;
		struct uslab_cache *c = __atomic_load_n(&classes[i].cache, __ATOMIC_ACQUIRE);
		if (c != NULL && uslab_cache_stats(c, &st) == 0)
			held += st.bytes_total - st.purged_slabs * st.slab_size;
	}
	return held;
}

/* Past -m the item caches are reaped first; what uslab still holds
 * beyond the objects then counts against -m (mem_over), so the clock
 * evicts until the memory uslab holds, not just the objects, fits. */
static void held_update(void)
{
	uint64_t held = held_now();

	if (held > mc_set.maxbytes) {
		for (unsigned i = 0; i < nclasses; i++)
			if (__atomic_load_n(&classes[i].cache, __ATOMIC_ACQUIRE) != NULL)
				uslab_cache_reap(classes[i].cache);
		held = held_now();
	}
	uint64_t objs = __atomic_load_n(&mem_objs, __ATOMIC_RELAXED);
	__atomic_store_n(&mem_held, held, __ATOMIC_RELAXED);
	__atomic_store_n(&mem_slack, held > objs ? held - objs : 0, __ATOMIC_RELAXED);
}

static void *maint_main(void *arg)
{
	(void)arg;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned tick = 0;

	while (!maint_stop) {
		struct timespec now;
		usleep(50 * 1000);
		clock_gettime(CLOCK_MONOTONIC, &now);
		__atomic_store_n(&mc_now, 2 + (uint32_t)(now.tv_sec - t0.tv_sec), __ATOMIC_RELAXED);
		uint32_t fa = __atomic_load_n(&flush_at, __ATOMIC_RELAXED);
		if (fa != 0 && fa <= mc_now)
			item_flush(0);
		if (__atomic_exchange_n(&grow_wanted, 0, __ATOMIC_RELAXED) != 0) {
			table_resize();
		}
		/* The crawler: a 16th of the table a second. */
		struct table *t = __atomic_load_n(&tab, __ATOMIC_ACQUIRE);
		size_t n = ((size_t)1 << t->power) / 320;
		clock_walk(n ? n : 1, false, 0);
		if (++tick % 4 == 0)
			held_update();
	}
	return NULL;
}

int items_init(void)
{
	for (unsigned i = 0; i < ITEM_STRIPES; i++)
		pthread_mutex_init(&stripes[i], NULL);
	if (classes_init() != 0)
		return -1;
	tab = table_new(ITEM_POWER_START);
	if (tab == NULL)
		return -1;
	mc_g.hash_power = tab->power;
	mc_g.hash_bytes = (uint64_t)8 << tab->power;
	mc_now = 2;
	return pthread_create(&maint, NULL, maint_main, NULL) == 0 ? 0 : -1;
}

void items_fini(void)
{
	maint_stop = 1;
	pthread_join(maint, NULL);
}

unsigned items_nclasses(void)
{
	return nclasses;
}

bool items_class(unsigned i, struct item_class_info *out)
{
	if (i >= nclasses)
		return false;
	struct item_class *k = &classes[i];
	out->size = k->size;
	out->items = __atomic_load_n(&k->items, __ATOMIC_RELAXED);
	out->evicted = __atomic_load_n(&k->evicted, __ATOMIC_RELAXED);
	out->expired_unfetched = __atomic_load_n(&k->expired_unfetched, __ATOMIC_RELAXED);
	out->evicted_unfetched = __atomic_load_n(&k->evicted_unfetched, __ATOMIC_RELAXED);
	out->reclaimed = __atomic_load_n(&k->reclaimed, __ATOMIC_RELAXED);
	out->oldest = 0;
	out->cache = __atomic_load_n(&k->cache, __ATOMIC_ACQUIRE);
	return true;
}
