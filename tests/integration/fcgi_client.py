"""A small FastCGI client for the tests: talks to the backend socket directly,
bypassing ferry's HTTP side, so the process manager can be tested alone.

Records are built by hand (FastCGI 1.0: header, content, padding) so that the
tests see exactly what the application wrote.
"""
import os
import socket
import struct

import pytest

FCGI_VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
RESPONDER = 1

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fcgi_app_path():
    """tests/tools/fcgi_app next to the ferry under test (build or build-asan)."""
    ferry = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))
    return os.path.join(os.path.dirname(os.path.abspath(ferry)), "tests", "tools", "fcgi_app")


def require(path, what):
    """Fail, never skip, when a test dependency is missing: scripts/deps.sh
    --test installs every one, so a missing one means a broken setup, and a
    skipped backend test would pass with the feature broken."""
    if not path or not os.path.exists(path):
        pytest.fail(f"{what} is missing ({path}): run scripts/deps.sh --test and rebuild")


def record(rtype, content, request_id=1):
    pad = (8 - len(content) % 8) % 8
    return (struct.pack(">BBHHBx", FCGI_VERSION, rtype, request_id, len(content), pad) + content
            + b"\0" * pad)


def _length(n):
    return struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)


def encode_params(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        out += _length(len(k)) + _length(len(v)) + k + v
    return out


class FcgiResponse:
    def __init__(self, stdout, stderr, app_status, protocol_status):
        self.stdout = stdout
        self.stderr = stderr
        self.app_status = app_status
        self.protocol_status = protocol_status
        head, _, self.body = stdout.partition(b"\r\n\r\n")
        self.headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()

    def fields(self):
        """The app's body line 'version=V pid=P ...' as a dict."""
        line = self.body.split(b"\n", 1)[0].decode()
        return dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError(f"backend closed the connection after {len(buf)} of {n} bytes")
        buf += b
    return buf


def fcgi_request(path, method="GET", query="", body=b"", timeout=30.0, extra=None):
    """One request on a new connection to the unix socket path."""
    params = {
        "REQUEST_METHOD": method, "QUERY_STRING": query, "SCRIPT_NAME": "/app",
        "REQUEST_URI": "/app" + ("?" + query if query else ""), "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1", "CONTENT_LENGTH": str(len(body)),
    }
    params.update(extra or {})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        out = record(BEGIN_REQUEST, struct.pack(">HB5x", RESPONDER, 0))
        p = encode_params(params)
        out += record(PARAMS, p) + record(PARAMS, b"")
        s.sendall(out)
        for i in range(0, len(body), 65535):
            s.sendall(record(STDIN, body[i:i + 65535]))
        s.sendall(record(STDIN, b""))
        stdout, stderr = [], []
        while True:
            _, rtype, _, clen, pad = struct.unpack(">BBHHBx", _recv_exact(s, 8))
            content = _recv_exact(s, clen + pad)[:clen]
            if rtype == STDOUT:
                stdout.append(content)
            elif rtype == STDERR:
                stderr.append(content)
            elif rtype == END_REQUEST:
                app_status, proto = struct.unpack(">IB3x", content)
                return FcgiResponse(b"".join(stdout), b"".join(stderr), app_status, proto)
