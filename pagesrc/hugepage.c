/* SPDX-License-Identifier: MIT */
/* Huge pages as a page source: blocks carved from 2 MiB-aligned areas (hugetlb, THP or plain pages). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "pagesrc.h"

/*
 * Design
 *
 * 1. Areas. Every block comes from an area: a mapping of HP_AREA (2 MiB,
 *    the x86-64 PMD page) aligned to 2 MiB, or, for a block larger than
 *    that, a mapping of its own aligned to its size (a multiple of 2 MiB). A 2 MiB area holds
 *    blocks of 2^k pages at offsets that are multiples of their size (a
 *    bitmap, one bit per page, so blocks of several sizes share an area);
 *    get() carves from the fullest area with an aligned free run (so the
 *    emptier ones drain) and maps a new area only when none has one. A block given back is kept in its
 *    area for reuse, purged; the area is unmapped when its last block
 *    comes back, so a cache that gives all its slabs back holds nothing.
 *
 * 2. Kinds, decided once (at the first get(), or by the first
 *    uslab_pagesrc_hugepage_mode() before it):
 *    - hugetlb, when the kernel's pool has pages (vm.nr_hugepages > 0,
 *      HugePages_Free > 0 in /proc/meminfo, 2 MiB the default size) and a
 *      trial MAP_HUGETLB mapping succeeds. Areas are MAP_HUGETLB mappings;
 *      when one fails later (the pool ran dry), that area is mapped as
 *      the next kind would be: no get() fails for want of huge pages.
 *    - thp, when /sys/kernel/mm/transparent_hugepage/enabled says
 *      "always" or "madvise", the huge page is 2 MiB (hpage_pmd_size),
 *      the process has not turned THP off (PR_GET_THP_DISABLE) and a
 *      trial MADV_HUGEPAGE is accepted: anonymous areas, each advised
 *      MADV_HUGEPAGE, so the kernel backs them with 2 MiB pages at the
 *      first fault (or khugepaged does later).
 *    - off: plain anonymous areas, with the reason in the mode string.
 *    The mode strings are literals: uslab_pagesrc_hugepage_mode() and the
 *    stats hand them out as they are. The files are read with open() and
 *    read() (no stdio, which would allocate); pgsrc_hugepage_decide()
 *    takes another root for them, for the tests.
 *
 * 3. Purge. On THP and plain areas, MADV_DONTNEED: the RSS falls at once.
 *    On a THP area that splits the huge page under the range (the rest of
 *    it is then mapped with 4 KiB pages until khugepaged collapses it
 *    again): the price of giving memory back inside an area. A hugetlb
 *    page cannot be split (and MADV_DONTNEED on hugetlb rounds the length
 *    up to whole huge pages, which would wipe the neighbours), so only
 *    the whole huge pages inside a range are dropped there: blocks below
 *    2 MiB keep their memory until their area goes.
 *
 * 4. Limits. HP_MAX_AREAS areas (8 GiB in 2 MiB areas; a block above 2 MiB
 *    counts one); a get() beyond fails with ENOMEM. The table is static
 *    (about 330 KiB of .bss, untouched until used): no malloc. hugetlb
 *    areas are MAP_PRIVATE: after fork, a child that writes to one when
 *    the pool is empty gets SIGBUS (the kernel's rule for private hugetlb
 *    mappings); THP and plain areas fork like any anonymous memory.
 *
 * 5. Lock. hp_lock is a pthread mutex counted in pgsrc_busy (pagesrc.h),
 *    like every uslab lock, so uslab never calls a source from a signal
 *    handler that interrupted one of its calls; hp_mine marks the thread
 *    that holds it, so uslab_pagesrc_hugepage_mode() asked from such a
 *    handler (before the mode is decided) answers instead of waiting.
 *    fork() takes it (pthread_atfork).
 */

#define HP_AREA ((size_t)2 << 20)
#define HP_AREA_WORDS 8 /* bitmap words: 512 pages of 4 KiB (fewer larger pages) */
#define HP_MAX_AREAS 4096
#define HP_HUGE_2MB (21 << MAP_HUGE_SHIFT) /* MAP_HUGE_2MB: log2(2 MiB) in the flags */

enum hp_kind { HP_PLAIN, HP_THP, HP_HUGETLB };

/* One mapping. Invariant: a_used == the bits set in a_bits (2 MiB areas);
 * an area larger than HP_AREA is one block, a_used its pages. */
