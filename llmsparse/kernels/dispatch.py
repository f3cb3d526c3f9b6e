"""Per-M path choice for 2:4 linear layers, by measurement.

For every (GPU, dtype, out, in, bias) and every bucket of token counts M (powers of two up to
16384) the dispatcher times, on synthetic random 2:4 weights of that shape and fresh random inputs:

* ``dense``: cuBLAS ``F.linear`` on the dense-with-zeros weight,
* ``gemv``:  the Triton kernel that selects inputs by the 2-bit indices (M <= 8),
* ``gemvg``: the same algorithm in Gluon with hand-placed register layouts (M <= 8, several tokens
  per program; :mod:`.gluon_sp24`),
* ``mmg``:   Gluon, dense W fragments rebuilt in registers for mma.sync tensor-core steps, split-K
  (9 <= M <= 16: the only bucket where it was measured to beat dense, docs/kernels-log.md),
* ``mmsp``:  Gluon on the sparse tensor cores (``mma.sp`` on the packed weights as they are;
  :mod:`.gluon_mmsp`), M <= 16, K % 128 == 0,
* ``mm``/``mmb``: the Triton kernels that rebuild dense tiles in registers for ``tl.dot`` (M <= 256),
* ``cslt``:  cuSPARSELt on the sparse tensor cores, over a few algorithm ids (M >= 16),
* ``cutlass``: CUTLASS's Hopper sparse GEMM (``wgmma.sp``; :mod:`.cutlass_sp24`), M >= 128, where its library is
  built (compute capability 9.0),

checks each sparse candidate's output against dense (relative error), and keeps the fastest. A
sparse path is chosen only if it beats dense by ``min_speedup``; otherwise the bucket uses dense, so
a 2:4 layer is never slower than the dense one at the measured sizes. Timings are GPU times of
CUDA-graph replays (see :mod:`.timing`). Choices live in a process-wide table shared by every
layer of the same shape; ``save_cache``/``load_cache`` keep them in a JSON file.
"""
from __future__ import annotations

import functools
import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_MIN_SPEEDUP = 1.05  # a sparse path must win by more than timing noise (about +-5% at large M)
# cuSPARSELt algorithm ids measured besides its own search (which faults for fp16 on an H100 with
# cuSPARSELt 0.8, see triton_sp24.DEFAULT_EXCLUDE), each with both result layouts. Measured there
# (bench/device/cslt_probe.py, bench/results/cslt_probe_h100.json): with a contiguous [M, N] result,
# fp16 is fastest with alg 1 and transpose_result=True (1.08-1.25x dense at M=4096); alg 0 untransposed
# is as fast as PyTorch's stock path only when the [N, M] result is left transposed (stock returns
# that non-contiguous view); the transposing copy costs 0.4-0.8x of the GEMM. bf16: the searched id.
# A candidate whose single eager call (host setup + GPU, synchronized) takes longer than this, and than
# HOST_LIMIT_X x dense's, is refused even if its CUDA-graph replays are the fastest: layers also run
# uncaptured (eager generate, torch.compile without cudagraphs). Seen: cuSPARSELt 0.8 with fp16 and
# alg 1 spends 270-360 ms on the host per call (H200; bench/results/cslt_host_time_h200.json), 1000x
# its GPU time; bf16 and fp16 alg 0 take 0.6-1.9 ms.
HOST_LIMIT_MS = 5.0
HOST_LIMIT_X = 10.0
CSLT_ALGS_SMALL = (0, 1)
CSLT_ALGS_LARGE = (0, 1, 2)


def bucket_of(m: int) -> int:
    """The smallest bucket >= m (the largest bucket for anything bigger)."""
    for b in BUCKETS:
        if m <= b:
            return b
    return BUCKETS[-1]


@dataclass
class Choice:
    path: str  # "dense" | "gemv" | "gemvg" | "mmg" | "mmsp" | "mm" | "mmb" | "cslt" | "cutlass"
    cfg: tuple = ()  # gemv: (BN, BK, warps, stages); gemvg: (TOK, RT, GPT, WR, WC); mmg: (WN, RN, KREP, BM, splits);
    # mmsp: (WK, RT, NT, PF[, XS[, CH]]);
    # mm/mmb: (BM, BN, BK, warps, stages); cslt: (alg_id, result): see cslt.cslt_linear;
    # cutlass: (index into cutlass_sp24.CONFIGS,)
    ms: float = math.nan  # measured ms of this choice at the bucket's M
    dense_ms: float = math.nan  # measured ms of dense at the bucket's M
    err: float = math.nan  # relative error vs dense-with-zeros F.linear in the check
    # an MO choice's stand-in for a layer that does not hold its MMA-order copy (SparseLinear holds one copy,
    # of one order): the fastest measured candidate that reads the row-major packed pair, or "dense" if none
    # beat dense by min_speedup in that measurement (tune sets it; empty: the row-major twin)
    alt_path: str = ""
    alt_cfg: tuple = ()

    @property
    def alt(self) -> "Choice | None":
        return Choice(self.alt_path, self.alt_cfg) if self.alt_path else None

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.ms if self.ms and not math.isnan(self.ms) else math.nan


