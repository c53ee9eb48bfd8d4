#!/usr/bin/env python3
# refuse_daemon.py PATH MODE - a stand-in daemon on a unix socket that
# refuses every attach, to test the shim's handshake failure paths.
#   MODE=version  answers with a valid reply, status -EPROTONOSUPPORT
#   MODE=garbage  answers with bytes that are not a reply
#   MODE=seg-layout  completes the handshake (memfd + two eventfds) with a
#                    segment whose header points outside the segment
#   MODE=seg-magic   the same with a segment that is not an fsstack segment
# Serves until killed.
import os, socket, struct, sys

SEG_SIZE = 1 << 20


def segment(mode):
    fd = os.memfd_create("fss-test-seg")
    os.ftruncate(fd, SEG_SIZE)
    magic = b"FSSTACK\0" if mode == "seg-layout" else b"NOTFSS\0\0"
    # struct fss_seg_hdr's layout block: magic, abi_version, hdr_size,
    # seg_size, client_id, pid, six offsets, seven counts/sizes
    hdr = struct.pack("<8sIIQIi6Q7I", magic, 1, 4096, SEG_SIZE, 7, os.getpid(),
                      4096, 8192, 12288, 12800,
                      1 << 40,  # sock_off far outside the segment
                      16384, 256, 256, 4096, 128, 64, 65536, 65536)
    os.pwrite(fd, hdr, 0)
    return fd

path, mode = sys.argv[1], sys.argv[2]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(16)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    hello = c.recv(4096)
    if mode.startswith("seg-"):
        fds = [segment(mode), os.eventfd(0), os.eventfd(0)]
        reply = struct.pack("<4siIIQII", b"FSSR", 0, 1, 32, SEG_SIZE, 7, 0)
        socket.send_fds(c, [reply], fds)
        for fd in fds:
            os.close(fd)
        c.recv(1)  # hold the connection until the shim gives up
        c.close()
        continue
    if mode == "version":
        # struct fss_hello_reply: magic, status, abi_version, size, seg_size, client_id, reserved
        c.sendall(struct.pack("<4siIIQII", b"FSSR", -93, 99, 32, 0, 0, 0))
    else:
        c.sendall(b"HTTP/1.0 400 nope\r\n\r\n")
    c.close()
