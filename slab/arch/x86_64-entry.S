/* SPDX-License-Identifier: MIT */
/* x86-64 public entry points: uslab_cache_alloc / uslab_cache_free are rseq sections. */

/*
 * A hit returns from here: this is the whole fast path (no call, no lock,
 * no atomic read-modify-write; tests/fastpath-asm.sh checks the built
 * code). A miss tail-calls the cache's miss function (c_alloc_miss,
 * c_free_miss: the per-CPU layer's slow paths, or a debug cache's) with
 * the arguments untouched. The cache's slot base is loaded inside the
 * section, so once every slot was stopped and fenced, no operation can
 * still use an old one (pcpu_route). Every free is checked first: the
 * pointer must be an object of this cache (slab map, owner, offset), and
 * not the round on top of the magazine. Registers and macros:
 * x86_64-rseq.inc.
 */

#include "x86_64-rseq.inc"

	.text

/*
 * void *uslab_cache_alloc(struct uslab_cache *c)      -- public entry point
 * A hit returns from here; a miss tail-calls pcpu_alloc_slow(c) (%rdi kept).
 * c->c_fast (offset 0) is the slot region in rseq mode, or a zero region
 * (every cap 0, so every pop misses) in locked mode and USLAB_NOMAGAZINE.
 * Slots are 1 << PCPU_SHIFT bytes apart (fastpath.h).
 */
FUNC uslab_cache_alloc, globl
	movq uslab_rseq_off(%rip), %r8
	RSEQ_POP .Lca, .Lca_miss, $PCPU_SHIFT, %rdi
	ret
.Lca_miss:
	jmp *CACHE_ALLOC_MISS(%rdi)
	RSEQ_ABORT .Lca
ENDFUNC uslab_cache_alloc

/*
 * void uslab_cache_free(struct uslab_cache *c, void *obj)  -- public entry point
 * NULL returns at once. The hit: obj is the round this CPU popped last, at
 * the count (the memo, arch/fastpath.h), so it is known to be an object
 * of this cache and not the round on top. Otherwise it is checked
 * (slabmap.c, slab_check_init), then pushed with the double-free check:
 *
 *	leaf = uslab_map_top[obj >> 32]          (no leaf, or past 47 bits: bad)
 *	s = leaf[(obj >> 16) & 0xffff]           (no slab: bad)
 *	if (s->s_cache != c) bad                 (another cache's slab)
 *	q = ror((obj - s->s_base) * c_chk_inv, c_chk_tz)
 *	if (q >= c_chk_objs) bad                 (not an object start)
 *
 * bad tail-calls slab_free_bad(c, obj), which reports; a double free of
 * the round on top tail-calls slab_free_dup(c, obj); a miss (full or
 * stopped) tail-calls c_free_miss(c, obj), which checks it too.
 */
FUNC uslab_cache_free, globl
	testq %rsi, %rsi
	jz .Lcf_ret
	movq uslab_rseq_off(%rip), %r8
	RSEQ_PUSH_MEMO .Lcf, .Lcf_miss, .Lcf_check, $PCPU_SHIFT, %rsi, %rcx, %ecx, %rdi
.Lcf_ret:
	ret
.Lcf_check:
	movq %rsi, %rax
	shrq $PCPU_MAP_TOP_SHIFT, %rax
	cmpq $PCPU_MAP_TOP_ENTRIES, %rax
	jae .Lcf_bad
	leaq uslab_map_top(%rip), %r11
	movq (%r11,%rax,8), %r11		/* the leaf */
	testq %r11, %r11
	jz .Lcf_bad
	movl %esi, %eax
	shrl $PCPU_MAP_GRAIN_SHIFT, %eax
	movq (%r11,%rax,8), %rax		/* the slab */
	testq %rax, %rax
	jz .Lcf_bad
	cmpq %rdi, SLAB_CACHE(%rax)
	jne .Lcf_bad
	movq %rsi, %r11
	subq SLAB_BASE(%rax), %r11
	imulq CACHE_CHK_INV(%rdi), %r11
	movzbl CACHE_CHK_TZ(%rdi), %ecx
	rorq %cl, %r11
	cmpq CACHE_CHK_OBJS(%rdi), %r11
	jae .Lcf_bad
	RSEQ_PUSH .Lcfc, .Lcf_miss, .Lcf_dup, $PCPU_SHIFT, %rsi, %rcx, %ecx, %rdi
	ret
.Lcf_miss:
	jmp *CACHE_FREE_MISS(%rdi)
.Lcf_bad:
	jmp slab_free_bad
.Lcf_dup:
	jmp slab_free_dup
	RSEQ_ABORT .Lcf
	RSEQ_ABORT .Lcfc
ENDFUNC uslab_cache_free

	.section .note.GNU-stack, "", @progbits
