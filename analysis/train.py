"""The one training loop: MLM pretraining under identical conditions for every model.

Every model sees the same data in the same order (seeded), the same masking (BERT's
80/10/10 at ``cfg.mask_prob``), batch size, steps, optimiser (AdamW), schedule (linear
warm-up then linear decay) and seed. ``fit`` is shared with fine-tuning
(``analysis.finetune``); ``Batches`` is the one batch iterator of both.

Devices. ``fit`` trains on ``training_device()``: this process's GPU when CUDA is available,
else the CPU. It moves the model there, and every batch with ``to_device`` (tensors, and
tuples, lists, dicts and tokenizer outputs of them); a loss that builds its own tensors from
raw examples (fine-tuning) moves them to ``model_device(model)``, as do evaluation, embedding,
probing and interpretation; results come back to the CPU where numpy reads them. Masks are
drawn on the CPU from their own generator (``masked``), so they are the same on every device.
On CUDA ``fit`` runs at the profile's ``mixed_precision`` (autocast; float32 weights and
optimiser); on the CPU always in float32. ``precision_key`` adds the precision to a cache key
only when it is not float32, so no CPU key depends on it.

Several processes (``accelerate launch --num_processes N``, one GPU each, or ``--cpu``) run
``fit`` as one data-parallel job. Every process draws the same global batch (same seed, same
masks) and takes its contiguous slice p (``shard``: disjoint; in rank order the slices make up
the batch). Its loss L_p, a mean over the n_p items ``count`` finds in the slice (rows, or
masked tokens), is weighted as N n_p / sum_q n_q L_p, and the gradients are averaged over the
processes after each backward, so the step uses sum_p n_p grad L_p / sum_q n_q: the gradient
one process takes on the whole batch (up to float summation order; dropout draws differ). The
logged loss is the mean over processes, the whole batch's. Only the main process writes the
partial state and the checkpoint; the others wait for it; a resumed run restores the main
process's state in every process. Gradients are averaged explicitly, not by a
``DistributedDataParallel`` wrapper, because fine-tuning reads the encoder through
``base_model`` (no ``forward`` for DDP to hook) and trains a head outside the model;
fine-tuning's contrastive loss takes its in-batch negatives from each process's slice.
``checkpoints.pretrained`` runs under ``accelerate launch`` too: the main process builds the
checkpoint under the cache's lock, the others join its training without the lock.

Pretraining batches hold whole functions of similar length, as many as fit in a budget of
``batch_size * max_length`` tokens (``Batches`` with ``lengths``: each epoch's shuffled
functions sorted by length within buckets, cut into batches, the batches shuffled), so a step
computes almost nothing on padding, every step weighs about the same number of tokens, and
every row is still one function, as fine-tuning and probing read them. Packing several
functions into one row (RoBERTa) would remove padding entirely, but CodeSSM's S4D convolution
is time-invariant: it cannot be reset at a ``</s><s>`` separator, so neighbours would leak
into each other's context (packed rows also gave both families a higher held-out masked-LM
loss at equal tokens). Each function contributes its first ``max_length`` tokens
(``cfg.pretrain_whole_functions=False``) or all of them, as consecutive windows of
``max_length`` tokens, each its own ``<s> ... </s>`` row (True). Masking is BERT's 80/10/10
at ``mask_prob`` over the non-special tokens, and the LM head runs only at the masked
positions (``models.encoder.masked_lm_output``).

Reproducibility. ``fit`` and ``pretrain_into`` run on one thread with torch's deterministic
algorithms (``workers.single_threaded``), so one key gives one set of weights on one machine
and library versions, in the pool or not; ``bits_by_schedule`` measures it, and that another
vector width (AVX2 for AVX-512) gives other bits.

``pretrain_into(model, cfg, out, state_dir)`` trains one model and writes its checkpoint;
caching and training on demand are ``analysis.checkpoints``' job. ``pretrain_key`` and
``random_key`` name a pretrained and a random-init encoder in every cache key. Partial state
goes to ``state_dir`` every ``CHECKPOINT_EVERY`` steps, so an interrupted run resumes.

The *unigram baseline* is the cross-entropy of predicting each masked token from the corpus
unigram distribution alone, H = -sum_w p(w) log p(w): a model that learned nothing about
context scores about this much.
"""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm
from transformers import BatchEncoding

