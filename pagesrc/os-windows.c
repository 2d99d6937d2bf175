/* SPDX-License-Identifier: MIT */
/* The platform layer on Windows (os.h): Win32 calls, built with mingw-w64. */
#include "config.h"

#include <errno.h>
#include <io.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <windows.h>

#include "os.h"

/*
 * Design
 *
 * Memory is VirtualAlloc's: os_map(OS_NONE) reserves, the others reserve
 * and commit; os_protect() commits what it opens (committing a committed
 * page again is allowed) and sets the protection; os_trim() decommits,
 * since only a whole reservation can be released; os_discard() decommits
 * and commits again, which gives zeroed pages on the next touch like
 * Linux's MADV_DONTNEED. Threads are winpthreads' (mingw-w64's pthreads),
 * so the layers' mutexes, once and keys are the same code on both.
 * Windows has no fork and no signal masks: those calls do nothing.
 */

static DWORD os_prot_bits(enum os_prot prot)
{
	return prot == OS_RW ? PAGE_READWRITE : prot == OS_READ ? PAGE_READONLY : PAGE_NOACCESS;
}

void *os_map(size_t len, enum os_prot prot)
{
	DWORD type = prot == OS_NONE ? MEM_RESERVE : MEM_RESERVE | MEM_COMMIT;
	return VirtualAlloc(NULL, len, type, prot == OS_NONE ? PAGE_NOACCESS : os_prot_bits(prot));
}

void os_unmap(void *p, size_t len)
{
	(void)len;
	int err = errno;
	VirtualFree(p, 0, MEM_RELEASE);
	errno = err;
}

void os_trim(void *p, size_t len)
{
	int err = errno;
	VirtualFree(p, len, MEM_DECOMMIT);
	errno = err;
}

bool os_protect(void *p, size_t len, enum os_prot prot)
{
	DWORD old;

	if (prot == OS_NONE) {
		MEMORY_BASIC_INFORMATION mi;
		if (VirtualProtect(p, len, PAGE_NOACCESS, &old))
			return true;
		/* Reserved, never committed: no access already. */
		return VirtualQuery(p, &mi, sizeof mi) == sizeof mi && mi.State == MEM_RESERVE &&
		       mi.RegionSize >= len;
	}
	return VirtualAlloc(p, len, MEM_COMMIT, os_prot_bits(prot)) == p &&
	       VirtualProtect(p, len, os_prot_bits(prot), &old);
}

bool os_commit(void *p, size_t len)
{
	DWORD old;

	/* Fresh pages: decommit whatever was there first. */
	VirtualFree(p, len, MEM_DECOMMIT);
	return VirtualAlloc(p, len, MEM_COMMIT, PAGE_READWRITE) == p &&
	       VirtualProtect(p, len, PAGE_READWRITE, &old);
}

void os_discard(void *p, size_t len)
{
	int err = errno;
	MEMORY_BASIC_INFORMATION mi;
	DWORD prot = PAGE_READWRITE;

	if (VirtualQuery(p, &mi, sizeof mi) == sizeof mi && mi.State == MEM_COMMIT)
		prot = mi.Protect;
	if (VirtualFree(p, len, MEM_DECOMMIT))
		(void)VirtualAlloc(p, len, MEM_COMMIT, prot);
	errno = err;
}

size_t os_page_size(void)
{
	SYSTEM_INFO si;
	GetSystemInfo(&si);
	return si.dwPageSize;
}

int os_cpu_now(void)
{
	return (int)GetCurrentProcessorNumber();
}

long os_ncpus(void)
{
	DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
	if (n == 0) {
		SYSTEM_INFO si;
		GetSystemInfo(&si);
		n = si.dwNumberOfProcessors;
	}
	return (long)n;
}

uint32_t os_tid(void)
{
	return (uint32_t)GetCurrentThreadId();
}

void os_yield(void)
{
	SwitchToThread();
}

void os_sleep_ns(uint64_t ns)
{
	Sleep((DWORD)((ns + 999999u) / 1000000u));
}

void os_sig_block_all(os_sigset *old)
{
	*old = 0;
}

void os_sig_restore(const os_sigset *old)
{
	(void)old;
}

int os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	(void)prepare;
	(void)parent;
	(void)child;
	return 0;
}

