"""The training loop: masking, schedule, resuming, and real learning on the smoke profile."""
import itertools
import os
from pathlib import Path

import pytest
import torch

from analysis import config
from analysis import checkpoints
from analysis.train import Batches, linear_schedule, mask_tokens, padded, windows


def test_masking_follows_bert_proportions():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 256))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    inputs, labels = mask_tokens(ids, special, mask_id=4, vocab=100, prob=0.15, gen=gen)
    chosen = labels != -100
    assert not chosen[:, 0].any()                               # specials never masked
    assert abs(chosen.float().mean().item() - 0.15 * 255 / 256) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 4) & chosen
    assert abs(masked.sum().item() / chosen.sum().item() - 0.8) < 0.03
    kept = (inputs == ids) & chosen
    assert 0.07 < kept.sum().item() / chosen.sum().item() < 0.14  # 10% unchanged (+ random hits)
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_schedule_warms_up_then_decays():
    f = linear_schedule(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0


def test_batches_are_seeded_and_skippable():
    seqs = [[i + 5] * (i % 7 + 1) for i in range(50)]
    a, b = Batches(seqs, 4, 1, padded(0)), Batches(seqs, 4, 1, padded(0))
    first = [next(a) for _ in range(20)]
    b.skip(13)
    assert torch.equal(next(b)[0], first[13][0])
    ids, mask = first[0]
    assert ((ids != 0) == (mask == 1)).all()


def test_bucketed_batches_fill_a_token_budget_with_similar_lengths():
    """Items of lengths 1..40 in batches of 4 (budget T = 4 x 40 = 160 tokens), one bucket of
    all 40: sorted, then cut greedily while (items x longest) <= 160, worked by hand:
    1-12 (12 x 12 = 144; 13 x 13 > 160), 13-20 (8 x 20 = 160), 21-26 (6 x 26 = 156), 27-31
    (155), 32-35 (140), 36-39 (156), 40. One epoch holds each batch once, in a shuffled order."""
    lengths = list(range(1, 41))
    b = Batches(lengths, 4, 3, lengths=lengths, bucket=10)
    epoch = [next(b) for _ in range(7)]
    want = [list(range(1, 13)), list(range(13, 21)), list(range(21, 27)), list(range(27, 32)),
            list(range(32, 36)), list(range(36, 40)), [40]]
    assert sorted(sorted(batch) for batch in epoch) == want
    assert sorted(sorted(batch) for batch in (next(b) for _ in range(7))) == want  # the next epoch too
    assert [sorted(batch) for batch in epoch] != want  # not in length order
    with pytest.raises(ValueError, match="lengths must be 40 positive numbers"):
        Batches(lengths, 4, 3, lengths=[1, 2, 3])


def test_bucketed_batches_resume_exactly():
    items = [[1] * (k % 13 + 1) for k in range(50)]
    a = Batches(items, 3, 7, padded(0), lengths=[len(x) for x in items], bucket=4)
    seen = [next(a)[0] for _ in range(40)]
    b = Batches(items, 3, 7, padded(0), lengths=[len(x) for x in items], bucket=4)
    for _ in range(5):
        next(b)
    c = Batches(items, 3, 7, padded(0), lengths=[len(x) for x in items], bucket=4)
    c.restore(b.state())
    assert all(torch.equal(next(c)[0], s) for s in seen[5:])


def test_windows_cover_each_function_once_in_order():
    """<s> 10..16 </s> in windows of 5 (3 tokens each): 10 11 12 | 13 14 15 | 16, each wrapped."""
    out = windows([[1, *range(10, 17), 2], [1, 20, 2]], 5, bos=1, eos=2)
    assert out == [[1, 10, 11, 12, 2], [1, 13, 14, 15, 2], [1, 16, 2], [1, 20, 2]]
    assert all(len(w) <= 5 for w in out)
    with pytest.raises(ValueError, match="length >= 3"):
        windows([[1, 2]], 2, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["codessm", "rocoder", "bimamba"])
def test_smoke_pretraining_beats_the_unigram_baseline(name):
    """Uses the shared artifact cache: the smoke chapters reuse these checkpoints."""
    from analysis.checkpoints import pretraining_meta
    meta = pretraining_meta(name, config.profile("smoke"))
    assert meta["valid_mlm_loss"] < meta["unigram_entropy"] - 0.1, meta


def _tiny_tokenizer(texts):
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(tm.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=80, special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"]))
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   bos_token="<s>", eos_token="</s>")


TEXTS = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]


