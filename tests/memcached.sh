#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# uslab-memcached as a memcached: libmemcached's memccapable (text and
# binary protocols) and memcaslap (16 clients, every get verified) against
# it, then tests/memcached-client.py (edge cases and hostile clients, with
# three more servers for -m 8, -m 8 -M and -c 8). At the end "stats uslab"
# must show no problem in any cache, exactly one connection (the one
# asking: none leaked) and as many item objects as curr_items (none
# leaked), and SIGTERM must stop the server with status 0 within 5 s.
#
# Usage: memcached.sh SERVER [USLABTOP] (then uslabtop must attach to it)
#   MC_TEST_DEBUG=1  run it all a second time (a shorter memcaslap) under
#                    USLAB_DEBUG=FZPU: double frees, red zones, poison, audit
#   MC_TEST_SLOW=1   sanitizer build: longer waits (passed on to the client test)
# Skips (77) when memccapable, memcaslap or python3 with pymemcache is missing.
set -euo pipefail

server=$1
uslabtop=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
slow=1
[ -n "${MC_TEST_SLOW:-}" ] && slow=3

for tool in memccapable memcaslap "$python" timeout; do
	command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not found"; exit 77; }
done
"$python" -c 'import pymemcache' 2>/dev/null || { echo "SKIP: no pymemcache for $python"; exit 77; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/uslab-memcached.XXXXXX")
pids=()
failures=0

cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null || true
	done
	rm -rf "$dir"
}
trap cleanup EXIT

# A server reaped by wait leaves the list: its pid may be another's then.
forget() {
	local p keep=()
	for p in "${pids[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	pids=("${keep[@]}")
}

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

free_port() {
	"$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True when the server on port $1 answers "version".
answers() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "version\r\n" >&3 &&
		IFS= read -r line <&3 && [[ $line == VERSION* ]]' _ "$1" 2>/dev/null
}

# start NAME ARGS...: a server on a free port, its output in $dir/NAME.log;
# sets port and pid. A port taken between the choice and the bind is
# chosen again, up to three times.
start() {
	local name=$1 try i
	shift
	for try in 1 2 3; do
		port=$(free_port)
		"$server" -l 127.0.0.1 -p "$port" -t 2 "$@" >"$dir/$name.log" 2>&1 &
		pid=$!
		pids+=("$pid")
		for ((i = 0; i < 100 * slow; i++)); do
			answers "$port" && return 0
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		forget "$pid"
		grep -q 'in use' "$dir/$name.log" || break
	done
	echo "FAIL: server $name ($*) did not answer version"
	cat "$dir/$name.log"
	exit 1
}

# step NAME SECONDS COMMAND...: run it bounded, its output in $dir/out.
step() {
	local name=$1 secs=$2
	shift 2
	local t0=$SECONDS rc=0
	timeout $((secs * slow)) "$@" >"$dir/out" 2>&1 || rc=$?
	echo "---- $name: exit $rc in $((SECONDS - t0)) s"
	return $rc
}

# read_stats FD COMMAND: the "STAT name value" lines up to END into st[].
declare -A st
read_stats() {
	local fd=$1 line name
	shift
	printf '%s\r\n' "$*" >&"$fd"
	st=()
	while IFS= read -r -t $((5 * slow)) line <&"$fd"; do
		line=${line%$'\r'}
		[ "$line" = END ] && return 0
		[[ $line == "STAT "* ]] || { echo "unexpected: $line"; return 1; }
		name=${line#STAT }
		st[${name%% *}]=${name#* }
	done
	return 1
}

# snapshot FD: "stats", "stats uslab", "stats" on one connection: curr1,
# the item objects (items), the problems, conn:active (conns), curr2.
snapshot() {
	local fd=$1 k
	read_stats "$fd" stats || return 1
	curr1=${st[curr_items]:-none}
	read_stats "$fd" stats uslab || return 1
	problems=0 conns=${st[conn:active]:-none} items=0
	for k in "${!st[@]}"; do
		case $k in
		*:problems) [ "${st[$k]}" = 0 ] || { problems=1; echo "  $k ${st[$k]}"; } ;;
		item-*:active) items=$((items + ${st[$k]})) ;;
		esac
	done
	read_stats "$fd" stats || return 1
	curr2=${st[curr_items]:-none} mode=${st[uslab_mode]:-?}
	[ "${st[curr_connections]:-none}" = 1 ] || conns="$conns (curr_connections ${st[curr_connections]:-none})"
}

