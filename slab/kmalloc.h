/* SPDX-License-Identifier: MIT */
/* The size classes (kmalloc.c), for the preloaded malloc and the tests. */
#ifndef USLAB_KMALLOC_H
#define USLAB_KMALLOC_H

#include <stddef.h>
#include <stdint.h>

struct uslab_cache;

#define KM_NCLASSES 41

/* The class sizes, smallest first; km_sizes[KM_NCLASSES - 1] == USLAB_CLASS_MAX. */
extern const uint32_t km_sizes[KM_NCLASSES];
/* The class caches, NULL until first used (acquire loads). */
extern struct uslab_cache *km_cache[KM_NCLASSES];

/** The class of @size, 0 .. USLAB_CLASS_MAX: the smallest that holds it. */
unsigned km_class(size_t size);
/** An object of class @i (its cache made now if it is not yet). */
void *km_alloc_class(unsigned i);
/** uslab_free() past the hit; preserves errno. */
void km_free_slow(void *p);
/** Live large blocks and their usable bytes. */
void km_large_totals(uint64_t *blocks, uint64_t *bytes);

/* Where pointers that uslab never handed out go: set by the preloaded
 * malloc (preload.c) to glibc's own functions; NULL (the library) means
 * such a pointer is reported. */
struct km_foreign {
	void (*kf_free)(void *p);
	size_t (*kf_usable)(const void *p);
};
extern const struct km_foreign *km_foreign;
/* preload.c's: glibc's free and malloc_usable_size, found at first use. */
extern const struct km_foreign preload_foreign;

/** Around a call that may malloc while this thread must not make a class
 *  (dlsym): such a malloc is served from the bootstrap area. */
void km_boot_begin(void);
void km_boot_end(void);

#endif /* USLAB_KMALLOC_H */
