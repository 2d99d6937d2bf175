/* SPDX-License-Identifier: MIT */
/* uslab-bench's small helpers: fatal errors, memory of its own, medians over rounds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"

/*
 * Every figure a round has no value for is negative, so the statistics
 * here skip negative entries: a round whose child failed leaves a hole,
 * not a zero.
 */

/* ---- Errors and memory ---- */

void die(const char *what)
{
	fprintf(stderr, "uslab-bench: %s: %s\n", what, strerror(errno));
	exit(2);
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (p == NULL)
		die("calloc");
	return p;
}

void *xrealloc(void *p, size_t n, size_t size)
{
	p = reallocarray(p, n, size);
	if (p == NULL)
		die("realloc");
	return p;
}

void *map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* ---- Statistics over rounds ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double median(const double *v, int n)
{
	double tmp[MAX_RUNS];
	int k = 0;

	for (int i = 0; i < n && k < MAX_RUNS; i++)
		if (v[i] >= 0)
			tmp[k++] = v[i];
	if (k == 0)
		return -1;
	qsort(tmp, (size_t)k, sizeof *tmp, cmp_double);
	return k % 2 ? tmp[k / 2] : (tmp[k / 2 - 1] + tmp[k / 2]) / 2;
}

double minimum(const double *v, int n)
{
	double m = -1;
	for (int i = 0; i < n; i++)
		if (v[i] >= 0 && (m < 0 || v[i] < m))
			m = v[i];
	return m;
}

double maximum(const double *v, int n)
{
	double m = -1;
	for (int i = 0; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}
