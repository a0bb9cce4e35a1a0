"""A line-protocol upstream for ferry-test's /_test/ relay handler.

ferry sends "METHOD PATH\\n", the request body, then shuts down its write
side; this answers "STATUS LENGTH\\n" (LENGTH -1: unknown) and the body.

Run as `upstream.py LOGFILE` with the listening unix socket as fd 3 (the
fixture binds it, so it is ready before this starts). One thread per
connection. Every event is one line in LOGFILE:
    <ms since start> <conn id> <event>
with events "accepted", "request METHOD PATH", "body N bytes", "eof from ferry",
"wrote N" (total reply bytes so far), "done", "closed by ferry".

Behaviours by path:
    /_test/echo         200, the body it got, unknown length
    /_test/hello        200 "hello\\n", known length
    /_test/delay/MS     200 "delayed\\n" (known length) after MS ms
    /_test/hang         never replies
    /_test/big/N        N bytes of pattern() with known length, as fast as
                        the socket takes them
    /_test/short        "200 100" then 10 bytes and EOF (a short body)
    /_test/badhead      a malformed reply head
    /_test/badlength    a good status with a malformed length
    /_test/duplex       200, then each piece of the body as it arrives
    /_test/early        200 "early\n" before reading the request body
    /_test/reset        "200 -1" and "partial\n", then closes with the
                        request body unread (a read error in ferry)
    /_test/chunks[/MS]  5 pieces "piece-I\\n", MS (150) ms apart, unknown length
    /_test/stall/MS     reads nothing for MS ms, then the body; replies
                        "N SHA256HEX\\n" (unknown length)
"""
import hashlib
import itertools
import os
import select
import socket
import sys
import threading
import time

T0 = time.monotonic()
LOCK = threading.Lock()
IDS = itertools.count(1)


def pattern(n):
    """The bytes /_test/big/N sends: a 256-byte cycle of 0..255."""
    block = bytes(range(256)) * 4096
    full, rest = divmod(n, len(block))
    return block * full + block[:rest]


class Closed(Exception):
    """ferry closed the connection (stop() ran or the worker went away)."""


class Conn:
    def __init__(self, sock, log):
        self.sock = sock
        self.log_f = log
        self.id = next(IDS)

    def log(self, event):
        with LOCK:
            self.log_f.write(f"{(time.monotonic() - T0) * 1000:.0f} {self.id} {event}\n")
            self.log_f.flush()

    def hup(self, timeout):
        """Wait up to timeout s for ferry to close the socket entirely
        (after its write side is shut, POLLHUP means the whole socket)."""
        p = select.poll()
        p.register(self.sock, select.POLLHUP | select.POLLERR)
        return bool(p.poll(max(0, int(timeout * 1000))))

    def read_line(self):
        buf = b""
        while not buf.endswith(b"\n"):
            b = self.sock.recv(1)
            if not b:
                raise Closed()
            buf += b
        return buf.decode().rstrip("\n")

    def read_body(self, sink):
        """Read the request body until ferry shuts its write side down."""
        n = 0
        while True:
            b = self.sock.recv(65536)
            if not b:
                break
            n += len(b)
            sink(b)
        self.log(f"body {n} bytes")
        self.log("eof from ferry")
        return n

    def wait_readable(self):
        select.select([self.sock], [], [], 5.0)

    def wait(self, seconds):
        """Sleep, but notice ferry closing meanwhile."""
        if self.hup(seconds):
            raise Closed()

    def send(self, data, total=0):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise Closed()
        total += len(data)
        self.log(f"wrote {total}")
        return total

    def run(self):
        self.log("accepted")
        try:
            self.serve()
            self.log("done")
        except Closed:
            self.log("closed by ferry")
        finally:
            self.sock.close()

    def serve(self):
        method, path = self.read_line().split(" ", 1)
        self.log(f"request {method} {path}")
        parts = path.split("/")[2:]  # after "/_test/"
        what = parts[0]
        if what == "stall":
            self.wait(int(parts[1]) / 1000)
            h = hashlib.sha256()
            n = self.read_body(h.update)
            self.send(f"200 -1\n{n} {h.hexdigest()}\n".encode())
            return
        if what == "duplex":
            # Stream the body back while it is still arriving.
            total = [self.send(b"200 -1\n")]

            def back(b):
                total[0] = self.send(b, total[0])
            self.read_body(back)
            return
        if what == "early":
            # Answer before reading the request body, then drain it.
            self.send(b"200 6\nearly\n")
            self.read_body(lambda b: None)
            return
        if what == "reset":
            # Reply, then close with the request body unread: ferry's next
            # read of this socket fails (ECONNRESET) after the reply bytes.
            self.wait_readable()
            self.send(b"200 -1\npartial\n")
            self.sock.close()
            self.log("reset")
            return
        body = []
        self.read_body(body.append)
        body = b"".join(body)
        if what == "echo":
            self.send(b"200 -1\n" + body)
        elif what == "hello":
            self.send(b"200 6\nhello\n")
        elif what == "delay":
            self.wait(int(parts[1]) / 1000)
            self.send(b"200 8\ndelayed\n")
        elif what == "hang":
            self.wait(3600)
        elif what == "big":
            n = int(parts[1])
            block = pattern(1 << 20)
            total = self.send(f"200 {n}\n".encode())
            sent = 0
            while sent < n:
                piece = block[:min(256 * 1024, n - sent)]
                total = self.send(piece, total)
                sent += len(piece)
        elif what == "short":
            self.send(b"200 100\nonly ten b\n")
        elif what == "badhead":
            self.send(b"no status here\n")
        elif what == "badlength":
            self.send(b"200 many\n")
        elif what == "chunks":
            total = self.send(b"200 -1\n")
            gap = int(parts[1]) / 1000 if len(parts) > 1 else 0.15
            for i in range(5):
                if i:
                    self.wait(gap)
                total = self.send(f"piece-{i}\n".encode(), total)
        else:
            self.send(b"404 -1\nno such test path\n")


def main():
    log = open(sys.argv[1], "a")
    lsock = socket.socket(fileno=3)
    while True:
        s, _ = lsock.accept()
        threading.Thread(target=Conn(s, log).run, daemon=True).start()


if __name__ == "__main__":
    main()
