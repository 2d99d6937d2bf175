/* SPDX-License-Identifier: MIT */
/* The platform layer on Linux (os.h): POSIX and Linux system calls. */
#include "config.h"

#include <errno.h>
#include <execinfo.h>
#include <fnmatch.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "os.h"
#include "pagesrc.h"

/* MAP_NORESERVE throughout: the library's metadata and slots are mostly
 * untouched address space, not commit charge. */
static int os_prot_bits(enum os_prot prot)
{
	return prot == OS_RW ? PROT_READ | PROT_WRITE : prot == OS_READ ? PROT_READ : PROT_NONE;
}

void *os_map(size_t len, enum os_prot prot)
{
	void *p = mmap(NULL, len, os_prot_bits(prot), MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
	               -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void os_unmap(void *p, size_t len)
{
	int err = errno;
	munmap(p, len);
	errno = err;
}

void os_trim(void *p, size_t len)
{
	os_unmap(p, len);
}

bool os_protect(void *p, size_t len, enum os_prot prot)
{
	return mprotect(p, len, os_prot_bits(prot)) == 0;
}

bool os_commit(void *p, size_t len)
{
	return mmap(p, len, PROT_READ | PROT_WRITE,
	            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == p;
}

void os_discard(void *p, size_t len)
{
	int err = errno;
	(void)madvise(p, len, MADV_DONTNEED);
	errno = err;
}

size_t os_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

long os_ncpus(void)
{
	return sysconf(_SC_NPROCESSORS_CONF);
}

uint32_t os_tid(void)
{
	return (uint32_t)syscall(SYS_gettid);
}

void os_yield(void)
{
	sched_yield();
}

void os_sleep_ns(uint64_t ns)
{
	struct timespec d = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	nanosleep(&d, NULL);
}

void os_sig_block_all(os_sigset *old)
{
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

void os_sig_restore(const os_sigset *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

int os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	return pthread_atfork(prepare, parent, child);
}

void os_write_fd(int fd, const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

void os_write_stderr(const char *s, size_t len)
{
	int err = errno;
	os_write_fd(STDERR_FILENO, s, len);
	errno = err;
}

int os_backtrace(void **f, int n)
{
	return backtrace(f, n);
}

void os_backtrace_print(void *const *f, int n, int fd)
{
	backtrace_symbols_fd(f, n, fd);
}

struct os_text {
	uintptr_t me, lo, hi;
};

static int os_text_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct os_text *t = arg;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && t->me >= lo &&
		    t->me < lo + ph->p_memsz) {
			t->lo = lo;
			t->hi = lo + ph->p_memsz;
			return 1;
		}
	}
	return 0;
}

bool os_text_of(const void *addr, uintptr_t *lo, uintptr_t *hi)
{
	struct os_text t = {(uintptr_t)addr, 0, 0};

	if (dl_iterate_phdr(os_text_cb, &t) == 0)
		return false;
	*lo = t.lo;
	*hi = t.hi;
	return true;
}

bool os_match(const char *pattern, const char *name)
{
	return fnmatch(pattern, name, 0) == 0;
}

/* Windows' page source does not exist here. */
const struct uslab_pagesrc *uslab_pagesrc_virtualalloc(void)
{
	errno = ENOSYS;
	return NULL;
}
