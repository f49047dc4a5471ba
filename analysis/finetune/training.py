"""Fine-tuning one encoder on one task under identical conditions for every model.

``train_task(net, tokenizer, task, cfg, seed, out, state_dir)`` trains the whole encoder with
the shared loop ``analysis.train.fit`` (AdamW, linear warm-up over the first 10% of steps then
decay, gradient clipping at 1), ``cfg.finetune_steps`` steps of ``cfg.finetune_batch_size``
examples, inputs truncated to the pretraining context ``cfg.max_length``:

- ``search`` / ``long_search``: bi-encoder, in-batch contrastive loss over (query, code);
- ``types``: a linear token-classification head on the last layer (saved beside the encoder).

The result is an ordinary Hugging Face checkpoint directory (plus ``type_head.pt`` for
``types``). Which base encoder, and caching, are ``analysis.checkpoints``' job.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import models
from ..cache import write_json_atomic
from ..data import finetune_dataset, type_label_names
from ..data.corpus import corpus_key
from ..data.finetune_sets import TASKS
from ..train import Batches, fit
from .tasks import TypeHead, contrastive_loss, encode, mean_pool, pool_mask, tokenize, type_batch, type_loss

FT_RUN_VERSION = "4"  # 3: encoders saved as base model + head; 4: last layer read after the final norm
FIELDS = ("finetune_steps", "finetune_batch_size", "finetune_lr", "weight_decay", "max_length",
          "long_context_factor", "type_vocab_size", "finetune_train_size", "finetune_test_size",
          "pool_special_tokens")
MAIN_METRIC = {"search": "mrr", "long_search": "mrr", "types": "accuracy"}


def check_task(task: str) -> None:
    """Raise a clear error unless ``task`` is a fine-tuning task."""
    if task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {task!r}; tasks: {', '.join(TASKS)}")


def finetune_key(base: dict, task: str, cfg, seed: int) -> dict:
    """What names a fine-tuning run: its base encoder's key, the task, the corpus, the
    fine-tuning fields and the run's own seed. The corpus key carries the profile's seed
    (which drew the corpus), so seeds 0, 1, 2 are three runs on one corpus."""
    return {"base": base, "task": task, **corpus_key(cfg), **cfg.subset(*FIELDS), "finetune_seed": int(seed)}


def _loss_fn(task: str, tokenizer, cfg, head):
    if task == "types":
        def loss_fn(m, examples):
            return type_loss(m, head, type_batch(tokenizer, examples, cfg.max_length))
        return loss_fn

    special_ids = () if cfg.pool_special_tokens else tokenizer.all_special_ids

    def loss_fn(m, examples):
        q = tokenize(tokenizer, [e["query"] for e in examples], cfg.max_length)
        c = tokenize(tokenizer, [e["code"] for e in examples], cfg.max_length)
        eq = mean_pool(encode(m, q["input_ids"], q["attention_mask"]), pool_mask(q["input_ids"], q["attention_mask"], special_ids))
        ec = mean_pool(encode(m, c["input_ids"], c["attention_mask"]), pool_mask(c["input_ids"], c["attention_mask"], special_ids))
        return contrastive_loss(eq, ec)
    return loss_fn


def train_task(net, tokenizer, task: str, cfg, seed: int, out: Path, state_dir: Path | None,
               desc: str = "fine-tuning", meta: dict | None = None) -> None:
    """Fine-tune ``net`` on ``task`` and write the checkpoint, ``log.csv`` and ``meta.json``
    (``meta`` plus the run's numbers) to ``out``."""
    check_task(task)
    train = finetune_dataset(cfg, task)["train"]
    if task == "types":
        train = [ex for ex in train if ex["targets"]]
    if len(train) < 2:
        raise ValueError(f"a fine-tuning training set needs at least 2 examples, got {len(train)}")
    batches = Batches(train, cfg.finetune_batch_size, seed)
    torch.manual_seed(seed)
    head = TypeHead(net.config.hidden_size, len(type_label_names(cfg))) if task == "types" else None
    steps = cfg.finetune_steps
    log = fit(net, batches, _loss_fn(task, tokenizer, cfg, head), steps, cfg.finetune_lr, cfg.weight_decay,
              max(1, steps // 10), state_dir, max(1, min(cfg.log_every, steps)), desc=desc,
              extra_params=list(head.parameters()) if head is not None else ())
    net.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if head is not None:
        torch.save(head.state_dict(), out / "type_head.pt")
    log.to_csv(out / "log.csv", index=False)
    write_json_atomic(out / "meta.json", {
        **(meta or {}), "task": task, "seed": seed, "train_examples": len(train),
        "train_seconds": float(log["seconds"].iloc[-1]) if len(log) else 0.0})


def load_finetuned(path: Path):
    """(encoder, tokenizer, type head or None) of a fine-tuned checkpoint directory."""
    net, tokenizer = models.load_checkpoint(path)
    head = None
    if (Path(path) / "type_head.pt").exists():
        state = torch.load(Path(path) / "type_head.pt", weights_only=True)
        head = TypeHead(state["proj.weight"].shape[1], state["proj.weight"].shape[0])
        head.load_state_dict(state)
        head.eval()
    return net, tokenizer, head

