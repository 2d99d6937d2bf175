#!/usr/bin/env bash
# Benchmark uslab-memcached against the system's memcached (/usr/bin/memcached, 1.6.18 on
# Debian 12): throughput and latency under memcaslap (libmemcached-tools' memaslap), and
# resident memory per byte stored. Prints Markdown tables at the end.
#
# Usage: scripts/bench-memcached.sh [USLAB_BINARY] [--seconds N] [--rounds R]
#                                   [--items32 N] [--items1k N] [--perf] [--keep]
#   USLAB_BINARY  default build-release/tools/memcached/uslab-memcached (from the repo root)
#   --seconds N   length of each memcaslap run (default 20)
#   --rounds R    rounds (default 2); the tables show medians over the rounds
#   --items32 N   items in the 32-byte-value memory test (default 1000000)
#   --items1k N   items in the 1 KiB-value memory test (default 200000)
#   --perf        after the rounds, one extra (unmeasured) 1 KiB memcaslap run on a fresh
#                 uslab-memcached with `perf record -e cpu-clock -g -p PID -- sleep 10`
#                 attached; prints the top 15 symbols of perf report --no-children
#   --keep        keep the work directory (memcaslap outputs, server logs) even on success
#
# What it measures. Every measurement starts a fresh server on its own free loopback port,
# both kinds with -t 2, and runs them interleaved: in each round every measure is taken on
# uslab-memcached, then on memcached, then the next measure, so noise on the machine spreads
# over both.
#   1. Throughput and latency: memcaslap -s 127.0.0.1:PORT -T 2 -c 32 -t Ns -S Ns -F CFG
#      on a server with -m 1024. CFG: keys of 64 bytes, values of 1 KiB, get:set 9:1.
#      A second run adds -X 32 (values of 32 bytes, keys still 64 B). TPS is memcaslap's
#      last line; the latencies (microseconds, per get / set / all) are its final summary
#      blocks (Min, Max, Avg, Geo = geometric mean, Std = standard deviation).
#      memaslap only gets keys that it has set before (each concurrency sets the objects of
#      its task window first), so no preload is needed; its get_misses and the server's
#      get_misses (stats) are reported, and should be 0.
#   2. Resident memory: a fresh server with -m 2048 (nothing is evicted) is loaded with
#      --items32 items of 14-byte keys and 32-byte values, over one socket, pipelined
#      "set KEY 0 0 N noreply" in large batches, ended by a "get" of the last key; then
#      "stats" curr_items must equal the count (a mismatch is reported) and a few values are
#      read back and compared. VmRSS of the server (/proc/PID/status) is read before the
#      load (baseline) and 2 s after it. Stored = items x (key + value) bytes.
#      RSS/stored is the whole RSS over that; (RSS-base)/stored leaves the baseline out.
#      The same with --items1k items of 1 KiB values, on another fresh server.
#
# How to read the tables. "uslab/mc" is uslab-memcached's figure over memcached's:
# throughput is better higher, latency and memory better lower. The goal column gives the
# targets and "met" whether the medians meet them:
#   throughput (TPS) ratio >= 1.2, both value sizes
#   RSS ratio after the 32-byte load <= 0.7
#   uslab-memcached's RSS/stored after the 1 KiB load <= 1.08
# The raw per-round figures follow the medians. On a 2-vCPU machine memcaslap's 2 threads and
# the server's 2 workers share the CPUs, so the absolute numbers depend on the client too;
# the ratio is the figure to compare. The load average at the start and the end is printed:
# other work on the machine makes the figures noisy.
#
# The uslab-memcached binary and its libuslab.so are copied into the work directory first,
# so a rebuild of the build tree while this runs does not change what is measured. Nothing
# in the repository is written. Exit status: 0 if every run worked (targets missed or not),
# 1 if a run failed (server crash, memcaslap error, wrong item count), 2 on usage errors.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd -P)

die() { echo "bench-memcached.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit "${1:-2}"; }

uslab="$repo/build-release/tools/memcached/uslab-memcached"
seconds=20
rounds=2
items32=1000000
items1k=200000
do_perf=0
keep=0
tput_mem=1024
load_mem=2048
memcached_bin=/usr/bin/memcached

while [ $# -gt 0 ]; do
	case "$1" in
	--seconds) [ $# -ge 2 ] || die "--seconds needs a value"; seconds=$2; shift 2 ;;
	--seconds=*) seconds=${1#*=}; shift ;;
	--rounds) [ $# -ge 2 ] || die "--rounds needs a value"; rounds=$2; shift 2 ;;
	--rounds=*) rounds=${1#*=}; shift ;;
	--items32) [ $# -ge 2 ] || die "--items32 needs a value"; items32=$2; shift 2 ;;
	--items1k) [ $# -ge 2 ] || die "--items1k needs a value"; items1k=$2; shift 2 ;;
	--perf) do_perf=1; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage 0 ;;
	-*) die "unknown option $1 (--help)" ;;
	*) uslab=$1; shift ;;
	esac