void os_write_fd(int fd, const char *s, size_t len)
{
	HANDLE h = fd == 1   ? GetStdHandle(STD_OUTPUT_HANDLE)
	           : fd == 2 ? GetStdHandle(STD_ERROR_HANDLE)
	                     : (HANDLE)(intptr_t)_get_osfhandle(fd);
	while (len > 0 && h != INVALID_HANDLE_VALUE && h != NULL) {
		DWORD n = 0;
		if (!WriteFile(h, s, len > 65536 ? 65536 : (DWORD)len, &n, NULL) || n == 0)
			return;
		s += n;
		len -= n;
	}
}

void os_write_stderr(const char *s, size_t len)
{
	int err = errno;
	os_write_fd(2, s, len);
	errno = err;
}

int os_backtrace(void **f, int n)
{
	return (int)CaptureStackBackTrace(1, (DWORD)n, f, NULL);
}

/* Address, module and offset: no symbols without debug information. */
void os_backtrace_print(void *const *f, int n, int fd)
{
	for (int i = 0; i < n; i++) {
		char line[MAX_PATH + 64], mod[MAX_PATH] = "?";
		HMODULE m = NULL;
		if (GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
		                               GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
		                       (LPCSTR)f[i], &m) &&
		    GetModuleFileNameA(m, mod, sizeof mod) == 0)
			strcpy(mod, "?");
		int len = snprintf(line, sizeof line, "%s(+0x%llx) [%p]\n", mod,
		                   (unsigned long long)((char *)f[i] - (char *)m), f[i]);
		if (len > 0)
			os_write_fd(fd, line,
			            (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
	}
}

/* The executable sections of the module (its PE image) holding @addr. */
bool os_text_of(const void *addr, uintptr_t *lo, uintptr_t *hi)
{
	MEMORY_BASIC_INFORMATION mi;

	if (VirtualQuery(addr, &mi, sizeof mi) != sizeof mi || mi.AllocationBase == NULL ||
	    mi.Type != MEM_IMAGE)
		return false; /* not a module's memory (a stack, a heap) */
	const char *base = mi.AllocationBase;
	const IMAGE_DOS_HEADER *dos = (const IMAGE_DOS_HEADER *)base;
	if (dos->e_magic != IMAGE_DOS_SIGNATURE)
		return false;
	const IMAGE_NT_HEADERS *nt = (const IMAGE_NT_HEADERS *)(base + dos->e_lfanew);
	const IMAGE_SECTION_HEADER *sec = IMAGE_FIRST_SECTION(nt);
	for (unsigned i = 0; i < nt->FileHeader.NumberOfSections; i++) {
		uintptr_t s = (uintptr_t)base + sec[i].VirtualAddress;
		if ((sec[i].Characteristics & IMAGE_SCN_MEM_EXECUTE) && (uintptr_t)addr >= s &&
		    (uintptr_t)addr < s + sec[i].Misc.VirtualSize) {
			*lo = s;
			*hi = s + sec[i].Misc.VirtualSize;
			return true;
		}
	}
	return false;
}

/* One [...] set at @p (after the '['); its end in *@end, NULL if unclosed. */
static bool os_match_set(const char *p, char c, const char **end)
{
	bool neg = *p == '!' || *p == '^', in = false;

	if (neg)
		p++;
	for (bool first = true; *p != '\0' && (first || *p != ']'); first = false) {
		char a = *p++, b = a;
		if (*p == '-' && p[1] != ']' && p[1] != '\0') {
			b = p[1];
			p += 2;
		}
		if (c >= a && c <= b)
			in = true;
	}
	*end = *p == ']' ? p + 1 : NULL;
	return in != neg;
}

bool os_match(const char *p, const char *s)
{
	for (; *p != '\0'; p++, s++) {
		if (*p == '*') {
			while (p[1] == '*')
				p++;
			for (const char *t = s;; t++) {
				if (os_match(p + 1, t))
					return true;
				if (*t == '\0')
					return false;
			}
		}
		if (*s == '\0')
			return false;
		if (*p == '[') {
			const char *end;
			bool in = os_match_set(p + 1, *s, &end);
			if (end != NULL) {
				if (!in)
					return false;
				p = end - 1;
				continue;
			}
		}
		if (*p == '\\' && p[1] != '\0')
			p++;
		if (*p != '?' && *p != *s)
			return false;
	}
	return *s == '\0';
}
