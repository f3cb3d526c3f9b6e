"""The CUTLASS prefill path's CPU side: toolchain discovery, build commands, atomic builds, loading rules, the
dispatcher's candidates. (The kernels themselves: tests/gpu/test_cutlass_gpu.py; an offline compile of the real
source runs with LLMSPARSE_TEST_CUTLASS_BUILD=1, it takes minutes.)"""
from __future__ import annotations

import os
import stat
import textwrap

import pytest
import torch

from llmsparse.kernels import cutlass_sp24 as cs
from llmsparse.kernels import dispatch


_VARS = ("LLMSPARSE_CUTLASS", "LLMSPARSE_CUTLASS_LIB", "LLMSPARSE_NVCC", "LLMSPARSE_CUTLASS_DIR",
         "LLMSPARSE_NVCC_FLAGS", "LLMSPARSE_CUTLASS_CACHE")
_ORIGINAL = {v: os.environ[v] for v in _VARS if v in os.environ}  # the real-build test uses the caller's


@pytest.fixture(autouse=True)
def _clean(monkeypatch, tmp_path):
    for var in _VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLMSPARSE_CUTLASS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cs, "_LIB", None)
    monkeypatch.setattr(cs, "_REASON", None)


def _fake_cutlass(root):
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("")
    (root / "include" / "cutlass" / "version.h").write_text(
        "#define CUTLASS_MAJOR 4\n#define CUTLASS_MINOR 2\n#define CUTLASS_PATCH 0\n")
    return root


def _fake_nvcc(path, body):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


NVCC_OK = """\
    if [ "$1" = "--version" ]; then echo "Cuda compilation tools, release 13.0, V13.0.88"; exit 0; fi
    out=""; prev=""
    for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
    echo "object for $*" > "$out"
    """


def test_nvcc_version_parse():
    assert cs.parse_nvcc_version("nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, "
                                 "V13.0.88\nBuild cuda_13.0.r13.0") == (13, 0)
    assert cs.parse_nvcc_version("Cuda compilation tools, release 12.4, V12.4.131") == (12, 4)
    assert cs.parse_nvcc_version("command not found") is None


def test_setting_words(monkeypatch):
    for raw, want in (("", "auto"), ("auto", "auto"), ("0", "off"), ("OFF", "off"), ("build", "build"),
                      ("1", "build")):
        monkeypatch.setenv("LLMSPARSE_CUTLASS", raw)
        assert cs.setting() == want


def test_compile_command_targets_sm90a_without_asserts(tmp_path):
    cmd = cs.compile_command("/x/nvcc", tmp_path, 1, 2, tmp_path / "u.o", ["-Ifoo"])
    assert cmd[0] == "/x/nvcc" and "-gencode=arch=compute_90a,code=sm_90a" in cmd
    # without NDEBUG the CUTLASS asserts make ptxas serialize the wgmma pipeline (its warning C7510)
    assert "-DNDEBUG" in cmd and "-DLLMS_DTYPE=1" in cmd and "-DLLMS_CFG=2" in cmd and "-Ifoo" in cmd
    assert f"-I{tmp_path / 'include'}" in cmd and f"-I{tmp_path / 'tools' / 'util' / 'include'}" in cmd
    assert cmd[cmd.index("-c") + 1] == str(cs.SOURCE) and cmd[-1] == str(tmp_path / "u.o")
    assert cs.SOURCE.is_file()


def test_source_configurations_match_the_python_table():
    """The .cu's LLMS_CFG branches and CONFIGS agree (the loader checks the built library's names too)."""
    src = cs.SOURCE.read_text()
    found = []
    for i in range(len(cs.CONFIGS)):
        block = src.split(f"LLMS_CFG == {i}\n", 1)[1].split("\n", 1)[0]
        vals = dict(kv.split(" = ") for kv in block.replace("constexpr int ", "").rstrip(";").split(", "))
        found.append(f"{vals['kTM']}x{vals['kTN']}x64_c{vals['kCM']}x{vals['kCN']}")
    assert tuple(found) == cs.CONFIGS
    assert "constexpr int kTK = 64;" in src


