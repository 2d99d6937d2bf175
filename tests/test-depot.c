/* SPDX-License-Identifier: MIT */
/* Unit tests of the depot, linked with the layers below it only. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "layer-cache.h"
#include "testutil.h"

/* The depot's cache, with a recording observer (the oracle of its
 * reports), for each test. */
static struct uslab_cache *dc;
static struct layer_rec rec;

static void fx_setup(void)
{
	layer_mag_caches();
	dc = layer_cache("depottest", 64, NULL);
	memset(&rec, 0, sizeof rec);
	dc->c_obs = &layer_rec_ops;
	dc->c_obs_rec = &rec;
}

static void fx_teardown(void)
{
	ck_assert(depot_is_valid(dc));
	ck_assert(slab_cache_is_valid(dc));
	layer_cache_free(dc);
	dc = NULL;
}

/* The depot's figures now, as depot_counts() reads them. */
static struct depot_counts counts(void)
{
	struct depot_counts d;
	depot_counts(dc, &d);
	return d;
}

/* M objects taken straight from the slab layer. */
static size_t take(void **buf, size_t n)
{
	ck_assert_uint_eq(slab_alloc_bulk(dc, buf, n), n);
	return n;
}

/* Pretend the current working-set interval started an interval ago. */
static void age_interval(void)
{
	depot_lock(dc);
	dc->c_ws_start -= DEPOT_INTERVAL_NS;
	depot_unlock(dc);
}

/* ---- Put and get ---- */

START_TEST(depot_put_then_get_returns_the_magazine)
{
	void *in[128], *out[128];
	bool ended;
	size_t m = dc->c_mag_size;

	take(in, m);
	depot_put_full(dc, in, m, &ended);
	ck_assert_uint_eq(counts().dc_full, 1);
	ck_assert_uint_eq(counts().dc_objs, m);
	ck_assert(depot_is_valid(dc));
	ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
	ck_assert_int_eq(memcmp(in, out, m * sizeof(void *)), 0);
	ck_assert_uint_eq(counts().dc_full, 0);
	ck_assert_uint_eq(counts().dc_empty, 1); /* the structure is kept as a spare */
	ck_assert_uint_eq(slab_free_bulk(dc, out, m), 0);
}
END_TEST

START_TEST(depot_get_empty_takes_from_the_slabs)
{
	void *out[128];
	bool ended;

	ck_assert_uint_eq(slab_inuse(dc), 0);
	size_t n = depot_get_full(dc, out, &ended);
	ck_assert_uint_eq(n, dc->c_mag_size);
	ck_assert_uint_eq(slab_inuse(dc), n);
	ck_assert_uint_eq(counts().dc_full, 0);
	slab_free_bulk(dc, out, n);
}
END_TEST

START_TEST(depot_magazines_are_lifo)
{
	void *a[128], *b[128], *out[128];
	bool ended;
	size_t m = dc->c_mag_size;

	take(a, m);
	take(b, m);
	depot_put_full(dc, a, m, &ended);
	depot_put_full(dc, b, m, &ended);
	ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
	ck_assert_ptr_eq(out[0], b[0]);
	ck_assert_uint_eq(depot_get_full(dc, out + m, &ended), m);
	ck_assert_ptr_eq(out[m], a[0]);
	slab_free_bulk(dc, out, 2 * m);
}
END_TEST

START_TEST(depot_spares_bounded)
{
	enum { MAGS = DEPOT_SPARE_MAX + 8 };
	static void *objs[MAGS][128];
	void *out[128];
	bool ended;
	size_t m = dc->c_mag_size;

	for (int i = 0; i < MAGS; i++) {
		take(objs[i], m);
		depot_put_full(dc, objs[i], m, &ended);
	}
	ck_assert_uint_eq(counts().dc_full, MAGS);
	for (int i = 0; i < MAGS; i++) {
		ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
		slab_free_bulk(dc, out, m);
		ck_assert_uint_le(counts().dc_empty, DEPOT_SPARE_MAX);
	}
	ck_assert_uint_eq(counts().dc_empty, DEPOT_SPARE_MAX);
	/* The rest went back to their magazine cache. */
	unsigned lo, hi;
	depot_mag_classes(dc, &lo, &hi);
	ck_assert_uint_eq(slab_inuse(depot_mag_cache(lo)), DEPOT_SPARE_MAX);
}
END_TEST

START_TEST(depot_drain_sends_everything_to_the_slabs)
{
	void *a[128];
	bool ended;
	size_t m = dc->c_mag_size;

	take(a, m);
	depot_put_full(dc, a, m, &ended);
	ck_assert_uint_eq(slab_inuse(dc), m);
	depot_drain(dc);
	ck_assert_uint_eq(slab_inuse(dc), 0);
	ck_assert_uint_eq(counts().dc_full, 0);
	ck_assert_uint_eq(counts().dc_empty, 0); /* reap gives the spares back too */
}
END_TEST

/* ---- Working set ---- */

START_TEST(depot_interval_end_is_reported)
{
	void *a[128], *out[128];
	bool ended = true;
	size_t m = dc->c_mag_size;

	take(a, m);
	depot_put_full(dc, a, m, &ended);
	ck_assert(!ended);
	ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
	ck_assert(!ended);
	age_interval();
	depot_put_full(dc, out, m, &ended);
	ck_assert(ended);
	ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
	ck_assert(!ended); /* a new interval started at the last end */
	age_interval();
	ck_assert_uint_eq(depot_get_full(dc, a, &ended), m); /* from the slabs */
	ck_assert(ended);
	slab_free_bulk(dc, out, m);
	slab_free_bulk(dc, a, m);
}
END_TEST

