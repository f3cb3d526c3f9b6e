#!/usr/bin/env bash
# One stage of the H200 measurement session (docs/kernels-log.md, "Measured (H200)"), run on the device
# machine from the repository root with OUT set:  bash bench/device/h200_session.sh STAGE
#   env    nvidia-smi and versions
#   tests  GPU test suite of the working tree (pytest-xdist when present)
#   base   a benchmark of the committed code in .base/ (git archive of HEAD): ARGS = the bench script and its flags
#   fm     bench/bench_feature_major.py (feature-major MLP chain off/on); that script and the code it
#          measures exist only with bench/results/feature_major_experiment.patch applied (git apply)
# Every step has its own time limit, so a call ends inside the device tool's 600 s.
set -u
export PYTHONUNBUFFERED=1
stage=$1; shift
case $stage in
  env)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$OUT/nvidia_smi.txt"
    python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__, 'cusparselt', torch.backends.cusparselt.version(), torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')" | tee -a "$OUT/nvidia_smi.txt"
    ;;
  tests)
    lim=$1
    nx=""; python3 -c "import xdist" 2>/dev/null && nx="-n 12"
    echo "pytest-xdist: ${nx:-absent}"
    PYTHONPATH=$PWD timeout "$lim" python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu $nx \
      --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
    echo "pytest rc ${PIPESTATUS[0]}"
    ;;
  base)
    lim=$1; name=$2; shift 2
    (cd .base && PYTHONPATH=$PWD timeout "$lim" python3 "$@" 2>&1 | tee "$OUT/$name.log"; echo "$name rc ${PIPESTATUS[0]}")
    ;;
  fm)
    lim=$1; shift
    PYTHONPATH=$PWD timeout "$lim" python3 bench/bench_feature_major.py "$@" 2>&1 | tee "$OUT/fm.log"
    echo "fm rc ${PIPESTATUS[0]}"
    ;;
esac
