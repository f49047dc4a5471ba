"""The GraphCodeBERT artefacts chapter 01 counts: each emulation, run on the table's own
example, differs from the book's graph by exactly the edges worked out by hand below, and
the count of changed pairs is that difference."""
import pytest

from analysis import config
from analysis.data import parse_function
from analysis.data.dataflow import run_flow
from analysis.data.deviations import DEVIATIONS, _dfg_counts, _Reference
from analysis.data.parse import parse_tree, walk_tree

CF, CM = "computedFrom", "comesFrom"
EXAMPLES = {d.key: d.example for d in DEVIATIONS}

# key: (edges only the reference has, edges only the book has); token indices of the example
EXPECTED = {
    # def0 f1 (2 x3 ,4 n5 )6 :7 y8 =9 x10 .11 n12 return13 g14 (15 n16 =17 y18 )19
    "names": ({(12, 5, CM), (8, 12, CF), (16, 5, CM)}, set()),
    # def0 f1 (2 self3 ,4 v5 )6 :7 self8 .9 x10 =11 v12 return13 self14
    "self": ({(8, 12, CF), (14, 8, CM)}, {(8, 3, CM), (14, 3, CM)}),
    # def0 f1 (2 a3 ,4 b5 )6 :7 x8 =9 len10 (11 a12 )13 return14 len15 (16 b17 )18
    "builtins": ({(15, 10, CM)}, set()),
    # def0 f1 (2 a3 )4 :5 x6 ,7 y8 =9 g10 (11 a12 )13 return14 x15
    "call_unpack": (set(), {(6, 12, CF), (8, 10, CF)}),
    # t0 =1 0 2 for3 x4 in5 xs6 :7 t8 =9 x10 print11 (12 t13 )14
    "loop_exit": (set(), {(13, 0, CM)}),
    # try0 :1 x2 =3 f4 (5 )6 except7 E8 :9 x10 =11 0 12 print13 (14 x15 )16
    "try_sequence": (set(), {(15, 2, CM)}),
    # def0 f1 (2 x3 ,4 y5 )6 :7 x8 +=9 y10 return11 x12
    "augmented": (set(), {(8, 3, CM)}),
    # def0 f1 (2 v3 )4 :5 i6 =7 j8 =9 v10 return11 i12
    "chained": ({(6, 8, CF)}, set()),
    # def0 f1 (2 a3 :4 int5 =6 0 7 )8 :9 b10 =11 a12 return13 b14
    "typed_defaults": (set(), {(3, 7, CM)}),
    # def0 f1 (2 xs3 )4 :5 ys6 =7 [8 x9 for10 x11 in12 xs13 ]14 return15 x16
    "scopes": ({(16, 11, CM)}, set()),
    # def0 f1 (2 p3 ,4 q5 )6 :7 with8 open9 (10 p11 )12 as13 q14 :15 return16 q17
    "as_alias": ({(14, 5, CM), (17, 5, CM)}, {(14, 9, CF), (14, 11, CF), (17, 14, CM)}),
    # def0 f1 (2 g3 )4 :5 if6 (7 m8 :=9 g10 (11 )12 )13 :14 return15 m16
    "walrus": (set(), {(8, 10, CF)}),
    # def0 f1 (2 xs3 ,4 y5 )6 :7 for8 x9 in10 xs11 :12 y13 =14 x15 else16 :17 return18 y19
    "for_else": (set(), {(15, 9, CM), (13, 15, CF), (19, 5, CM), (19, 13, CM)}),
}


def test_every_data_flow_artefact_has_a_hand_worked_example():
    assert set(EXPECTED) == {d.key for d in DEVIATIONS if d.task == "dfg"} - {"literals", "no_edge"}


@pytest.mark.parametrize("key, code, expected", [
    # x[i] = v defines x and the literal i from v and reads neither; a later d[0] reads both
    # def0 f1 (2 d3 ,4 v5 )6 :7 d8 [9 0 10 ]11 =12 v13 return14 d15 [16 0 17 ]18
    ("self", "def f(d, v):\n    d[0] = v\n    return d[0]\n",
     ({(8, 13, CF), (10, 13, CF), (15, 8, CM), (17, 10, CM)}, {(8, 3, CM), (15, 3, CM)})),
    # s.x = v: with "names" the attribute name x is defined from v, and s.x's x reads it
    # def0 f1 (2 s3 ,4 v5 )6 :7 s8 .9 x10 =11 v12 return13 s14 .15 x16
    ("names", "def f(s, v):\n    s.x = v\n    return s.x\n", ({(10, 12, CF), (16, 10, CM)}, set())),
])
def test_targets_as_the_reference_defines_them(key, code, expected):
    # each worked out by hand and checked against GraphCodeBERT's DFG_python
    book = set(parse_function(code).dfg_edges)
    reference = emulate(code, key)
    assert (reference - book, book - reference) == expected


def emulate(code: str, key: str) -> set:
    text, data, tree = parse_tree(code)
    _, token_of = walk_tree(tree, text, data)
    return set(run_flow(_Reference(token_of, True, key), tree.root_node))


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_artefact_emulation_on_its_example(key):
    code = EXAMPLES[key]
    assert code.count("\n") == 2, "the table shows three-line examples"
    book = set(parse_function(code).dfg_edges)
    reference = emulate(code, key)
    assert (reference - book, book - reference) == EXPECTED[key]


def test_changed_pairs_are_counted_once_per_token_pair():
    cfg = config.profile("smoke")
    functions = [("chained", EXAMPLES["chained"], parse_function(EXAMPLES["chained"])),
                 ("self", EXAMPLES["self"], parse_function(EXAMPLES["self"]))]
    counts = _dfg_counts(cfg, functions)
    n_pairs = 13 * 12 + 15 * 14
    assert counts["chained"] == (1, n_pairs)
    # self: (8, 3) and (14, 3) lose their edge, (8, 12) and (14, 8) gain one
    assert counts["self"] == (4, n_pairs)
    # neither example has a literal: literals as nodes change nothing here
    assert counts["literals"] == (0, n_pairs)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_emulation_changes_nothing_where_its_construct_is_absent(key):
    # an annotation without a value, try/finally without a handler, a starred target, a
    # nested def with a default, a comprehension: none of the artefacts' constructs
    code = ("def f(a):\n    x: int\n    try:\n        y = a\n    finally:\n        pass\n"
            "    *z, w = a\n    def g(b=a):\n        return b\n    return [v for v in z if v], g\n")
    assert emulate(code, key) == set(parse_function(code).dfg_edges)
