/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fdtab.h - which kernel fds are fsstack sockets.
 *
 * Every fsstack socket is backed by a real kernel fd, its placeholder, so the
 * kernel hands out fd numbers and they never collide with the application's
 * files.  The ownership table is indexed by that kernel fd: fss_fdtab[fd]
 * points at the socket object (the analogue of the kernel's struct file; dup
 * makes two entries point at one object) or is NULL for every fd the shim
 * does not own.  Ownership is never inferred from the fd number.
 *
 * Readers (every wrapper) take no lock: two acquire loads, page then entry.
 * Writers are the wrappers that create, duplicate and close fds: an entry is
 * set after its kernel fd exists and cleared before the kernel fd is closed,
 * so a number the kernel reuses for a file is never found owned.
 *
 * Socket objects are type-stable: they come from a pool that never returns
 * memory, so a reader that loaded a pointer just before the socket was
 * closed can safely try to take a reference (fss_file__get: increment if not
 * zero, then re-check the entry).
 */
#ifndef FSS_FDTAB_H
#define FSS_FDTAB_H

#include "shim.h"

#define FSS_FDTAB_PAGE_SHIFT 12
#define FSS_FDTAB_PAGE_SIZE  (1u << FSS_FDTAB_PAGE_SHIFT)
#define FSS_FDTAB_PAGES      256
/* fds at or above this are never fsstack sockets (creating one there fails
 * over to the kernel); 1M, nginx's largest common worker_rlimit_nofile. */
#define FSS_FDTAB_MAX        (FSS_FDTAB_PAGE_SIZE * FSS_FDTAB_PAGES)

struct fss_file;

/* Page pointers and entries: written by fss_fdtab__set/xchg (any thread,
 * atomic exchange), read lock-free by every wrapper. */
extern _Atomic(struct fss_file *) *_Atomic fss_fdtab_pages[FSS_FDTAB_PAGES];
/* Number of non-NULL entries; 0 lets poll/select/epoll skip their scans.
 * Written with atomic add by set/xchg, read relaxed. */
extern _Atomic long fss_fdtab_count;

static inline struct fss_file *fss_fdtab__peek(int fd)
{
	_Atomic(struct fss_file *) *page;

	if (FSS_UNLIKELY((unsigned int)fd >= FSS_FDTAB_MAX))
		return NULL;
	page = atomic_load_explicit(&fss_fdtab_pages[(unsigned int)fd >> FSS_FDTAB_PAGE_SHIFT],
				    memory_order_acquire);
	if (FSS_LIKELY(page == NULL))
		return NULL;
	return atomic_load_explicit(&page[(unsigned int)fd & (FSS_FDTAB_PAGE_SIZE - 1)],
				    memory_order_acquire);
}

static inline bool fss_fdtab__any(void)
{
	return atomic_load_explicit(&fss_fdtab_count, memory_order_relaxed) != 0;
}

/* Installs s at fd (which must be a valid kernel fd below FSS_FDTAB_MAX) and
 * returns the previous entry, whose table reference the caller now owns.
 * s may be NULL to clear.  The table reference of s is the caller's. */
long fss_fdtab__xchg(int fd, struct fss_file *s, struct fss_file **old);

/* Calls fn(fd, s) for every owned fd in [first, last]; used by close_range,
 * closefrom and fork. */
void fss_fdtab__for_each(unsigned int first, unsigned int last,
			 void (*fn)(int fd, struct fss_file *s, void *arg), void *arg);

#endif /* FSS_FDTAB_H */
