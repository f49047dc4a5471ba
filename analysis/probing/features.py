"""Pair representations from per-function code-token vectors.

``diff``: h_i - h_j (AST distance);  ``concat``: [h_i; h_j] (siblings, data flow)."""
from __future__ import annotations

import numpy as np


def pair_features(states: list[np.ndarray], pairs, mode: str, layer: int) -> np.ndarray:
    """states: one array [layers, tokens, d] per function; pairs: rows with function, i, j."""
    f, i, j = (np.asarray(pairs[k]) for k in ("function", "i", "j"))
    hi = np.stack([states[a][layer, b] for a, b in zip(f, i)])
    hj = np.stack([states[a][layer, b] for a, b in zip(f, j)])
    if mode == "diff":
        return hi - hj
    if mode == "concat":
        return np.concatenate([hi, hj], axis=1)
    raise ValueError(f"pair mode must be 'diff' or 'concat', got {mode!r}")
