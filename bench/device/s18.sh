#!/usr/bin/env bash
# Eighteenth session's plan for the next GPU calls (docs/kernels.md, "What next (after the eighteenth session)"),
# from the repository root with OUT set:
#   bash bench/device/s18.sh fix    fp16 end to end with the default settings (MO storage of order 2) after the
#                                   _materialize fix: decoder linears should be 14.57 GB, not 27.52 GB (~2 minutes)
#   bash bench/device/s18.sh rest   the GPU tests the call limit cut in the eighteenth session (kernel-level MO/XL,
#                                   TMA stages, MO-storage layers), with the new default
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
case ${1:-} in
  fix)
    LLMSPARSE_KERNEL_CACHE=off timeout 200 python3 bench/bench_e2e.py --dtype fp16 --compile layers \
      --out "$OUT/e2e_fp16_fix" > "$OUT/e2e_fp16_fix.log" 2>&1; tail -4 "$OUT/e2e_fp16_fix.log"
    ;;
  rest)
    timeout 540 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "tma_stages or mma_order_equals or \
x_through or order_2 or mma_order_choice or mo_storage or compiled" > "$OUT/pytest_rest.txt" 2>&1
    tail -5 "$OUT/pytest_rest.txt"
    ;;
  *) echo "usage: bash bench/device/s18.sh fix|rest" >&2; exit 2 ;;
esac
