#!/usr/bin/env python3
"""Where a kernel's instructions and stalls go, from
`ncu --page source --csv --print-source sass` (device.sh N writes one).

usage: sass_hot.py SRC.csv [N]
Prints the executed warp instructions by opcode, and the N SASS lines
with the most stall samples."""
import csv, sys, collections

rows = list(csv.reader(open(sys.argv[1], errors="replace")))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
hdr_i = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
hdr = rows[hdr_i]
ix = {h: i for i, h in enumerate(hdr)}
body = [r for r in rows[hdr_i + 1:] if len(r) == len(hdr)]
num = lambda r, k: float(r[ix[k]] or 0)
by_op, total = collections.Counter(), 0
for r in body:
    n = num(r, "Instructions Executed")
    op = r[ix["Source"]].strip().split()[0]
    if op.startswith("@"):
        op = r[ix["Source"]].strip().split()[1]
    by_op[op.split(".")[0]] += n
    total += n
print(f"warp instructions executed: {total:.0f}")
for op, n in by_op.most_common(30):
    print(f"  {op:10s} {n:12.0f}  {100 * n / total:5.1f}%")
print(f"top {top} lines by stall samples:")
samp = "Warp Stall Sampling (All Samples)"
for r in sorted(body, key=lambda r: -num(r, samp))[:top]:
    print(f"  {num(r, samp):7.0f} {num(r, 'Instructions Executed'):10.0f}  {r[ix['Address']][-5:]}  {r[ix['Source']].strip()[:90]}")
