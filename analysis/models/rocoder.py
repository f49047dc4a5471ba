"""RoCoder: a Transformer encoder with rotary position embeddings (Su et al., RoFormer), the
Transformer twin of CodeSSM: same width, depth and vocabulary, feed-forward size chosen so the
parameter counts agree (``registry.rocoder_intermediate``).

Built from ``transformers``' RoFormer classes by subclassing, never by patching them:

- ``RoCoderSelfAttention``: softmax(q k^T / sqrt(d_head) + mask) v with q, k rotated, through
  ``F.scaled_dot_product_attention`` (equal to RoFormer's eager code within float32 round-off,
  tested). The eager code materialises the [batch, heads, L, L] scores, which dominates long
  inputs; cross-attention, caches and ``output_attentions`` fall back to it.
- ``RoCoderSinusoidalPositionalEmbedding``: RoFormer's sinusoidal table built vectorised (the
  parent builds it with a Python loop over the 65,536 positions RoCoder allows).
- ``RoCoderModel`` (base model, ``roformer``) and ``RoCoderForMaskedLM`` (``roformer`` + ``cls``),
  with their own ``model_type`` "rocoder", registered with the Auto classes. Given labels,
  ``RoCoderForMaskedLM`` runs ``cls`` only at the masked positions (``encoder.masked_lm_output``),
  as CodeSSM and BiMamba do; without labels it is RoFormer's forward.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import RoFormerConfig
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.roformer.modeling_roformer import (RoFormerEmbeddings, RoFormerEncoder,
                                                            RoFormerForMaskedLM, RoFormerModel,
                                                            RoFormerOnlyMLMHead, RoFormerPreTrainedModel,
                                                            RoFormerSelfAttention,
                                                            RoFormerSinusoidalPositionalEmbedding)

from .encoder import masked_lm_output


class RoCoderConfig(RoFormerConfig):
    model_type = "rocoder"


def rocoder_config(vocab_size: int, d_model: int, n_layers: int, n_heads: int, intermediate: int,
                   dropout: float = 0.0, pad_token_id: int = 0, tie_word_embeddings: bool = False) -> RoCoderConfig:
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
    return RoCoderConfig(vocab_size=vocab_size, embedding_size=d_model, hidden_size=d_model,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads,
                         intermediate_size=intermediate, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout, max_position_embeddings=1 << 16,
                         pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings,
                         rotary_value=False)


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """RoFormer's sinusoidal table [n_pos, dim]: sines of pos / 10000^(2(j//2)/dim) at even j in
    the first half, cosines at odd j in the second; the parent's float64 operations, vectorised."""
    position_enc = np.arange(n_pos)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)  # [n_pos, dim]
    out = torch.empty(n_pos, dim)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :sentinel] = torch.FloatTensor(np.sin(position_enc[:, 0::2]))
    out[:, sentinel:] = torch.FloatTensor(np.cos(position_enc[:, 1::2]))
    return out


class RoCoderSinusoidalPositionalEmbedding(RoFormerSinusoidalPositionalEmbedding):
    def create_weight(self) -> torch.Tensor:
        n_pos, dim = self.weight.shape
        return sinusoidal_table(n_pos, dim).to(self.weight.dtype)


class RoCoderSelfAttention(RoFormerSelfAttention):
    def forward(self, hidden_states, attention_mask=None, sinusoidal_pos=None, encoder_hidden_states=None,
                past_key_values=None, output_attentions=False, **kwargs):
        # hidden_states: [batch, length, hidden]; attention_mask: additive [batch, 1, 1, length]
        if encoder_hidden_states is not None or past_key_values is not None or output_attentions:
            return super().forward(hidden_states, attention_mask, sinusoidal_pos, encoder_hidden_states,
                                   past_key_values, output_attentions, **kwargs)
        shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        q, k, v = (proj(hidden_states).view(shape).transpose(1, 2)        # [b, heads, L, d_head]
                   for proj in (self.query, self.key, self.value))
        if sinusoidal_pos is not None:
            if self.rotary_value:
                q, k, v = self.apply_rotary_position_embeddings(sinusoidal_pos, q, k, v)
            else:
                q, k = self.apply_rotary_position_embeddings(sinusoidal_pos, q, k)
        if attention_mask is not None:
            attention_mask = attention_mask.to(q.dtype)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask,
                                                 dropout_p=self.dropout.p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size)
        return context, None


class RoCoderModel(RoFormerModel):
    """RoFormer's encoder with ``RoCoderSelfAttention`` and the vectorised sinusoidal table."""

    config_class = RoCoderConfig

    def __init__(self, config: RoCoderConfig):
        # RoFormerModel.__init__ would initialise its own attention and table before we swap
        # them, so the modules are assembled here, then initialised once by post_init
        RoFormerPreTrainedModel.__init__(self, config)
        if config.embedding_size != config.hidden_size:
            raise ValueError("RoCoder uses embedding_size == hidden_size")
        self.embeddings = RoFormerEmbeddings(config)
        self.encoder = RoFormerEncoder(config)
        self.encoder.embed_positions = RoCoderSinusoidalPositionalEmbedding(
            config.max_position_embeddings, config.hidden_size // config.num_attention_heads)
        for i, layer in enumerate(self.encoder.layer):
            layer.attention.self = RoCoderSelfAttention(config, layer_idx=i)
        self.post_init()


class RoCoderForMaskedLM(RoFormerForMaskedLM):
    """``RoCoderModel`` as ``roformer`` with RoFormer's masked-LM head ``cls`` on top."""

    config_class = RoCoderConfig

    def __init__(self, config: RoCoderConfig):
        RoFormerPreTrainedModel.__init__(self, config)
        self.roformer = RoCoderModel(config)
        self.cls = RoFormerOnlyMLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, output_hidden_states=None,
                return_dict=None, **kwargs) -> MaskedLMOutput:
        # input_ids, labels: [batch, length]
        if labels is None or kwargs.get("inputs_embeds") is not None or return_dict is False:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                                   output_hidden_states=output_hidden_states, return_dict=return_dict, **kwargs)
        base = self.roformer(input_ids, attention_mask=attention_mask,
                             output_hidden_states=output_hidden_states, return_dict=True, **kwargs)
        return masked_lm_output(self.cls, base, labels)
