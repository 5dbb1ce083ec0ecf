#!/bin/sh
# tests/gpu/device.sh A0|A|B|C: the GPU checks as run on the device machine
# (DESIGN 7). A carries .devcarry/p1 + debs: builds, runs the unit tests and
# a synthetic llama2-7b benchmark, keeps the first model part in /tmp/model
# (A0: only that and the build). B (same machine, within 30 s of A) carries
# p2 + debs + data: joins the model, makes a .alrd, and compares GPU with
# CPU on both (CHUNKS=K perplexity chunks). C: compute-sanitizer memcheck and
# racecheck, and a synthetic llama3-8b benchmark. Logs go to $OUT.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
deps() { mkdir -p /tmp/deps; for f in .devcarry/debs/*.deb; do dpkg -x "$f" /tmp/deps; done; }
build() {
    make -j16 DEPS_PREFIX=/tmp/deps/usr build/libalrd.a build/alrd-run build/alrd-compress build/alrd-bench \
        build/tests/gpu/test_gpu_units build/tests/gpu/test_gpu_model \
        > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
}
M=/tmp/model/m.gguf
D=.devcarry/data/wiki.test.raw
case "${1:-}" in
A0) # only the first model part and the build, for a B that follows
    mkdir -p /tmp/model && cp .devcarry/p1/part_aa /tmp/model/ &
    deps
    build
    wait
    ;;
A)
    mkdir -p /tmp/model && cp .devcarry/p1/part_aa /tmp/model/ &
    deps
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader
    build
    wait
    timeout 200 build/tests/gpu/test_gpu_units 2>&1 | tee "$OUT/units.log"
    timeout 300 build/alrd-bench --synthetic llama2-7b -d 0,4096,32768 -b 1,16 -p 512 -n 64 -r 2 \
        -v name=fp16 -v r=0.5,gh=1,k=2,v=2,name=r0.5-k2v2 -o "$OUT/bench-llama2.json" 2>&1 | tee "$OUT/bench.log"
    ;;
B)
    cat /tmp/model/part_aa .devcarry/p2/part_ab .devcarry/p2/part_ac > $M || exit 1
    sha256sum $M
    deps
    build
    build/alrd-compress $M -o /tmp/x.alrd --calib .devcarry/data/wiki.valid.tokens --rank-ratio 0.5 \
        --calib-samples 8 --probe-tokens 128 --kv-bits 2 > "$OUT/compress.log" 2>&1 &
    timeout 240 build/tests/gpu/test_gpu_model $M $D --kv-bits 4 --chunks ${CHUNKS:-4} --full 2>&1 | tee "$OUT/model.log"
    wait
    tail -3 "$OUT/compress.log"
    timeout 200 build/tests/gpu/test_gpu_model /tmp/x.alrd $D --kv-bits 4 --chunks ${CHUNKS:-4} --full 2>&1 | tee "$OUT/alrd.log"
    build/alrd-run $M -p "The capital of France is" -n 24 2>&1 | tee "$OUT/gen.log"
    ;;
C)
    for tool in memcheck racecheck; do
        mode=--small; [ $tool = racecheck ] && mode=--race
        timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 build/tests/gpu/test_gpu_units $mode \
            > "$OUT/$tool.log" 2>&1
        echo "compute-sanitizer $tool: rc $?: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY\|passed' "$OUT/$tool.log" | tail -2 | tr '\n' ' ')"
    done
    timeout 200 build/alrd-bench --synthetic llama3-8b -d 0,32768 -b 1,16 -p 512 -n 64 -r 2 \
        -v name=fp16 -v r=0.5,gh=1,k=2,v=2,name=r0.5-k2v2 -o "$OUT/bench-llama3.json" 2>&1 | tee "$OUT/bench3.log"
    ;;
*)
    echo "usage: tests/gpu/device.sh A0|A|B|C"; exit 2 ;;
esac
