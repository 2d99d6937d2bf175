/* SPDX-License-Identifier: MIT */
/* Caches assembled from the layers alone (see layer-cache.h). */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer-cache.h"

struct uslab_cache *layer_cache(const char *name, size_t size, const struct uslab_cache_conf *conf)
{
	static const struct uslab_cache_conf defaults;
	struct uslab_cache *c;

	if (conf == NULL)
		conf = &defaults;
	ck_assert_int_eq(posix_memalign((void **)&c, 64, sizeof *c), 0);
	memset(c, 0, sizeof *c);
	ck_assert(slab_cache_init(c, name, size, conf, conf->flags));
	depot_init(c);
	return c;
}

void layer_cache_free(struct uslab_cache *c)
{
	depot_drain(c);
	ck_assert_uint_eq(slab_inuse(c), 0);
	depot_fini(c);
	slab_release_all(c);
	slab_cache_fini(c);
	free(c);
}

void layer_mag_caches(void)
{
	for (unsigned k = 0; k < DEPOT_MAG_CLASSES; k++) {
		if (depot_mag_cache(k) != NULL)
			continue;
		char name[USLAB_NAME_MAX + 1];
		snprintf(name, sizeof name, "uslab_magazine_%u", (unsigned)depot_mag_rounds(k));
		struct uslab_cache *mc =
			layer_cache(name, depot_mag_bytes(k),
		                    &(struct uslab_cache_conf){.flags = USLAB_NOMAGAZINE});
		mc->c_flags |= CACHE_INTERNAL;
		ck_assert(depot_mag_register(k, mc));
	}
}

int layer_fail;

static void *fail_get(void *arg, size_t size)
{
	(void)arg;
	if (__atomic_load_n(&layer_fail, __ATOMIC_RELAXED)) {
		errno = ENOMEM;
		return NULL;
	}
	return uslab_pagesrc_mmap()->get(NULL, size);
}

static void fail_put(void *arg, void *block, size_t size)
{
	(void)arg;
	uslab_pagesrc_mmap()->put(NULL, block, size);
}

const struct uslab_pagesrc layer_failing_src = {
	.name = "failing",
	.get = fail_get,
	.put = fail_put,
};

static void rec_slab(void *rec, const struct slab_counts *sc)
{
	struct layer_rec *r = rec;
	r->lr_slab = *sc;
	r->lr_nslab++;
}

static void rec_depot(void *rec, const struct depot_counts *dc)
{
	struct layer_rec *r = rec;
	r->lr_depot = *dc;
	r->lr_ndepot++;
}

static void rec_pages(void *rec)
{
	((struct layer_rec *)rec)->lr_npages++;
}

static void rec_slot(void *rec, uint32_t cpu, void *page)
{
	struct layer_rec *r = rec;
	const struct pcpu_slot *s = (const struct pcpu_slot *)((char *)page - PCPU_CTR_DELTA);
	const struct pcpu_counters *k = page;

	/* The contract: nothing has counted on the page and no hit can yet. */
	if (s->p_cap != 0 || s->p_word != 0 || s->p_live != 0 || k->pc_word != 0 ||
	    k->pc_slow_allocs != 0 || k->pc_slow_frees != 0)
		r->lr_slot_not_quiet++;
	if (cpu < 64)
		r->lr_slot_mask |= 1ull << cpu;
	r->lr_nslot++;
}

const struct obs_ops layer_rec_ops = {
	.o_slab = rec_slab,
	.o_depot = rec_depot,
	.o_pages = rec_pages,
	.o_slot = rec_slot,
};
