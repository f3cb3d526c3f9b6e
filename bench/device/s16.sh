#!/usr/bin/env bash
# Sixteenth session's GPU calls (docs/kernels-log.md), from the repository root with OUT set:
#   bash bench/device/s16.sh xl8    the XL (MO >= 2) NT = 1 configurations at M = 1, 4, 8 beside the MO = 1 ones,
#                                   gemvg and the row-major mmsp ones (bf16, fp16; six shapes): can one copy of
#                                   order 2 serve M = 1-16? Then the bf16 end-to-end run with MO on, layers compiled
#   bash bench/device/s16.sh mo8    order-1 NT = 1 variants at M = 1, 8; the table with MO on at M = 2, 4, 8 (not run)
#   bash bench/device/s16.sh o2     MO = 5 (order-2 copy, x from global memory): GPU test, probe at M = 1, 16 (not run)
#   bash bench/device/s16.sh o2s    the same on two shapes (about 3 minutes)
#   bash bench/device/s16.sh mid    the table at M = 32-256 without and with MO storage (bf16)
#   bash bench/device/s16.sh c2     the table with MO storage of order 2 (compact2) at M = 1, 16 (bf16)
#   bash bench/device/s16.sh b16    end to end, decode at batch 16 (bf16, compiled layers), without and with MO
#   bash bench/device/s16.sh xr     XL variants (SK = 8, RT = 2 with SK = 4, WK = 2, PF 1-2, FX, no RW) at M = 16 on
#                                   the three shapes still under 1.6x, beside the three XL configurations of MMSP_MO_CONFIGS
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
eval "$(sed -n '/^XL16=/,/^XL8="\$XL8;4,1,1,2/p' bench/device/mmsp_session.sh)"
o2_tests() {  # the GPU tests of MO = 5 within $1 seconds; a crash ends the call (the context is gone)
  timeout "$1" python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
    -k "order_2" > "$OUT/pytest_o2.txt" 2>&1; tail -4 "$OUT/pytest_o2.txt"
  grep -q "crashed\|Fatal\|illegal" "$OUT/pytest_o2.txt" && exit 1
}
case ${1:-} in
  xl8)
    timeout 240 python3 bench/device/mo_probe.py --out "$OUT/xl8.json" --dtype bf16,fp16 --m 1,4,8 --mo "$XL8" 2>&1 \
      | grep -v Warn
    LLMSPARSE_MMSP_MO=1 LLMSPARSE_KERNEL_CACHE=off timeout 230 python3 bench/bench_e2e.py --dtype bf16 --compile layers \
      --out "$OUT/e2e_mo" > "$OUT/e2e_mo.log" 2>&1; tail -6 "$OUT/e2e_mo.log"
    ;;
  mo8)  # order-1 NT = 1 configurations (XS twins of the row-major M <= 8 ones) at M = 1, 8; then the dispatcher's
        # table with MO on (the XL NT = 1 winners of xl8 in MMSP_MO_CONFIGS) at M = 2, 4, 8
    MO1="4,1,1,1,1,0,0,1,0,0,0,0,1;4,1,1,0,1,0,0,1,0,0,0,0,1;8,2,1,1,1,0,0,1,0,0,0,0,1;4,2,1,2,1,0,0,1,0,0,0,0,1"
    MO1="$MO1;8,1,1,1,0,0,0,1,0,0,0,0,1;4,1,1,2,0,0,0,1,0,0,0,0,1;4,1,1,0,0,0,0,1,0,0,0,0,1;8,1,1,2,0,0,0,1,0,0,0,0,1"
    MO1="$MO1;4,1,1,1,0,0,0,1,0,0,0,0,1;4,2,1,1,0,0,0,1,0,0,0,0,1;8,2,1,1,0,0,0,1,0,0,0,0,1;4,2,1,1,1,0,0,1,0,0,0,0,1"
    MO1="$MO1;4,1,1,1,0,0,0,2,1,0,0,0,1;8,1,1,1,1,0,0,1,0,0,0,0,1"
    timeout 200 python3 bench/device/mo_probe.py --out "$OUT/mo1_nt1.json" --dtype bf16,fp16 --m 1,8 --mo "$MO1" 2>&1 \
      | grep -v Warn
    LLMSPARSE_MMSP_MO=1 timeout 200 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 2,4,8 \
      --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock --out "$OUT/k" 2>&1 | tail -40
    ;;
  o2)  # MO = 5 (the copy of order 2, x from global memory): GPU tests, then the probe at M = 1, 16 (bf16) beside
       # the MO = 1 and XL configurations of MMSP_MO_CONFIGS, gemvg and the row-major ones
    o2_tests 100
    O2="4,1,1,1,0,0,0,1,0,0,0,0,5;4,2,1,1,0,0,0,1,0,0,0,0,5;8,2,1,1,0,0,0,1,0,0,0,0,5;4,1,1,0,0,0,0,1,0,0,0,0,5"
    O2="$O2;4,1,1,3,0,0,0,1,0,0,0,0,5;8,1,1,1,0,0,0,1,0,0,0,0,5;4,1,1,1,0,0,0,2,1,0,0,0,5"
    O2="$O2;4,1,2,1,0,0,0,4,1,0,0,0,5;4,2,2,1,0,0,0,2,1,0,0,0,5;4,2,2,1,0,0,0,4,1,0,1,0,5;4,1,2,1,0,0,0,2,1,0,0,0,5"
    O2="$O2;4,2,2,1,0,0,0,1,0,0,0,0,5;4,1,2,3,0,0,0,4,1,0,0,0,5;8,2,2,1,0,0,0,1,0,0,0,0,5"
    MOL=$(python3 -c "from llmsparse.kernels import gluon_mmsp as g; print(';'.join(','.join(map(str,c)) for k in (8,16) for c in g.MMSP_MO_CONFIGS[k]))")
    timeout 110 python3 bench/device/mo_probe.py --out "$OUT/o2.json" --dtype bf16 --m 1,16 --mo "$O2;$MOL" 2>&1 \
      | grep -v Warn
    ;;
  o2s)  # what ~200 s of device time allows: the GPU tests of MO = 5, then the probe on two shapes at M = 1, 16
    o2_tests 80
    O2="4,1,1,1,0,0,0,1,0,0,0,0,5;8,2,1,1,0,0,0,1,0,0,0,0,5;4,1,1,0,0,0,0,1,0,0,0,0,5;8,1,1,1,0,0,0,1,0,0,0,0,5"
    O2="$O2;4,1,2,1,0,0,0,4,1,0,0,0,5;4,2,2,1,0,0,0,2,1,0,0,0,5;4,1,2,3,0,0,0,4,1,0,0,0,5"
    O2="$O2;4,1,1,1,0,0,0,1,0,0,0,0,1;8,2,1,1,0,0,0,1,0,0,0,0,1;4,1,2,3,0,0,0,4,1,0,0,0,4;4,2,2,3,0,0,0,2,1,0,0,0,4"
    timeout 75 python3 bench/device/mo_probe.py --out "$OUT/o2.json" --dtype bf16 --m 1,16 --mo "$O2" \
      --shapes 4096x4096,8192x28672 2>&1 | grep -v Warn
    ;;
  mid)  # before MO storage can be the default: the table at M = 32-256 without and with it (its layers have no mmg)
    for mode in 0 compact; do
      LLMSPARSE_MMSP_MO=$mode timeout 140 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 32,64,128,256 \
        --dtype bf16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock --out "$OUT/mid_$mode" 2>&1 | tail -26
    done
    ;;
  b16)  # decode at batch 16 (M = 16 in every decoder linear), bf16, layers compiled: without MO, then with MO on
    for mode in 0 1; do
      LLMSPARSE_MMSP_MO=$mode LLMSPARSE_KERNEL_CACHE=off timeout 280 python3 bench/bench_e2e.py --dtype bf16 \
        --compile layers --batch 16 --out "$OUT/e2e_b16_mo$mode" > "$OUT/e2e_b16_mo$mode.log" 2>&1
      tail -5 "$OUT/e2e_b16_mo$mode.log"
    done
    ;;
  xr)  # the M = 16 rows still under 1.6x (4096x4096, 11008x4096, 8192x8192): XL variants beside the current winners
    XR="4,1,2,3,0,0,0,8,1,0,0,0,4;4,1,2,3,0,0,0,8,1,0,0,0,3;4,2,2,3,0,0,0,4,1,0,0,0,4;4,2,2,3,0,0,0,8,1,0,0,0,4"
    XR="$XR;2,1,2,3,0,0,0,4,1,0,0,0,4;2,2,2,3,0,0,0,4,1,0,0,0,4;4,1,2,2,0,0,0,4,1,0,0,0,4;4,1,2,1,0,0,0,4,1,0,0,0,4"
    XR="$XR;4,1,2,3,0,0,0,4,1,0,1,0,4;4,2,2,3,0,0,0,2,1,0,1,0,4;4,1,2,3,0,0,0,4,0,0,0,0,4;4,1,2,3,0,0,0,4,1,0,0,0,2"
    XR="$XR;4,1,2,3,0,0,0,4,1,0,0,0,4;4,1,2,3,0,0,0,2,1,0,0,0,3;4,2,2,3,0,0,0,2,1,0,0,0,4"
    timeout ${XRT:-200} python3 bench/device/mo_probe.py --out "$OUT/xr.json" --dtype bf16,fp16 --m 16 --mo "$XR" \
      --shapes 4096x4096,11008x4096,8192x8192 2>&1 | grep -v Warn
    ;;
  c2)  # the table of layers holding only the copy of order 2 (MO = 5 at M = 1, XL above)
    LLMSPARSE_MMSP_MO=compact2 timeout 120 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1,16 \
      --dtype bf16 --paths gemvg,gemv,mmg,cslt,mmsp --no-stock --out "$OUT/kc2" 2>&1 | tail -20
    ;;
esac
