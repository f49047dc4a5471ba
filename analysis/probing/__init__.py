"""Probing: DirectProbe (exact LP separability), a linear probe with a control task, pair
features, per-layer representations; ``run`` ties them to encoders and probe datasets, and
``forgetting`` compares the probes before and after fine-tuning."""
from .directprobe import DirectProbeResult, directprobe, separable
from .experiment import forgetting, items_many, run, run_items, run_many, sample_size_sweep
from .features import pair_features
from .linear import control_labels, linear_probe
from .representations import hidden_states

__all__ = ["DirectProbeResult", "directprobe", "separable", "forgetting", "items_many", "run", "run_items", "run_many",
           "sample_size_sweep", "pair_features",
           "control_labels", "linear_probe", "hidden_states"]
