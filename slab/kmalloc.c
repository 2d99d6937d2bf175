/* SPDX-License-Identifier: MIT */
/* Size classes on caches: uslab_alloc() and its family. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "kmalloc.h"

/*
 * Design
 *
 * 1. Classes. 41 caches, "size-8" to "size-32768": 8, 16, 32, 48, 64, then
 *    four per doubling (a quarter of the power of two apart), as umem,
 *    mimalloc and gperftools space theirs. Above 8 bytes every class is a
 *    multiple of 16, so every object of 16 bytes or more is 16-aligned (the
 *    x86-64 ABI's promise for malloc, on which compilers emit movaps). A
 *    class cache is created with the alignment of the largest power of two
 *    dividing its size (at most the page), so its colour steps keep that
 *    alignment too: 96-byte objects are 32-aligned, 4 KiB ones page-aligned;
 *    uslab_aligned_alloc() picks the first class whose size is a multiple of
 *    the alignment. The memory is the caches' own: no header in front of an
 *    object, a free bit per object in the slab's guarded header.
 *
 * 2. Size to class. A table for sizes up to 1 KiB, indexed by
 *    (size + 7) / 8; above, the class follows from the position of the
 *    highest bit of size - 1 and the two bits below it. No loop, no
 *    division. The class caches are made at their first use, under
 *    km_lock; the pointer table is read without it (acquire).
 *
 * 3. Free without a size. The slab map (slabmap.c) leads from any pointer
 *    to its slab header, whose owner is the class cache: the free is then
 *    the cache's own (the rseq push, with the object check of every free).
 *    A large block (above USLAB_CLASS_MAX) is a page-source block of its
 *    own, registered in the slab map with a header whose owner is
 *    km_large_owner, a cache that is never listed, and whose free-bitmap
 *    words hold the block's size: its record, outside the object. What the
 *    map does not know is a sampled object (sample.c keeps those), a
 *    bootstrap block (below), or a foreign pointer: reported, or in the
 *    preloaded malloc given back to glibc (preload.c sets km_foreign).
 *
 * 4. Bootstrap. The classes are caches, and making a cache may itself call
 *    malloc when this is the program's malloc (pthread_atfork, atexit,
 *    dlsym). A thread that is making a class (km_creating), or that holds a
 *    uslab lock (pgsrc_busy), is served from a static bump area instead:
 *    never given back, its blocks carry their size in a 16-byte header.
 *    Nothing here waits while uslab is busy on this thread.
 *
 * 5. Fork. km_lock is taken before fork (its handler is registered after
 *    the registry's, so it runs first) and released on both sides.
 */

#define KM_SMALL_MAX 1024
#define KM_BOOT_BYTES ((size_t)256 << 10)
#define KM_BOOT_HDR 16
#define KM_LARGE_MAX ((size_t)1 << 40)

const uint32_t km_sizes[KM_NCLASSES] = {
	8,    16,   32,   48,   64,   80,    96,    112,   128,   160,   192,   224,   256,   320,
	384,  448,  512,  640,  768,  896,   1024,  1280,  1536,  1792,  2048,  2560,  3072,  3584,
	4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};

/* Class of sizes (8(i-1), 8i], i = (size + 7) / 8; i = 0 is size 0. */
static const uint8_t km_small[KM_SMALL_MAX / 8 + 1] = {
	0,  0,  1,  2,  2,  3,  3,  4,  4,  5,  5,  6,  6,  7,  7,  8,  8,  9,  9,  9,  9,  10,
	10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14,
	14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17,
	17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18,
	18, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
	19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
};
_Static_assert(sizeof km_small == KM_SMALL_MAX / 8 + 1, "one entry per 8 bytes up to 1 KiB");

/* The class caches, made at first use (km_lock); read with acquire. */
struct uslab_cache *km_cache[KM_NCLASSES];

/* The owner of every large block's header: never listed, never used as a
 * cache; its name is what a report about a large block prints. */