struct hp_area {
	uintptr_t a_base;
	size_t a_len;                   /* HP_AREA, or the size of its one block; 0: a free slot */
	uint64_t a_bits[HP_AREA_WORDS]; /* bit i set: page i is given out */
	uint32_t a_used;                /* pages given out */
	uint8_t a_kind;                 /* enum hp_kind */
};

static pthread_mutex_t hp_lock = PTHREAD_MUTEX_INITIALIZER; /* everything below */
static struct hp_area hp_areas[HP_MAX_AREAS];
static uint16_t hp_order[HP_MAX_AREAS]; /* slots of the live areas, by address */
static size_t hp_nareas;                /* live areas */
static size_t hp_nslots;                /* slots ever used (high-water mark) */
static uintptr_t hp_hint;               /* where the last plain or THP area began */
static const char *hp_mode;             /* NULL until decided; read unlocked (atomic) */
static enum hp_kind hp_first;           /* what areas are mapped as */
static enum hp_kind hp_second;          /* a hugetlb area that fails: THP or plain */
static pthread_once_t hp_once = PTHREAD_ONCE_INIT;
static bool hp_fork_took; /* the fork's prepare handler took hp_lock */
/* This thread holds hp_lock: a signal handler that interrupted it must not
 * wait for the lock (initial-exec TLS: no allocation, signal-safe). */
static __thread bool hp_mine __attribute__((tls_model("initial-exec")));

/* ---- The lock ---- */

static void hp_lock_take(void)
{
	pgsrc_busy_enter();
	pthread_mutex_lock(&hp_lock);
	hp_mine = true;
}

static void hp_lock_drop(void)
{
	hp_mine = false;
	pthread_mutex_unlock(&hp_lock);
	pgsrc_busy_leave();
}

/* ---- Reading /proc and /sys ---- */

