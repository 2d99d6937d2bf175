/* SPDX-License-Identifier: MIT */
/* Reporting misuse and failed assertions: one line, then abort. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const report_what[] = {
	[USLAB_E_FOREIGN] = "not an object of this cache",
	[USLAB_E_BOUNDARY] = "interior pointer",
	[USLAB_E_DUPFREE] = "double free",
	[USLAB_E_REENTRY] = "cache used from its own ctor or dtor, or while being destroyed",
	[USLAB_E_DEFER] = "freed in a signal handler while uslab was busy, beyond what can wait",
	[USLAB_E_ASSERT] = "internal invariant failed",
	[USLAB_E_REDZONE] = "red zone overwritten",
	[USLAB_E_POISON] = "use after free",
	[USLAB_E_LEAK] = "leak",
	[USLAB_E_SLAB] = "slab bookkeeping damaged",
	[USLAB_E_RCU_READER] = "uslab_rcu_barrier() inside an RCU read-side critical section",
	[USLAB_E_RCU_NOMEM] = "free_rcu out of memory where it cannot wait for a grace period",
};

/* Append @s to @buf at *@len (bounded); no stdio, so it is signal-safe. */
static void put_str(char *buf, size_t cap, size_t *len, const char *s)
{
	while (*s != '\0' && *len + 1 < cap)
		buf[(*len)++] = *s++;
}

static void put_hex(char *buf, size_t cap, size_t *len, uintptr_t v)
{
	char tmp[2 + 2 * sizeof v + 1];
	int n = (int)sizeof tmp - 1;

	tmp[n] = '\0';
	do {
		tmp[--n] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v != 0);
	tmp[--n] = 'x';
	tmp[--n] = '0';
	put_str(buf, cap, len, tmp + n);
}

void (*debug_before_abort)(void);
void (*debug_report_more)(const struct uslab_cache *cache, const void *obj, int fd);

size_t uslab_report_line(char *buf, size_t cap, const struct uslab_cache *cache, const void *obj,
                         enum uslab_error err, const char *detail)
{
	size_t len = 0;

	put_str(buf, cap - 1, &len, "uslab: cache '");
	put_str(buf, cap - 1, &len, cache != NULL ? cache->c_name : "?");
	put_str(buf, cap - 1, &len, err == USLAB_E_SLAB ? "': slab " : "': object ");
	put_hex(buf, cap - 1, &len, (uintptr_t)obj);
	put_str(buf, cap - 1, &len, ": ");
	put_str(buf, cap - 1, &len, report_what[err]);
	if (detail != NULL) {
		put_str(buf, cap - 1, &len, " (");
		put_str(buf, cap - 1, &len, detail);
		put_str(buf, cap - 1, &len, ")");
	}
	buf[len++] = '\n';
	return len;
}

void uslab_report_detail(const struct uslab_cache *cache, const void *obj, enum uslab_error err,
                         const char *detail)
{
	char line[320];
	size_t len = uslab_report_line(line, sizeof line, cache, obj, err, detail);

	PROBE3(error, cache, obj, (int)err);
	os_write_stderr(line, len); /* nothing more can be done if it fails */
	void (*more)(const struct uslab_cache *, const void *, int) =
		__atomic_load_n(&debug_report_more, __ATOMIC_ACQUIRE);
	if (more != NULL && obj != NULL)
		more(cache, obj, 2); /* stderr */
	void (*hook)(void) = __atomic_load_n(&debug_before_abort, __ATOMIC_ACQUIRE);
	if (hook != NULL)
		hook();
	abort();
}

void uslab_report(const struct uslab_cache *cache, const void *obj, enum uslab_error err)
{
	uslab_report_detail(cache, obj, err, NULL);
}

void uslab_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "uslab: assertion failed: %s (%s:%d)\n", expr, file, line);
	abort();
}
