"""The relations' definitions on hand-worked functions: the four data-flow bugs fixed
(issue 21), each definition option (reference pipeline vs the project's variant), and
input that used to crash (issue 23). Token indices are written out above each case."""
import json

import pytest

from analysis import config
from analysis.data import CodeParseError, parse_function
from analysis.data.probes import candidate_pairs, choose_functions

CF, CM = "computedFrom", "comesFrom"


def edges(code, **options):
    return set(parse_function(code, **options).dfg_edges)


def test_chained_assignment_both_targets_from_the_value():
    # def0 f1 (2 )3 :4 i5 =6 j7 =8 0 9 return10 i11 +12 j13
    code = "def f():\n    i = j = 0\n    return i + j\n"
    assert edges(code) == {(5, 9, CF), (7, 9, CF), (11, 5, CM), (13, 7, CM)}
    assert edges(code, literals=False) == {(11, 5, CM), (13, 7, CM)}  # no j <- j, no i <- j
    # def0 f1 (2 x3 )4 :5 i6 =7 j8 =9 x10
    assert edges("def f(x):\n    i = j = x\n") == {(10, 3, CM), (6, 10, CF), (8, 10, CF)}


def test_default_value_is_a_read_in_the_enclosing_scope():
    # def0 f1 (2 s3 ,4 eol5 =6 NL7 )8 :9 return10 s11 +12 NL13
    # NL13 is the global NL (unbound here), not the default: no edge; eol comes from NL7
    assert edges("def f(s, eol=NL):\n    return s + NL\n") == {(5, 7, CM), (11, 3, CM)}
    # NL0 =1 '\n'2 def3 f4 (5 s6 ,7 eol8 =9 NL10 )11 :12 return13 eol14
    code = "NL = '\\n'\ndef f(s, eol=NL):\n    return eol\n"
    assert edges(code) == {(0, 2, CF), (10, 0, CM), (8, 10, CM), (14, 8, CM)}


def test_lambda_default_is_a_read_in_the_enclosing_scope():
    # def0 g1 (2 k3 )4 :5 return6 lambda7 v8 =9 k10 :11 k12
    # the body's k is the parameter k3, not the default k10
    assert edges("def g(k):\n    return lambda v=k: k\n") == {(10, 3, CM), (8, 10, CM), (12, 3, CM)}


def test_comprehension_variables_iterables_and_conditions_are_sources():
    # def0 f1 (2 z3 ,4 c5 )6 :7 x8 =9 [10 g11 (12 y13 )14 for15 y16 in17 z18 if19 c20 ]21
    # return22 x23; x from every variable of the comprehension, its own y16 too (GraphCodeBERT)
    code = "def f(z, c):\n    x = [g(y) for y in z if c]\n    return x\n"
    assert edges(code) == {(18, 3, CM), (20, 5, CM), (16, 18, CF), (13, 16, CM),
                           (8, 11, CF), (8, 13, CF), (8, 16, CF), (8, 18, CF), (8, 20, CF),
                           (23, 8, CM)}


def test_dict_and_generator_comprehension_variables_are_sources():
    # d0 =1 {2 k3 :4 v5 for6 k7 ,8 v9 in10 xs11 }12
    # s13 =14 sum15 (16 a17 *18 b19 for20 a21 ,22 b23 in24 zip25 (26 z27 ,28 xs29 )30 )31
    code = "d = {k: v for k, v in xs}\ns = sum(a * b for a, b in zip(z, xs))\n"
    assert edges(code) == {
        (7, 11, CF), (9, 11, CF), (3, 7, CM), (5, 9, CM),
        (0, 3, CF), (0, 5, CF), (0, 7, CF), (0, 9, CF), (0, 11, CF),
        (21, 25, CF), (21, 27, CF), (21, 29, CF), (23, 25, CF), (23, 27, CF), (23, 29, CF),
        (17, 21, CM), (19, 23, CM),
        (13, 15, CF), (13, 17, CF), (13, 19, CF), (13, 21, CF), (13, 23, CF), (13, 25, CF),
        (13, 27, CF), (13, 29, CF)}


