#!/bin/sh
# DESIGN.md invariant 2: a hit in uslab_cache_alloc / uslab_cache_free takes
# no lock and executes no atomic read-modify-write. Check the instructions
# of both entry points in the built library: no lock prefix, no xchg with
# memory, no call, no syscall. (Misses leave by a tail jump to the _slow
# functions, which may do all of those.)
lib="$1"
command -v objdump >/dev/null || { echo "objdump missing"; exit 77; }
status=0
for fn in uslab_cache_alloc uslab_cache_free uslab_free; do
	body=$(objdump -d --no-show-raw-insn "$lib" | awk -v f="<$fn>:" '$2 == f {on=1; next} on && /^$/ {exit} on')
	if [ -z "$body" ]; then
		echo "$fn: not an assembly entry point in $lib (built without asm?)"
		exit 77
	fi
	# The hit path: from the entry to the first ret (what follows is the
	# miss's tail jump, the abort signature and handler, and padding).
	n=$(printf '%s\n' "$body" | awk '/^ / { n++ } $2 == "ret" { print n; exit }')
	# (xchg with a memory operand is atomic; xchg %ax,%ax is a padding nop)
	bad=$(printf '%s\n' "$body" | grep -E '\b(lock|call|syscall|cmpxchg|xadd)\b|\bxchg\b.*\(' || true)
	if [ -n "$bad" ]; then
		echo "$fn: forbidden instruction on the fast path:"; echo "$bad"; status=1
	else
		echo "$fn: hit path $n instructions, no lock, atomic, call or syscall"
	fi
done
exit $status
