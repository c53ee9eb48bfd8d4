/* SPDX-License-Identifier: Apache-2.0 */
/*
 * epoll.c - epoll_create*, epoll_ctl, epoll_wait/pwait/pwait2 over sets that
 * mix kernel fds and fsstack sockets; see epoll.h for the shape.
 *
 * Finding ready fsstack items costs what is ready, not what is registered:
 *
 *   daemon: slot changed --> bit in the ready map --> wake fd (if sleepers)
 *   epoll_wait: drain the ready map (take words, exchange with 0)
 *               --> for each set bit, fss_watch[slot] lists the items of
 *                   every epoll set that watch that slot
 *               --> each goes on its set's ready list
 *               --> collect: evaluate only the ready list
 *
 * Semantics of fsstack items, as the kernel's:
 *   level-triggered  reported while readiness & interest is non-zero: an
 *                    item stays on the ready list until it evaluates
 *                    not ready (a later change puts it back);
 *   EPOLLET          reported when ready and the slot's ev_seq moved since
 *                    the last report, then off the ready list;
 *   EPOLLONESHOT     disabled after one report until EPOLL_CTL_MOD;
 *   daemon gone      every item reports ERR|HUP once, then is disabled
 *                    (no busy loop on sockets that can never recover);
 *   an item lives as long as its open file: the last close of the socket
 *   removes it from every set (fss_epoll__file_gone).
 *
 * Lock order: fss_watch_lock, then a set's fss_epoll.lock.  No client
 * request is made under either.  The epfd side table is read lock-free like
 * the fd table.
 *
 * An epoll fd is a number; its side object is shared by every number the
 * shim saw it duplicated to (dup, dup2, dup3, F_DUPFD), as the kernel's
 * interest list is shared by every copy of the open file.
 *
 * Nesting.  An epoll fd holding fsstack items inside another epoll set (or
 * polled, or selected) must read readable exactly while an epoll_wait on it
 * would report something.  Such a set is switched to nested mode: its real
 * set holds, in place of the wake fd, a per-set eventfd (level-triggered,
 * tagged FSS_TAG_SET, never reported) that is kept readable exactly while
 * its ready list evaluates non-empty:
 *
 *   - whoever drains the ready map (any epoll_wait/poll/select, or the
 *     helper thread) re-evaluates every nested set afterwards, writing the
 *     eventfd again when a slot it routed there is due (each new event is an
 *     edge to an outer EPOLLET set, as ep_poll_callback wakes the outer set
 *     on every event) and reading it empty when nothing is due;
 *   - epoll_ctl on the set, its own epoll_wait and the last close of a
 *     socket in it re-evaluate it too;
 *   - a helper thread sleeps on the wake fd while nested sets exist, so
 *     events arriving while nobody is in the shim still reach the eventfd;
 *   - every wait entry (epoll_wait on any set, poll, select) drains first,
 *     so a level dropped by the application's own reads is seen, as the
 *     kernel re-polls a nested set when the outer one is waited on.
 *
 * A set becomes nested when it is the target of an epoll_ctl ADD/MOD, is in
 * a poll/select set, or becomes an fsstack set (its first fsstack item) after
 * having been added to another set (a bit per fd number, set on every
 * successful ADD and cleared by epoll_create, remembers that).  With no
 * nested set, none of this costs more than one atomic load per wait, and no
 * thread exists.  After fork the child starts its own helper at its first
 * wait.  Limits: a dup made by a means the shim does not see (SCM_RIGHTS,
 * a raw syscall) is a separate number without the side object, and a set
 * added to another set through such a number is not known to be nested.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "client.h"
#include "epoll.h"

struct fss_epoll;

#define FSS_EP_LISTENERS 8

struct fss_epitem {
	/* fixed at ADD */
	struct fss_epoll *ep;
	int fd;
	struct fss_file *f;	/* not referenced: the file's release removes us */
	uint32_t serial;	/* f->serial at ADD */
	uint32_t slot;		/* the daemon slot of f */
	/* under ep->lock */
	uint32_t events;	/* interest incl. EPOLLET/EPOLLONESHOT */
	epoll_data_t data;
	uint32_t last_seq;	/* ev_seq at the last report (EPOLLET) */
	bool reported;		/* reported since the last ADD/MOD (EPOLLET) */
	bool disabled;		/* EPOLLONESHOT fired */
	bool on_rdl;
	struct fss_epitem *rdl_next, *rdl_prev;	/* ready list */
	/* under fss_watch_lock */
	struct fss_epitem *watch_next;		/* fss_watch[slot] list */
};

struct fss_epoll {
	pthread_mutex_t lock;
	/* under lock */
	struct fss_epitem **pos;	/* pos[fd]: the item for fd, or NULL */
	int npos;
	int n;				/* items */
	struct fss_epitem rdl;		/* ready list head (circular) */
	bool efd_on;			/* efd is readable */
	/* listeners among the items (added while listening), whose
	 * accept_waiters a sleeping wait raises: the first few only */
	struct fss_epitem *lst[FSS_EP_LISTENERS];
	int nlst;
	bool touched;			/* the drain routed a due item here */
	/* under fss_watch_lock and lock */
	bool nested;
	bool closed;			/* its last fd number was closed */
	int efd;			/* nested: the eventfd in the real set */
	struct fss_epoll *nest_next;	/* fss_nested list */
	/* atomic */
	_Atomic int refs;		/* fd numbers naming this set */
};

/* slot -> items watching it, across all epoll sets; sock_count entries,
 * allocated with the first item.  Under fss_watch_lock. */
static pthread_mutex_t fss_watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fss_epitem **fss_watch;
static uint32_t fss_watch_n;
/* Items in all sets; 0 lets epoll_wait skip the ready-map drain.  Atomic. */
static _Atomic long fss_watch_items;
/* Nested sets (under fss_watch_lock) and their count (atomic, read
 * without the lock by every wait entry). */