def test_toolchain_reports_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(cs, "find_nvcc", lambda: None)
    with pytest.raises(cs.Unavailable, match="no nvcc"):
        cs.toolchain()
    old = _fake_nvcc(tmp_path / "nvcc", 'echo "Cuda compilation tools, release 12.1, V12.1.1"\n')
    monkeypatch.setattr(cs, "find_nvcc", lambda: str(old))
    with pytest.raises(cs.Unavailable, match="need >= 12.4"):
        cs.toolchain()
    new = _fake_nvcc(tmp_path / "nvcc2", NVCC_OK)
    monkeypatch.setattr(cs, "find_nvcc", lambda: str(new))
    monkeypatch.setattr(cs, "find_cutlass", lambda: None)
    with pytest.raises(cs.Unavailable, match="no CUTLASS headers"):
        cs.toolchain()


def test_find_cutlass_and_nvcc_from_the_environment(monkeypatch, tmp_path):
    root = _fake_cutlass(tmp_path / "cutlass" / "source")
    monkeypatch.setenv("LLMSPARSE_CUTLASS_DIR", str(tmp_path / "cutlass"))  # its source/ is accepted too
    assert cs.find_cutlass() == root and cs.cutlass_version(root) == "4.2.0"
    nvcc = _fake_nvcc(tmp_path / "nvcc", NVCC_OK)
    monkeypatch.setenv("LLMSPARSE_NVCC", str(nvcc))
    assert cs.find_nvcc() == str(nvcc) and cs.nvcc_version(str(nvcc)) == (13, 0)


def test_build_links_every_unit_once_and_reuses_the_result(monkeypatch, tmp_path):
    nvcc = _fake_nvcc(tmp_path / "nvcc", NVCC_OK)
    monkeypatch.setenv("LLMSPARSE_NVCC", str(nvcc))
    monkeypatch.setenv("LLMSPARSE_CUTLASS_DIR", str(_fake_cutlass(tmp_path / "c")))
    lines = []
    lib = cs.build(jobs=2, log=lines.append)
    assert lib.is_file() and lib == cs.library_path() and lib.name == cs.LIB_NAME
    linked = lib.read_text()  # the fake nvcc wrote its command line: the link of every (dtype, configuration) object
    n = 2 * len(cs.CONFIGS)
    assert "-shared" in linked and sum(f"u{d}_{c}.o" in linked for d in (0, 1) for c in range(len(cs.CONFIGS))) == n
    assert len(lines) == 1 and f"{n} units" in lines[0]
    assert sorted(p.name for p in lib.parent.iterdir()) == [cs.LIB_NAME]  # no objects or temp dirs left
    mtime = lib.stat().st_mtime_ns
    assert cs.build() == lib and lib.stat().st_mtime_ns == mtime  # built once


def test_failed_build_leaves_no_library_and_says_why(monkeypatch, tmp_path):
    nvcc = _fake_nvcc(tmp_path / "nvcc", """\
        if [ "$1" = "--version" ]; then echo "release 13.0"; exit 0; fi
        echo "cutlass_sp24.cu(12): error: something is wrong" >&2; exit 1
        """)
    monkeypatch.setenv("LLMSPARSE_NVCC", str(nvcc))
    monkeypatch.setenv("LLMSPARSE_CUTLASS_DIR", str(_fake_cutlass(tmp_path / "c")))
    with pytest.raises(cs.Unavailable, match=r"nvcc failed on unit .*error: something is wrong .*build.log"):
        cs.build(jobs=1)
    dest = cs.library_path()
    assert not dest.exists() and (dest.parent / "build.log").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["build.log"]


