"""Every deviation of the book's relations from the reference definitions the paper inherits
(GraphCodeBERT's ``DFG_python``; Anand et al.'s tree distance, siblings and sampling), with
the number of candidate probe pairs each one changes: chapter 01's table.

A deviation is counted on the functions of the probe set it concerns
(``probes.choose_functions``): the candidate pairs (``probes.candidate_pairs``, and for
data flow every ordered token pair) whose label differs between the book's definition and
the other one. A GraphCodeBERT artefact is emulated on its own in ``_Reference`` (a
``dataflow._Flow`` with that one behaviour of ``DFG_python`` put back), so each count is
that artefact's alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .dataflow import LITERALS, SEQUENCES, _flatten, _Flow, run_flow
from .parse import parse_function as parse
from .parse import parse_tree, walk_tree
from .probes import KEYWORDS, candidate_pairs, choose_functions


@dataclass(frozen=True)
class Deviation:
    key: str
    task: str
    what: str       # what differs
    example: str    # three lines of code
    reference: str  # what the reference does on the example
    book: str       # the book's choice, and why
    field: str = ""     # the profile field that switches to the project's variant
    variant: str = ""   # what that variant does


D = Deviation
DEVIATIONS = [
    D("literals", "dfg", "literals are data-flow nodes", "def f(a=None):\n    x = 0\n    return x",
      "a <- None, x <- 0", "reference", "probe_dfg_literals", "variables only"),
    D("no_edge", "dfg", '"no edge" pairs from all tokens', "def f(a):\n    b = a\n    return b",
      "(b, def), (b, return), ...", "reference", "probe_dfg_literals",
      "between two variables with no edge either way"),
    D("below", "siblings", "siblings one level below a non-block sibling", "def f(a):\n    b = a\n    return g(b)",
      "g is a sibling of return", "reference", "probe_siblings_below", "same parent only"),
    D("quotes", "distance", "a string measured from its quote leaf", "def f():\n    s = 'a'\n    return 'b'",
      "d(return, 'b') = 3 (2 from the string node)", "reference", "probe_string_quotes",
      "from the string node"),
    D("true_or", "distance", "`true` and `or` among the keywords", "def f(a):\n    b = a or True\n    return b",
      "neither (a missing comma joins them)", "both: the list names them; the comma is a slip"),
    D("names", "dfg", "attribute and keyword-argument names are variables",
      "def f(x, n):\n    y = x.n\n    return g(n=y)", "x.n's n <- parameter n; y <- x.n's n (and s.n = v: n <- v)",
      "not variables: x.n is not the variable n (artefact)"),
    D("self", "dfg", "`self.x = v` redefines self (`d[i] = v`: d and i)", "def f(self, v):\n    self.x = v\n    return self",
      "self <- v; the return reads that self", "reads self only (artefact)"),
    D("builtins", "dfg", "the first read of an unbound name defines it",
      "def f(a, b):\n    x = len(a)\n    return len(b)", "the second len <- the first", "a read (artefact)"),
    D("call_unpack", "dfg", "unpacking pairs targets with a call's children",
      "def f(a):\n    x, y = g(a)\n    return x", "x <- g, y <- a", "x and y from g and a (artefact)"),
    D("loop_exit", "dfg", "definitions before a loop are dropped after it",
      "t = 0\nfor x in xs: t = x\nprint(t)", "print's t <- t = x only",
      "also t = 0: the loop may not run (artefact)"),
    D("try_sequence", "dfg", "try/except walked in sequence",
      "try: x = f()\nexcept E: x = 0\nprint(x)", "print's x <- x = 0 only",
      "both: the handler may run or not (artefact)"),
    D("augmented", "dfg", "`x += y` does not read x", "def f(x, y):\n    x += y\n    return x",
      "x <- y only", "also x <- x (parameter): += reads x (artefact)"),
    D("chained", "dfg", "`i = j = v` computes i from j", "def f(v):\n    i = j = v\n    return i",
      "i <- j, i <- v, j <- v", "i <- v, j <- v: both take the value (artefact)"),
    D("typed_defaults", "dfg", "a typed default is no default",
      "def f(a: int = 0):\n    b = a\n    return b", "no a <- 0", "a <- 0, as untyped (artefact)"),
    D("as_alias", "dfg", "an `as` alias is no assignment",
      "def f(p, q):\n    with open(p) as q:\n        return q",
      "no q <- open, p; q is a read of the parameter q", "q <- open, p: the alias takes the value (artefact)"),
    D("walrus", "dfg", "a walrus is no assignment", "def f(g):\n    if (m := g()):\n        return m",
      "no m <- g; m defined bare", "m <- g, as := binds it (artefact)"),
    D("for_else", "dfg", "a `for ... else` skips its body and else",
      "def f(xs, y):\n    for x in xs: y = x\n    else: return y",
      "y = x and return y unseen", "walked as any loop (artefact)"),
    D("scopes", "dfg", "comprehension and nested-function variables leak out",
      "def f(xs):\n    ys = [x for x in xs]\n    return x", "return x <- the comprehension's x",
      "no edge: Python 3 scopes (artefact)"),
]


class _Reference(_Flow):
    """The book's data flow with one behaviour of GraphCodeBERT's ``DFG_python`` put back."""

    def __init__(self, token_of, literals, artefact: str):
        super().__init__(token_of, literals)
        self.artefact = artefact

    def read_name(self, node, state):
        out = super().read_name(node, state)
        if self.artefact == "builtins" and out and node.text not in state:
            state[node.text] = set(out)
        return out

    def read_attribute(self, node, state):
        out = super().read_attribute(node, state)
        if self.artefact == "names":
            out += self.read_name(node.child_by_field_name("attribute"), state)
        return out

    def read_keyword(self, node, state):
        out = super().read_keyword(node, state)
        if self.artefact == "names":
            out = self.read_name(node.child_by_field_name("name"), state) + out
        return out

    def define_attribute(self, target, sources, state):
        """``x.a[i] = v``: the reference defines every node of the target from v and reads
        none of them ("self": x, i and any literal; "names": the attribute name a)."""
        names, others = _target_nodes(target)
        if self.artefact == "self":
            for node in others:
                self.define_node(node, sources, state)
        elif self.artefact == "names":
            for node in others:
                self.reads(node, state)
        else:
            return super().define_attribute(target, sources, state)
        if self.artefact == "names":
            for node in names:
                self.define(node, sources, state)

    def define_node(self, node, sources, state):
        """A literal in a target is a definition too, keyed by its text ("self")."""
        i = self.tok(node)
        if node.type in LITERALS and self.literals and i is not None:
            self.link(i, sources, "computedFrom")
            state[node.text] = {i}
        else:
            self.define(node, sources, state)

    def reads(self, node, state):
        if self.artefact == "walrus" and node is not None and node.type == "named_expression":
            return self.read_or_define(node.child_by_field_name("name"), state) + \
                self.reads(node.child_by_field_name("value"), state)
        if self.artefact == "self" and node is not None and node.type in LITERALS:
            i = self.tok(node)
            if self.literals and i is not None:
                self.link(i, state.get(node.text, ()), "comesFrom")  # '0' read after x[0] = v
        return super().reads(node, state)

    def gather(self, value, state):
        parts = [c for c in value.children if c.type != ","]
        if self.artefact == "call_unpack" and value.type not in SEQUENCES and len(parts) > 1:
            return "seq", [("flat", self.reads(c, state)) for c in parts]
        return super().gather(value, state)

    def read_or_define(self, node, state):
        """A bare name in the reference: a read if bound, else a definition from nothing."""
        if node is not None and node.type == "identifier" and node.text not in state:
            self.define(node, [], state)
            return [i for i in [self.tok(node)] if i is not None]
        return self.reads(node, state)

    def alias(self, node, sources, state):
        if self.artefact != "as_alias":
            return super().alias(node, sources, state)
        self.read_or_define(node, state)

    def loop(self, node, state):
        if self.artefact != "for_else" or node.type != "for_statement" \
                or node.child_by_field_name("alternative") is None:
            return super().loop(node, state)
        self.define(node.child_by_field_name("left"),
                    self.reads(node.child_by_field_name("right"), state), state)
        return state

    def loop_state(self, entry, s):
        return s if self.artefact == "loop_exit" else super().loop_state(entry, s)

    def parameter(self, p, outer, inner):
        if self.artefact != "typed_defaults" or p.type != "typed_default_parameter":
            return super().parameter(p, outer, inner)
        self.reads(p.child_by_field_name("type"), outer)
        self.reads(p.child_by_field_name("value"), outer)
        self.define(p.child_by_field_name("name"), [], inner)

    def leave(self, state, inner):
        if self.artefact == "scopes":
            state.update(inner)

    def augmented(self, node, state):
        if self.artefact != "augmented":
            return super().augmented(node, state)
        self.define(node.child_by_field_name("left"),
                    self.reads(node.child_by_field_name("right"), state), state)

    def assignment(self, node, state):
        right = node.child_by_field_name("right")
        if self.artefact != "chained" or right is None or right.type != "assignment":
            return super().assignment(node, state)
        targets, value = [], node
        while value is not None and value.type == "assignment":
            targets.append(value.child_by_field_name("left"))
            value = value.child_by_field_name("right")
        sources = _flatten(self.gather(value, state))
        for target in reversed(targets):  # innermost first; each outer one also from it
            self.define(target, sources, state)
            sources = sources + [self.tok(n) for n in _identifiers(target) if self.tok(n) is not None]

    def try_(self, node, state):
        if self.artefact != "try_sequence":
            return super().try_(node, state)
        for child in node.named_children:
            if child.type == "block":
                state = self.block(child, state)
            else:
                for part in child.named_children:
                    if part.type == "as_pattern":
                        self.reads(part.named_children[0], state)
                        self.alias(_alias(part), [], state)
                    elif part.type == "block":
                        state = self.block(part, state)
                    else:
                        self.reads(part, state)
        return state


def _target_nodes(target):
    """(attribute and keyword names, every other identifier or literal) in a target."""
    names, others, stack = [], [], [target]
    while stack:
        n = stack.pop()
        if n.type == "attribute":
            names.append(n.child_by_field_name("attribute"))
            stack.append(n.child_by_field_name("object"))
        elif n.type == "keyword_argument":
            names.append(n.child_by_field_name("name"))
            stack.append(n.child_by_field_name("value"))
        elif n.type == "identifier" or n.type in LITERALS:
            others.append(n)
        else:
            stack.extend(reversed(n.named_children))
    return names, others


def _identifiers(node):
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "identifier":
            yield n
        stack.extend(n.named_children)


def _alias(as_pattern):
    alias = as_pattern.child_by_field_name("alias")
    while alias is not None and alias.type == "as_pattern_target" and alias.named_children:
        alias = alias.named_children[0]
    return alias


def _labels(edges) -> dict:
    return {(i, j): kind for i, j, kind in edges}


def _changed(a: dict, b: dict) -> int:
    return sum(a.get(k) != b.get(k) for k in a.keys() | b.keys())


def _dfg_counts(cfg, functions) -> dict[str, tuple[int, int]]:
    """(pairs whose label differs, ordered pairs compared) per data-flow deviation."""
    other = not cfg.probe_dfg_literals
    out = {d.key: [0, 0] for d in DEVIATIONS if d.task == "dfg"}
    for _, code, p in functions:
        n_pairs = len(p.tokens) * (len(p.tokens) - 1)
        text, data, tree = parse_tree(code)
        _, token_of = walk_tree(tree, text, data)
        book = _labels(p.dfg_edges)
        for key in out:
            out[key][1] += n_pairs
            if key == "literals":
                flipped = run_flow(_Flow(token_of, other), tree.root_node)
                out[key][0] += _changed(book, _labels(flipped))
            elif key == "no_edge":
                ref, var = (set(candidate_pairs("dfg", p, flag)[0]) for flag in (True, False))
                out[key][0] += len(ref ^ var)
            else:
                emulated = run_flow(_Reference(token_of, cfg.probe_dfg_literals, key), tree.root_node)
                out[key][0] += _changed(book, _labels(emulated))
    return {k: tuple(v) for k, v in out.items()}


def _label(distance: int) -> int | None:
    """The distance probe's class of a pair (None: outside 2..6, no pair)."""
    return distance if 2 <= distance <= 6 else None


