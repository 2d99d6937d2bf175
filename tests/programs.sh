#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Programs nobody here wrote, under LD_PRELOAD=libuslab-malloc.so: each runs
# without the preload first (the baseline), then with it in the rseq mode
# and in the locked mode (USLAB_RSEQ=0), and must pass exactly as the
# baseline does: the same exit status, and the same output where the
# program's output is deterministic. One of them (sqlite3) runs once more
# under valgrind's memcheck, with uslab's malloc and not memcheck's own.
#
#   python   CPython's own regression tests (Debian's libpython3.11-testsuite)
#            with PYTHONMALLOC=malloc, so every object goes through malloc
#   stress   stress-ng --malloc with --verify
#   sqlite   an in-memory sqlite3 workload (its output compared)
#   git      init, add, commit, gc, log and fsck on a generated repository
#            (fixed dates and names: the commit ids are compared)
#   redis    redis-server driven by redis-benchmark -r, then a scripted
#            session whose replies are compared
#
# Usage: programs.sh LIBUSLAB-MALLOC [PROGRAM...]   (default: all five)
# Skips (77) when a program is missing (scripts/install-deps.sh programs).
set -u
lib=$(realpath "$1") || exit 99
shift
progs=("$@")
[ ${#progs[@]} -gt 0 ] || progs=(python stress sqlite git redis)

python=/usr/bin/python3.11
need=(sqlite3 git stress-ng redis-server redis-benchmark redis-cli)
for p in "${need[@]}"; do
	command -v "$p" >/dev/null 2>&1 || { echo "SKIP: $p missing (install-deps.sh programs)"; exit 77; }
done
[ -x "$python" ] && [ -d /usr/lib/python3.11/test ] ||
	{ echo "SKIP: libpython3.11-testsuite missing"; exit 77; }

# The preload must take: a program that runs without it proves nothing.
LD_PRELOAD="$lib" sh -c 'grep -q libuslab-malloc /proc/$$/maps' 2>/dev/null ||
	{ echo "FAIL: $lib does not preload"; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/uslab-programs.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
export USLAB_STATS_DIR="$dir"
status=0

# Run "$@" in mode $1 (base, rseq, locked, valgrind): the preload and the
# mode in its environment only.
in_mode() {
	local mode=$1
	shift
	case $mode in
	base) "$@" ;;
	rseq) LD_PRELOAD="$lib" "$@" ;;
	locked) LD_PRELOAD="$lib" USLAB_RSEQ=0 "$@" ;;
	valgrind) LD_PRELOAD="$lib" valgrind -q --error-exitcode=99 --trace-children=yes \
		--soname-synonyms=somalloc=NONE "$@" ;;
	esac
}

# ---- the programs: each writes what must match to stdout ----

# About two minutes on two cores; test_pass_fds_redirected is left out: it checks
# that a child holds exactly the descriptors it passed, and a preloaded
# child holds one more, the stats segment's memfd (README, "malloc").
py_tests=(test_dict test_list test_set test_tuple test_unicode test_bytes test_re test_json
	test_threading test_subprocess test_fork1 test_mmap test_collections test_itertools
	test_functools test_long test_float test_pickle test_marshal test_zlib test_os test_sort
	test_struct test_array test_deque test_heapq test_codecs test_weakref test_gc test_csv
	test_ast test_statistics test_random test_hashlib test_argparse test_enum test_xml_etree
	test_email test_decimal test_zipfile test_typing test_dataclasses test_traceback)
run_python() {
	PYTHONMALLOC=malloc in_mode "$1" timeout 900 "$python" -m test -j2 \
		-i test_pass_fds_redirected "${py_tests[@]}" >"$dir/python.$1.log" 2>&1
	local rc=$?
	grep -E '^(Tests result|== Tests result)' "$dir/python.$1.log" | tail -1
	return $rc
}

run_stress() {
	in_mode "$1" timeout 120 stress-ng --malloc 2 --verify --malloc-bytes 4M --timeout 20s \
		>"$dir/stress.$1.log" 2>&1
}

sqlite_sql="
create table item(id integer primary key, k text, v blob, n integer);
with recursive c(x) as (select 1 union all select x + 1 from c where x < 60000)
insert into item(k, v, n) select printf('key-%08d', (x * 7919) % 60000), zeroblob(x % 700),
  (x * 2654435761) % 1000003 from c;
create index item_k on item(k);
create table pair as select a.n % 97 as g, count(*) as c, sum(length(a.v)) as l
  from item a join item b on a.id = b.id + 1 group by g;
