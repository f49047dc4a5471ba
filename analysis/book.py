"""The papermill runner and the run manifest.

    python -m analysis.book run  [--profile smoke|default|paper] [--only 03 ...] [-p NAME VALUE ...]
                                 [--no-html]
    python -m analysis.book html [--strict]
    python -m analysis.book list

``run`` converts each chapter ``book/NN_name.md`` (MyST, the source of truth) to a notebook
with jupytext, executes it with papermill into ``book/NN_name.ipynb`` (git-ignored), with the
parameters ``profile`` and ``overrides`` (a dict of Profile fields, from ``-p NAME VALUE``)
injected after the cell tagged ``parameters`` (``-p`` names that are not Profile fields set
the chapter's own parameters, e.g. ``-p ablation False``), then rebuilds the HTML (unless
``--no-html``): the chapters not chosen keep their executed notebooks. It stops at the first failing chapter and
reports the chapter, the failing cell and the error. The intro chapter (00) renders the
claims ledger that the other chapters write, so it always runs last, and is re-run whenever
another chapter is. A run manifest (chapter, parameters, git commit, package versions,
wall time, status) is written to ``<run dir>/manifest.json``; the run dir is
``$ANALYSIS_RUN_DIR`` or ``_build/run``.

Kernels are started over IPC (Unix sockets in Jupyter's runtime directory), not over
localhost TCP: nothing else on the machine can connect to them, and ipykernel has no reason
to warn that the channel is unencrypted. papermill's injected cell (tagged
``injected-parameters``) is tagged ``remove-cell`` too, so the page shows the chapter's own
``parameters`` cell and its "Re-run this chapter" note, not a second parameters cell.

``html`` builds the book with Jupyter Book 1.x from the executed notebooks (it never
re-executes them: ``execute_notebooks: off``), into ``_build/html``.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import jupytext
import nbformat
import papermill
from filelock import FileLock
from IPython.display import Markdown, display
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from papermill.exceptions import PapermillExecutionError
from tqdm.auto import tqdm
from traitlets import CaselessStrEnum

from . import config
from .cache import write_json_atomic
from .provenance import git_commit, run_dir
from .workers import check_workers

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
INTRO = "00"
INJECTED = "injected-parameters"  # papermill's tag on the cell it adds
MATHJAX = ROOT / "_static" / "mathjax" / "tex-mml-chtml.js"  # _config.yml's mathjax_path; `make mathjax`
PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "pandas", "scikit-learn",
            "matplotlib", "seaborn", "tree-sitter", "tree-sitter-python", "papermill",
            "jupytext", "jupyter-book", "mamba-ssm")


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


def chapter_parameters(md: Path) -> dict:
    """The parameters a chapter declares: ``name = literal`` lines of its cell tagged
    ``parameters`` (besides ``profile`` and ``overrides``, e.g. chapter 06's ``ablation``)."""

    for cell in jupytext.read(md).cells:
        if "parameters" in cell.metadata.get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    out[node.targets[0].id] = ast.literal_eval(node.value)
            return out
    return {}


def split_parameters(pairs: list[list[str]], todo: list[Path]) -> tuple[dict, dict]:
    """``-p NAME VALUE`` pairs -> (profile overrides, chapter parameters). A Profile field is an
    override (``parse_overrides``); any other name must be a parameter of a chosen chapter, and
    its value must have the type of the chapter's default."""
    declared = {}
    for md in todo:
        for name, default in chapter_parameters(md).items():
            if name not in ("profile", "overrides"):
                declared.setdefault(name, default)
    profile_pairs = [pr for pr in pairs or [] if pr[0] not in declared or pr[0] in config.FIELD_NAMES]
    params = {}
    for name, raw in pairs or []:
        if name in config.FIELD_NAMES or name not in declared:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        default = declared[name]
        if default is not None and not isinstance(value, type(default)) and \
                not (isinstance(default, float) and isinstance(value, int)):
            raise SystemExit(f"error: chapter parameter {name} takes a {type(default).__name__} "
                             f"(default {default!r}), got {raw!r}")
        params[name] = value
    try:
        overrides = parse_overrides(profile_pairs)
    except SystemExit as err:
        if declared and "unknown parameter" in str(err):
            raise SystemExit(f"{err}; parameters of the chosen chapters: {', '.join(sorted(declared))}") from None
        raise
    return overrides, params


def rerun_command(chapter: str, profile: str, overrides: dict | None = None, **params) -> str:
    """The shell command that re-runs ``chapter`` with these parameters and rebuilds the HTML."""
    parts = ["python -m analysis.book run --only", chapter.split("_")[0], "--profile", profile]
    for name, value in {**(overrides or {}), **params}.items():
        parts += ["-p", name, shlex.quote(repr(value) if not isinstance(value, str) else value)]
    return " ".join(parts)


def show_rerun(chapter: str, profile: str, overrides: dict | None = None, **params) -> None:
    """A note on the chapter page: how to re-run it (the runner, papermill, Jupyter)."""
    pm = ["papermill", f"_build/run/src/{chapter}.ipynb", f"book/{chapter}.ipynb", "-p", "profile", profile]
    pm += ["-y", shlex.quote(json.dumps({"overrides": overrides or {}, **params}))]
    display(Markdown(
        f"**Re-run this chapter** with these parameters, rebuilding the HTML (the other chapters' "
        f"outputs are kept):\n\n```bash\n{rerun_command(chapter, profile, overrides, **params)}\n```\n\n"
        f"or with papermill itself, on the source notebook that the command above writes:\n\n"
        f"```bash\n{' '.join(pm)}\n```\n\nTo explore it interactively, open `book/{chapter}.md` in "
        f"Jupyter (jupytext opens it as a notebook) and edit the cell tagged `parameters`."))


def to_notebook(md: Path, out: Path) -> Path:
    """Convert a MyST chapter to an (unexecuted) notebook with the python3 kernel."""

    nb = jupytext.read(md)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md
    nb.metadata.setdefault("jupytext", {})["source"] = str(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, out, fmt="ipynb")
    return out


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels listen on IPC sockets in Jupyter's runtime directory
    (private to the user; removed when the kernel shuts down) rather than localhost TCP ports."""
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    def _ip_default(self) -> str:
        """The sockets' path prefix: absolute and unique (jupyter_client's default,
        ``kernel-ipc``, is relative to the current directory and shared by every kernel there)."""
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        return str(runtime / f"analysis-{uuid.uuid4().hex[:12]}-ipc")


def hide_injected(nb_path: Path) -> None:
    """Tag papermill's injected parameters cell of the executed notebook ``remove-cell``: the
    HTML shows the chapter's own parameters cell (and the re-run note), the notebook keeps both."""
    nb = nbformat.read(nb_path, as_version=4)
    injected = [c for c in nb.cells if INJECTED in c.metadata.get("tags", [])
                and "remove-cell" not in c.metadata["tags"]]
    for cell in injected:
        cell.metadata["tags"].append("remove-cell")
    if injected:
        nbformat.write(nb, nb_path)


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
    """Execute one chapter with papermill; raises ``ChapterFailure`` with the failing cell, or
    ``KeyboardInterrupt`` if the run was interrupted (the kernel reports it as the cell's error)."""

    src = to_notebook(md, run_dir() / "src" / (md.stem + ".ipynb"))
    out = out_dir / (md.stem + ".ipynb")
    try:
        papermill.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3",
                                   cwd=str(md.parent), progress_bar=False, report_mode=False,
                                   kernel_manager_class=IPCKernelManager)
    except PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":
            raise KeyboardInterrupt(f"chapter {md.stem} interrupted at cell {err.exec_count}") from None
        index, source = _failed_cell(out)
        raise ChapterFailure(md.stem, index, source, f"{err.ename}: {err.evalue}") from None
    finally:
        if out.exists():
            hide_injected(out)
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