def test_load_never_builds_unless_asked(monkeypatch, tmp_path):
    nvcc = _fake_nvcc(tmp_path / "nvcc", NVCC_OK)
    monkeypatch.setenv("LLMSPARSE_NVCC", str(nvcc))
    monkeypatch.setenv("LLMSPARSE_CUTLASS_DIR", str(_fake_cutlass(tmp_path / "c")))
    with pytest.raises(cs.Unavailable, match="not built"):
        cs.load()
    assert not cs.library_path().exists()
    monkeypatch.setenv("LLMSPARSE_CUTLASS", "off")
    with pytest.raises(cs.Unavailable, match="turned off"):
        cs.load()
    monkeypatch.setenv("LLMSPARSE_CUTLASS", "biuld")  # a typo is said, not taken for auto
    with pytest.raises(cs.Unavailable, match="'biuld' is not one of auto, build, off"):
        cs.load()
    monkeypatch.setenv("LLMSPARSE_CUTLASS", "auto")
    monkeypatch.setenv("LLMSPARSE_CUTLASS_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(cs.Unavailable, match="is not a file"):
        cs.load()
    # a file that is not a loadable library: one line, no traceback from ctypes
    bad = tmp_path / "bad.so"
    bad.write_text("not an ELF")
    monkeypatch.setenv("LLMSPARSE_CUTLASS_LIB", str(bad))
    with pytest.raises(cs.Unavailable, match="cannot load"):
        cs.load()


def test_unavailable_without_a_hopper_gpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU answer")
    assert not cs.available() and not cs.available(dtype=torch.float16)
    assert not dispatch._cutlass_usable(4096, 4096, torch.float16, torch.device("cpu"))


def test_supports_shapes_and_dtypes():
    assert cs.supports(4096, 4096, torch.float16) and cs.supports(11008, 4096, torch.bfloat16)
    assert not cs.supports(4096, 4128, torch.float16)  # in_features % 64
    assert not cs.supports(4100, 4096, torch.float16)  # out_features % 8
    assert not cs.supports(4096, 4096, torch.float32)


def test_calls_refuse_bad_arguments_before_touching_a_gpu():
    with pytest.raises(ValueError, match="2-D fp16/bf16 CUDA"):
        cs.compress(torch.zeros(64, 64))
    x = torch.zeros(4, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="configuration 9"):
        cs.gemm(x, torch.zeros(64 * 32, dtype=torch.float16), torch.zeros(8, dtype=torch.uint8), 9, 64)
    with pytest.raises(ValueError, match="weights are torch.bfloat16"):
        cs.gemm(x, torch.zeros(64 * 32, dtype=torch.bfloat16), torch.zeros(8, dtype=torch.uint8), 0, 64)
    with pytest.raises(ValueError, match="does not hold 64x64"):
        cs.gemm(x, torch.zeros(10, dtype=torch.float16), torch.zeros(8, dtype=torch.uint8), 0, 64)


def test_run_choice_needs_the_cutlass_form():
    with pytest.raises(ValueError, match="CUTLASS's compressed weight"):
        dispatch.run_choice(dispatch.Choice("cutlass", (0,)), torch.zeros(128, 64, dtype=torch.float16),
                            out_features=64)
    c = dispatch.choice_from_name("cutlass:3")
    assert c.path == "cutlass" and c.cfg == (3,) and dispatch.choice_name(c) == "cutlass:3"


def test_layers_holding_only_the_mma_order_copy_are_offered_cutlass():
    """A layer that holds only mma_order's copy can run CUTLASS's own form (like cuSPARSELt's), not the packed pair."""
    got = {c.path for c in dispatch.candidates(4096, mo_only=2, in_features=4096, cslt_algs=(0,))}
    assert got == {"cslt", "cutlass"}


def test_command_line_errors_are_one_line(monkeypatch, capsys):
    assert cs.main(["frobnicate"]) == 2
    assert "usage:" in capsys.readouterr().err
    monkeypatch.setattr(cs, "find_nvcc", lambda: None)
    assert cs.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no nvcc") and err.count("\n") == 1


@pytest.mark.skipif(os.environ.get("LLMSPARSE_TEST_CUTLASS_BUILD") != "1",
                    reason="compiles the real CUTLASS source for sm_90a (about 10 minutes on 2 cores); "
                           "set LLMSPARSE_TEST_CUTLASS_BUILD=1 with nvcc and the CUTLASS headers installed")
def test_real_library_builds_links_and_loads(monkeypatch, tmp_path):
    """The real csrc/cutlass_sp24.cu: every unit compiles with the toolchain found here with no C7510 (wgmma
    serialized) warning, the units link side by side into one library, and it loads without a GPU (the host-only
    entry points: configuration names and compressed-form sizes)."""
    import ctypes
    import subprocess

    for var, value in _ORIGINAL.items():
        monkeypatch.setenv(var, value)
    nvcc, _, cutlass = cs.toolchain()
    r = subprocess.run(cs.compile_command(nvcc, cutlass, 0, 0, tmp_path / "u.o", cs._extra_flags()),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "C7510" not in r.stdout + r.stderr and (tmp_path / "u.o").stat().st_size > 0
    lib = cs.build()
    monkeypatch.setenv("LLMSPARSE_CUTLASS_LIB", str(lib))
    loaded = cs.load()  # checks every configuration's name against CONFIGS
    for dt in ("f16", "bf16"):
        ac, e = ctypes.c_int64(), ctypes.c_int64()
        assert getattr(loaded, f"llms_sp24_form_sizes_{dt}")(4096, 11008, ctypes.byref(ac), ctypes.byref(e)) == 0
        assert ac.value == 4096 * 11008 // 2 and 0 < e.value < ac.value


def test_available_tries_the_library_once_per_process(monkeypatch):
    """On a Hopper GPU without the library, available() says no with the reason, and does not look again (each
    look may run nvcc --version) until a new process; other GPUs and dtypes are refused before any look."""
    calls = []

    def fake_load():
        calls.append(1)
        raise cs.Unavailable("not built (python -m llmsparse.kernels.build_cutlass build, or LLMSPARSE_CUTLASS=build)")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cs, "load", fake_load)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (8, 0))
    assert not cs.available() and not calls  # an A100: sm_90a code cannot run
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (9, 0))
    assert not cs.available(dtype=torch.float32) and not calls
    assert not cs.available() and not cs.available(dtype=torch.bfloat16)
    assert len(calls) == 1 and cs.reason().startswith("not built")


