/* SPDX-License-Identifier: MIT */
/* On Windows: the Linux page sources (mmap, brk, hugepage) are absent. */
#include "config.h"

#include <errno.h>
#include <stddef.h>

#include "pagesrc.h"

/* Each answers ENOSYS, as include/uslab.h says; the default source there
 * is virtualalloc.c. */

const struct uslab_pagesrc *uslab_pagesrc_mmap(void)
{
	errno = ENOSYS;
	return NULL;
}

const struct uslab_pagesrc *uslab_pagesrc_brk(void)
{
	errno = ENOSYS;
	return NULL;
}

const struct uslab_pagesrc *uslab_pagesrc_hugepage(void)
{
	errno = ENOSYS;
	return NULL;
}

const char *uslab_pagesrc_hugepage_mode(void)
{
	return "off: not on Windows";
}

const char *pgsrc_hugepage_decide(const char *root)
{
	(void)root;
	errno = ENOSYS;
	return NULL;
}

uint64_t pgsrc_brk_lost(void)
{
	return 0;
}
