"""Fine-tuned encoders scored on their test splits: the tables chapters 04 and 06 show.

``evaluate(model, task, cfg, seed, from_pretrained)`` scores one fine-tuning run (trained on
demand by ``analysis.checkpoints``), cached; ``scores`` gathers a tidy table over models,
tasks, seeds and both initialisations, running runs not yet cached as jobs of
``analysis.workers`` (one thread each, side by side), BiMamba's first (its CPU scan makes them
the longest), so the last job to finish is a short one. ``item_scores`` gives the same runs
per test item (for the paired bootstraps of ``analysis.claims``). ``zero_shot_search`` scores
the encoders before any fine-tuning, ``mlm_table`` their held-out masked-LM loss.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import checkpoints, models
from .cache import cached, is_cached, write_json_atomic
from .data import finetune_dataset, load_tokenizer
from .data.probes import TASKS as PROBE_TASKS
from .finetune import check_task, finetune_key, load_finetuned, score, zero_shot
from .probing import items_many
from .train import training_device
from .workers import run_jobs

EVAL_VERSION = "5"  # 3: base model + head; 4: last layer after the final norm; 5: per-item scores
COLUMNS = ["model", "init", "task", "seed", "metric", "value"]


def _scores_key(model: str, task: str, cfg, seed: int, from_pretrained: bool) -> dict:
    base = checkpoints.base_key(model, cfg, from_pretrained)
    return {**finetune_key(base, task, cfg, seed), **cfg.subset("search_distractors")}


def _scores_artifact(model: str, task: str, cfg, seed: int, from_pretrained: bool) -> Path:
    """The cached directory of one run's test scores: ``scores.json`` and ``items.csv``."""
    path = checkpoints.finetuned(model, task, cfg, seed, from_pretrained)

    def build(out: Path) -> None:
        summary, items = score(*load_finetuned(path), task, cfg)
        write_json_atomic(out / "scores.json", summary)
        items.to_csv(out / "items.csv", index=False)

    def load(p: Path) -> Path:
        json.loads((p / "scores.json").read_text()), pd.read_csv(p / "items.csv")  # a damaged file is rebuilt
        return p

    return cached("finetune-scores", _scores_key(model, task, cfg, seed, from_pretrained), build, load, EVAL_VERSION)


def evaluate(model: str, task: str, cfg, seed: int | None = None, from_pretrained: bool = True) -> dict:
    """Test-split scores of the fine-tuned ``model`` on ``task`` (cached)."""
    seed = cfg.seed if seed is None else int(seed)
    return json.loads((_scores_artifact(model, task, cfg, seed, from_pretrained) / "scores.json").read_text())


def zero_shot_search(model: str, cfg, from_pretrained: bool = True, n: int = 300, items: bool = False):
    """``finetune.zero_shot`` of ``model``'s encoder before fine-tuning, on
    ``train.training_device()`` (its summary; with
    ``items``, (summary, reciprocal rank per query)). Explains a random-init baseline that
    beats pretraining, and feeds the pretraining gate."""
    net, tokenizer = checkpoints.load(model, cfg, from_pretrained)
    summary, per_query = zero_shot(net.to(training_device()), tokenizer, cfg, n)
    return (summary, per_query) if items else summary


def zero_shot_items(models_: list[str], cfg, n: int = 300) -> pd.DataFrame:
    """Reciprocal rank per search query before fine-tuning, pretrained and random init: the
    ``zero_shot`` frame of ``claims.pretraining_gate`` (model, init, task, item, reciprocal_rank)."""
    frames = [zero_shot_search(m, cfg, p, n, items=True)[1].assign(model=m, init="pretrained" if p else "random",
                                                                    task="search")
              for m in models_ for p in (True, False)]
    return pd.concat(frames, ignore_index=True)


def pretraining_runs(cfg) -> list:
    """The profiles of pretraining runs 0 .. ``cfg.pretrain_seeds`` - 1 (``pretrain_seed``)."""
    return [cfg.replace(pretrain_seed=r) for r in range(cfg.pretrain_seeds)]


def over_pretraining_runs(frame_of, cfg) -> pd.DataFrame:
    """``frame_of(run_cfg)`` for every pretraining run, with a ``pretrain_seed`` column: the
    analyses bootstrap over those runs as well as over test items (``analysis.claims``)."""
    return pd.concat([frame_of(c).assign(pretrain_seed=c.pretrain_seed) for c in pretraining_runs(cfg)],
                     ignore_index=True)


def gate_inputs(models_: list[str], cfg) -> dict:
    """The evidence of ``claims.pretraining_gate`` for ``models_``, the same in every chapter,
    over every pretraining run: held-out MLM loss against the unigram baseline (``mlm``),
    DirectProbe per test pair of the pretrained and random-init encoders on every probing task
    (``probing``), and zero-shot search per query of both (``zero_shot``)."""
    return {"mlm": over_pretraining_runs(lambda c: mlm_table(models_, c), cfg),
            "probing": over_pretraining_runs(
                lambda c: items_many(models_, list(PROBE_TASKS), c, checkpoints=("pretrained", "random")), cfg),
            "zero_shot": over_pretraining_runs(lambda c: zero_shot_items(models_, c), cfg)}


def mlm_table(models_: list[str], cfg) -> pd.DataFrame:
    """Held-out masked-LM loss and the unigram baseline of each pretrained model (nats per
    masked token): the ``mlm`` frame of ``claims.pretraining_gate``."""
    rows = []
    for m in models_:
        meta = checkpoints.pretraining_meta(m, cfg)
        rows.append({"model": m, "heldout_loss": meta["valid_mlm_loss"], "unigram_loss": meta["unigram_entropy"]})
    return pd.DataFrame(rows)


def _finetuned_scores(model: str, task: str, cfg, seed: int, from_pretrained: bool) -> dict:
    """One fine-tuning run (trained if not cached) and its test scores, with its training time.
    Module-level: ``scores`` runs it in worker processes."""
    meta = json.loads((checkpoints.finetuned(model, task, cfg, seed, from_pretrained) / "meta.json").read_text())
    return {**evaluate(model, task, cfg, seed, from_pretrained), "train_seconds": meta["train_seconds"]}


def _runs(models_: list[str], tasks: list[str], cfg, seeds: int | None, baselines: bool) -> list[tuple]:
    for m in models_:
        models.check_name(m)
    for t in tasks:
        check_task(t)
    seeds = cfg.seeds if seeds is None else seeds
    inits = (True, False) if baselines else (True,)
    return [(m, t, s, p) for m in models_ for t in tasks for p in inits for s in range(cfg.seed, cfg.seed + seeds)]


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
    runs = _runs(models_, tasks, cfg, seeds, baselines)
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


def item_scores(models_: list[str], tasks: list[str], cfg, seeds: int | None = None,
                baselines: bool = True) -> pd.DataFrame:
    """The runs of ``scores`` per test item: model, init, task, seed, item, and
    ``reciprocal_rank`` (search, long_search, with ``length``) or ``correct`` (types); the
    ``search`` and ``types`` frames of ``analysis.claims``. Runs not yet cached are built by
    ``scores`` first (in the worker pool)."""
    scores(models_, tasks, cfg, seeds, baselines, progress=False)
    frames = []
    for m, t, s, p in _runs(models_, tasks, cfg, seeds, baselines):
        items = pd.read_csv(_scores_artifact(m, t, cfg, s, p) / "items.csv")
        frames.append(items.assign(model=m, init="pretrained" if p else "random", task=t, seed=s))
    return pd.concat(frames, ignore_index=True)
