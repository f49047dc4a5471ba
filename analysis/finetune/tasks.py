"""The three fine-tuning tasks as losses and evaluations over any encoder.

An *encoder* here is any of the project's masked-LM models: ``encode(model, ids, mask)``
returns its last hidden layer ``[batch, length, dim]`` (``models.encoder_states``), so the
same code serves CodeSSM, RoCoder and BiMamba.

NL code search (and long-context retrieval) is a bi-encoder with one shared encoder:
``e(x) = normalise(mean_t h_t(x))`` over real (unmasked) tokens (``pool_mask``: without
``<s>``/``</s>`` when ``cfg.pool_special_tokens`` is False), trained with the symmetric
in-batch contrastive loss (InfoNCE)

    L = 1/2 [ CE(S, diag) + CE(S^T, diag) ],   S_ij = e(q_i) . e(c_j) / tau,

and evaluated by MRR of each query's function among the test pool (``metrics``).

Type inference is token classification: a linear head on the last hidden layer predicts
the removed annotation of each annotated identifier; the label sits on the identifier's
first subword, every other position is ignored (-100).

Devices: the losses take their batches on the model's device (the training loop and the
fine-tuning losses move them there); ``embed`` and ``type_predictions`` move each batch to
``model_device(model)`` and return their results on the CPU.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import encoder_states
from ..train import model_device, to_device

IGNORE = -100


def encode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden layer of ``model``: [batch, length, dim] (its LM head is not run)."""
    return encoder_states(model, input_ids, attention_mask)[-1]


def pool_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids=()) -> torch.Tensor:
    """The positions mean pooling averages, r(B L): real tokens other than ``special_ids``
    (e.g. <s>, </s>); a sequence holding nothing else keeps its real tokens (never an empty mean)."""
    keep = attention_mask.bool() & ~torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype,
                                                                    device=input_ids.device))
    return torch.where(keep.any(1, keepdim=True), keep, attention_mask.bool()).long()


def centred(vectors: torch.Tensor) -> torch.Tensor:
    """Rows r(n D) minus their mean, L2-normalised: (v_i - mean_j v_j) / |v_i - mean_j v_j|.
    Removes the direction all embeddings share (anisotropy), which otherwise dominates cosines."""
    return F.normalize(vectors - vectors.mean(0, keepdim=True), dim=-1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, L2-normalised. hidden: [batch, length, dim]; mask: [batch, length]."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return F.normalize(pooled, dim=-1)


def contrastive_loss(queries: torch.Tensor, codes: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives; row i of each is a positive pair."""
    if queries.shape != codes.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and codes {tuple(codes.shape)} differ")
    logits = queries @ codes.T / temperature
    target = torch.arange(len(queries), device=queries.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def tokenize(tokenizer, texts: list[str], max_length: int | None):
    """Padded batch with offsets; ``max_length=None`` keeps every token (SSMs and rotary
    attention take any length)."""
    return tokenizer(texts, padding=True, truncation=max_length is not None, max_length=max_length,
                     return_offsets_mapping=True, return_tensors="pt")


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], max_length: int | None, batch_size: int = 16,
          progress: bool = False, layer: int = -1, specials: bool = True) -> torch.Tensor:
    """Normalised mean-pooled embeddings of ``texts``: [n, dim] on the CPU, from the last hidden
    layer (``layer=0``: the token embeddings alone, before any layer mixes in context),
    averaging the special tokens too unless ``specials`` is False."""
    special_ids = () if specials else tokenizer.all_special_ids

    model.eval()
    device = model_device(model)
    order = np.argsort([len(t) for t in texts])  # similar lengths share a batch
    out = [None] * len(texts)
    starts = range(0, len(texts), batch_size)
    for s in tqdm(starts, desc="embedding", disable=not progress, leave=False):
        idx = order[s:s + batch_size]
        enc = to_device(tokenize(tokenizer, [texts[i] for i in idx], max_length), device)
        hidden = encoder_states(model, enc["input_ids"], enc["attention_mask"])[layer]
        vec = mean_pool(hidden, pool_mask(enc["input_ids"], enc["attention_mask"], special_ids)).cpu()
        for k, i in enumerate(idx):
            out[i] = vec[k]
    return torch.stack(out) if out else torch.empty(0)


def type_labels_for(offsets: list[tuple[int, int]], targets: list[tuple[int, int, int]]) -> list[int]:
    """Per-subword labels: each target span ``(start_char, end_char, label)`` labels the first
    subword that overlaps it; all other subwords are ``IGNORE``."""
    labels = [IGNORE] * len(offsets)
    for start, end, label in targets:
        for k, (s, e) in enumerate(offsets):
            if e > s and s < end and e > start:
                labels[k] = int(label)
                break
    return labels


class TypeHead(nn.Module):
    """Linear token classifier over the encoder's last layer."""

    def __init__(self, d_model: int, n_labels: int):
        super().__init__()
        self.proj = nn.Linear(d_model, n_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # hidden: [batch, length, dim]
        return self.proj(hidden)


def type_batch(tokenizer, examples: list[dict], max_length: int | None) -> dict:
    enc = tokenize(tokenizer, [e["code"] for e in examples], max_length)
    labels = [type_labels_for(off.tolist(), e["targets"]) for off, e in zip(enc["offset_mapping"], examples)]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor(labels, dtype=torch.long)}


def type_loss(model, head: TypeHead, batch: dict) -> torch.Tensor:
    logits = head(encode(model, batch["input_ids"], batch["attention_mask"]))
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)


@torch.no_grad()
def type_predictions(model, head: TypeHead, tokenizer, examples: list[dict], max_length: int | None,
                     batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(gold, predicted) labels of every labelled identifier in ``examples``. The ``head`` is
    moved to the model's device."""
    model.eval()
    device = model_device(model)
    head.to(device)
    gold, pred = [], []
    for s in range(0, len(examples), batch_size):
        batch = type_batch(tokenizer, examples[s:s + batch_size], max_length)
        logits = head(encode(model, *to_device((batch["input_ids"], batch["attention_mask"]), device)))
        keep = batch["labels"] != IGNORE
        gold.append(batch["labels"][keep].numpy())
        pred.append(logits.argmax(-1).cpu()[keep].numpy())
    return (np.concatenate(gold) if gold else np.array([], int),
            np.concatenate(pred) if pred else np.array([], int))
