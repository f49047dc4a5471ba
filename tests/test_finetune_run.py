"""The shared fine-tuning runs: reload, determinism, batching, bad input."""
import numpy as np
import pytest
import torch

from analysis import checkpoints, config
from analysis.checkpoints import finetuned as finetune
from analysis.evaluation import evaluate
from analysis.finetune import load_finetuned
from analysis.train import Batches


def test_example_batches_are_seeded_and_skippable():
    a = Batches(list(range(10)), 3, seed=1)
    b = Batches(list(range(10)), 3, seed=1)
    first = [next(a) for _ in range(5)]
    b.skip(2)
    assert [next(b) for _ in range(3)] == first[2:]
    assert all(len(x) == 3 for x in first)
    assert sorted(sum(first[:3], [])) == sorted(set(sum(first[:3], [])))  # no repeat within an epoch
    with pytest.raises(ValueError, match="no training items"):
        Batches([], 4, seed=0)


def test_unknown_task_and_model_are_clear_errors():
    cfg = config.profile("smoke")
    with pytest.raises(ValueError, match="unknown fine-tuning task"):
        finetune("codessm", "summarise", cfg)
    with pytest.raises(ValueError, match="unknown model"):
        finetune("gpt", "search", cfg)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["search", "types"])
def test_finetuned_checkpoint_reloads_with_identical_outputs(task):
    from transformers import AutoModelForMaskedLM
    cfg = config.profile("smoke", finetune_steps=3)
    path = finetune("codessm", task, cfg, from_pretrained=False)
    net, tok, head = load_finetuned(path)
    again = AutoModelForMaskedLM.from_pretrained(str(path)).eval()
    ids = tok(["def f(x):\n    return x + 1\n"], return_tensors="pt")
    with torch.no_grad():
        a = net(**{k: ids[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
        b = again(**{k: ids[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    assert torch.equal(a.hidden_states[-1], b.hidden_states[-1])
    assert (head is not None) == (task == "types")
    # fine-tuning moved the weights away from the random initialisation it started from
    start, _ = checkpoints.load("codessm", cfg, from_pretrained=False, seed=cfg.seed)
    moved = [not torch.equal(p, q) for p, q in zip(start.state_dict().values(), again.state_dict().values())]
    assert any(moved)
    scores = evaluate("codessm", task, cfg, from_pretrained=False)
    from analysis.evaluation import item_scores
    items = item_scores(["codessm"], [task], cfg, seeds=1)
    items = items[items.init == "random"]
    if task == "search":
        assert 0 < scores["mrr"] <= 1 and scores["pool"] >= 2
        assert scores["mrr_distractors"] >= scores["mrr"] - 1e-12  # fewer candidates, never worse
        # the per-query reciprocal ranks are the summary's, one per query of the pool
        assert len(items) == scores["pool"] and items["reciprocal_rank"].mean() == pytest.approx(scores["mrr"])
    else:
        assert 0 <= scores["accuracy"] <= 1 and scores["tokens"] > 0
        assert len(items) == scores["tokens"] and items["correct"].mean() == pytest.approx(scores["accuracy"])


def test_each_seed_is_its_own_run():
    from analysis.finetune import finetune_key
    from analysis.cache import config_key
    cfg = config.profile("smoke")
    base = checkpoints.base_key("codessm", cfg, True)
    keys = {config_key(finetune_key(base, "search", cfg, s), "v") for s in range(3)}
    assert len(keys) == 3
    # the profile's seed (which draws the corpus) and the run's seed are different fields
    assert finetune_key(base, "search", cfg, 5)["finetune_seed"] == 5
    assert finetune_key(base, "search", cfg, 5)["seed"] == cfg.seed


def test_centred_fine_tuning_names_only_the_retrieval_runs_it_changes():
    from analysis.finetune import finetune_key
    cfg = config.profile("smoke")
    base = checkpoints.base_key("codessm", cfg, True)
    centred = cfg.replace(finetune_centred=True)
    assert finetune_key(base, "types", centred, 0) == finetune_key(base, "types", cfg, 0)
    for task in ("search", "long_search"):
        assert finetune_key(base, task, centred, 0) != finetune_key(base, task, cfg, 0)


@pytest.mark.slow
def test_runs_in_worker_processes_equal_runs_in_process(monkeypatch):
    """``scores`` trains and scores uncached runs in worker processes: with one thread per
    process either way, the rows are exactly those of the in-process loop, in the same order."""
    import shutil

    from analysis.cache import artifact_dir
    from analysis.evaluation import EVAL_VERSION, _scores_key, scores
    from analysis.finetune import FT_RUN_VERSION, finetune_key
    cfg = config.profile("smoke", finetune_steps=3, finetune_lr=1.25e-3)  # keys of this test only
    runs = [("codessm", t, cfg.seed, p) for t in ("search", "types") for p in (True, False)]
    tables = {}
    for n in ("1", "2"):
        for m, t, s, p in runs:  # both loops train from scratch
            key = finetune_key(checkpoints.base_key(m, cfg, p), t, cfg, s)
            shutil.rmtree(artifact_dir("finetune", key, FT_RUN_VERSION), ignore_errors=True)
            shutil.rmtree(artifact_dir("finetune-scores", _scores_key(m, t, cfg, s, p), EVAL_VERSION), ignore_errors=True)
        monkeypatch.setenv("ANALYSIS_WORKERS", n)
        df = scores(["codessm"], ["search", "types"], cfg, seeds=1, progress=False)
        tables[n] = df[~df["metric"].isin(["train_seconds", "eval_seconds"])].reset_index(drop=True)
    assert tables["1"].equals(tables["2"])
    assert set(map(tuple, tables["1"][["task", "init"]].drop_duplicates().to_numpy())) == \
        {(t, "pretrained" if p else "random") for _, t, _, p in runs}


@pytest.mark.slow
def test_early_stopping_records_its_steps_and_keeps_the_best_weights():
    """Smoke search with a score every 4 steps and patience 1, at most 40 steps: the run stops
    at a multiple of 4 once a score fails to improve, records steps run and the best step, and
    its saved weights score the best validation MRR it recorded (the best weights, not the last)."""
    import json

    from analysis.data import finetune_dataset, load_tokenizer
    from analysis.finetune.scoring import validation_score
    from analysis.finetune.training import validation_split

    cfg = config.profile("smoke", finetune_steps=40, finetune_eval_every=4, finetune_patience=1)
    path = finetune("codessm", "search", cfg, from_pretrained=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["steps_run"] % 4 == 0 and meta["best_step"] % 4 == 0
    assert meta["best_step"] <= meta["steps_run"] <= 40
    assert meta["steps_run"] == 40 or meta["steps_run"] == meta["best_step"] + 4
    net, tok, head = load_finetuned(path)
    train = finetune_dataset(cfg, "search")["train"]
    _, valid = validation_split(cfg, "search", train)
    assert validation_score(net, tok, head, "search", cfg, valid) == pytest.approx(meta["valid_score"], abs=1e-6)
