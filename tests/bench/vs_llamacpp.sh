#!/bin/sh
# tests/bench/vs_llamacpp.sh MODEL.gguf LLAMA_TARBALL [OUTDIR]: decode speed of llama.cpp and alrd on the same GPU,
# in one run, on the same GGUF: llama.cpp's llama-batched-bench (flash attention; f16, q8_0 and q4_0 caches)
# and alrd-bench (fp16, KIVI-4, KIVI-2 caches), tg128 after a prompt of P tokens, B sequences.
# Prints one table: tokens/s per (cache, depth, batch) for both. Needs a CUDA machine with cmake; builds
# llama.cpp from the source snapshot (../shared/anchors, about 2.5 minutes with 16 jobs) into /tmp/lc; run it
# from the repository root after `make` (it uses build/alrd-bench). DEPTHS (512,4096) and BATCHES (1,16) choose the grid; depth
# 32768 at batch 1 is added for the fp16 caches (XDEPTH=0 leaves it out).
set -eu
MODEL=$1
TARBALL=$2
OUT=${3:-/tmp/vs-llamacpp}
DEPTHS=${DEPTHS:-512,4096}
BATCHES=${BATCHES:-1,16}
XDEPTH=${XDEPTH:-32768}
JOBS=${JOBS:-16}
LOGS=$OUT/logs # each run's log; the table and the tsv files stay in $OUT
mkdir -p "$OUT" "$LOGS"
if [ ! -x /tmp/lc/build/bin/llama-batched-bench ]; then
    mkdir -p /tmp/lc && tar xzf "$TARBALL" -C /tmp/lc
    (cd /tmp/lc && cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 > "$LOGS/lc-cmake.log" 2>&1 &&
        cmake --build build -j"$JOBS" --target llama-batched-bench > "$LOGS/lc-build.log" 2>&1) ||
        { tail -20 "$LOGS/lc-build.log" "$LOGS/lc-cmake.log" 2>/dev/null; exit 1; }
fi
echo "llama.cpp: $(basename "$TARBALL" .tar.gz), llama-batched-bench -fa, default CUDA build (sm_90)"
: > "$OUT/llamacpp.tsv"
lcrun() { # cache type, depth, batch: one llama-batched-bench run, its decode tokens/s (S_TG) to the table
    ctx=$(($3 * ($2 + 128) + 256))
    timeout 300 /tmp/lc/build/bin/llama-batched-bench -m "$MODEL" -c $ctx -b 2048 -ub 512 -ngl 99 -fa \
        -ctk $1 -ctv $1 -npp $2 -ntg 128 -npl $3 > "$LOGS/lc-$1-$2-$3.log" 2>&1 || true
    # the result row: |PP|TG|B|N_KV|T_PP|S_PP|T_TG|S_TG|T|S|
    tg=$(awk -F'|' -v p=$2 -v b=$3 '$2+0 == p && $4+0 == b { gsub(/ /, "", $9); print $9 }' "$LOGS/lc-$1-$2-$3.log" | tail -1)
    printf 'llama.cpp %s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${tg:-failed}" >> "$OUT/llamacpp.tsv"
}
for T in f16 q8_0 q4_0; do
    for d in $(echo $DEPTHS | tr , ' '); do
        for b in $(echo $BATCHES | tr , ' '); do lcrun $T $d $b; done
    done
done
[ "$XDEPTH" != 0 ] && lcrun f16 $XDEPTH 1
ADEPTHS=$DEPTHS
[ "$XDEPTH" != 0 ] && ADEPTHS=$DEPTHS,$XDEPTH
timeout 400 build/alrd-bench "$MODEL" -d $ADEPTHS -b $BATCHES -p 512 -n 128 -r 2 \
    -v name=fp16 -v k=4,v=4,name=kivi4 -v k=2,v=2,name=kivi2 -o "$OUT/alrd.json" > "$LOGS/alrd.log" 2>&1 || true
# alrd-bench rows: NAME tg128 d=D b=B X tok/s ...
awk '$2 == "tg128" { sub("d=", "", $3); sub("b=", "", $4); printf "alrd %s\t%s\t%s\t%s\n", $1, $3, $4, $5 }' \
    "$LOGS/alrd.log" > "$OUT/alrd.tsv"
echo "| runtime, cache | depth | batch | decode tok/s |"
echo "| --- | --- | --- | --- |"
cat "$OUT/llamacpp.tsv" "$OUT/alrd.tsv" | sort -t"$(printf '\t')" -k2,2n -k3,3n -s |
    awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
