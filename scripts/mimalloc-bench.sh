#!/usr/bin/env bash
# Build the public mimalloc-bench programs (github.com/daanx/mimalloc-bench) from a
# checkout of it, OUTSIDE this repository, and run each of them under several mallocs:
# glibc (no preload), jemalloc, tcmalloc, mimalloc and uslab's libuslab-malloc.so, each
# preloaded with LD_PRELOAD, plus any --lib NAME=PATH given. Every run is timed and its
# peak RSS taken with /usr/bin/time; a markdown table of the medians, uslab/mimalloc
# ratios and geometric means against mimalloc is printed at the end (and kept in OUT).
#
# Usage: scripts/mimalloc-bench.sh SRC_DIR [--runs N] [--out DIR] [--only prog,prog]
#                                  [--uslab PATH] [--lib NAME=PATH]... [--timeout SEC]
#   SRC_DIR   a mimalloc-bench source tree (the one with bench/ and bench.sh in it)
#   --runs    rounds per program (default 3); the table shows medians
#   --out     build and work directory (default /tmp/uslab-mbench; never inside the repo)
#   --only    run only these programs (comma-separated, names as in "Arguments" below)
#   --uslab   the uslab preload library (default build-release/slab/libuslab-malloc.so)
#   --lib     another backend to preload, NAME=PATH; may be repeated
#   --timeout seconds before one run is killed and counted as failed (default 300)
#
# The programs are built with gcc/g++ -O2 -DNDEBUG -w, one command each, with the sources,
# defines and libraries that mimalloc-bench's bench/CMakeLists.txt gives them (its Release
# build uses -O3; -w is its warning switch-off). No network is needed. A program whose
# sources are not in SRC_DIR is skipped with a note; one that fails to compile is skipped
# and makes the script exit non-zero.
#
# Arguments, after mimalloc-bench's bench.sh run lines with its --procs set to 2 (this
# script's target is a 2-core machine), sized so that 10 programs x 5 mallocs x 3 rounds
# take about 12 minutes there (4 of them are rptest's fixed sleeps, ~16 s a run, which no
# argument shortens; alloc-test, espresso and glibc-simple do fixed work too):
#   cfrac          a 42-digit semiprime, 300000000000000000053 * 333333333333333333409
#                  (bench.sh factors a 44-digit number: 7 s here, every 2 digits double it)
#   espresso       bench/espresso/largest.espresso, as bench.sh (the only input shipped)
#   larson         2 8 1000 5000 100 4141 2   (bench.sh: 5 s, $procs threads)
#   xmalloc-test   -w 2 -t 2 -s 64            (bench.sh: -t 5)
#   cache-scratch  2 1000 1 2000000 2         (bench.sh's cache-scratchN)
#   mstress        2 50 100                   (bench.sh: $procs 50 25; 25 rounds of 2
#                                              threads take 0.2 s, too short to time)
#   rptest         2 0 1 2 500 1000 100 8 16000   (as bench.sh)
#   glibc-simple   no arguments, as bench.sh (fixed work)
#   glibc-thread   2                          (runs for a fixed 2 s)
#   alloc-test     1                          (bench.sh's alloc-test1; alloc-testN does
#                                              twice the work, 13 s a run here)
# Time is elapsed seconds, except for the programs that run for a fixed time or are
# dominated by sleeps; for those the table shows, as bench.sh does, a "relative time"
# computed from the throughput they print (lower is better, comparable across mallocs):
#   larson: its "relative time" (1e9 / allocations per second); xmalloc-test: its "rtime"
#   (100 / million frees per second); rptest: 2e6 / (memory ops per CPU second), its wall
#   time is ~15 s of fixed sleeps; glibc-thread: 1e9 / iterations.
# Peak RSS is /usr/bin/time's %M (max resident set, KiB) of the benchmark process.
#
# Order: for each program, for each round, every malloc once (A B C D E), so machine noise
# spreads over all of them. A run fails if it exits non-zero, is killed, is not preloaded
# (ld.so's "cannot be preloaded"), or prints no parsable throughput where one is needed.
# cfrac's output must be the same for every malloc and name both factors; espresso's
# output (empty: mimalloc-bench's copy does not print the solution) must be the same too.
# Failures are reported as they happen and again at the end, and the exit status is 1.
# Each program is checked to be dynamically linked and to import malloc or operator new;
# a statically linked one is noted (LD_PRELOAD would not replace its malloc).
# The preload libraries are copied into OUT/libs first, so a rebuild of build-release
# while this runs does not change what is measured.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd -P)