done
for v in seconds rounds items32 items1k; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--$v: a positive integer, not '${!v}'"
done
[ -x "$uslab" ] || die "no uslab-memcached binary at $uslab (build it: ninja -C build-release)"
[ -x "$memcached_bin" ] || die "no $memcached_bin (scripts/install-deps.sh installs memcached)"
command -v memcaslap >/dev/null || die "no memcaslap (apt-get install libmemcached-tools)"
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3) || die "no python3"
if [ "$do_perf" = 1 ]; then command -v perf >/dev/null || die "--perf: no perf"; fi

work=$(mktemp -d /tmp/bench-memcached.XXXXXX)
failed=0
fail() { echo "FAILED: $*" | tee -a "$work/failures"; failed=1; }

# ---- Servers: started fresh, killed at exit ----
declare -A live=()
# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
	local p
	for p in "${!live[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	if [ "$keep" = 1 ] || [ "$failed" = 1 ]; then
		echo "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binary and its libuslab.so.* into the work directory (LD_LIBRARY_PATH comes before
# the binary's RUNPATH).
mkdir -p "$work/lib"
cp "$uslab" "$work/uslab-memcached"
ldd "$uslab" | awk '$1 ~ /^libuslab/ && $3 ~ /^\// {print $3}' | while read -r lib; do
	cp "$lib" "$work/lib/"
done
# (GIT_OPTIONAL_LOCKS=0: no refresh of the index, nothing written into .git)
uslab_ver=$(cd "$repo" && GIT_OPTIONAL_LOCKS=0 git describe --always --dirty 2>/dev/null || echo unknown)

# ---- The helper: free ports, the loader, stats, memcaslap's output, the tables ----
cat >"$work/mc.py" <<'PY'
import os, re, socket, statistics, sys, threading, time

def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def query(port, cmd):
    s = conn(port)
    s.sendall(cmd.encode() + b"\r\n")
    buf = b""
    while not (buf.endswith(b"END\r\n") or buf.endswith(b"ERROR\r\n")):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    return buf.decode(errors="replace")

def stats(port, group=""):
    out = {}
    for line in query(port, ("stats " + group).strip()).splitlines():
        f = line.split(" ", 2)
        if len(f) == 3 and f[0] == "STAT":
            out[f[1]] = f[2]
    return out

def cmd_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()

def cmd_wait(port, pid):
    # up when it answers "version"
    for _ in range(200):
        if not os.path.exists("/proc/%d" % pid):
            sys.exit("server %d exited before it listened" % pid)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"version\r\n")
            r = s.recv(100)
            s.close()
            if r.startswith(b"VERSION"):
                print(r.decode(errors="replace").strip())
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("server on port %d did not answer" % port)

def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS for %d" % pid)

def key(i):
    return b"k%013d" % i  # 14 bytes

