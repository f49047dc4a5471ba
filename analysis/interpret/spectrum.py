"""Frequency analysis of convolution kernels (S4D kernels of CodeSSM, effective kernels of BiMamba).

A real causal kernel k[0..L-1] (lag in tokens) is a linear filter with frequency response

    H(f) = sum_l k[l] exp(-2 pi i f l),        f in cycles per token, 0 <= f <= 1/2.

``spectrum`` samples H on the one-sided FFT grid f_m = m / n_fft (m = 0..n_fft//2) and gives
per kernel:

    P(f_m)      = w_m |H(f_m)|^2 / sum_m w_m |H(f_m)|^2       normalised power, sums to 1;
                  w_m = 2 for bins strictly inside (0, 1/2), 1 at f = 0 and f = 1/2, the
                  weights of the one-sided Parseval sum (sum_m w_m |H_m|^2 = n_fft sum_l k[l]^2),
                  so P is the share of the kernel's energy per bin
    centroid    = sum_m f_m P(f_m)                            (cycles per token)
    low_freq_fraction = sum_{f_m < f0} P(f_m)
    effective_length  = smallest lag n with sum_{l<=n} k[l]^2 >= 0.9 sum_l k[l]^2  (tokens)
    peak_freq   = argmax_m |H(f_m)|                           (the first bin on ties)
    filter_type = "all-pass"  if max |H| <= (1 + 1e-6) min |H| (flat gain, e.g. a pure delay),
                  "low-pass"  if peak_freq <  f_low  (default f0),
                  "high-pass" if peak_freq >  f_high (default 1/2 - f0),
                  "band-pass" otherwise.

``transfer_function`` is the closed form of H for S4D kernels K[l] = Re sum_m CdB_m dA_m^l (BiGS's):

    H(w) = 1/2 sum_m [ CdB_m / (1 - dA_m e^{-iw}) + conj(CdB_m) / (1 - conj(dA_m) e^{-iw}) ],  w = 2 pi f.

It is the transform of the infinite kernel. The FFT of the kernel truncated to L taps is instead

    H_L(w) = 1/2 sum_m [ CdB_m (1 - dA_m^L e^{-iwL}) / (1 - dA_m e^{-iw}) + conj(...) ],

so the two agree only where |dA_m|^L is negligible (the kernel has decayed within L);
``transfer_function(..., length=L)`` returns H_L, which equals the FFT at any n_fft >= L.

``spectral_shift`` compares the statistics of two sets of kernels (pretrained vs fine-tuned);
``mode_kernels`` splits CodeSSM's kernels into their modes and ``shift_tables`` gathers the
shifts chapter 05 shows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import wilcoxon

from ..models.s4d import kernel_from_modes

STATISTICS = ("centroid", "low_freq_fraction", "effective_length")
DEFAULT_NAMES = ("layer", "direction", "kernel")


@dataclass
class Spectrum:
    """The one-sided spectrum of a batch of kernels [..., L]. Arrays are numpy; ``...`` is the
    kernels' leading shape, F = n_fft // 2 + 1 bins."""
    freqs: np.ndarray              # [F] cycles per token, 0 .. 1/2
    response: np.ndarray           # [..., F] complex H(f) (the rfft)
    power: np.ndarray              # [..., F] normalised power P(f), sums to 1 over the bins
    energy: np.ndarray             # [...] sum_l k[l]^2
    centroid: np.ndarray           # [...] cycles per token
    low_freq_fraction: np.ndarray  # [...] share of energy below f0
    effective_length: np.ndarray   # [...] int, lags holding 90% of the energy, minus one
    peak_freq: np.ndarray          # [...] where |H| peaks
    filter_type: np.ndarray        # [...] str: low-pass / band-pass / high-pass / all-pass
    f0: float
    n_fft: int
    length: int

    @property
    def magnitude(self) -> np.ndarray:
        return np.abs(self.response)

    def table(self, names=None) -> pd.DataFrame:
        """The statistics as a tidy DataFrame: one row per kernel, the leading indices as
        integer columns named ``names`` (default: layer, direction, kernel for 3 leading axes,
        else dim0, dim1, ...), then energy, centroid, low_freq_fraction, effective_length,
        peak_freq, filter_type."""
        shape = self.energy.shape
        if names is None:
            names = DEFAULT_NAMES if len(shape) == 3 else tuple(f"dim{i}" for i in range(len(shape)))
        if len(names) != len(shape):
            raise ValueError(f"{len(names)} names {tuple(names)} for {len(shape)} leading axes {shape}")
        index = np.indices(shape).reshape(len(shape), -1) if shape else np.zeros((0, 1), int)
        cols = {name: index[i] for i, name in enumerate(names)}
        for stat in ("energy", "centroid", "low_freq_fraction", "effective_length", "peak_freq", "filter_type"):
            cols[stat] = getattr(self, stat).reshape(-1)
        return pd.DataFrame(cols)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if not x.is_complex() else x
        return x.numpy()
    return np.asarray(x, dtype=float)


