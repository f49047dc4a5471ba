"""The corpus pipeline: CodeSearchNet loading, extraction skips, splits, tokenizer, probes."""
import gzip
import json
from pathlib import Path

import pytest

from analysis import config
from analysis.data import (align_subwords, assign_splits, finetune_dataset, load_corpus, load_tokenizer,
                           parse_function, pretraining_texts, probe_dataset, read_codesearchnet,
                           strip_annotations)
from analysis.data.extract import functions_in_file
from analysis.data.sources import SourceError, Source, fetch, read_sources

FIXTURE = Path(__file__).parent / "fixtures" / "codesearchnet_sample.jsonl.gz"


def test_codesearchnet_fixture_loads():
    functions, skipped = read_codesearchnet(FIXTURE)
    assert [f.qualname for f in functions] == ["add_numbers", "Greeter.greet", "clamp"]
    assert functions[0].docstring == "Add two numbers and return the sum."
    assert '"""' not in functions[0].code_without_docstring
    assert skipped == {"malformed CodeSearchNet line": 1, "syntax error": 1}


def test_codesearchnet_malformed_fields_are_counted_and_reading_goes_on(tmp_path):
    good = {"code": "def f(a):\n    return a\n", "docstring": "", "func_name": "f", "repo": "r",
            "path": "p.py", "sha": "abc", "license": "MIT"}
    bad = [{**good, "sha": 123}, {**good, "sha": None}, {**good, "license": 5},
           {k: v for k, v in good.items() if k != "func_name"}, [1, 2]]
    lines = [json.dumps(good)] + [json.dumps(b) for b in bad] + ["{not json",
             json.dumps(good).replace("return a", "return '\\ud800'"), json.dumps({**good, "func_name": "g"})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    functions, skipped = read_codesearchnet(tmp_path / "a.jsonl")
    assert [f.qualname for f in functions] == ["f", "g"]
    assert skipped == {"malformed CodeSearchNet line": 7}


def test_codesearchnet_as_corpus(cache_dir):
    cfg = config.profile("smoke", corpus=f"codesearchnet:{FIXTURE}")
    corpus = load_corpus(cfg)
    assert len(corpus.functions) == 3 and corpus.skipped["syntax error"] == 1
    with pytest.raises(FileNotFoundError):
        load_corpus(config.profile("smoke", corpus="codesearchnet:/nonexistent/dir"))
    with pytest.raises(ValueError, match="pypi"):
        load_corpus(config.profile("smoke", corpus="github:foo"))


def test_extraction_separates_docstring_and_counts_skips():
    from collections import Counter
    skipped = Counter()
    src = b'class A:\n    @staticmethod\n    def m(x):\n        """Doc of m."""\n        return x\n\n\ndef top():\n    def inner():\n        pass\n'
    fns = functions_in_file(src, "a.py", "pkg", "1", "MIT", skipped, 10_000)
    assert sorted(f.qualname for f in fns) == ["A.m", "top", "top.inner"]
    m = next(f for f in fns if f.name == "m")
    assert m.code.startswith("@staticmethod\ndef m(x):") and m.docstring == "Doc of m."
    assert m.code_without_docstring == "@staticmethod\ndef m(x):\n    return x\n"
    assert m.start_line == 2
    assert functions_in_file(b"def f(:\n", "b.py", "p", "1", "MIT", skipped, 10_000) == []
    assert functions_in_file(b"x = '\xff'\n", "c.py", "p", "1", "MIT", skipped, 10_000) == []
    assert functions_in_file(b"x = 1\n" * 100, "d.py", "p", "1", "MIT", skipped, 50) == []
    assert skipped == {"syntax error": 1, "not UTF-8": 1, "file too large": 1}


def test_strip_annotations():
    code, targets = strip_annotations("def f(x: int, *args: str, y: 'A' = 3) -> list[int]:\n    return [x]\n")
    assert code == "def f(x, *args, y = 3):\n    return [x]\n"
    assert [(code[a:b], t) for a, b, t in targets] == [
        ("f", "list[int]"), ("x", "int"), ("args", "str"), ("y", "'A'")]
    assert strip_annotations("def g(x):\n    return x\n") is None
    parse_function(code)  # still valid Python


def test_bad_sources_are_clear_errors(tmp_path, cache_dir):
    bad = tmp_path / "s.toml"
    bad.write_text("[[package]]\nname = 'x'\n")
    with pytest.raises(SourceError, match="lacks"):
        read_sources(bad)
    bad.write_text("not toml [")
    with pytest.raises(SourceError, match="not valid TOML"):
        read_sources(bad)
    with pytest.raises(SourceError, match="no source .* set 'nope'"):
        read_sources(corpus_set="nope")
    every = read_sources()
    assert {s.name for s in every if "smoke" in s.sets} == {"click"}
    assert all(len(s.sha256) == 64 for s in every)


@pytest.mark.slow
def test_checksum_mismatch_names_the_package(cache_dir):
    src = read_sources(corpus_set="smoke")[0]
    wrong = Source(src.name, src.version, "0" * 64, src.license, src.sets)
    with pytest.raises(SourceError, match=f"checksum mismatch for {src.name}=={src.version}"):
        fetch(wrong)


@pytest.fixture(scope="module")
def smoke():
    return config.profile("smoke")


@pytest.mark.slow
def test_smoke_corpus_splits_never_leak(smoke):
    corpus = load_corpus(smoke)
    ids = [f.id for f in corpus.functions]
    assert len(ids) == len(set(ids)) and len(ids) > 500
    split = assign_splits(corpus, smoke.seed)
    held_out = {fid for fid, s in split.items() if s != "train"}
    by_id = corpus.by_id()
    held_codes = {by_id[f].code for f in held_out}
    assert not held_codes & set(pretraining_texts(smoke))
    for task in ("search", "long_search", "types"):
        sets = finetune_dataset(smoke, task)
        train = {r["id"] for r in sets["train"]}
        test = {r["id"] for r in sets["test"]} | {r["id"] for r in sets["valid"]}
        assert not train & test, task
        assert all(split[i] == "train" for i in train) and all(split[i] != "train" for i in test)
        # no file feeds both sides (the smoke corpus has one package: split by file)
        files = lambda rows: {by_id[r["id"]].path for r in rows}
        assert not files(sets["train"]) & files(sets["test"] + sets["valid"]), task


@pytest.mark.slow
def test_tokenizer_roundtrip_and_alignment(smoke, tmp_path):
    from transformers import AutoTokenizer
    tok = load_tokenizer(smoke)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    code = "def area(w, h):\n    return w * h\n"
    assert again(code)["input_ids"] == tok(code)["input_ids"]
    enc = tok(code, return_offsets_mapping=True)
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == code
    parsed = parse_function(code)
    groups = align_subwords(parsed, enc["offset_mapping"])
    assert all(groups), "every code token has a subword"
    for tok_i, group in enumerate(groups):
        spans = [enc["offset_mapping"][k] for k in group]
        t = parsed.tokens[tok_i]
        assert all(s < t.end_char and e > t.start_char for s, e in spans)


@pytest.mark.slow
def test_probe_sets_are_balanced_and_split_by_function(smoke):
    for task, n_labels in (("distance", 5), ("siblings", 2), ("dfg", 3)):
        data = probe_dataset(smoke, task)
        counts = data.pairs.groupby(["split", "label"]).size()
        for side in ("train", "test"):
            assert counts[side].nunique() == 1 and len(counts[side]) == n_labels, (task, counts)
        train_f = set(data.split("train")["function"])
        assert not train_f & set(data.split("test")["function"])
        for row in data.pairs.itertuples():
            p = data.functions[row.function]
            if task == "distance":
                assert p.tree_distance(row.i, row.j) == row.label + 2
            elif task == "siblings":
                assert p.is_sibling(row.i, row.j) == bool(row.label)
            else:
                kind = p.edge_set().get((row.i, row.j))
                assert kind == [None, "comesFrom", "computedFrom"][row.label]


@pytest.mark.slow
def test_probe_functions_fit_the_pretraining_context(smoke):
    """With probe_within_context (the default) every probe function's subword sequence, <s> and
    </s> included, fits max_length, and the longer ones are counted; without it, longer ones
    are probed too (smoke's corpus has functions of 10..120 code tokens beyond 64 subwords)."""
    cfg = smoke.replace(max_length=64)
    tokenizer = load_tokenizer(cfg)
    inside = probe_dataset(cfg, "siblings")
    lengths = [len(tokenizer(code)["input_ids"]) for code in map(_code_of(inside), range(len(inside.functions)))]
    assert max(lengths) <= 64
    assert inside.skipped.get("longer than the pretraining context (64 subwords)", 0) > 0
    free = probe_dataset(cfg.replace(probe_within_context=False), "siblings")
    assert max(len(tokenizer(c)["input_ids"]) for c in map(_code_of(free), range(len(free.functions)))) > 64


def _code_of(data):
    return lambda k: data.functions[k].code


@pytest.mark.slow
def test_a_probe_side_without_some_label_is_a_clear_error(smoke):
    """Too few training functions for a rare data-flow label: a message naming the side, the
    label and the fields to change, not a numpy error deep in the probe."""
    with pytest.raises(ValueError, match=r"the train side of the dfg probe \(6 of 30 functions.*has no .*pair"):
        probe_dataset(smoke.replace(probe_test_fraction=0.8), "dfg")
