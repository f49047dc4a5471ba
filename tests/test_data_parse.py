"""parse_function on hand-written functions whose tokens, tree distances, siblings and
data-flow edges were worked out by hand (see the comments), and on hostile input."""
import time

import pytest

from analysis.data import CodeParseError, parse_function


def edges(code):
    p = parse_function(code)
    return p, {(i, j, k) for i, j, k in p.dfg_edges}


def test_tokens_depths_distances_siblings():
    # module(0) > function_definition(1) > [def(2) f(2) parameters(2) :(2) block(2)]
    # parameters > ( a ) at depth 3; block > return_statement(3) > [return(4) a(4)]
    p = parse_function("def f(a):\n    return a\n")
    assert [t.text for t in p.tokens] == ["def", "f", "(", "a", ")", ":", "return", "a"]
    assert [t.depth for t in p.tokens] == [2, 2, 3, 3, 3, 2, 4, 4]
    assert p.tree_distance(0, 1) == 2          # def, f: siblings under the function
    assert p.tree_distance(3, 7) == 3 + 4 - 2 * 1
    assert p.tree_distance(2, 4) == 2
    assert p.tree_distance(6, 6) == 0
    assert p.is_sibling(0, 1) and p.is_sibling(2, 3) and p.is_sibling(6, 7)
    assert not p.is_sibling(3, 7) and not p.is_sibling(0, 0)
    # the reference's rule: a is a leaf child of parameters, a non-block node beside def
    assert p.is_sibling(0, 3) and p.is_sibling(5, 3) and not p.is_sibling(3, 0)
    assert not parse_function("def f(a):\n    return a\n", siblings_below=False).is_sibling(0, 3)
    assert p.dfg_edges == [(7, 3, "comesFrom")]
    assert (p.tokens[1].start_char, p.tokens[1].end_char) == (4, 5)


def test_tuple_unpacking_pairs_element_wise():
    # def0 g1 (2 a3 ,4 b5 )6 :7 a8 ,9 b10 =11 b12 ,13 a14 return15 a16
    p, e = edges("def g(a, b):\n    a, b = b, a\n    return a\n")
    assert e == {(12, 5, "comesFrom"), (14, 3, "comesFrom"),
                 (8, 12, "computedFrom"), (10, 14, "computedFrom"),
                 (16, 8, "comesFrom")}


def test_augmented_assignment():
    # def0 h1 (2 x3 )4 :5 x6 +=7 y8 return9 x10  (y is global, unknown)
    p, e = edges("def h(x):\n    x += y\n    return x\n")
    assert e == {(6, 3, "comesFrom"), (6, 8, "computedFrom"), (10, 6, "comesFrom")}


def test_walrus():
    # def0 w1 (2 xs3 )4 :5 if6 (7 n8 :=9 len10 (11 xs12 )13 )14 >15 1 16 :17 return18 n19
    p, e = edges("def w(xs):\n    if (n := len(xs)) > 1:\n        return n\n")
    assert e == {(12, 3, "comesFrom"), (8, 10, "computedFrom"), (8, 12, "computedFrom"),
                 (19, 8, "comesFrom")}


def test_comprehension_scope():
    # def0 c1 (2 xs3 )4 :5 return6 [7 y8 for9 y10 in11 xs12 ]13
    p, e = edges("def c(xs):\n    return [y for y in xs]\n")
    assert e == {(12, 3, "comesFrom"), (10, 12, "computedFrom"), (8, 10, "comesFrom")}


def test_lambda():
    # def0 l1 (2 k3 )4 :5 return6 lambda7 v8 :9 v10 +11 k12
    p, e = edges("def l(k):\n    return lambda v: v + k\n")
    assert e == {(10, 8, "comesFrom"), (12, 3, "comesFrom")}


def test_global_is_a_declaration_not_a_read():
    # def0 gl1 (2 )3 :4 global5 counter6 counter7 =8 1 9 return10 counter11
    p, e = edges("def gl():\n    global counter\n    counter = 1\n    return counter\n")
    assert e == {(11, 7, "comesFrom"), (7, 9, "computedFrom")}