def _tree_counts(cfg) -> dict[str, tuple[int, int]]:
    """(pairs whose label differs, keyword-first pairs compared) for the tree relations."""
    out = {"below": [0, 0], "quotes": [0, 0], "true_or": [0, 0]}
    for _, code, p in choose_functions(cfg, "siblings")[0]:
        q = parse(code, dataflow=False, siblings_below=not p.siblings_below)
        pairs = [(i, j) for i, t in enumerate(p.tokens) if t.type in KEYWORDS
                 for j in range(len(p.tokens)) if j != i]
        out["below"][0] += sum(p.is_sibling(i, j) != q.is_sibling(i, j) for i, j in pairs)
        out["below"][1] += len(pairs)
    for _, code, p in choose_functions(cfg, "distance")[0]:
        q = parse(code, dataflow=False, string_quotes=not cfg.probe_string_quotes)
        pairs = [(i, j) for i, t in enumerate(p.tokens) if t.type in KEYWORDS
                 for j in range(len(p.tokens)) if j != i]
        out["quotes"][0] += sum(_label(p.tree_distance(i, j)) != _label(q.tree_distance(i, j))
                                for i, j in pairs)
        out["quotes"][1] += len(pairs)
        out["true_or"][0] += sum(p.tokens[i].type in {"true", "or"} and _label(p.tree_distance(i, j))
                                 is not None for i, j in pairs)
        out["true_or"][1] += len(pairs)
    return {k: tuple(v) for k, v in out.items()}


def _choice(cfg, d: Deviation) -> str:
    if not d.field:
        return d.book
    if getattr(cfg, d.field):
        return f"reference, as the paper ({d.field}; off: {d.variant})"
    return f"the project's variant ({d.field} off): {d.variant}"


def deviation_table(cfg) -> pd.DataFrame:
    """One row per deviation: task, what differs, example, the reference, the book's choice
    and why, pairs changed and pairs compared (on ``cfg``'s probe functions)."""
    counts = {**_tree_counts(cfg), **_dfg_counts(cfg, choose_functions(cfg, "dfg")[0])}
    rows = [{"task": d.task, "what differs": d.what, "example": d.example, "reference": d.reference,
             "book": _choice(cfg, d), "pairs changed": counts[d.key][0],
             "pairs compared": counts[d.key][1]} for d in DEVIATIONS]
    return pd.DataFrame(rows)