static struct fss_epoll *fss_nested;
static _Atomic int fss_nested_n;
/* fd numbers naming a side object (atomic). */
static _Atomic long fss_eptab_n;

#define FSS_EPTAB_SHIFT 12
#define FSS_EPTAB_PAGE  (1u << FSS_EPTAB_SHIFT)
#define FSS_EPTAB_PAGES 256
#define FSS_EPTAB_MAX   (FSS_EPTAB_PAGE * FSS_EPTAB_PAGES)

/* epfd -> side object; written by epoll_ctl/close (atomic), read lock-free. */
static _Atomic(struct fss_epoll *) *_Atomic fss_eptab[FSS_EPTAB_PAGES];
static pthread_mutex_t fss_eptab_lock = PTHREAD_MUTEX_INITIALIZER;	/* creation */

/* fd -> "added to an epoll set since epoll_create returned it" (atomic
 * bits; untouched pages of .bss cost nothing). */
static _Atomic uint64_t fss_epnest_bits[FSS_EPTAB_MAX / 64];

/* The helper thread (see the file comment). */
static pthread_mutex_t fss_helper_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool fss_helper_up;

static struct fss_epoll *fss_epoll__peek(int epfd)
{
	_Atomic(struct fss_epoll *) *page;

	if ((unsigned int)epfd >= FSS_EPTAB_MAX)
		return NULL;
	page = atomic_load_explicit(&fss_eptab[(unsigned int)epfd >> FSS_EPTAB_SHIFT],
				    memory_order_acquire);
	if (FSS_LIKELY(page == NULL))
		return NULL;
	return atomic_load_explicit(&page[(unsigned int)epfd & (FSS_EPTAB_PAGE - 1)],
				    memory_order_acquire);
}

bool fss_epoll__owned(int epfd)
{
	return fss_epoll__peek(epfd) != NULL;
}

static _Atomic(struct fss_epoll *) *fss_epoll__slot(int epfd)
{
	_Atomic(struct fss_epoll *) *page, *expected = NULL;
	unsigned int idx = (unsigned int)epfd >> FSS_EPTAB_SHIFT;
	size_t len = FSS_EPTAB_PAGE * sizeof(*page);

	page = atomic_load_explicit(&fss_eptab[idx], memory_order_acquire);
	if (page == NULL) {
		page = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (page == MAP_FAILED)
			return NULL;
		if (!atomic_compare_exchange_strong(&fss_eptab[idx], &expected, page)) {
			munmap(page, len);
			page = expected;
		}
	}
	return &page[(unsigned int)epfd & (FSS_EPTAB_PAGE - 1)];
}

static void fss_rdl__add(struct fss_epoll *ep, struct fss_epitem *it)
{
	if (it->on_rdl)
		return;
	it->rdl_prev = ep->rdl.rdl_prev;
	it->rdl_next = &ep->rdl;
	ep->rdl.rdl_prev->rdl_next = it;
	ep->rdl.rdl_prev = it;
	it->on_rdl = true;
}

static void fss_rdl__del(struct fss_epitem *it)
{
	if (!it->on_rdl)
		return;
	it->rdl_prev->rdl_next = it->rdl_next;
	it->rdl_next->rdl_prev = it->rdl_prev;
	it->on_rdl = false;
}

static bool fss_epitem__valid(const struct fss_epitem *it)
{
	return atomic_load_explicit(&it->f->refs, memory_order_acquire) > 0 &&
	       it->f->serial == it->serial;
}

/* What an epoll_wait would report for it now (0: nothing); *seq gets the
 * ev_seq, read before readiness so no edge is lost.  Holds it->ep->lock. */
static uint32_t fss_epitem__due(struct fss_epitem *it, uint32_t *seq)
{
	uint32_t ready;

	if (!fss_epitem__valid(it) || it->disabled)
		return 0;
	*seq = fss_client__event_seq(it->f);
	ready = fss_client__events(it->f) & (it->events | EPOLLERR | EPOLLHUP);
	/* A dead daemon never moves ev_seq again: an EPOLLET item already
	 * reported must still get its final ERR|HUP. */
	if (ready != 0 && (it->events & EPOLLET) && it->reported && it->last_seq == *seq &&
	    !fss_client__dead())
		return 0;
	return ready;
}

/* A nested set's eventfd follows its ready list: readable while an item on
 * it is due (items that are not are dropped, as collect would).  edge: an
 * event arrived for a due item; write even if already readable, so an
 * outer EPOLLET set sees a new edge.  Holds ep->lock. */
static void fss_epoll__level_locked(struct fss_epoll *ep, bool edge)
{
	struct fss_epitem *it, *next;
	bool due = false;
	uint32_t seq;

	if (!ep->nested)
		return;
	for (it = ep->rdl.rdl_next; it != &ep->rdl; it = next) {
		next = it->rdl_next;
		if (fss_epitem__due(it, &seq) != 0) {
			due = true;
			break;
		}
		fss_rdl__del(it);
	}
	if (due && (edge || !ep->efd_on)) {
		uint64_t one = 1;

		(void)!FSS_REAL(write)(ep->efd, &one, sizeof(one));
		ep->efd_on = true;
	} else if (!due && ep->efd_on) {
		uint64_t v;

		(void)!FSS_REAL(read)(ep->efd, &v, sizeof(v));
		ep->efd_on = false;
	}
}

/* Unlinks and frees an item.  Holds fss_watch_lock and it->ep->lock. */
static void fss_epitem__remove(struct fss_epitem *it)
{
	struct fss_epoll *ep = it->ep;
	struct fss_epitem **pp;

	ep->pos[it->fd] = NULL;
	ep->n--;
	fss_rdl__del(it);
	for (int i = 0; i < ep->nlst; i++)
		if (ep->lst[i] == it) {
			if ((it->events & EPOLLIN) && fss_epitem__valid(it))
				atomic_fetch_sub(&it->f->ep_watch, 1);
			ep->lst[i] = ep->lst[--ep->nlst];
			break;
		}
	for (pp = &fss_watch[it->slot]; *pp != NULL; pp = &(*pp)->watch_next) {
		if (*pp == it) {
			*pp = it->watch_next;
			break;
		}
	}
	atomic_fetch_sub(&fss_watch_items, 1);
	free(it);
}

