"""``python -m analysis.bench paper-shapes`` and ``gpu`` on tiny shapes: the numbers are consistent."""
import math

import pytest
import torch

from analysis import bench
from analysis.bench.__main__ import main as bench_main
from analysis.config import profile
from analysis.models import build, trainable_parameters

TINY = profile("smoke", max_length=24, vocab_size=300, d_model=16, n_layers=2, d_state=8, n_heads=2,
               mamba_d_state=4, batch_size=16)
MODELS = ("codessm", "rocoder", "bimamba")


@pytest.fixture(scope="module")
def rows():
    return bench.paper_shapes(TINY, MODELS, batch=1, threads=1)


def test_parameters_are_the_models(rows):
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert r["parameters"] == trainable_parameters(build(r["model"], TINY, TINY.vocab_size)), r["model"]


def test_activation_memory_is_affine_in_the_batch_and_predicts_a_third_size(rows):
    """Measured at 1 and 2 sequences, the estimate at 3 equals the bytes saved at 3, exactly;
    per sequence it holds at least the log-probabilities cross-entropy keeps at the masked
    positions ([masked, vocab] float32: the head runs only there)."""
    for r in rows:
        model = build(r["model"], TINY, TINY.vocab_size).train()
        at3 = bench.saved_activations(model, bench.mlm_batch(TINY, 3, TINY.max_length))
        assert at3["bytes"] == bench.activation_bytes(r, 3), r["model"]
        masked = bench.masked_per_sequence(TINY, TINY.max_length)
        assert r["act_per_seq"] >= 4 * masked * TINY.vocab_size, r["model"]
        assert bench.gpu_bytes(r, 64) - bench.gpu_bytes(r, 32) == 32 * r["act_per_seq"]
        assert bench.gpu_bytes(r, 0) == 16 * r["parameters"] + r["act_fixed"]


def test_the_untrained_loss_is_that_of_uniform_guessing(rows):
    """Initialised with small weights, every model predicts nearly uniformly: loss ~ ln(vocab)."""
    for r in rows:
        assert abs(r["loss"] - math.log(TINY.vocab_size)) < 0.1, r
        assert r["step_s"] > 0 and r["forward_s"] > 0


def test_bf16_autocast_saves_fewer_bytes(rows):
    (bf16,) = bench.paper_shapes(TINY, ("rocoder",), batch=1, precision="bf16", threads=1)
    (fp32,) = [r for r in rows if r["model"] == "rocoder"]
    assert bf16["parameters"] == fp32["parameters"]
    assert bf16["act_per_seq"] < fp32["act_per_seq"]


def test_smallest_gpu():
    assert bench.smallest_gpu(16 * 2 ** 30) == "16 GiB"
    assert bench.smallest_gpu(16 * 2 ** 30 + 1) == "24 GiB"
    assert bench.smallest_gpu(81 * 2 ** 30) == "> 80 GiB"


