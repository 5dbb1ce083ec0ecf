#!/bin/sh
# tests/gpu/sweep_v3.sh: the fp16 flash-decoding kernel's warps per block and
# ring stages (ALRD_NW3 x ALRD_ST3), each built into its own alrd-bench and
# timed with ncu (kernel DRAM throughput) and alrd-bench (step time) on the
# SmolLM2 shape at depth 32768. Needs a built tree (tests/gpu/device.sh P).
OUT=${OUT:-/tmp/out}
NV="-O3 -std=c++17 -arch=sm_90a -Xcompiler -Wall,-Werror -lineinfo"
for cfg in ${CFGS:-4x3 4x4 8x3 8x2 2x4}; do
    nw=${cfg%x*}; st=${cfg#*x}; d=/tmp/v3-$cfg; mkdir -p $d
    ( nvcc $NV -DALRD_NW3=$nw -DALRD_ST3=$st -c kernels/gpu_attn.cu -o $d/gpu_attn.o &&
      cp build/libalrd.a $d/lib.a && cp $d/gpu_attn.o $d/kernels_gpu_attn.o &&
      ar d $d/lib.a gpu_attn.o && ar rcs $d/lib.a $d/gpu_attn.o &&
      gcc -std=c11 -O2 -D_GNU_SOURCE -DALRD_CUDA=1 -I/tmp/deps/usr/include tools/alrd-bench.c -o $d/alrd-bench $d/lib.a \
          -L/tmp/deps/usr/lib/x86_64-linux-gnu -lcjson -llapacke -lopenblas -lz -lm -pthread -L/usr/local/cuda/lib64 \
          -Wl,-rpath,/usr/local/cuda/lib64 -Wl,-rpath,/tmp/deps/usr/lib/x86_64-linux-gnu -lcublasLt -lcublas -lcudart -lstdc++ ) \
        > $d/build.log 2>&1 &
done
wait
for cfg in ${CFGS:-4x3 4x4 8x3 8x2 2x4}; do
    d=/tmp/v3-$cfg
    [ -x $d/alrd-bench ] || { echo "$cfg: build failed"; tail -5 $d/build.log; continue; }
    for b in 1 16; do
        r=$(timeout 60 ncu --kernel-name regex:attn_fp16 --launch-skip 60 --launch-count 1 --section SpeedOfLight \
            $d/alrd-bench --synthetic smollm2-135m -d 32768 -b $b -p 16 -n 4 -r 1 -v name=fp16 2>&1 |
            grep -E "DRAM Throughput|Duration" | awk '{print $NF}' | tr '\n' ' ')
        t=$($d/alrd-bench --synthetic smollm2-135m -d 32768 -b $b -p 16 -n 64 -r 3 -v name=fp16 | grep tg | sed 's/.*step *//')
        echo "NW3xST3 $cfg b=$b: ncu DRAM% / us: $r | step $t" | tee -a "$OUT/sweep_v3.log"
    done
done