@dataclass
class TuneRecord:
    """Every candidate measured for one key and bucket (kept for reports)."""

    key: tuple
    m: int
    timings: dict = field(default_factory=dict)  # candidate name -> ms
    errors: dict = field(default_factory=dict)  # candidate name -> rel err (or 'error: ...')
    confirmed: dict = field(default_factory=dict)  # re-measurements of dense and the winner (ms)


def records_json(records=None) -> list[dict]:
    """The tuning records (default: all of this process, :data:`RECORDS`) as JSON-ready dicts."""
    return [{"key": list(r.key), "M": r.m, "timings": r.timings, "confirmed": r.confirmed,
             "errors": {k: (v if isinstance(v, str) else float(v)) for k, v in r.errors.items()}}
            for r in (RECORDS if records is None else records)]


# key -> {bucket: Choice}; the inner dict object is shared by all layers of that key
_TABLE: dict[tuple, dict[int, Choice]] = {}
RECORDS: list[TuneRecord] = []


def device_name(device=None) -> str:
    return torch.cuda.get_device_name(device)


def make_key(out_features: int, in_features: int, dtype: torch.dtype, has_bias: bool, device=None) -> tuple:
    return (device_name(device), str(dtype).replace("torch.", ""), int(out_features), int(in_features), bool(has_bias))


def table_for(key: tuple) -> dict[int, Choice]:
    return _TABLE.setdefault(key, {})


def view_key(key: tuple) -> tuple:
    """The key of a shape's *view* table: the choices for callers that take a transposed ``[M, N]`` view
    as the output (SparseLinear under torch.compile, whose consumers fuse the transpose). Besides every
    candidate of the normal table it holds cuSPARSELt's ``[N, M]`` result left transposed (``cslt:a,2``),
    timed without the transposing copy."""
    return tuple(key) + ("view",)


def mo_key(key: tuple, order: int) -> tuple:
    """The key of a shape's table for layers that hold only ``gluon_mmsp.mma_order``'s copy of order ``order``
    (``SparseLinear.mo_storage``): its candidates are the MO configurations of that order, cuSPARSELt and dense
    (:func:`candidates` with ``mo_only``)."""
    return tuple(key) + ("mo", int(order))


def is_mo(c: Choice) -> bool:
    """Whether ``c`` is an mmsp configuration that reads an MMA-order copy of the weights."""
    return mo_order(c) != 0


def mo_order(c: Choice) -> int:
    """Which ``gluon_mmsp.mma_order`` copy ``c`` reads: 0 (none), 1 or 2 (``gluon_mmsp.mo_order``)."""
    if c.path != "mmsp":
        return 0
    from . import gluon_mmsp

    return gluon_mmsp.mo_order(c.cfg)


def row_major_twin(c: Choice) -> Choice:
    """An MO choice's twin that reads the row-major packed weights (same tiling and register cap): what a layer
    without the copy runs where the table names no measured stand-in (``Choice.alt``)."""
    from . import gluon_mmsp

    return Choice("mmsp", gluon_mmsp.row_major_twin(c.cfg))


def is_view(c: Choice) -> bool:
    """Whether ``c`` returns a transposed view rather than a contiguous ``[M, N]``."""
    return c.path == "cslt" and len(c.cfg) > 1 and c.cfg[1] == 2


def clear() -> None:
    _TABLE.clear()
    RECORDS.clear()


_KERNEL_FILES = ("dispatch.py", "triton_sp24.py", "gluon_sp24.py", "gluon_mmsp.py", "cslt.py", "timing.py",
                 "cutlass_sp24.py", os.path.join("csrc", "cutlass_sp24.cu"))


@functools.lru_cache(maxsize=1)
def _signature() -> tuple:
    import hashlib

    h = hashlib.sha1()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in _KERNEL_FILES:
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    try:
        import triton

        tv = triton.__version__
    except Exception:  # pragma: no cover - no Triton
        tv = None
    return torch.__version__, tv, h.hexdigest()[:16]


def cache_signature() -> dict:
    """What a saved choice depends on besides the GPU (which is part of every key): the torch and Triton
    versions, the kernel code itself (a hash of this package's kernel sources), the programmatic
    dependent launch mode of the small-M kernels (``gluon_sp24.PDL``), ``mmsp``'s metadata build
    (``gluon_mmsp.META``), its early weight loads (``gluon_mmsp.EARLY``), the weight loads' cache policy
    (``gluon_mmsp.EVICT``), whether MO configurations are
    timed (``gluon_mmsp.MO_TUNING``) and whether the wider ones are (``gluon_mmsp.MO_WIDE``), all of which change
    timings or choices. A file written under another
    signature is ignored, never half-used."""
    from . import gluon_mmsp, gluon_sp24

    torch_v, triton_v, kernels = _signature()  # hashed once per process
    return {"torch": torch_v, "triton": triton_v, "kernels": kernels, "pdl": int(gluon_sp24.PDL),
            "meta": int(gluon_mmsp.META), "early": int(gluon_mmsp.EARLY), "evict": int(gluon_mmsp.EVICT),
            "mo": int(gluon_mmsp.MO_TUNING), "wide": int(gluon_mmsp.MO_WIDE)}


