"""The S3 store client against each S3 store (tests/s3/s3fixtures.py): s3rver
behind the verifying, fault-injecting proxy, and Ceph's RADOS Gateway behind the
same proxy in pass-through mode or directly.

Every request ferry sends has its SigV4 signature and its Content-MD5 /
x-amz-content-sha256 checked: by the proxy (botocore) in front of s3rver, by RGW
itself otherwise (RGW ignores x-amz-checksum-sha256, so there only Content-MD5
proves the bytes). Bytes are read back from the store directly with boto3,
never through ferry.
"""
import base64
import hashlib
import os
import subprocess
import time
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
import storetest  # noqa: E402
from s3fixtures import ACCESS_KEY, BUCKET, SECRET_KEY, clean_env  # noqa: E402

MULTI = ("--threshold", "5MiB", "--part-size", "5MiB")


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def stored(direct, key):
    return direct.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def ok(p):
    assert p.returncode == 0, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def attempts(p):
    for word in p.stdout.split():
        if word.startswith("attempts="):
            return int(word.split("=")[1])
    raise AssertionError(p.stdout)


def put_multipart_with_complete_fault(tmp_path, store, s3proxy, fault, key, **kw):
    """Put 6 MiB as two parts with fault on CompleteMultipartUpload; returns
    the bytes and the store_tool run."""
    data = os.urandom(6 * 1024 * 1024)
    f = write(tmp_path, "big", data)
    s3proxy.add_fault(fault, method="POST", query="uploadId")
    return data, store.run("put", key, f, opts=MULTI, **kw)


