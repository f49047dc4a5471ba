"""The claims ledger: each chapter records its verdict on the paper's claims it re-tests.

A record is ``{claim, chapter, statement, numbers, rule, verdict, figure, profile}``,
written as JSON to ``<run dir>/ledger/<claim>__<chapter>.json`` by the chapter that computed
it. The intro chapter reads every record (``load()``) and renders the ledger table. No
verdict is written by hand: a chapter computes ``verdict`` from its numbers with the
``rule`` it states, e.g. ``verdict = decide(all(gaps > 0), any(gaps > 0))``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from .cache import write_json_atomic
from .provenance import run_dir

VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    chapters: tuple


CLAIMS = {c.id: c for c in (
    Claim("C1", "After pretraining, CodeSSM captures code syntax and semantics better than a "
                "Transformer trained under the same conditions (RoCoder), at every layer, on "
                "three probing tasks.", ("03_probing",)),
    Claim("C2", "During fine-tuning, CodeSSM forgets some syntactic and semantic relations, most "
                "of all on the task that emphasises short-range dependencies (type inference).",
          ("04_finetuning",)),
    Claim("C3", "SSM-Interpret shows a spectral shift of the SSM kernels toward high frequencies "
                "(short-range dependencies) during fine-tuning: early forward kernels change class (layer 1 "
                "band- to high-pass under type inference, layer 4 low- to band-pass under both), deeper "
                "kernels barely move.",
          ("05_ssm_interpret",)),
    Claim("C3b", "The pretrained CodeSSM's kernels form a filter taxonomy: low-, band- and high-pass kernels "
                 "across layers, some layers pairing directions of opposite kinds (SSM-Interpret; not in the "
                 "abstract).", ("05_ssm_interpret",)),
    Claim("C4", "Architectural changes guided by the analysis (CodeSSM-HF, CodeSSM-8kernel) "
                "improve the SSM code model: up to +6 MRR on NL code search, and gains on "
                "long-context retrieval and type inference.", ("06_modifications",)),
    Claim("C5", "SSMs work without positional embeddings and extrapolate to sequences longer than "
                "the pretraining context (from the CodeSSM paper).", ("04_finetuning",)),
)}


def decide(holds: bool, partly: bool = False, enough_data: bool = True) -> str:
    """The verdict from a claim's decision rule: ``holds`` (the rule is met in full),
    ``partly`` (met in part), ``enough_data`` (the numbers can decide at all)."""
    if not enough_data:
        return "inconclusive"
    if holds:
        return "reproduced"
    return "partly reproduced" if partly else "not reproduced"


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _finite(obj.item())
    return obj


def record(claim: str, chapter: str, numbers: dict, rule: str, verdict: str, *,
           figure: str | None = None, profile: str | None = None, note: str = "",
           gate: str = "", noise: str = "", intervals: dict | None = None) -> dict:
    """Write one chapter's verdict on ``claim``; returns the record. ``gate`` says whether the
    pretraining gate passed for the claim's models, ``noise`` which noise the intervals sample,
    ``intervals`` name -> [low, high] (``analysis.claims.Verdict.record_fields`` gives all)."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; claims: {', '.join(CLAIMS)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not numbers:
        raise ValueError("a verdict needs the numbers that decide it")
    entry = {"claim": claim, "chapter": chapter, "statement": CLAIMS[claim].statement,
             "numbers": _finite(numbers), "rule": rule, "verdict": verdict, "figure": figure,
             "profile": profile, "note": note, "gate": gate, "noise": noise,
             "intervals": _finite({k: list(v) for k, v in (intervals or {}).items()})}
    write_json_atomic(run_dir() / "ledger" / f"{claim}__{chapter}.json", entry)
    return entry


