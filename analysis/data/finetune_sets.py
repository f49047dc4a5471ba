"""Pretraining texts and the fine-tuning datasets.

- ``search``: NL code search. Query = the docstring's first paragraph (at least 3 words);
  code = the function without its docstring (as CodeSearchNet does).
- ``long_search``: the same task restricted to functions at least
  ``cfg.long_context_factor * cfg.max_length`` subword tokens long: retrieval beyond the
  pretraining context.
- ``types``: type inference, ManyTypes4Py style: the parameter and return annotations are
  removed from the code (``def f(x: int = 1) -> str`` becomes ``def f(x = 1)``) and become
  labels on the annotated identifiers (the parameter names; the function's name for its
  return type). Labels are the ``cfg.type_vocab_size`` most frequent annotations of the
  training split, plus ``other``. Annotated assignments in the body are left as they are.

Splits are by package (``splits.assign_splits``); ``pretraining_texts`` keeps only the
training split, so no fine-tuning valid/test function is seen in pretraining.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from ..cache import cached
from .corpus import corpus_key, load_corpus
from .parse import CodeParseError, parse_tree
from .splits import assign_splits
from .tokenizer import load_tokenizer

TASKS = ("search", "long_search", "types")
FT_VERSION = "1"


def query_of(docstring: str) -> str | None:
    first = re.split(r"\n\s*\n", docstring.strip(), maxsplit=1)[0]
    words = first.split()
    return " ".join(words[:64]) if len(words) >= 3 else None


def strip_annotations(code: str):
    """(code without parameter/return annotations, [(start_char, end_char, annotation)]).
    Returns None when the function has no annotation."""
    text, data, tree = parse_tree(code)
    fn = tree.root_node.named_children[-1] if tree.root_node.named_children else None
    while fn is not None and fn.type == "decorated_definition":
        fn = fn.child_by_field_name("definition")
    if fn is None or fn.type != "function_definition":
        return None
    cuts, marks = [], []  # byte ranges to delete; (name start, name end, annotation)
    for p in fn.child_by_field_name("parameters").named_children:
        if p.type in {"typed_parameter", "typed_default_parameter"}:
            name = p.named_children[0]
            ann = p.child_by_field_name("type")
            while name.type in {"list_splat_pattern", "dictionary_splat_pattern"}:
                name = name.named_children[0]
            cuts.append((p.named_children[0].end_byte, ann.end_byte))
            marks.append((name.start_byte, name.end_byte, ann.text.decode()))
    ret = fn.child_by_field_name("return_type")
    if ret is not None:
        name = fn.child_by_field_name("name")
        cuts.append((fn.child_by_field_name("parameters").end_byte, ret.end_byte))
        marks.append((name.start_byte, name.end_byte, ret.text.decode()))
    if not marks:
        return None
    out, pos = bytearray(), 0
    for a, b in sorted(cuts):
        out += data[pos:a]
        pos = b
    out += data[pos:]

    def shifted(x: int) -> int:
        return x - sum(b - a for a, b in cuts if b <= x)

    new = out.decode("utf-8")
    new_bytes = bytes(out)
    targets = []
    for s, e, ann in marks:
        s2, e2 = shifted(s), shifted(e)
        cs, ce = len(new_bytes[:s2].decode("utf-8")), len(new_bytes[:e2].decode("utf-8"))
        targets.append((cs, ce, " ".join(ann.split())))
    return new, sorted(targets)


def _build(cfg, out: Path) -> None:
    corpus = load_corpus(cfg)
    split = assign_splits(corpus, cfg.seed)
    rng = random.Random(cfg.seed)
    data = {task: {"train": [], "valid": [], "test": []} for task in TASKS}
    for fn in tqdm(corpus.functions, desc="fine-tuning sets", leave=False):
        s = split[fn.id]
        q = query_of(fn.docstring)
        if q is not None:
            data["search"][s].append({"id": fn.id, "query": q, "code": fn.code_without_docstring})
        try:
            stripped = strip_annotations(fn.code)
        except CodeParseError:
            stripped = None
        if stripped is not None:
            data["types"][s].append({"id": fn.id, "code": stripped[0], "annotations": stripped[1]})
    # long-context retrieval: the longest search functions, by the project's tokenizer
    tok = load_tokenizer(cfg)
    threshold = int(cfg.long_context_factor * cfg.max_length)
    for s, rows in data["search"].items():
        lengths = tok([r["code"] for r in rows], add_special_tokens=False)["input_ids"] if rows else []
        data["long_search"][s] = [dict(r, n_tokens=len(ids)) for r, ids in zip(rows, lengths)
                                  if len(ids) >= threshold]
    # type vocabulary from the training split
    counts = Counter(t[2] for ex in data["types"]["train"] for t in ex["annotations"])
    names = [name for name, _ in counts.most_common(cfg.type_vocab_size)] + ["other"]
    index = {n: i for i, n in enumerate(names)}
    for rows in data["types"].values():
        for ex in rows:
            ex["targets"] = [(a, b, index.get(t, len(names) - 1)) for a, b, t in ex.pop("annotations")]
    caps = {"train": cfg.finetune_train_size, "valid": cfg.finetune_test_size, "test": cfg.finetune_test_size}
    for task in TASKS:
        for s, rows in data[task].items():
            rows.sort(key=lambda r: r["id"])
            rng.shuffle(rows)
            if caps[s] and len(rows) > caps[s]:
                del rows[caps[s]:]
    (out / "sets.json").write_text(json.dumps({"data": data, "type_labels": names,
                                               "long_threshold": threshold}))


def _key(cfg) -> dict:
    return {**corpus_key(cfg), **cfg.subset("vocab_size", "max_length", "long_context_factor",
                                            "type_vocab_size", "finetune_train_size",
                                            "finetune_test_size")}


def _all(cfg) -> dict:
    return cached("finetune-sets", _key(cfg), lambda out: _build(cfg, out),
                  lambda p: json.loads((p / "sets.json").read_text()), FT_VERSION)


def finetune_dataset(cfg, task: str) -> dict[str, list[dict]]:
    """{"train", "valid", "test"} examples of ``task`` (one of ``TASKS``)."""
    if task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {task!r}; tasks: {', '.join(TASKS)}")
    sets = _all(cfg)["data"][task]
    if task == "types":
        for rows in sets.values():
            for ex in rows:
                ex["targets"] = [tuple(t) for t in ex["targets"]]
    return sets


def type_label_names(cfg) -> list[str]:
    """Names of the type-inference labels (the last is ``other``)."""
    return _all(cfg)["type_labels"]


def long_context_threshold(cfg) -> int:
    return _all(cfg)["long_threshold"]
