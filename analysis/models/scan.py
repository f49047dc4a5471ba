"""The selective scan of Mamba (Gu & Dao 2023), with the signature and semantics of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.

Shapes (mamba-ssm's shorthand): u, delta: r(B D L); A: r(D N) (real only here);
B, C: r(B N L) or grouped r(B G N L) (channel d uses group d // (D/G)); D: r(D); z: r(B D L);
delta_bias: r(D).

    delta <- softplus(delta + delta_bias)          (if delta_softplus)
    x_t    = exp(delta_t A) * x_{t-1} + delta_t B_t u_t          x: (B D N)
    y_t    = <x_t, C_t> + D u_t ;   y <- y * silu(z)

Dispatch (``backend()`` says which and why): CUDA tensors with mamba-ssm importable run
mamba-ssm's fused kernel; everything else runs the project's CPU path. mamba_ssm is imported
lazily, never at module import: it cannot be installed on a CPU-only machine.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
_MAMBA = {"checked": False, "fn": None, "why": ""}


def _mamba_fn():
    if not _MAMBA["checked"]:
        _MAMBA["checked"] = True
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            _MAMBA["fn"] = selective_scan_fn
        except Exception as err:  # ImportError, missing CUDA extension, triton...
            _MAMBA["why"] = f"mamba_ssm not importable ({type(err).__name__}: {err})"
            log.info("selective scan: %s; using the CPU path", _MAMBA["why"])
    return _MAMBA["fn"]


def backend(device: str | torch.device = "cpu") -> str:
    """Which implementation ``selective_scan`` runs for tensors on ``device``, and why."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"CPU path: tensors on {device.type}, not CUDA"
    if _mamba_fn() is None:
        return f"CPU path: {_MAMBA['why']}"
    return "mamba-ssm CUDA kernel (selective_scan_fn)"


def _check(u, delta, A, B, C, D, z, delta_bias):
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
            raise ValueError(f"{name} must be [batch={b}, state={n}, length={L}] or "
                             f"[batch, groups dividing {d}, {n}, {L}], got shape {tuple(t.shape)}")
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


CHUNK = 64


