"""Interpreting SSM kernels: spectra of S4D (and effective) kernels, their closed-form transfer
functions and shifts under fine-tuning (``spectrum``); the hidden attention of BiMamba's
selective scans and the kernels by lag it implies (``selective``). Pure functions of models
and tensors: nothing here trains or loads."""
from .selective import (attention_from_scan_inputs, effective_kernels, hidden_attention, lti_kernels,
                        mean_effective_kernels, median_step_lti_kernels, median_step_size)
from .spectrum import (Spectrum, centroid_table, mode_kernels, shift_tables, spectral_shift, spectral_statistics, spectrum,
                       transfer_function)

__all__ = ["Spectrum", "centroid_table", "spectrum", "spectral_statistics", "transfer_function", "spectral_shift", "mode_kernels",
           "shift_tables", "hidden_attention", "attention_from_scan_inputs", "effective_kernels", "lti_kernels",
           "mean_effective_kernels", "median_step_lti_kernels", "median_step_size"]
