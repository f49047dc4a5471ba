"""Fine-tuning under identical conditions, its evaluation, and what it makes a model forget.

``finetune(model, task, cfg, seed, pretrained)`` starts from the pretrained checkpoint (or,
with ``pretrained=False``, from the same architecture's seeded random weights: the
baseline) and trains the whole encoder on ``task`` with the shared loop
``analysis.train.fit`` (AdamW, linear warm-up over the first 10% of steps then decay,
gradient clipping at 1), ``cfg.finetune_steps`` steps of ``cfg.finetune_batch_size``
examples, inputs truncated to the pretraining context ``cfg.max_length``:

- ``search`` / ``long_search``: bi-encoder, in-batch contrastive loss over (query, code);
- ``types``: a linear token-classification head on the last layer (saved beside the encoder).

The result is an ordinary Hugging Face checkpoint directory of the encoder (plus
``type_head.pt`` for ``types``), cached like pretraining and resumable.

``evaluate`` scores a fine-tuned checkpoint on the test split:

- ``search``: MRR of each query's function among the whole test pool, and with
  ``cfg.search_distractors`` random distractors (CodeSearchNet: 999);
- ``long_search``: the same, with the functions encoded at their full length (beyond the
  pretraining context: length extrapolation) and, for comparison, truncated to it;
- ``types``: accuracy, macro-F1, accuracy on the 5 most common types and on the rest, over
  the annotations within the first ``cfg.max_length`` subwords (the training context).

``forgetting`` re-runs the probes of ``analysis.probing`` on a fine-tuned checkpoint:
forgetting = probe score after fine-tuning - before (negative = forgotten).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..cache import cached, config_key, scratch_dir, write_json_atomic
from .metrics import classification_scores, mean_pairwise_cosine, mrr, mrr_with_distractors
from .tasks import TypeHead, contrastive_loss, embed, encode, mean_pool, tokenize, type_batch, \
    type_loss, type_predictions

FT_RUN_VERSION = "2"
EVAL_VERSION = "2"
TASKS = ("search", "long_search", "types")
FIELDS = ("finetune_steps", "finetune_batch_size", "finetune_lr", "weight_decay", "max_length",
          "long_context_factor", "type_vocab_size", "finetune_train_size", "finetune_test_size")
MAIN_METRIC = {"search": "mrr", "long_search": "mrr", "types": "accuracy"}


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {task!r}; tasks: {', '.join(TASKS)}")


def finetune_key(model: str, task: str, cfg, seed: int, pretrained: bool) -> dict:
    from ..data.corpus import corpus_key
    from ..train import MODEL_FIELDS, pretrain_key
    base = pretrain_key(model, cfg) if pretrained else \
        {"random": model, **cfg.subset("vocab_size", "seed", *MODEL_FIELDS)}
    # the corpus key carries the profile's seed (which drew the corpus); the run's own seed is
    # a separate field so that seeds 0, 1, 2 are three runs on one corpus
    return {"base": base, "task": task, **corpus_key(cfg), **cfg.subset(*FIELDS), "finetune_seed": int(seed)}


class ExampleBatches:
    """Endless seeded batches of examples, reshuffled every epoch; ``skip(n)`` for resuming."""

    def __init__(self, examples: list, batch_size: int, seed: int):
        if len(examples) < 2:
            raise ValueError(f"a fine-tuning training set needs at least 2 examples, got {len(examples)}")
        self.examples, self.batch_size = examples, min(batch_size, len(examples))
        self.rng = np.random.default_rng(seed)
        self.order, self.pos = self.rng.permutation(len(examples)), 0

    def _indices(self):
        if self.pos + self.batch_size > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.examples)), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def skip(self, n: int) -> None:
        for _ in range(n):
            self._indices()

    def __iter__(self):
        return self

    def __next__(self):
        return [self.examples[i] for i in self._indices()]


def _base_model(model: str, cfg, pretrained: bool):
    from .. import models
    if pretrained:
        from ..train import pretrain
        return models.load_checkpoint(pretrain(model, cfg))
    return models.load(model, cfg, pretrained=False, seed=cfg.seed)


def _build(model: str, task: str, cfg, seed: int, pretrained: bool, out: Path) -> None:
    from ..data import finetune_dataset, type_label_names
    from ..train import fit

    net, tokenizer = _base_model(model, cfg, pretrained)
    train = finetune_dataset(cfg, task)["train"]
    if task == "types":
        train = [ex for ex in train if ex["targets"]]
    batches = ExampleBatches(train, cfg.finetune_batch_size, seed)
    torch.manual_seed(seed)
    head = None
    if task == "types":
        head = TypeHead(net.config.hidden_size, len(type_label_names(cfg)))

        def loss_fn(m, examples):
            return type_loss(m, head, type_batch(tokenizer, examples, cfg.max_length))
    else:
        def loss_fn(m, examples):
            q = tokenize(tokenizer, [e["query"] for e in examples], cfg.max_length)
            c = tokenize(tokenizer, [e["code"] for e in examples], cfg.max_length)
            eq = mean_pool(encode(m, q["input_ids"], q["attention_mask"]), q["attention_mask"])
            ec = mean_pool(encode(m, c["input_ids"], c["attention_mask"]), c["attention_mask"])
            return contrastive_loss(eq, ec)

    key = finetune_key(model, task, cfg, seed, pretrained)
    steps = cfg.finetune_steps
    log = fit(net, batches, loss_fn, steps, cfg.finetune_lr, cfg.weight_decay, max(1, steps // 10),
              scratch_dir("finetune", key, FT_RUN_VERSION), max(1, min(cfg.log_every, steps)),
              desc=f"fine-tuning {model} on {task}" + ("" if pretrained else " (random init)"),
              extra_params=list(head.parameters()) if head is not None else ())
    net.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if head is not None:
        torch.save(head.state_dict(), out / "type_head.pt")
    log.to_csv(out / "log.csv", index=False)
    write_json_atomic(out / "meta.json", {
        "model": model, "task": task, "seed": seed, "pretrained": pretrained,
        "train_examples": len(train), "train_seconds": float(log["seconds"].iloc[-1]) if len(log) else 0.0,
        "key": config_key(key, FT_RUN_VERSION)})


def _verify(path: Path) -> Path:
    """A cache hit: the checkpoint's config and weights header read and its metadata parse."""
    from ..models import check_checkpoint
    check_checkpoint(path)
    json.loads((path / "meta.json").read_text())
    return path


