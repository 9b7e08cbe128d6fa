#!/usr/bin/env python3
"""Exact-count HTTP/1.1 keep-alive client for make bench (stdlib only).

Sends exactly --warm requests (one distinct user each, to grow the number
of live series) and then exactly -n requests of the Playarr route mix, over
--conns keep-alive connections with one request in flight on each.  Every
response must be a 200 with a Content-Length; anything else (a refused or
closed connection, another status) is fatal, so the count nginx served is
exactly the count asked for.

  client.py --port P -n N [--conns K] [--warm W] [--mix NAME]
            [--check-metrics PATH [--format playarr|vts|lua-prometheus]]
            [--scrape PATH [--scrapes K]]
  client.py --print-mix [--mix NAME]
                                 the mix, one "PATH USER" a line (for wrk)

--check-metrics then reads the exporter at PATH and fails unless it counted
exactly W + N requests: the module's playarr_http_requests_total and the
_count of playarr_http_request_duration_seconds (lua-prometheus is given
the same names by bench/peers), or each of vts's two filters.  --scrape
then times K scrapes of PATH on one keep-alive connection (first and last
byte; Content-Length or chunked bodies) and prints them as key=value.

The mix is deterministic: request number i (0-based, after the warm-up)
is PAIRS[i % len(PAIRS)], a (path, X-Playarr-User) pair.  The mixes
(--mix):

  playarr  the Playarr mix: MIX[i % len(MIX)] with USERS[i % len(USERS)];
           both lengths are prime, so every (path, user) pair occurs once
           per len(MIX) * len(USERS) requests
  users    the same paths with --users distinct users (default 101)
  query    every route template of docs/playarr/routes.txt but the Xtream
           ones, its parameters filled in, with a query string whose
           arguments are the label names of docs/playarr/metrics.json,
           and the users of the Playarr mix
  xtream   the Xtream templates of routes.txt (/movie/:username/...,
           /player_api.php?username=...), the user in the path or the
           query string, XTREAM_USERS of them, no X-Playarr-User header
           (the module's route user)

The fixtures are read from --fixtures (default: the repository's
docs/playarr/).  Every (path, user) pair of a mix occurs once in a period
of len(PAIRS) requests (--print-mix prints one period).
"""

import argparse
import base64
import errno
import hashlib
import hmac
import json
import math
import os
import re
import selectors
import socket
import sys
import time

# Concrete URLs for Playarr's routes (playarr/routes.txt): ids, keys and
# passwords in path segments, query strings, a trailing slash, mixed case,
# percent-encoding, and paths that match no route at all.
MIX = [
    "/api/titles/tt0111161",
    "/api/healthcheck",
    "/api/iptv/providers/p1/categories",
    "/stremio/0123456789abcdef/catalog/movie/top.json",
    "/movie/alice/s3cret/123.mkv",
    "/api/settings/metrics",
    "/api/titles?page=2&type=movies",
    "/api/titles/tt0068646?fields=all",
    "/api/auth/verify",
    "/api/jobs",
    "/api/livetv/channels",
    "/api/livetv/channels/ch-12/programs",
    "/api/livetv/stream/ch-7",
    "/api/playlist/movies",
    "/api/playlist/tvshows/data",
    "/api/profile",
    "/api/provider-titles/ignored/42",
    "/api/iptv/providers",
    "/api/iptv/providers/",
    "/api/iptv/providers/p2/counts",
    "/api/iptv/providers/priorities",
    "/api/settings/log_stream_level",
    "/api/settings/theme",
    "/api/stats",
    "/api/stream/movies/tt0133093",
    "/api/stream/tvshows/tt0903747/1/5",
    "/stremio/0123456789abcdef/manifest.json",
    "/stremio/0123456789abcdef/meta/movie/tt0111161.json",
    "/stremio/0123456789abcdef/stream/series/tt0903747:1:1.json",
    "/api/tmdb/api-key",
    "/api/users/bob",
    "/API/Healthcheck",
    "/api/titles/tt%30133093",
    "/player_api.php?username=u1&password=p1&action=get_live_streams",
    "/get.php?username=u1&password=p1&type=m3u_plus",
    "/series/alice/s3cret/456",
    "/live/alice/s3cret/789.ts",
    "/favicon.ico",
    "/static/js/main.3f2a1b.js",
    "/api/nope/what",
    "/wp-login.php",
]

