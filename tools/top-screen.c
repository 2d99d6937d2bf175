/* SPDX-License-Identifier: MIT */
/* uslabtop's interactive screen: the slabtop table, the detail view, the process list. */
#include <curses.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "top-screen.h"

/*
 * The main view is slabtop's screen, line for line: the five summary lines,
 * line 6, the reversed column header on line 7, then the caches. slabtop
 * leaves line 6 blank; uslabtop puts its status there (process, mode, sort,
 * or a message such as "process 1234 has exited"), so everything a slabtop
 * user looks for stays where it was. Rates follow NAME, as extra columns.
 *
 * A selection bar appears once the user moves it (Up/Down); Enter opens the
 * detail view of the selected cache. The selection follows the cache (pid,
 * name, occurrence of the name), not the line, across refreshes and sorts.
 *
 * One loop drives every view: draw, then wait in getch() until the next
 * reading is due or a key arrives. A watched process that exits leaves its
 * last reading on screen with a message; nothing is read from it again.
 */

enum view { VIEW_LIST, VIEW_MAIN, VIEW_DETAIL, VIEW_HELP };

struct screen {
	const struct top_opts *s_opts;
	struct watch *s_w;
	bool s_own_w; /* s_w was set up here (from the list) */
	struct watch s_wbuf;
	enum view s_view, s_back; /* s_back: where VIEW_HELP returns */
	char s_sort;
	char s_msg[160]; /* shown on the status line until the next key */
	/* Selection: -1 = none (the plain slabtop screen). */
	long s_sel;
	pid_t s_sel_pid;
	char s_sel_name[USLAB_NAME_MAX + 1];
	size_t s_sel_occ;
	long s_top; /* first table row on screen */
	/* Process list */
	struct uslab_proc *s_procs;
	int s_nprocs;
	long s_list_sel; /* s_nprocs selects "all processes" */
};

/* Rows shown per page in the main view: below the 7 header lines. */
#define MAIN_FIRST_ROW 7

