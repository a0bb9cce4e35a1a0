"""Cross-check ferry's SigV4 signer against botocore's S3 signers.

Generates a few thousand seeded random requests (keys with spaces, '+', '=', '%',
'~', '//', UTF-8; query parameters, valueless ones included; extra headers with
untidy whitespace; session tokens; signed and unsigned payloads), signs each with
tests/tools/sigv4_tool and with botocore's S3SigV4Auth / S3SigV4QueryAuth at the
same instant, and requires byte-for-byte equal Authorization headers and
presigned URLs. Then sends such requests to Ceph's RADOS Gateway, whose own
verifier must accept them.
"""
import datetime
import hashlib
import os
import random
import subprocess
import sys
import types
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
import storetest  # noqa: E402

N_REQUESTS = 1500
KEY_PIECES = ["a", "photo", " ", "+", "=", "%", "%20", "~", "/", "//", "é", "日本", "ü",
              "!", "*", "'", "(", ")", "$", "&", "?", "#", ":", "@", ",", ";", "-", "_",
              ".", "..", "./", "x y", "A9", "\u00a0", "😀"]
QUERY_NAMES = ["uploadId", "partNumber", "prefix", "max-keys", "delimiter", "versionId",
               "list-type", "x y", "a+b", "é", "response-content-type", "tagging"]
HEADER_NAMES = ["Content-Type", "Content-MD5", "x-amz-meta-note", "Range", "If-None-Match",
                "x-amz-checksum-sha256", "Cache-Control", "X-Amz-Storage-Class"]
HOSTS = ["examplebucket.s3.amazonaws.com", "127.0.0.1:9000", "s3.eu-west-1.amazonaws.com",
         "[::1]:4569"]
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]


def hexs(s):
    if s is None:
        return "-"
    if s == "":
        return "."
    return (s.encode() if isinstance(s, str) else s).hex()


def rand_text(rng, pieces, lo, hi):
    return "".join(rng.choice(pieces) for _ in range(rng.randint(lo, hi)))


