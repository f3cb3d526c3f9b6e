"""``llmsparse bench``: dense vs 2:4 speed, per GEMM shape and end to end."""
from __future__ import annotations

from typing import Optional

import typer

HELP = """Measure how much faster 2:4 sparsity makes inference on this GPU.

Per shape (OUTxIN of nn.Linear weights) and token count M: dense cuBLAS F.linear vs ours (the dispatcher's measured pick among the Gluon and Triton 2:4 kernels, cuSPARSELt and dense) vs PyTorch's stock to_sparse_semi_structured + F.linear; CUDA-graph replays, median; relative error of every output against dense-with-zeros F.linear on fresh random inputs. With MODEL: end-to-end prefill and batch-1 decode tokens/s, dense (with zeros) vs sparsified, both captured in CUDA graphs (and, with --compile, both torch.compile-d). 2:4 means at most 2 nonzeros in every 4 consecutive weights along the input dimension (NVIDIA's convention). Needs a CUDA GPU.

MODEL is a Hugging Face directory or hub id, or random:llama2-7b / random:llama2-70b for a model of that shape with random weights (no download). Its decoder linears are pruned 2:4 by magnitude first unless they already are (--no-prune refuses instead).

Examples:

  llmsparse bench                                     # Llama-2-7B GEMM shapes, fp16+bf16

  llmsparse bench --shapes llama2-7b,llama2-70b --m 1,16,4096 --dtype fp16

  llmsparse bench --shapes llama2-7b --m 1,16 --no-mo-storage       # layers keep the row-major packed pair
  llmsparse bench --shapes llama2-7b --m 1,16 --mo-storage-order 1  # the M = 1 kernels' copy (default: 2)
  llmsparse bench --shapes llama2-70b --m 1,16 --mma-order          # a second copy beside the pair

  llmsparse bench --shapes 11008x4096 --json gemm.json --plot gemm.png --overwrite

  llmsparse bench random:llama2-7b --prompt-len 4096 --gen-tokens 128

  llmsparse bench random:llama2-7b --dtype bf16 --compile layers   # both sides torch.compile-d too

  llmsparse bench ./my-2of4-model --no-prune --dtype bf16
"""


def register(app: typer.Typer) -> None:
    app.command("bench", help=HELP)(bench)


def _ints(spec: str, what: str) -> list[int]:
    from ..errors import UserError

    try:
        vals = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{what} must be comma-separated integers, got {spec!r}")
    if not vals or min(vals) < 1:
        raise UserError(f"--{what} needs positive integers, got {spec!r}")
    return vals