def test_tuning_says_once_why_cutlass_is_not_measured(monkeypatch):
    monkeypatch.setattr(dispatch, "_CUTLASS_NOTED", [])
    monkeypatch.setattr(cs, "_REASON", "not built (python -m llmsparse.kernels.build_cutlass build, or ...)")
    lines = []
    dispatch._note_cutlass(lines.append)
    dispatch._note_cutlass(lines.append)
    assert lines == ["cutlass path not measured: not built (python -m llmsparse.kernels.build_cutlass build, or ...)"]
    monkeypatch.setattr(dispatch, "_CUTLASS_NOTED", [])
    monkeypatch.setattr(cs, "_REASON", None)  # not a Hopper GPU: nothing to say
    dispatch._note_cutlass(lines.append)
    assert len(lines) == 1


# --------------------------------------------------------------------------- the path inside the dispatcher and layer

def _w24(out, inp, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    keep = torch.rand(out, inp // 4, 4, generator=g).argsort(-1) < 2
    return w * keep.reshape(out, inp)


class _FakeBench:
    """A ShapeBench stand-in with cuSPARSELt's and CUTLASS's forms: every candidate exact, times scripted."""

    have_cslt = True
    have_cutlass = True
    sets = [{"cslt_packed": None, "cutlass": None}]

    def args(self, m, choice):
        return (lambda name: None), [(dispatch.choice_name(choice),)]

    def check(self, m, choice):
        return 0.0

    def inputs(self, m):
        return [torch.zeros(m, 64)]


def _scripted(monkeypatch, script, views=False):
    pytest.importorskip("triton")
    from llmsparse.kernels import cslt, timing

    monkeypatch.setattr(timing, "time_call", lambda fn, a, **_: (script.get(a[0][0]) or [9.0]).pop(0))
    monkeypatch.setattr(timing, "host_ms", lambda fn, a, **_: 0.05)
    monkeypatch.setattr(cslt, "search_alg", lambda packed, x: None)
    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "fake-gpu")
    dispatch.clear()
    table = dispatch.tune(64, 64, torch.float16, False, (4096,), device="cpu", bench=_FakeBench(),
                          paths=("cslt", "cutlass"), force=True, views=views)
    return table[4096]


def test_tune_keeps_the_fastest_of_cuSPARSELt_and_cutlass(monkeypatch):
    script = {"dense:": [1.0] * 5, "cslt:0,1": [0.8], "cutlass:1": [0.7, 0.7, 0.7], "cutlass:0": [0.75]}
    c = _scripted(monkeypatch, script)
    assert c.path == "cutlass" and c.cfg == (1,) and c.ms == pytest.approx(0.7)
    assert {"cutlass:0", "cutlass:1", "cutlass:2", "cutlass:3"} <= set(dispatch.RECORDS[-1].timings)
    script = {"dense:": [1.0] * 5, "cslt:0,1": [0.6, 0.6, 0.6], "cutlass:1": [0.7]}
    assert _scripted(monkeypatch, script).path == "cslt"
    # a cutlass win that does not hold when re-measured: dense
    script = {"dense:": [1.0] * 5, "cutlass:2": [0.8, 1.1, 1.1]}
    assert _scripted(monkeypatch, script).path == "dense"


def test_tune_drops_cutlass_when_the_bench_has_no_form(monkeypatch):
    pytest.importorskip("triton")
    from llmsparse.kernels import timing

    class NoForm(_FakeBench):
        have_cutlass = False

    seen = []
    monkeypatch.setattr(timing, "time_call", lambda fn, a, **_: seen.append(a[0][0]) or 1.0)
    monkeypatch.setattr(timing, "host_ms", lambda fn, a, **_: 0.05)
    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "fake-gpu")
    dispatch.clear()
    dispatch.tune(64, 64, torch.float16, False, (4096,), device="cpu", bench=NoForm(), paths=("cutlass",),
                  force=True)
    assert seen and not any(n.startswith("cutlass") for n in seen)


