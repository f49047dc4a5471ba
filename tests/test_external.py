"""External checkpoints: a BiGS state dict in the authors' layout (every key BiGSForMaskedLM
holds, random values) loads strictly and computes BiGS's formulas, written out here
independently of the package; a transformers RoFormer loads as RoCoder with identical hidden
states; a RoBERTa-format BPE tokenizer aligns to code tokens; bad inputs are clear errors."""
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from analysis.models import load_checkpoint

CFG = {"vocab_size": 50, "num_hidden_layers": 2, "hidden_size": 16, "max_position_embeddings": 40,
       "intermediate_size": 24, "num_ssm": 6}


def bigs_state_dict(cfg=CFG, seed=0, prefix="bigs.", head="mlm") -> dict:
    """Every key of jxiw/BiGS's BiGSForMaskedLM (``head="mlm"``) or of a token classifier
    (``head="classifier"``), random values."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.3: torch.randn(*shape, generator=g) * s  # noqa: E731
    V, d, di, N = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_ssm"]
    sd = {"embeddings.word_embeddings.weight": r(V, d), "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], d),
          "embeddings.token_type_embeddings.weight": r(2, d), "embeddings.LayerNorm.weight": 1 + r(d),
          "embeddings.LayerNorm.bias": r(d), "embeddings.position_ids": torch.arange(cfg["max_position_embeddings"])[None],
          "pooler.dense.weight": r(d, d), "pooler.dense.bias": r(d)}
    shapes = {"dv": (di, d), "du_forward": (d, d), "du_backward": (d, d), "duc_forward": (d, d),
              "duc_backward": (d, d), "dol": (di, d), "do": (d, di)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        sd[p + "LayerNorm.weight"], sd[p + "LayerNorm.bias"] = 1 + r(d), r(d)
        for s4 in ("fs4", "bs4"):
            sd[f"{p}{s4}.D"] = r(1, s=1.0)
            sd[f"{p}{s4}.kernel.log_step"] = torch.rand(1, generator=g) * math.log(100) + math.log(0.01)
            sd[f"{p}{s4}.kernel.A_re"] = -torch.rand(N, generator=g) + 0.2  # some > -1e-4: clamped
            sd[f"{p}{s4}.kernel.A_im"] = math.pi * torch.arange(N) + r(N)
            sd[f"{p}{s4}.kernel.C"] = r(N, 2, s=0.7)
        for name, shape in shapes.items():
            sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"] = r(*shape), r(shape[0])
    sd = {prefix + k: v for k, v in sd.items()}
    if head == "mlm":
        bias = r(V)
        sd.update({"cls.predictions.bias": bias, "cls.predictions.decoder.bias": bias.clone(),
                   "cls.predictions.decoder.weight": r(V, d), "cls.predictions.transform.dense.weight": r(d, d),
                   "cls.predictions.transform.dense.bias": r(d), "cls.predictions.transform.LayerNorm.weight": 1 + r(d),
                   "cls.predictions.transform.LayerNorm.bias": r(d)})
    else:
        sd.update({"classifier.weight": r(3, d), "classifier.bias": r(3)})
    return sd


def bigs_reference(sd: dict, ids: torch.Tensor, prefix="bigs.", eps=1e-12):
    """BiGS's forward (jxiw/BiGS, modeling_bigs.py) on state dict ``sd``, float64, the S4D
    convolution as a direct sum: (hidden states, logits)."""
    w = {k[len(prefix):] if k.startswith(prefix) else k: v.double() for k, v in sd.items()}
    lin = lambda x, n: x @ w[n + ".weight"].T + w[n + ".bias"]  # noqa: E731
    ln = lambda x, n: F.layer_norm(x, x.shape[-1:], w[n + ".weight"], w[n + ".bias"], eps)  # noqa: E731
    L = ids.shape[1]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][0] \
        + w["embeddings.position_embeddings.weight"][:L]
    x = ln(x, "embeddings.LayerNorm")
    states = [x]

    def s4(u, p):  # u: [b, L, d]
        dt = torch.exp(w[p + ".kernel.log_step"])
        A = torch.clamp(w[p + ".kernel.A_re"], max=-1e-4) + 1j * w[p + ".kernel.A_im"]
        C = w[p + ".kernel.C"][:, 0] + 1j * w[p + ".kernel.C"][:, 1]
        K = torch.stack([(C * (torch.exp(dt * A) - 1) / A * torch.exp(dt * A * l)).sum().real for l in range(L)])
        y = torch.stack([sum(K[t - s] * u[:, s] for s in range(t + 1)) for t in range(L)], 1)
        return y + u * w[p + ".D"]

    for i in range(sum(k.endswith(".LayerNorm.weight") and k.startswith("encoder.") for k in w)):
        p = f"encoder.layer.{i}."
        h = ln(x, p + "LayerNorm")
        v = F.gelu(lin(h, p + "dv"))
        uf, ub = F.gelu(lin(h, p + "du_forward")), F.gelu(lin(h.flip(1), p + "du_backward"))
        yf, yb = lin(s4(uf, p + "fs4"), p + "duc_forward"), lin(s4(ub, p + "bs4"), p + "duc_backward").flip(1)
        x = x + lin(F.gelu(lin(yf * yb, p + "dol")) * v, p + "do")
        states.append(x)
    logits = None
    if "cls.predictions.decoder.weight" in w:
        t = ln(F.gelu(lin(x, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
        logits = t @ w["cls.predictions.decoder.weight"].T + w["cls.predictions.bias"]
    return states, logits


def reference_kernel(sd, p, L):
    dt = torch.exp(sd[p + ".kernel.log_step"].double())
    A = torch.clamp(sd[p + ".kernel.A_re"].double(), max=-1e-4) + 1j * sd[p + ".kernel.A_im"].double()
    C = sd[p + ".kernel.C"].double()
    C = C[:, 0] + 1j * C[:, 1]
    return torch.stack([(C * (torch.exp(dt * A) - 1) / A * torch.exp(dt * A * l)).sum().real for l in range(L)])


def write(tmp_path, sd, suffix=".pth", cfg=CFG):
    path = tmp_path / f"bigs{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "config.yaml"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_bigs_state_dict_loads_and_computes_bigs(suffix, tmp_path):
    sd = bigs_state_dict()
    model, tok = load_checkpoint(*write(tmp_path, sd, suffix))
    assert tok is None and type(model).__name__ == "CodeSSMForMaskedLM" and model.config.position_embeddings
    ids = torch.randint(1, CFG["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    want_states, want_logits = bigs_reference(sd, ids)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == CFG["num_hidden_layers"] + 1
    for got, want in zip(out.hidden_states, want_states):
        assert torch.allclose(got.double(), want, atol=1e-4), (got.double() - want).abs().max()
    assert torch.allclose(out.logits.double(), want_logits, atol=1e-4)
    K = model.kernels(30)                                               # [layers, 2, 1, 30]
    for i in range(CFG["num_hidden_layers"]):
        for j, s4 in enumerate(("fs4", "bs4")):
            assert torch.allclose(K[i, j, 0].double(), reference_kernel(sd, f"bigs.encoder.layer.{i}.{s4}", 30), atol=1e-5)


def test_the_sqa_prefix_and_a_task_head_load_the_encoder_only(tmp_path):
    sd = bigs_state_dict(prefix="bigs.bigs.", head="classifier")
    sd = {("bigs." + k if k.startswith("classifier.") else k): v for k, v in sd.items()}
    model, _ = load_checkpoint(*write(tmp_path, sd))
    assert model.lm_head is None and set(model.task_head_state) == {"classifier.weight", "classifier.bias"}
    ids = torch.randint(1, CFG["vocab_size"], (1, 7), generator=torch.Generator().manual_seed(2))
    want, _ = bigs_reference(sd, ids, prefix="bigs.bigs.")
    with torch.no_grad():
        got = model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.allclose(a.double(), b, atol=1e-4) for a, b in zip(got, want))
    with pytest.raises(ValueError, match="no masked-LM head"):
        model(input_ids=ids)


def test_padding_never_enters_a_loaded_bigs(tmp_path):
    """The one deviation: reversing within the real length. Each padded row equals BiGS on the
    row alone."""
    sd = bigs_state_dict(seed=3)
    model, _ = load_checkpoint(*write(tmp_path, sd))
    ids = torch.randint(1, CFG["vocab_size"], (2, 8), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        last = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    alone, _ = bigs_reference(sd, ids[1:, :5])
    assert torch.allclose(last[1, :5].double(), alone[-1][0], atol=1e-4)


def test_bad_bigs_inputs_are_clear_errors(tmp_path):
    sd = bigs_state_dict()
    missing = {k: v for k, v in sd.items() if k != "bigs.encoder.layer.1.dol.weight"}
    with pytest.raises(ValueError, match=r"missing \['codessm.layers.1.dol.weight'\]"):
        load_checkpoint(*write(tmp_path, missing))
    with pytest.raises(ValueError, match=r"unexpected \['bigs.encoder.layer.0.extra.weight'\]"):
        load_checkpoint(*write(tmp_path, {**sd, "bigs.encoder.layer.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match="word_embeddings.weight.*check vocab_size"):
        load_checkpoint(*write(tmp_path, sd, cfg={**CFG, "vocab_size": 51}))
    with pytest.raises(ValueError, match="num_hidden_layers=3.*the file has 2 layers.*missing.*codessm.layers.2"):
        load_checkpoint(*write(tmp_path, sd, cfg={**CFG, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match="check num_ssm"):
        load_checkpoint(*write(tmp_path, sd, cfg={**CFG, "num_ssm": 8}))
    path, config = write(tmp_path, sd)
    with pytest.raises(ValueError, match="needs its config"):
        load_checkpoint(path)
    other = tmp_path / "weights.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match="unknown checkpoint format '.txt'"):
        load_checkpoint(other, config)
    torch.save({"w": torch.zeros(1), "code": ValueError("a pickled object")}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(tmp_path / "pickle.pth", config)
    with pytest.raises(ValueError, match="not a BiGS state dict"):
        load_checkpoint(*write(tmp_path, {"w": torch.zeros(1)}))
    path, config = write(tmp_path, sd)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="not a YAML mapping"):
        load_checkpoint(path, tmp_path / "list.yaml")
    bad_bias = {**sd, "cls.predictions.decoder.bias": sd["cls.predictions.bias"] + 1}
    with pytest.raises(ValueError, match="differ"):
        load_checkpoint(*write(tmp_path, bad_bias))
    with pytest.raises(FileNotFoundError, match="not a model checkpoint"):
        load_checkpoint(tmp_path / "nowhere.pth", config)


def _bpe_tokenizer(out):
    """A byte-level BPE tokenizer in RoBERTa's format (vocab.json, merges.txt), saved to ``out``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["def add(a, b):\n    return a + b\n", "x = foo(bar) * 2"] * 20, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    out.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(out))
    tok = RobertaTokenizerFast.from_pretrained(str(out))  # from vocab.json and merges.txt
    tok.save_pretrained(out)
    return tok


