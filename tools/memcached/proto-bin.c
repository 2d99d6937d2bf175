/* SPDX-License-Identifier: MIT */
/* The binary protocol (magic 0x80/0x81, 24-byte header), as memcached 1.6 speaks it. */
#include "mc.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

/*
 * Design
 *
 * bin_feed() takes whole packets from the front of the input. The
 * header alone decides a packet's fate: its shape (extras, key and body
 * lengths for the opcode, memcached's rules) is checked before the body
 * is waited for, so a bad request or a value above -I is answered at
 * once and its body skipped (what the buffer holds is consumed, the rest
 * is left to c->swallow) instead of being buffered; the connection stays
 * open (memcached closes it after an "Invalid arguments"). Only a frame
 * that cannot be (key and extras longer than the body) closes it, and a
 * bad magic at once. A good packet is run once all of it is in the
 * buffer (c->want: its size), straight from the buffer: key, extras and
 * value are pointers into it.
 *
 * Every answer is a header built on the stack plus out_add()s of the
 * extras, key and value; a lookup copies the item's key and value out
 * inside item_get()'s callback. The quiet opcodes are their loud twins
 * with r->quiet set: a success is not answered (a GETQ hit is), an error
 * is. A response carries the request's opcode and opaque; an error has
 * its message as the value and no CAS, as memcached's have.
 */

#define HDR 24
#define MAGIC_REQ 0x80
#define MAGIC_RES 0x81

enum {
	OP_GET = 0x00,
	OP_SET = 0x01,
	OP_ADD = 0x02,
	OP_REPLACE = 0x03,
	OP_DELETE = 0x04,
	OP_INCR = 0x05,
	OP_DECR = 0x06,
	OP_QUIT = 0x07,
	OP_FLUSH = 0x08,
	OP_GETQ = 0x09,
	OP_NOOP = 0x0a,
	OP_VERSION = 0x0b,
	OP_GETK = 0x0c,
	OP_GETKQ = 0x0d,
	OP_APPEND = 0x0e,
	OP_PREPEND = 0x0f,
	OP_STAT = 0x10,
	OP_SETQ = 0x11,
	OP_ADDQ = 0x12,
	OP_REPLACEQ = 0x13,
	OP_DELETEQ = 0x14,
	OP_INCRQ = 0x15,
	OP_DECRQ = 0x16,
	OP_QUITQ = 0x17,
	OP_FLUSHQ = 0x18,
	OP_APPENDQ = 0x19,
	OP_PREPENDQ = 0x1a,
	OP_VERBOSITY = 0x1b,
	OP_TOUCH = 0x1c,
	OP_GAT = 0x1d,
	OP_GATQ = 0x1e,
	OP_GATK = 0x23,
	OP_GATKQ = 0x24,
};

enum {
	ST_OK = 0x00,
	ST_NOT_FOUND = 0x01,
	ST_EXISTS = 0x02,
	ST_TOO_LARGE = 0x03,
	ST_EINVAL = 0x04,
	ST_NOT_STORED = 0x05,
	ST_BADVAL = 0x06,
	ST_UNKNOWN = 0x81,
	ST_ENOMEM = 0x82,
	ST_CLOSE = 0x100, /* not a status: a broken frame, answered and closed */
};

struct bin_req {
	uint8_t opcode; /* as sent: the response carries it */
	uint8_t cmd;    /* the opcode without its Q */
	bool quiet;
	uint8_t extlen;
	uint16_t keylen;
	uint32_t bodylen;
	uint32_t opaque;
	uint64_t cas;
	const uint8_t *ext; /* the body, once it is all in the buffer */
	const char *key;
	const char *val;
	uint32_t nval;
};

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof v);
	return be32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof v);
	return be64toh(v);
}

static void put16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof v);
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof v);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof v);
}

/* ---- Responses ---- */

/* A response header for @opcode/@opaque into @h (HDR bytes). */
static void fill_hdr(uint8_t *h, uint8_t opcode, uint32_t opaque, uint16_t status, uint8_t extlen,
                     uint16_t keylen, uint32_t bodylen, uint64_t cas)
{
	h[0] = MAGIC_RES;
	h[1] = opcode;
	put16(h + 2, keylen);
	h[4] = extlen;
	h[5] = 0; /* raw bytes */
	put16(h + 6, status);
	put32(h + 8, bodylen);
	put32(h + 12, opaque);
	put64(h + 16, cas);
}