def test_layer_builds_uses_and_drops_the_cutlass_form(monkeypatch):
    """SparseLinear holds CUTLASS's form exactly where a choice reads it: built by _materialize, handed to the path,
    a fallback where it is missing, dropped with new weights, never in the state dict."""
    from llmsparse.kernels import SparseLinear

    built = []

    def fake_compress(dense):
        built.append(dense.clone())
        return dense.reshape(-1)[: dense.numel() // 2].clone(), torch.zeros(8, dtype=torch.uint8)

    monkeypatch.setattr(cs, "compress", fake_compress)
    w = _w24(16, 64)
    lin = SparseLinear.from_dense(w)
    lin._table = {4096: dispatch.Choice("cutlass", (1,))}
    assert lin._plan(4096).path != "cutlass"  # the form was never built: a path that needs none
    lin._materialize()
    assert len(built) == 1 and torch.equal(built[0], w) and lin._cutlass() is not None
    assert lin._plan(4096) == dispatch.Choice("cutlass", (1,))
    assert not any("cutlass" in k for k in lin.state_dict())
    lin.load_state_dict(SparseLinear.from_dense(_w24(16, 64, seed=1)).state_dict())
    assert len(built) == 2 and not torch.equal(built[1], w)  # rebuilt for the new weights
    lin._table = {4096: dispatch.Choice("cslt", (0, 1))}
    monkeypatch.setattr(SparseLinear, "_get_cslt", lambda self: None)
    lin._materialize()
    assert lin._cutlass() is None  # no choice reads it any more


def test_fallback_takes_the_cutlass_form_where_it_is_the_one_held():
    """keep_dense=False where dense won, or a missing form: a layer holding CUTLASS's form (and not cuSPARSELt's)
    falls back on it at large M instead of the slow packed-only Triton kernels."""
    from llmsparse.kernels import linear

    assert linear._best_sparse_fallback(4096, False, 0, True) == dispatch.Choice("cutlass", (0,))
    assert linear._best_sparse_fallback(4096, True, 0, True).path == "cslt"  # cuSPARSELt's first, as before
    assert linear._best_sparse_fallback(64, False, 0, True).path == "mm"  # under the path's smallest M
    for order in (1, 2):
        assert linear._best_sparse_fallback(4096, False, order, True) == dispatch.Choice("cutlass", (0,))
        assert linear._best_sparse_fallback(16, False, order, True).path == "mmsp"


def test_load_builds_when_asked(monkeypatch, tmp_path):
    """LLMSPARSE_CUTLASS=build: a missing library is built on first use (with the fake nvcc here the result is not
    a loadable library, which load() says in one line)."""
    nvcc = _fake_nvcc(tmp_path / "nvcc", NVCC_OK)
    monkeypatch.setenv("LLMSPARSE_NVCC", str(nvcc))
    monkeypatch.setenv("LLMSPARSE_CUTLASS_DIR", str(_fake_cutlass(tmp_path / "c")))
    monkeypatch.setenv("LLMSPARSE_CUTLASS", "build")
    lines = []
    with pytest.raises(cs.Unavailable, match="cannot load"):
        cs.load(log=lines.append)
    assert cs.library_path().is_file() and len(lines) == 1 and "units" in lines[0]


class _FakeBenchM(_FakeBench):
    def args(self, m, choice):
        return (lambda name, m: None), [(dispatch.choice_name(choice), m)]


def _tune_two(monkeypatch, times, views=False, tol=None):
    """tune at M = 1024 and 4096 with every candidate's time given by ``times[(name, M)]`` (else dense 1.0, others 9)."""
    pytest.importorskip("triton")
    from llmsparse.kernels import cslt, timing

    monkeypatch.setattr(timing, "time_call",
                        lambda fn, a, **_: times.get(a[0], 1.0 if a[0][0] == "dense:" else 9.0))
    monkeypatch.setattr(timing, "host_ms", lambda fn, a, **_: 0.05)
    monkeypatch.setattr(cslt, "search_alg", lambda packed, x: None)
    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "fake-gpu")
    if tol is not None:
        monkeypatch.setattr(dispatch, "ONE_FORM_TOL", tol)
    dispatch.clear()
    logs = []
    table = dispatch.tune(64, 64, torch.float16, False, (1024, 4096), device="cpu", bench=_FakeBenchM(),
                          paths=("cslt", "cutlass"), force=True, views=views, log=logs.append)
    return table, logs


