"""The three probing datasets (reconstructed from Anand et al., ACL Findings 2024).

- ``distance``: pairs (i, j) whose first token is a keyword; label = tree distance, classes
  2..6, balanced. Pair feature h_i - h_j (``pair_mode = "diff"``).
- ``siblings``: binary, balanced: do tokens i and j share a parent? Feature [h_i; h_j].
- ``dfg``: comesFrom / computedFrom / no edge between two variable tokens, balanced.
  Feature [h_i; h_j].

Functions are drawn with the seed from the corpus (those that parse and have 10 to
``cfg.probe_max_tokens`` code tokens), split 80/20 *by function* (no function feeds both
sides), then pairs are sampled per class within each side: ``cfg.probe_pairs_per_class``
per class in all, shared between the sides in proportion.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import cached
from .corpus import corpus_key, load_corpus
from .parse import CodeParseError, ParsedCode, parse_function

KEYWORDS = {"def", "if", "elif", "else", "for", "while", "return", "in", "not", "and", "or",
            "is", "import", "from", "as", "with", "try", "except", "finally", "raise", "class",
            "lambda", "yield", "await", "async", "pass", "break", "continue", "del", "global",
            "nonlocal", "assert", "None", "True", "False"}
TASKS = {
    "distance": (["2", "3", "4", "5", "6"], "diff"),
    "siblings": (["not sibling", "sibling"], "concat"),
    "dfg": (["no edge", "comesFrom", "computedFrom"], "concat"),
}
PROBE_VERSION = "1"


@dataclass
class ProbeData:
    task: str
    label_names: list[str]
    pair_mode: str
    functions: list[ParsedCode]
    function_ids: list[str]
    pairs: pd.DataFrame  # columns: function, i, j, label, split

    def split(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs["split"] == name]


def _candidates(task: str, p: ParsedCode, rng: random.Random, per_class_cap: int) -> dict[int, list]:
    """Candidate (i, j) pairs of one function, by label."""
    n = len(p.tokens)
    out: dict[int, list] = {}
    if task == "distance":
        for i, t in enumerate(p.tokens):
            if t.type not in KEYWORDS:
                continue
            for j in range(n):
                if j != i:
                    d = p.tree_distance(i, j)
                    if 2 <= d <= 6:
                        out.setdefault(d - 2, []).append((i, j))
    elif task == "siblings":
        pos, neg = [], []
        for i in range(n):
            for j in range(i + 1, n):
                (pos if p.is_sibling(i, j) else neg).append((i, j))
        out = {1: pos, 0: neg}
    else:
        edges = p.edge_set()
        variables = sorted({k for e in p.dfg_edges for k in e[:2]} |
                           {k for k, t in enumerate(p.tokens) if t.type == "identifier"})
        out = {1: [], 2: [], 0: []}
        for (i, j), kind in edges.items():
            out[1 if kind == "comesFrom" else 2].append((i, j))
        for i in variables:
            for j in variables:
                if i != j and (i, j) not in edges and (j, i) not in edges:
                    out[0].append((i, j))
    for label, pairs in out.items():  # keep each function's share bounded
        if len(pairs) > per_class_cap:
            out[label] = rng.sample(pairs, per_class_cap)
    return out


def _build(cfg, task: str, out: Path) -> None:
    labels, mode = TASKS[task]
    n_functions = {"distance": cfg.probe_functions_distance, "siblings": cfg.probe_functions_siblings,
                   "dfg": cfg.probe_functions_dfg}[task]
    rng = random.Random(f"{cfg.seed}:{task}")
    corpus = load_corpus(cfg)
    order = list(range(len(corpus.functions)))
    rng.shuffle(order)
    chosen = []
    for k in order:
        fn = corpus.functions[k]
        if fn.code.count("\n") > cfg.probe_max_tokens:  # cheap pre-filter
            continue
        try:
            p = parse_function(fn.code)
        except CodeParseError:
            continue
        if 10 <= len(p.tokens) <= cfg.probe_max_tokens and (task != "dfg" or p.dfg_edges):
            chosen.append((fn.id, fn.code, p))
        if len(chosen) == n_functions:
            break
    if len(chosen) < 5:
        raise ValueError(f"only {len(chosen)} functions qualify for the {task} probe; "
                         f"raise probe_max_tokens or use a larger corpus")
    n_test = max(1, round(cfg.probe_test_fraction * len(chosen)))
    split_of = ["test"] * n_test + ["train"] * (len(chosen) - n_test)
    rows = []
    for side in ("train", "test"):
        idx = [k for k, s in enumerate(split_of) if s == side]
        share = cfg.probe_test_fraction if side == "test" else 1 - cfg.probe_test_fraction
        want = max(1, round(cfg.probe_pairs_per_class * share))
        pools: dict[int, list] = {c: [] for c in range(len(labels))}
        for k in idx:
            for label, pairs in _candidates(task, chosen[k][2], rng, 4 * want).items():
                pools[label] += [(k, i, j) for i, j in pairs]
        take = min(want, *(len(v) for v in pools.values()))  # balanced: the rarest class bounds
        for label, pool in pools.items():
            for k, i, j in rng.sample(pool, take):
                rows.append({"function": k, "i": i, "j": j, "label": label, "split": side})
    (out / "probe.json").write_text(json.dumps({
        "task": task, "ids": [c[0] for c in chosen], "codes": [c[1] for c in chosen], "pairs": rows}))


def _load(path: Path) -> ProbeData:
    raw = json.loads((path / "probe.json").read_text())
    labels, mode = TASKS[raw["task"]]
    functions = [parse_function(code) for code in raw["codes"]]
    pairs = pd.DataFrame(raw["pairs"], columns=["function", "i", "j", "label", "split"])
    for col in ("function", "i", "j", "label"):
        pairs[col] = pairs[col].astype(np.int64)
    return ProbeData(raw["task"], labels, mode, functions, raw["ids"], pairs)


def probe_dataset(cfg, task: str) -> ProbeData:
    """The balanced pairs of probing ``task`` ("distance", "siblings" or "dfg")."""
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; tasks: {', '.join(TASKS)}")
    key = {**corpus_key(cfg), **cfg.subset("probe_functions_distance", "probe_functions_siblings",
                                           "probe_functions_dfg", "probe_pairs_per_class",
                                           "probe_max_tokens", "probe_test_fraction"), "task": task}
    return cached("probe-data", key, lambda out: _build(cfg, task, out), _load, PROBE_VERSION)
