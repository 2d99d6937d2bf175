#!/bin/sh
# SPDX-License-Identifier: MIT
# uslabtop's screen driven in a private tmux server: sorting, live counts,
# rates, the detail view, help, the process list, a watched process that
# exits, quitting.
#
# Usage: uslabtop-tui.sh USLABTOP USLAB-FIXTURE
#
# Every wait polls the screen with a deadline; nothing sleeps blindly.
# Exit 77 (skip) without tmux or python3.
set -u

top=$1
fixture=$2
command -v tmux >/dev/null 2>&1 || { echo "SKIP: tmux missing"; exit 77; }
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 missing"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/uslabtop-tui.XXXXXX")
T="tmux -L uslabtop-tui-$$ -f /dev/null"
export USLAB_STATS_DIR="$tmp/stats"
unset USLAB_STATS
mkdir "$USLAB_STATS_DIR"
fx1=
fx2=

cleanup() {
	$T kill-server 2>/dev/null
	exec 3>&- 4>&-
	for p in $fx1 $fx2; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*"
	echo "---- screen ----"
	$T capture-pane -p -t t 2>/dev/null
	exit 1
}

# wait_until DESC CMD...: poll CMD every 0.1 s, up to 10 s.
wait_until() {
	desc=$1
	shift
	i=0
	until "$@"; do
		i=$((i + 1))
		[ $i -le 100 ] || fail "timed out waiting for $desc"
		sleep 0.1
	done
}

screen() { $T capture-pane -p -t t; }
screen_has() { screen | grep -q -- "$1"; }
screen_line_has() { screen | sed -n "$1p" | grep -q -- "$2"; }

# start_fixture N: fixture N reads commands from fifo fdN, prints to out.N.
start_fixture() {
	rm -f "$tmp/in.$1"
	mkfifo "$tmp/in.$1"
	# Only the test may hold a fifo's write end, or closing it is no EOF:
	# children (fixtures, the tmux server) get fds 3 and 4 closed.
	"$fixture" <"$tmp/in.$1" >"$tmp/out.$1" 2>&1 3>&- 4>&- &
	eval "fx$1=\$!"
	eval "exec $(($1 + 2))>\"\$tmp/in.$1\""
	wait_until "fixture $1 READY" grep -q '^READY' "$tmp/out.$1"
}

# ask N CMD: send a command to fixture N and wait for its answer.
ask() {
	before=$(grep -c '^ok' "$tmp/out.$1")
	echo "$2" >&$(($1 + 2))
	# (a function, so the count is read again at every poll)
	oks_above() { [ "$(grep -c '^ok' "$tmp/out.$1")" -gt "$2" ]; }
	wait_until "fixture $1: $2" oks_above "$1" "$before"
}

# row_field NAME COL: column COL (awk) of the table row for cache NAME.
row_field() { screen | awk -v n="$1" -v c="$2" '$8 == n { print $c; exit }'; }

start_fixture 1
pid1=$(sed -n 's/^pid //p' "$tmp/out.1")

# ---- Attach with -p and check the slabtop layout ----
$T new-session -d -s t -x 120 -y 30 \
	"TERM=xterm-256color USLAB_STATS_DIR='$USLAB_STATS_DIR' '$top' -d 0.3 -p $pid1" 3>&- 4>&- ||
	fail "tmux new-session"
wait_until "the table" screen_has "fixture-conn"
screen_line_has 1 '^ Active / Total Objects (% used)    : ' || fail "summary line 1"
screen_line_has 5 '^ Minimum / Average / Maximum Object : ' || fail "summary line 5"
screen_line_has 6 "pid $pid1" || fail "status line lacks the pid"
screen_line_has 6 "mode: " || fail "status line lacks the mode"
screen_line_has 7 '^  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME  *ALLOC/s    FREE/s  RCU WAIT$' ||
	fail "column header"
# Default sort (objects, as slabtop): the OBJS column never increases.
screen | sed -n '8,12p' | awk '{ if (NR > 1 && $1 > prev) bad = 1; prev = $1 } END { exit bad }' ||
	fail "default sort (objects): OBJS not in decreasing order"
[ "$(row_field fixture-conn 2)" = 900 ] || fail "conn ACTIVE is not 900"
$T capture-pane -p -e -t t | sed -n 7p | grep -q "$(printf '\033')\[7m" ||
	fail "header not in reverse video"

# ---- Sort keys while running ----
$T send-keys -t t s
wait_until "sort by object size" screen_line_has 6 'sort: obj size'
# The largest objects first (the library's largest magazine structures
# lead): fixture-page (4 KiB) above fixture-item, sizes never increasing.
obj_size_sorted() {
	screen | sed -n '8,21p' | awk '{ v = $4 + 0; if ($4 ~ /M$/) v *= 1024
		if (NR > 1 && v > prev) bad = 1; prev = v
		if ($8 == "fixture-page") page = NR; if ($8 == "fixture-item") item = NR }
		END { exit bad || !page || !item || page > item }'
}
wait_until "sort by object size" obj_size_sorted
$T send-keys -t t n
wait_until "sort by name" screen_line_has 9 'fixture-idle'
screen_line_has 8 'fixture-conn' || fail "sort by name: conn first"
$T send-keys -t t A
wait_until "sort by active (upper case key)" screen_line_has 6 'sort: active'
screen_line_has 8 'fixture-conn' || fail "sort by active: conn first"