# "" sends no X-Playarr-User header at all (the user is then "anonymous")
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace",
         "heidi", "ivan", "judy", ""]

# Xtream clients (IPTV players): the user and password are in the path or
# the query string; "+" is a space and %XX a byte there, as Express reads
# them
XTREAM_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace",
                "heidi", "ivan", "judy", "mary+jane", "j%C3%BCrgen",
                "kim"]

HOST = "127.0.0.1"

# the ids mix: a path never seen before on each request, for this many
IDS_PERIOD = 100000

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        os.pardir, "docs", "playarr")

# a value for a template parameter, by its name
PARAM = {
    "password": "s3cret", "api_key": "0123456789abcdef",
    "title_key": "tt0111161", "title_id": "tt0133093", "id": "42",
    "provider_id": "p1", "providerId": "p2", "channelKey": "ch-7",
    "jobName": "sync-titles", "key": "theme", "type": "movie",
    "title_type": "movies", "season": "1", "episode": "5",
    "username": "bob",
}


def templates(fixtures):
    """The distinct route templates of routes.txt, in its order"""
    seen = []
    with open(os.path.join(fixtures, "routes.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or line.startswith("#"):
                continue
            if re.match(r"^[A-Z]+$", parts[0]) and parts[1].startswith("/") \
                    and parts[1] not in seen:
                seen.append(parts[1])
    if not seen:
        fail("%s/routes.txt: no route" % fixtures)
    return seen


def label_names(fixtures):
    """The label names of metrics.json's families, in order, once each"""
    with open(os.path.join(fixtures, "metrics.json"), encoding="utf-8") as f:
        fams = json.load(f)["metrics"]
    names = []
    for fam in fams.values():
        for n in fam.get("labelNames", []):
            if n not in names:
                names.append(n)
    if not names:
        fail("%s/metrics.json: no label name" % fixtures)
    return names


def fill(template, k, user=None):
    """A concrete path for template: each :param filled in (:id.json keeps
    its suffix), a final * as one or two segments"""
    out = []
    for seg in template.split("/"):
        if seg == "*":
            out.append("tt%07d.json" % (100000 + k) if k % 2
                       else "tt0903747:1:%d.json" % (k % 9 + 1))
        elif seg.startswith(":"):
            name, dot, ext = seg[1:].partition(".")
            if name == "username" and user is not None:
                v = user
            elif name == "streamId":
                v = "%d.%s" % (100 + k, ("ts", "mkv", "mp4")[k % 3])
            else:
                v = PARAM.get(name, "v%d" % k)
            out.append(v + dot + ext)
        else:
            out.append(seg)
    return "/".join(out)


def xtream_roots(tpls):
    """The Xtream templates: those whose path continues with
    /:username/:password/..., and those continuations"""
    roots = [t for t in tpls
             if any(u.startswith(t + "/:username/:password/")
                    for u in tpls)]
    deep = [t for t in tpls
            if any(t.startswith(r + "/:username/:password/")
                   for r in roots)]
    return roots, deep


def coprime(paths, users, pad):
    """paths padded (with pad, a path of no route) until its length is
    coprime with users'"""
    paths = list(paths)
    while math.gcd(len(paths), len(users)) != 1:
        paths.append(pad)
    return paths


def cross(paths, users):
    """One period of path i % len(paths) with user i % len(users)"""
    n = len(paths) * len(users)
    return [(paths[i % len(paths)], users[i % len(users)])
            for i in range(n)]


def mix_pairs(name, fixtures, nusers):
    """One period of the mix name, a list of (path, header user or "")"""
    if name == "playarr":
        return cross(MIX, USERS)

    if name == "users":
        users = ["user%04d" % i for i in range(nusers)]
        return cross(coprime(MIX, users, "/robots.txt"), users)

    tpls = templates(fixtures)
    roots, deep = xtream_roots(tpls)

    if name == "query":
        names = [n for n in label_names(fixtures)
                 if n not in ("username", "user")]
        paths = []
        for k, t in enumerate(t for t in tpls
                              if t not in roots and t not in deep):
            args = ["%s=%s" % (names[(k + j) % len(names)],
                               ("v%d" % (k + j), "a+b", "x%%2Fy%d" % j)
                               [(k + j) % 3])
                    for j in range(1 + k % 4)]
            if k % 5 == 0:
                args.append("page=%d&limit=50&sort=-updated_at" % (k % 7))
            paths.append(fill(t, k) + "?" + "&".join(args))
        return cross(coprime(paths, USERS, "/robots.txt?v=1"), USERS)

    if name == "xtream":
        if not roots:
            fail("%s/routes.txt: no Xtream route" % fixtures)
        actions = ["get_live_streams", "get_vod_streams", "get_series_info",
                   "get_short_epg"]
        shapes = deep + roots
        users = XTREAM_USERS
        if math.gcd(len(shapes), len(users)) != 1:
            fail("xtream: %d templates, %d users: not coprime"
                 % (len(shapes), len(users)))
        pairs = []
        for i in range(len(shapes) * len(users)):
            t = shapes[i % len(shapes)]
            u = users[i % len(users)]
            if t in deep:
                path = fill(t, i, u)
            else:
                path = "%s?username=%s&password=s3cret" % (t, u)
                if t.startswith("/player_api"):
                    path += "&action=" + actions[i % len(actions)]
                elif t.startswith("/get"):
                    path += "&type=m3u_plus&output=ts"
            pairs.append((path, ""))
        return pairs

    if name == "ids":
        shapes = ["/api/titles/tt%07d", "/api/stream/movies/tt%07d",
                  "/stremio/0123456789abcdef/meta/movie/tt%07d.json",
                  "/movie/alice/s3cret/%d.mkv",
                  "/api/stream/tvshows/tt%07d/1/5"]
        return [(shapes[k % len(shapes)] % (1000000 + k),
                 USERS[k % len(USERS)])
                for k in range(IDS_PERIOD)]

    fail("unknown mix %r" % name)


def request_bytes(path, user, cookie=None):
    h = "GET %s HTTP/1.1\r\nHost: %s\r\n" % (path, HOST)
    if user:
        h += "X-Playarr-User: %s\r\n" % user
    if cookie:
        h += "Cookie: theme=dark; %s\r\n" % cookie
    return (h + "\r\n").encode("ascii")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def session(secret, user, exp):
    """A Playarr session cookie's value: jsonwebtoken's HS256 JWT"""
    h = b64url(b'{"alg":"HS256","typ":"JWT"}')
    p = b64url(json.dumps({"sub": user, "role": "user", "exp": exp},
                          separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), h + b"." + p, hashlib.sha256).digest()
    return (h + b"." + p + b"." + b64url(sig)).decode("ascii")


def cookie_for(mode, secret, user, i):
    """The Cookie of request i of the mix: none; "known": the user's one
    session; "fresh": a session never seen before (its exp differs)"""
    if mode == "none" or not user:
        return None
    exp = 4000000000 + (i if mode == "fresh" else 0)
    return "access_token=%s" % session(secret, user, exp)


def fail(msg):
    sys.stderr.write("client.py: %s\n" % msg)
    sys.exit(1)


def connect(port, deadline):
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.connect((HOST, port))
            return s
        except OSError as e:
            s.close()
            if e.errno not in (errno.ECONNREFUSED, errno.ECONNRESET) \
                    or time.monotonic() > deadline:
                fail("connect to %s:%d: %s" % (HOST, port, e))
            time.sleep(0.1)


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.busy = False


def parse_response(c):
    """One whole response off c.buf: its status, or None if incomplete."""
    end = c.buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = c.buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
    if not m:
        fail("bad status line: %r" % lines[0])
    length = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length is None:
        fail("response without Content-Length: %r" % head)
    if len(c.buf) < end + 4 + length:
        return None
    c.buf = c.buf[end + 4 + length:]
    if close:
        fail("server closed the connection (keepalive_requests?)")
    return int(m.group(1))


def run(port, conns, reqs, timeout):
    """Send every request of the list reqs (bytes), conns at a time."""
    if not reqs:
        return
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    pool = []
    for _ in range(min(conns, len(reqs))):
        c = Conn(connect(port, deadline))
        pool.append(c)
        sel.register(c.sock, selectors.EVENT_READ, c)

    sent = 0
    done = 0
    total = len(reqs)

    for c in pool:
        c.sock.sendall(reqs[sent])
        c.busy = True
        sent += 1

    while done < total:
        events = sel.select(timeout=max(0.0, deadline - time.monotonic()))
        if not events:
            fail("no response for %g s: %d of %d responses"
                 % (timeout, done, total))
        deadline = time.monotonic() + timeout
        for key, _ in events:
            c = key.data
            data = c.sock.recv(65536)
            if not data:
                fail("connection closed by the server after %d responses"
                     % done)
            c.buf += data
            while c.busy:
                status = parse_response(c)
                if status is None:
                    break
                if status != 200:
                    fail("status %d (request %d)" % (status, done))
                done += 1
                c.busy = False
                if sent < total:
                    c.sock.sendall(reqs[sent])
                    c.busy = True
                    sent += 1
            if c.buf and not c.busy:
                fail("unexpected data: %r" % c.buf[:80])

    for c in pool:
        sel.unregister(c.sock)
        c.sock.close()
    sel.close()


def get(sock, path, close=False):
    """GET path on sock: (status, headers, body, seconds to the first byte,
    seconds to the last).  Content-Length and chunked bodies."""
    h = "GET %s HTTP/1.1\r\nHost: %s\r\n" % (path, HOST)
    if close:
        h += "Connection: close\r\n"
    t0 = time.perf_counter()
    sock.sendall((h + "\r\n").encode("ascii"))
    buf = bytearray()
    first = None

    def more():
        nonlocal first
        chunk = sock.recv(1 << 20)
        if first is None:
            first = time.perf_counter() - t0
        if not chunk:
            fail("%s: connection closed in the response" % path)
        buf.extend(chunk)

    while b"\r\n\r\n" not in buf:
        more()
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    m = re.match(r"HTTP/1\.1 (\d{3}) ", head[0] + " ")
    if not m:
        fail("bad status line: %r" % head[0])
    hdrs = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()

    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                more()
            eol = buf.index(b"\r\n")
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            while len(buf) < eol + 2 + size + 2:
                more()
            body += buf[eol + 2:eol + 2 + size]
            del buf[:eol + 2 + size + 2]
            if size == 0:
                break
    elif "content-length" in hdrs:
        length = int(hdrs["content-length"])
        while len(buf) < length:
            more()
        body = buf[:length]
    else:
        fail("%s: response without a length" % path)

    return (int(m.group(1)), hdrs, bytes(body), first,
            time.perf_counter() - t0)


def sum_lines(text, prefix, must=""):
    """(sum of the values, count) of the lines that start with prefix and
    contain must"""
    total = 0.0
    n = 0
    for line in text.splitlines():
        if line.startswith(prefix) and must in line:
            total += float(line.rsplit(" ", 1)[1])
            n += 1
    return total, n


def check_metrics(port, path, expected, fmt):
    """The requests the exporter at path counted must be expected: the
    module's and lua-prometheus' playarr_http_requests_total (the bench
    configures lua-prometheus with the module's names), or each of vts's
    two filters (uris::, users::)"""
    s = connect(port, time.monotonic() + 10)
    st, _, body, _, _ = get(s, path, close=True)
    s.close()
    if st != 200:
        fail("%s: status %d" % (path, st))
    text = body.decode("utf-8", "replace")

    if fmt == "vts":
        counts = []
        for group in ("uris::", "users::"):
            total, n = sum_lines(text, "nginx_vts_filter_requests_total{",
                                 'filter="%s' % group)
            if int(total) != expected:
                fail("%s: vts filter %s counts %d requests, expected %d"
                     % (path, group, total, expected))
            counts.append(n // 5)
        hist, _ = sum_lines(
            text, "nginx_vts_filter_request_duration_seconds_count{",
            'filter="uris::')
        if int(hist) != expected:
            fail("%s: vts uris:: histogram counts %d, expected %d"
                 % (path, hist, expected))
        print("metrics: requests_total=%d uri_nodes=%d user_nodes=%d"
              % (expected, counts[0], counts[1]))
        return

    total, series = sum_lines(text, "playarr_http_requests_total{")
    hsum, hist = sum_lines(text,
                           "playarr_http_request_duration_seconds_count{")
    if int(total) != expected:
        fail("%s: playarr_http_requests_total sums to %d, expected %d"
             % (path, total, expected))
    if int(hsum) != expected:
        fail("%s: playarr_http_request_duration_seconds_count sums to %d,"
             " expected %d" % (path, hsum, expected))
    if fmt == "playarr" and "__overflow__" in text:
        fail("%s: overflow series present" % path)
    if fmt == "lua-prometheus":
        errors, n = sum_lines(text, "nginx_metric_errors_total")
        if n != 1 or errors != 0:
            fail("%s: nginx_metric_errors_total is not 0" % path)
    print("metrics: requests_total=%d counter_series=%d histogram_series=%d"
          % (total, series, hist))


def scrape(port, path, n):
    """n scrapes of path, one at a time on one keep-alive connection"""
    s = connect(port, time.monotonic() + 10)
    first = []
    last = []
    size = lines = 0
    for i in range(n):
        st, hdrs, body, ttfb, total = get(s, path)
        if st != 200:
            fail("%s: status %d" % (path, st))
        first.append(ttfb)
        last.append(total)
        if i == 0:
            size = len(body)
            lines = body.count(b"\n")
            shm = shm_used(hdrs, body)
    s.close()

    def med(v):
        v = sorted(v)
        k = len(v) // 2
        return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2

    print("scrapes=%d bytes=%d lines=%d ttfb_med_ms=%.2f ttfb_max_ms=%.2f "
          "total_med_ms=%.2f total_max_ms=%.2f shm_used=%s"
          % (n, size, lines, 1e3 * med(first), 1e3 * max(first),
             1e3 * med(last), 1e3 * max(last), shm))


SHM_USED = re.compile(
    rb'^(?:playarr_metrics_zone_used_bytes\{[^}]*\}'
    rb'|nginx_vts_main_shm_usage_bytes\{shared="used_size"\}) (\d+)$', re.M)


def shm_used(hdrs, body):
    """The shared memory the exporter uses, in bytes, when it says: the
    module's and vts's own metrics, the header bench/peers adds for
    lua-prometheus; "-" otherwise"""
    if "x-bench-shm-used" in hdrs:
        return hdrs["x-bench-shm-used"]
    m = SHM_USED.search(body)
    return m.group(1).decode() if m else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("-n", type=int, default=0, help="requests of the mix")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--warm", type=int, default=0,
                    help="warm-up requests, one distinct user each")
    ap.add_argument("--warm-path", default="/api/healthcheck")
    ap.add_argument("--timeout", type=float, default=60,
                    help="seconds without any response before giving up")
    ap.add_argument("--check-metrics", metavar="PATH",
                    help="then GET PATH and check the request count")
    ap.add_argument("--format", default="playarr",
                    choices=("playarr", "vts", "lua-prometheus"),
                    help="whose exposition --check-metrics reads")
    ap.add_argument("--scrape", metavar="PATH",
                    help="then GET PATH --scrapes times, timed")
    ap.add_argument("--scrapes", type=int, default=5)
    ap.add_argument("--print-mix", action="store_true")
    ap.add_argument("--mix", default="playarr",
                    choices=("playarr", "users", "query", "xtream", "ids"))
    ap.add_argument("--users", type=int, default=101,
                    help="users of the users mix")
    ap.add_argument("--fixtures", default=FIXTURES,
                    help="the directory of routes.txt and metrics.json")
    ap.add_argument("--cookie", default="none",
                    choices=("none", "known", "fresh"),
                    help="session cookies on the mix (see cookie_for)")
    ap.add_argument("--jwt-secret", default="bench-jwt-secret")
    a = ap.parse_args()

    pairs = mix_pairs(a.mix, a.fixtures, a.users)

    if a.print_mix:
        for path, user in pairs:
            print(path, user or "-")
        return

    if a.port is None:
        fail("--port is required")

    warm = [request_bytes(a.warm_path, "warm%05d" % i)
            for i in range(a.warm)]
    mix = [request_bytes(pairs[i % len(pairs)][0], pairs[i % len(pairs)][1],
                         cookie_for(a.cookie, a.jwt_secret,
                                    pairs[i % len(pairs)][1], i))
           for i in range(a.n)]

    run(a.port, a.conns, warm, a.timeout)
    run(a.port, a.conns, mix, a.timeout)

    if a.check_metrics:
        check_metrics(a.port, a.check_metrics, a.warm + a.n, a.format)

    if a.scrape:
        scrape(a.port, a.scrape, a.scrapes)


if __name__ == "__main__":
    main()
