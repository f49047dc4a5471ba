"""analysis.interpret.ssm_interpret: the authors' SSM-Interpret statistics against answers
worked by hand (a delta, a first difference, a slow decay, a pure tone), the class thresholds
against the authors' own table, and the transition and taxonomy tables on their data."""
import numpy as np
import pandas as pd
import pytest
import torch

from analysis import config
from analysis.interpret import (SSM_INTERPRET_LENGTH, class_transitions, filter_class, opposite_pairs,
                                ssm_interpret_statistics, taxonomy, transition_table)
from analysis.models import build
from analysis.reference import paper_spectra

L = SSM_INTERPRET_LENGTH                      # 4096: 2049 bins, low band bins 0..203, high band 1229..2048


def _kernel(*taps, length=L):
    k = np.zeros(length)
    k[:len(taps)] = taps
    return k


def test_a_delta_has_a_flat_spectrum_centroid_one_quarter_and_lhfr_the_ratio_of_bin_counts():
    row = ssm_interpret_statistics(_kernel(1.0)).iloc[0]
    # |K(f)| = 1 in every bin: centroid = mean of f_m = m / 4096 over m = 0..2048 = 1/4
    assert row.spectral_centroid == pytest.approx(0.25, abs=1e-12)
    assert row.low_freq_energy == 204 and row.high_freq_energy == 2049 - 1229 == 820
    assert row.lhfr == pytest.approx(204 / 820) and row.log10_lhfr == pytest.approx(np.log10(204 / 820))
    assert row.dominant_frequency == 0.0 and row.dominant_magnitude == pytest.approx(1.0)   # ties: first bin
    assert row.filter_class == "high-pass"      # the thresholds call an all-pass kernel high-pass
    assert row.length == L and list(ssm_interpret_statistics(_kernel(1.0)).columns[:2]) == ["kernel", "length"]


def test_a_first_difference_is_high_pass_with_the_centroid_worked_by_hand():
    row = ssm_interpret_statistics(_kernel(1.0, -1.0)).iloc[0]
    # |K(f)| = 2 sin(pi f): centroid ~ int f sin(pi f) / int sin(pi f) over [0, 1/2] = (1/pi^2) / (1/pi) = 1/pi
    assert row.spectral_centroid == pytest.approx(1 / np.pi, abs=2e-4)
    assert row.dominant_frequency == 0.5 and row.dominant_magnitude == pytest.approx(2.0)
    assert row.log10_lhfr < -2 and row.filter_class == "high-pass"


def test_a_slow_decay_is_low_pass_and_faster_decays_move_toward_high_frequencies():
    rows = ssm_interpret_statistics(np.stack([0.99 ** np.arange(L), 0.9 ** np.arange(L), 0.5 ** np.arange(L)]))
    assert rows.filter_class.iloc[0] == "low-pass" and rows.dominant_frequency.iloc[0] == 0.0
    # |K(f)| = 1 / |1 - a e^{-2 pi i f}|: the peak at f = 0 is 1 / (1 - a)
    assert rows.dominant_magnitude.iloc[0] == pytest.approx(1 / (1 - 0.99), rel=1e-6)
    assert rows.spectral_centroid.is_monotonic_increasing and rows.log10_lhfr.is_monotonic_decreasing


def test_a_pure_tone_sits_at_its_frequency_and_falls_between_the_bands():
    m = 820                                                         # f = 820 / 4096, between the two bands
    k = np.cos(2 * np.pi * m * np.arange(L) / L)
    row = ssm_interpret_statistics(k).iloc[0]
    assert row.dominant_frequency == m / L and row.spectral_centroid == pytest.approx(m / L, rel=1e-9)
    assert row.dominant_magnitude == pytest.approx(L / 2)
    # no energy in either band, to the FFT's rounding: LHFR is then a ratio of round-offs
    assert row.low_freq_energy < 1e-18 * L ** 2 and row.high_freq_energy < 1e-18 * L ** 2


def test_the_class_thresholds_reproduce_the_authors_table_and_its_edges():
    p = paper_spectra()
    assert (filter_class(p.spectral_centroid, p.log10_lhfr) == p.filter_class).all()
    assert set(p.filter_class) == {"low-pass", "band-pass", "high-pass", "unlabelled"}
    cases = {(0.1659, 1.0001): "low-pass", (0.1659, 1.0): "unlabelled", (0.166, 1.0): "band-pass",
             (0.166, 0.0): "band-pass", (0.166, -1e-9): "high-pass", (0.3, 1.5): "unlabelled",
             (0.1, -0.5): "unlabelled", (0.2, np.nan): "unlabelled", (0.1, np.inf): "low-pass"}
    for (c, r), want in cases.items():
        assert filter_class(c, r) == want, (c, r)
    with pytest.raises(ValueError, match="same shape"):
        filter_class([0.1, 0.2], [1.0])


