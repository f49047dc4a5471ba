"""The S4D convolution kernel (Gu et al. 2022, "On the Parameterization and Initialization of
Diagonal State Space Models") exactly as BiGS (``jxiw/BiGS``, ``S4DKernel`` / ``S4dLayer``)
parameterises it.

Glossary (code -> paper), per kernel, N = ``num_ssm`` complex modes n = 0..N-1:
    dt     = exp(log_step)                  step size Delta (one scalar), log-uniform init in [dt_min, dt_max]
    A_n    = min(A_re_n, -1e-4) + i A_im_n  diagonal complex state matrix (the real part clamped < 0)
    C_n    = C[n, 0] + i C[n, 1]            output projection (B = 1 folded into it)
    dA_n   = exp(dt A_n)                    zero-order hold
    dB_n   = (exp(dt A_n) - 1) / A_n
    K[l]   = Re sum_n C_n dB_n dA_n^l       l = 0..L-1 (no conjugate doubling, as BiGS)
    y      = K * u + D u                    causal convolution by FFT at length 2L, D one scalar

Initialisation S4D-Lin: A_re = -1/2, A_im = pi n; C ~ N(0, 1/2) per real component; D ~ N(0, 1).
BiGS has one kernel per S4D layer, shared by all channels; ``n_kernels`` > 1 (CodeSSM-8kernel)
gives that many independent kernels over equal channel groups. With one kernel the parameters
have BiGS's shapes (log_step [1], A_re [N], A_im [N], C [N, 2], D [1]); with K kernels a leading
K (log_step [K], A_re [K, N], ...).
"""
from __future__ import annotations

import math

import torch
from torch import nn

A_REAL_MAX = -1e-4  # the real part of A is clamped away from 0 (stable, decaying modes)


class S4DKernel(nn.Module):
    """``n_kernels`` S4D kernels of ``num_ssm`` modes each; ``forward(L)``: [n_kernels, L]."""

    STATE_PARAMETERS = ("log_step", "A_re", "A_im")  # trained at their own learning rate (BiGS, S4)

    def __init__(self, n_kernels: int, num_ssm: int, dt_min: float = 0.01, dt_max: float = 1.0):
        super().__init__()
        if num_ssm < 1:
            raise ValueError(f"num_ssm (complex modes per kernel) must be >= 1, got {num_ssm}")
        self.n_kernels, self.modes = n_kernels, num_ssm
        self.dt_min, self.dt_max = dt_min, dt_max
        lead = () if n_kernels == 1 else (n_kernels,)
        self.log_step = nn.Parameter(torch.empty(n_kernels))
        self.A_re = nn.Parameter(torch.empty(*lead, num_ssm))
        self.A_im = nn.Parameter(torch.empty(*lead, num_ssm))
        self.C = nn.Parameter(torch.empty(*lead, num_ssm, 2))
        for name in self.STATE_PARAMETERS:
            getattr(self, name)._no_weight_decay = True  # S4 and BiGS train them without weight decay
            getattr(self, name)._ssm_state = True        # and at their own learning rate (analysis.train)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        self.log_step.copy_(torch.rand(self.n_kernels) * (hi - lo) + lo)
        self.A_re.fill_(-0.5)
        self.A_im.copy_(math.pi * torch.arange(self.modes).expand_as(self.A_im))
        self.C.normal_(0.0, math.sqrt(0.5))

    def _dtA_CdB(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dt A, C dB), complex [n_kernels, N]."""
        K, N = self.n_kernels, self.modes
        dt = self.log_step.exp()[:, None]                                   # [K, 1]
        A = torch.complex(self.A_re.clamp(max=A_REAL_MAX), self.A_im).view(K, N)
        C = torch.view_as_complex(self.C.contiguous()).view(K, N)
        dtA = dt * A
        return dtA, C * (dtA.exp() - 1) / A

    def discrete_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, C dB), complex [n_kernels, N]: K[l] = Re sum_n (C dB)_n dA_n^l."""
        dtA, CdB = self._dtA_CdB()
        return dtA.exp(), CdB

    def forward(self, length: int) -> torch.Tensor:
        """The kernels K: [n_kernels, length] (float), from dt A directly (exact even when
        dA underflows to 0)."""
        dtA, CdB = self._dtA_CdB()
        return _vandermonde(dtA, CdB, length)


def _vandermonde(log_dA: torch.Tensor, CdB: torch.Tensor, length: int) -> torch.Tensor:
    l = torch.arange(length, device=log_dA.device, dtype=log_dA.real.dtype)
    powers = torch.exp(log_dA.unsqueeze(-1) * l)  # [..., N, L]
    return torch.einsum("...m,...ml->...l", CdB, powers).real


def kernel_from_modes(dA: torch.Tensor, CdB: torch.Tensor, length: int) -> torch.Tensor:
    """K[..., l] = Re sum_n CdB_n dA_n^l, by the Vandermonde product in log space
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


class S4dLayer(nn.Module):
    """BiGS's S4D layer, u -> K * u + D u, its ``n_kernels`` kernels over equal channel groups
    (one kernel for all channels in BiGS). u: [batch, channels, length]."""

    def __init__(self, channels: int, n_kernels: int, num_ssm: int, **kernel_args):
        super().__init__()
        if channels % n_kernels:
            raise ValueError(f"d_model={channels} must be divisible by n_kernels={n_kernels}")
        self.channels, self.n_kernels = channels, n_kernels
        self.kernel = S4DKernel(n_kernels, num_ssm, **kernel_args)
        self.D = nn.Parameter(torch.randn(1))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # u: [batch, channels, length]
        b, c, L = u.shape
        k = self.kernel(L)                                   # [K, L]
        y = fft_conv(u.view(b, self.n_kernels, c // self.n_kernels, L), k[:, None, :])
        return y.view(b, c, L) + self.D * u
