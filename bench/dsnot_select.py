"""Choose DSnoT settings on held-out data, not on the test set: prune SmolLM2 with the P-smol
calibration (C4 train, 64 x 512, seed 0) and score each configuration by perplexity on C4
*validation* (first --windows windows of 512 tokens), which P-smol does not use. The chosen
configuration is then measured once under P-smol (WikiText-2 test) with bench_psmol.py.

    python bench/dsnot_select.py --json bench/results/dsnot_select.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch

from _common import machine  # noqa: E402

CONFIGS = [  # (name, method, sparsity, options)
    ("wanda", "wanda", "2:4", {}),
    ("dsnot skip=mlp (q,k,v,o refined)", "dsnot", "2:4", {"skip": "mlp"}),
    ("dsnot skip=mlp,v_proj (q,k,o)", "dsnot", "2:4", {"skip": "mlp,v_proj"}),
    ("dsnot skip=mlp,q_proj,k_proj,v_proj (o)", "dsnot", "2:4", {"skip": "mlp,q_proj,k_proj,v_proj"}),
    ("dsnot skip=mlp,v_proj,o_proj (q,k)", "dsnot", "2:4", {"skip": "mlp,v_proj,o_proj"}),
    ("dsnot skip=mlp max_cycles=10", "dsnot", "2:4", {"skip": "mlp", "max_cycles": 10}),
    ("dsnot skip=mlp pow_var_grow=0", "dsnot", "2:4", {"skip": "mlp", "pow_var_grow": 0.0}),
    ("wanda", "wanda", "0.6", {}),
    ("dsnot skip=mlp (q,k,v,o refined)", "dsnot", "0.6", {"skip": "mlp"}),
    ("dsnot skip=mlp,v_proj (q,k,o)", "dsnot", "0.6", {"skip": "mlp,v_proj"}),
    ("dsnot skip=mlp,q_proj,k_proj,v_proj (o)", "dsnot", "0.6", {"skip": "mlp,q_proj,k_proj,v_proj"}),
    # second round, after max_cycles=10 came out best at 2:4
    ("dsnot skip=mlp max_cycles=5", "dsnot", "2:4", {"skip": "mlp", "max_cycles": 5}),
    ("dsnot skip=mlp max_cycles=20", "dsnot", "2:4", {"skip": "mlp", "max_cycles": 20}),
    ("dsnot skip=mlp max_cycles=10", "dsnot", "0.6", {"skip": "mlp", "max_cycles": 10}),
    ("dsnot skip=mlp max_cycles=5", "dsnot", "0.6", {"skip": "mlp", "max_cycles": 5}),
    ("dsnot skip=mlp max_cycles=3", "dsnot", "2:4", {"skip": "mlp", "max_cycles": 3}),
    ("dsnot skip=none max_cycles=10", "dsnot", "2:4", {"skip": "none", "max_cycles": 10}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--only", default=None, help="comma list of config indices")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from llmsparse.data import c4_validation_text
    from llmsparse.eval.perplexity import perplexity
    from llmsparse.models.load import load_model
    from llmsparse.prune.engine import PruneConfig, prune_model
    from llmsparse.spec import SparsitySpec

    torch.set_grad_enabled(False)
    base, tok, _ = load_model("smollm2", dtype="float32")
    text = c4_validation_text()
    rows = []
    idx = [int(i) for i in args.only.split(",")] if args.only else range(len(CONFIGS))
    for i in idx:
        name, method, sp, opts = CONFIGS[i]
        m = copy.deepcopy(base)
        t = time.perf_counter()
        prune_model(m, tok, PruneConfig(method=method, sparsity=SparsitySpec.parse(sp), calib="c4:64x512", seed=0,
                                        device="cpu", method_options=opts))
        tp = time.perf_counter() - t
        ppl = perplexity(m, tok, text, 512, limit=args.windows, batch_size=4, device=torch.device("cpu"))["ppl"]
        rows.append({"name": name, "method": method, "sparsity": sp, "options": opts, "c4_val_ppl": ppl, "prune_s": tp})
        print(f"{sp:>4} {name:45s} c4-val ppl {ppl:9.3f}  (prune {tp:.0f}s)", flush=True)
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"selection_set": f"C4 validation, first {args.windows} x 512", "calib": "c4:64x512 seed 0",
                           "machine": machine(), "rows": rows}, f, indent=2)
        del m


if __name__ == "__main__":
    main()
