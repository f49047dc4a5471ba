"""The CPU selective scan against mamba-ssm's reference structure: outputs and gradients."""
import ast
import math
import pathlib
import sys

import pytest
import torch

from analysis.models import scan, scan_kernel


@pytest.fixture(params=["kernel", "torch"])
def impl(request, monkeypatch):
    """Run a test on each CPU implementation: the compiled kernel and the torch chunked scan."""
    if request.param == "kernel":
        if scan_kernel.library() is None:
            pytest.skip(f"no compiled kernel here: {scan_kernel.why()}")
        monkeypatch.setattr(scan, "cpu_function", lambda: scan_kernel.KernelScan)
    else:
        monkeypatch.setattr(scan, "cpu_function", lambda: scan._SelectiveScan)
    return request.param


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


def _chunks_of(monkeypatch, steps, b, d, n):
    """Make the CPU path cut time into chunks of ``steps`` so chunk boundaries are exercised."""
    monkeypatch.setattr(scan, "CHUNK_ELEMENTS", steps * b * d * n)
    assert scan.chunk_length(b, d, n, 10 ** 6) == steps


@pytest.mark.parametrize("shape", [(2, 4, 3, 7), (1, 6, 2, 70), (3, 2, 4, 130)])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("extras", [("D", "z", "delta_bias"), ()])
@pytest.mark.parametrize("softplus,last", [(True, False), (False, True)])
def test_matches_reference_outputs_and_gradients(monkeypatch, impl, shape, groups, extras, softplus, last):
    b, d, n, L = shape
    _chunks_of(monkeypatch, 5, b, d, n)  # 7 = 5 + 2, 70 = 14 x 5, 130 = 26 x 5
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


@pytest.mark.parametrize("chunk", [4, 9])
def test_gradcheck_float64(monkeypatch, impl, chunk):
    _chunks_of(monkeypatch, chunk, 1, 4, 2)  # L = 9: chunks 4 + 4 + 1, or one chunk
    kw = _inputs(1, 4, 2, 9, groups=2, dtype=torch.float64)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    args = tuple(kw[k].clone().requires_grad_(True) for k in names)

    def scan_with_last(*a):
        y, last = scan.selective_scan_cpu(*a[:5], D=a[5], z=a[6], delta_bias=a[7], delta_softplus=True,
                                          return_last_state=True)
        return y, last

    assert torch.autograd.gradcheck(scan_with_last, args, eps=1e-6, atol=1e-6)


def test_chunk_length_does_not_change_the_result(monkeypatch):
    kw = _inputs(2, 4, 3, 23)
    ys = []
    for steps in (1, 3, 23):
        _chunks_of(monkeypatch, steps, 2, 4, 3)
        ys.append(scan.selective_scan_cpu(**kw, delta_softplus=True))
    assert torch.allclose(ys[0], ys[1], atol=1e-6) and torch.allclose(ys[0], ys[2], atol=1e-6)


def test_B_and_C_with_different_groupings(monkeypatch, impl):
    _chunks_of(monkeypatch, 4, 2, 8, 3)
    g = torch.Generator().manual_seed(1)
    kw = _inputs(2, 8, 3, 10)
    kw["B"] = torch.randn(2, 2, 3, 10, generator=g)   # channels 0-3 read group 0, 4-7 group 1
    kw["C"] = torch.randn(2, 4, 3, 10, generator=g)
    opts = {"use": ("u", "delta", "A", "B", "C", "D"), "softplus": True, "last": False}
    y_ref, _, g_ref = _run(scan.selective_scan_ref, kw, opts)
    y, _, grads = _run(scan.selective_scan_cpu, kw, opts)
    _assert_matches(y, y_ref, grads, g_ref)


def _assert_matches(y, y_ref, grads, g_ref):
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for k in g_ref:
        assert torch.allclose(grads[k], g_ref[k], rtol=1e-4, atol=1e-4), k


def test_hand_worked_scan(impl):
    """One channel, one state, A = -log 2, delta = 1 (no softplus): x_t = x_{t-1} / 2 + u_t B_t."""
    u = torch.tensor([[[1.0, 2.0, 4.0]]])
    y, last = scan.selective_scan_cpu(u, torch.ones(1, 1, 3), -torch.full((1, 1), math.log(2.0)),
                                      torch.ones(1, 1, 3), torch.tensor([[[1.0, 1.0, 2.0]]]),
                                      D=torch.tensor([0.5]), return_last_state=True)
    # x = 1, 2.5, 5.25; y = C x + D u = 1.5, 3.5, 12.5
    assert torch.allclose(y, torch.tensor([[[1.5, 3.5, 12.5]]]))
    assert torch.allclose(last, torch.tensor([[[5.25]]]))


