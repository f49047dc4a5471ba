"""Device placement without a GPU: every path that runs a model, on a fake second device.

The fake GPU is the ``meta`` device with real data: a tensor on it is an ``OnFake`` wrapper
that reports device ``meta`` and holds a CPU tensor. Under the dispatch mode ``FakeGPU`` every
operation on fake tensors runs on their data and returns fake tensors; ``.to("meta")`` puts a
CPU tensor on the fake, ``.cpu()`` takes it back, ``.item()`` reads it, and ``.numpy()`` fails,
as on CUDA. An operation that mixes a fake tensor with a CPU tensor of one or more dimensions
fails, as CUDA refuses it; what CUDA accepts is accepted: a CPU scalar tensor, CPU index
tensors, and ``copy_`` across devices. The CPU stays the default device, so a tensor the code makes
without ``device=`` lands on the CPU, away from the model, and the first operation that meets
the model's tensors fails. Every module also gets a forward pre-hook that fails, naming the
module, when an input is on another device than its parameters.

``train.training_device`` returns the fake (where ``fit`` and ``load_finetuned`` place models);
the other paths take the device from the model. Each path runs on the CPU too, and the fake run
must give the CPU run's numbers: the simulation computes, it does not only check devices.
"""
import contextlib

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from analysis import config, evaluation, models, train
from analysis.data import parse_function
from analysis.finetune import scoring, training
from analysis.interpret import (attention_from_scan_inputs, hidden_attention, lti_kernels, mean_effective_kernels,
                                median_step_lti_kernels, median_step_size)
from analysis.models import encoder_states
from analysis.probing.representations import hidden_states
from test_train import TEXTS, _tiny_tokenizer

FAKE = torch.device("meta")
SMOKE = config.profile("smoke", dropout=0.0)
FAMILIES = ["codessm", "rocoder", "bimamba"]


class DeviceMismatch(RuntimeError):
    """A CPU tensor met a tensor on the fake GPU."""


class OnFake(torch.Tensor):
    """A tensor on the fake GPU: reports device ``meta``, holds its data in ``elem`` (CPU)."""

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                   storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                   device=FAKE, requires_grad=elem.requires_grad)

    def __init__(self, elem):
        self.elem = elem

    def __repr__(self):
        return f"OnFake({self.elem!r})"

    def __tensor_flatten__(self):
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return OnFake(inner["elem"])

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


aten = torch.ops.aten
CROSSING = (aten.copy_.default, aten._to_copy.default)  # copies between devices, as on CUDA
INDEXING = (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default)
# CUDA takes CPU index tensors (the second argument of these): indexing with a Python list makes one


def _to_fake(device) -> bool:
    return device is not None and torch.device(device) == FAKE


def _run(func, args, kwargs):
    """``func`` on the fake GPU: on the CPU data of fake tensors, the results made fake."""
    flat, _ = tree_flatten((args, kwargs))
    fake = any(isinstance(t, OnFake) for t in flat)
    if not fake and not _to_fake(kwargs.get("device")):
        return func(*args, **kwargs)
    if any(type(t) is torch.Tensor and t.device == FAKE for t in flat):
        raise AssertionError(f"{func}: a meta tensor without data reached the fake GPU (made in C++ out of "
                             "the modes' sight): teach _Conversions to make it on the CPU")
    checked = tree_flatten((args[:1] + args[2:], kwargs) if func in INDEXING else (args, kwargs))[0]
    cpu = [tuple(t.shape) for t in checked if type(t) in (torch.Tensor, torch.nn.Parameter) and t.dim() > 0]
    if fake and cpu and func not in CROSSING:
        raise DeviceMismatch(f"{func} mixes tensors on the fake GPU with CPU tensors of shapes {cpu}")
    args, kwargs = tree_map(_data, (args, kwargs))
    leaving = func is torch.ops.aten._to_copy.default and kwargs.get("device") is not None \
        and torch.device(kwargs["device"]).type == "cpu"
    if _to_fake(kwargs.get("device")):
        kwargs = {**kwargs, "device": torch.device("cpu")}
    out = func(*args, **kwargs)
    if leaving:
        return out
    return tree_map(lambda t: OnFake(t) if type(t) is torch.Tensor else t, out)