/* Magazines that stayed in the depot through a whole interval go back to
 * the slab layer when it ends; those used during it stay. */
START_TEST(depot_interval_trims_what_stayed_unused)
{
	enum { MAGS = 4 };
	static void *objs[MAGS][128];
	void *out[128];
	bool ended;
	size_t m = dc->c_mag_size;

	for (int i = 0; i < MAGS; i++) {
		take(objs[i], m);
		depot_put_full(dc, objs[i], m, &ended);
	}
	/* First interval: the low-water mark started at 0, nothing trimmed. */
	age_interval();
	ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
	ck_assert(ended);
	ck_assert_uint_eq(counts().dc_full, MAGS - 1);
	/* Second interval: 3 magazines stayed all through it. */
	age_interval();
	depot_put_full(dc, out, m, &ended); /* 4 full for a moment, then the trim */
	ck_assert(ended);
	ck_assert_uint_eq(counts().dc_full, 1);
	ck_assert_uint_eq(counts().dc_objs, m);
	ck_assert_uint_eq(slab_inuse(dc), m); /* the other 3 * M are in their slabs */
	ck_assert(depot_is_valid(dc));
}
END_TEST

/* ---- Magazine structures ---- */

START_TEST(depot_mag_register_once)
{
	ck_assert_ptr_nonnull(depot_mag_cache(0));
	ck_assert(!depot_mag_register(0, depot_mag_cache(1)));
	ck_assert_uint_eq(depot_mag_rounds(0), DEPOT_MAG_MIN);
	ck_assert_uint_ge(depot_mag_cache(2)->c_size, depot_mag_bytes(2));
}
END_TEST

/* No magazine structure to be had: the objects go to their slabs. */
START_TEST(depot_without_structures_frees_to_the_slabs)
{
	struct uslab_cache *c = layer_cache(
		"nomag", 1024 * 1024, &(struct uslab_cache_conf){.pagesrc = &layer_failing_src});
	unsigned lo, hi;
	depot_mag_classes(c, &lo, &hi);
	struct uslab_cache *mc = depot_mag_cache(lo);
	const struct uslab_pagesrc *src = mc->c_src;
	void *a[8];
	bool ended;

	ck_assert_uint_eq(slab_alloc_bulk(c, a, c->c_mag_size), c->c_mag_size);
	/* The magazine cache's slabs cannot grow now: no structure. */
	depot_drain(c);
	slab_reap(mc);
	mc->c_src = &layer_failing_src;
	layer_fail = 1;
	depot_put_full(c, a, c->c_mag_size, &ended);
	layer_fail = 0;
	mc->c_src = src;
	struct depot_counts d;
	depot_counts(c, &d);
	ck_assert_uint_eq(d.dc_full, 0);
	ck_assert_uint_eq(slab_inuse(c), 0);
	layer_cache_free(c);
}
END_TEST

/* ---- Reports ---- */

/* Every change is reported with the figures depot_counts() gives. */
START_TEST(depot_reports_its_figures)
{
	void *a[128], *out[128];
	bool ended;
	size_t m = dc->c_mag_size;

	take(a, m);
	depot_put_full(dc, a, m, &ended);
	unsigned n = rec.lr_ndepot;
	ck_assert_uint_ge(n, 1);
	struct depot_counts now = counts();
	ck_assert_int_eq(memcmp(&rec.lr_depot, &now, sizeof now), 0);
	ck_assert_uint_eq(depot_get_full(dc, out, &ended), m);
	ck_assert_uint_gt(rec.lr_ndepot, n);
	now = counts();
	ck_assert_int_eq(memcmp(&rec.lr_depot, &now, sizeof now), 0);
	ck_assert_uint_eq(rec.lr_depot.dc_full, 0);
	slab_free_bulk(dc, out, m);
	/* The slab layer reports too: its last figures are slab_counts(). */
	struct slab_counts sc;
	slab_counts(dc, &sc);
	ck_assert_int_eq(memcmp(&rec.lr_slab, &sc, sizeof sc), 0);
}
END_TEST

static Suite *depot_suite(void)
{
	Suite *s = suite_create("depot");
	TCase *tc = tcase_create("put-get");

	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, depot_put_then_get_returns_the_magazine);
	tcase_add_test(tc, depot_get_empty_takes_from_the_slabs);
	tcase_add_test(tc, depot_magazines_are_lifo);
	tcase_add_test(tc, depot_spares_bounded);
	tcase_add_test(tc, depot_drain_sends_everything_to_the_slabs);
	suite_add_tcase(s, tc);

	tc = tcase_create("working-set");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, depot_interval_end_is_reported);
	tcase_add_test(tc, depot_interval_trims_what_stayed_unused);
	suite_add_tcase(s, tc);

	tc = tcase_create("magazines");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, depot_mag_register_once);
	tcase_add_test(tc, depot_without_structures_frees_to_the_slabs);
	suite_add_tcase(s, tc);

	tc = tcase_create("reports");
	tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
	tcase_add_test(tc, depot_reports_its_figures);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {depot_suite, NULL};
