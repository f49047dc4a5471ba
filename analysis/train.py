"""The one training loop: MLM pretraining under identical conditions for every model.

Every model sees the same data in the same order (seeded), the same masking (BERT's
80/10/10 at ``cfg.mask_prob``), batch size, steps, optimiser (AdamW), schedule (linear
warm-up then linear decay) and seed. ``fit`` is shared with fine-tuning
(``analysis.finetune``); ``Batches`` is the one batch iterator of both. Runs through
``accelerate``, so ``accelerate launch`` spreads it over GPUs; on this CPU it is a plain loop.

``pretrain_into(model, cfg, out, state_dir)`` trains one model and writes its checkpoint;
caching and training on demand are ``analysis.checkpoints``' job. ``pretrain_key`` and
``random_key`` name a pretrained and a random-init encoder in every cache key. Partial state
goes to ``state_dir`` every ``CHECKPOINT_EVERY`` steps, so an interrupted run resumes.

The *unigram baseline* is the cross-entropy of predicting each masked token from the corpus
unigram distribution alone, H = -sum_w p(w) log p(w): a model that learned nothing about
context scores about this much.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from accelerate import Accelerator
from tqdm.auto import tqdm

from . import models
from .cache import config_key, write_json_atomic
from .data import finetune_dataset, load_tokenizer, pretraining_texts
from .data.tokenizer import tokenizer_key
from .workers import in_worker

PRETRAIN_VERSION = "2"  # 2: base model + head (state-dict keys ``codessm.*``, ``bimamba.*``), RoCoder's own model_type
CHECKPOINT_EVERY = 100
MODEL_FIELDS = ("d_model", "n_layers", "d_state", "n_kernels", "hf_conv_width", "n_heads",
                "mamba_d_state", "mamba_expand", "mamba_d_conv", "dropout")
TRAIN_FIELDS = ("pretrain_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "mask_prob",
                "max_length", "log_every")


def pretrain_key(model_name: str, cfg) -> dict:
    """What names a pretrained encoder: model, tokenizer (corpus), architecture and training."""
    return {"model": model_name, **tokenizer_key(cfg), **cfg.subset(*MODEL_FIELDS, *TRAIN_FIELDS)}


def random_key(model_name: str, cfg) -> dict:
    """What names a random-init encoder: its architecture, vocabulary and seed."""
    return {"random": model_name, **cfg.subset("vocab_size", "seed", *MODEL_FIELDS)}


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab: int, prob: float,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``prob`` of the non-special tokens; of those 80% -> <mask>, 10% ->
    a random token, 10% unchanged. Returns (inputs, labels with -100 where not chosen)."""
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    rand = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[rand] = torch.randint(5, vocab, ids.shape, generator=gen)[rand]
    return inputs, labels


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def fit(model, batches: Iterator, loss_fn: Callable, steps: int, lr: float, weight_decay: float,
        warmup: int, state_dir: Path | None = None, log_every: int = 10, desc: str = "training",
        extra_params=()) -> pd.DataFrame:
    """The shared loop: AdamW + linear warm-up/decay for ``steps`` steps over ``batches``
    (an iterator that can be fast-forwarded by ``skip(n)``), resuming from ``state_dir``.
    Returns the log (step, loss, seconds)."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(warmup, steps))
    model, opt = accelerator.prepare(model, opt)
    start, rows, elapsed = 0, [], 0.0
    state_file = state_dir / "state.pt" if state_dir is not None else None
    if state_file is not None and state_file.exists():
        try:
            state = torch.load(state_file, weights_only=False)
            accelerator.unwrap_model(model).load_state_dict(state["model"])
            for p, saved in zip(extra_params, state.get("extra", [])):
                p.data.copy_(saved)
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start, rows, elapsed = state["step"], state["log"], state["elapsed"]
            print(f"{desc}: resuming at step {start} from {state_file}")
        except Exception as err:  # a broken partial state is discarded, not trusted
            print(f"{desc}: partial state unreadable ({type(err).__name__}); starting over")
            start, rows, elapsed = 0, [], 0.0
    if start:
        batches.skip(start)
    model.train()
    window, t0 = [], time.perf_counter()
    quiet = {"disable": True} if in_worker() else {}  # else tqdm's defaults ($TQDM_DISABLE)
    bar = tqdm(range(start, steps), desc=desc, initial=start, total=steps, leave=False, **quiet)
    for step in bar:
        batch = next(batches)
        loss = loss_fn(model, batch)
        accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            now = time.perf_counter()
            rows.append({"step": step + 1, "loss": float(np.mean(window)), "seconds": elapsed + now - t0})
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
            window = []
        if state_file is not None and (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < steps:
            tmp = state_file.with_suffix(".tmp")
            torch.save({"model": accelerator.unwrap_model(model).state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step + 1, "log": rows,
                        "elapsed": elapsed + time.perf_counter() - t0,
                        "extra": [p.detach().clone() for p in extra_params]}, tmp)
            tmp.replace(state_file)
    model.eval()
    return pd.DataFrame(rows, columns=["step", "loss", "seconds"])


class Batches:
    """Endless seeded batches of ``items``, reshuffled every epoch, each passed through
    ``collate`` (the list itself by default); ``skip(n)`` fast-forwards n batches (resuming)."""

    def __init__(self, items: list, batch_size: int, seed: int, collate: Callable = list):
        if not items:
            raise ValueError("no training items")
        self.items, self.batch_size, self.collate = items, min(batch_size, len(items)), collate
        self.rng = np.random.default_rng(seed)
        self.order, self.pos = self.rng.permutation(len(items)), 0

    def _indices(self):
        if self.pos + self.batch_size > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.items)), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def skip(self, n: int) -> None:
        for _ in range(n):
            self._indices()

    def __iter__(self):
        return self

    def __next__(self):
        return self.collate([self.items[i] for i in self._indices()])


def padded(pad_id: int) -> Callable:
    """A collate function: token-id lists -> (ids, attention mask), both r(B L), right-padded."""
    def collate(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for k, s in enumerate(seqs):
            ids[k, :len(s)] = torch.tensor(s)
            mask[k, :len(s)] = 1
        return ids, mask
    return collate


def unigram_entropy(encoded: list[list[int]], special_ids: set[int]) -> float:
    counts = np.bincount([t for s in encoded for t in s if t not in special_ids])
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def mlm_loss(model, encoded: list[list[int]], tokenizer, cfg, seed: int = 1234) -> float:
    """Mean masked-token cross-entropy on ``encoded`` with fixed, seeded masks."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    batches = Batches(encoded, cfg.batch_size, seed, padded(tokenizer.pad_token_id))
    total, count = 0.0, 0
    for _ in range(max(1, math.ceil(len(encoded) / batches.batch_size))):
        ids, mask = next(batches)
        inputs, labels = mask_tokens(ids, _special(ids, mask, tokenizer), tokenizer.mask_token_id,
                                     len(tokenizer), cfg.mask_prob, gen)
        out = model(input_ids=inputs, attention_mask=mask, labels=labels)
        n = int((labels != -100).sum())
        total, count = total + out.loss.item() * n, count + n
    return total / max(count, 1)