/* A success: header, @ext (@extlen bytes), @key, @val. Not for quiet requests. */
static void send_ok(struct conn *c, const struct bin_req *r, uint64_t cas, const void *ext,
                    uint8_t extlen, const char *key, uint16_t nkey, const void *val, size_t nval)
{
	uint8_t h[HDR + 8];

	fill_hdr(h, r->opcode, r->opaque, ST_OK, extlen, nkey, (uint32_t)(extlen + nkey + nval),
	         mc_set.cas_off ? 0 : cas);
	if (extlen != 0)
		memcpy(h + HDR, ext, extlen);
	out_add(c, h, HDR + (size_t)extlen);
	out_add(c, key, nkey);
	out_add(c, val, nval);
}

/* A success with an optional value, unless the request is quiet. */
static void reply(struct conn *c, const struct bin_req *r, uint64_t cas, const void *val,
                  size_t nval)
{
	if (!r->quiet)
		send_ok(c, r, cas, NULL, 0, NULL, 0, val, nval);
}

static const char *status_msg(uint16_t status)
{
	switch (status) {
	case ST_NOT_FOUND:
		return "Not found";
	case ST_EXISTS:
		return "Data exists for key.";
	case ST_TOO_LARGE:
		return "Too large.";
	case ST_EINVAL:
		return "Invalid arguments";
	case ST_NOT_STORED:
		return "Not stored.";
	case ST_BADVAL:
		return "Non-numeric server-side value for incr or decr";
	case ST_ENOMEM:
		return "Out of memory";
	default:
		return "Unknown command";
	}
}

/* An error: sent for quiet requests too, its message as the value. */
static void send_error(struct conn *c, const struct bin_req *r, uint16_t status)
{
	const char *msg = status_msg(status);
	size_t n = strlen(msg);
	uint8_t h[HDR + 64];

	fill_hdr(h, r->opcode, r->opaque, status, 0, 0, (uint32_t)n, 0);
	memcpy(h + HDR, msg, n);
	out_add(c, h, HDR + n);
}

void bin_stat(struct conn *c, const char *k, size_t nk, const char *v, size_t nv)
{
	uint8_t h[HDR];

	fill_hdr(h, c->bin_opcode, (uint32_t)c->bin_opaque, ST_OK, 0, (uint16_t)nk,
	         (uint32_t)(nk + nv), 0);
	out_add(c, h, HDR);
	out_add(c, k, nk);
	out_add(c, v, nv);
}

/* ---- Lookups: get, getk, gat, gatk, touch and their quiet twins ---- */

struct get_ctx {
	struct conn *c;
	const struct bin_req *r;
	bool with_key, with_value;
};

static void get_cb(void *arg, const struct item_view *v)
{
	const struct get_ctx *g = arg;
	uint8_t flags[4];

	put32(flags, v->flags);
	send_ok(g->c, g->r, v->cas, flags, sizeof flags, v->key,
	        g->with_key ? (uint16_t)v->nkey : 0, v->value, g->with_value ? v->nbytes : 0);
}

static void bin_get(struct conn *c, const struct bin_req *r)
{
	bool touch = r->cmd == OP_TOUCH || r->cmd == OP_GAT || r->cmd == OP_GATK;
	struct get_ctx g = {c, r, r->cmd == OP_GETK || r->cmd == OP_GATK, r->cmd != OP_TOUCH};
	uint32_t exptime = touch ? mc_exptime(get32(r->ext)) : 0;
	struct mc_tstats *ts = mc_tstats();
	bool hit = item_get(r->key, r->keylen, touch, exptime, get_cb, &g);

	if (touch) {
		ts->touch_cmds++;
		if (hit)
			ts->touch_hits++;
		else
			ts->touch_misses++;
	} else {
		ts->get_cmds++;
		if (hit)
			ts->get_hits++;
		else
			ts->get_misses++;
	}
	if (hit || r->quiet)
		return;
	if (g.with_key) {
		/* memcached's getk miss: the key, no message */
		uint8_t h[HDR];
		fill_hdr(h, r->opcode, r->opaque, ST_NOT_FOUND, 0, r->keylen, r->keylen, 0);
		out_add(c, h, HDR);
		out_add(c, r->key, r->keylen);
		return;
	}
	send_error(c, r, ST_NOT_FOUND);
}

/* ---- Updates ---- */

