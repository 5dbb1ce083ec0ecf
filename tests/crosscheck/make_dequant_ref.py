#!/usr/bin/env python3
"""Writes tests/crosscheck/dequant_ref.bin: random blocks of every GGML type
alrd reads, with their fp32 values as the `gguf` Python package (llama.cpp's
own reference, gguf.quants.dequantize) computes them. test_dequant compares
alrd's dequantizers against it, so `make test` needs no Python.

    pip install gguf numpy && python3 tests/crosscheck/make_dequant_ref.py

Format (little-endian): "ALRDDQ01", u32 entries; per entry u32 ggml type,
u32 elements, u32 bytes, the block bytes, then elements float32 values.
Block bytes are random except the scale fields, which are set to random
finite fp16 (fp32 for Q8_K) values so that no value is NaN or Inf."""
import struct, sys
import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES, quants

rng = np.random.default_rng(20261204)

# (type, byte offsets of fp16 scale fields within a block)
SCALES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

def blocks_of(t, n_blocks):
    if t == T.F16:
        return (rng.standard_normal(n_blocks * 32) * 4).astype(np.float16).tobytes()
    if t == T.BF16:
        f = (rng.standard_normal(n_blocks * 32) * 4).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    bs, ts = GGML_QUANT_SIZES[t]
    b = bytearray(rng.integers(0, 256, n_blocks * ts, dtype=np.uint8).tobytes())
    for i in range(n_blocks):
        if t == T.Q8_K:
            b[i * ts:i * ts + 4] = struct.pack("<f", float(rng.uniform(-0.05, 0.05)))
            continue
        for off in SCALES[t]:
            b[i * ts + off:i * ts + off + 2] = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
    return bytes(b)

def main(path):
    types = [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]  # Q8_K: gguf has no dequantizer for it
    out = [b"ALRDDQ01", struct.pack("<I", len(types))]
    for t in types:
        n_blocks = 8 if GGML_QUANT_SIZES[t][0] == 256 else 64
        raw = blocks_of(t, n_blocks)
        vals = quants.dequantize(np.frombuffer(raw, dtype=np.uint8), t).astype(np.float32).reshape(-1)
        assert np.all(np.isfinite(vals)), t.name
        out += [struct.pack("<III", int(t), vals.size, len(raw)), raw, vals.tobytes()]
        print(f"{t.name:5s} {vals.size:5d} values from {len(raw):6d} bytes", file=sys.stderr)
    with open(path, "wb") as f:
        f.write(b"".join(out))

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/crosscheck/dequant_ref.bin")
