#!/bin/bash
# fresh-check.sh: does README.md's quick start work on a FRESH Debian 12 machine?
#
# Runs the README's first two ```sh blocks, as root, inside a minimal Debian 12
# (bookworm, debootstrap --variant=minbase) chroot restored from a pristine copy,
# on a clone of the repository's committed HEAD. The baseline "given" on the fresh
# machine is: minbase + git + ca-certificates (you need git to have the clone).
#
# Usage:
#   scripts/fresh-debian-check.sh [options]     (a developer tool; CI does not run it)
#     --repo PATH        repository to clone (default: the one holding this script;
#                        its committed HEAD)
#     --ref REF          branch/commit to check out after cloning (default: repo's HEAD)
#     --only 1|2         run only README command 1 or only command 2
#     --sequential       run command 2 in the same chroot right after command 1
#                        (a developer's flow); default is a fresh chroot for each (CI-like)
#     --ci               set CI=true for command 2, as CI's environment does
#     --timeout1 SEC     limit for command 1 up to ferry starting (default 1800)
#     --timeout2 SEC     limit for command 2 (default 4800; CI's limit is 5400)
#     --rebuild-pristine  (re)create the pristine chroot with debootstrap, then exit
#     --mirror URL       Debian archive for debootstrap when it builds the pristine
#                        chroot (the URL a `deb` line names); the chroot then keeps
#                        debootstrap's sources.list, not the host's. Default: the
#                        first `deb` entry for bookworm main (not -security, -updates)
#                        in the host's apt sources, one-line or deb822; none -> exit 2
#     --print-mirror     print the mirror debootstrap would use and exit (needs no root)
#     --no-host-ca       do not copy the host's /usr/local/share/ca-certificates/*.crt
#                        (this workplace's egress-proxy CA) into the chroot; without it
#                        npm cannot reach its registry from here
#   Exit status: 0 if every command run passed, 1 if one failed, 2 on setup errors.
#
# Files, under $FRESH_CHECK_DIR (default /var/tmp/ferry-fresh-check):
#   deb12                      the working chroot (wiped and restored each run)
#   deb12-pristine.tar         the pristine chroot (made on first use if missing)
#   fresh-check-logs/<UTC>/    setup.log, cmd1.log, cmd2.log, ferry-response.*,
#                              summary.txt; fresh-check-logs/latest -> newest
# Apt sources are read from $FRESH_CHECK_APT_DIR (default /etc/apt): sources.list,
# then sources.list.d/*.list and *.sources in name order, as apt reads them.
# The chroot shares the host's network namespace: port 8080 must be free on the host.
# Needs: root, debootstrap (apt-get install debootstrap), curl and ss on the host.
set -u

DIR=${FRESH_CHECK_DIR:-/var/tmp/ferry-fresh-check}
APT_DIR=${FRESH_CHECK_APT_DIR:-/etc/apt}
SUITE=bookworm
ROOT=$DIR/deb12
PRISTINE=$DIR/deb12-pristine.tar
LOGBASE=$DIR/fresh-check-logs
REPO=$(cd "$(dirname "$0")/.." && pwd)
REF=""
ONLY=""
SEQ=0
CI_ENV=0
T1=1800
T2=4800
REBUILD=0
PORT=8080
HOST_CA=1
MIRROR=""
MIRROR_GIVEN=0
PRINT_MIRROR=0

while [ $# -gt 0 ]; do
    case "$1" in
    --repo) REPO=$2; shift 2 ;;
    --ref) REF=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --sequential) SEQ=1; shift ;;
    --ci) CI_ENV=1; shift ;;
    --timeout1) T1=$2; shift 2 ;;
    --timeout2) T2=$2; shift 2 ;;
    --rebuild-pristine) REBUILD=1; shift ;;
    --no-host-ca) HOST_CA=0; shift ;;
    --mirror)
        [ $# -ge 2 ] || { echo "fresh-check: --mirror needs a URL" >&2; exit 2; }
        MIRROR=$2; MIRROR_GIVEN=1; shift 2 ;;
    --print-mirror) PRINT_MIRROR=1; shift ;;
    -h|--help) sed -n '2,/^set -u/{/^#/p}' "$0"; exit 0 ;;
    *) echo "fresh-check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# ---- package mirror ------------------------------------------------------------
