#!/usr/bin/env bash
# CUTLASS Hopper sparse GEMM against dense cuBLAS and cuSPARSELt at M = 4096 (fp16), on the device, OUT set.
# Binaries from bench/device/cutlass_build.sh (built on the CPU VM with the pip CUDA 13.5 nvcc, carried in
# bench/device/cutlass_bin with the nvidia-cutlass wheel); if they do not run there, they are rebuilt with the
# device's nvcc from the wheel's headers. 4096x4096 first (the row that misses 1.3x), then the other shapes.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
BIN=bench/device/cutlass_bin
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
first=$(ls $BIN/sp24_* | grep -v '\.log$' | head -1)
if ! timeout 30 "$first" 256 256 256 2 3 > "$OUT/smoke.txt" 2>&1; then
  echo "prebuilt binaries do not run here ($(head -c 200 "$OUT/smoke.txt")); building with $(which nvcc)"
  (mkdir -p /tmp/cutl && cd /tmp/cutl && python3 -m zipfile -e "$OLDPWD"/$BIN/nvidia_cutlass-*.whl .)
  CUTLASS=/tmp/cutl/cutlass_library/source BIN=/tmp/cbin JOBS=16 timeout 300 bash bench/device/cutlass_build.sh \
    > "$OUT/build.txt" 2>&1; BIN=/tmp/cbin; tail -3 "$OUT/build.txt"
fi
cat "$OUT/smoke.txt"
run() {  # out in
  for b in $(ls $BIN/sp24_* | grep -v '\.log$'); do timeout 60 "$b" 4096 "$1" "$2" 2>&1 | tail -1; done
}
{ run 4096 4096
  timeout 100 python3 bench/device/cutlass_baseline.py --m 4096 --shapes 4096x4096 --out "$OUT/baseline_4096.json" 2>&1 \
    | grep -v Warn
  for s in "11008 4096" "4096 11008" "8192 8192" "28672 8192" "8192 28672"; do run $s; done
  timeout ${BASE_T:-200} python3 bench/device/cutlass_baseline.py --m 4096 \
    --shapes 11008x4096,4096x11008,8192x8192,28672x8192,8192x28672 --out "$OUT/baseline_rest.json" 2>&1 | grep -v Warn
} | tee "$OUT/cutlass.txt"
