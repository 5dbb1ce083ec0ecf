#!/bin/sh
# Peak RSS and wall time of alrd-compress on a Llama-2-7B-shaped checkpoint
# (issue #3: a 7B model must compress within 16 GB of RAM). The checkpoint
# is random Q4_0 weights with 7B shapes from make_synthetic_7b.py (made here
# if missing, ~3.9 GB). Small calibration: the forward of a 7B costs ~14
# GFLOP per token. Output: the tool's summary, wall time and peak RSS.
#   BUILD=build MODEL=models/synthetic-7b.Q4_0.gguf OUT=/tmp/x7b.alrd tests/bench/compress_7b.sh
set -eu
B=${BUILD:-build}; D=${ALRD_DATA:-../shared/data}
MODEL=${MODEL:-models/synthetic-7b.Q4_0.gguf}
OUT=${OUT:-/tmp/x7b.alrd}
df -h "$(dirname "$MODEL")" "$(dirname "$OUT")" "${TMPDIR:-/tmp}" >&2
[ -f "$MODEL" ] || python3 tests/bench/make_synthetic_7b.py "$MODEL"
LOG=${LOG:-/tmp/compress_7b.log}
/usr/bin/time -v $B/alrd-compress "$MODEL" -o "$OUT" --calib $D/wikitext-2/wiki.valid.tokens \
    --rank-ratio 0.5 --calib-samples 2 --calib-len 256 --probe-tokens 32 > "$LOG" 2>&1 || { tail -5 "$LOG"; exit 1; }
grep -E "^(alrd-compress|time|calibration loss|KV bytes|wrote)" "$LOG"
grep -E "Elapsed \(wall clock\)|Maximum resident set size|User time|System time" "$LOG"
