/* SPDX-License-Identifier: MIT */
/* x86-64 rseq critical sections for the per-CPU magazines (see fastpath.h). */

/*
 * The four routines of the contract (arch/fastpath.h), called by the
 * per-CPU layer (pcpu.c) and by tests. The public entry points, which are
 * sections of their own that tail-call the per-CPU layer on a miss, are in
 * x86_64-entry.S: the per-CPU layer calls down into this file, and the
 * entry points call down into the per-CPU layer, never the other way.
 * Registers, descriptors and the abort protocol: x86_64-rseq.inc.
 */

#include "x86_64-rseq.inc"

	.text

/* void *uslab_rseq_pop(char *base, unsigned shift): NULL on a miss. */
FUNC uslab_rseq_pop, hidden
	movq %rdi, %r9
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
	RSEQ_POP .Lpop, .Lpop_fail, %cl
	ret
.Lpop_fail:
	xorl %eax, %eax
	ret
	RSEQ_ABORT .Lpop
ENDFUNC uslab_rseq_pop

/* int uslab_rseq_push(char *base, unsigned shift, void *obj): 1, or 0 on a
 * miss, or -1 when obj is the round on top (a double free). */
FUNC uslab_rseq_push, hidden
	movq %rdi, %r9
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
	RSEQ_PUSH .Lpush, .Lpush_fail, .Lpush_dup, %cl, %rdx, %rdi, %edi	/* base is in %r9 */
	movl $1, %eax
	ret
.Lpush_fail:
	xorl %eax, %eax
	ret
.Lpush_dup:
	movl $-1, %eax
	ret
	RSEQ_ABORT .Lpush
ENDFUNC uslab_rseq_push

/* int uslab_rseq_push_rcu(char *rcu, char *fast, void *obj): free_rcu's
 * push (rcu.c) onto this CPU's rcu slot in region rcu, with the memo test
 * of this CPU's slot in region fast (the cache's c_fast) in the same
 * section. 0 on a miss (nothing pushed), -1 when obj is the round on top
 * (a double free), 1 pushed and known (obj is the entry just above the
 * fast slot's count: an object of the cache), 2 pushed, not known. The
 * rcu slot's count is its whole word (no hits), and no counters copy:
 * nobody reads an rcu slot's counters. */
FUNC uslab_rseq_push_rcu, hidden
	pushq %rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	movq uslab_rseq_off(%rip), %r8
.Lprcu_retry:
	RSEQ_ARM .Lprcu_cs
.Lprcu_start:
	movslq %fs:RSEQ_CPU_ID_OFF(%r8), %rax	/* cpu_id, sign-extended */
	shlq $PCPU_SHIFT, %rax
	leaq (%rdi,%rax), %r9			/* the rcu slot (or a guard) */
	addq %rsi, %rax				/* the fast slot (or a guard) */
	movl SLOT_CAP(%r9), %r11d		/* cap first */
	movq SLOT_WORD(%r9), %r10		/* then the word: the count */
	cmpl %r11d, %r10d
	jae .Lprcu_fail				/* full, stopped, or not started */
	movq SLOT_ROUNDS(%r9), %r11		/* the rounds array */
	cmpq %rdx, -8(%r11,%r10,8)		/* the round on top (rounds[-1]: m_floor) */
	je .Lprcu_dup
	movl SLOT_CAP(%rax), %ecx		/* the memo: cap first */
	movzwl SLOT_WORD(%rax), %ebx		/* then the count */
	cmpl %ecx, %ebx
	jae .Lprcu_unknown			/* full or stopped: nothing above */
	movq SLOT_ROUNDS(%rax), %rcx
	cmpq %rdx, (%rcx,%rbx,8)
	sete %bl
	movzbl %bl, %ebx			/* known: 1 */
	jmp .Lprcu_store
.Lprcu_unknown:
	xorl %ebx, %ebx
.Lprcu_store:
	movq %rdx, (%r11,%r10,8)		/* unseen until the commit */
	incq %r10
	movq %r10, SLOT_WORD(%r9)		/* commit */
.Lprcu_commit:
	movl $2, %eax
	subl %ebx, %eax				/* 1 known, 2 not */
	popq %rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
.Lprcu_fail:
	xorl %eax, %eax
	popq %rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
.Lprcu_dup:
	movl $-1, %eax
	popq %rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	RSEQ_TABLES .Lprcu, .Lprcu_start, .Lprcu_commit, .Lprcu_abort, .Lprcu_fail, .Lprcu_dup
	RSEQ_ABORT .Lprcu
ENDFUNC uslab_rseq_push_rcu

/* size_t uslab_rseq_pop_batch(char *base, unsigned shift, void **out, size_t n) */
	.p2align 4, 0xcc				/* int3 padding, never run */
	.globl uslab_rseq_pop_batch
	.hidden uslab_rseq_pop_batch
	.type uslab_rseq_pop_batch, @function
uslab_rseq_pop_batch:
	.cfi_startproc
	_CET_ENDBR
	pushq %rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	movq %rcx, %r10				/* n */
.Lpopb_retry:
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
	RSEQ_ARM .Lpopb_cs
