"""The corpus: functions from pinned PyPI source releases, or from CodeSearchNet files.

``load_corpus(cfg)`` is cached by (corpus, corpus_set, max_file_bytes, max_functions, seed) and
the extraction's version (``corpus_key``, which every artifact built on the corpus includes).
``cfg.corpus`` is ``"pypi"`` (the packages of ``data/sources.toml`` whose ``sets`` contain
``cfg.corpus_set``) or ``"codesearchnet:PATH"`` (a CodeSearchNet ``.jsonl``/``.jsonl.gz``
file or a directory of them, e.g. ``python/final/jsonl``).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..cache import cached
from .extract import Function, extract_archive, functions_in_file
from .sources import fetch_all, read_sources

CORPUS_VERSION = "2"  # 2: byte-order mark dropped, string contents kept by the dedent


@dataclass
class Corpus:
    functions: list[Function]
    skipped: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def by_id(self) -> dict[str, Function]:
        return {f.id: f for f in self.functions}


def corpus_key(cfg) -> dict:
    """What the corpus depends on: part of the key of every artifact built from it."""
    return {**cfg.subset("corpus", "corpus_set", "max_file_bytes", "max_functions", "seed"),
            "corpus_version": CORPUS_VERSION}


def load_corpus(cfg) -> Corpus:
    """The corpus of ``cfg`` (built once, then read from the artifact cache)."""
    if not (cfg.corpus == "pypi" or cfg.corpus.startswith("codesearchnet:")):
        raise ValueError(f"corpus must be 'pypi' or 'codesearchnet:PATH', got {cfg.corpus!r}")
    return cached("corpus", corpus_key(cfg), lambda out: _build(cfg, out), _load, CORPUS_VERSION)


def _build(cfg, out: Path) -> None:
    if cfg.corpus == "pypi":
        functions, skipped, per_package = _from_pypi(cfg)
    else:
        functions, skipped, per_package = _from_codesearchnet(Path(cfg.corpus.split(":", 1)[1]))
    # exact duplicates (same code) are kept once: the first in a deterministic order
    seen, unique = set(), []
    for fn in sorted(functions, key=lambda f: f.id):
        digest = hashlib.sha1(fn.code.encode()).digest()
        if digest in seen:
            skipped["duplicate function"] = skipped.get("duplicate function", 0) + 1
            continue
        seen.add(digest)
        unique.append(fn)
    if cfg.max_functions and len(unique) > cfg.max_functions:
        rng = random.Random(cfg.seed)
        unique = sorted(rng.sample(unique, cfg.max_functions), key=lambda f: f.id)
    if not unique:
        raise ValueError(f"the corpus {cfg.corpus!r} yielded no functions (skipped: {skipped})")
    stats = {"functions": len(unique), "with_docstring": sum(bool(f.docstring) for f in unique),
             "packages": per_package}
    with gzip.open(out / "functions.jsonl.gz", "wt", encoding="utf-8") as f:
        for fn in unique:
            f.write(json.dumps(dataclasses.asdict(fn)) + "\n")
    (out / "summary.json").write_text(json.dumps({"skipped": skipped, "stats": stats}, indent=1))


def _load(path: Path) -> Corpus:
    with gzip.open(path / "functions.jsonl.gz", "rt", encoding="utf-8") as f:
        functions = [Function(**json.loads(line)) for line in f]
    summary = json.loads((path / "summary.json").read_text())
    if len(functions) != summary["stats"]["functions"]:
        raise ValueError("corpus file is truncated")
    return Corpus(functions, summary["skipped"], summary["stats"])


def _from_pypi(cfg):
    sources = read_sources(corpus_set=cfg.corpus_set)
    archives = fetch_all(sources)
    functions, skipped, per_package = [], Counter(), {}
    for src in tqdm(sources, desc="extracting", unit="package"):
        result = extract_archive(archives[src.name], src.name, src.version, src.license,
                                 cfg.max_file_bytes)
        functions += result.functions
        skipped.update(result.skipped)
        per_package[src.name] = {"version": src.version, "license": src.license, "files": result.files,
                                 "functions": len(result.functions)}
    return functions, dict(skipped), per_package


CSN_FIELDS = ("code", "docstring", "func_name", "repo", "path")  # required strings
CSN_OPTIONAL = ("sha", "license")  # strings when present


def _csn_row(line: str) -> dict | None:
    """The fields of one CodeSearchNet line, or None when it is malformed (not a JSON
    object, a required field missing or not a string, an optional one not a string, or
    code that is not valid Unicode)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in CSN_FIELDS):
        return None
    if any(k in row and not isinstance(row[k], str) for k in CSN_OPTIONAL):
        return None
    try:
        row["code"].encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        return None
    return row


def read_codesearchnet(path: Path) -> tuple[list[Function], dict]:
    """Functions from CodeSearchNet jsonl(.gz) files: ``code`` (with its docstring),
    ``docstring``, ``func_name``, ``repo``, ``path`` (and ``code_tokens`` etc., unused).
    Malformed lines and code that does not parse are skipped and counted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no CodeSearchNet file or directory at {path}")
    files = sorted(path.rglob("*.jsonl*")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .jsonl or .jsonl.gz files under {path}")
    functions, skipped = [], Counter()
    for file in files:
        opener = gzip.open if file.name.endswith(".gz") else open
        try:
            with opener(file, "rt", encoding="utf-8") as f:
                lines = list(f)
        except (OSError, UnicodeDecodeError, EOFError) as err:
            raise ValueError(f"cannot read {file}: {err}") from None
        for n, line in enumerate(lines):
            row = _csn_row(line)
            if row is None:
                skipped["malformed CodeSearchNet line"] += 1
                continue
            found = functions_in_file(row["code"].encode("utf-8"), f"{row['path']}#{n}",
                                      row["repo"], row.get("sha", "")[:12], row.get("license", "unknown"),
                                      skipped, 1_000_000)
            top = [fn for fn in found if "." not in fn.qualname]
            if not top:
                continue
            functions.append(dataclasses.replace(top[0], name=row["func_name"].split(".")[-1],
                                                 qualname=row["func_name"]))
    return functions, dict(skipped)


def _from_codesearchnet(path: Path):
    functions, skipped = read_codesearchnet(path)
    per_package = Counter(fn.package for fn in functions)
    return functions, skipped, {k: {"functions": v, "license": "see CodeSearchNet", "version": "",
                                    "files": None} for k, v in per_package.items()}
