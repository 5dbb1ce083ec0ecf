#!/bin/sh
# Wall time and peak host RSS of alrd-compress on a Llama-3-8B-shaped checkpoint (issue 20: <= 5 minutes on one
# GPU and <= 16 GB of host RAM, the default command and the joint allocation). The checkpoint is random Q4_0
# weights with Llama-3-8B shapes (32 layers, hidden 4096, 32 heads / 8 KV heads, ffn 14336) from
# make_synthetic_7b.py --shape llama3-8b, made here if missing (~4.4 GB; needs Python with numpy and gguf).
# Default calibration (64 x 512 tokens of the validation text). Output: each run's summary lines, wall time and
# peak RSS.
#   BUILD=build MODEL=/tmp/l3-8b.Q4_0.gguf TOK=models/SmolLM2-135M-Instruct.Q4_1.gguf tests/bench/compress_8b.sh
# RUNS="rank0.5 joint-5x" (default both): the default-style run (--rank-ratio 0.5 --kv-bits 2) and the joint
# allocation (--kv-ratio 5 --hadamard).
set -eu
B=${BUILD:-build}; D=${ALRD_DATA:-../shared/data}/wikitext-2/wiki.valid.tokens
[ -f "$D" ] || D=${CALIB:?wiki.valid.tokens not found: set CALIB}
MODEL=${MODEL:-/tmp/l3-8b.Q4_0.gguf}
TOK=${TOK:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-/tmp}; DIR=${DIR:-/tmp} # logs; the written files
[ -f "$MODEL" ] || python3 tests/bench/make_synthetic_7b.py "$MODEL" --shape llama3-8b --tokenizer "$TOK"
timed() { # label, command...: runs it, prints its summary lines, wall time and peak RSS of the process tree
    label=$1; shift
    python3 - "$@" > "$OUT/compress-8b-$label.log" 2>&1 <<'PY' || { tail -5 "$OUT/compress-8b-$label.log"; exit 1; }
import resource, subprocess, sys, time
t = time.time()
rc = subprocess.call(sys.argv[1:], stderr=subprocess.STDOUT)
print(f"wall {time.time() - t:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1048576:.2f} GiB, rc {rc}")
sys.exit(rc)
PY
    grep -E "^(time|calibration loss|the written file|KV bytes|wall|joint|closed loop|chose)" "$OUT/compress-8b-$label.log" |
        sed "s/^/$label: /"
}
for run in ${RUNS:-rank0.5 joint-5x}; do
    case $run in
    rank0.5) timed rank0.5 $B/alrd-compress "$MODEL" -o "$DIR/l3-8b-r0.5.alrd" --calib "$D" --rank-ratio 0.5 \
        --kv-bits 2 ;;
    joint-5x) timed joint-5x $B/alrd-compress "$MODEL" -o "$DIR/l3-8b-joint5.alrd" --calib "$D" --kv-ratio 5 \
        --hadamard ;;
    *) echo "compress_8b.sh: unknown run $run (rank0.5, joint-5x)"; exit 2 ;;
    esac
done