static enum mc_store store_op(const struct bin_req *r)
{
	switch (r->cmd) {
	case OP_APPEND:
		return MC_APPEND;
	case OP_PREPEND:
		return MC_PREPEND;
	default:
		break;
	}
	if (r->cas != 0)
		return MC_CAS; /* set, add or replace with a CAS: memcached's NREAD_CAS */
	switch (r->cmd) {
	case OP_ADD:
		return MC_ADD;
	case OP_REPLACE:
		return MC_REPLACE;
	default:
		return MC_SET;
	}
}

/* memcached's answer to item_store's @res for @op. */
static uint16_t store_status(enum mc_store op, enum mc_res res)
{
	switch (res) {
	case MC_STORED:
		return ST_OK;
	case MC_EXISTS:
		return ST_EXISTS;
	case MC_NOT_FOUND:
		return op == MC_APPEND || op == MC_PREPEND ? ST_NOT_STORED : ST_NOT_FOUND;
	case MC_TOO_LARGE:
		return ST_TOO_LARGE;
	case MC_NO_MEMORY:
		return ST_ENOMEM;
	default:
		break;
	}
	if (op == MC_ADD)
		return ST_EXISTS;
	if (op == MC_REPLACE)
		return ST_NOT_FOUND;
	return ST_NOT_STORED;
}

static void count_cas(enum mc_res res)
{
	struct mc_tstats *ts = mc_tstats();

	if (res == MC_STORED)
		ts->cas_hits++;
	else if (res == MC_EXISTS)
		ts->cas_badval++;
	else if (res == MC_NOT_FOUND)
		ts->cas_misses++;
}

/* A set whose value cannot be stored drops the old one (memcached). */
static void store_failed(struct conn *c, const struct bin_req *r, uint16_t status)
{
	if (r->cmd == OP_SET)
		item_delete(r->key, r->keylen, 0);
	send_error(c, r, status);
}

static void bin_store(struct conn *c, const struct bin_req *r)
{
	uint32_t flags = 0, exptime = 0;

	if (r->extlen == 8) {
		flags = get32(r->ext);
		exptime = mc_exptime(get32(r->ext + 4));
	}
	struct item *it = item_alloc(r->key, r->keylen, flags, exptime, r->nval);
	if (it == NULL) {
		store_failed(c, r, errno == E2BIG ? ST_TOO_LARGE : ST_ENOMEM);
		return;
	}
	memcpy(item_value(it), r->val, r->nval);
	mc_tstats()->set_cmds++;

	enum mc_store op = store_op(r);
	uint64_t cas = 0;
	enum mc_res res = item_store(it, op, r->cas, &cas);
	if (op == MC_CAS)
		count_cas(res);
	uint16_t st = store_status(op, res);
	if (st != ST_OK)
		send_error(c, r, st);
	else
		reply(c, r, cas, NULL, 0);
}

static void bin_delete(struct conn *c, const struct bin_req *r)
{
	struct mc_tstats *ts = mc_tstats();

	switch (item_delete(r->key, r->keylen, r->cas)) {
	case MC_DELETED:
		ts->delete_hits++;
		reply(c, r, 0, NULL, 0);
		break;
	case MC_EXISTS:
		send_error(c, r, ST_EXISTS);
		break;
	default:
		ts->delete_misses++;
		send_error(c, r, ST_NOT_FOUND);
		break;
	}
}

static void count_delta(bool incr, bool hit)
{
	struct mc_tstats *ts = mc_tstats();

	uint64_t *n;

	if (incr)
		n = hit ? &ts->incr_hits : &ts->incr_misses;
	else
		n = hit ? &ts->decr_hits : &ts->decr_misses;
	(*n)++;
}

/* incr/decr: extras delta, initial, exptime (0xffffffff: no create). */
static void bin_delta(struct conn *c, const struct bin_req *r)
{
	bool incr = r->cmd == OP_INCR;
	uint64_t delta = get64(r->ext), initial = get64(r->ext + 8);
	uint32_t exp = get32(r->ext + 16);
	uint64_t v = 0, cas = 0;

	/* A first try without create, so that a miss is counted as one. */
	enum mc_res res = item_delta(r->key, r->keylen, incr, delta, false, 0, 0, r->cas, &v, &cas);
	count_delta(incr, res != MC_NOT_FOUND);
	if (res == MC_NOT_FOUND && exp != 0xffffffffu)
		res = item_delta(r->key, r->keylen, incr, delta, true, initial, mc_exptime(exp),
		                 r->cas, &v, &cas);
	switch (res) {
	case MC_STORED: {
		uint8_t val[8];
		put64(val, v);
		reply(c, r, cas, val, sizeof val);
		break;
	}
	case MC_NOT_FOUND:
		send_error(c, r, ST_NOT_FOUND);
		break;
	case MC_EXISTS:
		send_error(c, r, ST_EXISTS);
		break;
	case MC_NON_NUMERIC:
		send_error(c, r, ST_BADVAL);
		break;
	case MC_NO_MEMORY:
		send_error(c, r, ST_ENOMEM);
		break;
	default:
		send_error(c, r, ST_NOT_STORED);
		break;
	}
}

