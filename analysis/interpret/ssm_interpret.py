"""SSM-Interpret as the paper's authors compute it (their notebook ``kernel_analysis_ssm.ipynb``).

Per kernel K[0..L-1] (L = 4096 by default, whatever the pretraining context), its magnitude
spectrum with no window and no normalisation,

    |K(f_m)| = |rfft(K)[m]|,   f_m = m / L,   m = 0 .. n_bins - 1,   n_bins = L // 2 + 1

(0 .. 1/2 cycles per token), and from it

    dominant_frequency  f_{m*}, m* = argmax_m |K(f_m)| (the first bin on ties); dominant_magnitude |K(f_{m*})|
    spectral_centroid   sum_m f_m |K(f_m)| / sum_m |K(f_m)|            (magnitude-weighted)
    low_freq_energy     sum_{m <  int(0.1 n_bins)} |K(f_m)|^2
    high_freq_energy    sum_{m >= int(0.6 n_bins)} |K(f_m)|^2
    lhfr                low_freq_energy / high_freq_energy;  log10_lhfr = log10(lhfr)
    filter_class        "low-pass"   if centroid <  0.166 and log10_lhfr > 1
                        "high-pass"  if centroid >= 0.166 and log10_lhfr < 0
                        "band-pass"  if centroid >= 0.166 and 0 <= log10_lhfr <= 1
                        "unlabelled" otherwise

A flat spectrum (a delta kernel) has centroid 1/4 and lhfr = (bins below 10%) / (bins from 60%
on), 204 / 820 at L = 4096 (log10 -0.60): the thresholds call an all-pass kernel high-pass.

These are not the book's own statistics (``spectrum``: power-weighted centroid, energy shares,
effective length); both are kept, each named as whose it is.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

SSM_INTERPRET_LENGTH = 4096       # the authors' kernel length
CENTROID_EDGE = 0.166             # cycles per token: low-pass below, band/high-pass from here on
LOW_PASS_LOG10 = 1.0              # log10 LHFR above this (and centroid below the edge): low-pass
HIGH_PASS_LOG10 = 0.0             # log10 LHFR below this (and centroid from the edge): high-pass
LOW_BAND, HIGH_BAND = 0.1, 0.6    # LHFR: energy of the first 10% of bins over that from 60% on
CLASSES = ("low-pass", "band-pass", "high-pass", "unlabelled")
DIRECTIONS = ("forward", "backward")
STATISTICS = ("dominant_frequency", "dominant_magnitude", "spectral_centroid", "low_freq_energy",
              "high_freq_energy", "lhfr", "log10_lhfr", "filter_class")


def filter_class(spectral_centroid, log10_lhfr):
    """The authors' class of each kernel from its centroid (cycles per token) and log10 LHFR
    (module docstring); arrays of any equal shape, or scalars (then a str). NaN is unlabelled."""
    c = np.asarray(spectral_centroid, dtype=float)
    r = np.asarray(log10_lhfr, dtype=float)
    if c.shape != r.shape:
        raise ValueError(f"spectral_centroid {c.shape} and log10_lhfr {r.shape} must have the same shape")
    out = np.full(c.shape, "unlabelled", dtype=object)
    with np.errstate(invalid="ignore"):
        out[(c < CENTROID_EDGE) & (r > LOW_PASS_LOG10)] = "low-pass"
        out[(c >= CENTROID_EDGE) & (r < HIGH_PASS_LOG10)] = "high-pass"
        out[(c >= CENTROID_EDGE) & (r >= HIGH_PASS_LOG10) & (r <= LOW_PASS_LOG10)] = "band-pass"
    return out.item() if out.ndim == 0 else out


def _taps(kernels) -> np.ndarray:
    if isinstance(kernels, torch.Tensor):
        kernels = kernels.detach().cpu().double().numpy()
    k = np.asarray(kernels)
    if np.iscomplexobj(k) or k.dtype == object:
        raise ValueError("SSM-Interpret expects real kernels [..., L]")
    k = k.astype(float)
    if k.ndim < 1 or k.shape[-1] < 2:
        raise ValueError(f"kernels must be [..., L] with L >= 2 lags, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError("kernels have non-finite taps (NaN or inf)")
    return k


def _statistics(k: np.ndarray) -> dict:
    """The module docstring's statistics of kernels r(... L), each r(...)."""
    n_bins = k.shape[-1] // 2 + 1
    freqs = np.fft.rfftfreq(k.shape[-1])                              # [n_bins] 0 .. 1/2
    mag = np.abs(np.fft.rfft(k, axis=-1))                             # [..., n_bins]
    total = mag.sum(-1)
    if (total == 0).any():
        raise ValueError(f"{int((total == 0).sum())} kernel(s) are all zeros: their spectrum is undefined")
    top = mag.argmax(-1)
    low = (mag[..., :int(LOW_BAND * n_bins)] ** 2).sum(-1)
    high = (mag[..., int(HIGH_BAND * n_bins):] ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lhfr = low / high                                             # inf where no high-band energy
        log10 = np.log10(lhfr)
    centroid = (freqs * mag).sum(-1) / total
    return {"dominant_frequency": freqs[top], "dominant_magnitude": np.take_along_axis(mag, top[..., None], -1)[..., 0],
            "spectral_centroid": centroid, "low_freq_energy": low, "high_freq_energy": high, "lhfr": lhfr,
            "log10_lhfr": log10, "filter_class": filter_class(centroid, log10)}


def _frame(k: np.ndarray, checkpoint) -> pd.DataFrame:
    shape = k.shape[:-1]
    stats = _statistics(k)
    if len(shape) == 3:
        if shape[1] != 2:
            raise ValueError(f"model kernels must be [layers, 2 directions, n_kernels, L], got {k.shape}")
        at = np.indices(shape).reshape(3, -1)
        cols = {"layer": at[0] + 1, "direction": np.asarray(DIRECTIONS, dtype=object)[at[1]], "kernel": at[2]}
    else:
        cols = {"kernel": np.arange(int(np.prod(shape)))}
    if checkpoint is not None:
        cols = {"checkpoint": checkpoint, **cols}
    return pd.DataFrame({**cols, "length": k.shape[-1], **{s: np.reshape(v, -1) for s, v in stats.items()}})


def ssm_interpret_statistics(kernels, checkpoint: str | None = None, *, length: int = SSM_INTERPRET_LENGTH
                             ) -> pd.DataFrame:
    """The authors' per-kernel statistics (module docstring) as a tidy frame, one row per kernel.

    kernels: a model's kernels r(layers 2 K L) (``model.kernels(L)``; rows get ``layer`` 1..layers
    as the authors number them, ``direction`` forward/backward, ``kernel``), any other real
    array r(... L) (rows: ``kernel``, the flat index), a model (anything with ``kernels(L)``,
    materialised at ``length``), or a mapping checkpoint name -> one of those (the frames
    stacked with a ``checkpoint`` column). Columns: [checkpoint,] layer, direction, kernel,
    length, then ``STATISTICS``. ``length`` applies to models only; an array is analysed at
    its own L. All-zero or non-finite kernels are a ValueError."""
    if isinstance(kernels, Mapping):
        if not kernels:
            raise ValueError("no checkpoints given: pass {checkpoint name: model or kernels}")
        return pd.concat([ssm_interpret_statistics(v, name, length=length) for name, v in kernels.items()],
                         ignore_index=True)
    if callable(getattr(kernels, "kernels", None)):
        if int(length) < 2:
            raise ValueError(f"length must be at least 2 lags, got {length}")
        kernels = kernels.kernels(int(length))
    return _frame(_taps(kernels), checkpoint)


def class_transitions(stats: pd.DataFrame, before: str, afters=None) -> pd.DataFrame:
    """How each kernel's class and statistics move from checkpoint ``before`` to each of
    ``afters`` (default: every other checkpoint in ``stats``, an ``ssm_interpret_statistics``
    or ``analysis.reference.paper_spectra()`` frame). One row per (checkpoint, layer,
    direction[, kernel]): class_before, class_after, changed, spectral_centroid and log10_lhfr
    before and after, d_centroid and d_log10_lhfr (after - before)."""
    missing = [c for c in ("checkpoint", "layer", "direction", "spectral_centroid", "log10_lhfr") if c not in stats]
    if missing:
        raise ValueError(f"stats lacks columns {missing}; pass ssm_interpret_statistics({{checkpoint: ...}})")
    keys = ["layer", "direction", *(["kernel"] if "kernel" in stats else [])]
    found = list(dict.fromkeys(stats.checkpoint))
    afters = [c for c in found if c != before] if afters is None else list(afters)
    absent = [c for c in [before, *afters] if c not in found]
    if absent:
        raise ValueError(f"no rows for checkpoint(s) {absent}; found {found}")
    stats = stats.assign(filter_class=filter_class(stats.spectral_centroid, stats.log10_lhfr))
    cols = ["filter_class", "spectral_centroid", "log10_lhfr"]
    base = stats[stats.checkpoint == before].set_index(keys)[cols]
    rows = []
    for name in afters:
        after = stats[stats.checkpoint == name].set_index(keys)[cols]
        if len(after) != len(base) or not after.index.isin(base.index).all():
            raise ValueError(f"checkpoints {before!r} and {name!r} do not have the same kernels (layer, direction)")
        after = after.reindex(base.index)
        rows.append(pd.DataFrame({"checkpoint": name, "class_before": base.filter_class.to_numpy(),
                                  "class_after": after.filter_class.to_numpy(),
                                  "centroid_before": base.spectral_centroid.to_numpy(),
                                  "centroid_after": after.spectral_centroid.to_numpy(),
                                  "log10_lhfr_before": base.log10_lhfr.to_numpy(),
                                  "log10_lhfr_after": after.log10_lhfr.to_numpy()}, index=base.index).reset_index())
    out = pd.concat(rows, ignore_index=True)
    out = out.assign(changed=out.class_before != out.class_after, d_centroid=out.centroid_after - out.centroid_before,
                     d_log10_lhfr=out.log10_lhfr_after - out.log10_lhfr_before)
    return out[["checkpoint", *keys, "class_before", "class_after", "changed", "centroid_before", "centroid_after",
                "d_centroid", "log10_lhfr_before", "log10_lhfr_after", "d_log10_lhfr"]]


def transition_table(stats: pd.DataFrame, before: str, afters=None) -> pd.DataFrame:
    """``class_transitions`` for reading: one row per layer and direction (and kernel, if
    several), the class at ``before``, then per later checkpoint its class, written
    "band-pass → high-pass" where it changed."""
    t = class_transitions(stats, before, afters)
    keys = ["layer", "direction", *(["kernel"] if "kernel" in t and t.kernel.nunique() > 1 else [])]
    cell = np.where(t.changed, t.class_before + " → " + t.class_after, t.class_after)
    wide = t.assign(cell=cell).pivot_table(index=keys, columns="checkpoint", values="cell", aggfunc="first")
    first = t.drop_duplicates(keys).set_index(keys).class_before.rename(before)
    order = list(dict.fromkeys(t.checkpoint))
    return pd.concat([first, wide[order]], axis=1).reindex(sorted(first.index, key=_order))


def _order(key):
    """Rows by layer, forward before backward."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple(DIRECTIONS.index(k) if k in DIRECTIONS else k for k in key)


def taxonomy(stats: pd.DataFrame) -> pd.DataFrame:
    """The filter taxonomy of one checkpoint's kernels: counts of each class per direction
    (rows forward, backward, all; columns ``CLASSES``)."""
    if "direction" not in stats:
        raise ValueError("stats needs a direction column (a model's kernels [layers, 2, K, L])")
    if "checkpoint" in stats and stats.checkpoint.nunique() > 1:
        raise ValueError(f"taxonomy of one checkpoint; got {sorted(stats.checkpoint.unique())}: select one")
    cls = filter_class(stats.spectral_centroid, stats.log10_lhfr)
    counts = pd.crosstab(stats.direction, cls).reindex(index=list(DIRECTIONS), columns=list(CLASSES), fill_value=0)
    counts.loc["all"] = counts.sum()
    counts.columns.name, counts.index.name = None, "direction"
    return counts.astype(int)


def opposite_pairs(stats: pd.DataFrame) -> pd.DataFrame:
    """The layers of one checkpoint whose two directions are of opposite kinds (one low-pass,
    the other high-pass): layer, forward class, backward class (one row per such layer; with
    several kernels per direction, any forward kernel against any backward one)."""
    cls = stats.assign(filter_class=filter_class(stats.spectral_centroid, stats.log10_lhfr))
    rows = []
    for layer, g in cls.groupby("layer", sort=True):
        f = set(g[g.direction == "forward"].filter_class)
        b = set(g[g.direction == "backward"].filter_class)
        if ("low-pass" in f and "high-pass" in b) or ("high-pass" in f and "low-pass" in b):
            rows.append({"layer": layer, "forward": "/".join(sorted(f)), "backward": "/".join(sorted(b))})
    return pd.DataFrame(rows, columns=["layer", "forward", "backward"])