def test_a_models_kernels_give_a_tidy_frame_at_any_length():
    torch.manual_seed(0)
    smoke = config.profile("smoke")
    model = build("codessm", smoke, 60).eval()
    frame = ssm_interpret_statistics(model)                         # materialised at 4096
    k = model.kernels(L)                                            # [layers, 2, K, L]
    layers, _, K, _ = k.shape
    assert len(frame) == layers * 2 * K and (frame.length == L).all()
    assert list(frame.columns[:4]) == ["layer", "direction", "kernel", "length"]
    assert sorted(frame.layer.unique()) == list(range(1, layers + 1)) and set(frame.direction) == {"forward", "backward"}
    one = frame[(frame.layer == layers) & (frame.direction == "backward") & (frame.kernel == 0)].iloc[0]
    direct = ssm_interpret_statistics(k[layers - 1, 1, 0]).iloc[0]
    assert one.spectral_centroid == pytest.approx(direct.spectral_centroid)
    short = ssm_interpret_statistics({"a": model, "b": model.kernels(256)}, length=512)
    assert list(short.columns[:2]) == ["checkpoint", "layer"] and set(short.length) == {256, 512}


def test_bad_kernels_are_clear_errors():
    with pytest.raises(ValueError, match="all zeros"):
        ssm_interpret_statistics(np.zeros((2, 64)))
    with pytest.raises(ValueError, match="non-finite"):
        ssm_interpret_statistics(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="real kernels"):
        ssm_interpret_statistics(np.ones(8, dtype=complex))
    with pytest.raises(ValueError, match="2 directions"):
        ssm_interpret_statistics(np.ones((2, 3, 1, 8)))
    with pytest.raises(ValueError, match="no checkpoints"):
        ssm_interpret_statistics({})


def test_transitions_taxonomy_and_opposite_pairs_on_the_authors_data():
    p = paper_spectra()
    t = class_transitions(p, "codessm").set_index(["checkpoint", "layer", "direction"])
    l1 = t.loc[("codessm_typeinf", 1, "forward")]
    assert (l1.class_before, l1.class_after) == ("band-pass", "high-pass")
    assert (l1.centroid_before, l1.centroid_after) == (0.189616, 0.223309)
    assert l1.d_log10_lhfr == pytest.approx(-0.309335 - 0.387342)
    for ck in ("codessm_sqa", "codessm_typeinf"):
        assert tuple(t.loc[(ck, 4, "forward"), ["class_before", "class_after"]]) == ("low-pass", "band-pass")
    assert t.changed.sum() == 5                    # those three, and layer 9's two kernels into "unlabelled"
    table = transition_table(p, "codessm")
    assert table.loc[(1, "forward"), "codessm_typeinf"] == "band-pass → high-pass"
    assert list(table.columns) == ["codessm", "codessm_sqa", "codessm_typeinf"] and len(table) == 24
    assert list(table.index[:2]) == [(1, "forward"), (1, "backward")]
    tax = taxonomy(p[p.checkpoint == "codessm"])
    assert tax.loc["all"].to_dict() == {"low-pass": 10, "band-pass": 10, "high-pass": 4, "unlabelled": 0}
    assert tax.loc["forward", "high-pass"] == 0
    assert opposite_pairs(p[p.checkpoint == "codessm"]).layer.tolist() == [8, 10]
    with pytest.raises(ValueError, match="no rows for checkpoint"):
        class_transitions(p, "rocoder")
    with pytest.raises(ValueError, match="select one"):
        taxonomy(p)
    with pytest.raises(ValueError, match="same kernels"):
        class_transitions(p[~((p.checkpoint == "codessm_sqa") & (p.layer == 3))], "codessm")


def test_the_plane_shades_the_three_class_regions_and_holds_every_kernel():
    import matplotlib
    matplotlib.use("Agg")
    from analysis import plots
    p = paper_spectra()
    fig = plots.interpret_planes({"a": p, "b": p[p.checkpoint == "codessm"]}, "codessm", {"codessm_typeinf": "r"})
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.patches) == 3                                 # low-, band-, high-pass regions
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x0 <= p.spectral_centroid.min() and x1 >= p.spectral_centroid.max()
        assert y0 <= p.log10_lhfr.min() and y1 >= p.log10_lhfr.max()
    matplotlib.pyplot.close(fig)
