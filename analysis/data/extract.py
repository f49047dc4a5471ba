"""Function extraction from source archives with tree-sitter.

Every ``def`` (functions, methods, nested functions; with its decorators) becomes a
``Function``. Its docstring is separated from its body the way CodeSearchNet does: the
first statement of the body, when it is a string literal, is the docstring, and
``code_without_docstring`` is the code with that statement removed. Files that are not
UTF-8, are larger than the limit, or do not parse cleanly are skipped and counted by
reason; so are functions whose own code does not re-parse on its own.
"""
from __future__ import annotations

import ast
import bisect
import tarfile
import textwrap
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .parse import CodeParseError, parse_tree

BOM = "\ufeff".encode("utf-8")


@dataclass(frozen=True)
class Function:
    id: str               # "package/path.py:line:qualname", unique in a corpus
    name: str
    qualname: str
    code: str             # the def with decorators and docstring, dedented
    code_without_docstring: str
    docstring: str
    package: str
    version: str
    path: str
    start_line: int
    license: str


@dataclass
class Extraction:
    functions: list[Function] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    files: int = 0


def iter_python_files(archive: Path):
    """(member path, bytes) of every .py file in a .tar.gz / .zip archive."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".py") and not info.is_dir():
                    yield info.filename, info.file_size, (lambda i=info: zf.read(i))
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile() and member.name.endswith(".py"):
                yield member.name, member.size, (lambda m=member: tf.extractfile(m).read())


def _docstring_node(body):
    for child in body.named_children:
        if child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_child_count == 1 \
                and child.named_children[0].type in {"string", "concatenated_string"}:
            return child
        return None
    return None


def _string_value(literal: str) -> str:
    try:
        value = ast.literal_eval(literal)
        return value if isinstance(value, str) else ""
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return literal.strip("\"'rRbBuU")


def functions_in_file(data: bytes, path: str, package: str, version: str, license: str,
                      skipped: Counter, max_bytes: int) -> list[Function]:
    """Every function of one file; time linear in the file's size (one tree walk, and each
    function costs its own length). A leading byte-order mark is dropped."""
    if len(data) > max_bytes:
        skipped["file too large"] += 1
        return []
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        text, raw, tree = parse_tree(data, max_bytes=max_bytes)
    except CodeParseError as err:
        msg = str(err)
        reason = ("not UTF-8" if "UTF-8" in msg else "empty file" if "empty" in msg
                  else "syntax error" if "parse" in msg else "file too large")
        skipped[reason] += 1
        return []
    found, strings = _walk(tree.root_node)
    string_starts = [a for a, _ in strings]
    out = []
    for outer, fn_node, qual in found:
        fn = _make_function(outer, fn_node, raw, (string_starts, strings), qual, path, package,
                            version, license, skipped)
        if fn is not None:
            out.append(fn)
    return out


def _walk(root):
    """(outer node, def node, qualified name) of every function, and the sorted byte spans
    of the outermost strings that run over more than one line."""
    found, strings = [], []
    stack = [(root, ())]
    while stack:
        node, scope = stack.pop()
        for child in reversed(node.children):
            target = child
            if child.type == "decorated_definition":
                target = child.child_by_field_name("definition") or child
            if target.type in {"function_definition", "class_definition"}:
                name = target.child_by_field_name("name").text.decode("utf-8", "replace")
                if target.type == "function_definition":
                    found.append((child, target, scope + (name,)))
                stack.append((target, scope + (name,)))
            elif child.type in {"string", "concatenated_string"}:
                if child.start_point[0] != child.end_point[0]:
                    strings.append((child.start_byte, child.end_byte))
            elif child.child_count:
                stack.append((child, scope))
    found.sort(key=lambda f: f[0].start_byte)
    return found, sorted(strings)


def _make_function(outer, fn_node, raw: bytes, strings, qual, path, package, version, license, skipped):
    start_row = outer.start_point[0]
    line_start = raw.rfind(b"\n", 0, outer.start_byte) + 1
    prefix = raw[line_start:outer.start_byte]
    lines = _dedented_lines(raw, outer.start_byte, outer.end_byte, prefix, strings)
    doc_node = _docstring_node(fn_node.child_by_field_name("body"))
    try:
        code = _join(lines)
        if doc_node is not None:
            doc_text = raw[doc_node.start_byte:doc_node.end_byte].decode("utf-8")
            first, last = doc_node.start_point[0] - start_row, doc_node.end_point[0] - start_row
            if first > 0:  # remove the docstring statement with its whole line(s)
                code_wo = _join(lines[:first] + lines[last + 1:])
            else:  # on the def line: keep what precedes it
                head = lines[0][:doc_node.start_byte - outer.start_byte].rstrip()
                code_wo = _join([head] + lines[last + 1:])
            docstring = textwrap.dedent(_string_value(doc_text)).strip()
        else:
            code_wo, docstring = code, ""
        if not code_wo.rstrip().endswith(":"):  # a body that was only a docstring stays valid
            parse_tree(code_wo)
        else:
            code_wo = code_wo.rstrip() + "\n    pass\n"
        parse_tree(code)
    except (CodeParseError, UnicodeDecodeError):
        skipped["function does not re-parse alone"] += 1
        return None
    qualname = ".".join(qual)
    return Function(f"{package}/{path}:{start_row + 1}:{qualname}", qual[-1], qualname, code,
                    code_wo, docstring, package, version, path, start_row + 1, license)


def _dedented_lines(raw: bytes, start: int, end: int, prefix: bytes, strings) -> list[bytes]:
    """The lines of raw[start:end] (start = the function's first byte, on a line indented
    by ``prefix``), with ``prefix`` removed from every later line, or as much of it as is
    whitespace; a line that begins inside a string is left as it is (string contents)."""
    starts, spans = strings
    lines = raw[start:end].split(b"\n")
    out = [lines[0]]
    pos = start + len(lines[0]) + 1
    for line in lines[1:]:
        k = bisect.bisect_left(starts, pos) - 1
        if prefix and not (k >= 0 and spans[k][1] > pos):
            if line.startswith(prefix):
                out.append(line[len(prefix):])
            else:
                blank = len(line) - len(line.lstrip(b" \t\f"))
                out.append(line[min(blank, len(prefix)):])
        else:
            out.append(line)
        pos += len(line) + 1
    return out


def _join(lines: list[bytes]) -> str:
    text = b"\n".join(lines).decode("utf-8")
    return text if text.endswith("\n") else text + "\n"


def extract_archive(archive: Path, package: str, version: str, license: str,
                    max_bytes: int = 1_000_000) -> Extraction:
    result = Extraction()
    for member, size, read in iter_python_files(archive):
        result.files += 1
        rel = member.split("/", 1)[1] if "/" in member else member
        if size > max_bytes:
            result.skipped["file too large"] += 1
            continue
        result.functions += functions_in_file(read(), rel, package, version, license,
                                              result.skipped, max_bytes)
    return result
