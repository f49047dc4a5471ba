"""The models: CodeSSM (BiGS, S4D kernels), RoCoder (rotary Transformer), BiMamba (selective).

``load()``, ``hidden_states()`` and ``encoder_states()`` are the only doors the rest of the
project uses. Every model is a Hugging Face ``PreTrainedModel`` (registered with the Auto classes), so
``save_pretrained`` / ``from_pretrained(dir)`` round-trip exactly.

Registry names: ``codessm``, ``codessm-hf`` (parallel short convolution, width
``cfg.hf_conv_width`` or 4), ``codessm-8kernel`` (8 kernels per layer and direction),
``rocoder``, ``bimamba``. Sizes come from the profile; RoCoder's feed-forward size is chosen
so its parameter count matches CodeSSM's.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForMaskedLM
from transformers.utils import logging as hf_logging

from .bimamba import BiMambaConfig, BiMambaForMaskedLM
from .codessm import CodeSSMConfig, CodeSSMForMaskedLM
from .rocoder import build_rocoder, rocoder_config

hf_logging.disable_progress_bar()  # per-file load/save bars would flood the chapters
AutoConfig.register("codessm", CodeSSMConfig)
AutoConfig.register("bimamba", BiMambaConfig)
AutoModelForMaskedLM.register(CodeSSMConfig, CodeSSMForMaskedLM)
AutoModelForMaskedLM.register(BiMambaConfig, BiMambaForMaskedLM)

FAMILIES = {"codessm": "CodeSSM", "codessm-hf": "CodeSSM", "codessm-8kernel": "CodeSSM",
            "rocoder": "RoCoder", "bimamba": "BiMamba"}
MODELS = tuple(FAMILIES)


def _check_name(name: str) -> None:
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)} "
                         "(or a local checkpoint directory)")


def codessm_config(name: str, cfg, vocab_size: int, pad_id: int = 0) -> CodeSSMConfig:
    extra = {}
    if name == "codessm-hf":
        extra["hf_conv_width"] = cfg.hf_conv_width or 4
    elif name == "codessm-8kernel":
        extra["n_kernels"] = 8
    else:
        extra = {"n_kernels": cfg.n_kernels, "hf_conv_width": cfg.hf_conv_width}
    return CodeSSMConfig(vocab_size=vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers,
                         d_state=cfg.d_state, dropout=cfg.dropout, pad_token_id=pad_id, **extra)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rocoder_intermediate(cfg, vocab_size: int) -> int:
    """Feed-forward size making RoCoder's per-layer parameters equal CodeSSM's:
    attention 4d^2 + 4d, two LayerNorms 4d, feed-forward 2dI + I + d."""
    d = cfg.d_model
    layer = CodeSSMForMaskedLM(CodeSSMConfig(vocab_size=8, d_model=d, n_layers=1, d_state=cfg.d_state)).layers[0]
    target = trainable_parameters(layer)
    return max(1, round((target - (4 * d * d + 9 * d)) / (2 * d + 1)))


def build(name: str, cfg, vocab_size: int, pad_id: int = 0, seed: int | None = None):
    """A freshly initialised model ``name`` sized by profile ``cfg``."""
    _check_name(name)
    torch.manual_seed(cfg.seed if seed is None else seed)
    if FAMILIES[name] == "CodeSSM":
        return CodeSSMForMaskedLM(codessm_config(name, cfg, vocab_size, pad_id))
    if name == "rocoder":
        return build_rocoder(rocoder_config(vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads,
                                            _rocoder_intermediate(cfg, vocab_size), cfg.dropout, pad_id))
    return BiMambaForMaskedLM(BiMambaConfig(vocab_size=vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers,
                                            d_state=cfg.mamba_d_state, d_conv=cfg.mamba_d_conv,
                                            expand=cfg.mamba_expand, dropout=cfg.dropout, pad_token_id=pad_id))


CHECKPOINT_FILES = ("config.json", "model.safetensors")


def check_checkpoint(path: str | Path) -> Path:
    """``path`` if it holds a checkpoint whose config parses and whose safetensors header reads
    (cheap: no weights are loaded); a clear error otherwise."""
    import json

    from safetensors import safe_open

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


def load_checkpoint(path: str | Path):
    """(model, tokenizer) from a local Hugging Face checkpoint directory."""
    from transformers import AutoTokenizer

    path = check_checkpoint(path)
    model = AutoModelForMaskedLM.from_pretrained(str(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{path} has a model but no loadable tokenizer ({err})") from None
    return model.eval(), tokenizer


def load(name_or_path: str, cfg=None, pretrained: bool = True, seed: int | None = None):
    """(model, tokenizer) for a registry name (pretrained via ``analysis.train.pretrain``,
    or freshly initialised with ``pretrained=False``: the random baseline), or for a local
    checkpoint directory."""
    if name_or_path not in FAMILIES and Path(name_or_path).exists():
        return load_checkpoint(name_or_path)
    _check_name(name_or_path)
    if cfg is None:
        raise ValueError("loading a model by name needs a profile: load(name, cfg)")
    if pretrained:
        from ..train import pretrain
        return load_checkpoint(pretrain(name_or_path, cfg))
    from ..data import load_tokenizer
    tokenizer = load_tokenizer(cfg)
    return build(name_or_path, cfg, len(tokenizer), tokenizer.pad_token_id, seed).eval(), tokenizer


def encoder_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The masked-LM model's hidden states without its LM head: (embeddings, layer 1, ...,
    last layer), each [batch, length, dim], equal to ``model(..., output_hidden_states=True)
    .hidden_states``. Fine-tuning and probing use only these, and the head (a d x vocabulary
    projection per token) would cost them about a tenth of every step."""
    base = model.base_model
    if base is not model:  # a transformers MaskedLM wrapper (RoCoder): run its encoder alone
        return base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    return model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                 lm_head=False).hidden_states


