"""The paper's own numbers, as tidy frames with their sources: what the chapters and the ledger
put beside every re-run number.

- ``paper_probing()``: the authors' DirectProbe results per task, checkpoint and layer
  (primary: their analysis repository's logs).
- ``paper_spectra()``: their SSM-Interpret statistics per checkpoint, layer and direction
  (primary: the printed outputs of their kernel notebook).
- ``paper_table1()``: Table 1 of the paper as quoted second-hand (not read in the paper itself).

The CSVs in ``analysis/reference_data/`` are transcriptions; ``SOURCES`` names where each came
from, and ``source_line(name)`` says it in one sentence for a figure or a table.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA = Path(__file__).with_name("reference_data")
AUTHORS_REPO = "github.com/abx04/interpretability_ssm"

SOURCES = {
    "probing": {
        "file": "authors_directprobe.csv", "quality": "primary", "repository": AUTHORS_REPO,
        "path": "DirectProbe results/<task>/<checkpoint>/<layer>/log.txt (and DirectProbe_plot.ipynb)",
        "commits": "304dffa1, eb0e598b, 3ffa02d3",
        "note": ("accuracy: the log's overall test accuracy; mean_label_accuracy: the plotted mean "
                 "accuracy across labels, printed for data flow only"),
    },
    "spectra": {
        "file": "authors_kernel_spectra.csv", "quality": "primary", "repository": AUTHORS_REPO,
        "path": "kernel_analysis_ssm.ipynb (printed outputs)", "commits": "d91da73d",
        "note": "filter_class computed from the centroid and log10 LHFR with the notebook's thresholds",
    },
    "table1": {
        "file": "paper_table1.csv", "quality": "secondary", "repository": None,
        "path": "Table 1 of arXiv 2602.06774 v1, as quoted by public reproducibility notes",
        "commits": None,
        "note": "second-hand: which variant gives each best number is not known",
    },
}

PROBE_LAYERS = (3, 4, 6, 8, 10, 11)  # of 12, the layers the authors probed
CHECKPOINTS = ("codessm", "codessm_sqa", "codessm_typeinf", "rocoder", "rocoder_sqa", "rocoder_typeinf")


def _read(name: str) -> pd.DataFrame:
    path = DATA / SOURCES[name]["file"]
    if not path.exists():
        raise FileNotFoundError(f"the reference table {path} is missing: it ships with the package "
                                f"(analysis/reference_data/); restore it from git")
    return pd.read_csv(path)


def paper_probing() -> pd.DataFrame:
    """Columns: task (distance | siblings | dfg), checkpoint, layer (of 12), accuracy,
    mean_label_accuracy (NaN where not published), n_clusters, status ("ok" | "not finished"),
    source_file. One row per task, checkpoint and layer."""
    return _read("probing")


def paper_spectra() -> pd.DataFrame:
    """Columns: checkpoint (codessm | codessm_sqa | codessm_typeinf), layer (1..12), direction
    (forward | backward), dominant_frequency, dominant_magnitude, spectral_centroid,
    low_freq_energy, high_freq_energy, lhfr, log10_lhfr, filter_class."""
    return _read("spectra")


def paper_table1() -> pd.DataFrame:
    """Columns: task, metric, checkpoint (codessm | best_variant | codessm_1024kernel), value (in
    percent), source_quality ("secondary")."""
    return _read("table1")


def source_line(name: str) -> str:
    """One sentence naming where the frame ``name`` (probing | spectra | table1) comes from."""
    if name not in SOURCES:
        raise KeyError(f"unknown reference {name!r}; expected one of {sorted(SOURCES)}")
    s = SOURCES[name]
    if s["repository"] is None:
        return f"Paper's numbers ({s['quality']}): {s['path']}; {s['note']}."
    return (f"Paper's numbers ({s['quality']}): {s['repository']}, {s['path']}, "
            f"commits {s['commits']}; {s['note']}.")


def table1_summary() -> str:
    """Table 1 in one line, CodeSSM to the best variant per task (second-hand), e.g. for the
    ledger's "paper" cell."""
    t1 = paper_table1().set_index(["task", "checkpoint"]).value
    names = {"nl_code_search": "search MRR", "long_context_retrieval_sqa": "SQA MRR", "type_inference": "types F1"}
    parts = [f"{name} {t1[(task, 'codessm')]:.2f} to {t1[(task, 'best_variant')]:.2f} "
             f"({t1[(task, 'best_variant')] - t1[(task, 'codessm')]:+.2f})" for task, name in names.items()]
    return "; ".join(parts) + " (second-hand, Table 1 as quoted)"
