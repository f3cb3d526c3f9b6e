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
source bench/device/cutlass_lib.sh
case ${1:-} in
  a|b|c)  # c: b within about 4 minutes
    lib
    if [ "$1" = c ]; then tg=140 tt=100; else tg=170 tt=120; fi
    LLMSPARSE_KERNEL_CACHE=off timeout $tg python3 bench/bench_kernels.py --shapes llama2-7b --m 4096 \
      --dtype fp16,bf16 --no-stock --out "$OUT/g4096" > "$OUT/g4096.log" 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/g4096/gemm.md" | cut -d"|" -f2-9 || grep "M<=" "$OUT/g4096.log"
    rm -f "$OUT/g4096/gemm.png"
    timeout $tt python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_cutlass_gpu.py > "$OUT/pytest_cutlass.txt" 2>&1
    tail -3 "$OUT/pytest_cutlass.txt"
    [ "$1" = a ] || exit 0
    LLMSPARSE_KERNEL_CACHE=off timeout 150 python3 bench/bench_kernels.py --shapes llama2-7b --m 128,1024,16384 \
      --dtype fp16,bf16 --no-stock --out "$OUT/gm" > "$OUT/gm.log" 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/gm/gemm.md" | cut -d"|" -f2-9; grep "instead of" "$OUT/gm.log"; rm -f "$OUT/gm/gemm.png"
    ;;
  e2e|table70|m16) exec bash bench/device/s23.sh "$1" ;;
  *) echo "usage: bash bench/device/s24.sh a|b|c|e2e|table70|m16" >&2; exit 2 ;;
esac
