#!/bin/sh
# tests/gpu/sol.sh: both decode attention kernels at the clocks a real run gets (ncu --clock-control none):
# duration and DRAM throughput of the fp16-cache kernel and the latent kernel (rank 0.5, 2-bit), SmolLM2 shape,
# depth 32768, batch 1 and 16, each followed by its split combine. Run on the device machine from the
# repository root with .devcarry/debs carried (DESIGN 7); output on stdout.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/deps
nvidia-smi --query-gpu=name --format=csv,noheader
for f in .devcarry/debs/*.deb; do dpkg -x "$f" /tmp/deps; done
make -j16 DEPS_PREFIX=/tmp/deps/usr build/alrd-bench > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
for v in name=fp16 r=0.5,gh=3,k=2,v=2; do
    for B in 1 16; do
        echo "$v batch $B:"
        timeout 120 ncu --clock-control none --kernel-name regex:attn_ --launch-skip 60 --launch-count 2 \
            --section SpeedOfLight build/alrd-bench --synthetic smollm2-135m -d 32768 -b $B -p 16 -n 4 -r 1 -v $v 2>&1 |
            grep -E "  [a-z_]+kernel|SM Frequency|DRAM Throughput|Duration"
    done
done