def test_interrupted_pretraining_resumes(cache_dir, monkeypatch):
    from analysis.checkpoints import pretrained as pretrain
    from analysis import cache
    from analysis.train import PRETRAIN_VERSION, pretrain_key

    texts, tok = TEXTS, _tiny_tokenizer(TEXTS)
    cfg = config.profile("smoke", pretrain_steps=120, log_every=10)
    import analysis.train as train
    original, calls = train.mask_tokens, {"n": 0}

    def crash_at_step_105(*args, **kwargs):  # the process dies after the step-100 checkpoint
        calls["n"] += 1
        if calls["n"] == 105:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "mask_tokens", crash_at_step_105)
    with pytest.raises(KeyboardInterrupt):
        pretrain("codessm", cfg, texts=texts, tokenizer=tok, valid_texts=texts[:4])
    assert not cache.is_cached("pretrain", {**pretrain_key("codessm", cfg)}, PRETRAIN_VERSION)
    calls["n"] = 1000
    path = pretrain("codessm", cfg, texts=texts, tokenizer=tok, valid_texts=texts[:4])
    assert calls["n"] - 1000 <= 20 + 2  # 20 remaining steps (+ the validation batch), not 120
    log = __import__("pandas").read_csv(path / "log.csv")
    assert log["step"].tolist() == list(range(10, 121, 10))


