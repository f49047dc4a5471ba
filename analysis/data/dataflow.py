"""Data-flow edges between tokens, in the sense of GraphCodeBERT (Guo et al. 2021).

An edge ``(i, j, kind)`` says: the value of token i comes from token j.

- ``computedFrom``: i is a variable being defined and j a token read by the expression that
  defines it: ``a = b + c`` gives (a, b) and (a, c); also augmented assignment (``a += b``:
  (a, b)), walrus (``(a := f(b))``), ``for a in b``, ``with f(b) as a`` and the ``for``
  clauses of comprehensions. A comprehension's variables, iterables and conditions are
  sources of what it is assigned to (``x = [g(y) for y in z if c]``: x from g, both y, z
  and c), and so are a lambda's parameters, defaults and body. Parallel
  assignment pairs element-wise when both sides have as many elements (``a, b = b, a``:
  a from b, b from a), and links every target to every source otherwise (a starred
  target, a call on the right). ``i = j = 0``: i and j both from the value.
- ``comesFrom``: i is a read of variable v and j a definition of v that can reach it (the
  last definitions along every path: both branches of an ``if`` reach past it; loop
  bodies are walked twice so a definition late in a loop reaches reads early in it). The
  left side of an augmented assignment is also a read (``a += b``: (a, previous a)). A
  parameter comes from the tokens of its default value (``def f(a=None)``: (a, None)), as
  in GraphCodeBERT; the default itself, and a parameter's annotation, are reads in the
  enclosing scope (``T = int; def f(a: T)``: (T, T)).

Nodes: variables and, with ``literals=True`` (GraphCodeBERT's graph, the book's default;
profile field ``probe_dfg_literals``), literals too (numbers, strings, ``None``, ``True``,
``False``, ``...``): ``x = 0`` gives (x, 0). Attribute names (``x.attr``) and
keyword-argument names (``f(k=1)``) are not variables; ``x`` in ``x.attr`` is a read. Names
in ``global`` / ``nonlocal`` statements are declarations. Nested functions, lambdas,
classes and comprehensions see the enclosing definitions (a copy); theirs do not leak out.

Deviations from GraphCodeBERT's ``DFG_python``, each an artefact of its implementation
(chapter 01 counts the pairs each one changes; ``analysis.data.deviations``):
- attribute and keyword-argument names are not variables (GraphCodeBERT links ``x.n`` to ``n``);
- ``self.x = v`` reads ``self``; it does not redefine it with v as its source;
- the first read of an unbound name (a builtin, a global) is a read, not a definition;
- ``a, b = f(x)`` links a and b to f and x (GraphCodeBERT pairs a with f, b with ``(x)``);
- a definition before a loop still reaches past the loop (GraphCodeBERT drops it);
- each ``except`` starts from the states before and after the ``try`` body (not in sequence);
- ``x += y`` also reads x (GraphCodeBERT: only x from y);
- ``i = j = 0``: i from 0, not from j;
- comprehension variables and a nested function's locals stay in their scope;
- a typed default ``a: int = 0`` is a default too: a <- 0 (GraphCodeBERT links untyped ones only);
- ``with v as a`` links a to v, and an ``as`` alias is a definition (GraphCodeBERT: no edge
  from v; an alias already bound is a read of the earlier one);
- a walrus ``(a := v)`` defines a from v (GraphCodeBERT: no edge; a is read or defined bare);
- the body and ``else`` of a ``for ... else`` are walked (GraphCodeBERT skips both: the
  loop's last child is no block).
"""
from __future__ import annotations

import sys

TARGET_CONTAINERS = {"pattern_list", "tuple_pattern", "list_pattern", "tuple", "list",
                     "parenthesized_expression", "list_splat_pattern", "list_splat",
                     "dictionary_splat_pattern"}
SEQUENCES = {"pattern_list", "tuple_pattern", "list_pattern", "tuple", "list", "expression_list"}
SPLATS = {"list_splat_pattern", "list_splat", "dictionary_splat"}
COMPREHENSIONS = {"list_comprehension", "set_comprehension", "dictionary_comprehension",
                  "generator_expression"}
LITERALS = {"integer", "float", "string", "concatenated_string", "none", "true", "false",
            "ellipsis"}
DEFAULT_PARAMETERS = {"default_parameter", "typed_default_parameter"}


