"""Cost of projecting the vocabulary side of the DENSE SmolLM2 onto k = 432 of 576 directions.

Why `--vocab slice` uses a joint basis: the embedding output (layer-0 input) and/or the final
norm's output (the head's input, scale included) are projected onto a k-dimensional subspace with
hooks, and WikiText-2 perplexity is measured (P-smol calibration for the covariances, first
--windows windows of 512). Bases: Qe = PCA of the embedding signal, Qy = PCA of the head input,
Qj = PCA of Ce/tr Ce + Cy/tr Cy (what llmsparse uses), Qa = the same with weight a on Ce.

    python bench/slice_vocab_probe.py --json bench/results/slice_vocab_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slice import calib_p_smol, load_smollm2, perplexity, wikitext_ids  # noqa: E402

from llmsparse.slicing.pca import pca_basis  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=432)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--json", default="bench/results/slice_vocab_probe.json")
    args = ap.parse_args()
    m, tok = load_smollm2()
    calib = calib_p_smol(tok, 64, 512, 0)
    wiki = wikitext_ids(tok)
    d = m.config.hidden_size
    E = m.model.embed_tokens.weight.data.double()
    Ce = torch.zeros(d, d, dtype=torch.float64)
    Cy = torch.zeros_like(Ce)
    with torch.no_grad():
        for i in range(0, calib.shape[0], 8):
            y = m.model(calib[i:i + 8], use_cache=False).last_hidden_state.double().reshape(-1, d)
            e = E[calib[i:i + 8].reshape(-1)]
            Ce += e.T @ e
            Cy += y.T @ y
    k = args.k
    Qe, Qy = pca_basis(Ce)[1][:, :k], pca_basis(Cy)[1][:, :k]

    def joint(a):
        return pca_basis(a * Ce / Ce.trace() + (1 - a) * Cy / Cy.trace())[1][:, :k]

    state: dict = {}

    def hook(key):
        def f(_mod, _inp, out):
            P = state.get(key)
            return out if P is None else (out.double() @ P @ P.T).to(out.dtype)
        return f

    m.model.embed_tokens.register_forward_hook(hook("emb"))
    m.model.norm.register_forward_hook(hook("head"))
    Qj = joint(0.5)
    cases = [("dense", None, None), ("emb Qe", Qe, None), ("emb Qj", Qj, None), ("emb Qy", Qy, None),
             ("head Qy", None, Qy), ("head Qj", None, Qj), ("both Qe", Qe, Qe), ("both Qy", Qy, Qy),
             ("both Qj", Qj, Qj), ("both Qa a=0.25", joint(0.25), joint(0.25)),
             ("both Qa a=0.75", joint(0.75), joint(0.75)), ("emb Qe, head Qy (untied)", Qe, Qy)]
    res = {"k": k, "d": d, "windows": args.windows, "ppl": {}}
    for name, pe, ph in cases:
        state["emb"], state["head"] = pe, ph
        res["ppl"][name] = perplexity(m, wiki, 512, args.windows)
        print(f"{name:28s} {res['ppl'][name]:.3f}", flush=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
