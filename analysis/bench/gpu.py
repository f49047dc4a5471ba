"""``python -m analysis.bench gpu``: the first command on a CUDA machine.

It runs mamba-ssm's scan against the CPU path (relative error of y and every gradient, both
timed) at BiMamba's width, ``paper-shapes`` on the GPU (its
measured peak beside the estimate) and one book chapter under the smoke profile. Without CUDA it
prints what is missing and exits 0.
"""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time

import torch

from ..config import PROFILES, profile
from ..models import scan
from .scan import SCAN_INPUTS, scan_inputs
from .shapes import gpu_bytes, paper_shapes, print_paper_shapes

HELP = "on a CUDA machine: mamba-ssm's scan, one step per model, a smoke chapter"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="paper", choices=list(PROFILES), help="shapes of the scan check and the steps")
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--batch", type=int, default=2, help="sequences per training step")
    p.add_argument("--chapter", default="02", help="book chapter run under the smoke profile")
    p.add_argument("--no-chapter", action="store_true", help="skip the chapter run")


GPU_TOLERANCE = 1e-3   # scan check: max |kernel - CPU path| over max |CPU path|, output and every gradient


def gpu_missing() -> list[str]:
    """What the GPU check needs and this machine lacks ([] = nothing)."""
    missing = []
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none: a CPU-only build"
        missing.append(f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {built})")
    if scan._mamba_fn() is None:
        missing.append(scan._MAMBA["why"])
    return missing


def _scan_pass(fn, inputs: dict, weight: torch.Tensor, device: torch.device) -> tuple:
    """(seconds, y, gradients) of ``fn`` forward+backward of sum(y * weight) on ``device``."""
    leaves = {k: v.to(device).requires_grad_(True) for k, v in inputs.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    y = fn(**leaves, delta_softplus=True)
    (y * weight.to(device)).sum().backward()
    sync()
    return time.perf_counter() - t0, y.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items()}


def gpu_scan_check(cfg, batch: int = 4, repeats: int = 5, device="cuda") -> dict:
    """``selective_scan`` on ``device`` (mamba-ssm's kernel on a GPU) against the CPU path at
    BiMamba's width under ``cfg`` (d = expand * d_model, state mamba_d_state, length max_length):
    worst relative error of y and of every gradient, and forward+backward seconds of each
    (``device``: median of ``repeats`` after a warm-up)."""
    d, n, L = cfg.mamba_expand * cfg.d_model, cfg.mamba_d_state, cfg.max_length
    inputs = scan_inputs(batch, d, n, L)
    weight = torch.randn(batch, d, L, generator=torch.Generator().manual_seed(1))
    device = torch.device(device)
    gpu = [_scan_pass(scan.selective_scan, inputs, weight, device) for _ in range(repeats + 1)][1:]
    cpu = _scan_pass(scan.selective_scan_cpu, inputs, weight, torch.device("cpu"))
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    errors = {"y": rel(gpu[-1][1], cpu[1]), **{f"d{k}": rel(gpu[-1][2][k], cpu[2][k]) for k in SCAN_INPUTS}}
    return {"shape": (batch, d, n, L), "errors": errors, "gpu_s": statistics.median(g[0] for g in gpu),
            "cpu_s": cpu[0], "ok": max(errors.values()) <= GPU_TOLERANCE}


def gpu_chapter_check(chapter: str = "02", timeout: int = 1800) -> dict:
    """Run book chapter ``chapter`` under the smoke profile in a fresh process (on the GPU,
    which the training loop picks when CUDA is available); its return code and last lines."""
    cmd = [sys.executable, "-m", "analysis.book", "run", "--only", chapter, "--profile", "smoke", "--no-html"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"command": " ".join(cmd[1:]), "ok": proc.returncode == 0, "seconds": time.perf_counter() - t0,
            "tail": tail}


def command(args) -> int:
    missing = gpu_missing()
    if not torch.cuda.is_available():
        print("python -m analysis.bench gpu: skipped, this machine cannot run the GPU check:")
        for item in missing:
            print(f"  - {item}")
        print("On a CUDA machine: see environment-gpu.yml (a CUDA torch, then mamba-ssm and causal-conv1d).")
        return 0
    cfg = profile(args.profile)
    print(f"GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"scan backend: {scan.backend('cuda')}")
    results = {}
    if scan._mamba_fn() is None:
        print(f"SKIP scan check: {missing[0]}")
    else:
        sc = gpu_scan_check(cfg)
        results["scan"] = sc["ok"]
        print(f"{'PASS' if sc['ok'] else 'FAIL'} scan (b, d, n, L) = {sc['shape']}: forward+backward "
              f"{sc['gpu_s'] * 1e3:.1f} ms kernel, {sc['cpu_s']:.2f} s CPU path "
              f"({sc['cpu_s'] / sc['gpu_s']:.0f}x); worst relative error {max(sc['errors'].values()):.1e} "
              f"(tolerance {GPU_TOLERANCE:g}): " + ", ".join(f"{k} {v:.1e}" for k, v in sc["errors"].items()))
    rows = paper_shapes(cfg, args.models, args.batch, None, torch.get_num_threads(), "cuda")
    results["steps"] = all(math.isfinite(r["loss"]) for r in rows)
    print_paper_shapes(rows, cfg, cfg.mixed_precision, "cuda")
    gib = lambda x: x / 2 ** 30
    for r in rows:
        print(f"  {r['model']}: measured step peak {gib(r['step_peak']):.2f} GiB at batch {r['batch']}, "
              f"estimate {gib(gpu_bytes(r, r['batch'])):.2f} GiB")
    if not args.no_chapter:
        ch = gpu_chapter_check(args.chapter)
        results["chapter"] = ch["ok"]
        print(f"{'PASS' if ch['ok'] else 'FAIL'} {ch['command']} in {ch['seconds']:.0f} s")
        print("\n".join(f"    {line}" for line in ch["tail"]))
    print("GPU check: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items()))
    return 0 if all(results.values()) else 1