def _special(ids, mask, tokenizer):
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    return torch.isin(ids, specials) | (mask == 0)


def _encode(tokenizer, texts, max_length):
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def pretrain_into(model_name: str, cfg, out: Path, state_dir: Path | None, texts=None, tokenizer=None,
                  valid_texts=None, key: dict | None = None) -> None:
    """Pretrain ``model_name`` under ``cfg`` with masked-LM and write its checkpoint (weights,
    tokenizer, ``log.csv``, ``meta.json`` with the held-out MLM loss and the unigram baseline)
    to ``out``. ``texts``, ``tokenizer``, ``valid_texts`` replace the profile's data (tests)."""
    tokenizer = tokenizer or load_tokenizer(cfg)
    texts = texts if texts is not None else pretraining_texts(cfg)
    if valid_texts is None:
        valid_texts = [r["code"] for r in finetune_dataset(cfg, "search")["valid"]][:64]
    encoded = _encode(tokenizer, texts, cfg.max_length)
    model = models.build(model_name, cfg, len(tokenizer), tokenizer.pad_token_id)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = Batches(encoded, cfg.batch_size, cfg.seed, padded(tokenizer.pad_token_id))

    def loss_fn(m, batch):
        ids, mask = batch
        inputs, labels = mask_tokens(ids, _special(ids, mask, tokenizer), tokenizer.mask_token_id,
                                     len(tokenizer), cfg.mask_prob, gen)
        return m(input_ids=inputs, attention_mask=mask, labels=labels).loss

    log = fit(model, batches, loss_fn, cfg.pretrain_steps, cfg.lr, cfg.weight_decay, cfg.warmup_steps,
              state_dir, cfg.log_every, desc=f"pretraining {model_name}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.to_csv(out / "log.csv", index=False)
    valid = _encode(tokenizer, valid_texts, cfg.max_length) if valid_texts else []
    meta = {"model": model_name, "parameters": models.trainable_parameters(model),
            "train_seconds": float(log["seconds"].iloc[-1]) if len(log) else 0.0,
            "unigram_entropy": unigram_entropy(encoded, set(tokenizer.all_special_ids)),
            "valid_mlm_loss": mlm_loss(model, valid, tokenizer, cfg) if valid else None,
            "train_sequences": len(encoded), "key": config_key(key or pretrain_key(model_name, cfg), PRETRAIN_VERSION)}
    write_json_atomic(out / "meta.json", meta)
