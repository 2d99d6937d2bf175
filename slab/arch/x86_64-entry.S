/* SPDX-License-Identifier: MIT */
/* x86-64 public entry points: uslab_cache_alloc / uslab_cache_free are rseq sections. */

/*
 * A hit returns from here: this is the whole fast path (no call, no lock,
 * no atomic read-modify-write; tests/fastpath-asm.sh checks the built
 * code). A miss tail-calls the per-CPU layer's slow path with the
 * arguments untouched. Registers and macros: x86_64-rseq.inc.
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
	movq CACHE_FAST(%rdi), %r9
	movq uslab_rseq_off(%rip), %r8
	RSEQ_POP .Lca, .Lca_miss, $PCPU_SHIFT
	ret
.Lca_miss:
	jmp pcpu_alloc_slow
	RSEQ_ABORT .Lca
ENDFUNC uslab_cache_alloc

/*
 * void uslab_cache_free(struct uslab_cache *c, void *obj)  -- public entry point
 * NULL returns at once; a miss tail-calls pcpu_free_slow(c, obj).
 */
FUNC uslab_cache_free, globl
	testq %rsi, %rsi
	jz .Lcf_ret
	movq CACHE_FAST(%rdi), %r9
	movq uslab_rseq_off(%rip), %r8
	RSEQ_PUSH .Lcf, .Lcf_miss, $PCPU_SHIFT, %rsi, %rcx, %ecx
.Lcf_ret:
	ret
.Lcf_miss:
	jmp pcpu_free_slow
	RSEQ_ABORT .Lcf
ENDFUNC uslab_cache_free

	.section .note.GNU-stack, "", @progbits