def load(folder: Path | None = None) -> list[dict]:
    """Every claim of the paper with its recorded verdicts (``verdict: "not run"`` when no
    chapter has recorded one yet), ordered by claim id."""
    folder = Path(folder or run_dir()) / "ledger"
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            found.setdefault(entry["claim"], []).append(entry)
        except (OSError, ValueError, KeyError):
            continue  # a corrupt record is ignored; its chapter rewrites it on the next run
    rows = []
    for cid, claim in CLAIMS.items():
        entries = found.get(cid) or [{"claim": cid, "chapter": claim.chapters[0],
                                      "statement": claim.statement, "numbers": {}, "rule": "",
                                      "verdict": "not run", "figure": None, "profile": None,
                                      "note": "no chapter has recorded a verdict yet", "gate": "",
                                      "noise": "", "intervals": {}}]
        rows += entries
    return rows


def gate_summary(rows: list[dict]) -> str:
    """One paragraph: which verdicts stand on models whose pretraining took (gate passed), which
    were decided without the gate, and which are inconclusive because it failed."""
    ran = [r for r in rows if r["verdict"] != "not run"]
    passed = [r["claim"] for r in ran if (r.get("gate") or "").startswith("passed")]
    failed = [r["claim"] for r in ran if (r.get("gate") or "").startswith("failed")]
    other = [r["claim"] for r in ran if r["claim"] not in passed + failed]
    parts = [f"Verdicts standing on models whose pretraining took: {', '.join(passed) or 'none'}."]
    if failed:
        parts.append(f"The pretraining gate failed for {', '.join(failed)}: those verdicts are inconclusive "
                     "at this profile, whatever the numbers beside them say.")
    if other:
        parts.append(f"Decided without the gate (claims about the architecture): {', '.join(other)}.")
    return " ".join(parts)


def format_numbers(numbers: dict, digits: int = 3, intervals: dict | None = None) -> str:
    """``name = value`` pairs, each followed by its interval [low, high] where one is given."""
    intervals = intervals or {}
    parts = []
    for key, value in numbers.items():
        if isinstance(value, float):
            value = f"{value:.{digits}g}"
        if key in intervals and len(intervals[key]) == 2:
            lo, hi = (f"{x:.{digits}g}" if isinstance(x, (int, float)) else "n/a" for x in intervals[key])
            value = f"{value} [{lo}, {hi}]"
        parts.append(f"{key} = {value}")
    return "; ".join(parts)


_VERDICT_COLORS = {"reproduced": "#1b9e77", "partly reproduced": "#e6ab02",
                   "not reproduced": "#d95f02", "inconclusive": "#7570b3", "not run": "#999999"}


def html_table(rows: list[dict], chapters: list[str] | None = None) -> str:
    """The ledger as an HTML table; chapter links point at the chapter's page (and figure).
    With ``chapters`` (the chapters in the book), a chapter not in the book is not linked."""

    out = ['<table class="ledger"><thead><tr><th>Claim</th><th>Statement</th><th>Chapter</th>'
           '<th>Verdict</th><th>Pretraining gate</th><th>Numbers (95% intervals)</th><th>Noise sampled</th>'
           '<th>Decision rule</th></tr></thead><tbody>']
    for r in rows:
        anchor = f"#{r['figure']}" if r.get("figure") else ""
        link = f'<a href="{escape(r["chapter"])}.html{escape(anchor)}">{escape(r["chapter"][:2])}</a>'
        if chapters is not None and r["chapter"] not in chapters:
            link = f"{escape(r['chapter'][:2])} (not in this book yet)"
        color = _VERDICT_COLORS.get(r["verdict"], "#333333")
        profile = f" (profile {escape(r['profile'])})" if r.get("profile") else ""
        note = f"<br><small>{escape(r['note'])}</small>" if r.get("note") else ""
        out.append(
            f"<tr><td>{escape(r['claim'])}</td><td>{escape(r['statement'])}</td><td>{link}</td>"
            f'<td><b style="color:{color}">{escape(r["verdict"])}</b>{profile}</td>'
            f"<td>{escape(r.get('gate') or 'not applied')}</td>"
            f"<td>{escape(format_numbers(r['numbers'], intervals=r.get('intervals') or {}))}</td>"
            f"<td>{escape(r.get('noise') or '')}</td><td>{escape(r['rule'])}{note}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
