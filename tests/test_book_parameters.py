"""Issue 10: a parameter change through papermill reaches the figures' provenance lines and,
when the numbers cross a decision rule, the claims ledger. Runs the real chapter 03 on the
smoke profile twice. Its rule for claim C1 is inconclusive below 30 test pairs per label:
smoke has 40 pairs per label and a test fraction of 0.2 (8 per label, inconclusive); with
``probe_test_fraction=0.8`` there are 32, so the verdict must become a decided one."""
import json

import pytest

from analysis import book, ledger

pytestmark = pytest.mark.slow


def _run(tmp_path, monkeypatch, name, overrides):
    run_dir = tmp_path / name
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(run_dir))
    out = tmp_path / f"{name}-notebooks"
    out.mkdir()
    manifest = book.run("smoke", only=["03"], overrides=overrides, out_dir=out)
    [c1] = [r for r in ledger.load(run_dir) if r["claim"] == "C1"]
    return manifest["chapters"]["03_probing"], c1


def test_a_parameter_change_moves_provenance_and_verdict(tmp_path, monkeypatch):
    before, c1_before = _run(tmp_path, monkeypatch, "plain", {})
    after, c1_after = _run(tmp_path, monkeypatch, "changed", {"probe_test_fraction": 0.8})

    assert c1_before["numbers"]["test pairs per label (smallest)"] < 30
    assert c1_before["verdict"] == "inconclusive"
    assert c1_after["numbers"]["test pairs per label (smallest)"] >= 30
    assert c1_after["verdict"] in ("reproduced", "partly reproduced", "not reproduced")

    assert before["figures"] and len(before["figures"]) == len(after["figures"])
    for old, new in zip(before["figures"], after["figures"]):
        assert "probe_test_fraction" not in old["provenance"]
        assert "overrides probe_test_fraction=0.8" in new["provenance"]
        assert new["overrides"] == {"probe_test_fraction": 0.8}
    # the manifest on disk holds the same provenance
    stored = json.loads((tmp_path / "changed" / "manifest.json").read_text())
    assert stored["chapters"]["03_probing"]["figures"] == after["figures"]