static double now_secs(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Write @s on line @y, cut at the screen width. */
static void put_line(int y, const char *s, attr_t attr)
{
	if (y >= LINES)
		return;
	move(y, 0);
	clrtoeol();
	if (attr)
		attron(attr);
	addnstr(s, COLS);
	if (attr)
		attroff(attr);
}

/* Occurrence of row @r's name among earlier caches of its process. */
static size_t row_occurrence(const struct top_row *r)
{
	const struct uslab_snapshot *s = &r->r_proc->tp_snap;
	size_t occ = 0;

	for (size_t j = 0; j < r->r_index; j++)
		if (strncmp(s->caches[j].name, r->r_st->name, USLAB_NAME_MAX + 1) == 0)
			occ++;
	return occ;
}

/* Remember row @r as the selection. */
static void select_row(struct screen *sc, const struct top_row *rows, long i)
{
	sc->s_sel = i;
	sc->s_sel_pid = rows[i].r_proc->tp_pid;
	memcpy(sc->s_sel_name, rows[i].r_st->name, USLAB_NAME_MAX);
	sc->s_sel_name[USLAB_NAME_MAX] = '\0';
	sc->s_sel_occ = row_occurrence(&rows[i]);
}

/* Find the selected cache among @rows after a refresh or a sort; keep the
 * line number when it is gone. */
static void follow_selection(struct screen *sc, const struct top_row *rows, size_t n)
{
	if (sc->s_sel < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (rows[i].r_proc->tp_pid == sc->s_sel_pid &&
		    strncmp(rows[i].r_st->name, sc->s_sel_name, USLAB_NAME_MAX) == 0 &&
		    row_occurrence(&rows[i]) == sc->s_sel_occ) {
			sc->s_sel = (long)i;
			return;
		}
	if (n == 0) {
		sc->s_sel = -1;
		return;
	}
	select_row(sc, rows, sc->s_sel < (long)n ? sc->s_sel : (long)n - 1);
}

/* The status line: a message, or who is watched and how. */
static void draw_status(struct screen *sc, int y)
{
	char buf[TOP_LINE_MAX];
	const struct watch *w = sc->s_w;

	if (sc->s_msg[0] != '\0') {
		snprintf(buf, sizeof buf, " %s", sc->s_msg);
		put_line(y, buf, A_BOLD);
		return;
	}
	if (w->w_all)
		snprintf(buf, sizeof buf, " uslabtop: all processes (%zu)  sort: %s  ? keys",
		         w->w_n, top_sort_short(sc->s_sort));
	else if (w->w_n == 1)
		snprintf(buf, sizeof buf, " uslabtop: pid %ld %s  mode: %s  sort: %s  ? keys",
		         (long)w->w_procs[0].tp_pid, w->w_procs[0].tp_comm,
		         w->w_procs[0].tp_snap.mode, top_sort_short(sc->s_sort));
	else
		snprintf(buf, sizeof buf, " uslabtop");
	put_line(y, buf, 0);
}

/* ---- Main view ---- */

static void draw_main(struct screen *sc, struct top_row *rows, size_t n)
{
	char line[TOP_LINE_MAX];
	struct top_totals t;
	int namew = top_name_width(rows, n, true);
	int page = LINES - MAIN_FIRST_ROW;

	top_totals(rows, n, &t);
	for (int i = 0; i < 5; i++) {
		top_format_summary(line, sizeof line, &t, i);
		put_line(i, line, 0);
	}
	draw_status(sc, 5);
	top_format_header(line, sizeof line, namew, true);
	put_line(6, line, A_REVERSE);

	if (page < 1)
		page = 1;
	if (sc->s_sel >= 0) {
		if (sc->s_sel < sc->s_top)
			sc->s_top = sc->s_sel;
		if (sc->s_sel >= sc->s_top + page)
			sc->s_top = sc->s_sel - page + 1;
	}
	if (sc->s_top > (long)n - page)
		sc->s_top = (long)n - page;
	if (sc->s_top < 0)
		sc->s_top = 0;
	for (int y = MAIN_FIRST_ROW; y < LINES; y++) {
		long i = sc->s_top + (y - MAIN_FIRST_ROW);
		if (i >= (long)n) {
			move(y, 0);
			clrtoeol();
			continue;
		}
		top_format_row(line, sizeof line, &rows[i], namew, true);
		put_line(y, line, i == sc->s_sel ? A_REVERSE : 0);
	}
}

/* ---- Detail view ---- */

/* A percentage of @part in @whole, or "-" when @whole is 0. */
static const char *pct_str(char *buf, size_t len, double part, double whole)
{
	if (whole > 0)
		snprintf(buf, len, "%.1f%%", 100.0 * part / whole);
	else
		snprintf(buf, len, "-");
	return buf;
}

static const char *rate_str(char *buf, size_t len, double r)
{
	if (r < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.0f/s", r);
	return buf;
}

static void draw_detail(struct screen *sc, const struct top_row *r)
{
	char line[TOP_LINE_MAX], a[32], b[32], c[32];
	const struct top_proc *p = r->r_proc;
	const struct uslab_stats *st = r->r_st;
	size_t i = r->r_index;
	int y = 0;

	erase();
	snprintf(line, sizeof line, " Cache %s  (pid %ld %s, mode %s)", r->r_label, (long)p->tp_pid,
	         p->tp_comm, p->tp_snap.mode);
	put_line(y++, line, A_BOLD);
	draw_status(sc, y++);
	snprintf(line, sizeof line,
	         " Object size      : %" PRIu64 " B, slot %" PRIu64 " B, align %" PRIu64
	         ", flags 0x%" PRIx32,
	         st->obj_size, st->slot_size, st->align, st->flags);
	put_line(y++, line, 0);
	snprintf(line, sizeof line,
	         " Objects          : %" PRIu64 " active / %" PRIu64 " total (%s)", st->active_objs,
	         st->total_objs,
	         pct_str(a, sizeof a, (double)st->active_objs, (double)st->total_objs));
	put_line(y++, line, 0);
	snprintf(line, sizeof line,
	         " Slabs            : %" PRIu64 " active / %" PRIu64 " total, %" PRIu64
	         "K each, %" PRIu32 " objects per slab",
	         st->active_slabs, st->total_slabs, st->slab_size / 1024, st->objs_per_slab);
	put_line(y++, line, 0);
	snprintf(line, sizeof line, " Slabs over time  : %" PRIu64 " created, %" PRIu64 " released",
	         st->slabs_created, st->slabs_released);
	put_line(y++, line, 0);
	snprintf(line, sizeof line, " Memory           : %.2fK active / %.2fK in slabs",
	         (double)st->bytes_active / 1024.0, (double)st->bytes_total / 1024.0);
	put_line(y++, line, 0);
	y++;
	double fa = p->tp_fast_alloc_ival ? p->tp_fast_alloc_ival[i] : -1;
	double ff = p->tp_fast_free_ival ? p->tp_fast_free_ival[i] : -1;
	snprintf(line, sizeof line,
	         " Allocations      : %" PRIu64 " (%s), fast path %s overall, %s last interval;"
	         " %" PRIu64 " failed",
	         st->allocs, rate_str(a, sizeof a, r->r_alloc_rate),
	         pct_str(b, sizeof b, (double)st->fast_allocs, (double)st->allocs),
	         fa < 0 ? "-" : pct_str(c, sizeof c, fa, 1), st->alloc_failures);
	put_line(y++, line, 0);
	snprintf(line, sizeof line,
	         " Frees            : %" PRIu64 " (%s), fast path %s overall, %s last interval",
	         st->frees, rate_str(a, sizeof a, r->r_free_rate),
	         pct_str(b, sizeof b, (double)st->fast_frees, (double)st->frees),
	         ff < 0 ? "-" : pct_str(c, sizeof c, ff, 1));
	put_line(y++, line, 0);
	snprintf(line, sizeof line,
	         " Depot            : %" PRIu64 " full magazines (%" PRIu64 " objects), %" PRIu64
	         " empty; magazine size %" PRIu32 " (max %" PRIu32 "), %" PRIu64 " contended",
	         st->depot_full, st->depot_objs, st->depot_empty, st->mag_size, st->mag_max,
	         st->depot_contended);
	put_line(y++, line, 0);
	uint32_t cap = 2 * st->mag_size;
	snprintf(line, sizeof line,
	         " Per-CPU magazines: %" PRIu64 " objects on %" PRIu32 " CPUs, %" PRIu32
	         " rounds each",
	         st->pcpu_objs, p->tp_snap.ncpus, cap);
	put_line(y++, line, 0);
	y++;
	put_line(y++, "   CPU   OBJS  FILL", A_REVERSE);

	/* One CPU per line, in as many columns of 40 as the width allows. */
	uint32_t ncpus = p->tp_snap.cpu_objs != NULL ? p->tp_snap.ncpus : 0;
	int rows_avail = LINES - y, cols = COLS / 40 > 0 ? COLS / 40 : 1;
	for (uint32_t cpu = 0; cpu < ncpus && rows_avail > 0; cpu++) {
		int col = (int)(cpu / (uint32_t)rows_avail),
		    row = (int)(cpu % (uint32_t)rows_avail);
		if (col >= cols)
			break;
		uint64_t objs = p->tp_snap.cpu_objs[i * ncpus + cpu];
		char bar[21];
		int fill = cap ? (int)(objs >= cap ? 20 : objs * 20 / cap) : 0;
		memset(bar, '#', (size_t)fill);
		memset(bar + fill, ' ', (size_t)(20 - fill));
		bar[20] = '\0';
		snprintf(line, sizeof line, " %5" PRIu32 " %6" PRIu64 "  [%s] %6s", cpu, objs, bar,
		         pct_str(a, sizeof a, (double)objs, (double)cap));
		mvaddnstr(y + row, col * 40, line, COLS - col * 40);
	}
}

/* ---- Help ---- */

static void draw_help(void)
{
	static const char *const text[] = {
		" uslabtop keys",
		"",
		" a b c l v n o p s u  sort by active objects, objects per slab, cache size,",
		"                      slabs, active slabs, name, objects, pages per slab,",
		"                      object size, utilization (as slabtop)",
		" Up Down PgUp PgDn    select a cache (Home/End: first/last)",
		" Enter, Right         detail view of the selected cache",
		" Esc, Left            back to the table",
		" w                    choose another process, or all of them",
		" Space                refresh now",
		" q                    quit",
		"",
		" Any key returns.",
	};
	erase();
	for (size_t i = 0; i < sizeof text / sizeof text[0]; i++)
		put_line((int)i, text[i], i == 0 ? A_BOLD : 0);
}

/* ---- Process list ---- */

/* Re-read the process list (empty when it cannot be read); the selection
 * stays in range. */
static void list_reload(struct screen *sc)
{
	free(sc->s_procs);
	sc->s_nprocs = 0;
	sc->s_procs = watch_list_procs(&sc->s_nprocs);
	if (sc->s_list_sel > sc->s_nprocs)
		sc->s_list_sel = sc->s_nprocs;
}

static void draw_list(struct screen *sc)
{
	char line[TOP_LINE_MAX], comm[32];
	int y = 0;

	erase();
	put_line(y++, " uslabtop: processes publishing uslab statistics", A_BOLD);
	if (sc->s_msg[0] != '\0')
		put_line(y, sc->s_msg, A_BOLD);
	y++;
	put_line(y++, "      PID COMMAND", A_REVERSE);
	if (sc->s_nprocs == 0)
		put_line(y++, "   (none yet; waiting for a uslab program to start)", 0);
	for (int i = 0; i < sc->s_nprocs && y < LINES - 2; i++) {
		top_sanitize(comm, sizeof comm, sc->s_procs[i].comm);
		snprintf(line, sizeof line, " %c %6ld %s", sc->s_list_sel == i ? '>' : ' ',
		         (long)sc->s_procs[i].pid, comm);
		put_line(y++, line, sc->s_list_sel == i ? A_REVERSE : 0);
	}
	snprintf(line, sizeof line, " %c    all processes",
	         sc->s_list_sel == sc->s_nprocs ? '>' : ' ');
	put_line(y++, line, sc->s_list_sel == sc->s_nprocs ? A_REVERSE : 0);
	put_line(LINES - 1, " Up/Down select, Enter watch, a all, q quit", 0);
}

/* Start watching the list's selection (or all). Returns 0, or -1 with a
 * message when the process's segment cannot be opened. */
static int list_choose(struct screen *sc, bool all)
{
	if (sc->s_own_w)
		watch_fini(&sc->s_wbuf);
	all = all || sc->s_list_sel >= sc->s_nprocs;
	watch_init(&sc->s_wbuf, all);
	sc->s_own_w = true;
	sc->s_w = &sc->s_wbuf;
	if (!all) {
		const struct uslab_proc *p = &sc->s_procs[sc->s_list_sel];
		if (watch_add(&sc->s_wbuf, p->pid, p->comm) != 0) {
			snprintf(sc->s_msg, sizeof sc->s_msg, " pid %ld: %s", (long)p->pid,
			         strerror(errno));
			return -1;
		}
	}
	sc->s_sel = -1;
	sc->s_top = 0;
	sc->s_view = VIEW_MAIN;
	return 0;
}

/* ---- Keys ---- */

/* Move the selection by @d rows (creating it at the first row). */
static void move_sel(struct screen *sc, const struct top_row *rows, size_t n, long d)
{
	if (n == 0)
		return;
	long i = sc->s_sel < 0 ? 0 : sc->s_sel + d;
	if (i < 0)
		i = 0;
	if (i >= (long)n)
		i = (long)n - 1;
	select_row(sc, rows, i);
}

/* Handle @key in the main or detail view. Returns false to quit. */
static bool key_table(struct screen *sc, int key, const struct top_row *rows, size_t n)
{
	long page = LINES - MAIN_FIRST_ROW > 1 ? LINES - MAIN_FIRST_ROW : 1;

	switch (key) {
	case KEY_UP:
	case 'k':
		move_sel(sc, rows, n, -1);
		return true;
	case KEY_DOWN:
	case 'j':
		move_sel(sc, rows, n, 1);
		return true;
	case KEY_PPAGE:
		move_sel(sc, rows, n, -page);
		return true;
	case KEY_NPAGE:
		move_sel(sc, rows, n, page);
		return true;
	case KEY_HOME:
		move_sel(sc, rows, n, -(long)n);
		return true;
	case KEY_END:
		move_sel(sc, rows, n, (long)n);
		return true;
	case '\n':
	case '\r':
	case KEY_ENTER:
	case KEY_RIGHT:
		if (sc->s_view == VIEW_DETAIL) {
			if (key == KEY_RIGHT)
				return true;
			sc->s_view = VIEW_MAIN;
			return true;
		}
		if (sc->s_sel < 0)
			move_sel(sc, rows, n, 0);
		if (sc->s_sel >= 0)
			sc->s_view = VIEW_DETAIL;
		return true;
	case 27:
	case KEY_LEFT:
	case KEY_BACKSPACE:
	case 127:
		sc->s_view = VIEW_MAIN;
		return true;
	case 'w':
	case 'W':
		list_reload(sc);
		sc->s_list_sel = 0;
		sc->s_view = VIEW_LIST;
		return true;
	case '?':
	case 'h':
	case 'H':
		sc->s_back = sc->s_view;
		sc->s_view = VIEW_HELP;
		return true;
	default:
		if (top_sort_key(key)) {
			sc->s_sort = top_sort_key(key);
			return true;
		}
		return true;
	}
}

/* ---- The loop ---- */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

/* Draw the current view; returns the rows (for the keys) in *prows. */
static struct top_row *draw(struct screen *sc, size_t *pn)
{
	struct top_row *rows = NULL;
	size_t n = 0;

	*pn = 0;
	if (sc->s_view == VIEW_LIST) {
		draw_list(sc);
	} else if (sc->s_view == VIEW_HELP) {
		draw_help();
	} else {
		rows = watch_rows(sc->s_w, &n, sc->s_sort);
		if (rows == NULL)
			return NULL;
		follow_selection(sc, rows, n);
		if (sc->s_view == VIEW_DETAIL && sc->s_sel >= 0)
			draw_detail(sc, &rows[sc->s_sel]);
		else
			draw_main(sc, rows, n);
	}
	refresh();
	*pn = n;
	return rows;
}

int top_screen_run(const struct top_opts *o, struct watch *w)
{
	struct screen sc = {.s_opts = o, .s_w = w, .s_sort = o->o_sort, .s_sel = -1};
	struct sigaction sa = {.sa_handler = on_signal};
	bool running = true;

	if (w == NULL) {
		list_reload(&sc);
		if (sc.s_nprocs == 1)
			(void)list_choose(&sc, false);
		else
			sc.s_view = VIEW_LIST;
	} else {
		sc.s_view = VIEW_MAIN;
	}
	if (initscr() == NULL)
		return -1;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	set_escdelay(25);
	curs_set(0);

	double next = 0;
	while (running && !got_signal) {
		double t = now_secs();
		if (t >= next) {
			if (sc.s_view == VIEW_LIST) {
				list_reload(&sc);
			} else if (sc.s_w != NULL) {
				char msg[64];
				if (watch_refresh(sc.s_w, msg, sizeof msg) == 0 && msg[0] != '\0')
					snprintf(sc.s_msg, sizeof sc.s_msg, "%.63s%s", msg,
					         sc.s_w->w_all
					                 ? ""
					                 : " (its last reading is shown); "
					                   "q quits, w picks another process");
			}
			next = t + o->o_delay;
		}
		size_t n;
		struct top_row *rows = draw(&sc, &n);
		double wait = next - now_secs();
		timeout(wait > 0 ? (int)(wait * 1000) + 1 : 0);
		int key = getch();
		if (key == ERR || key == KEY_RESIZE) {
			free(rows);
			continue;
		}
		bool exited = !sc.s_w ||
		              (!sc.s_w->w_all && sc.s_w->w_n == 1 && sc.s_w->w_procs[0].tp_exited);
		if (!exited)
			sc.s_msg[0] = '\0';
		if (key == 'q' || key == 'Q') {
			running = false;
		} else if (key == ' ') {
			next = 0;
		} else if (sc.s_view == VIEW_HELP) {
			sc.s_view = sc.s_back;
		} else if (sc.s_view == VIEW_LIST) {
			if (key == KEY_UP || key == 'k')
				sc.s_list_sel -= sc.s_list_sel > 0;
			else if (key == KEY_DOWN || key == 'j')
				sc.s_list_sel += sc.s_list_sel < sc.s_nprocs;
			else if (key == '\n' || key == '\r' || key == KEY_ENTER || key == 'a' ||
			         key == 'A')
				next = list_choose(&sc, key == 'a' || key == 'A') == 0 ? 0 : next;
			else if (key == 27 && sc.s_w != NULL)
				sc.s_view = VIEW_MAIN;
		} else {
			running = key_table(&sc, key, rows, n);
			if (sc.s_view == VIEW_LIST)
				next = 0;
		}
		free(rows);
	}
	endwin();
	if (sc.s_own_w)
		watch_fini(&sc.s_wbuf);
	free(sc.s_procs);
	return 0;
}
