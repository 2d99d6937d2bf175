/* SPDX-License-Identifier: MIT */
/* uslab_cache_validate: every slab, magazine and debug byte of a cache, checked. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sanitize.h"

/*
 * Design
 *
 * A validation holds the whole cache still: it owns every started per-CPU
 * slot (the remote-operation protocol: stopped and fenced, or locked),
 * then the depot's lock, then the slab layer's, in the lock order of
 * cache.c §4, so every free object is in exactly one place it can see:
 * a slot, a depot magazine, or its slab's bitmap. It collects the
 * magazines' objects, sorts them, and checks:
 *   - each is an object of the cache, once, and not free in its slab
 *     ("not an object of this cache", "double free");
 *   - each slab: its bitmap agrees with its count, and the counts with
 *     the cache's ("slab bookkeeping damaged");
 *   - each object whose red zone was written (Z): the red zone;
 *   - each free object that was poisoned (P): the poison, only while P is
 *     on. With P off nothing keeps the poison map true (an object the fast
 *     path hands out keeps its bit, and goes back unpoisoned); switching P
 *     on clears the map under the slab layer's lock before the flag is
 *     stored, so a validation that holds that lock and sees P sees a map
 *     kept since it was cleared.
 * With the audit on, the objects neither free in a slab nor in a magazine
 * are listed as "leak" lines, grouped by allocation stack (not counted as
 * problems). Lines are gathered in a private mapping while the cache is
 * held and written to the report afterwards: stdio may allocate, and the
 * allocator may be uslab itself. A slot that cannot be owned (no fence at
 * all) is left running and said: its objects are not seen.
 */

/* A growable array of pointers or text, in a private mapping (no malloc). */
struct vbuf {
	char *b_data;
	size_t b_len, b_cap;
};

static bool vbuf_add(struct vbuf *b, const void *p, size_t n)
{
	if (b->b_len + n > b->b_cap) {
		size_t cap = b->b_cap == 0 ? 65536 : 2 * b->b_cap;
		while (cap < b->b_len + n)
			cap *= 2;
		char *d = os_map(cap, OS_RW);
		if (d == NULL)
			return false;
		if (b->b_data != NULL) {
			memcpy(d, b->b_data, b->b_len);
			os_unmap(b->b_data, b->b_cap);
		}
		b->b_data = d;
		b->b_cap = cap;
	}
	memcpy(b->b_data + b->b_len, p, n);
	b->b_len += n;
	return true;
}

static void vbuf_free(struct vbuf *b)
{
	if (b->b_data != NULL)
		os_unmap(b->b_data, b->b_cap);
}

/* A leak: the object and its allocation record. */
struct vleak {
	void *l_obj;
	struct audit_rec l_rec;
};

struct vctx {
	struct uslab_cache *v_cache;
	struct vbuf v_mags;  /* void *: objects in magazines, sorted */
	struct vbuf v_text;  /* report lines */
	struct vbuf v_leaks; /* struct vleak */
	long v_problems;
	uint64_t v_inuse; /* sum of s_inuse */
	bool v_oom;       /* a buffer could not grow: figures partial */
	bool v_leaks_wanted;
	bool v_poison;         /* P was on, read with the slab layer's lock held */
	unsigned char *v_copy; /* a slot's bytes, read (v_peek); c_slot bytes, mapped */
};

static void v_line(struct vctx *v, const void *obj, enum uslab_error err, const char *detail)
{
	char line[320];
	size_t n = uslab_report_line(line, sizeof line, v->v_cache, obj, err, detail);

	v->v_problems += err != USLAB_E_LEAK;
	v->v_oom |= !vbuf_add(&v->v_text, line, n);
}

static void v_collect(void *obj, void *arg)
{
	struct vctx *v = arg;

	v->v_oom |= !vbuf_add(&v->v_mags, &obj, sizeof obj);
}

static int v_cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

