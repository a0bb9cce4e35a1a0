"""A FastCGI responder that misbehaves on request, started by ferry as a
[backend] command (the listening socket is fd 0, FCGI_LISTENSOCK_FILENO).

    fcgi_fake.py LOGFILE

The query string picks the behaviour:
    (none)          Status 200, text/plain, body "uri=... sha256=... len=..."
    mode=garbage    answers HTTP bytes instead of FastCGI records
    mode=silent     reads the request, never answers
    mode=bighead    a header line longer than 64 KiB
    mode=stderr     two STDERR lines, then the normal answer
    mode=overload   END_REQUEST with FCGI_OVERLOADED (first time per URI only)
    mode=nohead     END_REQUEST without any STDOUT
    sleep=MS        waits MS ms before answering (an ABORT_REQUEST or a
                    closed connection meanwhile is logged)
Every request is logged as "begin URI", then "end URI", "abort URI" or
"closed URI", one line each, to LOGFILE.
"""
import hashlib
import os
import select
import socket
import struct
import sys
import threading
import time
from urllib.parse import parse_qs

LOG = sys.argv[1]
lock = threading.Lock()
overloaded = set()


def log(line):
    with lock:
        with open(LOG, "a") as f:
            f.write(line + "\n")


def record(t, content=b"", rid=1):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, t, rid, len(content), pad, 0) + content + b"\0" * pad


def stream(t, data):
    out = b""
    for i in range(0, len(data), 32768):
        out += record(t, data[i:i + 32768])
    return out


def end(status=0):
    return record(3, struct.pack(">IB3x", 0, status))


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_record(self):
        while len(self.buf) < 8:
            b = self.sock.recv(65536)
            if not b:
                return None
            self.buf += b
        _, t, rid, clen, plen, _ = struct.unpack(">BBHHBB", self.buf[:8])
        while len(self.buf) < 8 + clen + plen:
            b = self.sock.recv(65536)
            if not b:
                return None
            self.buf += b
        content = self.buf[8:8 + clen]
        self.buf = self.buf[8 + clen + plen:]
        return t, content


def parse_params(data):
    out = {}
    i = 0
    while i < len(data):
        lens = []
        for _ in range(2):
            if data[i] & 0x80:
                lens.append(struct.unpack(">I", data[i:i + 4])[0] & 0x7fffffff)
                i += 4
            else:
                lens.append(data[i])
                i += 1
        n, v = lens
        out[data[i:i + n].decode("latin-1")] = data[i + n:i + n + v].decode("latin-1")
        i += n + v
    return out


def wait_abort(c, uri, ms):
    """Sleep ms, watching the connection: True when the client side aborted."""
    deadline = time.monotonic() + ms / 1000
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([c.sock], [], [], left)
        if r:
            rec = c.read_record()
            if rec is None:
                log(f"closed {uri}")
                return True
            if rec[0] == 2:
                log(f"abort {uri}")
                return True


def serve(sock):
    c = Conn(sock)
    params = b""
    body = hashlib.sha256()
    blen = 0
    while True:
        rec = c.read_record()
        if rec is None:
            sock.close()
            return
        t, content = rec
        if t == 4:
            params += content
        elif t == 5:
            if not content:
                break
            body.update(content)
            blen += len(content)
    p = parse_params(params)
    uri = p.get("REQUEST_URI", "")
    q = parse_qs(p.get("QUERY_STRING", ""))
    mode = q.get("mode", [""])[0]
    log(f"begin {uri}")
    if "sleep" in q and wait_abort(c, uri, int(q["sleep"][0])):
        sock.close()
        return
    text = (f"uri={uri} sha256={body.hexdigest()} len={blen} "
            f"script_name={p.get('SCRIPT_NAME')} path_info={p.get('PATH_INFO')} "
            f"method={p.get('REQUEST_METHOD')} proxy={p.get('HTTP_PROXY')} "
            f"x_a={p.get('HTTP_X_A')} pid={os.getpid()}\n").encode()
    head = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    if mode == "garbage":
        out = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    elif mode == "silent":
        wait_abort(c, uri, 60000)
        sock.close()
        return
    elif mode == "bighead":
        out = stream(6, b"X-Big: " + b"a" * 70000 + b"\r\n\r\nbody") + record(6) + end()
    elif mode == "stderr":
        out = (stream(7, b"first problem\nsecond problem\n") + stream(6, head + text)
               + record(6) + end())
    elif mode == "overload" and uri not in overloaded:
        overloaded.add(uri)
        out = end(2)
    elif mode == "nohead":
        out = end()
    else:
        out = stream(6, head + text) + record(6) + end()
    try:
        sock.sendall(out)
    except OSError:
        pass
    log(f"end {uri}")
    sock.close()


def main():
    lsock = socket.socket(fileno=0)
    while True:
        s, _ = lsock.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


main()
