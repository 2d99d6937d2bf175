/* SPDX-License-Identifier: MIT */
/* uslab: named caches of fixed-size objects for C programs on Linux. */
#ifndef USLAB_H
#define USLAB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define USLAB_API __attribute__((visibility("default")))
#else
#define USLAB_API
#endif

/*
 * Overview
 *
 * A cache hands out objects of one size. Objects come from slabs: blocks of
 * pages obtained from a page source (anonymous mmap by default). A cache may
 * have a constructor, run once when an object enters the cache (when its slab
 * is created), and a destructor, run once when it leaves (when its slab is
 * released: by uslab_cache_reap(), uslab_cache_destroy(), or when it stayed
 * empty long enough, see uslab_cache_reap()). Between those,
 * uslab_cache_alloc() and uslab_cache_free() hand the object out and take it
 * back in its constructed state: the allocator never writes into the bytes
 * of a free object.
 *
 * Thread safety: every function may be called from any thread, on any cache,
 * concurrently, except that a cache must not be used after (or while) it is
 * destroyed.
 *
 * Signals: uslab_cache_alloc() and uslab_cache_free() may be called from a
 * signal handler. On a thread that the signal interrupted inside uslab
 * (holding one of its locks), they never wait for a lock: an allocation
 * that its CPU's magazine cannot serve then fails with EDEADLK, and a free
 * that would need a lock is deferred and done when the interrupted call
 * returns (at most 16 such frees per interruption for a cache with a
 * ctor; any number without one). Creating, destroying and walking caches
 * there fail with EDEADLK. In the rseq mode, a hit takes no lock at all.
 *
 * Cancellation: no uslab function acts on a cancellation request while it
 * holds a lock; a ctor or dtor cancelled in the middle of a slab leaks
 * nothing (the objects constructed so far are destructed, the pages go
 * back).
 *
 * Misuse that would corrupt memory (freeing a pointer that is not an object
 * of the cache, freeing an object twice, using a cache from its own ctor or
 * dtor) is reported on stderr in one line naming the cache and the
 * pointer, and the process is aborted.
 */

/** Largest object size a cache accepts, in bytes (1 MiB). */
#define USLAB_MAX_SIZE ((size_t)1 << 20)

/** Largest name stored for a cache; longer names are truncated. */
#define USLAB_NAME_MAX 31

/* ---- Cache flags (struct uslab_cache_conf.flags) ---- */

/** Bypass the per-CPU layer: every alloc and free goes to the slab layer
 *  under the cache lock. Frees are checked for double free and foreign
 *  pointers at once, at the cost of speed. */
#define USLAB_NOMAGAZINE 0x1u

/*
 * Debug flags: a cache with any of them leaves the assembly hit path but
 * keeps its per-CPU magazines, and checks every object as it enters and
 * leaves them. They may be set at create, by USLAB_DEBUG (below), and
 * switched on and off at run time with uslab_cache_set_debug(), live
 * objects allowed: objects the cache did not see under a flag are not
 * checked by it (no false report for what was allocated before).
 * Reports: one line, "uslab: cache '<name>': object <ptr>: <what>", then
 * (with USLAB_DEBUG_AUDIT) the object's last allocation and free, then
 * abort(). <what> is one of: "double free", "not an object of this
 * cache", "interior pointer", "red zone overwritten (offset N)", "use
 * after free (offset N: <bytes>)"; "leak" is listed, not aborted, by
 * uslab_cache_validate().
 *
 * USLAB_DEBUG, read once at start, in the syntax of SLUB's slab_debug:
 * "FZPU" turns those letters on for every cache; "FZ,conn,item;P,req*"
 * sets them per cache (shell globs on the name; a later block wins over
 * an earlier one, a named one over one without names); "-" means none.
 * R (USLAB_RANDOM) is accepted there too.
 */
/** F: every free is checked at once: a double free (of any object the
 *  cache handed out under F, not only the one on top of a magazine), a
 *  pointer that is no object of this cache, an interior pointer. */
#define USLAB_DEBUG_CHECKS 0x10u
/** Z: a red zone after each object (8 bytes more per object, and the
 *  alignment padding), filled at allocation, checked at free and by
 *  uslab_cache_validate(). At run time (uslab_cache_set_debug), only a
 *  cache created with Z, or whose objects have padding, can take it. */
#define USLAB_DEBUG_REDZONE 0x20u
/** P: free objects are filled with 0x6b, checked when they are allocated
 *  again and by uslab_cache_validate(): a write after free is caught.
 *  Refused (EINVAL) for a cache with a ctor, whose free objects keep their
 *  constructed state (Bonwick's contract); USLAB_DEBUG leaves it out for
 *  those caches. */
#define USLAB_DEBUG_POISON 0x40u
/** U: the last allocation and free of each object are recorded (thread,
 *  time, stack), printed after a report, and uslab_cache_validate() lists
 *  the objects still allocated grouped by allocation stack. */
