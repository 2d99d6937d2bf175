/* SPDX-License-Identifier: MIT */
/* stats, stats settings/slabs/items/conns: memcached's groups and field names. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "uslab.h"
#include "mc.h"

/*
 * Design
 *
 * Every worker counts in its own struct mc_tstats (plain increments, no
 * sharing); "stats" adds them up, racily, as memcached does with its
 * per-thread stats. Server-wide figures are atomics in mc_g. The slab
 * tables come from uslab itself: each item class is a uslab cache, and
 * "stats slabs" prints uslab_cache_stats() in memcached's field names
 * (a page is a uslab slab), so the numbers agree with uslabtop's.
 */

#define STATS_MAX_THREADS 256

static struct mc_tstats *threads[STATS_MAX_THREADS];
static unsigned nthreads;
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;

void mc_tstats_register(struct mc_tstats *ts)
{
	pthread_mutex_lock(&threads_lock);
	if (nthreads < STATS_MAX_THREADS)
		threads[nthreads++] = ts;
	pthread_mutex_unlock(&threads_lock);
}

static void sum(struct mc_tstats *out)
{
	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&threads_lock);
	for (unsigned i = 0; i < nthreads; i++) {
		const uint64_t *a = (const uint64_t *)threads[i];
		uint64_t *o = (uint64_t *)out;
		for (size_t k = 0; k < sizeof *out / sizeof(uint64_t); k++)
			o[k] += __atomic_load_n(&a[k], __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&threads_lock);
}

void stats_reset(void)
{
	pthread_mutex_lock(&threads_lock);
	for (unsigned i = 0; i < nthreads; i++)
		memset(threads[i], 0, sizeof *threads[i]);
	pthread_mutex_unlock(&threads_lock);
	__atomic_store_n(&mc_g.total_conns, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&mc_g.rejected_conns, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&mc_g.evictions, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&mc_g.reclaimed, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&mc_g.total_items, 0, __ATOMIC_RELAXED);
}

void stats_emit(struct conn *c, const char *name, const char *fmt, ...)
{
	char v[256];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(v, sizeof v, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof v)
		n = (int)sizeof v - 1;
	if (c->proto == MC_PROTO_BINARY)
		bin_stat(c, name, strlen(name), v, (size_t)n);
	else
		out_printf(c, "STAT %s %.*s\r\n", name, n, v);
}

#define U(x) ((unsigned long long)(x))
#define G(f) U(__atomic_load_n(&mc_g.f, __ATOMIC_RELAXED))