def default_cache_path() -> str | None:
    """Where :func:`sparsify`/``load`` keep measured choices: ``$LLMSPARSE_KERNEL_CACHE`` (empty, ``0``
    or ``off``: no cache), else ``$XDG_CACHE_HOME/llmsparse/kernel-choices.json`` (``~/.cache`` by default)."""
    env = os.environ.get("LLMSPARSE_KERNEL_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none") else os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llmsparse", "kernel-choices.json")


def _read_cache(path: str) -> list:
    """The entries of a cache file written under this signature ([] if absent, foreign or unreadable)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("signature") != cache_signature():
        return []
    entries = data.get("entries")
    return entries if isinstance(entries, list) else []


def save_cache(path: str) -> int:
    """Write every measured choice to ``path`` (JSON), merged with the entries already there for other
    shapes or GPUs; atomic (a temporary file, then a rename). Returns how many keys the file holds."""
    import tempfile

    merged = {tuple(e["key"]): e["choices"] for e in _read_cache(path) if "key" in e and "choices" in e}
    for k, t in _TABLE.items():
        if t:
            merged.setdefault(k, {}).update({str(b): asdict(c) for b, c in t.items()})
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kernel-choices-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"signature": cache_signature(),
                       "entries": [{"key": list(k), "choices": c} for k, c in merged.items()]}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(merged)


def load_cache(path: str) -> int:
    """Load the choices :func:`save_cache` wrote under this signature; returns how many (0 for a missing,
    unreadable or foreign file). Buckets measured in this process are kept."""
    n = 0
    for e in _read_cache(path):
        try:
            key = tuple(e["key"])
            choices = {int(b): Choice(**dict(c, cfg=tuple(c["cfg"]), alt_cfg=tuple(c.get("alt_cfg", ()))))
                       for b, c in e["choices"].items()}
        except (KeyError, TypeError, ValueError):
            continue  # a malformed entry: measure that shape again
        t = table_for(key)
        for b, c in choices.items():
            if b not in t:
                t[b] = c
                n += 1
    return n


def table_size() -> int:
    return sum(len(t) for t in _TABLE.values())


# --------------------------------------------------------------------------- execution

def run_choice(choice: Choice, x: torch.Tensor, *, values=None, meta=None, dense=None, cslt_packed=None,
               bias=None, out_features: int, mo=None, cutlass=None) -> torch.Tensor:
    """``x @ W^T (+ bias)`` through one path. ``mo``: ``gluon_mmsp.mma_order``'s copy ``(values, meta)``, which
    the MO configurations of ``mmsp`` read instead of the packed pair (ValueError without it); ``cutlass``:
    ``cutlass_sp24.compress``'s ``(A_c, E)``, which the ``cutlass`` path reads."""
    p = choice.path
    if p == "gemv":
        from .triton_sp24 import sp24_gemv

        return sp24_gemv(x, values, meta, bias, out_features, cfg=choice.cfg)
    if p in ("gemvg", "mmg", "mmsp"):
        from .gluon_sp24 import supported

        if not supported(x, values, meta):  # e.g. a strided or oddly aligned view of the input
            x = x.contiguous()
            x = x if x.data_ptr() % 8 == 0 else x.clone()
        if p == "mmsp":
            from .gluon_mmsp import mmsp_supported, sp24_mmsp_gl

            if is_mo(choice):
                if mo is None:
                    raise ValueError(f"{choice_name(choice)} reads the MMA-order copy of the weights (mo=)")
                return sp24_mmsp_gl(x, mo[0], mo[1], bias, out_features, cfg=choice.cfg)
            if mmsp_supported(x, values, meta):
                return sp24_mmsp_gl(x, values, meta, bias, out_features, cfg=choice.cfg)
        elif supported(x, values, meta):
            from .gluon_sp24 import sp24_gemv_gl, sp24_mm_gl

            fn = sp24_gemv_gl if p == "gemvg" else sp24_mm_gl
            return fn(x, values, meta, bias, out_features, cfg=choice.cfg)
        # packed tensors the integer views cannot read (misaligned, in_features % 32 != 0; mmsp: % 128):
        # Triton kernels
        from .triton_sp24 import GEMV_MAX_M, MM_CONFIGS, sp24_gemv, sp24_mm

        if x.shape[0] <= GEMV_MAX_M:
            return sp24_gemv(x, values, meta, bias, out_features)
        return sp24_mm(x, values, meta, bias, out_features, block_m=16, cfg=MM_CONFIGS[16][0])
    if p == "mm":
        from .triton_sp24 import sp24_mm

        return sp24_mm(x, values, meta, bias, out_features, block_m=choice.cfg[0], cfg=choice.cfg[1:])
    if p == "mmb":
        from .triton_sp24 import sp24_mm_wb

        return sp24_mm_wb(x, values, meta, bias, out_features, block_m=choice.cfg[0], cfg=choice.cfg[1:])
    if p == "cslt":
        from .cslt import cslt_linear

        return cslt_linear(x, cslt_packed, bias, choice.cfg[0], int(choice.cfg[1]) if len(choice.cfg) > 1 else 1)
    if p == "cutlass":
        if cutlass is None:
            raise ValueError(f"{choice_name(choice)} reads CUTLASS's compressed weight (cutlass=)")
        from .cutlass_sp24 import gemm

        return gemm(x, cutlass[0], cutlass[1], int(choice.cfg[0]), out_features, bias)
    if p == "dense":
        return F.linear(x, dense, bias)
    raise ValueError(f"unknown path {p!r}")