def gen_request(rng, i):
    mode = "presign" if i % 3 == 0 else "header"
    method = rng.choice(["GET", "PUT", "HEAD", "DELETE", "POST"])
    host = rng.choice(HOSTS)
    key = rand_text(rng, KEY_PIECES, 0, 8)
    path = "/" + (rng.choice(["bucket/", "my.bucket/", ""]) + key)
    query = []
    names = rng.sample(QUERY_NAMES, rng.randint(0, 3))
    for name in names:
        r = rng.random()
        if r < 0.2:
            query.append((name, None))  # valueless: "?uploads"
        elif r < 0.3:
            query.append((name, ""))
        else:
            query.append((name, rand_text(rng, KEY_PIECES, 1, 4)))
    if mode == "presign" and rng.random() < 0.5:
        query = []  # a presigned redirect's case: no parameters or headers of its own
    headers = []
    for name in rng.sample(HEADER_NAMES, 0 if mode == "presign" and not query
                           else rng.randint(0, 3)):
        value = rng.choice(["text/plain", "  spaced   out\tvalue ", "bytes=0-9", "*",
                            "1B2M2Y8AsgTpgAmY7PhCfg==", "max-age=60, public"])
        headers.append((name, value))
    token = rng.choice([None, None, "FQoGZXIvYXdzE//token+with/slash="])
    # A presigned URL carries no body (botocore would move one into the query).
    body = b"" if mode == "presign" else rng.choice([b"", b"hello", rng.randbytes(40)])
    unsigned = mode == "header" and rng.random() < 0.3
    return dict(mode=mode, method=method, host=host, path=path, query=query,
                headers=headers, token=token, body=body, unsigned=unsigned,
                # Half on one day: with --cache, same-day requests whose secret,
                # token or region differ from the one before must not share a key.
                when=1369353600 + rng.choice([rng.randint(0, 400_000_000),
                                              rng.randint(0, 86399)]),
                expires=rng.choice([1, 60, 3600, 86400, 604800]),
                region=rng.choice(REGIONS),
                access="AKIAIOSFODNN7EXAMPLE",
                secret=rng.choice(["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "s3cr3t+/="]))


def tool_line(req):
    payload = "-" if (req["unsigned"] or req["mode"] == "presign") else \
        hashlib.sha256(req["body"]).hexdigest()
    fields = [req["mode"], req["method"], hexs(req["host"]), hexs(req["path"]),
              str(req["when"]), str(req["expires"]), hexs(req["access"]), hexs(req["secret"]),
              hexs(req["token"]), hexs(req["region"]), payload, str(len(req["query"]))]
    for name, value in req["query"]:
        fields += [hexs(name), hexs(value)]
    fields.append(str(len(req["headers"])))
    for name, value in req["headers"]:
        fields += [hexs(name), hexs(value)]
    return " ".join(fields)


def url_of(req, scheme):
    url = f"{scheme}://{req['host']}{quote(req['path'], safe='/~')}"
    if req["query"]:
        parts = []
        for name, value in req["query"]:
            n = quote(name, safe="-_.~")
            parts.append(n if value is None else n + "=" + quote(value, safe="-_.~"))
        url += "?" + "&".join(parts)
    return url


def botocore_sign(req):
    when = datetime.datetime.utcfromtimestamp(req["when"])

    class FixedDateTime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

    creds = Credentials(req["access"], req["secret"], req["token"])
    # Signed payloads go over http (botocore always hashes the body there);
    # unsigned ones over https with payload signing switched off.
    scheme = "https" if req["unsigned"] else "http"
    aws = AWSRequest(method=req["method"], url=url_of(req, scheme),
                     headers=dict(req["headers"]), data=req["body"])
    if req["unsigned"]:
        aws.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    fake = types.SimpleNamespace(datetime=FixedDateTime)
    with mock.patch("botocore.auth.datetime", fake):
        if req["mode"] == "presign":
            S3SigV4QueryAuth(creds, "s3", req["region"], expires=req["expires"]).add_auth(aws)
            return aws.url
        S3SigV4Auth(creds, "s3", req["region"]).add_auth(aws)
        return aws.headers["Authorization"]


@pytest.mark.parametrize("cache", [False, True], ids=["derived", "cached"])
def test_botocore_agrees_byte_for_byte(cache):
    """cached: every request signs through one key cache, never cleared, while
    secrets, tokens, regions and days change from one request to the next."""
    tool = storetest.tool("sigv4_tool")
    if not os.path.exists(tool):
        pytest.fail(f"{tool} is not built")
    rng = random.Random(20130524)
    reqs = [gen_request(rng, i) for i in range(N_REQUESTS)]
    out = subprocess.run([tool] + (["--cache"] if cache else []),
                         input="\n".join(tool_line(r) for r in reqs) + "\n",
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(reqs)
    mismatches = []
    counts = {"header": 0, "presign": 0, "plain presign": 0}
    for req, ours in zip(reqs, out):
        theirs = botocore_sign(req)
        if req["mode"] == "presign":
            scheme = "http"
            ours = f"{scheme}://{req['host']}{quote(req['path'], safe='/~')}?{ours}"
        if ours != theirs:
            mismatches.append((req, ours, theirs))
        counts[req["mode"]] += 1
        if req["mode"] == "presign" and not req["query"] and not req["headers"]:
            counts["plain presign"] += 1
    for req, ours, theirs in mismatches[:5]:
        print(f"request: {req!r}\n ours:   {ours}\n theirs: {theirs}")
    assert not mismatches, f"{len(mismatches)} of {len(reqs)} signatures differ"
    assert counts["header"] >= 900 and counts["presign"] >= 450
    assert counts["plain presign"] >= 200, counts


def test_tool_detects_a_wrong_secret():
    """Guard against a comparison that cannot fail: a different secret differs."""
    rng = random.Random(1)
    req = gen_request(rng, 1)
    line = tool_line(req)
    other = dict(req, secret="not-the-secret")
    out = subprocess.run([storetest.tool("sigv4_tool")], input=line + "\n",
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == botocore_sign(req)
    assert out != botocore_sign(other)


@pytest.mark.s3stores("rgw", reason="s3rver checks no signature, and the proxy's check is "
                      "botocore, which the tests above compare with byte for byte")
def test_rgw_accepts_our_signatures_for_random_keys(s3backend, direct):
    """ferry's signer against a store's own verifier: 60 seeded random keys from
    the same pieces ('//', '..', '%', '+', UTF-8, ...), each PUT signed in the
    header (signed payload) and read back with boto3, then fetched with a
    signed GET and with a presigned URL."""
    import http.client
    from s3fixtures import ACCESS_KEY, BUCKET, SECRET_KEY
    rng = random.Random(20261204)
    host = f"127.0.0.1:{s3backend.port}"
    keys = set()
    while len(keys) < 60:
        keys.add(rand_text(rng, KEY_PIECES, 1, 6))
    now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    amz_date = datetime.datetime.fromtimestamp(now, datetime.timezone.utc) \
        .strftime("%Y%m%dT%H%M%SZ")
    reqs, bodies = [], {}
    for key in sorted(keys):
        body = key.encode() + rng.randbytes(50)
        bodies[key] = body
        base = dict(host=host, path=f"/{BUCKET}/{key}", query=[], headers=[], token=None,
                    when=now, expires=300, region="us-east-1", access=ACCESS_KEY,
                    secret=SECRET_KEY, unsigned=False)
        reqs.append(dict(base, mode="header", method="PUT", body=body))
        reqs.append(dict(base, mode="header", method="GET", body=b""))
        reqs.append(dict(base, mode="presign", method="GET", body=b""))
    out = subprocess.run([storetest.tool("sigv4_tool")],
                         input="\n".join(tool_line(r) for r in reqs) + "\n",
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(reqs)
    failures = []
    for req, signed in zip(reqs, out):
        key = req["path"].split("/", 2)[2]
        target = quote(req["path"], safe="/~")
        headers = {"Host": host}
        if req["mode"] == "presign":
            target += "?" + signed
        else:
            headers.update({"x-amz-date": amz_date, "Authorization": signed,
                            "x-amz-content-sha256": hashlib.sha256(req["body"]).hexdigest()})
        conn = http.client.HTTPConnection("127.0.0.1", s3backend.port, timeout=30)
        conn.request(req["method"], target, body=req["body"] or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if resp.status != 200 or (req["method"] == "GET" and data != bodies[key]):
            failures.append((req["mode"], req["method"], key, resp.status, data[:200]))
        elif req["method"] == "PUT":
            got = direct.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if got != bodies[key]:
                failures.append(("stored", key, got[:50]))
    assert not failures, failures[:5]
    # The check can fail: a signature made with another secret is refused.
    bad = dict(reqs[2], secret="not-the-secret")
    signed = subprocess.run([storetest.tool("sigv4_tool")], input=tool_line(bad) + "\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    conn = http.client.HTTPConnection("127.0.0.1", s3backend.port, timeout=30)
    conn.request("GET", quote(bad["path"], safe="/~") + "?" + signed, headers={"Host": host})
    resp = conn.getresponse()
    assert resp.status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in resp.read()
    conn.close()
