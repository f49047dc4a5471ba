"""Checkpoints from outside the book: the authors' BiGS state dicts, Hugging Face RoFormer
directories and any local Hugging Face encoder, each loaded strictly.

A BiGS state dict (``jxiw/BiGS``'s ``BiGSForMaskedLM``, as the CodeSSM authors publish theirs) is
read from a ``.pth`` / ``.pt`` / ``.bin`` file with ``torch.load(weights_only=True)`` (tensors
only, never a pickle that runs code) or from a ``.safetensors`` file. Its keys map onto CodeSSM's
one for one (``bigs_key``)::

    bigs.embeddings.<name>                  -> codessm.embeddings.<name>
    bigs.encoder.layer.<i>.<module>.<p>     -> codessm.layers.<i>.<module>.<p>   (same module names)
    cls.predictions.transform.<m>.<p>       -> lm_head.transform.<m>.<p>
    cls.predictions.decoder.weight          -> lm_head.decoder.weight
    cls.predictions.bias (= decoder.bias)   -> lm_head.decoder.bias

also under the ``bigs.bigs.`` prefix (the authors' SQA checkpoint), and with a task head
(``classifier.*``, ``predictor.*``) in place of ``cls.predictions``: the model is then built
without an MLM head and the task head's tensors are kept, unused, in ``model.task_head_state``.
Weights BiGS always holds but never uses for hidden states or MLM logits are dropped, by name:
``bigs.pooler.*`` (sequence-classification pooling), the ``position_ids`` buffer, and the
position table when the config turns absolute positions off. Every other key must fit, both
ways, with its shape: else an error names the keys and the config field they contradict.

The config is the authors' YAML (or a dict) with BiGS's field names; fields it lacks take
``BIGS_DEFAULTS`` (``jxiw/BiGS``'s ``BiGSConfig``).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel
from transformers.utils import logging as hf_logging

from .codessm import CodeSSMConfig, CodeSSMForMaskedLM
from .rocoder import RoCoderConfig, RoCoderForMaskedLM, RoCoderModel

STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin")
# BiGSConfig's defaults (jxiw/BiGS, BiGS/configuration_bigs.py)
BIGS_DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=24, intermediate_size=3072,
                     hidden_act="gelu", hidden_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                     initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
                     position_embedding_type="absolute", num_ssm=64)
BIGS_IGNORED_FIELDS = {"use_cache", "classifier_dropout", "pre_norm", "decode", "scaling", "pooler_type",
                       "use_pykeops_kernel", "num_labels", "model_type", "architectures", "bos_token_id",
                       "eos_token_id", "transformers_version", "torch_dtype", "dtype", "problem_type"}
DROPPED = re.compile(r"(pooler\.|embeddings\.position_ids$|embeddings\.token_type_ids$)")
TASK_HEADS = ("classifier.", "predictor.")
# which config field a parameter's shape depends on (for the error message)
SHAPE_FIELDS = (("word_embeddings", "vocab_size, hidden_size"), ("position_embeddings", "max_position_embeddings"),
                ("token_type_embeddings", "type_vocab_size"), ("kernel.", "num_ssm"), ("dv.", "intermediate_size"),
                ("dol.", "intermediate_size"), ("do.", "intermediate_size"), ("decoder", "vocab_size"))


def bigs_config(config) -> CodeSSMConfig:
    """CodeSSM's config from a BiGS config: a YAML file's path or a dict of BiGS fields."""
    if config is None:
        raise ValueError("a BiGS state dict needs its config: config=<the authors' YAML file> (or a dict with "
                         "vocab_size, num_hidden_layers, hidden_size, max_position_embeddings)")
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"BiGS config {path} does not exist (expected the authors' YAML file)")
        config = yaml.safe_load(path.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"BiGS config {path} is not a YAML mapping of BiGS fields (got {type(config).__name__})")
    unknown = sorted(set(config) - set(BIGS_DEFAULTS) - BIGS_IGNORED_FIELDS)
    if unknown:
        warnings.warn(f"BiGS config fields not used by CodeSSM (ignored): {unknown}", stacklevel=3)
    c = {**BIGS_DEFAULTS, **{k: v for k, v in config.items() if k in BIGS_DEFAULTS}}
    if c["hidden_act"] != "gelu":
        raise ValueError(f"BiGS config hidden_act must be 'gelu' (the only activation BiGS's layer uses), "
                         f"got {c['hidden_act']!r}")
    if c["position_embedding_type"] not in ("absolute", "none"):
        raise ValueError(f"BiGS config position_embedding_type must be 'absolute' or 'none', "
                         f"got {c['position_embedding_type']!r}")
    return CodeSSMConfig(vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layers=c["num_hidden_layers"],
                         num_ssm=c["num_ssm"], d_inner=c["intermediate_size"],
                         position_embeddings=c["position_embedding_type"] == "absolute",
                         max_position_embeddings=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
                         dropout=c["hidden_dropout_prob"], layer_norm_eps=c["layer_norm_eps"],
                         initializer_range=c["initializer_range"], pad_token_id=c["pad_token_id"],
                         tie_word_embeddings=False)


def read_state_dict(path: Path) -> dict:
    """The tensors of a ``.safetensors`` or a ``.pth``/``.pt``/``.bin`` file (weights only)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint format {path.suffix!r}; expected a state dict "
                         f"({', '.join(STATE_DICT_SUFFIXES)}, .safetensors) or a Hugging Face directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code, or not a torch file at all
        raise ValueError(f"{path} is not a state dict torch.load(weights_only=True) can read ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def bigs_prefix(state: dict) -> str:
    """The prefix of the encoder's keys: ``bigs.`` or ``bigs.bigs.`` (the SQA checkpoint)."""
    for prefix in ("bigs.bigs.", "bigs."):
        if f"{prefix}embeddings.word_embeddings.weight" in state:
            return prefix
    raise ValueError("not a BiGS state dict: no bigs.embeddings.word_embeddings.weight (nor under bigs.bigs.); "
                     f"its first keys: {sorted(state)[:5]}")


def bigs_key(key: str, prefix: str) -> str | None:
    """CodeSSM's name for BiGS's ``key`` (module docstring); None for a key outside both layouts."""
    if key.startswith(prefix):
        rest = key[len(prefix):]
        rest = re.sub(r"^encoder\.layer\.(\d+)\.", r"layers.\1.", rest)
        return "codessm." + rest if rest.startswith(("embeddings.", "layers.")) else None
    head = key[len("bigs."):] if key.startswith("bigs.cls.") else key
    if head.startswith("cls.predictions."):
        rest = head[len("cls.predictions."):]
        return "lm_head.decoder.bias" if rest in ("bias", "decoder.bias") else "lm_head." + rest
    return None


def _shape_field(key: str) -> str:
    return next((field for part, field in SHAPE_FIELDS if part in key), "hidden_size")


def load_bigs(path: Path, config) -> CodeSSMForMaskedLM:
    """CodeSSM with the weights of BiGS state dict ``path`` under BiGS config ``config`` (module docstring)."""
    state = read_state_dict(path)
    prefix = bigs_prefix(state)
    cfg = bigs_config(config)
    strip = lambda k: k[len("bigs."):] if k.startswith("bigs.") and prefix == "bigs.bigs." else k  # noqa: E731
    task = {k: v for k, v in state.items() if strip(k).startswith(TASK_HEADS)}
    cfg.mlm_head = not task
    mapped, unexpected = {}, []
    for key, value in state.items():
        if key in task or DROPPED.search(key) or (key.endswith("position_embeddings.weight")
                                                  and not cfg.position_embeddings):
            continue
        ours = bigs_key(key, prefix)
        if ours is None or (ours.startswith("lm_head.") and task):
            unexpected.append(key)
        elif ours in mapped and not torch.equal(mapped[ours][1], value):
            raise ValueError(f"{path}: cls.predictions.bias and cls.predictions.decoder.bias differ "
                             "(BiGS ties them: one tensor)")
        else:
            mapped[ours] = (key, value)
    model = CodeSSMForMaskedLM(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    wrong = [f"{key} ({tuple(v.shape)}; the config gives {tuple(expected[ours].shape)}: check {_shape_field(key)})"
             for ours, (key, v) in mapped.items() if ours in expected and v.shape != expected[ours].shape]
    unexpected += [key for ours, (key, _) in mapped.items() if ours not in expected]
    if missing or unexpected or wrong:
        layers = {int(m) for k in state for m in re.findall(r"encoder\.layer\.(\d+)\.", k)}
        raise ValueError(
            f"{path} does not fit a BiGS model of this config (num_hidden_layers={cfg.n_layers}, "
            f"hidden_size={cfg.d_model}, vocab_size={cfg.vocab_size}, num_ssm={cfg.num_ssm}; the file has "
            f"{len(layers)} layers): missing {missing}; unexpected {sorted(unexpected)}; wrong shape {wrong}")
    model.load_state_dict({ours: v for ours, (_, v) in mapped.items()}, strict=True)
    model.task_head_state = {strip(k): v for k, v in task.items()}
    return model.eval()


def load_roformer(path: Path):
    """RoCoder with the weights of a Hugging Face RoFormer directory: ``RoCoderForMaskedLM`` when
    it has the MLM head (``cls.*``), the encoder ``RoCoderModel`` when it was saved with a task
    head instead (that head is not loaded)."""
    raw = AutoConfig.from_pretrained(str(path)).to_dict()
    raw.pop("model_type", None)
    config = RoCoderConfig(**raw)
    if config.embedding_size not in (None, config.hidden_size):
        raise ValueError(f"{path}: RoCoder needs embedding_size == hidden_size, got {config.embedding_size} "
                         f"and {config.hidden_size}")
    archs = raw.get("architectures") or ["RoFormerForMaskedLM"]
    cls = RoCoderForMaskedLM if any(a.endswith("ForMaskedLM") for a in archs) else RoCoderModel
    head = () if cls is RoCoderForMaskedLM else TASK_HEADS  # a task head is not loaded (base model only)
    return strict_from_pretrained(cls, path, allow_unexpected=head, config=config)


def strict_from_pretrained(cls, path: Path, allow_missing: tuple = (), allow_unexpected: tuple = (), **kwargs):
    """``cls.from_pretrained(path)`` where a weight missing (other than under ``allow_missing``),
    unexpected (other than under ``allow_unexpected``) or of the wrong shape is an error naming
    it, not a random initialisation. transformers' own loading report is silenced: the keys are
    judged here, and a head this book does not load is not news to the reader."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = cls.from_pretrained(str(path), output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    info["missing_keys"] = [k for k in info.get("missing_keys", ()) if not k.startswith(allow_missing)]
    info["unexpected_keys"] = [k for k in info.get("unexpected_keys", ()) if not k.startswith(allow_unexpected)]
    problems = {k: sorted(map(str, v)) for k, v in info.items()
                if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ValueError(f"{path}: the weights do not fit the model its config.json describes "
                         f"({model.config.model_type}): {problems}")
    return model.eval()


def load_encoder(path: Path):
    """Any Hugging Face encoder directory as its base model (``AutoModel``), for probing; a
    missing pooler is allowed (hidden states never use it)."""
    return strict_from_pretrained(AutoModel, path, allow_missing=("pooler.",))