die() { echo "mimalloc-bench.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit "${1:-2}"; }

all_progs=(cfrac espresso larson xmalloc-test cache-scratch mstress rptest glibc-simple glibc-thread alloc-test)

src=""
runs=3
out=/tmp/uslab-mbench
only=""
uslab="$(dirname "$0")/../build-release/slab/libuslab-malloc.so"
run_timeout=300
alloc_names=(glibc jemalloc tcmalloc mimalloc uslab)
declare -A alloc_lib=(
	[glibc]=""
	[jemalloc]=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
	[tcmalloc]=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
	[mimalloc]=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
)

while [ $# -gt 0 ]; do
	case "$1" in
	--runs) [ $# -ge 2 ] || usage; runs=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
	--only) [ $# -ge 2 ] || usage; only=$2; shift 2 ;;
	--uslab) [ $# -ge 2 ] || usage; uslab=$2; shift 2 ;;
	--timeout) [ $# -ge 2 ] || usage; run_timeout=$2; shift 2 ;;
	--lib)
		[ $# -ge 2 ] || usage
		name=${2%%=*} path=${2#*=}
		[[ "$2" == *=* && "$name" =~ ^[A-Za-z0-9_.-]+$ && -n "$path" ]] || die "--lib wants NAME=PATH, got '$2'"
		[[ -z "${alloc_lib[$name]+x}" && "$name" != uslab ]] || die "--lib $name: that name is taken"
		alloc_names+=("$name"); alloc_lib[$name]=$path
		shift 2 ;;
	-h | --help) usage 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) [ -z "$src" ] || die "only one SRC_DIR"; src=$1; shift ;;
	esac
done
[ -n "$src" ] || usage
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ "$run_timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a positive number of seconds"
[ -d "$src/bench" ] || die "$src has no bench/ directory: not a mimalloc-bench tree"
src=$(cd "$src" && pwd -P)
alloc_lib[uslab]=$uslab

out=$(realpath -m "$out")
case "$out/" in "$repo"/*) die "--out $out is inside the repository $repo; choose a directory outside it" ;; esac
case "$out" in / | "$HOME" | /tmp) die "--out $out: use a dedicated directory" ;; esac

progs=("${all_progs[@]}")
if [ -n "$only" ]; then
	progs=()
	IFS=, read -r -a want <<<"$only"
	for p in "${want[@]}"; do
		[[ " ${all_progs[*]} " == *" $p "* ]] || die "--only: unknown program '$p' (known: ${all_progs[*]})"
		progs+=("$p")
	done
fi

for tool in /usr/bin/time gcc g++ timeout nm readelf python3 sha256sum; do
	command -v "$tool" >/dev/null || die "needs $tool"
done

failures=()
notes=()
fail() { failures+=("$*"); printf '\n!!! FAILED: %s\n\n' "$*" >&2; }
note() { notes+=("$*"); echo "note: $*"; }

mkdir -p "$out/bin" "$out/build" "$out/libs" "$out/logs" "$out/run"
rm -f "$out"/logs/* "$out/results.tsv" "$out/table.md"

# ---- preload libraries: wait for uslab's (it may be being rebuilt), check, snapshot ----
# (awk, not grep -q, reads all of nm's output: under pipefail an early exit would fail nm)
defines_malloc() { nm -D --defined-only "$1" 2>/dev/null | awk '$3 == "malloc" { f = 1 } END { exit !f }'; }
wait_lib() { # path, tries (5 s apart)
	local i
	for ((i = 0; i < $2; i++)); do
		[ -f "$1" ] && defines_malloc "$1" && return 0
		[ "$i" = 0 ] && [ "$2" -gt 1 ] && echo "waiting for $1 to appear (it may be being rebuilt)..."
		[ "$2" -gt 1 ] && sleep 5
	done
	return 1
}
active=()
for a in "${alloc_names[@]}"; do
	lib=${alloc_lib[$a]}
	if [ -z "$lib" ]; then active+=("$a"); continue; fi
	tries=1
	[ "$a" = uslab ] && tries=60 # another build of build-release may be under way: up to 5 min
	if ! wait_lib "$lib" "$tries"; then
		fail "$a: $lib is missing or does not define malloc; $a not run"
		continue
	fi
	cp -f "$lib" "$out/libs/$a.so"
	defines_malloc "$out/libs/$a.so" || { fail "$a: copy of $lib has no malloc"; continue; }
	alloc_lib[$a]=$out/libs/$a.so
	active+=("$a")
done
[ "${#active[@]}" -gt 0 ] || die "no malloc to run"

# ---- build ----
cflags=(-O2 -DNDEBUG -w)
b=$src/bench
build_cmd() { # prog -> sets cmd=(...) and srcs=(...)
	local f
	srcs=()
	case "$1" in
	cfrac)
		for f in cfrac pops pconst pio pabs pneg pcmp podd phalf padd psub pmul pdivmod psqrt \
			ppowmod atop ptoa itop utop ptou errorp pfloat pidiv pimod picmp primes pcfrac pgcd; do
			srcs+=("$b/cfrac/$f.c")
		done
		cmd=(gcc "${cflags[@]}" -std=gnu89 -DNOMEMOPT=1 "${srcs[@]}" -lm) ;;
	espresso)
		for f in cofactor cols compl contain cubestr cvrin cvrm cvrmisc cvrout dominate equiv \
			espresso essen exact expand gasp getopt gimpel globals hack indep irred main map \
			matrix mincov opo pair part primes reduce rows set setc sharp sminterf solution \
			sparse unate utility verify; do
			srcs+=("$b/espresso/$f.c")
		done
		cmd=(gcc "${cflags[@]}" -std=gnu89 "${srcs[@]}" -lm) ;;
	larson)
		srcs=("$b/larson/larson.cpp")
		cmd=(g++ "${cflags[@]}" -std=c++17 -DCPP=1 "${srcs[@]}" -lpthread) ;;
	xmalloc-test)
		srcs=("$b/xmalloc-test/xmalloc-test.c")
		cmd=(gcc "${cflags[@]}" "${srcs[@]}" -lpthread) ;;
	cache-scratch)
		srcs=("$b/cache-scratch/cache-scratch.cpp")
		cmd=(g++ "${cflags[@]}" -std=c++17 "${srcs[@]}" -lpthread) ;;
	mstress)
		srcs=("$b/mstress/mstress.c")
		cmd=(gcc "${cflags[@]}" "${srcs[@]}" -lpthread) ;;
	rptest)
		srcs=("$b/rptest/rptest.c" "$b/rptest/thread.c" "$b/rptest/timer.c")
		cmd=(gcc "${cflags[@]}" -I"$b/rptest" "${srcs[@]}" -lpthread -lm) ;;
	glibc-simple)
		srcs=("$b/glibc-bench/bench-malloc-simple.c")
		cmd=(gcc "${cflags[@]}" "${srcs[@]}" -lpthread) ;;
	glibc-thread)
		srcs=("$b/glibc-bench/bench-malloc-thread.c")
		cmd=(gcc "${cflags[@]}" "${srcs[@]}" -lpthread) ;;
	alloc-test)
		srcs=("$b/alloc-test/test_common.cpp" "$b/alloc-test/allocator_tester.cpp")
		cmd=(g++ "${cflags[@]}" -std=c++17 -DBENCH=4 "${srcs[@]}" -lpthread) ;;
	esac
}

echo "== building into $out/bin (from $src)"
built=()
for p in "${progs[@]}"; do
	build_cmd "$p"
	missing=""
	for f in "${srcs[@]}"; do [ -f "$f" ] || missing+=" ${f#"$src"/}"; done
	if [ -n "$missing" ]; then
		note "$p not built: sources missing in SRC_DIR:$missing"
		continue
	fi
	if ! "${cmd[@]}" -o "$out/bin/$p" >"$out/build/$p.log" 2>&1; then
		fail "$p: build failed (${cmd[0]}), see $out/build/$p.log: $(tail -n 3 "$out/build/$p.log" | tr '\n' ' ')"
		continue
	fi
	# LD_PRELOAD only replaces the malloc of a dynamically linked program that imports it
	if ! readelf -d "$out/bin/$p" 2>/dev/null | awk '/NEEDED/ { f = 1 } END { exit !f }'; then
		note "$p is statically linked: LD_PRELOAD has no effect on it, every column measures its built-in malloc"
	elif ! nm -D --undefined-only "$out/bin/$p" | awk '$2 ~ /^(malloc|calloc|realloc|posix_memalign|aligned_alloc|_Zn[wa]m)(@|$)/ { f = 1 } END { exit !f }'; then
		note "$p imports neither malloc nor operator new: LD_PRELOAD may not reach its allocations"
	fi
	echo "  built $p"
	built+=("$p")
done

# ---- arguments (see the header) ----
cfrac_p=300000000000000000053
cfrac_q=333333333333333333409
prog_args() { # prog -> args=(...), kind: elapsed | larson | xmalloc | rptest | glibc-thread
	kind=elapsed
	case "$1" in
	cfrac) args=(100000000000000000040366666666666666670677) ;;
	espresso) args=("$b/espresso/largest.espresso") ;;
	larson) args=(2 8 1000 5000 100 4141 2); kind=larson ;;
	xmalloc-test) args=(-w 2 -t 2 -s 64); kind=xmalloc ;;
	cache-scratch) args=(2 1000 1 2000000 2) ;;
	mstress) args=(2 50 100) ;;
	rptest) args=(2 0 1 2 500 1000 100 8 16000); kind=rptest ;;
	glibc-simple) args=() ;;
	glibc-thread) args=(2); kind=glibc-thread ;;
	alloc-test) args=(1) ;;
	esac
}

# The time column for the fixed-duration programs, from what they print (see the header).
metric_of() { # kind stdout-file elapsed -> prints the value or nothing
	local v
	case "$1" in
	elapsed) echo "$3" ;;
	larson) sed -n 's/.*relative time: \([0-9.]*\)s.*/\1/p' "$2" | tail -n 1 ;;
	xmalloc) sed -n 's/^rtime: \([0-9.]*\),.*/\1/p' "$2" | tail -n 1 ;;
	rptest)
		v=$(sed -n 's/.*\.\([0-9][0-9]*\) memory ops.*/\1/p' "$2" | tail -n 1)
		[ -n "$v" ] && [ "$v" != 0 ] && awk -v o="$v" 'BEGIN { printf "%.4f\n", 2000000 / o }' ;;
	glibc-thread)
		v=$(sed -n 's/^\([0-9][0-9]*\) iterations.*/\1/p' "$2" | tail -n 1)
		[ -n "$v" ] && [ "$v" != 0 ] && awk -v o="$v" 'BEGIN { printf "%.4f\n", 1e9 / o }' ;;
	esac
	return 0
}

