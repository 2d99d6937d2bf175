/* SPDX-License-Identifier: MIT */
/* uslabtop's formatting: sort keys, slabtop's summary and columns, JSON, CSV. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "top.h"

/*
 * The text formats copy procps slabtop (4.0.2) column for column, so that
 * scripts and eyes used to `slabtop -o` read uslabtop the same way:
 *
 *   " Active / Total Objects (% used)    : %u / %u (%.1f%%)"   (and Slabs, Caches)
 *   " Active / Total Size (% used)       : %.2fK / %.2fK (%.1f%%)"
 *   " Minimum / Average / Maximum Object : %.2fK / %.2fK / %.2fK"
 *   "%6s %6s %4s %8s %6s %8s %10s %-23s"            header
 *   "%6u %6u %3u%% %7.2fK %6u %8u %9uK %-23s"       row
 *
 * The mapping from a uslab cache to slabtop's fields, in the vocabulary of
 * struct uslab_stats:
 *   OBJS = total_objs, ACTIVE = active_objs, USE = 100 * active / total
 *   (truncated, as slabtop does), OBJ SIZE = slot_size (what an object
 *   occupies, as /proc/slabinfo's objsize and uslab_slabinfo() report),
 *   SLABS = total_slabs, OBJ/SLAB = objs_per_slab,
 *   CACHE SIZE = bytes_total (slabs * slab size) in KiB, NAME = name.
 * The "Size" summary line counts objects times slot size, as slabtop does.
 * After slabtop's columns, where rates are shown (the screen, --once with
 * -d): ALLOC/s, FREE/s, and RCU WAIT = rcu_objs, the objects freed with
 * uslab_cache_free_rcu() that wait for their grace period.
 */

/* Wide enough for 100 * any 64-bit count (uslabtop is built by gcc or clang). */
__extension__ typedef unsigned __int128 top_u128;

/* ---- Sort keys ---- */

struct sort_key {
	char k_key;
	const char *k_desc;  /* slabtop --help words */
	const char *k_short; /* status line */
};

const char top_sort_keys[] = "abclvnopsu";

static const struct sort_key sort_table[] = {
	{'a', "number of active objects", "active"},
	{'b', "objects per slab", "obj/slab"},
	{'c', "cache size", "cache size"},
	{'l', "number of slabs", "slabs"},
	{'v', "(non display) number of active slabs", "active slabs"},
	{'n', "name", "name"},
	{'o', "number of objects (the default)", "objs"},
	{'p', "(non display) pages per slab", "pages/slab"},
	{'s', "object size", "obj size"},
	{'u', "cache utilization", "use"},
};

static const struct sort_key *sort_find(char key)
{
	for (size_t i = 0; i < sizeof sort_table / sizeof sort_table[0]; i++)
		if (sort_table[i].k_key == key)
			return &sort_table[i];
	return NULL;
}

char top_sort_key(int c)
{
	if (c >= 'A' && c <= 'Z')
		c += 'a' - 'A';
	return c > 0 && c < 128 && sort_find((char)c) != NULL ? (char)c : 0;
}

const char *top_sort_desc(char key)
{
	const struct sort_key *k = sort_find(key);
	return k != NULL ? k->k_desc : "?";
}

const char *top_sort_short(char key)
{
	const struct sort_key *k = sort_find(key);
	return k != NULL ? k->k_short : "?";
}

/* Three-way comparison of unsigned figures. */
static int cmp_u64(uint64_t a, uint64_t b)
{
	return (a > b) - (a < b);
}

/* Utilization a1/t1 against a2/t2 without rounding; an empty cache is 0%. */
static int cmp_use(const struct uslab_stats *x, const struct uslab_stats *y)
{
	top_u128 l = (top_u128)x->active_objs * (y->total_objs ? y->total_objs : 1);
	top_u128 r = (top_u128)y->active_objs * (x->total_objs ? x->total_objs : 1);
	if (x->total_objs == 0)
		l = 0;
	if (y->total_objs == 0)
		r = 0;
	return (l > r) - (l < r);
}

/* The key's comparison, larger first for every key but the name. */
static int row_key_cmp(const struct top_row *a, const struct top_row *b, char key)
{
	const struct uslab_stats *x = a->r_st, *y = b->r_st;

	switch (key) {
	case 'a':
		return cmp_u64(y->active_objs, x->active_objs);
	case 'b':
		return cmp_u64(y->objs_per_slab, x->objs_per_slab);
	case 'c':
		return cmp_u64(y->bytes_total, x->bytes_total);
	case 'l':
		return cmp_u64(y->total_slabs, x->total_slabs);
	case 'v':
		return cmp_u64(y->active_slabs, x->active_slabs);
	case 'n':
		return strcmp(a->r_label, b->r_label);
	case 'p':
		return cmp_u64(y->slab_size, x->slab_size);
	case 's':
		return cmp_u64(y->slot_size, x->slot_size);
	case 'u':
		return cmp_use(y, x);
	case 'o':
	default:
		return cmp_u64(y->total_objs, x->total_objs);
	}
}

