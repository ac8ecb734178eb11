#!/usr/bin/env bash
# The test command: installs what is missing, then builds and runs every
# test three times over: a normal build, an ASan + UBSan build, and the
# libFuzzer targets (clang) for a bounded time each.
#   C2M_FUZZ_SECONDS=20  seconds per fuzz target
#   C2M_SKIP_SANITIZE=1  (local iteration only) skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test

jobs=$(nproc)
fuzz_seconds=${C2M_FUZZ_SECONDS:-20}
failed=()

run_suite() {
	local name=$1 dir=$2
	shift 2
	echo "=== $name: configure + build ($dir)"
	# the same build script the Dockerfile runs
	scripts/build.sh "$dir" "$@" >"$dir.build.log" 2>&1 ||
		{ tail -50 "$dir.build.log"; failed+=("$name: build"); return; }
	echo "=== $name: unit + io tests"
	ctest --test-dir "$dir" -L '^(unit|io)$' -j"$jobs" --output-on-failure ||
		failed+=("$name: unit/io")
	echo "=== $name: benchmark, quick mode (every event delivered)"
	ctest --test-dir "$dir" -L '^bench$' --output-on-failure ||
		failed+=("$name: bench")
	echo "=== $name: integration tests"
	ctest --test-dir "$dir" -L '^integration$' --output-on-failure ||
		failed+=("$name: integration")
}

run_suite "release" build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ -z "${C2M_SKIP_SANITIZE:-}" ]; then
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		run_suite "asan+ubsan" build-asan -DCMAKE_BUILD_TYPE=Debug \
		-DC2M_SANITIZE=ON
fi

echo "=== fuzz: clang + libFuzzer, ${fuzz_seconds}s per target"
if scripts/build.sh build-fuzz -DCMAKE_C_COMPILER=clang \
	-DCMAKE_BUILD_TYPE=Debug -DC2M_FUZZ=ON -DC2M_SANITIZE=ON \
	-DC2M_FUZZ_SECONDS="$fuzz_seconds" >build-fuzz.build.log 2>&1; then
	ctest --test-dir build-fuzz -L fuzz --output-on-failure || failed+=("fuzz")
else
	tail -50 build-fuzz.build.log || true
	failed+=("fuzz: build")
fi

if [ ${#failed[@]} -ne 0 ]; then
	echo "FAILED: ${failed[*]}"
	exit 1
fi
echo "ALL TESTS PASSED"
