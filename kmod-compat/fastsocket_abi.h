/* fastsocket_abi.h - Fastsocket's /dev/fastsocket ioctl ABI (x86-64).
 *
 * Applications written against fastsocket.ko open /dev/fastsocket and issue
 * these ioctls on the returned fd. Under fsstack the LD_PRELOAD shim answers
 * the open with a channel fd and serves the ioctls with Fastsocket's
 * semantics; this header is the one definition both sides use. The layout
 * is fixed by existing binaries: never reorder or resize a field.
 */
#ifndef FSSTACK_FASTSOCKET_ABI_H
#define FSSTACK_FASTSOCKET_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>

#define FSOCKET_IOC_ID 0xf5
#define FSOCKET_IOC_SOCKET           _IO(FSOCKET_IOC_ID, 0x01)
#define FSOCKET_IOC_LISTEN           _IO(FSOCKET_IOC_ID, 0x02)
#define FSOCKET_IOC_ACCEPT           _IO(FSOCKET_IOC_ID, 0x03)
#define FSOCKET_IOC_CLOSE            _IO(FSOCKET_IOC_ID, 0x04)
#define FSOCKET_IOC_SPAWN_LISTEN     _IO(FSOCKET_IOC_ID, 0x06)
#define FSOCKET_IOC_SHUTDOWN_LISTEN  _IO(FSOCKET_IOC_ID, 0x07)
#define FSOCKET_IOC_SPAWN_ALL_LISTEN _IO(FSOCKET_IOC_ID, 0x08)

/* The device path applications open. */
#define FSOCKET_DEVICE "/dev/fastsocket"

struct fsocket_ioctl_arg {
	uint32_t fd;
	uint32_t backlog;
	union {
		struct {
			void *sockaddr;
			int *sockaddr_len;
			int flags;
		} accept_op;
		struct {
			int cpu; /* -1: the calling CPU */
		} spawn_op;
		struct {
			char *buf;
			uint32_t buf_len;
		} io_op;
		struct {
			uint32_t family;
			uint32_t type;
			uint32_t protocol;
		} socket_op;
		struct {
			int how;
		} shutdown_op;
		struct {
			uint32_t epoll_fd;
			uint32_t size;
			uint32_t ep_ctl_cmd;
			uint32_t time_out;
			struct epoll_event *ev;
		} epoll_op;
	} op;
};

#if defined(__x86_64__)
_Static_assert(sizeof(struct fsocket_ioctl_arg) == 32, "fsocket_ioctl_arg size");
_Static_assert(offsetof(struct fsocket_ioctl_arg, op) == 8, "op offset");
_Static_assert(offsetof(struct fsocket_ioctl_arg, op.accept_op.sockaddr_len) == 16, "accept_op.sockaddr_len offset");
_Static_assert(offsetof(struct fsocket_ioctl_arg, op.accept_op.flags) == 24, "accept_op.flags offset");
_Static_assert(offsetof(struct fsocket_ioctl_arg, op.epoll_op.ev) == 24, "epoll_op.ev offset");
_Static_assert(FSOCKET_IOC_SOCKET == 0xf501, "ioctl number");
#endif

#endif /* FSSTACK_FASTSOCKET_ABI_H */