def finetune(model: str, task: str, cfg, seed: int | None = None, pretrained: bool = True) -> Path:
    """The fine-tuned checkpoint directory of ``model`` on ``task`` (trained once, cached)."""
    from ..models import _check_name
    _check_name(model)
    _check(task)
    seed = cfg.seed if seed is None else int(seed)
    return cached("finetune", finetune_key(model, task, cfg, seed, pretrained),
                  lambda out: _build(model, task, cfg, seed, pretrained, out), _verify, FT_RUN_VERSION)


def load_finetuned(path: Path):
    """(encoder, tokenizer, type head or None) of a fine-tuned checkpoint directory."""
    from .. import models
    net, tokenizer = models.load_checkpoint(path)
    head = None
    if (Path(path) / "type_head.pt").exists():
        state = torch.load(Path(path) / "type_head.pt", weights_only=True)
        head = TypeHead(state["proj.weight"].shape[1], state["proj.weight"].shape[0])
        head.load_state_dict(state)
        head.eval()
    return net, tokenizer, head


def _score(path: Path, task: str, cfg) -> dict:
    from ..data import finetune_dataset, type_label_names

    net, tokenizer, head = load_finetuned(path)
    test = finetune_dataset(cfg, task)["test"]
    if task == "types":
        test = [ex for ex in test if ex["targets"]]
    if len(test) < 2:
        raise ValueError(f"the {task} test split has {len(test)} examples; use a larger corpus")
    t0 = time.perf_counter()
    if task == "types":
        # scored within the training context: annotations past cfg.max_length subwords are not
        # scored, the same ones for every model (they share the tokenizer); length
        # extrapolation is the long_search task's question
        gold, pred = type_predictions(net, head, tokenizer, test, max_length=cfg.max_length)
        out = classification_scores(gold, pred, len(type_label_names(cfg)))
        out["tokens"] = int(len(gold))
    else:
        queries = embed(net, tokenizer, [e["query"] for e in test], cfg.max_length)
        lengths = {"mrr": None} if task == "long_search" else {"mrr": cfg.max_length}
        if task == "long_search":
            lengths["mrr_truncated"] = cfg.max_length
        out = {}
        for name, max_length in lengths.items():
            codes = embed(net, tokenizer, [e["code"] for e in test], max_length)
            scores = (queries @ codes.T).numpy()
            out[name] = mrr(scores)
            if name == "mrr":
                out["mrr_distractors"] = mrr_with_distractors(scores, cfg.search_distractors, cfg.seed)
        out["pool"] = len(test)
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def zero_shot_search(model: str, cfg, pretrained: bool = True, n: int = 300) -> dict:
    """The encoder before any fine-tuning, on the first ``n`` search test pairs: MRR of its
    mean-pooled embeddings, the same from its token embeddings alone (layer 0: a bag of
    tokens, no context), and the mean cosine between two functions' embeddings
    (``metrics.mean_pairwise_cosine``). Explains a random-init baseline that beats pretraining."""
    from ..data import finetune_dataset

    net, tokenizer = _base_model(model, cfg, pretrained)
    test = finetune_dataset(cfg, "search")["test"][:n]
    if len(test) < 2:
        raise ValueError(f"the search test split has {len(test)} examples; use a larger corpus")
    out = {}
    for layer, name in ((-1, "zero-shot MRR"), (0, "zero-shot MRR, token embeddings alone")):
        queries = embed(net, tokenizer, [e["query"] for e in test], cfg.max_length, layer=layer)
        codes = embed(net, tokenizer, [e["code"] for e in test], cfg.max_length, layer=layer)
        out[name] = mrr((queries @ codes.T).numpy())
        if layer == -1:
            out["mean cosine between functions"] = mean_pairwise_cosine(codes.numpy())
    return {**out, "pairs": len(test)}


