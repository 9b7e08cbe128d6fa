#!/usr/bin/env python3
"""Render and scrape measurements for make bench (stdlib only).

  render.py schema FILE
      the bench schema: one counter and one histogram family shaped like
      the HTTP ones (endpoint, status_code, username; endpoint, username;
      the 12 default buckets)
  render.py fill --port P --path PUSH --counters C --histograms H
                 [--start S] [--batch B]
      creates C counter and H histogram series by POSTs of B updates
  render.py reset --port P --path PUSH --family KEY
      resets a family: its series leave the output until updated again
  render.py self --port P --path METRICS
      prints the module's self metrics (zone size, used, free, series)
  render.py scrape --port P --path METRICS -n K [--pid WORKER]
      K scrapes, one at a time on one keep-alive connection, read as fast
      as python can; prints one line of key=value: time to the first byte
      (ttfb_*: the header goes out before the body is rendered, a step of
      about 256 KiB at a time, so this is one loopback round trip and the
      first step), time to the last byte (total_*: rendering and sending
      the whole body, the time to compare with the render targets), the
      body's size and lines, the serving worker's cpu time per scrape and
      its VmRSS/VmHWM before, after the first scrape and after all (its
      VmHWM is reset to VmRSS first, where /proc/PID/clear_refs allows)
  render.py watch FILE --seconds S
      counts the times FILE is replaced (a rename over it: another inode
      or mtime) in S seconds, polling every 20 ms; prints saves=N
  render.py latency --port P --path PATH --metrics METRICS --seconds S
                    --rate R --conns K [--scrape-every T] [--pid-path PID]
      K connections, each sending a request every 1/R s (one at a time),
      measuring each request's latency, while another connection scrapes
      METRICS every T s (no scrape when T is 0); with --pid-path, the
      load connections are opened on the worker that does not serve the
      scrapes and on the one that does, half each, and their latencies are
      reported apart
"""

import argparse
import json
import multiprocessing
import os
import re
import socket
import sys
import time

HOST = "127.0.0.1"

BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

COUNTER = "playarr_bench_requests_total"
HISTOGRAM = "playarr_bench_request_duration_seconds"

ENDPOINTS = [
    "/api/titles/:title_key", "/api/healthcheck", "/api/stats",
    "/api/iptv/providers/:id/categories", "/api/livetv/channels",
    "/api/stream/movies/:title_id", "/api/playlist/:type/data",
    "/stremio/:api_key/catalog/:type/:id.json", "/api/users/:username",
    "/api/settings/:key",
]


def fail(msg):
    sys.stderr.write("render.py: %s\n" % msg)
    sys.exit(1)


