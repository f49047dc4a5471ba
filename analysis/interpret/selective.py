"""The hidden attention of selective SSMs (Ali et al. 2024, "The Hidden Attention of Mamba
Models"), for BiMamba.

The selective scan (``analysis.models.scan.selective_scan_ref``), per channel c, with the
step size Delta_t = softplus(delta_t + delta_bias) as the scan applies it,

    x_t = exp(Delta_t A) x_{t-1} + Delta_t B_t u_t,      y_t = <C_t, x_t> + D u_t  (then * silu(z_t)),

unrolls into a data-dependent lower-triangular matrix (channel index c dropped on the right):

    alpha[c, i, j] = sum_n C_i[n] exp( sum_{k=j+1..i} Delta_k A[c, n] ) Delta_j B_j[n]   (j <= i),
    y_i = sum_{j<=i} alpha[c, i, j] u_j + D u_i                                     (before the z gate).

The exponent is S_i - S_j with S_t = sum_{k<=t} Delta_k A (cumulative sums in float64, the
difference clamped to <= 0), so no product of many small factors is formed.

``effective_kernels`` averages alpha along its diagonals (lag i - j), an input-dependent kernel
by lag that ``analysis.interpret.spectrum`` can analyse; ``lti_kernels`` is the decay of the
state alone at a fixed step size, the time-invariant part of the same kernel.

Devices: the functions that run a model move their inputs to the model's device
(``train.model_device``) and return there; ``mean_effective_kernels`` and
``median_step_lti_kernels``, the summaries the book plots, return on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ..train import model_device, to_device
from .spectrum import spectral_shift, spectrum

DIRECTIONS = ("forward", "backward")


def _direction(direction) -> str:
    if direction in (0, 1):
        return DIRECTIONS[direction]
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'forward', 'backward', 0 or 1; got {direction!r}")
    return direction


def _step_size(inputs: dict) -> torch.Tensor:
    """Delta after bias and softplus, as ``selective_scan_ref`` applies them: float [b, d, L]."""
    delta = inputs["delta"].float()
    if inputs.get("delta_bias") is not None:
        delta = delta + inputs["delta_bias"][..., None].float()
    return F.softplus(delta) if inputs.get("delta_softplus") else delta


def _per_channel(t: torch.Tensor, d: int) -> torch.Tensor:
    """B or C, [b, n, L] or grouped [b, G, n, L], as [b, d or 1, n, L]."""
    return t[:, None] if t.dim() == 3 else t.repeat_interleave(d // t.shape[1], dim=1)


@torch.no_grad()
def attention_from_scan_inputs(inputs: dict, attention_mask: torch.Tensor | None = None,
                               channels=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """alpha [batch, channels, L, L] (module docstring) from the keyword arguments of one
    selective scan (u, delta, A, B, C, D, z, delta_bias, delta_softplus; one entry of
    ``BiMambaForMaskedLM.scan_inputs``), in the scan's own time order. Zero above the
    diagonal, and in the rows and columns of padded positions when ``attention_mask``
    [batch, L] is given (padding sits at the end in both scan directions). ``channels``
    (index, list or slice) keeps a subset; memory is batch * channels * L^2 in ``dtype``."""
    dt = _step_size(inputs)                                             # [b, d, L]
    A = inputs["A"].float()                                             # [d, n]
    b, d, L = dt.shape
    Bc, Cc = _per_channel(inputs["B"].float(), d), _per_channel(inputs["C"].float(), d)
    if channels is not None:
        sel = torch.arange(d, device=dt.device)[channels].reshape(-1)
        dt, A = dt[:, sel], A[sel]
        Bc = Bc if Bc.shape[1] == 1 else Bc[:, sel]
        Cc = Cc if Cc.shape[1] == 1 else Cc[:, sel]
    # S[b, c, n, t] = sum_{k<=t} Delta_k A[c, n]  (float64: differences of large sums)
    S = torch.cumsum(dt.double()[:, :, None, :] * A.double()[None, :, :, None], dim=-1)
    lower = torch.ones(L, L, dtype=torch.bool, device=dt.device).tril()
    alpha = torch.zeros(b, dt.shape[1], L, L, dtype=dtype, device=dt.device)
    for n in range(A.shape[1]):
        s = S[:, :, n]                                                  # [b, c, L]
        decay = torch.exp((s[..., :, None] - s[..., None, :]).clamp(max=0)).to(dtype)  # [b, c, i, j]
        left = Cc[:, :, n, :, None].to(dtype)                           # C_i[n]:           [b, 1|c, L, 1]
        right = (dt * Bc[:, :, n]).to(dtype)[..., None, :]              # Delta_j B_j[n]:   [b, c, 1, L]
        alpha += left * decay * right
    alpha *= lower
    if attention_mask is not None:
        m = attention_mask.to(alpha.device, dtype)
        alpha *= m[:, None, :, None] * m[:, None, None, :]
    return alpha


def _reverse_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """idx[b, p] = the scan position of token p in the backward scan (reverse_padded's map)."""
    lengths = attention_mask.sum(1, keepdim=True)
    pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None]
    return torch.where(pos < lengths, lengths - 1 - pos, pos)


