#!/usr/bin/env bash
# Configures and builds Tower Recall (Release) into ${BUILD_DIR:-build}. Extra arguments are
# ninja targets (default: everything). Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
fi
ninja -C "$BUILD_DIR" -j"$JOBS" "$@"
