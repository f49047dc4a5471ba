"""Where a run's records go, and the provenance line under every figure.

``run_dir()`` is ``$ANALYSIS_RUN_DIR`` or ``_build/run`` at the repository root: the book
runner's manifest, each chapter's ledger records and provenance lines live there.
``show(chapter, cfg, ...)`` displays the line saying what produced a figure (profile, changed
parameters, seeds, checkpoints, commit) and appends it to
``<run dir>/provenance/<chapter>.jsonl``, which the runner stores in the run manifest; the
chapter names itself, so no environment variable carries it.
"""
from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from IPython.display import Markdown, display

ROOT = Path(__file__).resolve().parents[1]


def run_dir() -> Path:
    return Path(os.environ.get("ANALYSIS_RUN_DIR", ROOT / "_build" / "run")).resolve()


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the working tree (``+dirty`` when it has uncommitted changes)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               text=True, capture_output=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def line(cfg, seeds=None, checkpoints: dict | None = None, **extra) -> str:
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


def record(chapter: str, cfg, text: str) -> Path:
    """Append the provenance line ``text`` of a figure of ``chapter`` to its run record."""
    path = run_dir() / "provenance" / f"{chapter}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"provenance": text, "profile": cfg.name, "overrides": cfg.differences()},
                           default=str) + "\n")
    return path


def show(chapter: str, cfg, **kwargs) -> None:
    """Display the provenance line as Markdown under the figure and record it (``record``)."""
    text = line(cfg, **kwargs)
    record(chapter, cfg, text)
    display(Markdown(f"<small>{text}</small>"))
