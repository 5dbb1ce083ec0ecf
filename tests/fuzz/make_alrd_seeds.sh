#!/bin/sh
# Makes the .alrd seeds of fuzz_alrd from the micro model (run from the repo
# root after `make` and tests/fuzz/make_seeds.py): plain, f32 weights, and
# a fixed-ranks variant with 4-bit cache defaults.
set -e
M=tests/fuzz/corpus/gguf/micro-llama-f32.gguf
D=tests/fuzz/corpus/alrd
T=$(mktemp -d)
mkdir -p $D
i=0; while [ $i -lt 40 ]; do printf 'ab ab ab a b ab\n' >> $T/calib.txt; i=$((i+1)); done
O="--calib $T/calib.txt --calib-samples 2 --calib-len 32 --probe-tokens 32"
./build/alrd-compress $M -o $D/micro.alrd $O 2>/dev/null
./build/alrd-compress $M -o $D/micro-f32.alrd $O --weights f32 --rank-ratio 1 2>/dev/null
printf '{"model.layers.0.self_attn.v_proj": 8}\n' > $T/ranks.json
./build/alrd-compress $M -o $D/micro-vonly.alrd $O --ranks $T/ranks.json --kv-bits 4 --group-size 4 --residual 8 2>/dev/null
rm -f $D/*.ranks.json
python3 tests/fuzz/alrd_inflate.py $D/micro.alrd $D/micro-raw.alrd
rm -rf $T
