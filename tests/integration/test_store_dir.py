"""The dir store through tests/tools/store_tool: files land atomically with a
checksum sidecar, verify re-reads the stored bytes, conditional create never
overwrites, and put-many (the sequential fallback) stores every file."""
import hashlib
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
import storetest  # noqa: E402


def run(tmp_path, *args, extra=""):
    conf = tmp_path / "dir.conf"
    conf.write_text(f"[store]\ntype = dir\npath = {tmp_path}/objects\nprefix = p/\n{extra}")
    return subprocess.run([storetest.tool("store_tool"), "-c", str(conf), *args],
                          capture_output=True, text=True)


def test_dir_store_roundtrip_sidecar_and_tamper(tmp_path):
    data = os.urandom(70_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    p = run(tmp_path, "put", "a/b c.jpg", str(src))
    assert p.returncode == 0, p.stdout
    obj = tmp_path / "objects" / "p" / "a" / "b c.jpg"
    assert obj.read_bytes() == data
    side = (tmp_path / "objects" / "p" / "a" / "b c.jpg.ferry-sum").read_text()
    assert f"sha256 {hashlib.sha256(data).hexdigest()}" in side and f"size {len(data)}" in side
    assert sorted(os.listdir(obj.parent)) == ["b c.jpg", "b c.jpg.ferry-sum"]
    assert "ok verified" in run(tmp_path, "verify", "a/b c.jpg", str(src)).stdout
    out = tmp_path / "out"
    assert run(tmp_path, "get", "a/b c.jpg", str(out), "bytes=5-9").returncode == 0
    assert out.read_bytes() == data[5:10]
    # Flip one byte in the store: verify re-reads the object, not the sidecar.
    with open(obj, "r+b") as f:
        f.seek(100)
        f.write(bytes([data[100] ^ 1]))
    p = run(tmp_path, "verify", "a/b c.jpg", str(src))
    assert p.returncode == 1 and "ChecksumMismatch" in p.stdout
    p = run(tmp_path, "put", "../escape", str(src))
    assert p.returncode == 1 and "InvalidKey" in p.stdout, p.stdout
    assert not (tmp_path / "escape").exists()


def test_dir_store_conditional_create_and_put_many(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    files = {f"d/f{i}": os.urandom(100 + i) for i in range(20)}
    for k, v in files.items():
        (src / k).write_bytes(v)
    p = run(tmp_path, "put-many", "4", str(src), extra="conditional_create = yes\n")
    assert p.returncode == 0 and "files=20" in p.stdout, p.stdout
    for k, v in files.items():
        assert (tmp_path / "objects" / "p" / k).read_bytes() == v
    # Same bytes again: fine. Other bytes: refused, object unchanged.
    assert run(tmp_path, "put", "d/f0", str(src / "d/f0"),
               extra="conditional_create = yes\n").returncode == 0
    p = run(tmp_path, "put", "d/f0", str(src / "d/f1"), extra="conditional_create = yes\n")
    assert p.returncode == 1 and "errno=EEXIST" in p.stdout
    assert (tmp_path / "objects" / "p" / "d/f0").read_bytes() == files["d/f0"]