def choice_name(c: Choice) -> str:
    """``gemv:4,1024,4,2`` / ``mm:16:32,256,4,3`` / ``cslt:0``: the names LLMSPARSE_KERNEL_EXCLUDE uses."""
    if c.path in ("mm", "mmb"):
        return f"{c.path}:{c.cfg[0]}:" + ",".join(map(str, c.cfg[1:]))
    return f"{c.path}:" + ",".join(map(str, c.cfg))


# The Triton tensor-core kernels mm/mmb (dense tiles rebuilt for tl.dot) won none of the 414 tunings of the
# H100/H200 GEMM tables in bench/results (nor came within 5% of the winner), so they are not measured by
# default; they stay selectable (``paths=``) and are the packed-only fallback at M > 16
# (linear._best_sparse_fallback) whatever the paths.
def choice_from_name(name: str) -> Choice:
    """The inverse of :func:`choice_name` (``mm:16:32,256,4,3`` -> ``Choice("mm", (16, 32, 256, 4, 3))``);
    ValueError for a name it cannot read."""
    path, _, rest = name.partition(":")
    if path not in ALL_PATHS + ("dense",) or (not rest and path != "dense"):
        raise ValueError(f"unknown kernel configuration {name!r}")
    if path in ("mm", "mmb"):
        bm, _, cfg = rest.partition(":")
        rest = f"{bm},{cfg}"
    return Choice(path, tuple(int(v) for v in rest.split(",")) if rest else ())


# cutlass: offered only where its library is built (cutlass_sp24.available), never built by tuning itself
DEFAULT_PATHS = ("gemvg", "mmsp", "gemv", "mmg", "cslt", "cutlass")
# the paths that read a compressed form of their own (cuSPARSELt's, CUTLASS's; a layer builds it only where a choice
# reads it) rather than the packed pair or the MMA-order copy
OWN_FORM_PATHS = ("cslt", "cutlass")
ALL_PATHS = DEFAULT_PATHS + ("mm", "mmb")  # every kernel family (the names --paths accepts)


def check_paths(paths) -> tuple:
    """``paths`` as a tuple of known kernel families (ValueError naming the unknown ones)."""
    paths = (paths,) if isinstance(paths, str) else tuple(paths)
    bad = [p for p in paths if p not in ALL_PATHS]
    if bad or not paths:
        raise ValueError(f"unknown kernel path(s) {bad or paths}; choose from {', '.join(ALL_PATHS)}")
    return paths


