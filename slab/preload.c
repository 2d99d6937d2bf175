/* SPDX-License-Identifier: MIT */
/* libuslab-malloc.so: malloc for any program (LD_PRELOAD), over the size classes. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "kmalloc.h"

/*
 * Design
 *
 * 1. Names. malloc, free, calloc, realloc, aligned_alloc and their __libc_
 *    twins are the size classes' own functions under a second name
 *    (kmalloc.c, built a second time with USLAB_PRELOAD); this file has the
 *    rest of glibc's family, which only convert arguments: posix_memalign,
 *    memalign, valloc, pvalloc, reallocarray, malloc_usable_size and
 *    malloc_trim (a reap of every cache). The library is linked with
 *    -Bsymbolic-functions, so its own calls never go through the PLT.
 *
 * 2. Pointers uslab never handed out: the blocks glibc's malloc made
 *    before this library took over (the dynamic loader's, a
 *    dlsym(libc, "malloc") caller's). The slab map does not know them, so
 *    kmalloc.c gives them here (km_foreign), and they go back to glibc's
 *    own free and malloc_usable_size, found with dlsym(RTLD_NEXT) at the
 *    first such pointer. A pointer glibc does not know either is glibc's
 *    to report. dlsym may itself call malloc: the bootstrap area serves
 *    it (km_boot_begin).
 *
 * 3. Start and fork. Nothing here runs at load: the classes are made at
 *    their first use, and what making one needs (the registry's start,
 *    its fork handlers, the stats segment) may call malloc again, which
 *    the bootstrap serves (kmalloc.c §4). Thread-local state anywhere in
 *    the library is initial-exec: no allocation to reach it.
 */

struct glibc_fns {
	void (*g_free)(void *);
	size_t (*g_usable)(void *);
};
static struct glibc_fns glibc;
static pthread_once_t glibc_once = PTHREAD_ONCE_INIT;

static void glibc_find(void)
{
	km_boot_begin();
	void *f = dlsym(RTLD_NEXT, "free"), *u = dlsym(RTLD_NEXT, "malloc_usable_size");
	memcpy(&glibc.g_free, &f, sizeof f); /* POSIX: a function's address as void * */
	memcpy(&glibc.g_usable, &u, sizeof u);
	km_boot_end();
}

static void glibc_say(const char *what)
{
	static const char pre[] = "uslab-malloc: glibc's ";
	static const char post[] = " not found: a pointer uslab never handed out is leaked\n";
	size_t n = 0;

	while (what[n] != '\0')
		n++;
	if (write(STDERR_FILENO, pre, sizeof pre - 1) < 0 || write(STDERR_FILENO, what, n) < 0 ||
	    write(STDERR_FILENO, post, sizeof post - 1) < 0)
		return;
}

static void foreign_free(void *p)
{
	pthread_once(&glibc_once, glibc_find);
	if (glibc.g_free != NULL && glibc.g_free != (void (*)(void *))free)
		glibc.g_free(p);
	else
		glibc_say("free");
}

static size_t foreign_usable(const void *p)
{
	pthread_once(&glibc_once, glibc_find);
	if (glibc.g_usable != NULL && glibc.g_usable != (size_t(*)(void *))malloc_usable_size)
		return glibc.g_usable((void *)p);
	glibc_say("malloc_usable_size");
	return 0;
}

const struct km_foreign preload_foreign = {
	.kf_free = foreign_free,
	.kf_usable = foreign_usable,
};

#define PL_API __attribute__((visibility("default")))

/* glibc's memalign: an alignment that is not a power of two is rounded
 * up to one. */
static void *pl_memalign(size_t align, size_t size)
{
	if (align > ((size_t)1 << 40)) {
		errno = EINVAL;
		return NULL;
	}
	if (align < 16)
		align = 16;
	if ((align & (align - 1)) != 0)
		align = (size_t)1 << (64 - __builtin_clzll((unsigned long long)align));
	return uslab_aligned_alloc(align, size);
}

PL_API int posix_memalign(void **out, size_t align, size_t size)
{
	int err = errno;

	if (align == 0 || (align & (align - 1)) != 0 || align % sizeof(void *) != 0)
		return EINVAL;
	void *p = uslab_aligned_alloc(align, size);
	int ret = p != NULL ? 0 : errno;
	errno = err;
	if (p != NULL)
		*out = p;
	return ret;
}

PL_API void *memalign(size_t align, size_t size)
{
	return pl_memalign(align, size);
}

PL_API void *__libc_memalign(size_t align, size_t size)
{
	return pl_memalign(align, size);
}

PL_API void *valloc(size_t size)
{
	return uslab_aligned_alloc((size_t)sysconf(_SC_PAGESIZE), size);
}

PL_API void *__libc_valloc(size_t size)
{
	return valloc(size);
}

PL_API void *pvalloc(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (size > SIZE_MAX - page) {
		errno = ENOMEM;
		return NULL;
	}
	return uslab_aligned_alloc(page, (size + page - 1) & ~(page - 1));
}

PL_API void *__libc_pvalloc(size_t size)
{
	return pvalloc(size);
}

PL_API void *reallocarray(void *p, size_t n, size_t size)
{
	size_t bytes;

	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	return uslab_realloc(p, bytes);
}

PL_API size_t malloc_usable_size(void *p)
{
	return uslab_usable_size(p);
}

/* Every cache's unused memory back to the kernel; 1 if any went. */
PL_API int malloc_trim(size_t pad)
{
	(void)pad;
	int err = errno;
	size_t bytes = uslab_reap_all();
	errno = err;
	return bytes != 0;
}
