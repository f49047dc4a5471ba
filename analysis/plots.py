"""The book's figure style in one place: seaborn theme, a colour per model, provenance lines.

Every chapter calls ``plots.setup()`` once and draws with ``plots.MODEL_COLORS``; under
each figure it shows ``plots.provenance(cfg, ...)`` so a reader knows which profile,
parameters, seeds, checkpoints and commit produced it.
"""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

MODEL_COLORS = {
    "codessm": "#1b9e77",
    "codessm-hf": "#66a61e",
    "codessm-8kernel": "#e6ab02",
    "rocoder": "#d95f02",
    "bimamba": "#7570b3",
    "random": "#999999",
}
MODEL_LABELS = {
    "codessm": "CodeSSM", "codessm-hf": "CodeSSM-HF", "codessm-8kernel": "CodeSSM-8kernel",
    "rocoder": "RoCoder", "bimamba": "BiMamba",
}
FIGSIZE = (7.0, 3.6)
WIDE = (10.0, 3.6)


def setup() -> None:
    """Apply the book's theme (call once per chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"figure.figsize": FIGSIZE, "figure.dpi": 110, "savefig.dpi": 110,
                      "axes.titlesize": "medium", "legend.frameon": False})


def color(model: str) -> str:
    """The model's colour; random-init baselines (``name:random``) are drawn in grey."""
    base = model.split(":")[0]
    return MODEL_COLORS["random"] if model.endswith(":random") else MODEL_COLORS.get(base, "#333333")


def label(model: str) -> str:
    base = model.split(":")[0]
    text = MODEL_LABELS.get(base, base)
    return text + " (random init)" if model.endswith(":random") else text


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the working tree (``+dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(cfg, seeds=None, checkpoints: dict | None = None, **extra) -> str:
    """One line saying what produced a figure: profile, changed parameters, seeds,
    checkpoint hashes (name -> cache key) and the git commit."""
    parts = [f"profile `{cfg.name}`"]
    diff = cfg.differences()
    if diff:
        parts.append("overrides " + ", ".join(f"{k}={v}" for k, v in sorted(diff.items())))
    parts.append(f"seed(s) {seeds if seeds is not None else cfg.seed}")
    if checkpoints:
        parts.append("checkpoints " + ", ".join(f"{k}@{v}" for k, v in sorted(checkpoints.items())))
    for key, value in extra.items():
        parts.append(f"{key} {value}")
    parts.append(f"commit `{git_commit()}`")
    return "Provenance: " + "; ".join(parts) + "."


def show_provenance(cfg, **kwargs) -> None:
    """Display the provenance line as Markdown under the figure (plain text outside Jupyter)."""
    line = provenance(cfg, **kwargs)
    try:
        from IPython.display import Markdown, display
        display(Markdown(f"<small>{line}</small>"))
    except ImportError:  # pragma: no cover
        print(line)


def finish(fig=None) -> None:
    """Tight layout and show (the inline backend captures the figure)."""
    fig = fig or plt.gcf()
    fig.tight_layout()
    plt.show()
