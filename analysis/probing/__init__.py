"""Probing: DirectProbe (exact LP separability), a linear probe with a control task, and
pair features. ``run()`` ties them to models and probe datasets."""
from .directprobe import DirectProbeResult, directprobe, separable
from .experiment import resolve_checkpoint, run, run_many
from .features import pair_features
from .linear import control_labels, linear_probe