def _weights(path):
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("name", ["codessm", "rocoder"])
def test_a_resumed_pretraining_is_bit_for_bit_the_uninterrupted_one(cache_dir, tmp_path, monkeypatch, name):
    """Killed after a scratch state exists (step 14; states every 7 steps, logs every 5: the
    loss window is mid-way), resumed: the weights and the logged losses equal those of a run
    never interrupted. Dropout is on (torch's global RNG); masking draws from its own generator;
    40 texts in batches of 16 reshuffle every 2 batches (the batch order's generator)."""
    import pandas as pd

    import analysis.train as train

    monkeypatch.setattr(train, "CHECKPOINT_EVERY", 7)
    tok = _tiny_tokenizer(TEXTS)
    cfg = config.profile("smoke", pretrain_steps=30, log_every=5, dropout=0.1, warmup_steps=5)
    original, calls = train.mask_tokens, {"n": 0}

    def crash_at_step_17(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 17:
            raise RuntimeError("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "mask_tokens", crash_at_step_17)
    with pytest.raises(RuntimeError, match="killed"):
        checkpoints.pretrained(name, cfg, texts=TEXTS, tokenizer=tok, valid_texts=TEXTS[:4])
    assert len(list(cache_dir.glob("pretrain/.*.scratch/state.pt"))) == 1
    resumed = checkpoints.pretrained(name, cfg, texts=TEXTS, tokenizer=tok, valid_texts=TEXTS[:4])
    assert calls["n"] == 16 + 1 + (30 - 14) + 1  # resumed at step 14 (+ the validation batch)
    assert not list(cache_dir.glob("pretrain/.*.scratch"))  # removed once complete

    monkeypatch.setenv("ANALYSIS_CACHE", str(tmp_path / "fresh"))
    monkeypatch.setattr(train, "mask_tokens", original)
    whole = checkpoints.pretrained(name, cfg, texts=TEXTS, tokenizer=tok, valid_texts=TEXTS[:4])
    a, b = _weights(resumed), _weights(whole)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = pd.read_csv(resumed / "log.csv"), pd.read_csv(whole / "log.csv")
    assert la["step"].tolist() == list(range(5, 31, 5))
    assert la["loss"].tolist() == lb["loss"].tolist()


def test_sequence_batches_state_round_trips_through_a_weights_only_load(tmp_path):
    seqs = [[i + 5] * (i % 7 + 1) for i in range(50)]
    a = Batches(seqs, 4, 1, padded(0))
    for _ in range(17):  # into the second epoch
        next(a)
    torch.save(a.state(), tmp_path / "b.pt")
    b = Batches(seqs, 4, 99, padded(0))
    b.restore(torch.load(tmp_path / "b.pt", weights_only=True))
    for _ in range(30):  # across two more reshuffles
        assert torch.equal(next(a)[0], next(b)[0])
    with pytest.raises(ValueError, match="for 50 items in batches of 4, not 50 in batches of 5"):
        Batches(seqs, 5, 1, padded(0)).restore(a.state())


def test_sequence_batches_collate_examples_as_they_are():
    examples = [{"q": i} for i in range(6)]
    batches = Batches(examples, 3, seed=0)
    seen = [next(batches) for _ in range(2)]
    assert sorted(e["q"] for batch in seen for e in batch) == list(range(6))  # one epoch, each once
    with pytest.raises(ValueError, match="no training items"):
        Batches([], 1, seed=0)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Batches([[1]], 0, 0, padded(0))


def _linear_run(steps=6, lr=0.1, state_dir=None, loss=None):
    from analysis.train import fit
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.ones(4, 3), torch.zeros(4, 1)
    loss = loss or (lambda m, batch: ((m(batch[0]) - batch[1]) ** 2).mean())
    log = fit(model, itertools.repeat((x, y)), loss, steps, lr, 0.0, 1, state_dir, log_every=1)
    return model, log


def test_a_non_finite_loss_stops_training_naming_the_step_and_learning_rate():
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step 2 of 6 \(learning rate inf"):
        _linear_run(lr=float("inf"))
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 1 of 6 \(learning rate 0.1"):
        _linear_run(loss=lambda m, batch: m(batch[0]).sum() * float("nan"))


def test_a_diverged_pretraining_caches_nothing(cache_dir, monkeypatch):
    import analysis.train as train

    monkeypatch.setattr(train, "linear_schedule", lambda warmup, total: lambda step: float("inf"))
    cfg = config.profile("smoke", pretrain_steps=5)
    with pytest.raises(FloatingPointError, match="at step 2 of 5"):
        checkpoints.pretrained("codessm", cfg, texts=TEXTS, tokenizer=_tiny_tokenizer(TEXTS), valid_texts=TEXTS[:4])
    leftovers = [p.name for p in (cache_dir / "pretrain").iterdir()]
    assert not [n for n in leftovers if not n.startswith(".") or ".tmp-" in n], leftovers  # no artifact


class _Planted:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # unpickling this would run os.mkdir(target): code from the cache
        return os.mkdir, (self.target,)


def test_a_planted_state_runs_no_code_and_training_starts_over(tmp_path, capsys):
    state_dir = tmp_path / "scratch"
    state_dir.mkdir()
    torch.save({"model": _Planted(str(tmp_path / "pwned")), "step": 3}, state_dir / "state.pt")
    _, log = _linear_run(state_dir=state_dir)
    assert not (tmp_path / "pwned").exists()
    assert "unreadable" in capsys.readouterr().out
    assert log["step"].tolist() == list(range(1, 7))  # from the start


def test_no_state_is_ever_loaded_with_code():
    root = Path(__file__).resolve().parents[1] / "analysis"
    hits = [str(p) for p in root.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert hits == []


def test_a_full_disk_while_saving_state_is_a_clear_error_without_leftovers(tmp_path, monkeypatch):
    import analysis.train as train
    from analysis.cache import DiskFull

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                           "writing file data/0: file write failed")
    monkeypatch.setattr(train, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFull, match=r"could not write .*scratch/state\.pt.* MB free"):
        _linear_run(state_dir=tmp_path / "scratch")
    assert list((tmp_path / "scratch").iterdir()) == []


class _StackedExamples:
    """An iterator that can only be fast-forwarded (``skip(n)``, no ``state()``), as tensors."""

    def __init__(self, points):
        self.inner = Batches(points, 4, seed=2)

    def skip(self, n):
        self.inner.skip(n)

    def __next__(self):
        return torch.stack(next(self.inner))


@pytest.mark.parametrize("kind", ["state", "skip"])
def test_resuming_fit_gives_the_uninterrupted_weights(tmp_path, monkeypatch, kind):
    """The loop alone: dropout (torch's global RNG), a loss with its own generator, and
    batches reshuffled by theirs (restored from their state, or fast-forwarded)."""
    import analysis.train as train
    from analysis.train import fit

    monkeypatch.setattr(train, "CHECKPOINT_EVERY", 3)

    def run(state_dir, crash_at=None):
        torch.manual_seed(0)
        model, gen = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1)), \
            torch.Generator().manual_seed(1)
        calls = {"n": 0}

        def loss(m, batch):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt
            noise = torch.randn(batch.shape, generator=gen)
            return ((m(batch + noise) - batch.sum(1, keepdim=True)) ** 2).mean()
        points = list(torch.arange(30.0).reshape(10, 3) / 30)  # batch order from the batches' own RNG
        if kind == "state":
            batches = Batches(points, 4, 2, collate=torch.stack)
        else:
            batches = _StackedExamples(points)
        fit(model, batches, loss, 10, 0.05, 0.0, 2, state_dir, 1, generators=(gen,))
        return model
    whole = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, crash_at=8)  # states at steps 3 and 6
    resumed = run(tmp_path)
    assert all(torch.equal(p, q) for p, q in zip(whole.state_dict().values(), resumed.state_dict().values()))


def _flip_a_weight_byte(path):
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's data: the header still reads
    (path / "model.safetensors").write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    lambda p: (p / "tokenizer.json").unlink(),
    lambda p: (p / "tokenizer_config.json").unlink(),
    lambda p: (p / "log.csv").unlink(),
    lambda p: (p / "config.json").write_text((p / "config.json").read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3')),
    _flip_a_weight_byte,
], ids=["tokenizer.json deleted", "tokenizer_config.json deleted", "log.csv deleted", "config.json edited",
        "weights flipped"])
