/* SPDX-License-Identifier: MIT */
/* Layout of the live statistics segment, shared by its writer and reader. */
#ifndef USLAB_SEGMENT_H
#define USLAB_SEGMENT_H

#include <stdint.h>

/*
 * File layout, version 4 (all integers in the writer's byte order; the
 * reader rejects a foreign order by the magic and the sizes):
 *
 *   offset 0            struct seg_header (h_hdr_size bytes)
 *   h_tab_off           record table chunk: struct seg_table, then t_nrec
 *                       records of h_rec_size bytes; t_next chains the next
 *                       chunk (strictly increasing offsets, 0 ends)
 *   r_ctr_off (each)    a live cache's counters, r_ctr_len bytes: h_ncpus
 *                       pages of h_page_size bytes, page i starting with
 *                       CPU i's struct pcpu_counters (h_ctr_size bytes;
 *                       slab/arch/fastpath.h)
 *
 * Nothing the allocator acts on is in the file: no magazine, round, count
 * or capacity. The counters pages are mapped MAP_SHARED over the second
 * page of each started slot; the magazines stay private (pcpu.c). Another
 * process reads a magazine's fill from the copy of its word (pc_word),
 * splits its hits into allocs and frees with pcpu_split_hits(), and adds
 * the slow paths' counts that sit beside it (slab/derive.c).
 *
 * Chunks and counters regions start on page boundaries and never move: the
 * file only grows (fallocate), and a destroyed cache's region is
 * hole-punched and reused by a later cache of the same region length.
 *
 * Consistency: r_seq is a sequence lock over every record field: odd while
 * the writer changes the record. The
 * header's fields are written once before the file is given its name,
 * except h_bytes_got/h_bytes_put (relaxed, monotonic). The counters pages
 * are the fast path's and are read racily.
 */

#define SEG_MAGIC "USLABSEG"
#define SEG_CHUNK_SIZE 16384 /* bytes per record table chunk: 63 records */

struct seg_header {
	char h_magic[8];
	uint32_t h_version;  /* USLAB_SEGMENT_VERSION */
	uint32_t h_hdr_size; /* sizeof(struct seg_header) */
	uint32_t h_rec_size; /* sizeof(struct seg_rec) */
	uint32_t h_ctr_size; /* sizeof(struct pcpu_counters) */
	uint32_t h_ncpus;    /* counters pages per cache */
	uint32_t h_page_size;
	int64_t h_pid;
	uint64_t h_start_time; /* /proc/<pid>/stat field 22: tells pid reuse apart */
	uint64_t h_tab_off;    /* first record table chunk */
	uint64_t h_bytes_got;  /* page-source bytes ever got (monotonic) */
	uint64_t h_bytes_put;  /* ever given back (monotonic) */
	uint64_t h_reserved[1];
	char h_mode[48]; /* uslab_mode(), NUL-terminated */
};

struct seg_table {
	uint64_t t_next; /* next chunk, 0 at the end */
	uint32_t t_nrec;
	uint32_t t_pad;
	uint64_t t_reserved[6];
};

enum seg_rec_state {
	SEG_REC_FREE = 0,
	SEG_REC_LIVE = 1,
};

struct seg_rec {
	uint32_t r_seq;   /* odd: being written */
	uint32_t r_state; /* enum seg_rec_state */
	uint64_t r_id;    /* creation order, ascending */
	char r_name[32];  /* NUL-terminated */

	/* ---- fixed at create ---- */
	uint64_t r_obj_size;
	uint64_t r_slot_size;
	uint64_t r_align;
	uint32_t r_flags;
	uint32_t r_objs_per_slab;
	uint64_t r_slab_size;
	uint32_t r_mag_max;
	uint32_t r_pad0;
	uint64_t r_ctr_off; /* h_ncpus counters pages, h_page_size apart */
	uint64_t r_ctr_len; /* h_ncpus * h_page_size */

	/* ---- slab layer, written under c_slab_lock ---- */
	uint64_t r_inuse; /* sum of s_inuse */
	uint64_t r_slabs;
	uint64_t r_empty_slabs;
	uint64_t r_slabs_created;
	uint64_t r_slabs_released;
	uint64_t r_alloc_fail;

	/* ---- depot, written under c_depot_lock ---- */
	uint64_t r_depot_objs;
	uint64_t r_depot_full;
	uint64_t r_depot_empty;
	uint64_t r_depot_contended;
	uint32_t r_mag_size;
	uint32_t r_pad;

	uint64_t r_reserved[7];
};

_Static_assert(sizeof(struct seg_header) == 128, "segment header layout");
_Static_assert(sizeof(struct seg_table) == 64, "segment table layout");
_Static_assert(sizeof(struct seg_rec) == 256, "segment record layout");

#endif /* USLAB_SEGMENT_H */
