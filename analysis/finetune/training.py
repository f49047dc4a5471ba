"""Fine-tuning one encoder on one task under identical conditions for every model.

``train_task(net, tokenizer, task, cfg, seed, out, state_dir)`` trains the whole encoder with
the shared loop ``analysis.train.fit`` (AdamW, linear warm-up over the first 10% of steps then
decay, gradient clipping at 1), ``cfg.finetune_steps`` steps of ``cfg.finetune_batch_size``
examples, inputs truncated to the pretraining context ``cfg.max_length``:

- ``search`` / ``long_search``: bi-encoder, in-batch contrastive loss over (query, code);
- ``types``: a linear token-classification head on the last layer (saved beside the encoder).

With ``cfg.finetune_eval_every`` > 0, training stops early (``EarlyStopping``), by one rule for
every model and initialisation: every ``finetune_eval_every`` steps the task's main metric is
measured on a validation set (``validation_split``), the best weights are kept, and training
stops after ``finetune_patience`` measurements without a new best (at most ``finetune_steps``);
the best weights are the result and ``meta.json`` records the steps run and the best step.

The result is an ordinary Hugging Face checkpoint directory (plus ``type_head.pt`` for
``types``), written by the main process. Which base encoder, and caching, are
``analysis.checkpoints``' job. Training runs on ``train.training_device()`` (the GPU when
there is one), and ``load_finetuned`` puts the encoder and its head there too.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import models
from ..cache import save_atomic, write_json_atomic
from ..data import finetune_dataset, type_label_names
from ..data.corpus import corpus_key
from ..data.finetune_sets import TASKS
from ..train import Batches, fit, is_main_process, model_device, precision_key, to_device, training_device, \
    wait_for_everyone
from ..workers import single_threaded
from .scoring import validation_score
from .tasks import TypeHead, centred, contrastive_loss, encode, mean_pool, pool_mask, tokenize, type_batch, type_loss

FT_RUN_VERSION = "4"  # 3: encoders saved as base model + head; 4: last layer read after the final norm
FIELDS = ("finetune_steps", "finetune_batch_size", "finetune_lr", "weight_decay", "max_length",
          "long_context_factor", "type_vocab_size", "finetune_train_size", "finetune_test_size",
          "pool_special_tokens", "finetune_eval_every", "finetune_patience")
MIN_VALID, MAX_VALID = 50, 200  # validation examples for early stopping: fewer -> held out of train
MAIN_METRIC = {"search": "mrr", "long_search": "mrr", "types": "accuracy"}


def check_task(task: str) -> None:
    """Raise a clear error unless ``task`` is a fine-tuning task."""
    if task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {task!r}; tasks: {', '.join(TASKS)}")


def finetune_key(base: dict, task: str, cfg, seed: int) -> dict:
    """What names a fine-tuning run: its base encoder's key, the task, the corpus, the
    fine-tuning fields, the run's own seed and the training precision when not float32
    (``train.precision_key``). The corpus key carries the profile's seed (which drew the
    corpus), so seeds 0, 1, 2 are three runs on one corpus. ``finetune_centred`` names only the
    retrieval runs it changes, and only when set (the runs before it keep their keys)."""
    centred_key = {"finetune_centred": True} if cfg.finetune_centred and task != "types" else {}
    return {"base": base, "task": task, **corpus_key(cfg), **cfg.subset(*FIELDS), "finetune_seed": int(seed),
            **centred_key, **precision_key(cfg)}


def _loss_fn(task: str, tokenizer, cfg, head):
    if task == "types":
        def loss_fn(m, examples):
            return type_loss(m, head, to_device(type_batch(tokenizer, examples, cfg.max_length), model_device(m)))
        return loss_fn

    special_ids = () if cfg.pool_special_tokens else tokenizer.all_special_ids

    def loss_fn(m, examples):
        q = to_device(tokenize(tokenizer, [e["query"] for e in examples], cfg.max_length), model_device(m))
        c = to_device(tokenize(tokenizer, [e["code"] for e in examples], cfg.max_length), model_device(m))
        eq = mean_pool(encode(m, q["input_ids"], q["attention_mask"]),
                       pool_mask(q["input_ids"], q["attention_mask"], special_ids))
        ec = mean_pool(encode(m, c["input_ids"], c["attention_mask"]),
                       pool_mask(c["input_ids"], c["attention_mask"], special_ids))
        if cfg.finetune_centred:  # as search is scored with pool_centre, over the batch here
            eq, ec = centred(eq), centred(ec)
        return contrastive_loss(eq, ec)
    return loss_fn


def validation_split(cfg, task: str, train: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training examples, validation examples) for early stopping: the task's valid split (at
    most ``MAX_VALID``), or, where it has fewer than ``MIN_VALID`` usable examples (type
    annotations are rare in some packages), the last max(``MIN_VALID``, 10%) training examples,
    held out of training."""
    valid = finetune_dataset(cfg, task)["valid"]
    if task == "types":
        valid = [ex for ex in valid if ex["targets"]]
    if len(valid) >= MIN_VALID:
        return train, valid[:MAX_VALID]
    held = min(MAX_VALID, max(MIN_VALID, len(train) // 10))
    if len(train) - held < 2:
        raise ValueError(f"early stopping needs {held} validation examples and 2 to train on; "
                         f"the {task} training set has {len(train)}: use a larger corpus or finetune_eval_every=0")
    return train[:-held], train[-held:]


class EarlyStopping:
    """``stop(step)`` for ``train.fit``: every ``every`` steps score ``evaluate()`` (higher is
    better), keep a copy of the best weights of ``modules``, and say stop after ``patience``
    scores without a new best. Its state is written to ``path`` at every evaluation, so a
    resumed run continues it (a step evaluated before the interruption is not scored again)."""

    def __init__(self, modules: list, evaluate, every: int, patience: int, path: Path | None):
        self.modules, self.evaluate, self.every, self.patience, self.path = modules, evaluate, every, patience, path
        self.state = {"step": 0, "best": -1.0, "best_step": 0, "waited": 0, "stop": False,
                      "weights": [copy.deepcopy(m.state_dict()) for m in modules]}
        if path is not None and path.exists():
            self.state = torch.load(path, weights_only=True)

    def __call__(self, step: int) -> bool:
        if step % self.every or step <= self.state["step"]:
            return self.state["stop"] if step == self.state["step"] else False
        value, st = self.evaluate(), self.state
        for m in self.modules:
            m.train()
        st["step"] = step
        if value > st["best"]:
            st.update(best=value, best_step=step, waited=0, weights=[copy.deepcopy(m.state_dict()) for m in self.modules])
        else:
            st["waited"] += 1
        st["stop"] = st["waited"] >= self.patience
        if self.path is not None:
            save_atomic(self.path, lambda tmp: torch.save(st, tmp))
        return st["stop"]

    def restore(self) -> None:
        """Load the best weights seen (the initial ones if nothing was scored) into the modules."""
        for m, w in zip(self.modules, self.state["weights"]):
            m.load_state_dict(w)


@single_threaded()
def train_task(net, tokenizer, task: str, cfg, seed: int, out: Path, state_dir: Path | None,
               desc: str = "fine-tuning", meta: dict | None = None) -> None:
    """Fine-tune ``net`` on ``task`` and write the checkpoint, ``log.csv`` and ``meta.json``
    (``meta`` plus the run's numbers) to ``out``, on one thread (``workers.single_threaded``: the
    same bits in the pool and in the calling process)."""
    check_task(task)
    train = finetune_dataset(cfg, task)["train"]
    if task == "types":
        train = [ex for ex in train if ex["targets"]]
    if len(train) < 2:
        raise ValueError(f"a fine-tuning training set needs at least 2 examples, got {len(train)}")
    valid = []
    if cfg.finetune_eval_every:
        train, valid = validation_split(cfg, task, train)
    batches = Batches(train, cfg.finetune_batch_size, seed)
    torch.manual_seed(seed)
    head = TypeHead(net.config.hidden_size, len(type_label_names(cfg))) if task == "types" else None
    if head is not None:
        head.to(training_device())  # fit moves the encoder there
    steps, early = cfg.finetune_steps, None
    if cfg.finetune_eval_every:
        early = EarlyStopping([net] + ([head] if head is not None else []),
                              lambda: validation_score(net, tokenizer, head, task, cfg, valid),
                              cfg.finetune_eval_every, cfg.finetune_patience,
                              state_dir / "early.pt" if state_dir is not None else None)
    log = fit(net, batches, _loss_fn(task, tokenizer, cfg, head), steps, cfg.finetune_lr, cfg.weight_decay,
              max(1, steps // 10), state_dir, max(1, min(cfg.log_every, steps)), desc=desc,
              extra_params=list(head.parameters()) if head is not None else (), mixed_precision=cfg.mixed_precision,
              stop=early)
    if early is not None:
        early.restore()
        meta = {**(meta or {}), "steps_run": int(log["step"].iloc[-1]), "best_step": early.state["best_step"],
                "valid_score": early.state["best"], "valid_examples": len(valid)}
    if not is_main_process():  # the main process writes the checkpoint; the others wait for it
        return wait_for_everyone()
    net.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if head is not None:
        torch.save(head.cpu().state_dict(), out / "type_head.pt")
    log.to_csv(out / "log.csv", index=False)
    write_json_atomic(out / "meta.json", {
        **(meta or {}), "task": task, "seed": seed, "train_examples": len(train),
        "train_seconds": float(log["seconds"].iloc[-1]) if len(log) else 0.0})
    wait_for_everyone()


def load_finetuned(path: Path):
    """(encoder, tokenizer, type head or None) of a fine-tuned checkpoint directory, the encoder
    and head on ``train.training_device()``."""
    net, tokenizer = models.load_checkpoint(path)
    head = None
    if (Path(path) / "type_head.pt").exists():
        state = torch.load(Path(path) / "type_head.pt", map_location="cpu", weights_only=True)
        head = TypeHead(state["proj.weight"].shape[1], state["proj.weight"].shape[0])
        head.load_state_dict(state)
        head.eval().to(training_device())
    return net.to(training_device()), tokenizer, head