void stats_general(struct conn *c)
{
	struct mc_tstats t;
	struct rusage ru;

	sum(&t);
	getrusage(RUSAGE_SELF, &ru);
	stats_emit(c, "pid", "%d", (int)getpid());
	stats_emit(c, "uptime", "%u", mc_now);
	stats_emit(c, "time", "%lld", (long long)(mc_started + mc_now));
	stats_emit(c, "version", "%s", MC_VERSION);
	stats_emit(c, "libevent", "none (epoll)");
	stats_emit(c, "pointer_size", "%d", (int)(8 * sizeof(void *)));
	stats_emit(c, "rusage_user", "%ld.%06ld", (long)ru.ru_utime.tv_sec,
	           (long)ru.ru_utime.tv_usec);
	stats_emit(c, "rusage_system", "%ld.%06ld", (long)ru.ru_stime.tv_sec,
	           (long)ru.ru_stime.tv_usec);
	stats_emit(c, "max_connections", "%d", mc_set.maxconns);
	stats_emit(c, "curr_connections", "%llu", G(curr_conns));
	stats_emit(c, "total_connections", "%llu", G(total_conns));
	stats_emit(c, "rejected_connections", "%llu", G(rejected_conns));
	stats_emit(c, "connection_structures", "%llu", G(conn_structs));
	stats_emit(c, "cmd_get", "%llu", U(t.get_cmds));
	stats_emit(c, "cmd_set", "%llu", U(t.set_cmds));
	stats_emit(c, "cmd_flush", "%llu", U(t.flush_cmds));
	stats_emit(c, "cmd_touch", "%llu", U(t.touch_cmds));
	stats_emit(c, "cmd_meta", "%llu", U(t.meta_cmds));
	stats_emit(c, "get_hits", "%llu", U(t.get_hits));
	stats_emit(c, "get_misses", "%llu", U(t.get_misses));
	stats_emit(c, "get_expired", "%llu", U(t.get_expired));
	stats_emit(c, "get_flushed", "%llu", U(t.get_flushed));
	stats_emit(c, "delete_misses", "%llu", U(t.delete_misses));
	stats_emit(c, "delete_hits", "%llu", U(t.delete_hits));
	stats_emit(c, "incr_misses", "%llu", U(t.incr_misses));
	stats_emit(c, "incr_hits", "%llu", U(t.incr_hits));
	stats_emit(c, "decr_misses", "%llu", U(t.decr_misses));
	stats_emit(c, "decr_hits", "%llu", U(t.decr_hits));
	stats_emit(c, "cas_misses", "%llu", U(t.cas_misses));
	stats_emit(c, "cas_hits", "%llu", U(t.cas_hits));
	stats_emit(c, "cas_badval", "%llu", U(t.cas_badval));
	stats_emit(c, "touch_hits", "%llu", U(t.touch_hits));
	stats_emit(c, "touch_misses", "%llu", U(t.touch_misses));
	stats_emit(c, "auth_cmds", "0");
	stats_emit(c, "auth_errors", "0");
	stats_emit(c, "bytes_read", "%llu", U(t.bytes_read));
	stats_emit(c, "bytes_written", "%llu", U(t.bytes_written));
	stats_emit(c, "limit_maxbytes", "%llu", U(mc_set.maxbytes));
	stats_emit(c, "accepting_conns", "1");
	stats_emit(c, "threads", "%d", mc_set.threads);
	stats_emit(c, "hash_power_level", "%llu", G(hash_power));
	stats_emit(c, "hash_bytes", "%llu", G(hash_bytes));
	stats_emit(c, "hash_is_expanding", "0");
	stats_emit(c, "malloc_fails", "%llu", G(outofmemory));
	stats_emit(c, "bytes", "%llu", G(bytes));
	stats_emit(c, "curr_items", "%llu", G(curr_items));
	stats_emit(c, "total_items", "%llu", G(total_items));
	stats_emit(c, "expired_unfetched", "%llu", G(expired_unfetched));
	stats_emit(c, "evicted_unfetched", "%llu", G(evicted_unfetched));
	stats_emit(c, "evictions", "%llu", G(evictions));
	stats_emit(c, "reclaimed", "%llu", G(reclaimed));
	stats_emit(c, "crawler_reclaimed", "%llu", G(crawler_reclaimed));
	stats_emit(c, "closed_long_lines", "%llu", G(closed_long_line));
	/* uslab's own view */
	stats_emit(c, "uslab_mode", "%s", uslab_mode());
	stats_emit(c, "uslab_item_bytes", "%llu", U(items_mem_used()));
	stats_emit(c, "uslab_item_held", "%llu", U(items_mem_held()));
}

void stats_settings(struct conn *c)
{
	stats_emit(c, "maxbytes", "%llu", U(mc_set.maxbytes));
	stats_emit(c, "maxconns", "%d", mc_set.maxconns);
	stats_emit(c, "tcpport", "%d", mc_set.port);
	stats_emit(c, "udpport", "0");
	stats_emit(c, "inter", "%s", mc_set.listen);
	stats_emit(c, "verbosity", "%d", mc_set.verbose);
	stats_emit(c, "oldest", "0");
	stats_emit(c, "evictions", "%s", mc_set.no_evict ? "off" : "on");
	stats_emit(c, "domain_socket", "NULL");
	stats_emit(c, "umask", "700");
	stats_emit(c, "growth_factor", "1.12");
	stats_emit(c, "chunk_size", "48");
	stats_emit(c, "num_threads", "%d", mc_set.threads);
	stats_emit(c, "stat_key_prefix", ":");
	stats_emit(c, "detail_enabled", "no");
	stats_emit(c, "reqs_per_event", "20");
	stats_emit(c, "cas_enabled", "%s", mc_set.cas_off ? "no" : "yes");
	stats_emit(c, "tcp_backlog", "1024");
	stats_emit(c, "binding_protocol", "auto-negotiate");
	stats_emit(c, "auth_enabled_sasl", "no");
	stats_emit(c, "item_size_max", "%llu", U(mc_set.item_max));
	stats_emit(c, "maxconns_fast", "yes");
	stats_emit(c, "hashpower_init", "16");
	stats_emit(c, "slab_reassign", "no");
	stats_emit(c, "lru_crawler", "yes");
	stats_emit(c, "lru_segmented", "no");
	stats_emit(c, "allocator", "uslab (%s)", uslab_mode());
}