#define USLAB_DEBUG_AUDIT 0x80u
/** The four debug flags. */
#define USLAB_DEBUG_MASK 0xf0u
/** R: objects of a new slab are handed out in a random order (SLUB's
 *  SLAB_FREELIST_RANDOM), so that where an object lands cannot be
 *  predicted from the allocations before it. */
#define USLAB_RANDOM 0x100u
/** The memory of a freed object stays an object of this cache, constructed,
 *  for as long as any RCU reader that was in its read-side section at the
 *  free is still in it (Linux's SLAB_TYPESAFE_BY_RCU): empty slabs reach the
 *  page source, and their objects' dtors run, only after a grace period.
 *  Objects themselves are reused AT ONCE: a reader must re-check, after it
 *  found an object, that it is still the one it looked for (a key, a
 *  generation count), under a lock or refcount the ctor set up. See
 *  uslab_cache_free_rcu() for the other semantics. */
#define USLAB_TYPESAFE_BY_RCU 0x200u
/** All valid flags. Any other bit makes uslab_cache_create() fail (EINVAL). */
#define USLAB_FLAGS_MASK 0x3f1u

struct uslab_cache;

/**
 * A page source: where a cache's slabs come from. uslab calls get() for a
 * block of @size bytes aligned to @size (a power of two, at least the page
 * size) and put() to give a block back. purge() (optional, may be NULL)
 * says that the contents of a page-aligned range inside a block it gave
 * out are no longer needed, while the block stays in use: the source may
 * give the pages to the kernel (the range must stay readable and writable,
 * and reads before a write may give zeros or the old bytes). uslab purges
 * the empty slabs it keeps and, in uslab_cache_reap(), the pages that lie
 * wholly inside free objects (caches without a ctor or debug flags).
 * get() returns NULL when it has no memory; the cache then fails the
 * allocation with ENOMEM. The callbacks may be called concurrently from
 * several threads and must be thread-safe. The structure must outlive every
 * cache that uses it.
 */
struct uslab_pagesrc {
	const char *name;
	void *(*get)(void *arg, size_t size);
	void (*put)(void *arg, void *block, size_t size);
	void (*purge)(void *arg, void *block, size_t size);
	void *arg;
};

/** The default page source: anonymous private mappings (MAP_NORESERVE),
 *  given back with munmap, purged with MADV_FREE (the kernel takes the
 *  pages when it needs memory; until then they count in the RSS, as
 *  LazyFree in smaps). USLAB_PURGE=dontneed, read once, purges with
 *  MADV_DONTNEED instead: the RSS falls at once, a page used again costs a
 *  fault. */
USLAB_API const struct uslab_pagesrc *uslab_pagesrc_mmap(void);

/** The default page source on Windows: one VirtualAlloc reservation per
 *  block (committed read-write), given back with VirtualFree(MEM_RELEASE),
 *  purged with MEM_RESET. The other sources are Linux's: on Windows
 *  uslab_pagesrc_mmap(), _brk() and _hugepage() return NULL with ENOSYS,
 *  and on Linux this one does. */
USLAB_API const struct uslab_pagesrc *uslab_pagesrc_virtualalloc(void);

/**
 * A page source over a caller's region [@base, @base + @len): a static
 * array, or a mapping the caller made (hugetlbfs, shared memory). It keeps
 * its bookkeeping at the start of the region (a header and one bit per
 * page) and calls no malloc and no mmap: a cache on it makes no system
 * call for memory. Blocks are size-aligned inside the region, so a region
 * aligned to 64 KiB wastes least. get() fails with ENOMEM once no aligned
 * run of free pages is left; blocks given back are reused. The structure
 * returned lives in the region, which must stay mapped and writable while
 * any cache uses it. NULL with EINVAL when @base is NULL or not
 * page-aligned, or the region holds no 64 KiB block after its header.
 * Thread-safe.
 */
USLAB_API struct uslab_pagesrc *uslab_pagesrc_region(void *base, size_t len);

/**
 * The program break (sbrk) as a page source. It grows the break for each
 * block (aligned to its size: the gap below a block is used by smaller
 * blocks later) and gives blocks back: the ones at the top shrink the
 * break again, the others are kept (purged with MADV_DONTNEED) for reuse,
 * lowest first. glibc's malloc moves the break too: when the break is not
 * where this source's memory ends, nothing is given back by moving the
 * break, only reused, so a program whose malloc keeps moving the break
 * gets a heap with holes; glibc's memory is never touched. The free ranges
 * are kept in a static table of 4,096: a block given back that finds it
 * full is purged and no longer reused. get() fails (ENOMEM) when the
 * kernel refuses to move the break (RLIMIT_DATA, seccomp). Thread-safe
 * among its callers, but glibc's malloc serialises its own sbrk() under a
 * lock this source cannot take: not for a program whose other threads may
 * grow glibc's main heap while this source moves the break.
 */
