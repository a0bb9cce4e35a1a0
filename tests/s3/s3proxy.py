"""A verifying, fault-injecting S3 proxy for the store tests.

s3rver stores objects but checks neither SigV4 signatures nor checksums. This
proxy sits in front of it and, for every request:

* checks the SigV4 signature (Authorization header or presigned query) with
  botocore's S3 signers and the known secret, and x-amz-content-sha256,
  Content-MD5 and x-amz-checksum-sha256 against the body, answering mismatches
  with S3's own error codes (SignatureDoesNotMatch, InvalidAccessKeyId,
  AccessDenied, XAmzContentSHA256Mismatch, BadDigest, InvalidDigest);
* emulates If-None-Match: * on PUT and CompleteMultipartUpload (412
  PreconditionFailed), which s3rver lacks;
* on demand injects faults: S3 error responses (500 InternalError, 503
  SlowDown, 400 RequestTimeout), a connection reset while reading the request
  body or while sending a response body, a delay, a slowly sent GET body
  (slow_body: 64 KiB pieces `delay` apart), a 200 whose body is an error
  on CompleteMultipartUpload, a Complete answered with an empty ETag (as RGW
  16.2 does; forwarded, or never forwarded), a dropped or late
  (delay_response) response after a successful request, a wrong ETag;
* or, with proxy.chaos(rate, seed), injects a random fault kind into a random
  share of all requests (seeded: the seed is what reproduces a failure);
* emulates ListMultipartUploads (s3rver lacks it) from the uploads it saw;
* answers 400 ExpiredToken for session tokens the test declared expired
  (proxy.rotate() replaces a key's secret and token, as STS would).

With verify=False (in front of a store that checks for itself, such as
Ceph's RADOS Gateway) the proxy checks and emulates nothing: it forwards every
request unchanged, logs it (an error answer under its S3 code, as the checks
above would) and injects the faults asked for, so that the store's own
judgement is what the test sees.

The test controls it through the Python object (the proxy runs in a thread of
the test process): proxy.add_fault(...), proxy.log, proxy.reset().
"""
import base64
import datetime
import hashlib
import http.client
import http.server
import re
import socket
import struct
import threading
import time
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ERROR_MESSAGES = {
    "SignatureDoesNotMatch": "The request signature we calculated does not match the "
                             "signature you provided. Check your key and signing method.",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "AccessDenied": "Access Denied",
    "XAmzContentSHA256Mismatch": "The provided 'x-amz-content-sha256' header does not match "
                                 "what was computed.",
    "BadDigest": "The Content-MD5 you specified did not match what we received.",
    "InvalidDigest": "The Content-MD5 you specified is not valid.",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold",
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "RequestTimeout": "Your socket connection to the server was not read from or written to "
                      "within the timeout period.",
    "ExpiredToken": "The provided token has expired.",
    "RequestTimeTooSkewed": "The difference between the request time and the current time "
                            "is too large.",
}


# Faults answered with S3's error document: code -> HTTP status.
FAULT_STATUS = {"InternalError": 500, "SlowDown": 503, "RequestTimeout": 400,
                "AccessDenied": 403, "RequestTimeTooSkewed": 403}


# What chaos() picks from: S3 errors, a 502 from a gateway, resets while the body
# is read or while the answer is sent (a truncated body), a lost answer, a slow
# answer, a wrong ETag, a 200 whose body is an error (CompleteMultipartUpload only).
CHAOS_KINDS = ["InternalError", "SlowDown", "status502", "reset_request", "reset_response",
               "drop_response", "delay", "wrong_etag", "complete_error_200"]


def error_xml(code, message=None, resource="/"):
    message = message or ERROR_MESSAGES.get(code, code)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><Resource>{resource}</Resource>"
            f"<RequestId>FERRYTEST</RequestId></Error>").encode()


class Fault:
    """One injected fault: applies to the first `times` requests that match."""

    def __init__(self, action, method=None, query=None, key=None, times=1, delay=0.0):
        self.action = action
        self.method = method
        self.query = query  # a query parameter name that must be present
        self.key = key      # a substring of the decoded path
        self.times = times
        self.delay = delay
        self.hits = 0

    def matches(self, method, path, query):
        if self.hits >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.query is not None and self.query not in query:
            return False
        if self.key is not None and self.key not in path:
            return False
        return True


