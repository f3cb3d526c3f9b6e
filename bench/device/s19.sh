#!/usr/bin/env bash
# Nineteenth session's plan for the next GPU calls (docs/kernels-log.md, "What next (after the nineteenth session)"),
# from the repository root with OUT set; each part fits one call (600 s):
#   bash bench/device/s19.sh fix     fp16 end to end, compiled layers, batch 1, default settings (MO storage of order 2,
#                                    wide MO configurations), the prefill with an explicit mask (as before) and then
#                                    with SDPA's causal flag (the new default): the _materialize fix should hold the
#                                    decoder linears at 14.57 GB (now logged before the second dense pass, so a cut
#                                    run still tells it) (~8 minutes)
#   bash bench/device/s19.sh e2e     bf16 batch 1 and fp16 batch 32, compiled layers, causal prefill (~8 minutes)
#   bash bench/device/s19.sh rest1   GPU tests cut in the eighteenth/nineteenth sessions, kernel level (TMA stages,
#                                    MO/XL against the row-major kernels, x through shared memory, order 2), with
#                                    --durations so that later calls can be planned
#   bash bench/device/s19.sh rest2   GPU tests of layers: MO choices, MO storage, compiled layers, e2e_bench
#   bash bench/device/s19.sh tables  the dispatcher's table at M = 16, 32, 64 with the defaults, both dtypes, twice
#                                    (run-to-run spread of the wide rows) (~4 minutes)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
pyt() { timeout "$1" python3 -m pytest -q -p no:cacheprovider --durations=15 tests/gpu -k "$2" > "$OUT/$3" 2>&1; tail -22 "$OUT/$3"; }
case ${1:-} in
  fix)
    for att in mask causal; do
      LLMSPARSE_KERNEL_CACHE=off timeout 270 python3 bench/bench_e2e.py --dtype fp16 --compile layers \
        --prefill-attention $att --breakdown --out "$OUT/e2e_fp16_b1_$att" > "$OUT/e2e_fp16_b1_$att.log" 2>&1
      grep -E "^decoder linears|^prefill|^decode|dense again|prefill kernels" "$OUT/e2e_fp16_b1_$att.log"
    done
    ;;
  e2e)
    for run in "bf16 1" "fp16 32"; do
      set -- $run
      LLMSPARSE_KERNEL_CACHE=off timeout 270 python3 bench/bench_e2e.py --dtype $1 --compile layers --batch $2 \
        --out "$OUT/e2e_$1_b$2" > "$OUT/e2e_$1_b$2.log" 2>&1
      grep -E "^decoder linears|^prefill|^decode|dense again" "$OUT/e2e_$1_b$2.log"
    done
    ;;
  rest1) pyt 560 "tma_stages or mma_order_equals or x_through or order_2" pytest_rest1.txt ;;
  rest2) pyt 560 "mma_order_choice or mo_storage or compiled or e2e_bench or wide_mo_candidates" pytest_rest2.txt ;;
  tables)
    for r in a b; do
      LLMSPARSE_KERNEL_CACHE=off timeout 130 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b \
        --m 16,32,64 --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock --out "$OUT/k_$r" 2>&1 \
        | grep "^|" | awk -F'|' '{print $2,$3,$4,$5,$6,$7,$8}'
      rm -f "$OUT/k_$r/gemm.png"
    done
    ;;
  *) echo "usage: bash bench/device/s19.sh fix|e2e|rest1|rest2|tables" >&2; exit 2 ;;
esac
