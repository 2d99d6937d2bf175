/* SPDX-License-Identifier: MIT */
/* Unit tests of the page sources: the mmap source and the counting wrappers. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* A source over mmap whose get() fails while @fail is set; counts calls. */
struct fake_src {
	bool fail;
	unsigned gets, puts, purges;
};

static void *fake_get(void *arg, size_t size)
{
	struct fake_src *f = arg;

	f->gets++;
	if (f->fail)
		return NULL;
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	return m->get(m->arg, size);
}

static void fake_put(void *arg, void *block, size_t size)
{
	struct fake_src *f = arg;

	f->puts++;
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	m->put(m->arg, block, size);
}

static void fake_purge(void *arg, void *block, size_t size)
{
	struct fake_src *f = arg;

	f->purges++;
	const struct uslab_pagesrc *m = uslab_pagesrc_mmap();
	m->purge(m->arg, block, size);
}

/* Write one byte per page of @block (and its last byte), then read them back. */
static void touch_pages(char *block, size_t size, unsigned char tag)
{
	size_t page = pgsrc_page_size();

	for (size_t off = 0; off < size; off += page)
		block[off] = (char)(tag ^ (unsigned char)(off / page));
	block[size - 1] = (char)tag;
	for (size_t off = page; off < size; off += page)
		ck_assert_int_eq((unsigned char)block[off],
		                 (unsigned char)(tag ^ (unsigned char)(off / page)));
	ck_assert_int_eq((unsigned char)block[size - 1], tag);
}

/* ---- mmap source ---- */

/* Loop index i: block size 64 KiB << i, up to 16 MiB. */
START_TEST(pagesrc_mmap_block_aligned_and_writable)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	size_t size = (64 * KIB) << _i;
	char *blocks[3];

	ck_assert_ptr_nonnull(src);
	ck_assert_str_eq(src->name, "mmap");
	/* Three in a row: the first may take the trimming path, the next ones
	 * the hint path; each must be aligned to its size. */
	for (int k = 0; k < 3; k++) {
		blocks[k] = src->get(src->arg, size);
		ck_assert_ptr_nonnull(blocks[k]);
		ck_assert_msg(((uintptr_t)blocks[k] & (size - 1)) == 0,
		              "block %p of %zu bytes unaligned", (void *)blocks[k], size);
		touch_pages(blocks[k], size, (unsigned char)(0x5a + k));
	}
	for (int k = 0; k < 3; k++)
		for (int j = 0; j < k; j++)
			ck_assert_msg(blocks[k] + size <= blocks[j] ||
			                      blocks[j] + size <= blocks[k],
			              "blocks %d and %d overlap", j, k);
	for (int k = 0; k < 3; k++)
		src->put(src->arg, blocks[k], size);
}
END_TEST

START_TEST(pagesrc_mmap_mixed_sizes_aligned)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	static const size_t sizes[] = {64 * KIB, 16 * MIB, 64 * KIB, 128 * KIB,
	                               2 * MIB,  64 * KIB, 4 * MIB};
	char *blocks[sizeof sizes / sizeof sizes[0]];

	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		blocks[k] = src->get(src->arg, sizes[k]);
		ck_assert_ptr_nonnull(blocks[k]);
		ck_assert_msg(((uintptr_t)blocks[k] & (sizes[k] - 1)) == 0, "block %zu unaligned",
		              k);
		blocks[k][0] = 1;
		blocks[k][sizes[k] - 1] = 2;
	}
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		src->put(src->arg, blocks[k], sizes[k]);
}
END_TEST

START_TEST(pagesrc_mmap_invalid_size_fails)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	static const size_t bad[] = {0, 3 * 64 * KIB, 64 * KIB + 1, 64 * KIB - 1, SIZE_MAX};

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		errno = 0;
		ck_assert_msg(src->get(src->arg, bad[k]) == NULL, "size %zu accepted", bad[k]);
		ck_assert_int_eq(errno, EINVAL);
	}
}
END_TEST

START_TEST(pagesrc_mmap_purge_zeroes_contents)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	size_t size = 64 * KIB;
	char *block = src->get(src->arg, size);

	ck_assert_ptr_nonnull(block);
	memset(block, 0xa5, size);
	ck_assert(src->purge != NULL);
	/* MADV_FREE: the bytes stay until the kernel wants the pages (zeros
	 * or the old ones), and the block stays usable. */
	src->purge(src->arg, block, size);
	for (size_t off = 0; off < size; off += 512)
		ck_assert(block[off] == 0 || block[off] == (char)0xa5);
	memset(block, 0xa5, size);
	/* A caller that wants the memory now (a reap): MADV_DONTNEED, and
	 * private anonymous memory reads back as zero. */
	pgsrc_purge(src, block, size, true);
	for (size_t off = 0; off < size; off += 512)
		ck_assert_int_eq(block[off], 0);
	memset(block, 0x3c, size);
	ck_assert_int_eq(block[size - 1], 0x3c);
	src->put(src->arg, block, size);
}
END_TEST

/* ---- Counting wrappers ---- */

