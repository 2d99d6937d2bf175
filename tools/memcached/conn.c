/* SPDX-License-Identifier: MIT */
/* Connections: buffers, reads and writes, a worker's epoll loop. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <urcu/urcu-bp.h>

#include "uslab.h"
#include "mc.h"
#include "worker.h"

/*
 * Design
 *
 * A worker owns its connections: one epoll set, level-triggered, each
 * connection read at most CONN_READ_TURN bytes a turn so that one client
 * never holds the loop (a slowloris only ever costs its own buffer). The
 * acceptor hands a new socket over through the worker's pipe.
 *
 * Input goes to rbuf, which grows (uslab's size classes) to what the
 * protocol asks for in c->want (a value of up to -I bytes), and shrinks
 * back once the connection is idle; the protocol takes whole requests
 * from its front. Output is appended to wbuf, written when the input
 * runs dry, and while it holds more than CONN_WBUF_HIGH the connection is
 * not read (a client that never reads cannot grow it without bound).
 *
 * The struct conn itself comes from the typed cache "conn".
 */

#define CONN_RBUF_MIN 2048
#define CONN_READ_TURN (256u << 10)
#define CONN_WBUF_HIGH (4u << 20)
#define CONN_IDLE_KEEP (256u << 10) /* buffers above this are freed when idle */

USLAB_DEFINE_TYPED(conn, conn_cache)

static struct conn **conn_by_fd; /* for stats conns, under conns_lock */
static size_t conn_by_fd_n;
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t conn_ids;

int conns_init(int maxfd)
{
	conn_cache = USLAB_CACHE(conn, 0);
	conn_by_fd_n = (size_t)maxfd;
	conn_by_fd = uslab_calloc(conn_by_fd_n, sizeof *conn_by_fd);
	return conn_cache != NULL && conn_by_fd != NULL ? 0 : -1;
}

void conns_foreach(void (*fn)(struct conn *c, void *arg), void *arg)
{
	pthread_mutex_lock(&conns_lock);
	for (size_t i = 0; i < conn_by_fd_n; i++)
		if (conn_by_fd[i] != NULL)
			fn(conn_by_fd[i], arg);
	pthread_mutex_unlock(&conns_lock);
}

/* ---- Output ---- */

static bool buf_reserve(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t n = *cap < 1024 ? 1024 : *cap;
	while (n < need)
		n *= 2;
	char *p = uslab_realloc(*buf, n);
	if (p == NULL)
		return false;
	*buf = p;
	*cap = n;
	return true;
}

void out_add(struct conn *c, const void *p, size_t n)
{
	if (c->failed || n == 0)
		return;
	if (!buf_reserve(&c->wbuf, &c->wcap, c->wlen + n)) {
		c->failed = true;
		return;
	}
	memcpy(c->wbuf + c->wlen, p, n);
	c->wlen += n;
}

void out_str(struct conn *c, const char *s)
{
	out_add(c, s, strlen(s));
}

void out_vprintf(struct conn *c, const char *fmt, va_list ap)
{
	char line[512];
	va_list aq;

	va_copy(aq, ap);
	int n = vsnprintf(line, sizeof line, fmt, aq);
	va_end(aq);
	if (n < 0)
		return;
	if ((size_t)n < sizeof line) {
		out_add(c, line, (size_t)n);
		return;
	}
	/* Longer than a line: format straight into the buffer. */
	if (!buf_reserve(&c->wbuf, &c->wcap, c->wlen + (size_t)n + 1)) {
		c->failed = true;
		return;
	}
	vsnprintf(c->wbuf + c->wlen, (size_t)n + 1, fmt, ap);
	c->wlen += (size_t)n;
}

void out_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	out_vprintf(c, fmt, ap);
	va_end(ap);
}

/* ---- A connection's life ---- */

static void conn_release(struct conn *c)
{
	pthread_mutex_lock(&conns_lock);
	if ((size_t)c->fd < conn_by_fd_n)
		conn_by_fd[c->fd] = NULL;
	pthread_mutex_unlock(&conns_lock);
	close(c->fd);
	uslab_free(c->rbuf);
	uslab_free(c->wbuf);
	conn_free(c);
	__atomic_fetch_sub(&mc_g.curr_conns, 1, __ATOMIC_RELAXED);
}

static void conn_close(struct worker *w, struct conn *c)
{
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	mc_log(2, "<%d connection closed.", c->fd);
	conn_release(c);
}

void conn_new(struct worker *w, int fd)
{
	struct conn *c = conn_alloc();

	if (c == NULL) {
		close(fd);
		__atomic_fetch_sub(&mc_g.curr_conns, 1, __ATOMIC_RELAXED);
		return;
	}
	memset(c, 0, sizeof *c);
	c->fd = fd;
	c->w = w;
	c->id = __atomic_add_fetch(&conn_ids, 1, __ATOMIC_RELAXED);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->events = EPOLLIN | EPOLLRDHUP;
	struct epoll_event ev = {.events = c->events, .data.ptr = c};
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		conn_release(c);
		return;
	}
	pthread_mutex_lock(&conns_lock);
	if ((size_t)fd < conn_by_fd_n)
		conn_by_fd[fd] = c;
	pthread_mutex_unlock(&conns_lock);
	__atomic_fetch_add(&mc_g.conn_structs, 1, __ATOMIC_RELAXED);
	mc_log(2, "<%d new auto-negotiating client connection", fd);
}