def test_a_damaged_checkpoint_is_retrained_not_failing_forever(cache_dir, damage):
    """Each of these passed the old check (config parses, weights header reads) and then failed,
    or silently loaded wrong weights, on every run."""
    from analysis import models
    from analysis.checkpoints import pretrained as pretrain

    cfg = config.profile("smoke", pretrain_steps=3)
    tok = _tiny_tokenizer(TEXTS)
    path = pretrain("codessm", cfg, texts=TEXTS, tokenizer=tok, valid_texts=TEXTS[:4])
    before = {k: v.clone() for k, v in _weights(path).items()}  # not views of the file
    damage(path)
    again = pretrain("codessm", cfg, texts=TEXTS, tokenizer=tok, valid_texts=TEXTS[:4])
    assert again == path and len(list(path.parent.glob(f".{path.name}.broken-*"))) == 1
    model, _ = models.load_checkpoint(again)
    assert model.config.num_hidden_layers == 2
    after = _weights(again)
    assert all(torch.equal(before[k], after[k]) for k in before)  # retrained: the same weights
    assert (again / "log.csv").is_file()


def _pretrain_recorded(root: Path, crash_at: int | None = None) -> None:
    """Pretrain a smoke CodeSSM into ``root`` (4 steps of 8 sequences, a scratch state every 2
    steps), recording in ``root/rank<r>.pt`` the input ids each training forward received and
    every write this process made (scratch state, checkpoint); a ``RuntimeError`` at the
    ``crash_at``-th batch. Run in each process of ``accelerate.debug_launcher`` (forked: the
    accelerate state the parent made is reset) or in this one."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    import analysis.train as train

    AcceleratorState._reset_state(reset_partial_state=True)
    seen, writes, calls = [], [], {"n": 0}
    build, mask, save = train.models.build, train.mask_tokens, train.save_atomic

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, a, kw: seen.append((kw["input_ids"].clone(), kw["labels"].clone())) if m.training else None,
            with_kwargs=True)
        save_pretrained = model.save_pretrained
        model.save_pretrained = lambda *a, **kw: (writes.append("checkpoint"), save_pretrained(*a, **kw))[1]
        return model

    def crashing_mask(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError("killed")
        return mask(*args, **kwargs)

    def recording_save(path, write):
        writes.append(Path(path).name)
        return save(path, write)

    cfg = config.profile("smoke", pretrain_steps=4, log_every=1, dropout=0.0, warmup_steps=1, batch_size=8)
    train.models.build, train.mask_tokens, train.save_atomic, train.CHECKPOINT_EVERY = \
        recording_build, crashing_mask, recording_save, 2
    try:
        (root / "state").mkdir(parents=True, exist_ok=True)
        train.pretrain_into("codessm", cfg, root / "out", root / "state", TEXTS, _tiny_tokenizer(TEXTS), TEXTS[:4])
    finally:
        train.models.build, train.mask_tokens, train.save_atomic, train.CHECKPOINT_EVERY = build, mask, save, 100
        torch.save({"seen": seen, "writes": writes}, root / f"rank{PartialState().process_index}.pt")
        AcceleratorState._reset_state(reset_partial_state=True)


def test_two_processes_take_the_steps_of_one_on_the_whole_batch(tmp_path, monkeypatch):
    """Data parallelism, simulated with 2 CPU processes (gloo) on a smoke CodeSSM: each process
    trains on its own half of every global batch (disjoint, together the batch), the weights
    after 4 steps are those of one process on the whole batches (masked-LM: each process's
    loss weighted by its share of the masked tokens), only the main process writes (the
    scratch state and the checkpoint), and a 2-process run killed after its scratch state
    resumes, in 2 processes, to the weights of the uninterrupted one, bit for bit."""
    from accelerate import debug_launcher
    from safetensors.torch import load_file
    import pandas as pd

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else accelerate gives each process 2 threads
    monkeypatch.setenv("TQDM_DISABLE", "1")
    _pretrain_recorded(tmp_path / "one")
    debug_launcher(_pretrain_recorded, args=(tmp_path / "two",), num_processes=2)
    one, rank0, rank1 = (torch.load(tmp_path / r, weights_only=True) for r in ("one/rank0.pt", "two/rank0.pt", "two/rank1.pt"))
    assert len(one["seen"]) == len(rank0["seen"]) == len(rank1["seen"]) == 4
    for (whole, labels), (a, la), (b, lb) in zip(one["seen"], rank0["seen"], rank1["seen"]):
        assert len(whole) == 8 and len(a) == len(b) == 4 and torch.equal(torch.cat([a, b]), whole)
        assert torch.equal(torch.cat([la, lb]), labels)
    masked = [(int((la != -100).sum()), int((lb != -100).sum())) for (_, la), (_, lb) in zip(rank0["seen"], rank1["seen"])]
    assert any(m0 != m1 for m0, m1 in masked), masked  # so an unweighted mean of the two losses would differ
    assert one["writes"] == rank0["writes"] == ["state.pt", "checkpoint"] and rank1["writes"] == []
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out", "rank0.pt", "rank1.pt", "state"]
    w1, w2 = load_file(tmp_path / "one/out/model.safetensors"), load_file(tmp_path / "two/out/model.safetensors")
    assert w1.keys() == w2.keys()
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-5, atol=1e-6) for k in w1)
    log1, log2 = pd.read_csv(tmp_path / "one/out/log.csv"), pd.read_csv(tmp_path / "two/out/log.csv")
    assert log2["loss"].tolist() == pytest.approx(log1["loss"].tolist(), rel=1e-6)  # gathered: the whole batch's

    with pytest.raises(Exception, match="killed"):
        debug_launcher(_pretrain_recorded, args=(tmp_path / "resumed", 3), num_processes=2)
    assert not (tmp_path / "resumed/out").exists() and (tmp_path / "resumed/state/state.pt").exists()
    debug_launcher(_pretrain_recorded, args=(tmp_path / "resumed",), num_processes=2)
    again = torch.load(tmp_path / "resumed/rank0.pt", weights_only=True)
    assert len(again["seen"]) == 2  # steps 3 and 4: resumed at the step-2 state
    w3 = load_file(tmp_path / "resumed/out/model.safetensors")
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
    assert pd.read_csv(tmp_path / "resumed/out/log.csv")["loss"].tolist() == log2["loss"].tolist()


def test_shards_are_disjoint_slices_that_make_up_the_batch():
    from analysis.train import batch_rows, shard

    ids, examples = torch.arange(10).reshape(5, 2), [{"q": i} for i in range(5)]
    batch = (ids, {"mask": ids > 3, "labels": ids}, examples)
    parts = [shard(batch, r, 2) for r in range(2)]
    assert [batch_rows(p) for p in parts] == [2, 3]
    assert torch.equal(torch.cat([p[0] for p in parts]), ids) and [p[2] for p in parts] == [examples[:2], examples[2:]]
    assert torch.equal(parts[1][1]["mask"], ids[2:] > 3)
    assert shard(batch, 0, 1) is batch
    with pytest.raises(TypeError, match="cannot split a batch of type set across 2 processes"):
        shard({1, 2}, 0, 2)


def test_a_process_slice_with_nothing_to_average_is_a_clear_error_on_every_process():
    """Every process holds the whole batch, so each finds the empty slice and all stop together
    (none waits forever for the others' gradients)."""
    import contextlib
    from types import SimpleNamespace

    from analysis.train import _local_loss, masked_count

    def batch(labels):
        labels = torch.tensor(labels)
        return labels.clamp(min=0), torch.ones_like(labels), labels

    for rank in (0, 1):
        accelerator = SimpleNamespace(num_processes=2, process_index=rank, autocast=contextlib.nullcontext)
        with pytest.raises(ValueError, match=r"step 3: .* slices with \[0, 3\] items .* use a larger batch"):
            _local_loss(accelerator, None, None, batch([[-100, -100], [5, -100], [7, 8]]), masked_count, "step 3")
    accelerator = SimpleNamespace(num_processes=3, process_index=2, autocast=contextlib.nullcontext)
    weighted = _local_loss(accelerator, None, lambda m, b: torch.tensor(2.0), batch([[5, -100], [-100, 6], [7, 8]]),
                           masked_count, "step 3")
    assert weighted.item() == pytest.approx(2.0 * 3 * 2 / 4)  # slice 2 holds 2 of the 4 masked tokens


def test_mixed_precision_is_used_and_keyed_only_on_cuda(monkeypatch):
    """On the CPU every run trains in float32 and no cache key names the precision (so no CPU
    key changed); with CUDA, ``paper``'s bf16 reaches the accelerator and the keys."""
    import analysis.train as train
    from analysis.data.tokenizer import tokenizer_key
    from analysis.finetune import finetune_key

    asked = []

    class Recording(train.Accelerator):
        def __init__(self, **kwargs):
            asked.append(kwargs["mixed_precision"])
            super().__init__(**{**kwargs, "mixed_precision": "no"})
    monkeypatch.setattr(train, "Accelerator", Recording)
    train.fit(torch.nn.Linear(2, 1), itertools.repeat(torch.ones(3, 2)), lambda m, b: m(b).sum() ** 2, 1, 0.1, 0.0,
              1, mixed_precision="bf16")
    assert asked == ["no"]
    for name in ("smoke", "default", "paper"):
        cfg = config.profile(name)
        assert train.pretrain_key("codessm", cfg) == {
            "model": "codessm", **tokenizer_key(cfg), **cfg.subset(*train.MODEL_FIELDS, *train.TRAIN_FIELDS),
            **train.architecture_key("codessm", cfg)}
        assert "mixed_precision" not in finetune_key({}, "search", cfg, 0)
        assert "ssm_lr" not in train.pretrain_key("rocoder", cfg)  # CodeSSM's own fields key CodeSSM only
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.precision_key(config.profile("paper")) == {"mixed_precision": "bf16"}
    assert train.pretrain_key("codessm", config.profile("paper"))["mixed_precision"] == "bf16"
    assert finetune_key({}, "types", config.profile("paper"), 0)["mixed_precision"] == "bf16"
    assert "mixed_precision" not in train.pretrain_key("codessm", config.profile("smoke"))


def _pretrained_in_process(root: Path) -> None:
    """``checkpoints.pretrained`` of a tiny CodeSSM in each process of ``debug_launcher``; the
    path it returns goes to ``root/rank<r>.txt``."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    from analysis import checkpoints

    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = config.profile("smoke", pretrain_steps=4, log_every=1, warmup_steps=1, batch_size=8)
    try:
        path = checkpoints.pretrained("codessm", cfg, TEXTS, _tiny_tokenizer(TEXTS), TEXTS[:4])
        (root / f"rank{PartialState().process_index}.txt").write_text(str(path))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_pretrained_under_two_processes_trains_once_and_every_process_gets_it(cache_dir, tmp_path, monkeypatch):
    """Under ``accelerate launch`` the cache's build lock admits one process, yet training needs
    all: the main process builds under the lock, the other joins the training, and both return
    the one checkpoint; launched again, nothing trains (no deadlock either time: a watchdog
    fails the test instead of hanging)."""
    import signal

    from accelerate import debug_launcher

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")

    def hung(*_):
        raise TimeoutError("the processes did not finish: a lock or barrier deadlock")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(240)
    try:
        for run in ("first", "again"):
            (tmp_path / run).mkdir()
            debug_launcher(_pretrained_in_process, args=(tmp_path / run,), num_processes=2)
            paths = {(tmp_path / run / f"rank{r}.txt").read_text() for r in (0, 1)}
            assert len(paths) == 1, paths
            if run == "first":
                built = Path(paths.pop())
                stamp = (built / "model.safetensors").stat().st_mtime_ns
            else:
                assert Path(paths.pop()) == built and (built / "model.safetensors").stat().st_mtime_ns == stamp
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len([p for p in built.parent.iterdir() if not p.name.startswith(".")]) == 1  # one checkpoint
    assert not list(built.parent.glob(".*.scratch"))  # the build completed and cleaned its scratch