USLAB_API const struct uslab_pagesrc *uslab_pagesrc_brk(void);

/**
 * Huge pages: blocks carved from 2 MiB-aligned areas of 2 MiB pages (a
 * block above 2 MiB gets an area of its own, aligned to its size). With
 * pages free in the kernel's hugetlb pool (vm.nr_hugepages) the areas are
 * MAP_HUGETLB mappings, and an area the pool can no longer back is mapped
 * as the next kind; otherwise anonymous mappings with MADV_HUGEPAGE
 * (transparent huge pages, when the kernel has them in "always" or
 * "madvise" mode); else plain pages. Blocks given back are kept for reuse
 * (purged: on THP that splits the huge page; on hugetlb only whole huge
 * pages are dropped), an area goes back when all its blocks are back. At
 * most 4,096 areas: get() fails with ENOMEM beyond. No malloc.
 * uslab_pagesrc_hugepage_mode() says which is in use. Thread-safe.
 */
USLAB_API const struct uslab_pagesrc *uslab_pagesrc_hugepage(void);

/** What uslab_pagesrc_hugepage() gives, as a static string: "hugetlb",
 *  "thp", or "off: <why>" (plain pages); decided once, at its first get()
 *  or at this call if it comes first (it reads /proc and /sys, and may try
 *  one hugetlb mapping). Also in uslab_global_stats (hugepage). */
USLAB_API const char *uslab_pagesrc_hugepage_mode(void);

/** Cache configuration. Every field is optional: a zeroed structure (or a
 *  NULL pointer) means the defaults. */
struct uslab_cache_conf {
	size_t align;                       /* power of two, at most the page size; 0 = natural */
	unsigned flags;                     /* USLAB_* */
	int (*ctor)(void *obj, void *arg);  /* object enters the cache: 0, or an errno value */
	void (*dtor)(void *obj, void *arg); /* object leaves the cache */
	void *arg;                          /* passed to ctor and dtor */
	const struct uslab_pagesrc
		*pagesrc; /* NULL = uslab_pagesrc_mmap() (Windows: _virtualalloc()) */
	/* At the limit (uslab_cache_set_limit): called once per refused
	 * allocation, outside every uslab lock, before it is retried once. */
	void (*limit_hit)(struct uslab_cache *cache, void *arg);
	/* A page source failed: give memory back (uslab_cache_reclaim). */
	void (*reclaim)(void *arg);
	/* Compaction: relocate @old to @new_ (uslab_cache_compact). */
	int (*move)(void *old, void *new_, void *arg);
};

/**
 * Create a cache of objects of @size bytes.
 *
 * @name: copied (at most USLAB_NAME_MAX bytes kept); duplicates are allowed,
 *        and caches are never merged. Not empty, and no whitespace or
 *        control character: names are printed as they are (slabinfo's
 *        columns, the misuse reports).
 * @size: 1 .. USLAB_MAX_SIZE.
 * @conf: may be NULL. Default alignment is natural: the largest power of two
 *        dividing @size, capped at 16 (24-byte objects sit 24 bytes apart at
 *        8-byte alignment). Objects are spaced by @size rounded up to the
 *        alignment.
 *
 * Returns the cache, or NULL with errno:
 *   EINVAL  NULL, empty or unprintable name (see above), size 0 or above
 *           USLAB_MAX_SIZE, alignment not a power of two or above the page
 *           size, unknown flags;
 *   ENOMEM  no memory for the cache's own structures;
 *   EDEADLK called from a uslab_foreach_cache() callback, or from a signal
 *           handler that interrupted uslab on this thread;
 *   ENOSYS  USLAB_TYPESAFE_BY_RCU on a system without RCU (Windows).
 * No memory for objects is taken until the first allocation.
 */
USLAB_API struct uslab_cache *uslab_cache_create(const char *name, size_t size,
                                                 const struct uslab_cache_conf *conf);

/**
 * Allocate one object, in its constructed state (or with undefined contents
 * when the cache has no ctor). The caller owns it until uslab_cache_free().
 * @cache must be a live cache: like the kernel's kmem_cache_alloc(), the
 * fast path does not test for NULL, so a NULL cache is undefined behaviour.
 *
 * Returns NULL with errno ENOMEM when the page source has no memory, with
 * the ctor's errno value when a constructor failed (nothing is leaked), or
 * EDEADLK in a signal handler as described at the top.
 */
USLAB_API void *uslab_cache_alloc(struct uslab_cache *cache);

