/* SPDX-License-Identifier: MIT */
/* The text protocol: classic commands and the meta commands (mg, ms, md, ma, mn). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc.h"

/*
 * Design
 *
 * text_feed takes whole requests from the front of the connection's
 * input: a line, and for a storage command its data block too. A storage
 * command whose data has not all arrived is left in the buffer (c->want
 * says how much it needs) and parsed again when more came; one too large
 * for -I is answered at once and its data swallowed as it arrives, so it
 * is never buffered. A line of more than MC_LINE_MAX bytes without a
 * newline closes the connection (a get with many keys may be longer, up
 * to TEXT_GET_LINE_MAX: it is parsed in place). Answers go through reply(), which honours noreply.
 * Values are copied into the output inside item_get's callback.
 */

#define TEXT_MAX_TOKENS 24
#define TEXT_GET_LINE_MAX (2u << 20)

struct tok {
	char *s;
	size_t n;
};

/* Split @line (NUL-terminated) at spaces; at most @max tokens. */
static int tokenize(char *line, struct tok *t, int max)
{
	int n = 0;
	char *p = line;

	while (*p != '\0' && n < max) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		t[n].s = p;
		while (*p != ' ' && *p != '\0')
			p++;
		t[n].n = (size_t)(p - t[n].s);
		if (*p == ' ')
			*p++ = '\0';
		n++;
	}
	return n;
}

static bool tok_is(const struct tok *t, const char *s)
{
	return t->n == strlen(s) && memcmp(t->s, s, t->n) == 0;
}

static bool tok_u64(const struct tok *t, uint64_t *v)
{
	char *end;

	if (t->n == 0 || t->s[0] == '-' || t->n > 20)
		return false;
	errno = 0;
	unsigned long long x = strtoull(t->s, &end, 10);
	if (errno != 0 || end != t->s + t->n)
		return false;
	*v = x;
	return true;
}

static bool tok_i64(const struct tok *t, int64_t *v)
{
	char *end;

	if (t->n == 0 || t->n > 20)
		return false;
	errno = 0;
	long long x = strtoll(t->s, &end, 10);
	if (errno != 0 || end != t->s + t->n)
		return false;
	*v = x;
	return true;
}

static bool tok_u32(const struct tok *t, uint32_t *v)
{
	uint64_t x;

	if (!tok_u64(t, &x) || x > UINT32_MAX)
		return false;
	*v = (uint32_t)x;
	return true;
}

static void reply(struct conn *c, const char *s)
{
	if (!c->noreply)
		out_str(c, s);
}

static bool key_ok(const struct tok *t)
{
	return t->n > 0 && t->n <= MC_KEY_MAX;
}

/* ---- get, gets, gat, gats ---- */

struct get_ctx {
	struct conn *c;
	bool cas;
};

static void get_out(void *arg, const struct item_view *v)
{
	struct get_ctx *g = arg;

	if (g->cas)
		out_printf(g->c, "VALUE %.*s %u %u %llu\r\n", (int)v->nkey, v->key, v->flags,
		           v->nbytes, (unsigned long long)v->cas);
	else
		out_printf(g->c, "VALUE %.*s %u %u\r\n", (int)v->nkey, v->key, v->flags, v->nbytes);
	out_add(g->c, v->value, v->nbytes);
	out_add(g->c, "\r\n", 2);
}

/* get, gets, gat, gats: "<cmd> [exptime] key..." (@line NUL-terminated;
 * any number of keys). */