# Print the first `deb` URI in the apt sources under directory $1 that serves suite $2
# with component main: sources.list (one-line format), then sources.list.d/*.list
# (one-line) and *.sources (deb822) in name order. Skipped: deb-src, other suites
# (so $2-security and $2-updates), Enabled: no, URIs debootstrap cannot fetch
# (cdrom:, mirror+...), and entries whose Signed-By names a keyring other than
# Debian's archive keyring, which debootstrap would not accept anyway.
# Returns 1, printing nothing, when no entry qualifies.
apt_debian_mirror() {
    local dir=$1 suite=$2 f files=() LC_ALL=C # byte order of names, as apt sorts them
    [ -f "$dir/sources.list" ] && [ -r "$dir/sources.list" ] && files+=("$dir/sources.list")
    for f in "$dir"/sources.list.d/*; do
        case $f in
        *.list | *.sources) [ -f "$f" ] && [ -r "$f" ] && files+=("$f") ;;
        esac
    done
    [ ${#files[@]} -gt 0 ] || return 1
    awk -v suite="$suite" '
        function has(list, word,    n, i, w) {
            n = split(list, w, /[ \t]+/)
            for (i = 1; i <= n; i++) if (w[i] == word) return 1
            return 0
        }
        function usable(uri) { return uri ~ /^(https?:\/\/|file:\/)/ }
        # Signed-By may hold keyring paths or an embedded key; only Debian'"'"'s will do.
        function debian_signed(sb) { return sb == "" || sb ~ /debian-archive-/ }
        function pick(uri) { if (!found) { print uri; found = 1 } }
        function stanza_end(    n, i, u) {
            if (insz && has(f["types"], "deb") && has(f["suites"], suite) &&
                has(f["components"], "main") && debian_signed(f["signed-by"]) &&
                tolower(f["enabled"]) !~ /^(no|false|off|0|disable|without)$/) {
                n = split(f["uris"], u, /[ \t]+/)
                for (i = 1; i <= n && !found; i++) if (usable(u[i])) pick(u[i])
            }
            insz = 0; key = ""
            split("", f)
        }
        FNR == 1 { stanza_end(); deb822 = FILENAME ~ /\.sources$/ }
        found { exit }
        deb822 && /^#/ { next }
        deb822 && /^[ \t]*$/ { stanza_end(); next }
        deb822 && /^[ \t]/ { if (key != "") f[key] = f[key] " " $0; next }
        deb822 {
            c = index($0, ":")
            if (c == 0) next
            key = tolower(substr($0, 1, c - 1)); sub(/[ \t]+$/, "", key)
            f[key] = substr($0, c + 1); insz = 1
            gsub(/^[ \t]+|[ \t]+$/, "", f[key])
            next
        }
        {
            sub(/#.*/, "")
            if ($1 != "deb") next
            # deb [ options ] uri suite component...; options may be split on spaces
            i = 2; opts = ""
            if ($2 ~ /^\[/) {
                for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) break }
                i++
            }
            sb = ""
            opts = tolower(opts)
            if (match(opts, /signed-by=[^ \]]*/)) sb = substr(opts, RSTART, RLENGTH)
            if ($(i + 1) != suite || !debian_signed(sb) || !usable($i)) next
            for (c = i + 2; c <= NF; c++) if ($c == "main") { pick($i); exit }
        }
        END { if (!found) stanza_end(); exit !found }' "${files[@]}"
}

# Set MIRROR from --mirror or the host's apt sources, or say how to pass one.
find_mirror() {
    if [ "$MIRROR_GIVEN" = 1 ]; then
        case $MIRROR in
        http://?* | https://?* | file:/?*) return 0 ;;
        esac
        echo "fresh-check: --mirror '$MIRROR' is not an http://, https:// or file:/ URL" >&2
        return 1
    fi
    MIRROR=$(apt_debian_mirror "$APT_DIR" "$SUITE") && [ -n "$MIRROR" ] && return 0
    MIRROR=""
    echo "fresh-check: no Debian $SUITE main archive in the apt sources ($APT_DIR/sources.list," \
        "$APT_DIR/sources.list.d/*.list, *.sources); pass one with --mirror URL, the URL a" \
        "'deb URL $SUITE main' line of your sources would name" >&2
    return 1
}

if [ "$PRINT_MIRROR" = 1 ]; then
    find_mirror || exit 2
    echo "$MIRROR"
    exit 0
fi

