#!/usr/bin/env python3
# refuse_daemon.py PATH MODE - a stand-in daemon on a unix socket that
# refuses every attach, to test the shim's handshake failure paths.
#   MODE=version  answers with a valid reply, status -EPROTONOSUPPORT
#   MODE=garbage  answers with bytes that are not a reply
# Serves until killed.
import os, socket, struct, sys

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
    if mode == "version":
        # struct fss_hello_reply: magic, status, abi_version, size, seg_size, client_id, reserved
        c.sendall(struct.pack("<4siIIQII", b"FSSR", -93, 99, 32, 0, 0, 0))
    else:
        c.sendall(b"HTTP/1.0 400 nope\r\n\r\n")
    c.close()