.Lpopb_start:
	movl %fs:RSEQ_CPU_ID_OFF(%r8), %eax
	testl %eax, %eax
	js .Lpopb_fail
	shlq %cl, %rax
	addq %rdi, %rax
	movl SLOT_CAP(%rax), %r11d		/* cap first */
	testl %r11d, %r11d
	jz .Lpopb_fail				/* stopped */
	movq SLOT_WORD(%rax), %r9		/* then the word */
	movzwl %r9w, %ecx			/* count */
	cmpq %r10, %rcx
	cmova %r10, %rcx			/* k = min(count, n) */
	testq %rcx, %rcx
	jz .Lpopb_fail
	subq %rcx, %r9				/* count - k: hits unchanged */
	movzwl %r9w, %r11d
	movq SLOT_ROUNDS(%rax), %r8		/* the rounds array (after the cap) */
	leaq (%r8,%r11,8), %r11			/* &rounds[count - k] */
	xorl %r8d, %r8d
.Lpopb_copy:
	movq (%r11,%r8,8), %rbx
	movq %rbx, (%rdx,%r8,8)			/* out[i] (private buffer) */
	incq %r8
	cmpq %rcx, %r8
	jb .Lpopb_copy
	movq %r9, CTR_WORD(%rax)		/* the copy, inside the section */
	movq %r9, SLOT_WORD(%rax)		/* commit: count - k */
.Lpopb_commit:
	addq %rcx, CTR_POPPED(%rax)		/* after the commit: never twice */
	movq %rcx, %rax
	popq %rbx
	.cfi_remember_state
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_restore_state
.Lpopb_fail:
	xorl %eax, %eax
	popq %rbx
	.cfi_remember_state
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_restore_state
	RSEQ_SIGNATURE
.Lpopb_abort:
	jmp .Lpopb_retry
	.cfi_endproc
	.size uslab_rseq_pop_batch, . - uslab_rseq_pop_batch
	RSEQ_TABLES .Lpopb, .Lpopb_start, .Lpopb_commit, .Lpopb_abort, .Lpopb_fail

/* size_t uslab_rseq_push_batch(char *base, unsigned shift, void *const *in, size_t n) */
	.p2align 4, 0xcc				/* int3 padding, never run */
	.globl uslab_rseq_push_batch
	.hidden uslab_rseq_push_batch
	.type uslab_rseq_push_batch, @function
uslab_rseq_push_batch:
	.cfi_startproc
	_CET_ENDBR
	pushq %rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	movq %rcx, %r10				/* n */
.Lpushb_retry:
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
	RSEQ_ARM .Lpushb_cs
.Lpushb_start:
	movl %fs:RSEQ_CPU_ID_OFF(%r8), %eax
	testl %eax, %eax
	js .Lpushb_fail
	shlq %cl, %rax
	addq %rdi, %rax
	movl SLOT_CAP(%rax), %r11d		/* cap first */
	movq SLOT_WORD(%rax), %r9		/* then the word */
	movzwl %r9w, %r8d			/* count */
	cmpl %r11d, %r8d
	jae .Lpushb_fail			/* full or stopped */
	movl %r11d, %ecx
	subl %r8d, %ecx				/* room = cap - count */
	cmpq %r10, %rcx
	cmova %r10, %rcx			/* k = min(room, n) */
	testq %rcx, %rcx
	jz .Lpushb_fail
	movq SLOT_ROUNDS(%rax), %r11		/* the rounds array (after the cap) */
	leaq (%r11,%r8,8), %r11			/* &rounds[count] */
	xorl %r8d, %r8d
.Lpushb_copy:
	movq (%rdx,%r8,8), %rbx
	movq %rbx, (%r11,%r8,8)			/* unseen until commit */
	incq %r8
	cmpq %rcx, %r8
	jb .Lpushb_copy
	movzwl %r9w, %ebx			/* the memo rule: an entry */
	addl %ecx, %ebx				/* just above the last one */
	cmpl SLOT_CAP(%rax), %ebx		/* stored, equal to it, goes */
	jae .Lpushb_kept
	movq -8(%rdx,%rcx,8), %rbx		/* in[k - 1] */
	cmpq %rbx, (%r11,%rcx,8)		/* rounds[count + k] */
	jne .Lpushb_kept
	movq $0, (%r11,%rcx,8)
.Lpushb_kept:
	addq %rcx, %r9				/* count + k: hits unchanged */
	movq %r9, CTR_WORD(%rax)		/* the copy, inside the section */
	movq %r9, SLOT_WORD(%rax)		/* commit */
.Lpushb_commit:
	addq %rcx, CTR_PUSHED(%rax)		/* after the commit: never twice */
	movq %rcx, %rax
	popq %rbx
	.cfi_remember_state
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_restore_state
.Lpushb_fail:
	xorl %eax, %eax
	popq %rbx
	.cfi_remember_state
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	ret
	.cfi_restore_state
	RSEQ_SIGNATURE
.Lpushb_abort:
	jmp .Lpushb_retry
	.cfi_endproc
	.size uslab_rseq_push_batch, . - uslab_rseq_push_batch
	RSEQ_TABLES .Lpushb, .Lpushb_start, .Lpushb_commit, .Lpushb_abort, .Lpushb_fail

	.section .note.GNU-stack, "", @progbits
