#!/usr/bin/env bash
# Eighth-session GPU check of the view-table path (cuSPARSELt's [N, M] result left transposed under
# torch.compile, docs/kernels.md), run on the device machine from the repository root with OUT set:
#   bash bench/device/view_session.sh
# GPU tests of the path, the fp16 end-to-end benchmark with --compile layers, the fp16 GEMM table at
# M = 1024-16384 (with the "under torch.compile" column), then the bf16 end-to-end benchmark.
# Every step has its own time limit, so the call ends inside the device tool's 600 s.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
bash bench/device/h200_session.sh env
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "cslt_path or compiled" 2>&1 | tail -4
for dt in fp16 bf16; do
  if [ $dt = bf16 ]; then
    timeout 110 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1024,4096,16384 --dtype fp16 \
      --out "$OUT/kb" 2>&1 | tail -20
  fi
  timeout 190 python3 bench/bench_e2e.py --dtype $dt --compile layers --out "$OUT/e2e_$dt" > "$OUT/e2e_$dt.log" 2>&1
  echo "e2e $dt rc $?"; grep -i "prefill\|decode\|sparsify\|error" "$OUT/e2e_$dt.log" | tail -8
done
