#!/usr/bin/env bash
# GPU measurements of the mmsp kernel (seventh and eighth sessions, docs/kernels-log.md), run on the device machine from the
# repository root with OUT set:  bash bench/device/mmsp_session.sh STAGE
#   ch     chained-accumulator (CH) configurations: faults/errors in separate processes (diag_kernels.py),
#          then timings at M = 1, 8, 16 beside the existing mmsp configurations, then Nsight Compute on
#          dense and mmsp at M = 16 (two shapes)
#   pd     L2-prefetch (PD), split-K (SK) and rows-per-warp (RW) configurations: diag in separate processes, the GPU test of PD/SK/RW, timings at
#          M = 1, 8, 16 beside the current configurations, Nsight Compute on the best PD one at M = 16
#   as     shared-memory stages (AS): as pd, for the AS configurations
#   big    M = 128-16384 (dtype $DT, default bf16)
#   occ    light configurations (ninth session; measured in the tenth: none faster): no register prefetch, one row tile, 76-126
#          registers offline (2-5 programs of 4 warps per SM instead of 2), most with split-K: as pd
#   pdl    programmatic dependent launch (ninth session; measured in the tenth, on by default since): the GPU test of a dependent
#          chain with PDL modes 1 and 2, off/1/2 timings (pdl_probe.py), kernel_times.py in both modes, then
#          the bf16 e2e with mode $PDL (default 1)
#   fx     split-K fixup (tenth session): diag of the FX configurations, GPU tests of the fixup and PDL, probes
#          at M = 1, 8, 16 with PDL off and with PDL = 1
#   meta   eleventh session: A/B of the metadata build (meta_probe.py, byte permutes against shifts and masks) at M = 16,
#          then the PF = 3 configurations (register prefetch unrolled by two) at M = 16 beside the dispatcher's
#   layout (for the twelfth session) layout_probe.py: the packed weights read in mmsp's row pattern against a contiguous
#          read of the same bytes; then Nsight Compute (stall reasons per instruction, SourceCounters) on the
#          dispatcher's 4096x4096 M = 16 configuration
#   mo     twelfth session: MO configurations (13th element: weights from gluon_mmsp.mma_order's copy in MMA operand
#          order; since the thirteenth also with XS): GPU tests, then mo_probe.py at M = $MO_M (default 16; at M <= 8
#          beside gemvg too) on the shapes $SHAPES (default the six) and dtypes $DTS (default bf16,fp16); the MO
#          configurations in $MO_CFGS (default mo_probe.py's list)
#   motable (thirteenth session, M = 1, 16; since then M = $MO_M, default 1,4,8,16: the MO candidates at M = 2-8 are
#          new) the opt-in MO dispatcher path (LLMSPARSE_MMSP_MO=1): GPU tests of MO and of SparseLinear's MO choice,
#          then the dispatcher's table (six shapes, both dtypes) with MO on
#   xl     fourteenth session (written then, not yet run): XL configurations (MO >= 2: x through a shared-memory ring of
#          MO stages read by ldmatrix, weights from mma_order(order=2)): GPU tests of XL and MO, then mo_probe.py at
#          M = 16 (NT = 2 ones) and M = 8 (NT = 1 ones) beside the dispatcher's best MO configurations, dtypes $DTS
#   xltable fifteenth session: the XL winners of the probes in $XLJSON (paths in the tree) as extra dispatcher
#          candidates in the table at M = 8, 16 with MO on; then cslt_splitk_probe.py (fp16, M = 4096, 1024)
#   early  twelfth session: GPU test of the PDL chain (with and without mmsp's early weight loads, gluon_mmsp.EARLY),
#          then pdl_probe.py --early (PDL modes 1 and 2 with and without early weights) at M = 16 on the six shapes
#   tma    twelfth session: TM configurations (12th element: weights through a TM-stage shared-memory ring filled by
#          bulk tensor copies): diag, GPU tests, probe at M = 8 and 16 beside the dispatcher's, Nsight Compute
#   table  the dispatcher's picks at M = 1-16, all six shapes, both dtypes, with CH configurations as
#          extra candidates, or those in $EXTRA (faulty ones excluded through the names in $EXCL)
# Every step has its own time limit, so a call ends inside the device tool's 600 s.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
CH="4,2,2,1,1,1;4,4,2,0,1,1;8,4,2,0,1,1;2,4,2,0,1,1;8,2,2,1,1,1;4,4,2,0,0,1;4,4,1,1,1,1;4,2,1,1,1,1;4,1,1,1,0,1;4,4,1,0,1,1;4,8,1,0,1,1"
# PD = 8: a warp of a 7B-shape program (K = 4096, WK = 4) has 8 iterations in all, so the prologue then
# prefetches every one of them at once (Nsight Compute: DRAM 33% busy on 4096x4096 at M = 16)
# SK (8th element): K split over 2-4 programs (7B shapes at M = 16: one 4-warp program per SM);
# RW (9th): the warps of a program split its rows and share x through L1
PD="4,2,2,1,1,0,2;4,2,2,1,1,0,4;4,2,2,1,1,0,8;2,2,2,1,1,0,3;8,2,2,1,1,0,2;2,4,2,0,1,1,3;4,1,2,1,1,0,4;4,1,2,1,1,0,8;4,1,1,1,1,0,2;4,1,1,1,1,0,4;4,1,1,1,1,0,8;4,1,1,0,1,0,4;8,2,1,1,1,0,2;4,2,2,1,1,0,0,2;4,2,2,1,1,0,0,4;4,2,2,1,1,0,8,2;4,1,2,1,1,0,0,2;4,1,1,1,1,0,0,2;2,2,2,1,1,0,4,2;4,1,2,1,1,0,0,1,1;4,1,2,1,1,0,0,2,1;4,1,2,1,1,0,0,4,1;4,1,2,1,1,0,4,2,1;4,2,2,1,1,0,0,2,1;2,2,2,1,1,0,0,2,1;4,1,1,1,1,0,0,2,1;8,1,1,1,1,0,4,1,1"
# (offline, sm_90: none of these spills; (4,2,2,1,1,0,4,2,1) and (2,2,2,2,1,0,4,1,1) did and are left out)
# AS (10th element, eighth session; measured in the ninth: correct, no M = 16 gain, docs/kernels-log.md): operands staged through an AS-deep shared-memory ring by
# cp.async instead of register prefetch (84-217 registers offline, no spills, 54-144 KB of shared memory)
AS="4,1,1,0,1,0,0,1,0,2;4,1,1,0,1,0,0,1,0,3;4,1,1,0,1,0,0,1,0,4;8,1,1,0,1,0,0,1,0,3;4,2,1,0,1,0,0,1,0,3;4,1,1,0,0,0,0,1,0,3;4,1,1,0,1,0,0,2,0,3;4,2,2,0,1,0,0,1,0,2;4,2,2,0,1,0,0,1,0,3;4,2,2,0,1,0,0,1,0,4;2,2,2,0,1,0,0,1,0,3;8,2,2,0,1,0,0,1,0,2;4,1,2,0,1,0,0,1,0,4;4,1,2,0,1,0,0,4,1,3;4,2,2,0,1,0,0,2,1,3;2,4,2,0,1,1,0,1,0,2;4,4,2,0,1,1,0,1,0,2;4,2,2,0,1,0,0,2,0,3"
# OCC (ninth session): the streaming-read bound (read_floor.py) reached its rate with thousands of light programs,
# mmsp runs 2 programs of 4 warps per SM at up to 253 registers: configurations with more warps in flight
OCC="4,1,2,0,1;2,1,2,0,1;1,1,2,0,1;4,1,2,0,1,0,0,4,1;4,1,2,0,1,0,0,8,1;2,1,2,0,1,0,0,8,1;1,1,2,0,1,0,0,8;4,1,2,0,1,1,0,4,1;4,1,2,0,1,1;4,1,2,0,0,0,0,4,1;2,1,2,0,1,0,0,4;1,1,2,0,1,0,0,4"
# FX (tenth session): split-K with the in-kernel fixup (11th element; no reduction kernel), SK 2-8 variants of
# the M = 16 configurations and of two M = 8 ones
FX="4,1,2,1,1,0,0,4,1,0,1;4,1,2,1,1,0,0,8,1,0,1;4,1,2,1,1,0,0,2,1,0,1;4,2,2,1,1,0,0,2,1,0,1;4,2,2,1,1,0,0,4,1,0,1;4,2,2,1,1,0,0,2,0,0,1;4,2,2,1,1,0,0,3,0,0,1;8,2,2,1,1,0,0,2,0,0,1;2,4,2,0,1,1,0,2,0,0,1;4,1,1,1,1,0,0,2,1,0,1;4,1,1,1,1,0,0,4,1,0,1"
# PF3 (eleventh session): register prefetch unrolled by two (4th element 3): the loaded registers are turned into MMA
# operands before the MMAs of their own iteration instead of at the end of the one that loads them (offline: no spills,
# 152-255 registers; the chained (4,2,2,3,1,1) at 152)
PF3="4,2,2,3,1;2,2,2,3,1;8,2,2,3,1;4,1,2,3,1;4,1,2,3,1,0,0,4,1;4,2,2,3,1,0,0,2,1;4,2,2,3,1,0,0,4,1,0,1;4,2,2,3,1,1;4,1,2,3,1,0,0,8,1,0,1;4,2,2,3,1,1,0,2"
# TM (twelfth session): bulk tensor copies (TMA) into a TM-stage shared ring; 140-192 registers offline, no spills,
# 40-120 KB of shared memory
TMC="4,2,2,1,1,0,0,1,0,0,0,3;4,2,2,1,1,0,0,1,0,0,0,4;4,2,2,1,1,0,0,1,0,0,0,6;4,1,2,1,1,0,0,4,0,0,0,4;4,1,2,1,1,0,0,2,0,0,0,6;4,2,2,1,1,0,0,2,0,0,0,4;4,2,2,1,1,0,0,4,0,0,1,4;8,1,2,1,1,0,0,1,0,0,0,4;8,2,2,1,1,0,0,1,0,0,0,3;2,2,2,1,1,0,0,1,0,0,0,6;4,4,2,1,1,1,0,1,0,0,0,3;2,4,2,1,1,1,0,1,0,0,0,4;4,1,1,1,1,0,0,1,0,0,0,4;4,2,1,1,1,0,0,1,0,0,0,4"
# diag LIMIT ONLY LIST: each configuration of LIST (and the dispatcher's ones starting with ONLY) in its own
# process; the faulty or wrong ones are excluded for the rest of the stage
diag() {
  timeout "$1" python3 bench/diag_kernels.py --only "$2" --extra "$(echo "$3" | tr ';' '\n' | sed 's/^/mmsp:/' | tr '\n' ' ')" \
    --out "$OUT/diag" | tail -8
  export LLMSPARSE_KERNEL_EXCLUDE="$(cat "$OUT/diag/exclude.txt")"
  echo "EXCLUDE=$LLMSPARSE_KERNEL_EXCLUDE"
}
# probe OUTNAME LIST [LOG]: timings at M = 1, 8, 16 of LIST beside the mmsp configurations of the dispatcher
probe() {
  log="$OUT/${3:-probe.log}"
  timeout 180 python3 bench/device/gemv_gluon_probe.py --out "$OUT/$1" --m "${PROBE_M:-1,8,16}" --paths mmsp --old none \
    --mmsp-cfgs "$2" > "$log" 2>&1
  echo "probe rc $?"; grep " M 16 " "$log"
}
# options NAME LIST NCU_CFG: diag of LIST, the GPU test of the opt-in configurations, probe at M = 1, 8, 16 with
# pick_extra.py (the winners in $OUT/extra.txt), Nsight Compute on NCU_CFG at 8192x28672, M = 16
options() {
  diag 100 mmsp:4,2,2,1,1 "$2"
  [ -z "$LLMSPARSE_KERNEL_EXCLUDE" ] && timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") -k "prefetch_and_split" 2>&1 | tail -3
  probe "$1.json" "$2"
  python3 bench/device/pick_extra.py "$OUT/$1.json" "$2" 2> "$OUT/pick.txt" | tee "$OUT/extra.txt"; grep " M=16 " "$OUT/pick.txt"
  timeout 60 "$NCU" --profile-from-start off --launch-skip 2 --launch-count 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
    python3 bench/device/ncu_kernel.py "$3" 8192x28672 16 bf16 > "$OUT/ncu.txt" 2>&1
  echo "ncu rc $?"
}
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
stage=$1; shift
bash bench/device/h200_session.sh env
# the XL configurations (stages xl and xltable): NT = 2 ones for M = 16, NT = 1 ones for M = 8
XL16="4,1,2,1,1,0,0,4,1,0,0,0,1;4,1,2,1,1,0,0,2,1,0,0,0,1;4,2,2,1,1,0,0,2,1,0,0,0,1;4,2,2,1,1,0,0,1,0,0,0,0,1;4,2,2,2,1,0,0,1,0,0,0,0,1;4,2,2,1,1,0,0,4,1,0,1,0,1"
XL16="$XL16;4,1,2,1,0,0,0,4,1,0,0,0,4;4,1,2,3,0,0,0,4,1,0,0,0,4;4,1,2,1,0,0,0,2,1,0,0,0,4;4,1,2,3,0,0,0,2,1,0,0,0,3"
XL16="$XL16;4,2,2,1,0,0,0,2,1,0,0,0,4;4,2,2,3,0,0,0,2,1,0,0,0,4;4,2,2,1,0,0,0,1,0,0,0,0,4;4,2,2,3,0,0,0,1,0,0,0,0,3"
XL16="$XL16;4,1,2,3,0,0,0,1,0,0,0,0,4;4,2,2,1,0,0,0,4,1,0,1,0,3;2,2,2,1,0,0,0,1,0,0,0,0,3;4,1,2,1,0,0,0,8,1,0,1,0,3"
XL16="$XL16;4,1,2,2,0,0,0,4,1,0,0,0,4;4,1,2,2,0,0,0,2,1,0,0,0,4;4,1,2,2,0,0,0,1,0,0,0,0,4;4,2,2,2,0,0,0,2,1,0,0,0,4"
XL8="4,1,1,1,0,0,0,1,0,0,0,0,1;4,2,1,1,0,0,0,1,0,0,0,0,1;8,2,1,1,0,0,0,1,0,0,0,0,1;4,1,1,1,0,0,0,1,0,0,0,0,3"
XL8="$XL8;4,1,1,3,0,0,0,1,0,0,0,0,3;4,2,1,3,0,0,0,1,0,0,0,0,3;4,1,1,1,0,0,0,2,1,0,0,0,3;4,1,1,3,0,0,0,4,1,0,0,0,4"
XL8="$XL8;4,1,1,2,0,0,0,1,0,0,0,0,3"
case $stage in
  ch)
    diag 120 mmsp "$CH"
    probe ch.json "$CH"
    for spec in "dense 8192x28672" "mmsp:4,2,2,1,1 8192x28672" "mmsp:4,4,2,0,1,1 8192x28672" \
                "dense 4096x4096" "mmsp:4,2,2,1,1 4096x4096"; do
      set -- $spec
      echo "=== $1 $2 M=16 bf16" >> "$OUT/ncu.txt"
      timeout 60 "$NCU" --profile-from-start off --launch-skip 2 --launch-count 1 --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
        python3 bench/device/ncu_kernel.py "$1" "$2" 16 bf16 >> "$OUT/ncu.txt" 2>&1
      echo "ncu $1 $2 rc $?"
    done
    ;;
  pd) options pd "$PD" mmsp:4,2,2,1,1,0,2 ;;
  as) options as "$AS" mmsp:4,2,2,0,1,0,0,1,0,3 ;;  # the GPU test runs five of the AS configurations
  occ) options occ "$OCC" mmsp:4,1,2,0,1,0,0,4,1 ;;
  fx)   # the FX configurations: diag, the GPU tests of the fixup and PDL, then probes with PDL off and on
    diag 100 mmsp:4,2,2,1,1 "$FX"
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "fixup or programmatic" 2>&1 | tail -4
    LLMSPARSE_PDL=0 probe fx.json "$FX"
    python3 bench/device/pick_extra.py "$OUT/fx.json" "$FX" 2> "$OUT/pick.txt"; grep " M=16 " "$OUT/pick.txt"
    echo "=== PDL 1"
    LLMSPARSE_PDL=1 probe fx_pdl.json "$FX" probe_pdl.log
    echo "=== PDL 1" >> "$OUT/pick.txt"
    python3 bench/device/pick_extra.py "$OUT/fx_pdl.json" "$FX" 2>> "$OUT/pick.txt"; grep " M=16 " "$OUT/pick.txt" | tail -12
    ;;
  meta)
    timeout 220 python3 bench/device/meta_probe.py --m 16 --rounds 2 --out "$OUT/meta16.json" 2>&1 | grep -v Warn
    PROBE_M=16 probe pf3.json "$PF3"
    python3 bench/device/pick_extra.py "$OUT/pf3.json" "$PF3" 2> "$OUT/pick.txt"; grep " M=16 " "$OUT/pick.txt"
    ;;
  tma)
    diag 120 mmsp:4,2,2,1,1 "$TMC"
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "tma_stages" 2>&1 | tail -5
    PROBE_M=8,16 probe tma.json "$TMC"
    python3 bench/device/pick_extra.py "$OUT/tma.json" "$TMC" 2> "$OUT/pick.txt" | tee "$OUT/extra.txt"; grep " M=16 " "$OUT/pick.txt"
    timeout 60 "$NCU" --profile-from-start off --launch-skip 2 --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
      python3 bench/device/ncu_kernel.py mmsp:4,2,2,1,1,0,0,1,0,0,0,4 8192x28672 16 bf16 > "$OUT/ncu_tma.txt" 2>&1
    echo "ncu rc $?"; grep -i "Duration\|DRAM Throughput\|Registers Per\|Achieved Occ" "$OUT/ncu_tma.txt"
    ;;
  mo)
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "mma_order" 2>&1 | tail -5
    timeout "${MO_LIMIT:-330}" python3 bench/device/mo_probe.py --out "$OUT/mo.json" --dtype "${DTS:-bf16,fp16}" --m "${MO_M:-16}" ${MO_CFGS:+--mo "$MO_CFGS"} --shapes "${SHAPES:-4096x4096,11008x4096,4096x11008,8192x8192,28672x8192,8192x28672}" 2>&1 | grep -v Warn
    ;;
  motable)
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "mma_order or tma_stages" 2>&1 | tail -5
    LLMSPARSE_MMSP_MO=1 timeout 400 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m "${MO_M:-1,4,8,16}" \
      --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp --out "$OUT/k" 2>&1 | tail -32
    ;;
  xl)
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "x_through_shared_memory or mma_order" 2>&1 | tail -5
    timeout 220 python3 bench/device/mo_probe.py --out "$OUT/xl16.json" --dtype "${DTS:-bf16,fp16}" --m 16 --mo "$XL16" 2>&1 | grep -v Warn
    timeout 150 python3 bench/device/mo_probe.py --out "$OUT/xl8.json" --dtype "${DTS:-bf16}" --m 8 --mo "$XL8" 2>&1 | grep -v Warn
    ;;
  xltable)
    # after xl: the XL configurations that beat every other one by 3% in some row of the probes in $XLJSON (files
    # of the tree, e.g. the xl stage's xl16.json and xl8.json copied under bench/results) join the dispatcher's
    # candidates (--mmsp-extra) for its table at M = 8 and 16 with MO on; then cuSPARSELt's split-K probe
    W=""; XLONLY=$(echo "$XL16;$XL8" | tr ';' '\n' | grep -v ',1$' | tr '\n' ';')  # MO >= 2 (the MO = 1 ones are the base)
    for f in ${XLJSON:-}; do
      w=$(python3 bench/device/pick_extra.py "$f" "$XLONLY" 2>> "$OUT/pick.txt"); W="$W${W:+;}$w"
    done
    W=$(echo "$W" | tr ';' '\n' | grep -v '^$' | sort -u | tr '\n' ';' | sed 's/;$//')
    cat "$OUT/pick.txt" 2> /dev/null; echo "XL winners: $W"
    LLMSPARSE_MMSP_MO=1 timeout 300 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 8,16 \
      --dtype bf16,fp16 --paths gemvg,gemv,mmg,cslt,mmsp ${W:+--mmsp-extra "$W"} --out "$OUT/k" 2>&1 | tail -26
    timeout 240 python3 bench/device/cslt_splitk_probe.py --out "$OUT/cslt_splitk.json" 2>&1 | grep -v Warn | tail -30
    ;;
  early)
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu $(python3 -c "import xdist" 2>/dev/null && echo -n "-n 8") \
      -k "programmatic" 2>&1 | tail -3
    timeout 220 python3 bench/device/pdl_probe.py --out "$OUT/pdl_early.json" --early --dtype "${DT:-bf16}" \
      --shapes 4096x4096,11008x4096,4096x11008,8192x8192,28672x8192,8192x28672 \
      --cases "16:mmsp:4,1,2,1,1,0,0,4,1;16:mmsp:4,2,2,1,1" 2>&1 | grep -v Warn
    ;;
  layout)
    timeout 240 python3 bench/device/layout_probe.py --out "$OUT/layout.json" 2>&1 | grep -v Warn
    # per-instruction stall samples (SASS) of the dispatcher's M = 16 configurations at a 7B and a 70B shape
    for spec in "mmsp:4,1,2,1,1,0,0,4,1 4096x4096 m16_7b" "mmsp:4,2,2,1,1 8192x28672 m16_70b"; do
      set -- $spec
      timeout 100 "$NCU" --profile-from-start off --launch-skip 2 --launch-count 1 --section SpeedOfLight \
        --section WarpStateStats --section SourceCounters --section MemoryWorkloadAnalysis --section Occupancy \
        -f -o "/tmp/$3" python3 bench/device/ncu_kernel.py "$1" "$2" 16 bf16 > /dev/null 2>&1
      echo "ncu $3 rc $?"
      "$NCU" -i "/tmp/$3.ncu-rep" --page details > "$OUT/ncu_$3.txt" 2>&1
      "$NCU" -i "/tmp/$3.ncu-rep" --page source --csv --print-source sass > "$OUT/src_$3.csv" 2>&1
      grep -i "Duration\|DRAM Throughput\|Warp Cycles Per Issued\|Stall" "$OUT/ncu_$3.txt" | head -12
    done
    ;;
  table)
    [ -n "${EXCL:-}" ] && export LLMSPARSE_KERNEL_EXCLUDE="$EXCL"
    timeout 300 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1,2,4,8,16 --dtype bf16,fp16 \
      --paths gemvg,gemv,mmg,cslt,mmsp --mmsp-extra "${EXTRA:-$CH}" --out "$OUT/k" 2>&1 | tail -32
    ;;
  pdl)
    nx=""; python3 -c "import xdist" 2>/dev/null && nx="-n 4"
    timeout 90 python3 -m pytest -q -p no:cacheprovider tests/gpu $nx -k programmatic 2>&1 | tail -3
    timeout 180 python3 bench/device/pdl_probe.py --out "$OUT/pdl_probe.json" 2>&1 | grep -v Warn | tail -12
    for mode in 1 2; do
      LLMSPARSE_PDL=$mode timeout 40 python3 bench/device/kernel_times.py dense 4096x4096 16 fp16 \
        mmsp:4,1,2,1,1,0,0,4,1 2>&1 | grep -v Warn
    done
    # end to end with the PDL mode of the probe's better mode ($PDL, default 1)
    LLMSPARSE_PDL=${PDL:-1} LLMSPARSE_KERNEL_CACHE=off timeout 200 python3 bench/bench_e2e.py --dtype bf16 \
      --compile layers --out "$OUT/e2e_pdl" > "$OUT/e2e_pdl.log" 2>&1
    echo "e2e rc $?"; grep -i "prefill\|decode" "$OUT/e2e_pdl.log" | tail -3
    ;;
  big)   # M = 128-16384 in one dtype ($DT), the dispatcher's picks (cuSPARSELt, Triton mm, dense)
    timeout 560 python3 bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 128,1024,4096,16384 \
      --dtype "${DT:-bf16}" --out "$OUT/kb" 2>&1 | tail -32
    ;;
esac
