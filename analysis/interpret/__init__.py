"""Interpreting SSM kernels: SSM-Interpret as the paper's authors compute it (``ssm_interpret``:
magnitude spectra at L = 4096, centroid, LHFR, filter classes and their transitions); the
book's own spectra of S4D (and effective) kernels, their closed-form transfer functions and
shifts under fine-tuning (``spectrum``); the hidden attention of BiMamba's
selective scans and the kernels by lag it implies (``selective``). Pure functions of models
and tensors: nothing here trains or loads."""
from .selective import (SelectiveKernels, attention_from_scan_inputs, effective_kernels, hidden_attention, lti_kernels,
                        mean_effective_kernels, median_step_lti_kernels, median_step_size, selective_kernels)
from .ssm_interpret import (SSM_INTERPRET_LENGTH, class_transitions, filter_class, opposite_pairs,
                            ssm_interpret_statistics, taxonomy, transition_table)
from .spectrum import (Spectrum, centroid_table, mode_kernels, shift_tables, spectral_shift, spectral_statistics, spectrum,
                       transfer_function)

__all__ = ["Spectrum", "centroid_table", "spectrum", "spectral_statistics", "transfer_function", "spectral_shift", "mode_kernels",
           "shift_tables", "hidden_attention", "attention_from_scan_inputs", "effective_kernels", "lti_kernels",
           "mean_effective_kernels", "median_step_lti_kernels", "median_step_size", "SelectiveKernels", "selective_kernels",
           "SSM_INTERPRET_LENGTH", "ssm_interpret_statistics", "filter_class", "class_transitions", "transition_table",
           "taxonomy", "opposite_pairs"]
