#!/bin/sh
# tests/gpu/device.sh A0|A|B|C|E|F|G|K|L|N|O|P|Q|R|S|T|W: the GPU checks as run on the device machine
# (docs/design.md 7). Logs go to $OUT.
#   A  (carry .devcarry/p1 + debs): build, unit tests, compute-sanitizer, the synthetic SmolLM2 /
#      llama2-7b speed tables (SmolLM2 also with the previous latent kernel) and the capacity
#      (--max-fit) table; keeps the first model part in /tmp/model. A0: only that and the build.
#   B  (same machine, within 30 s of A; carry p2 + debs + data): joins the model, compares GPU with CPU,
#      checks the GPU calibration statistics, compresses on the GPU, scores the whole test file and
#      times the real files (CHUNKS=K perplexity chunks).
#   E  (like B): the same checks for a file compressed on the CPU; with .devcarry/old (a git archive of
#      an older commit) also that build's test_gpu_model on it.
#   W  (like B): whole test file, GPU against CPU on one file (FILE=..., else compressed here on the GPU);
#      the CPU side in 16 shards through tests/bench/gpu_cpu_ppl.sh (FIRST/LAST: a range of chunks).
#   C: compute-sanitizer and a synthetic llama3-8b benchmark. K: unit tests, sanitizers, SmolLM2 speed
#   and the decode step's kernels by name (ncu). N: ncu's full report of the latent kernel.
#   G: unit tests, then step times under each of GVARS (space-separated settings, each VAR=v,VAR=v), in
#      that order, twice: llama2-7b fp16 at depth 4096 batch 1, SmolLM2 shape fp16 and rank 0.5 2-bit.
#   O: unit tests and memcheck, then alrd-bench of the tree against .devcarry/old's build, interleaved.
#   R: both attention kernels' duration and DRAM throughput at real clocks (ncu), depth 32768, batch 1 and 16.
#   F: units, sanitizers and every cache type's step time (the fast-decode table). Q: throughput at a fixed KV
#   budget (alrd-bench --kv-budget). P: speed and ncu probes of the attention kernels. S: unit tests, sanitizers, and the speed tables with
#   and without a setting (CMP=VAR=value) in the same run. T: the decode kernels' split count, swept.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
M=/tmp/model/m.gguf
D=.devcarry/data/wiki.test.raw
deps() { mkdir -p /tmp/deps; for f in .devcarry/debs/*.deb; do dpkg -x "$f" /tmp/deps; done; }
build() {
    make -j16 DEPS_PREFIX=/tmp/deps/usr build/libalrd.a build/alrd-run build/alrd-compress build/alrd-bench \
        build/tests/gpu/test_gpu_units build/tests/gpu/test_gpu_model build/tests/gpu/test_gpu_calib \
        > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
}
start() { # the first model part kept for a B/E/W that follows (when carried), the GPU's name, the build
    [ -d .devcarry/p1 ] && mkdir -p /tmp/model && cp .devcarry/p1/part_aa /tmp/model/ &
    deps
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader
    build
    wait
}
join_model() { cat /tmp/model/part_aa .devcarry/p2/part_a* > $M || exit 1; sha256sum $M; }
units() { timeout 200 build/tests/gpu/test_gpu_units > "$OUT/units.txt" 2>&1; tail -1 "$OUT/units.txt"; }
sanitize() { # compute-sanitizer memcheck and racecheck on a small run of the unit tests
    for tool in memcheck racecheck; do
        mode=--small; [ $tool = racecheck ] && mode=--race
        timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 build/tests/gpu/test_gpu_units $mode \
            > "$OUT/$tool.log" 2>&1
        echo "compute-sanitizer $tool: rc $?: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' "$OUT/$tool.log" | tail -1)"
        # racecheck reports hazards inside cuBLAS's own nvjet GEMM kernels (their synchronisation is not
        # visible to it; excluding them with --kernel-name-exclude crashed the tool): count the rest
        [ $tool = racecheck ] && echo "racecheck hazards outside cuBLAS (nvjet): \
$(grep 'Race reported' "$OUT/$tool.log" | grep -vc nvjet); in nvjet: $(grep 'Race reported' "$OUT/$tool.log" | grep -c nvjet)"
        grep -m3 -A3 "Error: " "$OUT/$tool.log" | grep -v nvjet | cut -c1-200
    done
}
sol() { # both attention kernels at the clocks a real run gets (ncu --clock-control none), SmolLM2 shape at
    # depth $1 and each batch of $2: duration and DRAM throughput of the fp16-cache kernel and the latent kernel
    # (rank 0.5, 2-bit), each followed by its split combine
    for v in name=fp16 r=0.5,gh=3,k=2,v=2; do
        for B in $2; do
            echo "$v batch $B:"
            timeout 120 ncu --clock-control none --kernel-name regex:attn_ --launch-skip 60 --launch-count 2 \
                --section SpeedOfLight build/alrd-bench --synthetic smollm2-135m -d $1 -b $B -p 16 -n 4 -r 1 -v $v \
                2>&1 | grep -E "  [a-z_]+kernel|SM Frequency|Duration|DRAM Throughput"
        done
    done
}
smollm2_speed() { # depths, repetitions: fp16 cache against rank 0.5 2-bit latents, then the latter on the previous kernel
    timeout 240 build/alrd-bench --synthetic smollm2-135m -d $1 -b 1,16 -p 512 -n 64 -r $2 \
        -v name=fp16 -v r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2 -o "$OUT/bench-smollm2.json" 2>&1 | grep tg | tee "$OUT/bench.log"
    ALRD_GPU_LATENT_V2=1 timeout 240 build/alrd-bench --synthetic smollm2-135m -d $1 -b 1,16 -p 512 -n 64 -r $2 \
        -v r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2-kernel-v2 -o "$OUT/bench-smollm2-v2.json" 2>&1 | grep tg \
        | tee -a "$OUT/bench.log"
}
model_checks() { # the GGUF against the CPU (4-bit cache, whole-file PPL), with a compression running beside
    timeout 240 build/tests/gpu/test_gpu_model $M $D --kv-bits 4 --chunks ${CHUNKS:-4} --full 2>&1 | tee "$OUT/model.log"
}
file_checks() { # FILE LABEL: its whole-file PPL at 16/4/2 bits on the GPU, its logits against the CPU,
                # and the real files' speed, the GGUF's then FILE's
    for b in 16 4 2; do
        echo "$2 kv-bits $b: $(build/alrd-run $1 --ppl $D --ctx 512 --kv-bits $b 2>/dev/null | grep PPL)"
    done | tee "$OUT/ppl.log"
    timeout 200 build/tests/gpu/test_gpu_model $1 $D --chunks ${CHUNKS:-4} 2>&1 | tee "$OUT/alrd.log"
    timeout 200 build/alrd-bench $M -d 0,512,32768 -b 1,16 -p 512 -n 64 -r 2 -v name=gguf-fp16 \
        -o "$OUT/bench-real-fp16.json" | grep tg | tee "$OUT/bench-real.log"
    timeout 200 build/alrd-bench $1 -d 0,512,32768 -b 1,16 -p 512 -n 64 -r 2 -v name=alrd-r0.5-k2v2 \
        -o "$OUT/bench-real-alrd.json" | grep tg | tee -a "$OUT/bench-real.log"
}
COMPRESS="--calib .devcarry/data/wiki.valid.tokens --rank-ratio 0.5 --kv-bits 2"
case "${1:-}" in
F) # the fast-decode table: units, sanitizers, then every cache type's step time at depths FDEPTHS
   # (0,512,4096,32768), batch 1 and 16, SmolLM2 shape, one alrd-bench run (same machine, tg64)
    start
    units
    grep -E "FAIL|full K|fp16 K" "$OUT/units.txt" | cut -c1-220
    [ "${SAN:-1}" = 1 ] && sanitize
    timeout 420 build/alrd-bench --synthetic smollm2-135m -d ${FDEPTHS:-0,512,4096,32768} -b 1,16 -p 16 -n 64 -r 2 \
        -v name=fp16 -v k=4,v=4,name=kivi4 -v k=2,v=2,name=kivi2 -v k=3,v=3,name=kivi3 -v k=16,v=2,name=k16-v2 \
        ${FLATENT--v r=0.5,gh=3,k=16,v=16,name=r0.5-16bit -v r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2} \
        -o "$OUT/bench-fast.json" 2>&1 | grep -E "tg|error|alrd-bench" | tee "$OUT/bench-fast.log"
    ;;
Q) # throughput at a fixed KV budget (KVB, default 64GiB): as many sequences as fit at context 32768 + 32, per cache
   # type, SmolLM2 shape and Llama-3-8B shape
    start
    for S in smollm2-135m llama3-8b; do
        gh=1; [ $S = smollm2-135m ] && gh=3
        timeout 280 build/alrd-bench --synthetic $S --kv-budget ${KVB:-64GiB} -d ${QDEPTHS:-32768} -p 16 -n 32 -r 1 \
            -v name=fp16 -v k=2,v=2,name=kivi2 -v k=4,v=4,name=kivi4 -v r=0.5,gh=$gh,k=2,v=2,name=r0.5-k2v2 \
            -o "$OUT/budget-$S.json" 2>&1 | grep -E "tg|kv-budget|alrd-bench" | tee -a "$OUT/budget.log"
    done
    ;;
A0) # only the first model part and the build, for a B (or L) that follows
    start
    ;;
L) # (like B: after A0, carry p2 + debs + .devcarry/anchors with the llama.cpp snapshot) llama.cpp against alrd on
   # the real GGUF, one table (tests/bench/vs_llamacpp.sh)
    join_model
    deps
    build
    sh tests/bench/vs_llamacpp.sh $M .devcarry/anchors/llama.cpp-c392e509.tar.gz "$OUT" | tee "$OUT/vs-llamacpp.md"
    tar czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs" # at most 8 files come back
    ;;
A) # units, compute-sanitizer, the synthetic speed tables and the capacity table; keeps model part 1 for B
    start
    units
    sanitize
    smollm2_speed 0,512,4096,32768 3
    timeout 200 build/alrd-bench --synthetic llama2-7b -d 0,4096,32768 -b 1,16 -p 512 -n 32 -r 2 \
        -v name=fp16 -v r=0.5,gh=1,k=2,v=2,name=r0.5-k2v2 -o "$OUT/bench-llama2.json" | grep tg | tee -a "$OUT/bench.log"
    for S in smollm2-135m llama2-7b; do
        gh=1; [ $S = smollm2-135m ] && gh=3
        timeout 150 build/alrd-bench --synthetic $S -b 1,16,64 -p 64 --max-fit 4194304 -v name=fp16 \
            -v r=0.5,gh=$gh,k=2,v=2,name=r0.5-k2v2 -o "$OUT/fit-$S.json" | tee -a "$OUT/fit.log"
    done
    ;;
B) # the real model: GPU vs CPU, GPU calibration, alrd-compress on the GPU, whole-file PPL, real-file speed
    join_model
    deps
    build
    ( /usr/bin/time -f "compress wall %e s, peak RSS %M KB" build/alrd-compress $M -o /tmp/x.alrd $COMPRESS \
        > "$OUT/compress.log" 2>&1 ) 2>> "$OUT/compress.log" &
    model_checks
    timeout 120 build/tests/gpu/test_gpu_calib $M .devcarry/data/wiki.valid.tokens 2>&1 | tee "$OUT/calib.log"
    wait
    grep -E "calibration|time:|wall|KV bytes" "$OUT/compress.log"
    file_checks /tmp/x.alrd "x.alrd (GPU-calibrated r0.5)"
    build/alrd-run $M -p "The capital of France is" -n 24 2>&1 | tee "$OUT/gen.log"
    ;;
E) # B's checks for a file compressed on the CPU (one OpenBLAS thread, as tests/bench/gpu_cpu_ppl.sh does;
   # the file still differs from the one made on the 2-core machine), and optionally an older build's
    join_model
    deps
    build
    ( OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell build/alrd-compress $M -o /tmp/c.alrd $COMPRESS --cpu \
        > "$OUT/compress.log" 2>&1; sha256sum /tmp/c.alrd >> "$OUT/compress.log" ) &
    model_checks
    wait
    tail -2 "$OUT/compress.log"
    file_checks /tmp/c.alrd "c.alrd (CPU-calibrated r0.5)"
    if [ -d .devcarry/old ]; then # the same check with an older build (carry .devcarry/old: git archive of it)
        ( cd .devcarry/old && make -j16 DEPS_PREFIX=/tmp/deps/usr build/tests/gpu/test_gpu_model > "$OUT/old-build.log" 2>&1 ) &&
            timeout 200 .devcarry/old/build/tests/gpu/test_gpu_model /tmp/c.alrd $D --chunks ${CHUNKS:-4} 2>&1 | sed 's/^/old: /'
    fi
    ;;
W) # whole wiki.test.raw at --ctx 512, GPU against CPU on one file (rank 0.5, 2-bit keys and values): FILE
   # (e.g. one carried here in parts and joined), else one compressed here on the GPU; the CPU run in 16
   # single-thread shards of chunks (FIRST..LAST, default all) combined by their NLL lines
    deps
    build
    F=${FILE:-/tmp/x.alrd}
    if [ -z "${FILE:-}" ]; then
        join_model
        build/alrd-compress $M -o $F $COMPRESS > "$OUT/compress.log" 2>&1 || { tail -3 "$OUT/compress.log"; exit 1; }
    fi
    sha256sum $F
    for b in ${BITS:-2 16}; do
        build/alrd-run $F --ppl $D --ctx 512 --kv-bits $b --first-chunk ${FIRST:-0} \
            --chunks $(( ${LAST:-594} - ${FIRST:-0} + 1 )) 2>/dev/null | grep -E "PPL|NLL" | sed "s/^/GPU kv-bits $b: /"
    done | tee "$OUT/whole.log"
    OUTF=$F TEXT=$D SHARDS=16 sh tests/bench/gpu_cpu_ppl.sh | tee -a "$OUT/whole.log"
    ;;
C)
    sanitize
    timeout 200 build/alrd-bench --synthetic llama3-8b -d 0,32768 -b 1,16 -p 512 -n 64 -r 2 \
        -v name=fp16 -v r=0.5,gh=1,k=2,v=2,name=r0.5-k2v2 -o "$OUT/bench-llama3.json" 2>&1 | tee "$OUT/bench3.log"
    ;;
P) # units, SmolLM2-shaped speed (fp16 cache vs rank 0.5 2-bit latents), an ncu look at both attention
   # kernels (NCU_SRC=1: the latent kernel's top stall lines); keeps the first model part for a B
    start
    units
    S=smollm2-135m
    smollm2_speed ${DEPTHS:-0,512,32768} 2
    [ "${NCU:-1}" = 1 ] && for v in name=fp16 r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2; do
        timeout 120 ncu --kernel-name regex:attn_ --launch-skip 60 --launch-count 2 --section SpeedOfLight \
            --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
            --section SchedulerStats build/alrd-bench --synthetic $S -d 32768 -b ${NCU_B:-1} -p 16 -n 4 -r 1 -v $v \
            > "$OUT/ncu-${v##*=}.log" 2>&1
        grep -E "  [a-z_]+kernel|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Issued Warp|Grid Size" "$OUT/ncu-${v##*=}.log" | head -30
    done
    if [ -n "${FIT:-}" ]; then # the largest batch x context that fits, fp16 cache against rank 0.5 2-bit latents
        timeout 200 build/alrd-bench --synthetic smollm2-135m -b 1,16,64 --max-fit 16777216 -v name=fp16 \
            -v r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2 -o "$OUT/fit-smollm2.json" | tee "$OUT/fit.log"
        timeout 200 build/alrd-bench --synthetic llama2-7b -b 1,16,64 --max-fit 16777216 -v name=fp16 \
            -v r=0.5,gh=1,k=2,v=2,name=r0.5-k2v2 -o "$OUT/fit-llama2.json" | tee -a "$OUT/fit.log"
    fi
    ;;
N) # ncu's full report of one attention kernel (NCU_KERNEL, default attn_latent; NCU_V: the alrd-bench variant,
   # default rank 0.5 2-bit) at depth NCU_D (32768), batch NCU_B (16), SmolLM2 shape: its sections, and per-SASS-line counters as CSV for tests/gpu/sass_hot.py (its summary printed)
    deps
    build
    # NCU_BIN: another build's alrd-bench (e.g. .devcarry/old/build/alrd-bench, built beforehand); NCU_SET:
    # ncu's section set (full)
    timeout 300 ncu --kernel-name regex:${NCU_KERNEL:-attn_latent} --launch-skip 60 --launch-count 1 --set ${NCU_SET:-full} \
        --section SourceCounters --import-source yes -o "$OUT/lat" ${NCU_BIN:-build/alrd-bench} --synthetic smollm2-135m \
        -d ${NCU_D:-32768} -b ${NCU_B:-16} -p 16 -n 2 -r 1 -v ${NCU_V:-r=0.5,gh=3,k=2,v=2} > "$OUT/ncu-run.log" 2>&1
    tail -3 "$OUT/ncu-run.log"
    ncu -i "$OUT/lat.ncu-rep" --page details > "$OUT/lat-details.txt" 2>&1
    grep -E "Duration|Registers|Achieved Occupancy|Theoretical Occupancy|Issued Warp|No Eligible|Active Warps|Eligible Warps|Executed Ipc|Block Limit|Stall|L1/TEX Hit|L2 Hit|DRAM Through|Compute \(SM\) Through|Memory Through|Bank" "$OUT/lat-details.txt" | head -60
    ncu -i "$OUT/lat.ncu-rep" --page source --csv --print-source sass > "$OUT/lat-src.csv" 2>/dev/null
    python3 tests/gpu/sass_hot.py "$OUT/lat-src.csv" 30 > "$OUT/lat-hot.txt" 2>&1; head -20 "$OUT/lat-hot.txt"
    rm -f "$OUT/lat.ncu-rep"
    gzip -9 "$OUT/lat-src.csv"
    [ -n "${NCU_TAG:-}" ] && for f in lat-src.csv.gz lat-details.txt lat-hot.txt; do mv "$OUT/$f" "$OUT/$NCU_TAG-$f"; done
    [ "${NCU_SOL:-1}" = 1 ] || exit 0
    sol ${NCU_D:-32768} ${NCU_B:-16}
    ;;
R) # both attention kernels at real clocks, depth 32768, batch 1 and 16 (the README's kernel times)
    deps
    nvidia-smi --query-gpu=name --format=csv,noheader
    build
    sol 32768 "1 16"
    ;;
K) # units, compute-sanitizer, SmolLM2-shaped speed, and each decode step's kernels by name (ncu, one step's
   # worth: gpu__time_duration per kernel, summed; PROF_ALL=1 adds depth 512 and llama2-7b at depth 4096)
    start
    units
    [ "${SAN:-1}" = 1 ] && sanitize
    smollm2_speed ${DEPTHS:-0,512,32768} 3
    prof() { # name, then alrd-bench arguments: the kernels of n decode steps, total us per step by kernel
        tag=$1; shift
        timeout 150 ncu --profile-from-start off --cache-control none --clock-control none \
            --metrics gpu__time_duration.sum --csv \
            build/alrd-bench "$@" -p 16 -n 2 -r 1 > "$OUT/prof-$tag.csv" 2>&1
        python3 tests/gpu/kernel_table.py "$OUT/prof-$tag.csv" 2 "$tag"
    }
    [ "${PROF:-1}" = 1 ] && {
        prof s-fp16-d0 --synthetic smollm2-135m -d 0 -b 1 -v name=fp16
        prof s-r05-d0 --synthetic smollm2-135m -d 0 -b 1 -v r=0.5,gh=3,k=2,v=2
        [ -n "${PROF_ALL:-}" ] && prof s-r05-d512 --synthetic smollm2-135m -d 512 -b 1 -v r=0.5,gh=3,k=2,v=2
        [ -n "${PROF_ALL:-}" ] && prof l-fp16-d4096 --synthetic llama2-7b -d 4096 -b 1 -v name=fp16
        prof s-r05-d32768-b16 --synthetic smollm2-135m -d 32768 -b 16 -v r=0.5,gh=3,k=2,v=2
    }
    ;;
S) # units, sanitizers, and the speed tables in the same run with and without a setting (CMP, default
   # ALRD_GPU_PDL=0: kernels launched without programmatic dependent launch): SmolLM2 shape fp16 and rank 0.5
   # 2-bit at DEPTHS (0,512,32768), batch 1 and 16 (SV: more -v variants); llama2-7b fp16 at depth 4096 and
   # 32768, batch 1
    start
    units
    [ "${SAN:-1}" = 1 ] && sanitize
    CMP=${CMP:-ALRD_GPU_PDL=0}
    for pass in new cmp; do
        pre=; [ $pass = cmp ] && pre="env $CMP"
        $pre timeout 240 build/alrd-bench --synthetic smollm2-135m -d ${DEPTHS:-0,512,32768} -b 1,16 -p 512 -n 64 \
            -r 3 -v name=fp16-$pass -v r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2-$pass ${SV:-} -o "$OUT/bench-s-$pass.json" 2>&1 | grep tg
        $pre timeout 200 build/alrd-bench --synthetic llama2-7b -d 4096,32768 -b 1 -p 512 -n 32 -r 2 \
            -v name=l-fp16-$pass -o "$OUT/bench-l-$pass.json" | grep tg
    done | tee "$OUT/bench.log"
    ;;
T) # splits of the decode kernels: step times at TDEPTHS (32768) (SmolLM2 shape, fp16 and rank 0.5 2-bit, batch 1
   # and 16) with the default (whole waves) and fixed ALRD_GPU_NSPLIT values, and ncu's DRAM throughput of
   # the fp16 kernel with the default
    start
    units
    for ns in default ${NSPLITS:-64 128 256}; do
        pre=; [ $ns != default ] && pre="env ALRD_GPU_NSPLIT=$ns"
        for d in ${TDEPTHS:-32768}; do
            $pre build/alrd-bench --synthetic smollm2-135m -d $d -b ${TB:-1,16} -p 16 -n 64 -r 3 -v name=fp16-ns-$ns \
                -v r=0.5,gh=3,k=2,v=2,name=r0.5-k2v2-ns-$ns 2>&1 | grep tg
        done
        [ -n "${TL:-1}" ] && $pre build/alrd-bench --synthetic llama2-7b -d 4096 -b 1 -p 16 -n 32 -r 2 \
            -v name=l-fp16-ns-$ns 2>&1 | grep tg
    done | tee "$OUT/nsplit.log"
    # ncu's default locks the clocks at base (1.28 GHz SM here); CLOCKS=none measures at the clocks a real run
    # gets (the step times above), with the caches left as the previous kernels leave them
    cc=; [ "${CLOCKS:-base}" = none ] && cc="--clock-control none --cache-control none"
    for B in 1 16; do
        timeout 120 ncu $cc --kernel-name regex:attn_ --launch-skip 60 --launch-count 2 --section SpeedOfLight \
            --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy build/alrd-bench --synthetic smollm2-135m \
            -d 32768 -b $B -p 16 -n 4 -r 1 -v name=fp16 > "$OUT/ncu-fp16-b$B.log" 2>&1
        echo "fp16 kernels, batch $B:"; grep -E "  [a-z_]+kernel|SM Frequency|Duration|DRAM Throughput|L2 Cache Throughput|Grid Size" "$OUT/ncu-fp16-b$B.log"
    done
    ;;
G) # step times under several settings (GVARS), interleaved twice in one run
    start
    units
    for rep in 1 2; do
        for v in ${GVARS:-ALRD_GPU_PDL=1}; do
            pre="env $(echo $v | tr , ' ')"
            $pre timeout 100 build/alrd-bench --synthetic llama2-7b -d 4096 -b 1 -p 512 -n 32 -r 2 -v name=l-fp16 \
                2>&1 | grep tg | sed "s/^/$v  /"
            $pre timeout 100 build/alrd-bench --synthetic smollm2-135m -d ${GDEPTHS:-0,32768} -b 1,16 -p 512 -n 64 -r 2 \
                -v name=s-fp16 -v r=0.5,gh=3,k=2,v=2,name=s-r0.5 2>&1 | grep tg | sed "s/^/$v  /"
        done
    done | tee "$OUT/gvars.log"
    ;;
O) # the tree against .devcarry/old (a git archive of an older commit, built beside): unit tests and
   # memcheck of the tree, then both builds' alrd-bench interleaved twice (SmolLM2 shape at ODEPTHS, fp16
   # and rank 0.5 2-bit, or the -v variants in OVARS; OV: more -v variants)
    start
    (cd .devcarry/old && make -j16 DEPS_PREFIX=/tmp/deps/usr build/alrd-bench > "$OUT/build-old.log" 2>&1) &
    units
    [ "${SAN:-1}" = 1 ] && sanitize
    wait
    for rep in 1 2; do
        for bin in build .devcarry/old/build; do
            timeout 200 $bin/alrd-bench --synthetic smollm2-135m -d ${ODEPTHS:-0,512,32768} -b 1,16 -p 512 -n 64 \
                -r 2 ${OVARS:--v name=fp16 -v r=0.5,gh=3,k=2,v=2,name=r0.5} ${OV:-} 2>&1 | grep tg | sed "s|^|$bin  |"
        done
    done | tee "$OUT/oldnew.log"
    python3 tests/gpu/oldnew_table.py "$OUT/oldnew.log"
    ;;
*)
    echo "usage: tests/gpu/device.sh A0|A|B|C|E|G|K|N|O|P|R|S|T|W"; exit 2 ;;
esac
