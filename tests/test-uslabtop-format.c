/* SPDX-License-Identifier: MIT */
/* uslabtop's formats on hand-built snapshots: slabtop text, sorting, rates, JSON, hostile names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "top.h"

/*
 * No live process and no reader: snapshots are built here, so the exact
 * slabtop text, every sort key and the escaping of untrusted names are
 * checked even where the segment writer is not built. Plain exit-code
 * protocol: every failure prints what differed, and the status says how
 * many there were.
 */

static int failures;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
			failures++;                                                                \
		}                                                                                  \
	} while (0)

static void check_str(const char *what, const char *got, const char *want)
{
	if (strcmp(got, want) != 0) {
		fprintf(stderr, "%s differs\n--- want\n%s\n--- got\n%s\n", what, want, got);
		failures++;
	}
}

/* A cache with slabtop's figures; the rest follows from them. */
static struct uslab_stats cache(const char *name, uint64_t slot, uint32_t per_slab,
                                uint64_t slab_size, uint64_t slabs, uint64_t active_slabs,
                                uint64_t total, uint64_t active)
{
	struct uslab_stats st;

	memset(&st, 0, sizeof st);
	strncpy(st.name, name, sizeof st.name - 1);
	st.obj_size = st.slot_size = slot;
	st.objs_per_slab = per_slab;
	st.slab_size = slab_size;
	st.total_slabs = slabs;
	st.active_slabs = active_slabs;
	st.total_objs = total;
	st.active_objs = active;
	st.bytes_total = slabs * slab_size;
	st.bytes_active = active * slot;
	st.mag_size = 8;
	return st;
}

/* Run @fn on a memory stream and return what it wrote (free() it). */
static char *capture_text(const struct top_row *rows, size_t n, bool rates)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CHECK(top_print_text(f, rows, n, rates) == 0);
	fclose(f);
	return buf;
}

static const char want_text[] =
	" Active / Total Objects (% used)    : 1400 / 1508 (92.8%)\n"
	" Active / Total Slabs (% used)      : 40 / 41 (97.6%)\n"
	" Active / Total Caches (% used)     : 2 / 3 (66.7%)\n"
	" Active / Total Size (% used)       : 153.91K / 160.66K (95.8%)\n"
	" Minimum / Average / Maximum Object : 0.06K / 0.11K / 0.20K\n"
	"\n"
	"  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME                   \n"
	"  1008    900  89%    0.06K     16       63        64K conn                   \n"
	"   500    500 100%    0.20K     25       20       100K item                   \n"
	"     0      0   0%    0.12K      0       32         0K idle                   \n";

/* Labels of @rows in order, comma-separated. */
static void order(char *out, size_t len, const struct top_row *rows, size_t n)
{
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "",
		         rows[i].r_label);
}

