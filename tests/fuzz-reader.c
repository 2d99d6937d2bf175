/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the stats-segment reader on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include <uslab/stats.h>

/*
 * uslab_stats_parse() is what uslab_stats_read() runs on the copy of a
 * file: any input must give EPROTO or a snapshot whose every entry can be
 * read, without a crash, an out-of-bounds read (ASan) or undefined
 * behaviour (UBSan), and within the reader's memory bound (no single
 * allocation above SEG_MAX_ALLOC plus a chunk buffer: scripts/check.sh
 * runs it with -malloc_limit_mb). Seeds: tests/fuzz-corpus/, compact
 * images of real segments written by tests/fuzz-seeds.c
 * (build/tests/fuzz-seeds --write tests/fuzz-corpus after a format
 * change; the fuzz-seeds test fails until then).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t fuzz_sink; /* keeps the reads of every entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uslab_snapshot s;
	uint64_t sink = 0;

	if (uslab_stats_parse(data, size, &s) != 0)
		return 0;
	for (size_t i = 0; i < s.ncaches; i++) {
		sink += s.caches[i].active_objs + s.caches[i].allocs +
		        (uint64_t)s.caches[i].name[0];
		for (uint32_t j = 0; j < s.ncpus; j++)
			sink += s.cpu_objs[i * s.ncpus + j];
	}
	fuzz_sink = sink + (uint64_t)s.mode[0];
	uslab_snapshot_free(&s);
	return 0;
}
