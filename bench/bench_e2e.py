"""End-to-end dense vs 2:4: a Llama-shaped model with random weights, 2:4 on every decoder linear.

    python bench/bench_e2e.py --shape llama2-7b --prompt-len 4096 --gen 128 --out out/e2e

Prefill of --prompt-len tokens and greedy decode of --gen tokens for --batch sequences (static KV cache), each
forward captured in a CUDA graph on both sides; with --compile layers, each decoder layer is also
torch.compile-d on both sides. Writes OUT/e2e.json. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from llmsparse.kernels.benchmark import COMPILE_MODES


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--prompt-len", type=int, default=4096)
    ap.add_argument("--decode-prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1, help="sequences decoded together (M = batch per linear)")
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--compile", default="none", choices=COMPILE_MODES,
                    help="torch.compile both sides: each decoder layer ('layers') or the whole forward")
    ap.add_argument("--prefill-attention", default="causal", choices=("causal", "mask"),
                    help="prefill attention: SDPA's causal flag without a mask (flash/cuDNN kernels; default) or an "
                         "explicit boolean causal mask (as measured up to the nineteenth session)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also profile one eager prefill per side: GPU time by kernel category (attention, sparse "
                         "GEMM, dense GEMM, other)")
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="with graphs, also replay the dense and the 2:4 prefill graphs in turn for ROUNDS rounds "
                         "(the dense graph and weights held across the swap: about the dense weights' memory more)")
    ap.add_argument("--out", default="out/e2e")
    a = ap.parse_args()
    if min(a.batch, a.gen, a.prompt_len, a.decode_prompt) < 1 or a.interleave < 0:
        print("--batch, --gen, --prompt-len and --decode-prompt must be >= 1, --interleave >= 0", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.kernels import benchmark as B

    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    model = B.build_llama(a.shape, B.DTYPES[a.dtype], "cuda", a.layers)
    n = B.prune_24_(model)
    print(f"built {a.shape} ({a.layers or 'all'} layers), pruned {n} linears 2:4 in {time.time() - t0:.1f} s", flush=True)
    res = B.e2e_bench(model, prompt_len=a.prompt_len, gen=a.gen, decode_prompt=a.decode_prompt,
                      graphs=not a.no_graphs, compile=a.compile, log=lambda s: print(s, flush=True), batch=a.batch,
                      prefill_attention=a.prefill_attention, breakdown=a.breakdown,
                      interleave=a.interleave)
    from llmsparse.kernels import dispatch

    res.update(model=f"random {a.shape}", layers=a.layers, dtype=a.dtype, env=B.env_info(),
               command="python " + " ".join(sys.argv), seconds=time.time() - t0,
               tuning=dispatch.records_json())  # every candidate timed per shape and M (speedups per layer)
    with open(os.path.join(a.out, "e2e.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(f"\n{res['env'].get('gpu')} torch {torch.__version__}; graphs={res['graphs']}; compile={a.compile}; "
          f"prefill attention {a.prefill_attention}")
    print(f"prefill {a.prompt_len}: dense {res['dense_prefill_ms']:.2f} ms, 2:4 {res['sparse_prefill_ms']:.2f} ms, "
          f"{res['prefill_speedup']:.2f}x (dense: mean of the passes before and after)")
    if res.get("prefill_interleaved"):
        pi = res["prefill_interleaved"]
        print(f"prefill {a.prompt_len}, graphs in turn ({pi['rounds']} rounds, medians): dense {pi['dense_ms']:.2f} ms, "
              f"2:4 {pi['sparse_ms']:.2f} ms, {pi['speedup']:.2f}x")
    elif res.get("interleave_error"):
        print(f"interleaved prefill failed: {res['interleave_error']}")
    print(f"decode {a.gen} tok x batch {a.batch}: dense {res['dense_decode_tok_s']:.1f} tok/s, 2:4 {res['sparse_decode_tok_s']:.1f} tok/s, "
          f"{res['decode_speedup']:.2f}x; logits rel err {res['logits_rel_err']:.2e}; "
          f"greedy match {res['greedy_tokens_match']:.0%}")
    print(f"decoder linears: 2:4 {res['sparse_linear_bytes'] / 1e9:.2f} GB (packed and derived forms) vs dense "
          f"{res['dense_linear_bytes'] / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
