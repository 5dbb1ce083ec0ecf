#!/usr/bin/env python3
"""Step times of `tests/gpu/device.sh O`'s log, the tree's build against
.devcarry/old's, per configuration: both runs of each and the ratio of
their sums (new / old).

usage: oldnew_table.py oldnew.log"""
import collections, re, sys

runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    m = re.search(r"step\s+([\d.]+) ms", line)
    if not m or len(f) < 5:
        continue
    runs[(f[1], f[3], f[4], f[0])].append(float(m.group(1)))  # variant, depth, batch, build
keys = sorted({k[:3] for k in runs}, key=lambda k: (k[0], int(k[2][2:]), int(k[1][2:])))
for k in keys:
    new, old = runs[k + ("build",)], runs[k + (".devcarry/old/build",)]
    if not new or not old:
        continue
    fmt = lambda xs: " / ".join(f"{x:.3f}" for x in xs)
    print(f"{k[0]:6s} {k[1]:8s} {k[2]:5s} new {fmt(new)}  old {fmt(old)}  new/old {sum(new) / sum(old):.3f}")
