"""Perplexity over non-overlapping windows, as the SparseGPT / Wanda reference code computes it.

The text is tokenised once without special tokens, cut into ``len // seqlen`` windows of
``seqlen`` tokens (the tail is dropped), optionally the first ``limit`` of them. Each window's
loss is the mean cross-entropy over its ``seqlen - 1`` shifted positions; the perplexity is
``exp`` of the mean of the window losses.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError


def tokenize_stream(tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def window_losses(model, ids: torch.Tensor, seqlen: int, *, limit: int | None = None,
                  batch_size: int = 4, device=None, progress=None) -> torch.Tensor:
    nwin = ids.numel() // seqlen
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit {limit}: give at least 1 window")
        nwin = min(nwin, limit)
    if nwin == 0:
        raise UserError(f"the text has {ids.numel()} tokens, fewer than one window of {seqlen}; use a smaller --seqlen")
    device = device or next(model.parameters()).device
    windows = ids[: nwin * seqlen].view(nwin, seqlen)
    losses = []
    for s in range(0, nwin, batch_size):
        x = windows[s : s + batch_size].to(device)
        logits = model(input_ids=x, use_cache=False).logits
        lp = logits[:, :-1].float()
        tgt = x[:, 1:]
        ce = F.cross_entropy(lp.reshape(-1, lp.shape[-1]), tgt.reshape(-1), reduction="none")
        losses.append(ce.view(x.shape[0], -1).mean(1).cpu())
        if progress is not None:
            progress(x.shape[0])
    return torch.cat(losses).double()


def perplexity(model, tokenizer, text: str, seqlen: int, *, limit: int | None = None,
               batch_size: int = 4, device=None, progress=None) -> dict:
    ctx = getattr(model.config, "max_position_embeddings", None)
    if ctx is not None and seqlen > ctx:
        raise UserError(f"--seqlen {seqlen} exceeds the model's context of {ctx} tokens")
    ids = tokenize_stream(tokenizer, text)
    wl = window_losses(model, ids, seqlen, limit=limit, batch_size=batch_size, device=device, progress=progress)
    return {
        "ppl": math.exp(float(wl.mean())),
        "windows": int(wl.numel()),
        "seqlen": seqlen,
        "tokens_in_text": int(ids.numel()),
    }
