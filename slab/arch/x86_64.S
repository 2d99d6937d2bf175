/* SPDX-License-Identifier: MIT */
/* x86-64 rseq critical sections for the per-CPU magazines (see fastpath.h). */

/*
 * Register use (System V):
 *
 *   reg    pop / push              pop_batch / push_batch
 *   rdi    base of the region      base of the region
 *   esi    shift                   shift (copied to cl at every retry)
 *   rdx    obj (push)              out / in buffer
 *   rcx    cl = shift              cl = shift, then k inside the section
 *   r8     __rseq_offset           __rseq_offset, then loop index
 *   rax    descriptor, slot, ret   descriptor, slot, then return value
 *   r9     count                   count
 *   r10    count - 1 (pop)         n
 *   r11    cap                     cap, then source/destination rounds
 *   rbx    -                       copy temporary (saved on the stack)
 *
 * Each routine: arm (store the descriptor address to rseq_cs, one 64-bit
 * store before start_ip), read cpu_id inside the section (negative: the
 * thread is not registered, fail), find the slot, load cap BEFORE count,
 * work, and commit with one 32-bit store of p_count. The abort handler
 * sits right after the 4-byte signature and jumps back to the arming
 * code; the kernel has already cleared rseq_cs. Nothing inside a section
 * calls out, makes a syscall, or stores where another thread can see it
 * before the commit.
 *
 * Descriptors go to __rseq_cs, pointers to them to __rseq_cs_ptr_array, and
 * (start, exit) pairs of every early exit to __rseq_exit_point_array for
 * debuggers; "awR" keeps the two tables under --gc-sections.
 *
 * USLAB_RSEQ_NO_ARM (meson -Drseq_negative_control=true) leaves out the
 * arming store: the negative control that the stress tests must catch.
 */

#ifdef __CET__
#include <cet.h>
#else
#define _CET_ENDBR
#endif

#define RSEQ_SIG 0x53053053
#define RSEQ_CS_OFF 8
#define RSEQ_CPU_ID_OFF 4
#define SLOT_COUNT 0
#define SLOT_CAP 4
#define SLOT_ALLOCS 8
#define SLOT_FREES 16
#define SLOT_ROUNDS 32

/* Descriptor, pointer-array entry and exit point for one section. */
.macro RSEQ_TABLES name, start, commit, abort, exit
	.pushsection __rseq_cs, "aw"
	.balign 32
\name\()_cs:
	.long 0, 0
	.quad \start, \commit - \start, \abort
	.popsection
	.pushsection __rseq_cs_ptr_array, "awR"
	.quad \name\()_cs
	.popsection
	.pushsection __rseq_exit_point_array, "awR"
	.quad \start, \exit
	.popsection
.endm

/* Point rseq_cs at the descriptor (%r8 = __rseq_offset). */
.macro RSEQ_ARM cs
#ifndef USLAB_RSEQ_NO_ARM
	leaq \cs(%rip), %rax
	movq %rax, %fs:RSEQ_CS_OFF(%r8)
#endif
.endm

/* The signature: ud1 0x53053053(%rip), %edi, whose last 4 bytes are RSEQ_SIG. */
.macro RSEQ_SIGNATURE
	.byte 0x0f, 0xb9, 0x3d
	.long RSEQ_SIG
.endm

	.text

/* void *uslab_rseq_pop(char *base, unsigned shift) */
	.p2align 4
	.globl uslab_rseq_pop
	.hidden uslab_rseq_pop
	.type uslab_rseq_pop, @function
uslab_rseq_pop:
	.cfi_startproc
	_CET_ENDBR
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
.Lpop_retry:
	RSEQ_ARM .Lpop_cs
.Lpop_start:
	movl %fs:RSEQ_CPU_ID_OFF(%r8), %eax	/* idx = cpu_id */
	testl %eax, %eax
	js .Lpop_fail				/* not registered */
	shlq %cl, %rax
	addq %rdi, %rax				/* slot = base + (idx << shift) */
	movl SLOT_CAP(%rax), %r11d		/* cap first */
	movl SLOT_COUNT(%rax), %r9d		/* then count */
	leal -1(%r9), %r10d
	cmpl %r11d, %r10d
	jae .Lpop_fail				/* count - 1 >= cap: empty or stopped */
	movq %rax, %rdx
	movq SLOT_ROUNDS(%rdx,%r10,8), %rax	/* obj = rounds[count - 1] */
	movl %r10d, SLOT_COUNT(%rdx)		/* commit: count - 1 */
