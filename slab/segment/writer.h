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
	uint64_t si_ctr_base;  /* its arena's counters in the file (0: private) */
	uint32_t si_ctr_index; /* its index in the arena */
	uint64_t si_rcu_cap;   /* objects waiting at most for grace periods */
};

/** The hooks (observe.h) of a published cache; their record is what
 *  seg_cache_publish() returned. */
extern const struct obs_ops seg_obs;
/** The arenas' counters provider (observe.h). */
extern const struct arena_counters_ops seg_counters;

/** The figures every cache shares: slots per arena and the mode, before
 *  anything is published. */
void seg_configure(uint32_t ncpus, const char *mode);
/** Publish a cache in a record; the record, or NULL when the cache stays
 *  unpublished (stats off, the segment lost). No uslab lock held. */
void *seg_cache_publish(const struct seg_info *info);
/** Retire a record (NULL: nothing). */
void seg_cache_retire(void *rec);
/** The mode changed at run time (pcpu.c): rewrite it in the header. */
void seg_mode_changed(const char *mode);
/** Where the segment is published, or why it is not (a static string). */
const char *seg_status(void);
/** A misuse report is about to abort: remove the locator
 *  (async-signal-safe). */
void seg_before_abort(void);
/** Fork handlers, called last in prepare and first in parent and child
 *  (cache.c), with every cache lock held. The child makes every counters
 *  region it shared private again, lets its records and the parent's
 *  descriptor go, and publishes only the caches it creates itself. */
void seg_atfork_prepare(void);
void seg_atfork_parent(void);
void seg_atfork_child(void);

#endif /* USLAB_SEG_WRITER_H */