def cmd_load(port, pid, n, vsize, out):
    """Pipeline n sets of 14-byte keys and vsize-byte values with noreply, then a get of
    the last key; check curr_items and a few values; write RSS figures to out."""
    rnd = bytes(33 + (i * 7919 + i // 13) % 94 for i in range(8192 + vsize))
    val = lambda i: rnd[(i * 131) % 8192:(i * 131) % 8192 + vsize]
    base = vmrss(pid)
    s = conn(port)
    got = []
    last = key(n - 1)
    def reader():
        buf = b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            buf += d
            if buf.endswith(b"END\r\n") and (b"VALUE " + last) in buf[-(vsize + 200):]:
                break
        got.append(buf)
    t = threading.Thread(target=reader)
    t.start()
    t0 = time.time()
    batch = 10000
    for b0 in range(0, n, batch):
        s.sendall(b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key(i), vsize, val(i))
                           for i in range(b0, min(n, b0 + batch))))
    s.sendall(b"get " + last + b"\r\n")
    t.join(600)
    dt = time.time() - t0
    s.close()
    problems = []
    buf = got[0] if got else b""
    pre = buf[:buf.rfind(b"VALUE " + last)] if (b"VALUE " + last) in buf else buf
    if not buf.endswith(b"END\r\n") or (b"VALUE " + last) not in buf:
        problems.append("the get of the last key did not return it (%r)" % buf[-200:])
    if pre:
        lines = pre.split(b"\r\n")
        problems.append("%d unexpected reply lines to noreply sets, first: %r"
                        % (len([l for l in lines if l]), lines[0][:100]))
    time.sleep(2)
    st = stats(port)
    rss = vmrss(pid)
    curr = int(st.get("curr_items", -1))
    if curr != n:
        problems.append("curr_items %d, %d loaded" % (curr, n))
    if int(st.get("evictions", 0)):
        problems.append("evictions %s" % st["evictions"])
    for i in sorted({0, n // 3, n // 2, n - 1}):
        r = query(port, "get " + key(i).decode()).encode()
        want = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key(i), vsize, val(i))
        if r != want:
            problems.append("get %s returned %r" % (key(i).decode(), r[:80]))
    stored = n * (14 + vsize)
    with open(out, "w") as f:
        f.write("base_rss\t%d\nrss\t%d\nrss_per_stored\t%.4f\nrss_net_per_stored\t%.4f\n"
                % (base, rss, rss / stored, (rss - base) / stored))
        f.write("server_bytes_per_stored\t%.4f\n" % (int(st.get("bytes", 0)) / stored))
        f.write("slab_malloced_per_stored\t%.4f\n"
                % (int(stats(port, "slabs").get("total_malloced", 0)) / stored))
        f.write("load_sets_per_s\t%.0f\n" % (n / dt))
    print("  %d items, %d B values: %.1f s (%.0f sets/s), RSS %.1f MiB (baseline %.1f MiB), "
          "curr_items %d, server 'bytes' %s" % (n, vsize, dt, n / dt, rss / 2**20, base / 2**20,
                                                curr, st.get("bytes")))
    for p in problems:
        print("  PROBLEM: " + p)
    sys.exit(1 if problems else 0)

def cmd_memaslap(path, port, out):
    """Parse memcaslap's output (and the server's stats after it) into out."""
    text = open(path, errors="replace").read()
    res = {}
    m = re.findall(r"TPS: (\d+)", text)
    if m:
        res["tps"] = float(m[-1])
    for kind, n, mn, mx, avg, geo, std in re.findall(
            r"(Get|Set|Total) Statistics \((\d+) events\)\s+Min:\s+(\d+)\s+Max:\s+(\d+)\s+"
            r"Avg:\s+(\d+)\s+Geo:\s+([\d.]+)\s+Std:\s+([\d.]+)", text):
        k = kind.lower()
        res.update({k + "_min": mn, k + "_max": mx, k + "_avg": avg, k + "_geo": geo,
                    k + "_std": std})
    m = re.search(r"get_misses: (\d+)", text)
    if m:
        res["client_get_misses"] = m.group(1)
    problems = []
    if "tps" not in res or "get_avg" not in res:
        problems.append("no TPS or latency table in memcaslap's output")
    try:
        st = stats(port)
        res["server_get_misses"] = st.get("get_misses", "?")
        res["server_evictions"] = st.get("evictions", "?")
        if st.get("get_misses", "0") != "0":
            problems.append("server get_misses %s (get_hits %s)"
                            % (st["get_misses"], st.get("get_hits")))
        if st.get("evictions", "0") != "0":
            problems.append("server evictions %s" % st["evictions"])
    except OSError as e:
        problems.append("stats after the run: %s" % e)
    if res.get("client_get_misses", "0") != "0":
        problems.append("memcaslap get_misses %s" % res["client_get_misses"])
    with open(out, "w") as f:
        for k, v in res.items():
            f.write("%s\t%s\n" % (k, v))
    print("  TPS %s, get avg %s us, set avg %s us, get_misses client %s / server %s"
          % (res.get("tps"), res.get("get_avg"), res.get("set_avg"),
             res.get("client_get_misses"), res.get("server_get_misses")))
    for p in problems:
        print("  NOTE: " + p)
    sys.exit(0 if "tps" in res else 1)

def fmt(v, kind):
    if v is None:
        return "-"
    if kind == "mib":
        return "%.1f" % (v / 2**20)
    if kind == "x":
        return "%.3f" % v
    if abs(v) >= 100 or v == int(v):
        return "%.0f" % v
    return "%.2f" % v

def cmd_table(resdir, rounds):
    rounds = int(rounds)
    data = {}  # (measure, server) -> {field: [values per round]}
    for name in sorted(os.listdir(resdir)):
        m = re.match(r"(\w+)\.(uslab|mc)\.(\d+)$", name)
        if not m:
            continue
        for line in open(os.path.join(resdir, name)):
            if "\t" not in line:
                continue
            k, v = line.rstrip("\n").split("\t")
            try:
                data.setdefault((m.group(1), m.group(2)), {}).setdefault(k, {})[int(m.group(3))] = float(v)
            except ValueError:
                pass
    def vals(meas, srv, field):
        d = data.get((meas, srv), {}).get(field, {})
        return [d.get(r) for r in range(1, rounds + 1)]
    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None
    rows = []  # (section, label, meas, field, kind, better, goal)
    for meas, title in (("tput1k", "memcaslap, 64 B keys, 1 KiB values, get:set 9:1"),
                        ("tput32", "memcaslap, 64 B keys, 32 B values (-X 32), get:set 9:1")):
        rows.append((title, "throughput (TPS, ops/s)", meas, "tps", "n", "higher", ">= 1.2 (ratio)"))
        for t, tl in (("get", "get"), ("set", "set"), ("total", "all")):
            for f, fl in (("avg", "avg"), ("geo", "geo mean"), ("std", "std dev"),
                          ("min", "min"), ("max", "max")):
                rows.append((title, "%s latency %s (us)" % (tl, fl), meas, "%s_%s" % (t, f),
                             "n", "lower", ""))
        rows.append((title, "get_misses (memcaslap)", meas, "client_get_misses", "n", "lower", ""))
        rows.append((title, "get_misses (server stats)", meas, "server_get_misses", "n", "lower", ""))
    for meas, title in (("rss32", "memory, 14 B keys, 32 B values (-m 2048)"),
                        ("rss1k", "memory, 14 B keys, 1 KiB values (-m 2048)")):
        rows.append((title, "RSS before loading (MiB)", meas, "base_rss", "mib", "lower", ""))
        rows.append((title, "RSS after loading (MiB)", meas, "rss", "mib", "lower",
                     "<= 0.7 (ratio)" if meas == "rss32" else ""))
        rows.append((title, "RSS / stored", meas, "rss_per_stored", "x", "lower",
                     "uslab <= 1.08" if meas == "rss1k" else ""))
        rows.append((title, "(RSS - baseline) / stored", meas, "rss_net_per_stored", "x", "lower", ""))
        rows.append((title, "stats slabs total_malloced / stored", meas, "slab_malloced_per_stored", "x", "lower", ""))
        rows.append((title, "stats 'bytes' / stored (not alike: see below)", meas, "server_bytes_per_stored", "x", "lower", ""))
        rows.append((title, "load rate (sets/s, Python client)", meas, "load_sets_per_s", "n", "higher", ""))
    def goal_met(goal, u, c):
        if not goal or u is None or c is None:
            return ""
        if goal.startswith(">= 1.2"):
            return "yes" if c and u / c >= 1.2 else "**no**"
        if goal.startswith("<= 0.7"):
            return "yes" if c and u / c <= 0.7 else "**no**"
        if goal.startswith("uslab <= 1.08"):
            return "yes" if u <= 1.08 else "**no**"
        return ""
    section = None
    print("\n## Medians over %d round(s)\n" % rounds)
    for sec, label, meas, field, kind, better, goal in rows:
        if sec != section:
            section = sec
            print("\n### %s\n" % sec)
            print("| measure | uslab-memcached | memcached | uslab/mc | better | goal | met |")
            print("|---|---:|---:|---:|---|---|---|")
        u, c = med(vals(meas, "uslab", field)), med(vals(meas, "mc", field))
        ratio = "%.3f" % (u / c) if u is not None and c else "-"
        print("| %s | %s | %s | %s | %s | %s | %s |" % (label, fmt(u, kind), fmt(c, kind), ratio,
              better, goal, goal_met(goal, u, c)))
    print("\nstats 'bytes': memcached counts whole items (header, key, suffix, value, CRLF);"
          " uslab-memcached counts key + value only.")
    print("\n## Per round (round 1, round 2, ...)\n")
    section = None
    for sec, label, meas, field, kind, better, goal in rows:
        if sec != section:
            section = sec
            print("\n### %s\n" % sec)
            print("| measure | uslab-memcached | memcached | uslab/mc |")
            print("|---|---|---|---|")
        us, cs = vals(meas, "uslab", field), vals(meas, "mc", field)
        rs = ["%.3f" % (a / b) if a is not None and b else "-" for a, b in zip(us, cs)]
        print("| %s | %s | %s | %s |" % (label, ", ".join(fmt(x, kind) for x in us),
              ", ".join(fmt(x, kind) for x in cs), ", ".join(rs)))

if __name__ == "__main__":
    c, a = sys.argv[1], sys.argv[2:]
    if c == "port":
        cmd_port()
    elif c == "wait":
        cmd_wait(int(a[0]), int(a[1]))
    elif c == "load":
        cmd_load(int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4])
    elif c == "memaslap":
        cmd_memaslap(a[0], int(a[1]), a[2])
    elif c == "query":
        sys.stdout.write(query(int(a[0]), a[1]))
    elif c == "table":
        cmd_table(a[0], a[1])
    else:
        sys.exit("unknown helper command " + c)
