"""The selective scan of Mamba (Gu & Dao 2023), with the signature and semantics of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.

Shapes (mamba-ssm's shorthand): u, delta: r(B D L); A: r(D N) (real only here);
B, C: r(B N L) or grouped r(B G N L) (channel d uses group d // (D/G)); D: r(D); z: r(B D L);
delta_bias: r(D).

    delta <- softplus(delta + delta_bias)          (if delta_softplus)
    x_t    = exp(delta_t A) * x_{t-1} + delta_t B_t u_t          x: (B D N)
    y_t    = <x_t, C_t> + D u_t ;   y <- y * silu(z)

Dispatch (``backend()`` says which and why): CUDA tensors (``on_cuda``) with mamba-ssm and its
compiled extension importable run mamba-ssm's fused kernel, ``selective_scan_fn``, with the
arguments conformed to what its kernel checks (``kernel_arguments``: u, delta, z, B, C in one of
float32/float16/bfloat16; A, D, delta_bias float32; B and C with one group count; its wrapper
makes the time axis contiguous itself); float64 inputs or a state above 256 (the kernel's
limits) and CUDA tensors without mamba-ssm run the torch chunked scan on the GPU; CPU tensors
run the CPU path. mamba_ssm is imported lazily, on the first CUDA call, never at module import
(it cannot be installed against a CPU torch); an import failure is remembered and logged once.

The CPU path (``selective_scan_cpu``) runs a compiled C kernel (``scan_kernel``: one batch and
a block of 16 channels at a time, the block's states in a small buffer, loops over channels
vectorised, exp included) when the machine's C compiler builds it, and otherwise
``_SelectiveScan``, one ``torch.autograd.Function`` chunked over time: per chunk a few
vectorised ops, one in-place ``addcmul_`` per time step, a hand-written reverse-time backward
that recomputes states from one saved state per chunk, so memory stays O(batch * dim * state)
beyond inputs and outputs. Both compute in float32 for bfloat16/float16
inputs (float64 stays float64). Limits: real A, B, C only (complex A raises), B and C must vary
with batch and time ([batch, state, length] or grouped), as in Mamba; mamba-ssm's constant
[dim, state] B or C is not supported. ``selective_scan_ref`` is mamba-ssm's reference structure,
for tests and benchmarks (``python -m analysis.bench scan``).
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from . import scan_kernel
from .scan_kernel import KernelScan

log = logging.getLogger(__name__)
_MAMBA = {"checked": False, "fn": None, "why": ""}


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)   # mamba-ssm's u/delta/z/B/C dtypes
KERNEL_MAX_STATE = 256                                             # selective_scan.cpp: dstate <= 256


def on_cuda(device: torch.device) -> bool:
    """Whether tensors on ``device`` are for mamba-ssm's CUDA kernel (the one device test; tests
    replace it to drive the CUDA dispatch with CPU tensors and a fake mamba_ssm)."""
    return device.type == "cuda"


def _mamba_fn():
    if not _MAMBA["checked"]:
        _MAMBA["checked"] = True
        try:  # lazy: mamba_ssm imports only against a CUDA torch
            from mamba_ssm.ops import selective_scan_interface as interface
            # mamba-ssm after 2.3.2.post1 imports without its compiled kernel (an opt-in build) and
            # raises only when called; 2.x up to 2.3.2.post1 fail at the import above instead.
            if getattr(interface, "selective_scan_cuda", "not an attribute") is None:
                raise ImportError("mamba_ssm is installed without its CUDA extension selective_scan_cuda; "
                                  "reinstall with MAMBA_KEEP_CUDA_BUILD=TRUE pip install --no-build-isolation mamba-ssm")
            _MAMBA["fn"] = interface.selective_scan_fn
        except Exception as err:  # ImportError, missing CUDA extension, triton...
            _MAMBA["why"] = f"mamba_ssm not importable ({type(err).__name__}: {err})"
            log.warning("selective scan: %s; CUDA tensors use the torch chunked scan", _MAMBA["why"])
    return _MAMBA["fn"]


def _kernel_refuses(u: torch.Tensor, A: torch.Tensor) -> str:
    """Why mamba-ssm's kernel cannot take these inputs ("" if it can)."""
    if u.dtype not in KERNEL_DTYPES:
        return f"u is {u.dtype}; the CUDA kernel takes float32, float16 or bfloat16"
    if A.shape[1] > KERNEL_MAX_STATE:
        return f"state size {A.shape[1]} > {KERNEL_MAX_STATE}, the CUDA kernel's limit"
    return ""


