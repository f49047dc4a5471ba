"""The papermill runner and the run manifest.

    python -m analysis.book run  [--profile smoke|default|paper] [--only 03 ...] [-p NAME VALUE ...]
    python -m analysis.book html [--strict]
    python -m analysis.book list

``run`` converts each chapter ``book/NN_name.md`` (MyST, the source of truth) to a notebook
with jupytext, executes it with papermill into ``book/NN_name.ipynb`` (git-ignored), with the
parameters ``profile`` and ``overrides`` (a dict of Profile fields, from ``-p NAME VALUE``)
injected after the cell tagged ``parameters``. It stops at the first failing chapter and
reports the chapter, the failing cell and the error. The intro chapter (00) renders the
claims ledger that the other chapters write, so it always runs last, and is re-run whenever
another chapter is. A run manifest (chapter, parameters, git commit, package versions,
wall time, status) is written to ``<run dir>/manifest.json``; the run dir is
``$ANALYSIS_RUN_DIR`` or ``_build/run``.

``html`` builds the book with Jupyter Book 1.x from the executed notebooks (it never
re-executes them: ``execute_notebooks: off``), into ``_build/html``.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import config
from .cache import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
INTRO = "00"
PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "pandas", "scikit-learn",
            "matplotlib", "seaborn", "tree-sitter", "tree-sitter-python", "papermill",
            "jupytext", "jupyter-book", "mamba-ssm")


def run_dir() -> Path:
    return Path(os.environ.get("ANALYSIS_RUN_DIR", ROOT / "_build" / "run")).resolve()


def chapters(book: Path = BOOK) -> list[Path]:
    """The chapter sources ``NN_name.md``, intro first."""
    return sorted(p for p in book.glob("[0-9][0-9]_*.md"))


def select(all_chapters: list[Path], only: list[str] | None) -> list[Path]:
    """Chapters matching ``only`` (by number ``03`` or name ``03_probing``), in run order:
    intro last (it renders the ledger the others write) and always included."""
    if only:
        chosen = []
        for key in only:
            hits = [p for p in all_chapters if p.stem == key or p.stem.split("_")[0] == key.zfill(2)]
            if not hits:
                names = ", ".join(p.stem for p in all_chapters)
                raise SystemExit(f"error: no chapter {key!r}; chapters: {names}")
            chosen += [h for h in hits if h not in chosen]
        intro = [p for p in all_chapters if p.stem.startswith(INTRO)]
        chosen += [p for p in intro if p not in chosen]
    else:
        chosen = list(all_chapters)
    return sorted(chosen, key=lambda p: (p.stem.startswith(INTRO), p.stem))


def parse_overrides(pairs: list[list[str]]) -> dict:
    """``[["seeds", "3"], ...]`` -> ``{"seeds": 3}``, validated against the Profile fields."""
    out = {}
    for name, raw in pairs or []:
        if name == "profile":
            raise SystemExit("error: use --profile NAME, not -p profile")
        if name not in config.FIELD_NAMES:
            raise SystemExit(f"error: unknown parameter {name!r}. "
                             f"Valid names: {', '.join(sorted(config.FIELD_NAMES))}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        try:
            out[name] = config.coerce(name, value)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    return out


def to_notebook(md: Path, out: Path) -> Path:
    """Convert a MyST chapter to an (unexecuted) notebook with the python3 kernel."""
    import jupytext

    nb = jupytext.read(md)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md
    nb.metadata.setdefault("jupytext", {})["source"] = str(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, out, fmt="ipynb")
    return out


@dataclass
class ChapterFailure(Exception):
    chapter: str
    cell: int | None
    source: str
    error: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "before the first cell"
        src = "\n".join("    " + line for line in self.source.strip().splitlines()[:12])
        return (f"chapter {self.chapter} failed at {where}:\n{src}\n  {self.error}\n"
                f"  (the executed notebook with the traceback: book/{self.chapter}.ipynb)")


def execute(md: Path, parameters: dict, out_dir: Path = BOOK) -> Path:
    """Execute one chapter with papermill; raises ``ChapterFailure`` with the failing cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    src = to_notebook(md, run_dir() / "src" / (md.stem + ".ipynb"))
    out = out_dir / (md.stem + ".ipynb")
    try:
        papermill.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3",
                                   cwd=str(md.parent), progress_bar=False, report_mode=False)
    except PapermillExecutionError as err:
        index, source = _failed_cell(out)
        raise ChapterFailure(md.stem, index, source, f"{err.ename}: {err.evalue}") from None
    return out


