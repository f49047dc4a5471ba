"""The papermill runner: parameters, failure reports, manifest, chapter selection."""
import json
import textwrap

import pytest

from analysis import book, config, ledger

HEADER = textwrap.dedent("""\
    ---
    jupytext:
      formats: md:myst
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      name: python3
      display_name: Python 3
      language: python
    ---

    # Test chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "default"
    overrides = {}
    ```
    """)


def _chapter(folder, name, body):
    path = folder / f"{name}.md"
    path.write_text(HEADER + "\n```{code-cell} ipython3\n" + body + "\n```\n")
    return path


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_failure_report_names_chapter_cell_and_error(tmp_path, run_dir):
    src = tmp_path / "book"
    src.mkdir()
    _chapter(src, "01_ok", "from analysis import config\ncfg = config.profile(profile, **overrides)\nassert cfg.name == 'smoke'")
    _chapter(src, "02_bad", "x = 1\nraise RuntimeError('deliberate failure in chapter two')")
    _chapter(src, "03_never", "y = 2")
    with pytest.raises(book.ChapterFailure) as info:
        book.run("smoke", book=src, out_dir=src)
    failure = info.value
    assert failure.chapter == "02_bad"
    assert "deliberate failure in chapter two" in failure.error
    assert "RuntimeError" in failure.error
    assert "raise RuntimeError" in failure.source
    assert "02_bad" in str(failure)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["chapters"]["01_ok"]["status"] == "ok"
    assert manifest["chapters"]["02_bad"]["status"] == "failed"
    assert "03_never" not in manifest["chapters"]  # stopped at the first failure
    assert manifest["chapters"]["01_ok"]["parameters"]["profile"] == "smoke"
    assert manifest["versions"]["torch"]


def test_overrides_reach_the_chapter(tmp_path, run_dir):
    src = tmp_path / "book"
    src.mkdir()
    _chapter(src, "01_steps", "from analysis import config\ncfg = config.profile(profile, **overrides)\n"
                              "assert cfg.pretrain_steps == 7, cfg.pretrain_steps")
    book.run("smoke", overrides={"pretrain_steps": 7}, book=src, out_dir=src)
    with pytest.raises(book.ChapterFailure, match="AssertionError"):
        book.run("smoke", overrides={"pretrain_steps": 8}, book=src, out_dir=src)


def test_parse_overrides_validates_names_and_types():
    assert book.parse_overrides([["seeds", "3"], ["lr", "1e-3"]]) == {"seeds": 3, "lr": 0.001}
    with pytest.raises(SystemExit, match="unknown parameter 'sedes'.*seeds"):
        book.parse_overrides([["sedes", "3"]])
    with pytest.raises(SystemExit, match="seeds"):
        book.parse_overrides([["seeds", "three"]])


def test_unknown_profile_fails_before_any_chapter(tmp_path, run_dir):
    with pytest.raises(ValueError, match="valid profiles"):
        book.run("gigantic", book=tmp_path, out_dir=tmp_path)


def test_select_runs_intro_last_and_always():
    names = [book.BOOK / f"{n}.md" for n in ("00_intro", "01_corpus", "04_finetuning")]
    assert [p.stem for p in book.select(names, None)] == ["01_corpus", "04_finetuning", "00_intro"]
    assert [p.stem for p in book.select(names, ["04"])] == ["04_finetuning", "00_intro"]
    with pytest.raises(SystemExit, match="no chapter '09'"):
        book.select(names, ["09"])


def test_ledger_roundtrip_and_validation(run_dir):
    ledger.record("C1", "03_probing", {"gap": 0.1}, "gap > 0 at every layer", "reproduced",
                  figure="fig-probe", profile="smoke")
    rows = ledger.load()
    assert {r["claim"] for r in rows} == set(ledger.CLAIMS)
    c1 = [r for r in rows if r["claim"] == "C1"]
    assert c1[0]["verdict"] == "reproduced" and c1[0]["numbers"] == {"gap": 0.1}
    assert all(r["verdict"] == "not run" for r in rows if r["claim"] != "C1")
    assert 'href="03_probing.html#fig-probe"' in ledger.html_table(rows)
    with pytest.raises(ValueError, match="verdict must be"):
        ledger.record("C1", "03_probing", {"gap": 0.1}, "rule", "sort of")
    with pytest.raises(ValueError, match="unknown claim"):
        ledger.record("C9", "03_probing", {"gap": 0.1}, "rule", "reproduced")
    assert ledger.decide(True) == "reproduced"
    assert ledger.decide(False, partly=True) == "partly reproduced"
    assert ledger.decide(True, enough_data=False) == "inconclusive"


