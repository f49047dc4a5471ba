from types import SimpleNamespace

import torch
from torch import nn

from analysis.finetune import tasks


class TinyEncoder(nn.Module):
    """Embedding + one linear layer, answering like the project's masked-LM models with hidden
    states (``base_model`` is itself, there is no head)."""

    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lin = nn.Linear(dim, dim)

    @property
    def base_model(self):
        return self

    def forward(self, input_ids, attention_mask=None, output_hidden_states=True):
        h0 = self.emb(input_ids)
        return SimpleNamespace(hidden_states=(h0, torch.tanh(self.lin(h0))))


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(tasks.mean_pool(hidden, mask), torch.tensor([[1.0, 0.0]]))


def test_pool_mask_drops_special_tokens_but_never_empties_a_sequence():
    """<s>=1, </s>=2, pad=0: "<s> 7 8 </s> pad" pools 7, 8; "<s> </s>" has nothing else and
    keeps both; without special ids the mask is the attention mask."""
    ids = torch.tensor([[1, 7, 8, 2, 0], [1, 2, 0, 0, 0]])
    att = (ids != 0).long()
    assert tasks.pool_mask(ids, att, [1, 2]).tolist() == [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert torch.equal(tasks.pool_mask(ids, att), att)
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [3.0, 0.0], [9.0, 9.0], [5.0, 5.0]]])
    assert torch.allclose(tasks.mean_pool(hidden, tasks.pool_mask(ids[:1], att[:1], [1, 2])), torch.tensor([[1.0, 0.0]]))


def test_centring_removes_the_shared_direction():
    """(1, 1) + (±1, 0) and (1, 1) + (0, ±1): all cosines positive, large; centred, each pair
    of opposites has cosine -1 and the mean is gone."""
    shared = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 2.0], [1.0, 0.0]])
    out = tasks.centred(shared)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    assert torch.allclose(out.norm(dim=1), torch.ones(4))


def test_contrastive_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = TinyEncoder()
    q = torch.randint(0, 50, (8, 6))
    c = torch.randint(0, 50, (8, 9))
    mq, mc = torch.ones_like(q), torch.ones_like(c)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss():
        return tasks.contrastive_loss(tasks.mean_pool(tasks.encode(model, q, mq), mq),
                                      tasks.mean_pool(tasks.encode(model, c, mc), mc))
    first = loss().item()
    for _ in range(40):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert value.item() < 0.5 * first
    # a perfectly aligned pair of batches has a lower loss than a shuffled one
    e = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert tasks.contrastive_loss(e, e) < tasks.contrastive_loss(e, e.roll(1, 0))


def test_type_labels_go_to_the_first_overlapping_subword():
    offsets = [(0, 0), (0, 3), (3, 5), (6, 9), (9, 12), (0, 0)]
    targets = [(3, 5, 7), (6, 12, 2)]
    assert tasks.type_labels_for(offsets, targets) == [-100, -100, 7, 2, -100, -100]
    assert tasks.type_labels_for(offsets, []) == [-100] * 6


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


def test_embed_pools_the_chosen_layer_over_real_tokens_only():
    torch.manual_seed(0)
    model, tok = TinyEncoder(), _word_tokenizer(["a", "b", "c"])  # ids 2, 3, 4
    emb = model.emb.weight.detach()
    layer0 = tasks.embed(model, tok, ["a b", "c"], None, layer=0)  # "c" is padded to two tokens
    expect0 = torch.nn.functional.normalize(torch.stack([emb[[2, 3]].mean(0), emb[4]]), dim=-1)
    assert torch.allclose(layer0, expect0, atol=1e-6)
    last = tasks.embed(model, tok, ["a b", "c"], None)
    hidden = torch.tanh(model.lin(emb)).detach()
    expect_last = torch.nn.functional.normalize(torch.stack([hidden[[2, 3]].mean(0), hidden[4]]), dim=-1)
    assert torch.allclose(last, expect_last, atol=1e-6)
    assert not torch.allclose(last, layer0, atol=1e-3)


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience(tmp_path):
    """Scores 0.1, 0.3, 0.2, 0.25 at steps 10..40 with patience 2: a new best at 20, then two
    without one: stop at 40, and the weights restored are those of step 20. A second instance
    on the same state file (a resumed run) continues: step 40 is not scored again."""
    from analysis.finetune.training import EarlyStopping

    layer = nn.Linear(2, 1)
    scores = iter([0.1, 0.3, 0.2, 0.25])
    early = EarlyStopping([layer], lambda: next(scores), every=10, patience=2, path=tmp_path / "early.pt")
    stopped, at = [], {}
    for step in range(1, 51):
        with torch.no_grad():
            layer.weight.fill_(step)
        at[step] = layer.weight.clone()
        if early(step):
            stopped.append(step)
            break
    assert stopped == [40] and early.state["best_step"] == 20 and early.state["best"] == 0.3
    early.restore()
    assert torch.equal(layer.weight, at[20])
    again = EarlyStopping([layer], lambda: 1 / 0, every=10, patience=2, path=tmp_path / "early.pt")
    assert again(30) is False and again(40) is True  # replayed steps: no new scoring


def test_validation_is_held_out_of_training_when_the_valid_split_is_too_small(monkeypatch):
    from analysis.finetune import training

    train = [{"code": str(k), "targets": [(0, 1, 0)]} for k in range(600)]
    monkeypatch.setattr(training, "finetune_dataset", lambda cfg, task: {"valid": train[:3]})
    kept, valid = training.validation_split(None, "types", train)
    assert len(valid) == 60 and kept == train[:540] and valid == train[540:]
    monkeypatch.setattr(training, "finetune_dataset", lambda cfg, task: {"valid": train[:300]})
    kept, valid = training.validation_split(None, "types", train)
    assert kept == train and valid == train[:training.MAX_VALID]
