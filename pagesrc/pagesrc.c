/* SPDX-License-Identifier: MIT */
/* Counting wrappers around any page source. */
#include "config.h"

#include <errno.h>
#include "os.h"
#include "pagesrc.h"

__thread unsigned pgsrc_busy __attribute__((tls_model("initial-exec")));
__thread bool pgsrc_purge_now __attribute__((tls_model("initial-exec")));

/* Process-wide byte counts; relaxed atomics, only the slow path updates them. */
static uint64_t pgsrc_got, pgsrc_returned, pgsrc_purged, pgsrc_failed, pgsrc_calls;

void pgsrc_count_call(void)
{
	__atomic_fetch_add(&pgsrc_calls, 1, __ATOMIC_RELAXED);
}

void *pgsrc_get(const struct uslab_pagesrc *src, size_t size)
{
	void *block = src->get(src->arg, size);

	if (block == NULL) {
		__atomic_fetch_add(&pgsrc_failed, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	__atomic_fetch_add(&pgsrc_got, size, __ATOMIC_RELAXED);
	return block;
}

void pgsrc_put(const struct uslab_pagesrc *src, void *block, size_t size)
{
	src->put(src->arg, block, size);
	__atomic_fetch_add(&pgsrc_returned, size, __ATOMIC_RELAXED);
}

void pgsrc_purge(const struct uslab_pagesrc *src, void *block, size_t size, bool now)
{
	if (src->purge == NULL)
		return;
	int err = errno; /* a free that purges keeps errno */
	pgsrc_purge_now = now;
	src->purge(src->arg, block, size);
	pgsrc_purge_now = false;
	errno = err;
	__atomic_fetch_add(&pgsrc_purged, size, __ATOMIC_RELAXED);
}

void pgsrc_totals(struct pgsrc_totals *out)
{
	out->pt_got = __atomic_load_n(&pgsrc_got, __ATOMIC_RELAXED);
	out->pt_put = __atomic_load_n(&pgsrc_returned, __ATOMIC_RELAXED);
	out->pt_purged = __atomic_load_n(&pgsrc_purged, __ATOMIC_RELAXED);
	out->pt_failures = __atomic_load_n(&pgsrc_failed, __ATOMIC_RELAXED);
	out->pt_calls = __atomic_load_n(&pgsrc_calls, __ATOMIC_RELAXED);
}

size_t pgsrc_page_size(void)
{
	static size_t page;
	size_t p = __atomic_load_n(&page, __ATOMIC_RELAXED);

	if (p == 0) {
		p = os_page_size();
		if (p == 0 || (p & (p - 1)) != 0)
			p = 4096;
		__atomic_store_n(&page, p, __ATOMIC_RELAXED);
	}
	return p;
}
