/* SPDX-License-Identifier: MIT */
/* A program with one planted bug on a cache object, for ASan and valgrind to report. */
#include <stdio.h>
#include <string.h>

#include "uslab.h"

/*
 * planted uaf   writes into an object after freeing it: ASan builds report
 *               use-after-poison, memcheck an invalid write (slab/sanitize.h)
 * planted leak  drops the last pointer to an object: memcheck reports it as
 *               definitely lost at exit
 * planted none  the same without the bug: no tool reports anything
 * tests/sanitizer-tools.sh runs it under the tool of its build.
 */
int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "none";
	struct uslab_cache *c = uslab_cache_create("planted", 64, NULL);
	if (c == NULL)
		return 2;
	char *p = uslab_cache_alloc(c);
	if (p == NULL)
		return 3;
	memset(p, 1, 64);
	if (strcmp(what, "leak") == 0) {
		p = NULL; /* the only pointer to it, gone */
		return 0;
	}
	uslab_cache_free(c, p);
	if (strcmp(what, "uaf") == 0)
		((volatile char *)p)[8] = 'X';
	return uslab_cache_destroy(c) == 0 ? 0 : 4;
}
