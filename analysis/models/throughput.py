"""How a model's training cost grows with sequence length (chapter 02's scaling figure)."""
from __future__ import annotations

import time

import numpy as np
import torch


def throughput(model, lengths, batch: int = 1, vocab: int | None = None, repeats: int = 1) -> list[dict]:
    """Tokens per second of one forward+backward pass at each sequence length (median of
    ``repeats`` timed runs, after one untimed warm-up run at the shortest length)."""
    vocab = vocab or model.config.vocab_size
    model.train()

    def step(L):
        ids = torch.randint(5, vocab, (batch, L))                    # [batch, L]
        t = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(min(lengths))
    rows = []
    for L in lengths:
        sec = float(np.median([step(L) for _ in range(repeats)]))
        rows.append({"length": L, "seconds": sec, "tokens_per_s": batch * L / sec})
    model.eval()
    return rows


def scaling_exponent(lengths, seconds) -> float:
    """Slope of log(time) against log(length): 1 for linear, 2 for quadratic cost."""
    return float(np.polyfit(np.log(lengths), np.log(seconds), 1)[0])