def record_chapter(entry: dict, run_info: dict) -> dict:
    """Merge one chapter's ``entry`` and the run's ``run_info`` (profile, commit, versions)
    into the run manifest, read and written under its lock, so that runners sharing a run
    directory never lose each other's records. Returns the manifest as written."""
    path = run_dir() / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(".manifest.json.lock")):
        manifest = load_manifest()
        manifest.update(run_info)
        manifest.setdefault("chapters", {})[entry["chapter"]] = entry
        write_json_atomic(path, manifest)
    return manifest


def _stop_on_sigterm(signum, frame):
    """SIGTERM (``timeout``, a scheduler) ends the runner like Ctrl-C, so the chapter it was
    running is recorded as interrupted."""
    raise SystemExit(128 + signum)


def run(profile: str = "default", only: list[str] | None = None, overrides: dict | None = None,
        book: Path = BOOK, out_dir: Path | None = None, chapter_params: dict | None = None) -> dict:
    """Execute the chosen chapters; returns the manifest. Raises ``ChapterFailure``. Each
    chapter is recorded in the manifest as it ends: ok, failed (with the error) or interrupted
    (Ctrl-C; SIGTERM too when run from the command line).
    ``chapter_params`` go to the chapters that declare them in their parameters cell. The
    provenance lines a chapter shows under its figures are stored in its manifest entry."""
    check_workers()
    config.profile(profile, **(overrides or {}))  # fail now, not inside the first chapter
    out_dir = out_dir or book
    todo = select(chapters(book), only)
    info = {"profile": profile, "commit": git_commit(), "versions": versions()}
    manifest = {"chapters": {}, **load_manifest(), **info}
    os.environ.setdefault("ANALYSIS_RUN_DIR", str(run_dir()))
    # progress bars inside a chapter update at most every 30 s: each update is a stream output
    # kept in the executed notebook (a default chapter 04 held 30,000 of them, 2 MB)
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    parameters = {"profile": profile, "overrides": dict(overrides or {})}
    bar = tqdm(todo, desc="chapters", unit="chapter", file=sys.stdout)
    for md in bar:
        bar.set_postfix_str(md.stem)
        declared = chapter_parameters(md)
        params = {**parameters, **{k: v for k, v in (chapter_params or {}).items() if k in declared}}
        entry = {"chapter": md.stem, "parameters": params, "commit": info["commit"],
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "running"}
        provenance = run_dir() / "provenance" / f"{md.stem}.jsonl"
        provenance.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            execute(md, params, out_dir)
            entry["status"] = "ok"
        except BaseException as err:  # incl. KeyboardInterrupt and SIGTERM's SystemExit
            entry["status"] = "interrupted" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "failed"
            entry["error"] = str(err) if isinstance(err, ChapterFailure) else f"{type(err).__name__}: {err}"
            raise
        finally:
            entry["wall_s"] = round(time.perf_counter() - t0, 1)
            entry["figures"] = [json.loads(line) for line in provenance.read_text().splitlines()] \
                if provenance.exists() else []
            manifest = record_chapter(entry, info)
    return manifest


