/* SPDX-License-Identifier: MIT */
/* Layout of the live statistics segment, shared by its writer and reader. */
#ifndef USLAB_SEGMENT_H
#define USLAB_SEGMENT_H

#include <stdint.h>

/*
 * Two files, version 5 (all integers in the writer's byte order; the
 * reader rejects a foreign order by the magic and the sizes):
 *
 * The locator, $USLAB_STATS_DIR/uslab.<pid>.<pidns> (or with a suffix
 * .<k> when that name is taken by somebody else), mode 0600, written once
 * and never mapped: struct seg_locator. It says where the segment is: the
 * descriptor <fd> of process <pid>, which a reader opens as
 * /proc/<pid>/fd/<fd> and accepts only if that file is (l_dev, l_ino).
 *
 * The segment itself, a sealed memfd (F_SEAL_SHRINK: nobody can truncate
 * it, so its writer can never take SIGBUS from it):
 *
 *   offset 0            struct seg_header (h_hdr_size bytes, one page)
 *   h_tab_off           record table chunk: struct seg_table, then t_nrec
 *                       records of h_rec_size bytes; t_next chains the next
 *                       chunk (strictly increasing offsets, 0 ends)
 *   r_ctr_base (each)   the counters of an arena of per-CPU slots
 *                       (slab/pcpu-arena.c): h_ncpus regions of
 *                       h_ctr_stride bytes, region i holding CPU i's
 *                       struct pcpu_counters (h_ctr_size bytes,
 *                       arch/fastpath.h) of every cache of the arena, the
 *                       cache of index j at j * h_ctr_size
 *
 * Nothing the allocator acts on is in the file: no magazine, round, count
 * or capacity. The counters regions are mapped MAP_SHARED where the fast
 * path stores its copies; the magazines stay private (pcpu.c). Another
 * process reads a magazine's fill from the copy of its word (pc_word),
 * splits its hits into allocs and frees with pcpu_split_hits(), and adds
 * the slow paths' counts that sit beside it (slab/derive.c).
 *
 * Consistency: r_seq is a sequence lock over every record field: odd while
 * the writer changes the record; h_mode_seq likewise over h_mode. The
 * header's other fields are written once before the locator exists,
 * except h_bytes_got/h_bytes_put (relaxed, monotonic) and h_cpus_seen
 * (bits only set). The counters are the fast path's and are read racily.
 */

#define SEG_MAGIC "USLABSEG"
#define SEG_LOC_MAGIC "USLABLOC"
#define SEG_CHUNK_SIZE 262144  /* bytes per record table chunk: 1023 records */
#define SEG_CHUNK_MAX_REC 1024 /* records a reader accepts in one chunk */
#define SEG_MAX_CPUS 8192      /* CPU ids (arch/fastpath.h PCPU_MAX_IDS) */

struct seg_locator {
	char l_magic[8];    /* SEG_LOC_MAGIC */
	uint32_t l_version; /* USLAB_SEGMENT_VERSION */
	uint32_t l_size;    /* sizeof(struct seg_locator) */
	int64_t l_pid;
	uint64_t l_pidns;      /* inode of /proc/<pid>/ns/pid (0: unknown) */
	uint64_t l_start_time; /* /proc/<pid>/stat field 22 */
	int64_t l_uid;
	int64_t l_fd;   /* the memfd in process <pid> */
	uint64_t l_dev; /* its st_dev and st_ino */
	uint64_t l_ino;
	uint64_t l_reserved[7];
};

struct seg_header {
	char h_magic[8];
	uint32_t h_version;    /* USLAB_SEGMENT_VERSION */
	uint32_t h_hdr_size;   /* sizeof(struct seg_header) */
	uint32_t h_rec_size;   /* sizeof(struct seg_rec) */
	uint32_t h_ctr_size;   /* sizeof(struct pcpu_counters) */
	uint32_t h_ncpus;      /* counters regions per arena (the slot bound) */
	uint32_t h_page_size;  /* the writer's page size */
	uint64_t h_ctr_stride; /* bytes between the regions of two CPUs */
	int64_t h_pid;
	uint64_t h_pidns;      /* as the locator's */
	uint64_t h_start_time; /* /proc/<pid>/stat field 22: tells pid reuse apart */
	uint64_t h_tab_off;    /* first record table chunk */
	uint64_t h_bytes_got;  /* page-source bytes ever got (monotonic) */
	uint64_t h_bytes_put;  /* ever given back (monotonic) */
	uint32_t h_mode_seq;   /* odd while h_mode changes */
	uint32_t h_pad;
	char h_mode[64]; /* uslab_mode(), NUL-terminated */
	uint64_t h_reserved[16];
	uint64_t h_cpus_seen[SEG_MAX_CPUS / 64]; /* bit i: a slot of CPU i started */
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
	uint32_t r_ctr_index; /* the cache's index in its arena */
	uint64_t r_ctr_base;  /* the arena's counters in the file; 0: private */

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

	/* ---- RCU layer, written with no uslab lock held (zero before it) ---- */
	uint64_t r_rcu_objs;
	uint64_t r_rcu_slabs;
	uint64_t r_rcu_peak;
	uint64_t r_rcu_waits;
	uint64_t r_rcu_freed;
	uint64_t r_rcu_cap;

	uint64_t r_reserved[2];
};

_Static_assert(sizeof(struct seg_locator) == 128, "locator layout");
_Static_assert(sizeof(struct seg_header) == 1312, "segment header layout");
_Static_assert(sizeof(struct seg_table) == 64, "segment table layout");
_Static_assert(sizeof(struct seg_rec) == 256, "segment record layout");

#endif /* USLAB_SEGMENT_H */
