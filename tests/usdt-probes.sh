#!/bin/sh
# The USDT probes (provider uslab) are in the library, and perf counts them.
#   usdt-probes.sh LIBUSLAB DEMO
# Part 1 (always): readelf -n lists every probe slab/probes.h documents.
# Part 2 (root, perf and tracefs only; otherwise skipped): perf probe arms
# them on the library, perf stat counts them on uslab-demo -n, and the exact
# counts that the demo's structure fixes are checked (4 caches created and
# destroyed). Probes are removed again, and tracefs unmounted if we mounted it.
set -u
lib=$1
demo=$2
probes="cache_create cache_destroy slab_grow slab_release depot_get depot_put mag_resize reap alloc_fail error"

command -v readelf >/dev/null || { echo "readelf missing"; exit 77; }
notes=$(readelf -n "$lib")
for p in $probes; do
	if ! printf '%s\n' "$notes" | grep -A2 'Provider: uslab' | grep -q "Name: $p\$"; then
		echo "probe uslab:$p missing from $lib"
		exit 1
	fi
done
echo "all $(echo $probes | wc -w) probes present in $lib"

if [ "$(id -u)" -ne 0 ] || ! command -v perf >/dev/null; then
	echo "not root or no perf: perf counting skipped"
	exit 0
fi
mounted_here=0
if ! mountpoint -q /sys/kernel/tracing; then
	mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || { echo "no tracefs: skipped"; exit 0; }
	mounted_here=1
fi
real=$(readlink -f "$lib")
cleanup() {
	perf probe -q -d 'sdt_uslab:*' >/dev/null 2>&1
	[ $mounted_here -eq 1 ] && umount /sys/kernel/tracing
}
trap cleanup EXIT
perf probe -q -d 'sdt_uslab:*' >/dev/null 2>&1
for p in cache_create cache_destroy slab_grow depot_put; do
	if ! perf probe -q -x "$real" -a "sdt_uslab:$p" >/dev/null 2>&1; then
		echo "perf probe could not arm sdt_uslab:$p here: skipped"
		exit 0
	fi
done
out=$(perf stat -x, -e sdt_uslab:cache_create -e sdt_uslab:cache_destroy \
	-e sdt_uslab:slab_grow -e sdt_uslab:depot_put -- "$demo" -t 1 -n 20000 2>&1 >/dev/null)
echo "$out"
count() { printf '%s\n' "$out" | awk -F, -v e="sdt_uslab:$1" '$3 == e {print $1}'; }
status=0
# The demo's 4 caches, and the magazine caches their depots and per-CPU
# arrays can use (slab/depot.c: 64-256 rounds for the three small ones,
# 8-64 for the 4 KiB one: 8, 16, 32, 64, 128, 256), which live on after the
# demo's destroys.
[ "$(count cache_create)" = 10 ] || { echo "expected 10 cache_create"; status=1; }
[ "$(count cache_destroy)" = 4 ] || { echo "expected 4 cache_destroy"; status=1; }
[ "$(count slab_grow)" -ge 4 ] 2>/dev/null || { echo "expected at least 4 slab_grow"; status=1; }
[ "$(count depot_put)" -ge 1 ] 2>/dev/null || { echo "expected depot_put events"; status=1; }
exit $status
