#!/bin/sh
# tests/gpu/sweep_v3.sh: the fp16 flash-decoding kernel's warps per block and
# ring stages (ALRD_NW3 x ALRD_ST3), each built into its own alrd-bench and
# timed with ncu (kernel DRAM throughput) and alrd-bench (step time) on the
# SmolLM2 shape at depth 32768. Needs the cJSON debs unpacked in /tmp/deps
# (tests/gpu/device.sh P does that).
OUT=${OUT:-/tmp/out}
NV="-O3 -std=c++17 -arch=sm_90a -Xcompiler -Wall,-Werror -lineinfo -MMD -MP"
for cfg in ${CFGS:-4x3 4x4 8x3 8x2 2x4}; do # one build tree per configuration, built side by side
    nw=${cfg%x*}; st=${cfg#*x}
    make -j4 BUILD=/tmp/v3-$cfg DEPS_PREFIX=/tmp/deps/usr NVFLAGS="$NV -DALRD_NW3=$nw -DALRD_ST3=$st" \
        /tmp/v3-$cfg/alrd-bench > /tmp/v3-$cfg.log 2>&1 &
done
wait
cc=; [ "${CLOCKS:-base}" = none ] && cc="--clock-control none --cache-control none" # CLOCKS=none: a real run's clocks
for cfg in ${CFGS:-4x3 4x4 8x3 8x2 2x4}; do
    d=/tmp/v3-$cfg
    [ -x $d/alrd-bench ] || { echo "$cfg: build failed"; tail -5 /tmp/v3-$cfg.log; continue; }
    for b in 1 16; do
        r=$(timeout 60 ncu $cc --kernel-name regex:attn_fp16 --launch-skip 60 --launch-count 1 --section SpeedOfLight \
            $d/alrd-bench --synthetic smollm2-135m -d 32768 -b $b -p 16 -n 4 -r 1 -v name=fp16 2>&1 |
            grep -E "DRAM Throughput|Duration" | awk '{print $NF}' | tr '\n' ' ')
        t=$($d/alrd-bench --synthetic smollm2-135m -d 32768 -b $b -p 16 -n 64 -r 3 -v name=fp16 | grep tg | sed 's/.*step *//')
        echo "NW3xST3 $cfg b=$b: ncu DRAM% / us: $r | step $t" | tee -a "$OUT/sweep_v3.log"
    done
done
