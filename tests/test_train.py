"""The training loop: masking, schedule, resuming, and real learning on the smoke profile."""
import pytest
import torch

from analysis import config
from analysis.train import Batches, linear_schedule, mask_tokens, padded


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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["codessm", "rocoder", "bimamba"])
def test_smoke_pretraining_beats_the_unigram_baseline(name):
    """Uses the shared artifact cache: the smoke chapters reuse these checkpoints."""
    from analysis.checkpoints import pretraining_meta
    meta = pretraining_meta(name, config.profile("smoke"))
    assert meta["valid_mlm_loss"] < meta["unigram_entropy"] - 0.1, meta


def test_interrupted_pretraining_resumes(cache_dir, monkeypatch):
    from analysis.checkpoints import pretrained as pretrain
    from analysis import cache
    from analysis.train import PRETRAIN_VERSION, pretrain_key
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]
    raw = Tokenizer(tm.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=80, special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                  bos_token="<s>", eos_token="</s>")
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