from . import models
from .cache import config_key, save_atomic, write_json_atomic
from .data import finetune_dataset, load_tokenizer, pretraining_texts
from .data.tokenizer import tokenizer_key
from .workers import in_worker, job_progress, single_threaded

PRETRAIN_VERSION = "3"  # 2: base model + head (state-dict keys ``codessm.*``, ``bimamba.*``); 3: length buckets
BUCKET_BATCHES = 64     # batches per length bucket of the pretraining batches
CHECKPOINT_EVERY = 100
MODEL_FIELDS = ("d_model", "n_layers", "d_state", "n_kernels", "hf_conv_width", "n_heads",
                "mamba_d_state", "mamba_expand", "mamba_d_conv", "dropout", "tie_embeddings")
TRAIN_FIELDS = ("pretrain_steps", "pretrain_seed", "batch_size", "lr", "weight_decay", "warmup_steps", "mask_prob",
                "max_length", "log_every", "pretrain_whole_functions", "pretrain_docstrings", "embedding_lr_scale")
CODESSM_FIELDS = ("position_embeddings", "ssm_lr")  # in CodeSSM's keys only (other families' stay as they were)


def pretrain_key(model_name: str, cfg) -> dict:
    """What names a pretrained encoder: model, tokenizer (corpus), architecture and training
    (with the precision it trains at when not float32: ``precision_key``)."""
    return {"model": model_name, **tokenizer_key(cfg), **cfg.subset(*MODEL_FIELDS, *TRAIN_FIELDS),
            **precision_key(cfg), **architecture_key(model_name, cfg)}


def random_key(model_name: str, cfg) -> dict:
    """What names a random-init encoder: its architecture, vocabulary and seed. Not whether the
    LM head is tied: tying leaves the encoder's initial weights as they are (tested), and only
    the encoder is fine-tuned or probed."""
    return {"random": model_name, **cfg.subset("vocab_size", "seed", "pretrain_seed", *MODEL_FIELDS),
            "tie_embeddings": False, **architecture_key(model_name, cfg)}


def architecture_key(model_name: str, cfg) -> dict:
    """The family's architecture revision (``models.architecture_key``) and, for CodeSSM, its
    own fields (``CODESSM_FIELDS``)."""
    own = cfg.subset(*CODESSM_FIELDS) if models.FAMILIES[model_name] == "CodeSSM" else {}
    return {**models.architecture_key(model_name), **own}


def run_seed(cfg) -> int:
    """The seed of pretraining run ``cfg.pretrain_seed``: its initial weights (and its random-init
    twin's), batch order and masks. The corpus and its splits keep ``cfg.seed``, so every run
    is scored on the same test items."""
    return cfg.seed + cfg.pretrain_seed


def _state() -> PartialState:
    return PartialState(cpu=not torch.cuda.is_available())


def training_device() -> torch.device:
    """The device ``fit`` trains on: this process's GPU when CUDA is available (one per process
    under ``accelerate launch``), else the CPU."""
    return _state().device


def process_count() -> int:
    """How many processes train together (1 unless launched as several)."""
    return _state().num_processes


def is_main_process() -> bool:
    """Whether this process writes results (always, unless launched as several)."""
    return _state().is_main_process


def wait_for_everyone() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    _state().wait_for_everyone()


