"""Recipes: a whole pipeline in one YAML file, run by ``llmsparse run``.

```yaml
model: smollm2
output: out/smollm2-wanda-dsnot-2of4
seed: 0
calib: c4:64x512          # default for every step
steps:
  - method: wanda
    sparsity: "2:4"
  - method: dsnot         # DSnoT as a step after any pruner: refine the zeros already there
    init: existing
    sparsity: "2:4"
eval:                     # optional: perplexity of the result (and of the dense model)
  ppl: wikitext2
  seqlen: 512
  limit: 128
```

Values resolve in one place: ``key=value`` on the command line > the recipe > the defaults.
The recipe as run (overrides applied) is written next to the output as ``recipe.yaml`` and
inside ``llmsparse.json``.
"""
from __future__ import annotations

import time
from pathlib import Path

from .errors import UserError

TOP_KEYS = {"model", "output", "seed", "calib", "dtype", "device", "batch_size", "grouping", "ignore", "steps",
            "eval", "overwrite", "save_format"}
STEP_KEYS = {"method", "sparsity", "calib", "grouping", "ignore", "init", "max_cycles", "update_threshold",
             "pow_var_grow", "pow_var_prune", "skip", "accept", "blocksize", "percdamp"}
DEFAULTS = {"seed": 0, "calib": "c4:128x2048", "batch_size": 8, "grouping": "layer", "ignore": [],
            "overwrite": False, "save_format": "dense"}


def _coerce(v: str):
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def load_recipe(path: str, overrides: list[str] = ()) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"recipe {path} not found")
    try:
        r = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(r, dict):
        raise UserError(f"recipe {path} must be a mapping with 'model', 'output' and 'steps'")
    for ov in overrides:
        if "=" not in ov:
            raise UserError(f"override '{ov}' must look like key=value (e.g. output=out/x)")
        k, v = ov.split("=", 1)
        r[k.strip()] = _coerce(v) if k.strip() not in ("calib", "model", "output") else v
    unknown = set(r) - TOP_KEYS
    if unknown:
        raise UserError(f"recipe key(s) {', '.join(sorted(unknown))} unknown; known: {', '.join(sorted(TOP_KEYS))}")
    for k in ("model", "output", "steps"):
        if not r.get(k):
            raise UserError(f"recipe {path} needs '{k}'")
    if not isinstance(r["steps"], list):
        raise UserError("recipe 'steps' must be a list of {method: ..., sparsity: ...}")
    for i, st in enumerate(r["steps"]):
        if not isinstance(st, dict) or "method" not in st:
            raise UserError(f"recipe step {i + 1} needs a 'method'")
        bad = set(st) - STEP_KEYS
        if bad:
            raise UserError(f"recipe step {i + 1}: unknown key(s) {', '.join(sorted(bad))}")
    return {**DEFAULTS, **r}


def run_recipe(path: str, overrides: list[str] = (), progress: bool = True) -> dict:
    import yaml

    from .cli.common import RichProgress, console, out_console
    from .models.load import load_model, resolve
    from .output import atomic_dir, check_output, make_record, save_model_dir
    from .prune.engine import PruneConfig, prune_model
    from .prune.registry import get_method
    from .spec import CalibSpec, SparsitySpec

    r = load_recipe(path, overrides)
    # validate every step before loading anything
    configs = []
    for st in r["steps"]:
        opts = {k: v for k, v in st.items() if k not in ("method", "sparsity", "calib", "grouping", "ignore")}
        get_method(st["method"], **opts)
        configs.append(PruneConfig(
            method=st["method"], sparsity=SparsitySpec.parse(str(st.get("sparsity", "0.5"))),
            calib=CalibSpec.parse(str(st.get("calib", r["calib"]))), seed=int(r["seed"]),
            ignore=tuple(st.get("ignore", r["ignore"]) or ()), grouping=st.get("grouping", r["grouping"]),
            batch_size=int(r["batch_size"]), device=r.get("device"), method_options=opts))
    check_output(r["output"], bool(r["overwrite"]))
    resolve(str(r["model"]))
    t0 = time.perf_counter()
    with console.status(f"loading {r['model']}"):
        m, tok, src = load_model(str(r["model"]), dtype=r.get("dtype"))
    reports = []
    if any(c.method == "dsnot" and c.method_options.get("init") == "existing" for c in configs):
        # DSnoT after another pruner needs the weights as they were before any pruning
        from .models.adapters import get_adapter

        ad = get_adapter(m)
        dense = {f"{ad.layers_path}.{i}.{n}": lin.weight.detach().clone()
                 for i, layer in enumerate(ad.layers(m)) for n, lin in ad.linears(layer).items()}
        for c in configs:
            if c.method == "dsnot":
                c.method_options["dense"] = dense
    with RichProgress(enabled=progress) as prog:
        for cfg in configs:
            rep = prune_model(m, tok, cfg, progress=prog)
            reports.append({"method": cfg.method, "sparsity": str(cfg.sparsity),
                            **{k: v for k, v in rep.items() if k not in ("layers", "method_info")},
                            "method_info": rep["method_info"]})
    for c in configs:
        c.method_options.pop("dense", None)
    record = make_record("recipe", source=str(src), recipe=r, steps=reports, layers=rep["layers"],
                         wall_time_s=round(time.perf_counter() - t0, 3))
    with atomic_dir(r["output"], bool(r["overwrite"])) as tmp:
        if r.get("save_format") == "packed":
            from .formats import packed

            packed.save_packed(m, tok, tmp, record)
        else:
            save_model_dir(m, tok, tmp, record)
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(r, sort_keys=False))
    out_console.print(f"[bold]recipe done[/]: {len(configs)} step(s) → {r['output']} "
                      f"(sparsity {reports[-1]['sparsity_overall']:.4f})")
    if r.get("eval"):
        from .eval.run import evaluate_models

        ev = r["eval"]
        evaluate_models([str(r["model"]), str(r["output"])], ppl=ev.get("ppl"), tasks=ev.get("tasks"),
                        seqlen=int(ev.get("seqlen", 2048)), limit=ev.get("limit"), output=str(r["output"]),
                        progress=progress)
    return record
