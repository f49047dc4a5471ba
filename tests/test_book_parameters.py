"""Issue 10: a parameter change through papermill reaches the figures' provenance lines and,
when the numbers cross a decision rule, the claims ledger. Runs the real chapter 03 on the
smoke profile twice. Its rule for claim C1 is inconclusive below 30 test pairs per task, and
also while the pretraining gate fails (it does at smoke, so C1 stays inconclusive): the record
keeps both reasons and the test-item counts. Smoke's test fraction of 0.2 leaves fewer than 30
pairs in some task (too little data); with ``probe_test_fraction=0.5`` every task has at least
30, so "too little data" must leave the verdict's reasons."""
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
    after, c1_after = _run(tmp_path, monkeypatch, "changed", {"probe_test_fraction": 0.5})

    def smallest(c1):
        return min(v for k, v in c1["numbers"].items() if k.startswith("test items, "))

    assert smallest(c1_before) < 30 and "too little data" in c1_before["note"]
    assert c1_before["verdict"] == "inconclusive"
    assert smallest(c1_after) >= 30 and "too little data" not in c1_after["note"]
    # the gate alone now decides whether C1 is decided
    gate_failed = c1_after["gate"].startswith("failed")
    assert (c1_after["verdict"] == "inconclusive") == gate_failed

    assert before["figures"] and len(before["figures"]) == len(after["figures"])
    for old, new in zip(before["figures"], after["figures"]):
        assert "probe_test_fraction" not in old["provenance"]
        assert "overrides probe_test_fraction=0.5" in new["provenance"]
        assert new["overrides"] == {"probe_test_fraction": 0.5}
    # the manifest on disk holds the same provenance
    stored = json.loads((tmp_path / "changed" / "manifest.json").read_text())
    assert stored["chapters"]["03_probing"]["figures"] == after["figures"]
