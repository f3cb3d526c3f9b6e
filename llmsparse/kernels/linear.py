"""``SparseLinear``: a drop-in ``nn.Linear`` replacement holding a packed 2:4 weight, and ``sparsify``.

State (what ``state_dict`` holds): ``values[out, in/2]``, ``meta[out, in/8]`` (uint8) in the layout of
:mod:`llmsparse.formats.nm`, and ``bias``. Derived forms, built on demand and never saved:

* on CPU (or any non-CUDA device): the dense-with-zeros weight, used with ``F.linear`` (the fallback
  that keeps every model running anywhere);
* on CUDA: cuSPARSELt's compressed weight when the dispatcher picked cuSPARSELt for some M, and the
  dense-with-zeros weight when it picked dense for some M (``keep_dense``).

A layer with MO storage (the default on Hopper GPUs since the eighteenth session; ``mo_storage``,
``LLMSPARSE_MMSP_MO``) on CUDA is tuned over what an MMA-order copy of its
weights (``gluon_mmsp.mma_order``) can run, and then holds that copy *instead of* ``values``/``meta`` (which
shrink to empty tensors; ``state_dict``, ``dense_weight`` and dtype casts rebuild them, bit for bit, with
``gluon_mmsp.row_major_order``): the faster MO kernels at no memory cost.

On CUDA, ``forward`` looks up the path measured fastest for the bucket of the token count M
(:mod:`.dispatch`), tuning that bucket first if it has never been measured (outside CUDA-graph
capture). Call :func:`prepare` (``sparsify`` does) before capturing graphs or compiling.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..formats import codecs
from ..formats.nm import meta_shape, pack_nm, unpack_nm
from . import cutlass_sp24 as _cutlass_sp24  # also registers the llmsparse::cutlass_sp24 op (torch.compile)
from . import dispatch

_GPU_DTYPES = (torch.float16, torch.bfloat16)


def is_24(weight: torch.Tensor) -> bool:
    """True when every 4 consecutive inputs of every row hold at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    nz = (weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1)
    return bool((nz <= 2).all())


