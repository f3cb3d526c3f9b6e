#!/usr/bin/env bash
# Fifteenth session's GPU calls (docs/kernels-log.md), from the repository root with OUT set:
#   bash bench/device/s15.sh first   GPU tests of XL, MO and MO storage; the XL probe at M = 16 (bf16, six shapes,
#                                    beside the dispatcher's MO configurations); the dispatcher's table with MO storage
#                                    (LLMSPARSE_MMSP_MO=compact) on the Llama-2-7B shapes at M = 1, 16 (bf16)
#   bash bench/device/s15.sh short   the GPU tests, then the XL probe at M = 16 on 4096x4096 and 8192x28672 (bf16)
#   bash bench/device/s15.sh e2e     the bf16 end-to-end run with MO storage (CUDA graphs), then fp16 XL probe
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
eval "$(sed -n '/^XL16=/,/^XL8="\$XL8;4,1,1,2/p' bench/device/mmsp_session.sh)"
case $1 in
  first)
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "x_through_shared_memory or mma_order or mo_storage" > "$OUT/pytest.txt" 2>&1; tail -8 "$OUT/pytest.txt"
    if grep -q "FAILED.*x_through_shared_memory\|crashed" "$OUT/pytest.txt"; then
      # an XL configuration failed or faulted: the probe would die at its first fault; MO storage end to end instead
      echo "XL failed its GPU test: probe skipped"
      LLMSPARSE_MMSP_MO=compact LLMSPARSE_KERNEL_CACHE=off timeout 150 python3 bench/bench_e2e.py --dtype bf16 \
        --out "$OUT/e2e_compact" > "$OUT/e2e_compact.log" 2>&1; tail -12 "$OUT/e2e_compact.log"
    else
      timeout 150 python3 bench/device/mo_probe.py --out "$OUT/xl16.json" --dtype bf16 --m 16 --mo "$XL16" 2>&1 | grep -v Warn
    fi
    LLMSPARSE_MMSP_MO=compact timeout 70 python3 bench/bench_kernels.py --shapes llama2-7b --m 1,16 --dtype bf16 \
      --paths gemvg,gemv,mmg,cslt,mmsp --no-stock --out "$OUT/kc" 2>&1 | tail -8
    ;;
  short)  # what ~200 s of device time allows: the GPU tests, then the XL probe on two shapes (bf16)
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "x_through_shared_memory or mma_order or mo_storage" 2>&1 | tail -8
    timeout 80 python3 bench/device/mo_probe.py --out "$OUT/xl16.json" --dtype bf16 --m 16 --mo "$XL16" \
      --shapes 4096x4096,8192x28672 2>&1 | grep -v Warn
    ;;
  e2e)
    LLMSPARSE_MMSP_MO=compact LLMSPARSE_KERNEL_CACHE=off timeout 200 python3 bench/bench_e2e.py --dtype bf16 \
      --out "$OUT/e2e_compact" > "$OUT/e2e_compact.log" 2>&1; tail -12 "$OUT/e2e_compact.log"
    timeout 170 python3 bench/device/mo_probe.py --out "$OUT/xl16_fp16.json" --dtype fp16 --m 16 --mo "$XL16" 2>&1 | grep -v Warn
    ;;
esac
