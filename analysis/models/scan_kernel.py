"""A compiled CPU kernel for the selective scan: ``scan_kernel.c``, built with the system C
compiler on first use and loaded with ctypes (no torch headers, no build tool: one ``cc`` call
of about a second). ``scan.selective_scan_cpu`` runs it when it is available and falls back to
the pure-torch chunked scan when it is not (no compiler, a failed build, or
``ANALYSIS_SCAN_KERNEL=0``); ``scan.backend()`` says which and why.

Why: the torch scan moves [chunk, batch, state, dim] temporaries through memory a dozen times
per step and spends most of its time in small ops and in exp(delta A) (profiled: the scan was
two thirds of a BiMamba training step). The kernel works on one batch and a block of up to
16 channels of one group at a time, keeping the block's N states in a small buffer, like
mamba-ssm's CUDA kernel keeps them in SRAM; its innermost loops run over the block's channels
(contiguous in the [b, L, d] layout), so they vectorise, exp included, with no reduction
between lanes:

    forward, per block, x = 0, for t = 0..L-1:
        dt_t = softplus(delta_t + bias);  x <- exp(dt_t A) * x + dt_t u_t B_t;
        y_t = <x, C_t> + D u_t;  out_t = y_t * silu(z_t)
    backward, per block: recompute x_{-1..L-1} and exp(dt_t A) into a buffer (O(L N) per
        channel), then run the adjoint g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1} backwards in
        time, with p_t = g_t x_{t-1} exp(dt_t A):
        dA += sum_t p_t dt_t;  d dt_t = <p_t, A> + u_t <g_t, B_t>;  du_t = dt_t <g_t, B_t> + D dy_t;
        dB_t += sum_c g_t dt_t u_t;  dC_t += sum_c x_t dy_t  (over the channels c of B's group)

``-O3 -ffast-math`` lets GCC call glibc's vector exp; the code is compiled for this machine's
CPU (``-march=native``), so the cache key holds the CPU's flags as well as the source.
Threads: the (batch, block) units (forward) or the batches (backward, where the channels of
one batch share dB and dC) are split over ``torch.get_num_threads()`` Python threads; ctypes
releases the GIL during each call. Each backward thread has private dA, dD, dbias
accumulators, summed afterwards. Benchmark: ``python -m analysis.bench scan``.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..cache import cache_root

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("scan_kernel.c")
FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-march=native", "-shared", "-fPIC", "-std=c99"]
_STATE = {"checked": False, "lib": None, "why": ""}
_TYPES = {torch.float32: "f32", torch.float64: "f64"}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build() -> Path:
    """Compile scan_kernel.c into the artifact cache (once per source, flags and CPU)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler (cc or gcc; set CC)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + _cpu_flags().encode()
                         + platform.machine().encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / key / "scan_kernel.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / "scan_kernel.so"
        proc = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-500:]}")
        os.replace(built, target)  # atomic: a concurrent build writes the same bytes
    return target


def _declare(lib) -> None:
    P, L, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for suf in _TYPES.values():
        fwd, bwd = getattr(lib, f"scan_fwd_{suf}"), getattr(lib, f"scan_bwd_{suf}")
        fwd.argtypes = [P] * 8 + [I] + [L] * 6 + [P, P]
        bwd.argtypes = [P] * 8 + [I] + [L] * 6 + [P] * 10
        fwd.restype = bwd.restype = I
    lib.scan_block_width.argtypes, lib.scan_block_width.restype = [], I


def library():
    """The loaded kernel, or None (``why()`` says why); built and loaded once per process."""
    if not _STATE["checked"]:
        _STATE["checked"] = True
        if os.environ.get("ANALYSIS_SCAN_KERNEL", "1") == "0":
            _STATE["why"] = "the compiled kernel is off (ANALYSIS_SCAN_KERNEL=0)"
            return None
        try:
            lib = ctypes.CDLL(str(_build()))
            _declare(lib)
            _STATE["lib"] = lib
        except Exception as err:  # no compiler, failed build, unloadable library
            _STATE["why"] = f"the compiled kernel is unavailable ({type(err).__name__}: {err})"
            log.warning("selective scan: %s; using the torch CPU scan", _STATE["why"])
    return _STATE["lib"]