delete from item where n % 5 = 0;
update item set v = zeroblob(length(v) * 2) where id % 11 = 0;
vacuum;
select count(*), sum(length(v)), sum(n), group_concat(k, '') like '%key-00000099%' from item;
select g, c, l from pair order by g limit 5;
select k from item order by n desc limit 3;
"
run_sqlite() {
	printf '%s' "$sqlite_sql" | in_mode "$1" timeout 600 sqlite3 :memory:
}

run_git() {
	local repo="$dir/repo.$1"
	mkdir -p "$repo" && cd "$repo" || return 1
	export GIT_AUTHOR_NAME=uslab GIT_AUTHOR_EMAIL=uslab@example.org GIT_COMMITTER_NAME=uslab
	export GIT_COMMITTER_EMAIL=uslab@example.org GIT_CONFIG_NOSYSTEM=1 HOME="$dir"
	export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
	(
		set -e
		in_mode "$1" git init -q -b main .
		for d in $(seq 1 20); do
			mkdir -p "d$d"
			for f in $(seq 1 50); do
				seq "$d" "$f" 3000 >"d$d/f$f.txt"
			done
		done
		in_mode "$1" git add -A
		in_mode "$1" git commit -qm first
		for d in $(seq 1 20 | sed -n '1~3p'); do
			sed -i '1~7s/$/ changed/' "d$d"/f*.txt
		done
		in_mode "$1" git commit -qam second
		in_mode "$1" git gc -q --aggressive
		in_mode "$1" git log --format='%H %s' --stat | tail -5
		in_mode "$1" git fsck --full --strict 2>&1
		in_mode "$1" git rev-list --objects --all | wc -l
	)
	local rc=$?
	cd "$dir" || return 1
	return $rc
}

redis_script="
SET greeting hello
APPEND greeting ,world
GET greeting
RPUSH list a b c d e f g
LRANGE list 1 4
SADD set x y z x
SCARD set
HSET h f1 v1 f2 v2
HGETALL h
INCRBY counter 41
INCR counter
ZADD z 1 one 2 two 3 three
ZRANGE z 0 -1 WITHSCORES
STRLEN greeting
DEL list
EXISTS list
"
run_redis() {
	# A port nobody listens on (a random one once met another server's).
	local port
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	in_mode "$1" redis-server --port "$port" --save '' --appendonly no --daemonize no \
		--dir "$dir" >"$dir/redis.$1.log" 2>&1 &
	local pid=$! i
	for i in $(seq 1 100); do
		redis-cli -p "$port" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	local rc=0
	kill -0 "$pid" 2>/dev/null || { cat "$dir/redis.$1.log"; return 1; } # ours, not another
	timeout 300 redis-benchmark -p "$port" -r 100000 -n 200000 -P 16 -q \
		-t set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset \
		>"$dir/redis-bench.$1.log" 2>&1 || rc=1
	redis-cli -p "$port" flushall >/dev/null || rc=1
	printf '%s' "$redis_script" | redis-cli -p "$port" || rc=1
	redis-cli -p "$port" ping || rc=1
	redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
	wait "$pid" || rc=1
	return $rc
}

# ---- the comparison ----

for prog in "${progs[@]}"; do
	modes=(base rseq locked)
	[ "$prog" = sqlite ] && command -v valgrind >/dev/null 2>&1 && modes+=(valgrind)
	for mode in "${modes[@]}"; do
		start=$(date +%s)
		"run_$prog" "$mode" >"$dir/$prog.$mode.out" 2>&1
		rc=$?
		secs=$(($(date +%s) - start))
		if [ "$mode" = base ]; then
			base_rc=$rc
			if [ $rc -ne 0 ]; then
				echo "FAIL: $prog fails without the preload (status $rc): not a valid baseline"
				tail -20 "$dir/$prog.base.out"
				status=1
				break
			fi
			echo "ok: $prog baseline (${secs}s)"
		elif [ $rc -ne "$base_rc" ] || ! cmp -s "$dir/$prog.base.out" "$dir/$prog.$mode.out"; then
			echo "FAIL: $prog under the preload, $mode mode (status $rc, ${secs}s)"
			diff "$dir/$prog.base.out" "$dir/$prog.$mode.out" | head -20
			tail -30 "$dir/$prog.$mode.log" 2>/dev/null
			status=1
		else
			echo "ok: $prog, $mode mode (${secs}s)"
		fi
	done
done
exit $status
