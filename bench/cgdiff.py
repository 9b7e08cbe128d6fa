#!/usr/bin/env python3
"""Per-request Ir by function from two callgrind runs of N and 3N requests.

  cgdiff.py N OUT_N OUT_3N [--base BASE_N BASE_3N] [--top K] [--match RE]
            [--object NAME] [--values FN...]

Reads both callgrind.out files (self and inclusive cost per function) and
prints, per function, (Ir(3N) - Ir(N)) / 2N: start-up and shutdown cancel.
Functions whose name or object file matches RE (default: the module's) are
listed first, by self cost, with their inclusive cost; with --object,
the functions of that object file (the module's .so, by its base name)
rather than those whose name matches.  With --base (the
same pair of another configuration, e.g. bare) the K functions whose self
cost per request grew most against it are listed too, whatever their
object: that is where the added instructions go (libc, nginx).  nginx's
static functions have no symbol in Debian's binary: they show as
addresses.  Costs can move between functions without being added: with
the module's header filter in the chain, callgrind charges part of
ngx_http_send_header to the next filter, for instance.

The callgrind.out files are parsed here rather than with
callgrind_annotate, which splits one function into several entries (by
the file its inlined code comes from) and then counts inclusive costs
more than once.

--values prints key=value words only, for bench/run: own= the self cost
per request of the functions the listing selects (the module's own
cost), total= the whole per request, and incl:FN= the inclusive cost per
request of each function FN named.
"""

import argparse
import os
import re
import sys
from collections import defaultdict

KIND = {"ob": "ob", "cob": "ob",
        "fl": "fl", "fi": "fl", "fe": "fl", "cfl": "fl", "cfi": "fl",
        "fn": "fn", "cfn": "fn"}

NAME = re.compile(r"^\((\d+)\)(?:\s+(.*))?$")

OBJ = {}


def parse(path):
    """({function: self Ir}, {function: inclusive Ir})"""
    names = {"ob": {}, "fl": {}, "fn": {}}
    self_ = defaultdict(int)
    incl = defaultdict(int)
    ob = fn = cfn = None
    call = False

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if call:
                    # the inclusive cost of a call, not self cost
                    if cfn != fn:
                        incl[fn] += cost
                    call = False
                else:
                    self_[fn] += cost
                    incl[fn] += cost
                continue

            key, eq, val = line.rstrip("\n").partition("=")
            if not eq:
                continue

            if key in KIND:
                table = names[KIND[key]]
                m = NAME.match(val)
                if m:
                    if m.group(2) is not None:
                        table[m.group(1)] = m.group(2)
                    name = table.get(m.group(1), "?")
                else:
                    name = val
                if key == "ob":
                    ob = name
                elif key == "fn":
                    fn = name
                    if ob:
                        OBJ.setdefault(fn, os.path.basename(ob))
                elif key == "cfn":
                    cfn = name

            elif key == "calls":
                call = True

    return self_, incl


def per_request(n, a, b):
    return {k: (b.get(k, 0) - a.get(k, 0)) / (2.0 * n)
            for k in set(a) | set(b)}


def selected(a, fn):
    """Whether fn is one of the module's functions"""
    if a.object:
        return OBJ.get(fn, "") == a.object
    return bool(re.search(a.match, fn + " " + OBJ.get(fn, "")))


def short(fn):
    obj = OBJ.get(fn, "")
    return "%s (%s)" % (fn, obj) if obj else fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out_n")
    ap.add_argument("out_3n")
    ap.add_argument("--base", nargs=2, metavar=("BASE_N", "BASE_3N"))
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--match", default=r"playarr_metrics")
    ap.add_argument("--object", help="the module's object file, base name")
    ap.add_argument("--values", nargs="*", metavar="FN",
                    help="print own=, total= and incl:FN= only")
    ap.add_argument("--base-name", default="bare")
    ap.add_argument("--diff-only", action="store_true",
                    help="only the comparison with --base")
    a = ap.parse_args()

    s1, i1 = parse(a.out_n)
    s3, i3 = parse(a.out_3n)
    self_ = per_request(a.n, s1, s3)
    incl = per_request(a.n, i1, i3)

    if a.values is not None:
        own = sum(v for k, v in self_.items() if selected(a, k))
        words = ["own=%.0f" % own, "total=%.0f" % sum(self_.values())]
        for fn in a.values:
            if fn not in incl:
                sys.stderr.write("cgdiff.py: no function %s in %s\n"
                                 % (fn, a.out_n))
                sys.exit(1)
            words.append("incl:%s=%.0f" % (fn, incl[fn]))
        print(" ".join(words))
        return

    mine = [(v, k) for k, v in self_.items()
            if selected(a, k) and abs(v) >= 0.5]
    mine.sort(reverse=True)

    if a.diff_only:
        mine = []
    else:
        print("  module functions, Ir per request (self, inclusive):")
        total = sum(v for v, _ in mine)
        for v, k in mine[:a.top]:
            print("    %8.0f  %8.0f  %s" % (v, incl.get(k, 0), k))
        if len(mine) > a.top:
            print("    %8.0f            (%d more functions)"
                  % (sum(v for v, _ in mine[a.top:]), len(mine) - a.top))
        print("    %8.0f            self cost of all the module's functions"
              % total)
        print("    (inclusive: with the functions called; a filter's"
              " includes the rest\n     of nginx's filter chain)")

    if a.base:
        b1, _ = parse(a.base[0])
        b3, _ = parse(a.base[1])
        base = per_request(a.n, b1, b3)
        keys = set(self_) | set(base)
        grew = [(self_.get(k, 0) - base.get(k, 0), k) for k in keys]
        total = sum(v for v, _ in grew)
        grew = [g for g in grew if abs(g[0]) >= 0.5]
        grew.sort(reverse=True)
        print("  self Ir per request, against %s, by function"
              " (every object):" % a.base_name)
        up = [g for g in grew if g[0] > 0]
        for v, k in up[:a.top]:
            print("    %+8.0f  %s" % (v, short(k)))
        if len(up) > a.top:
            print("    %+8.0f  (%d more functions)"
                  % (sum(v for v, _ in up[a.top:]), len(up) - a.top))
        fell = [g for g in grew if g[0] < 0]
        fell.sort()
        for v, k in fell[:4]:
            print("    %+8.0f  %s" % (v, short(k)))
        if len(fell) > 4:
            print("    %+8.0f  (%d more functions)"
                  % (sum(v for v, _ in fell[4:]), len(fell) - 4))
        print("    %+8.0f  in all" % total)


if __name__ == "__main__":
    try:
        main()
    except OSError as e:
        sys.stderr.write("cgdiff.py: %s\n" % e)
        sys.exit(1)
