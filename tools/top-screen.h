/* SPDX-License-Identifier: MIT */
/* uslabtop's interactive screen, and the options it runs with. */
#ifndef USLABTOP_TOP_SCREEN_H
#define USLABTOP_TOP_SCREEN_H

#include <stdbool.h>
#include <stddef.h>

#include "top-watch.h"

enum top_format { TOP_FMT_TEXT, TOP_FMT_JSON, TOP_FMT_CSV };

/** Command-line options. */
struct top_opts {
	double o_delay;   /* seconds between readings */
	bool o_delay_set; /* -d given: --once takes two readings and shows rates */
	bool o_once;
	char o_sort; /* a sort key of top_sort_keys */
	enum top_format o_format;
};

/** Run the interactive screen until the user quits. With @w NULL, start
 *  from the process list (attaching at once when exactly one process
 *  publishes). Returns 0, or -1 when the terminal could not be set up. */
int top_screen_run(const struct top_opts *o, struct watch *w);

#endif /* USLABTOP_TOP_SCREEN_H */
