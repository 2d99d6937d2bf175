/* SPDX-License-Identifier: MIT */
/* x86-64 entry point of the size classes: uslab_free, an rseq section. */

/*
 * uslab_free(obj) finds the cache from the pointer (slab/kmalloc.c §3), so
 * its slab map lookup is the object check too: one lookup, then the
 * offset check and the push of uslab_cache_free's checked path
 * (x86_64-entry.S), with no second section for the memo. Anything that is
 * not a class object (NULL, a large block, a sample, a bootstrap or
 * foreign pointer, misuse) goes to km_free_slow(obj):
 *
 *	leaf = uslab_map_top[obj >> 32]          (none, or past 47 bits: slow)
 *	s = leaf[(obj >> 16) & 0xffff]           (no slab: slow)
 *	c = s->s_cache; if (!c->c_kmalloc) slow  (not a size class)
 *	q = ror((obj - s->s_base) * c_chk_inv, c_chk_tz)
 *	if (q >= c_chk_objs) bad                 (slab_free_bad(c, obj) reports)
 *	push, or miss: c_free_miss(c, obj); the round on top: slab_free_dup
 *
 * The libuslab-malloc.so build (USLAB_PRELOAD) names it free, __libc_free
 * and cfree too.
 */

#include "x86_64-rseq.inc"

	.text

FUNC uslab_free, globl
	movq %rdi, %rsi
	movq %rdi, %rax
	shrq $PCPU_MAP_TOP_SHIFT, %rax
	cmpq $PCPU_MAP_TOP_ENTRIES, %rax
	jae .Lkf_slow
	leaq uslab_map_top(%rip), %r11
	movq (%r11,%rax,8), %r11		/* the leaf */
	testq %r11, %r11
	jz .Lkf_slow
	movl %esi, %eax
	shrl $PCPU_MAP_GRAIN_SHIFT, %eax
	movq (%r11,%rax,8), %rax		/* the slab */
	testq %rax, %rax
	jz .Lkf_slow
	movq SLAB_CACHE(%rax), %rdi		/* its cache */
	cmpb $0, CACHE_KMALLOC(%rdi)
	je .Lkf_slow
	movq %rsi, %r11
	subq SLAB_BASE(%rax), %r11
	imulq CACHE_CHK_INV(%rdi), %r11
	movzbl CACHE_CHK_TZ(%rdi), %ecx
	rorq %cl, %r11
	cmpq CACHE_CHK_OBJS(%rdi), %r11
	jae .Lkf_bad
	movq uslab_rseq_off(%rip), %r8
	RSEQ_PUSH .Lkf, .Lkf_miss, .Lkf_dup, $PCPU_SHIFT, %rsi, %rcx, %ecx, %rdi
	ret
.Lkf_slow:
	movq %rsi, %rdi
	jmp km_free_slow
.Lkf_miss:
	jmp *CACHE_FREE_MISS(%rdi)
.Lkf_bad:
	jmp slab_free_bad
.Lkf_dup:
	jmp slab_free_dup
	RSEQ_ABORT .Lkf
ENDFUNC uslab_free

#ifdef USLAB_PRELOAD
	.globl free, __libc_free, cfree
	.type free, @function
	.type __libc_free, @function
	.type cfree, @function
	.set free, uslab_free
	.set __libc_free, uslab_free
	.set cfree, uslab_free
#endif

	.section .note.GNU-stack, "", @progbits