def spectrum(kernel, n_fft: int | None = None, f0: float = 0.05, f_low: float | None = None,
             f_high: float | None = None, energy_fraction: float = 0.9) -> Spectrum:
    """The spectrum and statistics (module docstring) of real kernels [..., L] (torch or numpy;
    computed in float64). ``n_fft`` >= L zero-pads (finer grid, same statistics up to
    sampling); default L. Raises ValueError for a kernel with zero energy or non-finite taps."""
    k = _as_numpy(kernel)
    if np.iscomplexobj(k):
        raise ValueError("spectrum expects real kernels")
    if k.ndim < 1 or k.shape[-1] < 1:
        raise ValueError(f"kernel must be [..., L] with L >= 1, got shape {k.shape}")
    L = k.shape[-1]
    n_fft = L if n_fft is None else int(n_fft)
    if n_fft < L:
        raise ValueError(f"n_fft={n_fft} is shorter than the kernel (L={L}); it would alias")
    if not np.isfinite(k).all():
        raise ValueError("kernel has non-finite taps (NaN or inf)")
    sq = k ** 2
    energy = sq.sum(-1)
    if (energy == 0).any():
        bad = [tuple(int(i) for i in ix) for ix in np.argwhere(energy == 0)[:5]]
        raise ValueError(f"{int((energy == 0).sum())} kernel(s) have zero energy (all taps 0), "
                         f"e.g. at leading index {bad}: their spectrum is undefined")
    freqs = np.fft.rfftfreq(n_fft)                      # m / n_fft, cycles per token
    H = np.fft.rfft(k, n=n_fft, axis=-1)
    w = np.full(freqs.shape, 2.0)
    w[0] = 1.0
    if n_fft % 2 == 0:
        w[-1] = 1.0                                     # the Nyquist bin is its own mirror
    p = w * np.abs(H) ** 2
    power = p / p.sum(-1, keepdims=True)
    centroid = (power * freqs).sum(-1)
    low = power[..., freqs < f0].sum(-1)
    cum = np.cumsum(sq, -1)
    # smallest n with cum[n] >= fraction * energy (a relative slack absorbs rounding)
    eff = (cum < energy_fraction * energy[..., None] * (1 - 1e-12)).sum(-1)
    mag = np.abs(H)
    peak = freqs[mag.argmax(-1)]
    f_low = f0 if f_low is None else f_low
    f_high = 0.5 - f0 if f_high is None else f_high
    kind = np.where(peak < f_low, "low-pass", np.where(peak > f_high, "high-pass", "band-pass")).astype(object)
    kind[mag.max(-1) <= (1 + 1e-6) * mag.min(-1)] = "all-pass"
    return Spectrum(freqs=freqs, response=H, power=power, energy=energy, centroid=centroid,
                    low_freq_fraction=low, effective_length=eff.astype(int), peak_freq=peak,
                    filter_type=kind, f0=f0, n_fft=n_fft, length=L)


def spectral_statistics(kernel, names=None, n_fft: int | None = None, f0: float = 0.05, **kw) -> pd.DataFrame:
    """``spectrum(kernel, n_fft, f0, **kw).table(names)``: one row per kernel."""
    return spectrum(kernel, n_fft=n_fft, f0=f0, **kw).table(names)


