"""The CPU selective scan against mamba-ssm's reference structure: outputs and gradients."""
import pytest
import torch

from analysis.models import scan


def _inputs(b, d, n, L, groups=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    bc = (b, n, L) if groups is None else (b, groups, n, L)
    return dict(u=r(b, d, L), delta=r(b, d, L).abs() * 0.5, A=-torch.rand(d, n, generator=g, dtype=dtype) * 2 - 0.1,
                B=r(*bc), C=r(*bc), D=r(d), z=r(b, d, L), delta_bias=r(d) * 0.1)


def _run(fn, kw, opts):
    leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items() if k in opts["use"]}
    args = {k: leaves.get(k) for k in ("u", "delta", "A", "B", "C")}
    for k in ("D", "z", "delta_bias"):
        if k in opts["use"]:
            args[k] = leaves[k]
    out = fn(**args, delta_softplus=opts["softplus"], return_last_state=opts["last"])
    y, last = out if opts["last"] else (out, None)
    loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + (last.sum() if last is not None else 0)
    loss.backward()
    return y, last, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("shape", [(2, 4, 3, 7), (1, 6, 2, 70), (3, 2, 4, 130)])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("extras", [("D", "z", "delta_bias"), ()])
@pytest.mark.parametrize("softplus,last", [(True, False), (False, True)])
def test_matches_reference_outputs_and_gradients(shape, groups, extras, softplus, last):
    b, d, n, L = shape
    kw = _inputs(b, d, n, L, groups)
    opts = {"use": ("u", "delta", "A", "B", "C") + extras, "softplus": softplus, "last": last}
    y_ref, last_ref, g_ref = _run(scan.selective_scan_ref, kw, opts)
    y, last_out, g = _run(scan.selective_scan_cpu, kw, opts)
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    if last:
        assert torch.allclose(last_out, last_ref, rtol=1e-5, atol=1e-5)
    for k in g_ref:
        scale = g_ref[k].abs().max().clamp_min(1e-6)
        assert (g[k] - g_ref[k]).abs().max() / scale < 1e-4, k


def test_gradcheck_float64():
    kw = _inputs(1, 3, 2, 9, dtype=torch.float64)
    args = tuple(kw[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C"))
    assert torch.autograd.gradcheck(lambda u, dl, A, B, C: scan.selective_scan_cpu(u, dl, A, B, C, delta_softplus=True),
                                    args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("L", [0, 1])
def test_short_sequences(L):
    kw = _inputs(2, 3, 2, L)
    y = scan.selective_scan_cpu(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"])
    assert y.shape == (2, 3, L)
    assert torch.allclose(y, scan.selective_scan_ref(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"]), atol=1e-6)


def test_non_contiguous_inputs():
    kw = _inputs(2, 4, 3, 11)
    u_t = kw["u"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not u_t.is_contiguous()
    y = scan.selective_scan_cpu(u_t, kw["delta"], kw["A"], kw["B"], kw["C"])
    assert torch.allclose(y, scan.selective_scan_ref(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"]), atol=1e-5)


@pytest.mark.parametrize("arg,bad,match", [
    ("delta", torch.zeros(2, 4, 5), "delta must have u's shape"),
    ("A", torch.zeros(3, 2), "A must be"),
    ("B", torch.zeros(2, 3, 11), "B must be"),
    ("D", torch.zeros(5), "D must be"),
    ("A", torch.zeros(4, 2, dtype=torch.complex64), "complex"),
])
def test_bad_shapes_name_the_argument(arg, bad, match):
    kw = {k: v for k, v in _inputs(2, 4, 2, 11).items() if k in ("u", "delta", "A", "B", "C", "D")}
    kw[arg] = bad
    with pytest.raises(ValueError, match=match):
        scan.selective_scan(**kw)


def test_backend_says_why():
    assert "CPU path" in scan.backend("cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_dispatch_uses_mamba_ssm_and_agrees():
    pytest.importorskip("mamba_ssm", reason="mamba-ssm is not installed (pip install -e .[cuda])")
    assert scan.backend("cuda").startswith("mamba-ssm")
    kw = {k: v.cuda() for k, v in _inputs(2, 8, 4, 64).items()}
    y = scan.selective_scan(**kw, delta_softplus=True)
    ref = scan.selective_scan_cpu(**{k: v.cpu() for k, v in kw.items()}, delta_softplus=True)
    assert torch.allclose(y.cpu(), ref, rtol=1e-3, atol=1e-3)