# ---- Counts and rates change live ----
ask 1 "alloc fixture-item 2000"
field_is() { [ "$(row_field "$1" "$2")" = "$3" ]; }
wait_until "item ACTIVE 2500" field_is fixture-item 2 2500
screen_line_has 8 'fixture-item' || fail "re-sorted by active after the change"
# A burst of alloc/free pairs shows in ALLOC/s for one interval; keep
# bursting until a reading catches one.
conn_allocating() {
	r=$(row_field fixture-conn 9)
	[ "${r:-0}" -gt 0 ] 2>/dev/null && return 0
	echo "churn fixture-conn 100000" >&3
	return 1
}
wait_until "conn ALLOC/s > 0" conn_allocating

# ---- Detail view ----
# capture-pane -e emits attribute changes only: the header's reverse video
# ends where the next line starts with a reset. Without a selection that is
# line 8; a selection bar on line 8 carries it on to line 9.
esc=$(printf '\033')
reverse_ends_at() { $T capture-pane -p -e -t t | sed -n "$1p" | grep -q "^$esc\[0m"; }
reverse_ends_at 8 || fail "no plain table row after the header"
$T send-keys -t t Down
wait_until "a selection bar" reverse_ends_at 9
$T send-keys -t t Enter
wait_until "detail view" screen_has "Per-CPU magazines"
screen_line_has 1 '^ Cache fixture-item ' || fail "detail of the selected cache"
screen_has "Objects          : 2500 active" || fail "detail: objects"
screen_has "fast path" || fail "detail: fast path"
screen_has "Depot" || fail "detail: depot"
screen_has "   CPU   OBJS  FILL" || fail "detail: per-CPU table"
$T send-keys -t t Escape
wait_until "back to the table" screen_line_has 7 'OBJS ACTIVE'

# ---- Help ----
$T send-keys -t t '?'
wait_until "help" screen_has "uslabtop keys"
$T send-keys -t t x
wait_until "back from help" screen_line_has 7 'OBJS ACTIVE'

# ---- The watched process exits: a message, no crash, q still quits ----
exec 3>&-
wait "$fx1"
fx1=
wait_until "exit message" screen_line_has 6 "process $pid1 has exited"
# (The last reading may already show the caches destroyed: the fixture
# destroys them at EOF before it exits. What matters is the message, the
# header still drawn, and q below.)
screen_line_has 7 'OBJS ACTIVE' || fail "table header gone after the exit"
$T send-keys -t t o
sleep 0.5 # one more refresh period of 0.3 s must pass without a crash
$T has-session -t t 2>/dev/null || fail "uslabtop ended when the process exited"
screen_line_has 6 "has exited" || fail "message lost"
$T send-keys -t t q
wait_until "quit" sh -c "! $T has-session -t t 2>/dev/null"

# ---- Without -p: pick from the list, or all ----
start_fixture 1
start_fixture 2
pid1=$(sed -n 's/^pid //p' "$tmp/out.1")
pid2=$(sed -n 's/^pid //p' "$tmp/out.2")
$T new-session -d -s t -x 120 -y 40 \
	"TERM=xterm-256color USLAB_STATS_DIR='$USLAB_STATS_DIR' '$top' -d 0.3" 3>&- 4>&- ||
	fail "tmux new-session (list)"
wait_until "the process list" screen_has "all processes"
screen_has " $pid1 uslab-fixture" || fail "list lacks $pid1"
screen_has " $pid2 uslab-fixture" || fail "list lacks $pid2"
$T send-keys -t t a
wait_until "all processes view" screen_has "$pid2:fixture-conn"
screen_has "$pid1:fixture-conn" || fail "all view lacks $pid1"
ncaches=$(grep -c '^{' "$tmp/out.1")
screen_line_has 3 " / $((2 * ncaches)) (" || fail "the Caches line does not count both"
# One of them exits: it leaves the table, the other stays.
exec 4>&-
wait "$fx2"
fx2=
wait_until "pid2 gone" sh -c "! $T capture-pane -p -t t | grep -q '$pid2:fixture'"
screen_has "$pid1:fixture-conn" || screen_has "fixture-conn" || fail "pid1 left too"
# Pick pid1 from the list with w.
$T send-keys -t t w
wait_until "list again" screen_has "all processes"
$T send-keys -t t Enter
wait_until "watching pid1" screen_line_has 6 "pid $pid1"
$T send-keys -t t q
wait_until "quit" sh -c "! $T has-session -t t 2>/dev/null"

echo "uslabtop-tui: ok"
exit 0
