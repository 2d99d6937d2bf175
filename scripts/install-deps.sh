#!/usr/bin/env bash
# Install what uslab needs on Debian 12 (idempotent). Usage:
#   scripts/install-deps.sh [bench] [fuzz] [perf] [programs] [windows] [all]
#   core (always): compiler, meson, Check, liburcu, ncurses, sdt headers, valgrind, tmux,
#                  clang-format (14 on Debian 12, the version .clang-format is written for),
#                  memcached's clients and memcached itself (uslab-memcached's suite and
#                  benchmark: memccapable, memcaslap, pymemcache; 2.5 MB in all)
#   bench: jemalloc, tcmalloc, mimalloc (benchmark peers)
#   fuzz:  clang, its libFuzzer runtime and llvm-symbolizer
#   perf:  linux-perf (USDT probes, abort counting)
#   programs: what tests/programs.sh runs under the preloaded malloc: CPython's test
#          suite, stress-ng, sqlite3, redis (server, benchmark, cli)
#   windows: the mingw-w64 cross compiler and wine64, for the Windows build and its tests
#          (scripts/windows.sh; ~600 MB)
set -euo pipefail

pkgs=(build-essential meson ninja-build pkg-config check liburcu-dev libncurses-dev
      systemtap-sdt-dev valgrind tmux procps python3 git clang-format
      memcached libmemcached-tools python3-pymemcache)
for group in "$@"; do
	case "$group" in
	bench) pkgs+=(libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev) ;;
	fuzz) pkgs+=(clang libclang-rt-14-dev llvm) ;;
	perf) pkgs+=(linux-perf) ;;
	programs) pkgs+=(libpython3.11-testsuite python3.11 stress-ng sqlite3 libsqlite3-0 redis-server
	                 redis-tools) ;;
	windows) pkgs+=(mingw-w64 wine64) ;;
	all) pkgs+=(libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev clang libclang-rt-14-dev
	            llvm linux-perf libpython3.11-testsuite python3.11 stress-ng sqlite3 libsqlite3-0
	            redis-server redis-tools mingw-w64 wine64) ;;
	*) echo "install-deps: unknown group '$group' (bench, fuzz, perf, programs, windows, all)" >&2
	   exit 2 ;;
	esac
done

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: everything is installed"
	exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
