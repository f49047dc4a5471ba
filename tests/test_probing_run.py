"""``analysis.probing.run``: the tidy per-layer table, balanced subsampling, bad input."""
import numpy as np
import pytest

from analysis import config
from analysis.probing import run
from analysis.probing.experiment import _balanced_subsample


def test_balanced_subsample_is_as_equal_as_counts_allow():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 30)
    idx = _balanced_subsample(labels, 30, seed=0)
    assert len(idx) == 30 and len(set(idx)) == 30
    counts = np.bincount(labels[idx])
    assert counts[1] == 5 and sorted(counts[[0, 2]]) == [12, 13]
    assert np.array_equal(idx, _balanced_subsample(labels, 30, seed=0))
    assert len(_balanced_subsample(labels, 0, seed=0)) == len(labels)


def test_bad_task_layer_and_checkpoint_are_clear_errors():
    cfg = config.profile("smoke")
    with pytest.raises(ValueError, match="unknown probe task"):
        run("codessm", "parity", cfg, "random")
    with pytest.raises(ValueError, match="out of range"):
        run("codessm", "siblings", cfg, "random", layers=[7])
    with pytest.raises(ValueError, match="checkpoint must be"):
        run("codessm", "siblings", cfg, "no/such/dir")
    with pytest.raises(ValueError, match=r"probe_layers \[9\] out of range: codessm has layers 0..2"):
        run("codessm", "siblings", cfg.replace(probe_layers=(1, 9)), "random")


def test_the_profile_names_the_layers_probed_and_each_task_its_pairs_per_class(cache_dir):
    """``probe_layers`` (the authors': 3, 4, 6, 8, 10, 11 of 12) limits the layers probed unless the
    caller names its own; ``probe_pairs_per_class_siblings`` / ``_dfg`` size those probe sets
    alone (the authors': 1,500 against distance's 1,300)."""
    from analysis.data import probe_dataset
    from analysis.data.probes import pairs_per_class
    cfg = config.profile("smoke", probe_layers=(2,), probe_pairs_per_class_siblings=24)
    assert sorted(run("codessm", "siblings", cfg, "random", progress=False).layer.unique()) == [2]
    assert sorted(run("codessm", "siblings", cfg, "random", layers=[0, 1], progress=False).layer.unique()) == [0, 1]
    assert [pairs_per_class(cfg, t) for t in ("distance", "siblings", "dfg")] == [40, 24, 40]
    pairs = probe_dataset(cfg, "siblings").pairs
    assert pairs.groupby("label").size().tolist() == [24, 24]  # balanced, 24 per class in all
    assert config.profile("smoke").probe_layers == () and config.coerce("probe_layers", "3, 4") == (3, 4)
    assert config.profile("authors").probe_layers == (3, 4, 6, 8, 10, 11)


@pytest.mark.slow
def test_run_gives_every_metric_for_every_layer():
    cfg = config.profile("smoke")
    df = run("codessm", "siblings", cfg, "random", progress=False)
    assert list(df.columns) == ["model", "checkpoint", "task", "layer", "probe", "metric", "value"]
    assert sorted(df["layer"].unique()) == list(range(cfg.n_layers + 1))
    wide = df.pivot_table(index="layer", columns=["probe", "metric"], values="value")
    assert ((wide["directprobe", "accuracy"] >= 0) & (wide["directprobe", "accuracy"] <= 1)).all()
    assert (wide["directprobe", "n_clusters"] >= wide["directprobe", "n_labels"]).all()
    assert (wide["directprobe", "n_labels"] == 2).all()
    assert np.allclose(wide["linear", "selectivity"],
                       wide["linear", "accuracy"] - wide["linear", "control_accuracy"])
    again = run("codessm", "siblings", cfg, "random", progress=False)  # cached: identical
    assert again.equals(df)