def html(strict: bool = False) -> Path:
    """Build ``_build/html`` from the executed notebooks with Jupyter Book 1.x, with the
    MathJax that ``make mathjax`` put in ``_static/mathjax`` (the pages load nothing online)."""
    missing = [p.stem for p in chapters() if not (BOOK / (p.stem + ".ipynb")).exists()]
    if missing:
        raise SystemExit(f"error: chapters not executed yet: {', '.join(missing)}; "
                         "run `python -m analysis.book run` first")
    if not MATHJAX.exists():
        raise SystemExit(f"error: MathJax is missing ({MATHJAX.relative_to(ROOT)}): run `make mathjax` "
                         "once (it fetches MathJax 3 with npm), so the pages render their math offline")
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
                       help="override a profile field, or set a chapter parameter (repeatable)")
    p_run.add_argument("--no-html", dest="html", action="store_false",
                       help="do not rebuild the HTML book after the run")
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
    overrides, params = split_parameters(args.p, select(chapters(), args.only))
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        manifest = run(args.profile, args.only, overrides, chapter_params=params)
    except ChapterFailure as failure:
        print(f"\nerror: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print(f"\ninterrupted: {stop or 'Ctrl-C'} (recorded in {run_dir() / 'manifest.json'})", file=sys.stderr)
        return 130
    done = [(k, v["wall_s"]) for k, v in manifest["chapters"].items() if v["status"] == "ok"]
    print("executed: " + ", ".join(f"{k} ({s:.0f}s)" for k, s in done))
    if args.html:
        html()
    return 0


if __name__ == "__main__":
    sys.exit(main())