/* qsort has no context argument in C11; the key is set just before. */
static char sort_current = 'o';

static int row_cmp(const void *pa, const void *pb)
{
	const struct top_row *a = pa, *b = pb;
	int c = row_key_cmp(a, b, sort_current);

	if (c == 0)
		c = strcmp(a->r_label, b->r_label);
	if (c == 0 && a->r_proc != b->r_proc)
		c = a->r_proc->tp_pid < b->r_proc->tp_pid ? -1 : 1;
	if (c == 0)
		c = cmp_u64(a->r_index, b->r_index);
	return c;
}

void top_sort(struct top_row *rows, size_t n, char key)
{
	sort_current = top_sort_key(key) ? top_sort_key(key) : 'o';
	if (n > 1)
		qsort(rows, n, sizeof *rows, row_cmp);
}

/* ---- Rows and totals ---- */

void top_sanitize(char *out, size_t outlen, const char *name)
{
	size_t i = 0;

	if (outlen == 0)
		return;
	for (; i + 1 < outlen && i < USLAB_NAME_MAX && name[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)name[i];
		out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	out[i] = '\0';
}

/* Bounded length of a snapshot name, which need not be terminated. */
static size_t name_len(const char *name)
{
	return strnlen(name, USLAB_NAME_MAX + 1);
}

/* Occurrence number of cache @i's name among caches 0..i-1 of @s. */
static size_t name_occurrence(const struct uslab_snapshot *s, size_t i)
{
	size_t len = name_len(s->caches[i].name), occ = 0;

	for (size_t j = 0; j < i; j++)
		if (name_len(s->caches[j].name) == len &&
		    memcmp(s->caches[j].name, s->caches[i].name, len) == 0)
			occ++;
	return occ;
}

/* The cache of @s with @name's @occ-th occurrence, or NULL. */
static const struct uslab_stats *find_cache(const struct uslab_snapshot *s, const char *name,
                                            size_t occ)
{
	size_t len = name_len(name);

	for (size_t j = 0; j < s->ncaches; j++)
		if (name_len(s->caches[j].name) == len &&
		    memcmp(s->caches[j].name, name, len) == 0 && occ-- == 0)
			return &s->caches[j];
	return NULL;
}

/* Per-second rate of a counter, -1 when it went backwards (another cache). */
static double rate(uint64_t now, uint64_t before, double secs)
{
	return now >= before && secs > 0 ? (double)(now - before) / secs : -1;
}

int top_proc_rates(struct top_proc *p)
{
	const struct uslab_snapshot *s = &p->tp_snap, *q = &p->tp_prev;
	size_t n = s->ncaches;
	double *buf = NULL;

	free(p->tp_alloc_rate);
	p->tp_alloc_rate = p->tp_free_rate = NULL;
	p->tp_fast_alloc_ival = p->tp_fast_free_ival = NULL;
	if (n == 0)
		return 0;
	buf = malloc(4 * n * sizeof *buf);
	if (buf == NULL)
		return -1;
	p->tp_alloc_rate = buf;
	p->tp_free_rate = buf + n;
	p->tp_fast_alloc_ival = buf + 2 * n;
	p->tp_fast_free_ival = buf + 3 * n;

	double secs = p->tp_have_prev && s->taken_ns > q->taken_ns
	                      ? (double)(s->taken_ns - q->taken_ns) / 1e9
	                      : 0;
	for (size_t i = 0; i < n; i++) {
		const struct uslab_stats *now = &s->caches[i];
		const struct uslab_stats *was =
			secs > 0 ? find_cache(q, now->name, name_occurrence(s, i)) : NULL;

		p->tp_alloc_rate[i] = p->tp_free_rate[i] = -1;
		p->tp_fast_alloc_ival[i] = p->tp_fast_free_ival[i] = -1;
		if (was == NULL)
			continue;
		p->tp_alloc_rate[i] = rate(now->allocs, was->allocs, secs);
		p->tp_free_rate[i] = rate(now->frees, was->frees, secs);
		if (now->allocs > was->allocs && now->fast_allocs >= was->fast_allocs)
			p->tp_fast_alloc_ival[i] = (double)(now->fast_allocs - was->fast_allocs) /
			                           (double)(now->allocs - was->allocs);
		if (now->frees > was->frees && now->fast_frees >= was->fast_frees)
			p->tp_fast_free_ival[i] = (double)(now->fast_frees - was->fast_frees) /
			                          (double)(now->frees - was->frees);
	}
	return 0;
}

size_t top_rows_fill(struct top_row *rows, const struct top_proc *procs, size_t nprocs,
                     bool with_pid)
{
	size_t n = 0;

	for (size_t k = 0; k < nprocs; k++) {
		const struct top_proc *p = &procs[k];
		for (size_t i = 0; i < p->tp_snap.ncaches; i++) {
			struct top_row *r = &rows[n++];
			char name[USLAB_NAME_MAX + 1];

			r->r_proc = p;
			r->r_index = i;
			r->r_st = &p->tp_snap.caches[i];
			top_sanitize(name, sizeof name, r->r_st->name);
			if (with_pid)
				snprintf(r->r_label, sizeof r->r_label, "%ld:%s", (long)p->tp_pid,
				         name);
			else
				snprintf(r->r_label, sizeof r->r_label, "%s", name);
			r->r_alloc_rate = p->tp_alloc_rate ? p->tp_alloc_rate[i] : -1;
			r->r_free_rate = p->tp_free_rate ? p->tp_free_rate[i] : -1;
		}
	}
	return n;
}

void top_totals(const struct top_row *rows, size_t n, struct top_totals *t)
{
	memset(t, 0, sizeof *t);
	for (size_t i = 0; i < n; i++) {
		const struct uslab_stats *st = rows[i].r_st;

		t->t_caches++;
		if (st->total_objs != 0)
			t->t_active_caches++;
		t->t_active_objs += st->active_objs;
		t->t_total_objs += st->total_objs;
		t->t_active_slabs += st->active_slabs;
		t->t_total_slabs += st->total_slabs;
		t->t_active_size += (double)st->active_objs * (double)st->slot_size;
		t->t_total_size += (double)st->total_objs * (double)st->slot_size;
		if (i == 0 || st->slot_size < t->t_min_obj)
			t->t_min_obj = st->slot_size;
		if (st->slot_size > t->t_max_obj)
			t->t_max_obj = st->slot_size;
	}
	t->t_avg_obj = t->t_total_objs ? t->t_total_size / (double)t->t_total_objs : 0;
}

/* ---- slabtop lines ---- */

/* Percentage for the summary lines; an empty total reads 0.0%. */
static double pct(double part, double whole)
{
	return whole > 0 ? 100.0 * part / whole : 0.0;
}

void top_format_summary(char *buf, size_t len, const struct top_totals *t, int i)
{
	switch (i) {
	case 0:
		snprintf(buf, len,
		         " Active / Total Objects (%% used)    : %" PRIu64 " / %" PRIu64
		         " (%.1f%%)",
		         t->t_active_objs, t->t_total_objs,
		         pct((double)t->t_active_objs, (double)t->t_total_objs));
		break;
	case 1:
		snprintf(buf, len,
		         " Active / Total Slabs (%% used)      : %" PRIu64 " / %" PRIu64
		         " (%.1f%%)",
		         t->t_active_slabs, t->t_total_slabs,
		         pct((double)t->t_active_slabs, (double)t->t_total_slabs));
		break;
	case 2:
		snprintf(buf, len,
		         " Active / Total Caches (%% used)     : %" PRIu64 " / %" PRIu64
		         " (%.1f%%)",
		         t->t_active_caches, t->t_caches,
		         pct((double)t->t_active_caches, (double)t->t_caches));
		break;
	case 3:
		snprintf(buf, len, " Active / Total Size (%% used)       : %.2fK / %.2fK (%.1f%%)",
		         t->t_active_size / 1024.0, t->t_total_size / 1024.0,
		         pct(t->t_active_size, t->t_total_size));
		break;
	default:
		snprintf(buf, len, " Minimum / Average / Maximum Object : %.2fK / %.2fK / %.2fK",
		         (double)t->t_min_obj / 1024.0, t->t_avg_obj / 1024.0,
		         (double)t->t_max_obj / 1024.0);
		break;
	}
}

void top_format_header(char *buf, size_t len, int namew, bool rates)
{
	int n = snprintf(buf, len, "%6s %6s %4s %8s %6s %8s %10s %-*s", "OBJS", "ACTIVE", "USE",
	                 "OBJ SIZE", "SLABS", "OBJ/SLAB", "CACHE SIZE", namew, "NAME");
	if (rates && n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, " %9s %9s %9s", "ALLOC/s", "FREE/s", "RCU WAIT");
}

/* A rate column: whole objects per second, or "-" before two readings. */
static void format_rate(char *buf, size_t len, double r)
{
	if (r < 0)
		snprintf(buf, len, "-");
	else if (r < 1e9)
		snprintf(buf, len, "%.0f", r);
	else
		snprintf(buf, len, "%.1fG", r / 1e9);
}

void top_format_row(char *buf, size_t len, const struct top_row *r, int namew, bool rates)
{
	const struct uslab_stats *st = r->r_st;
	unsigned use =
		st->total_objs ? (unsigned)(100 * (top_u128)st->active_objs / st->total_objs) : 0;
	int n = snprintf(buf, len,
	                 "%6" PRIu64 " %6" PRIu64 " %3u%% %7.2fK %6" PRIu64 " %8" PRIu32
	                 " %9" PRIu64 "K %-*s",
	                 st->total_objs, st->active_objs, use, (double)st->slot_size / 1024.0,
	                 st->total_slabs, st->objs_per_slab, st->bytes_total / 1024, namew,
	                 r->r_label);
	if (rates && n > 0 && (size_t)n < len) {
		char a[24], f[24];
		format_rate(a, sizeof a, r->r_alloc_rate);
		format_rate(f, sizeof f, r->r_free_rate);
		snprintf(buf + n, len - (size_t)n, " %9s %9s %9" PRIu64, a, f, st->rcu_objs);
	}
}

int top_name_width(const struct top_row *rows, size_t n, bool rates)
{
	int w = TOP_NAME_WIDTH;

	for (size_t i = 0; rates && i < n; i++)
		if ((int)strlen(rows[i].r_label) > w)
			w = (int)strlen(rows[i].r_label);
	return w;
}

/* ---- Batch output ---- */

int top_print_text(FILE *out, const struct top_row *rows, size_t n, bool rates)
{
	struct top_totals t;
	char line[TOP_LINE_MAX];
	int namew = top_name_width(rows, n, rates);

	top_totals(rows, n, &t);
	for (int i = 0; i < 5; i++) {
		top_format_summary(line, sizeof line, &t, i);
		fprintf(out, "%s\n", line);
	}
	fputc('\n', out);
	top_format_header(line, sizeof line, namew, rates);
	fprintf(out, "%s\n", line);
	for (size_t i = 0; i < n; i++) {
		top_format_row(line, sizeof line, &rows[i], namew, rates);
		fprintf(out, "%s\n", line);
	}
	return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}

/* A JSON string: printable ASCII as is, anything else escaped, so that a
 * hostile name cannot break the document (bytes >= 0x80 read as Latin-1). */
static void json_str(FILE *out, const char *s, size_t max)
{
	fputc('"', out);
	for (size_t i = 0; i < max && s[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch >= 0x20 && ch < 0x7f)
			fputc(ch, out);
		else
			fprintf(out, "\\u%04x", ch);
	}
	fputc('"', out);
}

/* A rate in JSON: a number with 3 decimals, or null when unknown. */
static void json_rate(FILE *out, const char *key, double r)
{
	if (r < 0)
		fprintf(out, ",\"%s\":null", key);
	else
		fprintf(out, ",\"%s\":%.3f", key, r);
}

/* The fields of struct uslab_stats, in its order and with its names: one
 * vocabulary for the API, the JSON and the CSV. */
/* clang-format off */
#define TOP_STATS_FIELDS(X)                                                              \
	X(obj_size) X(slot_size) X(align) X(flags) X(objs_per_slab) X(slab_size)         \
	X(active_objs) X(total_objs) X(active_slabs) X(total_slabs) X(bytes_active)      \
	X(bytes_total) X(allocs) X(frees) X(fast_allocs) X(fast_frees) X(alloc_failures) \
	X(pcpu_objs) X(depot_objs) X(depot_full) X(depot_empty) X(mag_size) X(mag_max)   \
	X(depot_contended) X(slabs_created) X(slabs_released) X(rcu_objs) X(rcu_bytes)    \
	X(rcu_slabs) X(rcu_peak) X(rcu_waits) X(rcu_cap)
/* clang-format on */

static void json_cache(FILE *out, const struct top_row *r)
{
	const struct uslab_stats *st = r->r_st;
	const struct top_proc *p = r->r_proc;

	fputs("{\"name\":", out);
	json_str(out, st->name, USLAB_NAME_MAX);
#define X(f) fprintf(out, ",\"" #f "\":%" PRIu64, (uint64_t)st->f);
	TOP_STATS_FIELDS(X)
#undef X
	json_rate(out, "alloc_rate", r->r_alloc_rate);
	json_rate(out, "free_rate", r->r_free_rate);
	fputs(",\"cpu_objs\":[", out);
	if (p->tp_snap.cpu_objs != NULL)
		for (uint32_t c = 0; c < p->tp_snap.ncpus; c++)
			fprintf(out, "%s%" PRIu64, c ? "," : "",
			        p->tp_snap.cpu_objs[r->r_index * p->tp_snap.ncpus + c]);
	fputs("]}", out);
}

static void json_totals(FILE *out, const struct top_totals *t)
{
	fprintf(out,
	        "{\"active_objs\":%" PRIu64 ",\"total_objs\":%" PRIu64 ",\"active_slabs\":%" PRIu64
	        ",\"total_slabs\":%" PRIu64 ",\"active_caches\":%" PRIu64 ",\"caches\":%" PRIu64
	        ",\"active_size\":%.0f,\"total_size\":%.0f,\"min_obj\":%" PRIu64
	        ",\"avg_obj\":%.2f,\"max_obj\":%" PRIu64 "}",
	        t->t_active_objs, t->t_total_objs, t->t_active_slabs, t->t_total_slabs,
	        t->t_active_caches, t->t_caches, t->t_active_size, t->t_total_size, t->t_min_obj,
	        t->t_avg_obj, t->t_max_obj);
}

int top_print_json(FILE *out, const struct top_proc *procs, size_t nprocs,
                   const struct top_row *rows, size_t n, char sort)
{
	fprintf(out, "{\"version\":1,\"sort\":\"%c\",\"processes\":[", sort);
	for (size_t k = 0; k < nprocs; k++) {
		const struct top_proc *p = &procs[k];
		struct top_totals t;
		size_t cnt = 0;

		/* This process's rows, in the sort order of @rows. */
		for (size_t i = 0; i < n; i++)
			cnt += rows[i].r_proc == p;
		struct top_row *mine = cnt ? malloc(cnt * sizeof *mine) : NULL;
		if (cnt && mine == NULL)
			return -1;
		for (size_t i = 0, j = 0; i < n; i++)
			if (rows[i].r_proc == p)
				mine[j++] = rows[i];
		top_totals(mine, cnt, &t);

		fprintf(out, "%s\n{\"pid\":%ld,\"comm\":", k ? "," : "", (long)p->tp_pid);
		json_str(out, p->tp_comm, sizeof p->tp_comm);
		fputs(",\"mode\":", out);
		json_str(out, p->tp_snap.mode, sizeof p->tp_snap.mode);
		fprintf(out,
		        ",\"exited\":%s,\"taken_ns\":%" PRIu64 ",\"bytes_mapped\":%" PRIu64
		        ",\"ncpus\":%" PRIu32 ",\"totals\":",
		        p->tp_exited ? "true" : "false", p->tp_snap.taken_ns,
		        p->tp_snap.bytes_mapped, p->tp_snap.ncpus);
		json_totals(out, &t);
		fputs(",\"caches\":[", out);
		for (size_t j = 0; j < cnt; j++) {
			fputs(j ? ",\n " : "\n ", out);
			json_cache(out, &mine[j]);
		}
		fputs("]}", out);
		free(mine);
	}
	fputs("]}\n", out);
	return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}

/* A CSV field: always quoted, quotes doubled, unprintable bytes as '?'. */
static void csv_str(FILE *out, const char *s, size_t max)
{
	fputc('"', out);
	for (size_t i = 0; i < max && s[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"')
			fputs("\"\"", out);
		else
			fputc(ch >= 0x20 && ch < 0x7f ? ch : '?', out);
	}
	fputc('"', out);
}

/* A rate in CSV: 3 decimals, or an empty field when unknown. */
static void csv_rate(FILE *out, double r)
{
	if (r >= 0)
		fprintf(out, ",%.3f", r);
	else
		fputc(',', out);
}

int top_print_csv(FILE *out, const struct top_row *rows, size_t n)
{
	fputs("pid,name", out);
#define X(f) fputs("," #f, out);
	TOP_STATS_FIELDS(X)
#undef X
	fputs(",alloc_rate,free_rate\n", out);
	for (size_t i = 0; i < n; i++) {
		const struct uslab_stats *st = rows[i].r_st;
		fprintf(out, "%ld,", (long)rows[i].r_proc->tp_pid);
		csv_str(out, st->name, USLAB_NAME_MAX);
#define X(f) fprintf(out, ",%" PRIu64, (uint64_t)st->f);
		TOP_STATS_FIELDS(X)
#undef X
		csv_rate(out, rows[i].r_alloc_rate);
		csv_rate(out, rows[i].r_free_rate);
		fputc('\n', out);
	}
	return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
