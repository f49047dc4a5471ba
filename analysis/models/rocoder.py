"""RoCoder: a Transformer encoder with rotary position embeddings (Su et al., RoFormer),
built from ``transformers``' RoFormer classes at CodeSSM's width, depth and vocabulary,
with the feed-forward size chosen so the parameter counts agree (within 10%).

Two patches of transformers' RoFormer, applied on import, change no result: the sinusoidal
table is built vectorised (``sinusoidal_table``), and encoder self-attention runs through
``torch.nn.functional.scaled_dot_product_attention`` (``_sdpa_self_attention``, equal to the
eager code within float32 round-off, tested)."""
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


def _sdpa_self_attention(self, hidden_states, attention_mask=None, sinusoidal_pos=None,
                         encoder_hidden_states=None, past_key_values=None, output_attentions=False, **kwargs):
    """RoFormer's encoder self-attention through ``F.scaled_dot_product_attention``:
    softmax(q k^T / sqrt(d_head) + mask) v with q, k rotated, the same function as
    transformers' eager code (which materialises the [batch, heads, L, L] scores and
    probabilities; on long functions it made RoCoder's long-context evaluation 6x slower
    than CodeSSM's). Cross-attention, caches and ``output_attentions`` keep the eager code."""
    if encoder_hidden_states is not None or past_key_values is not None or output_attentions:
        return _eager_self_attention(self, hidden_states, attention_mask, sinusoidal_pos, encoder_hidden_states,
                                     past_key_values, output_attentions, **kwargs)
    shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    q, k, v = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
    if sinusoidal_pos is not None:
        if self.rotary_value:
            q, k, v = self.apply_rotary_position_embeddings(sinusoidal_pos, q, k, v)
        else:
            q, k = self.apply_rotary_position_embeddings(sinusoidal_pos, q, k)
    if attention_mask is not None:
        attention_mask = attention_mask.to(q.dtype)
    context = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attention_mask, dropout_p=self.dropout.p if self.training else 0.0)
    context = context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size)
    return context, None


_eager_self_attention = modeling_roformer.RoFormerSelfAttention.forward
modeling_roformer.RoFormerSelfAttention.forward = _sdpa_self_attention
