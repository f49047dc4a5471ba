"""``run``: one model checkpoint, one probing task, every layer -> a tidy DataFrame;
``forgetting``: the same probes before and after fine-tuning.

Pipeline: hidden states of the probe functions (``representations.hidden_states``, every
layer, layer 0 = embeddings) -> pair features (``pair_features``: h_i - h_j for AST distance,
[h_i; h_j] for siblings and data flow) -> per layer

- DirectProbe on at most ``cfg.probe_max_train_points`` training pairs (a class-balanced
  seeded subsample): number of clusters (= number of labels iff the labels are linearly
  separable there), accuracy on the test pairs by the nearest cluster hull (as published):
  overall (``accuracy``) and the paper's reported metric, the per-label accuracy averaged over
  the labels of the test pairs (``mean_label_accuracy``, ``DirectProbeResult.mean_label_accuracy``),
  and by the nearest training point (1-NN, a baseline), per test pair too (``run_items``), the
  mean over label pairs of the smallest hull-to-hull distance between their clusters, run time;
- a logistic-regression probe on all training pairs: test accuracy, and the accuracy of the
  same probe on the control task (labels drawn per token-text pair), selectivity = their
  difference.

Each layer's DirectProbe and its linear probes run as jobs in the worker processes of
``analysis.workers``: DirectProbe's HiGHS LPs run on one thread, so one process per core is
how a probe run uses the machine; the results equal probing the layers one after another,
bit for bit: the hidden states, and jobs run in this process, are computed on one thread too
(``workers.single_threaded``).
Probing never trains: the encoder comes from ``analysis.checkpoints.resolve``.

Results are cached by the checkpoint's weights and the probing fields of the profile.
Columns: model, checkpoint, task, layer, probe, metric, value.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import checkpoints
from ..cache import cached
from ..checkpoints import pretrain_many
from ..data import probe_dataset
from ..data.probes import TASKS, probe_data_key
from ..train import training_device
from ..workers import run_jobs, single_threaded
from .directprobe import directprobe
from .features import pair_features
from .linear import control_labels, linear_probe
from .representations import hidden_states

RESULT_VERSION = "4"  # 2: last layer after the final norm; 3: DirectProbe by nearest hull, per-pair items;
#                      4: mean_label_accuracy per layer, each item's label
PROBE_FIELDS = ("seed", "probe_functions_distance", "probe_functions_siblings", "probe_functions_dfg",
                "probe_pairs_per_class", "probe_max_tokens", "probe_test_fraction",
                "probe_max_train_points")
COLUMNS = ["model", "checkpoint", "task", "layer", "probe", "metric", "value"]


def _balanced_subsample(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices of at most ``cap`` points, as equal per label as the counts allow."""
    if cap <= 0 or len(labels) <= cap:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    values = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == v)) for v in values]
    take, left = {}, cap
    for k, pool in sorted(enumerate(pools), key=lambda kv: len(kv[1])):  # rarest first
        share = min(len(pool), left // (len(pools) - len(take)))
        take[k], left = share, left - share
    return np.sort(np.concatenate([pools[k][:n] for k, n in take.items()]))


def _directprobe_metrics(X_sub, y_sub, X_test, y_test) -> tuple[dict, pd.DataFrame]:
    """DirectProbe on the subsampled training pairs, scored on the test pairs: its metrics and
    its per-test-pair results (``DirectProbeResult.evaluate``): mean_label_accuracy is
    ``DirectProbeResult.mean_label_accuracy`` read off the same predictions (one hull-distance
    pass, not two). Module-level, so that worker processes can run it."""
    with warnings.catch_warnings():  # duplicates are counted in the "conflicts" metric
        warnings.simplefilter("ignore")
        dp = directprobe(X_sub, y_sub)
    dists = list(dp.min_distances().values())
    items = dp.evaluate(X_test, y_test)
    per_label = items.groupby("label")["correct"].mean()     # labels present in y_test
    return {("directprobe", "accuracy"): float(items["correct"].mean()),
            ("directprobe", "mean_label_accuracy"): float(per_label.mean()),
            ("directprobe", "nn_accuracy"): float(items["nn_correct"].mean()),
            ("directprobe", "n_clusters"): dp.n_clusters,
            ("directprobe", "n_labels"): dp.n_labels,
            ("directprobe", "min_distance"): float(np.mean(dists)) if dists else float("nan"),
            ("directprobe", "conflicts"): len(dp.conflicts),
            ("directprobe", "train_points"): len(y_sub),
            ("directprobe", "seconds"): dp.runtime_s}, items[["item", "label", "correct", "nn_correct"]]


def _linear_metrics(X_train, y_train, X_test, y_test, c_train, c_test, seed) -> dict:
    """The linear probe and its control task on all training pairs."""
    lin = linear_probe(X_train, y_train, X_test, y_test, seed)
    ctl = linear_probe(X_train, c_train, X_test, c_test, seed)
    return {("linear", "accuracy"): lin["accuracy"],
            ("linear", "train_accuracy"): lin["train_accuracy"],
            ("linear", "control_accuracy"): ctl["accuracy"],
            ("linear", "selectivity"): lin["accuracy"] - ctl["accuracy"]}


def _probe_layers(data, states, layers, cfg, progress: bool) -> tuple[list[dict], pd.DataFrame]:
    """Rows of every layer, in ``layers`` order, and DirectProbe's per-test-pair results
    (layer, item, label, correct, nn_correct; ``item`` = the pair's row in the test split). Pair features are built here (they need
    ``states``); each layer's DirectProbe and its linear probes are separate jobs, run in the
    worker processes of ``analysis.workers``, DirectProbe jobs first and layer 0 (the slowest:
    degenerate embedding differences) first of all."""
    train, test = data.split("train"), data.split("test")
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    sub = _balanced_subsample(y_train, cfg.probe_max_train_points, cfg.seed)
    types = [(data.functions[f].tokens[i].text, data.functions[f].tokens[j].text)
             for f, i, j in train[["function", "i", "j"]].itertuples(index=False)]
    test_types = [(data.functions[f].tokens[i].text, data.functions[f].tokens[j].text)
                  for f, i, j in test[["function", "i", "j"]].itertuples(index=False)]
    # control labels: one random label per token-text pair, shared by train and test
    control = control_labels(types + test_types, np.concatenate([y_train, y_test]), cfg.seed)
    c_train, c_test = control[:len(types)], control[len(types):]
    features = [(pair_features(states, train, data.pair_mode, k), pair_features(states, test, data.pair_mode, k))
                for k in range(len(layers))]
    jobs = [(_directprobe_metrics, (X[sub], y_train[sub], Xt, y_test)) for X, Xt in features] + \
           [(_linear_metrics, (X, y_train, Xt, y_test, c_train, c_test, cfg.seed)) for X, Xt in features]
    results = run_jobs(jobs, f"probing {data.task}", progress)
    n = len(layers)
    rows = [{"layer": layer, "probe": p, "metric": m, "value": float(v)}
            for k, layer in enumerate(layers) for (p, m), v in {**results[k][0], **results[n + k]}.items()]
    items = pd.concat([results[k][1].assign(layer=layer) for k, layer in enumerate(layers)], ignore_index=True)
    return rows, items[["layer", "item", "label", "correct", "nn_correct"]]


def _probe_artifact(model: str, task: str, cfg, checkpoint: str, layers, progress: bool) -> Path:
    """The cached directory of one probe run: ``results.csv`` (metrics per layer) and
    ``items.csv`` (DirectProbe per test pair and layer)."""
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; tasks: {', '.join(TASKS)}")
    encoder = checkpoints.resolve(model, cfg, checkpoint)
    n_layers = encoder.n_layers
    field = layers is None and cfg.probe_layers  # the profile's probe layers (the authors': 3, 4, 6, 8, 10, 11)
    layers = [int(x) for x in (cfg.probe_layers if field else range(n_layers + 1) if layers is None else layers)]
    bad = [x for x in layers if not 0 <= x <= n_layers]
    if bad:
        raise ValueError(f"{'probe_layers ' if field else 'layers '}{bad} out of range: {model} has layers "
                         f"0..{n_layers} (0 = embeddings)")
    key = {"model": model, "task": task, "layers": layers, **encoder.identity, **cfg.subset(*PROBE_FIELDS),
           "data": probe_data_key(cfg, task)}

    @single_threaded()  # hidden states and in-process jobs: the bits of a one-thread worker
    def build(out: Path) -> None:
        data = probe_dataset(cfg, task)
        net, tokenizer = encoder.load()
        states = hidden_states(net.to(training_device()), tokenizer, data.functions, layers=layers, progress=progress)
        rows, items = _probe_layers(data, states, layers, cfg, progress)
        pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
        items.to_csv(out / "items.csv", index=False)
        (out / "meta.json").write_text(json.dumps(key, default=str))

    def load(path: Path) -> Path:
        pd.read_csv(path / "results.csv"), pd.read_csv(path / "items.csv")  # a damaged table is rebuilt
        return path

    return cached("probe-results", key, build, load, RESULT_VERSION)


def _labelled(df: pd.DataFrame, model: str, task: str, checkpoint: str) -> pd.DataFrame:
    df.insert(0, "task", task)
    df.insert(0, "checkpoint", checkpoint if not Path(checkpoint).is_dir() else Path(checkpoint).name)
    df.insert(0, "model", model)
    return df


def run(model: str, task: str, cfg, checkpoint: str = "pretrained", layers=None,
        progress: bool = True) -> pd.DataFrame:
    """Probe every layer (or ``layers``, else the profile's ``probe_layers`` when set) of ``model`` at ``checkpoint`` on ``task``
    ("distance", "siblings", "dfg"). Returns rows (model, checkpoint, task, layer, probe,
    metric, value); cached."""
    path = _probe_artifact(model, task, cfg, checkpoint, layers, progress)
    return _labelled(pd.read_csv(path / "results.csv"), model, task, checkpoint)[COLUMNS]


def run_items(model: str, task: str, cfg, checkpoint: str = "pretrained", layers=None,
              progress: bool = True) -> pd.DataFrame:
    """DirectProbe's result per test pair of ``run``: model, checkpoint, task, layer, item,
    label (the pair's true label), correct (the nearest-hull prediction is the pair's label),
    nn_correct (1-nearest-neighbour); the same items for every model, so models compare pair
    by pair (``analysis.claims``)."""
    path = _probe_artifact(model, task, cfg, checkpoint, layers, progress)
    return _labelled(pd.read_csv(path / "items.csv"), model, task, checkpoint)


def _pretrain_first(models_: list[str], cfg, specs) -> None:
    """Pretrain the models the specs need that are not cached yet, side by side
    (``checkpoints.pretrain_many``), before any probe asks for one of them."""
    if any(s == "pretrained" or str(s).startswith("finetuned:") for s in specs):
        pretrain_many([(m, cfg) for m in models_])


def items_many(models_: list[str], tasks: list[str], cfg, checkpoints=("pretrained", "random"),
               progress: bool = True) -> pd.DataFrame:
    """``run_items`` over every model x checkpoint x task, concatenated."""
    _pretrain_first(models_, cfg, checkpoints)
    frames = [run_items(m, t, cfg, c, progress=progress) for m in models_ for c in checkpoints for t in tasks]
    return pd.concat(frames, ignore_index=True)


def run_many(models_: list[str], tasks: list[str], cfg, checkpoints=("pretrained", "random"),
             progress: bool = True) -> pd.DataFrame:
    """``run`` over every model x checkpoint x task, concatenated."""
    _pretrain_first(models_, cfg, checkpoints)
    frames = [run(m, t, cfg, c, progress=progress) for m in models_ for c in checkpoints for t in tasks]
    return pd.concat(frames, ignore_index=True)


def forgetting(models_: list[str], tasks: list[str], probe_tasks: list[str], cfg,
               progress: bool = True) -> pd.DataFrame:
    """Probe scores before (pretrained) and after fine-tuning on each task, per layer:
    columns model, task, probe_task, layer, probe, metric, before, after, change
    (forgetting = after - before; negative = forgotten)."""
    _pretrain_first(models_, cfg, ["pretrained"])
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


def sample_size_sweep(model: str, task: str, cfg, points, layer: int, checkpoint: str = "pretrained",
                      progress: bool = False) -> pd.DataFrame:
    """DirectProbe at one ``layer`` with at most each of ``points`` training points (the profile
    with ``probe_max_train_points`` = n; each run cached like ``run``): one row per n with
    points (those used), clusters, labels, accuracy, mean_label_accuracy, seconds."""
    rows = []
    for n in points:
        r = run(model, task, cfg.replace(probe_max_train_points=int(n)), checkpoint, layers=[layer], progress=progress)
        r = r[r.probe == "directprobe"].set_index("metric").value
        rows.append({"points": int(r["train_points"]), "clusters": r["n_clusters"], "labels": r["n_labels"],
                     "accuracy": r["accuracy"], "mean_label_accuracy": r["mean_label_accuracy"],
                     "seconds": r["seconds"]})
    return pd.DataFrame(rows)
