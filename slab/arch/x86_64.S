/* SPDX-License-Identifier: MIT */
/* x86-64 rseq critical sections for the per-CPU magazines (see fastpath.h). */

/*
 * Register use (System V):
 *
 *   reg    pop / push (RSEQ_POP/PUSH)   pop_batch / push_batch
 *   rdi    cache (kept); index (push)   base of the region
 *   rsi    obj (free) or shift (kept)   shift (copied to cl at every retry)
 *   rdx    slot (pop), obj (rseq_push)  out / in buffer
 *   rcx    cl = shift; index (free)     cl = shift, then count (pop) or room, then k
 *   r8     __rseq_offset                __rseq_offset, count, loop index
 *   r9     region base                  word
 *   rax    descriptor, slot, index      descriptor, slot, then return value
 *   r10    word                         n
 *   r11    cap                          cap, then source/destination rounds
 *   rbx    -                            copy temporary (saved on the stack)
 *
 * Each routine: arm (store the descriptor address to rseq_cs, one 64-bit
 * store before start_ip), read cpu_id inside the section, find the slot,
 * load cap BEFORE the word, work, copy the new word to the slot's counters
 * page and commit with one 64-bit store of p_word (count and hits). The
 * copy is inside the section, so a drain's membarrier waits for it too;
 * the batches' add of k comes after the commit label, outside the
 * section, so an abort never counts twice. pop and push index the slot with
 * the sign-extended cpu_id: -1 (not registered) and -2 (registration
 * failed) land on the guard slots below the region, whose cap reads 0, so
 * they miss without a test; the batches test it. The abort handler
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
#define SLOT_WORD 64		/* count in bits 0-15, hits above */
#define SLOT_CAP 72
#define SLOT_ROUNDS 96
#define PCPU_HIT 0x10000
#define CACHE_FAST 0
#define PCPU_SHIFT 13
/* struct pcpu_counters, on the slot's second page (fastpath.h) */
#define PCPU_COUNTERS_OFF 4096
#define CTR_WORD (PCPU_COUNTERS_OFF + 0)
#define CTR_PUSHED (PCPU_COUNTERS_OFF + 8)
#define CTR_POPPED (PCPU_COUNTERS_OFF + 16)

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

/*
 * RSEQ_POP pfx, fail: pop one round from this CPU's slot.
 *   in:  %r9 = region base, \shift = $PCPU_SHIFT or %cl, %r8 = __rseq_offset
 *   out: %rax = object, the word copied to page 1; or a jump to \fail
 *   clobbers %rdx, %r10, %r11; keeps %rdi, %rsi, %rcx
 * The abort handler (RSEQ_ABORT pfx) goes after the routine's last ret.
 *
 *	slot = base + (cpu_id << shift)                     (cpu_id < 0: a guard)
 *	w = slot->p_word + PCPU_HIT - 1                     (cap loaded first)
 *	if (count(w) >= slot->p_cap) goto fail              (0xffff: was empty)
 *	obj = slot->p_rounds[count(w)]
 *	counters->pc_word = w                               (the copy, then)
 *	slot->p_word = w                                    (commit)
 */
.macro RSEQ_POP pfx, fail, shift
\pfx\()_retry:
	RSEQ_ARM \pfx\()_cs
\pfx\()_start:
	movslq %fs:RSEQ_CPU_ID_OFF(%r8), %rdx	/* cpu_id, sign-extended */
	shlq \shift, %rdx
	addq %r9, %rdx				/* slot (or a guard) */
	movl SLOT_CAP(%rdx), %r11d		/* cap first */
	movq SLOT_WORD(%rdx), %r10		/* then the word */
	addq $(PCPU_HIT - 1), %r10		/* one hit more, one round less */
	movzwl %r10w, %eax			/* count - 1 */
	cmpl %r11d, %eax
	jae \fail				/* empty (0xffff) or stopped */
	movq SLOT_ROUNDS(%rdx,%rax,8), %rax	/* obj = rounds[count - 1] */
	movq %r10, CTR_WORD(%rdx)		/* the copy, inside the section */
	movq %r10, SLOT_WORD(%rdx)		/* commit */