static void cmd_get_line(struct conn *c, char *line, bool cas, bool touch)
{
	struct get_ctx g = {.c = c, .cas = cas};
	struct mc_tstats *ts = mc_tstats();
	uint32_t exptime = 0;
	char *p = strchr(line, ' ');
	int keys = 0;

	if (touch) {
		struct tok e;
		int64_t v;
		while (p != NULL && *p == ' ')
			p++;
		e.s = p;
		while (p != NULL && *p != ' ' && *p != '\0')
			p++;
		e.n = p != NULL ? (size_t)(p - e.s) : 0;
		if (e.n == 0 || !tok_i64(&e, &v)) {
			out_str(c, "CLIENT_ERROR invalid exptime argument\r\n");
			return;
		}
		exptime = mc_exptime(v);
	}
	/* Check every key first: memcached answers a bad one with an error alone. */
	for (char *q = p; q != NULL && *q != '\0';) {
		while (*q == ' ')
			q++;
		char *k = q;
		while (*q != ' ' && *q != '\0')
			q++;
		if (q - k > MC_KEY_MAX) {
			out_str(c, "CLIENT_ERROR bad command line format\r\n");
			return;
		}
		keys += q > k;
	}
	if (keys == 0) {
		out_str(c, "ERROR\r\n");
		return;
	}
	while (p != NULL && *p != '\0') {
		while (*p == ' ')
			p++;
		char *k = p;
		while (*p != ' ' && *p != '\0')
			p++;
		if (p == k)
			break;
		bool hit = item_get(k, (size_t)(p - k), touch, exptime, get_out, &g);
		if (touch) {
			ts->touch_cmds++;
			hit ? ts->touch_hits++ : ts->touch_misses++;
		}
		ts->get_cmds++;
		hit ? ts->get_hits++ : ts->get_misses++;
	}
	out_str(c, "END\r\n");
}

/* ---- Storage ---- */

/* A storage command's line; @line_len with its "\r\n". Returns what was
 * taken (0: wait for more). */
static long cmd_store(struct conn *c, struct tok *t, int nt, enum mc_store op, char *buf,
                      size_t len, size_t line_len)
{
	struct mc_tstats *ts = mc_tstats();
	uint32_t flags;
	int64_t exptime;
	uint64_t bytes, cas = 0;
	int need = op == MC_CAS ? 6 : 5;

	c->noreply = nt > need && tok_is(&t[nt - 1], "noreply");
	if (nt < need || nt > need + 1 || !key_ok(&t[1]) || !tok_u32(&t[2], &flags) ||
	    !tok_i64(&t[3], &exptime) || !tok_u64(&t[4], &bytes) ||
	    (op == MC_CAS && !tok_u64(&t[5], &cas)) || (nt == need + 1 && !c->noreply)) {
		c->noreply = false;
		out_str(c, "CLIENT_ERROR bad command line format\r\n");
		/* memcached swallows what looks like the data: it cannot know */
		return (long)line_len;
	}
	if (bytes > mc_set.item_max || bytes > UINT32_MAX - 2) {
		ts->set_cmds++;
		reply(c, "SERVER_ERROR object too large for cache\r\n");
		c->noreply = false;
		c->swallow = bytes + 2;
		if (op == MC_SET) /* no stale value, as memcached */
			(void)item_delete(t[1].s, t[1].n, 0);
		return (long)line_len;
	}
	if (len < line_len + bytes + 2) {
		c->want = line_len + (size_t)bytes + 2;
		c->noreply = false;
		return 0;
	}
	ts->set_cmds++;
	char *data = buf + line_len;
	if (data[bytes] != '\r' || data[bytes + 1] != '\n') {
		c->noreply = false;
		out_str(c, "CLIENT_ERROR bad data chunk\r\n");
		return (long)(line_len + bytes + 2);
	}
	struct item *it = item_alloc(t[1].s, t[1].n, flags, mc_exptime(exptime), (size_t)bytes);
	if (it == NULL) {
		reply(c, errno == E2BIG ? "SERVER_ERROR object too large for cache\r\n"
		                        : "SERVER_ERROR out of memory storing object\r\n");
		c->noreply = false;
		if (op == MC_SET) /* no stale value, as memcached */
			(void)item_delete(t[1].s, t[1].n, 0);
		return (long)(line_len + bytes + 2);
	}
	memcpy(item_value(it), data, (size_t)bytes);
	enum mc_res r = item_store(it, op, cas, NULL);
	if (op == MC_CAS)
		r == MC_STORED   ? ts->cas_hits++
		: r == MC_EXISTS ? ts->cas_badval++
				 : ts->cas_misses++;
	switch (r) {
	case MC_STORED:
		reply(c, "STORED\r\n");
		break;
	case MC_EXISTS:
		reply(c, "EXISTS\r\n");
		break;
	case MC_NOT_FOUND:
		reply(c, "NOT_FOUND\r\n");
		break;
	case MC_TOO_LARGE:
		reply(c, "SERVER_ERROR object too large for cache\r\n");
		break;
	case MC_NO_MEMORY:
		reply(c, "SERVER_ERROR out of memory storing object\r\n");
		break;
	default:
		reply(c, "NOT_STORED\r\n");
		break;
	}
	c->noreply = false;
	return (long)(line_len + bytes + 2);
}