def _vtable() -> dict:
    """The view table _tune_two's shape fills (views=True)."""
    return dispatch.table_for(dispatch.view_key(dispatch.make_key(64, 64, torch.float16, False, "cpu")))


def test_a_shape_keeps_one_sparse_tensor_core_form_where_it_costs_little(monkeypatch):
    # cuSPARSELt wins M=1024 by 3% (within ONE_FORM_TOL), CUTLASS wins M=4096 by 14%: both buckets go to CUTLASS
    times = {("cslt:0,1", 1024): 0.60, ("cutlass:4", 1024): 0.618, ("cutlass:0", 4096): 0.70, ("cslt:1,1", 4096): 0.80}
    table, logs = _tune_two(monkeypatch, times)
    assert {b: dispatch.choice_name(c) for b, c in table.items()} == {1024: "cutlass:4", 4096: "cutlass:0"}
    assert table[1024].ms == pytest.approx(0.618) and table[1024].dense_ms == pytest.approx(1.0)
    assert any("cutlass:4" in line and "instead of cslt:0,1" in line for line in logs)
    # a wider gap at M=1024 (10%) keeps both forms: speed first
    times[("cutlass:4", 1024)] = 0.66
    table, _ = _tune_two(monkeypatch, times)
    assert {b: c.path for b, c in table.items()} == {1024: "cslt", 4096: "cutlass"}
    # of two ways within the tolerance, the one losing less: M=4096 onto cuSPARSELt costs 2%, M=1024 onto CUTLASS 4%
    times = {("cslt:0,1", 1024): 0.60, ("cutlass:4", 1024): 0.624, ("cutlass:0", 4096): 0.70, ("cslt:1,1", 4096): 0.714}
    table, _ = _tune_two(monkeypatch, times)
    assert {b: dispatch.choice_name(c) for b, c in table.items()} == {1024: "cslt:0,1", 4096: "cslt:1,1"}
    # tolerance 0: nothing moves
    table, _ = _tune_two(monkeypatch, times, tol=0.0)
    assert {b: c.path for b, c in table.items()} == {1024: "cslt", 4096: "cutlass"}


