"""The CUDA scan dispatch against mamba-ssm 2.x's real interface, simulated on CPU.

A fake ``mamba_ssm.ops.selective_scan_interface`` (installed in ``sys.modules``) has
``selective_scan_fn`` with mamba-ssm 2.x's name and argument order. It applies what the real
function does before its kernel (``SelectiveScanFn.forward``: a tensor whose last stride is not
1 is copied contiguous; a [b, n, L] B or C becomes [b, 1, n, L]), then checks every condition
that ``csrc/selective_scan/selective_scan.cpp`` checks (dtypes, shapes, the state limit, the
group count of C read from B, last strides), and the same for the gradient that reaches the
kernel's backward (dout in u's dtype, [b, d, L]); it records the call and returns the project's
CPU result, so gradients flow as through the real function. ``scan.on_cuda`` is replaced so
CPU tensors take the CUDA branch.
"""
import inspect
import sys
import types

import pytest
import torch

from analysis.models import scan
from analysis.models.bimamba import BiMambaConfig, BiMambaForMaskedLM

# mamba_ssm/ops/selective_scan_interface.py, mamba-ssm 2.0.0 .. 2.3.2.post1 and main
SIGNATURE = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "return_last_state")
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel_contract(u, delta, A, B, C, D, z, delta_bias) -> list[str]:
    """The conditions selective_scan.cpp's forward checks that these arguments break ([] = none),
    after selective_scan_fn's own fix-ups (contiguous last axis; 3-D B, C get a group axis)."""
    last = lambda t: t if t.stride(-1) == 1 else t.contiguous()
    u, delta, B, C = last(u), last(delta), last(B), last(C)
    B = B[:, None] if B.dim() == 3 else B
    C = C[:, None] if C.dim() == 3 else C
    bad = []
    need = lambda ok, what: None if ok else bad.append(what)
    need(u.dtype in INPUT_DTYPES, f"u dtype {u.dtype}")
    need(A.dtype == torch.float32, f"A dtype {A.dtype} (real A must be float32)")
    for name, t in (("delta", delta), ("B", B), ("C", C), ("z", z)):
        need(t is None or t.dtype == u.dtype, f"{name} dtype {None if t is None else t.dtype} != u's {u.dtype}")
    b, d, L = u.shape
    n, G = A.shape[1], B.shape[1]
    need(n <= 256, f"state {n} > 256")
    need(delta.shape == (b, d, L) and A.shape == (d, n), f"delta {tuple(delta.shape)} or A {tuple(A.shape)}")
    need(B.shape == (b, G, n, L) and C.shape == (b, G, n, L), f"B {tuple(B.shape)} / C {tuple(C.shape)}: one group count")
    need(d % G == 0, f"dim {d} not divisible by groups {G}")
    for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C)):
        need(t.stride(-1) == 1 or t.size(-1) == 1, f"{name} last stride {t.stride(-1)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        need(t is None or (t.dtype == torch.float32 and t.shape == (d,)), f"{name} must be float32 [{d}]")
    need(delta_bias is None or delta_bias.stride(-1) == 1, "delta_bias last stride (not fixed by the wrapper)")
    need(z is None or z.shape == (b, d, L), f"z {None if z is None else tuple(z.shape)}")
    return bad


def _interface(record: dict, selective_scan_cuda=object()) -> types.ModuleType:
    """The fake ``mamba_ssm.ops.selective_scan_interface``."""
    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
        record["calls"].append({**args, "delta_softplus": delta_softplus, "return_last_state": return_last_state,
                                "broken": kernel_contract(**args)})
        out = scan.selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
        y = out[0] if return_last_state else out
        if y.requires_grad:
            shape, dtype = tuple(u.shape), u.dtype
            y.register_hook(lambda dout: record["douts"].append(
                [] if (dout.dtype == dtype and tuple(dout.shape) == shape) else [f"dout {dout.dtype} {tuple(dout.shape)}"]))
        return out

    module = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    module.selective_scan_fn, module.selective_scan_cuda = selective_scan_fn, selective_scan_cuda
    return module


def install_fake(monkeypatch) -> dict:
    """Install the fake mamba_ssm; CPU tensors count as CUDA. Returns the record of calls."""
    record = {"calls": [], "douts": []}
    interface = _interface(record)
    package, ops = types.ModuleType("mamba_ssm"), types.ModuleType("mamba_ssm.ops")
    package.ops, ops.selective_scan_interface = ops, interface
    for name, module in (("mamba_ssm", package), ("mamba_ssm.ops", ops),
                         ("mamba_ssm.ops.selective_scan_interface", interface)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(scan, "_MAMBA", {"checked": False, "fn": None, "why": ""})
    monkeypatch.setattr(scan, "on_cuda", lambda device: True)
    record["interface"] = interface
    return record


@pytest.fixture
def fake_mamba(monkeypatch):
    return install_fake(monkeypatch)


def test_the_fake_has_mamba_ssm_2x_signature(fake_mamba):
    params = inspect.signature(fake_mamba["interface"].selective_scan_fn).parameters
    assert tuple(params) == SIGNATURE
    assert [p.default for p in params.values()][5:] == [None, None, None, False, False]
    assert scan.backend("cpu").startswith("mamba-ssm CUDA kernel")


def _bimamba(seed=0):
    cfg = BiMambaConfig(vocab_size=50, d_model=16, n_layers=2, d_state=4, d_conv=3, expand=2)
    torch.manual_seed(seed)
    return BiMambaForMaskedLM(cfg)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0                     # padded: the backward direction reverses within length 7
    mask[2, 4:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    return ids, mask, labels


def _step(model, autocast: bool):
    ids, mask, labels = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
def test_bimamba_call_sites_meet_the_kernel_contract(monkeypatch, autocast):
    """Every scan of a BiMamba training step (per layer: forward direction, then backward
    direction on the reversed sequence) reaches selective_scan_fn with BiMamba's own arguments,
    unconverted, in mamba-ssm's order, meeting every kernel check, forward and backward; the
    loss and every gradient equal those of the CPU path."""
    model = _bimamba()
    expected = model.scan_inputs(*_batch()[:2])                     # [layer]{"forward", "backward"}
    loss_cpu, grads_cpu = _step(model, autocast)
    model.zero_grad(set_to_none=True)
    record = install_fake(monkeypatch)
    loss, grads = _step(model, autocast)

    calls = record["calls"]
    assert len(calls) == 2 * model.config.n_layers
    for i, call in enumerate(calls):
        assert call["broken"] == [], (i, call["broken"])
        assert call["delta_softplus"] is True and call["return_last_state"] is False
        want = expected[i // 2]["forward" if i % 2 == 0 else "backward"]
        if not autocast:                 # scan_inputs runs without autocast: same values in float32
            for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
                assert call[k].dtype == want[k].dtype and torch.equal(call[k], want[k]), (i, k)
        low = torch.bfloat16 if autocast else torch.float32
        assert [call[k].dtype for k in ("u", "delta", "B", "C", "z")] == [low] * 5
        assert [call[k].dtype for k in ("A", "D", "delta_bias")] == [torch.float32] * 3
        assert call["B"].is_contiguous() and call["C"].is_contiguous()      # no copy in the wrapper
    assert record["douts"] == [[]] * len(calls)                        # the backward's gradient checks
    assert torch.equal(loss, loss_cpu)
    assert grads.keys() == grads_cpu.keys()
    for k in grads:
        assert torch.equal(grads[k], grads_cpu[k]), k
        assert grads[k].abs().sum() > 0, k


def _inputs(b=2, d=4, n=3, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return dict(u=r(b, d, L), delta=r(b, d, L).abs() * 0.5, A=-torch.rand(d, n, generator=g) - 0.1,
                B=r(b, n, L), C=r(b, 2, n, L), D=r(d), z=r(b, d, L), delta_bias=r(d) * 0.1)


def test_dispatch_conforms_mixed_arguments_to_the_kernel(fake_mamba):
    """Arguments the CPU path accepts but the kernel would refuse (mixed dtypes, B ungrouped with
    C in 2 groups, a non-contiguous delta) are conformed on the way in (delta, z, B, C rounded to
    u's bfloat16; A, D to float32); the result is the CPU path's on the conformed inputs, and
    gradients reach every input in its own dtype."""
    kw = _inputs()
    kw["u"] = kw["u"].bfloat16()
    kw["z"] = kw["z"].double()
    kw["A"], kw["D"] = kw["A"].double(), kw["D"].bfloat16()
    kw["delta"] = kw["delta"].transpose(1, 2).contiguous().transpose(1, 2)     # last stride 4
    leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
    y = scan.selective_scan(**leaves, delta_softplus=True)
    (call,) = fake_mamba["calls"]
    assert call["broken"] == []
    assert call["B"].shape == (2, 2, 3, 6) and torch.equal(call["B"][:, 1], kw["B"].bfloat16())
    assert call["delta"].stride(-1) == 4                              # left for the wrapper to copy
    low = {k: kw[k].bfloat16() for k in ("delta", "B", "C", "z")}        # what the kernel computes on
    ref = scan.selective_scan_cpu(**{**kw, **low, "A": kw["A"].float(), "D": kw["D"].float()}, delta_softplus=True)
    assert y.dtype == torch.bfloat16 and torch.equal(y, ref)
    y.float().sum().backward()
    for k, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype and leaf.grad.abs().sum() > 0, k


def test_the_kernel_contract_catches_what_the_kernel_refuses():
    """The fake's checks are real: each input the C++ code rejects is named."""
    kw = _inputs()
    kw["C"] = kw["C"][:, 0]                                           # ungrouped, like B
    assert kernel_contract(**kw) == []
    cases = {"A": ("A", kw["A"].double()), "delta dtype": ("delta", kw["delta"].half()),
             "one group count": ("C", _inputs()["C"]), "D must be float32": ("D", kw["D"].half()),
             "delta_bias last stride": ("delta_bias", torch.randn(4, 2)[:, 0])}
    for words, (name, value) in cases.items():
        broken = kernel_contract(**{**kw, name: value})
        assert len(broken) == 1 and words in broken[0], (name, broken)


@pytest.mark.parametrize("change,why", [
    (lambda kw: {k: v.double() for k, v in kw.items()}, "float64"),
    (lambda kw: {**kw, "A": -torch.rand(4, 300) - 0.1, "B": torch.randn(2, 300, 6), "C": torch.randn(2, 300, 6)},
     "state 300"),
])
def test_inputs_beyond_the_kernel_take_the_torch_scan(fake_mamba, monkeypatch, change, why):
    kw = change(_inputs())
    calls = []
    monkeypatch.setattr(scan, "selective_scan_cpu", lambda *a: calls.append(a) or "cpu path")
    assert scan.selective_scan(**kw) == "cpu path" and len(calls) == 1, why
    assert fake_mamba["calls"] == []


def test_mamba_without_its_cuda_extension_is_not_used(fake_mamba, monkeypatch):
    """mamba-ssm after 2.3.2.post1 imports without selective_scan_cuda (set to None) unless built
    with MAMBA_KEEP_CUDA_BUILD=TRUE; its selective_scan_fn would raise. The dispatch says so and
    runs the torch scan instead."""
    fake_mamba["interface"].selective_scan_cuda = None
    why = scan.backend("cuda")
    assert why.startswith("torch chunked scan on cuda: mamba_ssm not importable (ImportError: "
                          "mamba_ssm is installed without its CUDA extension selective_scan_cuda")
    kw = _inputs()
    assert torch.equal(scan.selective_scan(**kw), scan.selective_scan_cpu(**kw))
    assert fake_mamba["calls"] == []


def test_tensors_off_the_cpu_never_reach_the_compiled_kernel(monkeypatch):
    """A GPU without mamba-ssm runs the torch scan on the GPU, not the C kernel (which reads
    host memory): simulated with meta tensors and a kernel that fails if called."""
    monkeypatch.setattr(scan, "cpu_function", lambda: pytest.fail("the C kernel was chosen"))
    kw = {k: v.to("meta") for k, v in _inputs().items()}
    y = scan.selective_scan(**kw, delta_softplus=True)
    assert y.device.type == "meta" and y.shape == (2, 4, 6)
    with pytest.raises(ValueError, match="reads CPU tensors only"):
        monkeypatch.setattr(scan.scan_kernel, "library", lambda: object())
        scan.selective_scan_cpu(**kw, implementation="kernel")


def test_mixed_precision_is_a_checked_profile_field():
    from analysis.config import profile

    assert profile("paper").mixed_precision == "bf16"
    assert profile("smoke").mixed_precision == profile("default").mixed_precision == "no"
    assert profile("default", mixed_precision="fp16").mixed_precision == "fp16"
    with pytest.raises(ValueError, match="'mixed_precision' must be 'no' or 'bf16' or 'fp16', got 'float16'"):
        profile("default", mixed_precision="float16")


def test_gpu_environment_shares_the_cpu_pins_but_torch():
    """environment-gpu.yml: requirements.txt's pins except torch (a version mamba-ssm ships
    kernels for), plus build helpers; the header's install line pins mamba-ssm and causal-conv1d."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pin = re.compile(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)")
    pins = lambda text: {m.group(1).lower(): m.group(2) for m in map(pin.match, text.splitlines()) if m}
    cpu = pins((root / "requirements.txt").read_text())
    text = (root / "environment-gpu.yml").read_text()
    gpu = pins(text)
    assert gpu["torch"] == "2.9.1"
    assert {k: v for k, v in gpu.items() if k in cpu and k != "torch"} == {k: v for k, v in cpu.items() if k != "torch"}
    assert set(gpu) - set(cpu) == {"einops", "packaging", "ninja", "wheel"}
    assert "pip install --no-build-isolation mamba-ssm==2.3.2.post1 causal-conv1d==1.6.1" in text


def test_bad_inputs_get_the_same_clear_errors_on_the_cuda_path(fake_mamba):
    kw = _inputs()
    with pytest.raises(ValueError, match=r"delta must have u's shape \(2, 4, 6\), got \(2, 4, 5\)"):
        scan.selective_scan(**{**kw, "delta": kw["delta"][..., :5]})
    with pytest.raises(ValueError, match="A is complex"):
        scan.selective_scan(**{**kw, "A": kw["A"].to(torch.complex64)})
    assert fake_mamba["calls"] == []