/* ---- delete, incr/decr, touch ---- */

static void cmd_delete(struct conn *c, struct tok *t, int nt)
{
	struct mc_tstats *ts = mc_tstats();

	c->noreply = nt > 2 && tok_is(&t[nt - 1], "noreply");
	int args = nt - (c->noreply ? 1 : 0);
	if (args < 2 || args > 3 || !key_ok(&t[1]) || (args == 3 && !tok_is(&t[2], "0"))) {
		c->noreply = false;
		out_str(c,
		        "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
		return;
	}
	enum mc_res r = item_delete(t[1].s, t[1].n, 0);
	r == MC_DELETED ? ts->delete_hits++ : ts->delete_misses++;
	reply(c, r == MC_DELETED ? "DELETED\r\n" : "NOT_FOUND\r\n");
}

static void cmd_delta(struct conn *c, struct tok *t, int nt, bool incr)
{
	struct mc_tstats *ts = mc_tstats();
	uint64_t delta, v;

	c->noreply = nt == 4 && tok_is(&t[3], "noreply");
	if ((nt != 3 && !(nt == 4 && c->noreply)) || !key_ok(&t[1])) {
		c->noreply = false;
		out_str(c, "ERROR\r\n");
		return;
	}
	if (!tok_u64(&t[2], &delta)) {
		c->noreply = false;
		out_str(c, "CLIENT_ERROR invalid numeric delta argument\r\n");
		return;
	}
	enum mc_res r = item_delta(t[1].s, t[1].n, incr, delta, false, 0, 0, 0, &v, NULL);
	if (incr)
		r == MC_STORED ? ts->incr_hits++ : ts->incr_misses++;
	else
		r == MC_STORED ? ts->decr_hits++ : ts->decr_misses++;
	if (r == MC_STORED) {
		if (!c->noreply)
			out_printf(c, "%llu\r\n", (unsigned long long)v);
	} else if (r == MC_NOT_FOUND) {
		reply(c, "NOT_FOUND\r\n");
	} else if (r == MC_NON_NUMERIC) {
		reply(c, "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
	} else {
		reply(c, "SERVER_ERROR out of memory\r\n");
	}
}

static void cmd_touch(struct conn *c, struct tok *t, int nt)
{
	struct mc_tstats *ts = mc_tstats();
	int64_t e;

	c->noreply = nt == 4 && tok_is(&t[3], "noreply");
	if ((nt != 3 && !(nt == 4 && c->noreply)) || !key_ok(&t[1])) {
		c->noreply = false;
		out_str(c, "ERROR\r\n");
		return;
	}
	if (!tok_i64(&t[2], &e)) {
		c->noreply = false;
		out_str(c, "CLIENT_ERROR invalid exptime argument\r\n");
		return;
	}
	ts->touch_cmds++;
	enum mc_res r = item_touch(t[1].s, t[1].n, mc_exptime(e));
	r == MC_TOUCHED ? ts->touch_hits++ : ts->touch_misses++;
	reply(c, r == MC_TOUCHED ? "TOUCHED\r\n" : "NOT_FOUND\r\n");
}

/* ---- flush_all, verbosity, stats ---- */

static void cmd_flush(struct conn *c, struct tok *t, int nt)
{
	int64_t delay = 0;

	c->noreply = nt > 1 && tok_is(&t[nt - 1], "noreply");
	int args = nt - (c->noreply ? 1 : 0);
	if (args > 2 || (args == 2 && !tok_i64(&t[1], &delay))) {
		c->noreply = false;
		out_str(c, "CLIENT_ERROR bad command line format\r\n");
		return;
	}
	mc_tstats()->flush_cmds++;
	uint32_t when = delay <= 0 ? 0 : mc_exptime(delay);
	item_flush(when > mc_now ? when - mc_now : 0);
	reply(c, "OK\r\n");
}

static void cmd_stats(struct conn *c, struct tok *t, int nt)
{
	if (nt == 1)
		stats_general(c);
	else if (tok_is(&t[1], "settings"))
		stats_settings(c);
	else if (tok_is(&t[1], "slabs"))
		stats_slabs(c);
	else if (tok_is(&t[1], "items"))
		stats_items(c);
	else if (tok_is(&t[1], "conns"))
		stats_conns(c);
	else if (tok_is(&t[1], "uslab"))
		stats_uslab(c);
	else if (tok_is(&t[1], "reset")) {
		stats_reset();
		out_str(c, "RESET\r\n");
		return;
	} else if (tok_is(&t[1], "detail") || tok_is(&t[1], "sizes")) {
		out_str(c, "END\r\n");
		return;
	} else {
		out_str(c, "ERROR\r\n");
		return;
	}
	out_str(c, "END\r\n");
}

/* ---- Meta commands ---- */

/* A meta flag with its token (the letter, then an argument). */
static const struct tok *meta_flag(const struct tok *t, int nt, int from, char f)
{
	for (int i = from; i < nt; i++)
		if (t[i].n > 0 && t[i].s[0] == f)
			return &t[i];
	return NULL;
}

/* The flags a meta answer returns: O (opaque), k (key), c, f, s, t. */
static void meta_ret(struct conn *c, const struct tok *t, int nt, int from,
                     const struct item_view *v, uint64_t cas)
{
	for (int i = from; i < nt; i++) {
		char f = t[i].n ? t[i].s[0] : 0;
		if (f == 'O')
			out_printf(c, " %.*s", (int)t[i].n, t[i].s);
		else if (f == 'k' && v != NULL)
			out_printf(c, " k%.*s", (int)v->nkey, v->key);
		else if (f == 'c')
			out_printf(c, " c%llu", (unsigned long long)(v != NULL ? v->cas : cas));
		else if (f == 'f' && v != NULL)
			out_printf(c, " f%u", v->flags);
		else if (f == 's' && v != NULL)
			out_printf(c, " s%u", v->nbytes);
		else if (f == 't' && v != NULL)
			out_printf(c, " t%d", v->exptime == 0 ? -1 : (int)(v->exptime - mc_now));
	}
}

struct mg_ctx {
	struct conn *c;
	struct tok *t;
	int nt;
};

static void mg_out(void *arg, const struct item_view *v)
{
	struct mg_ctx *m = arg;
	bool val = meta_flag(m->t, m->nt, 2, 'v') != NULL;

	if (val)
		out_printf(m->c, "VA %u", v->nbytes);
	else
		out_str(m->c, "HD");
	meta_ret(m->c, m->t, m->nt, 2, v, 0);
	out_add(m->c, "\r\n", 2);
	if (val) {
		out_add(m->c, v->value, v->nbytes);
		out_add(m->c, "\r\n", 2);
	}
}

static void meta_get(struct conn *c, struct tok *t, int nt)
{
	struct mg_ctx m = {c, t, nt};
	const struct tok *T = meta_flag(t, nt, 2, 'T');
	int64_t e = 0;
	struct mc_tstats *ts = mc_tstats();

	if (T != NULL) {
		struct tok x = {T->s + 1, T->n - 1};
		if (!tok_i64(&x, &e)) {
			out_str(c, "CLIENT_ERROR bad token in command line format\r\n");
			return;
		}
	}
	bool hit = item_get(t[1].s, t[1].n, T != NULL, mc_exptime(e), mg_out, &m);
	ts->get_cmds++;
	hit ? ts->get_hits++ : ts->get_misses++;
	if (!hit && meta_flag(t, nt, 2, 'q') == NULL) {
		out_str(c, "EN");
		meta_ret(c, t, nt, 2, NULL, 0);
		out_add(c, "\r\n", 2);
	}
}

static long meta_set(struct conn *c, struct tok *t, int nt, char *buf, size_t len, size_t line_len)
{
	uint64_t bytes, cas = 0;
	uint32_t flags = 0;
	int64_t e = 0;
	enum mc_store op = MC_SET;

	if (nt < 3 || !tok_u64(&t[2], &bytes)) {
		out_str(c, "CLIENT_ERROR bad command line format\r\n");
		return (long)line_len;
	}
	if (bytes > mc_set.item_max) {
		out_str(c, "SERVER_ERROR object too large for cache\r\n");
		c->swallow = bytes + 2;
		return (long)line_len;
	}
	if (len < line_len + bytes + 2) {
		c->want = line_len + (size_t)bytes + 2;
		return 0;
	}
	long used = (long)(line_len + bytes + 2);
	char *data = buf + line_len;
	if (data[bytes] != '\r' || data[bytes + 1] != '\n') {
		out_str(c, "CLIENT_ERROR bad data chunk\r\n");
		return used;
	}
	for (int i = 3; i < nt; i++) {
		struct tok x = {t[i].s + 1, t[i].n - 1};
		bool ok = true;
		switch (t[i].n ? t[i].s[0] : 0) {
		case 'F':
			ok = tok_u32(&x, &flags);
			break;
		case 'T':
			ok = tok_i64(&x, &e);
			break;
		case 'C':
			ok = tok_u64(&x, &cas);
			op = MC_CAS;
			break;
		case 'M':
			if (x.n != 1) {
				ok = false;
				break;
			}
			switch (x.s[0]) {
			case 'E':
			case 'e':
				op = MC_ADD;
				break;
			case 'A':
			case 'a':
				op = MC_APPEND;
				break;
			case 'P':
			case 'p':
				op = MC_PREPEND;
				break;
			case 'R':
			case 'r':
				op = MC_REPLACE;
				break;
			case 'S':
			case 's':
				break;
			default:
				ok = false;
			}
			break;
		default:
			break;
		}
		if (!ok) {
			out_str(c, "CLIENT_ERROR bad token in command line format\r\n");
			return used;
		}
	}
	mc_tstats()->set_cmds++;
	struct item *it = item_alloc(t[1].s, t[1].n, flags, mc_exptime(e), (size_t)bytes);
	if (it == NULL) {
		out_str(c, errno == E2BIG ? "SERVER_ERROR object too large for cache\r\n"
		                          : "SERVER_ERROR out of memory storing object\r\n");
		return used;
	}
	memcpy(item_value(it), data, (size_t)bytes);
	uint64_t newcas = 0;
	if (op == MC_CAS && cas == 0)
		op = MC_SET;
	enum mc_res r = item_store(it, op, cas, &newcas);
	bool quiet = meta_flag(t, nt, 3, 'q') != NULL;
	const char *code = r == MC_STORED      ? "HD"
	                   : r == MC_EXISTS    ? "EX"
	                   : r == MC_NOT_FOUND ? "NF"
	                                       : "NS";
	if (r == MC_TOO_LARGE || r == MC_NO_MEMORY) {
		out_str(c, "SERVER_ERROR out of memory storing object\r\n");
		return used;
	}
	if (quiet && r == MC_STORED)
		return used;
	out_str(c, code);
	struct item_view v = {.key = t[1].s, .nkey = (uint32_t)t[1].n, .cas = newcas};
	for (int i = 3; i < nt; i++) {
		char f = t[i].n ? t[i].s[0] : 0;
		if (f == 'O')
			out_printf(c, " %.*s", (int)t[i].n, t[i].s);
		else if (f == 'k')
			out_printf(c, " k%.*s", (int)v.nkey, v.key);
		else if (f == 'c')
			out_printf(c, " c%llu", (unsigned long long)newcas);
	}
	out_add(c, "\r\n", 2);
	return used;
}

static void meta_delete(struct conn *c, struct tok *t, int nt)
{
	uint64_t cas = 0;
	const struct tok *C = meta_flag(t, nt, 2, 'C');

	if (C != NULL) {
		struct tok x = {C->s + 1, C->n - 1};
		if (!tok_u64(&x, &cas)) {
			out_str(c, "CLIENT_ERROR bad token in command line format\r\n");
			return;
		}
	}
	enum mc_res r = item_delete(t[1].s, t[1].n, cas);
	struct mc_tstats *ts = mc_tstats();
	r == MC_DELETED ? ts->delete_hits++ : ts->delete_misses++;
	if (r == MC_DELETED && meta_flag(t, nt, 2, 'q') != NULL)
		return;
	out_str(c, r == MC_DELETED ? "HD" : r == MC_EXISTS ? "EX" : "NF");
	for (int i = 2; i < nt; i++) {
		if (t[i].n && t[i].s[0] == 'O')
			out_printf(c, " %.*s", (int)t[i].n, t[i].s);
		else if (t[i].n && t[i].s[0] == 'k')
			out_printf(c, " k%.*s", (int)t[1].n, t[1].s);
	}
	out_add(c, "\r\n", 2);
}

static void meta_arith(struct conn *c, struct tok *t, int nt)
{
	uint64_t delta = 1, initial = 0, cas = 0, v = 0, newcas = 0;
	int64_t viv = -1, e = 0;
	bool incr = true, touch = false;

	for (int i = 2; i < nt; i++) {
		struct tok x = {t[i].s + 1, t[i].n - 1};
		bool ok = true;
		switch (t[i].n ? t[i].s[0] : 0) {
		case 'D':
			ok = tok_u64(&x, &delta);
			break;
		case 'J':
			ok = tok_u64(&x, &initial);
			break;
		case 'N':
			ok = tok_i64(&x, &viv);
			break;
		case 'T':
			ok = tok_i64(&x, &e);
			touch = true;
			break;
		case 'C':
			ok = tok_u64(&x, &cas);
			break;
		case 'M':
			ok = x.n == 1 && strchr("IiDd+-", x.s[0]) != NULL;
			incr = ok && strchr("Ii+", x.s[0]) != NULL;
			break;
		default:
			break;
		}
		if (!ok) {
			out_str(c, "CLIENT_ERROR bad token in command line format\r\n");
			return;
		}
	}
	(void)touch;
	enum mc_res r = item_delta(t[1].s, t[1].n, incr, delta, viv >= 0, initial,
	                           viv >= 0 ? mc_exptime(viv) : 0, cas, &v, &newcas);
	const char *code = r == MC_STORED      ? "HD"
	                   : r == MC_NOT_FOUND ? "NF"
	                   : r == MC_EXISTS    ? "EX"
	                                       : "NS";
	if (r == MC_NON_NUMERIC) {
		out_str(c, "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
		return;
	}
	bool val = meta_flag(t, nt, 2, 'v') != NULL;
	if (r == MC_STORED && meta_flag(t, nt, 2, 'q') != NULL && !val)
		return;
	char num[24];
	int n = snprintf(num, sizeof num, "%llu", (unsigned long long)v);
	if (r == MC_STORED && val)
		out_printf(c, "VA %d", n);
	else
		out_str(c, code);
	for (int i = 2; i < nt; i++) {
		char f = t[i].n ? t[i].s[0] : 0;
		if (f == 'O')
			out_printf(c, " %.*s", (int)t[i].n, t[i].s);
		else if (f == 'c' && r == MC_STORED)
			out_printf(c, " c%llu", (unsigned long long)newcas);
		else if (f == 'k')
			out_printf(c, " k%.*s", (int)t[1].n, t[1].s);
	}
	out_add(c, "\r\n", 2);
	if (r == MC_STORED && val) {
		out_add(c, num, (size_t)n);
		out_add(c, "\r\n", 2);
	}
}

/* ---- The dispatcher ---- */

long text_feed(struct conn *c, char *buf, size_t len)
{
	char *nl = memchr(buf, '\n', len);

	bool get = (len >= 4 && (memcmp(buf, "get ", 4) == 0 || memcmp(buf, "gat ", 4) == 0)) ||
	           (len >= 5 && (memcmp(buf, "gets ", 5) == 0 || memcmp(buf, "gats ", 5) == 0));
	if (nl == NULL) {
		if (len > (get ? TEXT_GET_LINE_MAX : MC_LINE_MAX)) {
			__atomic_fetch_add(&mc_g.closed_long_line, 1, __ATOMIC_RELAXED);
			mc_log(1, "<%d line too long: closed", c->fd);
			return -1;
		}
		return 0;
	}
	size_t line_len = (size_t)(nl - buf) + 1;
	size_t n = line_len - 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	c->noreply = false;
	if (get) {
		/* Taken whole: NUL-terminated in place, any number of keys. */
		buf[n] = '\0';
		mc_log(2, "<%d %.*s", c->fd, n > 200 ? 200 : (int)n, buf);
		cmd_get_line(c, buf, buf[3] == 's', buf[1] == 'a');
		return (long)line_len;
	}
	/* Any other line, NUL-terminated in a copy: a storage command's data
	 * after it may not have arrived, and the line is parsed again then. */
	char line[MC_LINE_MAX + 1];
	if (n > MC_LINE_MAX) {
		out_str(c, "CLIENT_ERROR line too long\r\n");
		return (long)line_len;
	}
	memcpy(line, buf, n);
	line[n] = '\0';
	mc_log(2, "<%d %s", c->fd, line);

	struct tok t[TEXT_MAX_TOKENS];
	int nt = tokenize(line, t, TEXT_MAX_TOKENS);
	if (nt == 0) {
		out_str(c, "ERROR\r\n");
		return (long)line_len;
	}
	const struct tok *cmd = &t[0];
	if (tok_is(cmd, "set"))
		return cmd_store(c, t, nt, MC_SET, buf, len, line_len);
	if (tok_is(cmd, "add"))
		return cmd_store(c, t, nt, MC_ADD, buf, len, line_len);
	if (tok_is(cmd, "replace"))
		return cmd_store(c, t, nt, MC_REPLACE, buf, len, line_len);
	if (tok_is(cmd, "append"))
		return cmd_store(c, t, nt, MC_APPEND, buf, len, line_len);
	if (tok_is(cmd, "prepend"))
		return cmd_store(c, t, nt, MC_PREPEND, buf, len, line_len);
	if (tok_is(cmd, "cas"))
		return cmd_store(c, t, nt, MC_CAS, buf, len, line_len);
	if (tok_is(cmd, "ms")) {
		if (nt < 2 || !key_ok(&t[1])) {
			out_str(c, "CLIENT_ERROR bad command line format\r\n");
			return (long)line_len;
		}
		mc_tstats()->meta_cmds++;
		return meta_set(c, t, nt, buf, len, line_len);
	}
	if (tok_is(cmd, "get") || tok_is(cmd, "gets") || tok_is(cmd, "gat") || tok_is(cmd, "gats"))
		out_str(c, "ERROR\r\n");
	else if (tok_is(cmd, "delete"))
		cmd_delete(c, t, nt);
	else if (tok_is(cmd, "incr") || tok_is(cmd, "decr"))
		cmd_delta(c, t, nt, cmd->s[0] == 'i');
	else if (tok_is(cmd, "touch"))
		cmd_touch(c, t, nt);
	else if (tok_is(cmd, "flush_all"))
		cmd_flush(c, t, nt);
	else if (tok_is(cmd, "version"))
		out_str(c, "VERSION " MC_VERSION "\r\n");
	else if (tok_is(cmd, "verbosity")) {
		c->noreply = nt > 1 && tok_is(&t[nt - 1], "noreply");
		if (nt == 2 || nt == 3)
			reply(c, "OK\r\n");
		else
			out_str(c, "ERROR\r\n");
	} else if (tok_is(cmd, "stats"))
		cmd_stats(c, t, nt);
	else if (tok_is(cmd, "quit"))
		return -1;
	else if (tok_is(cmd, "mn"))
		out_str(c, "MN\r\n");
	else if (tok_is(cmd, "mg") || tok_is(cmd, "md") || tok_is(cmd, "ma")) {
		if (nt < 2 || !key_ok(&t[1]))
			out_str(c, "CLIENT_ERROR bad command line format\r\n");
		else if (cmd->s[1] == 'g')
			meta_get(c, t, nt);
		else if (cmd->s[1] == 'd')
			meta_delete(c, t, nt);
		else
			meta_arith(c, t, nt);
		mc_tstats()->meta_cmds++;
	} else {
		__atomic_fetch_add(&mc_g.malformed, 1, __ATOMIC_RELAXED);
		out_str(c, "ERROR\r\n");
	}
	c->noreply = false;
	return (long)line_len;
}