/**
 * Give @obj back to @cache, in its constructed state. NULL does nothing.
 * @cache must be a live cache (NULL is undefined, as for the allocation).
 * @obj must have come from uslab_cache_alloc() (or _bulk) on this @cache.
 * Every free checks that @obj is an object of @cache (not another cache's,
 * not an interior pointer, not a malloc or stack pointer) and that it is
 * not the object on top of this CPU's magazine (the classic double free);
 * either is reported and aborts. Other double frees are caught when the
 * object reaches its slab, or at once with USLAB_DEBUG_CHECKS or
 * USLAB_NOMAGAZINE.
 */
USLAB_API void uslab_cache_free(struct uslab_cache *cache, void *obj);

/**
 * Allocate up to @n objects into @objs. Returns how many were allocated
 * (0 .. n); when fewer than @n, errno says why (as uslab_cache_alloc(),
 * or EINVAL for a NULL @cache or @objs).
 */
USLAB_API size_t uslab_cache_alloc_bulk(struct uslab_cache *cache, void **objs, size_t n);

/** Free @n objects from @objs, as uslab_cache_free() does one by one.
 *  NULL entries are skipped. A NULL @cache or @objs: nothing, EINVAL. */
USLAB_API void uslab_cache_free_bulk(struct uslab_cache *cache, void **objs, size_t n);

/**
 * Give unused memory back: every object cached in per-CPU and depot
 * magazines returns to its slab, every empty slab is released (its
 * objects destructed, its pages given back), and in a cache without a
 * ctor or debug flags the pages that lie wholly inside free objects of
 * partial slabs are purged (MADV_DONTNEED for the mmap source: the RSS
 * falls at once). Returns the number of bytes of this cache given back to
 * the page source or purged by this call (the depot's magazine structures
 * go back to their own caches, uslab_magazine_<n>, whose empty slabs this
 * call releases too, uncounted).
 *
 * Without reap, a cache keeps the empty slabs it may reuse: slabs that
 * stayed empty through a whole second of activity are purged (their pages
 * go to the kernel, the slab stays: reused without a system call) and
 * released after 10 s more; a cache with a ctor, debug flags or
 * USLAB_TYPESAFE_BY_RCU releases them at once instead (their objects
 * destructed then). So memory follows the working set without a timer
 * thread. A cache nobody touches keeps its empty slabs until reap or
 * destroy. NULL: 0, with errno EINVAL. When the kernel lets
 * no CPU be fenced (uslab_mode() says so), the objects in the magazines of
 * running CPUs stay there.
 */
USLAB_API size_t uslab_cache_reap(struct uslab_cache *cache);

/**
 * Destroy @cache: every object is destructed and every page goes back to the
 * page source; objects freed with uslab_cache_free_rcu() and a type-safe
 * cache's slabs first wait for their grace periods. Returns 0, or -1 with errno:
 *   EBUSY   objects are still allocated; the cache is unchanged and usable;
 *   EINVAL  @cache is NULL;
 *   EPERM   @cache is one of the library's own magazine caches
 *           ("uslab_magazine_<rounds>", which uslab_foreach_cache() lists);
 *   EDEADLK called from a uslab_foreach_cache() callback, or from a signal
 *           handler that interrupted uslab on this thread, or inside an RCU
 *           read-side section (a grace period it waits for cannot end).
 * A dtor that uses the cache being destroyed is reported (misuse).
 */
USLAB_API int uslab_cache_destroy(struct uslab_cache *cache);

/* ---- RCU ----
 *
 * READERS MUST USE liburcu's "bp" FLAVOUR: urcu_bp_read_lock() and
 * urcu_bp_read_unlock() from <urcu/urcu-bp.h>, linked with -lurcu-bp
 * (pkg-config liburcu-bp). It is the only flavour whose grace periods wait
 * for threads that never registered with the library; with the memb, mb,
 * qsbr or signal flavour's read locks, uslab's grace periods do not wait
 * for your readers, and objects are reused under them.
 *
 * Two semantics, often confused:
 *  - uslab_cache_free_rcu(c, obj) delays the REUSE of one object: no reader
 *    that could have found @obj sees it change, until it leaves its section.
 *  - USLAB_TYPESAFE_BY_RCU keeps only the memory's TYPE: a plain free
 *    reuses the object at once, and readers re-check identity.
 *
 * liburcu starts one worker thread at the first grace-period callback, and
 * uslab one more ("uslab-rcu", which submits partial batches), at the first
 * free_rcu. uslab calls liburcu-bp's fork helpers itself (pthread_atfork):
 * a program must not register urcu_bp_before_fork() and the call_rcu ones
 * again, or fork() deadlocks.
 */

