#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Edge cases of uslab-memcached, through pymemcache and raw sockets.

Usage: memcached-client.py PORT [PORT2 PORT3 PORT4]
  PORT   a server with the defaults (-I 1m)
  PORT2  one started with -m 8         (eviction)
  PORT3  one started with -m 8 -M      (out of memory instead of evicting)
  PORT4  one started with -c 8         (too many connections; flush_all)
Without PORT2..4 the groups that need them are left out.

What it proves, group by group: expiry (exptime, touch, gat), CAS under a
race, delayed and noreply flush_all, incr/decr at their limits, append and
prepend, values near -I, keys of 250 and 251 bytes, eviction under -m and
its refusal under -M, the connection limit, and that hostile clients (an
oversized value, an endless line, binary and text garbage, a half request,
a slowloris, a client gone mid-value) never keep the server from serving
everyone else promptly. One line per check; the exit status is 1 if any
failed. MC_TEST_SLOW=1 (sanitizer builds) triples the time limits.

Where memcached 1.6's answer is the model, the check says so
("memcached: END").
"""

import os
import random
import select
import socket
import sys
import threading
import time
import traceback

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

HOST = "127.0.0.1"
SCALE = 3.0 if os.environ.get("MC_TEST_SLOW") else 1.0
SERVED_WITHIN = 1.0 * SCALE  # a round trip of another client, under attack
ITEM_MAX = 1 << 20  # the server's -I

_lock = threading.Lock()
_failed = []


def say(line):
    with _lock:
        print(line, flush=True)


def check(name, ok, detail=""):
    """One check: an 'ok' or 'FAIL' line; failures make the exit status."""
    if ok:
        say("ok    " + name)
    else:
        say("FAIL  " + name + (": " + detail if detail else ""))
        with _lock:
            _failed.append(name)
    return ok


def client(port, timeout=5.0):
    # default_noreply=False: every store waits for its answer
    return Client((HOST, port), default_noreply=False, connect_timeout=2 * SCALE,
                  timeout=timeout * SCALE)


class Raw:
    """A raw text-protocol connection, for what pymemcache cannot say."""

    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection((HOST, port), timeout=2 * SCALE)
        self.s.settimeout(timeout * SCALE)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def readline(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed by the server; had %r" % self.buf[:100])
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_exact(self, n):
        while len(self.buf) < n:
            d = self.s.recv(1 << 20)
            if not d:
                raise EOFError("closed by the server after %d of %d bytes" % (len(self.buf), n))
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def drain(self, wait):
        """What arrives within @wait seconds, and whether the server closed."""
        out, closed = self.buf, False
        self.buf = b""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                break
            try:
                d = self.s.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if not d:
                closed = True
                break
            out += d
        return out, closed

    def close(self):
        self.s.close()


def stats(port):
    c = client(port)
    try:
        return {k.decode(): v for k, v in c.stats().items()}
    finally:
        c.close()


def served(port, what):
    """Another client, on a new connection: a set and a get, within SERVED_WITHIN."""
    key = "served:%d" % random.getrandbits(32)
    t = time.monotonic()
    try:
        c = client(port, timeout=SERVED_WITHIN + 1)
        ok = c.set(key, b"v") is True and c.get(key) == b"v"
        c.close()
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        ok, dt = False, time.monotonic() - t
        return check("served after %s" % what, False, "%r after %.2f s" % (e, dt))
    dt = time.monotonic() - t
    return check("served after %s (%.3f s)" % (what, dt), ok and dt < SERVED_WITHIN,
                 "set/get %s in %.2f s" % ("worked" if ok else "failed", dt))


# ---- Expiry: exptime, touch, gat ----

def group_expiry(port):
    c = client(port)
    c.set("exp:1", b"one", expire=1)
    c.set("exp:2", b"two", expire=2)
    c.set("exp:never", b"n")
    c.set("exp:neg", b"x", expire=-1)
    check("exptime -1: gone at once", c.get("exp:neg") is None)
    check("exptime 2: there at once", c.get("exp:2") == b"two")
    c.set("exp:touch", b"t", expire=2)
    check("touch: TOUCHED", c.touch("exp:touch", 30) is True)
    check("touch of a missing key: NOT_FOUND", c.touch("exp:nokey", 30) is False)
    c.set("exp:gat", b"g", expire=2)
    c.set("exp:gatneg", b"h")
    r = Raw(port)
    r.send(b"gat 30 exp:gat\r\n")
    got = r.readline() + r.readline() + r.readline()
    check("gat: the value, its exptime now 30 s", got == b"VALUE exp:gat 0 1\r\ng\r\nEND\r\n", repr(got))
    r.send(b"gats 30 exp:gat\r\n")
    line = r.readline()
    r.readline(), r.readline()
    check("gats: the value with its cas", line.startswith(b"VALUE exp:gat 0 1 ") and
          line.split()[4].isdigit(), repr(line))
    r.send(b"gat -1 exp:gatneg\r\n")
    got = r.readline() + r.readline() + r.readline()
    check("gat -1: the value once", got == b"VALUE exp:gatneg 0 1\r\nh\r\nEND\r\n", repr(got))
    check("gat -1: then gone", c.get("exp:gatneg") is None)
    r.send(b"gat 30 exp:nokey\r\n")
    check("gat of a missing key: END", r.readline() == b"END\r\n")
    r.close()
    # The clock has one-second steps: 2.6 s is past any exptime of 1 or 2.
    time.sleep(2.6)
    check("exptime 1: gone after 2.6 s", c.get("exp:1") is None)
    check("exptime 2: gone after 2.6 s", c.get("exp:2") is None)
    check("exptime 0: still there", c.get("exp:never") == b"n")
    check("touched to 30 s: still there", c.get("exp:touch") == b"t")
    check("gat to 30 s: still there", c.get("exp:gat") == b"g")
    c.close()


# ---- CAS ----

def group_cas(port):
    c1, c2 = client(port), client(port)
    c1.set("cas:k", b"v0")
    v, u = c1.gets("cas:k")
    _, u2 = c2.gets("cas:k")
    check("gets: one unique for both clients", v == b"v0" and u == u2 and u is not None, "%r %r" % (u, u2))
    check("cas with the unique: STORED", c1.cas("cas:k", b"v1", u) is True)
    check("second cas with the same unique: EXISTS", c2.cas("cas:k", b"v2", u) is False)
    v3, u3 = c1.gets("cas:k")
    check("the first cas's value won, with a new unique", v3 == b"v1" and u3 != u, "%r %r" % (v3, u3))
    check("cas on a missing key: NOT_FOUND", c1.cas("cas:missing", b"x", 12345) is None)
    c1.delete("cas:k")
    check("cas after a delete: NOT_FOUND", c1.cas("cas:k", b"x", u3) is None)

    # A race: 4 clients add 1 to one counter by gets/cas, 25 times each.
    c1.set("cas:ctr", b"0")
    wins, errors = [0] * 4, []

    def bump(i):
        try:
            c = client(port)
            while wins[i] < 25:
                val, unique = c.gets("cas:ctr")
                if c.cas("cas:ctr", b"%d" % (int(val) + 1), unique):
                    wins[i] += 1
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30 * SCALE)
    final = c1.get("cas:ctr")
    check("4 clients racing on gets/cas: no lost update", not errors and final == b"100",
          "final %r, wins %r, errors %r" % (final, wins, errors[:2]))
    c1.close()
    c2.close()


# ---- incr/decr ----

def group_incr(port):
    c = client(port)
    c.set("n:max", b"18446744073709551615")
    check("incr 2^64-1 by 1 wraps to 0", c.incr("n:max", 1) == 0)
    c.set("n:near", b"18446744073709551610")
    check("incr 2^64-6 by 10 wraps to 4", c.incr("n:near", 10) == 4)
    c.set("n:one", b"1")
    check("incr by 2^64-1 wraps to 0", c.incr("n:one", 18446744073709551615) == 0)
    c.set("n:five", b"5")
    check("decr 5 by 10 floors at 0", c.decr("n:five", 10) == 0)
    check("decr 0 by 1 stays 0", c.decr("n:five", 1) == 0)
    c.set("n:100", b"100")
    check("decr 100 by 1: 99", c.decr("n:100", 1) == 99)
    # memcached pads a shrunk number with spaces ("99 "); either is fine
    check("get after decr: 99", (c.get("n:100") or b"").strip() == b"99")
    check("incr of a missing key: NOT_FOUND", c.incr("n:missing", 1) is None)
    c.set("n:abc", b"abc")
    try:
        c.incr("n:abc", 1)
        check("incr of a non-number: CLIENT_ERROR", False, "answered a number")
    except MemcacheClientError as e:
        check("incr of a non-number: CLIENT_ERROR", b"non-numeric" in e.args[0], repr(e))
    r = Raw(port)
    for bad in (b"abc", b"-1", b"18446744073709551616"):
        r.send(b"incr n:100 " + bad + b"\r\n")
        line = r.readline()
        check("incr by %s: invalid delta" % bad.decode(),
              line == b"CLIENT_ERROR invalid numeric delta argument\r\n", repr(line))
    r.close()
    c.close()


# ---- append/prepend ----

def group_append(port):
    c = client(port)
    r = Raw(port)
    r.send(b"set ap:k 5 0 1\r\nb\r\n")
    check("set with flags 5", r.readline() == b"STORED\r\n")
    check("append: STORED", c.append("ap:k", b"c") is True)
    check("prepend: STORED", c.prepend("ap:k", b"a") is True)
    r.send(b"gets ap:k\r\n")
    line, val, end = r.readline(), r.readline(), r.readline()
    check("append/prepend: abc, the flags kept", line.startswith(b"VALUE ap:k 5 3 ") and
          val == b"abc\r\n" and end == b"END\r\n", repr(line + val))
    check("append to a missing key: NOT_STORED", c.append("ap:missing", b"x") is False)
    check("prepend to a missing key: NOT_STORED", c.prepend("ap:missing", b"x") is False)
    check("append did not create the key", c.get("ap:missing") is None)
    # Past -I by appending: refused (memcached: NOT_STORED), the value kept.
    half = b"h" * (600 << 10)
    c.set("ap:big", half)
    try:
        res = c.append("ap:big", half)
    except MemcacheServerError as e:
        res = e
    check("append past -I: refused", res is not True, repr(res)[:80])
    check("append past -I: the old value kept", c.get("ap:big") == half)
    r.close()
    c.close()


# ---- Values near -I, key lengths ----

def group_sizes(port):
    c = client(port, timeout=10)
    big = random.Random(1).randbytes(ITEM_MAX - 512)
    check("a value of 1 MB - 512 bytes: STORED", c.set("big:v", big) is True)
    check("a value of 1 MB - 512 bytes: read back intact", c.get("big:v") == big)
    try:
        res = c.set("big:over", b"o" * (ITEM_MAX + 1))
    except MemcacheServerError as e:
        res = e.args[0]
    check("a value of 1 MB + 1: object too large", res == b"object too large for cache", repr(res)[:80])
    k250 = "k" * 250
    check("a key of 250 bytes: STORED", c.set(k250, b"250") is True)
    check("a key of 250 bytes: read back", c.get(k250) == b"250")
    r = Raw(port)
    k251 = b"k" * 251
    r.send(b"set " + k251 + b" 0 0 1\r\na\r\n")
    line = r.readline()
    check("set with a key of 251 bytes: CLIENT_ERROR", line.startswith(b"CLIENT_ERROR"), repr(line))
    r.readline()  # the data line, then taken as a command: ERROR (memcached too)
    r.send(b"get " + k251 + b"\r\n")
    line = r.readline()
    check("get with a key of 251 bytes: CLIENT_ERROR", line.startswith(b"CLIENT_ERROR"), repr(line))
    r.send(b"version\r\n")
    check("the connection still works after them", r.readline().startswith(b"VERSION"))
    r.close()
    c.close()


# ---- The memory limit ----

def group_evict(port):
    """-m 8: 10,000 values of 4 KiB (40 MB) are stored by evicting the old."""
    c = client(port, timeout=10)

    def val(i):
        return b"%08d" % i * 512  # 4 KiB, its own number

    failed = []
    for b in range(0, 10000, 100):
        failed += c.set_many({"ev:%05d" % i: val(i) for i in range(b, b + 100)})
    check("-m 8: 40 MB of sets all STORED", not failed, "%d failed" % len(failed))
    st = stats(port)
    check("-m 8: evictions > 0 (%d)" % st["evictions"], st["evictions"] > 0)
    # ("bytes" where there is no uslab_item_bytes: memcached itself, as a control)
    used = st.get("uslab_item_bytes", st["bytes"])
    check("-m 8: uslab_item_bytes %d <= limit_maxbytes %d" % (used, st["limit_maxbytes"]),
          used <= st["limit_maxbytes"] == 8 << 20)
    got = {}
    for b in range(0, 10000, 500):  # get lines of at most 500 keys (see below)
        got.update(c.get_many(["ev:%05d" % i for i in range(b, b + 500)]))
    early = sum(1 for i in range(1000) if "ev:%05d" % i in got)
    late = sum(1 for i in range(9500, 10000) if "ev:%05d" % i in got)
    check("-m 8: the first 1000 keys mostly gone (%d left)" % early, early <= 100)
    # Known bug: -m counts uslab's slack (held - objects) as of the last
    # 200 ms update, so each update evicts the slack again: the survivors
    # are sometimes far fewer than the last 2000 (see the sustained writes).
    check("-m 8: the last 500 keys mostly there (%d)" % late, late >= 450, "over-eviction")
    bad = [k for k, v in got.items() if v != val(int(k[3:]))]
    check("-m 8: every value left is intact (%d)" % len(got), not bad, "%d differ" % len(bad))
    check("-m 8: curr_items matches what get finds", st["curr_items"] == len(got),
          "curr_items %d, found %d" % (st["curr_items"], len(got)))
    # A full cache under writes stays full: 1.5 s more of new 4 KiB values,
    # curr_items read after every 100 (memcached 1.6 holds 1840 steadily).
    cap = st["limit_maxbytes"] // (4096 + 48)
    low, n, t0 = None, 10000, time.monotonic()
    while time.monotonic() - t0 < 1.5:
        c.set_many({"ev:%05d" % i: val(i) for i in range(n, n + 100)})
        n += 100
        cur = c.stats()[b"curr_items"]
        low = cur if low is None else min(low, cur)
    check("-m 8: full under %d more sets: curr_items never below half of ~%d (lowest %d)" % (n - 10000, cap, low),
          low >= cap // 2, "over-eviction")
    c.close()


def group_noevict(port):
    """-m 8 -M: past the limit a set fails, nothing is evicted."""
    r = Raw(port)
    v = b"m" * 4096
    stored, line = 0, b""
    for i in range(10000):
        r.send(b"set nm:%05d 0 0 4096\r\n%s\r\n" % (i, v))
        line = r.readline()
        if line != b"STORED\r\n":
            break
        stored += 1
    check("-M: a set past the limit: SERVER_ERROR out of memory storing object (after %d)" % stored,
          line == b"SERVER_ERROR out of memory storing object\r\n" and 1000 < stored < 2100, repr(line))
    st = stats(port)
    check("-M: evictions 0", st["evictions"] == 0, str(st["evictions"]))
    used = st.get("uslab_item_bytes", st["bytes"])
    check("-M: uslab_item_bytes %d <= limit_maxbytes" % used, used <= st["limit_maxbytes"])
    r.send(b"get nm:00000\r\n")
    ok = r.readline() == b"VALUE nm:00000 0 4096\r\n" and r.read_exact(4098) == v + b"\r\n" and \
        r.readline() == b"END\r\n"
    check("-M: the first key still there", ok)
    # Known bug: the room deletes make is taken back as slack (held -
    # objects) at the next 200 ms update, so it must be waited for.
    deleted = 0
    for i in range(20):
        r.send(b"delete nm:%05d\r\n" % i)
        deleted += r.readline() == b"DELETED\r\n"
    check("-M: 20 deletes: DELETED", deleted == 20, "%d deleted" % deleted)
    time.sleep(0.5)
    before = stats(port)
    r.send(b"set nm:again 0 0 4096\r\n%s\r\n" % v)
    line = r.readline()
    check("-M: 0.5 s after 20 deletes a set fits again", line == b"STORED\r\n",
          "%r (uslab_item_bytes %d -> %d, uslab_item_held %d)" %
          (line, used, before.get("uslab_item_bytes", 0), before.get("uslab_item_held", 0)))
    r.close()


# ---- Connections (-c 8) and flush_all ----

def group_conns(port):
    # Start from a server whose only connection is the one asking.
    deadline = time.monotonic() + 3 * SCALE
    while stats(port)["curr_connections"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    socks = [socket.create_connection((HOST, port), timeout=2 * SCALE) for _ in range(20)]
    # Refused ones get the message and EOF; accepted ones hear nothing.
    refused, pending = set(), {s: b"" for s in socks}
    deadline = time.monotonic() + 1.0 * SCALE
    while pending and time.monotonic() < deadline:
        r, _, _ = select.select(list(pending), [], [], 0.1)
        for s in r:
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                d = b""
            pending[s] += d
            if not d:
                if pending[s] != b"SERVER_ERROR Too many open connections\r\n":
                    check("-c 8: a refused connection is told why", False, repr(pending[s]))
                refused.add(s)
                del pending[s]
    accepted = [s for s in socks if s not in refused]
    check("-c 8: 20 connections, 12 refused with 'SERVER_ERROR Too many open connections'",
          len(refused) == 12, "%d refused" % len(refused))
    ok = 0
    for s in accepted:
        s.sendall(b"version\r\n")
        s.settimeout(SERVED_WITHIN)
        try:
            ok += s.recv(100).startswith(b"VERSION")
        except OSError:
            pass
    check("-c 8: the 8 accepted are served", ok == len(accepted) == 8, "%d of %d" % (ok, len(accepted)))
    for s in socks:
        s.close()
    # The server sees the closes a moment later: retry briefly.
    deadline, ok = time.monotonic() + 2 * SCALE, False
    while not ok and time.monotonic() < deadline:
        try:
            c = client(port, timeout=1)
            ok = c.set("conn:k", b"v") is True and c.get("conn:k") == b"v"
            c.close()
        except Exception:  # noqa: BLE001 - refused while the closes are seen
            time.sleep(0.05)
    check("-c 8: after closing them a new connection is served", ok)
    st = stats(port)
    check("-c 8: rejected_connections counts them (%d)" % st["rejected_connections"],
          st["rejected_connections"] >= 12)


def group_flush(port):
    c = client(port)
    c.set("fl:a", b"1")
    check("flush_all 2: OK", c.flush_all(delay=2) is True)
    check("flush_all 2: the item still there at once", c.get("fl:a") == b"1")
    c.set("fl:b", b"2")  # stored before the flush takes effect: goes too
    time.sleep(3.0)
    check("flush_all 2: gone after 3 s", c.get("fl:a") is None)
    check("flush_all 2: an item stored in the delay gone too", c.get("fl:b") is None)
    c.set("fl:c", b"3")
    check("after the flush: a new item stays", c.get("fl:c") == b"3")
    r = Raw(port)
    r.send(b"set fl:d 0 0 1\r\nd\r\nflush_all noreply\r\nget fl:d\r\n")
    got = r.readline() + r.readline()
    check("flush_all noreply: no answer, and it flushed", got == b"STORED\r\nEND\r\n", repr(got))
    r.send(b"flush_all 0\r\n")
    check("flush_all 0: OK", r.readline() == b"OK\r\n")
    r.close()
    c.close()


# ---- Hostile clients: each followed by another client served at once ----

def hostile_oversized(port):
    c = client(port)
    c.set("big:o", b"old")
    r = Raw(port)
    r.send(b"set big:o 0 0 2000000\r\n")
    line = r.readline()  # answered before the payload is sent
    check("set of 2,000,000 bytes: 'SERVER_ERROR object too large for cache' at once",
          line == b"SERVER_ERROR object too large for cache\r\n", repr(line))
    # The payload is made of commands: if any were run, more than one
    # VERSION would come back.
    payload = (b"version\r\n" * 222223)[:2000000] + b"\r\n"
    r.send(payload + b"version\r\n")
    got, closed = r.drain(1.0 * SCALE)
    check("its 2,000,002 payload bytes swallowed, the next command answered",
          got == b"VERSION 1.6.18-uslab\r\n" or (got.startswith(b"VERSION ") and got.count(b"\r\n") == 1),
          "%r%s" % (got[:80], " (closed)" if closed else ""))
    r.close()
    # memcached unlinks the old value when a set fails (no stale data).
    check("a failed set drops the old value (memcached: END)", c.get("big:o") is None,
          "get big:o still answers the old value")
    c.close()
    served(port, "an oversized value")


def hostile_long_line(port):
    r = Raw(port)
    r.send(b"x" * 3000)
    got, closed = r.drain(2.0 * SCALE)
    check("a line of 3000 bytes without a newline: closed", closed, "answered %r, not closed" % got[:80])
    r.close()
    served(port, "a line too long")


def hostile_garbage(port):
    rnd = random.Random(80)
    # Binary: a request magic, then noise. The server may answer error packets
    # (magic 0x81, a status other than 0) or close; nothing else.
    junk = b"\x80" + rnd.randbytes(65535)
    r = Raw(port)
    try:
        r.send(junk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, closed = r.drain(0.5 * SCALE)
    good, off = True, 0
    while off + 24 <= len(got):
        body = int.from_bytes(got[off + 8:off + 12], "big")
        status = int.from_bytes(got[off + 6:off + 8], "big")
        good &= got[off] == 0x81 and status != 0
        off += 24 + body
    check("64 KiB of binary garbage: error packets or closed (%d bytes back%s)" %
          (len(got), ", closed" if closed else ""), good and off == len(got), repr(got[:48]))
    r.close()
    served(port, "binary garbage")

    # Text: noise that does not start with 0x80. Only error lines, or closed.
    junk = rnd.randbytes(65536)
    junk = (b"\x01" + junk[1:]) if junk[0] == 0x80 else junk
    r = Raw(port)
    try:
        r.send(junk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, closed = r.drain(0.5 * SCALE)
    lines = [l for l in got.split(b"\r\n") if l]
    bad = [l for l in lines if not l.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"))]
    check("64 KiB of text garbage: error lines or closed (%d lines%s)" %
          (len(lines), ", closed" if closed else ""), not bad, repr(bad[:3]))
    r.close()
    served(port, "text garbage")


def hostile_half_request(port):
    r = Raw(port)
    r.send(b"set half:k 0 0 100\r\n" + b"h" * 10)
    time.sleep(0.2)
    served(port, "a half request (10 of 100 bytes, idle)")
    c = client(port)
    check("the half request is not stored yet", c.get("half:k") is None)
    r.send(b"h" * 90 + b"\r\n")
    line = r.readline()
    check("the half request, completed: STORED", line == b"STORED\r\n", repr(line))
    check("and read back", c.get("half:k") == b"h" * 100)
    c.close()
    r.close()


def hostile_slowloris(port):
    """Four clients each send a command one byte every 0.2 s (2.2 s); others
    are served meanwhile, each round trip well under that."""
    client(port).set("slow:k", b"s")
    cmd = b"get slow:k\r\n"
    answers = []

    def loris():
        r = Raw(port, timeout=10)
        for i in range(len(cmd)):
            r.send(cmd[i:i + 1])
            time.sleep(0.2)
        answers.append(r.readline() + r.readline() + r.readline())
        r.close()

    ts = [threading.Thread(target=loris) for _ in range(4)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    rtts = []
    while any(t.is_alive() for t in ts) and time.monotonic() - t0 < 10 * SCALE:
        t = time.monotonic()
        try:
            c = client(port, timeout=SERVED_WITHIN + 1)
            c.set("slow:other", b"o")
            c.get("slow:other")
            c.close()
            rtts.append(time.monotonic() - t)
        except Exception:  # noqa: BLE001
            rtts.append(float("inf"))
        time.sleep(0.05)
    for t in ts:
        t.join(5 * SCALE)
    dur = time.monotonic() - t0
    check("slowloris x4 for %.1f s: %d other clients served, the slowest in %.3f s" %
          (dur, len(rtts), max(rtts, default=-1)), len(rtts) >= 5 and max(rtts) < SERVED_WITHIN)
    check("slowloris: each answered at the end", answers == [b"VALUE slow:k 0 1\r\ns\r\nEND\r\n"] * 4,
          repr(answers[:1]))


def hostile_disconnect(port):
    r = Raw(port)
    r.send(b"set mid:k 0 0 1000\r\n" + b"m" * 500)
    r.close()
    time.sleep(0.1)
    c = client(port)
    check("a client gone mid-value: the key not stored", c.get("mid:k") is None)
    c.close()
    served(port, "a client gone mid-value")


# ---- Known differences from memcached 1.6.18 ----

def known_differences(port):
    # A get of 10,000 keys (an 80 KB line): memcached answers it.
    r = Raw(port)
    r.send(b"get " + b" ".join(b"long:%05d" % i for i in range(10000)) + b"\r\n")
    got, closed = r.drain(1.0 * SCALE)
    check("a get line of 80 KB is answered (memcached: END)", got == b"END\r\n",
          "%r%s" % (got[:40], ", closed" if closed else ""))
    r.close()
    # noreply covers the error of a set too large: memcached says nothing.
    r = Raw(port)
    r.send(b"set nr:k 0 0 2000000 noreply\r\n" + b"z" * 2000002 + b"version\r\n")
    got, _ = r.drain(1.0 * SCALE)
    check("a too-large set with noreply is not answered (memcached: silence)",
          got.startswith(b"VERSION"), repr(got[:60]))
    r.close()


def run(name, fn, *args):
    """A group: its checks print themselves; an exception is one more failure."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        check("group %s ran to its end" % name, False, traceback.format_exc().strip().replace("\n", " | "))


