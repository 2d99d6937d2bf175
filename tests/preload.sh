#!/bin/sh
# SPDX-License-Identifier: MIT
# libuslab-malloc.so under a plain program (tests/preload-probe.c): the
# probe's checks in the rseq mode and the locked one, once under valgrind
# (memcheck with our malloc, not its own: --soname-synonyms), the control
# (without the preload the probe must fail: its first checks see glibc's
# malloc), and uslabtop -p showing a preloaded program's size classes live.
#
# Usage: preload.sh PROBE LIBUSLAB-MALLOC USLABTOP [SANITIZE]
# Skips (77) in a sanitizer build: its runtime must be the first library
# loaded, and the probe is a plain program.
set -u
probe=$1 lib=$2 top=$3
case ${4:-none} in none | '') ;; *) echo "SKIP: sanitizer build ($4)"; exit 77 ;; esac
status=0
dir=$(mktemp -d "${TMPDIR:-/tmp}/uslab-preload.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
export USLAB_STATS_DIR="$dir"

run() { # name, then the command
	name=$1
	shift
	if "$@" >"$dir/out" 2>&1; then
		echo "ok: $name"
	else
		echo "FAIL: $name"
		cat "$dir/out"
		status=1
	fi
}

if "$probe" >"$dir/out" 2>&1; then
	echo "FAIL: control: the probe passed without the preload (its checks see nothing)"
	status=1
else
	echo "ok: control: without the preload the probe fails ($(grep -c FAIL "$dir/out") checks)"
fi
run "rseq mode" env LD_PRELOAD="$lib" "$probe"
run "locked mode" env LD_PRELOAD="$lib" USLAB_RSEQ=0 "$probe"
if command -v valgrind >/dev/null 2>&1; then
	run "valgrind" env LD_PRELOAD="$lib" PROBE_QUICK=1 valgrind -q --error-exitcode=99 \
		--soname-synonyms=somalloc=NONE "$probe"
else
	echo "skip: valgrind"
fi

# uslabtop -p on a preloaded program: its classes, live.
mkfifo "$dir/ready"
LD_PRELOAD="$lib" "$probe" --hold 30 >"$dir/ready" &
pid=$!
read -r line <"$dir/ready"
if [ "$line" = ready ] && "$top" -p "$pid" --once >"$dir/top" 2>&1 &&
	grep -q ' size-64 *$' "$dir/top" && grep -q ' size-512 *$' "$dir/top"; then
	echo "ok: uslabtop -p shows the size classes ($(grep -c ' size-' "$dir/top") classes)"
else
	echo "FAIL: uslabtop -p $pid"
	cat "$dir/top"
	status=1
fi
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit $status