/**
 * Free @obj after a grace period: it is handed out again only once every
 * RCU reader (urcu_bp_read_lock) that was in its section at this call has
 * left it. Nothing is written into @obj, which needs no rcu_head. Objects
 * are batched per CPU, one grace period per magazine; a partial batch
 * waits about 10 to 20 ms (and reap, destroy, uslab_rcu_barrier() and
 * fork submit it at once). @obj is checked as uslab_cache_free() checks it.
 * NULL @obj does nothing; NULL @cache: nothing, EINVAL. On Windows (no
 * liburcu) there are no grace periods: @obj is kept, never reused, and
 * errno is ENOSYS (said once on stderr).
 * Blocking: free_rcu waits (for one grace period) only when the cache
 * already has its cap of objects waiting (4 MiB of objects, at least four
 * batches per CPU) and the caller is outside any read-side section; inside
 * one, or in a signal handler, it never waits. May be called in a read-side
 * section, and from a signal handler.
 */
USLAB_API void uslab_cache_free_rcu(struct uslab_cache *cache, void *obj);

/**
 * Wait until every uslab_cache_free_rcu() issued before this call has
 * completed (its object is back in its cache), and every slab a
 * type-safe cache released before it has gone back. Must not be called
 * inside a read-side section (reported: it would never return), nor from
 * a dtor or ctor that liburcu's worker runs, nor from a signal handler.
 */
USLAB_API void uslab_rcu_barrier(void);

/**
 * Switch @cache's debug flags (USLAB_DEBUG_*) to @flags, at run time, with
 * objects allocated and threads using the cache. Objects allocated before a
 * flag was on are not checked by it until they come back. Returns 0, or -1
 * with errno EINVAL: NULL, a bit outside USLAB_DEBUG_MASK, REDZONE for a
 * cache with no room after its objects, POISON for a cache with a ctor;
 * ENOMEM: no memory for the per-slab debug state (nothing changed);
 * EDEADLK: as uslab_cache_create().
 */
USLAB_API int uslab_cache_set_debug(struct uslab_cache *cache, unsigned flags);

/**
 * Check every slab of @cache: free bitmaps against the counts, red zones
 * (Z), the poison of free objects (P), and the per-CPU and depot magazines
 * for objects that are free twice (or are not objects of the cache). One
 * line per problem goes to @report (NULL: stderr), in the form of the
 * reports above; it never aborts. With USLAB_DEBUG_AUDIT, the objects
 * still allocated are listed too ("leak" lines, grouped by allocation
 * stack with a count); they are not counted: whether they are leaks only
 * the program knows (at its end, they are). Returns the number of
 * problems (0: clean), or -1 with errno EINVAL (NULL cache) or EDEADLK.
 */
USLAB_API long uslab_cache_validate(struct uslab_cache *cache, FILE *report);

/** The cache's name, as stored (possibly truncated); NULL with EINVAL for a
 *  NULL cache. */
USLAB_API const char *uslab_cache_name(const struct uslab_cache *cache);

/** The object size the cache was created with; 0 with EINVAL for NULL. */
USLAB_API size_t uslab_cache_size(const struct uslab_cache *cache);

/** The per-CPU mode, as a static string: "rseq cpu_id" (glibc registered
 *  rseq), "rseq cpu_id (uslab registers)" (glibc did not: before 2.35, or
 *  GLIBC_TUNABLES=glibc.pthread.rseq=0; uslab registers each thread at its
 *  first miss and unregisters it at its exit) or "locked: <why>" (slots
 *  are indexed by cpu_id only), chosen at start. When the kernel
 *  refuses membarrier at run time (a seccomp policy installed after
 *  start-up), it changes once or twice, to say how remote operations go on
 *  ("...; membarrier refused: fences by migration", then "...: no remote
 *  drain"); nothing aborts. */
USLAB_API const char *uslab_mode(void);

/* ---- Memory: limits, reserves, reclaim, compaction ---- */

/**
 * Bound @cache to @max_objs objects held by the program at once (0: no
 * bound), at any time, objects allocated included: past it,
 * uslab_cache_alloc() fails with ENOBUFS (counted in limit_failures).
 * When the conf has limit_hit, a refused allocation calls it (outside
 * every uslab lock; it may free and reap, not create or destroy caches,
 * and an allocation from the same cache inside it is not called back
 * again) and is then retried once. A cache with a limit leaves the
 * assembly hit path: each allocation and free adds an atomic operation.
 * The count starts from the objects held when the limit is first set
 * (exact when no thread is using the cache then). Objects in a reserve
 * (uslab_cache_reserve) count as held. Returns 0, or -1 with errno EINVAL
 * (NULL cache, a size class or a magazine cache) or ENOMEM.
 */
USLAB_API int uslab_cache_set_limit(struct uslab_cache *cache, size_t max_objs);

/**
 * A reserve: @n objects of @cache taken now, so that the @n allocations a
 * critical section needs cannot fail there (SLUB's prefilled sheaves).
 * Returns NULL with errno (ENOMEM, ENOBUFS at the limit, a ctor's value,
 * EINVAL for a NULL cache or @n 0 or above 65536) and nothing taken. A
 * reserve belongs to one thread at a time; it takes no lock.
 */