def transfer_function(modes, freqs=None, *, omega=None, D=None, length: int | None = None) -> torch.Tensor:
    """Closed-form frequency response of S4D kernels K[l] = Re sum_m CdB_m dA_m^l.

    modes: (dA, CdB), complex [..., M] as returned by ``CodeSSMForMaskedLM.discrete_modes()``
    ([layers, 2, n_kernels, M]) or ``S4DKernel.discrete_modes()``. Give the grid either as
    ``freqs`` (cycles per token, e.g. ``Spectrum.freqs``) or ``omega`` (radians per token,
    omega = 2 pi freqs), any shape [F...]. Returns complex128 [..., F...]:

        H(w) = 1/2 sum_m CdB_m / (1 - dA_m e^{-iw}) + conj(CdB_m) / (1 - conj(dA_m) e^{-iw})  (+ D)

    ``length=L`` gives the response of the kernel truncated to L taps (the numerators gain
    the factor 1 - dA_m^L e^{-iwL}), equal to ``torch.fft.rfft(model.kernels(L), n)`` at
    f = j / n for any n >= L; without it, the infinite kernel's response, which matches the
    FFT only once |dA_m|^L is negligible. ``D`` (broadcastable to [...], optional, default
    none) adds the skip term; ``CodeSSMForMaskedLM.kernels`` excludes it (CodeSSM's D is one
    scalar per S4D layer, as BiGS's)."""
    if (freqs is None) == (omega is None):
        raise ValueError("give exactly one of freqs (cycles per token) or omega (radians per token)")
    dA, CdB = modes
    dA = torch.as_tensor(dA).detach().to(torch.complex128)
    CdB = torch.as_tensor(CdB).detach().to(torch.complex128)
    if dA.shape != CdB.shape:
        raise ValueError(f"dA {tuple(dA.shape)} and CdB {tuple(CdB.shape)} must have the same shape")
    w = torch.as_tensor(2 * np.pi * np.asarray(freqs, dtype=float) if omega is None
                        else np.asarray(omega, dtype=float), dtype=torch.float64)
    grid = w.shape
    z = torch.exp(-1j * w.reshape(-1)).to(torch.complex128)          # e^{-iw}: [F]
    a, c = dA[..., :, None], CdB[..., :, None]                        # [..., M, 1]
    num_a = num_b = 1.0
    if length is not None:
        zL = torch.exp(-1j * length * w.reshape(-1)).to(torch.complex128)
        # dA^L as exp(L log dA); a mode with dA = 0 (underflow) has dA^L = 0
        safe = torch.where(a == 0, torch.ones_like(a), a)
        aL = torch.where(a == 0, torch.zeros_like(a), torch.exp(length * safe.log()))
        num_a, num_b = 1 - aL * zL, 1 - aL.conj() * zL
    H = 0.5 * (c * num_a / (1 - a * z) + c.conj() * num_b / (1 - a.conj() * z)).sum(-2)
    if D is not None:
        H = H + torch.as_tensor(D, dtype=torch.float64)[..., None]
    return H.reshape(*H.shape[:-1], *grid)