def candidates(m: int, *, paths=DEFAULT_PATHS, cslt_algs=(0,), dtype=None,
               in_features: int | None = None, views: bool = False, mo_only: int = 0) -> list[Choice]:
    """The configurations measured for M; ``views`` adds cuSPARSELt's ``[N, M]`` result returned as a
    transposed view (``cslt:a,2``, for :func:`view_key` tables only). ``mo_only`` (1 or 2): only what a layer
    holding nothing but ``mma_order``'s copy of that order can run: the MO configurations of that order
    (``gluon_mmsp.mo_configs_for``: at every M <= 16, whether or not ``MO_TUNING`` is on; up to 64 with
    ``MO_WIDE``), cuSPARSELt and CUTLASS (their own forms). ``cutlass`` is listed where ``in_features`` suits it
    (``cutlass_sp24.K_ALIGN``); whether its library is there is :func:`tune`'s check."""
    from . import gluon_sp24
    from .triton_sp24 import GEMV_CONFIGS, GEMV_MAX_M, MM_CONFIGS, MMB_CONFIGS, excluded

    out: list[Choice] = []
    gluon_k = in_features is None or in_features % 32 == 0  # the Gluon kernels' integer views need it
    if mo_only:
        from . import gluon_mmsp

        if ("mmsp" in paths and gluon_k and gluon_mmsp.MMSP_AVAILABLE
                and (in_features is None or in_features % gluon_mmsp.MMSP_K == 0)):
            out += [Choice("mmsp", c) for c in gluon_mmsp.mo_configs_for(m) if gluon_mmsp.mo_order(c) == mo_only]
        paths = tuple(p for p in paths if p in OWN_FORM_PATHS)
    if "gemvg" in paths and m <= gluon_sp24.MAX_M and gluon_sp24.AVAILABLE and gluon_k:
        out += [Choice("gemvg", c) for c in gluon_sp24.configs_for(m)]
    if "mmg" in paths and gluon_sp24.MM_MIN_M <= m <= gluon_sp24.MM_MAX_M and gluon_sp24.MMA_AVAILABLE and gluon_k:
        out += [Choice("mmg", c) for c in gluon_sp24.mm_configs_for(m)]
    if "mmsp" in paths and gluon_k:
        from . import gluon_mmsp

        if gluon_mmsp.MMSP_AVAILABLE and m <= gluon_mmsp.MMSP_MAX_M and (
                in_features is None or in_features % gluon_mmsp.MMSP_K == 0):
            out += [Choice("mmsp", c) for c in gluon_mmsp.mmsp_configs_for(m)]
    if "gemv" in paths and m <= GEMV_MAX_M:
        out += [Choice("gemv", c) for c in GEMV_CONFIGS]
    bms = [min(max(16, 1 << (m - 1).bit_length()), 64)]
    if m >= 128:
        bms.append(128)
    for p, table in (("mm", MM_CONFIGS), ("mmb", MMB_CONFIGS)):
        if p in paths and m <= 256:
            for bm in bms:
                out += [Choice(p, (bm,) + c) for c in table[bm]]
    if "cslt" in paths and m >= 16:
        out += [Choice("cslt", (a, tr)) for a in cslt_algs for tr in ((1, 0, 2) if views else (1, 0))]
    if "cutlass" in paths:
        from . import cutlass_sp24

        if m >= cutlass_sp24.MIN_M and (in_features is None or in_features % cutlass_sp24.K_ALIGN == 0):
            out += [Choice("cutlass", (i,)) for i in range(len(cutlass_sp24.CONFIGS))]
    return [c for c in out if not excluded(choice_name(c), dtype)]


def _fatal(e: Exception) -> bool:
    """A CUDA fault (illegal instruction/address, assert) poisons the context: stop, do not skip."""
    msg = str(e)
    if "invalid value when calling `cusparseLt" in msg:
        # an argument cuSPARSELt rejects on the host (seen on an H200: an algorithm id a layout does not
        # have); torch words it as a CUDA error, but the context is fine: skip that candidate
        return False
    return "CUDA error" in msg or "illegal" in msg.lower() or type(e).__name__ == "AcceleratorError"


