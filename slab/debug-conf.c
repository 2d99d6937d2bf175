/* SPDX-License-Identifier: MIT */
/* The debugging environment: USLAB_DEBUG, USLAB_FAIL and USLAB_SAMPLE, read once. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Design
 *
 * Three variables, read once, when the first cache is created (the first
 * call of any function here), copied into
 * static storage (no malloc: the library may be the malloc), and applied
 * to each cache as it is created by name:
 *
 *   USLAB_DEBUG=OPTS[,GLOB...][;OPTS[,GLOB...]...]   (SLUB's slab_debug)
 *     OPTS: letters F Z P U R, or "-" for none. A block without globs is
 *     the default for every cache; a block with globs applies to the
 *     caches whose name matches one (fnmatch); the last matching block
 *     wins, a named one over the default.
 *   USLAB_FAIL=RULE[,GLOB...][;RULE[,GLOB...]...]
 *     RULE: N (every Nth allocation fails) or pP (each fails with
 *     probability P, 0 < P <= 1), then optionally @SEED (the generator's
 *     seed, default 1) and xTIMES (at most TIMES failures, default no
 *     bound): "3", "3x10", "p0.01@42x100". Globs as above.
 *   USLAB_SAMPLE=N
 *     about one allocation in N of every cache comes from a guarded page
 *     (sample.c).
 *
 * A malformed block is said once on stderr and skipped; nothing aborts.
 */

#define CONF_TEXT 4096 /* bytes of each variable kept */
#define CONF_BLOCKS 32 /* blocks of each variable kept */

struct conf_block {
	char *b_globs; /* ','-separated, in conf text; NULL: every cache */
	unsigned b_flags;
	struct dbg_fail_rule b_fail;
};

struct conf_var {
	char v_text[CONF_TEXT];
	struct conf_block v_blocks[CONF_BLOCKS];
	unsigned v_n;
};

static struct conf_var conf_debug, conf_fail;
static uint64_t conf_sample; /* USLAB_SAMPLE; 0: off */

static void conf_warn(const char *var, const char *what, const char *text)
{
	fprintf(stderr, "uslab: %s: %s \"%s\", ignored\n", var, what, text);
}

/* The letters of a USLAB_DEBUG block; false when one is unknown. */
static bool conf_letters(const char *s, unsigned *flags)
{
	*flags = 0;
	if (strcmp(s, "-") == 0)
		return true;
	for (; *s != '\0'; s++) {
		switch (*s) {
		case 'F':
			*flags |= USLAB_DEBUG_CHECKS;
			break;
		case 'Z':
			*flags |= USLAB_DEBUG_REDZONE;
			break;
		case 'P':
			*flags |= USLAB_DEBUG_POISON;
			break;
		case 'U':
			*flags |= USLAB_DEBUG_AUDIT;
			break;
		case 'R':
			*flags |= USLAB_RANDOM;
			break;
		default:
			return false;
		}
	}
	return true;
}

/* A USLAB_FAIL rule; false when malformed. */
static bool conf_rule(const char *s, struct dbg_fail_rule *r)
{
	char *end;

	memset(r, 0, sizeof *r);
	r->r_seed = 1;
	r->r_times = UINT64_MAX;
	if (*s == 'p') {
		double p = strtod(s + 1, &end);
		if (end == s + 1 || !(p > 0 && p <= 1))
			return false;
		r->r_threshold = p >= 1 ? UINT64_MAX : (uint64_t)(p * 18446744073709551616.0);
	} else {
		unsigned long long n = strtoull(s, &end, 10);
		if (end == s || n == 0)
			return false;
		r->r_every = n;
	}
	s = end;
	while (*s != '\0') {
		char k = *s++;
		unsigned long long v = strtoull(s, &end, 10);
		if (end == s || (k != '@' && k != 'x'))
			return false;
		if (k == '@')
			r->r_seed = v != 0 ? v : 1;
		else
			r->r_times = v;
		s = end;
	}
	return true;
}

/* Split @var's value into blocks ("OPTS,glob,glob;..."), each parsed by
 * the debug or the fail syntax. */
static void conf_read(struct conf_var *v, const char *name, bool fail)
{
	const char *env = getenv(name);

	if (env == NULL || env[0] == '\0')
		return;
	if (strlen(env) >= CONF_TEXT)
		conf_warn(name, "longer than 4095 bytes, cut", "...");
	snprintf(v->v_text, sizeof v->v_text, "%s", env);
	char *save = NULL;
	for (char *blk = strtok_r(v->v_text, ";", &save); blk != NULL;
	     blk = strtok_r(NULL, ";", &save)) {
		char *comma = strchr(blk, ',');
		if (comma != NULL)
			*comma = '\0';
		struct conf_block b = {.b_globs = comma != NULL ? comma + 1 : NULL};
		bool ok = fail ? conf_rule(blk, &b.b_fail) : conf_letters(blk, &b.b_flags);
		if (!ok) {
			conf_warn(name, "bad block", blk);
			continue;
		}
		if (v->v_n == CONF_BLOCKS) {
			conf_warn(name, "more than 32 blocks, from", blk);
			break;
		}
		v->v_blocks[v->v_n++] = b;
	}
}

static void conf_init(void)
{
	conf_read(&conf_debug, "USLAB_DEBUG", false);
	conf_read(&conf_fail, "USLAB_FAIL", true);
	const char *s = getenv("USLAB_SAMPLE");
	if (s != NULL && s[0] != '\0') {
		char *end;
		unsigned long long n = strtoull(s, &end, 10);
		if (*end != '\0' || n == 0)
			conf_warn("USLAB_SAMPLE", "not a positive number", s);
		else
			conf_sample = n;
	}
}

/* Does @name match one of @globs (','-separated)? */
static bool conf_globs_match(const char *globs, const char *name)
{
	char one[USLAB_NAME_MAX + 64];
	const char *p = globs;

	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		if (n < sizeof one) {
			memcpy(one, p, n);
			one[n] = '\0';
			if (os_match(one, name))
				return true;
		}
		p += n + (p[n] == ',');
	}
	return false;
}

/* The block of @v that applies to @name, or NULL. */
static const struct conf_block *conf_lookup(const struct conf_var *v, const char *name)
{
	const struct conf_block *def = NULL, *named = NULL;

	for (unsigned i = 0; i < v->v_n; i++) {
		const struct conf_block *b = &v->v_blocks[i];
		if (b->b_globs == NULL)
			def = b;
		else if (conf_globs_match(b->b_globs, name))
			named = b;
	}
	return named != NULL ? named : def;
}

static pthread_once_t conf_once = PTHREAD_ONCE_INIT;

unsigned debug_conf_flags(const char *name)
{
	pthread_once(&conf_once, conf_init);
	const struct conf_block *b = conf_lookup(&conf_debug, name);

	return b != NULL ? b->b_flags : 0;
}

bool debug_conf_fail(const char *name, struct dbg_fail_rule *rule)
{
	pthread_once(&conf_once, conf_init);
	const struct conf_block *b = conf_lookup(&conf_fail, name);

	if (b != NULL)
		*rule = b->b_fail;
	return b != NULL;
}

uint64_t debug_conf_sample(void)
{
	pthread_once(&conf_once, conf_init);
	return conf_sample;
}
