#!/bin/sh
# GPU against CPU perplexity of one rank-0.5 file with 2-bit keys and values
# on the whole wiki.test.raw (--ctx 512), CPU side. Compresses SmolLM2 on the
# CPU (one OpenBLAS thread), prints the file's sha256, then scores it on the
# CPU in SHARDS parallel single-thread shards of chunks (alrd-run
# --first-chunk / --chunks) and combines their NLL lines weighted by tokens.
# The GPU side scores the same file (carried to the GPU machine: its sha256
# must match) with build/alrd-run FILE --ppl ... --kv-bits B (tests/gpu/device.sh
# W runs both there). The 2-bit CPU run takes 21-25
# core-seconds per chunk (595 chunks); FIRST/LAST limit it. An existing OUTF
# is scored as it is.
set -eu
M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
D=${DATA:-../shared/data}
F=${OUTF:-/tmp/det_r05.alrd}
T=${TEXT:-$D/wikitext-2-raw/wiki.test.raw}
[ -f "$F" ] || OPENBLAS_NUM_THREADS=1 build/alrd-compress "$M" -o "$F" \
    --calib "$D/wikitext-2/wiki.valid.tokens" --rank-ratio 0.5 --kv-bits 2 --cpu
sha256sum "$F"
S=${SHARDS:-$(nproc)}
FIRST=${FIRST:-0}
LAST=${LAST:-594}
per=$(( (LAST - FIRST + S) / S ))
for b in ${BITS:-2 16}; do
    i=0
    while [ $i -lt $S ]; do
        a=$((FIRST + i * per))
        [ $a -le $LAST ] && OPENBLAS_NUM_THREADS=1 build/alrd-run "$F" --cpu --ppl "$T" --ctx 512 --kv-bits $b \
            --first-chunk $a --chunks $(( a + per - 1 > LAST ? LAST - a + 1 : per )) > /tmp/gpu_cpu_ppl.$b.$i 2>&1 &
        i=$((i + 1))
    done
    wait
    cat /tmp/gpu_cpu_ppl.$b.* | grep '^NLL' | awk -v b=$b -v f=$FIRST -v l=$LAST '{ s += $3 * $6; n += $6; k++ }
        END { printf "CPU kv-bits %s, chunks %d..%d: PPL = %.4f from %d shards, %d scored tokens (NLL %.10f)\n",
              b, f, l, exp(s / n), k, n, s / n }'
    rm -f /tmp/gpu_cpu_ppl.$b.*
done
