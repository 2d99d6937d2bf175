/* SPDX-License-Identifier: MIT */
/* uslab-demo: a small server-like workload on typed caches, then slabinfo. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uslab.h>

/*
 * The workload imitates a key-value server: connections arrive and leave
 * (struct conn, long-lived), each connection issues requests (struct
 * request, short-lived: allocated and freed within a few operations),
 * requests insert items into a bounded table that evicts the oldest
 * (struct item, medium-lived), and large values take a 4 KiB buffer
 * (struct valbuf). Worker threads share the caches; evicted items are often
 * freed by a thread other than the one that allocated them.
 */

struct conn {
	int c_fd;
	uint32_t c_requests;
	uint64_t c_bytes_in, c_bytes_out;
	char c_peer[48];
};

struct request {
	uint32_t r_op;
	uint32_t r_keylen;
	uint64_t r_started;
	struct conn *r_conn;
};

struct item {
	uint64_t i_key;
	uint32_t i_vlen;
	uint32_t i_flags;
	struct valbuf *i_big;
	char i_value[40];
};

struct valbuf {
	char v_data[4096];
};

USLAB_DEFINE_TYPED(conn, conn_cache)
USLAB_DEFINE_TYPED(request, request_cache)
USLAB_DEFINE_TYPED(item, item_cache)
USLAB_DEFINE_TYPED(valbuf, valbuf_cache)

#define TABLE_SLOTS (1u << 16)

static struct item *_Atomic table[TABLE_SLOTS]; /* bounded item table, one item per slot */
static atomic_bool stop;
static atomic_ulong total_ops;

struct worker {
	pthread_t w_thread;
	unsigned w_id;
	uint64_t w_rng;
	uint64_t w_ops_limit; /* 0: run until stop */
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void item_release(struct item *it)
{
	if (it == NULL)
		return;
	valbuf_free(it->i_big);
	item_free(it);
}

/* One request: look up or insert an item; a new item evicts the slot's
 * previous occupant, whichever thread made it. */
static int serve(struct worker *w, struct conn *cn)
{
	struct request *rq = request_alloc();
	if (rq == NULL)
		return -1;
	rq->r_conn = cn;
	rq->r_op = (uint32_t)(rng_next(&w->w_rng) % 10);
	rq->r_keylen = 8;
	cn->c_requests++;
	uint64_t key = rng_next(&w->w_rng);
	if (rq->r_op < 3) { /* 30% sets */
		struct item *it = item_alloc();
		if (it == NULL) {
			request_free(rq);
			return -1;
		}
		it->i_key = key;
		it->i_vlen = (uint32_t)(key % 64);
		it->i_big = NULL;
		if (key % 16 == 0) /* 1 in 16 values is large */
			it->i_big = valbuf_alloc();
		memset(it->i_value, (int)(key & 0xff), sizeof it->i_value);
		item_release(atomic_exchange(&table[key % TABLE_SLOTS], it));
		cn->c_bytes_in += it->i_vlen;
	} else {
		struct item *it = atomic_load(&table[key % TABLE_SLOTS]);
		cn->c_bytes_out += it != NULL ? 1 : 0;
	}
	request_free(rq);
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct conn *conns[64] = {0};
	uint64_t ops = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed) &&
	       (w->w_ops_limit == 0 || ops < w->w_ops_limit)) {
		unsigned slot = (unsigned)(rng_next(&w->w_rng) % 64);
		if (conns[slot] == NULL || rng_next(&w->w_rng) % 100 == 0) {
			conn_free(conns[slot]); /* connection closes, another opens */
			conns[slot] = conn_alloc();
			if (conns[slot] == NULL)
				break;
			conns[slot]->c_fd = (int)slot;
			conns[slot]->c_requests = 0;
			snprintf(conns[slot]->c_peer, sizeof conns[slot]->c_peer, "10.0.%u.%u",
			         w->w_id, slot);
		}
		if (serve(w, conns[slot]) != 0)
			break;
		ops++;
	}
	for (unsigned i = 0; i < 64; i++)
		conn_free(conns[i]);
	atomic_fetch_add(&total_ops, ops);
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, true);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: uslab-demo [-t THREADS] [-s SECONDS | -n OPS] [-f]\n"
	           "  -t N  worker threads (default 2)\n"
	           "  -s S  run for S seconds (default 2; 0 = until SIGINT/SIGTERM)\n"
	           "  -n N  run exactly N requests per thread instead\n"
	           "  -f    keep the caches populated after the run and wait for a signal\n"
	           "        (so uslabtop -p PID can be attached)\n");
}

int main(int argc, char **argv)
{
	unsigned threads = 2;
	double seconds = 2;
	uint64_t ops = 0;
	bool hold = false;
	int opt;

	while ((opt = getopt(argc, argv, "t:s:n:fh")) != -1) {
		switch (opt) {
		case 't':
			threads = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			seconds = strtod(optarg, NULL);
			break;
		case 'n':
			ops = strtoull(optarg, NULL, 10);
			break;
		case 'f':
			hold = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (threads == 0 || threads > 256) {
		usage(stderr);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	conn_cache = USLAB_CACHE(conn, 0);
	request_cache = USLAB_CACHE(request, 0);
	item_cache = USLAB_CACHE(item, 0);
	valbuf_cache = USLAB_CACHE(valbuf, 0);
	if (!conn_cache || !request_cache || !item_cache || !valbuf_cache) {
		perror("uslab-demo: uslab_cache_create");
		return 1;
	}
	printf("uslab-demo: pid %d, mode %s, %u threads\n", (int)getpid(), uslab_mode(), threads);
	fflush(stdout);

	struct worker *ws = calloc(threads, sizeof *ws);
	if (ws == NULL)
		return 1;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < threads; i++) {
		ws[i].w_id = i;
		ws[i].w_rng = 0x9e3779b97f4a7c15ull * (i + 1);
		ws[i].w_ops_limit = ops;
		pthread_create(&ws[i].w_thread, NULL, worker_main, &ws[i]);
	}
	if (ops == 0 && seconds > 0) {
		struct timespec d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
		while (nanosleep(&d, &d) != 0 && errno == EINTR && !atomic_load(&stop))
			;
		atomic_store(&stop, true);
	}
	for (unsigned i = 0; i < threads; i++)
		pthread_join(ws[i].w_thread, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%lu requests in %.2f s (%.0f requests/s)\n\n", atomic_load(&total_ops), secs,
	       (double)atomic_load(&total_ops) / secs);
	uslab_slabinfo(stdout);

	if (hold) {
		printf("\nholding the caches; uslabtop -p %d to watch, Ctrl-C to end\n",
		       (int)getpid());
		fflush(stdout);
		atomic_store(&stop, false);
		while (!atomic_load(&stop))
			pause();
	}

	for (unsigned i = 0; i < TABLE_SLOTS; i++)
		item_release(atomic_exchange(&table[i], NULL));
	int rc = 0;
	struct uslab_cache *all[] = {conn_cache, request_cache, item_cache, valbuf_cache};
	for (unsigned i = 0; i < 4; i++) {
		if (uslab_cache_destroy(all[i]) != 0) {
			fprintf(stderr, "uslab-demo: destroy %s: %s\n", uslab_cache_name(all[i]),
			        strerror(errno));
			rc = 1;
		}
	}
	free(ws);
	return rc;
}