def model_device(model) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def to_device(batch, device):
    """``batch`` with every tensor on ``device``: a tensor, or tuples, lists and dicts of them
    (a tokenizer's ``BatchEncoding`` keeps its offsets); other values unchanged. Tensors already
    there are returned as they are. A copy to a GPU is non-blocking (safe from pageable memory);
    batches are not pinned: pinning here, in the training thread, costs one more host copy
    than the asynchronous copy saves."""
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, BatchEncoding):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def precision(requested: str) -> str:
    """The mixed precision ``fit`` runs at: ``requested`` (a profile's ``mixed_precision``) on
    CUDA, "no" (float32) on the CPU."""
    return requested if torch.cuda.is_available() else "no"


def precision_key(cfg) -> dict:
    """The training precision's part of a cache key: nothing at float32 (every CPU run, so no
    CPU key depends on it), ``{"mixed_precision": ...}`` otherwise: it changes the weights."""
    used = precision(cfg.mixed_precision)
    return {} if used == "no" else {"mixed_precision": used}


def shard(batch, rank: int, world: int):
    """Process ``rank``'s slice of a global batch among ``world`` processes: rows
    [rank B // world, (rank + 1) B // world), so the slices are disjoint and, concatenated in
    rank order, are the batch. A tensor is sliced along its first axis; a tuple or a dict holds
    fields (each sliced); a list holds examples (sliced)."""
    if world == 1:
        return batch
    if isinstance(batch, tuple):
        return tuple(shard(b, rank, world) for b in batch)
    if isinstance(batch, Mapping):
        return {k: shard(v, rank, world) for k, v in batch.items()}
    if isinstance(batch, (torch.Tensor, list)):
        n = len(batch)
        return batch[rank * n // world:(rank + 1) * n // world]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} across {world} processes: "
                    "expected a tensor, a tuple or dict of tensors, or a list of examples")


def batch_rows(batch) -> int:
    """The number of examples in a batch (``shard``'s conventions): ``fit``'s default count."""
    if isinstance(batch, tuple):
        return batch_rows(batch[0])
    if isinstance(batch, Mapping):
        return batch_rows(next(iter(batch.values())))
    return len(batch)


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


def parameter_groups(params: list, weight_decay: float, lr: float) -> list[dict]:
    """AdamW groups: weight decay for every parameter but those marked ``_no_weight_decay``
    (the SSM parameters: S4D's A, step size and C, Mamba's A and D, as S4, BiGS and mamba-ssm
    train them); learning rate ``lr`` times a parameter's ``_lr_scale`` (1 unless marked, e.g.
    the embedding table in pretraining: ``cfg.embedding_lr_scale``), or a parameter's own ``_lr``
    where set (the S4D kernels' dt and A in pretraining: ``cfg.ssm_lr``, as BiGS). Empty groups
    are left out."""
    groups = {}
    for p in params:
        no_decay = getattr(p, "_no_weight_decay", False)
        own = getattr(p, "_lr", None)
        groups.setdefault((no_decay, lr * getattr(p, "_lr_scale", 1.0) if own is None else own), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if no_decay else weight_decay, "lr": group_lr}
            for (no_decay, group_lr), ps in groups.items()]


