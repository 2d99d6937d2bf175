#!/bin/sh
# SPDX-License-Identifier: MIT
# A tool's files call one way: no object uses a symbol defined by one above it.
#
# Usage: tool-layers.sh OBJECT...   (highest first; uslabtop: uslabtop.c.o,
#        top-screen.c.o, top-watch.c.o, top-format.c.o, whose chain is
#        described at the top of tools/uslabtop.c; uslab-bench: bench-main,
#        bench-report, bench-parent, bench-child, bench-kernels, bench-util)
# For each object,
# every undefined symbol (nm -u) is looked up among the symbols defined by
# the objects before it in the list; any hit is a call going back up.
# Exit 77 (skip) without nm.
set -eu

command -v nm >/dev/null 2>&1 || { echo "SKIP: nm missing"; exit 77; }

defined=$(mktemp)
trap 'rm -f "$defined"' EXIT
bad=0
for obj in "$@"; do
	[ -f "$obj" ] || { echo "FAIL: $obj: no such object"; exit 1; }
	# $defined: "symbol object" for every object above this one
	for sym in $(nm -u "$obj" | awk '{ print $2 }'); do
		hit=$(awk -v s="$sym" '$1 == s { print $2; exit }' "$defined")
		if [ -n "$hit" ]; then
			echo "FAIL: $(basename "$obj") uses $sym, defined above it in $hit"
			bad=1
		fi
	done
	nm --defined-only "$obj" | awk -v o="$(basename "$obj")" '{ print $3, o }' >>"$defined"
done
[ $bad -eq 0 ] && echo "ok: $# objects, each uses only those below it"
exit $bad
