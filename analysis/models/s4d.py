"""The S4D convolution kernel (Gu et al. 2022, "On the Parameterization and Initialization of
Diagonal State Space Models"), as used by BiGS / CodeSSM.

Glossary (code -> paper):
    A      = -exp(log_A_real) + i A_imag    diagonal complex state matrix, M = N/2 modes
    dt     = exp(log_dt)                    step size Delta, log-uniform init in [dt_min, dt_max]
    C      = C_re + i C_im                  output projection
    dA     = exp(dt A)                      zero-order hold
    dB     = (exp(dt A) - 1) / A            (B = 1 folded into C)
    K[l]   = 2 Re sum_m C_m dB_m dA_m^l     l = 0..L-1 (conjugate pairs folded in, as S4's s4d.py)
    y      = K * u + D u                    causal convolution, by FFT at length 2L

Initialisation S4D-Lin: A_m = -1/2 + i pi m. ``n_kernels`` independent kernels share the
channels in equal groups (BiGS uses one kernel for all channels).
"""
from __future__ import annotations

import math

import torch
from torch import nn

A_REAL_MAX = -1e-4  # the real part of A is clamped away from 0 (stable, decaying modes)


class S4DKernel(nn.Module):
    def __init__(self, n_kernels: int, d_state: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number >= 2, got {d_state}")
        self.n_kernels, self.modes = n_kernels, d_state // 2
        self.dt_min, self.dt_max = dt_min, dt_max
        self.log_dt = nn.Parameter(torch.empty(n_kernels))
        self.log_A_real = nn.Parameter(torch.empty(n_kernels, self.modes))
        self.A_imag = nn.Parameter(torch.empty(n_kernels, self.modes))
        self.C = nn.Parameter(torch.empty(n_kernels, self.modes, 2))
        for p in (self.log_dt, self.log_A_real, self.A_imag, self.C):
            p._no_weight_decay = True  # S4 and BiGS train the SSM parameters without weight decay
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        self.log_dt.copy_(torch.rand(self.n_kernels) * (hi - lo) + lo)
        self.log_A_real.fill_(math.log(0.5))
        self.A_imag.copy_(math.pi * torch.arange(self.modes).expand(self.n_kernels, -1))
        self.C.normal_(0.0, math.sqrt(0.5))

    def _dtA_CdB(self) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.log_dt.exp()[:, None]
        A = torch.complex((-self.log_A_real.exp()).clamp(max=A_REAL_MAX), self.A_imag)
        dtA = dt * A
        C = torch.view_as_complex(self.C.contiguous())
        return dtA, C * (dtA.exp() - 1) / A

    def discrete_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, C dB), complex [n_kernels, M]."""
        dtA, CdB = self._dtA_CdB()
        return dtA.exp(), CdB

    def forward(self, length: int) -> torch.Tensor:
        """The kernels K: [n_kernels, length] (float), from dt A directly (exact even when
        dA underflows to 0)."""
        dtA, CdB = self._dtA_CdB()
        return _vandermonde(dtA, CdB, length)


def _vandermonde(log_dA: torch.Tensor, CdB: torch.Tensor, length: int) -> torch.Tensor:
    l = torch.arange(length, device=log_dA.device, dtype=log_dA.real.dtype)
    powers = torch.exp(log_dA.unsqueeze(-1) * l)  # [..., M, L]
    return 2 * torch.einsum("...m,...ml->...l", CdB, powers).real


def kernel_from_modes(dA: torch.Tensor, CdB: torch.Tensor, length: int) -> torch.Tensor:
    """K[..., l] = 2 Re sum_m CdB_m dA_m^l, by the Vandermonde product in log space
    (a mode with dA = 0 contributes at l = 0 only)."""
    log_dA = torch.where(dA == 0, torch.full_like(dA, -1e30), dA.log())
    return _vandermonde(log_dA, CdB, length)


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y[t] = sum_{s<=t} k[t-s] u[s] by FFT at length 2L.
    u: [..., L]; k broadcastable to u."""
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n), n=n)
    return y[..., :L].to(u.dtype)


class S4DConv(nn.Module):
    """u -> K * u + D u over channels split into ``n_kernels`` groups. u: [batch, channels, length]."""

    def __init__(self, channels: int, n_kernels: int, d_state: int, **kernel_args):
        super().__init__()
        if channels % n_kernels:
            raise ValueError(f"d_model={channels} must be divisible by n_kernels={n_kernels}")
        self.channels, self.n_kernels = channels, n_kernels
        self.kernel = S4DKernel(n_kernels, d_state, **kernel_args)
        self.D = nn.Parameter(torch.randn(channels))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # u: [batch, channels, length]
        b, c, L = u.shape
        k = self.kernel(L)                                   # [K, L]
        y = fft_conv(u.view(b, self.n_kernels, c // self.n_kernels, L), k[:, None, :])
        return y.view(b, c, L) + self.D[:, None] * u