class _Flow:
    """One walk over a tree; ``state`` maps a variable's name (bytes) to the set of tokens
    whose definitions reach the current point."""

    def __init__(self, token_of: dict, literals: bool = True):
        self.token_of = token_of
        self.literals = literals
        self.edges: set[tuple[int, int, str]] = set()

    def tok(self, node):
        return self.token_of.get((node.start_byte, node.end_byte))

    def link(self, i, sources, kind: str) -> None:
        for j in sources:
            if j != i:
                self.edges.add((i, j, kind))

    # --- reads -------------------------------------------------------------------------
    def reads(self, node, state) -> list[int]:
        """Walk an expression: record comesFrom edges for every variable read, return the
        tokens read (the sources of a computedFrom)."""
        if node is None:
            return []
        t = node.type
        if t == "identifier":
            return self.read_name(node, state)
        if t in LITERALS:
            i = self.tok(node)
            return [i] if self.literals and i is not None else []
        if t == "attribute":
            return self.read_attribute(node, state)
        if t == "keyword_argument":
            return self.read_keyword(node, state)
        if t == "named_expression":
            sources = self.reads(node.child_by_field_name("value"), state)
            self.define(node.child_by_field_name("name"), sources, state)
            return sources
        if t == "lambda":
            return self.lambda_(node, state)
        if t in COMPREHENSIONS:
            return self.comprehension(node, state)
        out = []
        for child in node.named_children:
            out += self.reads(child, state)
        return out

    def read_name(self, node, state) -> list[int]:
        i = self.tok(node)
        if i is None:
            return []
        self.link(i, state.get(node.text, ()), "comesFrom")
        return [i]

    def read_attribute(self, node, state) -> list[int]:
        return self.reads(node.child_by_field_name("object"), state)

    def read_keyword(self, node, state) -> list[int]:
        return self.reads(node.child_by_field_name("value"), state)

    # --- definitions -------------------------------------------------------------------
    def define(self, target, sources: list[int], state, kind: str = "computedFrom") -> None:
        """Bind every variable in ``target`` (a name or a destructuring pattern) to ``sources``."""
        if target is None:
            return
        t = target.type
        if t == "identifier":
            i = self.tok(target)
            if i is not None:
                self.link(i, sources, kind)
                state[target.text] = {i}
        elif t in TARGET_CONTAINERS:
            for child in target.named_children:
                self.define(child, sources, state, kind)
        elif t in {"attribute", "subscript"}:
            self.define_attribute(target, sources, state)

    def define_attribute(self, target, sources, state) -> None:
        self.reads(target, state)  # x.a = ..., x[i] = ...: reads x (and i)

    def gather(self, value, state):
        """The sources of ``value``, as ("seq", [per element]) for a tuple or list without
        a starred element, else ("flat", tokens)."""
        if value.type in SEQUENCES and not any(c.type in SPLATS for c in value.named_children):
            return "seq", [self.gather(c, state) for c in value.named_children]
        if value.type == "parenthesized_expression" and value.named_child_count == 1:
            return self.gather(value.named_children[0], state)
        return "flat", self.reads(value, state)

    def bind(self, target, tree, state) -> None:
        """Define ``target`` from a ``gather`` tree: element-wise where the shapes agree."""
        kind, payload = tree
        if target.type == "parenthesized_expression" and target.named_child_count == 1:
            return self.bind(target.named_children[0], tree, state)
        elements = target.named_children if target.type in SEQUENCES else None
        if kind == "seq" and elements is not None and len(elements) == len(payload) \
                and not any(e.type in SPLATS for e in elements):
            for element, sub in zip(elements, payload):
                self.bind(element, sub, state)
        else:
            self.define(target, _flatten(tree), state)

    def assignment(self, node, state) -> None:
        """``a = b``, ``a = b = c`` (every target from the value), ``a, b = b, a``."""
        targets, value = [], node
        while value is not None and value.type == "assignment":
            targets.append(node_field(value, "left"))
            value = node_field(value, "right")
        if value is None:  # ``x: int`` binds nothing
            return
        tree = self.gather(value, state)
        for target in targets:
            self.bind(target, tree, state)

    def augmented(self, node, state) -> None:
        left = node_field(node, "left")
        sources = self.reads(node_field(node, "right"), state)
        if left.type == "identifier":
            i = self.tok(left)
            if i is not None:
                self.link(i, state.get(left.text, ()), "comesFrom")
        self.define(left, sources, state)

    # --- statements --------------------------------------------------------------------
    def block(self, node, state) -> dict:
        for child in node.named_children:
            state = self.stmt(child, state)
        return state

    def stmt(self, node, state) -> dict:
        t = node.type
        if t == "expression_statement":
            for child in node.named_children:
                if child.type == "assignment":
                    self.assignment(child, state)
                elif child.type == "augmented_assignment":
                    self.augmented(child, state)
                else:
                    self.reads(child, state)
            return state
        if t == "if_statement":
            return self.if_(node, state)
        if t in {"for_statement", "while_statement"}:
            return self.loop(node, state)
        if t == "try_statement":
            return self.try_(node, state)
        if t == "with_statement":
            return self.with_(node, state)
        if t in {"function_definition", "class_definition"}:
            self.scope(node, state)
            return state
        if t == "decorated_definition":
            for child in node.named_children:
                if child.type == "decorator":
                    self.reads(child, state)
                else:
                    self.stmt(child, state)
            return state
        if t in {"import_statement", "import_from_statement"}:
            for name in node.children_by_field_name("name"):
                alias = name.child_by_field_name("alias") if name.type == "aliased_import" else None
                target = alias if alias is not None else name
                if target.type == "dotted_name":
                    target = target.named_children[0]
                self.define(target, [], state)
            return state
        if t in {"global_statement", "nonlocal_statement", "pass_statement", "break_statement",
                 "continue_statement", "comment"}:
            return state
        if t == "block":
            return self.block(node, state)
        # return, raise, assert, del, print, match and anything else: read every expression
        for child in node.named_children:
            if child.type == "block":
                state = self.block(child, state)
            else:
                self.reads(child, state)
        return state

    def if_(self, node, state) -> dict:
        self.reads(node_field(node, "condition"), state)
        branches = [self.block(node_field(node, "consequence"), dict(state))]
        has_else = False
        for alt in node.children_by_field_name("alternative"):
            if alt.type == "elif_clause":
                self.reads(node_field(alt, "condition"), state)
                branches.append(self.block(node_field(alt, "consequence"), dict(state)))
            else:
                has_else = True
                branches.append(self.block(node_field(alt, "body"), dict(state)))
        if not has_else:
            branches.append(state)
        return merge(branches)

    def try_(self, node, state) -> dict:
        """Each handler starts from the states before and after the body (it may have
        been interrupted anywhere); ``else`` follows the body; ``finally`` follows all."""
        after = self.block(node_field(node, "body"), dict(state))
        outs = [after]
        for child in node.named_children:
            if child.type == "except_clause":
                s = merge([state, after])
                for part in child.named_children:
                    if part.type == "as_pattern":
                        self.reads(part.named_children[0], s)
                        alias = part.child_by_field_name("alias")
                        if alias is not None:
                            self.alias(_unwrap(alias), [], s)
                    elif part.type == "block":
                        s = self.block(part, s)
                    else:
                        self.reads(part, s)
                outs.append(s)
            elif child.type == "else_clause":
                outs[0] = self.block(node_field(child, "body"), outs[0])
        state = merge(outs)
        for child in node.named_children:
            if child.type == "finally_clause":
                for part in child.named_children:
                    state = self.block(part, state) if part.type == "block" else state
        return state

    def with_(self, node, state) -> dict:
        for clause in node.named_children:
            if clause.type != "with_clause":
                continue
            for item in clause.named_children:
                value = item.child_by_field_name("value")
                if value is not None and value.type == "as_pattern":
                    sources = self.reads(value.named_children[0], state)
                    alias = value.child_by_field_name("alias")
                    if alias is not None:
                        self.alias(_unwrap(alias), sources, state)
                else:
                    self.reads(value, state)
        return self.block(node_field(node, "body"), state)

    def alias(self, node, sources, state) -> None:
        """``with v as a`` (a from v), ``except E as e`` (no sources)."""
        self.define(node, sources, state)

    def loop(self, node, state) -> dict:
        if node.type == "for_statement":
            sources = self.reads(node_field(node, "right"), state)
            left = node_field(node, "left")
        else:
            self.reads(node_field(node, "condition"), state)
            sources, left = [], None
        entry = dict(state)
        s = dict(state)
        for _ in range(2):  # twice: definitions late in the body reach reads early in it
            if left is not None:
                self.define(left, sources, s)
            s = self.block(node_field(node, "body"), s)
            if node.type == "while_statement":
                self.reads(node_field(node, "condition"), s)
            s = self.loop_state(entry, s)
        out = self.loop_state(entry, s)
        alt = node_field(node, "alternative")
        if alt is not None:
            out = self.block(node_field(alt, "body"), out)
        return out

    def loop_state(self, entry, s) -> dict:
        """The state after one more pass, or after the loop: the body may run zero times,
        so definitions before the loop reach past it."""
        return merge([entry, s])

    def enter(self, state) -> dict:
        """The state inside a nested scope: a copy (its definitions do not leak out)."""
        return dict(state)

    def leave(self, state, inner) -> None:
        """Leaving a nested scope changes nothing outside it."""

    def parameters(self, params, outer, inner) -> None:
        """Bind a function's or lambda's parameters in ``inner``; defaults are read in
        ``outer`` and are the parameter's sources (comesFrom, as in GraphCodeBERT)."""
        for p in params.named_children:
            self.parameter(p, outer, inner)

    def parameter(self, p, outer, inner) -> None:
        """A parameter's annotation is a read in ``outer`` (``def f(a: T)``: T), no source."""
        if p.type in DEFAULT_PARAMETERS:
            self.reads(p.child_by_field_name("type"), outer)
            sources = self.reads(p.child_by_field_name("value"), outer)
            self.define(p.child_by_field_name("name"), sources, inner, kind="comesFrom")
        elif p.type == "typed_parameter":
            self.define(p.named_children[0], [], inner)
            self.reads(p.child_by_field_name("type"), outer)
        elif p.type in {"identifier", "list_splat_pattern", "dictionary_splat_pattern"}:
            self.define(p, [], inner)

    def scope(self, node, state) -> None:
        """A nested function or class: parameters and locals stay inside; its name is a
        definition outside."""
        inner = self.enter(state)
        params = node.child_by_field_name("parameters")
        if params is not None:
            self.parameters(params, state, inner)
        if node.type == "class_definition":
            self.reads(node.child_by_field_name("superclasses"), state)
        ret = node.child_by_field_name("return_type")
        if ret is not None:
            self.reads(ret, state)
        name = node.child_by_field_name("name")
        if name is not None:
            self.define(name, [], state)
            inner.setdefault(name.text, state[name.text])  # recursion sees its own name
        self.leave(state, self.block(node_field(node, "body"), inner))

    def lambda_(self, node, state) -> list[int]:
        """A lambda's tokens (parameters, defaults, body) are the sources of what it is
        assigned to, as in GraphCodeBERT (``h = lambda i: i + 1``: h from i, i and 1)."""
        inner = self.enter(state)
        params = node.child_by_field_name("parameters")
        out = []
        if params is not None:
            self.parameters(params, state, inner)
            out += self.nodes(params)
        out += self.reads(node.child_by_field_name("body"), inner)
        self.leave(state, inner)
        return out

    def nodes(self, node) -> list[int]:
        """The data-flow nodes under ``node`` (variables; literals with ``literals``), in order."""
        out, stack = [], [node]
        while stack:
            n = stack.pop()
            if n.type == "identifier" or (self.literals and n.type in LITERALS):
                i = self.tok(n)
                out += [i] if i is not None else []
            else:
                stack.extend(reversed(n.named_children))
        return out

    def comprehension(self, node, state) -> list[int]:
        """Reads of a comprehension: its body, its variables, iterables and conditions (all
        sources of what the comprehension is assigned to, as in GraphCodeBERT); its
        variables stay inside."""
        inner = self.enter(state)
        out = []
        for clause in node.named_children:
            if clause.type == "for_in_clause":
                sources = self.reads(node_field(clause, "right"), inner)
                self.define(node_field(clause, "left"), sources, inner)
                out += self.nodes(node_field(clause, "left")) + sources
            elif clause.type == "if_clause":
                for child in clause.named_children:
                    out += self.reads(child, inner)
        body = node.child_by_field_name("body")
        out = self.reads(body, inner) + out if body is not None else out
        self.leave(state, inner)
        return out


