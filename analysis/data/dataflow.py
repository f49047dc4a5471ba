"""Data-flow edges between variable tokens, in the sense of GraphCodeBERT (Guo et al. 2021).

An edge ``(i, j, kind)`` says: the value of token i comes from token j.

- ``computedFrom``: i is a variable being defined and j a variable read by the expression
  that defines it: ``a = b + c`` gives (a, b) and (a, c); also augmented assignment
  (``a += b``: (a, b)), walrus (``(a := f(b))``), ``for a in b``, ``with f(b) as a``, and
  the ``for`` clauses of comprehensions.
- ``comesFrom``: i is a read of variable v and j a definition of v that can reach it (the
  last definitions along every path: both branches of an ``if`` reach past it; loop bodies
  are walked twice so a definition late in a loop reaches reads early in it). The left
  side of an augmented assignment is also a read (``a += b``: (a, previous a)).

Definitions without a source (function parameters, imports, ``except E as e``, loop
targets over literals) start a chain and have no outgoing edge. Attribute names
(``x.attr``) and keyword-argument names (``f(k=1)``) are not variables; ``x`` in ``x.attr``
is a read. Names in ``global`` / ``nonlocal`` statements are declarations, not reads.
Nested functions, lambdas, classes and comprehensions see the enclosing definitions (a
copy); their own definitions do not leak out.
"""
from __future__ import annotations

import sys

TARGET_CONTAINERS = {"pattern_list", "tuple_pattern", "list_pattern", "tuple", "list",
                     "parenthesized_expression", "list_splat_pattern", "list_splat"}
SCOPES = {"function_definition", "lambda", "class_definition"}
COMPREHENSIONS = {"list_comprehension", "set_comprehension", "dictionary_comprehension",
                  "generator_expression"}


class _Flow:
    def __init__(self, token_of: dict):
        self.token_of = token_of
        self.edges: set[tuple[int, int, str]] = set()

    def tok(self, node):
        return self.token_of.get((node.start_byte, node.end_byte))

    # --- reads -------------------------------------------------------------------------
    def reads(self, node, state) -> list[int]:
        """Walk an expression: record comesFrom edges for every variable read, return the
        read tokens (the sources of a computedFrom)."""
        if node is None:
            return []
        t = node.type
        if t == "identifier":
            i = self.tok(node)
            if i is None:
                return []
            for j in state.get(node.text, ()):
                self.edges.add((i, j, "comesFrom"))
            return [i]
        if t == "attribute":
            return self.reads(node.child_by_field_name("object"), state)
        if t == "keyword_argument":
            return self.reads(node.child_by_field_name("value"), state)
        if t == "named_expression":
            return self.assign(node.child_by_field_name("name"), node.child_by_field_name("value"), state)
        if t == "lambda":
            self.lambda_(node, state)
            return []
        if t in COMPREHENSIONS:
            return self.comprehension(node, state)
        if t in {"string", "concatenated_string"}:
            return []
        out = []
        for child in node.named_children:
            out += self.reads(child, state)
        return out

    # --- definitions -------------------------------------------------------------------
    def define(self, target, sources: list[int], state, kind_from_prev: bool = False) -> None:
        """Bind every variable in ``target`` (a name or a destructuring pattern)."""
        t = target.type
        if t == "identifier":
            i = self.tok(target)
            if i is None:
                return
            if kind_from_prev:
                for j in state.get(target.text, ()):
                    if j != i:
                        self.edges.add((i, j, "comesFrom"))
            for j in sources:
                if j != i:
                    self.edges.add((i, j, "computedFrom"))
            state[target.text] = {i}
        elif t in TARGET_CONTAINERS:
            for child in target.named_children:
                self.define(child, sources, state)
        elif t in {"attribute", "subscript"}:
            self.reads(target, state)  # x.a = ..., x[i] = ...: reads x (and i)
        elif t in {"typed_parameter", "default_parameter", "typed_default_parameter",
                   "list_splat_pattern", "dictionary_splat_pattern", "keyword_separator"}:
            for child in target.named_children:
                if child.type == "identifier":
                    self.define(child, sources, state)

    def assign(self, left, right, state) -> list[int]:
        sources = self.reads(right, state)
        if left is not None:
            self.define(left, sources, state)
        return sources

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
                    left, right = node_field(child, "left"), node_field(child, "right")
                    sources = self.reads(right, state)
                    self.define(left, sources, state, kind_from_prev=True)
                else:
                    self.reads(child, state)
            return state
        if t == "if_statement":
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
        if t in {"for_statement", "while_statement"}:
            return self.loop(node, state)
        if t == "try_statement":
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
                                self.define(_unwrap(alias), [], s)
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
        if t == "with_statement":
            for clause in node.named_children:
                if clause.type == "with_clause":
                    for item in clause.named_children:
                        value = item.child_by_field_name("value")
                        if value is not None and value.type == "as_pattern":
                            sources = self.reads(value.named_children[0], state)
                            alias = value.child_by_field_name("alias")
                            if alias is not None:
                                self.define(_unwrap(alias), sources, state)
                        else:
                            self.reads(value, state)
            return self.block(node_field(node, "body"), state)
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

    def assignment(self, node, state) -> None:
        right = node_field(node, "right")
        left = node_field(node, "left")
        if right is not None and right.type == "assignment":  # a = b = c
            self.assignment(right, state)
            sources = self.reads(node_field(right, "left"), state)
        else:
            sources = self.reads(right, state) if right is not None else []
        self.define(left, sources, state)

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
            s = merge([entry, s])
        out = merge([entry, s])
        alt = node_field(node, "alternative")
        if alt is not None:
            out = self.block(node_field(alt, "body"), out)
        return out

    def scope(self, node, state) -> None:
        """A nested function or class: parameters and locals stay inside; its name is a
        definition outside."""
        inner = dict(state)
        params = node.child_by_field_name("parameters")
        if params is not None:
            for p in params.named_children:
                default = p.child_by_field_name("value")
                if default is not None:
                    self.reads(default, state)
                self.define(p, [], inner)
        if node.type == "class_definition":
            self.reads(node.child_by_field_name("superclasses"), state)
        ret = node.child_by_field_name("return_type")
        if ret is not None:
            self.reads(ret, state)
        name = node.child_by_field_name("name")
        if name is not None:
            self.define(name, [], state)
            inner.setdefault(name.text, state[name.text])  # recursion sees its own name
        self.block(node_field(node, "body"), inner)

    def lambda_(self, node, state) -> None:
        inner = dict(state)
        params = node.child_by_field_name("parameters")
        if params is not None:
            for p in params.named_children:
                self.define(p, [], inner)
        self.reads(node.child_by_field_name("body"), inner)

    def comprehension(self, node, state) -> list[int]:
        inner = dict(state)
        body = node.child_by_field_name("body")
        for clause in node.named_children:
            if clause.type == "for_in_clause":
                sources = self.reads(node_field(clause, "right"), inner)
                self.define(node_field(clause, "left"), sources, inner)
            elif clause.type == "if_clause":
                for child in clause.named_children:
                    self.reads(child, inner)
        return self.reads(body, inner) if body is not None else []


def node_field(node, name):
    return node.child_by_field_name(name) if node is not None else None


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


def dataflow_edges(root, token_of: dict) -> list[tuple[int, int, str]]:
    """Data-flow edges of the code under ``root``; ``token_of`` maps (start_byte, end_byte)
    of a leaf to its token index."""
    flow = _Flow(token_of)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        flow.block(root, {})
    finally:
        sys.setrecursionlimit(limit)
    return sorted(flow.edges)
