"""``python -m analysis.bench pretrain``: pretraining throughput in four layouts of the same loss.

Measures pretraining throughput: real (non-padding) tokens per second of one
pretraining step (forward, masked-LM loss, backward, clipping, AdamW) at a profile's widths, on
real batches of its corpus (its pretraining texts truncated to ``max_length``, BERT masking at
``mask_prob``), for four ways of computing the same loss, in one process, the steps
interleaved so the shared machine's load falls on all alike:

- ``padded, head everywhere``: ``batch_size`` functions in random order, right-padded to the
  longest in the batch, the LM head projecting every position onto the vocabulary (logits
  r(B L V)), cross-entropy with ``ignore_index`` (how pretraining ran before);
- ``padded, head at masked``: the same batches, the head only at the masked positions;
- ``bucketed, head at masked``: ``batch_size`` functions of similar length (``train.Batches``
  with lengths), the head at the masked positions: how ``train.pretrain_into`` runs;
- ``packed, head at masked``: rows of exactly ``max_length`` tokens packed from the same texts
  (``pack``: no padding at all; not used for training, see ``analysis.train``).

It prints real tokens per step, seconds per step (median) and tokens per second, and each
mode's speed-up over the first.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PROFILES, profile
from ..data import load_tokenizer, pretraining_texts
from ..models import FAMILIES, build
from ..train import Batches, mask_tokens, padded
from .measure import machine

HELP = "pretraining tokens per second: padded and full head against packed and masked head"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="default", choices=list(PROFILES))
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--steps", type=int, default=8, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)


PRETRAIN_MODES = ("padded, head everywhere", "padded, head at masked", "bucketed, head at masked",
                  "packed, head at masked")


def pack(encoded: list[list[int]], length: int) -> np.ndarray:
    """Rows r(R length) of token ids: the sequences of ``encoded`` concatenated in order and cut
    every ``length`` tokens (R = total // length; the last partial row is dropped). Each
    encoded function is ``<s> ... </s>``, so functions are separated by ``</s><s>``."""
    total = sum(len(s) for s in encoded)
    if total < length:
        raise ValueError(f"packing needs at least one row of {length} tokens, but the texts hold "
                         f"{total}: pass more texts or a smaller max_length")
    stream = np.fromiter((t for s in encoded for t in s), dtype=np.int64, count=total)
    return stream[:total // length * length].reshape(-1, length)


def _stacked(rows: list) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.as_tensor(np.stack(rows))
    return ids, torch.ones_like(ids)


def pretrain_batches(cfg, steps: int, texts=None, tokenizer=None, seed: int = 0) -> dict:
    """{layout: [(inputs, attention mask, labels), ...]}: ``steps`` masked batches per input
    layout from the same texts truncated to ``max_length``: "padded" (``batch_size`` functions
    in random order, right-padded), "bucketed" (``train.Batches`` with lengths, as pretraining
    draws them) and "packed" (``pack`` rows of ``max_length``)."""
    tokenizer = tokenizer or load_tokenizer(cfg)
    texts = texts if texts is not None else pretraining_texts(cfg)[:4 * steps * cfg.batch_size]
    encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    if len(encoded) < steps * cfg.batch_size:
        raise ValueError(f"{len(encoded)} texts for {steps} steps of {cfg.batch_size}: pass more texts or fewer steps")
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    pad = padded(tokenizer.pad_token_id)
    draws = {"padded": Batches(encoded, cfg.batch_size, seed, pad),
             "bucketed": Batches(encoded, cfg.batch_size, seed, pad, lengths=[len(e) for e in encoded]),
             "packed": Batches(list(pack(encoded, cfg.max_length)), cfg.batch_size, seed, _stacked)}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layout, batches in draws.items():
        out[layout] = []
        for _ in range(steps):
            ids, mask = next(batches)
            inputs, labels = mask_tokens(ids, torch.isin(ids, specials) | (mask == 0), tokenizer.mask_token_id,
                                         len(tokenizer), cfg.mask_prob, g)
            out[layout].append((inputs, mask, labels))
    return out


def _pretrain_loss(model, batch: tuple, mode: str) -> torch.Tensor:
    ids, mask, labels = batch
    if mode == "padded, head everywhere":  # the head at every position, as before packing
        logits = model(input_ids=ids, attention_mask=mask).logits         # [b, L, vocab]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def pretrain_benchmark(cfg, models=("codessm", "rocoder", "bimamba"), steps: int = 8, threads: int = 1,
                       texts=None, tokenizer=None) -> list[dict]:
    """One row per model and mode (``PRETRAIN_MODES``): real tokens per step, median seconds
    per pretraining step, tokens per second and the speed-up over the first mode. Each mode
    trains its own copy of one initialisation with its own AdamW; one warm-up step each, then
    the ``steps`` timed steps round-robin over the modes."""
    unknown = [m for m in models if m not in FAMILIES]
    if unknown or steps < 1:
        raise ValueError(f"known models: {', '.join(FAMILIES)} (got {models}); steps >= 1 (got {steps})")
    batches = pretrain_batches(cfg, steps + 1, texts, tokenizer)
    tokenizer = tokenizer or load_tokenizer(cfg)
    old, rows = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for name in models:
            nets = {mode: build(name, cfg, len(tokenizer), tokenizer.pad_token_id).train() for mode in PRETRAIN_MODES}
            opts = {mode: torch.optim.AdamW(net.parameters(), lr=cfg.lr) for mode, net in nets.items()}
            seconds = {mode: [] for mode in PRETRAIN_MODES}
            tokens = {mode: [] for mode in PRETRAIN_MODES}
            for k in range(steps + 1):
                for mode in PRETRAIN_MODES:
                    batch = batches[mode.split(",")[0]][k]
                    t0 = time.perf_counter()
                    loss = _pretrain_loss(nets[mode], batch, mode)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(nets[mode].parameters(), 1.0)
                    opts[mode].step()
                    opts[mode].zero_grad(set_to_none=True)
                    if k:  # the first step of each mode warms up
                        seconds[mode].append(time.perf_counter() - t0)
                        tokens[mode].append(int(batch[1].sum()))
            base = sum(tokens[PRETRAIN_MODES[0]]) / sum(seconds[PRETRAIN_MODES[0]])
            for mode in PRETRAIN_MODES:
                rate = sum(tokens[mode]) / sum(seconds[mode])
                rows.append({"model": name, "mode": mode, "tokens_per_step": statistics.fmean(tokens[mode]),
                             "step_s": statistics.median(seconds[mode]), "tokens_per_s": rate, "speedup": rate / base})
    finally:
        torch.set_num_threads(old)
    return rows


def command(args) -> int:
    try:
        cfg = profile(args.profile)
        rows = pretrain_benchmark(cfg, args.models, args.steps, args.threads)
    except ValueError as err:
        print(f"python -m analysis.bench pretrain: {err}", file=sys.stderr)
        return 2
    print(f"pretraining step at profile {cfg.name!r} (width {cfg.d_model}, {cfg.n_layers} layers, batch "
          f"{cfg.batch_size} x {cfg.max_length}, vocabulary {cfg.vocab_size}), {args.steps} steps per mode, "
          f"{args.threads} thread(s); {machine()}; load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}")
    print(f"{'model':>8} {'mode':>24} {'tokens/step':>11} {'s/step':>7} {'tokens/s':>9} {'speed-up':>8}")
    for r in rows:
        print(f"{r['model']:>8} {r['mode']:>24} {r['tokens_per_step']:>11.0f} {r['step_s']:>7.3f} "
              f"{r['tokens_per_s']:>9.0f} {r['speedup']:>7.2f}x")
    return 0