def test_a_roformer_loads_as_rocoder_with_identical_hidden_states_and_a_bpe_tokenizer_aligns(tmp_path):
    from transformers import RoFormerConfig, RoFormerForMaskedLM

    from analysis.data import align_subwords
    from analysis.data.parse import parse_function
    torch.manual_seed(0)
    ref = RoFormerForMaskedLM(RoFormerConfig(vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=32, max_position_embeddings=64)).eval()
    ref.save_pretrained(tmp_path / "rof")
    _bpe_tokenizer(tmp_path / "tok")
    model, tok = load_checkpoint(tmp_path / "rof", tokenizer=tmp_path / "tok")
    assert type(model).__name__ == "RoCoderForMaskedLM"
    code = "def add(a, b):\n    return a + b\n"
    enc = tok([code], return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        want = ref(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states
        got = model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))
    parsed = parse_function(code)
    groups = align_subwords(parsed, enc["offset_mapping"][0].tolist())
    spans = enc["offset_mapping"][0].tolist()
    assert tok.convert_ids_to_tokens(enc["input_ids"][0].tolist()).count("):") == 1  # one subword, two code tokens
    for t, g in zip(parsed.tokens, groups):  # the token's subwords cover exactly its characters, and only they overlap it
        assert g and min(spans[k][0] for k in g) <= t.start_char and max(spans[k][1] for k in g) >= t.end_char
        assert all((s < t.end_char and e > t.start_char) == (k in g) for k, (s, e) in enumerate(spans) if e > s)


