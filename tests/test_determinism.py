"""One cache key, one set of weights: a training run gives the same bits in the calling process
at 2 threads, in a one-thread pool worker beside another job, and in a process started with
OMP_NUM_THREADS=1 (``workers.single_threaded``). Without it the 2-thread run differs after a
few steps of this tiny model (its matrix products and reductions split by the thread count)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis import checkpoints, config, workers
from analysis.data import finetune_dataset, load_tokenizer
from analysis.data.sources import sha256_of
from analysis.finetune import train_task
from analysis.train import pretrain_into

ROOT = Path(__file__).resolve().parents[1]
TINY = config.profile("smoke").replace(pretrain_steps=4, log_every=2, warmup_steps=1, d_model=16, n_layers=1,
                                       d_state=8, n_heads=2, mamba_d_state=4, finetune_steps=3)


def _train(out: str) -> dict:
    """A tiny CodeSSM pretraining and a tiny fine-tuning (search, from its random init) into
    ``out``: the sha256 of each one's model.safetensors, and this process's threads after."""
    out = Path(out)
    pretrain_into("codessm", TINY, out / "pretrained", None, valid_texts=[])
    net, tokenizer = checkpoints.random("codessm", TINY)
    train_task(net, tokenizer, "search", TINY, 0, out / "finetuned", None)
    return {"pretrained": sha256_of(out / "pretrained" / "model.safetensors"),
            "finetuned": sha256_of(out / "finetuned" / "model.safetensors"), "threads": torch.get_num_threads()}


@pytest.fixture(scope="module")
def three_ways(tmp_path_factory):
    """{way: _train's result} for the three ways of running the same training."""
    tmp = tmp_path_factory.mktemp("determinism")
    load_tokenizer(TINY), finetune_dataset(TINY, "search")  # shared data first, as pretrain_many does
    out = {}
    torch.set_num_threads(2)
    try:
        out["in-process, 2 threads"] = _train(str(tmp / "here"))
    finally:
        torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:  # a fresh pool, shut down after
        mp.setattr(workers, "_POOL", {"pool": None, "workers": 0, "atexit": True, "context": None})
        try:
            jobs = [(_train, (str(tmp / f"worker{k}"),)) for k in range(2)]  # two jobs side by side
            for k, res in enumerate(workers.run_jobs(jobs, "training", progress=False, workers=2)):
                out[f"worker {k}, 1 thread"] = res
        finally:
            if workers._POOL["pool"] is not None:
                workers._POOL["pool"].shutdown()
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    code = f"import json, test_determinism as t; print(json.dumps(t._train({str(tmp / 'omp1')!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out["OMP_NUM_THREADS=1"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.slow
def test_pretraining_gives_the_same_bits_however_it_is_scheduled(three_ways):
    assert len({r["pretrained"] for r in three_ways.values()}) == 1, three_ways
    assert three_ways["in-process, 2 threads"]["threads"] == 2  # the caller's threads restored


@pytest.mark.slow
def test_fine_tuning_gives_the_same_bits_however_it_is_scheduled(three_ways):
    assert len({r["finetuned"] for r in three_ways.values()}) == 1, three_ways


LEDGERS_ENV = "REPRODUCE_LEDGERS"  # "run dir a,run dir b": set by `make reproducible`


@pytest.mark.skipif(not os.environ.get(LEDGERS_ENV), reason=f"compares two book runs: {LEDGERS_ENV}=dir_a,dir_b")
def test_two_builds_of_the_book_write_the_same_ledger():
    """Every ledger record (numbers, intervals, verdicts, notes) of one book run equals the other's:
    `make reproducible` builds the smoke book into two empty caches, with ANALYSIS_WORKERS=1 and 2."""
    a, b = (Path(p) / "ledger" for p in os.environ[LEDGERS_ENV].split(","))
    names = sorted(p.name for p in a.glob("*.json"))
    assert names and names == sorted(p.name for p in b.glob("*.json")), (a, b)
    differ = {}
    for name in names:
        ra, rb = (json.loads((d / name).read_text()) for d in (a, b))
        differ.update({f"{name}: {k}": (ra.get(k), rb.get(k)) for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k)})
    assert not differ, differ


def test_single_threaded_fixes_threads_and_kernels_within_and_restores_them():
    torch.set_num_threads(2)
    try:
        with workers.single_threaded():
            assert torch.get_num_threads() == 1
            assert torch.are_deterministic_algorithms_enabled() == (not torch.cuda.is_available())
            with workers.single_threaded():  # nests
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
        with pytest.raises(KeyError):  # restored on an error too
            with workers.single_threaded():
                raise KeyError("x")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
