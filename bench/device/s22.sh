#!/usr/bin/env bash
# Twenty-second session's GPU calls, from the repository root with OUT set; each part fits one call (600 s).
# As run this session (H100, 2026-12-07 14:52-15:14 UTC; evict-first was not yet the default, hence the variable):
#   bash bench/device/s21.sh a                                  the probe (cache policy, extras, 8448x8192)
#   LLMSPARSE_MMSP_EVICT=1 bash bench/device/s21.sh e2e         fp16 batch 1 with --interleave 10 (batch 32 timed out)
#   bash bench/device/s22.sh tables                             the dispatcher at M = 16 / 1,16 with evict-first, and
#                                                               once at M = 16 with plain loads
#   bash bench/device/s22.sh tests                              the GPU tests cut in s21.sh a, and mmsp's under EV = 1
# Next session:
#   bash bench/device/s22.sh m16small   M = 16 on the 7B shapes (4096x4096 is now the weak row: 1.56-1.58x fp16):
#                                       the cache-policy modes 0 / 1 / 3 (3: the values L1 no-allocate, new) and
#                                       eleven extra configurations (SK = 8, the fixup, rings of 2 and 3, PF = 1),
#                                       both dtypes, after the cache-policy GPU test (about 3-4 minutes)
#   bash bench/device/s22.sh b32        fp16 batch 32 causal alone (cut at 280 s behind batch 1 this session)
#   bash bench/device/s22.sh rest1      as in s19.sh (kernel-level GPU tests cut earlier)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
table() {  # name timeout m [env]
  env LLMSPARSE_KERNEL_CACHE=off ${4:-} timeout "$2" python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b \
    --m "$3" --dtype fp16,bf16 --no-stock --out "$OUT/$1" > /dev/null 2>&1
  echo "== $1 rc=$?"; grep "^| " "$OUT/$1/gemm.md" | cut -d'|' -f2-8; rm -f "$OUT/$1/gemm.png"
}
case ${1:-} in
  tables)
    table gemm_m16_ev1 330 16 LLMSPARSE_MMSP_EVICT=1
    for r in b c; do table gemm_m1_16_ev1_$r 120 1,16 LLMSPARSE_MMSP_EVICT=1; done
    table gemm_m16_ev0 100 16 LLMSPARSE_MMSP_EVICT=0
    ;;
  tests)
    timeout 130 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "cache_policy or wide_mo_candidates" > "$OUT/pytest_cp.txt" 2>&1
    tail -1 "$OUT/pytest_cp.txt"
    LLMSPARSE_MMSP_EVICT=1 timeout 170 python3 -m pytest -q -p no:cacheprovider tests/gpu \
      -k "mmsp and not cache_policy and not wide_mo" > "$OUT/pytest_ev1.txt" 2>&1; tail -3 "$OUT/pytest_ev1.txt"
    timeout 95 python3 -m pytest -q -p no:cacheprovider tests/gpu -k e2e_bench > "$OUT/pytest_e2e.txt" 2>&1
    tail -1 "$OUT/pytest_e2e.txt"
    ;;
  m16small)
    # SK = 8 (256 programs of 4 iterations on 4096x4096), the fixup with SK = 4 and 8, lighter programs with SK = 8,
    # PF = 1, rings of 3 and 2 (all compile without spills for sm_90: 94-216 registers, offline)
    EXTRA="4,2,2,3,0,0,0,8,1,0,0,0,4;4,2,2,3,0,0,0,8,1,0,1,0,4;4,2,2,3,0,0,0,4,1,0,1,0,4;2,2,2,3,0,0,0,8,1,0,0,0,4"
    EXTRA="$EXTRA;4,1,2,3,0,0,0,8,1,0,0,0,4;2,1,2,3,0,0,0,8,1,0,0,0,4;4,2,2,1,0,0,0,4,1,0,0,0,4"
    EXTRA="$EXTRA;4,2,2,3,0,0,0,4,1,0,0,0,3;4,2,2,3,0,0,0,4,1,0,0,0,2;2,2,2,3,0,0,0,4,1,0,0,0,3;2,2,2,3,0,0,0,4,1,0,1,0,4"
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu -k cache_policy > "$OUT/pytest_cp.txt" 2>&1
    tail -1 "$OUT/pytest_cp.txt"
    LLMSPARSE_KERNEL_CACHE=off timeout 400 python3 bench/device/evict_probe.py --shapes llama2-7b --m 16 \
      --dtype fp16,bf16 --modes 0,1,3 --rounds 7 --out "$OUT/evict_probe_7b.json" --extra "$EXTRA" 2>&1 \
      | grep -v Advisory | tail -8
    ;;
  b32)
    LLMSPARSE_KERNEL_CACHE=off timeout 560 python3 bench/bench_e2e.py --dtype fp16 --compile layers --batch 32 \
      --prefill-attention causal --out "$OUT/e2e_fp16_b32_causal" > "$OUT/e2e_fp16_b32_causal.log" 2>&1
    echo "== rc=$?"; grep -E "^decoder linears|^prefill|^decode|dense again" "$OUT/e2e_fp16_b32_causal.log"
    ;;
  rest1) bash bench/device/s19.sh rest1 ;;
  *) echo "usage: bash bench/device/s22.sh tables|tests|m16small|b32|rest1" >&2; exit 2 ;;
esac
