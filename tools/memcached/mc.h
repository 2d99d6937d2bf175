/* SPDX-License-Identifier: MIT */
/* uslab-memcached: what its files share (settings, items, connections, stats). */
#ifndef USLAB_MC_H
#define USLAB_MC_H

/*
 * Design
 *
 * A memcached-compatible server whose hot structs live in uslab caches.
 *
 *   main.c       options, the listener and the acceptor, worker threads
 *                (one epoll loop each), the clock, shutdown on SIGINT/TERM
 *   conn.c       a connection: its buffers, reads and writes, the choice of
 *                protocol by the first byte, the limits on a line
 *   items.c      items in caches of their own, one per size class of
 *                memcached's kind (header, key and value in one object);
 *                values above the largest class from uslab's size classes;
 *                the hash table (lookups under RCU, writes under striped
 *                locks), CAS, expiry, the CLOCK eviction and the -m limit
 *   proto-text.c the text protocol and the meta commands
 *   proto-bin.c  the binary protocol
 *   stats.c      stats, stats slabs/items/settings/conns, in memcached's fields
 *
 * No malloc on the request path: connections come from a typed cache,
 * their buffers and large values from uslab's size classes, items from
 * the item caches. Everything a protocol answers goes through out_*()
 * into the connection's output buffer (copied, so an item may be freed
 * as soon as the lookup's RCU section ends).
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MC_VERSION "1.6.18-uslab"
#define MC_KEY_MAX 250
#define MC_LINE_MAX 2048 /* a text line longer than this without '\n': closed */

/* ---- Settings (main.c) ---- */
struct mc_settings {
	int port;           /* -p, 11211 */
	const char *listen; /* -l, 127.0.0.1 */
	int threads;        /* -t, 4 */
	uint64_t maxbytes;  /* -m MB, 64 MB */
	bool no_evict;      /* -M: an error instead of an eviction */
	int maxconns;       /* -c, 1024 */
	uint64_t item_max;  /* -I, 1 MB: the largest value */
	int verbose;        /* -v, -vv */
	bool cas_off;       /* -C */
};
extern struct mc_settings mc_set;

/* Seconds since the server started (the clock thread ticks it). */
extern volatile uint32_t mc_now;
/* The Unix time the server started at (mc_now == 0 then). */
extern int64_t mc_started;
/* A client's exptime in memcached's rule: 0 never; up to 30 days, seconds
 * from now; else a Unix time; negative: already expired. As mc_now time. */
uint32_t mc_exptime(int64_t exptime);
#define MC_NEVER 0u

/* ---- Items (items.c) ---- */

enum mc_store { MC_SET, MC_ADD, MC_REPLACE, MC_APPEND, MC_PREPEND, MC_CAS };

enum mc_res {
	MC_STORED,
	MC_NOT_STORED,
	MC_EXISTS, /* cas mismatch */
	MC_NOT_FOUND,
	MC_TOO_LARGE,   /* larger than -I */
	MC_NO_MEMORY,   /* -M and full, or no memory at all */
	MC_NON_NUMERIC, /* incr/decr on a value that is not a number */
	MC_DELETED,
	MC_TOUCHED,
};

struct item;

/* What a reader sees of an item, valid during the callback only. */
struct item_view {
	const char *key;
	const char *value;
	uint32_t nkey;
	uint32_t nbytes;
	uint32_t flags;
	uint32_t exptime; /* mc_now time, 0 never */
	uint64_t cas;
	uint32_t last_access; /* mc_now time of the access before this one */
	bool fetched;         /* fetched before this access */
};

int items_init(void);
void items_fini(void);

/* A new item of @nbytes value bytes, not yet linked: the caller fills
 * item_value() and then stores or discards it. NULL with errno E2BIG
 * (larger than -I) or ENOMEM (-M and full, or no memory). */
struct item *item_alloc(const char *key, size_t nkey, uint32_t flags, uint32_t exptime,
                        size_t nbytes);
char *item_value(struct item *it);
void item_discard(struct item *it);
/* Link @it by @op (consumed in every case). @cas: MC_CAS's compare value,
 * else 0. *cas_out: the new item's CAS on MC_STORED. */
enum mc_res item_store(struct item *it, enum mc_store op, uint64_t cas, uint64_t *cas_out);

/* Look @key up; on a hit call @fn with a view (under RCU). @touch: set
 * the exptime to @exptime too (gat, touch). False on a miss. */
bool item_get(const char *key, size_t nkey, bool touch, uint32_t exptime,
              void (*fn)(void *arg, const struct item_view *v), void *arg);