def test_paper_shapes_command_prints_every_model(capsys):
    assert bench_main(["paper-shapes", "--profile", "smoke", "--models", "rocoder", "bimamba",
                       "--threads", "1", "--precision", "no"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    cfg = profile("smoke")
    for name in ("rocoder", "bimamba"):
        millions = trainable_parameters(build(name, cfg, cfg.vocab_size)) / 1e6
        assert lines[name].split()[1] == f"{millions:.1f}M"
    assert bench_main(["paper-shapes", "--profile", "smoke", "--batch", "0"]) == 2
    assert "batch and threads must be >= 1" in capsys.readouterr().err


def test_gpu_check_skips_here_naming_what_is_missing(capsys):
    assert not torch.cuda.is_available()
    assert bench_main(["gpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("python -m analysis.bench gpu: skipped, this machine cannot run the GPU check:")
    assert "torch.cuda.is_available() is False" in out and "mamba_ssm not importable" in out


def test_gpu_missing_names_only_what_is_missing(monkeypatch):
    from test_gpu_paths import install_fake

    install_fake(monkeypatch)
    assert [m.split(" (")[0] for m in bench.gpu_missing()] == ["torch.cuda.is_available() is False"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.gpu_missing() == []


def test_gpu_scan_check_compares_the_dispatch_with_the_cpu_path(monkeypatch):
    """Through the fake mamba_ssm (which returns the CPU path's result) the errors are exactly 0."""
    from test_gpu_paths import install_fake

    record = install_fake(monkeypatch)
    cfg = profile("smoke", d_model=8, mamba_d_state=4, max_length=16)
    res = bench.gpu_scan_check(cfg, batch=2, repeats=2, device="cpu")
    assert len(record["calls"]) == 3 and record["calls"][0]["u"].shape == (2, 16, 16)
    assert res["shape"] == (2, 16, 4, 16) and res["ok"]
    assert set(res["errors"]) == {"y", *(f"d{k}" for k in bench.SCAN_INPUTS)}
    assert all(v == 0.0 for v in res["errors"].values())



def test_pretrain_benchmark_counts_real_tokens_and_compares_the_modes():
    """``bench pretrain`` on injected texts: packed rows carry batch x length real tokens; the
    padded and bucketed batches hold functions, their real tokens summed over a whole epoch
    equal; the first mode's speed-up is 1 exactly; every rate is positive."""
    from test_train import TEXTS, _tiny_tokenizer

    cfg = profile("smoke", max_length=16, batch_size=4, d_model=16, n_layers=1, d_state=8, n_heads=2,
                  mamba_d_state=4)
    tok = _tiny_tokenizer(TEXTS)
    texts = TEXTS[:12]  # 3 batches of 4: the warm-up batch and 2 timed ones
    rows = bench.pretrain_benchmark(cfg, ("codessm", "rocoder"), steps=2, threads=1, texts=texts, tokenizer=tok)
    assert [(r["model"], r["mode"]) for r in rows] == [(m, mode) for m in ("codessm", "rocoder")
                                                       for mode in bench.PRETRAIN_MODES]
    layouts = bench.pretrain_batches(cfg, 3, texts, tok)
    total = sum(len(ids) for ids in tok(texts, truncation=True, max_length=16)["input_ids"])
    assert sum(int(m.sum()) for _, m, _ in layouts["padded"]) == sum(int(m.sum()) for _, m, _ in layouts["bucketed"]) == total
    assert sum(m.numel() for _, m, _ in layouts["bucketed"]) <= sum(m.numel() for _, m, _ in layouts["padded"])
    for r in rows:
        if r["mode"].startswith("packed"):
            assert r["tokens_per_step"] == 4 * 16
        assert r["step_s"] > 0 and r["tokens_per_s"] > 0
    assert all(r["speedup"] == 1.0 for r in rows if r["mode"] == bench.PRETRAIN_MODES[0])


def test_directprobe_comparison_finds_both_paths_identical(capsys):
    """``bench directprobe`` on a small size: both paths, identical clusters and predictions,
    every time positive; mismatched size lists are a clear error."""
    row = bench.directprobe_comparison(n=150, dim=12, labels=3, flip=0.1)
    assert row["same_clusters"] and row["same_predictions"] and row["clusters"] == row["ref_clusters"] >= 3
    assert row["test"] == 37 and min(row["fit_s"], row["ref_fit_s"], row["predict_s"], row["ref_predict_s"]) > 0
    assert row["speedup"] == pytest.approx(row["ref_total_s"] / row["total_s"])
    assert bench_main(["directprobe", "--n", "60", "--dim", "6", "--labels", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "n" and out[2].split()[:3] == ["60", "6", "2"] and out[2].split()[-2:] == ["True", "True"]
    assert bench_main(["directprobe", "--n", "60", "90", "--dim", "6", "--labels", "2"]) == 2
    assert "one value per size" in capsys.readouterr().err