# One run: prog, malloc, round. Appends a line to results.tsv on success.
run_one() {
	local p=$1 a=$2 r=$3 lib=${alloc_lib[$2]} base="$out/logs/$1.$2.$3" rc=0 line e m v h=""
	local -a envv=(env -u LD_PRELOAD)
	[ -n "$lib" ] && envv=(env LD_PRELOAD="$lib")
	(cd "$out/run" && exec timeout -k 10 "$run_timeout" /usr/bin/time -o "$base.time" -f '%e %M' \
		"${envv[@]}" "$out/bin/$p" "${args[@]}" </dev/null >"$base.out" 2>"$base.err") || rc=$?
	if grep -q 'cannot be preloaded' "$base.err"; then
		fail "$p under $a (round $r): not preloaded: $(grep -m1 'cannot be preloaded' "$base.err")"
		return
	fi
	if [ "$rc" != 0 ]; then
		local why="exit status $rc"
		[ "$rc" = 124 ] && why="killed after ${run_timeout}s"
		fail "$p under $a (round $r): $why; $(grep -h -m1 -E 'Command|signal' "$base.time" 2>/dev/null || true) stderr: $(tail -n 2 "$base.err" | tr '\n' ' ')"
		return
	fi
	line=$(tail -n 1 "$base.time")
	read -r e m <<<"$line"
	if ! [[ "$e" =~ ^[0-9.]+$ && "$m" =~ ^[0-9]+$ ]]; then
		fail "$p under $a (round $r): cannot read /usr/bin/time output '$line'"
		return
	fi
	v=$(metric_of "$kind" "$base.out" "$e")
	if [ -z "$v" ]; then
		fail "$p under $a (round $r): no throughput line in its output ($base.out)"
		return
	fi
	case "$p" in
	cfrac | espresso) h=$(sha256sum <"$base.out" | cut -c1-16) ;;
	esac
	if [ "$p" = cfrac ] && { ! grep -q "$cfrac_p" "$base.out" || ! grep -q "$cfrac_q" "$base.out"; }; then
		fail "$p under $a (round $r): wrong factors: $(head -c 200 "$base.out")"
		return
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$a" "$r" "$e" "$m" "$v" "${h:--}" >>"$out/results.tsv"
	printf '  %-13s round %d  %-9s %7.2f s  %8d KiB' "$p" "$r" "$a" "$e" "$m"
	[ "$kind" != elapsed ] && printf '  relative time %s' "$v"
	printf '\n'
}

