/* SPDX-License-Identifier: MIT */
/* Guarded sampling where it is absent (Windows): USLAB_SAMPLE is said and ignored. */
#include "config.h"

#include <string.h>

#include "internal.h"

/*
 * Design
 *
 * sample.c puts a sampled object on a page of its own and reports the
 * access that faults on it from a SIGSEGV handler. Windows has no
 * signals for that (a vectored exception handler would be the way: not
 * built), so the build takes this file there: USLAB_SAMPLE is said once
 * on stderr and no object is ever sampled; the other debug flags work.
 */

void *sample_alloc(struct uslab_cache *c)
{
	(void)c;
	return NULL;
}

bool sample_free(struct uslab_cache *c, void *obj)
{
	(void)c;
	(void)obj;
	return false;
}

void sample_init(uint64_t period)
{
	static const char msg[] = "uslab: USLAB_SAMPLE: no guarded sampling on this system\n";

	(void)period;
	os_write_stderr(msg, sizeof msg - 1);
}

bool sample_is_live(const struct uslab_cache *c, const void *obj)
{
	(void)c;
	(void)obj;
	return false;
}

struct uslab_cache *sample_owner(const void *obj)
{
	(void)obj;
	return NULL;
}

void sample_atfork_prepare(void)
{
}

void sample_atfork_release(void)
{
}