def _failed_cell(nb_path: Path) -> tuple[int | None, str]:
    """(index, source) of the cell papermill marked as failed in the executed notebook."""
    try:
        cells = json.loads(nb_path.read_text())["cells"]
    except (OSError, KeyError, ValueError):
        return None, "(executed notebook unreadable)"
    for index, cell in enumerate(cells):
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            return index, "".join(cell.get("source", ""))
    return None, "(no failed cell recorded)"


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def load_manifest() -> dict:
    path = run_dir() / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"chapters": {}}


def run(profile: str = "default", only: list[str] | None = None, overrides: dict | None = None,
        book: Path = BOOK, out_dir: Path | None = None) -> dict:
    """Execute the chosen chapters; returns the manifest. Raises ``ChapterFailure``."""
    from tqdm.auto import tqdm

    from .plots import git_commit

    config.profile(profile, **(overrides or {}))  # fail now, not inside the first chapter
    out_dir = out_dir or book
    todo = select(chapters(book), only)
    manifest = load_manifest()
    manifest.update({"profile": profile, "commit": git_commit(), "versions": versions()})
    manifest.setdefault("chapters", {})
    os.environ.setdefault("ANALYSIS_RUN_DIR", str(run_dir()))
    parameters = {"profile": profile, "overrides": dict(overrides or {})}
    bar = tqdm(todo, desc="chapters", unit="chapter", file=sys.stdout)
    for md in bar:
        bar.set_postfix_str(md.stem)
        entry = {"chapter": md.stem, "parameters": parameters, "commit": manifest["commit"],
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "running"}
        t0 = time.perf_counter()
        try:
            execute(md, parameters, out_dir)
            entry["status"] = "ok"
        except ChapterFailure as failure:
            entry["status"] = "failed"
            entry["error"] = str(failure)
            raise
        finally:
            entry["wall_s"] = round(time.perf_counter() - t0, 1)
            manifest["chapters"][md.stem] = entry
            write_json_atomic(run_dir() / "manifest.json", manifest)
    return manifest


def html(strict: bool = False) -> Path:
    """Build ``_build/html`` from the executed notebooks with Jupyter Book 1.x."""
    missing = [p.stem for p in chapters() if not (BOOK / (p.stem + ".ipynb")).exists()]
    if missing:
        raise SystemExit(f"error: chapters not executed yet: {', '.join(missing)}; "
                         "run `python -m analysis.book run` first")
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(ROOT), "--path-output", str(ROOT), "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    jb = Path(sys.executable).with_name("jupyter-book")
    if jb.exists():
        cmd = [str(jb)] + cmd[3:]
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"error: jupyter-book build failed (exit {result.returncode})")
    index = ROOT / "_build" / "html" / "index.html"
    print(f"book: {index}")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute chapters with papermill")
    p_run.add_argument("--profile", default="default", help=f"one of {', '.join(config.PROFILES)}")
    p_run.add_argument("--only", nargs="+", metavar="CHAPTER", help="chapter numbers or names")
    p_run.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                       help="override a profile field (repeatable)")
    p_html = sub.add_parser("html", help="build the HTML book from the executed notebooks")
    p_html.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    sub.add_parser("list", help="list the chapters")
    args = parser.parse_args(argv)

    if args.command == "list":
        for md in chapters():
            print(md.stem)
        return 0
    if args.command == "html":
        html(strict=args.strict)
        return 0
    if args.profile not in config.PROFILES:
        parser.error(f"unknown profile {args.profile!r}; valid profiles: {', '.join(config.PROFILES)}")
    overrides = parse_overrides(args.p)
    try:
        manifest = run(args.profile, args.only, overrides)
    except ChapterFailure as failure:
        print(f"\nerror: {failure}", file=sys.stderr)
        return 1
    done = [(k, v["wall_s"]) for k, v in manifest["chapters"].items() if v["status"] == "ok"]
    print("executed: " + ", ".join(f"{k} ({s:.0f}s)" for k, s in done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