def connect(port):
    s = socket.create_connection((HOST, port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Conn:
    """One keep-alive HTTP/1.1 connection: bodies with a Content-Length,
    chunked (what /metrics answers: its length is not known until it is
    rendered), or up to the end of the connection."""

    def __init__(self, port):
        self.port = port
        self.sock = connect(port)
        self.buf = bytearray()
        self.rbuf = bytearray()
        self.hint = 1 << 22     # bytes: the room a chunked body starts with
        self.ttlb = 0.0         # seconds to the last byte, last request
        self.t_end = None

    def request(self, method, path, body=b"", headers=None, keep=True):
        """(status, headers dict, body, seconds to first byte); the time to
        the last byte is left in self.ttlb"""
        h = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, HOST)
        for k, v in (headers or {}).items():
            h += "%s: %s\r\n" % (k, v)
        if body:
            h += "Content-Length: %d\r\n" % len(body)
        t0 = time.perf_counter()
        self.sock.sendall(h.encode("ascii") + b"\r\n" + body)
        first = None
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = self.sock.recv(1 << 20)
            if first is None:
                first = time.perf_counter() - t0
            if not chunk:
                fail("connection closed")
            self.buf += chunk
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3})", head[0])
        if not m:
            fail("bad status line %r" % head[0])
        status = int(m.group(1))
        hdrs = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        rest = self.buf[end + 4:]
        self.t_end = None
        if method == "HEAD" or status in (204, 304) or status < 200:
            data = b""
            self.buf = rest
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = self.chunked(rest)
        elif "content-length" in hdrs:
            data = self.sized(rest, int(hdrs["content-length"]))
        else:
            data = self.until_close(rest)
        self.ttlb = (self.t_end or time.perf_counter()) - t0
        return status, hdrs, data, first

    def room(self, n):
        """the receive buffer, kept from one response to the next so that
        its pages are not faulted in again for each body"""
        if len(self.rbuf) < n:
            self.rbuf = bytearray(n)
        return self.rbuf

    def sized(self, rest, length):
        if len(rest) >= length:
            self.t_end = time.perf_counter()
            self.buf = rest[length:]
            return bytes(rest[:length])
        # read the rest straight into one buffer
        buf = self.room(length)
        buf[:len(rest)] = rest
        view = memoryview(buf)
        got = len(rest)
        while got < length:
            n = self.sock.recv_into(view[got:length])
            if n == 0:
                fail("connection closed in a body")
            got += n
        self.t_end = time.perf_counter()
        data = bytes(view[:length])
        view.release()
        self.buf = bytearray()
        return data

    def chunked(self, rest):
        """the body, from chunks read into one buffer as they come (no copy
        until the end: the time to the last byte is the server's, not
        python's)"""
        buf = self.room(max(self.hint, 2 * len(rest)))
        buf[:len(rest)] = rest
        have = len(rest)
        pos = 0
        parts = []
        while True:
            nl = buf.find(b"\r\n", pos, have)
            if nl >= 0:
                size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
                if size == 0:
                    # no trailers, or trailers up to an empty line
                    end = buf.find(b"\r\n\r\n", nl, have)
                    if end >= 0:
                        break
                elif have >= nl + 2 + size + 2:
                    parts.append((nl + 2, size))
                    pos = nl + 2 + size + 2
                    continue
            if have == len(buf):
                nbuf = bytearray(2 * len(buf))
                nbuf[:have] = buf
                self.rbuf = buf = nbuf
            view = memoryview(buf)
            n = self.sock.recv_into(view[have:])
            view.release()
            if n == 0:
                fail("connection closed in a chunked body")
            have += n
        self.t_end = time.perf_counter()
        self.buf = buf[end + 4:have]
        total = sum(n for _, n in parts)
        self.hint = max(self.hint, total + total // 8 + 65536)
        view = memoryview(buf)
        data = b"".join(view[s:s + n] for s, n in parts)
        view.release()
        return data

    def until_close(self, rest):
        parts = [bytes(rest)]
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                break
            parts.append(chunk)
        self.t_end = time.perf_counter()
        self.buf = bytearray()
        return b"".join(parts)

    def close(self):
        self.sock.close()


def schema(path):
    doc = {"metrics": {
        "bench_requests": {
            "type": "counter", "name": COUNTER,
            "help": "make bench: counter series created by push",
            "labelNames": ["endpoint", "status_code", "username"]},
        "bench_duration": {
            "type": "histogram", "name": HISTOGRAM,
            "help": "make bench: histogram series created by push",
            "labelNames": ["endpoint", "username"],
            "buckets": BUCKETS},
    }}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def updates(kind, start, n, values="ms"):
    for i in range(start, start + n):
        ep = ENDPOINTS[i % len(ENDPOINTS)]
        user = "u%07d" % i
        if kind == "counter":
            yield {"metric": "bench_requests", "op": "inc",
                   "labels": {"endpoint": ep, "status_code": "200",
                              "username": user},
                   "value": 1 + i % 97}
        else:
            yield {"metric": "bench_duration", "op": "observe",
                   "labels": {"endpoint": ep, "username": user},
                   "value": value(values, i)}


def value(values, i):
    """ms: a duration in milliseconds, as nginx measures them; any: a
    double that needs 16 or 17 digits more often than not"""
    if values == "ms":
        return (i % 5000) / 1000.0
    return (i % 1000) / 997.0


def fill(a):
    c = Conn(a.port)
    for kind, n in (("counter", a.counters), ("histogram", a.histograms)):
        batch = []
        for u in updates(kind, a.start, n, a.values):
            batch.append(u)
            if len(batch) == a.batch:
                push(c, a.path, batch)
                batch = []
        if batch:
            push(c, a.path, batch)
    c.close()


def push(c, path, batch):
    body = json.dumps(batch, separators=(",", ":")).encode()
    if len(body) > 1 << 20:
        fail("a batch of %d bytes: more than 1 MiB" % len(body))
    st, _, data, _ = c.request("POST", path, body,
                               {"Content-Type": "application/json"})
    if st != 204:
        fail("push: %d %r" % (st, data[:200]))


SELF = re.compile(rb"^playarr_metrics_(zone_size_bytes|zone_used_bytes|"
                  rb"zone_free_bytes|series)\{[a-z]+=\"([^\"]*)\"\} (\d+)$",
                  re.M)


def self_metrics(port, path):
    c = Conn(port)
    st, _, data, _ = c.request("GET", path)
    c.close()
    if st != 200:
        fail("%s: %d" % (path, st))
    out = {}
    for m in SELF.finditer(data):
        name = m.group(1).decode()
        if name == "series":
            name = "series:" + m.group(2).decode()
        out[name] = int(m.group(3))
    return out


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def clear_hwm(pid):
    """VmHWM back to VmRSS (Linux 4.0+, owner or root): the peak measured
    is then the scrapes' own, not what filling the zone took"""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return 1
    except OSError:
        return 0


def reset(a):
    c = Conn(a.port)
    push(c, a.path, [{"metric": a.family, "op": "reset"}])
    c.close()


def run_ns(pid):
    """nanoseconds pid has spent on a cpu"""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def scrape(a):
    c = Conn(a.port)
    if a.pid_path:
        # the worker that serves this connection
        a.pid = int(worker_of(c, a.pid_path))
    first = []
    total = []
    size = lines = 0
    cleared = clear_hwm(a.pid) if a.pid else 0
    st0 = status(a.pid) if a.pid else {}
    ns0 = run_ns(a.pid) if a.pid else 0
    peak = 0
    for i in range(a.n):
        st, _, data, ttfb = c.request("GET", a.path)
        total.append(c.ttlb)
        first.append(ttfb)
        if st != 200:
            fail("%s: %d" % (a.path, st))
        if i == 0:
            size = len(data)
            lines = data.count(b"\n")
            if a.pid:
                peak = status(a.pid)["VmHWM"]
        del data
    st1 = status(a.pid) if a.pid else {}
    ns1 = run_ns(a.pid) if a.pid else 0
    c.close()
    first.sort()
    total.sort()
    med = lambda v: v[len(v) // 2] if len(v) % 2 else \
        (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    print("scrapes=%d bytes=%d lines=%d ttfb_med_ms=%.2f ttfb_max_ms=%.2f "
          "total_med_ms=%.2f total_max_ms=%.2f"
          % (a.n, size, lines, 1e3 * med(first), 1e3 * first[-1],
             1e3 * med(total), 1e3 * total[-1]), end="")
    if a.pid:
        print(" worker=%d cpu_ms=%.2f" % (a.pid, (ns1 - ns0) / 1e6 / a.n),
              end="")
        print(" rss_before_kb=%d hwm_before_kb=%d hwm_first_kb=%d "
              "rss_after_kb=%d hwm_after_kb=%d hwm_cleared=%d"
              % (st0["VmRSS"], st0["VmHWM"], peak, st1["VmRSS"],
                 st1["VmHWM"], cleared), end="")
    print()


# ------------------------------------------------------------- latency

def worker_of(c, pid_path):
    st, _, data, _ = c.request("GET", pid_path)
    if st != 200:
        fail("%s: %d" % (pid_path, st))
    return data.strip().decode()


def conn_on(port, pid_path, want, avoid):
    """A connection served by worker want (or by any other than avoid)."""
    for _ in range(200):
        c = Conn(port)
        w = worker_of(c, pid_path)
        if (want and w == want) or (avoid and w != avoid) \
                or (not want and not avoid):
            return c, w
        c.close()
    fail("200 connections and none on the worker wanted")


def load_proc(port, path, pid_path, want, avoid, rate, seconds, start_at,
              q):
    c, w = conn_on(port, pid_path, want, avoid)
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nX-Playarr-User: load\r\n\r\n"
           % (path, HOST)).encode()
    lat = []
    period = 1.0 / rate
    while time.time() < start_at:
        time.sleep(0.001)
    t_end = time.perf_counter() + seconds
    nxt = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now >= t_end:
            break
        if now < nxt:
            time.sleep(nxt - now)
        t0 = time.perf_counter()
        c.sock.sendall(req)
        while True:
            end = c.buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?i)content-length: *(\d+)",
                              bytes(c.buf[:end]))
                n = end + 4 + (int(m.group(1)) if m else 0)
                if len(c.buf) >= n:
                    del c.buf[:n]
                    break
            chunk = c.sock.recv(65536)
            if not chunk:
                fail("load: connection closed")
            c.buf += chunk
        lat.append(time.perf_counter() - t0)
        nxt += period
        if nxt < time.perf_counter() - 10 * period:
            nxt = time.perf_counter()
    c.close()
    q.put((w, lat))