def main():
    if len(sys.argv) not in (2, 5):
        sys.exit("usage: memcached-client.py PORT [PORT2 PORT3 PORT4]")
    port = int(sys.argv[1])
    t0 = time.monotonic()

    # In parallel: the groups that sleep or fill a server, and the hostile
    # clients one after another (each timed by a served() of its own). Each
    # server sees one group at a time, except PORT, which nothing flushes:
    # its groups use keys of their own.
    hostile = [hostile_oversized, hostile_long_line, hostile_garbage, hostile_half_request,
               hostile_slowloris, hostile_disconnect, known_differences]
    groups = [("expiry", group_expiry, port),
              ("simple", lambda p: [f(p) for f in (group_cas, group_incr, group_append, group_sizes)], port),
              ("hostile", lambda p: [run(f.__name__, f, p) for f in hostile], port)]
    if len(sys.argv) == 5:
        p2, p3, p4 = (int(a) for a in sys.argv[2:5])
        groups += [("evict", group_evict, p2), ("noevict", group_noevict, p3),
                   ("conns+flush", lambda p: (group_conns(p), group_flush(p)), p4)]
    ts = [threading.Thread(target=run, args=g) for g in groups]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    say("%d failed, in %.1f s" % (len(_failed), time.monotonic() - t0))
    sys.exit(1 if _failed else 0)


if __name__ == "__main__":
    main()
