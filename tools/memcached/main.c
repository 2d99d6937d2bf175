/* SPDX-License-Identifier: MIT */
/* uslab-memcached: options, the listener and acceptor, the workers, shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "uslab.h"
#include "mc.h"
#include "worker.h"

/*
 * Design
 *
 * The main thread parses the options, opens the listening socket and
 * becomes the acceptor: it polls the socket and a self-pipe that the
 * SIGINT/SIGTERM handler writes to. Each accepted socket goes to the next
 * worker in turn, through that worker's pipe (one int); past -c the
 * socket is told "SERVER_ERROR Too many open connections" and closed, as
 * memcached does. Shutdown writes -1 down every pipe, joins the workers
 * (each closes its connections) and stops the maintenance thread.
 */

struct mc_settings mc_set = {
	.port = 11211,
	.listen = "127.0.0.1",
	.threads = 4,
	.maxbytes = (uint64_t)64 << 20,
	.maxconns = 1024,
	.item_max = (uint64_t)1 << 20,
};
volatile uint32_t mc_now;
int64_t mc_started;
struct mc_gstats mc_g;

static int stop_pipe[2] = {-1, -1};

void mc_log(int level, const char *fmt, ...)
{
	if (mc_set.verbose < level)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	(void)!write(2, line, (size_t)n);
}

static void on_signal(int sig)
{
	(void)sig;
	int err = errno;
	(void)!write(stop_pipe[1], "x", 1);
	errno = err;
}

static void usage(FILE *f)
{
	fputs("usage: uslab-memcached [options]\n"
	      "  -p, --port=N            TCP port (11211)\n"
	      "  -l, --listen=ADDR       address to listen on (127.0.0.1)\n"
	      "  -t, --threads=N         worker threads (4)\n"
	      "  -m, --memory-limit=MB   item memory (64)\n"
	      "  -M, --disable-evictions an error instead of evicting\n"
	      "  -c, --conn-limit=N      most simultaneous connections (1024)\n"
	      "  -I, --max-item-size=S   largest value, e.g. 1m, 512k (1m)\n"
	      "  -C, --disable-cas       no CAS values\n"
	      "  -v, --verbose           -v errors, -vv commands and connections\n"
	      "  -U, -u, -o              accepted and ignored (memcached's UDP, user, extended options)\n"
	      "  -h, --help\n",
	      f);
}

/* "1m", "512k", "2048": bytes, or 0 on a bad size. */
static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s)
		return 0;
	if (*end == 'k' || *end == 'K')
		v <<= 10, end++;
	else if (*end == 'm' || *end == 'M')
		v <<= 20, end++;
	return *end == '\0' ? v : 0;
}

static long parse_num(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "uslab-memcached: bad %s '%s' (%ld to %ld)\n", what, s, lo, hi);
		exit(64);
	}
	return v;
}

static void parse_options(int argc, char **argv)
{
	static const struct option opts[] = {
		{"port", required_argument, NULL, 'p'},
		{"listen", required_argument, NULL, 'l'},
		{"threads", required_argument, NULL, 't'},
		{"memory-limit", required_argument, NULL, 'm'},
		{"disable-evictions", no_argument, NULL, 'M'},
		{"conn-limit", required_argument, NULL, 'c'},
		{"max-item-size", required_argument, NULL, 'I'},
		{"disable-cas", no_argument, NULL, 'C'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "p:l:t:m:Mc:I:CvhU:u:o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			mc_set.port = (int)parse_num(optarg, 0, 65535, "port");
			break;
		case 'l':
			mc_set.listen = optarg;
			break;
		case 't':
			mc_set.threads = (int)parse_num(optarg, 1, 256, "thread count");
			break;
		case 'm':
			mc_set.maxbytes = (uint64_t)parse_num(optarg, 1, 1 << 22, "memory limit")
			                  << 20;
			break;
		case 'M':
			mc_set.no_evict = true;
			break;
		case 'c':
			mc_set.maxconns = (int)parse_num(optarg, 1, 1 << 20, "connection limit");
			break;
		case 'I':
			mc_set.item_max = parse_size(optarg);
			if (mc_set.item_max < 1024 || mc_set.item_max > ((uint64_t)1 << 30)) {
				fprintf(stderr, "uslab-memcached: bad item size '%s' (1k to 1g)\n",
				        optarg);
				exit(64);
			}
			break;
		case 'C':
			mc_set.cas_off = true;
			break;
		case 'v':
			mc_set.verbose++;
			break;
		case 'U':
		case 'u':
		case 'o':
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(64);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "uslab-memcached: unexpected argument '%s'\n", argv[optind]);
		exit(64);
	}
}