static bool v_in_mags(const struct vctx *v, const void *obj)
{
	return v->v_mags.b_len != 0 && bsearch(&obj, v->v_mags.b_data, v->v_mags.b_len / sizeof obj,
	                                       sizeof obj, v_cmp_ptr) != NULL;
}

/* Copy @n bytes of a free object or a red zone that sanitizers may have
 * closed, without telling them anything (sanitize.h): the object's owner
 * may be opening it at this moment. */
static SAN_NO_ASAN void v_peek(unsigned char *dst, const volatile unsigned char *src, size_t n)
{
	SAN_PEEK_BEGIN();
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i];
	SAN_PEEK_END();
}

/* The first of @n bytes at @p (copied into @copy, which holds @n) that is
 * not @want, or n. */
static size_t v_first_not(const void *p, size_t n, unsigned char want, unsigned char *copy)
{
	v_peek(copy, p, n);
	for (size_t i = 0; i < n; i++)
		if (copy[i] != want)
			return i;
	return n;
}

static void v_slab(struct uslab_cache *c, struct slab *s, void *arg)
{
	struct vctx *v = arg;
	uint64_t free_bits = 0;

	for (uint32_t w = 0; w < c->c_slab_words; w++)
		free_bits += (uint64_t)__builtin_popcountll(s->s_free[w]);
	if (s->s_magic != SLAB_MAGIC || s->s_cache != c || s->s_inuse + free_bits != c->c_slab_objs)
		v_line(v, s->s_block, USLAB_E_SLAB, "its bitmap and its count disagree");
	v->v_inuse += s->s_inuse;
	const uint64_t *d = __atomic_load_n(&s->s_dbg, __ATOMIC_ACQUIRE);
	const struct audit_rec *a = __atomic_load_n(&s->s_audit, __ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < c->c_slab_objs; i++) {
		char *obj = s->s_base + (size_t)i * c->c_slot;
		bool in_slab = (s->s_free[i / 64] >> (i % 64)) & 1;
		bool free = in_slab || v_in_mags(v, obj);
		uint64_t bit = (uint64_t)1 << (i % 64);
		if (v->v_copy == NULL)
			d = NULL; /* no room to read into: v_oom says so */
		if (d != NULL && (d[(size_t)DBG_RZ * c->c_slab_words + i / 64] & bit) != 0) {
			size_t at = v_first_not(obj + c->c_size, c->c_rz, DBG_RZ_BYTE, v->v_copy);
			if (at < c->c_rz) {
				char detail[32];
				snprintf(detail, sizeof detail, "offset %zu", c->c_size + at);
				v_line(v, obj, USLAB_E_REDZONE, detail);
			}
		}
		if (free && d != NULL && v->v_poison &&
		    (d[(size_t)DBG_POISON * c->c_slab_words + i / 64] & bit) != 0) {
			size_t at = v_first_not(obj, c->c_size, DBG_POISON_BYTE, v->v_copy);
			if (at < c->c_size) {
				char detail[64];
				debug_describe_poison(v->v_copy, at, c->c_size, detail,
				                      sizeof detail);
				v_line(v, obj, USLAB_E_POISON, detail);
			}
		}
		if (!free && v->v_leaks_wanted) {
			struct vleak l = {.l_obj = obj};
			if (a != NULL)
				l.l_rec = a[2 * i];
			v->v_oom |= !vbuf_add(&v->v_leaks, &l, sizeof l);
		}
	}
}

static int v_cmp_leak(const void *a, const void *b)
{
	const struct vleak *x = a, *y = b;

	if (x->l_rec.a_stack != y->l_rec.a_stack)
		return x->l_rec.a_stack < y->l_rec.a_stack ? -1 : 1;
	return v_cmp_ptr(&x->l_obj, &y->l_obj);
}

