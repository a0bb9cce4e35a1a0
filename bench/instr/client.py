"""Send N keep-alive GETs for one path and check every response's status and
length. Used by bench/instr/run.sh; the client is not measured, only the server
running under callgrind.

    client.py PORT PATH N LENGTH [STATUS]   LENGTH "-": any Content-Length"""
import socket
import sys


def main():
    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    want_len = None if sys.argv[4] == "-" else int(sys.argv[4])
    want_status = sys.argv[5] if len(sys.argv) > 5 else "200"
    s = socket.create_connection(("127.0.0.1", port))
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("server closed the connection")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(f"HTTP/1.1 {want_status} ".encode()):
            sys.exit(f"unexpected response: {head[:80]!r}")
        length = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if length is None or (want_len is not None and length != want_len):
            sys.exit(f"Content-Length {length}, want {want_len}")
        while len(buf) < length:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("server closed mid-body")
            buf += chunk
        buf = buf[length:]
    s.close()


main()
