#!/bin/bash
# The rank table of the README: PPL on the whole wiki.test.raw at ctx 512
# for rank ratios 1.0 .. 0.25, each (a) whitened + searched ranks,
# (b) whitened + uniform, (c) plain SVD + uniform; calibrated on
# wiki.valid.tokens. alrd-run uses the GPU when one is present.
#   tests/bench/rank_table.sh OUTDIR [PARALLEL_COMPRESS] [CHUNKS]
set -euo pipefail
out=${1:-out/rank-table}; par=${2:-1}; chunks=${3:-0}
B=${BUILD:-build}; M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
D=${ALRD_DATA:-../shared/data}
C=${CALIB:-$D/wikitext-2/wiki.valid.tokens}; T=${EVAL:-$D/wikitext-2-raw/wiki.test.raw}
mkdir -p "$out"
configs=("r1.00-search:--rank-ratio 1.0")
for r in 0.75 0.5 0.375 0.25; do
  configs+=("r$r-search:--rank-ratio $r" "r$r-uniform:--rank-ratio $r --uniform" "r$r-plain:--rank-ratio $r --uniform --no-whiten")
done
# compress, PARALLEL at a time
i=0
for cfg in "${configs[@]}"; do
  name=${cfg%%:*}; args=${cfg#*:}
  [ -f "$out/$name.alrd" ] || { $B/alrd-compress "$M" -o "$out/$name.alrd" --calib "$C" $args --report "$out/$name.json" > "$out/$name.compress.log" 2>&1 & }
  i=$((i + 1)); if [ $((i % par)) -eq 0 ]; then wait; fi
done
wait
ppl() { $B/alrd-run "$1" --ppl "$T" --ctx 512 --chunks "$chunks" 2>/dev/null | sed -n 's/^PPL = \([0-9.]*\) +\/- \([0-9.]*\)/\1 \2/p'; }
base=$(ppl "$M")
echo "| rank ratio | KV bytes/token (fp16 latents) | (a) whitened + searched | (b) whitened + uniform | (c) plain SVD + uniform |" > "$out/table.md"
echo "| --- | --- | --- | --- | --- |" >> "$out/table.md"
echo "| uncompressed | 23040 | $base | | |" >> "$out/table.md"
for r in 1.00 0.75 0.5 0.375 0.25; do
  row="| $r |"
  bytes=$(python3 -c "import json;print(round(json.load(open('$out/r$r-search.json'))['kv_bytes_per_token_after']))")
  row="$row $bytes |"
  for v in search uniform plain; do
    if [ -f "$out/r$r-$v.alrd" ]; then row="$row $(ppl "$out/r$r-$v.alrd") |"; else row="$row |"; fi
  done
  echo "$row" >> "$out/table.md"
done
cat "$out/table.md"
