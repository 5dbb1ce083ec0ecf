nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /tmp/deps; for f in .devcarry/debs/*.deb; do dpkg -x "$f" /tmp/deps; done
make -j16 DEPS_PREFIX=/tmp/deps/usr build/alrd-bench > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
for v in name=fp16 r=0.5,gh=3,k=2,v=2; do for B in 1 16; do echo "$v batch $B:"; timeout 120 ncu --clock-control none --kernel-name regex:attn_ --launch-skip 60 --launch-count 2 --section SpeedOfLight build/alrd-bench --synthetic smollm2-135m -d 32768 -b $B -p 16 -n 4 -r 1 -v $v 2>&1 | grep -E "  [a-z_]+kernel|SM Frequency|DRAM Throughput|Duration"; done; done
