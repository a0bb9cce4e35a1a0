"""ferry check / version / usage, and `ferry serve` refusing a bad config."""
import os
import re
import subprocess

import pytest

from conftest import FERRY_BIN, ROOT


def run(*args, cwd=None, timeout=20):
    return subprocess.run([FERRY_BIN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def write(tmp_path, text, name="ferry.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_check_valid(tmp_path):
    path = write(tmp_path, f"[server]\nstate_dir = {tmp_path}\nlisten = 127.0.0.1:9999 [::1]:9999\n"
                           "keepalive_timeout = 500ms\nmax_header_size = 64KiB\n"
                           "workers = 3\n; a comment\n[store]\ntype = dir\n")
    r = run("check", "-c", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"ferry: configuration {path} is valid\n"
    assert r.stderr == ""


# (id, config text, exact stderr line with FILE for the path)
BAD = [
    ("unknown-key", "[server]\nlisten = 127.0.0.1:1\nbogus = 1\n",
     "FILE:3: key 'bogus': unknown key in [server]"),
    ("unknown-section", "[server]\n[nope]\nx = 1\n",
     "FILE:3: unknown section '[nope]'"),
    ("key-outside-section", "listen = 127.0.0.1:1\n",
     "FILE:1: key 'listen': outside of any [section]"),
    ("bad-duration", "[server]\nkeepalive_timeout = 5x\n",
     "FILE:2: key 'keepalive_timeout': cannot parse '5x' (want a duration like 500ms, 2s, 5m, 1h)"),
    ("duration-out-of-range", "[server]\nheader_timeout = 50ms\n",
     "FILE:2: key 'header_timeout': '50ms' is out of range 100ms..1h"),
    ("int-out-of-range", "[server]\nmax_connections = 0\n",
     "FILE:2: key 'max_connections': 0 is out of range 1..1000000"),
    ("workers-out-of-range", "[server]\nworkers = 999\n",
     "FILE:2: key 'workers': 999 is out of range 1..256"),
    ("bad-int", "[server]\nworkers = many\n",
     "FILE:2: key 'workers': cannot parse 'many' (want an integer or 'auto')"),
    ("size-out-of-range", "[server]\nmax_header_size = 2GiB\n",
     "FILE:2: key 'max_header_size': '2GiB' is out of range 1KiB..1MiB"),
    ("bad-size", "[server]\nmax_header_size = lots\n",
     "FILE:2: key 'max_header_size': cannot parse 'lots' (want a size like 4096, 64KiB, 16MiB)"),
    ("bad-listen", "[server]\nlisten = 127.0.0.1:80x\n",
     "FILE:2: key 'listen': cannot parse '127.0.0.1:80x' (want HOST:PORT, [IPV6]:PORT or *:PORT)"),
    ("bad-listen-port", "[server]\nlisten = 127.0.0.1:70000\n",
     "FILE:2: key 'listen': cannot parse '127.0.0.1:70000' (want HOST:PORT, [IPV6]:PORT or *:PORT)"),
    ("bad-listen-second", "[server]\nlisten = 127.0.0.1:80 nohost\n",
     "FILE:2: key 'listen': cannot parse 'nohost' (want HOST:PORT, [IPV6]:PORT or *:PORT)"),
    ("duplicate-key", "[server]\nroot = a\n\nroot = b\n",
     "FILE:4: key 'root': set twice (first on line 2)"),
    ("bad-enum", "[server]\nlog_level = loud\n",
     "FILE:2: key 'log_level': cannot parse 'loud' (want one of error,warn,info,debug)"),
    ("syntax-error", "[server]\nlisten = 127.0.0.1:1\nthis line has no equals sign\n",
     "FILE:3: syntax error (want 'key = value' or '[section]')"),
    ("broken-section", "[server\n",
     "FILE:1: syntax error (want 'key = value' or '[section]')"),
]


@pytest.mark.parametrize("text,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_check_bad_config(tmp_path, text, expected):
    path = write(tmp_path, text)
    r = run("check", "-c", path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.splitlines()[0] == expected.replace("FILE", path), r.stderr


def test_check_reports_every_error(tmp_path):
    path = write(tmp_path, "[server]\nkeepalive_timeout = 5x\nworkers = 0\nbogus = 1\n")
    r = run("check", "-c", path)
    assert r.returncode == 2
    assert [line.split(": key ")[0] for line in r.stderr.splitlines()] == \
        [f"{path}:2", f"{path}:3", f"{path}:4"]


def test_check_missing_file(tmp_path):
    r = run("check", "-c", str(tmp_path / "nope.conf"))
    assert r.returncode == 2
    assert r.stderr == f"{tmp_path / 'nope.conf'}: cannot open: No such file or directory\n"


def conf_keys_from_source():
    """(section, name) of every entry in conf.c's conf_keys table, the single
    source of the configuration keys."""
    with open(os.path.join(ROOT, "src", "common", "conf.c")) as fh:
        src = fh.read()
    table = src[src.index("conf_keys[] = {"):]
    table = table[:table.index("{NULL, NULL")]
    keys = re.findall(r'^\s*\{"(\w+)", "(\w+)",', table, re.M)
    assert len(keys) > 20
    return keys


def parse_print(text):
    section, out = None, {}
    for line in text.splitlines():
        if not line:
            continue
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
            continue
        k, v = line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "")
        out[(section, k)] = v
    return out


def test_check_print_lists_every_key(tmp_path):
    path = write(tmp_path, "[server]\nkeepalive_timeout = 90s\nmax_header_size = 32768\n"
                           "[maintenance]\nbypass_secret = s3cr3t-value\n")
    r = run("check", "-c", path, "--print")
    assert r.returncode == 0, r.stderr
    printed = parse_print(r.stdout)
    keys = conf_keys_from_source()
    assert sorted(printed) == sorted(keys)
    assert printed[("server", "keepalive_timeout")] == "90s"
    assert printed[("server", "max_header_size")] == "32KiB"
    assert printed[("server", "listen")] == "127.0.0.1:8080"
    # Secrets are never echoed.
    assert "s3cr3t-value" not in r.stdout
    assert printed[("maintenance", "bypass_secret")] == "(set)"


def test_check_print_output_is_a_valid_config(tmp_path):
    r = run("check", "--print", cwd=str(tmp_path))
    assert r.returncode == 0
    path = write(tmp_path, "\n".join(line for line in r.stdout.splitlines()
                                     if not line.endswith(" =")) + "\n", "dumped.conf")
    r2 = run("check", "-c", path)
    assert r2.returncode == 0, r2.stderr


def test_no_config_means_builtin_defaults(tmp_path):
    if os.path.exists("/etc/ferry/ferry.conf"):
        pytest.skip("/etc/ferry/ferry.conf exists on this machine and would be used")
    r = run("check", cwd=str(tmp_path))
    assert r.returncode == 0
    assert r.stdout == ("ferry: state_dir './run' does not exist; ferry serve will create it "
                        "(mode 0700)\nferry: configuration (built-in defaults) is valid\n")
    printed = parse_print(run("check", "--print", cwd=str(tmp_path)).stdout)
    assert printed[("server", "listen")] == "127.0.0.1:8080"
    assert printed[("server", "root")] == "./public"
    assert printed[("server", "keepalive_timeout")] == "15s"
    assert printed[("server", "header_timeout")] == "10s"
    assert printed[("server", "max_connections")] == "10000"
    assert printed[("server", "max_header_size")] == "16KiB"
    assert printed[("store", "type")] == "dir"


def test_check_state_dir(tmp_path):
    """check says a missing state_dir will be created, and refuses one that
    cannot be (a file in the way), naming what is in the way."""
    path = write(tmp_path, f"[server]\nstate_dir = {tmp_path}/new/state\n")
    r = run("check", "-c", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"ferry: state_dir '{tmp_path}/new/state' does not exist; ferry serve "
                        f"will create it (mode 0700)\nferry: configuration {path} is valid\n")
    assert not os.path.exists(tmp_path / "new")  # check creates nothing
    (tmp_path / "file").write_text("x\n")
    path = write(tmp_path, f"[server]\nstate_dir = {tmp_path}/file/state\n")
    r = run("check", "-c", path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == (f"ferry: state_dir '{tmp_path}/file/state' does not exist and cannot be "
                        f"created: '{tmp_path}/file': not a directory\n")


def test_config_in_cwd_is_used(tmp_path):
    write(tmp_path, "[server]\nbogus = 1\n")
    r = run("check", cwd=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == "ferry.conf:2: key 'bogus': unknown key in [server]\n"


@pytest.mark.parametrize("args", [["bogus"], [], ["check", "--bogus"], ["check", "extra"],
                                  ["serve", "--bogus"]])
def test_usage_errors_exit_2(args):
    r = run(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage: ferry" in r.stderr
    assert r.stdout == ""


def test_unknown_command_names_it():
    r = run("frobnicate")
    assert r.returncode == 2
    assert r.stderr.startswith("ferry: unknown command 'frobnicate'\n")
    assert "serve" in r.stderr and "check" in r.stderr


def test_help_exits_0():
    r = run("--help")
    assert r.returncode == 0 and "usage: ferry COMMAND" in r.stdout


def test_version():
    r = run("version")
    assert r.returncode == 0
    assert re.match(r"^ferry \d+\.\d+\.\d+\n", r.stdout), r.stdout


def test_serve_with_bad_config_exits_2(tmp_path):
    path = write(tmp_path, "[server]\nlisten = 127.0.0.1:80x\n")
    r = run("serve", "-c", path, cwd=str(tmp_path), timeout=10)
    assert r.returncode == 2
    assert r.stderr == (f"{path}:2: key 'listen': cannot parse '127.0.0.1:80x' "
                        "(want HOST:PORT, [IPV6]:PORT or *:PORT)\n")
