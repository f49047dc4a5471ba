"""The composition root: names of encoders, random-init twins per pretraining run, bad specs."""
import pytest
import torch

from analysis import checkpoints, config
from analysis.train import pretrain_key, random_key

SMOKE = config.profile("smoke")


def test_each_pretraining_run_has_its_own_seed_and_twin_but_the_same_corpus():
    run1 = SMOKE.replace(pretrain_seed=1)
    a, _ = checkpoints.random("codessm", SMOKE)
    b, _ = checkpoints.random("codessm", run1)
    again, _ = checkpoints.random("codessm", run1)
    assert not torch.equal(a.base_model.embeddings.weight, b.base_model.embeddings.weight)
    assert torch.equal(b.base_model.embeddings.weight, again.base_model.embeddings.weight)
    assert pretrain_key("codessm", SMOKE) != pretrain_key("codessm", run1)
    assert random_key("codessm", SMOKE) != random_key("codessm", run1)
    # the corpus (and so every test item) is drawn by `seed`, not by the pretraining run
    assert pretrain_key("codessm", SMOKE)["seed"] == pretrain_key("codessm", run1)["seed"]


def test_resolve_names_every_kind_of_encoder_or_says_what_it_takes(tmp_path):
    r = checkpoints.resolve("codessm", SMOKE, "random")
    net, _ = r.load()
    assert r.n_layers == SMOKE.n_layers == net.config.num_hidden_layers and r.identity == random_key("codessm", SMOKE)
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        checkpoints.resolve("codessm", SMOKE, "half-trained")
    with pytest.raises(ValueError, match="unknown model"):
        checkpoints.resolve("gpt", SMOKE, "random")
    with pytest.raises(FileNotFoundError, match="is not a model checkpoint"):
        checkpoints.resolve("codessm", SMOKE, str(tmp_path))
