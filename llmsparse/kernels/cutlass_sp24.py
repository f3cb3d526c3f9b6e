"""The ``cutlass`` prefill path: CUTLASS's Hopper sparse GEMM (``wgmma.sp``), built from source on demand.

Where it pays: fp16 4096x4096 at M = 4096, cuSPARSELt 0.8's weak row, ran 1.39-1.49x faster than dense on an H100
in a standalone probe (cuSPARSELt 1.25x in the same call; docs/kernels-log.md, twenty-third session). It is one more
candidate of the dispatcher (path ``cutlass``, ``cfg = (index into CONFIGS,)``, M >= :data:`MIN_M`), measured
against the others like every path, on Hopper (compute capability 9.0) only.

The kernels are ``csrc/cutlass_sp24.cu``: CUTLASS collectives behind a plain C ABI, compiled by ``nvcc`` into a
shared library that this module loads with ``ctypes`` (no PyTorch extension build). One translation unit per
(dtype, configuration), compiled in parallel. Needs ``nvcc`` (CUDA >= 12.4, sm_90a) and the CUTLASS headers (the
``nvidia-cutlass`` wheel's ``cutlass_library/source``, or ``LLMSPARSE_CUTLASS_DIR``). Building takes minutes, so it
is never started behind a user's back:

* ``LLMSPARSE_CUTLASS=off`` (or ``0``): the path is never offered;
* unset / ``auto``: offered when the library is already built (the cache below) or given
  (``LLMSPARSE_CUTLASS_LIB=/path/libllms_sp24.so``);
* ``build``: as ``auto``, and built on first use when missing;
* ``python -m llmsparse.kernels.build_cutlass build`` builds it explicitly (``status`` says what is found).

The library lands in ``$LLMSPARSE_CUTLASS_CACHE`` (default ``~/.cache/llmsparse/cutlass``) under a key hashed from
the source, the nvcc version, the CUTLASS version and the flags, written atomically (a half-built library is never
loaded). The weight form is CUTLASS's own (kept values ``A_c`` + reordered metadata ``E``, written by CUTLASS's
compressor kernel from the dense-with-zeros weight), about as large as the packed pair.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

# (tile out x tok x K, cluster out x tok): csrc/cutlass_sp24.cu's LLMS_CFG 0..4, in this order
CONFIGS = ("256x128x64_c1x1", "128x256x64_c1x2", "256x128x64_c2x1", "128x256x64_c1x1", "128x128x64_c1x1")
MIN_M = 128  # the smallest bucket measured (the path's persistent tiles are 128-256 tokens wide)
K_ALIGN = 64  # in_features must be a multiple (the metadata's K atom with TK = 64)
N_ALIGN = 8  # out_features must be a multiple (16-byte rows of y)
_DTYPES = {torch.float16: ("f16", 0), torch.bfloat16: ("bf16", 1)}
SOURCE = Path(__file__).parent / "csrc" / "cutlass_sp24.cu"
MIN_NVCC = (12, 4)
NVCC_FLAGS = ("-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
              "-gencode=arch=compute_90a,code=sm_90a")
LIB_NAME = "libllms_sp24.so"


class Unavailable(RuntimeError):
    """The library cannot be built or loaded here (the message says why, in one line)."""


def setting() -> str:
    v = os.environ.get("LLMSPARSE_CUTLASS", "auto").strip().lower()
    return {"0": "off", "false": "off", "no": "off", "": "auto", "1": "build", "yes": "build"}.get(v, v)


# --------------------------------------------------------------------------- toolchain

def find_nvcc() -> str | None:
    """``$LLMSPARSE_NVCC``, ``$CUDA_HOME/bin/nvcc``, ``nvcc`` on PATH, ``/usr/local/cuda/bin/nvcc``."""
    cands = [os.environ.get("LLMSPARSE_NVCC")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append(os.path.join(os.environ[var], "bin", "nvcc"))
    cands += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def nvcc_version(nvcc: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvcc_version(out)


def parse_nvcc_version(text: str) -> tuple[int, int] | None:
    """``(13, 0)`` from ``nvcc --version``'s "Cuda compilation tools, release 13.0, V13.0.88"."""
    m = re.search(r"release (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_cutlass() -> Path | None:
    """A directory holding ``include/cutlass/cutlass.h`` (and ``tools/util/include``): ``$LLMSPARSE_CUTLASS_DIR``
    (or its ``source``), else the ``nvidia-cutlass`` wheel's ``cutlass_library/source``."""
    roots = []
    if os.environ.get("LLMSPARSE_CUTLASS_DIR"):
        d = Path(os.environ["LLMSPARSE_CUTLASS_DIR"])
        roots += [d, d / "source"]
    try:
        import importlib.util

        spec = importlib.util.find_spec("cutlass_library")
        if spec and spec.origin:
            roots.append(Path(spec.origin).parent / "source")
    except (ImportError, ValueError):
        pass
    for r in roots:
        if (r / "include" / "cutlass" / "cutlass.h").is_file():
            return r
    return None


def cutlass_version(root: Path) -> str:
    try:
        text = (root / "include" / "cutlass" / "version.h").read_text()
    except OSError:
        return "unknown"
    parts = [re.search(rf"#define CUTLASS_{p} (\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) if m else "?" for m in parts)


def compile_command(nvcc: str, cutlass: Path, dtype_index: int, cfg: int, obj: Path, extra=()) -> list[str]:
    """The nvcc line for one translation unit (dtype 0 fp16 / 1 bf16, configuration ``cfg``)."""
    return [nvcc, *NVCC_FLAGS, f"-I{cutlass / 'include'}", f"-I{cutlass / 'tools' / 'util' / 'include'}", *extra,
            f"-DLLMS_DTYPE={dtype_index}", f"-DLLMS_CFG={cfg}", "-c", str(SOURCE), "-o", str(obj)]


def link_command(nvcc: str, objs: list[Path], lib: Path) -> list[str]:
    return [nvcc, "-shared", *map(str, objs), "-o", str(lib)]


def _extra_flags() -> list[str]:
    return os.environ.get("LLMSPARSE_NVCC_FLAGS", "").split()


def build_key(nvcc_ver: tuple[int, int], cutlass_ver: str) -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(repr((nvcc_ver, cutlass_ver, NVCC_FLAGS, _extra_flags(), CONFIGS)).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("LLMSPARSE_CUTLASS_CACHE") or Path.home() / ".cache" / "llmsparse" / "cutlass")


def toolchain() -> tuple[str, tuple[int, int], Path]:
    """``(nvcc, its version, CUTLASS dir)``, or Unavailable saying what is missing."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise Unavailable("no nvcc found (set LLMSPARSE_NVCC or CUDA_HOME, or put nvcc on PATH)")
    ver = nvcc_version(nvcc)
    if ver is None or ver < MIN_NVCC:
        raise Unavailable(f"{nvcc} is CUDA {ver}; the sparse wgmma kernels need >= {MIN_NVCC[0]}.{MIN_NVCC[1]}")
    cutlass = find_cutlass()
    if cutlass is None:
        raise Unavailable("no CUTLASS headers found (pip install nvidia-cutlass, or set LLMSPARSE_CUTLASS_DIR)")
    return nvcc, ver, cutlass


def _library_at(ver: tuple[int, int], cutlass: Path) -> Path:
    """Where the library built by nvcc ``ver`` from the CUTLASS at ``cutlass`` lives in the cache."""
    return cache_root() / build_key(ver, cutlass_version(cutlass)) / LIB_NAME


def library_path() -> Path | None:
    """Where the built library for this toolchain is (or would be); None without a toolchain."""
    try:
        _, ver, cutlass = toolchain()
    except Unavailable:
        return None
    return _library_at(ver, cutlass)


def build(jobs: int | None = None, log=None, tools: tuple[str, tuple[int, int], Path] | None = None) -> Path:
    """Compile and link the library into the cache (atomically; nothing is left half-written) and return its path.
    Unavailable with the first error line (and the log file) if nvcc fails. ``tools``: :func:`toolchain`'s answer,
    where the caller has it already (each look runs ``nvcc --version``)."""
    nvcc, ver, cutlass = tools or toolchain()
    dest = _library_at(ver, cutlass)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    jobs = jobs or max(1, min(8, os.cpu_count() or 1))
    units = [(d, c) for d in (0, 1) for c in range(len(CONFIGS))]
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmp = Path(tmp)

        def one(unit):
            d, c = unit
            obj = tmp / f"u{d}_{c}.o"
            r = subprocess.run(compile_command(nvcc, cutlass, d, c, obj, _extra_flags()), capture_output=True,
                               text=True)
            return unit, obj, r

        if log:
            log(f"building the CUTLASS 2:4 library ({len(units)} units, {jobs} at a time; minutes) into {dest}")
        objs = []
        with ThreadPoolExecutor(jobs) as ex:
            for unit, obj, r in ex.map(one, units):
                if r.returncode != 0:
                    _fail(dest, f"nvcc failed on unit {unit}", r.stdout + r.stderr)
                objs.append(obj)
        part = tmp / LIB_NAME
        r = subprocess.run(link_command(nvcc, objs, part), capture_output=True, text=True)
        if r.returncode != 0:
            _fail(dest, "linking failed", r.stdout + r.stderr)
        os.replace(part, dest)
    return dest


def _fail(dest: Path, what: str, output: str) -> None:
    logf = dest.parent / "build.log"
    logf.write_text(output)
    first = next((ln for ln in output.splitlines() if "error" in ln.lower()), output.strip()[:200])
    raise Unavailable(f"{what}: {first.strip()} (full log: {logf})")


# --------------------------------------------------------------------------- loading

_LIB: ctypes.CDLL | None = None
_REASON: str | None = None


def _declare(lib: ctypes.CDLL) -> None:
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    for dt in ("f16", "bf16"):
        for c in range(len(CONFIGS)):
            f = getattr(lib, f"llms_sp24_gemm_{dt}_{c}")
            f.argtypes, f.restype = [p, p, p, p, i, i, i, p, p], i
            f = getattr(lib, f"llms_sp24_gemm_workspace_{dt}_{c}")
            f.argtypes, f.restype = [i, i, i], i64
            f = getattr(lib, f"llms_sp24_cfg_name_{dt}_{c}")
            f.argtypes, f.restype = [], ctypes.c_char_p
            name = f().decode()
            if name != CONFIGS[c]:
                raise Unavailable(f"library configuration {c} is {name}, expected {CONFIGS[c]} (stale build?)")
        f = getattr(lib, f"llms_sp24_form_sizes_{dt}")
        f.argtypes, f.restype = [i, i, ctypes.POINTER(i64), ctypes.POINTER(i64)], i
        f = getattr(lib, f"llms_sp24_compress_workspace_{dt}")
        f.argtypes, f.restype = [i, i], i64
        f = getattr(lib, f"llms_sp24_compress_{dt}")
        f.argtypes, f.restype = [p, p, p, i, i, p, p], i


def load(allow_build: bool | None = None, log=None) -> ctypes.CDLL:
    """The loaded library (once per process): ``$LLMSPARSE_CUTLASS_LIB``, else the cached build, else (with
    ``allow_build``, default: ``LLMSPARSE_CUTLASS=build``) a fresh build. Unavailable otherwise."""
    global _LIB, _REASON
    if _LIB is not None:
        return _LIB
    mode = setting()
    if mode == "off":
        raise Unavailable("turned off (LLMSPARSE_CUTLASS=off)")
    if mode not in ("auto", "build"):
        raise Unavailable(f"LLMSPARSE_CUTLASS={os.environ.get('LLMSPARSE_CUTLASS')!r} is not one of auto, build, off")
    given = os.environ.get("LLMSPARSE_CUTLASS_LIB")
    if given:
        path = Path(given)
        if not path.is_file():
            raise Unavailable(f"LLMSPARSE_CUTLASS_LIB={given} is not a file")
    else:
        try:
            tools = toolchain()
        except Unavailable:
            tools = None
        path = _library_at(tools[1], tools[2]) if tools else None
        if path is None or not path.is_file():
            if allow_build is None:
                allow_build = mode == "build"
            if not allow_build:
                raise Unavailable("not built (python -m llmsparse.kernels.build_cutlass build, or "
                                  "LLMSPARSE_CUTLASS=build)")
            path = build(log=log or (lambda s: print(s, file=sys.stderr)), tools=tools)
    try:
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, AttributeError) as e:
        raise Unavailable(f"cannot load {path}: {e}") from None
    _LIB, _REASON = lib, None
    return lib


def available(device=None, dtype=None) -> bool:
    """Whether the path can run here: a CUDA device of compute capability 9.0 (the kernels are sm_90a code),
    fp16/bf16, and the library loaded (never built here unless ``LLMSPARSE_CUTLASS=build``). A failed load is
    remembered for the process (:func:`reason`); a library built later is picked up by a new process."""
    global _REASON
    if dtype is not None and dtype not in _DTYPES:
        return False
    if not torch.cuda.is_available():
        return False
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev) != (9, 0):
        return False
    if _LIB is None and _REASON is not None:  # tried once in this process (each try may run nvcc --version)
        return False
    try:
        load()
    except Unavailable as e:
        _REASON = str(e)
        return False
    return True


def reason() -> str | None:
    """Why :func:`available` said no the last time the library was the reason."""
    return _REASON


def supports(out_features: int, in_features: int, dtype) -> bool:
    return dtype in _DTYPES and in_features % K_ALIGN == 0 and out_features % N_ALIGN == 0


# --------------------------------------------------------------------------- calls

def _stream(device: torch.device) -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        msg = {1: "problem not supported", 2: "initialize failed", 3: "launch failed"}.get(rc, f"code {rc}")
        raise RuntimeError(f"cutlass_sp24 {what}: {msg}")


def compress(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CUTLASS's compressed form ``(A_c, E)`` of a dense-with-zeros 2:4 weight ``[out, in]`` (fp16/bf16, CUDA)."""
    if dense.dtype not in _DTYPES or dense.dim() != 2 or not dense.is_cuda:
        raise ValueError("cutlass_sp24.compress: a 2-D fp16/bf16 CUDA tensor is needed")
    if not supports(dense.shape[0], dense.shape[1], dense.dtype):
        raise ValueError(f"cutlass_sp24: {dense.shape[0]}x{dense.shape[1]} needs in % {K_ALIGN} == 0 "
                         f"and out % {N_ALIGN} == 0")
    lib = load()
    dt = _DTYPES[dense.dtype][0]
    n, k = dense.shape
    dense = dense.contiguous()
    ac_n, e_n = ctypes.c_int64(), ctypes.c_int64()
    _check(getattr(lib, f"llms_sp24_form_sizes_{dt}")(n, k, ctypes.byref(ac_n), ctypes.byref(e_n)), "form sizes")
    with torch.cuda.device(dense.device):
        a_c = torch.empty(ac_n.value, dtype=dense.dtype, device=dense.device)
        e = torch.zeros(e_n.value, dtype=torch.uint8, device=dense.device)
        ws_n = getattr(lib, f"llms_sp24_compress_workspace_{dt}")(n, k)
        ws = torch.empty(max(ws_n, 1), dtype=torch.uint8, device=dense.device)
        _check(getattr(lib, f"llms_sp24_compress_{dt}")(dense.data_ptr(), a_c.data_ptr(), e.data_ptr(), n, k,
                                                        ws.data_ptr(), _stream(dense.device)), "compress")
    return a_c, e


def gemm(x: torch.Tensor, a_c: torch.Tensor, e: torch.Tensor, cfg: int, out_features: int,
         bias: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ W^T (+ bias)`` as a contiguous ``[M, out_features]``, W as :func:`compress` made it; written
    into ``out`` where given (a contiguous tensor of that shape and dtype: the GPU tests poison it first)."""
    if x.dtype not in _DTYPES or x.dim() != 2:
        raise ValueError("cutlass_sp24.gemm: x must be a 2-D fp16/bf16 tensor")
    if not 0 <= cfg < len(CONFIGS):
        raise ValueError(f"cutlass_sp24: configuration {cfg} is not one of 0..{len(CONFIGS) - 1}")
    if a_c.dtype != x.dtype:
        raise ValueError(f"cutlass_sp24: weights are {a_c.dtype}, x is {x.dtype}")
    m, k = x.shape
    if a_c.numel() < out_features * (k // 2):
        raise ValueError(f"cutlass_sp24: the compressed weight does not hold {out_features}x{k}")
    lib = load()
    dt = _DTYPES[x.dtype][0]
    x = x.contiguous()
    if x.data_ptr() % 16:  # TMA reads from 16-byte aligned addresses only (a view at an odd offset)
        x = x.clone()
    if out is None:
        y = torch.empty(m, out_features, dtype=x.dtype, device=x.device)
    elif (out.shape != (m, out_features) or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device
          or out.data_ptr() % 16):
        raise ValueError(f"cutlass_sp24.gemm: out must be a contiguous, 16-byte aligned {x.dtype} [{m}, {out_features}] "
                         f"on {x.device}")
    else:
        y = out
    if m:
        with torch.cuda.device(x.device):
            ws_n = getattr(lib, f"llms_sp24_gemm_workspace_{dt}_{cfg}")(out_features, m, k)
            ws = torch.empty(ws_n, dtype=torch.uint8, device=x.device) if ws_n > 0 else None
            _check(getattr(lib, f"llms_sp24_gemm_{dt}_{cfg}")(
                a_c.data_ptr(), e.data_ptr(), x.data_ptr(), y.data_ptr(), out_features, m, k,
                ws.data_ptr() if ws is not None else None, _stream(x.device)), f"gemm {CONFIGS[cfg]}")
    return y if bias is None else y.add_(bias)


@torch.library.custom_op("llmsparse::cutlass_sp24", mutates_args=())
def _cutlass_op(x: torch.Tensor, a_c: torch.Tensor, e: torch.Tensor, cfg: int, out_features: int) -> torch.Tensor:
    """:func:`gemm` without bias behind an opaque op (SparseLinear under torch.compile)."""
    return gemm(x, a_c, e, cfg, out_features)


@_cutlass_op.register_fake
def _(x, a_c, e, cfg, out_features):
    return x.new_empty((x.shape[0], out_features))


# --------------------------------------------------------------------------- command line

def main(argv=None) -> int:
    """``python -m llmsparse.kernels.build_cutlass build|status`` (exit 0; 2 for bad usage or no toolchain, 1 when
    the build fails; errors in one line)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in ("build", "status"):
        print("usage: python -m llmsparse.kernels.build_cutlass build|status", file=sys.stderr)
        return 2
    try:
        nvcc, ver, cutlass = toolchain()
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = _library_at(ver, cutlass)
    if argv[0] == "status":
        print(f"nvcc {nvcc} (CUDA {ver[0]}.{ver[1]}); CUTLASS {cutlass_version(cutlass)} at {cutlass}")
        print(f"library {path}: {'built' if path.is_file() else 'not built'}; LLMSPARSE_CUTLASS={setting()}")
        return 0
    try:
        print(build(log=print, tools=(nvcc, ver, cutlass)))
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

