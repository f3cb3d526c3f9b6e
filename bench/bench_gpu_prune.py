"""Pruning speed and peak GPU memory on a Llama-2-7B-shaped model (random fp16 weights).

The model is built on the CPU and stays there; the layer-wise engine moves one decoder layer at a
time to the GPU. Calibration is real text (the shipped C4 sample, 128 x 2048 tokens by default)
tokenised by a 32k byte-level BPE trained here on that sample (the shape of Llama-2's vocabulary).

    python bench/bench_gpu_prune.py --methods wanda:2:4,sparsegpt:0.5,dsnot:0.6 --json $OUT/gpu_prune.json
    python bench/bench_gpu_prune.py --tiny --device cpu      # a 2-layer smoke run of the same script
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


def tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmsparse.data import c4_train_docs

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<eos>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(list(c4_train_docs()), tr)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")


def build_model(tiny: bool, vocab: int):
    import transformers as t

    if tiny:
        cfg = t.LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)
    else:  # Llama-2-7B
        cfg = t.LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("meta"):
            m = t.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    m = m.to_empty(device="cpu")
    randomize(m)
    m.model.rotary_emb.__init__(config=cfg)  # its buffers were on meta
    return m.eval()


@torch.no_grad()
def randomize(m):
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # random numbers are far faster on the GPU
    g = torch.Generator(device=dev).manual_seed(0)
    for n, p in m.named_parameters():
        if p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g, device=dev, dtype=p.dtype).mul_(0.02))
        else:
            p.fill_(1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="wanda:2:4,sparsegpt:0.5,dsnot:0.6")
    ap.add_argument("--calib", default="c4:128x2048")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--slice", type=float, default=None, help="also time SliceGPT at this ratio")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from llmsparse.prune.engine import PruneConfig, prune_model
    from llmsparse.spec import SparsitySpec

    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "calib": args.calib, "runs": []}
    t = time.perf_counter()
    tok = tokenizer(32000 if not args.tiny else 2000)
    results["tokenizer_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = build_model(args.tiny, len(tok))
    results["build_s"] = time.perf_counter() - t
    results["params"] = sum(p.numel() for p in model.parameters())
    print(f"model {results['params']/1e9:.2f}B params built in {results['build_s']:.0f}s", flush=True)

    def save():
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)

    for item in args.methods.split(","):
        if not item:
            continue
        method, sp = item.split(":", 1)
        randomize(model)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        rep = prune_model(model, tok, PruneConfig(method=method, sparsity=SparsitySpec.parse(sp), calib=args.calib,
                                                  device=args.device, method_options={"init": "wanda"} if method == "dsnot" else {}))
        wall = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        r = {"method": method, "sparsity": sp, "wall_s": round(wall, 2), "peak_gpu_gib": peak,
             "measured_sparsity": rep["sparsity_overall"], "cache_device": rep.get("cache_device"),
             "layers_s": rep["time_layers_s"]}
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
        save()
    if args.slice is not None:
        from llmsparse.data import calibration_batches
        from llmsparse.slicing.slicegpt import slice_model

        randomize(model)
        ids = calibration_batches(tok, args.calib, seed=0)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        info = slice_model(model, ids, args.slice, device=args.device)
        wall = time.perf_counter() - t
        r = {"method": "slicegpt", "ratio": args.slice, "wall_s": round(wall, 2),
             "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
             "info": {k: v for k, v in info.items() if isinstance(v, (int, float, str))}}
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