/* Empties a closed epoll fd's side object.  The object itself is never
 * freed: a thread may still be inside epoll_wait on it (the kernel lets
 * that wait go on), so it must stay valid memory; it is a few dozen bytes
 * per epoll fd that ever held an fsstack socket. */
static void fss_epoll__destroy(struct fss_epoll *ep)
{
	int fd;

	pthread_mutex_lock(&fss_watch_lock);
	pthread_mutex_lock(&ep->lock);
	for (fd = 0; fd < ep->npos; fd++)
		if (ep->pos[fd] != NULL)
			fss_epitem__remove(ep->pos[fd]);
	free(ep->pos);
	ep->pos = NULL;
	ep->npos = 0;
	ep->closed = true;
	if (ep->nested) {
		struct fss_epoll **pp;

		for (pp = &fss_nested; *pp != NULL; pp = &(*pp)->nest_next) {
			if (*pp == ep) {
				*pp = ep->nest_next;
				break;
			}
		}
		fss_sys__close(ep->efd);
		ep->efd = -1;
		ep->nested = false;
		ep->efd_on = false;
		atomic_fetch_sub(&fss_nested_n, 1);
	}
	pthread_mutex_unlock(&ep->lock);
	pthread_mutex_unlock(&fss_watch_lock);
	/* the helper thread ends once no set is nested */
	if (atomic_load(&fss_nested_n) == 0 && atomic_load(&fss_helper_up))
		fss_client__poke();
}

/* The last reference to f is gone: drop its items from every set. */
void fss_epoll__file_gone(struct fss_file *f)
{
	uint32_t slot = FSS_SOCK_SLOT(f->id);
	struct fss_epitem *it, *next;

	if (atomic_load(&fss_watch_items) == 0 || f->id == 0)
		return;
	pthread_mutex_lock(&fss_watch_lock);
	if (fss_watch != NULL && slot < fss_watch_n) {
		for (it = fss_watch[slot]; it != NULL; it = next) {
			struct fss_epoll *ep = it->ep;

			next = it->watch_next;
			if (it->f != f || it->serial != f->serial)
				continue;
			pthread_mutex_lock(&ep->lock);
			fss_epitem__remove(it);
			fss_epoll__level_locked(ep, false);
			pthread_mutex_unlock(&ep->lock);
		}
	}
	pthread_mutex_unlock(&fss_watch_lock);
}

/* A number naming ep, or -1 (a scan of the side table: handovers only). */
static int fss_epoll__number(const struct fss_epoll *ep)
{
	unsigned int p, i;

	for (p = 0; p < FSS_EPTAB_PAGES; p++) {
		_Atomic(struct fss_epoll *) *page =
			atomic_load_explicit(&fss_eptab[p], memory_order_acquire);

		if (page == NULL)
			continue;
		for (i = 0; i < FSS_EPTAB_PAGE; i++)
			if (atomic_load_explicit(&page[i], memory_order_relaxed) == ep)
				return (int)(p * FSS_EPTAB_PAGE + i);
	}
	return -1;
}

struct fss_ephand {
	int epfd, fd;
	struct epoll_event ev;
	struct fss_ephand *next;
};

/* f is becoming a kernel socket (sock.c, fss_handover): takes its items out
 * of every set and returns what the kernel registrations must be. */
static struct fss_ephand *fss_epoll__items(struct fss_file *f, bool take)
{
	uint32_t slot = FSS_SOCK_SLOT(f->id);
	struct fss_ephand *list = NULL;
	struct fss_epitem *it, *next;

	if (atomic_load(&fss_watch_items) == 0 || f->id == 0)
		return NULL;
	pthread_mutex_lock(&fss_watch_lock);
	if (fss_watch != NULL && slot < fss_watch_n) {
		for (it = fss_watch[slot]; it != NULL; it = next) {
			struct fss_epoll *ep = it->ep;
			struct fss_ephand *h;

			next = it->watch_next;
			if (it->f != f || it->serial != f->serial)
				continue;
			pthread_mutex_lock(&ep->lock);
			h = malloc(sizeof(*h));
			if (h != NULL && !ep->closed && (h->epfd = fss_epoll__number(ep)) >= 0) {
				h->fd = it->fd;
				/* A one-shot item that fired keeps no interest, as
				 * the kernel's; it still reports ERR/HUP (BUG). */
				h->ev.events = it->disabled ?
					it->events & (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE) :
					it->events;
				h->ev.data = it->data;
				h->next = list;
				list = h;
			} else {
				free(h);
			}
			if (take) {
				fss_epitem__remove(it);
				fss_epoll__level_locked(ep, false);
			}
			pthread_mutex_unlock(&ep->lock);
		}
	}
	pthread_mutex_unlock(&fss_watch_lock);
	return list;
}

struct fss_ephand *fss_epoll__handover_take(struct fss_file *f)
{
	return fss_epoll__items(f, true);
}

/* f's placeholder starts listening on the kernel too (sock.c, klisten):
 * mirror every item of f by a kernel registration of the same fd. */
void fss_epoll__klisten(struct fss_file *f)
{
	fss_epoll__handover_give(fss_epoll__items(f, false));
}

/* Registers the handed-over fd in the real sets (same events and data). */
void fss_epoll__handover_give(struct fss_ephand *list)
{
	while (list != NULL) {
		struct fss_ephand *h = list;

		list = h->next;
		if (fss_sys__epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->fd, &h->ev) < 0)
			fss_debug(1, "handover: epoll_ctl(%d, ADD, %d): errno %d", h->epfd, h->fd, errno);
		free(h);
	}
}