def random_24(n: int, k: int, dtype, device, generator=None) -> torch.Tensor:
    """A random dense-with-zeros 2:4 weight (2 of every 4 consecutive inputs kept, random positions)."""
    w = torch.randn(n, k, device=device, dtype=torch.float32, generator=generator) * (1.0 / math.sqrt(k))
    score = torch.rand(n, k // 4, 4, device=device, generator=generator)
    keep = torch.zeros_like(score, dtype=torch.bool)
    keep.scatter_(2, score.topk(2, dim=2).indices, True)
    return (w * keep.reshape(n, k)).to(dtype)


class ShapeBench:
    """Synthetic tensors for one (out, in, dtype, bias) on the GPU, rotated to overflow L2."""

    def __init__(self, out_features: int, in_features: int, dtype, device, has_bias=False, with_cslt=True,
                 with_stock=False, max_bytes: int = 3 * 2**30, sets: int | None = None, mo_orders=(),
                 with_cutlass=False):
        """``mo_orders``: ``gluon_mmsp.mma_order`` copies to build besides those the dispatcher's MO candidates read
        (with ``gluon_mmsp.MO_TUNING``), for probes of other MO configurations."""
        from ..formats.nm import pack_nm
        from . import gluon_mmsp
        from .timing import rotation_count

        self.n, self.k, self.dtype, self.device = out_features, in_features, dtype, device
        dense_bytes = out_features * in_features * torch.finfo(dtype).bits // 8
        r = sets or rotation_count(int(dense_bytes * 0.5625), budget_bytes=max_bytes // 3)
        orders = set(mo_orders) | {gluon_mmsp.mo_order(c) for m in (8, 16) for c in gluon_mmsp.mmsp_configs_for(m)}
        orders = sorted(orders - {0}) if in_features % gluon_mmsp.MMSP_K == 0 else []  # MO needs whole super-steps
        self.sets = []
        for _ in range(r):
            w = random_24(out_features, in_features, dtype, device)
            v, mt = pack_nm(w, 2, 4)
            s = {"dense": w, "values": v, "meta": mt,
                 "bias": (torch.randn(out_features, device=device) * 0.1).to(dtype) if has_bias else None}
            for order in orders:  # the MMA-order copies MO candidates read (ShapeBench.run hands each its own)
                s["mo" if order == 1 else "mo2"] = gluon_mmsp.mma_order(v, mt, order)
            if with_cslt:
                try:
                    from .cslt import compress

                    s["cslt_packed"] = compress(w)
                except Exception:
                    s["cslt_packed"] = None
            if with_cutlass:
                try:
                    from .cutlass_sp24 import compress as cutlass_compress

                    s["cutlass"] = cutlass_compress(w)
                except Exception:
                    s["cutlass"] = None
            if with_stock:
                try:
                    from torch.sparse import to_sparse_semi_structured

                    s["stock"] = to_sparse_semi_structured(w)
                except Exception:
                    s["stock"] = None
            self.sets.append(s)
        self.have_cslt = with_cslt and all(s.get("cslt_packed") is not None for s in self.sets)
        self.have_cutlass = with_cutlass and all(s.get("cutlass") is not None for s in self.sets)

    def inputs(self, m: int) -> list[torch.Tensor]:
        return [torch.randn(m, self.k, device=self.device, dtype=self.dtype) for _ in self.sets]

    def run(self, choice: Choice, x: torch.Tensor, s: dict) -> torch.Tensor:
        """``choice`` on weight set ``s`` (every form the set holds: dense, packed, cuSPARSELt's, the MMA-order copies:
        ``mo`` of order 1, ``mo2`` of order 2)."""
        return run_choice(choice, x, values=s["values"], meta=s["meta"], dense=s["dense"],
                          cslt_packed=s.get("cslt_packed"), bias=s["bias"], out_features=self.n,
                          mo=s.get("mo2" if mo_order(choice) == 2 else "mo"), cutlass=s.get("cutlass"))

    def args(self, m: int, choice: Choice) -> tuple[Callable, list[tuple]]:
        xs = self.inputs(m)

        def fn(x, s, c=choice):
            return self.run(c, x, s)

        return fn, [(x, s) for x, s in zip(xs, self.sets)]

    def check(self, m: int, choice: Choice) -> float:
        """Relative error of ``choice`` vs dense-with-zeros ``F.linear`` on fresh random input."""
        s = self.sets[0]
        x = torch.randn(m, self.k, device=self.device, dtype=self.dtype)
        ref = F.linear(x, s["dense"], s["bias"]).float()
        torch.cuda.synchronize()
        y = self.run(choice, x, s).float()
        if y.shape != ref.shape or not torch.isfinite(y).all():
            return math.inf
        return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def time_interleaved(sb: ShapeBench, m: int, choice: Choice, rounds: int) -> tuple[list[float], list[float]]:
    """Time dense and ``choice`` alternately ``rounds`` times each (fresh inputs every time), so
    that clock drift under sustained load hits both alike. Returns (dense ms list, choice ms list)."""
    from .timing import time_call

    ds, cs = [], []
    for _ in range(rounds):
        ds.append(time_call(*sb.args(m, Choice("dense"))))
        cs.append(time_call(*sb.args(m, choice)))
    return ds, cs


def err_limit(dtype) -> float:
    return 2e-3 if dtype == torch.float16 else 1.5e-2


def tune(out_features: int, in_features: int, dtype, has_bias: bool, buckets=BUCKETS, *, device=None,
         min_speedup: float = DEFAULT_MIN_SPEEDUP, paths=DEFAULT_PATHS, force: bool = False,
         log: Callable[[str], None] | None = None, bench: ShapeBench | None = None,
         confirm: int = 2, views: bool = False, mo_only: int = 0) -> dict[int, Choice]:
    """Measure the candidates for the given buckets of one layer shape; fill and return its table.
    ``mo_only`` (1 or 2): the table (:func:`mo_key`) of layers that hold only ``mma_order``'s copy of that order.

    The fastest sparse candidate is kept only if it beats dense by ``min_speedup`` both in the
    first measurement and in the median of ``1 + confirm`` interleaved measurements of the two.
    ``views`` (with cuSPARSELt among the paths): fill the shape's view table (:func:`view_key`) too, from
    the same measurements plus the ``cslt:a,2`` candidates."""
    from .cslt import available as cslt_available
    from .cslt import search_alg
    from .timing import host_ms, time_call
    from .triton_sp24 import excluded

    device = device or torch.device("cuda", torch.cuda.current_device())
    paths = tuple(paths)
    key = make_key(out_features, in_features, dtype, has_bias, device)
    if mo_only:
        key = mo_key(key, mo_only)
    table = table_for(key)
    use_cslt = "cslt" in paths and cslt_available()
    use_cutlass = "cutlass" in paths and _cutlass_usable(out_features, in_features, dtype, device)
    if "cutlass" in paths and not use_cutlass and log:
        _note_cutlass(log)
    sb = bench or ShapeBench(out_features, in_features, dtype, device, has_bias=has_bias, with_cslt=use_cslt,
                             mo_orders=(mo_only,) if mo_only else (), with_cutlass=use_cutlass)
    if not sb.have_cslt:
        paths = tuple(p for p in paths if p != "cslt")
    if not getattr(sb, "have_cutlass", False):
        paths = tuple(p for p in paths if p != "cutlass")
    vtable = table_for(view_key(key)) if views and "cslt" in paths else None
    # a bucket measured earlier with a path outside ``paths`` (another sparsify call) is measured again
    todo = [b for b in buckets if force or b not in table or table[b].path not in paths + ("dense",)
            or (vtable is not None and b not in vtable)]
    if not todo:
        return table
    for b in todo:
        rec = TuneRecord(key, b)
        algs = list(CSLT_ALGS_LARGE if b >= 512 else CSLT_ALGS_SMALL)
        if "cslt" in paths and b >= 16 and not excluded("cslt_search", dtype):
            a = search_alg(sb.sets[0]["cslt_packed"], sb.inputs(b)[0])
            if a is not None and a not in algs:
                algs.append(a)
        fn, args = sb.args(b, Choice("dense"))
        dense_ms = time_call(fn, args)
        rec.timings["dense"] = dense_ms
        host_limit = max(HOST_LIMIT_MS, HOST_LIMIT_X * host_ms(fn, args))
        best = best_view = best_rm = None
        for c in candidates(b, paths=paths, cslt_algs=algs, dtype=dtype, in_features=in_features,
                            views=vtable is not None, mo_only=mo_only):
            name = choice_name(c)
            try:
                err = sb.check(b, c)
            except Exception as e:  # a config that fails to compile or launch is skipped
                if _fatal(e):
                    raise RuntimeError(f"{name} faulted on {key} M={b}; exclude it with "
                                       f"LLMSPARSE_KERNEL_EXCLUDE={name}") from e
                rec.errors[name] = f"error: {type(e).__name__}: {str(e)[:120]}"
                continue
            rec.errors[name] = err
            if not err <= err_limit(dtype):
                continue
            fn, args = sb.args(b, c)
            try:
                h = host_ms(fn, args)
                if h > host_limit:
                    rec.errors[name] = (f"refused: one eager call takes {h:.1f} ms (limit {host_limit:.1f} ms); "
                                        "fast only when replayed in a CUDA graph")
                    continue
                c.ms = time_call(fn, args)
            except Exception as e:
                if _fatal(e):
                    raise
                rec.errors[name] = f"error: {type(e).__name__}: {str(e)[:120]}"
                continue
            c.err = err
            rec.timings[name] = c.ms
            if not is_view(c) and (best is None or c.ms < best.ms):
                best = c
            if c.path not in OWN_FORM_PATHS and not is_mo(c) and (best_rm is None or c.ms < best_rm.ms):
                best_rm = c
            if best_view is None or c.ms < best_view.ms:
                best_view = c
        table[b] = _keep_if_confirmed(sb, b, best, dense_ms, min_speedup, confirm, rec)
        if is_mo(table[b]) and not mo_only:
            ok = best_rm is not None and dense_ms / best_rm.ms >= min_speedup
            table[b].alt_path, table[b].alt_cfg = (best_rm.path, best_rm.cfg) if ok else ("dense", ())
        if vtable is not None:
            if best_view is None or not is_view(best_view):
                vtable[b] = table[b]  # nothing faster than the normal table's candidates
            else:
                v = _keep_if_confirmed(sb, b, best_view, dense_ms, min_speedup, confirm, rec)
                vtable[b] = v if v.ms < table[b].ms else table[b]
        RECORDS.append(rec)
        if log:
            c = table[b]
            msg = (f"{key[1]} {out_features}x{in_features} M<={b}: {choice_name(c)} "
                   f"{c.ms * 1e3:.1f} us vs dense {c.dense_ms * 1e3:.1f} us ({c.dense_ms / c.ms:.2f}x)")
            if vtable is not None and is_view(vtable[b]):
                v = vtable[b]
                msg += f"; under torch.compile {choice_name(v)} {v.ms * 1e3:.1f} us ({v.dense_ms / v.ms:.2f}x)"
            log(msg)
    for b, was, now, compiled in one_prefill_form(key, table, vtable, min_speedup):
        if log:
            log(f"{key[1]} {out_features}x{in_features} M<={b}{' (torch.compile)' if compiled else ''}: "
                f"{choice_name(now)} {now.ms * 1e3:.1f} us instead of {choice_name(was)} {was.ms * 1e3:.1f} us "
                "(one sparse-tensor-core form per layer)")
    return table


# A layer whose tables pick cuSPARSELt at some buckets and CUTLASS at others holds both compressed forms (each about
# 0.56x of the dense weight, beside the MMA-order copy decode reads). one_prefill_form gives such tables one of the
# two where that costs at most this fraction of speed at every bucket it changes, by the first measurements. (A move
# within timing noise can measure as a larger loss later: dense alone varied by up to 19% within one tuning of fp16
# 8192x28672 at M = 4096 on the H100, twenty-fourth session.)
ONE_FORM_TOL = 0.05


def one_prefill_form(key: tuple, table: dict[int, Choice], vtable: dict[int, Choice] | None = None,
                     min_speedup: float = DEFAULT_MIN_SPEEDUP, tol: float | None = None) -> list[tuple]:
    """Where a shape's tables pick both cuSPARSELt and CUTLASS, move the buckets of one onto the other's fastest
    measured configuration (this process's :data:`RECORDS` for ``key``; views only in the view table) if that is at
    most ``tol`` slower than the choice (first measurements compared) at each of them and still beats dense by
    ``min_speedup``. First the table alone (what eager layers run), of the two ways the one losing less; then the
    view table (``vtable``: layers prepared for torch.compile hold the forms of both tables) onto the form the table
    kept -- never the table changed for the view table's sake (an eager layer would lose speed for memory it does
    not hold). A bucket without a record, or a way that loses more, leaves a table as it is (speed first). Returns
    the changes as (bucket, old choice, new choice, whether in the view table)."""
    tol = ONE_FORM_TOL if tol is None else tol
    recs = {r.m: r for r in RECORDS if tuple(r.key) == tuple(key)}
    changes = []
    for t, views in ((table, False), (vtable, True)):
        if t is None:
            continue
        forms = {c.path for c in t.values()} & set(OWN_FORM_PATHS)
        kept = {c.path for c in table.values()} & set(OWN_FORM_PATHS) if views else set()
        if len(forms | kept) < 2 or len(kept) > 1:
            continue
        ways = [w for w in (_onto(f, t, views, recs, tol, min_speedup) for f in (kept or OWN_FORM_PATHS))
                if w is not None]
        if ways:
            moves = min(ways, key=lambda w: (max(m[3] for m in w), len(w)))
            for b, old, new, _ in moves:
                t[b] = new
                changes.append((b, old, new, views))
    return changes


def _onto(keep: str, t: dict[int, Choice], views: bool, recs: dict, tol: float, min_speedup: float
          ) -> list[tuple] | None:
    """one_prefill_form's moves of table ``t`` onto the form of path ``keep``: (bucket, old, new, time ratio) each,
    or None where one bucket cannot move."""
    moves = []
    for b, c in t.items():
        if c.path not in OWN_FORM_PATHS or c.path == keep:
            continue
        r = recs.get(b)
        mine = r.timings.get(choice_name(c)) if r else None
        alts = [(ms, n) for n, ms in (r.timings.items() if r else ())
                if n.startswith(keep + ":") and (views or not is_view(choice_from_name(n)))]
        if not mine or not alts:
            return None
        ms, name = min(alts)
        new = choice_from_name(name)
        new.ms, new.dense_ms, new.err = c.ms * ms / mine, c.dense_ms, r.errors.get(name, math.nan)
        if ms / mine > 1 + tol or new.speedup < min_speedup:
            return None
        moves.append((b, c, new, ms / mine))
    return moves


def _cutlass_usable(out_features: int, in_features: int, dtype, device) -> bool:
    """The ``cutlass`` path's preconditions: the shape and dtype suit it and its library is loaded for this device
    (never built here: ``cutlass_sp24.load``)."""
    from . import cutlass_sp24

    return cutlass_sp24.supports(out_features, in_features, dtype) and cutlass_sp24.available(device, dtype)


_CUTLASS_NOTED: list[str] = []


def _note_cutlass(log: Callable[[str], None]) -> None:
    """Once per process: why the ``cutlass`` path is not measured, where the reason is its library (on a Hopper GPU
    without it built), so that a user sees how to turn it on."""
    from . import cutlass_sp24

    why = cutlass_sp24.reason()
    if why and not _CUTLASS_NOTED:
        _CUTLASS_NOTED.append(why)
        log(f"cutlass path not measured: {why}")


def _keep_if_confirmed(sb, b: int, best: Choice | None, dense_ms: float, min_speedup: float, confirm: int,
                       rec: TuneRecord) -> Choice:
    """``best`` if it beats dense by ``min_speedup`` in the first measurement and, re-measured
    interleaved with dense (clocks drift, and a narrow win in one measurement was seen to be a loss in
    the next), in the medians; else the dense choice. The re-measurements go into ``rec.confirmed``."""
    if best is not None and dense_ms / best.ms >= min_speedup:
        ds, bs = time_interleaved(sb, b, best, confirm)
        ds, bs = [dense_ms] + ds, [best.ms] + bs
        rec.confirmed["dense" if "dense" not in rec.confirmed else "dense (view)"] = ds
        rec.confirmed[choice_name(best)] = bs
        d_ms, b_ms = statistics.median(ds), statistics.median(bs)
        if d_ms / b_ms >= min_speedup:
            return Choice(best.path, best.cfg, b_ms, d_ms, best.err)
        dense_ms = d_ms
    return Choice("dense", (), dense_ms, dense_ms, 0.0)


def nearest(table: dict[int, Choice], b: int) -> Choice | None:
    if not table:
        return None
    best, key = None, None
    for t in table:  # a plain loop: Dynamo traces it (SparseLinear._plan under torch.compile)
        k = (abs(math.log2(t) - math.log2(b)), -t)  # a tie goes to the larger bucket (its path scales down)
        if key is None or k < key:
            best, key = t, k
    return table[best]
