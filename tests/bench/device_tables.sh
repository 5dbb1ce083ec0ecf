#!/bin/bash
# The README's result tables, as run on the device machine (docs/design.md 7):
#   compress  -- every .alrd the tables need, 16 compressions in parallel on
#                the CPU (one BLAS thread each), into $W
#   eval      -- whole-file perplexities on the GPU with alrd-run, into $OUT
# W (work dir, default /tmp/tables) holds the models; M the GGUF; DATA the
# folder with wiki.valid.tokens and wiki.test.raw.
set -u
W=${W:-/tmp/tables}; M=${M:-models/SmolLM2-135M-Instruct.Q4_1.gguf}; DATA=${DATA:-../shared/data}
B=${BUILD:-build}; OUT=${OUT:-$W/out}
C=$DATA/wiki.valid.tokens; T=$DATA/wiki.test.raw
mkdir -p "$W" "$OUT"
job() { # name args...
    local name=$1; shift
    [ -f "$W/$name.alrd" ] && return
    OPENBLAS_NUM_THREADS=1 $B/alrd-compress "$M" -o "$W/$name.alrd" --calib "$C" --report "$W/$name.json" "$@" \
        > "$W/$name.log" 2>&1
}
case "${1:-}" in
compress)
    job r1.00-search --rank-ratio 1.0 &
    for r in 0.75 0.5 0.375 0.25; do
        job r$r-search --rank-ratio $r &
        job r$r-uniform --rank-ratio $r --uniform &
        job r$r-plain --rank-ratio $r --uniform --no-whiten &
    done
    job r0.5-hadamard --rank-ratio 0.5 --hadamard &
    for b in 20000 36900 51540; do job joint$b --hadamard --kv-bits-per-token $b & done
    wait
    ls -la "$W"/*.alrd | wc -l
    ;;
eval)
    ppl() { # label model ctx [run flags]
        local label=$1 model=$2 ctx=$3; shift 3
        local r; r=$($B/alrd-run "$model" --ppl "$T" --ctx "$ctx" "$@" 2>/dev/null | sed -n 's/^PPL = //p')
        echo "$label	$ctx	$r" | tee -a "$OUT/ppl.tsv"
    }
    : > "$OUT/ppl.tsv"
    # rank table (issue 3): ctx 512
    ppl uncompressed "$M" 512
    for f in "$W"/r*-search.alrd "$W"/r*-uniform.alrd "$W"/r*-plain.alrd; do ppl "$(basename "$f" .alrd)" "$f" 512; done
    # KIVI table (issue 4): ctx 512 and 2048
    for ctx in 512 2048; do
        ppl fp16 "$M" $ctx
        for b in 4 3 2; do ppl kivi$b "$M" $ctx --kv-bits $b; done
        for b in 16 4 3 2; do
            ppl r0.5-b$b "$W/r0.5-search.alrd" $ctx --kv-bits $b
            ppl r0.5-hadamard-b$b "$W/r0.5-hadamard.alrd" $ctx --kv-bits $b
        done
        for b in 20000 36900 51540; do ppl joint$b "$W/joint$b.alrd" $ctx; done
    done
    tar czf "$OUT/reports.tgz" -C "$W" $(cd "$W" && ls *.json *.log *.ranks.json 2>/dev/null)
    ;;
*) echo "usage: $0 compress|eval" >&2; exit 2 ;;
esac