/* Read @root@path into @buf (NUL-terminated); its length, or -1. */
static ssize_t hp_read(const char *root, const char *path, char *buf, size_t len)
{
	char name[PATH_MAX];
	size_t r = strlen(root), p = strlen(path);

	if (r + p >= sizeof name)
		return -1;
	memcpy(name, root, r);
	memcpy(name + r, path, p + 1);
	pgsrc_count_call();
	int fd = open(name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	ssize_t k = 0;
	while (n + 1 < len) {
		pgsrc_count_call();
		k = read(fd, buf + n, len - 1 - n);
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	pgsrc_count_call();
	close(fd);
	buf[n] = '\0';
	return k < 0 ? -1 : (ssize_t)n;
}

/* The decimal number after @key in @text (spaces skipped); -1 if absent. */
static long hp_number(const char *text, const char *key)
{
	const char *s = key[0] != '\0' ? strstr(text, key) : text;

	if (s == NULL)
		return -1;
	s += strlen(key);
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s < '0' || *s > '9')
		return -1;
	long v = 0;
	for (; *s >= '0' && *s <= '9' && v < LONG_MAX / 10; s++)
		v = v * 10 + (*s - '0');
	return v;
}

/* ---- The decision ---- */

/* Whether THP can back our areas; NULL if so, else why not. */
static const char *hp_thp_refusal(const char *root)
{
	char buf[256];

	if (hp_read(root, "/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) < 0)
		return "off: no transparent huge pages (sysfs unreadable)";
	const char *sel = strchr(buf, '[');
	if (sel == NULL)
		return "off: transparent huge pages: unknown setting";
	if (strncmp(sel, "[never]", 7) == 0)
		return "off: transparent huge pages are \"never\"";
	if (strncmp(sel, "[always]", 8) != 0 && strncmp(sel, "[madvise]", 9) != 0)
		return "off: transparent huge pages: unknown setting";
	/* Absent before Linux 4.13, where it is 2 MiB on x86-64. */
	if (hp_read(root, "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf) >
	            0 &&
	    hp_number(buf, "") != (long)HP_AREA)
		return "off: the transparent huge page is not 2 MiB";
	pgsrc_count_call();
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0)
		return "off: transparent huge pages disabled for this process (PR_SET_THP_DISABLE)";
	/* A kernel without THP refuses the advice (EINVAL); a refused mmap
	 * says nothing about THP (areas will not map either). */
	size_t page = pgsrc_page_size();
	pgsrc_count_call();
	void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	pgsrc_count_call();
	int rc = madvise(p, page, MADV_HUGEPAGE);
	pgsrc_count_call();
	munmap(p, page);
	return rc == 0 ? NULL : "off: madvise(MADV_HUGEPAGE) refused";
}

/* Whether the hugetlb pool has 2 MiB pages and a trial mapping gets one. */
static bool hp_hugetlb_usable(const char *root)
{
	char buf[4096];

	if (hp_read(root, "/proc/sys/vm/nr_hugepages", buf, sizeof buf) < 0 ||
	    hp_number(buf, "") <= 0)
		return false;
	if (hp_read(root, "/proc/meminfo", buf, sizeof buf) < 0 ||
	    hp_number(buf, "HugePages_Free:") <= 0 || hp_number(buf, "Hugepagesize:") != 2048)
		return false;
	pgsrc_count_call();
	void *p = mmap(NULL, HP_AREA, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | HP_HUGE_2MB, -1, 0);
	if (p == MAP_FAILED)
		return false;
	pgsrc_count_call();
	munmap(p, HP_AREA);
	return true;
}

/* Decide the kinds from the files under @root; the mode string. */
static const char *hp_decide_locked(const char *root)
{
	int err = errno;
	const char *thp = hp_thp_refusal(root);

	hp_second = thp == NULL ? HP_THP : HP_PLAIN;
	hp_first = hp_hugetlb_usable(root) ? HP_HUGETLB : hp_second;
	errno = err;
	if (hp_first == HP_HUGETLB)
		return "hugetlb";
	return thp == NULL ? "thp" : thp;
}

/* ---- Areas ---- */

/* Map @len bytes aligned to @align (a multiple of HP_AREA) as @kind;
 * NULL when the kernel refuses. */
static void *hp_map(size_t len, size_t align, enum hp_kind kind)
{
	const int prot = PROT_READ | PROT_WRITE;
	char *p;
	size_t span;

	if (kind == HP_HUGETLB) {
		/* The kernel aligns hugetlb mappings to the huge page. */
		span = len + align - HP_AREA;
		pgsrc_count_call();
		p = mmap(NULL, span, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | HP_HUGE_2MB,
		         -1, 0);
		if (p == MAP_FAILED)
			return NULL;
	} else {
		/* mmap.c's way: just below the last area (the kernel places
		 * top-down), else twice the room and trim. */
		uintptr_t h = hp_hint;
		p = MAP_FAILED;
		if (h > len && ((h - len) & (align - 1)) == 0) {
			pgsrc_count_call();
			p = mmap((void *)(h - len), len, prot,
			         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (p != MAP_FAILED && ((uintptr_t)p & (align - 1)) != 0) {
				pgsrc_count_call();
				munmap(p, len);
				p = MAP_FAILED;
			}
		}
		span = len;
		if (p == MAP_FAILED) {
			span = len + align;
			pgsrc_count_call();
			p = mmap(NULL, span, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
			         0);
			if (p == MAP_FAILED)
				return NULL;
		}
	}
	char *start = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	size_t head = (size_t)(start - p), tail = span - head - len;
	if (head != 0) {
		pgsrc_count_call();
		munmap(p, head);
	}
	if (tail != 0) {
		pgsrc_count_call();
		munmap(start + len, tail);
	}
	if (kind == HP_THP) {
		pgsrc_count_call();
		(void)madvise(start, len, MADV_HUGEPAGE); /* refused: plain pages */
	}
	if (kind != HP_HUGETLB)
		hp_hint = (uintptr_t)start;
	return start;
}

/* A new area of @len bytes aligned to @align, in the table; NULL (ENOMEM)
 * when the table is full or the kernel refuses every kind. */
static struct hp_area *hp_area_new_locked(size_t len, size_t align)
{
	size_t slot = hp_nslots;

	if (hp_nareas == HP_MAX_AREAS)
		return NULL;
	if (slot == HP_MAX_AREAS)
		for (slot = 0; hp_areas[slot].a_len != 0; slot++)
			;
	enum hp_kind kind = hp_first;
	void *p = hp_map(len, align, kind);
	if (p == NULL && kind == HP_HUGETLB)
		p = hp_map(len, align, kind = hp_second);
	if (p == NULL)
		return NULL;
	if (slot == hp_nslots)
		hp_nslots++;
	struct hp_area *a = &hp_areas[slot];
	memset(a, 0, sizeof *a);
	a->a_base = (uintptr_t)p;
	a->a_len = len;
	a->a_kind = (uint8_t)kind;
	/* Keep hp_order sorted by address. */
	size_t i = hp_nareas;
	while (i > 0 && hp_areas[hp_order[i - 1]].a_base > a->a_base) {
		hp_order[i] = hp_order[i - 1];
		i--;
	}
	hp_order[i] = (uint16_t)slot;
	hp_nareas++;
	return a;
}

/* Unmap the area at hp_order[@i] and drop it from the table. */
static void hp_area_free_locked(size_t i)
{
	struct hp_area *a = &hp_areas[hp_order[i]];

	pgsrc_count_call();
	munmap((void *)a->a_base, a->a_len);
	a->a_len = 0;
	for (; i + 1 < hp_nareas; i++)
		hp_order[i] = hp_order[i + 1];
	hp_nareas--;
}

/* The index in hp_order of the area holding [@p, @p + @size), or -1. */
static long hp_find_locked(uintptr_t p, size_t size)
{
	size_t lo = 0, hi = hp_nareas;

	while (lo < hi) { /* the first area above @p */
		size_t mid = lo + (hi - lo) / 2;
		if (hp_areas[hp_order[mid]].a_base <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	const struct hp_area *a = &hp_areas[hp_order[lo - 1]];
	return p + size <= a->a_base + a->a_len && p + size > p ? (long)lo - 1 : -1;
}

/* ---- Page bitmaps of 2 MiB areas ---- */

/* Are bits [@i, @i + @n) all clear (@set false) or all set (@set true)? */
static bool hp_bits_all(const uint64_t *bits, size_t i, size_t n, bool set)
{
	while (n != 0) {
		size_t w = i / 64, b = i % 64, k = 64 - b < n ? 64 - b : n;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
		if ((bits[w] & mask) != (set ? mask : 0))
			return false;
		i += k;
		n -= k;
	}
	return true;
}

/* Set (@on) or clear bits [@i, @i + @n). */
static void hp_bits_mark(uint64_t *bits, size_t i, size_t n, bool on)
{
	while (n != 0) {
		size_t w = i / 64, b = i % 64, k = 64 - b < n ? 64 - b : n;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
		bits[w] = on ? bits[w] | mask : bits[w] & ~mask;
		i += k;
		n -= k;
	}
}

/* The first page of an aligned free run of @n pages in @a, or -1. */
static long hp_fit(const struct hp_area *a, size_t n, size_t pages)
{
	for (size_t p = 0; p + n <= pages; p += n)
		if (hp_bits_all(a->a_bits, p, n, false))
			return (long)p;
	return -1;
}

/* A block of @n pages (a power of two, at most an area) carved from the
 * fullest area with an aligned free run (the lowest of equals), so that
 * the emptier ones drain and go back; else from a new area. 0 if none. */
static uintptr_t hp_carve_locked(size_t n, size_t page)
{
	size_t pages = HP_AREA / page;
	struct hp_area *best = NULL;
	long at = -1;

	for (size_t i = 0; i < hp_nareas; i++) {
		struct hp_area *a = &hp_areas[hp_order[i]];
		if (a->a_len != HP_AREA || a->a_used + n > pages ||
		    (best != NULL && a->a_used <= best->a_used))
			continue;
		long p = hp_fit(a, n, pages);
		if (p >= 0) {
			best = a;
			at = p;
		}
	}
	if (best == NULL) {
		best = hp_area_new_locked(HP_AREA, HP_AREA);
		at = 0;
	}
	if (best == NULL)
		return 0;
	hp_bits_mark(best->a_bits, (size_t)at, n, true);
	best->a_used += (uint32_t)n;
	return best->a_base + (size_t)at * page;
}

/* Drop the contents of [@p, @p + @size) in an area of @kind (Design 3). */
static void hp_purge_range(uintptr_t p, size_t size, enum hp_kind kind)
{
	if (kind == HP_HUGETLB) {
		uintptr_t lo = (p + HP_AREA - 1) & ~(uintptr_t)(HP_AREA - 1);
		uintptr_t hi = (p + size) & ~(uintptr_t)(HP_AREA - 1);
		if (lo >= hi)
			return;
		p = lo;
		size = hi - lo;
	}
	pgsrc_count_call();
	(void)madvise((void *)p, size, MADV_DONTNEED); /* refused: it costs RSS only */
}

/* ---- Fork ---- */

static void hp_fork_prepare(void)
{
	hp_fork_took = !hp_mine; /* a fork from a handler that interrupted us */
	if (hp_fork_took)
		pthread_mutex_lock(&hp_lock);
}

static void hp_fork_release(void)
{
	if (hp_fork_took)
		pthread_mutex_unlock(&hp_lock);
}

static void hp_init(void)
{
	(void)pthread_atfork(hp_fork_prepare, hp_fork_release, hp_fork_release);
}

/* ---- The source ---- */

static void *hp_get(void *arg, size_t size)
{
	size_t page = pgsrc_page_size();
	uintptr_t p = 0;

	(void)arg;
	if (size < page || (size & (size - 1)) != 0 || size > ((size_t)1 << 40) ||
	    HP_AREA / page > 64 * HP_AREA_WORDS) {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&hp_once, hp_init);
	hp_lock_take();
	if (hp_mode == NULL)
		__atomic_store_n(&hp_mode, hp_decide_locked(""), __ATOMIC_RELEASE);
	if (size <= HP_AREA) {
		p = hp_carve_locked(size / page, page);
	} else {
		struct hp_area *a = hp_area_new_locked(size, size);
		if (a != NULL) {
			a->a_used = (uint32_t)(size / page);
			p = a->a_base;
		}
	}
	hp_lock_drop();
	if (p == 0)
		errno = ENOMEM;
	return (void *)p;
}

static void hp_put(void *arg, void *block, size_t size)
{
	size_t page = pgsrc_page_size();
	uintptr_t p = (uintptr_t)block;
	int err = errno;

	(void)arg;
	if (size < page || (size & (size - 1)) != 0 || (p & (size - 1)) != 0)
		return;
	hp_lock_take();
	long i = hp_find_locked(p, size);
	struct hp_area *a = i < 0 ? NULL : &hp_areas[hp_order[i]];
	if (a != NULL && a->a_len != HP_AREA) {
		if (a->a_base == p && a->a_len == size)
			hp_area_free_locked((size_t)i);
	} else if (a != NULL && size <= HP_AREA) {
		size_t first = (p - a->a_base) / page, n = size / page;
		/* Pages not all given out: not a block of ours, or a second put. */
		if (hp_bits_all(a->a_bits, first, n, true)) {
			hp_bits_mark(a->a_bits, first, n, false);
			a->a_used -= (uint32_t)n;
			if (a->a_used == 0)
				hp_area_free_locked((size_t)i);
			else
				hp_purge_range(p, size, (enum hp_kind)a->a_kind);
		}
	}
	hp_lock_drop();
	errno = err;
}

static void hp_purge(void *arg, void *block, size_t size)
{
	uintptr_t p = (uintptr_t)block;

	(void)arg;
	hp_lock_take();
	long i = hp_find_locked(p, size);
	enum hp_kind kind = i < 0 ? HP_PLAIN : (enum hp_kind)hp_areas[hp_order[i]].a_kind;
	/* The area cannot go while its block is in use: the madvise may run
	 * unlocked. */
	hp_lock_drop();
	if (i >= 0)
		hp_purge_range(p, size, kind);
}

static const struct uslab_pagesrc hp_source = {
	.name = "hugepage",
	.get = hp_get,
	.put = hp_put,
	.purge = hp_purge,
	.arg = NULL,
};

const char *pgsrc_hugepage_decide(const char *root)
{
	const char *mode = NULL;

	hp_lock_take();
	if (hp_nareas == 0) {
		mode = hp_decide_locked(root != NULL ? root : "");
		__atomic_store_n(&hp_mode, mode, __ATOMIC_RELEASE);
	}
	hp_lock_drop();
	if (mode == NULL)
		errno = EBUSY;
	return mode;
}

/* See include/uslab.h */
const struct uslab_pagesrc *uslab_pagesrc_hugepage(void)
{
	return &hp_source;
}

/* See include/uslab.h */
const char *uslab_pagesrc_hugepage_mode(void)
{
	const char *mode = __atomic_load_n(&hp_mode, __ATOMIC_ACQUIRE);

	if (mode != NULL)
		return mode;
	/* In a handler that interrupted this thread's first get() while it
	 * decides: the lock is this thread's own. */
	if (hp_mine)
		return "off: not decided yet (asked from a signal handler)";
	hp_lock_take();
	if (hp_mode == NULL)
		__atomic_store_n(&hp_mode, hp_decide_locked(""), __ATOMIC_RELEASE);
	mode = hp_mode;
	hp_lock_drop();
	return mode;
}