/*
 * Moves every slot the daemon flagged in the ready map onto the ready lists
 * of the sets that watch it.  Once the daemon is gone, every item goes on
 * (they all report ERR|HUP).
 */
static void fss_epoll__helper_ensure(void);

static void fss_epoll__drain(void)
{
	uint32_t w, words;
	struct fss_epoll *ep;
	bool dead;

	if (FSS_UNLIKELY(atomic_load_explicit(&fss_nested_n, memory_order_relaxed) > 0))
		fss_epoll__helper_ensure();
	if (atomic_load_explicit(&fss_watch_items, memory_order_relaxed) == 0)
		return;
	dead = fss_client__dead();
	pthread_mutex_lock(&fss_watch_lock);
	words = fss_watch_n / 64;
	for (w = 0; w < words && fss_watch != NULL; w++) {
		uint64_t bits;

		if (!dead && __atomic_load_n(&fss_client.ready_map[w], __ATOMIC_RELAXED) == 0)
			continue;
		bits = dead ? ~0ull : __atomic_exchange_n(&fss_client.ready_map[w], 0, __ATOMIC_ACQ_REL);
		while (bits != 0) {
			uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(bits);
			struct fss_epitem *it;

			bits &= bits - 1;
			for (it = fss_watch[slot]; it != NULL; it = it->watch_next) {
				uint32_t seq;

				pthread_mutex_lock(&it->ep->lock);
				fss_rdl__add(it->ep, it);
				if (it->ep->nested && fss_epitem__due(it, &seq) != 0)
					it->ep->touched = true;
				pthread_mutex_unlock(&it->ep->lock);
			}
		}
	}
	/* nested sets: their eventfds follow what is due now */
	for (ep = fss_nested; ep != NULL; ep = ep->nest_next) {
		pthread_mutex_lock(&ep->lock);
		fss_epoll__level_locked(ep, ep->touched);
		ep->touched = false;
		pthread_mutex_unlock(&ep->lock);
	}
	pthread_mutex_unlock(&fss_watch_lock);
}

/* ---- nesting ----------------------------------------------------------- */

/* The helper's re-check, made after it announced itself as a sleeper. */
static bool fss_epoll__helper_check(void *arg)
{
	(void)arg;
	fss_epoll__drain();
	return atomic_load(&fss_nested_n) == 0;
}

static void *fss_epoll__helper(void *arg)
{
	long r;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&fss_helper_lock);
		/* no nested set left, or a dead daemon (no event will come) */
		if (atomic_load(&fss_nested_n) == 0 || fss_client__dead()) {
			atomic_store(&fss_helper_up, false);
			pthread_mutex_unlock(&fss_helper_lock);
			return NULL;
		}
		pthread_mutex_unlock(&fss_helper_lock);
		/* on the wake fd, through this thread's private epoll fd (which
		 * fss_client__block rebuilds if the application closed it) */
		r = fss_client__block(fss_epoll__helper_check, NULL, -1, false);
		if (r < 0 && r != -ETIMEDOUT) {	/* out of fds: try again shortly */
			struct timespec ts = { 0, 10000000 };

			nanosleep(&ts, NULL);
		}
	}
}

/* Starts the helper thread if a set is nested and it is not running (the
 * first nesting, or the first wait of a fork child). */
static void fss_epoll__helper_ensure(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;

	if (FSS_LIKELY(atomic_load_explicit(&fss_helper_up, memory_order_acquire)) ||
	    !fss_client.attached || fss_client__dead())
		return;
	pthread_mutex_lock(&fss_helper_lock);
	if (!atomic_load(&fss_helper_up) && atomic_load(&fss_nested_n) > 0) {
		/* no signal of the application's is ever delivered to it */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 64 * 1024);
		if (pthread_create(&t, &attr, fss_epoll__helper, NULL) == 0)
			atomic_store(&fss_helper_up, true);
		pthread_attr_destroy(&attr);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	pthread_mutex_unlock(&fss_helper_lock);
}

/* Switches ep (whose real set is epfd) to nested mode. */
static long fss_epoll__nest(struct fss_epoll *ep, int epfd)
{
	struct epoll_event ev;
	long r = 0;
	int efd;

	pthread_mutex_lock(&fss_watch_lock);
	pthread_mutex_lock(&ep->lock);
	if (ep->nested || ep->closed)
		goto out;
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0) {
		r = -errno;
		goto out;
	}
	efd = fss_client__hide_fd(efd);
	ev.events = EPOLLIN;
	ev.data.u64 = FSS_TAG_SET;
	if (fss_sys__epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev) < 0) {
		r = -errno;
		fss_sys__close(efd);
		goto out;
	}
	/* from now on the wake fd's edges would read as the set's readiness */
	fss_sys__epoll_ctl(epfd, EPOLL_CTL_DEL, fss_client.wake_fd, &ev);
	ep->efd = efd;
	ep->efd_on = false;
	ep->nested = true;
	ep->nest_next = fss_nested;
	fss_nested = ep;
	atomic_fetch_add(&fss_nested_n, 1);
	fss_epoll__level_locked(ep, false);
out:
	pthread_mutex_unlock(&ep->lock);
	pthread_mutex_unlock(&fss_watch_lock);
	if (r == 0)
		fss_epoll__helper_ensure();
	return r;
}

static void fss_epnest__set(int fd)
{
	_Atomic uint64_t *w;
	uint64_t m;

	if ((unsigned int)fd >= FSS_EPTAB_MAX)
		return;
	w = &fss_epnest_bits[(unsigned int)fd / 64];
	m = 1ull << ((unsigned int)fd % 64);
	if (!(atomic_load_explicit(w, memory_order_relaxed) & m))
		atomic_fetch_or(w, m);
}

