#!/bin/sh
# SPDX-License-Identifier: MIT
# The layers only call down (DESIGN.md §1, slab/cache.c §1): every file of
# the library has a rank below, and each object may reference only symbols
# defined by objects of a LOWER rank (or outside the library: libc). So no
# file reaches up, and no two files import each other, directly or in a
# circle. A new file must be given a rank here, or the test fails.
# Usage: check-layers.sh ARCHIVE...   (the library's static archives)
#        NM overrides the nm to use.
set -u
nm=${NM:-nm}
[ $# -ge 1 ] || { echo "usage: check-layers.sh ARCHIVE..."; exit 2; }
command -v "$nm" >/dev/null 2>&1 || { echo "SKIP: $nm not found"; exit 77; }

# Bottom to top. One line per file: its object's name as meson builds it.
order='
os-linux.c.o
pagesrc.c.o
mmap.c.o
region.c.o
brk.c.o
hugepage.c.o
debug.c.o
debug-conf.c.o
meta.c.o
audit.c.o
slabmap.c.o
derive.c.o
arch_generic.c.o
arch_x86_64.S.o
slab.c.o
depot.c.o
pcpu-arena.c.o
pcpu-mode.c.o
pcpu.c.o
sample.c.o
limit.c.o
debug-cache.c.o
validate.c.o
rcu.c.o
arch_x86_64-entry.S.o
segment_common.c.o
segment_reader.c.o
segment_writer.c.o
cache.c.o
kmalloc.c.o
arch_x86_64-kmalloc.S.o
stats.c.o
memory.c.o
'

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uslab-layers.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

# object -> rank
rank=0
for o in $order; do
	rank=$((rank + 1))
	echo "$o $rank"
done >"$tmp/ranks"

# "object symbol" for every defined and every undefined symbol.
for a in "$@"; do
	"$nm" -A --defined-only "$a" 2>/dev/null | awk '{ n = split($1, p, ":"); o = p[n - 1]; sub(".*/", "", o); if (NF >= 3) print o, $NF }'
done | sort -u >"$tmp/defined"
for a in "$@"; do
	"$nm" -A -u "$a" 2>/dev/null | awk '{ n = split($1, p, ":"); o = p[n - 1]; sub(".*/", "", o); print o, $NF }'
done | sort -u >"$tmp/undefined"

if [ ! -s "$tmp/defined" ]; then
	echo "FAIL: no symbols found in $*"
	exit 1
fi

status=0
# Every object must have a rank.
for o in $(cut -d' ' -f1 "$tmp/defined" "$tmp/undefined" | sort -u); do
	if ! grep -q "^$o " "$tmp/ranks"; then
		echo "FAIL: $o has no rank in tests/check-layers.sh: place it in the layer order"
		status=1
	fi
done

# Every undefined symbol defined inside the library must come from a lower rank.
awk '
	FILENAME == ARGV[1] { rank[$1] = $2; next }
	FILENAME == ARGV[2] { def[$2] = $1; next }
	{
		o = $1; sym = $2
		if (!(sym in def)) next          # libc, the kernel, the toolchain
		d = def[sym]
		if (d == o) next
		if (rank[d] >= rank[o]) {
			printf "FAIL: %s references %s, defined in %s, which is not below it\n", o, sym, d
			bad = 1
		}
		refs++
	}
	END {
		if (refs == 0) { print "FAIL: no reference between library files found (wrong archives?)"; exit 1 }
		exit bad
	}
' "$tmp/ranks" "$tmp/defined" "$tmp/undefined" || status=1

[ $status -eq 0 ] && echo "ok: $(wc -l <"$tmp/ranks") files, every reference points down"
exit $status
