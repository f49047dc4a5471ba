"""Benchmarks: performance targets are measured here, never asserted in tests.

    python -m analysis.bench scan [--lengths 256 1024 4096] [--repeats 3] [--threads 2]
                                  [--ref-backward-max 1024]

    python -m analysis.bench directprobe [--n 3600 5200] [--dim 768 768] [--labels 3 5] [--flip 0.05]
                                         [--seed 0]

    python -m analysis.bench threads [--models codessm rocoder bimamba] [--pairs 16] [--length 128]
                                     [--repeats 5] [--threads 2]

    python -m analysis.bench paper-shapes [--profile paper] [--models ...] [--batch 1]
                                          [--precision no|bf16|fp16] [--threads 2] [--device cpu]

    python -m analysis.bench gpu [--profile paper] [--models ...] [--batch 2] [--chapter 02] [--no-chapter]

    python -m analysis.bench pretrain [--profile default] [--models codessm rocoder bimamba]
                                      [--steps 8] [--threads 1]

One module per subject, each with its command's ``HELP``, ``add_arguments(parser)`` and
``command(args)`` (what each measures: its docstring): ``scan``, ``probing`` (directprobe),
``threads``, ``pretraining`` (pretrain), ``shapes`` (paper-shapes), ``gpu``; ``measure`` holds
what they share (the machine's name, memory from /proc). ``__main__`` maps command names to
the modules (``COMMANDS``) and dispatches. This package re-exports the functions the book and
the tests call.
"""
from .gpu import GPU_TOLERANCE, gpu_chapter_check, gpu_missing, gpu_scan_check
from .pretraining import PRETRAIN_MODES, pack, pretrain_batches, pretrain_benchmark
from .probing import directprobe_benchmark, directprobe_comparison, gaussian_classes, probe_like
from .scan import IMPLEMENTATIONS, SCAN_INPUTS, print_scan_table, scan_benchmark, scan_inputs, unbind_loop
from .shapes import (activation_bytes, gpu_bytes, masked_per_sequence, measure_model, mlm_batch, paper_shapes,
                     print_paper_shapes, saved_activations, smallest_gpu, training_step)
from .threads import threads_benchmark

__all__ = ["GPU_TOLERANCE", "gpu_chapter_check", "gpu_missing", "gpu_scan_check", "PRETRAIN_MODES", "pack",
           "pretrain_batches", "pretrain_benchmark", "directprobe_benchmark", "directprobe_comparison",
           "gaussian_classes", "probe_like",
           "IMPLEMENTATIONS", "SCAN_INPUTS", "print_scan_table", "scan_benchmark", "scan_inputs", "unbind_loop",
           "activation_bytes", "gpu_bytes", "masked_per_sequence", "measure_model", "mlm_batch", "paper_shapes",
           "print_paper_shapes", "saved_activations", "smallest_gpu", "training_step", "threads_benchmark"]
