#!/bin/sh
# Runs each cmocka test binary and prints one summary line
# "N passed, N failed, N skipped". A binary that crashes or exits non-zero
# without reporting its own failures counts as one failure.
pass=0; fail=0; skip=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | grep -c '^\[       OK \]')
    s=$(printf '%s\n' "$out" | grep -c '^\[  SKIPPED \]')
    f=$(printf '%s\n' "$out" | grep '^\[  FAILED  \] ' | grep -v 'test(s)' | sort -u | wc -l)
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "!! $t exited with status $rc"; fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
