#!/usr/bin/env bash
# Eighth-session GPU check of the view-table path (cuSPARSELt's [N, M] result left transposed under
# torch.compile, docs/kernels-log.md), run on the device machine from the repository root with OUT set:
#   bash bench/device/view_session.sh [e2e|bf16]
# default: GPU tests of the path (and of the mmsp configurations), the fp16 end-to-end benchmark with
# --compile layers, the fp16 GEMM table at M = 1024-16384 (with its "under torch.compile" column);
# bf16: the bf16 end-to-end benchmark. Every step has its own time limit (the device tool allows 600 s).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
bash bench/device/h200_session.sh env
e2e() {
  timeout "$2" python3 bench/bench_e2e.py --dtype "$1" --compile layers --out "$OUT/e2e_$1" > "$OUT/e2e_$1.log" 2>&1
  echo "e2e $1 rc $?"; grep -i "prefill\|decode\|sparsify\|error\|linears" "$OUT/e2e_$1.log" | tail -9
}
if [ "${1:-}" = bf16 ]; then
  e2e bf16 200
  exit
fi
nx=""; python3 -c "import xdist" 2>/dev/null && nx="-n 8"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $nx -k "cslt_path or compiled or gluon_mmsp_vs_dense" 2>&1 | tail -4
e2e fp16 280  # 190 s ran out in the fourteenth session (sparsify 65 s with cold compile caches; 28 s warm)
timeout 120 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1024,4096,16384 --dtype fp16 \
  --out "$OUT/kb" 2>&1 | tail -20
