#!/usr/bin/env bash
# Twenty-fifth session's GPU calls, from the repository root with OUT set; each part fits one call (600 s).
# Carry bench/device/cutlass_bin (the library built on the CPU VM; see s23.sh's header for a rebuild).
#   bash bench/device/s25.sh full      the whole target table in one call and one file: all six shapes x fp16/bf16 x
#                                      M = 1, 16, 128, 1024, 4096, 16384 (about 4-5 minutes by the earlier parts'
#                                      times), then bench/targets.py's verdict on it with the committed e2e results
#   bash bench/device/s25.sh e2e2      fp16 and bf16 batch-1 end to end (cutlass in the prefill where it wins), verdict
# (the machine goes back 30 s after a call: fire `e2e2` right after `full`). Smaller parts, if time is short:
#   bash bench/device/s25.sh all4096   the dispatcher at M = 4096 on all six shapes (7B and 70B), fp16 and bf16, in one
#                                      table: the target's row set, with the post-pass fixed after the twenty-fourth
#                                      session (fp16 8192x28672 measured 1.27x eagerly under its first version)
#   bash bench/device/s25.sh rest70    the 70B shapes at M = 128, 1024, 16384 (never measured with the current
#                                      dispatcher: bench/targets.py lists them as not measured)
#   bash bench/device/s25.sh e2e | m16    as in s23.sh
# Then, on the VM, with the fetched JSONs and the M = 1/16 and e2e results: python bench/targets.py FILES...
# As run this session (H100, 2026-12-07 21:20-21:34 UTC, after seven failed starts): `full`, `e2e2`, `m16`, then the
# m16 command once more and `pytest -x tests/gpu/test_cutlass_gpu.py tests/gpu/test_kernels_gpu.py` under a 230 s
# limit (results bench/results/*_s25.*; docs/kernels-log.md, twenty-fifth session).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)  # verdicts count only this GPU's files
source bench/device/cutlass_lib.sh
R=bench/results
E2E="$R/e2e_fp16_b1_causal_interleave_h100_s22.json $R/e2e_bf16_b1_causal_h100_s20.json"  # the e2e runs before
# the committed results the smaller parts' new rows join: the M = 1/16 tables, the 7B shapes at the other Ms, e2e
BASE="$R/gemm_m1_16_h100_s23.json $R/gemm_m16_a_h100_s23.json $R/gemm_m16_b_h100_s23.json \
  $R/gemm_cutlass_7b_m128_1024_16384_h100_s24.json $E2E"
verdict() {  # verdict FILES...: the targets over FILES of this GPU (the latest row decides), met rows left out
  python3 bench/targets.py --gpu "$GPU" "$@" | grep -v " ok; "
}
table() {  # table NAME LIMIT ARGS...: bench_kernels.py ARGS, both dtypes, no stock, into $OUT/NAME; its rows and
           # the one-form post-pass's moves printed; the PNG dropped (at most 8 files come back)
  local name=$1 limit=$2
  shift 2
  LLMSPARSE_KERNEL_CACHE=off timeout "$limit" python3 bench/bench_kernels.py "$@" --dtype fp16,bf16 --no-stock \
    --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "== rc=$?"; grep "^| " "$OUT/$name/gemm.md" | cut -d"|" -f2-8; grep "instead of" "$OUT/$name.log"
  rm -f "$OUT/$name/gemm.png"
}
case ${1:-} in
  full)
    lib
    table gfull 480 --shapes llama2-7b,llama2-70b --m 1,16,128,1024,4096,16384
    verdict "$OUT/gfull/gemm.json" $E2E
    ;;
  e2e2)
    lib
    for dt in fp16 bf16; do
      LLMSPARSE_KERNEL_CACHE=off timeout 280 python3 bench/bench_e2e.py --dtype $dt --compile layers --batch 1 \
        --prefill-attention causal --out "$OUT/e2e_$dt" > "$OUT/e2e_$dt.log" 2>&1
      echo "== $dt rc=$?"; grep -E "^decoder linears|^prefill|^decode|dense again" "$OUT/e2e_$dt.log"
    done
    verdict "$OUT"/e2e_*/e2e.json | sed -n '/end to end/,$p'
    ;;
  all4096)
    lib
    table g4096all 330 --shapes llama2-7b,llama2-70b --m 4096
    verdict $BASE "$OUT/g4096all/gemm.json"
    ;;
  rest70)
    lib
    table g70rest 500 --shapes llama2-70b --m 128,1024,16384
    verdict $BASE $R/gemm_cutlass_7b_m4096_h100_s24.json $R/gemm_cutlass_70b_m4096_h100_s24.json "$OUT/g70rest/gemm.json"
    ;;
  e2e|table70|m16) exec bash bench/device/s23.sh "$1" ;;
  *) echo "usage: bash bench/device/s25.sh full|e2e2|all4096|rest70|e2e|table70|m16" >&2; exit 2 ;;
esac
