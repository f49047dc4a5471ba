"""RoCoder: a Transformer encoder with rotary position embeddings (Su et al., RoFormer),
built from ``transformers``' RoFormer classes at CodeSSM's width, depth and vocabulary,
with the feed-forward size chosen so the parameter counts agree (within 10%)."""
from __future__ import annotations

from transformers import RoFormerConfig, RoFormerForMaskedLM


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
