"""Fine-tuned encoders scored on their test splits: the tables chapters 04 and 06 show.

``evaluate(model, task, cfg, seed, from_pretrained)`` scores one fine-tuning run (trained on
demand by ``analysis.checkpoints``), cached; ``scores`` gathers a tidy table over models,
tasks, seeds and both initialisations, running runs not yet cached as jobs of
``analysis.workers`` (one thread each, side by side), BiMamba's first (its CPU scan makes them
the longest), so the last job to finish is a short one. ``zero_shot_search`` scores the
encoders before any fine-tuning.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import checkpoints, models
from .cache import cached, is_cached, write_json_atomic
from .data import finetune_dataset, load_tokenizer
from .finetune import check_task, finetune_key, load_finetuned, score, zero_shot
from .train import training_device
from .workers import run_jobs

EVAL_VERSION = "4"  # 3: base model + head; 4: last layer after the final norm
COLUMNS = ["model", "init", "task", "seed", "metric", "value"]


def _scores_key(model: str, task: str, cfg, seed: int, from_pretrained: bool) -> dict:
    base = checkpoints.base_key(model, cfg, from_pretrained)
    return {**finetune_key(base, task, cfg, seed), **cfg.subset("search_distractors")}


def evaluate(model: str, task: str, cfg, seed: int | None = None, from_pretrained: bool = True) -> dict:
    """Test-split scores of the fine-tuned ``model`` on ``task`` (cached)."""
    seed = cfg.seed if seed is None else int(seed)
    path = checkpoints.finetuned(model, task, cfg, seed, from_pretrained)

    def build(out: Path) -> None:
        write_json_atomic(out / "scores.json", score(*load_finetuned(path), task, cfg))

    return cached("finetune-scores", _scores_key(model, task, cfg, seed, from_pretrained), build,
                  lambda p: json.loads((p / "scores.json").read_text()), EVAL_VERSION)


def zero_shot_search(model: str, cfg, from_pretrained: bool = True, n: int = 300) -> dict:
    """``finetune.zero_shot`` of ``model``'s encoder before fine-tuning, on
    ``train.training_device()``. Explains a random-init baseline that beats pretraining."""
    net, tokenizer = checkpoints.load(model, cfg, from_pretrained, seed=cfg.seed)
    return zero_shot(net.to(training_device()), tokenizer, cfg, n)


def _finetuned_scores(model: str, task: str, cfg, seed: int, from_pretrained: bool) -> dict:
    """One fine-tuning run (trained if not cached) and its test scores, with its training time.
    Module-level: ``scores`` runs it in worker processes."""
    meta = json.loads((checkpoints.finetuned(model, task, cfg, seed, from_pretrained) / "meta.json").read_text())
    return {**evaluate(model, task, cfg, seed, from_pretrained), "train_seconds": meta["train_seconds"]}


def _prepare_shared(models_: list[str], tasks: list[str], cfg, from_pretrained: bool) -> None:
    """Build, in this process, the artifacts several fine-tuning runs share (tokenizer,
    fine-tuning sets, pretrained checkpoints), so that worker processes never build one twice."""
    load_tokenizer(cfg)
    for t in tasks:
        finetune_dataset(cfg, t)
    if from_pretrained:
        for m in models_:
            checkpoints.pretrained(m, cfg)


def scores(models_: list[str], tasks: list[str], cfg, seeds: int | None = None, baselines: bool = True,
           progress: bool = True) -> pd.DataFrame:
    """Tidy test scores: model, init ("pretrained" / "random"), task, seed, metric, value."""
    for m in models_:
        models.check_name(m)
    for t in tasks:
        check_task(t)
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
        result = done.get(run) or _finetuned_scores(*run[:2], cfg, *run[2:])
        m, t, s, p = run
        rows += [{"model": m, "init": "pretrained" if p else "random", "task": t, "seed": s,
                  "metric": k, "value": float(v)} for k, v in result.items()]
    return pd.DataFrame(rows, columns=COLUMNS)