def bench(
    model: Optional[str] = typer.Argument(None, help="HF directory/hub id, or random:llama2-7b | random:llama2-70b."),
    shapes: Optional[str] = typer.Option(None, "--shapes", help="GEMM shapes: OUTxIN list and/or llama2-7b, llama2-70b. "
                                         "Default: llama2-7b without MODEL, none with MODEL."),
    m: str = typer.Option("1,16,128,1024,4096,16384", "--m", help="Token counts M for the GEMM table."),
    dtype: str = typer.Option("fp16,bf16", "--dtype", help="fp16 and/or bf16 (the model runs in the first)."),
    prompt_len: int = typer.Option(4096, "--prompt-len", help="Prefill length for the end-to-end prefill timing."),
    gen_tokens: int = typer.Option(128, "--gen-tokens", help="Tokens generated per sequence for decode tokens/s."),
    batch: int = typer.Option(1, "--batch", help="Sequences decoded together (M = batch rows per linear); tokens/s "
                              "count all of them. The prefill timing stays one sequence."),
    decode_prompt: int = typer.Option(32, "--decode-prompt", help="Prompt length before decoding."),
    layers: Optional[int] = typer.Option(None, "--layers", help="random:* models only: number of decoder layers."),
    graphs: bool = typer.Option(True, "--graphs/--no-graphs", help="Capture CUDA graphs (same for dense and 2:4)."),
    compile: str = typer.Option("none", "--compile", help="End to end: also torch.compile both sides, each decoder "
                                "layer ('layers') or the whole forward ('model'); 'none' (default)."),
    prefill_attention: str = typer.Option("causal", "--prefill-attention", help="End to end: the prefill's attention, "
                                          "'causal' (SDPA's causal flag, no mask: its flash/cuDNN kernels, as serving "
                                          "stacks run a prefill) or 'mask' (an explicit boolean causal mask)."),
    interleave: int = typer.Option(0, "--interleave", help="End to end, with graphs: also replay the dense and the "
                                   "2:4 prefill graphs in turn for this many rounds (medians; the dense graph and "
                                   "weights are held across the swap: about the dense weights' memory more)."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Prune 2:4 by magnitude when the model is not 2:4."),
    stock: bool = typer.Option(True, "--stock/--no-stock", help="Also time PyTorch's stock 2:4 path."),
    min_speedup: float = typer.Option(1.05, "--min-speedup", help="A sparse path must beat dense by this factor (the dispatcher's default)."),
    paths: Optional[str] = typer.Option(None, "--paths", help="Kernel families the dispatcher measures, comma-separated "
                                        "(default gemvg,mmsp,gemv,mmg,cslt,cutlass -- cutlass only where its library is built; "
                                        "mm and mmb may be added)."),
    mma_order: Optional[bool] = typer.Option(None, "--mma-order/--no-mma-order", help="Also measure mmsp on a second "
                                             "copy of the weights in MMA operand order (faster at M = 2-16, more "
                                             "memory: each layer that picks it holds the copy; turns MO storage off). "
                                             "Default: LLMSPARSE_MMSP_MO=1 turns it on."),
    mo_storage: Optional[bool] = typer.Option(None, "--mo-storage/--no-mo-storage", help="Layers hold only the copy "
                                              "of the weights in MMA operand order and are tuned over what it runs "
                                              "(MO mmsp, cuSPARSELt, dense): MO without the memory. Default: on "
                                              "(on Hopper GPUs, with mmsp among --paths); LLMSPARSE_MMSP_MO=0 "
                                              "turns it off."),
    mo_storage_order: Optional[int] = typer.Option(None, "--mo-storage-order", help="Which copy MO storage holds: 1 "
                                                   "(the M = 1 kernels' order) or 2 (the M = 2-16 XL kernels' order); "
                                                   "implies --mo-storage. Default: 2 (LLMSPARSE_MMSP_MO=compact1 "
                                                   "for 1)."),
    json_path: str = typer.Option("bench-results.json", "--json", help="Where to write all numbers (JSON)."),
    plot: Optional[str] = typer.Option("bench-speedup.png", "--plot", help="PNG of speedup vs M ('' for none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --json/--plot files."),
) -> None:
    import os
    import sys

    from ..errors import UserError

    ms = _ints(m, "m")
    if batch < 1 or gen_tokens < 1 or decode_prompt < 1 or prompt_len < 1:
        raise UserError("--batch, --gen-tokens, --decode-prompt and --prompt-len must be >= 1")
    if interleave < 0:
        raise UserError(f"--interleave must be a number of rounds >= 0, got {interleave}")
    from ..kernels.benchmark import COMPILE_MODES, PREFILL_ATTENTION

    if compile not in COMPILE_MODES:
        raise UserError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    if prefill_attention not in PREFILL_ATTENTION:
        raise UserError(f"--prefill-attention must be one of {', '.join(PREFILL_ATTENTION)}, got {prefill_attention!r}")
    path_list = None
    if paths is not None:
        from ..kernels.dispatch import check_paths

        try:
            path_list = check_paths([p.strip() for p in paths.split(",") if p.strip()])
        except ValueError as e:
            raise UserError(f"--paths: {e}")
    if mo_storage_order is not None and (mo_storage_order not in (1, 2) or mo_storage is False):
        raise UserError("--mo-storage-order must be 1 or 2, and goes with --mo-storage (not --no-mo-storage)")
    if mma_order and (mo_storage or mo_storage_order is not None):
        raise UserError("--mma-order (a second copy beside the packed pair) and --mo-storage (the copy instead of "
                        "it) exclude each other")
    from ..output import check_file_output

    for p, what in [(json_path, "--json file")] + ([(plot, "--plot file")] if plot else []):
        check_file_output(p, what)
        if os.path.exists(p) and not overwrite:
            raise UserError(f"{p} exists; pass --overwrite or choose another --json/--plot path")

    import torch

    if not torch.cuda.is_available():
        raise UserError("llmsparse bench needs a CUDA GPU and none is visible here; run it on a machine with one "
                        "(on CPU, SparseLinear falls back to dense-with-zeros and there is nothing to time)")
    if model is not None and not model.startswith("random:") and prefill_attention == "causal":
        _check_no_short_window(model, prompt_len)
    from rich.table import Table

    from ..kernels import benchmark as B
    from .common import console, write_json

    dtypes = []
    for d in [d.strip() for d in dtype.split(",") if d.strip()]:
        if d not in B.DTYPES:
            raise UserError(f"--dtype {d!r} is not one of fp16, bf16")
        dtypes.append(B.DTYPES[d])
    if shapes is None and model is None:
        shapes = "llama2-7b"
    try:
        shape_list = B.parse_shapes(shapes) if shapes else []
    except ValueError as e:
        raise UserError(str(e))
    for (o, i) in shape_list:
        if i % 8:
            raise UserError(f"shape {o}x{i}: the input width must be a multiple of 8 for 2:4 kernels")

    from ..kernels import gluon_mmsp

    if mma_order is not None:
        gluon_mmsp.MO_TUNING = int(mma_order)
        if mma_order and mo_storage is None:  # the second-copy mode: layers keep the packed pair (MO storage off)
            gluon_mmsp.MO_STORAGE = 0
    if mo_storage_order is not None:
        gluon_mmsp.MO_STORAGE = mo_storage_order
    elif mo_storage is not None:
        gluon_mmsp.MO_STORAGE = gluon_mmsp.MO_STORAGE_ORDER if mo_storage else 0
    log = lambda s: console.print(s, highlight=False)  # noqa: E731
    result = {"env": B.env_info(), "command": "llmsparse " + " ".join(sys.argv[1:]), "gemm": [], "e2e": None}
    console.print(f"[bold]{result['env'].get('gpu')}[/] torch {torch.__version__} triton {result['env'].get('triton')} "
                  f"cuSPARSELt {result['env'].get('cusparselt')}")
    if gluon_mmsp.MO_STORAGE:  # the results record what the layers hold here, not just the setting
        from ..kernels.dispatch import DEFAULT_PATHS

        if not gluon_mmsp.mo_storage_applies("cuda", path_list or DEFAULT_PATHS):
            result["env"].setdefault("kernel_settings", {})["mo_storage"] = 0
            if mo_storage or mo_storage_order is not None:
                console.print("[yellow]MO storage does not apply here (it needs a GPU of compute capability 9.x, "
                              "Gluon's mmsp kernels and mmsp among --paths): layers keep the row-major pair[/]")

    if shape_list:
        rows = B.gemm_bench(shape_list, ms, dtypes, stock=stock, min_speedup=min_speedup, log=log, paths=path_list)
        result["gemm"] = rows
        t = Table(title=f"2:4 GEMM on {result['env'].get('gpu')} (us per call, CUDA-graph replays, median)")
        for c in ("dtype", "out x in", "M", "dense", "ours", "path", "speedup", "compiled x", "stock", "stock x", "err"):
            t.add_column(c, justify="right")
        for r in rows:
            # compiled x: the speedup under torch.compile with for_compile, where it differs (the view table)
            t.add_row(r["dtype"], f"{r['out']}x{r['inp']}", str(r["M"]), B.fmt_us(r["dense_ms"]), B.fmt_us(r["ours_ms"]),
                      r["path"], f"{r['speedup']:.2f}", f"{r['view_speedup']:.2f}" if r.get("view_speedup") else "=",
                      B.fmt_us(r.get("stock_ms")),
                      f"{r['stock_speedup']:.2f}" if r.get("stock_speedup") else "-", f"{r['err_vs_dense']:.1e}")
        console.print(t)

    if model is not None:
        if model.startswith("random:"):
            shape = model.split(":", 1)[1]
            if shape not in B.LLAMA_SHAPES:
                raise UserError(f"unknown random model {shape!r}; use one of {sorted(B.LLAMA_SHAPES)}")
            mdl = B.build_llama(shape, dtypes[0], "cuda", layers)
        else:
            from transformers import AutoModelForCausalLM

            try:
                mdl = AutoModelForCausalLM.from_pretrained(model, dtype=dtypes[0], trust_remote_code=False).cuda().eval()
            except OSError as e:
                raise UserError(f"cannot load model {model!r}: {str(e).splitlines()[0]}")
        if compile == "layers" and B.decoder_layers(mdl) is None:
            raise UserError(f"--compile layers needs the decoder layers at model.model.layers, which {model!r} "
                            "does not have; use --compile model")
        from ..kernels import is_24

        lins = [(n, mod) for n, mod in mdl.named_modules() if isinstance(mod, torch.nn.Linear) and "lm_head" not in n]
        not24 = [n for n, mod in lins if not is_24(mod.weight)]
        if not24:
            pass
        elif prune:
            log(f"pruning {B.prune_24_(mdl)} linear layers 2:4 by magnitude (the model was not 2:4)")
        else:
            raise UserError(f"{len(not24)} linear layers (e.g. {not24[0]}) are not 2:4; prune first or drop --no-prune")
        res = B.e2e_bench(mdl, prompt_len=prompt_len, gen=gen_tokens, decode_prompt=decode_prompt, graphs=graphs,
                          compile=compile, min_speedup=min_speedup, log=log, paths=path_list, batch=batch,
                          prefill_attention=prefill_attention, interleave=interleave)
        res["model"] = model
        result["e2e"] = res
        treat = ("CUDA graphs" if res["graphs"] else "eager") + ("" if compile == "none" else f" + torch.compile ({compile})")
        treat += f"; prefill attention {prefill_attention}"
        t = Table(title=f"end to end, {model}, decode batch {batch}, {treat}")
        for c in ("", "dense", "2:4", "speedup"):
            t.add_column(c, justify="right")
        t.add_row(f"prefill {prompt_len} tok (ms)", f"{res['dense_prefill_ms']:.2f}", f"{res['sparse_prefill_ms']:.2f}",
                  f"{res['prefill_speedup']:.2f}")
        if res.get("prefill_interleaved"):
            pi = res["prefill_interleaved"]
            t.add_row(f"prefill, in turn x{pi['rounds']} (ms)", f"{pi['dense_ms']:.2f}", f"{pi['sparse_ms']:.2f}",
                      f"{pi['speedup']:.2f}")
        t.add_row(f"decode {gen_tokens} tok (tok/s)", f"{res['dense_decode_tok_s']:.1f}",
                  f"{res['sparse_decode_tok_s']:.1f}", f"{res['decode_speedup']:.2f}")
        console.print(t)
        if res.get("interleave_error"):
            console.print(f"interleaved prefill not measured: {res['interleave_error']}")
        console.print(f"logits rel err {res['logits_rel_err']:.2e}; greedy tokens equal {res['greedy_tokens_match']:.0%}")
        console.print(f"swapped linears on the GPU: {res['sparse_linear_bytes'] / 2**30:.2f} GiB (packed weights and the "
                      f"forms the chosen kernels need) against {res['dense_linear_bytes'] / 2**30:.2f} GiB dense")

    from ..kernels import dispatch

    result["tuning"] = dispatch.records_json()  # every candidate the dispatcher timed, per shape and M
    write_json(json_path, result)
    console.print(f"wrote {json_path}")
    if plot and result["gemm"]:
        os.makedirs(os.path.dirname(os.path.abspath(plot)), exist_ok=True)
        tmp = f"{plot}.tmp-{os.getpid()}.png"
        B.plot_speedups(result["gemm"], tmp)
        os.replace(tmp, plot)
        console.print(f"wrote {plot}")


def _check_no_short_window(model: str, prompt_len: int) -> None:
    """The causal prefill (SDPA's causal flag) has no sliding window: refuse, before any GPU work, a model whose
    config asks for one shorter than the prompt (a config that cannot be read is left to the model load)."""
    from ..errors import UserError

    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - reported by the model load itself
        return
    cfg = getattr(cfg, "text_config", None) or cfg
    window = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False:
        window = None
    if isinstance(window, int) and window < prompt_len:
        raise UserError(f"{model!r} attends over a sliding window of {window} tokens, shorter than --prompt-len "
                        f"{prompt_len}: use --prefill-attention mask")