static bool fss_epnest__get(int fd)
{
	if ((unsigned int)fd >= FSS_EPTAB_MAX)
		return false;
	return atomic_load_explicit(&fss_epnest_bits[(unsigned int)fd / 64], memory_order_relaxed) &
	       (1ull << ((unsigned int)fd % 64));
}

static void fss_epnest__clear(int fd)
{
	_Atomic uint64_t *w;
	uint64_t m;

	if ((unsigned int)fd >= FSS_EPTAB_MAX)
		return;
	w = &fss_epnest_bits[(unsigned int)fd / 64];
	m = 1ull << ((unsigned int)fd % 64);
	if (atomic_load_explicit(w, memory_order_relaxed) & m)
		atomic_fetch_and(w, ~m);
}

/* Before a wait on anything: nested sets' levels are brought up to date (the
 * kernel re-polls a nested set when the outer one is waited on). */
static void fss_epoll__before_wait(void)
{
	if (FSS_LIKELY(atomic_load_explicit(&fss_nested_n, memory_order_relaxed) == 0))
		return;
	if (!fss_guard__enter())
		return;
	fss_epoll__drain();
	fss_guard__exit();
}

/* poll/select are about to wait on fd: an fsstack set among them is nested. */
void fss_epoll__polled(int fd)
{
	struct fss_epoll *ep = fss_epoll__peek(fd);

	if (ep != NULL && !ep->nested && fss_guard__enter()) {
		fss_epoll__nest(ep, fd);
		fss_guard__exit();
	}
}

bool fss_epoll__any(void)
{
	return atomic_load_explicit(&fss_eptab_n, memory_order_relaxed) > 0;
}

void fss_epoll__poll_begin(void)
{
	fss_epoll__before_wait();
}

void fss_epoll__close(int fd)
{
	_Atomic(struct fss_epoll *) *slot;
	struct fss_epoll *ep;

	if (FSS_LIKELY(fss_epoll__peek(fd) == NULL))
		return;
	slot = fss_epoll__slot(fd);
	ep = atomic_exchange(slot, NULL);
	if (ep == NULL)
		return;
	atomic_fetch_sub(&fss_eptab_n, 1);
	if (atomic_fetch_sub(&ep->refs, 1) == 1)
		fss_epoll__destroy(ep);
}

void fss_epoll__dup(int oldfd, int newfd)
{
	_Atomic(struct fss_epoll *) *slot;
	struct fss_epoll *ep = fss_epoll__peek(oldfd), *old;

	if (ep == NULL || oldfd == newfd)
		return;
	pthread_mutex_lock(&fss_eptab_lock);
	slot = fss_epoll__slot(newfd);
	if (slot != NULL) {
		atomic_fetch_add(&ep->refs, 1);
		old = atomic_exchange(slot, ep);
		if (old == NULL)
			atomic_fetch_add(&fss_eptab_n, 1);
		else if (atomic_fetch_sub(&old->refs, 1) == 1)
			fss_epoll__destroy(old);
	}
	pthread_mutex_unlock(&fss_eptab_lock);
}

void fss_epoll__close_range(unsigned int first, unsigned int last)
{
	unsigned int fd;

	if (last >= FSS_EPTAB_MAX)
		last = FSS_EPTAB_MAX - 1;
	for (fd = first; fd <= last; fd++) {
		if (atomic_load(&fss_eptab[fd >> FSS_EPTAB_SHIFT]) == NULL) {
			fd |= FSS_EPTAB_PAGE - 1;
			if (fd >= last)
				break;
			continue;
		}
		fss_epoll__close((int)fd);
	}
}

/* The side object of epfd, created (with the wake fd added to the real
 * set, which also proves epfd is an epoll fd) if needed. */
static long fss_epoll__get(int epfd, struct fss_epoll **out)
{
	_Atomic(struct fss_epoll *) *slot;
	struct epoll_event ev;
	struct fss_epoll *ep;
	long r = 0;

	*out = fss_epoll__peek(epfd);
	if (*out != NULL)
		return 0;
	if ((unsigned int)epfd >= FSS_EPTAB_MAX)
		return -EMFILE;
	pthread_mutex_lock(&fss_eptab_lock);
	*out = fss_epoll__peek(epfd);
	if (*out != NULL)
		goto out;
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = FSS_TAG_WAKE;
	if (fss_sys__epoll_ctl(epfd, EPOLL_CTL_ADD, fss_client.wake_fd, &ev) < 0 &&
	    errno != EEXIST) {
		r = -errno;
		goto out;
	}
	ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
	ev.data.u64 = FSS_TAG_CTL;
	if (fss_sys__epoll_ctl(epfd, EPOLL_CTL_ADD, fss_client.ctl_fd, &ev) < 0 &&
	    errno != EEXIST) {
		r = -errno;
		goto out;
	}
	slot = fss_epoll__slot(epfd);
	ep = calloc(1, sizeof(*ep));
	if (slot == NULL || ep == NULL) {
		free(ep);
		r = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&ep->lock, NULL);
	ep->rdl.rdl_next = ep->rdl.rdl_prev = &ep->rdl;
	ep->efd = -1;
	atomic_store(&ep->refs, 1);
	atomic_fetch_add(&fss_eptab_n, 1);
	atomic_store_explicit(slot, ep, memory_order_release);
	*out = ep;
out:
	pthread_mutex_unlock(&fss_eptab_lock);
	/* added to another set before it held an fsstack socket */
	if (r == 0 && fss_epnest__get(epfd))
		fss_epoll__nest(*out, epfd);
	return r;
}

static long fss_epoll__ensure_watch_locked(void)
{
	if (fss_watch != NULL)
		return 0;
	fss_watch = calloc(fss_client.sock_count, sizeof(*fss_watch));
	if (fss_watch == NULL)
		return -ENOMEM;
	fss_watch_n = fss_client.sock_count;
	return 0;
}

