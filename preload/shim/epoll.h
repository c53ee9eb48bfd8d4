/* SPDX-License-Identifier: Apache-2.0 */
/*
 * epoll.h - fsstack sockets in the application's epoll sets.
 *
 * The application's epoll fd stays a real epoll fd holding its kernel fds.
 * The first time an fsstack socket is added to it, the shim creates a side
 * object (struct fss_epoll) with the fsstack interest list, and adds the
 * process's wake eventfd and control connection to the real set (EPOLLET,
 * tagged FSS_TAG_*).  epoll_wait reports fsstack sockets from the interest
 * list (readiness read from shared memory), kernel fds from the real set,
 * and blocks in the real epoll_wait when neither has anything.
 */
#ifndef FSS_EPOLL_H
#define FSS_EPOLL_H

#include "shim.h"

/* True if epfd has fsstack side state (lock-free, like fss_fdtab__peek). */
bool fss_epoll__owned(int epfd);
/* The application closed fd: drop its side state if it was an epoll fd. */
void fss_epoll__close(int fd);
void fss_epoll__close_range(unsigned int first, unsigned int last);
/* The kernel duplicated oldfd to newfd: an fsstack set is named by both. */
void fss_epoll__dup(int oldfd, int newfd);
/* Some number names an fsstack set (a cheap test before looking). */
bool fss_epoll__any(void);
/* poll/select: fd is about to be waited on (an fsstack set becomes nested);
 * poll_begin brings nested sets up to date before any wait. */
void fss_epoll__polled(int fd);
void fss_epoll__poll_begin(void);
struct fss_file;
/* The last reference to an fsstack socket is gone: drop it from all sets. */
void fss_epoll__file_gone(struct fss_file *f);
/* f becomes a kernel socket (a handover, sock.c): take its items out of
 * every fsstack interest list, then register them in the real sets. */
struct fss_ephand;
struct fss_ephand *fss_epoll__handover_take(struct fss_file *f);
void fss_epoll__handover_give(struct fss_ephand *list);
/* f's placeholder now listens on the kernel as well (sock.c): register
 * every epoll item of f with the kernel too. */
void fss_epoll__klisten(struct fss_file *f);
void fss_epoll__atfork_prepare(void);
void fss_epoll__atfork_parent(void);
void fss_epoll__atfork_child(void);

#endif /* FSS_EPOLL_H */