def test_any_hf_encoder_loads_strictly_for_probing(tmp_path):
    from transformers import RobertaConfig, RobertaModel
    torch.manual_seed(0)
    ref = RobertaModel(RobertaConfig(vocab_size=80, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=40)).eval()
    ref.save_pretrained(tmp_path)
    _bpe_tokenizer(tmp_path)
    model, tok = load_checkpoint(tmp_path)
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, ref(ids).last_hidden_state)
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint(tmp_path, config={"vocab_size": 3})


def test_the_authors_checkpoints_stand_in_for_pretraining_and_fine_tuning(tmp_path, cache_dir):
    """Under a profile naming the authors' files, ``pretrained`` and ``finetuned`` give them,
    converted once into checkpoint directories keyed and named by the files' sha256; with
    ``external_only`` an encoder nobody gave is an error naming the field, never a training run."""
    from transformers import RoFormerConfig, RoFormerForTokenClassification

    from analysis import checkpoints, config
    tok_dir = tmp_path / "tok"
    _bpe_tokenizer(tok_dir)
    cfg_bigs = {**CFG, "vocab_size": 300}
    path, yaml_path = write(tmp_path, bigs_state_dict(cfg_bigs, seed=5), cfg=cfg_bigs)
    typed = tmp_path / "types"
    typed.mkdir()
    typed_path, _ = write(typed, bigs_state_dict(cfg_bigs, seed=6, head="classifier"), ".safetensors", cfg=cfg_bigs)
    RoFormerForTokenClassification(RoFormerConfig(vocab_size=300, hidden_size=16, num_hidden_layers=2,
                                                  num_attention_heads=2, intermediate_size=32,
                                                  num_labels=3)).save_pretrained(tmp_path / "rocoder_types")
    cfg = config.profile("smoke", authors_codessm=str(path), authors_codessm_types=str(typed_path),
                         authors_codessm_config=str(yaml_path), authors_tokenizer=str(tok_dir),
                         authors_rocoder_types=str(tmp_path / "rocoder_types"), external_only=True)
    pre = checkpoints.pretrained("codessm", cfg)
    assert checkpoints.checkpoint_hash("codessm", cfg) == "external:" + checkpoints.files_hash(path)
    assert checkpoints.checkpoint_hash("codessm", cfg, "types") == "external:" + checkpoints.files_hash(typed_path)
    ids = torch.randint(1, 300, (1, 6), generator=torch.Generator().manual_seed(0))
    direct, _ = load_checkpoint(path, yaml_path)
    converted, tok = load_checkpoint(pre)
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, direct(input_ids=ids).logits)
    assert tok("def f(): pass")["input_ids"][0] == 0
    types = load_checkpoint(checkpoints.finetuned("codessm", "types", cfg))[0]
    assert types.lm_head is None and types.kernels(8).shape == (2, 2, 1, 8)
    rocoder = load_checkpoint(checkpoints.finetuned("rocoder", "types", cfg))[0]
    assert type(rocoder).__name__ == "RoCoderModel"
    with pytest.raises(ValueError, match="-p authors_rocoder PATH"):
        checkpoints.pretrained("rocoder", cfg)
    with pytest.raises(ValueError, match="bimamba.*the authors published none"):
        checkpoints.pretrained("bimamba", cfg)


