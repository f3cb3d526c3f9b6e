"""Compile the Triton/Gluon kernels for a GPU architecture without a GPU, and read their machine code.

Triton's wheel ships ``ptxas``, ``cuobjdump`` and ``nvdisasm``, so the SASS of a kernel for sm_90 can be
produced and inspected on any Linux x86-64 machine. Used by the CPU tests (the decode kernel's main loop
must stay free of barriers and register spills) and when working on a kernel (instructions per kept
weight), e.g.::

    from llmsparse.kernels.offline import gluon_gemv_stats
    gluon_gemv_stats("float16", (1, 4, 8, 2, 2))   # {'regs': 128, 'stack': 0, 'loop': 533, 'loop_barriers': 0, ...}
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile


def _bin(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def tools_available() -> bool:
    try:
        return all(os.access(_bin(n), os.X_OK) for n in ("ptxas", "nvdisasm", "cuobjdump"))
    except Exception:
        return False


def compile_sass(src, num_warps: int, arch: int = 90, maxnreg: int = 0) -> dict:
    """Compile a Triton ``ASTSource``/``GluonASTSource`` for ``sm_<arch>`` (``maxnreg``: a register cap, 0 none);
    returns SASS text and resources."""
    import triton
    from triton.backends.compiler import GPUTarget

    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps,
                                                                       **({"maxnreg": maxnreg} if maxnreg else {})})
    with tempfile.TemporaryDirectory() as d:
        cubin = os.path.join(d, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(k.asm["cubin"])
        sass = subprocess.run([_bin("nvdisasm"), "-c", cubin], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([_bin("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True, text=True,
                             check=True).stdout
    return {"sass": sass, "regs": int(re.search(r"REG:(\d+)", res).group(1)),
            "stack": int(re.search(r"STACK:(\d+)", res).group(1)),
            "shared": int(re.search(r"SHARED:(\d+)", res).group(1))}


def loops(sass: str) -> list[list[str]]:
    """Instruction lines of every backward-branch loop (label ... ``BRA `(label)``) in the SASS text."""
    out, cur, label = [], None, None
    for line in sass.splitlines():
        m = re.match(r"^(\.L_x_\d+):", line)
        if m and cur is None:
            label, cur = m.group(1), []
            continue
        if cur is not None and re.match(r"\s+/\*[0-9a-f]{4}\*/", line):
            cur.append(line)
            if f"BRA `({label})" in line:
                out.append(cur)
                cur = None
        elif m:  # a new label before the loop closed: restart from it
            label, cur = m.group(1), []
    return out


def _gluon_loop_stats(fn, sig: dict, consts: dict, div16: list[str], num_warps: int, arch: int,
                      maxnreg: int = 0) -> dict:
    """Compile a Gluon kernel offline with the launcher's 16-divisibility specialisation of ``div16``;
    registers, spills, and the main (longest) loop: its length, barriers, shared-memory accesses and
    lines (for callers to count their own instructions)."""
    from triton.experimental.gluon._runtime import GluonASTSource

    sig = dict(sig, **{k: "constexpr" for k in consts})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in div16}
    r = compile_sass(GluonASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs), num_warps, arch,
                     maxnreg)
    ls = loops(r["sass"])
    main = max(ls, key=len) if ls else []
    return {"regs": r["regs"], "stack": r["stack"], "shared": r["shared"], "loop": len(main),
            "loop_barriers": sum("BAR" in x for x in main),
            "loop_shared": sum(bool(re.search(r"\b(LDS|STS|LDSM|STSM)\b", x)) for x in main),
            "lines": main, **gdc_order(r["sass"])}


