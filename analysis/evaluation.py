"""Fine-tuned encoders scored on their test splits: the tables chapters 04 and 06 show.

``evaluate(model, task, cfg, seed, from_pretrained)`` scores one fine-tuning run (trained on
demand by ``analysis.checkpoints``), cached; ``scores`` gathers a tidy table over models,
tasks, seeds and both initialisations, running runs not yet cached as jobs of
``analysis.workers`` (one thread each, side by side), BiMamba's first (its CPU scan makes them
the longest), so the last job to finish is a short one. ``item_scores`` gives the same runs
per test item (for the paired bootstraps of ``analysis.claims``). ``zero_shot_search`` scores
the encoders before any fine-tuning, ``mlm_table`` their held-out masked-LM loss.

``bm25_search(cfg)`` is the lexical baseline every search number is read against: Okapi BM25
(``bm25s``, Lucene's variant, k1 = 1.5, b = 0.75) over the same test pool, ranking each
query's function among all the pool's functions by

    score(q, d) = sum_{w in q} idf(w) f(w, d) / (f(w, d) + k1 (1 - b + b |d| / avgdl)),
    idf(w) = ln(1 + (N - n_w + 0.5) / (n_w + 0.5)),

on words of ``code_words``: identifiers split at snake_case and camelCase boundaries,
lower-cased (``getUserName`` -> get, user, name), so a docstring's "user name" meets the
code's ``user_name``. No stemming, no stop words (idf down-weights the frequent ones).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import bm25s
import numpy as np
import pandas as pd

from . import checkpoints, models
from .cache import cached, is_cached, write_json_atomic
from .data import finetune_dataset, load_tokenizer
from .data.probes import TASKS as PROBE_TASKS
from .finetune import check_task, finetune_key, load_finetuned, score, zero_shot
from .finetune.metrics import mrr, mrr_with_distractors
from .probing import items_many
from .train import training_device
from .workers import run_jobs

EVAL_VERSION = "6"  # 3: base model + head; 4: last layer after the final norm; 5: per-item scores; 6: pooling fields
COLUMNS = ["model", "init", "task", "seed", "metric", "value"]


_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def code_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` with identifiers split at underscores, camelCase and digits:
    "getHTTPResponse_code2" -> get, http, response, code, 2."""
    return [part.lower() for word in _WORD.findall(text) for part in _CAMEL.findall(word)]


def bm25_scores(queries: list[str], codes: list[str]) -> np.ndarray:
    """BM25 scores r(queries codes) of every query against every code (``code_words`` words)."""
    if not codes:
        raise ValueError("BM25 needs at least one code to index")
    index = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    index.index([code_words(c) or [""] for c in codes], show_progress=False)
    return np.stack([index.get_scores(code_words(q)) for q in queries]).astype(np.float64)


def bm25_search(cfg, n: int | None = None, task: str = "search") -> dict:
    """BM25's MRR on the test pool of ``task`` ("search" or "long_search": whole functions,
    BM25 has no context limit), its first ``n`` pairs (all by default), among the whole pool
    and with ``cfg.search_distractors`` distractors, as ``finetune.score`` ranks the encoders."""
    if task not in ("search", "long_search"):
        raise ValueError(f"BM25 ranks functions for 'search' or 'long_search', not {task!r}")
    test = finetune_dataset(cfg, task)["test"][:n]
    if len(test) < 2:
        raise ValueError(f"the {task} test split has {len(test)} examples; use a larger corpus")
    scores = bm25_scores([e["query"] for e in test], [e["code"] for e in test])
    return {"mrr": mrr(scores), "mrr_distractors": mrr_with_distractors(scores, cfg.search_distractors, cfg.seed),
            "pool": len(test)}


def _scores_key(model: str, task: str, cfg, seed: int, from_pretrained: bool) -> dict:
    base = checkpoints.base_key(model, cfg, from_pretrained)
    return {**finetune_key(base, task, cfg, seed), **cfg.subset("search_distractors", "pool_centre")}


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


def paired_difference(model: str, task: str, cfg, seed: int | None = None, n_boot: int = 2000,
                      level: float = 0.95) -> dict:
    """Pretrained minus random-init on ``task``'s main metric, item by item on the same test
    items (the runs' ``items.csv``; long_search at full length), with a paired percentile
    bootstrap interval: resample the items with replacement ``n_boot`` times (seeded), the
    ``level`` interval of the mean difference. {"difference", "low", "high", "items"}."""
    seed = cfg.seed if seed is None else int(seed)
    pair = []
    for from_pretrained in (True, False):
        items = pd.read_csv(_scores_artifact(model, task, cfg, seed, from_pretrained) / "items.csv")
        if "length" in items:
            items = items[items["length"] == "full"]
        pair.append(items.set_index("item")["correct" if task == "types" else "reciprocal_rank"].astype(float))
    a, b = pair
    if len(a) == 0 or not a.index.equals(b.index):
        raise ValueError(f"paired scores need the same non-empty test items, got {len(a)} and {len(b)}")
    diff = (a - b).to_numpy()
    rng = np.random.default_rng(cfg.seed)
    means = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high), "items": len(diff)}


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
    fine-tuning sets), and the pretrained checkpoints (side by side in the worker pool), so
    that worker processes never build one twice."""
    load_tokenizer(cfg)
    for t in tasks:
        finetune_dataset(cfg, t)
    if from_pretrained:
        checkpoints.pretrain_many([(m, cfg) for m in models_])


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