def scrape_proc(port, metrics, every, seconds, start_at, conn_w, q):
    c = conn_w[0] if conn_w else Conn(port)
    while time.time() < start_at:
        time.sleep(0.001)
    t_end = time.perf_counter() + seconds
    times = []
    nxt = time.perf_counter() + every / 2
    while True:
        now = time.perf_counter()
        if nxt >= t_end:
            break
        if now < nxt:
            time.sleep(nxt - now)
        t0 = time.perf_counter()
        st, _, data, _ = c.request("GET", metrics)
        if st != 200:
            fail("scrape: %d" % st)
        times.append(time.perf_counter() - t0)
        nxt += every
    c.close()
    q.put(("scrape", times))


def watch(a):
    def ident():
        try:
            st = os.stat(a.file)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    last = ident()
    saves = 0
    t_end = time.perf_counter() + a.seconds
    while time.perf_counter() < t_end:
        time.sleep(0.02)
        now = ident()
        if now is not None and now != last:
            saves += 1
            last = now
    print("saves=%d" % saves)


def pct(v, p):
    if not v:
        return 0.0
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def latency(a):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 1.0
    procs = []
    scrape_w = None
    sconn = None

    if a.scrape_every > 0:
        if a.pid_path:
            sconn = conn_on(a.port, a.pid_path, None, None)
            scrape_w = sconn[1]
        p = ctx.Process(target=scrape_proc,
                        args=(a.port, a.metrics, a.scrape_every, a.seconds,
                              start_at, sconn, q))
        procs.append(p)
    elif a.pid_path and a.same_worker:
        c, scrape_w = conn_on(a.port, a.pid_path, None, None)
        c.close()

    for i in range(a.conns):
        want = avoid = None
        if a.pid_path and scrape_w:
            if i % 2:
                want = scrape_w
            else:
                avoid = scrape_w
        procs.append(ctx.Process(target=load_proc,
                                 args=(a.port, a.path, a.pid_path, want,
                                       avoid, a.rate, a.seconds, start_at,
                                       q)))
    for p in procs:
        p.start()
    if sconn:
        sconn[0].sock.close()

    res = [q.get(timeout=a.seconds + 120) for _ in procs]
    for p in procs:
        p.join()

    groups = {"all": []}
    scr = []
    for w, lat in res:
        if w == "scrape":
            scr = lat
            continue
        groups["all"] += lat
        if scrape_w:
            g = "same" if w == scrape_w else "other"
            groups.setdefault(g, []).extend(lat)

    for g in ("all", "other", "same"):
        v = sorted(groups.get(g, []))
        if not v:
            continue
        print("group=%s n=%d p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
              "max_ms=%.3f" % (g, len(v), 1e3 * pct(v, 50), 1e3 * pct(v, 99),
                               1e3 * pct(v, 99.9), 1e3 * v[-1]))
    if a.scrape_every > 0:
        scr.sort()
        print("group=scrapes n=%d p50_ms=%.3f max_ms=%.3f"
              % (len(scr), 1e3 * pct(scr, 50), 1e3 * (scr[-1] if scr else 0)))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("schema")
    p.add_argument("file")

    p = sub.add_parser("fill")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--counters", type=int, default=0)
    p.add_argument("--histograms", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--batch", type=int, default=4000)
    p.add_argument("--values", choices=("ms", "any"), default="ms")

    p = sub.add_parser("reset")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--family", required=True)

    p = sub.add_parser("self")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)

    p = sub.add_parser("scrape")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--pid-path",
                   help="GET it first: the pid of the worker to watch")

    p = sub.add_parser("latency")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/api/titles/tt0111161")
    p.add_argument("--metrics", required=True)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--scrape-every", type=float, default=0)
    p.add_argument("--pid-path")
    p.add_argument("--same-worker", action="store_true",
                   help="without scrapes, still split the load by worker")

    p = sub.add_parser("watch")
    p.add_argument("file")
    p.add_argument("--seconds", type=float, required=True)

    a = ap.parse_args()

    if a.cmd == "schema":
        schema(a.file)
    elif a.cmd == "fill":
        fill(a)
    elif a.cmd == "self":
        for k, v in sorted(self_metrics(a.port, a.path).items()):
            print("%s=%d" % (k, v))
    elif a.cmd == "reset":
        reset(a)
    elif a.cmd == "scrape":
        scrape(a)
    elif a.cmd == "latency":
        latency(a)
    elif a.cmd == "watch":
        watch(a)


if __name__ == "__main__":
    main()
