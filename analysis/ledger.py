"""The claims ledger: each chapter records its verdict on the paper's claims it re-tests.

A record is ``{claim, chapter, statement, numbers, rule, verdict, figure, profile, paper,
headline, ...}``, written as JSON to ``<run dir>/ledger/<claim>__<chapter>.json`` by the chapter
that computed it. ``paper`` is the paper's own number for the claim (text, or a dict name ->
value), ``headline`` the name of the re-run number that sums the claim up. The intro chapter
reads every record (``load()``) and renders the ledger at a glance (``html_table``: one short
row per claim, the rule, noise and every number folded under it). No
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
    short: str = ""               # a few words for the ledger row


CLAIMS = {c.id: c for c in (
    Claim("C1", "After pretraining, CodeSSM's representations hold code syntax and data flow better "
                "than those of a Transformer trained under the same conditions (RoCoder): ahead at "
                "every probed layer on AST distance and siblings, on data flow at most layers.",
          ("03_probing",), "probing: CodeSSM ahead of RoCoder"),
    Claim("C2", "After fine-tuning on type inference CodeSSM loses syntax and data flow on every "
                "probing task, far more than after long-context retrieval (SQA); RoCoder fine-tuned "
                "on type inference does not lose syntax: the forgetting is the SSM's.",
          ("04_finetuning",), "forgetting after type inference"),
    Claim("C3", "SSM-Interpret shows a spectral shift of the SSM kernels toward high frequencies "
                "(short-range dependencies) during fine-tuning: early forward kernels change class (layer 1 "
                "band- to high-pass under type inference, layer 4 low- to band-pass under both), deeper "
                "kernels barely move.",
          ("05_ssm_interpret",), "kernels shift to high frequencies"),
    Claim("C3b", "The pretrained CodeSSM's kernels form a filter taxonomy: low-, band- and high-pass kernels "
                 "across layers, some layers pairing directions of opposite kinds (SSM-Interpret; not in the "
                 "abstract).", ("05_ssm_interpret",), "filter taxonomy of the kernels"),
    Claim("C4", "Architectural changes guided by the analysis (CodeSSM-HF, CodeSSM-8kernel) "
                "improve the SSM code model: up to +6 MRR on NL code search, and gains on "
                "long-context retrieval and type inference.", ("06_modifications",),
          "CodeSSM-HF / -8kernel improve"),
    Claim("C5", "SSMs work without positional embeddings and extrapolate to sequences longer than "
                "the pretraining context (from the CodeSSM paper).", ("04_finetuning",),
          "SSMs read past the context"),
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
           gate: str = "", noise: str = "", intervals: dict | None = None,
           paper: str | dict | None = None, headline: str | None = None) -> dict:
    """Write one chapter's verdict on ``claim``; returns the record. ``gate`` says whether the
    pretraining gate passed for the claim's models, ``noise`` which noise the intervals sample,
    ``intervals`` name -> [low, high] (``analysis.claims.Verdict.record_fields`` gives all).
    ``paper``: the paper's own number for the claim, as text or a dict name -> value (optional:
    the row shows "—" without it). ``headline``: the key of ``numbers`` the ledger row shows
    (default: the first with an interval, else the first number); a headline the verdict did
    not measure (held back: too few test items) shows as "not measured"."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; claims: {', '.join(CLAIMS)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not numbers:
        raise ValueError("a verdict needs the numbers that decide it")
    if paper is not None and not isinstance(paper, (str, dict)):
        raise TypeError(f"paper must be text or a dict name -> value, got {type(paper).__name__}")
    if headline is None:
        headline = next((k for k in (intervals or {}) if k in numbers), next(iter(numbers)))
    entry = {"claim": claim, "chapter": chapter, "statement": CLAIMS[claim].statement,
             "numbers": _finite(numbers), "rule": rule, "verdict": verdict, "figure": figure,
             "profile": profile, "note": note, "gate": gate, "noise": noise,
             "intervals": _finite({k: list(v) for k, v in (intervals or {}).items()}),
             "paper": _finite(paper), "headline": headline}
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
                                      "noise": "", "intervals": {}, "paper": None, "headline": None}]
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


def _cell_number(numbers: dict, intervals: dict, name: str | None) -> str:
    """One number with its interval, ``name = value [low, high]``; "—" when there is none."""
    if not numbers:
        return "—"
    if name is not None and name not in numbers:
        return f"{name}: not measured"
    name = name or next(iter(numbers))
    return format_numbers({name: numbers[name]}, intervals={name: intervals.get(name) or []})


def _paper_cell(paper) -> str:
    if paper is None or paper == "" or paper == {}:
        return "—"
    return paper if isinstance(paper, str) else format_numbers(paper)


def _gate_word(gate: str) -> str:
    """The gate's outcome in a word or two ("passed", "failed", ...); its sentence is in the fold."""
    return (gate or "not applied").split(" (")[0]


def html_table(rows: list[dict], chapters: list[str] | None = None) -> str:
    """The ledger at a glance: one short row per verdict (claim, the paper's number, this
    build's headline number with its 95% interval, verdict, pretraining gate), and under it a
    folded ``<details>`` with the claim's statement, the decision rule, the noise sampled, the
    gate's sentence and every number. Chapter links point at the chapter's page (and figure);
    with ``chapters`` (the chapters in the book), a chapter not in the book is not linked."""
    out = ['<table class="ledger"><thead><tr><th>Claim</th><th>The paper</th>'
           '<th>This build (95% interval)</th><th>Verdict</th><th>Pretraining gate</th></tr></thead><tbody>']
    for r in rows:
        anchor = f"#{r['figure']}" if r.get("figure") else ""
        claim = CLAIMS.get(r["claim"])
        short = escape(claim.short if claim and claim.short else r["claim"])
        link = f'<a href="{escape(r["chapter"])}.html{escape(anchor)}">{short}</a>'
        if chapters is not None and r["chapter"] not in chapters:
            link = f"{short} (chapter {escape(r['chapter'][:2])}, not in this book yet)"
        color = _VERDICT_COLORS.get(r["verdict"], "#333333")
        profile = f"<br><small>profile {escape(r['profile'])}</small>" if r.get("profile") else ""
        intervals = r.get("intervals") or {}
        build = _cell_number(r["numbers"], intervals, r.get("headline"))
        detail = "".join(f"<p><b>{k}:</b> {escape(v)}</p>" for k, v in (
            ("Claim", r.get("statement") or ""), ("Why", r.get("note") or ""), ("Decision rule", r["rule"]),
            ("Noise sampled", r.get("noise") or ""), ("Pretraining gate", r.get("gate") or "not applied"),
            ("Numbers (95% intervals)", format_numbers(r["numbers"], intervals=intervals))) if v)
        out.append(
            f"<tr><td><b>{escape(r['claim'])}</b> {link}</td><td>{escape(_paper_cell(r.get('paper')))}</td>"
            f"<td>{escape(build)}</td><td><b style=\"color:{color}\">{escape(r['verdict'])}</b>{profile}</td>"
            f"<td>{escape(_gate_word(r.get('gate') or ''))}</td></tr>"
            f'<tr class="ledger-detail"><td colspan="5"><details><summary>rule, noise and numbers of '
            f"{escape(r['claim'])}</summary>{detail}</details></td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