def _data(t):
    """The CPU data of a fake tensor, a lazy conjugate or negative materialised (below the
    dispatcher's fallbacks that would otherwise do it, kernels ignore those bits)."""
    if not isinstance(t, OnFake):
        return t
    return t.elem.resolve_conj().resolve_neg() if t.elem.is_conj() or t.elem.is_neg() else t.elem


class _Dispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _lists_as_tensors(index):
    if isinstance(index, list) and all(isinstance(i, (int, bool)) for i in index):
        return torch.tensor(index)
    return tuple(_lists_as_tensors(i) for i in index) if isinstance(index, tuple) else index


class _Conversions(TorchFunctionMode):
    """What C++ makes into tensors out of the dispatch mode's sight, made on the CPU instead (as
    the dispatch mode makes everything): a Python list in an index of a fake tensor (a CPU
    index tensor then, which CUDA takes), and ``torch.tensor(..., device="meta")`` (then moved)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], OnFake):
            args = (args[0], _lists_as_tensors(args[1]), *args[2:])
        elif func in (torch.tensor, torch.as_tensor) and _to_fake(kwargs.get("device")):
            return func(*args, **{**kwargs, "device": "cpu"}).to(FAKE)
        return func(*args, **kwargs)


@contextlib.contextmanager
def FakeGPU():
    """Inside: tensors on device ``meta`` are on the fake GPU (module docstring)."""
    with _Dispatch(), _Conversions():
        yield


def _guard(model):
    """``model`` with a forward pre-hook on every module with parameters: its tensor inputs must
    be on its parameters' device."""
    def check(module, args, kwargs):
        device = next(module.parameters()).device
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.device != device:
                raise DeviceMismatch(f"{type(module).__name__} got an input {tuple(t.shape)} on {t.device}; "
                                     f"its parameters are on {device}")
    for module in model.modules():
        if next(module.parameters(), None) is not None:
            module.register_forward_pre_hook(check, with_kwargs=True)
    return model


@contextlib.contextmanager
def fake_gpu(monkeypatch):
    """The fake GPU as the training device; every model built or loaded meanwhile is guarded."""
    build, load = models.build, models.load_checkpoint

    def guarded_build(*args, **kwargs):
        return _guard(build(*args, **kwargs))

    def guarded_load(path):
        net, tok = load(path)
        return _guard(net), tok
    monkeypatch.setattr(models, "build", guarded_build)
    monkeypatch.setattr(models, "load_checkpoint", guarded_load)
    for module in (train, training, evaluation):
        monkeypatch.setattr(module, "training_device", lambda: FAKE)
    with FakeGPU():
        yield


def place(model):
    """``model`` guarded and on the fake GPU (inside ``fake_gpu``)."""
    return _guard(model).to(FAKE)


def _model(name: str, tok):
    return models.build(name, SMOKE, len(tok), tok.pad_token_id).eval()


def _on_fake(t: torch.Tensor) -> bool:
    return isinstance(t, OnFake) and t.device == FAKE


TOK = _tiny_tokenizer(TEXTS)


