#!/bin/sh
# SPDX-License-Identifier: MIT
# uslabtop --once, --json and --csv against a fixture process with known counts.
#
# Usage: uslabtop-once.sh USLABTOP USLAB-FIXTURE
#
# The fixture prints its caches as uslab_cache_stats() sees them; this test
# builds slabtop's text from those numbers on its own (the format rules are
# written out again below, from procps slabtop, not taken from uslabtop) and
# compares uslabtop's output byte for byte. --json and --csv must give the
# same numbers as the API. Exit 77 (skip) without python3.
set -eu

command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 missing"; exit 77; }

exec python3 - "$@" <<'PYEOF'
import csv, io, json, os, subprocess, sys, tempfile

top, fixture = sys.argv[1], sys.argv[2]
failures = 0

def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg)

# Known workload of uslab-fixture: name -> (object size, objects held).
KNOWN = {"fixture-conn": (64, 900), "fixture-item": (200, 500),
         "fixture-page": (4096, 30), "fixture-nomag": (24, 77),
         "fixture-idle": (128, 0)}

statsdir = tempfile.mkdtemp(prefix="uslabtop-once.")
env = dict(os.environ, USLAB_STATS_DIR=statsdir)
env.pop("USLAB_STATS", None)
fx = subprocess.Popen([fixture], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      env=env, text=True, bufsize=1)

def read_stats():
    """The fixture's cache lines up to READY, as dicts by name."""
    caches = []
    for line in fx.stdout:
        line = line.strip()
        if line == "READY":
            return caches
        if line.startswith("{"):
            caches.append(json.loads(line))
        elif line.startswith("pid "):
            globals()["pid"] = int(line.split()[1])
        elif line.startswith("mode "):
            globals()["mode"] = line[5:]
    raise SystemExit("fixture ended before READY")

def cmd(c):
    fx.stdin.write(c + "\n")
    fx.stdin.flush()
    if c == "stats":
        return read_stats()
    ans = fx.stdout.readline().strip()
    if ans != "ok":
        raise SystemExit("fixture: %s -> %s" % (c, ans))

def run(*args, rc=0):
    p = subprocess.run([top] + list(args), env=env, capture_output=True, text=True, timeout=30)
    if p.returncode != rc:
        fail("uslabtop %s: exit %d, want %d; stderr: %s" % (" ".join(args), p.returncode, rc, p.stderr))
    return p.stdout

