"""Scoring a fine-tuned (or untouched) encoder on a task's test split.

- ``search``: MRR of each query's function among the whole test pool, and with
  ``cfg.search_distractors`` random distractors (CodeSearchNet: 999);
- ``long_search``: the same, with the functions encoded at their full length (beyond the
  pretraining context: length extrapolation) and, for comparison, truncated to it;
- ``types``: accuracy, macro-F1, accuracy on the 5 most common types and on the rest, over
  the annotations within the first ``cfg.max_length`` subwords (the training context).

``score`` also returns the main metric per test item (each query's reciprocal rank among the
whole pool; 1/0 per scored annotation) with the item's index, so two encoders can be compared
pair by pair (``evaluation.item_scores``, ``analysis.claims``).

``zero_shot(net, tokenizer, cfg)`` scores an encoder before any fine-tuning on search.
Retrieval embeddings pool as ``cfg.pool_special_tokens`` says and, with ``cfg.pool_centre``,
each side (queries, codes) is centred over the pool before the cosine (``tasks.centred``).
Every score is computed on one thread (``workers.single_threaded``), so it does not depend
on which process, or how many workers, computed it.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..data import finetune_dataset, type_label_names
from ..workers import single_threaded
from .metrics import classification_scores, effective_rank, mean_pairwise_cosine, mrr, mrr_with_distractors, ranks
from .tasks import centred, embed, type_predictions


def _test_split(cfg, task: str) -> list[dict]:
    test = finetune_dataset(cfg, task)["test"]
    if task == "types":
        test = [ex for ex in test if ex["targets"]]
    if len(test) < 2:
        raise ValueError(f"the {task} test split has {len(test)} examples; use a larger corpus")
    return test


def _embed(net, tokenizer, texts: list[str], max_length: int | None, cfg, layer: int = -1):
    vectors = embed(net, tokenizer, texts, max_length, layer=layer, specials=cfg.pool_special_tokens)
    return centred(vectors) if cfg.pool_centre else vectors


@single_threaded()
def score(net, tokenizer, head, task: str, cfg) -> tuple[dict, pd.DataFrame]:
    """Test-split scores of ``net`` (with its type ``head`` for ``types``) on ``task``, and the
    same per test item (``item`` = its index in the test split, the same for every model):
    ``reciprocal_rank`` per query for search (with ``length`` "full" or "truncated" for
    long_search), ``correct`` per annotated token for types."""
    test = _test_split(cfg, task)
    t0 = time.perf_counter()
    if task == "types":
        # scored within the training context: annotations past cfg.max_length subwords are not
        # scored, the same ones for every model (they share the tokenizer); length
        # extrapolation is the long_search task's question
        gold, pred = type_predictions(net, head, tokenizer, test, max_length=cfg.max_length)
        out = classification_scores(gold, pred, len(type_label_names(cfg)))
        out["tokens"] = int(len(gold))
        items = pd.DataFrame({"item": np.arange(len(gold)), "correct": np.asarray(gold) == np.asarray(pred)})
    else:
        queries = _embed(net, tokenizer, [e["query"] for e in test], cfg.max_length, cfg)
        lengths = {"mrr": None} if task == "long_search" else {"mrr": cfg.max_length}
        if task == "long_search":
            lengths["mrr_truncated"] = cfg.max_length
        out, frames = {}, []
        for name, max_length in lengths.items():
            codes = _embed(net, tokenizer, [e["code"] for e in test], max_length, cfg)
            scores = (queries @ codes.T).numpy()
            out[name] = mrr(scores)
            frames.append(pd.DataFrame({"item": np.arange(len(test)), "reciprocal_rank": 1.0 / ranks(scores),
                                        "length": "truncated" if name == "mrr_truncated" else "full"}))
            if name == "mrr":
                out["mrr_distractors"] = mrr_with_distractors(scores, cfg.search_distractors, cfg.seed)
        out["pool"] = len(test)
        items = pd.concat(frames, ignore_index=True)
    out["eval_seconds"] = time.perf_counter() - t0
    return out, items


@single_threaded()
def validation_score(net, tokenizer, head, task: str, cfg, examples: list[dict]) -> float:
    """The main metric of ``task`` on ``examples`` (early stopping's criterion): MRR among them
    for the retrieval tasks (within the training context), token accuracy for ``types``."""
    if task == "types":
        gold, pred = type_predictions(net, head, tokenizer, examples, max_length=cfg.max_length)
        return float((gold == pred).mean()) if len(gold) else 0.0
    queries = _embed(net, tokenizer, [e["query"] for e in examples], cfg.max_length, cfg)
    codes = _embed(net, tokenizer, [e["code"] for e in examples], cfg.max_length, cfg)
    return mrr((queries @ codes.T).numpy())


@single_threaded()
def zero_shot(net, tokenizer, cfg, n: int = 300) -> tuple[dict, pd.DataFrame]:
    """The encoder before any fine-tuning, on the first ``n`` search test pairs: MRR of its
    mean-pooled embeddings, the same from its token embeddings alone (layer 0: a bag of
    tokens, no context), the mean cosine between two functions' embeddings
    (``metrics.mean_pairwise_cosine``) and how many directions they spread over
    (``metrics.effective_rank``); and the reciprocal rank per query (last layer)."""
    test = _test_split(cfg, "search")[:n]
    if len(test) < 2:
        raise ValueError(f"the search test split has {len(test)} examples; use a larger corpus")
    out = {}
    for layer, which in ((-1, ""), (0, ", token embeddings alone")):
        queries = _embed(net, tokenizer, [e["query"] for e in test], cfg.max_length, cfg, layer)
        raw = embed(net, tokenizer, [e["code"] for e in test], cfg.max_length, layer=layer,
                    specials=cfg.pool_special_tokens)
        codes = centred(raw) if cfg.pool_centre else raw
        scores = (queries @ codes.T).numpy()
        out["zero-shot MRR" + which] = mrr(scores)
        out["effective rank of functions" + which] = effective_rank(raw.numpy())
        if layer == -1:
            # before centring: centred vectors average to 0, so their mean cosine says nothing
            out["mean cosine between functions"] = mean_pairwise_cosine(raw.numpy())
            items = pd.DataFrame({"item": np.arange(len(test)), "reciprocal_rank": 1.0 / ranks(scores)})
    return {**out, "pairs": len(test)}, items
