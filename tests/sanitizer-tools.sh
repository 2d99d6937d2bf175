#!/bin/sh
# SPDX-License-Identifier: MIT
# ASan and valgrind see cache objects (slab/sanitize.h): a planted use after
# free is reported by the tool of the build, and a leaked object by memcheck.
# Usage: sanitizer-tools.sh PLANTED SANITIZE   (SANITIZE: meson's b_sanitize)
set -u
planted=$1
sanitize=$2
out=$(mktemp "${TMPDIR:-/tmp}/uslab-tools.XXXXXX") || exit 99
trap 'rm -f "$out"' EXIT
fail=0

expect() { # description, pattern: the last run's output must match
	if grep -q "$2" "$out"; then
		echo "ok: $1"
	else
		echo "FAIL: $1: no \"$2\" in:"
		sed 's/^/    /' "$out"
		fail=1
	fi
}

case "$sanitize" in
*address*)
	"$planted" none >"$out" 2>&1 || { echo "FAIL: the clean run failed"; cat "$out"; exit 1; }
	"$planted" uaf >"$out" 2>&1
	expect "ASan reports the write after free" "ERROR: AddressSanitizer: use-after-poison"
	expect "... in the program's frame" "in main .*planted.c"
	;;
none | '')
	command -v valgrind >/dev/null || { echo "SKIP: no valgrind"; exit 77; }
	vg="valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99"
	$vg "$planted" none >"$out" 2>&1 || { echo "FAIL: the clean run is not clean"; cat "$out"; exit 1; }
	$vg "$planted" uaf >"$out" 2>&1
	expect "memcheck reports the write after free" "Invalid write of size 1"
	expect "... into a freed cache object" "inside a block of size 64 free'd"
	$vg "$planted" leak >"$out" 2>&1
	expect "memcheck reports the leaked object" "64 bytes in 1 blocks are definitely lost"
	;;
*)
	echo "SKIP: a $sanitize build: neither ASan nor valgrind applies"
	exit 77
	;;
esac
exit $fail
