"""Run profiles: the one place for every size, step count and seed.

A chapter names a profile and may override any field::

    cfg = profile("smoke", pretrain_steps=50)

``smoke``   CI: tiny models and data, every chapter in a minute or two on 2 CPU cores.
``default`` the rendered book on a laptop CPU: the whole book in under an hour on 2 cores.
``long``    the default's models pretrained on 8x its token budget (6,000 steps of 16 x 128
          tokens; whole functions, every window), fine-tuned on the whole training sets with
          early stopping: hours on 2 CPU cores (chapter 04 reads its measured table).
``paper``   GPU scale, closer to the paper's (unknown, probably BERT-base-like) sizes.
``authors`` the CodeSSM authors' published checkpoints (``authors_*`` fields) at the paper's sizes
          (12 layers of 768, kernels at L = 4096, the authors' probe layers 3, 4, 6, 8, 10, 11 and
          probe sets: 1,300 pairs per label for distance, 1,500 for siblings and data flow): nothing
          is trained (``external_only``); chapters that need training say they do not apply.

Every field has a valid range (``RANGES``, beside the fields), checked whenever a profile is
made (``profile``, ``Profile.replace``, ``coerce`` of a command-line value), so a bad value
fails at once with the field, the value and the range, not deep inside a run.

Artifacts are cached by the subset of fields that produced them (``Profile.subset``),
so changing a probing parameter never retrains a model.

``mixed_precision`` is the training precision on a GPU: "no" (float32), "bf16" (bfloat16
autocast, float32 weights and optimiser states; GPUs from Ampere on) or "fp16" (float16 autocast
with loss scaling); it is "bf16" in ``paper`` and ignored on CPU.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Range:
    """Finite numbers in an interval: ``Range(0, 1, low_open=True, high_open=True)`` is (0, 1);
    ``multiple_of=2`` also asks for even integers."""
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    multiple_of: float = 0  # 0: any number in the interval

    def __contains__(self, x) -> bool:
        if not isinstance(x, (int, float)) or not math.isfinite(x) or not self.low <= x <= self.high:
            return False
        if self.multiple_of and x % self.multiple_of:
            return False
        return not ((self.low_open and x == self.low) or (self.high_open and x == self.high))

    def __str__(self) -> str:
        text = f"in {'(' if self.low_open or self.low == -math.inf else '['}{_number(self.low)}, " \
               f"{_number(self.high)}{')' if self.high_open or self.high == math.inf else ']'}"
        return text + (f", a multiple of {_number(self.multiple_of)}" if self.multiple_of else "")


def _number(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class OneOf:
    """One of a few values."""
    values: tuple

    def __contains__(self, x) -> bool:
        return x in self.values and type(x) in {type(v) for v in self.values}

    def __str__(self) -> str:
        return " or ".join(map(repr, self.values))


@dataclass(frozen=True)
class Text:
    """Strings matching ``pattern`` (a regular expression, matched whole)."""
    pattern: str
    description: str

    def __contains__(self, x) -> bool:
        return isinstance(x, str) and re.fullmatch(self.pattern, x) is not None

    def __str__(self) -> str:
        return self.description


AT_LEAST_1, AT_LEAST_0, POSITIVE = Range(1), Range(0), Range(0, low_open=True)
FRACTION = Range(0, 1, low_open=True, high_open=True)


@dataclass(frozen=True)
class Profile:
    name: str = "default"
    seed: int = 0

    # --- corpus (analysis.data) ---
    corpus: str = "pypi"                 # "pypi" (data/sources.toml) or "codesearchnet:PATH"
    corpus_set: str = "default"          # which sources.toml entries to use ("smoke" or "default")
    max_file_bytes: int = 1_000_000      # larger source files are skipped and counted
    max_functions: int = 0               # 0 = all extracted functions
    vocab_size: int = 4000               # byte-level BPE vocabulary
    max_length: int = 128                # pretraining context, in subword tokens

    # --- models (analysis.models) ---
    d_model: int = 128
    n_layers: int = 4
    d_state: int = 32                    # S4D complex modes N per kernel (BiGS's num_ssm)
    n_kernels: int = 1                   # independent S4D kernels per layer and direction
    hf_conv_width: int = 0               # CodeSSM-HF parallel grouped convolution width (0 = off; codessm-hf: 3)
    position_embeddings: bool = False    # CodeSSM adds BiGS's absolute position embeddings (the CodeSSM paper: better without)
    n_heads: int = 4                     # RoCoder attention heads
    mamba_d_state: int = 16
    mamba_expand: int = 2
    mamba_d_conv: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = False         # the LM head's weight is the input embedding table (BERT's tying)

    # --- pretraining (analysis.train) ---
    pretrain_steps: int = 1500           # steps of up to batch_size x max_length tokens (length-bucketed)
    pretrain_seed: int = 0               # which pretraining run: seed + pretrain_seed draws init, batch order, masks
    pretrain_seeds: int = 1              # pretraining runs the verdicts sample (chapter 03's C1 and the gate)
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200              # linear warm-up (RoCoder, post-LN and as wide as BiGS's layers, stalls at the unigram loss with 50)
    mask_prob: float = 0.15
    log_every: int = 10
    mixed_precision: str = "no"          # "no", "bf16" or "fp16" (GPU only; module docstring)
    pretrain_whole_functions: bool = False  # packed rows hold whole functions (every window), not only their first max_length tokens
    pretrain_docstrings: bool = True     # pretraining code keeps its docstrings (False: code as search sees it)
    embedding_lr_scale: float = 1.0      # the input embedding table's pretraining learning rate is lr x this
    ssm_lr: float = 1e-3                 # pretraining learning rate of the S4D kernels' dt and A (no weight decay; BiGS: 0.001)

    # --- probing (analysis.probing) ---
    probe_functions_distance: int = 160
    probe_functions_siblings: int = 100
    probe_functions_dfg: int = 130
    probe_pairs_per_class: int = 300
    probe_pairs_per_class_siblings: int = 0  # the siblings probe's pairs per class (0: probe_pairs_per_class; the authors: 1,500)
    probe_pairs_per_class_dfg: int = 0   # the data-flow probe's pairs per class (0: probe_pairs_per_class; the authors: 1,500)
    probe_layers: tuple = ()             # the layers probed (0 = embeddings); empty: every layer (the authors: 3, 4, 6, 8, 10, 11 of 12)
    probe_max_tokens: int = 200          # probe functions have at most this many code tokens
    probe_within_context: bool = True    # probe functions fit the pretraining context (at most max_length subwords, <s> and </s> included); False: any length up to probe_max_tokens
    probe_test_fraction: float = 0.2
    probe_max_train_points: int = 600    # DirectProbe training points per layer (subsampled)
    probe_sweep_points: tuple = (200, 400, 600, 800)  # chapter 03's sample-size sweep
    # relation definitions (analysis.data.parse, .dataflow): True = the reference pipeline the
    # paper inherits (the book's default), False = the project's earlier variant; each is in the
    # cache key of the probe datasets (analysis.data.probes.probe_data_key) and of probe results
    probe_dfg_literals: bool = True      # literals are data-flow nodes (x = 0: x <- 0) and "no edge" pairs run from any token with an edge to any token (GraphCodeBERT); False: variables only
    probe_siblings_below: bool = True    # a leaf one level below a non-block sibling is a sibling too (Anand et al.); False: same parent only
    probe_string_quotes: bool = True     # a string's tree distance counts from its quote leaf (Anand et al.); False: from the string node

    # --- fine-tuning (analysis.finetune) ---
    finetune_steps: int = 200
    finetune_batch_size: int = 16
    finetune_lr: float = 5e-4
    finetune_eval_every: int = 0         # early stopping: score the validation set every this many steps (0: train finetune_steps)
    finetune_patience: int = 3           # early stopping: stop after this many scores without a new best
    seeds: int = 1                       # fine-tuning seeds per model and task
    pool_special_tokens: bool = True     # search's mean pooling averages <s> and </s> too (False: text and code tokens only)
    pool_centre: bool = True             # search scores centre each side's embeddings over the pool before the cosine
    finetune_centred: bool = False       # search fine-tuning centres each side over its batch before the cosine (trains as pool_centre scores)
    search_distractors: int = 999        # CodeSearchNet convention
    long_context_factor: float = 2.0     # long-context functions are at least this x max_length
    type_vocab_size: int = 20            # most frequent types, plus "other"
    finetune_train_size: int = 4000      # examples per fine-tuning training set (0 = all)
    finetune_test_size: int = 500        # test pool per task (0 = all)

    # --- SSM-Interpret (analysis.interpret) ---
    kernel_length: int = 128             # lags of a materialised kernel: the pretraining context
    low_freq_cutoff: float = 0.05        # cycles per token
    energy_fraction: float = 0.9         # effective length holds this share of the energy

    # --- throughput (chapter 02) ---
    ablation: bool = False               # chapter 06's ablation (pretrains 7 more models): off in default
    throughput_lengths: tuple = (256, 512, 1024, 2048, 4096, 8192)
    throughput_batch: int = 1

    # --- external checkpoints (analysis.checkpoints.external; the ``authors`` profile) ---
    # the CodeSSM authors' published weights: BiGS state dicts (.pth / .safetensors) with their
    # YAML config, RoCoder as Hugging Face RoFormer directories; "" = none (train as usual)
    authors_codessm: str = ""            # pretrained CodeSSM state dict
    authors_codessm_sqa: str = ""        # CodeSSM fine-tuned on SQA (long-context retrieval: task long_search)
    authors_codessm_types: str = ""      # CodeSSM fine-tuned on type inference (task types)
    authors_codessm_config: str = ""     # the authors' YAML config of their CodeSSM checkpoints
    authors_rocoder: str = ""            # pretrained RoCoder directory
    authors_rocoder_sqa: str = ""
    authors_rocoder_types: str = ""
    authors_tokenizer: str = ""          # Hugging Face tokenizer directory (the authors': CodeT5+ 220m's)
    external_only: bool = False          # nothing is trained: a checkpoint not given is an error naming its field

    def replace(self, **overrides) -> "Profile":
        """A copy with ``overrides``; unknown names or wrong types raise ``ValueError``."""
        return dataclasses.replace(self, **_checked(overrides))

    def subset(self, *names: str) -> dict:
        """The fields ``names`` as a dict: the cache key of an artifact built from them."""
        unknown = [n for n in names if n not in FIELD_NAMES]
        if unknown:
            raise ValueError(f"unknown profile field(s) {unknown}; valid: {sorted(FIELD_NAMES)}")
        return {n: getattr(self, n) for n in names}

    def differences(self) -> dict:
        """Fields that differ from the named base profile (for provenance lines)."""
        base = PROFILES.get(self.name)
        if base is None:
            return {}
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}

    def __post_init__(self):
        for f in fields(self):
            check_range(f.name, getattr(self, f.name))


MIXED_PRECISION = ("no", "bf16", "fp16")

# The valid values of every field (a tuple field: of each element). Ranges that depend on two
# fields (RoCoder's d_model divisible by n_heads) are checked where the model is built.
RANGES = {
    "name": Text(r"[A-Za-z0-9_.-]+", "a name of letters, digits, '_', '.' and '-'"),
    "seed": Range(0, 2**32 - 1),
    "corpus": Text(r"pypi|codesearchnet:.+", "'pypi' or 'codesearchnet:PATH'"),
    "corpus_set": Text(r"[A-Za-z0-9_-]+", "a set name of data/sources.toml"),
    "max_file_bytes": AT_LEAST_1, "max_functions": AT_LEAST_0,
    "vocab_size": Range(261),  # the 256 bytes and the 5 special tokens, then merges
    "max_length": Range(8),    # 0 and 1 would turn truncation off
    "d_model": Range(2), "n_layers": AT_LEAST_1, "d_state": AT_LEAST_1,
    "n_kernels": AT_LEAST_1, "hf_conv_width": AT_LEAST_0, "n_heads": AT_LEAST_1,
    "mamba_d_state": AT_LEAST_1, "mamba_expand": AT_LEAST_1, "mamba_d_conv": AT_LEAST_1,
    "dropout": Range(0, 1, high_open=True),
    "pretrain_steps": AT_LEAST_1, "pretrain_seed": AT_LEAST_0, "pretrain_seeds": AT_LEAST_1, "batch_size": AT_LEAST_1, "lr": POSITIVE, "weight_decay": AT_LEAST_0,
    "warmup_steps": AT_LEAST_0, "mask_prob": FRACTION, "log_every": AT_LEAST_1,
    "probe_functions_distance": AT_LEAST_1, "probe_functions_siblings": AT_LEAST_1,
    "probe_functions_dfg": AT_LEAST_1, "probe_pairs_per_class": AT_LEAST_1,
    "probe_pairs_per_class_siblings": AT_LEAST_0, "probe_pairs_per_class_dfg": AT_LEAST_0,
    "probe_layers": AT_LEAST_0, "probe_max_tokens": Range(2),
    "probe_test_fraction": FRACTION, "probe_max_train_points": Range(2), "probe_sweep_points": Range(2),
    "finetune_steps": AT_LEAST_1, "finetune_batch_size": Range(2),  # in-batch negatives need 2
    "finetune_lr": POSITIVE, "seeds": AT_LEAST_1, "search_distractors": AT_LEAST_1,
    "long_context_factor": Range(1), "type_vocab_size": AT_LEAST_1, "finetune_train_size": AT_LEAST_0,
    "finetune_test_size": AT_LEAST_0,
    "kernel_length": Range(2), "low_freq_cutoff": Range(0, 0.5, low_open=True),  # up to Nyquist
    "energy_fraction": Range(0, 1, low_open=True),
    "ablation": OneOf((False, True)), "throughput_lengths": AT_LEAST_1, "throughput_batch": AT_LEAST_1,
    "mixed_precision": OneOf(MIXED_PRECISION),
    "pretrain_whole_functions": OneOf((False, True)), "pretrain_docstrings": OneOf((False, True)),
    "tie_embeddings": OneOf((False, True)), "embedding_lr_scale": Range(0, 1),
    "position_embeddings": OneOf((False, True)), "ssm_lr": POSITIVE,
    "pool_special_tokens": OneOf((False, True)), "pool_centre": OneOf((False, True)),
    "finetune_centred": OneOf((False, True)),
    "finetune_eval_every": AT_LEAST_0, "finetune_patience": AT_LEAST_1,
    "probe_dfg_literals": OneOf((False, True)), "probe_siblings_below": OneOf((False, True)),
    "probe_string_quotes": OneOf((False, True)), "probe_within_context": OneOf((False, True)),
    **{f: Text(r"[^\n]*", "a path (or empty)") for f in (
        "authors_codessm", "authors_codessm_sqa", "authors_codessm_types", "authors_codessm_config",
        "authors_rocoder", "authors_rocoder_sqa", "authors_rocoder_types", "authors_tokenizer")},
    "external_only": OneOf((False, True)),
}
MAY_BE_EMPTY = {"probe_layers"}  # tuple fields for which an empty list means "all"
FIELD_NAMES = frozenset(f.name for f in fields(Profile))
_TYPES = typing.get_type_hints(Profile)


def check_range(name: str, value) -> None:
    """Raise ``ValueError`` naming the field, the value and the range unless ``value`` is valid."""
    valid = RANGES[name]
    values = value if isinstance(value, tuple) else (value,)
    if (not values and name not in MAY_BE_EMPTY) or not all(v in valid for v in values):
        what = ("a list, each " if name in MAY_BE_EMPTY else "a non-empty list, each ") if isinstance(value, tuple) else ""
        raise ValueError(f"parameter {name!r} must be {what}{valid}, got {value!r}")


def _checked(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - FIELD_NAMES)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}. Valid names: {', '.join(sorted(FIELD_NAMES))}")
    out = {}
    for name, value in overrides.items():
        out[name] = coerce(name, value)
    return out


def coerce(name: str, value):
    """Convert ``value`` (possibly a string from the command line) to the field's type."""
    kind = _TYPES[name]
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in {"1", "true", "yes"}:
                return True
            if value.lower() in {"0", "false", "no"}:
                return False
            raise ValueError(f"parameter {name!r} expects true/false, got {value!r}")
        return bool(value)
    if kind is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        try:
            converted = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {name!r} expects a list of integers, got {value!r}") from None
        check_range(name, converted)
        return converted
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"parameter {name!r} expects {kind.__name__}, got {value!r}") from None
    check_range(name, converted)
    return converted


