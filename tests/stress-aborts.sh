#!/bin/sh
# Prove the rseq abort paths run: count the kernel's restarts of uslab's
# critical sections (tracepoint rseq:rseq_ip_fixup) during the oversubscribed
# stress test, from outside the process, with perf.
#
# Usage: tests/stress-aborts.sh path/to/test-stress
# Exit:  0 aborts were counted and the stress test passed;
#        1 the stress test failed, or no abort happened in rseq mode;
#        77 skipped: no perf, no tracepoint, perf not permitted, or locked mode.
# USLAB_STRESS_SECONDS (default 2) sets the length of the run.
set -u
exe=${1:?usage: stress-aborts.sh path/to/test-stress}

skip() { echo "stress-aborts: skipped: $*"; exit 77; }

command -v perf >/dev/null 2>&1 || skip "perf not installed"
[ "${USLAB_RSEQ:-}" = 0 ] && skip "USLAB_RSEQ=0 (locked mode)"
perf list tracepoint 2>/dev/null | grep -q 'rseq:rseq_ip_fixup' ||
	skip "tracepoint rseq:rseq_ip_fixup not available (needs tracefs and root or perf_event_paranoid <= -1)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uslab-aborts.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

CK_RUN_CASE=oversubscribed CK_FORK=yes CK_VERBOSITY=normal \
USLAB_STRESS_SECONDS=${USLAB_STRESS_SECONDS:-2} \
	perf stat -x, -e rseq:rseq_ip_fixup -o "$tmp/stat" -- "$exe" >"$tmp/out" 2>"$tmp/err"
rc=$?
cat "$tmp/out" "$tmp/err"
line=$(grep 'rseq:rseq_ip_fixup' "$tmp/stat" 2>/dev/null)
count=${line%%,*}
case $count in
'' | *[!0-9]*)
	cat "$tmp/stat" 2>/dev/null
	[ $rc -ne 0 ] && ! grep -q '^# stress' "$tmp/err" && skip "perf stat could not count (rc $rc)"
	skip "perf stat gave no count for rseq:rseq_ip_fixup ('$line')" ;;
esac
if [ $rc -ne 0 ]; then
	echo "stress-aborts: the stress test failed (rc $rc)"
	exit 1
fi
if ! grep -q 'mode=rseq' "$tmp/err"; then
	skip "uslab runs in locked mode here: $(grep -o 'mode=[^,]*' "$tmp/err" | head -n 1)"
fi
echo "stress-aborts: $count rseq aborts (rseq:rseq_ip_fixup) in the oversubscribed test"
[ "$count" -gt 0 ] || { echo "stress-aborts: no abort: the restart paths never ran"; exit 1; }
exit 0
