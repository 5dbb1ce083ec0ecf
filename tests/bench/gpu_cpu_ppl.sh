#!/bin/sh
# GPU against CPU perplexity of one rank-0.5 file with 2-bit keys and values
# on the whole wiki.test.raw (--ctx 512), CPU side: compresses SmolLM2 on the
# CPU with one OpenBLAS thread and a fixed OpenBLAS kernel set (so another
# x86 machine makes a byte-identical file: tests/gpu/device.sh E prints its
# sha256 and the GPU perplexity of it), prints this file's sha256, then the
# CPU perplexity at 2 and 16 bits (the 2-bit run takes over an hour on 2 cores).
set -eu
M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
D=${DATA:-../shared/data}
OUTF=${OUTF:-/tmp/det_r05.alrd}
OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell build/alrd-compress "$M" -o "$OUTF" \
    --calib "$D/wikitext-2/wiki.valid.tokens" --rank-ratio 0.5 --kv-bits 2 --cpu
sha256sum "$OUTF"
for b in ${BITS:-2 16}; do
    echo "CPU kv-bits $b: $(build/alrd-run "$OUTF" --cpu --ppl "$D/wikitext-2-raw/wiki.test.raw" --ctx 512 --kv-bits $b | grep PPL)"
done