def node_field(node, name):
    return node.child_by_field_name(name) if node is not None else None


def _flatten(tree) -> list[int]:
    kind, payload = tree
    return list(payload) if kind == "flat" else [j for sub in payload for j in _flatten(sub)]


def _unwrap(node):
    """``as_pattern_target`` wraps the alias in tree-sitter-python 0.25."""
    while node is not None and node.type == "as_pattern_target" and node.named_children:
        node = node.named_children[0]
    return node


def merge(states: list[dict]) -> dict:
    out: dict = {}
    for s in states:
        for name, defs in s.items():
            out[name] = out.get(name, set()) | set(defs)
    return out


def run_flow(flow: _Flow, root) -> list[tuple[int, int, str]]:
    """Walk ``root`` with ``flow``; a tree too deep for the walk raises ``RecursionError``."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        flow.block(root, {})
    finally:
        sys.setrecursionlimit(limit)
    return sorted(flow.edges)


def dataflow_edges(root, token_of: dict, literals: bool = True) -> list[tuple[int, int, str]]:
    """Data-flow edges of the code under ``root``; ``token_of`` maps (start_byte, end_byte)
    of a token to its index; ``literals``: literals are nodes (GraphCodeBERT)."""
    return run_flow(_Flow(token_of, literals), root)
