/* SPDX-License-Identifier: MIT */
/* Caches assembled from the layers alone, for the depot and pcpu suites. */
#ifndef USLAB_LAYER_CACHE_H
#define USLAB_LAYER_CACHE_H

#include "internal.h"

/* A cache built the way cache.c builds one, but from the slab layer and
 * the depot only, so that these suites link without the layers above them
 * (the pcpu suite adds its own layer on top). */
struct uslab_cache *layer_cache(const char *name, size_t size, const struct uslab_cache_conf *conf);
/* Empty the depot of @c, check that nothing is out, and free it. */
void layer_cache_free(struct uslab_cache *c);
/* Create and register the magazine caches (once per process). */
void layer_mag_caches(void);

/* A page source that fails while layer_fail is non-zero. */
extern const struct uslab_pagesrc layer_failing_src;
extern int layer_fail;

/* An observer that records what the layers report (observe.h). */
struct layer_rec {
	struct slab_counts lr_slab; /* the last report of each kind */
	struct depot_counts lr_depot;
	unsigned lr_nslab, lr_ndepot, lr_npages, lr_nslot;
	unsigned lr_slot_not_quiet; /* slot reports with a cap or count set */
	uint64_t lr_slot_mask;      /* bit i: CPU i's slot reported its start */
};
extern const struct obs_ops layer_rec_ops;

#endif