\pfx\()_commit:
	RSEQ_TABLES \pfx, \pfx\()_start, \pfx\()_commit, \pfx\()_abort, \fail
.endm

/*
 * RSEQ_PUSH pfx, fail, shift, obj, idx, idx32: push \obj onto this CPU's slot.
 *   in:  %r9 = region base, \shift = $PCPU_SHIFT or %cl, %r8 = __rseq_offset,
 *        \obj = the object's register, \idx (\idx32) = a scratch register
 *   out: the word copied to page 1; or a jump to \fail
 *   clobbers %rax, %r10, %r11, \idx
 *
 *	slot = base + (cpu_id << shift)                     (cpu_id < 0: a guard)
 *	w = slot->p_word                                    (cap loaded first)
 *	if (count(w) >= slot->p_cap) goto fail              (full or stopped)
 *	slot->p_rounds[count(w)] = obj                      (unseen until the commit)
 *	counters->pc_word = w + PCPU_HIT + 1                (the copy, then)
 *	slot->p_word = w + PCPU_HIT + 1                     (commit)
 */
.macro RSEQ_PUSH pfx, fail, shift, obj, idx, idx32
\pfx\()_retry:
	RSEQ_ARM \pfx\()_cs
\pfx\()_start:
	movslq %fs:RSEQ_CPU_ID_OFF(%r8), %rax	/* cpu_id, sign-extended */
	shlq \shift, %rax
	addq %r9, %rax				/* slot (or a guard) */
	movl SLOT_CAP(%rax), %r11d		/* cap first */
	movq SLOT_WORD(%rax), %r10		/* then the word */
	movzwl %r10w, \idx32			/* count */
	cmpl %r11d, \idx32
	jae \fail				/* full or stopped */
	movq \obj, SLOT_ROUNDS(%rax,\idx,8)
	addq $(PCPU_HIT + 1), %r10		/* one hit more, one round more */
	movq %r10, CTR_WORD(%rax)		/* the copy, inside the section */
	movq %r10, SLOT_WORD(%rax)		/* commit */
\pfx\()_commit:
	RSEQ_TABLES \pfx, \pfx\()_start, \pfx\()_commit, \pfx\()_abort, \fail
.endm

/* The signature, then the abort handler: re-arm and retry. */
.macro RSEQ_ABORT pfx
	RSEQ_SIGNATURE
\pfx\()_abort:
	jmp \pfx\()_retry
.endm

.macro FUNC name, visibility
	.p2align 4, 0xcc				/* int3 padding, never run */
	.globl \name
	.\visibility \name
	.type \name, @function
\name:
	.cfi_startproc
	_CET_ENDBR
.endm

.macro ENDFUNC name
	.cfi_endproc
	.size \name, . - \name
.endm

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

/* int uslab_rseq_push(char *base, unsigned shift, void *obj): 1, or 0 on a miss. */
FUNC uslab_rseq_push, hidden
	movq %rdi, %r9
	movl %esi, %ecx
	movq uslab_rseq_off(%rip), %r8
	RSEQ_PUSH .Lpush, .Lpush_fail, %cl, %rdx, %rdi, %edi	/* base is in %r9 */
	movl $1, %eax
	ret
.Lpush_fail:
	xorl %eax, %eax
	ret
	RSEQ_ABORT .Lpush
ENDFUNC uslab_rseq_push

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
	leaq SLOT_ROUNDS(%rax,%r11,8), %r11	/* &rounds[count - k] */
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
	leaq SLOT_ROUNDS(%rax,%r8,8), %r11	/* &rounds[count] */
	xorl %r8d, %r8d
.Lpushb_copy:
	movq (%rdx,%r8,8), %rbx
	movq %rbx, (%r11,%r8,8)			/* unseen until commit */
	incq %r8
	cmpq %rcx, %r8
	jb .Lpushb_copy
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
