#!/bin/sh
# Time and peak RSS of compressing the default model end to end with the
# default calibration (64 x 512 = 32,768 tokens of wiki.valid.tokens).
set -eu
B=${BUILD:-build}; D=${ALRD_DATA:-../shared/data}
mkdir -p out
/usr/bin/time -f "alrd-compress: %e s wall, %U s user, peak RSS %M KB" \
    $B/alrd-compress models/SmolLM2-135M-Instruct.Q4_1.gguf -o out/time-r0.5.alrd \
    --calib $D/wikitext-2/wiki.valid.tokens --rank-ratio 0.5 2>&1 | grep -E "^(time|alrd-compress|calibration loss|KV bytes)"