def _scores_key(model: str, task: str, cfg, seed: int, pretrained: bool) -> dict:
    return {**finetune_key(model, task, cfg, seed, pretrained), **cfg.subset("search_distractors")}


def evaluate(model: str, task: str, cfg, seed: int | None = None, pretrained: bool = True) -> dict:
    """Test-split scores of the fine-tuned ``model`` on ``task`` (cached)."""
    seed = cfg.seed if seed is None else int(seed)
    path = finetune(model, task, cfg, seed, pretrained)
    key = _scores_key(model, task, cfg, seed, pretrained)

    def build(out: Path) -> None:
        write_json_atomic(out / "scores.json", _score(path, task, cfg))

    return cached("finetune-scores", key, build, lambda p: json.loads((p / "scores.json").read_text()),
                  EVAL_VERSION)


def _finetuned_scores(model: str, task: str, cfg, seed: int, pretrained: bool) -> dict:
    """One fine-tuning run (trained if not cached) and its test scores, with its training time.
    Module-level: ``scores`` runs it in worker processes."""
    meta = json.loads((finetune(model, task, cfg, seed, pretrained) / "meta.json").read_text())
    return {**evaluate(model, task, cfg, seed, pretrained), "train_seconds": meta["train_seconds"]}


def _prepare_shared(models_: list[str], tasks: list[str], cfg, pretrained: bool) -> None:
    """Build, in this process, the artifacts several fine-tuning runs share (tokenizer,
    fine-tuning sets, pretrained checkpoints), so that worker processes never build one twice."""
    from ..data import finetune_dataset, load_tokenizer
    from ..train import pretrain

    load_tokenizer(cfg)
    for t in tasks:
        finetune_dataset(cfg, t)
    if pretrained:
        for m in models_:
            pretrain(m, cfg)


def scores(models_: list[str], tasks: list[str], cfg, seeds: int | None = None, baselines: bool = True,
           progress: bool = True) -> pd.DataFrame:
    """Tidy test scores: model, init ("pretrained" / "random"), task, seed, metric, value.

    Runs not yet cached are trained and scored as jobs of ``analysis.workers`` (one thread
    each, two side by side on 2 cores: at default, 18 runs in 17.7 min where their training
    alone took 22.4 min one at a time on 2 threads), BiMamba's first (its CPU scan makes them
    the longest), so the last job to finish is a short one."""
    from ..cache import is_cached
    from ..models import _check_name
    from ..workers import run_jobs

    for m in models_:
        _check_name(m)
    for t in tasks:
        _check(t)
    seeds = cfg.seeds if seeds is None else seeds
    inits = (True, False) if baselines else (True,)
    runs = [(m, t, s, p) for m in models_ for t in tasks for p in inits for s in range(cfg.seed, cfg.seed + seeds)]
    todo = [r for r in runs if not is_cached("finetune-scores", _scores_key(*r[:2], cfg, *r[2:]), EVAL_VERSION)]
    if todo:
        _prepare_shared(models_, tasks, cfg, any(r[3] for r in todo))
    todo.sort(key=lambda r: r[0] != "bimamba")  # stable: otherwise in the given order
    done = dict(zip(todo, run_jobs([(_finetuned_scores, (m, t, cfg, s, p)) for m, t, s, p in todo],
                                   "fine-tuning runs", progress)))
    rows = []
    for run in runs:
        result = done.get(run) or _finetuned_scores(run[0], run[1], cfg, run[2], run[3])
        m, t, s, p = run
        rows += [{"model": m, "init": "pretrained" if p else "random", "task": t, "seed": s,
                  "metric": k, "value": float(v)} for k, v in result.items()]
    return pd.DataFrame(rows, columns=["model", "init", "task", "seed", "metric", "value"])


def forgetting(models_: list[str], tasks: list[str], probe_tasks: list[str], cfg,
               progress: bool = True) -> pd.DataFrame:
    """Probe scores before (pretrained) and after fine-tuning on each task, per layer:
    columns model, task, probe_task, layer, probe, metric, before, after, change."""
    from ..probing import run

    frames = []
    for m in models_:
        for pt in probe_tasks:
            before = run(m, pt, cfg, "pretrained", progress=progress)
            for t in tasks:
                after = run(m, pt, cfg, f"finetuned:{t}", progress=progress)
                merged = before.merge(after, on=["model", "task", "layer", "probe", "metric"],
                                      suffixes=("_before", "_after"))
                frames.append(pd.DataFrame({
                    "model": m, "task": t, "probe_task": pt, "layer": merged["layer"],
                    "probe": merged["probe"], "metric": merged["metric"],
                    "before": merged["value_before"], "after": merged["value_after"],
                    "change": merged["value_after"] - merged["value_before"]}))
    return pd.concat(frames, ignore_index=True)