USLAB_API struct uslab_reserve *uslab_cache_reserve(struct uslab_cache *cache, size_t n);
/** One object of the reserve: never fails while uslab_reserve_left() > 0
 *  (then NULL with ENOBUFS). Freed with uslab_cache_free() as any object. */
USLAB_API void *uslab_reserve_alloc(struct uslab_reserve *res);
/** Objects the reserve still holds. */
USLAB_API size_t uslab_reserve_left(const struct uslab_reserve *res);
/** Give back what is left of @res (freed to its cache) and @res itself.
 *  Returns how many objects went back. NULL: 0. */
USLAB_API size_t uslab_reserve_return(struct uslab_reserve *res);

/**
 * Reclaim: when a page source fails, before an allocation fails with
 * ENOMEM, uslab reaps every cache (uslab_reap_all), calls the reclaim
 * callback of every cache whose conf has one (outside every uslab lock, at
 * most one reclaim pass at a time per thread: an allocation that fails
 * inside a callback does not reclaim again), and retries once. A callback
 * frees what the program can rebuild (a cache of computed results). It may
 * allocate, free and reap; uslab_cache_destroy() waits for callbacks in
 * progress, and fails with EDEADLK inside one. uslab_cache_reclaim() runs
 * the same pass on demand and returns the bytes given back to the page
 * sources by the reaps. Not in a signal handler that interrupted uslab
 * (the allocation fails at once there).
 */
USLAB_API size_t uslab_cache_reclaim(void);

/**
 * Compaction: move live objects out of @cache's sparsest slabs into its
 * densest ones, and release the slabs that empties. Needs the conf's
 * move(old, new_, arg) callback (else -1, EINVAL), the owner's side:
 *   - uslab calls it with an object @old of a slab being evacuated and a
 *     fresh object @new_ (constructed, when the cache has a ctor), with no
 *     uslab lock held, from the thread calling compact;
 *   - it returns 0 when it moved: under the owner's own lock it copied
 *     what @old holds to @new_ and replaced every reference to @old with
 *     @new_; uslab then frees @old, which must be left in its constructed
 *     state (a cache with a ctor);
 *   - it returns non-zero to refuse, and must refuse an object it does not
 *     own at that moment: one being freed, one held by another thread
 *     outside the owner's lock, one with a reference the owner cannot
 *     update, or any object @old it does not know (uslab may offer objects
 *     that were freed a moment ago and sit in a magazine). @new_ is then
 *     freed by uslab.
 * While compact runs, allocations may still come from the slabs being
 * evacuated (they are drawn from other slabs first). Objects freed with
 * free_rcu and a cache with USLAB_TYPESAFE_BY_RCU are refused (EINVAL: a
 * reader may hold @old). Returns the number of objects moved, or -1 with
 * errno (EINVAL, EDEADLK in a callback or a signal handler). The bytes
 * released show in the stats (slabs_released, bytes_total).
 */
USLAB_API long uslab_cache_compact(struct uslab_cache *cache);

/* ---- Statistics ---- */

/**
 * A snapshot of one cache. Figures marked "exact" come from the structure
 * and are exact when no thread is allocating or freeing in the cache
 * (at quiescence active_objs is exactly what the program holds); counters
 * are per-CPU sums read without stopping anybody, so they may lag by the
 * operations in flight. fast_allocs and fast_frees are derived from each
 * CPU's hit count and magazine fill (slab/arch/fastpath.h): exact at
 * quiescence, but while a thread is preempted inside a magazine refill or
 * flush they can be off by half a magazine, both ways, until it runs on.
 */