def why() -> str:
    return _STATE["why"]


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _spans(total: int, parts: int) -> list[tuple[int, int]]:
    """``total`` items cut into at most ``parts`` contiguous, nearly equal spans."""
    parts = max(1, min(parts, total))
    edges = [total * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _run(calls) -> None:
    """Run the kernel calls (argument-free callables returning the C status) on threads."""
    if len(calls) <= 1:
        codes = [f() for f in calls]
    else:
        with ThreadPoolExecutor(len(calls)) as pool:
            codes = list(pool.map(lambda f: f(), calls))
    if any(codes):
        raise MemoryError("the selective scan kernel could not allocate its block buffer")


class KernelScan(torch.autograd.Function):
    """The selective scan through the compiled kernel. Same arguments as ``scan._SelectiveScan``
    (u, delta, z: [b, d, L]; A: [d, n]; B, C: [b, G, n, L]; D, delta_bias: [d]), all float32 or
    all float64; returns (out [b, d, L], last state [b, d, n]). Inside, u, delta, z and the
    outputs are laid out [b, L, d] (free for Mamba's in_proj output, whose channels are
    contiguous), A as [n, d] and B, C as [b, G, L, n]."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus):
        lib = library()
        b, d, L = u.shape
        G, n = B.shape[1], A.shape[1]
        fwd = getattr(lib, f"scan_fwd_{_TYPES[u.dtype]}")
        channels_last = lambda t: None if t is None else t.transpose(1, 2).contiguous()   # [b, L, d]
        u_, delta_, z_ = channels_last(u), channels_last(delta), channels_last(z)
        At = A.t().contiguous()
        Bt, Ct = B.transpose(2, 3).contiguous(), C.transpose(2, 3).contiguous()   # [b, G, L, n]
        D, delta_bias = (None if t is None else t.contiguous() for t in (D, delta_bias))  # read as flat [d]
        out, last = u.new_empty(b, L, d), u.new_empty(b, d, n)
        units = b * G * -(-(d // G) // lib.scan_block_width())
        ins = [_ptr(t) for t in (u_, delta_, At, Bt, Ct, D, z_, delta_bias)]
        _run([(lambda u0=u0, u1=u1: fwd(*ins, int(softplus), u0, u1, d, L, n, G, _ptr(out), _ptr(last)))
              for u0, u1 in _spans(units, torch.get_num_threads())])
        ctx.save_for_backward(u_, delta_, At, Bt, Ct, D, z_, delta_bias)
        ctx.softplus = softplus
        return out.transpose(1, 2), last

    @staticmethod
    def backward(ctx, dout, dlast):
        u_, delta_, At, Bt, Ct, D, z_, delta_bias = ctx.saved_tensors
        lib = library()
        b, L, d = u_.shape
        G, n = Bt.shape[1], At.shape[0]
        bwd = getattr(lib, f"scan_bwd_{_TYPES[u_.dtype]}")
        dout = dout.transpose(1, 2).contiguous()
        dlast = dlast.contiguous() if dlast is not None else None
        du, ddelta = torch.empty_like(u_), torch.empty_like(delta_)
        dz = torch.empty_like(z_) if z_ is not None else None
        dBt, dCt = torch.zeros_like(Bt), torch.zeros_like(Ct)
        spans = _spans(b, torch.get_num_threads())
        acc = [(At.new_zeros(n, d), At.new_zeros(d), At.new_zeros(d)) for _ in spans]   # dA^T, dD, dbias
        ins = [_ptr(t) for t in (u_, delta_, At, Bt, Ct, D, z_, delta_bias)]
        outs = [_ptr(t) for t in (du, ddelta, dz, dBt, dCt)]
        _run([(lambda b0=b0, b1=b1, a=a: bwd(*ins, int(ctx.softplus), b0, b1, d, L, n, G, _ptr(dout),
                                             _ptr(dlast), *outs, *map(_ptr, a)))
              for (b0, b1), a in zip(spans, acc)])
        dAt, dD, dbias = (sum(parts) for parts in zip(*acc))
        T = lambda t: None if t is None else t.transpose(1, 2)
        return (T(du), T(ddelta), dAt.t(), dBt.transpose(2, 3), dCt.transpose(2, 3),
                dD if D is not None else None, T(dz), dbias if delta_bias is not None else None, None)
