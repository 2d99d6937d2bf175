#!/bin/sh
# Negative control for the RCU suite: build uslab with free_rcu returning
# objects AT ONCE, with no grace period (-Drcu_negative_control=true), run
# the grace-period test on it, and succeed only if that test FAILS. A test
# that passes when grace periods are ignored cannot see them honoured.
#
# Usage: tests/rcu-negative-control.sh [SOURCE_DIR]   (default: this repository)
# Env:   USLAB_STRESS_SECONDS (default 2): length of the racing test;
#        USLAB_NEGATIVE_BUILD: reuse this build dir instead of a temporary one.
# Exit:  0 the test failed as it must; 1 it passed; 99 setup or build error.
set -u
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${USLAB_STRESS_SECONDS:-2}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uslab-rcu-negative.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
build=${USLAB_NEGATIVE_BUILD:-$tmp/build}

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$src" -Drcu_negative_control=true -Dtests=enabled -Dtools=false \
		>"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 99; }
fi
meson compile -C "$build" test-rcu >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 99; }
grep -q '"name": "rcu_negative_control", "value": true' "$build/meson-info/intro-buildoptions.json" ||
	{ echo "rcu-negative-control: $build is not a negative-control build"; exit 99; }

CK_FORK=yes CK_RUN_CASE=rcu CK_VERBOSITY=normal USLAB_STRESS_SECONDS="$secs" \
	timeout 600 "$build/tests/test-rcu" >"$tmp/run.log" 2>&1
grep -E '^# rcu grace' "$tmp/run.log"
if grep -q ':[FE]:rcu:rcu_grace_periods_honoured:' "$tmp/run.log"; then
	echo "rcu-negative-control: the grace-period test FAILED as it must:"
	grep ':[FE]:rcu:' "$tmp/run.log"
	exit 0
fi
echo "rcu-negative-control: the grace-period test PASSED with no grace period:"
cat "$tmp/run.log"
exit 1