static struct uslab_cache km_large_owner = {.c_name = "large"};
/* What a report about a pointer of no cache names. */
static struct uslab_cache km_no_owner = {.c_name = "uslab_alloc"};

static pthread_mutex_t km_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t km_once = PTHREAD_ONCE_INIT;
static __thread unsigned km_creating __attribute__((tls_model("initial-exec")));

static _Alignas(4096) char km_boot_area[KM_BOOT_BYTES];
static size_t km_boot_used;

static uint64_t km_large_n, km_large_bytes; /* live large blocks (atomics) */

#ifdef USLAB_PRELOAD
const struct km_foreign *km_foreign = &preload_foreign;
#else
const struct km_foreign *km_foreign;
#endif

unsigned km_class(size_t size)
{
	if (size <= KM_SMALL_MAX)
		return km_small[(size + 7) >> 3];
	/* 2^k < size <= 2^(k+1): the two bits below the top pick a quarter. */
	unsigned k = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
	return 5u + 4u * (k - 6u) + (unsigned)((size - 1) >> (k - 2u)) - 4u;
}

/* ---- Bootstrap ---- */

static void *km_boot_alloc(size_t size, size_t align)
{
	if (align < KM_BOOT_HDR)
		align = KM_BOOT_HDR;
	if (size > KM_BOOT_BYTES || align > 4096) {
		errno = ENOMEM;
		return NULL;
	}
	size_t need = (size + KM_BOOT_HDR + align - 1) & ~(align - 1);
	size_t old = __atomic_load_n(&km_boot_used, __ATOMIC_RELAXED), start;
	do {
		start = ((old + KM_BOOT_HDR + align - 1) & ~(align - 1)) - KM_BOOT_HDR;
		if (start + KM_BOOT_HDR + need > KM_BOOT_BYTES) {
			errno = ENOMEM;
			return NULL;
		}
	} while (!__atomic_compare_exchange_n(&km_boot_used, &old, start + KM_BOOT_HDR + need, true,
	                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	size_t *hdr = (size_t *)(km_boot_area + start);
	hdr[0] = size;
	return km_boot_area + start + KM_BOOT_HDR;
}

static bool km_is_boot(const void *p)
{
	return (const char *)p >= km_boot_area && (const char *)p < km_boot_area + KM_BOOT_BYTES;
}

static size_t km_boot_size(const void *p)
{
	return *(const size_t *)((const char *)p - KM_BOOT_HDR);
}

/* ---- Classes ---- */

void km_boot_begin(void)
{
	km_creating++;
}

void km_boot_end(void)
{
	km_creating--;
}

static void km_fork_prepare(void)
{
	pthread_mutex_lock(&km_lock);
}

static void km_fork_release(void)
{
	pthread_mutex_unlock(&km_lock);
}

/* Once: the library's own start (which may call malloc: served from the
 * bootstrap area), then the fork handler, registered after the
 * registry's so that it runs before it. */
static void km_init(void)
{
	km_creating++;
	cache_ensure_init();
	os_atfork(km_fork_prepare, km_fork_release, km_fork_release);
	km_creating--;
}

/* Run before the registry's own constructor, so that a malloc in the
 * library's start finds km_creating set, not a half-run pthread_once. */
__attribute__((constructor(101))) static void km_ctor(void)
{
	if (km_creating == 0)
		pthread_once(&km_once, km_init);
}

static unsigned km_align_of(size_t size)
{
	size_t a = size & -size;
	size_t page = pgsrc_page_size();

	return (unsigned)(a < page ? a : page);
}

/* The cache of class @i, made now if it is not yet; NULL with errno when
 * it cannot be (ENOMEM), or EAGAIN when this thread must not wait for it
 * (it is making one, or holds a uslab lock): then the bootstrap serves. */
static struct uslab_cache *km_make(unsigned i)
{
	if (km_creating != 0 || pgsrc_busy != 0) {
		errno = EAGAIN;
		return NULL;
	}
	pthread_once(&km_once, km_init);
	struct uslab_cache *c = __atomic_load_n(&km_cache[i], __ATOMIC_ACQUIRE);
	if (c != NULL)
		return c;
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	pthread_mutex_lock(&km_lock);
	c = km_cache[i];
	if (c == NULL) {
		char name[USLAB_NAME_MAX + 1];
		snprintf(name, sizeof name, "size-%u", (unsigned)km_sizes[i]);
		km_creating++;
		c = uslab_cache_create(
			name, km_sizes[i],
			&(struct uslab_cache_conf){.align = km_align_of(km_sizes[i])});
		km_creating--;
		if (c != NULL) {
			c->c_kmalloc = (uint8_t)(i + 1);
			__atomic_store_n(&km_cache[i], c, __ATOMIC_RELEASE);
		}
	}
	int err = errno;
	pthread_mutex_unlock(&km_lock);
	pthread_setcancelstate(old, NULL);
	errno = err;
	return c;
}

void *km_alloc_class(unsigned i)
{
	struct uslab_cache *c = __atomic_load_n(&km_cache[i], __ATOMIC_ACQUIRE);

	if (__builtin_expect(c == NULL, 0)) {
		c = km_make(i);
		if (c == NULL)
			return errno == EAGAIN
			               ? km_boot_alloc(km_sizes[i], km_align_of(km_sizes[i]))
			               : NULL;
	}
	return uslab_cache_alloc(c);
}

/* ---- Large blocks ---- */

/* The record is the header's free-bitmap words: the usable bytes and the
 * block's. */
#define KM_REC_WORDS 2

/* A large block's page source failed: a reclaim pass (uslab_cache_reclaim)
 * when this thread may run one; true when it ran. */
static bool km_reclaim(void)
{
	int err = errno;
	errno = 0;
	size_t back = uslab_cache_reclaim();
	bool ran = back != 0 || errno != EDEADLK;

	errno = err;
	return ran;
}

static void *km_large_alloc(size_t size, size_t align)
{
	size_t page = pgsrc_page_size();

	/* Not in a handler that interrupted uslab: the headers' lock may be
	 * this thread's. */
	if (size > KM_LARGE_MAX || align > KM_LARGE_MAX || pgsrc_busy != 0) {
		errno = ENOMEM;
		return NULL;
	}
	size_t usable = (size + page - 1) & ~(page - 1);
	size_t bytes = (size_t)1 << SLAB_MIN_SHIFT;
	while (bytes < usable || bytes < align)
		bytes <<= 1;
	struct slab *s = meta_alloc(sizeof *s + KM_REC_WORDS * sizeof(uint64_t));
	if (s == NULL)
		return NULL;
	char *b = pgsrc_get(pgsrc_default(), bytes);
	if (b == NULL && km_reclaim()) /* the page source failed: reclaim, once */
		b = pgsrc_get(pgsrc_default(), bytes);
	if (b == NULL) {
		meta_free(s, sizeof *s + KM_REC_WORDS * sizeof(uint64_t));
		errno = ENOMEM;
		return NULL;
	}
	s->s_magic = SLAB_MAGIC;
	s->s_cache = &km_large_owner;
	s->s_block = b;
	s->s_base = b;
	s->s_inuse = 1;
	s->s_where = SLAB_ON_NONE;
	s->s_free[0] = usable;
	s->s_free[1] = bytes;
	if (!slabmap_set(b, bytes, s)) {
		pgsrc_put(pgsrc_default(), b, bytes);
		meta_free(s, sizeof *s + KM_REC_WORDS * sizeof(uint64_t));
		errno = ENOMEM;
		return NULL;
	}
	__atomic_add_fetch(&km_large_n, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&km_large_bytes, usable, __ATOMIC_RELAXED);
	return b;
}

static void km_large_free(struct slab *s, void *p)
{
	uint32_t one = 1;

	if (p != s->s_block)
		uslab_report(&km_large_owner, p, USLAB_E_BOUNDARY);
	/* Two frees racing: one wins the header. */
	if (!__atomic_compare_exchange_n(&s->s_inuse, &one, 0, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_RELAXED))
		uslab_report(&km_large_owner, p, USLAB_E_DUPFREE);
	size_t usable = s->s_free[0], bytes = s->s_free[1];
	slabmap_clear(s->s_block, bytes);
	pgsrc_put(pgsrc_default(), s->s_block, bytes);
	meta_free(s, sizeof *s + KM_REC_WORDS * sizeof(uint64_t));
	__atomic_sub_fetch(&km_large_n, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&km_large_bytes, usable, __ATOMIC_RELAXED);
}

void km_large_totals(uint64_t *blocks, uint64_t *bytes)
{
	*blocks = __atomic_load_n(&km_large_n, __ATOMIC_RELAXED);
	*bytes = __atomic_load_n(&km_large_bytes, __ATOMIC_RELAXED);
}

/* ---- Entry points ---- */

void *uslab_alloc(size_t size)
{
	if (__builtin_expect(size <= KM_SMALL_MAX, 1)) {
		unsigned i = km_small[(size + 7) >> 3];
		struct uslab_cache *c = __atomic_load_n(&km_cache[i], __ATOMIC_ACQUIRE);
		if (__builtin_expect(c != NULL, 1))
			return uslab_cache_alloc(c);
		return km_alloc_class(i);
	}
	if (size <= USLAB_CLASS_MAX)
		return km_alloc_class(km_class(size));
	return km_large_alloc(size, 0);
}

void *uslab_calloc(size_t n, size_t size)
{
	size_t bytes;

	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	if (bytes > USLAB_CLASS_MAX)
		return km_large_alloc(bytes, 0); /* fresh pages: zero already */
	void *p = uslab_alloc(bytes);
	if (p != NULL)
		memset(p, 0, bytes);
	return p;
}

void *uslab_aligned_alloc(size_t align, size_t size)
{
	if (align == 0 || (align & (align - 1)) != 0) {
		errno = EINVAL;
		return NULL;
	}
	size_t n = size > align ? size : align;
	if (align <= 16)
		return uslab_alloc(n);
	if (align <= pgsrc_page_size() && n <= USLAB_CLASS_MAX)
		for (unsigned i = km_class(n); i < KM_NCLASSES; i++)
			if ((km_sizes[i] & (align - 1)) == 0)
				return km_alloc_class(i);
	return km_large_alloc(size, align);
}

/* What @p is, for free, usable_size and realloc; reports a pointer that is
 * nobody's unless a foreign handler (preload.c) takes it. */
enum km_kind { KM_NONE, KM_CLASS, KM_LARGE, KM_BOOT, KM_FOREIGN };

static enum km_kind km_kind_of(const void *p, struct slab **sp, struct uslab_cache **cp)
{
	struct slab *s = slabmap_lookup(p);

	*sp = s;
	if (s != NULL) {
		*cp = s->s_cache;
		if (s->s_cache == &km_large_owner)
			return KM_LARGE;
		if (s->s_cache->c_kmalloc != 0)
			return KM_CLASS;
		/* Another cache's object, freed as uslab_alloc() memory. */
		uslab_report_detail(s->s_cache, p, USLAB_E_FOREIGN,
		                    "freed as uslab_alloc() memory");
	}
	if (p == NULL)
		return KM_NONE;
	struct uslab_cache *c = sample_owner(p);
	if (c != NULL && c->c_kmalloc != 0) {
		*cp = c;
		return KM_CLASS;
	}
	if (km_is_boot(p))
		return KM_BOOT;
	if (__atomic_load_n(&km_foreign, __ATOMIC_ACQUIRE) != NULL)
		return KM_FOREIGN;
	uslab_report_detail(c != NULL ? c : &km_no_owner, p, USLAB_E_FOREIGN,
	                    "not from uslab_alloc()");
}

/* The free past the hit: NULL, a large block, a sample, a bootstrap or
 * foreign pointer, or misuse. */
void km_free_slow(void *p)
{
	struct slab *s;
	struct uslab_cache *c;
	int err = errno;

	switch (km_kind_of(p, &s, &c)) {
	case KM_CLASS:
		uslab_cache_free(c, p);
		break;
	case KM_LARGE:
		km_large_free(s, p);
		break;
	case KM_FOREIGN:
		km_foreign->kf_free(p);
		break;
	case KM_NONE:
	case KM_BOOT: /* never given back */
		break;
	}
	errno = err;
}

/* uslab_free() in C: arch/x86_64-kmalloc.S is the same in assembly, with
 * the lookup done once. */
static void km_free(void *p)
{
	struct slab *s = slabmap_lookup(p);

	if (__builtin_expect(s != NULL && s->s_cache->c_kmalloc != 0, 1)) {
		uslab_cache_free(s->s_cache, p);
		return;
	}
	km_free_slow(p);
}

#if !USLAB_HAVE_ASM
void uslab_free(void *p)
{
	km_free(p);
}
#endif

size_t uslab_usable_size(const void *p)
{
	struct slab *s;
	struct uslab_cache *c;

	switch (km_kind_of(p, &s, &c)) {
	case KM_CLASS:
		return c->c_size;
	case KM_LARGE:
		return (size_t)s->s_free[0];
	case KM_BOOT:
		return km_boot_size(p);
	case KM_FOREIGN:
		return km_foreign->kf_usable(p);
	case KM_NONE:
		break;
	}
	return 0;
}

/* A large block grows in place while it fits its block. */
static bool km_large_grow(struct slab *s, size_t size)
{
	size_t page = pgsrc_page_size();
	size_t usable = (size + page - 1) & ~(page - 1);

	if (size > KM_LARGE_MAX || usable > s->s_free[1])
		return false;
	__atomic_add_fetch(&km_large_bytes, usable - s->s_free[0], __ATOMIC_RELAXED);
	s->s_free[0] = usable;
	return true;
}

void *uslab_realloc(void *p, size_t size)
{
	struct slab *s;
	struct uslab_cache *c;

	if (p == NULL)
		return uslab_alloc(size);
	if (size == 0) {
		km_free(p);
		return NULL;
	}
	size_t old = 0;
	switch (km_kind_of(p, &s, &c)) {
	case KM_CLASS:
		old = c->c_size;
		if (size <= old && size > old / 2)
			return p;
		break;
	case KM_LARGE:
		old = (size_t)s->s_free[0];
		if (size > USLAB_CLASS_MAX && size <= old)
			return p; /* a shrink keeps the block (its tail untouched costs no RSS) */
		if (size > old && km_large_grow(s, size))
			return p;
		break;
	case KM_BOOT:
		old = km_boot_size(p);
		break;
	case KM_FOREIGN:
		old = km_foreign->kf_usable(p);
		break;
	case KM_NONE:
		break;
	}
	void *n = uslab_alloc(size);
	if (n == NULL)
		return NULL;
	memcpy(n, p, old < size ? old : size);
	km_free(p);
	return n;
}

#ifdef USLAB_PRELOAD
/* libuslab-malloc.so (preload.c): the program's malloc is this file's
 * functions under glibc's names, without a call in between; the rest of
 * the family is in preload.c. */
#define KM_ALIAS(name, target)                                                                     \
	extern __typeof(target) name __attribute__((alias(#target), visibility("default")))
KM_ALIAS(malloc, uslab_alloc);
KM_ALIAS(__libc_malloc, uslab_alloc);
#if !USLAB_HAVE_ASM
KM_ALIAS(free, uslab_free);
KM_ALIAS(__libc_free, uslab_free);
KM_ALIAS(cfree, uslab_free);
#endif
KM_ALIAS(calloc, uslab_calloc);
KM_ALIAS(__libc_calloc, uslab_calloc);
KM_ALIAS(realloc, uslab_realloc);
KM_ALIAS(__libc_realloc, uslab_realloc);
KM_ALIAS(aligned_alloc, uslab_aligned_alloc);
#endif