# check_uslab PORT: no problem in any cache, one connection (the one
# asking), and as many item objects as curr_items: first as the clients
# left it (nothing changes: they must be equal), then after flush_all,
# while the crawler reclaims the flushed items under RCU (curr_items falls:
# the objects must lie between the two curr_items read around them). Frees
# wait for a grace period, so each is retried for up to 3 s.
check_uslab() {
	local fd line try when ok
	local curr1=none curr2=none items=none problems=0 conns=none mode=?
	exec {fd}<>"/dev/tcp/127.0.0.1/$1" || { fail "stats uslab: cannot connect"; return; }
	for when in "as the clients left it" "after flush_all"; do
		if [ "$when" = "after flush_all" ]; then
			printf 'flush_all\r\nget nothing\r\n' >&"$fd"
			IFS= read -r -t 5 line <&"$fd" && IFS= read -r -t 5 line <&"$fd" || true
		fi
		ok=0
		for ((try = 0; try < 30 * slow; try++)); do
			snapshot "$fd" || { fail "stats: no END"; break; }
			[ $problems = 0 ] || break
			[ "$conns" = 1 ] && [ "$curr2" -le "$items" ] && [ "$items" -le "$curr1" ] && { ok=1; break; }
			sleep 0.1
		done
		if [ $problems != 0 ]; then
			fail "stats uslab $when: a cache has problems (the validation is in the server log)"
		elif [ $ok = 1 ]; then
			echo "ok: stats uslab $when: no problems, conn:active 1, item objects $items, curr_items $curr1..$curr2 (mode $mode)"
		else
			fail "stats uslab $when, for 3 s: conn:active $conns (want 1), item objects $items, curr_items $curr1..$curr2"
		fi
	done
	exec {fd}>&-
}

# stop NAME PID: SIGTERM, status 0 within 5 s, nothing said by a sanitizer
# or by uslab's checks in its log.
stop() {
	local name=$1 p=$2 i rc=0
	kill -TERM "$p" 2>/dev/null || true
	for ((i = 0; i < 50 * slow; i++)); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$p" 2>/dev/null; then
		fail "$name: still running 5 s after SIGTERM"
		kill -9 "$p"
	fi
	wait "$p" || rc=$?
	forget "$p"
	[ $rc -eq 0 ] || fail "$name: exit status $rc after SIGTERM"
	if grep -E 'runtime error|Sanitizer|double free|red zone|use after free|not an object|bookkeeping|invariant' \
		"$dir/$name.log" >"$dir/bad"; then
		fail "$name: its log reports errors:"
		head -20 "$dir/bad"
	fi
	[ $rc -ne 0 ] || echo "ok: $name stopped by SIGTERM, exit 0"
}

# One pass: every client against a fresh set of servers. $1: a label,
# $2: memcaslap's count of operations.
# uslabtop attaches to the running server: its item and conn caches are listed.
check_uslabtop() {
	[ -n "$uslabtop" ] || return 0
	if timeout 10 "$uslabtop" -o -p "$1" > "$dir/top" 2>&1 &&
		grep -q ' item-[0-9]' "$dir/top" && grep -q ' conn ' "$dir/top"; then
		echo "ok: uslabtop -o -p $1 lists the item and conn caches"
	else
		fail "uslabtop -o -p $1"
		cat "$dir/top"
	fi
}

pass() {
	local label=$1 ops=$2 main main_pid ports=() extra=() t0=$SECONDS
	echo "==== $label"
	start main
	main=$port main_pid=$pid
	start evict -m 8
	ports+=("$port") extra+=("$pid")
	start noevict -m 8 -M
	ports+=("$port") extra+=("$pid")
	start conns -c 8
	ports+=("$port") extra+=("$pid")

	local proto
	for proto in a b; do
		if step "memccapable -$proto" 60 memccapable -h 127.0.0.1 -p "$main" -$proto &&
			grep -q 'All tests passed' "$dir/out"; then
			echo "ok: memccapable -$proto: all tests passed"
		else
			fail "memccapable -$proto"
			cat "$dir/out"
		fi
	done

	if step memcaslap 90 memcaslap -s "127.0.0.1:$main" -T 2 -c 16 -x "$ops" -v 1.0; then :; else
		fail "memcaslap exited with an error"
	fi
	local vf gm
	vf=$(sed -n 's/^verify_failed: *//p' "$dir/out" | tail -1)
	gm=$(sed -n 's/^get_misses: *//p' "$dir/out" | tail -1)
	if [ "$vf" = 0 ]; then
		echo "ok: memcaslap: $ops operations, verify_failed 0, get_misses ${gm:-?}"
	else
		fail "memcaslap: verify_failed '${vf:-missing}', get_misses ${gm:-?}"
		cat "$dir/out"
	fi

	if step memcached-client.py 90 "$python" "$here/memcached-client.py" "$main" "${ports[@]}"; then
		grep -v '^ok ' "$dir/out" || true
		echo "ok: memcached-client.py: $(grep -c '^ok ' "$dir/out") checks"
	else
		fail "memcached-client.py"
		cat "$dir/out"
	fi

	if kill -0 "$main_pid" 2>/dev/null; then
		check_uslab "$main"
		check_uslabtop "$main_pid"
	else
		fail "main: the server died under the clients (the end of its log below)"
	fi
	stop main "$main_pid"
	local i names=(evict noevict conns)
	for i in 0 1 2; do
		stop "${names[$i]}" "${extra[$i]}"
	done
	if [ $failures -ne 0 ]; then
		echo "---- server log (main), the end:"
		tail -20 "$dir/main.log"
	fi
	echo "==== $label: $((SECONDS - t0)) s"
}

pass "$server" 200000
if [ -n "${MC_TEST_DEBUG:-}" ]; then
	export USLAB_DEBUG=FZPU
	pass "again under USLAB_DEBUG=FZPU" 50000
fi
if [ $failures -ne 0 ]; then
	echo "memcached: $failures failed"
	exit 1
fi
echo "memcached: all passed"