/* Holds fss_watch_lock and ep->lock. */
static long fss_epoll__ctl_locked(struct fss_epoll *ep, int op, int fd, struct fss_file *f,
				  const struct epoll_event *ev)
{
	struct fss_epitem *it = fd < ep->npos ? ep->pos[fd] : NULL;
	long r;

	if (it != NULL && !(it->f == f && fss_epitem__valid(it))) {
		fss_epitem__remove(it);		/* a leftover of an earlier file */
		it = NULL;
	}
	switch (op) {
	case EPOLL_CTL_ADD:
		if (it != NULL)
			return -EEXIST;
		r = fss_epoll__ensure_watch_locked();
		if (r < 0)
			return r;
		if (FSS_SOCK_SLOT(f->id) >= fss_watch_n)
			return -EINVAL;
		if (fd >= ep->npos) {
			int n = fd < 64 ? 128 : fd * 2;
			struct fss_epitem **p = realloc(ep->pos, (size_t)n * sizeof(*p));

			if (p == NULL)
				return -ENOMEM;
			memset(p + ep->npos, 0, (size_t)(n - ep->npos) * sizeof(*p));
			ep->pos = p;
			ep->npos = n;
		}
		it = calloc(1, sizeof(*it));
		if (it == NULL)
			return -ENOMEM;
		it->ep = ep;
		it->fd = fd;
		it->f = f;
		it->serial = f->serial;
		it->slot = FSS_SOCK_SLOT(f->id);
		it->watch_next = fss_watch[it->slot];
		fss_watch[it->slot] = it;
		ep->pos[fd] = it;
		ep->n++;
		if (ep->nlst < FSS_EP_LISTENERS && fss_client__listening(f))
			ep->lst[ep->nlst++] = it;
		atomic_fetch_add(&fss_watch_items, 1);
		break;
	case EPOLL_CTL_MOD:
		if (it == NULL)
			return -ENOENT;
		if (it->events & EPOLLEXCLUSIVE)
			return -EINVAL;
		break;
	case EPOLL_CTL_DEL:
		if (it == NULL)
			return -ENOENT;
		fss_epitem__remove(it);
		return 0;
	default:
		return -EINVAL;
	}
	for (int i = 0; i < ep->nlst; i++)	/* a watched listener: ep_watch */
		if (ep->lst[i] == it) {
			int was = op == EPOLL_CTL_MOD && (it->events & EPOLLIN);
			int now = (ev->events & EPOLLIN) != 0;

			if (now != was)
				atomic_fetch_add(&f->ep_watch, now - was);
			break;
		}
	it->events = ev->events;
	it->data = ev->data;
	it->reported = false;
	it->disabled = false;
	fss_rdl__add(ep, it);		/* evaluate at the next wait */
	return 0;
}

/* A listener whose placeholder listens on the kernel too (klisten): the
 * item is mirrored by a kernel registration of the same fd with the same
 * events and data, so the kernel reports its accept queue itself. */
static void fss_epoll__kmirror(int epfd, int op, int fd, const struct epoll_event *ev)
{
	struct epoll_event kev = *ev;
	int r;

	r = fss_sys__epoll_ctl(epfd, op, fd, &kev);
	if (r < 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
		r = fss_sys__epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &kev);
	else if (r < 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
		r = fss_sys__epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &kev);
	if (r < 0 && !(op == EPOLL_CTL_DEL && errno == ENOENT))
		fss_debug(1, "klisten: epoll_ctl(%d, %d, %d): errno %d", epfd, op, fd, errno);
}

static long fss_epoll__ctl(int epfd, int op, int fd, struct fss_file *f, struct epoll_event *uev)
{
	struct epoll_event ev = { 0 };
	struct fss_epoll *ep;
	long r;

	/* the kernel's order: copy the event, then check the fds */
	if (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) {
		if (!fss_user_ok(uev, sizeof(*uev)))
			return -EFAULT;
		ev = *uev;
	}
	if (epfd == fd)
		return -EINVAL;
	if ((op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && (ev.events & EPOLLEXCLUSIVE)) {
		if (op == EPOLL_CTL_MOD)
			return -EINVAL;
		if (ev.events & ~(uint32_t)(EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP |
					    EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE))
			return -EINVAL;
	}
	r = fss_epoll__get(epfd, &ep);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fss_watch_lock);
	pthread_mutex_lock(&ep->lock);
	r = fss_epoll__ctl_locked(ep, op, fd, f, &ev);
	if (r == 0 && ep->nested) {
		uint32_t seq;
		/* a due item added or modified is an event for an outer set */
		bool edge = op != EPOLL_CTL_DEL && fss_epitem__due(ep->pos[fd], &seq) != 0;

		fss_epoll__level_locked(ep, edge);
	}
	pthread_mutex_unlock(&ep->lock);
	pthread_mutex_unlock(&fss_watch_lock);
	if (r == 0 && atomic_load(&f->klisten))
		fss_epoll__kmirror(epfd, op, fd, &ev);
	/* A thread may be asleep in epoll_wait on this set: the kernel would
	 * wake it for a ready fd added or modified; poke the wake fd. */
	if (r == 0 && op != EPOLL_CTL_DEL &&
	    (fss_client__events(f) & (ev.events | EPOLLERR | EPOLLHUP)))
		fss_client__poke();
	return r;
}

