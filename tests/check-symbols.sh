#!/bin/sh
# SPDX-License-Identifier: MIT
# The shared library exports uslab_* and nothing else (libinput's habit):
# every symbol defined in its dynamic symbol table must start with uslab_.
# Usage: check-symbols.sh libuslab.so   (NM overrides the nm to use)
set -u
lib=${1:?usage: check-symbols.sh LIBRARY}
nm=${NM:-nm}

if ! command -v "$nm" >/dev/null 2>&1; then
	echo "SKIP: $nm not found"
	exit 77
fi
syms=$("$nm" -D --defined-only "$lib" | awk 'NF >= 3 { print $NF }' | sed 's/@.*//') || exit 1
# An empty list would pass the check below vacuously.
if ! printf '%s\n' "$syms" | grep -qx 'uslab_cache_create'; then
	echo "FAIL: uslab_cache_create is not exported by $lib"
	exit 1
fi
bad=$(printf '%s\n' "$syms" | grep -v '^uslab_')
if [ -n "$bad" ]; then
	echo "FAIL: $lib exports symbols outside uslab_*:"
	printf '  %s\n' $bad
	exit 1
fi
echo "ok: $(printf '%s\n' "$syms" | wc -l) exported symbols, all uslab_*"
