#!/bin/sh
# Negative control for the stress suite: build uslab WITHOUT the rseq arming
# store (-Drseq_negative_control=true), run the oversubscribed stress test on
# it, and succeed only if that test FAILS. A stress test that passes on a
# fast path the kernel never restarts cannot see preemption races at all.
#
# Usage: tests/negative-control.sh [SOURCE_DIR]   (default: this repository)
# Env:   USLAB_NEGATIVE_RUNS (default 1): every run must fail;
#        USLAB_STRESS_SECONDS (default 3): length of each run;
#        USLAB_NEGATIVE_BUILD: reuse this build dir instead of a temporary one.
# Exit:  0 every run failed (the control works); 1 a run passed;
#        77 skipped (no rseq fast path here: locked mode); 99 setup or build error.
set -u
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
runs=${USLAB_NEGATIVE_RUNS:-1}
secs=${USLAB_STRESS_SECONDS:-3}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uslab-negative.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
build=${USLAB_NEGATIVE_BUILD:-$tmp/build}

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$src" -Drseq_negative_control=true -Dtests=enabled -Dtools=false \
		>"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 99; }
fi
meson compile -C "$build" test-stress >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 99; }
grep -q '"name": "rseq_negative_control", "value": true' "$build/meson-info/intro-buildoptions.json" ||
	{ echo "negative-control: $build is not a negative-control build"; exit 99; }

failed=0
i=1
while [ "$i" -le "$runs" ]; do
	env -u USLAB_RSEQ CK_FORK=yes CK_RUN_CASE=oversubscribed CK_VERBOSITY=normal \
		USLAB_STRESS_SECONDS="$secs" timeout 600 "$build/tests/test-stress" >"$tmp/run.log" 2>&1
	rc=$?
	# The mode line comes at the end of a run; a run that the missing
	# arming broke may abort before it, with uslab's report.
	if ! grep -q 'mode=rseq' "$tmp/run.log" && ! grep -q '^uslab: cache ' "$tmp/run.log"; then
		cat "$tmp/run.log"
		echo "negative-control: skipped: uslab does not run in rseq mode here"
		exit 77
	fi
	if [ $rc -ne 0 ]; then
		failed=$((failed + 1))
		echo "negative-control: run $i: the stress test FAILED as it must (rc $rc):"
		grep -E '^# stress:|:[FE]:' "$tmp/run.log" | head -n 3
	else
		echo "negative-control: run $i: the stress test PASSED on a fast path without rseq arming:"
		cat "$tmp/run.log"
	fi
	i=$((i + 1))
done
echo "negative-control: $failed of $runs runs failed"
[ "$failed" -eq "$runs" ] && exit 0
exit 1
