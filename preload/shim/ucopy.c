/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ucopy.c - copying to and from the application's data buffers with EFAULT
 * instead of a crash, as the kernel's copy_to_user/copy_from_user.
 *
 * The data path copies between user buffers and the FIFOs with memcpy; a
 * buffer in an unmapped (or read-only, for reads into it) page would fault
 * in the shim and kill the host, where the kernel returns EFAULT.  Probing
 * each buffer with a syscall (process_vm_readv, mincore) costs microseconds
 * per call here, more than the copy itself, so the copy is guarded instead:
 *
 *   fss_ucopy: sigsetjmp (no mask saved: no syscall), publish the jump
 *              buffer in a thread-local, memcpy, clear it
 *   SIGSEGV/SIGBUS handler: the faulting thread has a jump buffer
 *              published --> siglongjmp back, fss_ucopy returns -EFAULT;
 *              otherwise the fault is not ours --> the handler that was
 *              installed before (called as the kernel would), or the
 *              default action
 *
 * The handlers are installed at the first guarded copy (only a process
 * using fsstack sockets ever has them).  An application that installs its
 * own SIGSEGV handler afterwards replaces them: faults in the shim's copies
 * then reach that handler, as they did before this existed.
 */
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>

#include "shim.h"

static FSS_TLS sigjmp_buf *volatile fss_ucopy_jb;
static struct sigaction fss_ucopy_old_segv, fss_ucopy_old_bus;
static _Atomic int fss_ucopy_state;	/* 0 none, 1 installing, 2 installed */

static void fss_ucopy__handler(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *jb = fss_ucopy_jb;
	struct sigaction *old = sig == SIGBUS ? &fss_ucopy_old_bus : &fss_ucopy_old_segv;

	if (jb != NULL && si->si_code > 0) {	/* a fault in a guarded copy */
		fss_ucopy_jb = NULL;
		siglongjmp(*jb, 1);
	}
	if (old->sa_flags & SA_SIGINFO) {
		old->sa_sigaction(sig, si, uc);
		return;
	}
	if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
		old->sa_handler(sig);
		return;
	}
	/* default action: a fault re-runs and takes it; a sent signal is
	 * raised again (SA_NODEFER: not blocked here) */
	signal(sig, SIG_DFL);
	if (si->si_code <= 0)
		raise(sig);
}

static void fss_ucopy__install(void)
{
	struct sigaction sa;
	int expected = 0;

	if (!atomic_compare_exchange_strong(&fss_ucopy_state, &expected, 1))
		return;		/* installed, or another thread installs it now */
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = fss_ucopy__handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	/* the old action is in place before ours can run */
	sigaction(SIGSEGV, NULL, &fss_ucopy_old_segv);
	sigaction(SIGBUS, NULL, &fss_ucopy_old_bus);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	atomic_store(&fss_ucopy_state, 2);
}

/* fss_ucopy__guarded runs copy(arg) with faults turned into -EFAULT: the
 * one guarded region every copy below goes through. */
struct fss_ucopy_job {
	void *dst;
	const void *src;
	size_t n;
	const struct iovec *iov;
	int iovcnt;
	uint8_t *ring;
	uint32_t ring_size, pos, len;
};

static long fss_ucopy__guarded(void (*copy)(const struct fss_ucopy_job *),
			       const struct fss_ucopy_job *job)
{
	sigjmp_buf jb;

	if (FSS_UNLIKELY(atomic_load_explicit(&fss_ucopy_state, memory_order_relaxed) != 2))
		fss_ucopy__install();
	if (sigsetjmp(jb, 0) != 0)
		return -EFAULT;
	fss_ucopy_jb = &jb;
	__asm__ volatile("" ::: "memory");
	copy(job);
	__asm__ volatile("" ::: "memory");
	fss_ucopy_jb = NULL;
	return 0;
}

static __attribute__((noinline)) void fss_ucopy__flat(const struct fss_ucopy_job *j)
{
	memcpy(j->dst, j->src, j->n);
}

long fss_ucopy(void *dst, const void *src, size_t n)
{
	struct fss_ucopy_job job = { .dst = dst, .src = src, .n = n };

	if (n == 0)
		return 0;
	return fss_ucopy__guarded(fss_ucopy__flat, &job);
}

/* The ring copies of the data path: the loops, then each as one guarded
 * region. */
static __attribute__((noinline)) void fss_ring_to_iov(const struct iovec *iov, int iovcnt,
						      const uint8_t *ring, uint32_t ring_size,
						      uint32_t pos, uint32_t n)
{
	int i;

	for (i = 0; i < iovcnt && n > 0; i++) {
		uint32_t want = iov[i].iov_len < n ? (uint32_t)iov[i].iov_len : n;
		uint32_t off = pos & (ring_size - 1);
		uint32_t first = want < ring_size - off ? want : ring_size - off;

		memcpy(iov[i].iov_base, ring + off, first);
		memcpy((char *)iov[i].iov_base + first, ring, want - first);
		pos += want;
		n -= want;
	}
}

static __attribute__((noinline)) void fss_iov_to_ring(uint8_t *ring, uint32_t ring_size,
						      uint32_t pos, const struct iovec *iov,
						      int iovcnt, uint32_t n)
{
	int i;

	for (i = 0; i < iovcnt && n > 0; i++) {
		uint32_t want = iov[i].iov_len < n ? (uint32_t)iov[i].iov_len : n;
		uint32_t off = pos & (ring_size - 1);
		uint32_t first = want < ring_size - off ? want : ring_size - off;

		memcpy(ring + off, iov[i].iov_base, first);
		memcpy(ring, (const char *)iov[i].iov_base + first, want - first);
		pos += want;
		n -= want;
	}
}

static void fss_ucopy__ring_to_iov(const struct fss_ucopy_job *j)
{
	fss_ring_to_iov(j->iov, j->iovcnt, j->ring, j->ring_size, j->pos, j->len);
}

static void fss_ucopy__iov_to_ring(const struct fss_ucopy_job *j)
{
	fss_iov_to_ring(j->ring, j->ring_size, j->pos, j->iov, j->iovcnt, j->len);
}

long fss_ucopy_ring_to_iov(const struct iovec *iov, int iovcnt, const uint8_t *ring,
			   uint32_t ring_size, uint32_t pos, uint32_t n)
{
	struct fss_ucopy_job job = { .iov = iov, .iovcnt = iovcnt, .ring = (uint8_t *)ring,
				     .ring_size = ring_size, .pos = pos, .len = n };

	if (n == 0)
		return 0;
	return fss_ucopy__guarded(fss_ucopy__ring_to_iov, &job);
}

long fss_ucopy_iov_to_ring(uint8_t *ring, uint32_t ring_size, uint32_t pos,
			   const struct iovec *iov, int iovcnt, uint32_t n)
{
	struct fss_ucopy_job job = { .iov = iov, .iovcnt = iovcnt, .ring = ring,
				     .ring_size = ring_size, .pos = pos, .len = n };

	if (n == 0)
		return 0;
	return fss_ucopy__guarded(fss_ucopy__iov_to_ring, &job);
}
