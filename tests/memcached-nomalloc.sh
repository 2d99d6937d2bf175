#!/usr/bin/env bash
# uslab-memcached calls no malloc on the request path: with a counting
# shim preloaded (malloc-count.so), the count is armed after start-up and a
# warm-up, then memccapable (text and binary), memcaslap (text and binary,
# verified) and connection churn run, and the count must still be 0.
# Usage: memcached-nomalloc.sh SERVER SHIM
set -euo pipefail

server=$1 shim=$2
for t in memccapable memcaslap; do
	command -v "$t" > /dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2> /dev/null; rm -rf "$dir"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LD_PRELOAD=$shim MALLOC_COUNT_FILE=$dir/count "$server" -p "$port" -t 2 2> "$dir/log" &
pid=$!
for _ in $(seq 50); do
	timeout 2 memccapable -h 127.0.0.1 -p "$port" -T "ascii version" > /dev/null 2>&1 && break
	sleep 0.1
done

# Warm-up: every path once (thread registrations, first classes).
timeout 60 memccapable -h 127.0.0.1 -p "$port" > /dev/null
timeout 60 memcaslap -s "127.0.0.1:$port" -T 2 -c 8 -x 20000 > /dev/null
kill -USR2 "$pid"
sleep 0.2

timeout 60 memccapable -h 127.0.0.1 -p "$port" | tail -1
timeout 60 memcaslap -s "127.0.0.1:$port" -T 2 -c 16 -x 50000 -v 1.0 | grep verify_failed
timeout 60 memcaslap -s "127.0.0.1:$port" -T 2 -c 16 -x 20000 -B | tail -1
kill -USR2 "$pid"
for _ in $(seq 50); do
	[ -s "$dir/count" ] && break
	sleep 0.1
done
echo "after warm-up: $(cat "$dir/count")"
read -r _ m _ c _ r _ a < "$dir/count"
if [ "$m" != 0 ] || [ "$c" != 0 ] || [ "$r" != 0 ] || [ "$a" != 0 ]; then
	echo "FAIL: the request path called the malloc family"
	exit 1
fi
echo "PASS: no malloc on the request path"
