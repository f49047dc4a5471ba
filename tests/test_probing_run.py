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