/* Reports ready items of ep's ready list into out[0..max). */
static int fss_epoll__collect(struct fss_epoll *ep, struct epoll_event *out, int max)
{
	struct fss_epitem *it, *next, *last;
	int n = 0;

	pthread_mutex_lock(&ep->lock);
	last = ep->rdl.rdl_prev;	/* items requeued below are not seen twice */
	for (it = ep->rdl.rdl_next; it != &ep->rdl && n < max; it = next) {
		uint32_t seq, ready;
		bool stop = it == last;

		next = it->rdl_next;
		fss_rdl__del(it);
		ready = fss_epitem__due(it, &seq);
		if (ready == 0)
			goto next;
		if (it->events & EPOLLET) {
			it->last_seq = seq;
			it->reported = true;
		} else if (!(it->events & EPOLLONESHOT)) {
			fss_rdl__add(ep, it);	/* level: stays, at the tail (round robin) */
		}
		/* Once the daemon is gone every socket is ERR|HUP for good:
		 * report each once, as if one-shot, so that a server whose
		 * accept now fails logs it once instead of spinning. */
		if ((it->events & EPOLLONESHOT) || fss_client__dead()) {
			it->disabled = true;
			fss_rdl__del(it);
		}
		out[n].events = ready;
		out[n].data = it->data;
		n++;
next:
		if (stop)
			break;
	}
	fss_epoll__level_locked(ep, false);
	pthread_mutex_unlock(&ep->lock);
	return n;
}

/* Drops the shim's tagged events from a kernel result; returns the count
 * left and whether a wake-up was among them. */
static int fss_epoll__filter(struct epoll_event *evs, int n, bool *woke)
{
	int i, j = 0;

	for (i = 0; i < n; i++) {
		if (evs[i].data.u64 == FSS_TAG_WAKE || evs[i].data.u64 == FSS_TAG_CTL ||
		    evs[i].data.u64 == FSS_TAG_SET) {
			fss_client__saw_event(evs[i].data.u64);
			*woke = true;
			continue;
		}
		evs[j++] = evs[i];
	}
	return j;
}

/* timeout_ns < 0: forever.  Returns a count or -errno.  Once it is going
 * to sleep, signals are held until it returns and each sleep has the
 * caller's mask (sigmask, or the thread's own): a signal handled on a loop
 * after a wake-up with nothing for this set would otherwise be lost, where
 * the kernel's epoll_wait says EINTR (client.c, "Signals on the blocking
 * paths"). */
/* A wait about to sleep counts itself in the accept_waiters of the set's
 * listeners that it watches for EPOLLIN (client.c); out gets their slots. */
static int fss_epoll__accept_wait(struct fss_epoll *ep, struct fss_await *out)
{
	int n = 0;

	pthread_mutex_lock(&ep->lock);
	for (int i = 0; i < ep->nlst; i++) {
		struct fss_epitem *it = ep->lst[i];

		if (!fss_epitem__valid(it) || it->disabled || !(it->events & EPOLLIN))
			continue;
		if (fss_client__accept_wait_begin(it->f, FSS_ACCEPT_RING_MAX, &out[n]))
			n++;
	}
	pthread_mutex_unlock(&ep->lock);
	return n;
}

/* How long this thread's last epoll sleep lasted (0: a spin found what it
 * waited for since).  A thread spins before it sleeps only while its
 * sleeps are shorter than FSS_SPIN_AFTER_SLEEP_NS: busy, so the next
 * readiness change is likely to come within the spin. */
static __thread int64_t fss_ep_last_sleep_ns;
#define FSS_SPIN_AFTER_SLEEP_NS 20000000

static long fss_epoll__wait(struct fss_epoll *ep, int epfd, struct epoll_event *evs, int max,
			    int64_t timeout_ns, const sigset_t *sigmask)
{
	int64_t deadline = timeout_ns > 0 ? fss_now_ns() + timeout_ns : 0;
	const sigset_t *wmask = sigmask;
	sigset_t old;
	bool woke, held = false, spun = false;
	int64_t slept;
	long r;
	int n, k, ms, naw;
	struct fss_await aw[FSS_EP_LISTENERS];

	for (;;) {
		fss_epoll__drain();
		n = fss_epoll__collect(ep, evs, max);
		if (n == 0 && timeout_ns != 0 && !held) {
			held = fss_client__sig_hold(&old);
			if (held) {
				if (sigmask == NULL)
					wmask = &old;
				continue;	/* check again under the hold */
			}
		}
		/* Under the hold: a signal that comes while it spins is
		 * delivered in the sleep (EINTR) or at the release.  Only a
		 * thread whose last sleep was short spins: an idle one does
		 * not burn the spin on every wait. */
		if (n == 0 && timeout_ns != 0 && !spun && fss_ep_last_sleep_ns < FSS_SPIN_AFTER_SLEEP_NS) {
			spun = true;
			if (fss_client__spin(timeout_ns, wmask)) {
				fss_ep_last_sleep_ns = 0;
				continue;
			}
		}
		if (n == 0) {
			naw = fss_epoll__accept_wait(ep, aw);
			fss_client__sleep_begin();
			fss_epoll__drain();
			n = fss_epoll__collect(ep, evs, max);
			if (n == 0) {
				if (timeout_ns < 0) {
					ms = -1;
				} else if (timeout_ns == 0) {
					ms = 0;
				} else {
					int64_t left = deadline - fss_now_ns();

					ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
				}
				slept = fss_now_ns();
				k = FSS_REAL(epoll_pwait)(epfd, evs, max, ms, wmask);
				fss_ep_last_sleep_ns = fss_now_ns() - slept;
				fss_client__sleep_end();
				fss_client__accept_waits_end(aw, naw);
				if (k < 0) {
					r = -errno;
					break;
				}
				woke = false;
				k = fss_epoll__filter(evs, k, &woke);
				if (woke && k < max) {
					fss_epoll__drain();
					k += fss_epoll__collect(ep, evs + k, max - k);
				}
				if (k > 0) {
					r = k;
					break;
				}
				if (ms == 0 && (timeout_ns == 0 || deadline - fss_now_ns() <= 0)) {
					r = 0;
					break;
				}
				continue;
			}
			fss_client__sleep_end();
			fss_client__accept_waits_end(aw, naw);
		}
		/* fsstack items are ready: add what the kernel has, without waiting */
		if (n < max) {
			woke = false;
			k = FSS_REAL(epoll_pwait)(epfd, evs + n, max - n, 0, wmask);
			if (k > 0)
				n += fss_epoll__filter(evs + n, k, &woke);
		}
		r = n;
		break;
	}
	fss_client__sig_release(held, &old);
	return r;
}

