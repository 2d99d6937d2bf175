#!/bin/sh
# Run a Windows program under wine64 (meson's exe_wrapper for the cross
# build, scripts/cross-mingw-w64.ini): a private Wine prefix (made at the
# first run, ~4 s) and no Wine debug chatter, so a test's output is its own.
# WINEPREFIX overrides the prefix.
set -u
wine=$(command -v wine64 2>/dev/null || true)
[ -n "$wine" ] || [ ! -x /usr/lib/wine/wine64 ] || wine=/usr/lib/wine/wine64
if [ -z "$wine" ]; then
	echo "wine-run: wine64 not found (scripts/install-deps.sh windows)" >&2
	exit 77
fi
: "${WINEPREFIX:=${TMPDIR:-/tmp}/uslab-wine-$(id -u)}"
export WINEPREFIX WINEDEBUG=-all
exec "$wine" "$@"