/* The "leak" lines, grouped by stack, then each group's stack, to @out. */
static long v_print_leaks(struct vctx *v, FILE *out)
{
	size_t n = v->v_leaks.b_len / sizeof(struct vleak);
	struct vleak *l = (struct vleak *)v->v_leaks.b_data;

	if (n == 0)
		return 0;
	qsort(l, n, sizeof *l, v_cmp_leak);
	fflush(out);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && l[j].l_rec.a_stack == l[i].l_rec.a_stack)
			j++;
		for (size_t k = i; k < j; k++) {
			char line[320];
			size_t len = uslab_report_line(line, sizeof line, v->v_cache, l[k].l_obj,
			                               USLAB_E_LEAK, NULL);
			fwrite(line, 1, len, out);
		}
		char what[64];
		snprintf(what, sizeof what, "%zu of them allocated, the last", j - i);
		fflush(out);
		audit_print(fileno(out), what, &l[j - 1].l_rec);
		i = j;
	}
	return (long)n;
}

/* Hold @c still, check it, let it go (the design comment). */
static void v_run(struct uslab_cache *c, struct vctx *v)
{
	v->v_copy = os_map(c->c_slot, OS_RW);
	if (v->v_copy == NULL)
		v->v_oom = true;
	bool all = pcpu_stop_objects(c, v_collect, v);
	depot_lock_objects(c, v_collect, v);
	slab_lock(c);
	v->v_poison = (__atomic_load_n(&c->c_debug, __ATOMIC_ACQUIRE) & USLAB_DEBUG_POISON) != 0;
	size_t n = v->v_mags.b_len / sizeof(void *);
	void **m = (void **)v->v_mags.b_data;
	if (n != 0)
		qsort(m, n, sizeof *m, v_cmp_ptr);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && m[i] == m[i - 1])
			v_line(v, m[i], USLAB_E_DUPFREE, "in two magazines");
		else if (!slab_is_object(c, m[i]))
			v_line(v, m[i], USLAB_E_FOREIGN, "in a magazine");
		else if (slab_obj_free_locked(c, m[i]))
			v_line(v, m[i], USLAB_E_DUPFREE, "in a magazine and in its slab");
	}
	slab_walk_locked(c, v_slab, v);
	if (v->v_inuse != slab_inuse_locked(c))
		v_line(v, NULL, USLAB_E_SLAB, "the cache's count and its slabs' disagree");
	slab_unlock(c);
	depot_unlock_objects(c);
	pcpu_restart_all(c);
	if (v->v_copy != NULL)
		os_unmap(v->v_copy, c->c_slot);
	if (!all) {
		const char *s = "uslab: validate: some CPUs could not be fenced: their magazines "
				"were not checked\n";
		v->v_oom |= !vbuf_add(&v->v_text, s, strlen(s));
	}
}

long validate_leaks(struct uslab_cache *c, FILE *out)
{
	struct vctx v = {.v_cache = c, .v_leaks_wanted = true};

	v_run(c, &v);
	long n = v_print_leaks(&v, out);
	vbuf_free(&v.v_mags);
	vbuf_free(&v.v_text);
	vbuf_free(&v.v_leaks);
	return n;
}

/* See include/uslab.h */
long uslab_cache_validate(struct uslab_cache *c, FILE *report)
{
	int old;

	if (c == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (pgsrc_busy != 0) {
		errno = EDEADLK;
		return -1;
	}
	if (report == NULL)
		report = stderr;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	struct vctx v = {
		.v_cache = c,
		.v_leaks_wanted =
			(__atomic_load_n(&c->c_debug, __ATOMIC_RELAXED) & USLAB_DEBUG_AUDIT) != 0,
	};
	v_run(c, &v);
	if (v.v_text.b_len != 0)
		fwrite(v.v_text.b_data, 1, v.v_text.b_len, report);
	if (v.v_oom)
		fputs("uslab: validate: out of memory: the figures above are partial\n", report);
	v_print_leaks(&v, report);
	fflush(report);
	vbuf_free(&v.v_mags);
	vbuf_free(&v.v_text);
	vbuf_free(&v.v_leaks);
	pthread_setcancelstate(old, NULL);
	pcpu_deferred_flush();
	return v.v_problems;
}