def gdc_order(sass: str) -> dict:
    """Where programmatic dependent launch's instructions sit in a kernel's SASS (line numbers, -1 if
    absent): ``griddepcontrol.wait`` (ACQBULK), ``griddepcontrol.launch_dependents`` (PREEXIT), the first
    global load (LDG, or LDGSTS for ``cp.async``) and store (STG)."""
    ins = [ln for ln in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", ln)]

    def first(pat):
        return next((i for i, ln in enumerate(ins) if re.search(pat, ln)), -1)

    wait = first(r"\bACQBULK\b")
    return {"gdc_wait": wait, "gdc_launch": first(r"\bPREEXIT\b"),
            "first_load": first(r"\bLDG(STS)?\b|\bLDG(STS)?\."), "first_store": first(r"\bSTG\b|\bSTG\."),
            # the global loads issued before the wait, by opcode with its width (``LDG.E.128``...)
            "loads_before_wait": [re.search(r"\bLDG\S*", ln).group(0) for ln in ins[:max(wait, 0)]
                                  if re.search(r"\bLDG", ln)]}


def splitk_reduce_gdc(gdc: int, arch: int = 90) -> dict:
    """Compile the split-K reduction kernel (``gluon_sp24._splitk_reduce``) offline; :func:`gdc_order` of it."""
    from triton.compiler import ASTSource

    from . import gluon_sp24 as g

    sig = {"p_ptr": "*fp32", "y_ptr": "*fp16", "b_ptr": "*fp16", "MN": "i32", "N": "i32", "stride_ym": "i32",
           "S": "constexpr", "HAS_BIAS": "constexpr", "BLOCK": "constexpr", "GDC": "constexpr"}
    consts = {"S": 4, "HAS_BIAS": True, "BLOCK": 1024, "GDC": gdc}
    r = compile_sass(ASTSource(fn=g._splitk_reduce, signature=sig, constexprs=consts), 4, arch)
    return gdc_order(r["sass"])


_PTRS = {"x_ptr": "*i64", "v_ptr": "*i32", "m_ptr": "*i32"}
_DIV16 = ["x_ptr", "v_ptr", "m_ptr", "y_ptr", "b_ptr", "N", "KW", "KM", "stride_xm", "stride_ym"]


def gluon_gemv_stats(dtype: str, cfg: tuple, has_bias: bool = True, arch: int = 90, gdc: int = 0) -> dict:
    """Compile :func:`llmsparse.kernels.gluon_sp24._sp24_gemv_gl` offline; registers, spills, main loop size."""
    from . import gluon_sp24 as g

    tok, rt, gpt, wr, wc = cfg
    ty = {"float16": "*fp16", "bfloat16": "*bf16"}[dtype]
    sig = dict(_PTRS, y_ptr=ty, b_ptr=ty, M="i32", N="i32", NCH="i32", KW="i32", KM="i32", stride_xm="i32",
               stride_ym="i32")
    consts = {"HAS_BIAS": has_bias, "IS_BF16": dtype == "bfloat16", "TOK": tok, "RT": rt, "GPT": gpt, "WR": wr, "WC": wc,
              "GDC": gdc}
    st = _gluon_loop_stats(g._sp24_gemv_gl, sig, consts, _DIV16, wr * wc, arch)
    lines = st.pop("lines")
    return dict(st, loop_ffma=sum("FFMA" in x for x in lines), kept_per_iteration=tok * rt * gpt * 2)


def gluon_mm_stats(dtype: str, cfg: tuple, has_bias: bool = True, even_k: bool = True, arch: int = 90) -> dict:
    """Compile :func:`llmsparse.kernels.gluon_sp24._sp24_mm_gl` offline; registers, spills, main loop size."""
    from . import gluon_sp24 as g

    wn, rn, krep, bm = cfg[:4]
    split = len(cfg) > 4 and cfg[4] > 1
    la, lx, p = g.mm_layouts(wn, rn, krep, bm)
    ty = {"float16": "*fp16", "bfloat16": "*bf16"}[dtype]
    sig = dict(_PTRS, y_ptr="*fp32" if split else ty, b_ptr=ty, M="i32", N="i32", G_TOT="i32", KW="i32", KM="i32",
               stride_xm="i32", stride_ym="i32", ITERS="i32", MN="i32")
    consts = {"LA": la, "LX": lx, "P": p, "HAS_BIAS": has_bias, "IS_BF16": dtype == "bfloat16", "EVEN_K": even_k,
              "SPLIT": split, "BN": 16 * wn * rn, "BM": bm, "KREP": krep}
    st = _gluon_loop_stats(g._sp24_mm_gl, sig, consts, _DIV16 + ["G_TOT"], wn, arch)
    lines = st.pop("lines")
    # kept weights a thread decodes per iteration: (16 * RN rows of its warp x 16 * KREP) / 2 / 32 lanes
    return dict(st, loop_mma=sum("HMMA" in x for x in lines), kept_per_iteration=16 * rn * 16 * krep // 2 // 32)


def gluon_mmsp_stats(dtype: str, cfg: tuple, has_bias: bool = True, even_k: bool = True, arch: int = 90,
                     keep_lines: bool = False, gdc: int = 0, meta: int | None = None, ew: int = 0,
                     ev: int | None = None) -> dict:
    """Compile :func:`llmsparse.kernels.gluon_mmsp._sp24_mmsp_gl` offline; registers, spills, main loop size
    (``meta``: the metadata build, :data:`~llmsparse.kernels.gluon_mmsp.META` by default; ``ew``: early weights
    under PDL, :data:`~llmsparse.kernels.gluon_mmsp.EARLY`; ``ev``: the weights' cache policy,
    :data:`~llmsparse.kernels.gluon_mmsp.EVICT` by default)."""
    from . import gluon_mmsp as g

    ty = {"float16": "*fp16", "bfloat16": "*bf16"}[dtype]
    split = g.config_splits(cfg) > 1
    kc = g.kernel_consts(cfg, dtype == "bfloat16")
    consts = dict(kc, HAS_BIAS=has_bias and (not split or bool(kc["FX"])), EVEN_K=even_k,
                  SPLIT=split, GDC=gdc, META=g.META if meta is None else meta, EW=ew,
                  EV=g.EVICT if ev is None else ev)
    div16 = ["x_ptr", "v_ptr", "m_ptr", "y_ptr", "b_ptr", "N", "KG", "stride_xw", "stride_ym", "o_ptr", "c_ptr", "stride_om"]
    fn = g._sp24_mmsp_gl
    if kc["TM"]:  # the bulk-tensor-copy kernel: descriptors instead of the weight pointers
        lay = g.tma_layouts(kc["WK"], kc["RT"])
        consts.update(lay, EVEN_N=True)
        rows = 16 * kc["RT"]
        sig = dict(x_ptr="*i32", v_desc=f"tensordesc<i32[{rows}, {32 * kc['WK']}],{lay['VS']!r}>",
                   m_desc=f"tensordesc<i64[{rows}, {2 * kc['WK']}],{lay['MS']!r}>",
                   y_ptr="*fp32" if split else ty, b_ptr=ty, M="i32", N="i32", SS="i32", stride_xw="i32",
                   stride_ym="i32", ITERS="i32", MN="i32", o_ptr=ty, c_ptr="*i32", stride_om="i32")
        div16 = ["x_ptr", "y_ptr", "b_ptr", "N", "stride_xw", "stride_ym", "o_ptr", "c_ptr", "stride_om"]
        fn = g._sp24_mmsp_tma_gl
    else:
        sig = dict(x_ptr="*i32", v_ptr="*i32", m_ptr="*i32" if kc["MO"] else "*i64", y_ptr="*fp32" if split else ty, b_ptr=ty, M="i32",
                   N="i32", SS="i32", KG="i32", KM="i32", stride_xw="i32", stride_ym="i32", ITERS="i32", MN="i32",
                   o_ptr=ty, c_ptr="*i32", stride_om="i32")
    st = _gluon_loop_stats(fn, sig, consts, div16, consts["WK"], arch, g.kernel_options(cfg).get("maxnreg", 0))
    lines = st.pop("lines")
    # kept weights a thread handles per iteration: 4 MMAs x 16 rows x 16 kept per 16-row tile, / 32 lanes
    out = dict(st, loop_mma=sum("HMMA" in x for x in lines), kept_per_iteration=consts["RT"] * 4 * 16 * 16 // 32)
    if keep_lines:
        out["lines"] = lines
    return out