def test_bfloat16_inputs_accumulate_in_float32(impl):
    kw = {k: v.to(torch.bfloat16) for k, v in _inputs(2, 4, 3, 40).items()}
    y = scan.selective_scan_cpu(**kw, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = scan.selective_scan_ref(**{k: v.float() for k, v in kw.items()}, delta_softplus=True)
    assert torch.allclose(y.float(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("L", [0, 1])
def test_short_sequences(impl, L):
    kw = _inputs(2, 3, 2, L)
    y = scan.selective_scan_cpu(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"])
    assert y.shape == (2, 3, L)
    assert torch.allclose(y, scan.selective_scan_ref(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"]), atol=1e-6)


def test_non_contiguous_inputs(monkeypatch, impl):
    """u, delta, z laid out [b, L, d] in memory (as Mamba's in_proj gives them), B a strided view."""
    _chunks_of(monkeypatch, 4, 2, 4, 3)
    kw = _inputs(2, 4, 3, 11)
    strided = dict(kw)
    for k in ("u", "delta", "z"):
        strided[k] = kw[k].transpose(1, 2).contiguous().transpose(1, 2)
        assert not strided[k].is_contiguous()
    strided["B"] = torch.stack([kw["B"], -kw["B"]], dim=-1)[..., 0]
    assert not strided["B"].is_contiguous() and torch.equal(strided["B"], kw["B"])
    opts = {"use": tuple(kw), "softplus": True, "last": False}
    y_ref, _, g_ref = _run(scan.selective_scan_ref, kw, opts)
    y, _, grads = _run(scan.selective_scan_cpu, strided, opts)
    _assert_matches(y, y_ref, grads, g_ref)


def test_inputs_are_never_modified(impl):
    """Batch 1 in [b, L, d] memory makes time chunks contiguous views of the inputs themselves."""
    kw = _inputs(1, 4, 3, 9)
    for k in ("u", "delta", "z"):
        kw[k] = kw[k].transpose(1, 2).contiguous().transpose(1, 2)
    before = {k: v.clone() for k, v in kw.items()}
    leaves = {k: v.requires_grad_(True) for k, v in kw.items()}
    y = scan.selective_scan_cpu(**leaves, delta_softplus=False)
    y.sum().backward()
    for k in kw:
        assert torch.equal(kw[k].detach(), before[k]), k


@pytest.mark.parametrize("arg,bad,match", [
    ("delta", torch.zeros(2, 4, 5), "delta must have u's shape"),
    ("A", torch.zeros(3, 2), "A must be"),
    ("B", torch.zeros(2, 3, 11), "B must be"),
    ("D", torch.zeros(5), "D must be"),
    ("A", torch.zeros(4, 2, dtype=torch.complex64), "complex"),
    ("B", torch.zeros(2, 3, 2, 11), "B must be"),           # 3 groups do not divide dim 4
    ("C", torch.zeros(4, 2), "C must be"),                  # constant C is not supported
    ("z", torch.zeros(2, 4, 10), "z must have"),
    ("delta_bias", torch.zeros(4, 1), "delta_bias must be"),
])
def test_bad_shapes_name_the_argument(arg, bad, match):
    kw = {k: v for k, v in _inputs(2, 4, 2, 11).items() if k in ("u", "delta", "A", "B", "C", "D")}
    kw[arg] = bad
    with pytest.raises(ValueError, match=match):
        scan.selective_scan(**kw)


@pytest.mark.parametrize("arg,bad,error,match", [
    ("u", torch.zeros(2, 4, 11, dtype=torch.int64), TypeError, "u must be a floating-point"),
    ("B", torch.zeros(2, 2, 11).numpy(), TypeError, "B must be a torch.Tensor"),
    ("D", torch.zeros(4, device="meta"), ValueError, "D is on meta but u is on cpu"),
])
def test_bad_dtypes_and_devices_name_the_argument(arg, bad, error, match):
    kw = {k: v for k, v in _inputs(2, 4, 2, 11).items() if k in ("u", "delta", "A", "B", "C", "D")}
    kw[arg] = bad
    with pytest.raises(error, match=match):
        scan.selective_scan(**kw)


def test_backend_says_why(monkeypatch):
    monkeypatch.setattr(scan_kernel, "library", lambda: object())
    assert scan.backend("cpu") == "CPU path, compiled kernel (analysis/models/scan_kernel.c): tensors on cpu, not CUDA"
    monkeypatch.setattr(scan_kernel, "library", lambda: None)
    monkeypatch.setattr(scan_kernel, "why", lambda: "no C compiler")
    assert scan.backend("cpu") == "CPU path, torch chunked scan, because no C compiler: tensors on cpu, not CUDA"


def test_kernel_build_failure_falls_back_to_torch_with_the_reason(cache_dir, monkeypatch):
    monkeypatch.setattr(scan_kernel, "_STATE", {"checked": False, "lib": None, "why": ""})
    monkeypatch.setenv("CC", "false")     # a compiler that always fails, in an empty cache
    assert scan_kernel.library() is None
    assert scan_kernel.why().startswith("the compiled kernel is unavailable (RuntimeError: false failed")
    assert scan.cpu_function() is scan._SelectiveScan
    kw = _inputs(2, 4, 3, 9)
    assert torch.allclose(scan.selective_scan_cpu(**kw), scan.selective_scan_ref(**kw), atol=1e-5)


def test_implementation_can_be_forced(monkeypatch):
    kw = _inputs(2, 4, 3, 9)
    ref = scan.selective_scan_ref(**kw)
    assert torch.allclose(scan.selective_scan_cpu(**kw, implementation="torch"), ref, atol=1e-5)
    with pytest.raises(ValueError, match="implementation must be"):
        scan.selective_scan_cpu(**kw, implementation="cuda")
    monkeypatch.setattr(scan_kernel, "library", lambda: None)
    monkeypatch.setattr(scan_kernel, "why", lambda: "no C compiler")
    with pytest.raises(RuntimeError, match="no C compiler"):
        scan.selective_scan_cpu(**kw, implementation="kernel")


def test_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(scan_kernel, "_STATE", {"checked": False, "lib": None, "why": ""})
    monkeypatch.setenv("ANALYSIS_SCAN_KERNEL", "0")
    assert scan_kernel.library() is None and "ANALYSIS_SCAN_KERNEL=0" in scan_kernel.why()


def test_kernel_split_over_threads_matches_one_thread():
    """Rows (forward) and batches (backward) split over threads, with per-thread dA, dD and
    delta_bias accumulators summed: the result equals the one-thread run."""
    if scan_kernel.library() is None:
        pytest.skip(f"no compiled kernel here: {scan_kernel.why()}")
    kw = _inputs(3, 8, 4, 17, groups=2)
    opts = {"use": tuple(kw), "softplus": True, "last": True}
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(_run(scan.selective_scan_cpu, kw, opts))
    (y1, l1, g1), (y2, l2, g2) = results
    assert torch.allclose(y1, y2, atol=1e-6) and torch.allclose(l1, l2, atol=1e-6)
    for k in g1:
        assert torch.allclose(g1[k], g2[k], rtol=1e-5, atol=1e-6), k


def test_mamba_import_failure_is_explained_and_cached(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)   # makes `import mamba_ssm...` raise ImportError
    monkeypatch.setattr(scan, "_MAMBA", {"checked": False, "fn": None, "why": ""})
    first = scan.backend("cuda")
    assert first.startswith("torch chunked scan on cuda: mamba_ssm not importable (ModuleNotFoundError")
    monkeypatch.delitem(sys.modules, "mamba_ssm")         # a second call must not retry the import
    assert scan.backend("cuda") == first


def test_module_import_does_not_import_mamba_ssm():
    """mamba_ssm is imported only inside the dispatch: no module-level import names it."""
    tree = ast.parse(pathlib.Path(scan.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top_level for alias in node.names] + \
        [node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
    assert "torch" in names and not any("mamba" in name for name in names)
    assert "mamba_ssm" in pathlib.Path(scan.__file__).read_text()   # ... but the lazy import exists


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_dispatch_uses_mamba_ssm_and_agrees():
    pytest.importorskip("mamba_ssm", reason="mamba-ssm is not installed (pip install -e .[cuda])")
    assert scan.backend("cuda").startswith("mamba-ssm")
    kw = {k: v.cuda() for k, v in _inputs(2, 8, 4, 64).items()}
    y = scan.selective_scan(**kw, delta_softplus=True)
    ref = scan.selective_scan_cpu(**{k: v.cpu() for k, v in kw.items()}, delta_softplus=True)
    assert torch.allclose(y.cpu(), ref, rtol=1e-3, atol=1e-3)


def test_benchmark_reports_every_figure_on_a_tiny_shape():
    from analysis import bench

    frame = bench.scan_benchmark(lengths=(12,), repeats=1, threads=1, batch=2, dim=8, state=4, ref_backward_max=12)
    assert list(frame["pass"]) == ["forward", "forward+backward"]
    for column in ("ours_s", "torch_scan_s", "unbind_s", "ref_s", "x_vs_ref", "x_vs_torch_scan", "x_vs_unbind",
                   "ours_peak_mb", "GB_per_s", "copy_GB_per_s", "exp_bound_s", "x_exp_bound"):
        assert frame[column].notna().all() and (frame[column] >= 0).all(), column
    assert (frame["err_y"] < 1e-5).all() and (frame["err_y_unbind"] < 1e-5).all()
    assert (frame["err_y_torch_scan"] < 1e-5).all()
    backward = frame.iloc[1]
    assert backward["grad_truth"] == "ref"
    for k in bench.SCAN_INPUTS:
        assert backward[f"rel_err_d{k}"] < 1e-4, k
    with pytest.raises(ValueError, match="positive integers"):
        bench.scan_benchmark(lengths=(0,))