def _bootstrap_ci(diff: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def spectral_shift(before, after, f0: float = 0.05, pool_layers: bool = False, min_n: int = 6,
                   n_boot: int = 2000, seed: int = 0, n_fft: int | None = None) -> pd.DataFrame:
    """How the kernel statistics move between two checkpoints.

    before, after: kernels [layers, directions, kernels, L] (e.g. ``model.kernels(L)`` of a
    pretrained and a fine-tuned CodeSSM; or [layers, directions, channels, L] effective
    kernels). Kernel i of ``before`` is paired with kernel i of ``after``. One row per
    (layer, direction, statistic) — per (direction, statistic) with layer = "all" when
    ``pool_layers`` — with columns

        layer, direction, statistic, n (paired kernels), before, after (means),
        change (= mean of after - before), ci_low, ci_high, p_value, test

    Significance, across the n paired kernels of the group: a two-sided Wilcoxon signed-rank
    test (scipy.stats.wilcoxon) on the paired differences, and a percentile bootstrap 95%
    interval of the mean change (``n_boot`` resamples, seeded). Both only when n >= ``min_n``;
    otherwise p_value and the interval are NaN and ``test`` reads "n too small (n=... < 6)".
    All differences zero: p_value 1, interval [0, 0], test "no change". Statistics are those
    of ``spectrum(..., f0)``: centroid, low_freq_fraction, effective_length."""

    b, a = _as_numpy(before), _as_numpy(after)
    if b.shape != a.shape or b.ndim != 4:
        raise ValueError(f"before and after must both be [layers, directions, kernels, L]; "
                         f"got {b.shape} and {a.shape}")
    sb, sa = spectrum(b, n_fft=n_fft, f0=f0), spectrum(a, n_fft=n_fft, f0=f0)
    rng = np.random.default_rng(seed)
    n_layers, n_dir = b.shape[:2]
    groups = ([("all", d, (slice(None), d)) for d in range(n_dir)] if pool_layers else
              [(l, d, (l, d)) for l in range(n_layers) for d in range(n_dir)])
    rows = []
    for layer, d, ix in groups:
        for stat in STATISTICS:
            x = getattr(sb, stat)[ix].reshape(-1).astype(float)
            y = getattr(sa, stat)[ix].reshape(-1).astype(float)
            diff = y - x
            n = len(diff)
            row = dict(layer=layer, direction=d, statistic=stat, n=n, before=x.mean(), after=y.mean(),
                       change=diff.mean(), ci_low=np.nan, ci_high=np.nan, p_value=np.nan)
            if n < min_n:
                row["test"] = f"n too small (n={n} < {min_n})"
            elif np.all(diff == 0):
                row.update(ci_low=0.0, ci_high=0.0, p_value=1.0, test="no change")
            else:
                row["ci_low"], row["ci_high"] = _bootstrap_ci(diff, n_boot, rng)
                row["p_value"] = float(wilcoxon(y, x, alternative="two-sided").pvalue)
                row["test"] = "wilcoxon signed-rank"
            rows.append(row)
    return pd.DataFrame(rows)


def mode_kernels(model, length: int) -> torch.Tensor:
    """One kernel per S4D mode of a CodeSSM, K_m[l] = Re(CdB_m dA_m^l): float
    [layers, 2, n_kernels * M, length]. Each S4D kernel is the sum of its M mode kernels, and a
    mode keeps its index through fine-tuning, so modes pair before and after."""
    dA, CdB = model.discrete_modes()                                   # [layers, 2, n_kernels, M]
    shape = dA.shape[:2] + (-1, 1)
    return kernel_from_modes(dA.reshape(shape), CdB.reshape(shape), length).detach()


def shift_tables(before: torch.Tensor, afters: dict, modes_before: torch.Tensor, modes_after: dict,
                 f0: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``spectral_shift`` of whole kernels from ``before`` to each ``afters[task]`` three ways,
    each with a ``task`` column: per layer and direction (whole kernels, too few to test), every
    layer and direction pooled (one test per task), and per layer over its paired single-mode
    kernels (``mode_kernels``; both directions pooled)."""
    flat = lambda k: k.reshape(1, 1, -1, k.shape[-1])                  # noqa: E731 [1, 1, all kernels, L]
    per_layer = lambda k: k.reshape(k.shape[0], 1, -1, k.shape[-1])   # noqa: E731 [layers, 1, kernels, L]
    whole, pooled, per_mode = [], [], []
    for task, after in afters.items():
        whole.append(spectral_shift(before, after, f0=f0).assign(task=task))
        pooled.append(spectral_shift(flat(before), flat(after), f0=f0).assign(task=task))
        per_mode.append(spectral_shift(per_layer(modes_before), per_layer(modes_after[task]), f0=f0).assign(task=task))
    return tuple(pd.concat(x, ignore_index=True) for x in (whole, pooled, per_mode))


def centroid_table(before: torch.Tensor, afters: dict, model: str, f0: float = 0.05) -> pd.DataFrame:
    """The spectral centroid of every kernel (or mode kernel) before and after fine-tuning on
    each task: one row per (task, layer, direction, kernel) with centroid_before,
    centroid_after (cycles per token): the ``spectra`` frame of ``analysis.claims``.
    before, afters[task]: r(layers 2 K L), kernel i paired with kernel i."""
    c0 = spectrum(_as_numpy(before), f0=f0).centroid                   # [layers, 2, K]
    layers, dirs, K = c0.shape
    index = np.indices((layers, dirs, K)).reshape(3, -1)
    frames = [pd.DataFrame({"model": model, "task": task, "layer": index[0], "direction": index[1],
                            "kernel": index[2], "centroid_before": c0.reshape(-1),
                            "centroid_after": spectrum(_as_numpy(after), f0=f0).centroid.reshape(-1)})
              for task, after in afters.items()]
    return pd.concat(frames, ignore_index=True)
