"""The ledger at a glance: one short row per claim with the paper's number beside this build's,
the rule, noise and numbers folded under it; the optional ``paper`` and ``headline`` fields."""
import pytest

from analysis import ledger


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def _record(**kw):
    return ledger.record("C1", "03_probing", {"gap distance layer 1": 0.2, "mean gap": 0.05},
                         "every gap above 0", "partly reproduced", intervals={"mean gap": (0.01, 0.09)},
                         gate="passed (codessm, rocoder)", noise="test items (paired bootstrap)", **kw)


def test_a_row_shows_the_paper_the_headline_with_its_interval_and_folds_the_rest(run_dir):
    _record(paper={"mean gap": 0.043, "verdict on the authors' data": "reproduced"}, figure="fig-a", profile="smoke")
    [row] = [r for r in ledger.load() if r["claim"] == "C1"]
    assert row["headline"] == "mean gap"                    # the first number with an interval
    html = ledger.html_table([row])
    top, fold = html.split('<tr class="ledger-detail">')
    assert "mean gap = 0.043; verdict on the authors&#x27; data = reproduced" in top
    assert "mean gap = 0.05 [0.01, 0.09]" in top and "gap distance layer 1" not in top
    assert "<td>passed</td>" in top and "every gap above 0" not in top
    assert fold.count("<details>") == 1 and "every gap above 0" in fold and "gap distance layer 1 = 0.2" in fold
    assert "passed (codessm, rocoder)" in fold and "paired bootstrap" in fold
    assert 'href="03_probing.html#fig-a"' in top and "probing: CodeSSM ahead of RoCoder" in top


def test_paper_is_optional_text_or_dict_and_an_unmeasured_headline_falls_back(run_dir):
    _record(paper="CodeSSM ahead at 14 of 16 layers", headline="gap distance layer 1")
    [row] = [r for r in ledger.load() if r["claim"] == "C1"]
    assert row["paper"] == "CodeSSM ahead at 14 of 16 layers"
    assert "gap distance layer 1 = 0.2</td>" in ledger.html_table([row])
    _record()
    [row] = [r for r in ledger.load() if r["claim"] == "C1"]
    assert row["paper"] is None and "<td>—</td>" in ledger.html_table([row])
    _record(headline="F")                   # held back before it was measured: said so
    [row] = [r for r in ledger.load() if r["claim"] == "C1"]
    assert "<td>F: not measured</td>" in ledger.html_table([row]) and "mean gap = 0.05 [" not in \
        ledger.html_table([row]).split("ledger-detail")[0]
    with pytest.raises(TypeError, match="paper must be text or a dict"):
        _record(paper=0.04)
    not_run = [r for r in ledger.load() if r["verdict"] == "not run"]
    assert {r["claim"] for r in not_run} == set(ledger.CLAIMS) - {"C1"} and "C3b" in ledger.CLAIMS
    assert all("<td>—</td>" in ledger.html_table([r]) for r in not_run)