@single_threaded()
def fit(model, batches: Iterator, loss_fn: Callable, steps: int, lr: float, weight_decay: float,
        warmup: int, state_dir: Path | None = None, log_every: int = 10, desc: str = "training",
        extra_params=(), generators: Sequence[torch.Generator] = (), count: Callable = batch_rows,
        mixed_precision: str = "no", stop: Callable[[int], bool] | None = None,
        progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """The shared loop: AdamW + linear warm-up/decay for ``steps`` steps over ``batches``,
    resuming from ``state_dir``. Returns the log (step, loss, seconds). ``stop(step)``, if
    given, is asked after every step and ends the loop early when it returns True (early
    stopping; the schedule stays the one of ``steps``). ``progress(step, steps)``, if given, is
    called after every step; in a worker process it defaults to the one that shows the steps
    in the parent's bar (``workers.job_progress``), elsewhere the loop's own bar shows them.

    The model is moved to ``training_device()`` and each batch (this process's ``shard`` of it)
    with ``to_device``; ``extra_params`` must already be there. ``loss_fn(model, batch)`` is a
    mean over the batch's ``count(batch)`` items (rows by default; masked tokens for masked-LM),
    which weights each process's loss (module docstring). ``mixed_precision`` applies on CUDA only.

    Every ``CHECKPOINT_EVERY`` steps ``state_dir/state.pt`` records all the loop depends on:
    weights (and ``extra_params``), optimiser, schedule, the position of ``batches``
    (``batches.state()``; iterators with only ``skip(n)`` are fast-forwarded instead), torch's
    global RNG (dropout) and the states of ``generators`` (e.g. the masking generator).
    So a run interrupted and resumed ends with bit for bit the weights of one never
    interrupted. The state is read with ``weights_only=True`` (tensors, numbers, strings, lists,
    dicts: never code). A non-finite loss raises ``FloatingPointError`` naming the step and the
    learning rate. It runs on one thread (``workers.single_threaded``), so the same call gives
    the same bits in any process."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision(mixed_precision),
                              device_placement=False)  # placement is ours: training_device, to_device
    device = training_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    opt = torch.optim.AdamW(parameter_groups(params, weight_decay, lr), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(warmup, steps))
    opt = accelerator.prepare(opt)  # fp16: loss scaling
    parts = {"model": model, "opt": opt, "sched": sched, "batches": batches,
             "extra": list(extra_params), "generators": list(generators)}
    state_file = state_dir / "state.pt" if state_dir is not None else None
    start, rows, elapsed, window = _resume(state_file, parts, desc)
    model.train()
    t0 = time.perf_counter()
    quiet = {"disable": True} if in_worker() or not accelerator.is_main_process else {}  # else tqdm's defaults
    bar = tqdm(range(start, steps), desc=desc, initial=start, total=steps, leave=False, **quiet)
    progress = progress or job_progress(desc)
    for step in bar:
        loss = _local_loss(accelerator, model, loss_fn, next(batches), count, f"{desc}, step {step + 1}")
        value = (accelerator.reduce(loss.detach(), "mean") if accelerator.num_processes > 1 else loss).item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{desc}: the loss is {value} at step {step + 1} of {steps} (learning rate "
                f"{sched.get_last_lr()[0]:.3g} after warm-up/decay, peak {lr:.3g}); training diverged "
                "and nothing is cached: lower the learning rate (-p lr ...) or check the data")
        accelerator.backward(loss)
        if accelerator.num_processes > 1:
            _average_gradients(accelerator, params)
        accelerator.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window.append(value)
        if progress is not None:
            progress(step + 1, steps)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            rows.append({"step": step + 1, "loss": float(np.mean(window)),
                          "seconds": elapsed + time.perf_counter() - t0})
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
            window = []
        if stop is not None and stop(step + 1):
            if not rows or rows[-1]["step"] != step + 1:
                rows.append({"step": step + 1, "loss": float(np.mean(window)) if window else rows[-1]["loss"],
                             "seconds": elapsed + time.perf_counter() - t0})
            break
        if state_file is not None and (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < steps:
            if accelerator.is_main_process:
                _save_state(state_file, parts, step + 1, rows, elapsed + time.perf_counter() - t0, window)
            accelerator.wait_for_everyone()
    model.eval()
    return pd.DataFrame(rows, columns=["step", "loss", "seconds"])


def _local_loss(accelerator, model, loss_fn: Callable, batch, count: Callable, where: str) -> torch.Tensor:
    """The loss of this process's slice of the global ``batch`` on the training device,
    weighted so that the mean over the N processes is the loss of the whole batch: with n_p
    items (``count``) in slice p, loss_p * N n_p / sum_q n_q (1 in one process)."""
    n = accelerator.num_processes
    if n == 1:
        with accelerator.autocast():
            return loss_fn(model, to_device(batch, training_device()))
    counts = [count(shard(batch, r, n)) for r in range(n)]  # every process holds the whole batch
    if min(counts) == 0:
        raise ValueError(f"{where}: the batch splits over {n} processes into slices with {counts} items "
                         "to average over; one has none: use a larger batch or fewer processes")
    rank = accelerator.process_index
    with accelerator.autocast():
        loss = loss_fn(model, to_device(shard(batch, rank, n), training_device()))
    return loss * (n * counts[rank] / sum(counts))


def _average_gradients(accelerator, params: list) -> None:
    """Replace each gradient by its mean over the processes (one all-reduce of them all)."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _save_state(path: Path, parts: dict, step: int, rows: list, elapsed: float, window: list) -> None:
    """Write the resumable state of ``fit`` atomically (``cache.save_atomic``)."""
    batches = parts["batches"]
    state = {"step": step, "log": rows, "elapsed": elapsed, "window": list(window),
             "model": parts["model"].state_dict(), "opt": parts["opt"].state_dict(),
             "sched": parts["sched"].state_dict(), "extra": [p.detach().clone() for p in parts["extra"]],
             "batches": batches.state() if hasattr(batches, "state") else None,
             "torch_rng": torch.get_rng_state(), "generators": [g.get_state() for g in parts["generators"]],
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    save_atomic(path, lambda tmp: torch.save(state, tmp))


def _resume(path: Path | None, parts: dict, desc: str) -> tuple[int, list, float, list]:
    """(step, log rows, elapsed seconds, loss window) restored from ``path`` into ``parts``;
    a fresh start if there is no state. An unreadable state (truncated, or not plain data)
    is discarded before anything is restored; one that reads but does not fit is removed
    and reported."""
    if path is None or not path.exists():
        return 0, [], 0.0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = sorted({"step", "log", "elapsed", "window", "model", "opt", "sched", "extra", "batches",
                          "torch_rng", "generators", "cuda_rng"} - set(state))
        if missing or len(state["generators"]) != len(parts["generators"]):
            raise KeyError(f"missing {missing}" if missing else "a different number of generators")
    except Exception as err:  # never trusted: the loop starts over and overwrites it
        print(f"{desc}: partial state {path} unreadable ({type(err).__name__}: {err}); starting over")
        return 0, [], 0.0, []
    try:
        parts["model"].load_state_dict(state["model"])
        for p, saved in zip(parts["extra"], state["extra"], strict=True):
            p.data.copy_(saved)
        parts["opt"].load_state_dict(state["opt"])
        parts["sched"].load_state_dict(state["sched"])
        batches = parts["batches"]
        if hasattr(batches, "restore"):
            batches.restore(state["batches"])
        else:  # an iterator that can only be fast-forwarded
            batches.skip(state["step"])
        torch.set_rng_state(state["torch_rng"])
        for g, saved in zip(parts["generators"], state["generators"]):
            g.set_state(saved)
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except Exception as err:  # half restored: the model is no longer the fresh one
        path.unlink(missing_ok=True)
        raise RuntimeError(f"{desc}: partial state {path} does not fit this run ({type(err).__name__}: "
                           f"{err}); removed it: run again to start over") from err
    print(f"{desc}: resuming at step {state['step']} from {path}")
    return state["step"], state["log"], state["elapsed"], state["window"]


class Batches:
    """Endless seeded batches of ``items``, reshuffled every epoch (one permutation per epoch
    from one numpy generator seeded with ``seed``), each passed through ``collate`` (the list
    itself by default; ``padded(pad_id)`` for token-id lists). ``state()``/``restore(state)``
    save and restore the position exactly, for resuming; ``skip(n)`` fast-forwards n batches.

    Without ``lengths``: ``batch_size`` items per batch (the items left over by the last full
    batch wait for the next epoch's permutation). With ``lengths`` (one per item), batches are
    length-bucketed under a token budget T = batch_size * max(lengths): the epoch's permutation
    is cut into chunks of ``batch_size * bucket`` items, each chunk sorted by length and cut
    greedily into batches of as many items as keep (items x longest length) <= T, and the
    batches of the epoch put in a random order. Padding then almost vanishes and every step
    carries about T tokens, short items or long; which items share a batch, and when, stays
    random."""

    def __init__(self, items: list, batch_size: int, seed: int, collate: Callable = list,
                 lengths: Sequence[int] | None = None, bucket: int = BUCKET_BATCHES):
        if len(items) == 0:
            raise ValueError("no training items")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if bucket < 1:
            raise ValueError(f"bucket (batches per length bucket) must be at least 1, got {bucket}")
        if lengths is not None and (len(lengths) != len(items) or min(lengths) < 1):
            raise ValueError(f"lengths must be {len(items)} positive numbers, one per item")
        self.items, self.batch_size, self.collate = items, min(batch_size, len(items)), collate
        self.lengths, self.bucket = None if lengths is None else np.asarray(lengths), bucket
        self.rng = np.random.default_rng(seed)
        (self.order, self.bounds), self.pos = self._epoch(), 0

    def _epoch(self) -> tuple[np.ndarray, np.ndarray]:
        """(items in epoch order, batch k = order[bounds[k]:bounds[k + 1]])."""
        order, bs = self.rng.permutation(len(self.items)), self.batch_size
        if self.lengths is None:
            return order, np.arange(0, len(order) // bs * bs + 1, bs)
        budget, chunk, batches = bs * int(self.lengths.max()), bs * self.bucket, []
        for part in np.split(order, range(chunk, len(order), chunk)):
            part = part[np.argsort(self.lengths[part], kind="stable")]
            start = 0
            for k in range(1, len(part) + 1):  # sorted: the k-th item is the batch's longest
                if k == len(part) or (k + 1 - start) * self.lengths[part[k]] > budget:
                    batches.append(part[start:k])
                    start = k
        batches = [batches[i] for i in self.rng.permutation(len(batches))]
        return np.concatenate(batches), np.cumsum([0] + [len(b) for b in batches])

    def _indices(self):
        if self.pos + 1 >= len(self.bounds):
            (self.order, self.bounds), self.pos = self._epoch(), 0
        idx = self.order[self.bounds[self.pos]:self.bounds[self.pos + 1]]
        self.pos += 1
        return idx

    def skip(self, n: int) -> None:
        for _ in range(n):
            self._indices()

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": torch.as_tensor(self.order),
                "bounds": torch.as_tensor(self.bounds), "pos": self.pos, "items": len(self.items),
                "batch_size": self.batch_size}

    def restore(self, state: dict) -> None:
        if (state["items"], state["batch_size"]) != (len(self.items), self.batch_size):
            raise ValueError(f"the saved batch position is for {state['items']} items in batches of "
                             f"{state['batch_size']}, not {len(self.items)} in batches of {self.batch_size}")
        self.rng.bit_generator.state = state["rng"]
        self.order, self.bounds = state["order"].numpy().copy(), state["bounds"].numpy().copy()
        self.pos = int(state["pos"])

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


def masked(tokenizer, prob: float, gen: torch.Generator) -> Callable:
    """A collate function for masked-LM: token-id lists -> (inputs, attention mask, labels),
    each r(B L): ``padded``, then ``mask_tokens`` at ``prob`` drawing from ``gen``, on the CPU,
    so the masks are the same on every device and in every process."""
    pad = padded(tokenizer.pad_token_id)

    def collate(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = pad(seqs)
        inputs, labels = mask_tokens(ids, _special(ids, mask, tokenizer), tokenizer.mask_token_id,
                                     len(tokenizer), prob, gen)
        return inputs, mask, labels
    return collate


def mlm_objective(model, batch) -> torch.Tensor:
    """The masked-token cross-entropy of a ``masked`` batch (mean over its masked tokens)."""
    inputs, mask, labels = batch
    return model(input_ids=inputs, attention_mask=mask, labels=labels).loss


def masked_count(batch) -> int:
    """The number of masked tokens of a ``masked`` batch: what ``mlm_objective`` averages over."""
    return int((batch[2] != -100).sum())


@torch.no_grad()
def mlm_loss(model, encoded: list[list[int]], tokenizer, cfg, seed: int = 1234) -> float:
    """Mean masked-token cross-entropy on ``encoded`` with fixed, seeded masks, on the model's device."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    batches = Batches(encoded, cfg.batch_size, seed, masked(tokenizer, cfg.mask_prob, gen))
    total, count = 0.0, 0
    for _ in range(max(1, math.ceil(len(encoded) / batches.batch_size))):
        batch = to_device(next(batches), model_device(model))
        n = masked_count(batch)
        total, count = total + mlm_objective(model, batch).item() * n, count + n
    return total / max(count, 1)


def _special(ids, mask, tokenizer):
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    return torch.isin(ids, specials) | (mask == 0)


def _encode(tokenizer, texts, max_length):
    return tokenizer(texts, truncation=max_length is not None, max_length=max_length)["input_ids"]


def windows(encoded: list[list[int]], length: int, bos: int, eos: int) -> list[list[int]]:
    """Each sequence ``<s> t_1 ... t_n </s>`` of ``encoded`` cut into consecutive windows of at
    most ``length`` tokens, each its own ``<s> ... </s>``: the pieces t_1..t_m, t_{m+1}..t_{2m},
    ... with m = length - 2 (a sequence that fits stays whole)."""
    if length < 3:
        raise ValueError(f"a window needs room for <s>, a token and </s>: length >= 3, got {length}")
    m, out = length - 2, []
    for seq in encoded:
        inner = seq[1:-1] if seq[:1] == [bos] and seq[-1:] == [eos] else seq
        out += [[bos, *inner[k:k + m], eos] for k in range(0, max(len(inner), 1), m)]
    return out


@single_threaded()
def pretrain_into(model_name: str, cfg, out: Path, state_dir: Path | None, texts=None, tokenizer=None,
                  valid_texts=None, key: dict | None = None) -> None:
    """Pretrain ``model_name`` under ``cfg`` with masked-LM and write its checkpoint (weights,
    tokenizer, ``log.csv``, ``meta.json`` with the held-out MLM loss and the unigram baseline)
    to ``out`` (the main process; the others wait for it). ``texts``, ``tokenizer``,
    ``valid_texts`` replace the profile's data (tests). One thread from the initial weights to
    the held-out loss (``workers.single_threaded``)."""
    tokenizer = tokenizer or load_tokenizer(cfg)
    texts = texts if texts is not None else pretraining_texts(cfg, docstrings=cfg.pretrain_docstrings)
    if valid_texts is None:
        valid_texts = [r["code"] for r in finetune_dataset(cfg, "search")["valid"]][:64]
    if cfg.pretrain_whole_functions:
        encoded = windows(_encode(tokenizer, texts, None), cfg.max_length, tokenizer.bos_token_id,
                          tokenizer.eos_token_id)
    else:
        encoded = _encode(tokenizer, texts, cfg.max_length)
    model = models.build(model_name, cfg, len(tokenizer), tokenizer.pad_token_id, run_seed(cfg))
    model.get_input_embeddings().weight._lr_scale = cfg.embedding_lr_scale  # tied: the head's too
    for p in models.ssm_state_parameters(model):
        p._lr = cfg.ssm_lr  # BiGS's own learning rate for the S4D kernels' dt and A
    gen = torch.Generator().manual_seed(run_seed(cfg))
    batches = Batches(encoded, cfg.batch_size, run_seed(cfg), masked(tokenizer, cfg.mask_prob, gen),
                      lengths=[len(e) for e in encoded])
    log = fit(model, batches, mlm_objective, cfg.pretrain_steps, cfg.lr, cfg.weight_decay, cfg.warmup_steps,
              state_dir, cfg.log_every, desc=f"pretraining {model_name}", generators=(gen,), count=masked_count,
              mixed_precision=cfg.mixed_precision)
    if not is_main_process():  # the main process writes the checkpoint; the others wait for it
        return wait_for_everyone()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.to_csv(out / "log.csv", index=False)
    valid = _encode(tokenizer, valid_texts, cfg.max_length) if valid_texts else []
    meta = {"model": model_name, "parameters": models.trainable_parameters(model),
            "train_seconds": float(log["seconds"].iloc[-1]) if len(log) else 0.0,
            "unigram_entropy": unigram_entropy(encoded, set(tokenizer.all_special_ids)),
            "valid_mlm_loss": mlm_loss(model, valid, tokenizer, cfg) if valid else None,
            "train_sequences": len(encoded), "train_tokens": sum(len(e) for e in encoded),
            "key": config_key(key or pretrain_key(model_name, cfg), PRETRAIN_VERSION)}
    write_json_atomic(out / "meta.json", meta)
    wait_for_everyone()


def weights_digest(model_name: str, cfg, steps: int, fixed: bool = True) -> str:
    """The sha256 (16 hex digits) of ``model_name``'s weights after ``steps`` pretraining steps
    of ``cfg`` (its seeded initial weights, batches and masks, on at most 256 of its functions)
    through ``fit`` (``fixed``) or through ``fit``'s loop on the caller's threads, as before
    ``workers.single_threaded`` (``fixed=False``)."""
    tokenizer = load_tokenizer(cfg)
    encoded = _encode(tokenizer, pretraining_texts(cfg)[:256], cfg.max_length)
    model = models.build(model_name, cfg, len(tokenizer), tokenizer.pad_token_id, run_seed(cfg))
    gen = torch.Generator().manual_seed(run_seed(cfg))
    batches = Batches(encoded, cfg.batch_size, run_seed(cfg), masked(tokenizer, cfg.mask_prob, gen),
                      lengths=[len(e) for e in encoded])
    (fit if fixed else fit.__wrapped__)(model, batches, mlm_objective, steps, cfg.lr, cfg.weight_decay, 1,
                                        desc="reproducibility", generators=(gen,), count=masked_count)
    flat = b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in model.state_dict().values())
    return hashlib.sha256(flat).hexdigest()[:16]


NARROWER = {"AVX512": ("avx2", "AVX2"), "AVX2": ("default", "SSE4_2")}  # (ATen's, MKL's) next ISA down


def bits_by_schedule(model_name: str, cfg, steps: int = 3) -> pd.DataFrame:
    """``weights_digest`` through ``fit`` and through its loop unfixed, at 1 and 2 threads of
    this process, and through ``fit`` in a process whose ATen and MKL kernels use the next
    narrower vector instructions (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``): as on
    another CPU. Columns: training, threads, vector instructions, weights."""
    threads, rows, isa = torch.get_num_threads(), [], torch.backends.cpu.get_cpu_capability()
    try:
        for fixed in (True, False):
            for n in (1, 2):
                torch.set_num_threads(n)
                rows.append({"training": "fit (one thread)" if fixed else "the loop on the process's threads",
                             "threads": n, "vector instructions": isa,
                             "weights": weights_digest(model_name, cfg, steps, fixed)})
    finally:
        torch.set_num_threads(threads)
    if isa in NARROWER:
        aten, mkl = NARROWER[isa]
        code = ("import pickle, sys; from analysis.train import weights_digest; "
                f"print(weights_digest(*pickle.loads(bytes.fromhex({pickle.dumps((model_name, cfg, steps)).hex()!r}))))")
        env = {**os.environ, "ATEN_CPU_CAPABILITY": aten, "MKL_ENABLE_INSTRUCTIONS": mkl, "TQDM_DISABLE": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        rows.append({"training": "fit (one thread)", "threads": threads, "vector instructions": aten.upper(),
                     "weights": proc.stdout.split()[-1]})
    return pd.DataFrame(rows)