def test_one_form_never_moves_a_bucket_onto_a_path_that_does_not_beat_dense(monkeypatch):
    # CUTLASS at M=1024 is within 4% of cuSPARSELt but under the 1.05x bar against dense (1.0 ms)
    times = {("cslt:0,1", 1024): 0.93, ("cutlass:4", 1024): 0.96, ("cutlass:0", 4096): 0.70, ("cslt:1,1", 4096): 0.80}
    table, _ = _tune_two(monkeypatch, times)
    assert {b: c.path for b, c in table.items()} == {1024: "cslt", 4096: "cutlass"}


def test_one_form_covers_the_view_table_too(monkeypatch):
    """Under torch.compile the layer holds the forms of both tables: a cuSPARSELt view winning M=1024 there is
    moved with the eager table's buckets (views are candidates only in the view table)."""
    times = {("cslt:0,2", 1024): 0.55, ("cutlass:4", 1024): 0.57, ("cutlass:0", 4096): 0.70}
    table, _ = _tune_two(monkeypatch, times, views=True)
    vtable = _vtable()
    assert {c.path for c in table.values()} == {"cutlass"} and {c.path for c in vtable.values()} == {"cutlass"}


def test_one_form_never_slows_the_eager_table_for_the_view_tables_sake(monkeypatch):
    """As measured on fp16 8192x28672 (H100, twenty-fourth session): the eager table picks CUTLASS, the view table a
    cuSPARSELt view 11% faster than any CUTLASS configuration; cuSPARSELt's best eager configuration is within 2% of
    CUTLASS. The eager table keeps CUTLASS (eager layers hold only its form); the view table keeps its view."""
    times = {("dense:", 4096): 2.5, ("cutlass:2", 4096): 1.909, ("cslt:0,0", 4096): 1.944, ("cslt:0,2", 4096): 1.715}
    table, logs = _tune_two(monkeypatch, times, views=True)
    vtable = _vtable()
    assert dispatch.choice_name(table[4096]) == "cutlass:2" and dispatch.choice_name(vtable[4096]) == "cslt:0,2"
    assert not [line for line in logs if "instead of" in line]
    # a view within the tolerance moves onto the eager table's form
    times[("cslt:0,2", 4096)] = 1.86
    table, logs = _tune_two(monkeypatch, times, views=True)
    vtable = _vtable()
    assert dispatch.choice_name(table[4096]) == "cutlass:2" and dispatch.choice_name(vtable[4096]) == "cutlass:2"
    assert any("(torch.compile): cutlass:2" in line for line in logs)
