#!/usr/bin/env python3
"""Time per decode step by kernel, from `ncu --csv --metrics gpu__time_duration.sum`.

usage: kernel_table.py PROFILE.csv STEPS TAG   (STEPS: decode steps profiled)
Prints each kernel's launches and microseconds per step, largest first, and the total."""
import csv, sys, collections

path, steps, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(path, errors="replace").read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if start is None:
    sys.exit(f"{tag}: no ncu table in {path}: " + " | ".join(lines[-3:]))
tot, cnt = collections.defaultdict(float), collections.Counter()
for row in csv.DictReader(lines[start:]):
    if row.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = row["Kernel Name"].split("(")[0].split("<")[0][:60]
    v = float(row["Metric Value"].replace(",", ""))
    unit = row.get("Metric Unit", "ns")
    tot[name] += v * {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(unit, 1e-3)
    cnt[name] += 1
all_us = sum(tot.values()) / steps
print(f"== {tag}: {sum(cnt.values()) // steps} kernels per step, {all_us:.1f} us of kernel time per step")
for name, us in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"  {us / steps:9.1f} us  {cnt[name] / steps:6.1f} launches  {name}")
