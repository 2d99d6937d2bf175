/* SPDX-License-Identifier: MIT */
/* The stats segment where it is absent (Windows): nothing is published. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "uslab/stats.h"
#include "writer.h"

/*
 * Design
 *
 * The segment (writer.c, reader.c) is a sealed memfd that other processes
 * find through /proc: Linux only. On Windows the build takes this file:
 * no cache is published (seg_cache_publish returns NULL, so the caches
 * have no observer and pay nothing for one), uslab_global_stats() says
 * "absent: no stats segment on this system" in its segment field, and the
 * reader's calls fail with ENOSYS. uslab_cache_stats() and the other
 * in-process statistics work as on Linux. (A named file mapping would be
 * the Windows way to publish; not built.)
 */

static bool seg_no_map(void *addr, size_t len, uint64_t *file_off)
{
	(void)addr;
	(void)len;
	(void)file_off;
	return false;
}

const struct obs_ops seg_obs;
const struct arena_counters_ops seg_counters = {.ac_map = seg_no_map};

void seg_configure(uint32_t ncpus, const char *mode)
{
	(void)ncpus;
	(void)mode;
}

void *seg_cache_publish(const struct seg_info *info)
{
	(void)info;
	return NULL;
}

void seg_cache_retire(void *rec)
{
	(void)rec;
}

void seg_mode_changed(const char *mode)
{
	(void)mode;
}

const char *seg_status(void)
{
	return "absent: no stats segment on this system";
}

void seg_before_abort(void)
{
}

void seg_atfork_prepare(void)
{
}

void seg_atfork_parent(void)
{
}

void seg_atfork_child(void)
{
}

/* See include/uslab/stats.h */
int uslab_stats_list(struct uslab_proc *procs, size_t n)
{
	(void)procs;
	(void)n;
	errno = ENOSYS;
	return -1;
}

struct uslab_reader *uslab_stats_open(pid_t pid)
{
	(void)pid;
	errno = ENOSYS;
	return NULL;
}

int uslab_stats_read(struct uslab_reader *r, struct uslab_snapshot *out)
{
	(void)r;
	memset(out, 0, sizeof *out);
	errno = ENOSYS;
	return -1;
}

int uslab_stats_parse(const void *image, size_t len, struct uslab_snapshot *out)
{
	(void)image;
	(void)len;
	memset(out, 0, sizeof *out);
	errno = ENOSYS;
	return -1;
}

void uslab_snapshot_free(struct uslab_snapshot *s)
{
	(void)s; /* nothing was ever filled in */
}

void uslab_stats_close(struct uslab_reader *r)
{
	(void)r;
}