def backend(device: str | torch.device = "cpu") -> str:
    """Which implementation ``selective_scan`` runs for tensors on ``device``, and why."""
    device = torch.device(device)
    if not on_cuda(device):
        cpu = ("compiled kernel (analysis/models/scan_kernel.c)" if scan_kernel.library() is not None
               else f"torch chunked scan, because {scan_kernel.why()}")
        return f"CPU path, {cpu}: tensors on {device.type}, not CUDA"
    if _mamba_fn() is None:
        return f"torch chunked scan on {device.type}: {_MAMBA['why']}"
    return (f"mamba-ssm CUDA kernel (selective_scan_fn); the torch chunked scan for float64 or a state "
            f"above {KERNEL_MAX_STATE}")


def _check(u, delta, A, B, C, D, z, delta_bias):
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in named.items():
        if t is None and name in ("u", "delta", "A", "B", "C"):
            raise ValueError(f"{name} is required, got None")
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t is not None and not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}; convert it with .float()")
        if t is not None and t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}; move all inputs to one device")
    for name in ("u", "delta", "B", "C", "D", "z", "delta_bias"):
        if named[name] is not None and named[name].is_complex():
            raise ValueError(f"{name} is complex: the CPU selective scan supports real inputs only")
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, dim, length], got shape {tuple(u.shape)}")
    b, d, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be [dim={d}, state], got shape {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("A is complex: the CPU selective scan supports real A only")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        ok = (t.dim() == 3 and t.shape == (b, n, L)) or \
             (t.dim() == 4 and t.shape[0] == b and t.shape[2:] == (n, L) and d % t.shape[1] == 0)
        if not ok:
            constant = " (a constant [dim, state] B or C is not supported)" if t.dim() == 2 else ""
            raise ValueError(f"{name} must be [batch={b}, state={n}, length={L}] or "
                             f"[batch, groups dividing {d}, {n}, {L}], got shape {tuple(t.shape)}{constant}")
    if D is not None and D.shape != (d,):
        raise ValueError(f"D must be [dim={d}], got shape {tuple(D.shape)}")
    if delta_bias is not None and delta_bias.shape != (d,):
        raise ValueError(f"delta_bias must be [dim={d}], got shape {tuple(delta_bias.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


def _expand_groups(t: torch.Tensor, d: int) -> torch.Tensor:
    """[B, G, N, L] -> [B, D, N, L] (channel d reads group d // (D/G)); [B, N, L] unchanged."""
    if t.dim() == 3:
        return t
    return t.repeat_interleave(d // t.shape[1], dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Reference with mamba-ssm's structure: discretise every step first ([B, D, L, N]
    tensors), then step through time by indexing. For tests and benchmarks only."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, L = u.shape
    Bx, Cx = _expand_groups(B.float(), d), _expand_groups(C.float(), d)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A.float()))
    if Bx.dim() == 3:
        deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, Bx, u)
    else:
        deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, Bx, u)
    x = u.new_zeros(b, d, A.shape[1])
    ys = []
    for i in range(L):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if Cx.dim() == 3:
            ys.append(torch.einsum("bdn,bn->bd", x, Cx[:, :, i]))
        else:
            ys.append(torch.einsum("bdn,bdn->bd", x, Cx[:, :, :, i]))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(b, d, 0)
    out = y if D is None else y + u * D[:, None].float()
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


CHUNK_ELEMENTS = 1 << 20  # states per chunk buffer: T * batch * state * dim (4 MiB in float32)