struct uslab_stats {
	char name[USLAB_NAME_MAX + 1];
	uint64_t obj_size;  /* as created */
	uint64_t slot_size; /* object spacing: size rounded up to align */
	uint64_t align;
	uint32_t flags;
	uint32_t objs_per_slab;
	uint64_t slab_size;       /* bytes per slab */
	uint64_t active_objs;     /* exact: held by the program */
	uint64_t total_objs;      /* exact: objects in all slabs */
	uint64_t active_slabs;    /* exact: slabs with an object out of the slab */
	uint64_t total_slabs;     /* exact */
	uint64_t bytes_active;    /* active_objs * slot_size */
	uint64_t bytes_total;     /* total_slabs * slab_size */
	uint64_t allocs;          /* counter: successful allocations */
	uint64_t frees;           /* counter */
	uint64_t fast_allocs;     /* counter (derived): served by a per-CPU magazine */
	uint64_t fast_frees;      /* counter (derived) */
	uint64_t alloc_failures;  /* counter: NULL returned */
	uint64_t pcpu_objs;       /* objects in per-CPU magazines */
	uint64_t depot_objs;      /* objects in depot magazines */
	uint64_t depot_full;      /* full magazines in the depot */
	uint64_t depot_empty;     /* spare magazine structures */
	uint32_t mag_size;        /* rounds per depot magazine (per-CPU holds 2x) */
	uint32_t mag_max;         /* largest magazine size for this cache */
	uint64_t depot_contended; /* depot lock acquisitions that waited */
	uint64_t slabs_created;
	uint64_t slabs_released;
	/* RCU (uslab_cache_free_rcu, USLAB_TYPESAFE_BY_RCU) */
	uint64_t rcu_objs;  /* freed with free_rcu, waiting for a grace period */
	uint64_t rcu_bytes; /* rcu_objs * slot_size */
	uint64_t rcu_slabs; /* released slabs of a type-safe cache waiting for theirs */
	uint64_t rcu_peak;  /* most objects submitted to grace periods at once */
	uint64_t rcu_waits; /* free_rcu calls that waited for a grace period (at the cap) */
	uint64_t rcu_cap;   /* objects submitted at most before free_rcu waits (fixed) */
	/* Memory (limits, purge, compaction) */
	uint64_t limit;          /* uslab_cache_set_limit(); 0: none */
	uint64_t limit_failures; /* counter: allocations refused at the limit (ENOBUFS) */
	uint64_t purged_slabs;   /* exact: empty slabs whose pages were purged, kept */
	uint64_t bytes_purged;   /* counter: bytes purged (empty slabs, free objects' pages) */
	uint64_t moved;          /* counter: objects moved by uslab_cache_compact() */
};

/** Fill @st for @cache. Returns 0, or -1 with errno EINVAL (NULL argument). */
USLAB_API int uslab_cache_stats(struct uslab_cache *cache, struct uslab_stats *st);

/**
 * Objects held in each CPU's magazine: writes min(n, number of slots)
 * counts to @counts and returns the number of slots (possible CPUs).
 */
USLAB_API size_t uslab_cache_cpu_objects(struct uslab_cache *cache, uint64_t *counts, size_t n);

/**
 * Call @fn for every cache in creation order until it returns non-zero.
 * The registry lock is held around @fn: @fn may allocate, free, reap, take
 * statistics (uslab_cache_stats(), uslab_global_stats(), uslab_slabinfo(),
 * a nested uslab_foreach_cache()) and fork(); creating or destroying a
 * cache there fails with EDEADLK. A cancellation request made meanwhile
 * acts after the walk. From a signal handler that interrupted uslab on
 * this thread (outside a walk): -1 with EDEADLK.
 * The walk includes the library's own magazine caches
 * ("uslab_magazine_<rounds>", flag USLAB_NOMAGAZINE). Their figures are
 * structural: the depots take magazine structures from their slab layer
 * directly, so allocs and frees stay 0, and active_objs is the number of
 * magazine structures in use.
 * The registry lock is held: @fn must not create or destroy caches.
 * Returns the last value @fn returned (0 if it never stopped the walk).
 */
USLAB_API int uslab_foreach_cache(int (*fn)(struct uslab_cache *cache, void *arg), void *arg);

/** Process-wide figures. */
struct uslab_global_stats {
	const char *mode;        /* as uslab_mode() */
	const char *segment;     /* where the stats segment's locator is, or why
	                          * there is none ("off: ...", "lost: ...") */
	uint64_t caches;         /* caches alive */
	uint64_t cpus;           /* per-CPU slots per cache (the kernel's CPU bound) */
	uint64_t arenas;         /* shared slot arenas mapped (1024 caches each) */
	uint64_t meta_bytes;     /* the library's own guarded metadata, mapped */
	uint64_t bytes_mapped;   /* got from page sources and not yet given back */
	uint64_t bytes_got;      /* ever got from page sources */
	uint64_t bytes_returned; /* ever given back */
	uint64_t large_blocks;   /* uslab_alloc() blocks above USLAB_CLASS_MAX, live */
	uint64_t large_bytes;    /* their usable bytes */
	const char *hugepage;    /* as uslab_pagesrc_hugepage_mode() */
	uint64_t bytes_purged;   /* ever purged by page sources */
	uint64_t pagesrc_calls;  /* system calls made by the library's page
	                          * sources (mmap, munmap, madvise, brk) */
};

/** Fill @st. Returns 0, or -1 with errno EINVAL (NULL), or EDEADLK (in a
 *  signal handler that interrupted uslab on this thread). */
USLAB_API int uslab_global_stats(struct uslab_global_stats *st);

/**
 * Print every cache in the /proc/slabinfo version 2.1 format (same header,
 * same columns; active_objs exact at quiescence) to @out.
 * Returns 0, or -1 with errno (EINVAL for NULL, or the stdio error).
 */
USLAB_API int uslab_slabinfo(FILE *out);

