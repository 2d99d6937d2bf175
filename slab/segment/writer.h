/* SPDX-License-Identifier: MIT */
/* The stats segment's writer, as the registry (cache.c) drives it. */
#ifndef USLAB_SEG_WRITER_H
#define USLAB_SEG_WRITER_H

#include <stdint.h>

#include "../observe.h"

/* What the writer is told of a cache when it is published: all it ever
 * knows of it, besides what the hooks report. */
struct seg_info {
	const char *si_name;
	uint64_t si_obj_size, si_slot_size, si_align, si_slab_size;
	uint32_t si_flags, si_objs_per_slab, si_mag_size, si_mag_max;
	uint32_t si_ncpus;   /* per-CPU slots, the same for every cache */
	const char *si_mode; /* uslab_mode() */
};

/** The hooks (observe.h) of a published cache; their record is what
 *  seg_cache_publish() returned. */
extern const struct obs_ops seg_obs;

/** Publish a cache in a record of the stats segment, when stats are on and
 *  the file can grow; the record, or NULL when the cache stays
 *  unpublished. No uslab lock held. */
void *seg_cache_publish(const struct seg_info *info);
/** Retire a record (NULL: nothing) before the slots whose pages it
 *  shared are unmapped. */
void seg_cache_retire(void *rec);
/** Fork handlers, called last in prepare and first in parent and child
 *  (cache.c), with every cache lock held. The child makes every counters
 *  page it shared private again, lets its records and the parent's file
 *  go, and publishes only the caches it creates itself. */
void seg_atfork_prepare(void);
void seg_atfork_parent(void);
void seg_atfork_child(void);

#endif /* USLAB_SEG_WRITER_H */