def chunk_length(b: int, d: int, n: int, L: int) -> int:
    """Time steps per chunk: buffers of about CHUNK_ELEMENTS states, reused for every chunk."""
    return max(1, min(L, CHUNK_ELEMENTS // max(1, b * d * n)))


def _chunk_steps(u, delta, delta_bias, softplus, s, e):
    """Time-major [k, b, d] copies of u and of the step size for time steps s..e-1:
    (u_c, delta_c + bias before softplus, step size after softplus)."""
    u_c = u[:, :, s:e].permute(2, 0, 1).contiguous()                   # may alias u: never written
    raw = delta[:, :, s:e].permute(2, 0, 1)
    raw = raw + delta_bias if delta_bias is not None else raw.contiguous()  # may alias delta: never written
    return u_c, raw, (F.softplus(raw) if softplus else raw)


def _per_group(t_c: torch.Tensor) -> torch.Tensor:
    """B or C for a chunk, [b, G, n, k] -> [k, b, n, G, 1], to broadcast against [k, b, n, G, d/G]."""
    return t_c.permute(3, 0, 2, 1)[..., None]


def _times_group(x, t_c, out):
    """out[k, b, n, d] = x[k, b, ?, d] * t_c[b, group(d), n, k]  (x's n axis may broadcast)."""
    k, b, n, d = out.shape
    G = t_c.shape[1]
    torch.mul(x.view(k, b, x.shape[2], G, d // G), _per_group(t_c), out=out.view(k, b, n, G, d // G))
    return out


def _dot_state(X, t_c, scratch):
    """<X_t, t_c> over the state axis: [k, b, n, d] with t_c [b, G, n, k] -> [k, b, d].
    One group: a batched matrix product (row [1, n] @ [n, d]), 2-3x faster than mul + sum."""
    k, b, n, d = X.shape
    if t_c.shape[1] == 1:
        row = t_c[:, 0].permute(2, 0, 1).reshape(k * b, 1, n)
        return torch.bmm(row, X.view(k * b, n, d)).view(k, b, d)
    return _times_group(X, t_c, scratch).sum(2)


def _like_time_major(t: torch.Tensor) -> torch.Tensor:
    """An empty [b, d, L] tensor laid out like t: [b, L, d] in memory if t's channels are
    contiguous (as Mamba's in_proj output is), so writing time chunks stays cheap; else contiguous."""
    b, d, L = t.shape
    if t.stride(1) == 1 and L > 1 and d > 1:
        return t.new_empty(b, L, d).transpose(1, 2)
    return t.new_empty(b, d, L)


def _sum_group(prod: torch.Tensor, G: int) -> torch.Tensor:
    """[k, b, n, d] -> [b, G, n, k]: sum over the channels of each group."""
    k, b, n, d = prod.shape
    return prod.view(k, b, n, G, d // G).sum(-1).permute(1, 3, 2, 0)


class _SelectiveScan(torch.autograd.Function):
    """The whole selective scan, fused and chunked over time. Layouts: u, delta, z: [b, d, L];
    A: [d, n]; B, C: [b, G, n, L] (channel d reads group d // (d/G)); D, delta_bias: [d].
    Inside, states are [b, n, d] (dim innermost: every reduction is over n, a non-inner axis,
    or over d, a long contiguous one) and each chunk of T steps is time-major [T, b, n, d].

    Forward, per chunk: the step sizes, exp(delta_t A) and delta_t u_t B_t for all T steps as a
    few vectorised ops into two reused buffers, then one in-place ``addcmul_`` per step
    (x_t = dA_t x_{t-1} + dBu_t), then y_t = <x_t, C_t> (+ D u_t) (* silu z_t) for the chunk.
    Only the state at each chunk start is saved; no [b, d, L, n] tensor ever exists.

    Backward, chunks in reverse: recompute the chunk's states from its saved start, form
    dy_t (through the z gate), run the adjoint g_t = dL/dx_t = C_t dy_t + dA_{t+1} g_{t+1}
    (one ``addcmul_`` per step), then all gradients of the chunk at once, with
    p_t = g_t * x_{t-1} * dA_t (the sigmoid is softplus's derivative, when softplus is on):

        dA = sum_t p_t delta_t       ddelta_t = (sum_n p_t A + u_t <g_t, B_t>) sigmoid(delta_t + bias)
        du_t = delta_t <g_t, B_t> + D dy_t     dB_t = sum_(d in group) g_t delta_t u_t
        dC_t = sum_(d in group) x_t dy_t        dz_t = dout_t y'_t silu'(z_t)

    Memory: four chunk buffers plus one state per chunk, O(b d n (T + L / T)) beyond the
    inputs and outputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus):
        b, d, L = u.shape
        G, n = B.shape[1], A.shape[1]
        T = chunk_length(b, d, n, L)
        A_t = A.t().contiguous()                                            # [n, d]
        out = _like_time_major(u)
        starts = range(0, L, T)
        saved_states = u.new_empty(len(starts), b, n, d)
        x = u.new_zeros(b, n, d)
        dA_buf, X_buf = u.new_empty(T, b, n, d), u.new_empty(T, b, n, d)
        dA_steps, X_steps = dA_buf.unbind(0), X_buf.unbind(0)
        for ci, s in enumerate(starts):
            e = min(L, s + T)
            k = e - s
            u_c, _, dt = _chunk_steps(u, delta, delta_bias, softplus, s, e)   # [k, b, d]
            prev = saved_states[ci].copy_(x)                                # x_{s-1}
            dA = torch.mul(dt[:, :, None, :], A_t, out=dA_buf[:k]).exp_()   # [k, b, n, d]
            X = _times_group((dt * u_c)[:, :, None, :], B[..., s:e], X_buf[:k])
            for step in range(k):
                prev = X_steps[step].addcmul_(dA_steps[step], prev)
            x = prev
            y_c = _dot_state(X, C[..., s:e], dA)                           # [k, b, d]
            if D is not None:
                y_c.addcmul_(u_c, D)
            if z is not None:
                y_c.mul_(F.silu(z[:, :, s:e].permute(2, 0, 1)))
            out[:, :, s:e].copy_(y_c.permute(1, 2, 0))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, saved_states)
        ctx.softplus = softplus
        return out, x.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, saved_states = ctx.saved_tensors
        softplus = ctx.softplus
        b, d, L = u.shape
        G, n = B.shape[1], A.shape[1]
        T = chunk_length(b, d, n, L)
        A_t = A.t().contiguous()
        du, ddelta = _like_time_major(u), _like_time_major(delta)
        dz = _like_time_major(z) if z is not None else None
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA_t = A_t.new_zeros(n, d)
        dD = D.new_zeros(d) if D is not None else None
        dbias = delta_bias.new_zeros(d) if delta_bias is not None else None
        g_next = u.new_zeros(b, n, d) if dlast is None else dlast.transpose(1, 2).contiguous()
        dA_buf, X_buf = u.new_empty(T, b, n, d), u.new_empty(T + 1, b, n, d)  # X: x_{s-1}..x_{e-1}
        G_buf, S_buf = u.new_empty(T, b, n, d), u.new_empty(T, b, n, d)
        dA_steps, X_steps, G_steps = dA_buf.unbind(0), X_buf.unbind(0), G_buf.unbind(0)
        starts = list(range(0, L, T))
        for ci in reversed(range(len(starts))):
            s = starts[ci]
            e = min(L, s + T)
            k = e - s
            B_c, C_c = B[..., s:e], C[..., s:e]
            u_c, raw, dt = _chunk_steps(u, delta, delta_bias, softplus, s, e)
            dA = torch.mul(dt[:, :, None, :], A_t, out=dA_buf[:k]).exp_()
            X = X_buf[:k + 1]
            X[0].copy_(saved_states[ci])
            dtu = dt * u_c
            _times_group(dtu[:, :, None, :], B_c, X[1:])
            for step in range(k):
                X_steps[step + 1].addcmul_(dA_steps[step], X_steps[step])
            dy = dout[:, :, s:e].permute(2, 0, 1)                           # [k, b, d]
            if z is not None:
                z_c = z[:, :, s:e].permute(2, 0, 1)
                y_c = _dot_state(X[1:], C_c, S_buf[:k])
                if D is not None:
                    y_c.addcmul_(u_c, D)
                sig = torch.sigmoid(z_c)
                dz[:, :, s:e].copy_((dy * y_c * sig * (1 + z_c * (1 - sig))).permute(1, 2, 0))
                dy = dy * z_c * sig
            dy = dy.contiguous()
            Gr = _times_group(dy[:, :, None, :], C_c, G_buf[:k])
            G_steps[k - 1].add_(g_next)
            for step in range(k - 2, -1, -1):
                G_steps[step].addcmul_(dA_steps[step + 1], G_steps[step + 1])
            g_next = dA_steps[0] * G_steps[0]
            S = S_buf[:k]
            gB = _dot_state(Gr, B_c, S)                                    # <g_t, B_t>: [k, b, d]
            dB[..., s:e] = _sum_group(torch.mul(Gr, dtu[:, :, None, :], out=S), G)
            dC[..., s:e] = _sum_group(torch.mul(X[1:], dy[:, :, None, :], out=S), G)
            P = X[:k].mul_(Gr).mul_(dA)                                     # p_t = g_t x_{t-1} dA_t
            ddt = torch.mul(P, A_t, out=S).sum(2).addcmul_(gB, u_c)         # [k, b, d]
            dA_t += P.mul_(dt[:, :, None, :]).sum((0, 1))
            du_c = gB.mul_(dt)
            if D is not None:
                du_c.addcmul_(dy, D)
                dD += (dy * u_c).sum((0, 1))
            if softplus:
                ddt.mul_(torch.sigmoid(raw))
            if dbias is not None:
                dbias += ddt.sum((0, 1))
            du[:, :, s:e].copy_(du_c.permute(1, 2, 0))
            ddelta[:, :, s:e].copy_(ddt.permute(1, 2, 0))
        return du, ddelta, dA_t.t(), dB, dC, dD, dz, dbias, None


def _groups_of(B: torch.Tensor, groups: int, acc: torch.dtype) -> torch.Tensor:
    """B or C, [b, n, L] or [b, G, n, L], as [b, groups, n, L] in dtype ``acc``."""
    B = (B[:, None] if B.dim() == 3 else B).to(acc)
    return B if B.shape[1] == groups else B.repeat_interleave(groups // B.shape[1], dim=1)


def cpu_function():
    """The autograd Function of the CPU path: the compiled kernel (``scan_kernel``) where it
    builds, else the torch chunked scan ``_SelectiveScan``. Both compute the same scan."""
    return KernelScan if scan_kernel.library() is not None else _SelectiveScan


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, *, implementation: str | None = None):
    """The CPU path (``cpu_function()``: the compiled kernel, or the torch scan ``_SelectiveScan``),
    fused (bias, softplus, scan, D skip, z gate), with a hand-written reverse-time backward
    that recomputes states. Accumulates in float32 for lower-precision inputs (float64 stays
    float64) and returns u's dtype. B and C with different group counts are both expanded to
    the finer grouping. Tensors on another device (a GPU without mamba-ssm) run the torch scan
    there: the compiled kernel reads CPU memory only. ``implementation``
    ("kernel" or "torch") forces one (for benchmarks); "kernel" raises if it is unavailable."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    if implementation not in (None, "kernel", "torch"):
        raise ValueError(f"implementation must be None, 'kernel' or 'torch', got {implementation!r}")
    if implementation == "kernel" and scan_kernel.library() is None:
        raise RuntimeError(scan_kernel.why())
    if implementation == "kernel" and u.device.type != "cpu":
        raise ValueError(f"the compiled kernel reads CPU tensors only, got tensors on {u.device}")
    default = cpu_function() if u.device.type == "cpu" else _SelectiveScan
    function = {None: default, "kernel": KernelScan, "torch": _SelectiveScan}[implementation]
    dtype_in = u.dtype
    acc = torch.promote_types(dtype_in, torch.float32)
    gB = B.shape[1] if B.dim() == 4 else 1
    gC = C.shape[1] if C.dim() == 4 else 1
    groups = gB * gC // math.gcd(gB, gC)
    cast = lambda t: None if t is None else t.to(acc)
    out, last = function.apply(cast(u), cast(delta), cast(A), _groups_of(B, groups, acc),
                               _groups_of(C, groups, acc), cast(D), cast(z), cast(delta_bias),
                               bool(delta_softplus))
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out


def kernel_arguments(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> tuple:
    """(u, delta, A, B, C, D, z, delta_bias) as mamba-ssm's kernel checks them
    (csrc/selective_scan/selective_scan.cpp): delta, z, B, C in u's dtype; A, D, delta_bias
    float32; B and C with the same group count (the kernel reads C's groups from B's shape),
    both expanded to the finer grouping if they differ. Already-conforming tensors pass
    unchanged, as the same objects. The time axis need not be contiguous: selective_scan_fn
    copies a tensor whose last stride is not 1 itself."""
    def as_(t, dtype):
        return None if t is None else t.to(dtype)

    gB = B.shape[1] if B.dim() == 4 else 1
    gC = C.shape[1] if C.dim() == 4 else 1
    if gB != gC or B.dim() != C.dim():
        groups = gB * gC // math.gcd(gB, gC)
        B, C = _groups_of(B, groups, u.dtype), _groups_of(C, groups, u.dtype)
    f32 = torch.float32
    return (u, as_(delta, u.dtype), as_(A, f32), as_(B, u.dtype), as_(C, u.dtype), as_(D, f32),
            as_(z, u.dtype), as_(delta_bias, f32))


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    """Selective scan: mamba-ssm's CUDA kernel where available (``backend``), else the CPU path
    (on the tensors' device). The kernel's last state carries no gradient (mamba-ssm's rule)."""
    if isinstance(u, torch.Tensor) and on_cuda(u.device) and _mamba_fn() is not None:
        _check(u, delta, A, B, C, D, z, delta_bias)
        if not _kernel_refuses(u, A):
            args = kernel_arguments(u, delta, A, B, C, D, z, delta_bias)
            return _mamba_fn()(*args, delta_softplus, return_last_state)
    return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
