"""Function extraction keeps code as written (issue 23): byte-order mark, string contents
under a uniform dedent, docstrings on the def line; and it is linear in the file size."""
import ast
import time
from collections import Counter

from analysis.data.extract import functions_in_file


def extract(src: bytes):
    skipped = Counter()
    fns = {f.qualname: f for f in functions_in_file(src, "a.py", "pkg", "1", "MIT", skipped, 2_000_000)}
    return fns, skipped


def test_byte_order_mark_is_dropped_and_indentation_kept():
    fns, skipped = extract("\ufeffdef f():\n    return 1\n".encode("utf-8"))
    assert fns["f"].code == "def f():\n    return 1\n" and not skipped


def test_method_string_contents_survive_the_dedent():
    src = (b'class A:\n    def m(self):\n        x = """\n  two\n    four\n        eight"""\n'
           b'        return (x +\n  "y")\n')
    fns, skipped = extract(src)
    code = fns["A.m"].code
    # the def's 4 spaces go from every code line; the string's lines stay as written;
    # a continuation line indented less than the def loses only what it has
    assert code == ('def m(self):\n    x = """\n  two\n    four\n        eight"""\n'
                    '    return (x +\n"y")\n')
    value = ast.parse(code).body[0].body[0].value.value
    assert value == "\n  two\n    four\n        eight"
    assert not skipped


def test_method_docstring_removed_with_its_lines():
    src = b'class A:\n    def m(self):\n        """Doc.\n\n    Indented less."""\n        return 1\n'
    fns, _ = extract(src)
    m = fns["A.m"]
    assert m.code == 'def m(self):\n    """Doc.\n\n    Indented less."""\n    return 1\n'
    assert m.code_without_docstring == "def m(self):\n    return 1\n"


def test_docstring_on_the_def_line():
    fns, _ = extract(b'def f(): "Doc."\n')
    assert fns["f"].docstring == "Doc." and fns["f"].code_without_docstring == "def f():\n    pass\n"


def test_extraction_is_linear_in_the_number_of_functions():
    src = "".join(f"def f{k}(a, b):\n    return a + b * {k}\n\n" for k in range(24_000)).encode()
    assert len(src) > 1_000_000
    t = time.perf_counter()
    fns, _ = extract(src)
    assert len(fns) == 24_000
    assert time.perf_counter() - t < 30  # quadratic extraction took minutes here