def test_chapter_parameters_and_provenance_reach_the_manifest(tmp_path, run_dir):
    src = tmp_path / "book"
    src.mkdir()
    path = src / "01_params.md"
    path.write_text(HEADER.replace('overrides = {}\n', 'overrides = {}\nwidths = [3, 5]\nsmooth = True\n') +
                    "\n```{code-cell} ipython3\nfrom analysis import config, provenance\n"
                    "cfg = config.profile(profile, **overrides)\n"
                    "assert widths == [7] and smooth is False, (widths, smooth)\n"
                    "provenance.show('01_params', cfg, widths=widths)\n```\n")
    assert book.chapter_parameters(path) == {"profile": "default", "overrides": {}, "widths": [3, 5],
                                             "smooth": True}
    overrides, params = book.split_parameters([["seeds", "2"], ["widths", "[7]"], ["smooth", "False"]], [path])
    assert overrides == {"seeds": 2} and params == {"widths": [7], "smooth": False}
    with pytest.raises(SystemExit, match="smooth takes a bool"):
        book.split_parameters([["smooth", "maybe"]], [path])
    with pytest.raises(SystemExit, match="parameters of the chosen chapters: smooth, widths"):
        book.split_parameters([["widht", "3"]], [path])
    manifest = book.run("smoke", overrides=overrides, book=src, out_dir=src, chapter_params=params)
    entry = manifest["chapters"]["01_params"]
    assert entry["status"] == "ok" and entry["parameters"]["widths"] == [7]
    [figure] = entry["figures"]
    assert "profile `smoke`" in figure["provenance"] and "seeds=2" in figure["provenance"]
    assert "widths [7]" in figure["provenance"] and figure["overrides"] == {"seeds": 2}


def test_rerun_command_round_trips_through_the_parser():
    cmd = book.rerun_command("06_modifications", "smoke", {"seeds": 2}, ablation=False, widths=[3, 5])
    assert cmd == ("python -m analysis.book run --only 06 --profile smoke -p seeds 2 -p ablation False "
                   "-p widths '[3, 5]'")
    import shlex
    words = shlex.split(cmd)
    pairs = [[words[i + 1], words[i + 2]] for i, w in enumerate(words) if w == "-p"]
    assert pairs == [["seeds", "2"], ["ablation", "False"], ["widths", "[3, 5]"]]


def test_no_chapter_parameter_shadows_a_profile_field():
    """A chapter parameter named like a Profile field could never be set: ``-p`` sends it to the profile."""
    for md in book.chapters():
        shadowed = set(book.chapter_parameters(md)) & config.FIELD_NAMES
        assert not shadowed, (md.name, shadowed)


def test_ledger_records_gate_noise_and_intervals(run_dir):
    from analysis.claims import Verdict
    v = Verdict("C1", "inconclusive", "pretraining did not take.", {"mean gap": 0.01}, {"mean gap": (-0.02, 0.04)},
                "the rule", "test items (bootstrap)", "failed (codessm: MLM gain 0.3 nats)")
    ledger.record("C1", "03_probing", **v.record_fields(), figure="fig-x", profile="smoke")
    [row] = [r for r in ledger.load() if r["claim"] == "C1"]
    assert row["gate"].startswith("failed") and row["noise"] == "test items (bootstrap)"
    assert row["intervals"] == {"mean gap": [-0.02, 0.04]}
    html = ledger.html_table([row])
    assert "mean gap = 0.01 [-0.02, 0.04]" in html and "failed (codessm" in html and "Pretraining gate" in html


def test_gate_summary_says_which_verdicts_stand_on_pretraining_that_took():
    rows = [{"claim": "C1", "verdict": "inconclusive", "gate": "failed (codessm: ...)"},
            {"claim": "C3", "verdict": "not reproduced", "gate": "passed (codessm)"},
            {"claim": "C5", "verdict": "reproduced", "gate": ""},
            {"claim": "C4", "verdict": "not run", "gate": ""}]
    text = ledger.gate_summary(rows)
    assert "pretraining took: C3." in text and "failed for C1" in text and "without the gate" in text
    assert "C4" not in text