class S3Proxy:
    def __init__(self, upstream_port, access_key, secret_key, token=None, verify=True):
        self.upstream_port = upstream_port
        self.verify = verify  # False: forward as is, the upstream checks
        self.creds = {access_key: (secret_key, token)}
        self.initial_creds = dict(self.creds)
        self.faults = []
        self.log = []  # (method, decoded path, status or action)
        self.requests = []  # (method, decoded path, headers) as received
        self.completed = set()  # multipart upload ids completed
        self.aborted = set()  # and aborted
        self.created = {}  # multipart upload id -> key, for each CreateMultipartUpload answered
        self.expired_tokens = set()  # session tokens answered with ExpiredToken
        self.chaos_rate = 0.0
        self.chaos_rng = None
        self.chaos_seed = None
        self.chaos_hits = {}  # fault kind -> times injected at random
        self.in_flight = 0
        self.generation = 0  # reset() starts a new one: late records of older requests are dropped
        self.local = threading.local()
        self.max_in_flight = 0  # most requests handled at the same time
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def add_fault(self, action, **kw):
        f = Fault(action, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def reset(self):
        with self.lock:
            self.generation += 1
            self.faults = []
            self.log = []
            self.requests = []
            self.max_in_flight = 0
            self.chaos_rate = 0.0
            self.chaos_rng = None
            self.chaos_hits = {}
            self.creds = dict(self.initial_creds)
            self.expired_tokens = set()
            # Upload ids are unique: what earlier tests completed or aborted
            # (the RGW proxy lives for the whole session) is not this test's.
            self.completed = set()
            self.aborted = set()
            self.created = {}

    def chaos(self, rate, seed):
        """Inject a random fault (one of CHAOS_KINDS that fits the request) into
        about rate of all requests from now on; rate 0 stops it."""
        import random
        with self.lock:
            self.chaos_rate = rate
            self.chaos_seed = seed
            self.chaos_rng = random.Random(seed)

    def rotate(self, access_key, secret_key, token):
        """The key's old session token expires; secret_key and token replace it."""
        with self.lock:
            old = self.creds.get(access_key)
            if old and old[1]:
                self.expired_tokens.add(old[1])
            self.creds[access_key] = (secret_key, token)

    def open_uploads(self):
        """Multipart uploads created and neither completed nor aborted: {id: key}."""
        with self.lock:
            return {u: p for u, p in self.created.items()
                    if u not in self.completed and u not in self.aborted}

    def take_fault(self, method, path, query):
        with self.lock:
            for f in self.faults:
                if f.matches(method, path, query):
                    f.hits += 1
                    return f
            rng = self.chaos_rng
            if rng is None or self.chaos_rate <= 0 or rng.random() >= self.chaos_rate:
                return None
            kinds = [k for k in CHAOS_KINDS
                     if k != "complete_error_200" or (method == "POST" and "uploadId" in query)]
            kind = rng.choice(kinds)
            self.chaos_hits[kind] = self.chaos_hits.get(kind, 0) + 1
            return Fault(kind, delay=rng.uniform(0.2, 1.5) if kind == "delay" else 0.0)

    def record(self, method, path, outcome):
        with self.lock:
            # A request of an earlier test (say one it delayed) that ends now is not
            # this test's.
            if getattr(self.local, "generation", self.generation) == self.generation:
                self.log.append((method, path, outcome))

    def outcomes(self, method=None):
        with self.lock:
            return [o for m, _, o in self.log if method is None or m == method]


def _parse_authorization(value):
    if not value.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = {}
    for part in value[len("AWS4-HMAC-SHA256 "):].split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    try:
        ak, date, region, service, term = fields["Credential"].split("/")
    except (KeyError, ValueError):
        return None
    return dict(access_key=ak, date=date, region=region, service=service,
                signed=fields.get("SignedHeaders", "").split(";"),
                signature=fields.get("Signature", ""))


def _signature_of(auth, request, timestamp):
    request.context["timestamp"] = timestamp
    cr = auth.canonical_request(request)
    sts = auth.string_to_sign(request, cr)
    return auth.signature(sts, request)


def _complete_xml(path, etag):
    bucket, _, key = path.lstrip("/").partition("/")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>'
            f"<Location>{path}</Location><Bucket>{bucket}</Bucket><Key>{key}</Key>"
            f"<ETag>{etag}</ETag></CompleteMultipartUploadResult>").encode()


