#!/usr/bin/env bash
# Twenty-first session's GPU calls, from the repository root with OUT set; each part fits one call (600 s):
#   bash bench/device/s21.sh a     the GPU tests fixed in the twentieth session (wide MO table filter; e2e_bench where
#                                  dense keeps the tiny k/v projections, with --interleave) and the new cache-policy
#                                  test, then the cache-policy probe (EVICT 0/1/2) at M = 16 on 8192x8192 and
#                                  4096x11008 (and 8448x8192: 66 x 128 rows, 132 programs of RW = 1 RT = 2 SK = 2, one per
#                                  SM), both dtypes, with nine more configurations (any card; H100 for numbers
#                                  against the targets)
#   bash bench/device/s21.sh a2    "a" cut to about 7 minutes (8192x8192 and 8448x8192 only, four extra configurations)
#   bash bench/device/s21.sh a3    the least of it (about 4 minutes): the cache-policy test (fp16), the probe in fp16 on
#                                  8192x8192 and 8448x8192 with one extra configuration
#   bash bench/device/s21.sh e2e   fp16 batch 1 causal with --interleave 10 (H100), then fp16 batch 32 causal
#   bash bench/device/s21.sh rest1 as in s19.sh (kernel-level GPU tests cut earlier)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
pyt() { timeout "$1" python3 -m pytest -q -p no:cacheprovider --durations=10 tests/gpu -k "$2" > "$OUT/$3" 2>&1; tail -16 "$OUT/$3"; }
e2e() {  # dtype batch timeout [extra args]
  local name=e2e_$1_b$2_causal
  LLMSPARSE_KERNEL_CACHE=off timeout $3 python3 bench/bench_e2e.py --dtype $1 --compile layers --batch $2 \
    --prefill-attention causal ${4:-} --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$?"
  grep -E "^decoder linears|^prefill|^decode|dense again|interleav" "$OUT/$name.log" | head -20
}
probe() {  # timeout shapes dtypes extra-configurations: the cache-policy probe at M = 16
  LLMSPARSE_KERNEL_CACHE=off timeout "$1" python3 bench/device/evict_probe.py --shapes "$2" --m 16 --dtype "$3" \
    --rounds 5 --out "$OUT/evict_probe.json" --extra "$4" 2>&1 | grep -v Advisory | tail -10
}
case ${1:-} in
  a)
    # beside the dispatcher's order-2 configurations: the weights two iterations ahead (PF = 2: more bytes in flight),
    # split counts 1 and 3, the split-K fixup, a ring of 3 (plain loads only)
    EXTRA="4,2,2,2,0,0,0,2,1,0,0,0,4;4,1,2,2,0,0,0,4,1,0,0,0,4;4,2,2,3,0,0,0,1,1,0,0,0,4;4,2,2,3,0,0,0,3,1,0,0,0,4"
    EXTRA="$EXTRA;4,2,2,3,0,0,0,2,1,0,1,0,4;4,2,2,3,0,0,0,2,1,0,0,0,3"
    # lighter and more programs (the streaming-read floor used thousands of 4-warp programs): SK = 8 with the
    # fixup, two warps per program
    EXTRA="$EXTRA;4,1,2,3,0,0,0,8,1,0,1,0,4;2,1,2,3,0,0,0,4,1,0,0,0,4;2,1,2,3,0,0,0,8,1,0,1,0,4"
    pyt 200 "wide_mo_candidates or e2e_bench or cache_policy" pytest_a.txt
    probe 340 8192x8192,8448x8192,4096x11008 fp16,bf16 "$EXTRA"
    ;;
  a2)  # "a" cut to the device time left (about 7 minutes): no 4096x11008
    pyt 150 "wide_mo_candidates or e2e_bench or cache_policy" pytest_a.txt
    EXTRA="4,2,2,2,0,0,0,2,1,0,0,0,4;4,2,2,3,0,0,0,3,1,0,0,0,4;4,1,2,3,0,0,0,8,1,0,1,0,4;2,1,2,3,0,0,0,4,1,0,0,0,4"
    probe 230 8192x8192,8448x8192 fp16,bf16 "$EXTRA"
    ;;
  a3)  # the least of "a" (about 4 minutes): the cache-policy test, the 8192/8448 diagnostic in fp16
    pyt 60 "cache_policy and dtype0" pytest_a3.txt
    probe 170 8192x8192,8448x8192 fp16 "4,1,2,3,0,0,0,8,1,0,1,0,4"
    ;;
  e2e)
    e2e fp16 1 280 "--interleave 10"
    e2e fp16 32 280
    ;;
  rest1) bash bench/device/s19.sh rest1 ;;
  *) echo "usage: bash bench/device/s21.sh a|a2|a3|e2e|rest1" >&2; exit 2 ;;
esac
