"""``parse_function``: code tokens, tree distances, siblings and data flow of one function.

Code tokens are the leaves of the tree-sitter tree, except that a string literal (with its
quotes, prefix and any f-string interpolations) is one token, and comments are dropped, as
in CodeSearchNet's ``code_tokens``. Every token keeps its byte span (tree-sitter) and its
character span (what Hugging Face tokenizers' ``offset_mapping`` uses).

Tree distance between tokens u and v, over the tree-sitter tree (root = ``module``):

    d(u, v) = depth(u) + depth(v) - 2 depth(lca(u, v))

where a string token sits at its opening quote leaf, one level below the ``string`` node
(``string_quotes=True``, as Anand et al. 2024 measure it: they merge a string's leaves and
keep the smallest distance), or at the ``string`` node itself (``string_quotes=False``).

Siblings (the AST-siblings relation of Anand et al., "A Critical Study of What Code-LLMs
(Do Not) Learn", 2024): token v is a sibling of token u != v when they share a parent node,
or, with ``siblings_below=True`` (their rule, the default), when v is a leaf child of a
non-``block`` node that is a sibling of u (in ``return f(x)``, ``f`` is a sibling of
``return``). With that rule the relation is seen from u, as theirs is (the keyword of a
probe pair): ``return`` is not a sibling of ``f``. A string token counts as a leaf of its
parent, not one level below (its quotes are).

Data flow (``dfg_edges``) follows GraphCodeBERT's graph (Guo et al., ICLR 2021); see
``analysis.data.dataflow``. ``literals=True`` makes literals nodes of it, as GraphCodeBERT does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import tree_sitter_python
from tree_sitter import Language, Parser

from .dataflow import dataflow_edges

MAX_CODE_BYTES = 2_000_000
STRING_TYPES = {"string", "concatenated_string"}
COMMENT_TYPES = {"comment", "line_continuation"}


class CodeParseError(ValueError):
    """The code cannot be parsed into a clean tree (syntax error, bad bytes or characters,
    too large, nested too deeply)."""


@lru_cache(maxsize=1)
def _parser():
    return Parser(Language(tree_sitter_python.language()))


@dataclass(frozen=True)
class CodeToken:
    text: str
    type: str          # tree-sitter node type of the leaf ("identifier", "def", "string", ...)
    start_byte: int
    end_byte: int
    start_char: int
    end_char: int
    depth: int         # depth of the leaf in the tree (root = 0)


@dataclass
class ParsedCode:
    code: str
    tokens: list[CodeToken]
    parents: list[int]            # parent node id of each token (node ids index ``_node_parent``)
    _node_parent: list[int] = field(repr=False)   # parent of every node (-1 for the root)
    _node_depth: list[int] = field(repr=False)
    _token_node: list[int] = field(repr=False)
    node_types: list[str] = field(default_factory=list, repr=False)  # type of every node
    dfg_edges: list[tuple[int, int, str]] = field(default_factory=list)
    _token_anchor: list[int] = field(default_factory=list, repr=False)  # node a distance starts from
    _leaf: list[bool] = field(default_factory=list, repr=False)  # token is a leaf of the tree
    siblings_below: bool = True

    def __len__(self) -> int:
        return len(self.tokens)

    def _check(self, i: int, j: int) -> None:
        n = len(self.tokens)
        if not (0 <= i < n and 0 <= j < n):
            raise IndexError(f"token indices ({i}, {j}) out of range for {n} tokens")

    def tree_distance(self, i: int, j: int) -> int:
        """depth(u) + depth(v) - 2 depth(lca(u, v)) for tokens i and j."""
        self._check(i, j)
        a, b = self._token_anchor[i], self._token_anchor[j]
        da, db = self._node_depth[a], self._node_depth[b]
        total = da + db
        while da > db:
            a, da = self._node_parent[a], da - 1
        while db > da:
            b, db = self._node_parent[b], db - 1
        while a != b:
            a, b = self._node_parent[a], self._node_parent[b]
            da -= 1
        return total - 2 * da

    def is_sibling(self, i: int, j: int) -> bool:
        """True when token j != i shares i's parent node or, with ``siblings_below``, is a
        leaf child of a non-block node beside i (the reference's rule, seen from i: in
        ``return f(x)``, f is a sibling of ``return`` but ``return`` is none of f's)."""
        self._check(i, j)
        if i == j:
            return False
        return self.parents[i] == self.parents[j] or (self.siblings_below and self._below(i, j))

    def _below(self, i: int, j: int) -> bool:
        """Token j is a leaf whose parent is a non-block node beside token i."""
        up = self.parents[j]
        return self._leaf[j] and up >= 0 and self.node_types[up] != "block" \
            and self._node_parent[up] == self.parents[i]

    def edge_set(self) -> dict[tuple[int, int], str]:
        return {(i, j): kind for i, j, kind in self.dfg_edges}


def _decode(code: str | bytes) -> tuple[str, bytes]:
    if isinstance(code, bytes):
        try:
            text = code.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CodeParseError(f"code is not valid UTF-8 ({err.reason} at byte {err.start})") from None
        return text, code
    if not isinstance(code, str):
        raise CodeParseError(f"code must be str or bytes, got {type(code).__name__}")
    try:
        return code, code.encode("utf-8")
    except UnicodeEncodeError as err:
        raise CodeParseError(f"code is not valid Unicode ({err.reason} at character {err.start}); "
                             f"a lone surrogate cannot be encoded as UTF-8") from None


def parse_tree(code: str | bytes, max_bytes: int = MAX_CODE_BYTES):
    """(text, bytes, tree) of ``code``; raises ``CodeParseError`` on bad input."""
    text, data = _decode(code)
    if len(data) > max_bytes:
        raise CodeParseError(f"code is {len(data):,} bytes, over the limit of {max_bytes:,}")
    if not text.strip():
        raise CodeParseError("code is empty")
    tree = _parser().parse(data)
    if tree.root_node.has_error:
        node = _first_error(tree.root_node)
        where = f" at line {node.start_point[0] + 1}" if node is not None else ""
        raise CodeParseError(f"code does not parse (syntax error{where})")
    return text, data, tree


def _first_error(root):
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            return node
        if node.has_error:
            stack.extend(reversed(node.children))
    return None


def parse_function(code: str | bytes, language: str = "python", *, dataflow: bool = True,
                   literals: bool = True, siblings_below: bool = True, string_quotes: bool = True,
                   max_bytes: int = MAX_CODE_BYTES) -> ParsedCode:
    """Parse one function (or any Python code) into tokens, tree relations and data flow.

    ``literals``, ``siblings_below``, ``string_quotes``: the definitions of the reference
    pipeline (True, the default) or the project's variants (False); see the module docstring.
    Raises ``CodeParseError`` for empty input, non-UTF-8 bytes or lone surrogates, input over
    ``max_bytes``, code with syntax errors, or code nested too deeply for the data-flow walk.
    The tree walk is iterative: deep nesting does not recurse in Python.
    """
    if language != "python":
        raise ValueError(f"only language='python' is supported, got {language!r}")
    text, data, tree = parse_tree(code, max_bytes)
    parsed, node_ids = walk_tree(tree, text, data, string_quotes)
    parsed.siblings_below = siblings_below
    if dataflow:
        try:
            parsed.dfg_edges = dataflow_edges(tree.root_node, node_ids, literals)
        except RecursionError:
            raise CodeParseError("code is nested too deeply for the data-flow walk "
                                 "(an expression of thousands of terms?)") from None
    return parsed


def walk_tree(tree, text: str, data: bytes, string_quotes: bool = True) -> tuple[ParsedCode, dict]:
    """Tokens and node arrays of ``tree`` (pre-order; a string's inner nodes are kept as
    nodes but are no tokens); ``node_ids`` maps a token's byte span to its index."""
    char_of = _byte_to_char(text, data)
    node_parent, node_depth, tokens, parents, token_node, node_types = [], [], [], [], [], []
    anchor, leaf, node_ids = [], [], {}
    stack = [(tree.root_node, -1, 0, -1)]  # (node, parent id, depth, enclosing string token)
    while stack:
        node, parent, depth, inside = stack.pop()
        nid = len(node_parent)
        node_parent.append(parent)
        node_depth.append(depth)
        node_types.append(node.type)
        if node.type in COMMENT_TYPES:
            continue
        if inside >= 0:  # within a string token: its first leaf is the opening quote
            if node.child_count == 0 and anchor[inside] == token_node[inside] and string_quotes:
                anchor[inside] = nid
        elif node.child_count == 0 or node.type in STRING_TYPES:
            if node.end_byte == node.start_byte:  # zero-width (e.g. a dedent marker)
                continue
            inside = len(tokens)
            node_ids[(node.start_byte, node.end_byte)] = inside
            tokens.append(CodeToken(data[node.start_byte:node.end_byte].decode("utf-8", "replace"),
                                    node.type, node.start_byte, node.end_byte,
                                    char_of(node.start_byte), char_of(node.end_byte), depth))
            parents.append(parent)
            token_node.append(nid)
            anchor.append(nid)
            leaf.append(node.child_count == 0)
        for child in reversed(node.children):
            stack.append((child, nid, depth + 1, inside))
    parsed = ParsedCode(text, tokens, parents, node_parent, node_depth, token_node, node_types,
                        _token_anchor=anchor, _leaf=leaf)
    return parsed, node_ids


def _byte_to_char(text: str, data: bytes):
    if len(text) == len(data):  # ASCII: offsets agree
        return lambda b: b
    table = [0] * (len(data) + 1)
    pos = 0
    for ci, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        for k in range(n):
            table[pos + k] = ci
        pos += n
    table[len(data)] = len(text)
    return table.__getitem__
