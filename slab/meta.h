/* SPDX-License-Identifier: MIT */
/* The library's own memory, guarded from objects (slab/meta.c). */
#ifndef USLAB_META_H
#define USLAB_META_H

#include <stddef.h>
#include <stdint.h>

#include "uslab.h"

/** Zeroed memory for a structure of @size bytes (64-byte aligned at
 *  least); NULL with ENOMEM. Never malloc. */
void *meta_alloc(size_t size);
/** Give back what meta_alloc(@size) returned (NULL: nothing). */
void meta_free(void *p, size_t size);
/** The page source of the library's internal caches. */
const struct uslab_pagesrc *meta_pagesrc(void);
/** Give back the empty block each structure class keeps for reuse. */
void meta_trim(void);
/** Bytes of metadata chunks mapped. */
uint64_t meta_mapped(void);
/** Across fork (cache.c): meta_lock, taken last, released first. */
void meta_atfork_prepare(void);
void meta_atfork_release(void);

#endif /* USLAB_META_H */
