#!/usr/bin/env bash
# Cross-build uslab for Windows (x86_64-w64-mingw32) and run its suites
# under wine64: tests/windows/ (the pagesrc suite of Windows' own, and the
# slab and cache suites shared with Linux). Needs scripts/install-deps.sh
# windows. Usage: scripts/windows.sh [BUILDDIR]   (default: build-win)
# Extra arguments after BUILDDIR go to meson test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-win}
shift || true
for tool in x86_64-w64-mingw32-gcc-posix; do
	command -v "$tool" >/dev/null || {
		echo "windows.sh: $tool not found: run scripts/install-deps.sh windows" >&2
		exit 2
	}
done
command -v wine64 >/dev/null || [ -x /usr/lib/wine/wine64 ] || {
	echo "windows.sh: wine64 not found: run scripts/install-deps.sh windows" >&2
	exit 2
}
mkdir -p "$build"
printf "[binaries]\nexe_wrapper = '%s'\n" "$root/scripts/wine-run.sh" > "$build/wine.ini"
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$root" --cross-file "$root/scripts/cross-mingw-w64.ini" \
		--cross-file "$build/wine.ini" -Dtests=enabled -Dwerror=true
fi
meson compile -C "$build"
meson test -C "$build" --print-errorlogs "$@"