.Lpop_commit:
	incq SLOT_ALLOCS(%rdx)			/* after the commit: never twice */
	ret
.Lpop_fail:
	xorl %eax, %eax
	ret
	RSEQ_SIGNATURE
.Lpop_abort:
	jmp .Lpop_retry
	.cfi_endproc
	.size uslab_rseq_pop, . - uslab_rseq_pop
	RSEQ_TABLES .Lpop, .Lpop_start, .Lpop_commit, .Lpop_abort, .Lpop_fail

/* int uslab_rseq_push(char *base, unsigned shift, void *obj) */
	.p2align 4
	.globl uslab_rseq_push
	.hidden uslab_rseq_push
	.type uslab_rseq_push, @function
uslab_rseq_push:
	.cfi_startproc
	_CET_ENDBR
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
.Lpush_retry:
	RSEQ_ARM .Lpush_cs
.Lpush_start:
	movl %fs:RSEQ_CPU_ID_OFF(%r8), %eax
	testl %eax, %eax
	js .Lpush_fail
	shlq %cl, %rax
	addq %rdi, %rax
	movl SLOT_CAP(%rax), %r11d		/* cap first */
	movl SLOT_COUNT(%rax), %r9d
	cmpl %r11d, %r9d
	jae .Lpush_fail				/* count >= cap: full or stopped */
	movq %rdx, SLOT_ROUNDS(%rax,%r9,8)	/* rounds[count] = obj (unseen until commit) */
	incl %r9d
	movl %r9d, SLOT_COUNT(%rax)		/* commit: count + 1 */
.Lpush_commit:
	incq SLOT_FREES(%rax)			/* after the commit: never twice */
	movl $1, %eax
	ret
.Lpush_fail:
	xorl %eax, %eax
	ret
	RSEQ_SIGNATURE
.Lpush_abort:
	jmp .Lpush_retry
	.cfi_endproc
	.size uslab_rseq_push, . - uslab_rseq_push
	RSEQ_TABLES .Lpush, .Lpush_start, .Lpush_commit, .Lpush_abort, .Lpush_fail

/* size_t uslab_rseq_pop_batch(char *base, unsigned shift, void **out, size_t n) */
	.p2align 4
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
	movl SLOT_COUNT(%rax), %r9d
	movq %r9, %rcx
	cmpq %r10, %rcx
	cmova %r10, %rcx			/* k = min(count, n) */
	testq %rcx, %rcx
	jz .Lpopb_fail
	subq %rcx, %r9				/* new count */
	leaq SLOT_ROUNDS(%rax,%r9,8), %r11	/* &rounds[count - k] */
	xorl %r8d, %r8d
.Lpopb_copy:
	movq (%r11,%r8,8), %rbx
	movq %rbx, (%rdx,%r8,8)			/* out[i] (private buffer) */
	incq %r8
	cmpq %rcx, %r8
	jb .Lpopb_copy
	movl %r9d, SLOT_COUNT(%rax)		/* commit: count - k */
.Lpopb_commit:
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
	.p2align 4
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
	movl SLOT_COUNT(%rax), %r9d
	cmpl %r11d, %r9d
	jae .Lpushb_fail			/* full or stopped */
	movl %r11d, %ecx
	subl %r9d, %ecx				/* room = cap - count */
	cmpq %r10, %rcx
	cmova %r10, %rcx			/* k = min(room, n) */
	testq %rcx, %rcx
	jz .Lpushb_fail
	leaq SLOT_ROUNDS(%rax,%r9,8), %r11	/* &rounds[count] */
	xorl %r8d, %r8d
.Lpushb_copy:
	movq (%rdx,%r8,8), %rbx
	movq %rbx, (%r11,%r8,8)			/* unseen until commit */
	incq %r8
	cmpq %rcx, %r8
	jb .Lpushb_copy
	addl %ecx, %r9d
	movl %r9d, SLOT_COUNT(%rax)		/* commit: count + k */
.Lpushb_commit:
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
