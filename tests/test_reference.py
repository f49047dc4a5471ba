"""analysis.reference: the project's copy of the authors' numbers equals the transcription in
../shared/reference cell for cell (when that folder exists), and is well formed always."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import reference

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"
FRAMES = {"probing": reference.paper_probing, "spectra": reference.paper_spectra,
          "table1": reference.paper_table1}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_equals_shared_transcription(name):
    shared = SHARED / reference.SOURCES[name]["file"]
    if not shared.exists():
        pytest.skip("../shared/reference is not in this clone (only the project's copy is checked)")
    pd.testing.assert_frame_equal(FRAMES[name](), pd.read_csv(shared), check_exact=True)


def test_probing_frame_is_tidy():
    df = reference.paper_probing()
    assert {"task", "checkpoint", "layer", "accuracy", "mean_label_accuracy", "status"} <= set(df.columns)
    assert set(df.task) == {"distance", "siblings", "dfg"}
    assert set(df.checkpoint) == set(reference.CHECKPOINTS)
    assert set(df.layer) == set(reference.PROBE_LAYERS)
    assert not df.duplicated(["task", "checkpoint", "layer"]).any()
    ok = df[df.status == "ok"]
    assert ok.accuracy.between(0, 1).all() and df[df.status != "ok"].accuracy.isna().all()
    # C1 as PAPER.md states it: CodeSSM above RoCoder at every probed layer on siblings
    sib = ok[ok.task == "siblings"].pivot(index="layer", columns="checkpoint", values="accuracy")
    assert (sib.codessm > sib.rocoder).all()


def test_spectra_classes_follow_the_notebook_thresholds():
    df = reference.paper_spectra()
    assert len(df) == 3 * 12 * 2
    np.testing.assert_allclose(np.log10(df.lhfr), df.log10_lhfr, atol=1e-5)
    low = (df.spectral_centroid < 0.166) & (df.log10_lhfr > 1)
    high = (df.spectral_centroid >= 0.166) & (df.log10_lhfr < 0)
    band = (df.spectral_centroid >= 0.166) & df.log10_lhfr.between(0, 1)
    expected = np.select([low, high, band], ["low-pass", "high-pass", "band-pass"], "unlabelled")
    assert list(df.filter_class) == list(expected)


def test_table1_is_second_hand_and_source_lines_name_their_origin():
    t1 = reference.paper_table1()
    assert (t1.source_quality == "secondary").all()
    assert "abx04/interpretability_ssm" in reference.source_line("probing")
    assert "second-hand" in reference.source_line("table1")
    with pytest.raises(KeyError, match="expected one of"):
        reference.source_line("tabel1")


def test_table1_summary_reads_the_frame():
    line = reference.table1_summary()
    assert "search MRR 25.39 to 30.89 (+5.50)" in line and "types F1 59.70 to 60.98 (+1.28)" in line
    assert line.endswith("(second-hand, Table 1 as quoted)")
