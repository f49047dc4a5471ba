"""The frames behind the paper-beside-re-run figures of chapters 03 and 04 (analysis.plots):
relative depth, the paper's forgetting as after - before per cell, and bad input."""
import numpy as np
import pandas as pd
import pytest

from analysis import claims, plots, reference


def test_probing_curves_put_both_at_relative_depth():
    paper = claims.paper_points(reference.paper_probing(), ("pretrained",))
    rerun = pd.DataFrame({"model": "codessm", "checkpoint": ["pretrained"] * 3 + ["random"], "task": "dfg",
                          "layer": [0, 1, 2, 1], "value": [0.5, 0.6, 0.7, 0.4], "metric": "mean_label_accuracy"})
    curves = plots.probing_curves(paper, rerun, n_layers=2)
    ours = curves[curves.source == "this build"]
    assert ours.depth.tolist() == [0.5, 1.0] and ours.value.tolist() == [0.6, 0.7]   # layer 0, random left out
    theirs = curves[(curves.source == "paper") & (curves.task == "dfg") & (curves.model == "rocoder")]
    assert theirs.depth.tolist() == pytest.approx([3 / 12, 4 / 12, 6 / 12, 8 / 12, 10 / 12, 11 / 12])
    assert theirs.value.iloc[0] == pytest.approx(0.775) and set(theirs.metric) == {"mean_label_accuracy"}
    with pytest.raises(ValueError, match="rerun lacks columns"):
        plots.probing_curves(paper, rerun.drop(columns="metric"), 2)


def test_forgetting_curves_are_after_minus_before_per_cell():
    paper = claims.paper_points(reference.paper_probing())
    rerun = pd.DataFrame({"model": "rocoder", "task": ["types", "search"], "probe_task": "siblings", "layer": [2, 2],
                          "change": [-0.1, 0.3]})
    curves = plots.forgetting_curves(paper, rerun, n_layers=4)
    cell = curves[(curves.source == "paper") & (curves.model == "codessm") & (curves.task == "types")
                  & (curves.probe_task == "siblings") & (curves.layer == 3)]
    assert cell.change.item() == pytest.approx(0.7550 - 0.8167)
    # RoCoder's distance at layer 10: fine-tuned on types finished, pretrained did not -> no cell
    assert curves[(curves.source == "paper") & (curves.model == "rocoder") & (curves.probe_task == "distance")
                  ].layer.max() == 8
    ours = curves[curves.source == "this build"]
    assert ours.to_dict("records") == [{"source": "this build", "model": "rocoder", "task": "types",
                                        "probe_task": "siblings", "layer": 2, "depth": 0.5, "change": -0.1}]
    assert set(curves.task) == {"types", "long_search"} and np.isfinite(curves.change).all()
