"""Train / valid / test assignment of corpus functions, by package.

Fine-tuning test code comes from packages never seen in training (and never seen in
pretraining: ``pretraining_texts`` keeps only the ``train`` split). Packages are shuffled
with the seed and taken into ``test`` until it holds at least ``TEST_SHARE`` of the
functions (a package that would push it past ``MAX_SHARE`` is passed over), then into
``valid`` likewise. A corpus with fewer than three packages (the smoke profile's single
package) is split by source file instead, hashed with the seed: no file feeds two splits.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter

from .corpus import load_corpus

TEST_SHARE, VALID_SHARE, MAX_SHARE = 0.15, 0.05, 0.30


def split_units(corpus) -> tuple[str, dict[str, str]]:
    """("package" or "file", function id -> unit)."""
    packages = {fn.package for fn in corpus.functions}
    if len(packages) >= 3:
        return "package", {fn.id: fn.package for fn in corpus.functions}
    return "file", {fn.id: f"{fn.package}/{fn.path}" for fn in corpus.functions}


def assign_splits(corpus, seed: int) -> dict[str, str]:
    """Function id -> "train" | "valid" | "test"."""
    kind, unit_of = split_units(corpus)
    sizes = Counter(unit_of.values())
    total = sum(sizes.values())
    units = sorted(sizes)
    if kind == "file":  # many small units: a seeded hash order
        units.sort(key=lambda u: hashlib.sha1(f"{seed}:{u}".encode()).hexdigest())
    else:
        random.Random(seed).shuffle(units)
    split_of_unit, filled = {}, Counter()
    for name, share in (("test", TEST_SHARE), ("valid", VALID_SHARE)):
        for u in units:
            if u in split_of_unit or filled[name] >= share * total:
                continue
            if kind == "package" and (filled[name] + sizes[u]) > MAX_SHARE * total:
                continue
            split_of_unit[u] = name
            filled[name] += sizes[u]
    return {fid: split_of_unit.get(u, "train") for fid, u in unit_of.items()}


def split_texts(cfg, split: str, docstrings: bool = True) -> list[str]:
    """Codes of the functions of ``split`` ("train", "valid", "test"), in corpus order; with
    ``docstrings=False`` without their docstrings (the code search's side of a pair)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"unknown split {split!r}; splits: train, valid, test")
    corpus = load_corpus(cfg)
    of = assign_splits(corpus, cfg.seed)
    return [fn.code if docstrings else fn.code_without_docstring
            for fn in corpus.functions if of[fn.id] == split]


def pretraining_texts(cfg, docstrings: bool = True) -> list[str]:
    """Codes of the training-split functions (``docstrings=False``: without their docstrings),
    in a seeded order: the pretraining corpus. The tokenizer is trained on the texts with
    docstrings, whose words the search queries use."""
    texts = split_texts(cfg, "train", docstrings)
    random.Random(cfg.seed).shuffle(texts)
    return texts