@torch.no_grad()
def hidden_attention(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     layer: int = 0, direction="forward", channels=None, token_order: bool = False,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The hidden attention of one BiMamba layer and direction: float [batch, channels, L, L].

    alpha[b, c, i, j] weights input u_j in the output y_i of channel c, so that
    ``y = alpha @ u + D u`` reproduces ``selective_scan_ref(**inputs, z=None)`` at every real
    position, where inputs = ``model.scan_inputs(input_ids, attention_mask)[layer][direction]``
    (u there is the mixer's post-conv, post-SiLU x). It is the weighting before the z gate:
    the gated output is silu(z_i) (y_i). Rows and columns of padded positions are zero.

    Time order: by default the scan's own (the backward direction runs on the sequence
    reversed within its length), so alpha is lower-triangular in both directions. With
    ``token_order=True`` the backward matrix is re-indexed to token positions (then it is
    upper-triangular: token p attends to tokens q >= p). ``channels`` selects a subset of the
    d_inner channels (an index, list or slice)."""
    direction = _direction(direction)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids, attention_mask = to_device((input_ids, attention_mask), model_device(model))
    inputs = model.scan_inputs(input_ids, attention_mask)[layer][direction]
    alpha = attention_from_scan_inputs(inputs, attention_mask, channels, dtype)
    if token_order and direction == "backward":
        idx = _reverse_index(attention_mask)                            # [b, L]
        bi = torch.arange(alpha.shape[0], device=alpha.device)[:, None, None]
        alpha = alpha[bi, :, idx[:, :, None], idx[:, None, :]].permute(0, 3, 1, 2)
    return alpha


def effective_kernels(alpha: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Input-dependent kernels by lag: k[b, c, l] = mean over valid i of alpha[b, c, i, i - l],
    l = 0..L-1, float [batch, channels, L] (alpha in scan order, as ``hidden_attention``
    returns by default). Valid: i - l >= 0 and i a real position (i < length of sequence b,
    from ``attention_mask``; all positions without it). Lags with no valid position (l >=
    length) are 0."""
    b, c, L, _ = alpha.shape
    lengths = (attention_mask.sum(1) if attention_mask is not None
               else torch.full((b,), L, device=alpha.device)).to(alpha.device)
    out = alpha.new_zeros(b, c, L)
    rows = torch.arange(L, device=alpha.device)
    for lag in range(L):
        diag = torch.diagonal(alpha, offset=-lag, dim1=-2, dim2=-1)     # rows i = lag..L-1: [b, c, L-lag]
        valid = (rows[lag:][None, :] < lengths[:, None]).to(alpha.dtype)  # [b, L-lag]
        count = valid.sum(-1).clamp(min=1)
        out[..., lag] = (diag * valid[:, None]).sum(-1) / count[:, None]
    return out


def _mixer(model, layer: int, direction):
    lay = model.base_model.layers[layer]
    return lay.mixer_f if _direction(direction) == "forward" else lay.mixer_b


@torch.no_grad()
def median_step_size(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     layer: int = 0, direction="forward") -> torch.Tensor:
    """Per channel, the median step size Delta = softplus(delta + bias) over the real positions
    of a batch: float [channels]; the ``delta`` to pass to ``lti_kernels``."""
    direction = _direction(direction)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids, attention_mask = to_device((input_ids, attention_mask), model_device(model))
    dt = _step_size(model.scan_inputs(input_ids, attention_mask)[layer][direction])   # [b, d, L]
    real = attention_mask.bool()[:, None, :].expand_as(dt)
    return dt.permute(1, 0, 2)[real.permute(1, 0, 2)].view(dt.shape[1], -1).median(-1).values


@torch.no_grad()
def lti_kernels(model, layer: int, direction, delta, length: int) -> torch.Tensor:
    """The time-invariant part of a Mamba mixer's kernel at a fixed step size:

        kernel[c, l] = sum_s exp(l * Delta_c * A[c, s]),   l = 0..length-1,  A = -exp(A_log),

    float [channels, length]. ``delta`` is Delta after softplus (a float, or a [channels]
    tensor such as ``median_step_size(...)``). It leaves out B_j, C_i and the Delta_j input
    scale, which are input-dependent: it is the decay profile of the state alone."""
    A = -torch.exp(_mixer(model, layer, direction).A_log.float())      # [d, n]
    delta = torch.as_tensor(delta, dtype=torch.float32, device=A.device).reshape(-1, 1, 1)
    l = torch.arange(length, dtype=torch.float32, device=A.device)
    return torch.exp(l * delta * A[..., None]).sum(1)                  # [d, length]


@torch.no_grad()
def mean_effective_kernels(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, channels=slice(None),
                           chunk: int = 4) -> torch.Tensor:
    """``effective_kernels`` of every layer and direction, averaged over the batch's sequences:
    float [layers, 2, channels, L]. Computed ``chunk`` sequences at a time, since the hidden
    attention is sequences x channels x L x L."""
    n, out = len(input_ids), []
    for layer in range(model.config.num_hidden_layers):
        per_dir = []
        for direction in ("forward", "backward"):
            total = 0
            for s in range(0, n, chunk):
                alpha = hidden_attention(model, input_ids[s:s + chunk], attention_mask[s:s + chunk], layer,
                                         direction, channels=channels)
                total = total + effective_kernels(alpha, attention_mask[s:s + chunk]).sum(0)
            per_dir.append(total / n)
        out.append(torch.stack(per_dir))
    return torch.stack(out).cpu()


@torch.no_grad()
def median_step_lti_kernels(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, channels=slice(None),
                            length: int | None = None) -> torch.Tensor:
    """``lti_kernels`` of every layer and direction at each channel's ``median_step_size`` on
    this batch: float [layers, 2, channels, length] (length defaults to the batch's)."""
    length = length or input_ids.shape[1]
    return torch.stack([torch.stack([
        lti_kernels(model, layer, d, median_step_size(model, input_ids, attention_mask, layer, d), length)[channels]
        for d in ("forward", "backward")]) for layer in range(model.config.num_hidden_layers)]).cpu()


@dataclass
class SelectiveKernels:
    """BiMamba's kernels by lag at several stages (pretrained, after each fine-tuning), every
    ``channels.step``-th of its ``d_inner`` channels: ``effective[stage]`` the mean effective
    kernels and ``lti[stage]`` the time-invariant decay at the median step, both float
    [layers, 2, channels, L]; ``spectra`` and ``lti_spectra`` their ``spectrum``s."""

    effective: dict
    lti: dict
    spectra: dict
    lti_spectra: dict
    channels: slice
    d_inner: int
    n_sequences: int

    @property
    def length(self) -> int:
        return next(iter(self.effective.values())).shape[-1]

    def summary(self) -> str:
        first = next(iter(self.effective.values()))
        step = f" (every {self.channels.step}th)" if self.channels.step > 1 else ""
        return (f"{self.n_sequences} functions, padded to {self.length} subword tokens; {first.shape[0]} layers "
                f"x 2 directions x {first.shape[2]} of the {self.d_inner} channels{step}.")

    def shift(self, f0: float) -> pd.DataFrame:
        """``spectral_shift`` of the effective kernels from "pretrained" to every other stage
        (column ``task``): one row per statistic, layer and direction, paired over channels."""
        return pd.concat([spectral_shift(self.effective["pretrained"], k, f0=f0).assign(task=s)
                          for s, k in self.effective.items() if s != "pretrained"], ignore_index=True)

    def filter_shares(self) -> pd.DataFrame:
        """Share of channels of each filter type (``spectrum``'s) per stage: [stages, types]."""
        stats = pd.concat([sp.table().assign(stage=s) for s, sp in self.spectra.items()])
        shares = stats.groupby("stage").filter_type.value_counts(normalize=True).unstack(fill_value=0)
        return shares.reindex(list(self.spectra))


def selective_kernels(models: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      max_channels: int = 64, f0: float = 0.05) -> SelectiveKernels:
    """``SelectiveKernels`` of the BiMamba ``models`` (stage -> model, "pretrained" among them)
    on one batch (input_ids: r(B L)), at most ``max_channels`` channels per direction."""
    if "pretrained" not in models:
        raise ValueError(f"models must include 'pretrained'; got {sorted(models)}")
    first = models["pretrained"].config
    d_inner = first.d_model * first.expand
    channels = slice(None, None, max(1, d_inner // max_channels))
    eff = {s: mean_effective_kernels(m, input_ids, attention_mask, channels) for s, m in models.items()}
    lti = {s: median_step_lti_kernels(m, input_ids, attention_mask, channels) for s, m in models.items()}
    L = input_ids.shape[1]
    return SelectiveKernels(eff, lti, {s: spectrum(k, n_fft=L, f0=f0) for s, k in eff.items()},
                            {s: spectrum(k, n_fft=L, f0=f0) for s, k in lti.items()}, channels, d_inner,
                            len(input_ids))