/* @cas 0: any. MC_DELETED, MC_NOT_FOUND, MC_EXISTS. */
enum mc_res item_delete(const char *key, size_t nkey, uint64_t cas);
/* incr (@incr) or decr by @delta. A miss with @create makes the item with
 * @initial and @exptime (binary protocol). *value, *cas_out: the result. */
enum mc_res item_delta(const char *key, size_t nkey, bool incr, uint64_t delta, bool create,
                       uint64_t initial, uint32_t exptime, uint64_t cas, uint64_t *value,
                       uint64_t *cas_out);
enum mc_res item_touch(const char *key, size_t nkey, uint32_t exptime);
/* flush_all: every item stored before mc_now + @delay is invalid then. */
void item_flush(uint32_t delay);

/* ---- Statistics (stats.c, counted by every file) ---- */

/* A worker's counters: its own, added up at "stats". */
struct mc_tstats {
	uint64_t get_cmds, get_hits, get_misses, get_expired, get_flushed;
	uint64_t set_cmds, touch_cmds, touch_hits, touch_misses;
	uint64_t delete_hits, delete_misses, incr_hits, incr_misses, decr_hits, decr_misses;
	uint64_t cas_hits, cas_misses, cas_badval, flush_cmds, meta_cmds;
	uint64_t bytes_read, bytes_written;
};
/* This thread's counters (a sink for threads that are no worker). */
struct mc_tstats *mc_tstats(void);
void mc_tstats_register(struct mc_tstats *ts);

/* Server-wide counters (atomic). */
struct mc_gstats {
	uint64_t curr_conns, total_conns, rejected_conns, conn_structs;
	uint64_t curr_items, total_items, evictions, expired_unfetched, evicted_unfetched;
	uint64_t reclaimed, crawler_reclaimed, outofmemory, hash_bytes, hash_power;
	uint64_t bytes; /* item bytes: the item objects' sizes */
	uint64_t malformed, closed_long_line;
};
extern struct mc_gstats mc_g;

struct conn;
void stats_general(struct conn *c);
void stats_settings(struct conn *c);
void stats_slabs(struct conn *c);
void stats_items(struct conn *c);
void stats_conns(struct conn *c);
void stats_uslab(struct conn *c);
void stats_reset(void);
/* A line "STAT name value\r\n" (text) or one binary stat packet. */
void stats_emit(struct conn *c, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* items.c's view of its classes, for stats slabs/items. */
struct item_class_info {
	uint32_t size;  /* object size */
	uint64_t items; /* linked */
	uint64_t evicted, expired_unfetched, evicted_unfetched, reclaimed;
	uint32_t oldest; /* age in seconds of the oldest access seen */
	struct uslab_cache *cache;
};
unsigned items_nclasses(void);
bool items_class(unsigned i, struct item_class_info *out);
uint64_t items_mem_used(void);
uint64_t items_mem_held(void);

/* ---- Connections (conn.c) ---- */

enum mc_proto { MC_PROTO_UNKNOWN, MC_PROTO_TEXT, MC_PROTO_BINARY };

struct conn {
	int fd;
	struct worker *w;
	enum mc_proto proto;
	char *rbuf; /* from uslab's size classes */
	size_t rlen, rcap;
	size_t want;      /* set by a protocol: bytes it needs before it can go on */
	uint64_t swallow; /* bytes to read and drop (an oversized value) */
	char *wbuf;
	size_t wlen, wcap, wsent;
	bool closing;        /* close once the output is written */
	bool noreply;        /* the current text command said noreply */
	bool failed;         /* out of memory while answering: close */
	uint32_t events;     /* what epoll waits for now (conn.c) */
	uint64_t bin_opaque; /* the binary request being answered (stats) */
	uint8_t bin_opcode;
	uint64_t id;
};

/* Append to the output (grown from the size classes; on failure the
 * connection is closed: c->failed). */
void out_add(struct conn *c, const void *p, size_t n);
void out_str(struct conn *c, const char *s);
void out_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void out_vprintf(struct conn *c, const char *fmt, va_list ap);

/* The protocols: take what they can of @buf (@len bytes), return what
 * they took (0: need more; c->want may say how much), or -1 to close. */
long text_feed(struct conn *c, char *buf, size_t len);
long bin_feed(struct conn *c, char *buf, size_t len);
/* One binary stat packet (key @k, value @v) answering c->bin_opaque. */
void bin_stat(struct conn *c, const char *k, size_t nk, const char *v, size_t nv);

/* For the connection list (stats conns) and shutdown. */
void conns_foreach(void (*fn)(struct conn *c, void *arg), void *arg);

/* verbosity: log a line to stderr when -v (level 1) or -vv (2). */
void mc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
