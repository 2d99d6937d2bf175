#!/usr/bin/env bash
# The README's main job: start uslab-memcached, drive it with memcaslap for a
# few seconds, and print its `stats slabs` beside `uslabtop -o`, taken from
# the same running server. Usage: scripts/demo-memcached.sh [BUILD_DIR] [SECONDS]
set -euo pipefail

build=${1:-build} secs=${2:-5}
server=$build/tools/memcached/uslab-memcached top=$build/tools/uslabtop
for f in "$server" "$top"; do
	[ -x "$f" ] || { echo "demo-memcached: $f is not built (meson compile -C $build)" >&2; exit 1; }
done
command -v memcaslap > /dev/null || { echo "demo-memcached: memcaslap missing (scripts/install-deps.sh)" >&2; exit 1; }
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2> /dev/null; rm -rf "$dir"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server" -p "$port" -t 2 -m 256 &
pid=$!
ask() { # a text command, its answer up to END
	python3 - "$port" "$1" << 'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode() + b"\r\n")
out = b""
end = b"END\r\n" if sys.argv[2].startswith("stats") else b"\r\n"
while not out.endswith(end):
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode().replace("\r", ""))
PY
}
for _ in $(seq 50); do timeout 2 bash -c "$(declare -f ask); port=$port; ask version" > /dev/null 2>&1 && break; sleep 0.1; done

echo "== uslab-memcached (pid $pid, port $port), driven by memcaslap for ${secs}s =="
memcaslap -s "127.0.0.1:$port" -T 2 -c 32 -t "${secs}s" | tail -n 1
ask "stats slabs" | awk -F'[ :]' '/^STAT [0-9]+:(chunk_size|used_chunks|total_pages)/ {
		v[$2, $3] = $4; ids[$2] = 1 }
	END { printf "%-6s %10s %10s %6s\n", "class", "chunk", "used", "pages";
		for (i in ids) printf "%-6s %10s %10s %6s\n", i, v[i, "chunk_size"], v[i, "used_chunks"], v[i, "total_pages"] }' \
	| sort -n -k1 > "$dir/slabs"
"$top" -o -p "$pid" | sed -n '1,5p;7,18p' > "$dir/top"
echo
echo "stats slabs (memcached's view)            | uslabtop -o -p $pid (uslab's view)"
awk 'NR == FNR { l[FNR] = $0; n = FNR; next }
	{ printf "%-42s| %s\n", l[FNR], $0 } END { }' "$dir/slabs" "$dir/top"
