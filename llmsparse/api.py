"""The operations behind the CLI, as plain functions."""
from __future__ import annotations

import time

from .errors import UserError
from .spec import CalibSpec, SparsitySpec


def load(path: str, *, dtype: str | None = None, device: str | None = None, tokenizer: bool = False,
         gguf_file: str | None = None, trust_remote_code: bool = False):
    """Load any model llmsparse can read (HF dir, hub id, GGUF, 'smollm2', packed or sliced
    checkpoints). Returns the model, or ``(model, tokenizer)`` with ``tokenizer=True``.

    With ``device`` a CUDA device, a packed checkpoint's 2:4 fp16/bf16 linears are loaded as
    :class:`llmsparse.kernels.SparseLinear` (fast 2:4 kernels, tuned per shape on first load);
    everywhere else the model holds dense-with-zeros weights."""
    from .models.load import load_model, pick_device

    dev = pick_device(device) if device is not None else None
    m, tok, _ = load_model(path, dtype=dtype, gguf_file=gguf_file, trust_remote_code=trust_remote_code,
                           tokenizer=tokenizer, packed_device=dev)
    if dev is not None:
        m.to(dev)
    return (m, tok) if tokenizer else m


def _method_options(method: str, options: dict) -> dict:
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if method != "dsnot":
        for k in ("init", "max_cycles", "update_threshold", "pow_var_grow", "pow_var_prune", "skip", "accept"):
            opts.pop(k, None)
    return opts


def prune_to_dir(model: str, output: str, *, method: str = "wanda", sparsity: str = "0.5",
                 calib: str = "c4:128x2048", seed: int = 0, ignore=(), grouping: str = "layer",
                 batch_size: int = 8, dtype: str | None = None, device: str | None = None,
                 gguf_file: str | None = None, overwrite: bool = False, json_out: str | None = None,
                 trust_remote_code: bool = False, progress: bool = True, method_options: dict | None = None,
                 eval_tasks: str | None = None, save_format: str = "dense") -> dict:
    """Load ``model``, prune it, write it to ``output``. Every cheap check runs before loading."""
    from .cli.common import RichProgress, console, write_json
    from .models.load import parse_dtype, pick_device, resolve
    from .output import atomic_dir, check_file_output, check_output, make_record, save_model_dir
    from .prune.engine import PruneConfig, prune_model
    from .prune.registry import get_method

    spec = SparsitySpec.parse(sparsity)
    cspec = CalibSpec.parse(calib)
    opts = _method_options(method, method_options or {})
    method_obj = get_method(method, **opts)  # unknown method / bad options fail here
    resolved_opts = method_obj.options() if hasattr(method_obj, "options") else opts
    if grouping not in ("layer", "sequential"):
        raise UserError(f"unknown --grouping '{grouping}'; use layer or sequential")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: give at least 1")
    if save_format not in ("dense", "packed"):
        raise UserError(f"unknown --save-format '{save_format}'; use dense or packed")
    parse_dtype(dtype)
    pick_device(device)
    check_output(output, overwrite)
    if json_out:
        check_file_output(json_out, "--json file")
    tasks = [t.strip() for t in eval_tasks.split(",") if t.strip()] if eval_tasks else []
    if tasks:
        from .eval import lmeval

        lmeval.check_tasks(tasks)
    src = resolve(model, gguf_file)

    from .models.load import load_model

    t0 = time.perf_counter()
    with console.status(f"loading {src}"):
        m, tok, src = load_model(model, dtype=dtype, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
    t_load = time.perf_counter() - t0
    cfg = PruneConfig(method=method, sparsity=spec, calib=cspec, seed=seed, ignore=tuple(ignore),
                      grouping=grouping, batch_size=batch_size, device=device, method_options=opts)
    with RichProgress(enabled=progress) as prog:
        report = prune_model(m, tok, cfg, progress=prog)
    record = make_record(
        "prune",
        source=str(src),
        recipe={"method": method, "sparsity": str(spec), "calib": str(cspec) if method_obj.stats else None,
                "seed": seed, "ignore": list(ignore), "grouping": grouping, "batch_size": batch_size,
                "dtype": report["dtype"], "options": resolved_opts},
        wall_time_s={"load": round(t_load, 3), "prune": report["time_total_s"]},
        result={k: v for k, v in report.items() if k not in ("layers", "method_info")},
        layers=report["layers"],
        method_info=report["method_info"],
    )
    eval_results = None
    if tasks:
        from .eval import lmeval

        eval_results = lmeval.run_tasks(m, tok, tasks)
        record["eval_tasks"] = eval_results
    with console.status(f"writing {output}"):
        with atomic_dir(output, overwrite) as tmp:
            if save_format == "packed":
                try:
                    from .formats import packed
                except ImportError:
                    raise UserError("--save-format packed is not available in this version; use dense") from None
                packed.save_packed(m, tok, tmp, record)
            else:
                save_model_dir(m, tok, tmp, record)
    if json_out:
        write_json(json_out, record)
    _print_prune_summary(record, output)
    return record


def _print_prune_summary(record: dict, output: str) -> None:
    from rich.table import Table

    from .cli.common import out_console

    r = record["result"]
    t = Table(title=f"llmsparse prune → {output}", show_header=True)
    t.add_column("method")
    t.add_column("target")
    t.add_column("measured sparsity", justify="right")
    t.add_column("linears", justify="right")
    t.add_column("prune time (s)", justify="right")
    t.add_row(record["recipe"]["method"], record["recipe"]["sparsity"], f"{r['sparsity_overall']:.4f}",
              str(r["pruned_linears"]), f"{r['time_total_s']:.1f}")
    out_console.print(t)