void stats_slabs(struct conn *c)
{
	unsigned active = 0;
	uint64_t malloced = 0;
	char name[48];

	for (unsigned i = 0; i < items_nclasses(); i++) {
		struct item_class_info k;
		struct uslab_stats st;
		if (!items_class(i, &k) || uslab_cache_stats(k.cache, &st) != 0 ||
		    st.total_slabs == 0)
			continue;
		active++;
		malloced += st.bytes_total;
		unsigned id = i + 1;
#define SLAB(f, fmt, v)                                                                            \
	do {                                                                                       \
		snprintf(name, sizeof name, "%u:" f, id);                                          \
		stats_emit(c, name, fmt, v);                                                       \
	} while (0)
		SLAB("chunk_size", "%u", k.size);
		SLAB("chunks_per_page", "%u", st.objs_per_slab);
		SLAB("total_pages", "%llu", U(st.total_slabs));
		SLAB("total_chunks", "%llu", U(st.total_objs));
		SLAB("used_chunks", "%llu", U(st.active_objs));
		SLAB("free_chunks", "%llu", U(st.total_objs - st.active_objs));
		SLAB("free_chunks_end", "%u", 0u);
		SLAB("items", "%llu", U(k.items));
		SLAB("page_bytes", "%llu", U(st.slab_size));
		SLAB("magazine_chunks", "%llu", U(st.pcpu_objs + st.depot_objs));
		SLAB("rcu_chunks", "%llu", U(st.rcu_objs));
		SLAB("rcu_waits", "%llu", U(st.rcu_waits));
#undef SLAB
	}
	stats_emit(c, "active_slabs", "%u", active);
	stats_emit(c, "total_malloced", "%llu", U(malloced));
}

void stats_items(struct conn *c)
{
	char name[64];

	for (unsigned i = 0; i < items_nclasses(); i++) {
		struct item_class_info k;
		if (!items_class(i, &k) || (k.items == 0 && k.evicted == 0 && k.reclaimed == 0))
			continue;
		unsigned id = i + 1;
#define ITEM(f, v)                                                                                 \
	do {                                                                                       \
		snprintf(name, sizeof name, "items:%u:" f, id);                                    \
		stats_emit(c, name, "%llu", U(v));                                                 \
	} while (0)
		ITEM("number", k.items);
		ITEM("age", k.oldest);
		ITEM("evicted", k.evicted);
		ITEM("evicted_nonzero", 0);
		ITEM("evicted_time", 0);
		ITEM("outofmemory", 0);
		ITEM("tailrepairs", 0);
		ITEM("reclaimed", k.reclaimed);
		ITEM("expired_unfetched", k.expired_unfetched);
		ITEM("evicted_unfetched", k.evicted_unfetched);
#undef ITEM
	}
}

/* "stats uslab": every uslab cache of the process, its objects held and
 * what uslab_cache_validate() finds in it now (problems are printed on
 * stderr): the tests' proof that nothing leaked and nothing broke. */
struct cache_list {
	struct uslab_cache *c[256];
	unsigned n;
};

static int cache_add(struct uslab_cache *cache, void *arg)
{
	struct cache_list *l = arg;

	if (l->n < 256)
		l->c[l->n++] = cache;
	return 0;
}

void stats_uslab(struct conn *c)
{
	static struct cache_list l; /* one "stats uslab" at a time */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char name[80];

	pthread_mutex_lock(&lock);
	l.n = 0;
	uslab_foreach_cache(cache_add, &l);
	for (unsigned i = 0; i < l.n; i++) {
		struct uslab_stats st;
		const char *cn = uslab_cache_name(l.c[i]);
		if (uslab_cache_stats(l.c[i], &st) != 0)
			continue;
		snprintf(name, sizeof name, "%s:active", cn);
		stats_emit(c, name, "%llu", U(st.active_objs));
		snprintf(name, sizeof name, "%s:problems", cn);
		stats_emit(c, name, "%ld", uslab_cache_validate(l.c[i], stderr));
	}
	pthread_mutex_unlock(&lock);
	stats_emit(c, "mode", "%s", uslab_mode());
}

static void conn_line(struct conn *x, void *arg)
{
	struct conn *c = arg;
	char name[48];

	snprintf(name, sizeof name, "%d:state", x->fd);
	stats_emit(c, name, "%s", x->wlen > x->wsent ? "conn_write" : "conn_read");
	snprintf(name, sizeof name, "%d:protocol", x->fd);
	stats_emit(c, name, "%s",
	           x->proto == MC_PROTO_BINARY ? "binary"
	           : x->proto == MC_PROTO_TEXT ? "ascii"
	                                       : "none");
}

void stats_conns(struct conn *c)
{
	conns_foreach(conn_line, c);
}