def test_annotations_are_reads_in_the_enclosing_scope():
    # T0 =1 int2 def3 f4 (5 a6 :7 T8 ,9 b10 :11 T12 =13 0 14 )15 ->16 T17 :18 return19 a20
    # every T reads T0 (no source of a or b); b from its default; a20 from the parameter
    code = "T = int\ndef f(a: T, b: T = 0) -> T:\n    return a\n"
    assert edges(code) == {(0, 2, CF), (8, 0, CM), (12, 0, CM), (17, 0, CM), (10, 14, CM),
                           (20, 6, CM)}


def test_lambda_tokens_are_sources_of_its_target():
    # def0 f1 (2 c3 )4 :5 h6 =7 lambda8 i9 ,10 j11 =12 c13 :14 i15 +16 j17 +18 1 19
    # h from its parameters, the default, and the body (variables and the literal), as in
    # GraphCodeBERT; inside: j11 <- c13 (a default), i15 <- i9, j17 <- j11, c13 <- c3
    code = "def f(c):\n    h = lambda i, j=c: i + j + 1\n"
    assert edges(code) == {(13, 3, CM), (11, 13, CM), (15, 9, CM), (17, 11, CM),
                           (6, 9, CF), (6, 11, CF), (6, 13, CF), (6, 15, CF), (6, 17, CF),
                           (6, 19, CF)}


def test_parallel_assignment_falls_back_to_all_pairs():
    # def0 f1 (2 a3 ,4 b5 )6 :7 x8 ,9 *10 y11 =12 a13 ,14 b15   (a starred target)
    assert edges("def f(a, b):\n    x, *y = a, b\n") == {
        (13, 3, CM), (15, 5, CM), (8, 13, CF), (8, 15, CF), (11, 13, CF), (11, 15, CF)}
    # def0 f1 (2 a3 )4 :5 x6 ,7 y8 =9 g10 (11 a12 )13   (a call on the right)
    assert edges("def f(a):\n    x, y = g(a)\n") == {
        (12, 3, CM), (6, 10, CF), (6, 12, CF), (8, 10, CF), (8, 12, CF)}
    # (0 p1 ,2 q3 )4 ,5 r6 =7 (8 a9 ,10 b11 )12 ,13 c14   (nested, same shapes)
    assert edges("(p, q), r = (a, b), c\n") == {(1, 9, CF), (3, 11, CF), (6, 14, CF)}


def test_literals_are_nodes_by_default():
    # def0 f1 (2 a3 =4 None5 )6 :7 x8 =9 0 10 y11 =12 'a'13 if14 a15 else16 True17
    code = "def f(a=None):\n    x = 0\n    y = 'a' if a else True\n"
    assert edges(code) == {(3, 5, CM), (8, 10, CF), (15, 3, CM),
                           (11, 13, CF), (11, 15, CF), (11, 17, CF)}
    assert edges(code, literals=False) == {(15, 3, CM), (11, 15, CF)}


def test_siblings_one_level_below_a_non_block_sibling():
    # def0 f1 (2 )3 :4 return5 g6 (7 a8 )9
    p = parse_function("def f():\n    return g(a)\n")
    assert p.is_sibling(5, 6) and not p.is_sibling(6, 5)  # g: leaf child of call, beside return
    assert not p.is_sibling(5, 8) and not p.is_sibling(5, 7)  # two levels below
    assert not parse_function("def f():\n    return g(a)\n", siblings_below=False).is_sibling(5, 6)
    # def0 f1 (2 )3 :4 x5 =6 1 7 ;8 y9 =10 2 11   (';' is a leaf child of the block)
    p = parse_function("def f():\n    x = 1; y = 2\n")
    block = p.parents[8]
    assert p.node_types[block] == "block" and p._node_parent[block] == p.parents[0]
    assert not p.is_sibling(0, 8)                        # below a block: not a sibling
    # a string is not a leaf: its quotes sit two levels below the call
    # def0 f1 (2 )3 :4 return5 g6 (7 'a'8 )9
    p = parse_function("def f():\n    return g('a')\n")
    assert not p.is_sibling(5, 8) and p.is_sibling(7, 8)


