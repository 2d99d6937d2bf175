/* SPDX-License-Identifier: MIT */
/* A worker thread: its epoll set, the pipe new connections come through, its counters. */
#ifndef USLAB_MC_WORKER_H
#define USLAB_MC_WORKER_H

#include <pthread.h>

#include "mc.h"

struct worker {
	pthread_t th;
	int epfd;
	int pipe_rd, pipe_wr; /* the acceptor writes fds (an int each; -1: stop) */
	struct mc_tstats stats;
};

int conns_init(int maxfd);
void conn_new(struct worker *w, int fd);
void *worker_main(void *arg);

#endif