/* Write what is pending; false when the connection must go. */
static bool conn_flush(struct conn *c)
{
	while (c->wsent < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->wsent, c->wlen - c->wsent, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK;
		}
		c->wsent += (size_t)n;
		mc_tstats()->bytes_written += (uint64_t)n;
	}
	c->wlen = c->wsent = 0;
	if (c->wcap > CONN_IDLE_KEEP) {
		uslab_free(c->wbuf);
		c->wbuf = NULL;
		c->wcap = 0;
	}
	return true;
}

/* Hand the buffered input to the protocol; false: close. */
static bool conn_parse(struct conn *c)
{
	for (;;) {
		if (c->swallow != 0) {
			size_t n = c->rlen < c->swallow ? c->rlen : (size_t)c->swallow;
			memmove(c->rbuf, c->rbuf + n, c->rlen - n);
			c->rlen -= n;
			c->swallow -= n;
			if (c->swallow != 0)
				return true;
		}
		if (c->rlen == 0 || c->closing)
			return true;
		if (c->proto == MC_PROTO_UNKNOWN)
			c->proto =
				(unsigned char)c->rbuf[0] == 0x80 ? MC_PROTO_BINARY : MC_PROTO_TEXT;
		c->want = 0;
		long used = c->proto == MC_PROTO_BINARY ? bin_feed(c, c->rbuf, c->rlen)
		                                        : text_feed(c, c->rbuf, c->rlen);
		if (used < 0 || c->failed)
			return false;
		if (used == 0)
			return true; /* needs more (c->want) */
		memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
		c->rlen -= (size_t)used;
		if (c->wlen - c->wsent > CONN_WBUF_HIGH)
			return true; /* write first */
	}
}

static void conn_events(struct worker *w, struct conn *c, uint32_t events)
{
	if (events & (EPOLLERR | EPOLLHUP)) {
		conn_close(w, c);
		return;
	}
	size_t turn = 0;
	bool eof = false;
	while ((events & (EPOLLIN | EPOLLRDHUP)) && turn < CONN_READ_TURN && !c->closing &&
	       c->wlen - c->wsent <= CONN_WBUF_HIGH) {
		size_t need = c->rlen + CONN_RBUF_MIN;
		if (c->want > need)
			need = c->want;
		if (!buf_reserve(&c->rbuf, &c->rcap, need)) {
			conn_close(w, c);
			return;
		}
		size_t room = c->rcap - c->rlen;
		ssize_t n = recv(c->fd, c->rbuf + c->rlen, room, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(w, c);
			return;
		}
		if (n == 0) {
			eof = true;
			break;
		}
		c->rlen += (size_t)n;
		turn += (size_t)n;
		mc_tstats()->bytes_read += (uint64_t)n;
		if (!conn_parse(c)) {
			conn_flush(c);
			conn_close(w, c);
			return;
		}
		if ((size_t)n < room)
			break; /* the socket is empty for now */
	}
	/* Requests left behind while the output was over its mark. */
	if ((events & EPOLLOUT) && conn_flush(c) && c->rlen != 0 && !conn_parse(c)) {
		conn_flush(c);
		conn_close(w, c);
		return;
	}
	if (!conn_flush(c) || eof || (c->closing && c->wsent == c->wlen)) {
		conn_close(w, c);
		return;
	}
	if (c->rlen == 0 && c->rcap > CONN_IDLE_KEEP) {
		uslab_free(c->rbuf);
		c->rbuf = NULL;
		c->rcap = 0;
	}
	/* Wait to write when output is pending; stop reading while a lot is. */
	uint32_t want = EPOLLRDHUP;
	if (c->wlen > c->wsent)
		want |= EPOLLOUT;
	if (c->wlen - c->wsent <= CONN_WBUF_HIGH)
		want |= EPOLLIN;
	if (want != c->events) {
		struct epoll_event ev = {.events = want, .data.ptr = c};
		epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->events = want;
	}
}

/* ---- The worker ---- */

static __thread struct mc_tstats *my_stats;
static struct mc_tstats sink_stats;

struct mc_tstats *mc_tstats(void)
{
	return my_stats != NULL ? my_stats : &sink_stats;
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[64];

	my_stats = &w->stats;
	mc_tstats_register(&w->stats);
	urcu_bp_register_thread();
	struct epoll_event pev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->pipe_rd, &pev);
	for (;;) {
		int n = epoll_wait(w->epfd, evs, 64, -1);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL) {
				int fds[32];
				ssize_t k = read(w->pipe_rd, fds, sizeof fds);
				for (ssize_t j = 0; j < k / (ssize_t)sizeof(int); j++) {
					if (fds[j] < 0)
						goto stop;
					conn_new(w, fds[j]);
				}
				continue;
			}
			conn_events(w, evs[i].data.ptr, evs[i].events);
		}
	}
stop:
	/* Shutdown: every connection of this worker goes. */
	for (size_t i = 0; i < conn_by_fd_n; i++) {
		pthread_mutex_lock(&conns_lock);
		struct conn *c = conn_by_fd[i];
		pthread_mutex_unlock(&conns_lock);
		if (c != NULL && c->w == w) /* ours: only this thread frees it */
			conn_release(c);
	}
	urcu_bp_unregister_thread();
	return NULL;
}
