/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fastsocket.h - Fastsocket's /dev/fastsocket under the shim (fastsocket.c).
 *
 * open("/dev/fastsocket") answers with a channel fd and ioctl() on a channel
 * serves the FSOCKET_IOC_* commands of kmod-compat/fastsocket_abi.h by
 * calling the shim's own socket calls.  See fastsocket.c for the semantics.
 */
#ifndef FSS_FASTSOCKET_H
#define FSS_FASTSOCKET_H

#include "shim.h"

/* glibc's _FORTIFY_SOURCE entry points of open/openat (declared by glibc only
 * under _FORTIFY_SOURCE, which the shim is built without). */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

/* Set (release) once this process opened a channel: from then on every ioctl
 * on a kernel fd asks whether the fd is a channel.  Before that only ioctls
 * of Fastsocket's type (0xf5) do.  Written by fastsocket.c, read by the
 * ioctl wrapper. */
extern _Atomic int fss_fsock_opened;

/* True if ioctl(fd, req) on an fd the shim does not own must be looked at
 * by fss_fsock__ioctl (cheap; the channel test itself is fss_fsock__is_channel). */
static inline bool fss_fsock__maybe(unsigned long req)
{
	return ((req >> 8) & 0xff) == 0xf5 ||
	       atomic_load_explicit(&fss_fsock_opened, memory_order_relaxed);
}

/* True if fd is a /dev/fastsocket channel made by a shim (this process's,
 * its parent's before fork or exec). */
bool fss_fsock__is_channel(int fd);

/* ioctl(fd, req, arg) on a channel, at the libc boundary: returns the
 * command's result, or -1 with errno set. */
int fss_fsock__ioctl(int fd, unsigned long req, void *arg);

#endif /* FSS_FASTSOCKET_H */