START_TEST(pagesrc_totals_count_get_put_purge)
{
	const struct uslab_pagesrc *src = uslab_pagesrc_mmap();
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	char *a = pgsrc_get(src, 64 * KIB);
	char *b = pgsrc_get(src, 1 * MIB);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq((uintptr_t)b & (MIB - 1), 0);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, 64 * KIB + MIB);
	ck_assert_uint_eq(t1.pt_put, t0.pt_put);
	ck_assert_uint_eq(t1.pt_purged, t0.pt_purged);
	ck_assert_uint_eq(t1.pt_failures, t0.pt_failures);

	pgsrc_purge(src, b, MIB, false);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_purged - t0.pt_purged, MIB);

	pgsrc_put(src, a, 64 * KIB);
	pgsrc_put(src, b, MIB);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, 64 * KIB + MIB);
	ck_assert_uint_eq(t1.pt_put - t0.pt_put, 64 * KIB + MIB);
	ck_assert_uint_eq(t1.pt_failures, t0.pt_failures);
}
END_TEST

START_TEST(pagesrc_totals_count_failures)
{
	struct fake_src f = {.fail = true};
	const struct uslab_pagesrc src = {
		.name = "fake", .get = fake_get, .put = fake_put, .purge = fake_purge, .arg = &f};
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	ck_assert_ptr_null(pgsrc_get(&src, 64 * KIB));
	ck_assert_ptr_null(pgsrc_get(&src, 128 * KIB));
	pgsrc_totals(&t1);
	ck_assert_uint_eq(f.gets, 2);
	ck_assert_uint_eq(t1.pt_failures - t0.pt_failures, 2);
	ck_assert_uint_eq(t1.pt_got, t0.pt_got);

	/* The same source recovers: counted as a success, not a failure. */
	f.fail = false;
	void *p = pgsrc_get(&src, 64 * KIB);
	ck_assert_ptr_nonnull(p);
	pgsrc_purge(&src, p, 64 * KIB, false);
	pgsrc_put(&src, p, 64 * KIB);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_failures - t0.pt_failures, 2);
	ck_assert_uint_eq(t1.pt_got - t0.pt_got, 64 * KIB);
	ck_assert_uint_eq(t1.pt_put - t0.pt_put, 64 * KIB);
	ck_assert_uint_eq(t1.pt_purged - t0.pt_purged, 64 * KIB);
	ck_assert_uint_eq(f.gets, 3);
	ck_assert_uint_eq(f.puts, 1);
	ck_assert_uint_eq(f.purges, 1);
}
END_TEST

START_TEST(pagesrc_invalid_size_counts_failure)
{
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	ck_assert_ptr_null(pgsrc_get(uslab_pagesrc_mmap(), 0));
	ck_assert_ptr_null(pgsrc_get(uslab_pagesrc_mmap(), 96 * KIB));
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_failures - t0.pt_failures, 2);
	ck_assert_uint_eq(t1.pt_got, t0.pt_got);
}
END_TEST

START_TEST(pagesrc_purge_without_callback_is_not_counted)
{
	struct fake_src f = {0};
	const struct uslab_pagesrc src = {
		.name = "nopurge", .get = fake_get, .put = fake_put, .arg = &f};
	struct pgsrc_totals t0, t1;

	pgsrc_totals(&t0);
	void *p = pgsrc_get(&src, 64 * KIB);
	ck_assert_ptr_nonnull(p);
	pgsrc_purge(&src, p, 64 * KIB, false);
	pgsrc_put(&src, p, 64 * KIB);
	pgsrc_totals(&t1);
	ck_assert_uint_eq(t1.pt_purged, t0.pt_purged);
	ck_assert_uint_eq(t1.pt_put - t0.pt_put, 64 * KIB);
}
END_TEST

START_TEST(pagesrc_page_size_matches_system)
{
	ck_assert_uint_eq(pgsrc_page_size(), (size_t)sysconf(_SC_PAGESIZE));
	ck_assert_uint_eq(pgsrc_page_size() & (pgsrc_page_size() - 1), 0);
}
END_TEST

static Suite *pagesrc_suite(void)
{
	Suite *s = suite_create("pagesrc");
	TCase *tc;

	tc = tcase_create("mmap");
	tcase_add_loop_test(tc, pagesrc_mmap_block_aligned_and_writable, 0,
	                    9); /* 64 KiB .. 16 MiB */
	tcase_add_test(tc, pagesrc_mmap_mixed_sizes_aligned);
	tcase_add_test(tc, pagesrc_mmap_invalid_size_fails);
	tcase_add_test(tc, pagesrc_mmap_purge_zeroes_contents);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);

	tc = tcase_create("totals");
	tcase_add_test(tc, pagesrc_totals_count_get_put_purge);
	tcase_add_test(tc, pagesrc_totals_count_failures);
	tcase_add_test(tc, pagesrc_invalid_size_counts_failure);
	tcase_add_test(tc, pagesrc_purge_without_callback_is_not_counted);
	tcase_add_test(tc, pagesrc_page_size_matches_system);
	suite_add_tcase(s, tc);
	return s;
}

Suite *(*const test_suites[])(void) = {pagesrc_suite, NULL};