class _Scan(torch.autograd.Function):
    """y_t = <x_t, C_t>, x_t = exp(delta_t A) x_{t-1} + delta_t u_t B_t, for B, C [b, n, L].

    Forward keeps only the state at each chunk boundary; backward walks the chunks in
    reverse, recomputes the chunk's states from its boundary, runs the adjoint recursion
    g_t = exp(delta_{t+1} A) g_{t+1} + dy_t C_t backwards in time, and forms every gradient
    of the chunk with a few vectorised products. Memory: O(b d n (L / CHUNK + CHUNK))."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        b, d, L = u.shape
        x = u.new_zeros(b, d, A.shape[1])
        y = u.new_empty(b, d, L)
        bounds = []
        dtu = delta * u
        for s in range(0, L, CHUNK):
            e = min(L, s + CHUNK)
            bounds.append(x.clone())
            dA = torch.exp(delta[:, :, s:e, None] * A[:, None, :])      # [b, d, T, n]
            for k, t in enumerate(range(s, e)):
                x = dA[:, :, k] * x + dtu[:, :, t, None] * B[:, None, :, t]
                y[:, :, t] = torch.einsum("bdn,bn->bd", x, C[:, :, t])
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(bounds) if bounds else x[None])
        return y, x

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, bounds = ctx.saved_tensors
        b, d, L = u.shape
        n = A.shape[1]
        du, ddelta = torch.zeros_like(u), torch.zeros_like(delta)
        dA_param, dB, dC = torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(C)
        g = dlast.clone() if dlast is not None else u.new_zeros(b, d, n)
        dtu = delta * u
        starts = list(range(0, L, CHUNK))
        for ci in reversed(range(len(starts))):
            s = starts[ci]
            e = min(L, s + CHUNK)
            T = e - s
            dA = torch.exp(delta[:, :, s:e, None] * A[:, None, :])      # [b, d, T, n]
            xs = u.new_empty(T + 1, b, d, n)                            # states x_{s-1} .. x_{e-1}
            xs[0] = bounds[ci]
            for k in range(T):
                xs[k + 1] = dA[:, :, k] * xs[k] + dtu[:, :, s + k, None] * B[:, None, :, s + k]
            gs = u.new_empty(T, b, d, n)
            for k in reversed(range(T)):
                t = s + k
                g = g + dy[:, :, t, None] * C[:, None, :, t]
                gs[k] = g
                g = g * dA[:, :, k]                                     # flows to x_{t-1}
            gs_t = gs.permute(1, 2, 0, 3)                               # [b, d, T, n]
            x_prev = xs[:-1].permute(1, 2, 0, 3)
            x_cur = xs[1:].permute(1, 2, 0, 3)
            ddtA = gs_t * x_prev * dA                                   # d loss / d (delta_t A)
            Bc = B[:, :, s:e].transpose(1, 2)[:, None]                  # [b, 1, T, n]
            d_dtu = (gs_t * Bc).sum(-1)                                 # [b, d, T]
            ddelta[:, :, s:e] = (ddtA * A[:, None, :]).sum(-1) + d_dtu * u[:, :, s:e]
            du[:, :, s:e] = d_dtu * delta[:, :, s:e]
            dA_param += torch.einsum("bdtn,bdt->dn", ddtA, delta[:, :, s:e])
            dB[:, :, s:e] = torch.einsum("bdtn,bdt->bnt", gs_t, dtu[:, :, s:e])
            dC[:, :, s:e] = torch.einsum("bdtn,bdt->bnt", x_cur, dy[:, :, s:e])
        return du, ddelta, dA_param, dB, dC


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """The CPU path. For B, C of shape [b, n, L]: ``_Scan``, a hand-written forward and
    reverse-time backward that recomputes states chunk by chunk. For grouped B, C: an
    autograd loop over ``unbind()`` slices (never time-indexing, whose backward is O(L^2)).
    The discretisation, D skip and z gate are plain autograd ops. Accumulates in float32."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    acc = torch.promote_types(dtype_in, torch.float32)  # float32 accumulation, float64 kept
    u, delta, A = u.to(acc), delta.to(acc), A.to(acc)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(acc)
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, L = u.shape
    grouped = B.dim() == 4 or C.dim() == 4
    if not grouped:
        y, x = _Scan.apply(u.contiguous(), delta.contiguous(), A.contiguous(), B.to(acc).contiguous(),
                           C.to(acc).contiguous())
        out = y if D is None else y + u * D[:, None].to(acc)
        if z is not None:
            out = out * F.silu(z.to(acc))
        out = out.to(dtype_in)
        return (out, x) if return_last_state else out
    Bx, Cx = _expand_groups(B.float(), d), _expand_groups(C.float(), d)
    dtu = delta * u
    x = u.new_zeros(b, d, A.shape[1])
    ys = []
    block = 64
    for s in range(0, L, block):
        e = min(L, s + block)
        dA = torch.exp(delta[:, :, s:e, None] * A[:, None, :])         # [b, d, T, n]
        if grouped:
            Bb = Bx[..., s:e] if Bx.dim() == 4 else Bx[:, None, :, s:e].expand(b, d, -1, -1)
            Cb = Cx[..., s:e] if Cx.dim() == 4 else Cx[:, None, :, s:e].expand(b, d, -1, -1)
            dBu = dtu[:, :, None, s:e] * Bb                               # [b, d, n, T]
            for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(3), Cb.unbind(3)):
                x = dA_t * x + dBu_t
                ys.append((x * C_t).sum(-1))
        else:
            for dA_t, dtu_t, B_t, C_t in zip(dA.unbind(2), dtu[:, :, s:e].unbind(2),
                                             Bx[:, :, s:e].unbind(2), Cx[:, :, s:e].unbind(2)):
                x = dA_t * x + dtu_t[:, :, None] * B_t[:, None, :]
                ys.append(torch.einsum("bdn,bn->bd", x, C_t))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(b, d, 0)
    out = y if D is None else y + u * D[:, None].float()
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    """Selective scan: mamba-ssm's CUDA kernel where available, else the CPU path."""
    if u.is_cuda and _mamba_fn() is not None:
        return _mamba_fn()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
