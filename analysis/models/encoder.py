"""What CodeSSM and BiMamba share: the bidirectional residual stack and its masked-LM head.

Glossary (code name: meaning):

- ``reverse_padded(x, lengths)``: rev(x), each sequence reversed within its real length, so
  a backward branch never reads padding (padding stays at the end).
- ``encoder_forward``: embeddings -> ``n_layers`` residual layers ``layer(x, mask, lengths)``,
  padding zeroed after each -> the final LayerNorm where the family has one
  (``model.final_norm``). CodeSSM has none, as BiGS: its hidden states are (embeddings,
  layer 1, ..., layer n), the residual stream. BiMamba has one, as Hugging Face's pre-LN models
  (e.g. ``MambaModel``): (embeddings, layer 1, ..., layer n-1, LN(layer n)), the last one its
  ``last_hidden_state``.
- ``masked_lm_output``: logits = W_lm h + b and the masked-token cross-entropy. Without labels,
  h is every position's last hidden state (logits r(B L V)); with labels, h is gathered at the
  positions whose label is not -100 first (logits r(n V), n masked positions), so pretraining
  never projects the ~85% of positions that carry no loss onto the vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of x [batch, length, ...] within its first ``lengths[b]`` steps."""
    L = x.shape[1]
    pos = torch.arange(L, device=x.device)[None, :]                            # [1, L]
    idx = torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)  # [b, L]
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


@torch.no_grad()
def init_standard(module, std: float) -> bool:
    """BERT-style initialisation of Linear, Embedding and LayerNorm; False for other modules."""
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, std)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, std)
    elif isinstance(module, nn.LayerNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()
    else:
        return False
    return True


def encoder_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    output_hidden_states: bool = False) -> BaseModelOutput:
    """Run ``model.embeddings``, ``model.layers`` and ``model.final_norm`` (None: no final norm)
    of a base model of either family on input_ids: r(B L)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = attention_mask[..., None].to(model.get_input_embeddings().weight.dtype)  # [b, L, 1]
    lengths = attention_mask.sum(1)                                      # [b]
    x = model.embeddings(input_ids) * mask                               # [b, L, d]
    states = [x]
    for layer in model.layers:
        x = layer(x, mask, lengths) * mask
        states.append(x)
    last = x if model.final_norm is None else model.final_norm(x) * mask  # [b, L, d]
    return BaseModelOutput(last_hidden_state=last,
                           hidden_states=(*states[:-1], last) if output_hidden_states else None)


def masked_lm_output(lm_head: nn.Module, base: BaseModelOutput, labels: torch.Tensor | None) -> MaskedLMOutput:
    """The LM head on the base model's output, and the loss where ``labels`` are given.

    labels: r(B L) or None. Without labels, logits: r(B L V) at every position. With labels,
    the head runs only at the n positions with label != -100 (row-major order), logits: r(n V),
    and loss = mean over them of -log softmax(logits)[label]: the value the head at every
    position with ``ignore_index=-100`` gives, at about 15% of its cost. No masked position
    gives loss 0 (connected to the graph), not NaN."""
    hidden = base.last_hidden_state                                      # [b, L, d]
    if labels is None:
        return MaskedLMOutput(logits=lm_head(hidden), hidden_states=base.hidden_states)
    chosen = labels != -100                                              # [b, L]
    logits = lm_head(hidden[chosen])                                     # [n, vocab]
    loss = F.cross_entropy(logits, labels[chosen]) if len(logits) else logits.sum() * 0.0
    return MaskedLMOutput(loss=loss, logits=logits, hidden_states=base.hidden_states)


class MaskedLMHead:
    """The masked-LM half of a ``XForMaskedLM`` (mixed in before its ``PreTrainedModel``): the
    ``lm_head`` (tied to the input embeddings or not) on the base model's ``last_hidden_state`` and the loss where labels are
    given. The class sets ``self.<base_model_prefix>`` and ``self.lm_head``."""

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None, labels=None, output_hidden_states=False,
                return_dict=True, **kwargs):
        # input_ids: [batch, length]; labels: [batch, length], -100 where not scored
        return masked_lm_output(self.lm_head, self.base_model(input_ids, attention_mask, output_hidden_states), labels)
