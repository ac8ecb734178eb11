#!/usr/bin/env bash
# Configures and builds comfy2mqtt into build/ (or $1). The Dockerfile runs
# this same script, so the image and the tests build the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
