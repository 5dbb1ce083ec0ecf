#!/bin/sh
# make test-gpu: the GPU unit tests, compute-sanitizer (memcheck, racecheck, initcheck)
# on a small run of them, the whitened SVD on the GPU against the CPU's (test_gpu_wsvd,
# and memcheck on its small case), and the real-model checks (GPU vs CPU logits and
# perplexity, GPU vs CPU calibration statistics) when MODEL / ALRD / DATA
# name readable files. Logs go to $BUILD/tests/gpu/*.log.
B=${BUILD:-build}
T=$B/tests/gpu
fail=0
echo "== $T/test_gpu_units"
$T/test_gpu_units || fail=1
if command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in memcheck racecheck initcheck; do
        mode=--small; [ $tool = racecheck ] && mode=--race
        if compute-sanitizer --tool $tool --error-exitcode 3 $T/test_gpu_units $mode > $T/$tool.log 2>&1; then
            echo "compute-sanitizer $tool: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' $T/$tool.log | tail -1)"
        else
            fail=1
            echo "!! compute-sanitizer $tool failed (see $T/$tool.log):"
            grep -m 20 -e '=========' $T/$tool.log
        fi
    done
else
    echo "compute-sanitizer not found: skipped"
fi
echo "== $T/test_gpu_wsvd (whitened SVD, cuSOLVER vs LAPACKE, 8B sizes)"
$T/test_gpu_wsvd || fail=1
if command -v compute-sanitizer >/dev/null 2>&1; then
    if compute-sanitizer --tool memcheck --error-exitcode 3 $T/test_gpu_wsvd --small > $T/wsvd-memcheck.log 2>&1; then
        echo "compute-sanitizer memcheck test_gpu_wsvd --small: $(grep -h 'ERROR SUMMARY' $T/wsvd-memcheck.log | tail -1)"
    else
        fail=1
        echo "!! compute-sanitizer memcheck test_gpu_wsvd --small failed (see $T/wsvd-memcheck.log):"
        grep -m 20 -e '=========' -e FAIL $T/wsvd-memcheck.log
    fi
fi
if [ -n "$MODEL" ] && [ -r "$MODEL" ] && [ -r "$DATA" ]; then
    echo "== $T/test_gpu_model $MODEL"
    $T/test_gpu_model "$MODEL" "$DATA" --kv-bits 4 --chunks 4 || fail=1
    echo "== $T/test_gpu_calib $MODEL"
    $T/test_gpu_calib "$MODEL" "$DATA" || fail=1
fi
if [ -n "$ALRD" ] && [ -r "$ALRD" ] && [ -r "$DATA" ]; then
    echo "== $T/test_gpu_model $ALRD"
    $T/test_gpu_model "$ALRD" "$DATA" --kv-bits 4 --chunks 4 || fail=1
fi
[ $fail -eq 0 ] && echo "test-gpu: ok" || echo "test-gpu: FAILED"
exit $fail