# ---- environment ----
echo
echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(uname -sr)"
echo "== compiler: $(gcc --version | head -n 1)"
rev="not in a git checkout"
if rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null); then
	git -C "$repo" diff --quiet HEAD 2>/dev/null || rev+=", work tree modified"
fi
echo "== uslab: $uslab ($rev)"
for a in "${active[@]}"; do
	[ -n "${alloc_lib[$a]}" ] && echo "   $a: sha256 $(sha256sum <"${alloc_lib[$a]}" | cut -c1-16)"
done
echo "== $runs round(s); for each program and round every malloc once: ${active[*]}"

start=$SECONDS
touch "$out/results.tsv"
for p in "${built[@]}"; do
	prog_args "$p"
	echo
	echo "== $p ${args[*]}"
	for ((r = 1; r <= runs; r++)); do
		for a in "${active[@]}"; do
			run_one "$p" "$a" "$r"
		done
	done
	# deterministic output: the same for every malloc and round
	case "$p" in
	cfrac | espresso)
		n=$(awk -F'\t' -v p="$p" '$1 == p { print $7 }' "$out/results.tsv" | sort -u | wc -l)
		[ "$n" -le 1 ] || fail "$p: output differs between mallocs/rounds: $(awk -F'\t' -v p="$p" '$1 == p { printf "%s/%s=%s ", $2, $3, $7 }' "$out/results.tsv")"
		;;
	esac