PY

mcpy() { "$py" "$work/mc.py" "$@"; }

# memaslap's configuration: keys 64 B, values 1 KiB, set 0.1, get 0.9.
cat >"$work/memaslap.cfg" <<'EOF'
key
64 64 1
value
1024 1024 1
cmd
0 0.1
1 0.9
EOF

# start_server KIND MB TAG: sets spid, sport; the server's output goes to $work/TAG.log
start_server() {
	local kind=$1 mb=$2 tag=$3
	for _ in 1 2 3 4 5; do
		sport=$(mcpy port)
		if [ "$kind" = uslab ]; then
			LD_LIBRARY_PATH="$work/lib" "$work/uslab-memcached" -p "$sport" -l 127.0.0.1 -t 2 \
				-m "$mb" -c 1024 -v >"$work/$tag.log" 2>&1 &
		else
			"$memcached_bin" -u nobody -p "$sport" -l 127.0.0.1 -t 2 -m "$mb" -c 1024 -v \
				>"$work/$tag.log" 2>&1 &
		fi
		spid=$!
		live[$spid]=1
		if mcpy wait "$sport" "$spid" >"$work/$tag.version" 2>>"$work/$tag.log"; then
			return 0
		fi
		kill -KILL "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
		unset "live[$spid]"
	done
	fail "$tag: $kind would not start ($(tail -3 "$work/$tag.log"))"
	return 1
}