def _outcome(status, body):
    """What the log says about an upstream answer: the status, or for an error
    document its S3 code (as the proxy's own checks log theirs)."""
    if status >= 300:
        m = re.search(rb"<Code>([^<]+)</Code>", body or b"")
        if m:
            return m.group(1).decode()
    return status


def _make_handler(proxy):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        # -- responses --
        def send_raw(self, status, body=b"", headers=None, head=False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)
            self.wfile.flush()

        def send_error_xml(self, status, code, path, message=None):
            proxy.record(self.command, path, code)
            self.send_raw(status, error_xml(code, message, path),
                          {"Content-Type": "application/xml"}, head=self.command == "HEAD")

        def reset_connection(self):
            # SO_LINGER 0 makes close() send RST: a real reset, not a clean FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        # -- checks --
        def check_signature(self, split, body):
            """Returns None if the request is properly signed, else (status, code)."""
            query = parse_qsl(split.query, keep_blank_values=True)
            qdict = dict(query)
            raw_url = f"http://{self.headers.get('Host')}{self.path}"
            token = qdict.get("X-Amz-Security-Token") or self.headers.get("x-amz-security-token")
            with proxy.lock:
                expired = token is not None and token in proxy.expired_tokens
            if expired:
                return 400, "ExpiredToken"
            if "X-Amz-Signature" in qdict:
                cred = qdict.get("X-Amz-Credential", "").split("/")
                if len(cred) != 5 or cred[0] not in proxy.creds:
                    return 403, "InvalidAccessKeyId"
                secret, token = proxy.creds[cred[0]]
                ts = qdict.get("X-Amz-Date", "")
                try:
                    when = datetime.datetime.strptime(ts, "%Y%m%dT%H%M%SZ")
                    expires = int(qdict.get("X-Amz-Expires", "0"))
                except ValueError:
                    return 403, "AccessDenied"
                if when + datetime.timedelta(seconds=expires) < datetime.datetime.utcnow():
                    return 403, "AccessDenied"
                # The signed request is the URL without X-Amz-Signature.
                kept = [p for p in split.query.split("&") if not p.startswith("X-Amz-Signature=")]
                url = f"http://{self.headers.get('Host')}{split.path}?{'&'.join(kept)}"
                signed = qdict.get("X-Amz-SignedHeaders", "host").split(";")
                headers = {h: self.headers.get(h, "") for h in signed}
                req = AWSRequest(method=self.command, url=url, headers=headers)
                auth = S3SigV4QueryAuth(Credentials(cred[0], secret, token), "s3", cred[2],
                                        expires=expires)
                if _signature_of(auth, req, ts) != qdict["X-Amz-Signature"]:
                    return 403, "SignatureDoesNotMatch"
                return None
            a = _parse_authorization(self.headers.get("Authorization", ""))
            if a is None:
                return 403, "AccessDenied"
            if a["access_key"] not in proxy.creds:
                return 403, "InvalidAccessKeyId"
            secret, token = proxy.creds[a["access_key"]]
            ts = self.headers.get("x-amz-date", "")
            try:
                when = datetime.datetime.strptime(ts, "%Y%m%dT%H%M%SZ")
            except ValueError:
                return 403, "AccessDenied"
            if abs((when - datetime.datetime.utcnow()).total_seconds()) > 900:
                return 403, "RequestTimeTooSkewed"
            if "host" not in a["signed"] or "x-amz-date" not in a["signed"]:
                return 403, "AccessDenied"
            headers = {}
            for h in a["signed"]:
                if self.headers.get(h) is None:
                    return 403, "SignatureDoesNotMatch"
                headers[h] = self.headers.get(h)
            req = AWSRequest(method=self.command, url=raw_url, headers=headers, data=body)
            auth = S3SigV4Auth(Credentials(a["access_key"], secret, token), "s3", a["region"])
            if _signature_of(auth, req, ts) != a["signature"]:
                return 403, "SignatureDoesNotMatch"
            payload = self.headers.get("x-amz-content-sha256", "")
            if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
                return 400, "XAmzContentSHA256Mismatch"
            return None

        def check_digests(self, body):
            md5 = self.headers.get("Content-MD5")
            if md5 is not None:
                try:
                    raw = base64.b64decode(md5, validate=True)
                except ValueError:
                    return 400, "InvalidDigest"
                if len(raw) != 16:
                    return 400, "InvalidDigest"
                if raw != hashlib.md5(body).digest():
                    return 400, "BadDigest"
            sha = self.headers.get("x-amz-checksum-sha256")
            if sha is not None and sha != base64.b64encode(hashlib.sha256(body).digest()).decode():
                return 400, "BadDigest"
            return None

        def upstream(self, method, body, headers=None):
            conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
            # If-None-Match: * on writes is emulated here (verify mode); on reads it goes on.
            drop = ("connection", "expect") + (
                ("if-none-match",) if proxy.verify and method in ("PUT", "POST") else ())
            hdrs = {k: v for k, v in self.headers.items() if k.lower() not in drop}
            hdrs.update(headers or {})
            conn.request(method, self.path, body=body if method in ("PUT", "POST") else None,
                         headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            return resp, data

        def object_exists(self):
            # s3rver does not check V4 signatures; a HEAD through it is enough.
            split = urlsplit(self.path)
            conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
            conn.request("HEAD", split.path, headers={
                "Authorization": self.headers.get("Authorization", ""),
                "x-amz-date": self.headers.get("x-amz-date", ""),
                "x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status == 200

        def list_uploads(self, path, prefix):
            # s3rver lacks ListMultipartUploads: answer it from what this proxy saw.
            bucket = path.strip("/").split("/")[0]
            with proxy.lock:
                open_ = [(u, k) for u, k in proxy.created.items()
                         if u not in proxy.completed and u not in proxy.aborted
                         and k.startswith(prefix)]
            esc = lambda t: t.replace("&", "&amp;").replace("<", "&lt;")  # noqa: E731
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult>'
                    f"<Bucket>{bucket}</Bucket><Prefix>{esc(prefix)}</Prefix>"
                    f"<IsTruncated>false</IsTruncated>"
                    + "".join(f"<Upload><Key>{esc(k)}</Key><UploadId>{u}</UploadId></Upload>"
                              for u, k in open_)
                    + "</ListMultipartUploadsResult>").encode()
            proxy.record(self.command, path, "list_uploads")
            self.send_raw(200, body, {"Content-Type": "application/xml"})

        # -- the request --
        def handle_any(self):
            split = urlsplit(self.path)
            path = unquote(split.path)
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            with proxy.lock:
                proxy.requests.append((self.command, path, dict(self.headers.items())))
            fault = proxy.take_fault(self.command, path, query)
            if fault and fault.action == "reset_request":
                self.rfile.read(length // 2)
                proxy.record(self.command, path, "reset_request")
                self.reset_connection()
                return
            body = self.rfile.read(length) if length else b""
            if fault and fault.action == "delay":
                time.sleep(fault.delay)
            problem = proxy.verify and (self.check_signature(split, body)
                                        or self.check_digests(body))
            if problem:
                self.send_error_xml(problem[0], problem[1], path)
                return
            if fault and fault.action in FAULT_STATUS:
                self.send_error_xml(FAULT_STATUS[fault.action], fault.action, path)
                return
            if fault and fault.action == "status502":
                proxy.record(self.command, path, "502")
                self.send_raw(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"})
                return
            if fault and fault.action == "complete_error_200":
                # Headers say 200, the body is an error, the upload is untouched.
                proxy.record(self.command, path, "complete_error_200")
                self.send_raw(200, error_xml("InternalError", resource=path),
                              {"Content-Type": "application/xml"})
                return
            if fault and fault.action == "complete_lost_empty_etag":
                # A 200 with an empty ETag (as RGW 16.2 answers a Complete)
                # for a Complete that never reached the store.
                proxy.record(self.command, path, "complete_lost_empty_etag")
                self.send_raw(200, _complete_xml(path, ""), {"Content-Type": "application/xml"})
                return
            if self.command == "GET" and "uploads" in query and proxy.verify:
                self.list_uploads(path, query.get("prefix", ""))
                return
            upload_id = query.get("uploadId")
            if upload_id is not None and proxy.verify:
                # s3rver lacks AbortMultipartUpload and answers 500 for a finished
                # upload; S3 answers 204 and 404 NoSuchUpload. Emulate S3.
                with proxy.lock:
                    finished = upload_id in proxy.completed or upload_id in proxy.aborted
                if finished:
                    self.send_error_xml(404, "NoSuchUpload", path,
                                        "The specified upload does not exist.")
                    return
                if self.command == "DELETE":
                    with proxy.lock:
                        proxy.aborted.add(upload_id)
                    proxy.record(self.command, path, 204)
                    self.send_raw(204)
                    return
            conditional = proxy.verify and self.headers.get("If-None-Match") == "*" and (
                (self.command == "PUT" and "partNumber" not in query)
                or (self.command == "POST" and "uploadId" in query))
            if conditional and self.object_exists():
                self.send_error_xml(412, "PreconditionFailed", path)
                return
            resp, data = self.upstream(self.command, body)
            if upload_id is not None and self.command == "POST" and resp.status == 200 \
                    and b"<Error>" not in data:
                with proxy.lock:
                    proxy.completed.add(upload_id)
            if "uploads" in query and self.command == "POST" and resp.status == 200:
                m = re.search(rb"<UploadId>([^<]+)</UploadId>", data)
                if m:
                    with proxy.lock:
                        proxy.created[m.group(1).decode()] = path.lstrip("/").split("/", 1)[1]
            if fault and fault.action == "delay_response":
                time.sleep(fault.delay)  # done upstream; the answer is late
            if upload_id is not None and self.command == "DELETE" and resp.status == 204:
                with proxy.lock:
                    proxy.aborted.add(upload_id)
            if fault and fault.action == "complete_empty_etag":
                data = re.sub(rb"<ETag>[^<]*</ETag>", b"<ETag></ETag>", data)
            if fault and fault.action == "drop_response":
                proxy.record(self.command, path, f"drop_response:{resp.status}")
                self.reset_connection()
                return
            if fault and fault.action == "reset_response" and len(data) > 1:
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                proxy.record(self.command, path, "reset_response")
                self.reset_connection()
                return
            if fault and fault.action == "slow_body" and self.command == "GET":
                self.send_slowly(resp, data, fault, path)
                return
            wrong_etag = fault and fault.action == "wrong_etag" and resp.status == 200
            proxy.record(self.command, path,
                         "wrong_etag" if wrong_etag else _outcome(resp.status, data))
            self.send_response(resp.status)
            # A HEAD answer keeps the object's Content-Length; others carry data.
            skip = ("connection", "transfer-encoding") + (
                () if self.command == "HEAD" else ("content-length",))
            for k, v in resp.getheaders():
                if wrong_etag and k.lower() == "etag":
                    v = '"%s"' % hashlib.md5(v.encode()).hexdigest()
                if k.lower() not in skip:
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()

        def send_slowly(self, resp, data, fault, path):
            """The body in 64 KiB pieces fault.delay seconds apart; records
            "slow_body:sent" or, when the client (ferry) closed the connection
            first, "slow_body:closed"."""
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(0, len(data), 65536):
                    self.wfile.write(data[i:i + 65536])
                    self.wfile.flush()
                    time.sleep(fault.delay)
            except OSError:
                proxy.record(self.command, path, "slow_body:closed")
                self.close_connection = True
                return
            proxy.record(self.command, path, "slow_body:sent")

        def handle_counted(self):
            proxy.local.generation = proxy.generation
            with proxy.lock:
                proxy.in_flight += 1
                proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
            try:
                self.handle_any()
            finally:
                with proxy.lock:
                    proxy.in_flight -= 1

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_counted

    return Handler
