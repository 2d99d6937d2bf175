/* SPDX-License-Identifier: MIT */
/* x86-64 rseq assembler macros shared by x86_64.S and x86_64-entry.S. */
/* An assembler include (.S files only): macros, no code, no data. */
#ifndef USLAB_X86_64_RSEQ_H
#define USLAB_X86_64_RSEQ_H

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

/* Every layout constant comes from the contract, which asserts it. */
#include "fastpath.h"

#define RSEQ_SIG PCPU_RSEQ_SIG
#define RSEQ_CS_OFF PCPU_RSEQ_CS
#define RSEQ_CPU_ID_OFF PCPU_RSEQ_CPU_ID
#define SLOT_WORD PCPU_SLOT_WORD /* count in bits 0-15, hits above */
#define SLOT_CAP PCPU_SLOT_CAP
#define SLOT_ROUNDS PCPU_SLOT_HDR
#define CACHE_FAST PCPU_CACHE_FAST
/* struct pcpu_counters, on the slot's second page */
#define CTR_WORD (PCPU_COUNTERS_OFF + PCPU_CTR_WORD)
#define CTR_PUSHED (PCPU_COUNTERS_OFF + PCPU_CTR_PUSHED)
#define CTR_POPPED (PCPU_COUNTERS_OFF + PCPU_CTR_POPPED)

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

#endif /* USLAB_X86_64_RSEQ_H */