# Building the pristine chroot needs a mirror: find it before anything else is done.
if [ "$REBUILD" = 1 ] || [ ! -f "$PRISTINE" ]; then
    find_mirror || exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: must run as root" >&2; exit 2; }
mkdir -p "$DIR"

# One run at a time.
exec 9>"$DIR/.lock"
flock -n 9 || { echo "fresh-check: another run holds $DIR/.lock" >&2; exit 2; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOG=$LOGBASE/$STAMP
mkdir -p "$LOG"
ln -sfn "$STAMP" "$LOGBASE/latest"
SETUP=$LOG/setup.log
SUMMARY=$LOG/summary.txt
: >"$SUMMARY"

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$SETUP"; }
sum() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
die() { say "SETUP ERROR: $*"; sum "SETUP ERROR: $*"; teardown; exit 2; }

# ---- mounts and processes ----------------------------------------------------
chroot_pids() {
    local p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$ROOT" ] && echo "${p#/proc/}"
    done
}

mounts_under_root() { findmnt -rn -o TARGET | grep -E "^$ROOT(/|$)" || true; }

mount_all() {
    mount -t proc proc "$ROOT/proc" &&
        mount -t sysfs sysfs "$ROOT/sys" &&
        mount --bind /dev "$ROOT/dev" &&
        mount --bind /dev/pts "$ROOT/dev/pts" &&
        mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm" &&
        mkdir -p "$ROOT/mnt/src" &&
        mount --bind "$REPO" "$ROOT/mnt/src" &&
        mount -o remount,bind,ro "$ROOT/mnt/src"
}

teardown() {
    local pids m i
    pids=$(chroot_pids)
    if [ -n "$pids" ]; then
        say "stopping processes left in the chroot: $(echo $pids)"
        kill -TERM $pids 2>/dev/null
        for i in 1 2 3 4 5 6 7 8 9 10; do
            sleep 1
            pids=$(chroot_pids)
            [ -z "$pids" ] && break
        done
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null && sleep 1
    fi
    # deepest first
    for m in $(mounts_under_root | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "could not unmount $m"
    done
}
trap 'teardown; exit 2' INT TERM

# ---- pristine chroot ---------------------------------------------------------
make_pristine() {
    command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install -y debootstrap"
    [ -n "$MIRROR" ] || find_mirror || die "no package mirror: pass --mirror URL"
    [ -z "$(mounts_under_root)" ] || die "mounts still under $ROOT"
    rm -rf --one-file-system "$ROOT"
    say "debootstrap --variant=minbase $SUITE $ROOT $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >>"$SETUP" 2>&1 || die "debootstrap failed"
    # network and apt config as on this machine (an explicit --mirror replaces its sources)
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    if [ "$MIRROR_GIVEN" = 0 ] && [ -f "$APT_DIR/sources.list.d/debian.sources" ]; then
        cp "$APT_DIR/sources.list.d/debian.sources" "$ROOT/etc/apt/sources.list.d/"
        rm -f "$ROOT/etc/apt/sources.list"
    fi
    local f
    for f in "$APT_DIR"/apt.conf.d/*; do
        grep -qiE 'proxy|Check-Valid-Until|Check-Date' "$f" 2>/dev/null && cp "$f" "$ROOT/etc/apt/apt.conf.d/"
    done
    # what any installed Debian has and minbase lacks
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' >"$ROOT/etc/hosts"
    # never start daemons inside the chroot
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    tar -C "$ROOT" --numeric-owner -cpf "$PRISTINE.tmp" . || die "tar of pristine failed"
    mv "$PRISTINE.tmp" "$PRISTINE"
    say "pristine chroot saved to $PRISTINE ($(du -h "$PRISTINE" | cut -f1))"
}

restore_fresh() {
    teardown
    [ -z "$(mounts_under_root)" ] && [ -z "$(chroot_pids)" ] || die "cannot clean $ROOT: mounts or processes remain"
    rm -rf --one-file-system "$ROOT" || die "rm $ROOT failed"
    mkdir -p "$ROOT"
    tar -C "$ROOT" --numeric-owner -xpf "$PRISTINE" || die "restore from $PRISTINE failed"
}

# Run a command inside the chroot with a clean root-login-like environment.
CENV=(env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
in_chroot() { chroot "$ROOT" "${CENV[@]}" "$@"; }

prepare() {
    local t0=$SECONDS
    say "restoring fresh chroot from $PRISTINE"
    restore_fresh
    mount_all || die "mounting /proc /sys /dev /dev/pts or the repo into $ROOT failed"
    # This workplace reaches HTTPS registries (npm) through an egress proxy whose CA the
    # host trusts; a machine here has it in its trust store, so the chroot gets it too.
    # (On the open internet a fresh Debian would not need this.)
    if [ "$HOST_CA" = 1 ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
        mkdir -p "$ROOT/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        say "host CA certificates copied into the chroot: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    fi
    say "baseline: apt-get install git ca-certificates"
    in_chroot /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq git ca-certificates && update-ca-certificates' >>"$SETUP" 2>&1 ||
        die "installing git ca-certificates in the chroot failed (see $SETUP)"
    say "git clone $REPO -> /root/ferry"
    in_chroot git -c safe.directory='*' clone -q /mnt/src /root/ferry >>"$SETUP" 2>&1 || die "git clone failed"
    if [ -n "$REF" ]; then
        in_chroot git -C /root/ferry checkout -q "$REF" >>"$SETUP" 2>&1 || die "git checkout $REF failed"
    fi
    sum "  fresh chroot, clone at $(in_chroot git -C /root/ferry log -1 --format='%h %s')"
    say "chroot ready in $((SECONDS - t0)) s"
}

# ---- README commands -----------------------------------------------------------
# The Nth ```sh block of README.md, comment lines dropped, joined into one line.
readme_block() {
    awk -v want="$1" '
        /^```sh[[:space:]]*$/ { n++; inb = (n == want); next }
        /^```/ { inb = 0; next }
        inb && !/^[[:space:]]*#/ && NF { print }' "$2"
}

port_free() { [ -z "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]; }

ferry_pid() {
    local p
    for p in $(chroot_pids); do
        [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$ROOT/root/ferry/build/ferry" ] && { echo "$p"; return; }
    done
}

RESULT=0

run_cmd1() {
    local cmd out=$LOG/cmd1.log t0 tb="" ts="" pid fp code="" rc i ok=0
    cmd=$(readme_block 1 "$ROOT/root/ferry/README.md")
    [ -n "$cmd" ] || { sum "CMD1 FAIL: no first \`\`\`sh block in README.md"; RESULT=1; return; }
    sum "CMD1: $cmd"
    port_free || { sum "CMD1 FAIL (setup): port $PORT is busy on the host: $(ss -Hltnp "sport = :$PORT")"; RESULT=1; return; }
    t0=$SECONDS
    # each output line is prefixed with the UTC time it appeared; the exit status is the command's
    setsid chroot "$ROOT" "${CENV[@]}" /bin/bash -c "cd /root/ferry && { $cmd ; } 2>&1 |
        while IFS= read -r l; do printf '%(%H:%M:%S)T %s\\n' -1 \"\$l\"; done; exit \${PIPESTATUS[0]}" </dev/null >"$out" 2>&1 &
    pid=$!
    # wait for deps + build to finish: ferry appears, or the command ends
    while :; do
        fp=$(ferry_pid)
        [ -n "$fp" ] && break
        kill -0 "$pid" 2>/dev/null || break
        if [ $((SECONDS - t0)) -ge "$T1" ]; then
            sum "CMD1 FAIL: no ferry process after ${T1}s (deps/build still running); killed"
            kill -TERM -"$pid" 2>/dev/null; sleep 3; kill -KILL -"$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            RESULT=1; sum "  tail of $out:"; tail -n 30 "$out" | sed 's/^/    | /' | tee -a "$SUMMARY"; return
        fi
        sleep 1
    done
    tb=$((SECONDS - t0))
    if [ -z "$fp" ]; then
        wait "$pid"; rc=$?
        sum "CMD1 FAIL: exited $rc after ${tb}s before ferry started (deps.sh or build.sh failed)"
        RESULT=1; sum "  tail of $out:"; tail -n 30 "$out" | sed 's/^/    | /' | tee -a "$SUMMARY"; return
    fi
    sum "  deps.sh + build.sh done, ferry started (pid $fp) after ${tb}s; steps (start times):"
    grep -E '^[0-9:]{8} (Selecting previously unselected|Setting up build-essential|ninja: Entering|[[]1/[0-9]+[]])' "$out" | awk '!seen[$2]++' | head -n 5 | sed 's/^/    /' | tee -a "$SUMMARY"
    # poll the page for up to 60 s
    for i in $(seq 1 60); do
        code=$(curl -s -o "$LOG/ferry-response.body" -D "$LOG/ferry-response.headers" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/" 2>/dev/null)
        [ "$code" = 200 ] && break
        kill -0 "$fp" 2>/dev/null || break
        sleep 1
    done
    ts=$((SECONDS - t0))
    if [ "$code" = 200 ] && cmp -s "$LOG/ferry-response.body" "$ROOT/root/ferry/public/index.html"; then
        sum "  GET http://127.0.0.1:$PORT/ -> 200 with public/index.html after ${ts}s"
        ok=1
    elif [ "$code" = 200 ]; then
        sum "  GET / -> 200 but the body differs from public/index.html (saved in ferry-response.body)"
    else
        sum "  GET / did not answer 200 within 60 s (last code: ${code:-none}; ferry alive: $(kill -0 "$fp" 2>/dev/null && echo yes || echo no))"
    fi
    # SIGTERM must stop ferry with exit 0
    kill -TERM "$fp" 2>/dev/null
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        sum "  ferry did not exit within 15 s of SIGTERM; killed"
        kill -KILL -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null; ok=0
    else
        wait "$pid"; rc=$?
        if [ "$rc" -eq 0 ]; then sum "  SIGTERM -> ferry exited 0"; else sum "  SIGTERM -> ferry exited $rc (want 0)"; ok=0; fi
    fi
    if [ "$ok" = 1 ]; then sum "CMD1 PASS (${ts}s to a served page; deps+build ${tb}s)"; else
        sum "CMD1 FAIL"; RESULT=1
        sum "  tail of $out:"; tail -n 30 "$out" | sed 's/^/    | /' | tee -a "$SUMMARY"
    fi
}

run_cmd2() {
    local cmd out=$LOG/cmd2.log t0 rc dt extra=()
    cmd=$(readme_block 2 "$ROOT/root/ferry/README.md")
    [ -n "$cmd" ] || { sum "CMD2 FAIL: no second \`\`\`sh block in README.md"; RESULT=1; return; }
    sum "CMD2: $cmd"
    [ "$CI_ENV" = 1 ] && extra=(CI=true)
    t0=$SECONDS
    # each output line is prefixed with the UTC time it appeared
    timeout --kill-after=30 "$T2" chroot "$ROOT" "${CENV[@]}" "${extra[@]}" /bin/bash -c "cd /root/ferry && $cmd" </dev/null 2>&1 |
        while IFS= read -r line; do printf '%(%H:%M:%S)T %s\n' -1 "$line"; done >"$out"
    rc=${PIPESTATUS[0]}
    dt=$((SECONDS - t0))
    sum "  started $(date -u -d "@$((EPOCHSECONDS - dt))" +%H:%M:%S); steps (start times):"
    grep -E '^[0-9:]{8} (==== .* ====|Setting up npm |npm ERR|added [0-9]+ packages)' "$out" | head -n 20 | sed 's/^/    /' | tee -a "$SUMMARY"
    if [ "$rc" -eq 0 ]; then sum "CMD2 PASS (exit 0, ${dt}s)"; else
        [ "$rc" -eq 124 ] && sum "  timed out after ${T2}s"
        sum "CMD2 FAIL (exit $rc, ${dt}s)"; RESULT=1
    fi
    sum "  tail of $out:"; tail -n 40 "$out" | sed 's/^/    | /' | tee -a "$SUMMARY"
}

# ---- main --------------------------------------------------------------------
if [ "$REBUILD" = 1 ] || [ ! -f "$PRISTINE" ]; then
    make_pristine
    [ "$REBUILD" = 1 ] && { teardown; exit 0; }
fi
[ -d "$REPO/.git" ] || die "$REPO is not a git work tree"
command -v curl >/dev/null || die "curl missing on the host"

sum "fresh-check $STAMP: repo $REPO ($(git -C "$REPO" log -1 --format='%h %s' ${REF:-HEAD} 2>/dev/null)), logs in $LOG"
if [ "$ONLY" != 2 ]; then
    prepare
    run_cmd1
fi
if [ "$ONLY" != 1 ]; then
    if [ "$ONLY" = 2 ] || [ "$SEQ" = 0 ]; then
        prepare
    fi
    run_cmd2
fi
teardown
sum "fresh-check: $([ "$RESULT" = 0 ] && echo ALL PASS || echo FAILURES) (logs: $LOG)"
exit $RESULT
