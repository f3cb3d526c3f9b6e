# Sourced by the session scripts (s23.sh, s24.sh, s25.sh) on the device, from the repository root with OUT set.
lib() {  # sets LLMSPARSE_CUTLASS_LIB to a library that loads here
  export LLMSPARSE_CUTLASS_LIB=$PWD/bench/device/cutlass_bin/libllms_sp24.so
  if ! python3 -c "from llmsparse.kernels import cutlass_sp24 as c; c.load()" > "$OUT/lib_load.txt" 2>&1; then
    echo "carried library does not load ($(tail -1 "$OUT/lib_load.txt")); building with $(which nvcc)"
    unset LLMSPARSE_CUTLASS_LIB
    (mkdir -p /tmp/cutl && cd /tmp/cutl && python3 -m zipfile -e "$OLDPWD"/bench/device/cutlass_bin/nvidia_cutlass-*.whl .)
    export LLMSPARSE_CUTLASS_DIR=/tmp/cutl/cutlass_library/source LLMSPARSE_CUTLASS_CACHE=/tmp/cutlass_cache
    timeout 200 python3 -m llmsparse.kernels.build_cutlass build 2>&1 | tail -2
  fi
}