/* ---- The rest ---- */

static void bin_flush(struct conn *c, const struct bin_req *r)
{
	uint32_t exp = r->extlen == 4 ? get32(r->ext) : 0;
	uint32_t delay = 0;

	if (exp != 0) {
		uint32_t at = mc_exptime(exp);
		delay = at > mc_now ? at - mc_now : 0;
	}
	mc_tstats()->flush_cmds++;
	item_flush(delay);
	reply(c, r, 0, NULL, 0);
}

static bool key_is(const struct bin_req *r, const char *s)
{
	size_t n = strlen(s);

	return r->keylen == n && memcmp(r->key, s, n) == 0;
}

static void bin_stats(struct conn *c, const struct bin_req *r)
{
	c->bin_opaque = r->opaque;
	c->bin_opcode = r->opcode;
	if (r->keylen == 0)
		stats_general(c);
	else if (key_is(r, "settings"))
		stats_settings(c);
	else if (key_is(r, "slabs"))
		stats_slabs(c);
	else if (key_is(r, "items"))
		stats_items(c);
	else if (key_is(r, "conns"))
		stats_conns(c);
	else if (key_is(r, "reset"))
		stats_reset();
	else {
		send_error(c, r, ST_NOT_FOUND);
		return;
	}
	bin_stat(c, NULL, 0, NULL, 0); /* the end */
}

static void bin_run(struct conn *c, const struct bin_req *r)
{
	switch (r->cmd) {
	case OP_GET:
	case OP_GETK:
	case OP_TOUCH:
	case OP_GAT:
	case OP_GATK:
		bin_get(c, r);
		break;
	case OP_SET:
	case OP_ADD:
	case OP_REPLACE:
	case OP_APPEND:
	case OP_PREPEND:
		bin_store(c, r);
		break;
	case OP_DELETE:
		bin_delete(c, r);
		break;
	case OP_INCR:
	case OP_DECR:
		bin_delta(c, r);
		break;
	case OP_QUIT:
		reply(c, r, 0, NULL, 0);
		c->closing = true;
		break;
	case OP_FLUSH:
		bin_flush(c, r);
		break;
	case OP_NOOP:
	case OP_VERBOSITY: /* accepted, as the text protocol's (-v stays) */
		reply(c, r, 0, NULL, 0);
		break;
	case OP_VERSION:
		reply(c, r, 0, MC_VERSION, strlen(MC_VERSION));
		break;
	case OP_STAT:
		bin_stats(c, r);
		break;
	}
}

/* ---- Parsing ---- */

/* The loud twin of a quiet opcode (*quiet set), else @op itself. */
static uint8_t loud(uint8_t op, bool *quiet)
{
	static const uint8_t twin[][2] = {
		{OP_GETQ, OP_GET},     {OP_GETKQ, OP_GETK},       {OP_SETQ, OP_SET},
		{OP_ADDQ, OP_ADD},     {OP_REPLACEQ, OP_REPLACE}, {OP_DELETEQ, OP_DELETE},
		{OP_INCRQ, OP_INCR},   {OP_DECRQ, OP_DECR},       {OP_QUITQ, OP_QUIT},
		{OP_FLUSHQ, OP_FLUSH}, {OP_APPENDQ, OP_APPEND},   {OP_PREPENDQ, OP_PREPEND},
		{OP_GATQ, OP_GAT},     {OP_GATKQ, OP_GATK},
	};

	for (size_t i = 0; i < sizeof twin / sizeof twin[0]; i++) {
		if (twin[i][0] == op) {
			*quiet = true;
			return twin[i][1];
		}
	}
	*quiet = false;
	return op;
}

/* Extras of exactly @ext bytes, a key (@key) or none, and (@exact) no value. */
static bool shape(const struct bin_req *r, uint8_t ext, bool key, bool exact)
{
	if (r->extlen != ext || (r->keylen != 0) != key)
		return false;
	return !exact || r->bodylen == (uint32_t)ext + r->keylen;
}