void fss_epoll__atfork_prepare(void)
{
	pthread_mutex_lock(&fss_eptab_lock);
	pthread_mutex_lock(&fss_watch_lock);
}

void fss_epoll__atfork_parent(void)
{
	pthread_mutex_unlock(&fss_watch_lock);
	pthread_mutex_unlock(&fss_eptab_lock);
}

void fss_epoll__atfork_child(void)
{
	unsigned int p, i;

	pthread_mutex_init(&fss_watch_lock, NULL);
	pthread_mutex_init(&fss_eptab_lock, NULL);
	/* the helper did not come along: the child's first wait starts one */
	pthread_mutex_init(&fss_helper_lock, NULL);
	atomic_store(&fss_helper_up, false);
	for (p = 0; p < FSS_EPTAB_PAGES; p++) {
		_Atomic(struct fss_epoll *) *page = atomic_load(&fss_eptab[p]);

		for (i = 0; page != NULL && i < FSS_EPTAB_PAGE; i++) {
			struct fss_epoll *ep = atomic_load(&page[i]);

			if (ep != NULL)
				pthread_mutex_init(&ep->lock, NULL);
		}
	}
}

/* ---- entry points ------------------------------------------------------ */

FSS_EXPORT int epoll_create(int size)
{
	int r = FSS_REAL(epoll_create)(size);

	fss_epnest__clear(r);
	return r;
}

FSS_EXPORT int epoll_create1(int flags)
{
	int r = FSS_REAL(epoll_create1)(flags);

	fss_epnest__clear(r);
	return r;
}

/* epoll_ctl on a kernel fd, which may be an epoll fd: one holding fsstack
 * sockets becomes nested before it joins the set (or is re-polled by MOD);
 * any other is remembered in case it gets fsstack sockets later. */
static int fss_epoll__ctl_kernel(int epfd, int op, int fd, struct epoll_event *event)
{
	struct fss_epoll *ep;
	int r;

	if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD)
		return FSS_REAL(epoll_ctl)(epfd, op, fd, event);
	ep = fss_epoll__peek(fd);
	if (FSS_UNLIKELY(ep != NULL) && epfd != fd && fss_guard__enter()) {
		int saved = errno;

		if (!ep->nested)
			fss_epoll__nest(ep, fd);
		else
			fss_epoll__drain();
		fss_guard__exit();
		errno = saved;
	}
	r = FSS_REAL(epoll_ctl)(epfd, op, fd, event);
	if (r == 0 && op == EPOLL_CTL_ADD)
		fss_epnest__set(fd);
	return r;
}

FSS_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
	struct fss_file *f;
	int saved;
	long r;

	if (FSS_LIKELY(fss_fdtab__peek(fd) == NULL))
		return fss_epoll__ctl_kernel(epfd, op, fd, event);
	if (!fss_guard__enter())
		return FSS_REAL(epoll_ctl)(epfd, op, fd, event);
	f = fss_file__get(fd);
	if (f == NULL) {
		fss_guard__exit();
		return fss_epoll__ctl_kernel(epfd, op, fd, event);
	}
	saved = errno;
	r = fss_epoll__ctl(epfd, op, fd, f, event);
	fss_file__put(f);
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}

static int fss_epoll__entry(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns,
			    const sigset_t *sigmask)
{
	struct fss_epoll *ep;
	int saved;
	long r;

	ep = fss_epoll__peek(epfd);
	if (ep == NULL || max <= 0 || !fss_guard__enter())
		return -2;	/* not ours: the caller passes through */
	if (!fss_user_ok(evs, (size_t)max * sizeof(*evs))) {
		fss_guard__exit();
		errno = EFAULT;
		return -1;
	}
	saved = errno;
	r = fss_epoll__wait(ep, epfd, evs, max, timeout_ns, sigmask);
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}

FSS_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	int r;

	if (FSS_LIKELY(fss_epoll__peek(epfd) == NULL)) {
		fss_epoll__before_wait();
		return FSS_REAL(epoll_wait)(epfd, events, maxevents, timeout);
	}
	r = fss_epoll__entry(epfd, events, maxevents,
			     timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL);
	return r != -2 ? r : FSS_REAL(epoll_wait)(epfd, events, maxevents, timeout);
}

FSS_EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout,
			   const sigset_t *sigmask)
{
	int r;

	if (FSS_LIKELY(fss_epoll__peek(epfd) == NULL)) {
		fss_epoll__before_wait();
		return FSS_REAL(epoll_pwait)(epfd, events, maxevents, timeout, sigmask);
	}
	r = fss_epoll__entry(epfd, events, maxevents,
			     timeout < 0 ? -1 : (int64_t)timeout * 1000000, sigmask);
	return r != -2 ? r : FSS_REAL(epoll_pwait)(epfd, events, maxevents, timeout, sigmask);
}

FSS_EXPORT int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents,
			    const struct timespec *timeout, const sigset_t *sigmask)
{
	int r;

	if (FSS_LIKELY(fss_epoll__peek(epfd) == NULL) || (timeout != NULL &&
	    (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000))) {
		fss_epoll__before_wait();
		return FSS_REAL(epoll_pwait2)(epfd, events, maxevents, timeout, sigmask);
	}
	r = fss_epoll__entry(epfd, events, maxevents,
			     timeout == NULL ? -1 :
			     (int64_t)timeout->tv_sec * 1000000000 + timeout->tv_nsec, sigmask);
	return r != -2 ? r : FSS_REAL(epoll_pwait2)(epfd, events, maxevents, timeout, sigmask);
}
