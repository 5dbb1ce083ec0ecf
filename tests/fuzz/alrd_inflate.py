#!/usr/bin/env python3
"""alrd_inflate.py IN OUT: rewrites a .alrd file with every section stored
uncompressed (flags 0), layout and CRCs recomputed. fuzz_alrd recomputes
CRCs after mutating, so such a seed lets mutations reach the section
decoders instead of stopping in zlib."""
import struct, sys, zlib

d = open(sys.argv[1], "rb").read()
magic, ver, hs, ns, fsz, doff, dsz = struct.unpack_from("<4sIIIQQQ", d, 0)
assert magic == b"ALRD" and fsz == len(d)
secs = []
for i in range(ns):
    kind, flags, off, size, raw, crc, res = struct.unpack_from("<IIQQQII", d, 64 + 40 * i)
    body = d[off:off + size]
    secs.append((kind, zlib.decompress(body) if flags & 1 else body))
align = lambda x: (x + 63) // 64 * 64
pos, table, blobs = align(hs), b"", []
for kind, body in secs:
    table += struct.pack("<IIQQQII", kind, 0, pos, len(body), len(body), zlib.crc32(body), 0)
    blobs.append((pos, body))
    pos = align(pos + len(body))
new_doff = pos
out = bytearray(new_doff + dsz)
out[new_doff:] = d[doff:]
for p, body in blobs:
    out[p:p + len(body)] = body
head = struct.pack("<4sIIIQQQ", b"ALRD", ver, hs, ns, len(out), new_doff, dsz) + bytes(20)
out[0:60] = head
out[64:hs] = table
struct.pack_into("<I", out, 60, zlib.crc32(bytes(out[64:hs]), zlib.crc32(bytes(out[0:60]))))
open(sys.argv[2], "wb").write(out)
