#!/bin/sh
# Install what ferry needs on Debian 12.
#   scripts/deps.sh          build and run dependencies
#   scripts/deps.sh --test   also everything the test suite needs
#   scripts/deps.sh --bench  also the benchmark peers (nginx, lighttpd, wrk, rclone)
set -eu
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS="build-essential meson ninja-build pkg-config libinih-dev libcurl4-openssl-dev libssl-dev libsystemd-dev libjansson-dev procps"
TEST=0
for arg in "$@"; do
    case "$arg" in
    --test) TEST=1; PKGS="$PKGS python3-pytest python3-boto3 python3-botocore libfcgi-dev clang libclang-rt-14-dev clang-format curl openssl systemd php8.2-cli php-cgi python3-prometheus-client prometheus"
        # A throwaway Ceph cluster (tests/s3/rgwcluster.py): monitor, OSD, RADOS Gateway.
        PKGS="$PKGS ceph-mon ceph-osd radosgw ceph-common"
        # s3rver needs Node.js; use the machine's if it has one (Debian 12 ships 18).
        command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm" ;;
    --bench) PKGS="$PKGS nginx-light lighttpd lighttpd-modules-lua wrk rclone python3 procps curl time" ;;
    *) echo "usage: scripts/deps.sh [--test] [--bench]" >&2; exit 2 ;;
    esac
done
export DEBIAN_FRONTEND=noninteractive
# Only hit the network when something is missing.
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$(echo $missing | tr -d ' ')" ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends $PKGS
fi
if [ "$TEST" = 1 ] && [ -f tests/s3rver/package-lock.json ]; then
    (cd tests/s3rver && npm ci --no-audit --no-fund --loglevel=error)
fi