def test_put_head_get_verify_roundtrip(tmp_path, store, s3proxy, direct):
    data = os.urandom(100_000)
    f = write(tmp_path, "f", data)
    out = ok(store.run("put", "photos/one.jpg", f))
    assert f"etag={hashlib.md5(data).hexdigest()}" in out
    assert stored(direct, "photos/one.jpg") == data
    head = ok(store.run("head", "photos/one.jpg"))
    assert f"size={len(data)}" in head
    assert f"meta={hashlib.sha256(data).hexdigest()}" in head
    assert "ok verified" in ok(store.run("verify", "photos/one.jpg", f))
    out_path = str(tmp_path / "out")
    ok(store.run("get", "photos/one.jpg", out_path))
    assert open(out_path, "rb").read() == data
    ok(store.run("get", "photos/one.jpg", out_path, "bytes=10-19"))
    assert open(out_path, "rb").read() == data[10:20]
    # Every request was checked and passed: no error outcome in the proxy log.
    assert all(isinstance(o, int) and o < 300 for o in s3proxy.outcomes()), s3proxy.log
    put = [h for m, _, h in s3proxy.requests if m == "PUT"][0]
    assert put["Content-MD5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert put["x-amz-checksum-sha256"] == \
        base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert put["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("key", ["a b/c d.txt", "plus+sign=eq", "pct%20literal%",
                                 "tilde~/x", "caf\u00e9/\u65e5\u672c.jpg", "q?uestion#hash&amp"])
def test_awkward_keys_are_signed_and_stored_exactly(tmp_path, store, s3proxy, direct, key):
    data = key.encode() * 100
    f = write(tmp_path, "f", data)
    ok(store.run("put", key, f))
    assert stored(direct, key) == data
    assert "ok verified" in ok(store.run("verify", key, f))
    ok(store.run("delete", key))
    assert key not in [o["Key"] for o in direct.list_objects(Bucket=BUCKET).get("Contents", [])]


def test_prefix_is_prepended(tmp_path, store, direct):
    data = b"prefixed"
    f = write(tmp_path, "f", data)
    ok(store.run("put", "x/y", f, conf_extra="prefix = originals/\n"))
    assert stored(direct, "originals/x/y") == data


def test_multipart_upload_parts_digests_and_etag(tmp_path, store, s3proxy, direct):
    data = os.urandom(11 * 1024 * 1024 + 123)
    f = write(tmp_path, "big", data)
    out = ok(store.run("put", "big/object", f, opts=MULTI))
    md5s = b"".join(hashlib.md5(data[i:i + (5 << 20)]).digest()
                    for i in range(0, len(data), 5 << 20))
    assert f"etag={hashlib.md5(md5s).hexdigest()}-3" in out
    assert stored(direct, "big/object") == data
    parts = [(m, h) for m, p, h in s3proxy.requests if m == "PUT" and p.endswith("big/object")]
    assert len(parts) == 3
    for i, (_, h) in enumerate(parts):
        chunk = data[i * (5 << 20):(i + 1) * (5 << 20)]
        assert h["Content-MD5"] == base64.b64encode(hashlib.md5(chunk).digest()).decode()
        assert h["x-amz-checksum-sha256"] == \
            base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    assert "ok verified" in ok(store.run("verify", "big/object", f, opts=MULTI))


@pytest.mark.parametrize("mode,md5,sha", [("sha256", True, True), ("md5", True, False),
                                          ("none", False, False)])
def test_checksum_option_selects_headers(tmp_path, store, s3proxy, direct, mode, md5, sha):
    data = os.urandom(4096)
    f = write(tmp_path, "f", data)
    ok(store.run("put", f"ck/{mode}", f, conf_extra=f"checksum = {mode}\n"))
    h = [h for m, _, h in s3proxy.requests if m == "PUT"][0]
    assert ("Content-MD5" in h) == md5
    assert ("x-amz-checksum-sha256" in h) == sha
    # The signed payload hash is always there: the body is never unchecked.
    assert h["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(direct, f"ck/{mode}") == data


@pytest.mark.parametrize("fault,code", [("InternalError", 500), ("SlowDown", 503),
                                        ("RequestTimeout", 400), ("status502", 502)])
def test_retryable_errors_are_retried(tmp_path, store, s3proxy, direct, fault, code):
    data = os.urandom(2048)
    f = write(tmp_path, "f", data)
    s3proxy.add_fault(fault, method="PUT", times=2)
    p = store.run("put", f"retry/{fault}", f)
    ok(p)
    assert attempts(p) == 3
    assert stored(direct, f"retry/{fault}") == data
    assert s3proxy.outcomes("PUT")[:2] == [fault if fault != "status502" else "502"] * 2


def test_retries_give_up_with_s3_code_and_message(tmp_path, store, s3proxy, direct):
    f = write(tmp_path, "f", b"never stored")
    s3proxy.add_fault("SlowDown", method="PUT", times=100)
    p = store.run("put", "retry/exhausted", f, conf_extra="retries = 2\n")
    assert p.returncode == 1
    assert "SlowDown (503): Please reduce your request rate." in p.stdout
    assert attempts(p) == 3
    assert len(s3proxy.outcomes("PUT")) == 3
    with pytest.raises(direct.exceptions.NoSuchKey):
        direct.get_object(Bucket=BUCKET, Key="retry/exhausted")


def test_reset_while_sending_the_body_is_retried(tmp_path, store, s3proxy, direct):
    data = os.urandom(300_000)
    f = write(tmp_path, "f", data)
    s3proxy.add_fault("reset_request", method="PUT")
    p = store.run("put", "reset/put", f)
    ok(p)
    assert attempts(p) == 2
    assert s3proxy.outcomes("PUT")[0] == "reset_request"
    assert stored(direct, "reset/put") == data


def test_reset_mid_download_fails_rather_than_truncating(tmp_path, store, s3proxy, direct):
    data = os.urandom(200_000)
    f = write(tmp_path, "f", data)
    ok(store.run("put", "reset/get", f))
    s3proxy.add_fault("reset_response", method="GET")
    p = store.run("get", "reset/get", str(tmp_path / "out"))
    assert p.returncode == 1
    assert "TransportError" in p.stdout
    # A reset before any byte arrived is retried and succeeds.
    s3proxy.add_fault("InternalError", method="GET")
    ok(store.run("get", "reset/get", str(tmp_path / "out")))
    assert (tmp_path / "out").read_bytes() == data


def test_stalled_response_times_out_and_is_retried(tmp_path, store, s3proxy, direct):
    data = b"slow"
    f = write(tmp_path, "f", data)
    s3proxy.add_fault("delay", method="PUT", delay=2.5)
    p = store.run("put", "slow/put", f)
    ok(p)
    assert attempts(p) == 2
    assert stored(direct, "slow/put") == data


def test_complete_multipart_200_with_error_body_is_an_error(tmp_path, store, s3proxy, direct):
    data, p = put_multipart_with_complete_fault(tmp_path, store, s3proxy, "complete_error_200",
                                                "mp/error200")
    ok(p)
    assert "complete_error_200" in s3proxy.outcomes("POST")
    assert stored(direct, "mp/error200") == data
    # With no retries left, the 200-with-error is reported, not taken as success.
    _, p = put_multipart_with_complete_fault(tmp_path, store, s3proxy, "complete_error_200",
                                             "mp/error200b", conf_extra="retries = 0\n")
    assert p.returncode == 1 and "InternalError (200)" in p.stdout
    with pytest.raises(direct.exceptions.NoSuchKey):
        direct.get_object(Bucket=BUCKET, Key="mp/error200b")
    # The failed upload was aborted.
    deletes = [p for m, p, _ in s3proxy.requests if m == "DELETE"]
    assert deletes == ["/ferry-test/mp/error200b"] and len(s3proxy.aborted) == 1


def test_dropped_response_after_put_is_retried(tmp_path, store, s3proxy, direct):
    data = os.urandom(5000)
    f = write(tmp_path, "f", data)
    s3proxy.add_fault("drop_response", method="PUT")
    p = store.run("put", "drop/plain", f)
    ok(p)
    assert attempts(p) == 2
    assert s3proxy.outcomes("PUT") == ["drop_response:200", 200]
    assert stored(direct, "drop/plain") == data


def test_conditional_create_dropped_response_resolved_by_digest(tmp_path, store, s3proxy,
                                                                direct):
    data = os.urandom(5000)
    f = write(tmp_path, "f", data)
    s3proxy.add_fault("drop_response", method="PUT")
    p = store.run("put", "cond/a", f, conf_extra="conditional_create = yes\n")
    ok(p)
    # The retry met our own object (412) and a HEAD + digest comparison settled it.
    assert s3proxy.outcomes("PUT") == ["drop_response:200", "PreconditionFailed"]
    assert s3proxy.outcomes("HEAD") == [200]
    assert stored(direct, "cond/a") == data
    # Different bytes under the same key: refused, and the object is untouched.
    g = write(tmp_path, "g", b"other bytes")
    p = store.run("put", "cond/a", g, conf_extra="conditional_create = yes\n")
    assert p.returncode == 1 and "errno=EEXIST" in p.stdout
    assert stored(direct, "cond/a") == data


def test_conditional_multipart_lost_complete_is_resolved(tmp_path, store, s3proxy, direct,
                                                        s3backend):
    data, p = put_multipart_with_complete_fault(tmp_path, store, s3proxy, "drop_response",
                                                "cond/mp")
    ok(p)
    if s3backend.rgw:
        # RGW answers a repeated Complete of a finished upload with 200 and
        # the object's ETag, which ferry compares: nothing left to decide.
        assert s3proxy.outcomes("POST")[-2:] == ["drop_response:200", 200]
        assert s3proxy.outcomes("HEAD") == []
    else:
        # The retried Complete found no upload (it had completed): the object decided.
        assert s3proxy.outcomes("POST")[-2:] == ["drop_response:200", "NoSuchUpload"]
        assert s3proxy.outcomes("HEAD") == [200]
    assert stored(direct, "cond/mp") == data


def test_complete_with_empty_etag_is_checked_by_head(tmp_path, store, s3proxy, direct):
    """RGW 16.2 answers CompleteMultipartUpload with an empty ETag: the object's
    ETag then comes from a HEAD, so a Complete that did not happen is an error."""
    data, p = put_multipart_with_complete_fault(tmp_path, store, s3proxy, "complete_empty_etag",
                                                "mp/empty-etag")
    ok(p)
    md5s = b"".join(hashlib.md5(data[i:i + (5 << 20)]).digest()
                    for i in range(0, len(data), 5 << 20))
    assert f"etag={hashlib.md5(md5s).hexdigest()}-2" in p.stdout
    assert [(m, o) for m, _, o in s3proxy.log if m in ("POST", "HEAD")][-2:] == \
        [("POST", 200), ("HEAD", 200)], s3proxy.log
    assert stored(direct, "mp/empty-etag") == data
    # A 200 with an empty ETag for a Complete that never reached the store:
    # the HEAD finds nothing, the put fails and its upload is aborted.
    _, p = put_multipart_with_complete_fault(tmp_path, store, s3proxy,
                                             "complete_lost_empty_etag", "mp/lost-etag")
    assert p.returncode == 1 and "errno=ENOENT" in p.stdout, p.stdout
    with pytest.raises(direct.exceptions.NoSuchKey):
        direct.get_object(Bucket=BUCKET, Key="mp/lost-etag")
    assert [m for m, p, _ in s3proxy.requests if p.endswith("mp/lost-etag")][-1] == "DELETE"


@pytest.mark.s3stores("rgw-proxy", reason="RGW's own Complete answer (an empty ETag) "
                      "is what is measured")
def test_rgw_complete_etag_is_empty_and_taken_from_head(tmp_path, store, s3proxy, direct):
    data = os.urandom(6 * 1024 * 1024)
    ok(store.run("put", "mp/rgw", write(tmp_path, "big", data), opts=MULTI))
    post = [o for m, _, o in s3proxy.log if m in ("POST", "HEAD")]
    assert post == [200, 200, 200], s3proxy.log  # Create, Complete, then the HEAD
    assert stored(direct, "mp/rgw") == data


def test_proxy_rejects_forged_signature_and_bad_digest(tmp_path, store, s3proxy, direct):
    f = write(tmp_path, "f", b"x")
    # A client with the wrong secret: not retried, S3's code, no secret in the text.
    p = store.run("put", "forged/a", f, creds=False,
                  conf_extra=f"access_key = {ACCESS_KEY}\nsecret_key = wrong-secret-value\n")
    assert p.returncode == 1
    assert "SignatureDoesNotMatch (403)" in p.stdout and attempts(p) == 1
    assert "wrong-secret-value" not in p.stdout + p.stderr
    p = store.run("put", "forged/b", f, creds=False,
                  conf_extra="access_key = AKIANOTKNOWN\nsecret_key = whatever\n")
    assert "InvalidAccessKeyId (403)" in p.stdout
    with pytest.raises(direct.exceptions.NoSuchKey):
        direct.get_object(Bucket=BUCKET, Key="forged/a")
    # Raw requests: a valid presigned URL works, one bit changed in the signature
    # or a different key under the same signature does not.
    ok(store.run("put", "forged/c", f))
    url = ok(store.run("presign", "forged/c", "60")).strip()
    assert urllib.request.urlopen(url).read() == b"x"
    sig = url[-64:]
    forged = url[:-64] + ("0" if sig[0] != "0" else "1") + sig[1:]
    for bad in (forged, url.replace("forged/c", "forged/a")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad)
        assert e.value.code == 403
        assert b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()


def test_body_not_matching_its_digests_is_rejected_by_the_proxy(s3proxy):
    """The proxy's checks can fail: a correctly signed request whose Content-MD5
    does not match its body gets BadDigest."""
    import botocore.session
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    body = b"hello"
    url = f"http://127.0.0.1:{s3proxy.port}/{BUCKET}/digest/bad"
    req = AWSRequest(method="PUT", url=url, data=body, headers={
        "Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(url, data=body, method="PUT", headers=dict(prepared.headers))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r)
    assert e.value.code == 400 and b"<Code>BadDigest</Code>" in e.value.read()
    assert botocore.session  # imported for the signer's side effects only


def test_verify_detects_other_bytes(tmp_path, store, direct):
    a = write(tmp_path, "a", b"A" * 1000)
    b = write(tmp_path, "b", b"B" * 1000)
    c = write(tmp_path, "c", b"A" * 999)
    ok(store.run("put", "v/a", a))
    p = store.run("verify", "v/a", b)
    assert p.returncode == 1 and "ChecksumMismatch" in p.stdout
    p = store.run("verify", "v/a", c)
    assert p.returncode == 1 and "SizeMismatch" in p.stdout
    p = store.run("verify", "v/missing", a)
    assert p.returncode == 1 and "errno=ENOENT" in p.stdout
    # An object uploaded by someone else without our digest: the ETag confirms.
    direct.put_object(Bucket=BUCKET, Key="v/foreign", Body=b"A" * 1000)
    assert "ok verified" in ok(store.run("verify", "v/foreign", a))
    assert store.run("verify", "v/foreign", b).returncode == 1


def test_credentials_from_environment_and_shared_file(tmp_path, store, direct):
    f = write(tmp_path, "f", b"creds")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    ok(store.run("put", "creds/env", f, creds=False, env=env))
    cred_file = tmp_path / "credentials"
    cred_file.write_text(f"[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n"
                         f"[ferry]\naws_access_key_id = {ACCESS_KEY}\n"
                         f"aws_secret_access_key = {SECRET_KEY}\n")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(cred_file), "AWS_PROFILE": "ferry"}
    ok(store.run("put", "creds/file", f, creds=False, env=env))
    assert stored(direct, "creds/file") == b"creds"
    # [store] profile wins over AWS_PROFILE; config keys win over the environment.
    p = store.run("put", "creds/x", f, creds=False, env=env, conf_extra="profile = default\n")
    assert "SignatureDoesNotMatch" in p.stdout or "InvalidAccessKeyId" in p.stdout
    env_bad = {"AWS_ACCESS_KEY_ID": "AKIABAD", "AWS_SECRET_ACCESS_KEY": "bad"}
    ok(store.run("put", "creds/cfg", f, env=env_bad))
    # Nothing anywhere: a configuration error (exit 2) that names no secret.
    p = store.run("put", "creds/none", f, creds=False)
    assert p.returncode == 2 and "NoCredentials" in p.stdout


def test_aws_ca_bundle_does_not_break_plain_or_configured(tmp_path, store, direct):
    f = write(tmp_path, "f", b"ca")
    ok(store.run("put", "ca/a", f, env={"AWS_CA_BUNDLE": "/nonexistent/ca.pem"}))
    p = store.run("put", "ca/b", f, conf_extra="ca_file = /nonexistent/ca.pem\n")
    assert p.returncode == 2 and "ca_file" in p.stdout


def ferry_presign(conf, *args, env=None):
    return subprocess.run([storetest.FERRY_BIN, "presign", "-c", conf, *args],
                          capture_output=True, text=True, env=clean_env(env))


def test_ferry_presign_prints_a_working_url(tmp_path, store, s3proxy, direct):
    data = os.urandom(3000)
    direct.put_object(Bucket=BUCKET, Key="pre/sign me+.bin", Body=data)
    conf = store.conf()
    p = ferry_presign(conf, "pre/sign me+.bin", "--ttl", "120")
    assert p.returncode == 0, p.stderr
    url = p.stdout.strip()
    assert "X-Amz-Expires=120&" in url and SECRET_KEY not in url
    assert urllib.request.urlopen(url).read() == data
    assert s3proxy.outcomes("GET") == [200]
    # The config's duration syntax: "2m" is 120 seconds.
    p = ferry_presign(conf, "pre/sign me+.bin", "--ttl", "2m")
    assert p.returncode == 0 and "X-Amz-Expires=120&" in p.stdout, p.stderr
    for ttl in ("0", "604801", "8d", "x", "1500ms", "+5", " 5", "-1"):
        p = ferry_presign(conf, "--ttl", ttl, "k")
        assert p.returncode == 2 and f"--ttl '{ttl}'" in p.stderr, (ttl, p.stdout, p.stderr)
        assert p.stdout == ""
    for bad in ([], ["a", "b"]):
        p = ferry_presign(conf, *bad)
        assert p.returncode == 2 and p.stdout == "", (bad, p.stdout, p.stderr)
    dir_conf = tmp_path / "dir.conf"
    dir_conf.write_text(f"[store]\ntype = dir\npath = {tmp_path}/store\n")
    p = ferry_presign(str(dir_conf), "k")
    assert p.returncode == 2 and "not s3" in p.stderr


def test_virtual_hosted_addressing(tmp_path, store, s3proxy, direct):
    # curl resolves *.localhost to loopback itself; s3rver maps
    # <bucket>.s3.localhost to the bucket.
    data = b"virtual host"
    f = write(tmp_path, "f", data)
    extra = "addressing = virtual\n"
    conf = store.conf(extra)
    text = open(conf).read().replace("http://127.0.0.1:", "http://s3.localhost:")
    p = subprocess.run([storetest.tool("store_tool"), "-c", "/dev/stdin", "put", "vh/a", f],
                       input=text, capture_output=True, text=True, env=clean_env())
    ok(p)
    hosts = [h["Host"] for m, _, h in s3proxy.requests if m == "PUT"]
    assert hosts == [f"{BUCKET}.s3.localhost:{s3proxy.port}"]
    assert [p for m, p, _ in s3proxy.requests if m == "PUT"] == ["/vh/a"]
    assert stored(direct, "vh/a") == data


def test_non_retryable_errors_report_code(tmp_path, store, s3proxy):
    f = write(tmp_path, "f", b"x")
    conf_bucket = open(store.conf()).read().replace(f"bucket = {BUCKET}", "bucket = no-such-bucket")
    path = tmp_path / "nb.conf"
    path.write_text(conf_bucket)
    p = subprocess.run([storetest.tool("store_tool"), "-c", str(path), "put", "k", f],
                       capture_output=True, text=True, env=clean_env())
    assert p.returncode == 1 and "NoSuchBucket (404)" in p.stdout and attempts(p) == 1


def test_tls_is_verified_and_ca_file_is_honoured(tmp_path):
    """s3rver over TLS with a self-signed certificate: refused without the CA,
    accepted with ca_file, and AWS_CA_BUNDLE pointing elsewhere changes nothing."""
    from s3fixtures import S3rver
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    srv = S3rver(tmp_path / "tls", ["--key", str(key), "--cert", str(cert)]).start()
    try:
        f = write(tmp_path, "f", b"over tls")
        base = (f"[store]\ntype = s3\nendpoint = https://127.0.0.1:{srv.port}\n"
                f"bucket = {BUCKET}\naccess_key = {ACCESS_KEY}\nsecret_key = S3RVER\n"
                "retries = 3\n")

        def put(extra, env=None):
            c = tmp_path / "tls.conf"
            c.write_text(base + extra)
            return subprocess.run([storetest.tool("store_tool"), "-c", str(c),
                                   "--retry-base", "10", "put", "tls/a", f],
                                  capture_output=True, text=True, env=clean_env(env))

        p = put("")
        assert p.returncode == 1 and "errno=EPROTO" in p.stdout and attempts(p) == 1
        ok(put(f"ca_file = {cert}\n", env={"AWS_CA_BUNDLE": "/nonexistent"}))
        ok(put("", env={"AWS_CA_BUNDLE": str(cert)}))
    finally:
        srv.stop()


def test_content_type_is_stored_for_single_and_multipart(tmp_path, store, s3proxy, direct):
    small = write(tmp_path, "s", b"<svg/>")
    ok(store.run("put", "ct/a.svg", small, "image/svg+xml"))
    assert direct.head_object(Bucket=BUCKET, Key="ct/a.svg")["ContentType"] == "image/svg+xml"
    big = write(tmp_path, "b", os.urandom(6 * 1024 * 1024))
    ok(store.run("put", "ct/b.jpg", big, "image/jpeg", opts=MULTI))
    assert direct.head_object(Bucket=BUCKET, Key="ct/b.jpg")["ContentType"] == "image/jpeg"
    # Without a type nothing is invented (curl's form type must not leak into
    # CreateMultipartUpload).
    ok(store.run("put", "ct/c", big, opts=MULTI))
    posts = [h for m, _, h in s3proxy.requests if m == "POST"]
    assert all("x-www-form-urlencoded" not in h.get("Content-Type", "") for h in posts)
    assert "x-www-form-urlencoded" not in \
        direct.head_object(Bucket=BUCKET, Key="ct/c")["ContentType"]


def test_put_many_concurrent_on_one_thread_with_faults(tmp_path, store, s3proxy, direct):
    """store_put_many: 8 uploads in flight on one curl multi handle, singles and
    multiparts mixed, while the proxy injects errors, resets and a dropped
    response: every object ends up stored exactly, the bad digest is refused."""
    src = tmp_path / "many"
    files = {}
    for i in range(40):
        data = os.urandom(1000 + i * 97)
        files[f"m/small{i:02d}"] = data
    for i in range(2):
        files[f"m/big{i}"] = os.urandom(11 * 1024 * 1024 + i)
    for key, data in files.items():
        p = src / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    s3proxy.add_fault("SlowDown", method="PUT", key="small0", times=3)
    s3proxy.add_fault("InternalError", method="PUT", key="big1", times=2)
    s3proxy.add_fault("reset_request", method="PUT", key="small1", times=2)
    s3proxy.add_fault("drop_response", method="PUT", key="small22")
    s3proxy.add_fault("complete_error_200", method="POST", query="uploadId", key="big0")
    p = store.run("put-many", "8", str(src), opts=MULTI)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"files={len(files)} bytes={sum(map(len, files.values()))}" in p.stdout
    for key, data in files.items():
        assert stored(direct, key) == data, key
    # Transfers really overlapped (one thread, many requests at the proxy at once).
    assert s3proxy.max_in_flight >= 4, s3proxy.max_in_flight


@pytest.mark.parametrize("change,opts,conf,code", [
    ("truncate", (), "", "ReadFailed"),
    ("flip", (), "", "(400)"),  # BadDigest or XAmzContentSHA256Mismatch
    ("flip", (), "checksum = none\n", "XAmzContentSHA256Mismatch (400)"),
    ("truncate", MULTI, "", "ReadFailed"),
    ("flip", MULTI, "", "changed while it was uploaded"),
])
def test_file_changed_after_hashing_is_never_stored(tmp_path, store, s3proxy, direct, change,
                                                    opts, conf, code):
    size = 11 * 1024 * 1024 if opts else 100_000
    f = write(tmp_path, "f", os.urandom(size))
    p = store.run("--change-after-digest", change, "put", f"changed/{change}", f,
                  opts=opts, conf_extra=conf)
    assert p.returncode == 1 and code in p.stdout, p.stdout
    assert "errno=EBADMSG" in p.stdout and attempts(p) == 1
    with pytest.raises(direct.exceptions.NoSuchKey):
        direct.get_object(Bucket=BUCKET, Key=f"changed/{change}")


@pytest.mark.parametrize("code", ["AccessDenied", "RequestTimeTooSkewed"])
def test_non_retryable_s3_errors_are_not_retried(tmp_path, store, s3proxy, direct, code):
    from s3proxy import ERROR_MESSAGES
    f = write(tmp_path, "f", b"x")
    s3proxy.add_fault(code, method="PUT", times=5)
    p = store.run("put", f"nr/{code}", f)
    assert p.returncode == 1 and attempts(p) == 1
    assert f"{code} (403): {ERROR_MESSAGES[code]}" in p.stdout
    assert "errno=EACCES" in p.stdout
    assert s3proxy.outcomes("PUT") == [code]


# The odd names the suites use: test_awkward_keys_... above and the url_prefix
# names of test_offload_serve.py.
ODD_KEYS = ["a b/c d.txt", "plus+sign=eq", "pct%20literal%", "tilde~/x",
            "caf\u00e9/\u65e5\u672c.jpg", "q?uestion#hash&amp", "100%.jpg", "x#y.jpg",
            "a&b=c.jpg", "it's \"q\".jpg", "(p).jpg", "\U0001F600.png",
            "dir/sub dir/\u00fc.txt", "pre/sign me+.bin"]


def http_get(url):
    """(status, body, S3 error code or None) of a GET of url."""
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read(), None
    except urllib.error.HTTPError as e:
        body = e.read()
        code = body.split(b"<Code>")[1].split(b"</Code>")[0].decode() if b"<Code>" in body \
            else None
        return e.code, body, code


def test_ferry_presign_urls_for_odd_keys_are_accepted(tmp_path, store, direct, s3backend):
    """`ferry presign` for every odd key name: the store (RGW itself, or the
    verifying proxy in front of s3rver) serves exactly the object's bytes; an
    altered signature and an expired URL are refused with S3's codes."""
    conf = store.conf()
    urls = {}
    for key in ODD_KEYS:
        data = hashlib.sha256(key.encode()).digest() * 50
        direct.put_object(Bucket=BUCKET, Key=key, Body=data)
        p = ferry_presign(conf, key, "--ttl", "300")
        assert p.returncode == 0, p.stderr
        urls[key] = p.stdout.strip()
        assert urls[key].startswith(f"http://127.0.0.1:{s3backend.port}/{BUCKET}/"), urls[key]
        status, body, code = http_get(urls[key])
        assert (status, code) == (200, None), (key, urls[key], body)
        assert body == data, key
    url = urls["a b/c d.txt"]
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert http_get(forged)[::2] == (403, "SignatureDoesNotMatch")
    # Another key's path under this signature.
    other = url.replace("/a%20b/c%20d.txt?", "/plus%2Bsign%3Deq?")
    assert other != url and http_get(other)[::2] == (403, "SignatureDoesNotMatch")
    p = ferry_presign(conf, "a b/c d.txt", "--ttl", "1")
    short = p.stdout.strip()
    # Expired: wait (bounded) for the second to pass. S3 says AccessDenied, not
    # SignatureDoesNotMatch: the signature itself is good. (Not first asserting
    # a 200: on a loaded machine the second may be gone before the request.)
    deadline = time.monotonic() + 10
    while http_get(short)[0] == 200:
        assert time.monotonic() < deadline, "a 1 s presigned URL still works after 10 s"
        time.sleep(0.2)
    assert http_get(short)[::2] == (403, "AccessDenied")