# stop_server TAG: the server must still be alive; SIGTERM, then SIGKILL after 10 s.
stop_server() {
	local tag=$1 rc=0
	if ! kill -0 "$spid" 2>/dev/null; then
		wait "$spid" || rc=$?
		fail "$tag: the server (pid $spid) died during the run, exit status $rc; log: $(tail -5 "$work/$tag.log")"
		unset "live[$spid]"
		return 0
	fi
	kill -TERM "$spid"
	for _ in $(seq 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$spid" 2>/dev/null; then
		echo "  NOTE: $tag: no exit 10 s after SIGTERM; killed"
		kill -KILL "$spid" 2>/dev/null || true
	fi
	wait "$spid" || rc=$?
	unset "live[$spid]"
	# memcached exits 0 on SIGTERM; so should uslab-memcached
	[ "$rc" = 0 ] || echo "  NOTE: $tag: exit status $rc after SIGTERM"
	# anything the server wrote (with -v: errors) is shown
	if [ -s "$work/$tag.log" ]; then
		echo "  server log ($tag.log):"
		head -5 "$work/$tag.log" | sed 's/^/    /'
	fi
}

names() { [ "$1" = uslab ] && echo uslab-memcached || echo memcached; }

# run_tput KIND ROUND MEAS EXTRA...: one memcaslap run on a fresh server
run_tput() {
	local kind=$1 r=$2 meas=$3; shift 3
	local tag="$meas.$kind.$r"
	echo "[$(date +%T)] round $r $meas $(names "$kind")"
	start_server "$kind" "$tput_mem" "$tag" || return 0
	local rc=0
	timeout $((seconds + 120)) memcaslap -s "127.0.0.1:$sport" -T 2 -c 32 -t "${seconds}s" \
		-S "${seconds}s" -F "$work/memaslap.cfg" "$@" >"$work/$tag.memaslap" 2>&1 || rc=$?
	[ "$rc" = 0 ] || fail "$tag: memcaslap exit status $rc: $(tail -3 "$work/$tag.memaslap")"
	if kill -0 "$spid" 2>/dev/null; then
		mcpy memaslap "$work/$tag.memaslap" "$sport" "$work/res/$tag" ||
			fail "$tag: memcaslap's output has no result"
	fi
	stop_server "$tag"
}

# run_rss KIND ROUND MEAS N VSIZE
run_rss() {
	local kind=$1 r=$2 meas=$3 n=$4 vsize=$5
	local tag="$meas.$kind.$r"
	echo "[$(date +%T)] round $r $meas $(names "$kind")"
	start_server "$kind" "$load_mem" "$tag" || return 0
	mcpy load "$sport" "$spid" "$n" "$vsize" "$work/res/$tag" || fail "$tag: the load had problems"
	if [ "$meas" = rss32 ] && [ "$r" = 1 ] && kill -0 "$spid" 2>/dev/null; then
		mcpy query "$sport" "stats slabs" >"$work/slabs.$kind"
	fi
	stop_server "$tag"
}

mkdir -p "$work/res"
echo "# bench-memcached.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r)"
echo "uslab-memcached: $uslab ($uslab_ver; copied to $work)"
echo "memcached:       $memcached_bin ($("$memcached_bin" -V))"
echo "memcaslap:       $(command -v memcaslap); -T 2 -c 32 -t ${seconds}s; servers -t 2, -m $tput_mem (throughput), -m $load_mem (memory)"
echo "rounds $rounds; memory: $items32 x (14 B key + 32 B value), $items1k x (14 B key + 1024 B value)"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "busiest other processes at the start:"
ps -eo pcpu,pid,comm --sort=-pcpu | awk 'NR > 1 && $3 != "ps"' | sed -n '1,4p' | sed 's/^/  /'

for r in $(seq "$rounds"); do
	for kind in uslab mc; do run_tput "$kind" "$r" tput1k; done
	for kind in uslab mc; do run_tput "$kind" "$r" tput32 -X 32; done
	for kind in uslab mc; do run_rss "$kind" "$r" rss32 "$items32" 32; done
	for kind in uslab mc; do run_rss "$kind" "$r" rss1k "$items1k" 1024; done
done

echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

mcpy table "$work/res" "$rounds"

echo
echo "## stats slabs after the 32-byte load (round 1, first lines)"
for kind in uslab mc; do
	echo
	echo "$(names "$kind"):"
	echo '```'
	if [ -f "$work/slabs.$kind" ]; then
		head -12 "$work/slabs.$kind" | tr -d '\r'
		if [ "$(wc -l <"$work/slabs.$kind")" -gt 13 ]; then
			echo "..."
			grep -E 'active_slabs|total_malloced' "$work/slabs.$kind" | tr -d '\r'
		fi
	else
		echo "(none)"
	fi
	echo '```'
done

if [ "$do_perf" = 1 ]; then
	echo
	echo "## perf: uslab-memcached during a 1 KiB memcaslap run (not measured above)"
	start_server uslab "$tput_mem" perf.uslab
	timeout 120 memcaslap -s "127.0.0.1:$sport" -T 2 -c 32 -t 16s -S 16s \
		-F "$work/memaslap.cfg" >"$work/perf.memaslap" 2>&1 &
	mpid=$!
	sleep 3
	perf record -q -e cpu-clock -g -p "$spid" -o "$work/perf.data" -- sleep 10 \
		>"$work/perf.record.log" 2>&1 || fail "perf record: $(tail -3 "$work/perf.record.log")"
	wait "$mpid" || fail "perf run: memcaslap failed"
	echo "memcaslap during it: $(grep -o 'TPS: [0-9]*' "$work/perf.memaslap" | tail -1)"
	stop_server perf.uslab
	echo
	echo "Top 15 symbols (perf report --stdio --no-children, cpu-clock, -g):"
	echo '```'
	perf report -i "$work/perf.data" --stdio --no-children -g none --sort dso,symbol \
		>"$work/perf.report" 2>"$work/perf.report.err" || fail "perf report: $(tail -3 "$work/perf.report.err")"
	grep -E '^ +[0-9.]+%' "$work/perf.report" | awk '{print $1, $2, $3, $4}' | column -t | sed -n '1,15p'
	echo '```'
	echo
	echo "By object (perf report --sort dso):"
	echo '```'
	perf report -i "$work/perf.data" --stdio --no-children -g none --sort dso \
		>"$work/perf.dso" 2>/dev/null || true
	grep -E '^ +[0-9.]+%' "$work/perf.dso" | awk '{print $1, $2}' | column -t | sed -n '1,8p'
	echo '```'
fi

if [ -s "$work/failures" ]; then
	echo
	echo "## Failures"
	cat "$work/failures"
fi
exit "$failed"