done
elapsed=$((SECONDS - start))

# ---- table ----
relative=" larson xmalloc-test rptest glibc-thread "
echo
python3 - "$out/results.tsv" "${active[*]}" "${built[*]}" "$relative" "$runs" >"$out/table.md" <<'EOF'
import math, statistics, sys
path, allocs, progs, relative, runs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
t, m = {}, {}
for line in open(path):
    p, a, r, e, rss, v, h = line.rstrip("\n").split("\t")
    t.setdefault((p, a), []).append(float(v))
    m.setdefault((p, a), []).append(int(rss) / 1024.0)
med = lambda d, k: statistics.median(d[k]) if k in d else None
ref = "mimalloc" if "mimalloc" in allocs else None
def ratio(d, p, a):
    x, y = med(d, (p, a)), med(d, (p, ref)) if ref else None
    return x / y if x is not None and y else None
def fmt_t(x): return "FAIL" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")
def fmt_r(x): return "n/a" if x is None else f"{x:.2f}"
def gmean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None
print(f"Median of {runs} round(s). Each cell: time (s) / peak RSS (MiB); † time is bench.sh's relative time "
      "from the program's throughput (lower is better), the others elapsed seconds.\n")
head = ["program"] + allocs + ["uslab/mimalloc time", "uslab/mimalloc RSS"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
for p in progs:
    cells = [p + (" †" if p in relative else "")]
    for a in allocs:
        x, y = med(t, (p, a)), med(m, (p, a))
        cells.append("FAIL" if x is None else f"{fmt_t(x)} / {y:.1f}")
    cells += [fmt_r(ratio(t, p, "uslab")), fmt_r(ratio(m, p, "uslab"))]
    print("| " + " | ".join(cells) + " |")
cells = ["geomean vs mimalloc (time / RSS)"]
for a in allocs:
    gt, gm = gmean([ratio(t, p, a) for p in progs]), gmean([ratio(m, p, a) for p in progs])
    cells.append(f"{fmt_r(gt)} / {fmt_r(gm)}")
cells += [fmt_r(gmean([ratio(t, p, "uslab") for p in progs])), fmt_r(gmean([ratio(m, p, "uslab") for p in progs]))]
print("| " + " | ".join(cells) + " |")
EOF
cat "$out/table.md"
echo
echo "timed runs took ${elapsed}s; per-run lines in $out/results.tsv (program malloc round elapsed_s rss_kib time output_hash), outputs in $out/logs"
if [ "${#notes[@]}" -gt 0 ]; then
	echo
	printf 'note: %s\n' "${notes[@]}"
fi
if [ "${#failures[@]}" -gt 0 ]; then
	echo
	echo "!!! ${#failures[@]} FAILURE(S):" >&2
	printf '!!!   %s\n' "${failures[@]}" >&2
	exit 1
fi
