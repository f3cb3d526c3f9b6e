"""``python -m llmsparse.kernels.build_cutlass build|status``: build (or report on) the CUTLASS 2:4 library that
the ``cutlass`` prefill path loads (:mod:`llmsparse.kernels.cutlass_sp24`). A module of its own so that ``-m`` does
not execute ``cutlass_sp24`` a second time (the package imports it)."""
import sys

from .cutlass_sp24 import main

if __name__ == "__main__":
    sys.exit(main())
