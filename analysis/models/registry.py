"""The model registry: names -> families, ``build`` (fresh, seeded weights sized by a profile),
and loading a local checkpoint directory, strictly.

Registry names: ``codessm``, ``codessm-hf`` (CodeSSM-HF, as the CodeSSM paper describes it:
a parallel convolution of width ``cfg.hf_conv_width`` or 3 in 8 groups beside each S4D layer,
with one layer fewer so the parameter count stays CodeSSM's), ``codessm-8kernel`` (8 kernels
per layer and direction), ``rocoder``, ``bimamba``. ``ARCHITECTURE_VERSIONS`` names a family's
architecture revision in the cache keys of its checkpoints (``architecture_key``). RoCoder's feed-forward size is chosen so its parameter count matches
CodeSSM's. ``cfg.tie_embeddings`` ties each family's LM-head weight to its input embeddings. Every family is a Hugging Face base model plus a masked-LM head, registered with
``AutoConfig``, ``AutoModel`` and ``AutoModelForMaskedLM``, so ``save_pretrained`` /
``from_pretrained(dir)`` round-trip exactly. Training on demand is not here:
``analysis.checkpoints`` is the one place that trains.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from . import external
from .bimamba import BiMambaConfig, BiMambaForMaskedLM, BiMambaModel
from .codessm import CodeSSMConfig, CodeSSMForMaskedLM, CodeSSMModel
from .rocoder import RoCoderConfig, RoCoderForMaskedLM, RoCoderModel, rocoder_config

hf_logging.disable_progress_bar()  # per-file load/save bars would flood the chapters
for _config, _base, _head in ((CodeSSMConfig, CodeSSMModel, CodeSSMForMaskedLM),
                              (BiMambaConfig, BiMambaModel, BiMambaForMaskedLM),
                              (RoCoderConfig, RoCoderModel, RoCoderForMaskedLM)):
    AutoConfig.register(_config.model_type, _config)
    AutoModel.register(_config, _base)
    AutoModelForMaskedLM.register(_config, _head)

FAMILIES = {"codessm": "CodeSSM", "codessm-hf": "CodeSSM", "codessm-8kernel": "CodeSSM",
            "rocoder": "RoCoder", "bimamba": "BiMamba"}
MODELS = tuple(FAMILIES)
CHECKPOINT_FILES = ("config.json", "model.safetensors")
# CodeSSM "bigs-1": BiGS exactly (dol before gelu, scalar D, N modes without doubling, BiGS's
# embeddings and MLM head, no final norm); checkpoints of earlier revisions are rebuilt
ARCHITECTURE_VERSIONS = {"CodeSSM": "bigs-1"}
HF_CONV_GROUPS = 8


def architecture_key(name: str) -> dict:
    """The architecture revision of ``name``'s family, for cache keys ({} for a family never revised)."""
    version = ARCHITECTURE_VERSIONS.get(FAMILIES[name])
    return {"architecture": version} if version else {}


def check_name(name: str) -> None:
    """Raise a clear error unless ``name`` is a registry name."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)} "
                         "(or a local checkpoint directory)")


def codessm_config(name: str, cfg, vocab_size: int, pad_id: int = 0) -> CodeSSMConfig:
    """CodeSSM's config for registry name ``name`` under profile ``cfg``."""
    extra = {"n_kernels": cfg.n_kernels, "hf_conv_width": cfg.hf_conv_width, "n_layers": cfg.n_layers}
    if name == "codessm-hf":
        extra.update(hf_conv_width=cfg.hf_conv_width or 3, n_layers=max(1, cfg.n_layers - 1))
    elif name == "codessm-8kernel":
        extra["n_kernels"] = 8
    return CodeSSMConfig(vocab_size=vocab_size, d_model=cfg.d_model, num_ssm=cfg.d_state, dropout=cfg.dropout,
                         pad_token_id=pad_id, tie_word_embeddings=cfg.tie_embeddings, hf_conv_groups=HF_CONV_GROUPS,
                         position_embeddings=cfg.position_embeddings, max_position_embeddings=cfg.max_length,
                         **extra)


def ssm_state_parameters(model) -> list:
    """The S4D kernels' dt and A parameters (``s4d.S4DKernel.STATE_PARAMETERS``) of a model."""
    return [p for p in model.parameters() if getattr(p, "_ssm_state", False)]


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def rocoder_intermediate(cfg) -> int:
    """Feed-forward size I making RoCoder's per-layer parameters equal CodeSSM's:
    attention 4d^2 + 4d, two LayerNorms 4d, feed-forward 2dI + I + d."""
    d = cfg.d_model
    layer = CodeSSMModel(CodeSSMConfig(vocab_size=8, d_model=d, n_layers=1, num_ssm=cfg.d_state)).layers[0]
    target = trainable_parameters(layer)
    return max(1, round((target - (4 * d * d + 9 * d)) / (2 * d + 1)))