def test_nonlocal_and_nested_function():
    # def0 outer1 (2 a3 )4 :5 def6 inner7 (8 b9 )10 :11 nonlocal12 a13 return14 a15 +16 b17
    # return18 inner19 (20 a21 )22
    code = ("def outer(a):\n    def inner(b):\n        nonlocal a\n        return a + b\n"
            "    return inner(a)\n")
    p, e = edges(code)
    assert e == {(15, 3, "comesFrom"), (17, 9, "comesFrom"), (19, 7, "comesFrom"),
                 (21, 3, "comesFrom")}


def test_decorator_and_async():
    # @0 dec1 async2 def3 d4 (5 x6 )7 :8 y9 =10 await11 x12 return13 y14
    p, e = edges("@dec\nasync def d(x):\n    y = await x\n    return y\n")
    assert [t.text for t in p.tokens][:5] == ["@", "dec", "async", "def", "d"]
    assert p.is_sibling(0, 1) and p.tree_distance(0, 1) == 2
    assert e == {(12, 6, "comesFrom"), (9, 12, "computedFrom"), (14, 9, "comesFrom")}


def test_branches_merge():
    # def0 m1 (2 c3 )4 :5 if6 c7 :8 v9 =10 1 11 else12 :13 v14 =15 2 16 return17 v18
    p, e = edges("def m(c):\n    if c:\n        v = 1\n    else:\n        v = 2\n    return v\n")
    assert e == {(7, 3, "comesFrom"), (18, 9, "comesFrom"), (18, 14, "comesFrom"),
                 (9, 11, "computedFrom"), (14, 16, "computedFrom")}


def test_loop_carried_dependency_and_for_target():
    # def0 s1 (2 xs3 )4 :5 t6 =7 0 8 for9 x10 in11 xs12 :13 t14 +=15 x16 return17 t18
    p, e = edges("def s(xs):\n    t = 0\n    for x in xs:\n        t += x\n    return t\n")
    assert e == {(12, 3, "comesFrom"), (10, 12, "computedFrom"), (14, 6, "comesFrom"),
                 (14, 16, "computedFrom"), (16, 10, "comesFrom"), (18, 6, "comesFrom"),
                 (18, 14, "comesFrom"), (6, 8, "computedFrom")}


def test_string_is_one_token_and_non_ascii_offsets():
    p = parse_function('def u():\n    s = "héllo {x}"\n    return s  # ünïcode comment\n')
    texts = [t.text for t in p.tokens]
    assert '"héllo {x}"' in texts and "# ünïcode comment" not in texts
    tok = p.tokens[texts.index("return") + 1]
    assert p.code[tok.start_char:tok.end_char] == "s"
    assert tok.start_byte - tok.start_char == 1  # one 2-byte character before it


@pytest.mark.parametrize("bad,match", [
    ("", "empty"), ("   \n", "empty"), ("def f(:\n    pass\n", "does not parse"),
    (b"def f():\n    return '\xff'\n", "UTF-8"), (42, "str or bytes"),
])
def test_hostile_input_is_a_clear_error(bad, match):
    with pytest.raises(CodeParseError, match=match):
        parse_function(bad)


def test_huge_input_is_refused_quickly():
    code = "def f():\n" + "    x = 1\n" * 500_000  # 5 MB
    t = time.perf_counter()
    with pytest.raises(CodeParseError, match="over the limit"):
        parse_function(code)
    assert time.perf_counter() - t < 5


def test_deep_nesting_gives_a_result():
    depth = 2000
    code = "def f(y):\n    x = " + "(" * depth + "y" + ")" * depth + "\n    return x\n"
    p = parse_function(code)
    ys = [k for k, t in enumerate(p.tokens) if t.text == "y"]
    xs = [k for k, t in enumerate(p.tokens) if t.text == "x"]
    assert (ys[1], ys[0], "comesFrom") in p.dfg_edges
    assert (xs[0], ys[1], "computedFrom") in p.dfg_edges
    assert p.tree_distance(ys[0], ys[1]) > depth


def test_language_must_be_python():
    with pytest.raises(ValueError, match="python"):
        parse_function("x = 1", language="java")
