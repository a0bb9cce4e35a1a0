"""scripts/fresh-debian-check.sh takes its package mirror from --mirror or from the
host's apt sources (one-line and deb822), never from a built-in URL, and stops with
exit 2 and a message naming --mirror when neither gives one.

`--print-mirror` runs only that choice (no root, no debootstrap, no network);
FRESH_CHECK_APT_DIR points it at sample sources in a temporary directory."""
import os
import re
import subprocess

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "fresh-debian-check.sh")
MAIN = "http://apt.example.invalid/debian"


def write(base, name, text):
    path = os.path.join(str(base), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def print_mirror(tmp_path, *args):
    apt = tmp_path / "apt"
    apt.mkdir(exist_ok=True)
    env = {**os.environ, "FRESH_CHECK_APT_DIR": str(apt),
           "FRESH_CHECK_DIR": str(tmp_path / "state")}
    return subprocess.run(["bash", SCRIPT, "--print-mirror", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def picked(tmp_path, *args):
    out = print_mirror(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out.stdout


def test_one_line_sources_skip_everything_but_the_main_archive(tmp_path):
    write(tmp_path, "apt/sources.list", f"""\
# deb http://commented.example.invalid/debian bookworm main
deb-src {MAIN}-src bookworm main
deb http://security.example.invalid/debian-security bookworm-security main
deb http://updates.example.invalid/debian bookworm-updates main
deb http://old.example.invalid/debian bullseye main
deb http://contrib.example.invalid/debian bookworm contrib non-free
deb [signed-by=/usr/share/keyrings/vendor.gpg] https://vendor.example.invalid/apt bookworm main
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb mirror+file:/etc/apt/mirrors.txt bookworm main
deb http://comment.example.invalid/debian bookworm contrib # main
deb [ arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg ] {MAIN} bookworm contrib main # ok
deb http://second.example.invalid/debian bookworm main
""")
    assert picked(tmp_path) == MAIN + "\n"


def test_deb822_sources_skip_disabled_and_take_the_first_uri(tmp_path):
    # a-*.sources sorts first: its stanzas would win if they were not skipped.
    write(tmp_path, "apt/sources.list.d/a-vendor.sources", """\
Types: deb
URIs: http://disabled.example.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.example.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://contrib.example.invalid/debian
Suites: bookworm
Components: contrib non-free

Types: deb
URIs: mirror+file:/etc/apt/mirrors.txt
Suites: bookworm
Components: main

Types: deb
URIs: https://vendor.example.invalid/apt
Suites: bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGOGuPwBEADYtPQ8fXM4OZEyvN2nd7J3EXnqJKgGiEHRX6D2qpEHJ0rX0QUz
 -----END PGP PUBLIC KEY BLOCK-----
""")
    write(tmp_path, "apt/sources.list.d/aa-ignored.list.disabled",
          "deb http://ignored.example.invalid/debian bookworm main\n")
    write(tmp_path, "apt/sources.list.d/debian.sources", f"""\
Types: deb
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main

# the archive itself, from two mirrors
types: deb deb-src
# URIs: http://commented.example.invalid/debian
URIs:
# nearest first: our own mirror
 {MAIN}
  http://two.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
""")
    assert picked(tmp_path) == MAIN + "\n"


def test_sources_list_comes_before_sources_list_d(tmp_path):
    write(tmp_path, "apt/sources.list.d/debian.sources",
          "Types: deb\nURIs: http://later.example.invalid/debian\n"
          "Suites: bookworm\nComponents: main\n")
    write(tmp_path, "apt/sources.list", f"deb {MAIN} bookworm main\n")
    assert picked(tmp_path) == MAIN + "\n"
    os.remove(tmp_path / "apt" / "sources.list")
    assert picked(tmp_path) == "http://later.example.invalid/debian\n"


def test_mirror_option_overrides_the_sources(tmp_path):
    write(tmp_path, "apt/sources.list", "deb http://host.example.invalid/debian bookworm main\n")
    assert picked(tmp_path, "--mirror", "https://given.example.invalid/debian/") == \
        "https://given.example.invalid/debian/\n"
    os.remove(tmp_path / "apt" / "sources.list")
    assert picked(tmp_path, "--mirror", "file:/srv/debian") == "file:/srv/debian\n"


def test_mirror_option_must_be_a_url(tmp_path):
    for args, want in ((["--mirror"], "--mirror needs a URL"),
                       (["--mirror", "apt.example.invalid"], "is not an http://")):
        out = print_mirror(tmp_path, *args)
        assert out.returncode == 2, out
        assert out.stdout == ""
        assert want in out.stderr


def test_no_main_archive_stops_with_how_to_pass_one(tmp_path):
    # Only security and updates, a disabled archive: nothing debootstrap may use.
    write(tmp_path, "apt/sources.list.d/debian.sources", """\
Types: deb
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security bookworm-updates
Components: main

Types: deb
URIs: http://off.example.invalid/debian
Suites: bookworm
Components: main
Enabled: No
""")
    for sources_left in (True, False):
        out = print_mirror(tmp_path)
        assert out.returncode == 2, (sources_left, out)
        assert out.stdout == ""
        assert "no Debian bookworm main archive" in out.stderr
        assert "pass one with --mirror URL" in out.stderr
        assert str(tmp_path / "apt" / "sources.list") in out.stderr
        if sources_left:  # then again with no sources at all
            os.remove(tmp_path / "apt" / "sources.list.d" / "debian.sources")
    # --print-mirror runs before anything touches the state directory.
    assert not (tmp_path / "state").exists()


def test_no_mirror_host_is_built_in():
    for name in ("scripts/fresh-debian-check.sh", "README.md"):
        with open(os.path.join(ROOT, name)) as f:
            text = f.read()
        assert not re.search(r"deb\.debian\.org|ftp\.[a-z.]*debian|https?://[a-z.]*debian\.org",
                             text), name


def test_a_run_without_mirror_stops_before_doing_anything(tmp_path):
    # No pristine chroot yet, so debootstrap would need a mirror: the run stops at
    # once (before the root check, the lock and the logs), root or not. A stub
    # debootstrap first on PATH records a call and fails, should that ever change.
    (tmp_path / "apt").mkdir()
    stub = tmp_path / "bin" / "debootstrap"
    write(tmp_path, "bin/debootstrap", f"#!/bin/sh\ntouch {tmp_path}/called\nexit 1\n")
    os.chmod(stub, 0o755)
    env = {**os.environ, "FRESH_CHECK_APT_DIR": str(tmp_path / "apt"),
           "FRESH_CHECK_DIR": str(tmp_path / "state"),
           "PATH": f"{tmp_path}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    out = subprocess.run(["bash", SCRIPT, "--only", "1"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2, out
    assert "pass one with --mirror URL" in out.stderr
    assert "must run as root" not in out.stderr
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "called").exists()
