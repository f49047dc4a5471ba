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
    assert not torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight)
    assert torch.equal(b.get_input_embeddings().weight, again.get_input_embeddings().weight)
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


@pytest.mark.slow
def test_pretrain_many_trains_side_by_side_what_pretrained_then_finds(cache_dir, monkeypatch):
    """Two models pretrained as pool jobs (two one-thread workers) are the cached checkpoints
    ``pretrained`` then returns without training; a bad name fails before anything trains."""
    from analysis.cache import is_cached
    from analysis.train import PRETRAIN_VERSION

    monkeypatch.setenv("ANALYSIS_WORKERS", "2")
    tiny = SMOKE.replace(pretrain_steps=4, log_every=2, warmup_steps=1, d_model=16, n_layers=1,
                         d_state=8, n_heads=2, mamba_d_state=4)
    runs = [("codessm", tiny), ("rocoder", tiny)]
    with pytest.raises(ValueError, match="unknown model"):
        checkpoints.pretrain_many([("codessm", tiny), ("gpt", tiny)])
    assert not any(is_cached("pretrain", pretrain_key(m, c), PRETRAIN_VERSION) for m, c in runs)
    paths = checkpoints.pretrain_many(runs, progress=False)
    assert all(is_cached("pretrain", pretrain_key(m, c), PRETRAIN_VERSION) for m, c in runs)
    assert paths == [checkpoints.pretrained(m, c) for m, c in runs]
    assert [checkpoints.pretraining_meta(m, tiny)["model"] for m, _ in runs] == ["codessm", "rocoder"]