def _codesearchnet_of_this_package(path):
    """A CodeSearchNet-format jsonl of the functions of the ``analysis`` package's own source:
    real Python, in the format the authors probed (CodeSearchNet Python), written by the test."""
    import json
    from collections import Counter
    from pathlib import Path

    import analysis
    from analysis.data.extract import functions_in_file
    rows = []
    for file in sorted(Path(analysis.__file__).parent.rglob("*.py")):
        for fn in functions_in_file(file.read_bytes(), file.name, "analysis", "", "MIT", Counter(), 10**6):
            if "." not in fn.qualname:
                rows.append({"code": fn.code, "docstring": fn.docstring, "func_name": fn.qualname,
                             "repo": "analysis", "path": file.name, "sha": "0" * 12, "license": "MIT"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_chapters_run_under_the_authors_profile_on_tiny_checkpoints(tmp_path, cache_dir, monkeypatch):
    """Chapters 02 to 06 run under ``authors`` on checkpoints in the authors' layout (CodeSSM and
    RoCoder, pretrained and fine-tuned on SQA and type inference), their tokenizer and a
    CodeSearchNet file, training nothing: 03 probes the given layers, 04 measures forgetting
    between the given checkpoints and says that the rest does not apply, 05 reads their kernels,
    02 and 06 say what does not apply. The profile's sizes are cut to a test's (the paper's
    sizes are the authors' models' business); the models, layout and flow are the authors'."""
    import json
    import shutil

    from transformers import RoFormerConfig, RoFormerForMaskedLM, RoFormerForTokenClassification

    from analysis import book
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(tmp_path / "run"))
    _bpe_tokenizer(tmp_path / "tok")
    cfg_bigs = {**CFG, "vocab_size": 300, "position_embedding_type": "none"}
    files = {}
    for k, (name, head) in enumerate([("codessm", "mlm"), ("codessm_sqa", "classifier"), ("codessm_types", "classifier")]):
        (tmp_path / name).mkdir()
        files[name], files["codessm_config"] = write(tmp_path / name, bigs_state_dict(cfg_bigs, seed=7 + k, head=head),
                                                     cfg=cfg_bigs)
    rof = dict(vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    for k, name in enumerate(["rocoder", "rocoder_sqa", "rocoder_types"]):
        torch.manual_seed(k)
        model = RoFormerForMaskedLM(RoFormerConfig(**rof)) if k == 0 else \
            RoFormerForTokenClassification(RoFormerConfig(**rof, num_labels=3))
        model.save_pretrained(tmp_path / name)
        files[name] = tmp_path / name
    src = tmp_path / "book"
    src.mkdir()
    chapters = ["02_pretraining", "03_probing", "04_finetuning", "05_ssm_interpret", "06_modifications"]
    for name in chapters:
        shutil.copy(book.BOOK / f"{name}.md", src)
    overrides = {**{f"authors_{k}": str(v) for k, v in files.items()}, "authors_tokenizer": str(tmp_path / "tok"),
                 "corpus": "codesearchnet:" + str(_codesearchnet_of_this_package(tmp_path / "csn.jsonl")),
                 "probe_layers": (1, 2), "probe_functions_distance": 40, "probe_functions_siblings": 30,
                 "probe_functions_dfg": 30, "probe_pairs_per_class": 40, "probe_pairs_per_class_siblings": 40,
                 "probe_pairs_per_class_dfg": 40, "probe_max_tokens": 150, "probe_max_train_points": 200,
                 "probe_sweep_points": (50, 100)}
    book.run("authors", overrides=overrides, book=src, out_dir=src)
    text = {name: (src / f"{name}.ipynb").read_text() for name in chapters}
    assert "does not apply to profile `authors`" in text["02_pretraining"] and "external:" in text["02_pretraining"]
    assert "does not apply to profile `authors`" in text["06_modifications"]
    assert "Only the forgetting section (claim C2) applies to profile `authors`" in text["04_finetuning"]
    for name in ("03_probing", "04_finetuning", "05_ssm_interpret"):
        assert "Verdict on C" in text[name] and "Traceback" not in text[name]
    ledger_rows = [json.loads(p.read_text()) for p in (tmp_path / "run" / "ledger").glob("*.json")]
    assert {r["claim"] for r in ledger_rows} >= {"C1", "C2", "C3"} and {r["profile"] for r in ledger_rows} == {"authors"}


def test_the_authors_tokenizer_counts_the_subwords_of_the_probe_context(tmp_path, cache_dir):
    """With ``authors_tokenizer`` every subword count of the book (the probe functions that fit
    the context, the held-out loss) is that tokenizer's, keyed by its files; a path that is not a
    tokenizer directory is a clear error."""
    from analysis import config
    from analysis.data import load_tokenizer
    from analysis.data.sources import files_hash
    from analysis.data.tokenizer import tokenizer_key
    ref = _bpe_tokenizer(tmp_path / "tok")
    cfg = config.profile("smoke", authors_tokenizer=str(tmp_path / "tok"))
    tok, code = load_tokenizer(cfg), "def add(a, b):\n    return foo(a) + b\n"
    assert len(tok) == len(ref) != cfg.vocab_size and tok(code)["input_ids"] == ref(code)["input_ids"]
    assert tokenizer_key(cfg) == {"tokenizer": "external:" + files_hash(tmp_path / "tok")}
    with pytest.raises(ValueError, match="authors_tokenizer .* is not a directory"):
        load_tokenizer(config.profile("smoke", authors_tokenizer=str(tmp_path / "missing")))