def build(name: str, cfg, vocab_size: int, pad_id: int = 0, seed: int | None = None):
    """A freshly initialised masked-LM model ``name`` sized by profile ``cfg``, seeded."""
    check_name(name)
    torch.manual_seed(cfg.seed if seed is None else seed)
    if FAMILIES[name] == "CodeSSM":
        return CodeSSMForMaskedLM(codessm_config(name, cfg, vocab_size, pad_id))
    if name == "rocoder":
        return RoCoderForMaskedLM(rocoder_config(vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads,
                                                 rocoder_intermediate(cfg), cfg.dropout, pad_id, cfg.tie_embeddings))
    return BiMambaForMaskedLM(BiMambaConfig(vocab_size=vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers,
                                            d_state=cfg.mamba_d_state, d_conv=cfg.mamba_d_conv,
                                            expand=cfg.mamba_expand, dropout=cfg.dropout, pad_token_id=pad_id,
                                            tie_word_embeddings=cfg.tie_embeddings))


def fresh_like(model, seed: int):
    """A model of ``model``'s class and config with fresh weights, seeded (a random-init twin)."""
    torch.manual_seed(seed)
    return type(model)(model.config)


def check_checkpoint(path: str | Path) -> Path:
    """``path`` if it holds a checkpoint whose config parses and whose safetensors header reads
    (cheap: no weights are loaded); a clear error otherwise."""
    path = Path(path)
    missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
    if not path.is_dir() or missing:
        raise FileNotFoundError(f"{path} is not a model checkpoint: expected a directory with "
                                f"{', '.join(CHECKPOINT_FILES)} and tokenizer files (missing: {missing})")
    json.loads((path / "config.json").read_text())
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        if not list(f.keys()):
            raise ValueError(f"{path}/model.safetensors holds no tensors")
    return path


def load_checkpoint(path: str | Path, config=None, tokenizer=None):
    """(model, tokenizer) from a checkpoint, strictly: weights the model expects but the file
    lacks, or holds but the model has no place for, or of another shape, are an error that
    names them (``from_pretrained`` alone would initialise the missing ones at random).

    ``path`` is one of: a directory this book wrote (config.json ``model_type`` codessm,
    rocoder, bimamba); a Hugging Face RoFormer directory (``model_type`` "roformer": loaded as
    RoCoder, ``external.load_roformer``); any other local Hugging Face encoder directory (its
    base model, for probing: ``external.load_encoder``); or a BiGS state dict file (``.pth``,
    ``.bin``, ``.safetensors``: CodeSSM, ``external.load_bigs``) with ``config``, the authors'
    YAML. ``tokenizer``: a local Hugging Face tokenizer directory (default: ``path`` itself
    when it is a directory; a state dict file without one gives tokenizer None)."""
    path = Path(path)
    if path.is_file():
        model = external.load_bigs(path, config)
    elif not path.is_dir():
        raise FileNotFoundError(f"{path} is not a model checkpoint: expected a checkpoint directory (config.json "
                                "and weights) or a BiGS state dict file (.pth, .bin, .safetensors)")
    elif config is not None:
        raise ValueError(f"{path} is a directory: its config.json is its config (config= is for BiGS state dicts)")
    else:
        kind = json.loads((path / "config.json").read_text()).get("model_type") \
            if (path / "config.json").is_file() else None
        if kind in ("codessm", "rocoder", "bimamba"):
            archs = json.loads((path / "config.json").read_text()).get("architectures") or []
            base_only = archs and not any(a.endswith("ForMaskedLM") for a in archs)  # saved without its head
            model = external.strict_from_pretrained(AutoModel if base_only else AutoModelForMaskedLM,
                                                    check_checkpoint(path))
        elif kind == "roformer":
            model = external.load_roformer(path)
        elif kind is not None:
            model = external.load_encoder(path)
        else:
            check_checkpoint(path)  # the clear error: what a checkpoint directory holds
    source = tokenizer if tokenizer is not None else (path if path.is_dir() else None)
    if source is None:
        return model.eval(), None
    try:
        tok = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{source} has no loadable tokenizer ({err})") from None
    if not tok.is_fast:
        raise ValueError(f"the tokenizer of {source} is not a fast tokenizer: the subword alignment needs "
                         "character offsets (return_offsets_mapping)")
    return model.eval(), tok


def encoder_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The masked-LM model's hidden states from its base model alone (no LM head): (embeddings,
    layer 1, ..., last layer), each r(B L D), equal to ``model(..., output_hidden_states=True)
    .hidden_states``. Fine-tuning and probing need only these; the head, a D x vocabulary
    projection per token, would cost them a tenth of every step."""
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                            output_hidden_states=True).hidden_states