int main(void)
{
	struct uslab_stats now[3] = {
		cache("conn", 64, 63, 4096, 16, 15, 1008, 900),
		cache("idle", 128, 32, 4096, 0, 0, 0, 0),
		cache("item", 200, 20, 4096, 25, 25, 500, 500),
	};
	uint64_t cpu_objs[3 * 2] = {5, 7, 0, 0, 1, 2};
	struct top_proc p;
	struct top_row rows[3];
	char buf[512];

	memset(&p, 0, sizeof p);
	p.tp_pid = 4242;
	strcpy(p.tp_comm, "server");
	p.tp_snap = (struct uslab_snapshot){.pid = 4242,
	                                    .taken_ns = 3000000000u,
	                                    .mode = "rseq cpu_id",
	                                    .ncpus = 2,
	                                    .ncaches = 3,
	                                    .caches = now,
	                                    .cpu_objs = cpu_objs};
	CHECK(top_proc_rates(&p) == 0);

	/* slabtop -o text, default sort (objects). */
	size_t n = top_rows_fill(rows, &p, 1, false);
	CHECK(n == 3);
	top_sort(rows, n, 'o');
	char *text = capture_text(rows, n, false);
	check_str("text", text, want_text);
	free(text);

	/* Every sort key; ties fall back to the name. */
	static const struct {
		char key;
		const char *want;
	} sorts[] = {
		{'a', "conn,item,idle"}, {'b', "conn,idle,item"}, {'c', "item,conn,idle"},
		{'l', "item,conn,idle"}, {'v', "item,conn,idle"}, {'n', "conn,idle,item"},
		{'o', "conn,item,idle"}, {'p', "conn,idle,item"}, {'s', "item,idle,conn"},
		{'u', "item,conn,idle"}, {'U', "item,conn,idle"},
	};
	for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++) {
		top_sort(rows, n, sorts[i].key);
		order(buf, sizeof buf, rows, n);
		check_str("sort order", buf, sorts[i].want);
	}
	CHECK(top_sort_key('x') == 0 && top_sort_key('N') == 'n');

	/* Rates: a second reading one second later, 500 more allocs in conn. */
	struct uslab_stats later[3];
	memcpy(later, now, sizeof later);
	later[0].allocs = 500;
	later[0].fast_allocs = 400;
	later[0].frees = 100;
	later[0].fast_frees = 100;
	later[0].rcu_objs = 37; /* waiting for a grace period: RCU WAIT */
	p.tp_prev = p.tp_snap;
	p.tp_have_prev = true;
	p.tp_snap.caches = later;
	p.tp_snap.taken_ns += 1000000000u;
	CHECK(top_proc_rates(&p) == 0);
	CHECK(p.tp_alloc_rate[0] == 500.0 && p.tp_free_rate[0] == 100.0);
	CHECK(p.tp_fast_alloc_ival[0] == 0.8 && p.tp_fast_free_ival[0] == 1.0);
	CHECK(p.tp_alloc_rate[1] == 0.0 && p.tp_fast_alloc_ival[1] == -1);
	n = top_rows_fill(rows, &p, 1, true);
	top_sort(rows, n, 'o');
	top_format_row(buf, sizeof buf, &rows[0], top_name_width(rows, n, true), true);
	check_str("row with rates", buf,
	          "  1008    900  89%    0.06K     16       63        64K 4242:conn                "
	          "     500       100        37");

	/* JSON keeps the API's field names and the per-CPU counts. */
	char *json = NULL;
	size_t jlen = 0;
	FILE *f = open_memstream(&json, &jlen);
	CHECK(top_print_json(f, &p, 1, rows, n, 'o') == 0);
	fclose(f);
	CHECK(strstr(json, "\"pid\":4242,\"comm\":\"server\",\"mode\":\"rseq cpu_id\"") != NULL);
	CHECK(strstr(json, "{\"name\":\"conn\",\"obj_size\":64,\"slot_size\":64,") != NULL);
	CHECK(strstr(json, "\"rcu_objs\":37,\"rcu_bytes\":0,\"rcu_slabs\":0,") != NULL);
	CHECK(strstr(json, "\"alloc_rate\":500.000,\"free_rate\":100.000,\"cpu_objs\":[5,7]") !=
	      NULL);
	CHECK(strstr(json, "\"active_objs\":1400,\"total_objs\":1508") != NULL);
	free(json);

	/* A hostile name: unterminated (cut at USLAB_NAME_MAX), control bytes,
	 * quotes, high bytes. */
	memset(later[2].name, 'A', sizeof later[2].name);
	later[2].name[0] = '"';
	later[2].name[1] = '\n';
	later[2].name[2] = (char)0xff;
	n = top_rows_fill(rows, &p, 1, false);
	top_sort(rows, n, 'n');
	CHECK(strlen(rows[0].r_label) == USLAB_NAME_MAX);
	CHECK(strncmp(rows[0].r_label, "\"??AAA", 6) == 0);
	f = open_memstream(&json, &jlen);
	CHECK(top_print_json(f, &p, 1, rows, n, 'n') == 0);
	fclose(f);
	CHECK(strstr(json, "{\"name\":\"\\\"\\u000a\\u00ffAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",") !=
	      NULL);
	free(json);
	f = open_memstream(&json, &jlen);
	CHECK(top_print_csv(f, rows, n) == 0);
	fclose(f);
	CHECK(strstr(json, "\n4242,\"\"\"??AAAAAAAAAAAAAAAAAAAAAAAAAAAA\",200,") != NULL);
	free(json);

	free(p.tp_alloc_rate);
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	return failures ? 1 : 0;
}