static int listen_on(const char *host, int port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char ps[16];

	snprintf(ps, sizeof ps, "%d", port);
	int e = getaddrinfo(host, ps, &hints, &res);
	if (e != 0) {
		fprintf(stderr, "uslab-memcached: %s: %s\n", host, gai_strerror(e));
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
			fprintf(stderr, "uslab-memcached: %s:%d: %s\n", host, port,
			        strerror(errno));
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

/* Past -c: say so and close, without a struct conn. */
static void refuse(int fd)
{
	static const char msg[] = "SERVER_ERROR Too many open connections\r\n";

	(void)!send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
	__atomic_fetch_add(&mc_g.rejected_conns, 1, __ATOMIC_RELAXED);
}

static void accept_loop(int lfd, struct worker *ws, int nw)
{
	struct pollfd p[2] = {{.fd = lfd, .events = POLLIN},
	                      {.fd = stop_pipe[0], .events = POLLIN}};
	int next = 0;

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000); /* out of descriptors: let some close */
			continue;
		}
		uint64_t cur = __atomic_add_fetch(&mc_g.curr_conns, 1, __ATOMIC_RELAXED);
		if (cur > (uint64_t)mc_set.maxconns) {
			__atomic_fetch_sub(&mc_g.curr_conns, 1, __ATOMIC_RELAXED);
			refuse(fd);
			continue;
		}
		__atomic_fetch_add(&mc_g.total_conns, 1, __ATOMIC_RELAXED);
		struct worker *w = &ws[next];
		next = (next + 1) % nw;
		if (write(w->pipe_wr, &fd, sizeof fd) != (ssize_t)sizeof fd) {
			__atomic_fetch_sub(&mc_g.curr_conns, 1, __ATOMIC_RELAXED);
			close(fd);
		}
	}
}

int main(int argc, char **argv)
{
	parse_options(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	mc_started = (int64_t)time(NULL) - 2;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)mc_set.maxconns + 64) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)mc_set.maxconns + 64
		                      ? rl.rlim_max
		                      : (rlim_t)mc_set.maxconns + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (items_init() != 0 || conns_init(mc_set.maxconns + 1024) != 0) {
		fprintf(stderr, "uslab-memcached: out of memory at start-up\n");
		return 71;
	}
	int lfd = listen_on(mc_set.listen, mc_set.port);
	if (lfd < 0)
		return 71;
	if (pipe(stop_pipe) != 0)
		return 71;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	int nw = mc_set.threads;
	static struct worker ws[256];
	for (int i = 0; i < nw; i++) {
		int pp[2];
		ws[i].epfd = epoll_create1(EPOLL_CLOEXEC);
		if (ws[i].epfd < 0 || pipe(pp) != 0) {
			perror("uslab-memcached: worker");
			return 71;
		}
		ws[i].pipe_rd = pp[0];
		ws[i].pipe_wr = pp[1];
		if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
			perror("uslab-memcached: worker thread");
			return 71;
		}
	}
	mc_log(1, "uslab-memcached %s on %s:%d, %d threads, %llu MB, mode %s", MC_VERSION,
	       mc_set.listen, mc_set.port, nw, (unsigned long long)(mc_set.maxbytes >> 20),
	       uslab_mode());
	accept_loop(lfd, ws, nw);
	close(lfd);
	for (int i = 0; i < nw; i++) {
		int stop = -1;
		(void)!write(ws[i].pipe_wr, &stop, sizeof stop);
	}
	for (int i = 0; i < nw; i++)
		pthread_join(ws[i].th, NULL);
	items_fini();
	mc_log(1, "uslab-memcached: stopped");
	return 0;
}
