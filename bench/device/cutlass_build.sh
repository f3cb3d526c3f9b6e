#!/usr/bin/env bash
# Builds bench/device/cutlass_sp24_probe.cu once per configuration (in parallel) into $BIN (default
# bench/device/cutlass_bin). Needs nvcc (CUDA 12.4+) and the CUTLASS headers: CUTLASS=<dir holding include/ and
# tools/util/include> (the `nvidia-cutlass` wheel's cutlass_library/source). Each line of CONFIGS: TM TN TK CM CN SCHED.
set -u
BIN=${BIN:-bench/device/cutlass_bin}
CUTLASS=${CUTLASS:?set CUTLASS to the CUTLASS source dir}
JOBS=${JOBS:-2}
mkdir -p "$BIN"
CONFIGS=${CONFIGS:-"128 128 128 1 2 0
128 256 128 1 2 0
256 128 128 2 1 0
128 256 64 1 2 0
128 128 128 1 2 1
128 128 128 2 1 0
256 128 64 1 1 0
128 256 128 1 1 0"}
echo "$CONFIGS" | while read -r tm tn tk cm cn s; do
  name="sp24_${tm}x${tn}x${tk}_c${cm}x${cn}_s${s}"
  echo "nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -DNDEBUG -I$CUTLASS/include -I$CUTLASS/tools/util/include ${NVCC_EXTRA:-} -DTM=$tm -DTN=$tn -DTK=$tk -DCM=$cm -DCN=$cn -DSCHED=$s bench/device/cutlass_sp24_probe.cu -o $BIN/$name > $BIN/$name.log 2>&1 || echo BUILD FAILED $name"
done | xargs -P "$JOBS" -I{} sh -c "{}"
ls "$BIN"
