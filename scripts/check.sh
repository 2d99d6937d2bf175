#!/usr/bin/env bash
# Build uslab every way CI does and run the whole test suite in each:
#   1. release build (-Dwerror=true): all tests, in rseq mode, in rseq mode with uslab's own
#      registration (GLIBC_TUNABLES=glibc.pthread.rseq=0: glibc registers none) and in locked mode
#   2. ASan+UBSan at debug level 3: all tests, both modes
#   3. valgrind memcheck on the unit suites but reliability (locked mode, since valgrind has no rseq)
#   4. programs nobody here wrote under the preloaded malloc (tests/programs.sh; again with
#      uslab's own rseq registration), and
#      ThreadSanitizer on the stress and RCU suites
#   5. the negative controls: a build without the rseq arming store must FAIL the stress
#      test (with glibc's rseq registration and with uslab's own), and one whose free_rcu
#      skips the grace period must FAIL the RCU test
#   6. the stats-segment reader fuzzer for a bounded time (when clang's libFuzzer is present)
#   7. formatting: clang-format 14 against .clang-format (ninja clang-format fixes it)
#   8. the Windows build (mingw-w64, -Dwerror=true) and its suites under wine64
#      (scripts/windows.sh; about a minute)
# Usage: scripts/check.sh [--quick]   (--quick: steps 1 and 2 only)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
fuzz_seconds=${USLAB_FUZZ_SECONDS:-60}

step() { printf '\n==== %s ====\n' "$*"; }

setup() { # dir, meson options...
	local dir=$1; shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir" >/dev/null
}

step "release build, rseq mode"
setup build-release -Dbuildtype=release -Dwerror=true
meson test -C build-release --no-suite programs --print-errorlogs
step "release build, uslab's own rseq registration (GLIBC_TUNABLES=glibc.pthread.rseq=0)"
GLIBC_TUNABLES=glibc.pthread.rseq=0 meson test -C build-release --no-suite programs --print-errorlogs
step "release build, locked mode (USLAB_RSEQ=0)"
USLAB_RSEQ=0 meson test -C build-release --no-suite programs --print-errorlogs
step "formatting (clang-format 14, .clang-format)"
if clang-format --version 2>/dev/null | grep -q 'version 14\.'; then
	ninja -C build-release clang-format-check >/dev/null 2>&1 ||
		{ echo "not formatted: run ninja -C build-release clang-format"; exit 1; }
	echo "formatted"
else
	echo "skipped: the formatting is pinned to clang-format 14, not found here"
fi

# Debug level 3 checks every slab's invariants on every operation and ASan
# slows everything down: give these runs 5x the time (meson and Check).
slow=(-t 5)
export CK_TIMEOUT_MULTIPLIER=5
step "ASan+UBSan build (debug level 3), rseq mode"
setup build-asan -Db_sanitize=address,undefined -Ddebug_level=3 -Dwerror=true
meson test -C build-asan "${slow[@]}" --no-suite programs --print-errorlogs
step "ASan+UBSan build, locked mode"
USLAB_RSEQ=0 meson test -C build-asan "${slow[@]}" --no-suite programs --print-errorlogs

[ $quick -eq 1 ] && { echo "check: quick run passed"; exit 0; }

step "valgrind memcheck (unit suites)"
# Not the reliability suite: its subjects are seccomp filters, namespaces,
# re-executed programs and cancellation timing, which valgrind cannot
# install, does not follow, or serialises away; it runs in steps 1 and 2.
meson test -C build-release --setup valgrind --suite unit --no-suite script \
	--no-suite reliability --print-errorlogs

step "programs under LD_PRELOAD=libuslab-malloc.so (both modes, sqlite3 under valgrind)"
meson test -C build-release --suite programs --print-errorlogs
step "programs again, uslab's own rseq registration (GLIBC_TUNABLES=glibc.pthread.rseq=0)"
GLIBC_TUNABLES=glibc.pthread.rseq=0 meson test -C build-release --suite programs --print-errorlogs

step "ThreadSanitizer (stress and rcu suites)"
setup build-tsan -Db_sanitize=thread
meson test -C build-tsan "${slow[@]}" --suite stress --suite rcu --print-errorlogs

if [ -x tests/negative-control.sh ]; then
	step "negative control: no rseq arming must fail the stress test"
	USLAB_NEGATIVE_BUILD=build-negative tests/negative-control.sh
	step "negative control again, uslab's own rseq registration"
	GLIBC_TUNABLES=glibc.pthread.rseq=0 USLAB_NEGATIVE_BUILD=build-negative tests/negative-control.sh
fi
step "negative control: free_rcu without a grace period must fail the RCU test"
tests/rcu-negative-control.sh

step "Windows: mingw-w64 cross build, its suites under wine64 (scripts/windows.sh)"
scripts/windows.sh build-win

if command -v clang >/dev/null && [ -n "$(find /usr/lib/llvm-14 -name 'libclang_rt.fuzzer-x86_64.a' 2>/dev/null)" ]; then
	step "fuzzing the stats reader for ${fuzz_seconds}s"
	CC=clang setup build-fuzz -Db_sanitize=address,undefined -Db_lundef=false -Dtests=enabled
	if [ -x build-fuzz/tests/fuzz-reader ]; then
		mkdir -p build-fuzz/corpus
		cp -n tests/fuzz-corpus/* build-fuzz/corpus/ 2>/dev/null || true
		build-fuzz/tests/fuzz-reader -max_total_time="$fuzz_seconds" -print_final_stats=1 \
			-malloc_limit_mb=160 -rss_limit_mb=2048 build-fuzz/corpus
	fi
fi
echo
echo "check: all steps passed"
