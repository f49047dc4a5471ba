"""RoCoder: a Transformer encoder with rotary position embeddings (Su et al., RoFormer),
built from ``transformers``' RoFormer classes at CodeSSM's width, depth and vocabulary,
with the feed-forward size chosen so the parameter counts agree (within 10%)."""
from __future__ import annotations

import numpy as np
import torch
from transformers import RoFormerConfig, RoFormerForMaskedLM
from transformers.models.roformer import modeling_roformer


def rocoder_config(vocab_size: int, d_model: int, n_layers: int, n_heads: int, intermediate: int,
                   dropout: float = 0.0, pad_token_id: int = 0) -> RoFormerConfig:
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    return RoFormerConfig(vocab_size=vocab_size, embedding_size=d_model, hidden_size=d_model,
                          num_hidden_layers=n_layers, num_attention_heads=n_heads,
                          intermediate_size=intermediate, hidden_dropout_prob=dropout,
                          attention_probs_dropout_prob=dropout, max_position_embeddings=1 << 16,
                          pad_token_id=pad_token_id, tie_word_embeddings=False, rotary_value=False)


def build_rocoder(config: RoFormerConfig) -> RoFormerForMaskedLM:
    return RoFormerForMaskedLM(config)


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """RoFormer's sinusoidal table [n_pos, dim] (sines of pos / 10000^(2(j//2)/dim) at even j
    in the first half, cosines at odd j in the second), the same float64 operations as
    ``RoFormerSinusoidalPositionalEmbedding.create_weight`` but vectorised: transformers builds
    it with a Python loop over positions, 2.6 s for the 65,536 positions RoCoder allows, paid
    on every model load."""
    position_enc = np.arange(n_pos)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)
    out = torch.empty(n_pos, dim)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :sentinel] = torch.FloatTensor(np.sin(position_enc[:, 0::2]))
    out[:, sentinel:] = torch.FloatTensor(np.cos(position_enc[:, 1::2]))
    return out


def _create_weight(self) -> torch.Tensor:
    n_pos, dim = self.weight.shape
    return sinusoidal_table(n_pos, dim).to(self.weight.dtype)


_slow_create_weight = modeling_roformer.RoFormerSinusoidalPositionalEmbedding.create_weight
modeling_roformer.RoFormerSinusoidalPositionalEmbedding.create_weight = _create_weight