@torch.no_grad()
def hidden_states(model, tokenizer, functions, layers=None, batch_size: int = 8,
                  progress: bool = True) -> list[np.ndarray]:
    """Per-layer code-token vectors: one float32 array [n_selected_layers, n_code_tokens, d]
    per parsed function (layer 0 = embeddings). Subword states are averaged into each code
    token (``analysis.data.align_subwords``); functions are not truncated (SSMs and rotary
    attention take any length). Batches group functions of similar length."""
    from tqdm.auto import tqdm

    from ..data import align_subwords

    model.eval()
    out: list = [None] * len(functions)
    order = np.argsort([len(p.code) for p in functions], kind="stable")
    for s in tqdm(range(0, len(order), batch_size), desc="hidden states", disable=not progress, leave=False):
        idx = order[s:s + batch_size]
        enc = tokenizer([functions[i].code for i in idx], padding=True, return_offsets_mapping=True,
                        return_tensors="pt")
        states = torch.stack(encoder_states(model, enc["input_ids"], enc["attention_mask"]), 1)  # [b, layers+1, L, d]
        if layers is not None:
            states = states[:, list(layers)]
        for k, i in enumerate(idx):
            groups = align_subwords(functions[i], enc["offset_mapping"][k].tolist())
            vecs = np.zeros((states.shape[1], len(groups), states.shape[-1]), dtype=np.float32)
            for t, g in enumerate(groups):
                if g:
                    vecs[:, t] = states[k][:, g].mean(1).float().numpy()
            out[i] = vecs
    return out


def throughput(model, lengths, batch: int = 1, vocab: int | None = None, repeats: int = 1) -> list[dict]:
    """Tokens per second of one forward+backward pass at each sequence length (median of
    ``repeats`` timed runs, after one untimed warm-up run at the shortest length)."""
    vocab = vocab or model.config.vocab_size
    model.train()

    def step(L):
        ids = torch.randint(5, vocab, (batch, L))
        t = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(min(lengths))
    rows = []
    for L in lengths:
        sec = float(np.median([step(L) for _ in range(repeats)]))
        rows.append({"length": L, "seconds": sec, "tokens_per_s": batch * L / sec})
    model.eval()
    return rows


def scaling_exponent(lengths, seconds) -> float:
    """Slope of log(time) against log(length): 1 for linear, 2 for quadratic cost."""
    return float(np.polyfit(np.log(lengths), np.log(seconds), 1)[0])
