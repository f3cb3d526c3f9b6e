#!/usr/bin/env bash
# Twentieth session's GPU calls, from the repository root with OUT set; each part fits one call (600 s):
#   bash bench/device/s20.sh first   GPU test of e2e_bench (causal and mask prefill), then fp16 end to end, compiled
#                                    layers, batch 1, causal prefill, with the profiled breakdown and the memory line
#   bash bench/device/s20.sh second  the same fp16 run with the explicit mask (same machine, for the comparison), then
#                                    bf16 batch 1 causal
#   bash bench/device/s20.sh third   the two GPU tests fixed after "first" (wide MO table filter; e2e_bench where dense
#                                    keeps the tiny k/v projections; the e2e_bench test also runs --interleave), fp16
#                                    batch 1 causal again with --interleave 10, then the kernel-level
#                                    GPU tests (s19.sh rest1) for what is left of the call
#   bash bench/device/s20.sh b32     fp16 batch 32 causal
#   bash bench/device/s20.sh fixed   only the GPU tests of "third" (any card)
#   bash bench/device/s20.sh rest1|rest2|tables   as in s19.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
pyt() { timeout "$1" python3 -m pytest -q -p no:cacheprovider --durations=15 tests/gpu -k "$2" > "$OUT/$3" 2>&1; tail -22 "$OUT/$3"; }
e2e() {  # dtype batch attention timeout [extra args]
  local name=e2e_$1_b$2_$3
  LLMSPARSE_KERNEL_CACHE=off timeout $4 python3 bench/bench_e2e.py --dtype $1 --compile layers --batch $2 \
    --prefill-attention $3 ${5:-} --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$?"
  grep -E "^decoder linears|^prefill|^decode|dense again|interleav|kernels|attention|gemm" "$OUT/$name.log" | head -30
}
case ${1:-} in
  first)
    pyt 150 "e2e_bench" pytest_e2e.txt
    e2e fp16 1 causal 400 --breakdown
    ;;
  second)
    e2e fp16 1 mask 280
    e2e bf16 1 causal 280
    ;;
  third)
    pyt 200 "wide_mo_candidates or e2e_bench" pytest_fixed.txt
    if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H100; then
      e2e fp16 1 causal 230 "--interleave 10"
      pyt 200 "tma_stages or mma_order_equals or x_through or order_2" pytest_rest1.txt
    else  # another card: its e2e ratios are not the H100 targets' numbers; the kernel-level tests instead
      pyt 330 "tma_stages or mma_order_equals or x_through or order_2" pytest_rest1.txt
    fi
    ;;
  b32) e2e fp16 32 causal 300 ;;
  fixed) pyt 180 "wide_mo_candidates or e2e_bench" pytest_fixed.txt ;;
  rest1|rest2|tables) bash bench/device/s19.sh "$1" ;;
  *) echo "usage: bash bench/device/s20.sh first|second|third|b32|fixed|rest1|rest2|tables" >&2; exit 2 ;;
esac
