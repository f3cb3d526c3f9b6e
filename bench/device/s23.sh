#!/usr/bin/env bash
# Twenty-third session's GPU calls, from the repository root with OUT set; each part fits one call (600 s).
# As run this session (H100, 2026-12-07 15:51-16:06 UTC, then 16:24-16:31):
#   bash bench/device/s22.sh m16small | b32 | rest1, two dispatcher tables (commands in docs/kernels-log.md)
#   bash bench/device/cutlass_probe.sh (carry bench/device/cutlass_bin), then two short 4096x4096 calls
# Next session (carry bench/device/cutlass_bin: libllms_sp24.so built on the CPU VM with the pip CUDA 13.5 nvcc by
# `python -m llmsparse.kernels.build_cutlass build`, and the nvidia-cutlass wheel for a rebuild there). If that
# ignored folder is gone: `pip download --no-deps -d bench/device/cutlass_bin nvidia-cutlass==4.2.0.0`, and either
# let the device build (about 2 minutes of its time) or build here: `pip install --target /tmp/cuda13 --no-deps
# nvidia-cuda-nvcc==13.5.* nvidia-cuda-runtime==13.* nvidia-cuda-crt==13.* nvidia-cuda-cccl==13.*` plus the files
# of the nvidia-nvvm==13.5.* wheel unzipped there (pip --target does not merge it into the existing nvidia/), then LLMSPARSE_NVCC=/tmp/cuda13/nvidia/
# cu13/bin/nvcc LLMSPARSE_CUTLASS_DIR=<the wheel's cutlass_library/source> python -m llmsparse.kernels.build_cutlass
# build (about 9 minutes on 2 cores) and copy the library into bench/device/cutlass_bin.
#   bash bench/device/s23.sh cutlass    the library (carried, else built there), its GPU tests, then the dispatcher
#                                       with the cutlass path at M = 128-16384 on the 7B shapes, fp16 and bf16
#   bash bench/device/s23.sh e2e        fp16 batch-1 end to end (prefill 4096 is where cutlass should win)
#   bash bench/device/s23.sh table70    the 70B shapes at M = 1024-16384 with cutlass
#   bash bench/device/s23.sh m16        the M = 1,16 table again (fp16 4096x4096 sat at 1.56-1.58x on the twenty-
#                                       second session's H100, 1.66-1.74x on the twenty-third's), about 1-5 minutes
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
source bench/device/cutlass_lib.sh  # lib(): the carried library, else a build there
case ${1:-} in
  cutlass)
    lib
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cutlass_gpu.py > "$OUT/pytest_cutlass.txt" 2>&1
    tail -3 "$OUT/pytest_cutlass.txt"
    LLMSPARSE_KERNEL_CACHE=off timeout 300 python3 bench/bench_kernels.py --shapes llama2-7b --m 128,1024,4096,16384 \
      --dtype fp16,bf16 --no-stock --out "$OUT/gemm_cutlass_7b" > "$OUT/gemm_cutlass_7b.log" 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/gemm_cutlass_7b/gemm.md" | cut -d'|' -f2-8; rm -f "$OUT/gemm_cutlass_7b/gemm.png"
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
    echo "== rc=$?"; grep "^| " "$OUT/gemm_cutlass_70b/gemm.md" | cut -d'|' -f2-8; rm -f "$OUT/gemm_cutlass_70b/gemm.png"
    ;;
  m16)
    LLMSPARSE_KERNEL_CACHE=off timeout 400 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1,16 \
      --dtype fp16,bf16 --no-stock --out "$OUT/gemm_m1_16" > /dev/null 2>&1
    echo "== rc=$?"; grep "^| " "$OUT/gemm_m1_16/gemm.md" | cut -d'|' -f2-8; rm -f "$OUT/gemm_m1_16/gemm.png"
    ;;
  *) echo "usage: bash bench/device/s23.sh cutlass|e2e|table70|m16" >&2; exit 2 ;;
esac