def test_the_fake_gpu_refuses_cpu_tensors_and_computes_exactly(monkeypatch):
    """The harness itself: a batch left on the CPU, or a tensor made without ``device=``, fails;
    a moved batch gives the CPU's numbers; ``.numpy()`` of a fake tensor fails as on CUDA."""
    model = _model("codessm", TOK)
    batch = TOK(TEXTS[:3], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():  # a graph would hold the parameters, which moving to the fake swaps
        expected = encoder_states(model, ids, mask)[-1]
    with fake_gpu(monkeypatch), torch.no_grad():
        place(model)
        assert all(_on_fake(p) for p in model.parameters())
        with pytest.raises(DeviceMismatch, match=r"got an input \(3, \d+\) on cpu; its parameters are on meta"):
            encoder_states(model, ids, mask)
        last = encoder_states(model, *train.to_device((ids, mask), FAKE))[-1]
        assert _on_fake(last) and torch.equal(last.cpu(), expected)
        with pytest.raises(DeviceMismatch, match="mixes tensors on the fake GPU with CPU tensors"):
            last + torch.ones(last.shape[-1])
        assert torch.equal((last + torch.ones(last.shape[-1], device=last.device)).cpu(), expected + 1)
        with pytest.raises((TypeError, RuntimeError), match="numpy"):  # CUDA: TypeError
            last.detach().numpy()
        made = torch.tensor([[1.5, 2.0]], device=last.device)  # made in C++: by _Conversions on the CPU, moved
        assert _on_fake(made) and made.cpu().tolist() == [[1.5, 2.0]]
        moved = train.to_device({"a": (ids, [mask]), "n": 3}, FAKE)
        assert _on_fake(moved["a"][0]) and _on_fake(moved["a"][1][0]) and moved["n"] == 3


def _pretraining_steps(name: str, steps: int = 2):
    """``steps`` masked-LM steps of a fresh smoke model with ``fit``: (model, log, valid loss)."""
    model = models.build(name, SMOKE, len(TOK), TOK.pad_token_id)
    gen = torch.Generator().manual_seed(0)
    batches = train.Batches(TOK(TEXTS)["input_ids"], 8, 0, train.masked(TOK, 0.3, gen))
    log = train.fit(model, batches, train.mlm_objective, steps, 1e-3, 0.01, 1, None, 1, generators=(gen,),
                    count=train.masked_count)
    return model, log, train.mlm_loss(model, TOK(TEXTS[:6])["input_ids"], TOK, SMOKE)


@pytest.mark.parametrize("name", FAMILIES)
def test_pretraining_runs_on_the_training_device(name, monkeypatch):
    """``fit`` moves the model and each batch to the training device; ``mlm_loss`` follows the model."""
    cpu_model, cpu_log, cpu_valid = _pretraining_steps(name)
    with fake_gpu(monkeypatch):
        model, log, valid = _pretraining_steps(name)
        assert all(_on_fake(p) for p in model.parameters())
    assert log["loss"].tolist() == pytest.approx(cpu_log["loss"].tolist(), rel=1e-5)
    assert valid == pytest.approx(cpu_valid, rel=1e-5)
    for (k, p), q in zip(model.state_dict().items(), cpu_model.state_dict().values()):
        assert torch.allclose(p.cpu(), q, rtol=1e-4, atol=1e-6), k


SEARCH = [{"query": f"add {i} to x", "code": t} for i, t in enumerate(TEXTS[:12])]
TYPES = [{"code": f"def f{i}(x: int) -> str:\n    y: float = x + {i}\n    return str(y)\n",
          "targets": [(9, 12, 0), (17, 20, 1), (31, 36, 2)]} for i in range(12)]
LABELS = ["int", "str", "float", "other"]


def _finetune_data(monkeypatch):
    data = {"search": {"train": SEARCH, "test": SEARCH}, "types": {"train": TYPES, "test": TYPES}}
    for module in (training, scoring):
        monkeypatch.setattr(module, "finetune_dataset", lambda cfg, task: data[task])
        monkeypatch.setattr(module, "type_label_names", lambda cfg: LABELS)


def _finetune_and_score(task: str, out, monkeypatch) -> dict:
    """Fine-tune a smoke CodeSSM 2 steps on ``task`` (``train_task``), reload it
    (``load_finetuned``) and score it: the test scores (and, for search, the zero-shot scores of
    ``evaluation.zero_shot_search``, the checkpoint standing for the pretrained encoder)."""
    cfg = config.profile("smoke", dropout=0.0, finetune_steps=2, finetune_batch_size=4, max_length=32)
    net = models.build("codessm", cfg, len(TOK), TOK.pad_token_id)
    training.train_task(net, TOK, task, cfg, 0, out, None)
    net, tok, head = training.load_finetuned(out)
    assert all(p.device == train.training_device() for p in net.parameters())
    if head is not None:
        assert all(p.device == train.training_device() for p in head.parameters())
        head.cpu()  # type_predictions must move it to the model's device
    scores, _ = scoring.score(net, tok, head, task, cfg)
    if task == "search":
        monkeypatch.setattr(evaluation.checkpoints, "load", lambda *args, **kwargs: models.load_checkpoint(out))
        zero_shot, ran_on = evaluation.zero_shot, []
        monkeypatch.setattr(evaluation, "zero_shot", lambda net, *a: ran_on.append(train.model_device(net))
                            or zero_shot(net, *a))
        scores.update(evaluation.zero_shot_search("codessm", cfg))
        assert ran_on == [train.training_device()]
    return {k: v for k, v in scores.items() if k != "eval_seconds"}


@pytest.mark.parametrize("task", ["search", "types"])
def test_fine_tuning_and_scoring_run_on_the_training_device(task, tmp_path, monkeypatch):
    """``train_task`` (the encoder, the type head and every batch on the training device),
    ``load_finetuned`` (the encoder and head put there) and ``score``/``zero_shot`` (embeddings
    and type predictions computed there, read back on the CPU)."""
    _finetune_data(monkeypatch)
    expected = _finetune_and_score(task, tmp_path / "cpu", monkeypatch)
    with fake_gpu(monkeypatch):
        scores = _finetune_and_score(task, tmp_path / "fake", monkeypatch)
    assert scores.keys() == expected.keys()
    assert scores == pytest.approx(expected, rel=1e-5, nan_ok=True)  # no rare types: nan


SOURCES = ["def f(a, b):\n    c = a + b\n    return c * 2\n",
           "def g(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n",
           "def h(s):\n    return s.strip().lower()\n"]


@pytest.mark.parametrize("name", FAMILIES)
def test_probe_extraction_runs_on_the_models_device(name, monkeypatch):
    functions = [parse_function(src) for src in SOURCES]
    model = _model(name, TOK)
    expected = hidden_states(model, TOK, functions, layers=[0, 2], batch_size=2, progress=False)
    with fake_gpu(monkeypatch):
        states = hidden_states(place(model), TOK, functions, layers=[0, 2], batch_size=2, progress=False)
    for a, b in zip(states, expected, strict=True):
        assert isinstance(a, np.ndarray) and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _interpret(model, ids, mask) -> list[torch.Tensor]:
    channels = slice(0, None, 4)
    alpha = [hidden_attention(model, ids, mask, 1, d, channels=channels, token_order=True).cpu()
             for d in ("forward", "backward")]
    scan = model.scan_inputs(*train.to_device((ids, mask), train.model_device(model)))[0]["backward"]
    alpha.append(attention_from_scan_inputs(scan, mask, channels).cpu())  # the mask left on the CPU
    step = median_step_size(model, ids, mask, 0, "backward")
    lti = [lti_kernels(model, 0, "forward", step, 7).cpu(), lti_kernels(model, 1, "backward", 0.1, 7).cpu()]
    summaries = [mean_effective_kernels(model, ids, mask, channels, chunk=2),
                 median_step_lti_kernels(model, ids, mask, channels)]
    assert not any(_on_fake(t) for t in summaries)  # the summaries come back to the CPU
    return alpha + [step.cpu()] + lti + summaries


def test_interpret_helpers_run_on_the_models_device(monkeypatch):
    """BiMamba's hidden attention, step sizes, LTI and effective kernels: CPU inputs, the model
    on the fake GPU."""
    model = _model("bimamba", TOK)
    batch = TOK(TEXTS[:3] + ["def f(): pass"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    expected = _interpret(model, ids, mask)
    with fake_gpu(monkeypatch):
        got = _interpret(place(model), ids, mask)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
