/* SPDX-License-Identifier: Apache-2.0 */
/* fdtab.c - the ownership table; see fdtab.h for the contract. */
#include <sys/mman.h>

#include "fdtab.h"

_Atomic(struct fss_file *) *_Atomic fss_fdtab_pages[FSS_FDTAB_PAGES];
_Atomic long fss_fdtab_count;

static _Atomic(struct fss_file *) *fss_fdtab__page(unsigned int idx)
{
	_Atomic(struct fss_file *) *page, *expected = NULL;
	size_t len = FSS_FDTAB_PAGE_SIZE * sizeof(*page);

	page = atomic_load_explicit(&fss_fdtab_pages[idx], memory_order_acquire);
	if (page != NULL)
		return page;
	/* mmap, not malloc: the application may interpose malloc, and a
	 * zeroed mapping is exactly an empty page. */
	page = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return NULL;
	if (!atomic_compare_exchange_strong_explicit(&fss_fdtab_pages[idx], &expected, page,
						     memory_order_acq_rel, memory_order_acquire)) {
		munmap(page, len);
		return expected;
	}
	return page;
}

long fss_fdtab__xchg(int fd, struct fss_file *s, struct fss_file **old)
{
	_Atomic(struct fss_file *) *page;
	struct fss_file *prev;

	*old = NULL;
	if ((unsigned int)fd >= FSS_FDTAB_MAX)
		return s ? -EMFILE : 0;
	if (s == NULL) {
		page = atomic_load_explicit(&fss_fdtab_pages[(unsigned int)fd >> FSS_FDTAB_PAGE_SHIFT],
					    memory_order_acquire);
		if (page == NULL)
			return 0;
	} else {
		page = fss_fdtab__page((unsigned int)fd >> FSS_FDTAB_PAGE_SHIFT);
		if (page == NULL)
			return -ENOMEM;
	}
	prev = atomic_exchange_explicit(&page[(unsigned int)fd & (FSS_FDTAB_PAGE_SIZE - 1)], s,
					memory_order_acq_rel);
	atomic_fetch_add_explicit(&fss_fdtab_count, (s != NULL) - (prev != NULL),
				  memory_order_relaxed);
	*old = prev;
	return 0;
}

void fss_fdtab__for_each(unsigned int first, unsigned int last,
			 void (*fn)(int fd, struct fss_file *s, void *arg), void *arg)
{
	unsigned int fd;

	if (last >= FSS_FDTAB_MAX)
		last = FSS_FDTAB_MAX - 1;
	for (fd = first; fd <= last; fd++) {
		_Atomic(struct fss_file *) *page;
		struct fss_file *s;

		page = atomic_load_explicit(&fss_fdtab_pages[fd >> FSS_FDTAB_PAGE_SHIFT],
					    memory_order_acquire);
		if (page == NULL) {
			fd |= FSS_FDTAB_PAGE_SIZE - 1;	/* skip the page */
			if (fd == FSS_FDTAB_MAX - 1)
				break;
			continue;
		}
		s = atomic_load_explicit(&page[fd & (FSS_FDTAB_PAGE_SIZE - 1)],
					 memory_order_acquire);
		if (s != NULL)
			fn((int)fd, s, arg);
	}
}