/* A status for a request whose value would be @ext extras in: too large? */
static int check_value(const struct bin_req *r, uint8_t ext)
{
	if (!shape(r, ext, true, false))
		return ST_EINVAL;
	uint64_t nval = (uint64_t)r->bodylen - ext - r->keylen;
	return nval > mc_set.item_max ? ST_TOO_LARGE : ST_OK;
}

/* What the header alone says of the request: ST_OK to run it, else the
 * error to answer it with (its body skipped). */
static int check(const struct bin_req *r)
{
	if ((uint32_t)r->extlen + r->keylen > r->bodylen)
		return ST_CLOSE;
	if (r->keylen > MC_KEY_MAX)
		return ST_EINVAL;

	bool ok;
	switch (r->cmd) {
	case OP_GET:
	case OP_GETK:
	case OP_DELETE:
		ok = shape(r, 0, true, true);
		break;
	case OP_SET:
	case OP_ADD:
	case OP_REPLACE:
		return check_value(r, 8);
	case OP_APPEND:
	case OP_PREPEND:
		return check_value(r, 0);
	case OP_INCR:
	case OP_DECR:
		ok = shape(r, 20, true, true);
		break;
	case OP_QUIT:
	case OP_NOOP:
	case OP_VERSION:
		ok = shape(r, 0, false, true);
		break;
	case OP_FLUSH:
		ok = (r->extlen == 0 || r->extlen == 4) && shape(r, r->extlen, false, true);
		break;
	case OP_STAT:
		ok = r->extlen == 0 && r->bodylen == r->keylen;
		break;
	case OP_VERBOSITY:
		ok = shape(r, 4, false, true);
		break;
	case OP_TOUCH:
	case OP_GAT:
	case OP_GATK:
		ok = shape(r, 4, true, true);
		break;
	default:
		return ST_UNKNOWN;
	}
	return ok ? ST_OK : ST_EINVAL;
}

static void parse_hdr(struct bin_req *r, const uint8_t *p)
{
	memset(r, 0, sizeof *r);
	r->opcode = p[1];
	r->cmd = loud(p[1], &r->quiet);
	r->keylen = (uint16_t)(p[2] << 8 | p[3]);
	r->extlen = p[4];
	r->bodylen = get32(p + 8);
	r->opaque = get32(p + 12);
	r->cas = get64(p + 16);
}

/* Skip a packet of @total bytes of which @avail are in the buffer. */
static long skip(struct conn *c, size_t avail, uint64_t total)
{
	if (avail >= total)
		return (long)total;
	c->swallow = total - avail;
	return (long)avail;
}

/* One packet from @p (@avail bytes, at least HDR): what it took, 0 for
 * more (c->want), -1 to close. */
static long feed_one(struct conn *c, const uint8_t *p, size_t avail)
{
	struct bin_req r;

	if (p[0] != MAGIC_REQ)
		return -1;
	parse_hdr(&r, p);

	uint64_t total = HDR + (uint64_t)r.bodylen;
	int st = check(&r);
	if (st == ST_CLOSE) {
		send_error(c, &r, ST_UNKNOWN); /* memcached's answer, then it closes */
		c->closing = true;
		return (long)avail;
	}
	r.ext = p + HDR;
	r.key = (const char *)r.ext + r.extlen;
	if (st == ST_TOO_LARGE && r.cmd == OP_SET) {
		/* the key is wanted: such a set drops the old value */
		size_t head = HDR + (size_t)r.extlen + r.keylen;
		if (avail < head) {
			c->want = head;
			return 0;
		}
		store_failed(c, &r, ST_TOO_LARGE);
		return skip(c, avail, total);
	}
	if (st != ST_OK) {
		send_error(c, &r, (uint16_t)st);
		/* A malformed request: its body length cannot be trusted either
		 * (garbage claims gigabytes): close, as memcached does. */
		if (st == ST_EINVAL)
			c->closing = true;
		return skip(c, avail, total);
	}
	if (avail < total) {
		c->want = (size_t)total;
		return 0;
	}
	r.val = r.key + r.keylen;
	r.nval = r.bodylen - r.extlen - r.keylen;
	bin_run(c, &r);
	return (long)total;
}

long bin_feed(struct conn *c, char *buf, size_t len)
{
	const uint8_t *p = (const uint8_t *)buf;
	size_t off = 0;

	while (!c->closing && !c->failed && c->swallow == 0) {
		if (len - off < HDR) {
			if (off == 0)
				c->want = HDR;
			break;
		}
		long n = feed_one(c, p + off, len - off);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		off += (size_t)n;
	}
	if (off != 0)
		c->want = 0;
	return (long)off;
}
