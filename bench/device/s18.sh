#!/usr/bin/env bash
# Eighteenth session's plan for the next GPU calls (docs/kernels-log.md, "What next (after the eighteenth session)"),
# from the repository root with OUT set:
#   bash bench/device/s18.sh fix    fp16 end to end with the default settings (MO storage of order 2) after the
#                                   _materialize fix: decoder linears should be 14.57 GB, not 27.52 GB (~2 minutes)
#   bash bench/device/s18.sh rest   the GPU tests the call limit cut in the eighteenth session (kernel-level MO/XL,
#                                   TMA stages, MO-storage layers), with the new default
#   bash bench/device/s18.sh wide   the MO configurations for M = 17-64 (MMSP_MO_WIDE_CONFIGS, never run on a GPU):
#                                   their GPU tests, then a probe at M = 32, 64 (both dtypes, six shapes) against
#                                   dense and the M = 16 XL configuration, then the dispatcher's table with MO
#                                   storage at M = 32, 64 with LLMSPARSE_MMSP_WIDE=1 and without (~6 minutes)
#   bash bench/device/s18.sh next   in one call (at most about 9.5 minutes): the wide GPU tests in bf16, the two
#                                   tables if they pass (no probe), then fix; the tables' PNGs are dropped so that
#                                   the files fit the eight that come back
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
  wide)
    timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/gpu -k "wide_mo" > "$OUT/pytest_wide.txt" 2>&1
    tail -3 "$OUT/pytest_wide.txt"
    grep -q " passed" "$OUT/pytest_wide.txt" && ! grep -q "failed" "$OUT/pytest_wide.txt" || exit 1
    MOL=$(python3 -c "from llmsparse.kernels import gluon_mmsp as g; print(';'.join(','.join(map(str,c)) for k in (32,64) for c in g.MMSP_MO_WIDE_CONFIGS[k]))")
    timeout 150 python3 bench/device/mo_probe.py --out "$OUT/wide_probe.json" --dtype bf16,fp16 --m 32,64 \
      --mo "$MOL;4,2,2,3,0,0,0,4,1,0,0,0,4" --shapes 4096x4096,11008x4096,4096x11008,8192x8192 2>&1 | grep -v Warn
    for w in 0 1; do
      LLMSPARSE_MMSP_WIDE=$w LLMSPARSE_KERNEL_CACHE=off timeout 100 python3 bench/bench_kernels.py \
        --shapes llama2-7b,llama2-70b --m 32,64 --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock \
        --out "$OUT/k_wide$w" 2>&1 | grep "^|" | awk -F'|' '{print $2,$3,$4,$5,$6,$7,$8}'
    done
    ;;
  next)  # within one call's 600 s: the wide GPU tests (bf16 only), the two tables, then fix (no probe)
    timeout 170 python3 -m pytest -q -x -p no:cacheprovider tests/gpu -k "wide_mo and dtype1" > "$OUT/pytest_wide.txt" 2>&1
    tail -3 "$OUT/pytest_wide.txt"
    if grep -q " passed" "$OUT/pytest_wide.txt" && ! grep -q "failed" "$OUT/pytest_wide.txt"; then
      for w in 0 1; do
        LLMSPARSE_MMSP_WIDE=$w LLMSPARSE_KERNEL_CACHE=off timeout 90 python3 bench/bench_kernels.py \
          --shapes llama2-7b,llama2-70b --m 32,64 --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock \
          --out "$OUT/k_wide$w" 2>&1 | grep "^|" | awk -F'|' '{print $2,$3,$4,$5,$6,$7,$8}'
        rm -f "$OUT/k_wide$w/gemm.png"
      done
    fi
    bash "$0" fix
    ;;
  *) echo "usage: bash bench/device/s18.sh fix|rest|wide|next" >&2; exit 2 ;;
esac
