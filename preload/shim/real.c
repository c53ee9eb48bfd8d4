/* SPDX-License-Identifier: Apache-2.0 */
/*
 * real.c - the real-libc pointer table.
 *
 * Resolved once with dlsym(RTLD_NEXT): by the constructor in init.c, or
 * lazily by the first wrapper that runs before it (another library's
 * constructor may call write() before ours runs).  Resolution is idempotent
 * and every resolver stores the same values, so concurrent resolvers need no
 * lock.  Until a slot is resolved it holds fss_real__enosys, so a wrapper
 * re-entered from inside dlsym on the resolving thread fails with ENOSYS
 * instead of recursing or jumping to NULL; a symbol this libc lacks stays
 * that way.
 */
#include <dlfcn.h>

#include "shim.h"

/* Stand-in for a libc function that is not (yet) resolved.  Called through a
 * pointer of another type: on x86-64 and aarch64 the -1 it leaves in the
 * return register reads as -1 for every int/ssize_t/pid_t caller. */
static long fss_real__enosys(void)
{
	errno = ENOSYS;
	return -1;
}

#define FSS_STUB ((void (*)(void))fss_real__enosys)

struct fss_real fss_real = {
#define FSS_CALL(ret, name, params, args) .name = (ret (*) params)FSS_STUB,
#include "fss_calls.def"
};

_Atomic int fss_real_ready;

static const char *const fss_real_names[] = {
#define FSS_CALL(ret, name, params, args) #name,
#include "fss_calls.def"
};

_Static_assert(sizeof(struct fss_real) ==
	       sizeof(fss_real_names) / sizeof(fss_real_names[0]) * sizeof(void *),
	       "struct fss_real must be exactly one pointer per call");

void fss_real__resolve(void)
{
	int saved = errno;
	void **slot = (void **)&fss_real;
	size_t i, n = sizeof(fss_real_names) / sizeof(fss_real_names[0]);

	if (fss_tls.depth)		/* re-entered from dlsym: keep the stubs */
		return;
	fss_tls.depth++;
	for (i = 0; i < n; i++) {
		void *p = dlsym(RTLD_NEXT, fss_real_names[i]);

		if (p != NULL)
			__atomic_store_n(&slot[i], p, __ATOMIC_RELAXED);
	}
	fss_tls.depth--;
	atomic_store_explicit(&fss_real_ready, 1, memory_order_release);
	errno = saved;
}
