"""The three probing datasets (reconstructed from Anand et al., ACL Findings 2024).

- ``distance``: pairs (i, j) whose first token is a keyword (``KEYWORDS``, the reference's
  list); label = tree distance, classes 2..6, balanced. Pair feature h_i - h_j
  (``pair_mode = "diff"``).
- ``siblings``: binary, balanced: is token j a sibling of keyword token i (the reference's
  rows are keywords too)? Feature [h_i; h_j].
- ``dfg``: comesFrom / computedFrom / no edge from token i to token j, balanced. With
  ``cfg.probe_dfg_literals`` (the reference), "no edge" pairs run from a token with an
  edge to any other token it has no edge to; without, between two variables with no
  edge either way. Feature [h_i; h_j].

The relations follow the reference pipeline unless a profile field says otherwise
(``probe_dfg_literals``, ``probe_siblings_below``, ``probe_string_quotes``; see
``analysis.data.parse``). Functions are drawn with the seed from the corpus (those that
parse and have 10 to ``cfg.probe_max_tokens`` code tokens and, with
``cfg.probe_within_context``, at most ``cfg.max_length`` subwords of the project's tokenizer,
``<s>`` and ``</s>`` included: the context the encoders were pretrained on, so no probe reads a
position pretraining never trained, and the three models meet on equal terms; length
extrapolation is the long_search task's question. The functions that cannot be parsed or are
longer than the context are counted in ``ProbeData.skipped``), split by function (no function
feeds both sides; ``cfg.probe_test_fraction`` of them test), then pairs are sampled per class
within each side: ``cfg.probe_pairs_per_class`` per class in all (or the task's own
``probe_pairs_per_class_siblings`` / ``_dfg``; ``pairs_per_class``), shared between the sides in
proportion.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import cached
from .corpus import corpus_key, load_corpus
from .parse import CodeParseError, ParsedCode, parse_function
from .tokenizer import load_tokenizer, tokenizer_key

# tree-sitter node types of the first token of a distance or siblings pair: the list of
# Anand et al. (their `'true' 'or'` lacks a comma, which drops both; both are kept here)
KEYWORDS = {"def", "for", "if", "none", "else", "false", "true", "or", "and", "return", "not",
            "elif", "with", "try", "raise", "except", "break", "while", "assert", "print",
            "continue", "class"}
TASKS = {
    "distance": (["2", "3", "4", "5", "6"], "diff"),
    "siblings": (["not sibling", "sibling"], "concat"),
    "dfg": (["no edge", "comesFrom", "computedFrom"], "concat"),
}
OPTION_FIELDS = ("probe_dfg_literals", "probe_siblings_below", "probe_string_quotes")
PROBE_VERSION = "4"  # 3: functions within the pretraining context (probe_within_context); 4: comprehension variables and lambda tokens are sources (GraphCodeBERT)


@dataclass
class ProbeData:
    task: str
    label_names: list[str]
    pair_mode: str
    functions: list[ParsedCode]
    function_ids: list[str]
    pairs: pd.DataFrame  # columns: function, i, j, label, split
    skipped: dict = field(default_factory=dict)  # corpus functions passed over, by reason

    def split(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs["split"] == name]


def parse_options(cfg) -> dict:
    """``parse_function`` keyword arguments for the relation definitions of ``cfg``."""
    return {"literals": cfg.probe_dfg_literals, "siblings_below": cfg.probe_siblings_below,
            "string_quotes": cfg.probe_string_quotes}


def candidate_pairs(task: str, p: ParsedCode, all_tokens: bool = True) -> dict[int, list]:
    """Every candidate (i, j) pair of one function, by label. ``all_tokens`` (dfg only):
    "no edge" pairs run from a token with an edge to any token (the reference), else
    between variables with no edge either way."""
    n = len(p.tokens)
    keywords = [i for i, t in enumerate(p.tokens) if t.type in KEYWORDS]
    if task == "distance":
        out: dict[int, list] = {}
        for i in keywords:
            for j in range(n):
                d = p.tree_distance(i, j) if j != i else 0
                if 2 <= d <= 6:
                    out.setdefault(d - 2, []).append((i, j))
        return out
    if task == "siblings":
        out = {0: [], 1: []}
        for i in keywords:
            for j in range(n):
                if j != i:
                    out[int(p.is_sibling(i, j))].append((i, j))
        return out
    edges = p.edge_set()
    out = {0: [], 1: [], 2: []}
    for (i, j), kind in edges.items():
        out[1 if kind == "comesFrom" else 2].append((i, j))
    if all_tokens:
        starts, ends, either = sorted({i for i, _ in edges}), range(n), False
    else:
        starts = ends = sorted({k for e in p.dfg_edges for k in e[:2]} |
                               {k for k, t in enumerate(p.tokens) if t.type == "identifier"})
        either = True
    for i in starts:
        for j in ends:
            if i != j and (i, j) not in edges and not (either and (j, i) in edges):
                out[0].append((i, j))
    return out


def _candidates(task: str, p: ParsedCode, rng: random.Random, per_class_cap: int,
                all_tokens: bool) -> dict[int, list]:
    out = candidate_pairs(task, p, all_tokens)
    for label, pairs in out.items():  # keep each function's share bounded
        if len(pairs) > per_class_cap:
            out[label] = rng.sample(pairs, per_class_cap)
    return out


def choose_functions(cfg, task: str) -> tuple[list, Counter]:
    """(id, code, parsed) of the functions of ``task``'s probe set, in the seeded order,
    and the count of corpus functions passed over, by reason (they cannot be parsed, or they
    are longer than the pretraining context)."""
    n_functions = {"distance": cfg.probe_functions_distance, "siblings": cfg.probe_functions_siblings,
                   "dfg": cfg.probe_functions_dfg}[task]
    rng = random.Random(f"{cfg.seed}:{task}")
    corpus = load_corpus(cfg)
    order = list(range(len(corpus.functions)))
    rng.shuffle(order)
    tokenizer = load_tokenizer(cfg) if cfg.probe_within_context else None
    chosen, skipped = [], Counter()
    for k in order:
        fn = corpus.functions[k]
        if fn.code.count("\n") > cfg.probe_max_tokens:  # cheap pre-filter
            continue
        try:
            p = parse_function(fn.code, **parse_options(cfg))
        except CodeParseError as err:
            skipped[f"does not parse: {str(err).split(' (')[0]}"] += 1
            continue
        if not (10 <= len(p.tokens) <= cfg.probe_max_tokens and (task != "dfg" or p.dfg_edges)):
            continue
        if tokenizer is not None and len(tokenizer(fn.code)["input_ids"]) > cfg.max_length:
            skipped[f"longer than the pretraining context ({cfg.max_length} subwords)"] += 1
            continue
        chosen.append((fn.id, fn.code, p))
        if len(chosen) == n_functions:
            break
    if len(chosen) < 5:
        raise ValueError(f"only {len(chosen)} functions qualify for the {task} probe; raise probe_max_tokens "
                         f"or max_length, set probe_within_context=False, or use a larger corpus")
    return chosen, skipped


def _build(cfg, task: str, out: Path) -> None:
    labels, mode = TASKS[task]
    rng = random.Random(f"{cfg.seed}:{task}:pairs")
    chosen, skipped = choose_functions(cfg, task)
    n_test = max(1, round(cfg.probe_test_fraction * len(chosen)))
    split_of = ["test"] * n_test + ["train"] * (len(chosen) - n_test)
    rows = []
    for side in ("train", "test"):
        idx = [k for k, s in enumerate(split_of) if s == side]
        share = cfg.probe_test_fraction if side == "test" else 1 - cfg.probe_test_fraction
        want = max(1, round(pairs_per_class(cfg, task) * share))
        pools: dict[int, list] = {c: [] for c in range(len(labels))}
        for k in idx:
            for label, pairs in _candidates(task, chosen[k][2], rng, 4 * want,
                                            cfg.probe_dfg_literals).items():
                pools[label] += [(k, i, j) for i, j in pairs]
        take = min(want, *(len(v) for v in pools.values()))  # balanced: the rarest class bounds
        if take == 0:
            empty = [labels[c] for c, v in pools.items() if not v]
            raise ValueError(
                f"the {side} side of the {task} probe ({len(idx)} of {len(chosen)} functions, probe_test_fraction "
                f"{cfg.probe_test_fraction:g}) has no {' / '.join(map(repr, empty))} pair: give that side more "
                f"functions (probe_functions_{task}, probe_test_fraction)"
                + (", or probe functions beyond the pretraining context (probe_within_context=False)"
                   if cfg.probe_within_context else ""))
        for label, pool in pools.items():
            for k, i, j in rng.sample(pool, take):
                rows.append({"function": k, "i": i, "j": j, "label": label, "split": side})
    (out / "probe.json").write_text(json.dumps({
        "task": task, "options": parse_options(cfg), "skipped": dict(skipped),
        "ids": [c[0] for c in chosen], "codes": [c[1] for c in chosen], "pairs": rows}))


def _load(path: Path) -> ProbeData:
    raw = json.loads((path / "probe.json").read_text())
    labels, mode = TASKS[raw["task"]]
    functions = [parse_function(code, **raw["options"]) for code in raw["codes"]]
    pairs = pd.DataFrame(raw["pairs"], columns=["function", "i", "j", "label", "split"])
    for col in ("function", "i", "j", "label"):
        pairs[col] = pairs[col].astype(np.int64)
    return ProbeData(raw["task"], labels, mode, functions, raw["ids"], pairs, raw["skipped"])


def pairs_per_class(cfg, task: str) -> int:
    """The pairs per class of ``task``'s probe set: ``probe_pairs_per_class``, unless the task's own
    field (``probe_pairs_per_class_siblings``, ``_dfg``; the authors' sizes differ per task) is set."""
    own = {"siblings": cfg.probe_pairs_per_class_siblings, "dfg": cfg.probe_pairs_per_class_dfg}.get(task, 0)
    return own or cfg.probe_pairs_per_class


def probe_data_key(cfg, task: str) -> dict:
    """Everything a probe dataset depends on (corpus, sizes, relation definitions, code
    version): the cache key of the dataset, and part of the key of anything built on it."""
    context = {**tokenizer_key(cfg), **cfg.subset("max_length")} if cfg.probe_within_context else {}
    return {**corpus_key(cfg), **cfg.subset("probe_functions_distance", "probe_functions_siblings",
                                            "probe_functions_dfg", "probe_max_tokens", "probe_test_fraction", "probe_within_context",
                                            *OPTION_FIELDS),
            "pairs_per_class": pairs_per_class(cfg, task), **context, "task": task,
            "probe_version": PROBE_VERSION}


def probe_dataset(cfg, task: str) -> ProbeData:
    """The balanced pairs of probing ``task`` ("distance", "siblings" or "dfg")."""
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; tasks: {', '.join(TASKS)}")
    return cached("probe-data", probe_data_key(cfg, task), lambda out: _build(cfg, task, out),
                  _load, PROBE_VERSION)