/* ---- Size classes: uslab_alloc() and the malloc built on it ----
 *
 * A general allocator on the same caches, as kmalloc() sits on the
 * kernel's kmalloc-<n> caches: 41 classes of 8, 16, 32, 48 and 64 bytes,
 * then four per doubling (80, 96, 112, 128, 160, ...) up to
 * USLAB_CLASS_MAX. Each class is a cache named "size-<bytes>" (in
 * uslab_foreach_cache(), slabinfo and uslabtop; made at its first use; it
 * cannot be destroyed). Every object of 16 bytes or more is 16-aligned,
 * and a class's objects are aligned to the largest power of two dividing
 * its size (at most the page size). Requests above USLAB_CLASS_MAX are
 * "large": a block straight from the mmap page source, its size recorded
 * outside it. No header sits in front of any object: uslab_free() finds the
 * class through the slab map. USLAB_DEBUG names a class like any cache
 * ("USLAB_DEBUG=size-64:FZ").
 * libuslab-malloc.so exports malloc(), free() and the rest of the family
 * over these functions, for LD_PRELOAD (README, "malloc").
 */

/** The largest size served by a class; above it, a large block. */
#define USLAB_CLASS_MAX ((size_t)32768)

/** @size bytes, 16-aligned from 16 bytes up (8-aligned below). Size 0
 *  gives a unique pointer (a class-8 object). NULL with errno ENOMEM. */
USLAB_API void *uslab_alloc(size_t size);
/** @n * @size zeroed bytes. NULL with ENOMEM, also when @n * @size
 *  overflows. */
USLAB_API void *uslab_calloc(size_t n, size_t size);
/**
 * Resize @ptr to @size bytes, keeping the contents up to the smaller size.
 * NULL @ptr: uslab_alloc(@size). @size 0: @ptr is freed and NULL returned
 * (glibc's behaviour). The object stays where it is while @size fits its
 * class and is above half of it (a large block: while it fits the block);
 * else it moves. On failure NULL with ENOMEM, and @ptr is unchanged.
 */
USLAB_API void *uslab_realloc(void *ptr, size_t size);
/** @size bytes aligned to @align, any power of two (up to 2^40). NULL with
 *  EINVAL for another @align, ENOMEM when there is no memory. Freed with
 *  uslab_free(). */
USLAB_API void *uslab_aligned_alloc(size_t align, size_t size);
/**
 * Free what uslab_alloc() and its family returned. NULL does nothing. A
 * pointer that did not come from them (another cache's object, an
 * interior pointer, a stack or malloc pointer, a large block freed twice)
 * is reported in one line and aborts, as uslab_cache_free() does. The
 * errno value is preserved.
 */
USLAB_API void uslab_free(void *ptr);
/** The bytes usable at @ptr (at least what was asked): its class size, or
 *  a large block's size rounded up to the page. NULL: 0. A pointer not
 *  from uslab_alloc() is reported, as for uslab_free(). */
USLAB_API size_t uslab_usable_size(const void *ptr);

/**
 * Give back what every cache keeps unused, as uslab_cache_reap() does for
 * one, the size classes and the magazine caches included (malloc_trim()
 * calls it). Returns the bytes given back to the page sources. 0 with
 * errno EDEADLK in a uslab_foreach_cache() callback or a signal handler
 * that interrupted uslab.
 */
USLAB_API size_t uslab_reap_all(void);

/* ---- Typed caches (in the spirit of the kernel's KMEM_CACHE) ---- */

/**
 * USLAB_CACHE(type, flags): create a cache named after struct @type, sized and
 * aligned as the type. Example: USLAB_CACHE(conn, 0) for struct conn.
 */
#define USLAB_CACHE(type, flags_)                                                                  \
	uslab_cache_create(#type, sizeof(struct type),                                             \
	                   &(const struct uslab_cache_conf){.align = _Alignof(struct type),        \
	                                                    .flags = (flags_)})

/**
 * USLAB_DEFINE_TYPED(type, cachevar): declare a cache pointer @cachevar and
 * type-checked helpers:
 *   static struct type *type_alloc(void);
 *   static void type_free(struct type *);
 * The program creates the cache (USLAB_CACHE) and stores it in @cachevar.
 */
#define USLAB_DEFINE_TYPED(type, cachevar)                                                         \
	static struct uslab_cache *cachevar;                                                       \
	static inline __attribute__((unused)) struct type *type##_alloc(void)                      \
	{                                                                                          \
		return (struct type *)uslab_cache_alloc(cachevar);                                 \
	}                                                                                          \
	static inline __attribute__((unused)) void type##_free(struct type *obj)                   \
	{                                                                                          \
		uslab_cache_free(cachevar, obj);                                                   \
	}

#ifdef __cplusplus
}
#endif

#endif /* USLAB_H */