# ---- slabtop's format, written out from procps slabtop 4.0.2 ----
def slabtop_text(caches, sort="o"):
    act = sum(c["active_objs"] for c in caches)
    tot = sum(c["total_objs"] for c in caches)
    aslabs = sum(c["active_slabs"] for c in caches)
    tslabs = sum(c["total_slabs"] for c in caches)
    acaches = sum(1 for c in caches if c["total_objs"])
    asize = sum(c["active_objs"] * c["slot_size"] for c in caches)
    tsize = sum(c["total_objs"] * c["slot_size"] for c in caches)
    sizes = [c["slot_size"] for c in caches]
    pct = lambda a, b: 100.0 * a / b if b else 0.0
    out = [" Active / Total Objects (%% used)    : %d / %d (%.1f%%)" % (act, tot, pct(act, tot)),
           " Active / Total Slabs (%% used)      : %d / %d (%.1f%%)" % (aslabs, tslabs, pct(aslabs, tslabs)),
           " Active / Total Caches (%% used)     : %d / %d (%.1f%%)" % (acaches, len(caches), pct(acaches, len(caches))),
           " Active / Total Size (%% used)       : %.2fK / %.2fK (%.1f%%)" % (asize / 1024, tsize / 1024, pct(asize, tsize)),
           " Minimum / Average / Maximum Object : %.2fK / %.2fK / %.2fK" % (
               min(sizes) / 1024, (tsize / tot if tot else 0) / 1024, max(sizes) / 1024),
           "",
           "  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME                   "]
    keys = {"a": lambda c: c["active_objs"], "b": lambda c: c["objs_per_slab"],
            "c": lambda c: c["bytes_total"], "l": lambda c: c["total_slabs"],
            "v": lambda c: c["active_slabs"], "o": lambda c: c["total_objs"],
            "p": lambda c: c["slab_size"], "s": lambda c: c["slot_size"],
            "u": lambda c: c["active_objs"] / c["total_objs"] if c["total_objs"] else 0}
    if sort == "n":
        rows = sorted(caches, key=lambda c: c["name"])
    else:
        rows = sorted(caches, key=lambda c: (-keys[sort](c), c["name"]))
    for c in rows:
        use = 100 * c["active_objs"] // c["total_objs"] if c["total_objs"] else 0
        out.append("%6d %6d %3d%% %7.2fK %6d %8d %9dK %-23s" % (
            c["total_objs"], c["active_objs"], use, c["slot_size"] / 1024, c["total_slabs"],
            c["objs_per_slab"], c["bytes_total"] // 1024, c["name"]))
    return "\n".join(out) + "\n"

def diff(what, got, want):
    if got != want:
        fail("%s differs:\n--- want\n%s--- got\n%s" % (what, want, got))

try:
    api = read_stats()
    names = {c["name"]: c for c in api}
    for name, (size, held) in KNOWN.items():
        c = names.get(name)
        if c is None or c["obj_size"] != size or c["active_objs"] != held:
            fail("fixture's own stats for %s: %s" % (name, c))

    # 1. The text, default sort and every sort key.
    for s in "oabclvnpsu":
        args = ["-o", "-p", str(pid)] + ([] if s == "o" else ["-s", s])
        diff("uslabtop " + " ".join(args), run(*args), slabtop_text(api, s))
    # Long options, and no -p when this is the only publishing process.
    diff("--once --sort=n", run("--once", "--sort=n", "--pid=%d" % pid), slabtop_text(api, "n"))
    diff("-o without -p", run("-o"), slabtop_text(api))

    # 2. JSON: the same numbers as the API, the mode, per-CPU counts.
    doc = json.loads(run("-o", "--json", "-p", str(pid)))
    procs = doc["processes"]
    if len(procs) != 1 or procs[0]["pid"] != pid or procs[0]["mode"] != mode:
        fail("json process: %s" % {k: v for k, v in procs[0].items() if k != "caches"})
    got = {c["name"]: c for c in procs[0]["caches"]}
    for name, want in names.items():
        c = got.get(name)
        if c is None:
            fail("json: no cache %s" % name)
            continue
        for k, v in want.items():
            if c.get(k) != v:
                fail("json %s.%s = %s, API says %s" % (name, k, c.get(k), v))
        if sum(c["cpu_objs"]) != c["pcpu_objs"]:
            fail("json %s: cpu_objs %s do not sum to pcpu_objs %d" % (name, c["cpu_objs"], c["pcpu_objs"]))
        if c["alloc_rate"] is not None:
            fail("json %s: a rate from one reading" % name)
    t = procs[0]["totals"]
    if t["active_objs"] != sum(h for _, h in KNOWN.values()) + sum(
            c["active_objs"] for c in api if c["name"] not in KNOWN):
        fail("json totals: %s" % t)

    # 3. CSV: same numbers, one line per cache.
    rows = list(csv.DictReader(io.StringIO(run("-o", "--csv", "-p", str(pid)))))
    if len(rows) != len(api):
        fail("csv: %d rows for %d caches" % (len(rows), len(api)))
    for r in rows:
        want = names.get(r["name"])
        for k, v in (want or {}).items():
            if k != "name" and int(r[k]) != v:
                fail("csv %s.%s = %s, API says %s" % (r["name"], k, r[k], v))

    # 4. Counts change live: 100 more conns, then two readings with -d give rates.
    cmd("alloc fixture-conn 100")
    api = cmd("stats")
    if {c["name"]: c for c in api}["fixture-conn"]["active_objs"] != 1000:
        fail("fixture did not reach 1000 conns")
    diff("after alloc", run("-o", "-p", str(pid)), slabtop_text(api))
    doc = json.loads(run("-o", "-d", "0.2", "--json", "-p", str(pid)))
    for c in doc["processes"][0]["caches"]:
        if c["alloc_rate"] != 0 or c["free_rate"] != 0:
            fail("idle fixture, rates of %s: %s %s" % (c["name"], c["alloc_rate"], c["free_rate"]))
    text = run("-o", "-d", "0.2", "-p", str(pid))
    if "ALLOC/s    FREE/s" not in text.splitlines()[6]:
        fail("-o -d: no rate columns in %r" % text.splitlines()[6])

    # 5. Options as slabtop's.
    h = run("-h")
    for word in ("-d, --delay <secs>", "-o, --once", "-s, --sort <char>", "-p, --pid",
                 "--json", "--csv", "u: sort by cache utilization", "OBJ/SLAB", "ALLOC/s",
                 "Keys while running", "detail view"):
        if word not in h:
            fail("-h lacks %r" % word)
    if not run("-V").startswith("uslabtop from uslab "):
        fail("-V")
    run("-s", "x", "-o", rc=1)
    run("-d", "0", "-o", rc=1)

    # 6. The process exits: its segment goes, uslabtop says so and fails.
    fx.stdin.close()
    fx.wait(timeout=10)
    p = subprocess.run([top, "-o", "-p", str(pid)], env=env, capture_output=True, text=True, timeout=30)
    if p.returncode != 1 or str(pid) not in p.stderr:
        fail("after exit: rc %d, stderr %r" % (p.returncode, p.stderr))
    if os.listdir(statsdir):
        fail("segment left behind: %s" % os.listdir(statsdir))
finally:
    if fx.poll() is None:
        fx.kill()
        fx.wait()
    for f in os.listdir(statsdir):
        os.unlink(os.path.join(statsdir, f))
    os.rmdir(statsdir)

print("uslabtop-once: %s" % ("%d failures" % failures if failures else "ok"))
sys.exit(1 if failures else 0)
PYEOF
