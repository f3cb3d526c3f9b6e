#!/usr/bin/env bash
# Seventeenth session's plan for the next GPU calls (docs/kernels-log.md, "What next (after the seventeenth session)"),
# from the repository root with OUT set:
#   bash bench/device/s17.sh first   the GPU test of MO storage (orders 1 and 2), then the tables with MO storage of
#                                    order 1 and 2 at M = 1, 16 (bf16, fp16), then end to end with compact2 (bf16,
#                                    eager): can one copy of order 2 be the default? (about 5 minutes warm)
#   bash bench/device/s17.sh b16     batch-16 decode without MO (bf16, compiled layers): the baseline of the 1.40x
#   bash bench/device/s17.sh sk      XL at M = 16 with split counts that are not powers of two (SK = 3, 5, 6) on
#                                    8192x8192 and 4096x4096, where the program count against 132 SMs may leave a tail
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
case ${1:-} in
  first)
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "mo_storage" > "$OUT/pytest_mo_storage.txt" 2>&1
    tail -3 "$OUT/pytest_mo_storage.txt"
    for mode in compact1 compact2; do
      LLMSPARSE_MMSP_MO=$mode LLMSPARSE_KERNEL_CACHE=off timeout 100 python3 bench/bench_kernels.py \
        --shapes llama2-7b,llama2-70b --m 1,16 --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock \
        --out "$OUT/k_$mode" 2>&1 | grep "^|"
    done
    LLMSPARSE_MMSP_MO=compact2 LLMSPARSE_KERNEL_CACHE=off timeout 200 python3 bench/bench_e2e.py --dtype bf16 \
      --out "$OUT/e2e_compact2" > "$OUT/e2e_compact2.log" 2>&1; tail -5 "$OUT/e2e_compact2.log"
    ;;
  b16)
    LLMSPARSE_MMSP_MO=0 LLMSPARSE_KERNEL_CACHE=off timeout 280 python3 bench/bench_e2e.py --dtype bf16 \
      --compile layers --batch 16 --out "$OUT/e2e_b16_mo0" > "$OUT/e2e_b16_mo0.log" 2>&1; tail -5 "$OUT/e2e_b16_mo0.log"
    ;;
  sk)
    SKC="4,2,2,3,0,0,0,3,1,0,0,0,4;4,2,2,3,0,0,0,5,1,0,0,0,4;4,2,2,3,0,0,0,6,1,0,0,0,4;4,1,2,3,0,0,0,3,1,0,0,0,4"
    SKC="$SKC;4,1,2,3,0,0,0,5,1,0,0,0,4;4,1,2,3,0,0,0,6,1,0,0,0,4;2,2,2,3,0,0,0,3,1,0,0,0,4;2,2,2,3,0,0,0,6,1,0,0,0,4"
    SKC="$SKC;4,2,2,3,0,0,0,2,1,0,0,0,4;4,2,2,3,0,0,0,4,1,0,0,0,4;2,2,2,3,0,0,0,4,1,0,0,0,4"
    timeout 150 python3 bench/device/mo_probe.py --out "$OUT/sk.json" --dtype fp16,bf16 --m 16 --mo "$SKC" \
      --shapes 8192x8192,4096x4096 2>&1 | grep -v Warn
    ;;
  *) echo "usage: bash bench/device/s17.sh first|b16|sk" >&2; exit 2 ;;
esac
