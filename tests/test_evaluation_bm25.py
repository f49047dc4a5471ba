"""The BM25 baseline: identifier words, scores against a hand-worked case, MRR on a pool."""
import math

import numpy as np
import pytest

from analysis.evaluation import bm25_scores, code_words


def test_code_words_split_identifiers():
    assert code_words("getHTTPResponse_code2(self, user_name)") == ["get", "http", "response", "code", "2",
                                                                    "self", "user", "name"]
    assert code_words("__init__ XMLParser") == ["init", "xml", "parser"]
    assert code_words("+-*/") == []


def test_bm25_matches_the_lucene_formula_by_hand():
    """Three codes, one query word w = "user" in code 0 once (|d0| = 2 words), in code 1 twice
    (|d1| = 4), absent from code 2 (|d2| = 2); avgdl = 8/3. Lucene's idf = ln(1 + (N - n + 0.5) /
    (n + 0.5)) with N = 3, n = 2; score = idf f / (f + k1 (1 - b + b |d| / avgdl)) (Lucene since 8
    drops the constant factor k1 + 1, which does not change a ranking)."""
    codes = ["user id", "user user name name", "x y"]
    got = bm25_scores(["user"], codes)[0]
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    k1, b, avgdl = 1.5, 0.75, 8 / 3

    def want(f, dl):
        return idf * f / (f + k1 * (1 - b + b * dl / avgdl))
    assert got == pytest.approx([want(1, 2), want(2, 4), 0.0], rel=1e-5)


def test_bm25_ranks_the_matching_function_first():
    codes = ["def parse_url(text): return text", "def get_user_name(self): return self.name", "def add(a, b): return a + b"]
    scores = bm25_scores(["Parse a URL", "the user's name", "add two numbers a and b"], codes)
    assert (scores.argmax(1) == np.arange(3)).all()
    with pytest.raises(ValueError, match="at least one code"):
        bm25_scores(["q"], [])