def test_string_distance_from_its_quote_leaves():
    # return_statement (depth 3) > return (4), string (4) > string_start (5)
    code = "def f():\n    return 'a'\n"
    assert parse_function(code).tree_distance(5, 6) == 3
    assert parse_function(code, string_quotes=False).tree_distance(5, 6) == 2
    # concatenated_string (4) > string (5) > string_start (6): from the first quote
    code = "def f():\n    return 'a' 'b'\n"
    assert parse_function(code).tree_distance(5, 6) == 4
    assert parse_function(code, string_quotes=False).tree_distance(5, 6) == 2
    # two strings under one node: each from its quote, +1 at both ends
    # def0 f1 (2 )3 :4 g5 (6 'a'7 ,8 'b'9 )10
    p = parse_function("def f():\n    g('a', 'b')\n")
    assert p.tree_distance(7, 9) == 4 and p.tree_distance(7, 7) == 0


def test_deep_expression_is_a_parse_error():
    code = "def f(a):\n    return " + " + ".join(["a"] * 20_000) + "\n"
    with pytest.raises(CodeParseError, match="nested too deeply"):
        parse_function(code)
    assert parse_function(code, dataflow=False).tokens[-1].text == "a"  # the tree itself is fine


def test_lone_surrogate_is_a_parse_error():
    with pytest.raises(CodeParseError, match="surrogate"):
        parse_function("x = '\ud800'\n")


def test_none_true_false_are_keywords_of_the_distance_probe():
    # def0 f1 (2 )3 :4 return5 True6 or7 False8: boolean_operator > True, or, False
    p = parse_function("def f():\n    return True or False\n")
    assert [p.tokens[k].type for k in (6, 7, 8)] == ["true", "or", "false"]
    two = candidate_pairs("distance", p)[0]  # label 0 = distance 2
    assert {(6, 7), (7, 6), (8, 7), (6, 8)} <= set(two)
    # def0 f1 (2 )3 :4 return5 None6
    assert (6, 5) in candidate_pairs("distance", parse_function("def f():\n    return None\n"))[0]


def test_siblings_pairs_start_at_a_keyword():
    # def0 f1 (2 )3 :4 return5 g6 (7 a8 )9
    out = candidate_pairs("siblings", parse_function("def f():\n    return g(a)\n"))
    # def: f and ':' share its parent; '(' and ')' are leaves of parameters beside it
    assert sorted(out[1]) == [(0, 1), (0, 2), (0, 3), (0, 4), (5, 6)]
    assert len(out[0]) == (10 - 1 - 4) + (10 - 1 - 1)


def test_dfg_no_edge_pairs_reference_and_variables():
    # def0 f1 (2 a3 )4 :5 b6 =7 a8: edges a8 <- a3 (comesFrom), b6 <- a8 (computedFrom)
    p = parse_function("def f(a):\n    b = a\n")
    ref = candidate_pairs("dfg", p)
    assert ref[1] == [(8, 3)] and ref[2] == [(6, 8)]
    # from each token with an edge (6, 8) to every other token but its own edge's end
    assert sorted(ref[0]) == [(6, j) for j in range(9) if j not in (6, 8)] + \
        [(8, j) for j in range(9) if j not in (3, 8)]
    var = candidate_pairs("dfg", p, all_tokens=False)  # variables f1 a3 b6 a8, no edge either way
    assert sorted(var[0]) == [(1, 3), (1, 6), (1, 8), (3, 1), (3, 6), (6, 1), (6, 3), (8, 1)]


def test_probe_functions_that_cannot_be_parsed_are_counted(tmp_path, cache_dir):
    codes = [f"def f{k}(a):\n    b = a + {k}\n    return b\n" for k in range(6)]
    codes.append("def deep(a):\n    return " + " + ".join(["a"] * 20_000) + "\n")
    rows = [{"code": c, "docstring": "", "func_name": c[4:c.index("(")], "repo": "r", "path": "p.py"}
            for c in codes]
    (tmp_path / "csn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config.profile("smoke", corpus=f"codesearchnet:{tmp_path / 'csn.jsonl'}", probe_functions_dfg=6)
    chosen, skipped = choose_functions(cfg, "dfg")
    assert sorted(c[0].rsplit(":", 1)[1] for c in chosen) == [f"f{k}" for k in range(6)]
    assert skipped == {"does not parse: code is nested too deeply for the data-flow walk": 1}
