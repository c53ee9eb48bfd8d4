/* SPDX-License-Identifier: Apache-2.0 */
/*
 * file_pool.c - type-stable allocation of struct fss_file.
 *
 * Objects are carved from mmap'd slabs and never returned to the system, so
 * a pointer loaded from the fd table always points at a struct fss_file
 * (possibly recycled) and fss_file__get's increment-if-not-zero is safe.
 * Allocation and free take fss_pool.lock: they happen on socket creation and
 * close only, never on the data path or the passthrough path.
 */
#include <sys/mman.h>

#include "file.h"

#define FSS_POOL_SLAB (64 * 1024)

static _Atomic uint32_t fss_pool_serial = 1;

static struct {
	pthread_mutex_t lock;
	struct fss_file *free;	/* under lock */
} fss_pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

static long fss_pool__grow_locked(void)
{
	struct fss_file *slab;
	size_t i, n = FSS_POOL_SLAB / sizeof(*slab);

	slab = mmap(NULL, FSS_POOL_SLAB, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (slab == MAP_FAILED)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		slab[i].pool_next = fss_pool.free;
		fss_pool.free = &slab[i];
	}
	return 0;
}

struct fss_file *fss_file__alloc(void)
{
	struct fss_file *s = NULL;

	pthread_mutex_lock(&fss_pool.lock);
	if (fss_pool.free == NULL && fss_pool__grow_locked() < 0)
		goto out;
	s = fss_pool.free;
	fss_pool.free = s->pool_next;
out:
	pthread_mutex_unlock(&fss_pool.lock);
	if (s == NULL)
		return NULL;
	/* refs is the only field a stale reader may touch: it is 0 here and
	 * becomes 1 last, after the object is fully initialised. */
	atomic_store_explicit(&s->status_flags, 0, memory_order_relaxed);
	atomic_store_explicit(&s->rcvtimeo_ms, 0, memory_order_relaxed);
	atomic_store_explicit(&s->sndtimeo_ms, 0, memory_order_relaxed);
	atomic_store_explicit(&s->tx_nospace, 0, memory_order_relaxed);
	atomic_store_explicit(&s->linger_on, 0, memory_order_relaxed);
	atomic_store_explicit(&s->linger_secs, 0, memory_order_relaxed);
	atomic_store_explicit(&s->dmopts, 0, memory_order_relaxed);
	atomic_store_explicit(&s->connecting, 0, memory_order_relaxed);
	atomic_store_explicit(&s->klisten, 0, memory_order_relaxed);
	atomic_store_explicit(&s->ep_watch, 0, memory_order_relaxed);
	atomic_store_explicit(&s->kturn, 0, memory_order_relaxed);
	s->id = 0;
	s->serial = atomic_fetch_add_explicit(&fss_pool_serial, 1, memory_order_relaxed);
	pthread_mutex_init(&s->rx_lock, NULL);
	pthread_mutex_init(&s->tx_lock, NULL);
	s->pool_next = NULL;
	atomic_store_explicit(&s->refs, 1, memory_order_release);
	return s;
}

void fss_file__free(struct fss_file *s)
{
	pthread_mutex_destroy(&s->rx_lock);
	pthread_mutex_destroy(&s->tx_lock);
	pthread_mutex_lock(&fss_pool.lock);
	s->pool_next = fss_pool.free;
	fss_pool.free = s;
	pthread_mutex_unlock(&fss_pool.lock);
}

void fss_file__pool_atfork_prepare(void)
{
	pthread_mutex_lock(&fss_pool.lock);
}

void fss_file__pool_atfork_parent(void)
{
	pthread_mutex_unlock(&fss_pool.lock);
}

void fss_file__pool_atfork_child(void)
{
	pthread_mutex_init(&fss_pool.lock, NULL);
}
