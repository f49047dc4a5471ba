"""The shared fine-tuning runs: reload, determinism, batching, bad input."""
import numpy as np
import pytest
import torch

from analysis import config
from analysis.finetune import evaluate, finetune, load_finetuned
from analysis.finetune.experiment import ExampleBatches


def test_example_batches_are_seeded_and_skippable():
    a = ExampleBatches(list(range(10)), 3, seed=1)
    b = ExampleBatches(list(range(10)), 3, seed=1)
    first = [next(a) for _ in range(5)]
    b.skip(2)
    assert [next(b) for _ in range(3)] == first[2:]
    assert all(len(x) == 3 for x in first)
    assert sorted(sum(first[:3], [])) == sorted(set(sum(first[:3], [])))  # no repeat within an epoch
    with pytest.raises(ValueError, match="at least 2"):
        ExampleBatches([1], 4, seed=0)


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
    path = finetune("codessm", task, cfg, pretrained=False)
    net, tok, head = load_finetuned(path)
    again = AutoModelForMaskedLM.from_pretrained(str(path)).eval()
    ids = tok(["def f(x):\n    return x + 1\n"], return_tensors="pt")
    with torch.no_grad():
        a = net(**{k: ids[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
        b = again(**{k: ids[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True)
    assert torch.equal(a.hidden_states[-1], b.hidden_states[-1])
    assert (head is not None) == (task == "types")
    # fine-tuning moved the weights away from the random initialisation it started from
    from analysis import models
    start, _ = models.load("codessm", cfg, pretrained=False, seed=cfg.seed)
    moved = [not torch.equal(p, q) for p, q in zip(start.state_dict().values(), again.state_dict().values())]
    assert any(moved)
    scores = evaluate("codessm", task, cfg, pretrained=False)
    if task == "search":
        assert 0 < scores["mrr"] <= 1 and scores["pool"] >= 2
        assert scores["mrr_distractors"] >= scores["mrr"] - 1e-12  # fewer candidates, never worse
    else:
        assert 0 <= scores["accuracy"] <= 1 and scores["tokens"] > 0


def test_each_seed_is_its_own_run():
    from analysis.finetune.experiment import finetune_key
    from analysis.cache import config_key
    cfg = config.profile("smoke")
    keys = {config_key(finetune_key("codessm", "search", cfg, s, True), "v") for s in range(3)}
    assert len(keys) == 3
    # the profile's seed (which draws the corpus) and the run's seed are different fields
    assert finetune_key("codessm", "search", cfg, 5, True)["finetune_seed"] == 5
    assert finetune_key("codessm", "search", cfg, 5, True)["seed"] == cfg.seed