SMOKE = Profile(
    name="smoke", corpus_set="smoke", max_functions=1500, vocab_size=1000, max_length=128,
    d_model=32, n_layers=2, d_state=16, n_heads=2, mamba_d_state=8,
    pretrain_steps=200, batch_size=16, lr=5e-3, warmup_steps=20, log_every=10,
    probe_functions_distance=40, probe_functions_siblings=30, probe_functions_dfg=30,
    probe_pairs_per_class=40, probe_max_tokens=120, probe_max_train_points=200,
    probe_sweep_points=(50, 100, 150, 200),
    finetune_steps=15, finetune_batch_size=8, search_distractors=99, type_vocab_size=8,
    finetune_train_size=300, finetune_test_size=60,
    kernel_length=128, throughput_lengths=(128, 256, 512), throughput_batch=1, ablation=True,
)
DEFAULT = Profile(name="default")
PAPER = Profile(
    name="paper", vocab_size=32000, max_length=1024, d_model=768, n_layers=12, d_state=64,
    n_heads=12, pretrain_steps=100_000, batch_size=64, lr=5e-4, warmup_steps=2000,
    log_every=100, mixed_precision="bf16", probe_pairs_per_class=1300, probe_max_tokens=512, probe_max_train_points=5000,
    finetune_steps=10_000, finetune_batch_size=32, finetune_lr=2e-5, seeds=3,
    type_vocab_size=50, finetune_train_size=0, finetune_test_size=0, kernel_length=1024,
    throughput_batch=4, ablation=True,
)
LONG = Profile(
    name="long", pretrain_steps=6000, batch_size=16, warmup_steps=300, log_every=50,
    pretrain_whole_functions=True, finetune_steps=2000, finetune_eval_every=200, finetune_patience=3,
    finetune_train_size=0,
)
AUTHORS = Profile(  # the paper's sizes, for what needs no training (README: "The authors' checkpoints")
    name="authors", vocab_size=32100, max_length=1024, d_model=768, n_layers=12, d_state=64, n_heads=12,
    probe_pairs_per_class=1300, probe_pairs_per_class_siblings=1500, probe_pairs_per_class_dfg=1500,
    probe_layers=(3, 4, 6, 8, 10, 11), probe_max_tokens=512, probe_max_train_points=5200,
    probe_functions_distance=2000, probe_functions_siblings=2000, probe_functions_dfg=2000,
    kernel_length=4096, external_only=True, ablation=False,
)
PROFILES = {p.name: p for p in (SMOKE, DEFAULT, LONG, PAPER, AUTHORS)}


def profile(name: str = "default", **overrides) -> Profile:
    """The profile ``name`` with ``overrides`` applied; raises ``ValueError`` on unknown names."""
    if isinstance(name, Profile):
        return name.replace(**overrides)
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name].replace(**overrides)
