#!/bin/sh
# Configure (once) and build ferry into ./build.
set -eu
cd "$(dirname "$0")/.."
[ -d build ] || meson setup build -Dwerror=true >/dev/null
ninja -C build
