#!/usr/bin/env bash
# Twenty-fourth session's GPU calls, from the repository root with OUT set; each part fits one call (600 s).
# Carry bench/device/cutlass_bin (libllms_sp24.so built on the CPU VM by `python -m llmsparse.kernels.build_cutlass
# build` with the pip CUDA 13.5 nvcc, and the nvidia-cutlass wheel for a rebuild there; see s23.sh's header).
#   bash bench/device/s24.sh a      the library, the dispatcher at M = 4096 on the 7B shapes (fp16 and bf16: the
#                                   missed fp16 4096x4096 row), its GPU tests, then M = 128, 1024, 16384
#   bash bench/device/s24.sh b      a without the other Ms (little device time left)
#   bash bench/device/s24.sh c      b within about 4 minutes
#   bash bench/device/s24.sh e2e | table70 | m16    as in s23.sh
# As run this session (H100, 2026-12-07 19:26-19:30 UTC; six calls before found no machine): `s24.sh c`, then
#   LLMSPARSE_CUTLASS_LIB=$PWD/bench/device/cutlass_bin/libllms_sp24.so LLMSPARSE_KERNEL_CACHE=off python3
#   bench/bench_kernels.py --shapes llama2-70b --m 4096 --dtype fp16,bf16 --no-stock, and the same with
#   --shapes llama2-7b --m 128,1024,16384 (results bench/results/*_s24.*)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lib() {  # sets LLMSPARSE_CUTLASS_LIB to a library that loads here
  export LLMSPARSE_CUTLASS_LIB=$PWD/bench/device/cutlass_bin/libllms_sp24.so
  if ! python3 -c "from llmsparse.kernels import cutlass_sp24 as c; c.load()" > "$OUT/lib_load.txt" 2>&1; then
    echo "carried library does not load ($(tail -1 "$OUT/lib_load.txt")); building with $(which nvcc)"
    unset LLMSPARSE_CUTLASS_LIB
    (mkdir -p /tmp/cutl && cd /tmp/cutl && python3 -m zipfile -e "$OLDPWD"/bench/device/cutlass_bin/nvidia_cutlass-*.whl .)
    export LLMSPARSE_CUTLASS_DIR=/tmp/cutl/cutlass_library/source LLMSPARSE_CUTLASS_CACHE=/tmp/cutlass_cache
    timeout 200 python3 -m llmsparse.kernels.build_cutlass build 2>&1 | tail -2
  fi
}
case ${1:-} in
  a|b)
    lib
    LLMSPARSE_KERNEL_CACHE=off timeout 170 python3 bench/bench_kernels.py --shapes llama2-7b --m 4096 \
      --dtype fp16,bf16 --no-stock --out "$OUT/g4096" > "$OUT/g4096.log" 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/g4096/gemm.md" | cut -d"|" -f2-9 || grep "M<=" "$OUT/g4096.log"; rm -f "$OUT/g4096/gemm.png"
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cutlass_gpu.py > "$OUT/pytest_cutlass.txt" 2>&1
    tail -3 "$OUT/pytest_cutlass.txt"
    [ "$1" = b ] && exit 0
    LLMSPARSE_KERNEL_CACHE=off timeout 150 python3 bench/bench_kernels.py --shapes llama2-7b --m 128,1024,16384 \
      --dtype fp16,bf16 --no-stock --out "$OUT/gm" > /dev/null 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/gm/gemm.md" | cut -d"|" -f2-9; rm -f "$OUT/gm/gemm.png"
    ;;
  c)  # b within about 4 minutes
    lib
    LLMSPARSE_KERNEL_CACHE=off timeout 140 python3 bench/bench_kernels.py --shapes llama2-7b --m 4096 \
      --dtype fp16,bf16 --no-stock --out "$OUT/g4096" > "$OUT/g4096.log" 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/g4096/gemm.md" | cut -d"|" -f2-9 || grep "M<=" "$OUT/g4096.log"
    rm -f "$OUT/g4096/gemm.png"
    timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_cutlass_gpu.py > "$OUT/pytest_cutlass.txt" 2>&1
    tail -3 "$OUT/pytest_cutlass.txt"
    ;;
  e2e)
    lib
    LLMSPARSE_KERNEL_CACHE=off timeout 560 python3 bench/bench_e2e.py --dtype fp16 --compile layers --batch 1 \
      --prefill-attention causal --out "$OUT/e2e_fp16_b1_cutlass" > "$OUT/e2e_fp16_b1_cutlass.log" 2>&1
    echo "== rc=$?"; grep -E "^decoder linears|^prefill|^decode|dense again" "$OUT/e2e_fp16_b1_cutlass.log"
    ;;
  table70)
    lib
    LLMSPARSE_KERNEL_CACHE=off timeout 500 python3 bench/bench_kernels.py --shapes llama2-70b --m 1024,4096,16384 \
      --dtype fp16,bf16 --no-stock --out "$OUT/gemm_cutlass_70b" > "$OUT/gemm_cutlass_70b.log" 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/gemm_cutlass_70b/gemm.md" | cut -d"|" -f2-9; rm -f "$OUT/gemm_cutlass_70b/gemm.png"
    ;;
  m16)
    LLMSPARSE_KERNEL_CACHE=off timeout 400 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1,16 \
      --dtype fp16,bf16 --no-stock --out "$OUT/gemm_m1_16" > /dev/null 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/gemm_m1_16/gemm.md" | cut -d"|" -f2-9; rm -f "$OUT/gemm_m1_16/gemm.png"
    ;;
  *) echo "usage: bash bench/device/s24.sh a|e2e|table70|m16" >&2; exit 2 ;;
esac
