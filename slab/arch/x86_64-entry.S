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
 *
 * One section for both: the check only loads, so it runs inside the
 * section, with the slot found once (a free in another order than LIFO,
 * the common case in real programs, arms and reads cpu_id once, not
 * twice). So that the hit still runs straight through, the check sits
 * ahead of the entry point, at the start of the section's range: the
 * range is [uslab_cache_free_check, .Lcf_commit), and the entry point and
 * the arming store lie inside it. That is safe because nothing before the
 * commit has an effect: an abort there (the kernel finds rseq_cs still
 * pointing at this descriptor from the thread's last free) restarts from
 * .Lcf_retry, which reloads everything; the NULL test comes after the
 * arming, so a restart tests again.
 */
	.p2align 4, 0xcc			/* int3 padding, never run */
	.type uslab_cache_free_check, @function
uslab_cache_free_check:				/* entered only from the section below */
	.cfi_startproc
.Lcf_start:
	movq %rsi, %rdx
	shrq $PCPU_MAP_TOP_SHIFT, %rdx
	cmpq $PCPU_MAP_TOP_ENTRIES, %rdx
	jae .Lcf_bad
	leaq uslab_map_top(%rip), %r9
	movq (%r9,%rdx,8), %r9			/* the leaf */
	testq %r9, %r9
	jz .Lcf_bad
	movl %esi, %edx
	shrl $PCPU_MAP_GRAIN_SHIFT, %edx
	movq (%r9,%rdx,8), %rdx			/* the slab */
	testq %rdx, %rdx
	jz .Lcf_bad
	cmpq %rdi, SLAB_CACHE(%rdx)
	jne .Lcf_bad
	movq %rsi, %r9
	subq SLAB_BASE(%rdx), %r9
	imulq CACHE_CHK_INV(%rdi), %r9
	movzbl CACHE_CHK_TZ(%rdi), %ecx
	rorq %cl, %r9
	cmpq CACHE_CHK_OBJS(%rdi), %r9
	jae .Lcf_bad
	movzwl %r10w, %ecx			/* the count again */
	cmpq %rsi, -8(%r11,%rcx,8)		/* the round on top (rounds[-1]: m_floor) */
	je .Lcf_dup
	movq %rsi, (%r11,%rcx,8)		/* unseen until the commit */
	incl %ecx				/* the memo rule: an equal entry */
	cmpl SLOT_CAP(%rax), %ecx		/* just above goes */
	jae .Lcf_store
	cmpq %rsi, (%r11,%rcx,8)
	jne .Lcf_store
	movq $0, (%r11,%rcx,8)
	jmp .Lcf_store
	.cfi_endproc
	.size uslab_cache_free_check, . - uslab_cache_free_check

FUNC uslab_cache_free, globl
.Lcf_retry:
	movq uslab_rseq_off(%rip), %r8
	RSEQ_ARM .Lcf_cs
	testq %rsi, %rsi
	jz .Lcf_ret				/* NULL: nothing */
	movslq %fs:RSEQ_CPU_ID_OFF(%r8), %rax	/* cpu_id, sign-extended */
	shlq $PCPU_SHIFT, %rax
	addq CACHE_FAST(%rdi), %rax		/* slot (or a guard): the base, inside the section */
	movl SLOT_CAP(%rax), %r11d		/* cap first */
	movq SLOT_WORD(%rax), %r10		/* then the word */
	movzwl %r10w, %ecx			/* count */
	cmpl %r11d, %ecx
	jae .Lcf_miss				/* full or stopped */
	movq SLOT_ROUNDS(%rax), %r11		/* the rounds array */
	cmpq %rsi, (%r11,%rcx,8)		/* the round this CPU popped? */
	jne .Lcf_start				/* no: check it, above */
.Lcf_store:
	addq $(PCPU_HIT + 1), %r10		/* one hit more, one round more */
	movq %r10, CTR_WORD(%rax)		/* the copy, inside the section */
	movq %r10, SLOT_WORD(%rax)		/* commit */
.Lcf_commit:
.Lcf_ret:
	ret
.Lcf_miss:
	jmp *CACHE_FREE_MISS(%rdi)
.Lcf_bad:
	jmp slab_free_bad
.Lcf_dup:
	jmp slab_free_dup
	RSEQ_TABLES .Lcf, .Lcf_start, .Lcf_commit, .Lcf_abort, .Lcf_miss, .Lcf_bad, .Lcf_dup, .Lcf_ret
	RSEQ_ABORT .Lcf
ENDFUNC uslab_cache_free

	.section .note.GNU-stack, "", @progbits
