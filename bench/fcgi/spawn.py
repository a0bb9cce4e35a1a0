#!/usr/bin/python3
"""Start N copies of a FastCGI application on one unix socket, as ferry's
process manager does (the socket as fd 0), for the peers that do not start
applications themselves in bench/fcgi/run.sh (nginx; lighttpd, for the same
process count and socket). Stops them on SIGTERM.

    spawn.py SOCKET N COMMAND [ARGS...]
"""
import os
import signal
import socket
import sys

path, n, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if os.path.exists(path):
    os.unlink(path)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(path)
os.chmod(path, 0o666)  # nginx's worker runs as another user
sock.listen(1024)
children = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.dup2(sock.fileno(), 0)
        os.execv(cmd[0], cmd)
    children.append(pid)


def stop(*_):
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in children:
        os.waitpid(pid, 0)
    os.unlink(path)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while True:
    signal.pause()