class SparseLinear(nn.Module):
    """A 2:4-sparse linear layer (at most 2 nonzeros in every 4 consecutive inputs; NVIDIA's convention)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None,
                 dtype=torch.float16):
        super().__init__()
        if in_features % 8:
            raise ValueError(f"SparseLinear needs in_features divisible by 8, got {in_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("values", torch.zeros(out_features, in_features // 2, device=device, dtype=dtype))
        self.register_buffer("meta", torch.zeros(meta_shape(out_features, in_features, 2, 4), device=device,
                                                 dtype=torch.uint8))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.register_buffer("_dense", None, persistent=False)
        self.register_buffer("_cslt", None, persistent=False)
        # CUTLASS's compressed form (A_c, E) (cutlass_sp24.compress), built only where a chosen path reads it
        self.register_buffer("_cutlass_a", None, persistent=False)
        self.register_buffer("_cutlass_e", None, persistent=False)
        # mma_order's copy of (values, meta), built only where a chosen mmsp configuration reads it (gluon_mmsp.MO_TUNING)
        self.register_buffer("_mo_values", None, persistent=False)
        self.register_buffer("_mo_meta", None, persistent=False)
        self._mo_order = 0  # which mma_order copy _mo_values/_mo_meta hold (1, or 2 for MO >= 2 configurations)
        # MO storage: None follows gluon_mmsp.MO_STORAGE, 0 never, 1/2 hold only the copy of that order where the
        # layer's choices all run on it (values/meta then empty; _stored_order says so, _stored_dtype their dtype)
        self.mo_storage: int | None = None
        self._stored_order = 0
        self._stored_dtype: torch.dtype | None = None
        self.min_speedup = dispatch.DEFAULT_MIN_SPEEDUP
        self.keep_dense: bool | str = "auto"
        self.lazy_tune = True  # measure an unseen M bucket at first use (else use the nearest measured one)
        self.allowed_paths: tuple | None = None  # kernel families to measure (None: dispatch.DEFAULT_PATHS)
        self._table: dict[int, dispatch.Choice] | None = None
        # the view table (dispatch.view_key): choices under torch.compile, where a transposed result is
        # absorbed by the consumer; used only with for_compile (its cuSPARSELt form costs memory that eager
        # use would not need); None where it was not measured (no cuSPARSELt)
        self.for_compile = False
        self._table_view: dict[int, dispatch.Choice] | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "SparseLinear":
        """From a dense-with-zeros 2:4 weight ``[out, in]`` (raises if the pattern fails)."""
        out_f, in_f = weight.shape
        mod = cls(in_f, out_f, bias is not None, device="meta", dtype=weight.dtype)
        v, m = pack_nm(weight.detach(), 2, 4)
        mod.values = v
        mod.meta = m
        if bias is not None:
            mod.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        return mod

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SparseLinear":
        return cls.from_dense(linear.weight, linear.bias)

    @classmethod
    def from_packed(cls, values: torch.Tensor, meta: torch.Tensor, in_features: int,
                    bias: torch.Tensor | None = None) -> "SparseLinear":
        """From the packed ``(values, meta)`` of :func:`llmsparse.formats.nm.pack_nm` (e.g. a checkpoint)."""
        out_f = values.shape[0]
        if tuple(values.shape) != (out_f, in_features // 2) or tuple(meta.shape) != meta_shape(out_f, in_features, 2, 4):
            raise ValueError(f"packed shapes {tuple(values.shape)}, {tuple(meta.shape)} do not match "
                             f"a 2:4 weight of {out_f}x{in_features}")
        try:  # the GPU kernels rely on it (the first index of a group below the second)
            codecs.check_nm_meta(meta, 2, 4, in_features)
        except codecs.FormatError as e:
            raise ValueError(f"packed 2:4 metadata must list two distinct indices per group in increasing "
                             f"order (as llmsparse.formats.nm.pack_nm writes them): {e}") from None
        mod = cls(in_features, out_f, bias is not None, device="meta", dtype=values.dtype)
        mod.values = _aligned(values.contiguous())
        mod.meta = _aligned(meta.to(torch.uint8).contiguous())
        if bias is not None:
            mod.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        return mod

    def extra_repr(self) -> str:
        held = f", held as the MMA-order copy {self._stored_order}" if self._stored_order else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, 2:4{held}"

    # ----------------------------------------------------------------- derived forms
    def dense_weight(self) -> torch.Tensor:
        """The dense-with-zeros weight (rebuilt from the packed form; not cached)."""
        return unpack_nm(*self.packed(), 2, 4, self.in_features)

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The row-major packed ``(values, meta)`` (:mod:`llmsparse.formats.nm`): the buffers, or, for a layer that
        holds only an MMA-order copy (``mo_storage``), rebuilt from it (a new pair of tensors)."""
        if not self._stored_order:
            return self.values, self.meta
        from .gluon_mmsp import row_major_order

        v, m = row_major_order(self._mo_values, self._mo_meta, self._stored_order, self.out_features,
                               self.in_features, self._stored_dtype)
        return v.to(self.values.dtype), m

    def _storage_order(self) -> int:
        """The MMA-order copy this layer would hold instead of its packed buffers (0: none)."""
        from . import gluon_mmsp

        if self.mo_storage is None:  # the process-wide setting, where it applies (Hopper, mmsp among the paths)
            return gluon_mmsp.storage_order(self.in_features, device=self.values.device, paths=self.allowed_paths)
        order = int(self.mo_storage)
        if order not in (0, 1, 2):
            raise ValueError(f"SparseLinear.mo_storage must be None, 0, 1 or 2, got {self.mo_storage!r}")
        return gluon_mmsp.storage_order(self.in_features, order)

    def _compact(self, order: int) -> None:
        """Hold only mma_order's copy of ``order`` (built from the packed buffers if need be)."""
        if self._stored_order == order:
            return
        self._expand()
        self._get_mo(order)
        self._stored_dtype = self.values.dtype
        self.values = self.values.new_empty(0)
        self.meta = self.meta.new_empty(0)
        self._stored_order = order

    def _expand(self) -> None:
        """Rebuild the packed buffers of a layer that holds only an MMA-order copy (the copy is kept)."""
        if self._stored_order:
            self.values, self.meta = self.packed()
            self._stored_order, self._stored_dtype = 0, None

    def _drop_derived(self) -> None:
        self._dense = self._cslt = self._mo_values = self._mo_meta = None
        self._cutlass_a = self._cutlass_e = None
        self._mo_order = 0

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._stored_order:  # the state is always the row-major packed pair
            destination[prefix + "values"], destination[prefix + "meta"] = self.packed()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._expand()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # new weights: the derived forms of the old ones must go (rebuilt for the measured choices, if any)
        self._drop_derived()
        if self._table or self._table_view:
            self._materialize()

    def _apply(self, fn, recurse=True):
        """``.to()``, ``.cuda()``, ``.half()``...: a device move takes every form along (a layer holding only an
        MMA-order copy stays so). A dtype cast invalidates the derived forms (cuSPARSELt's compressed bytes and the
        int32 MMA-order copies do not survive an elementwise cast) and the choices measured for the old dtype: the
        layer holds the cast packed pair again (rebuilt from the copy, read as its old dtype) and is tuned anew."""
        dtype = self.values.dtype
        out = super()._apply(fn, recurse)
        if self.values.dtype != dtype:
            self._expand()
            self._drop_derived()
            self._table = self._table_view = None
        return out

    @property
    def weight(self) -> torch.Tensor:  # for code that reads .weight (dtype, device, shape)
        return self._dense if self._dense is not None else self.dense_weight()

    def _get_dense(self) -> torch.Tensor:
        if self._dense is None or self._dense.device != self.values.device:
            self._dense = self.dense_weight()
        return self._dense

    def _get_cslt(self) -> torch.Tensor:
        if self._cslt is None or self._cslt.device != self.values.device:
            from .cslt import compress

            self._cslt = compress(self.dense_weight())
        return self._cslt

    def _get_cutlass(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cutlass_a is None or self._cutlass_a.device != self.values.device:
            self._cutlass_a, self._cutlass_e = _cutlass_sp24.compress(self.dense_weight())
        return self._cutlass_a, self._cutlass_e

    def _cutlass(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self._cutlass_a, self._cutlass_e) if self._cutlass_a is not None else None

    def _mo_built(self, order: int = 1) -> bool:
        return (self._mo_values is not None and self._mo_values.device == self.values.device
                and self._mo_order == order)

    def _get_mo(self, order: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._mo_built(order):
            from .gluon_mmsp import mma_order

            self._mo_values, self._mo_meta = mma_order(*self.packed(), order)
            self._mo_order = order
        return self._mo_values, self._mo_meta

    def _mo(self, c: dispatch.Choice) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The MMA-order copy for an MO choice (built by _materialize, of the order it reads), else None."""
        order = dispatch.mo_order(c)
        return (self._mo_values, self._mo_meta) if order and self._mo_built(order) else None

    def _held(self, c: dispatch.Choice) -> dispatch.Choice:
        """What the layer runs for choice ``c``: ``c``, or for an MO choice whose copy it does not hold (it holds one,
        of one order) the measured stand-in (``Choice.alt``), else the same configuration on the row-major weights."""
        if (order := dispatch.mo_order(c)) and not self._mo_built(order):
            return c.alt or dispatch.row_major_twin(c)
        return c

    def _key(self) -> tuple:
        key = dispatch.make_key(self.out_features, self.in_features, self.values.dtype, self.bias is not None,
                                self.values.device)
        order = self._storage_order()
        return dispatch.mo_key(key, order) if order else key

    # ----------------------------------------------------------------- dispatch
    def prepare(self, buckets: Iterable[int] = dispatch.BUCKETS, *, min_speedup: float | None = None,
                keep_dense: bool | str | None = None, paths: Iterable[str] | None = None,
                for_compile: bool | None = None, log=None) -> dict[int, dispatch.Choice]:
        """Tune (once per shape) the given buckets and build the forms the chosen paths need.
        ``for_compile``: the layer will run under torch.compile, so it also takes the view table's choices
        there (and builds their forms)."""
        if paths is not None:
            self.allowed_paths = dispatch.check_paths(paths)
        if min_speedup is not None:
            self.min_speedup = min_speedup
        if keep_dense is not None:
            self.keep_dense = keep_dense
        if for_compile is not None:
            self.for_compile = bool(for_compile)
        if self.values.device.type != "cuda" or self.values.dtype not in _GPU_DTYPES:
            self._table = self._table_view = None
            return {}
        paths = self.allowed_paths or dispatch.DEFAULT_PATHS
        table = dispatch.tune(self.out_features, self.in_features, self.values.dtype, self.bias is not None,
                              tuple(buckets), device=self.values.device, min_speedup=self.min_speedup, log=log,
                              paths=paths, views=self.for_compile, mo_only=self._storage_order())
        self._table = table
        vtable = dispatch.table_for(dispatch.view_key(self._key())) if "cslt" in paths and self.for_compile else None
        self._table_view = vtable if vtable and all(b in vtable for b in buckets) else None
        self._materialize()
        return table

    def compiled_table(self) -> dict[int, dispatch.Choice]:
        """The choices the layer runs under torch.compile (the view table where measured)."""
        return dict(self._table_view or self._table or {})

    def _materialize(self) -> None:
        """Build the derived forms the chosen paths read and drop the others. The dense weight (as much memory
        as the dense layer) is kept only where the table the layer runs picks dense: with a view table (a layer
        prepared for torch.compile) that is the view table, so such a layer run eagerly where its eager table
        picked dense takes a packed-form path instead (:meth:`_plan`)."""
        buckets = list((self._table or {}).items()) + list((self._table_view or {}).items())
        chosen = [c for _, c in buckets]
        paths = {c.path for c in chosen}
        if "cslt" in paths:
            self._get_cslt()
        else:
            self._cslt = None
        if "cutlass" in paths:
            self._get_cutlass()
        else:
            self._cutlass_a = self._cutlass_e = None
        # MO storage: only where every choice runs on the copy, on cuSPARSELt's form or on dense -- kept, or with
        # keep_dense=False replaced by _best_sparse_fallback, which runs on the copy up to mo_max_m() (16, or 64
        # with the wide configurations) and on cuSPARSELt's form above (so a dense choice above needs that form)
        from .gluon_mmsp import mo_max_m

        order = self._storage_order()
        cap = mo_max_m()
        compact = bool(order and chosen) and all(
            c.path in dispatch.OWN_FORM_PATHS or dispatch.mo_order(c) == order
            or (c.path == "dense" and (self.keep_dense is not False or b <= cap or self._cslt is not None
                                       or self._cutlass_a is not None))
            for b, c in buckets)
        orders = [o for o in map(dispatch.mo_order, chosen) if o]
        if compact:
            self._compact(order)
        else:
            self._expand()
            if orders:  # one copy: the order most choices read (the others run their stand-ins, _plan)
                self._get_mo(max(sorted(set(orders)), key=orders.count))
            else:
                self._mo_values = self._mo_meta = None
                self._mo_order = 0
        # what runs: the view table's choices where there is one (compiled calls); eager calls of such a layer
        # where the eager table picked dense take a fallback instead (_plan). A layer holding only the copy falls
        # back on cuSPARSELt's form for M > 16 (on the copy for M <= 16), so without that form it keeps the dense
        # weight for those choices (before the eighteenth session it kept it whenever the eager table picked dense:
        # the whole dense weight beside the copy and cuSPARSELt's form in every fp16 layer prepared for compile)
        runs = list(self._table_view.values()) if self._table_view else chosen
        if compact and self._table_view and self._cslt is None:
            runs += [c for c in (self._table or {}).values() if c.path == "dense"]
        runs = [self._held(c) for c in runs]  # a stand-in may be what needs the dense weight
        if any(c.path == "dense" for c in runs) and self.keep_dense is not False:
            self._get_dense()
        else:
            self._dense = None

    def paths(self) -> dict[int, str]:
        return {b: c.path for b, c in sorted((self._table or {}).items())}

    def _choose(self, m: int) -> dispatch.Choice:
        """The path for M in eager calls: an unmeasured bucket is measured first (outside a capture, and
        with ``lazy_tune`` or nothing measured yet), then :meth:`_plan` picks."""
        b = dispatch.bucket_of(m)
        if self._table is None:
            self._table = dispatch.table_for(self._key())
        capturing = torch.cuda.is_current_stream_capturing()
        if b not in self._table and not capturing and (self.lazy_tune or not self._table):
            self.prepare((b,))
        if not self._table:  # inside a capture with nothing measured: a path that needs no derived form
            return _best_sparse_fallback(m, self._cslt is not None, self._stored_order, self._cutlass_a is not None)
        return self._plan(m)

    def _plan(self, m: int, view: bool = False) -> dispatch.Choice:
        """The measured choice for M, without tuning and without building a derived form (so it is safe
        inside a capture, and Dynamo traces it under torch.compile): a bucket never measured uses the
        nearest measured one; a path whose form this layer lacks (the dense weight with
        ``keep_dense=False``, cuSPARSELt's) is replaced by one that needs only the packed weights.
        ``view``: read the view table (choices that may return a transposed ``[M, N]``) where there is one."""
        table = self._table_view if view and self._table_view else self._table
        if not table:
            raise RuntimeError("SparseLinear under torch.compile needs measured kernel choices: call "
                               "llmsparse.kernels.prepare(model) (sparsify does) before compiling")
        c = table.get(dispatch.bucket_of(m))
        if c is None:
            c = dispatch.nearest(table, dispatch.bucket_of(m))
        c = self._held(c)
        if ((c.path == "dense" and (self._dense is None or self.keep_dense is False))
                or (c.path == "cslt" and self._cslt is None) or (c.path == "cutlass" and self._cutlass_a is None)):
            c = _best_sparse_fallback(m, self._cslt is not None, self._stored_order, self._cutlass_a is not None)
        return c

    def _compiled_forward(self, x2: torch.Tensor) -> torch.Tensor:
        m = x2.shape[0]
        c = self._plan(m, view=True)
        if dispatch.is_view(c):
            # cuSPARSELt's [N, Mp] result enters the graph as is; its transpose (and the bias) are left to
            # Inductor, which folds them into the consumers (the activation, the residual add) instead
            # of the transposing copy the eager path pays
            y = torch.ops.llmsparse.cslt_nm(x2, self._cslt, int(c.cfg[0]), self.out_features).t()[:m]
            y = y if self.bias is None else y + self.bias
            return y.contiguous()
        if c.path == "cutlass":
            y = torch.ops.llmsparse.cutlass_sp24(x2, self._cutlass_a, self._cutlass_e, int(c.cfg[0]),
                                                 self.out_features)
            return y if self.bias is None else y + self.bias
        mo = self._mo(c)
        return torch.ops.llmsparse.sp24_linear(
            x2, self.values, self.meta, self.bias, self._dense if c.path == "dense" else None,
            self._cslt if c.path == "cslt" else None, self.out_features, c.path, [int(v) for v in c.cfg],
            mo[0] if mo else None, mo[1] if mo else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda" or self.values.dtype not in _GPU_DTYPES:
            w = self._get_dense()
            return F.linear(x.to(w.dtype), w, self.bias)
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != self.values.dtype:
            x2 = x2.to(self.values.dtype)
        if x2.stride(-1) != 1 or (x2.shape[0] > 1 and x2.stride(0) != self.in_features):
            x2 = x2.contiguous()
        if torch.compiler.is_compiling():
            # torch.compile: the measured choice is read without tuning (call prepare() first) and the
            # kernels run behind an opaque custom op, so Dynamo traces through without graph breaks
            return self._compiled_forward(x2).reshape(*shape[:-1], self.out_features)
        c = self._choose(x2.shape[0])
        y = dispatch.run_choice(c, x2, values=self.values, meta=self.meta,
                                dense=self._dense if c.path == "dense" else None,
                                cslt_packed=self._cslt if c.path == "cslt" else None,
                                bias=self.bias, out_features=self.out_features, mo=self._mo(c),
                                cutlass=self._cutlass() if c.path == "cutlass" else None)
        if c.path == "dense" and self._dense is None:  # pragma: no cover - guarded above
            raise RuntimeError("dense path without dense weight")
        return y.reshape(*shape[:-1], self.out_features)


@torch.library.custom_op("llmsparse::sp24_linear", mutates_args=())
def _sp24_linear_op(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
                    dense: torch.Tensor | None, cslt: torch.Tensor | None, out_features: int, path: str,
                    cfg: list[int], mo_values: torch.Tensor | None = None,
                    mo_meta: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, in] -> [M, out]`` through one measured path (what SparseLinear runs under torch.compile)."""
    if path == "dense" and dense is None:
        raise ValueError("sp24_linear: the dense path needs the dense weight")
    if path == "cslt" and cslt is None:
        raise ValueError("sp24_linear: the cslt path needs cuSPARSELt's compressed weight")
    y = dispatch.run_choice(dispatch.Choice(path, tuple(cfg)), x.contiguous(), values=values, meta=meta, dense=dense,
                            cslt_packed=cslt, bias=bias, out_features=out_features,
                            mo=(mo_values, mo_meta) if mo_values is not None else None)
    return y if y.is_contiguous() else y.contiguous()  # the fake kernel promises a contiguous [M, out]


@_sp24_linear_op.register_fake
def _(x, values, meta, bias, dense, cslt, out_features, path, cfg, mo_values=None, mo_meta=None):
    return x.new_empty((x.shape[0], out_features))


@torch.library.custom_op("llmsparse::cslt_nm", mutates_args=())
def _cslt_nm_op(x: torch.Tensor, cslt: torch.Tensor, alg_id: int, out_features: int) -> torch.Tensor:
    """cuSPARSELt's ``W x^T`` as a contiguous ``[out_features, Mp]`` (:func:`llmsparse.kernels.cslt.cslt_nm`):
    the view-table path of SparseLinear under torch.compile."""
    from .cslt import cslt_nm

    y = cslt_nm(x.contiguous(), cslt, alg_id)
    if y.shape[0] != out_features:
        raise ValueError(f"cslt_nm: the compressed weight has {y.shape[0]} rows, not {out_features}")
    return y


@_cslt_nm_op.register_fake
def _(x, cslt, alg_id, out_features):
    from .cslt import padded_rows

    return x.new_empty((out_features, padded_rows(x.shape[0])))


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or a copy starting on a 16-byte boundary (a view into a checkpoint buffer may not;
    the Gluon kernels read values/meta through int32 views)."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _best_sparse_fallback(m: int, have_cslt: bool, stored_order: int = 0, have_cutlass: bool = False) -> dispatch.Choice:
    """A sparse path that needs no form the layer lacks: for keep_dense=False where dense won, and for
    a choice whose derived form was not built (inside a capture, under torch.compile). ``stored_order``: the
    layer holds only the MMA-order copy of that order (no packed pair): an MO configuration of that order up to
    ``gluon_mmsp.mo_max_m()`` (16, or 64 with the wide configurations: the range they are tested on),
    cuSPARSELt's form above if held (else CUTLASS's, from its smallest measured M), else the MO configuration
    anyway. Without a stored order: cuSPARSELt's form above M = 256, else CUTLASS's, else the packed-only Triton
    kernels."""
    from .cutlass_sp24 import MIN_M as CUTLASS_MIN_M
    from .triton_sp24 import MM_CONFIGS

    if stored_order:
        from .gluon_mmsp import mo_configs_for, mo_max_m, mo_order

        cap = mo_max_m()
        if m > cap and have_cslt:
            return dispatch.Choice("cslt", (0, 1))
        if m > cap and m >= CUTLASS_MIN_M and have_cutlass:
            return dispatch.Choice("cutlass", (0,))
        for cfg in mo_configs_for(min(m, cap)):  # a plain loop: Dynamo traces it (_plan under compile)
            if mo_order(cfg) == stored_order:
                return dispatch.Choice("mmsp", cfg)
    if m > 256 and have_cslt:
        return dispatch.Choice("cslt", (0, 1))
    if m > 256 and have_cutlass:
        return dispatch.Choice("cutlass", (0,))
    bm = 16 if m <= 16 else 64
    return dispatch.Choice("mm", (bm,) + MM_CONFIGS[bm][0])


# --------------------------------------------------------------------------- model-level


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parts = name.split(".")
    mod = model
    for p in parts[:-1]:
        mod = getattr(mod, p)
    return mod, parts[-1]


@contextlib.contextmanager
def kernel_cache(cache="auto"):
    """Measured choices kept across processes: loaded on entry, written back on exit if anything new was
    measured. ``cache``: ``"auto"`` (:func:`dispatch.default_cache_path`, ``$LLMSPARSE_KERNEL_CACHE``),
    a path, or None/False (off). Does nothing without CUDA. A file written by other torch/Triton
    versions or other kernel code is ignored (:func:`dispatch.cache_signature`)."""
    path = None
    if cache not in (None, False) and torch.cuda.is_available():
        path = dispatch.default_cache_path() if cache in ("auto", True) else os.fspath(cache)
    if path:
        dispatch.load_cache(path)
    before = dispatch.table_size()
    yield path
    if path and dispatch.table_size() > before:
        try:
            dispatch.save_cache(path)
        except OSError as e:  # a read-only home, a full disk: the choices still hold for this process
            warnings.warn(f"could not write the kernel choice cache {path}: {e}", stacklevel=3)


def sparsify(model: nn.Module, *, min_speedup: float = dispatch.DEFAULT_MIN_SPEEDUP,
             buckets: Iterable[int] | None = None, keep_dense: bool | str = "auto", tune: bool = True,
             skip: Iterable[str] = ("lm_head",), lazy_tune: bool = True, log=None, cache="auto",
             paths: Iterable[str] | None = None, for_compile: bool = False, mo_storage: int | None = None) -> dict:
    """Swap every ``nn.Linear`` whose weight is 2:4 (and whose width is a multiple of 8) for a
    :class:`SparseLinear`. Others (and names containing an entry of ``skip``) stay as they are.

    On CUDA with fp16/bf16 weights each layer shape is tuned once over ``buckets`` of M (default:
    all, 1..16384); a layer for which the dispatcher chose dense at every bucket (no sparse path at
    least ``min_speedup`` x faster) is left as ``nn.Linear``. ``keep_dense="auto"`` keeps the
    dense-with-zeros weight in layers that use dense at some bucket (never slower, more memory);
    ``keep_dense=False`` keeps only packed forms and uses the fastest sparse path everywhere.
    ``lazy_tune=False``: an M outside the measured buckets uses the nearest measured bucket's path
    instead of being measured at first use.
    On CPU the swapped layers run the dense-with-zeros fallback: outputs equal ``nn.Linear``'s.
    ``cache``: see :func:`kernel_cache` (choices measured once per GPU, shape and software versions).
    ``paths``: the kernel families measured (default :data:`dispatch.DEFAULT_PATHS`; ``dispatch.ALL_PATHS``
    adds the Triton tensor-core kernels mm/mmb, which never won a measurement on Hopper; ``cutlass``, CUTLASS's
    sparse GEMM, is measured only where its library is built, :mod:`.cutlass_sp24`; leave
    out ``"cslt"`` and ``"cutlass"`` and pass ``keep_dense=False``
    to hold only the packed weights, 0.5625x of dense, at the price of slower large-M calls).
    ``for_compile=True``: the model will run under torch.compile, where a layer may take cuSPARSELt's
    transposed result and leave the transpose to Inductor (``compiled_paths`` below; fp16 prefill on an
    H100, docs/kernels-log.md); this builds cuSPARSELt's form where that wins, memory that eager use would
    not need, and keeps the dense weight only where the compiled choices use it (a layer prepared for
    compile and run eagerly takes a packed-form path where its eager choice was dense).
    With ``LLMSPARSE_MMSP_MO=1`` (``gluon_mmsp.MO_TUNING``) the dispatcher also measures ``mmsp`` on a copy of
    the packed weights in MMA operand order (faster at M = 2-16 on an H100, docs/kernels-log.md); layers that pick
    it hold that copy too (another 0.5625x of the dense weight). ``mo_storage`` (0 off, 1 or 2 the copy's order;
    default ``gluon_mmsp.MO_STORAGE``, order 2 unless ``LLMSPARSE_MMSP_MO`` says otherwise, applied where
    ``gluon_mmsp.mo_storage_applies``: Hopper, mmsp among the paths): layers are tuned over what that copy can run
    (MO ``mmsp``, cuSPARSELt, dense) and hold the copy instead of the row-major packed weights, so MO costs no
    memory (:class:`SparseLinear`).

    Returns ``{"swapped": [names], "skipped": {name: reason}, "paths": {shape: {bucket: path}},
    "compiled_paths": {shape: {bucket: path}}}``; the last lists the shapes whose choices differ under
    torch.compile (``cslt-view``: cuSPARSELt's transposed result, the transpose left to Inductor).
    """
    buckets = tuple(buckets) if buckets is not None else dispatch.BUCKETS
    allowed = dispatch.check_paths(paths) if paths is not None else None
    swapped: list[str] = []
    skipped: dict[str, str] = {}
    shape_paths: dict[str, dict[int, str]] = {}
    compiled_paths: dict[str, dict[int, str]] = {}
    targets = []
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear:
            continue
        if any(s and s in name for s in skip):
            skipped[name] = "skipped by name"
            continue
        w = mod.weight
        if w.shape[1] % 8:
            skipped[name] = f"in_features {w.shape[1]} not divisible by 8"
            continue
        if not is_24(w.detach()):
            skipped[name] = "weight is not 2:4"
            continue
        targets.append(name)
    del mod, w
    with kernel_cache(cache if tune else None):
        for name in targets:
            parent, attr = _parent(model, name)
            new = SparseLinear.from_linear(getattr(parent, attr))
            new.min_speedup = min_speedup
            new.keep_dense = keep_dense
            new.lazy_tune = lazy_tune
            new.allowed_paths = allowed
            new.for_compile = for_compile
            new.mo_storage = mo_storage
            on_gpu = new.values.device.type == "cuda" and new.values.dtype in _GPU_DTYPES
            if on_gpu and tune:
                table = new.prepare(buckets, log=log)
                shape = f"{new.out_features}x{new.in_features}"
                shape_paths[shape] = {b: c.path for b, c in sorted(table.items())}
                ctable = new.compiled_table()
                if any(dispatch.is_view(c) for c in ctable.values()):
                    compiled_paths[shape] = {b: "cslt-view" if dispatch.is_view(c) else c.path
                                             for b, c in sorted(ctable.items())}
                if all(t[b].path == "dense" for t in (table, ctable) for b in buckets):
                    skipped[name] = "dense is as fast at every measured M"
                    continue
            setattr(parent, attr, new)
            swapped.append(name)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"swapped": swapped, "skipped": skipped, "paths": shape_paths, "compiled_paths": compiled_paths}


def prepare(model: nn.Module, buckets: Iterable[int] = dispatch.BUCKETS, cache="auto", **kw) -> None:
    """Tune and build derived forms for every SparseLinear in ``model`` (call before graph capture);
    ``cache`` as in :func:`kernel_cache`."""
    with kernel_cache(cache):
        for mod in model.modules():
            if isinstance(mod, SparseLinear):
                mod.prepare(tuple(buckets), **kw)


def swap_packed(model: nn.Module, packed: dict[str, tuple[torch.Tensor, torch.Tensor]], cache="auto",
                **prepare_kw) -> list[str]:
    """Replace the ``nn.Linear`` at each name of ``packed`` (``{name: (values, meta)}``, e.g. read from a
    packed checkpoint) with a SparseLinear built from it; on CUDA, prepare it (``cache`` as in
    :func:`kernel_cache`). Returns the names."""
    done = []
    with kernel_cache(cache):
        for name, (values, meta) in packed.items():
            parent, attr = _parent(model, name)
            old = getattr(parent, attr)
            in_f = old.in_features if isinstance(old, nn.Linear) else values.shape[1] * 2
            dev = old.weight.device if isinstance(old, nn.Linear) and old.weight.device.type != "meta" else values.device
            bias = old.bias if isinstance(old, nn.Linear) and old.bias is not None else None
            new = SparseLinear.from_packed(values.to(dev), meta.to(dev), in_f, None if bias is None else bias.to(dev))
            if new.values.device.type == "cuda":
                new.prepare(**prepare_kw)
            setattr(parent, attr, new)
            done.append(name)
    return done


def densify(model: nn.Module) -> int:
    """Swap every SparseLinear back to an ``nn.Linear`` holding the dense-with-zeros weight. Returns the count."""
    names = [n for n, m in model.named_modules() if isinstance(m, SparseLinear)]
    for name in names:
        parent, attr = _parent(model, name)
        sp = getattr(parent, attr)
        lin = nn.Linear(sp.in_features, sp.out_features, bias=sp.bias is not None, device="meta")
        lin.weight = nn.Parameter(sp.dense_weight(), requires_grad=False)
        if sp.bias is not None:
            lin.bias = nn.Parameter(sp.bias.detach(), requires_grad=False)
        setattr(parent, attr, lin)
    return len(names)


def memory_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


__all__ = ["SparseLinear", "sparsify", "densify", "prepare", "swap_packed", "is_24", "memory_bytes"]
