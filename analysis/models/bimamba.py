"""BiMamba: a bidirectional Mamba encoder (not in the paper; a selective SSM beside CodeSSM).

Each layer (pre-LayerNorm, residual; x: [batch, length, d]):

    h = LN(x);   x = x + Mamba_f(h) + rev(Mamba_b(rev(h)))

``rev`` reverses each sequence within its real length (padding stays at the end). The
mixer follows ``mamba_ssm.modules.mamba_simple.Mamba`` with the same parameter names
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so weights move between the two:

    [x, z] = in_proj(h);  x = silu(conv1d(x))          causal depthwise conv, width d_conv
    [dt, B, C] = x_proj(x);  delta = dt_proj.weight @ dt
    y = selective_scan(x, delta, A=-exp(A_log), B, C, D, z, delta_bias=dt_proj.bias, softplus)
    out = out_proj(y)

``BiMambaModel`` is the encoder (Hugging Face's base model); ``BiMambaForMaskedLM`` holds it as
``bimamba`` (``base_model_prefix``) with an LM head on top, tied to the input embeddings or not
(``tie_word_embeddings``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .encoder import MaskedLMHead, encoder_forward, init_standard, reverse_padded
from .scan import selective_scan


class BiMambaConfig(PretrainedConfig):
    model_type = "bimamba"

    def __init__(self, vocab_size=8000, d_model=128, n_layers=4, d_state=16, d_conv=4, expand=2,
                 dt_rank=None, dt_min=1e-3, dt_max=1e-1, layer_norm_eps=1e-5,
                 initializer_range=0.02, dropout=0.0, pad_token_id=0, tie_word_embeddings=False,
                 **kwargs):
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.d_state, self.d_conv, self.expand = d_state, d_conv, expand
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.dt_min, self.dt_max = dt_min, dt_max
        self.layer_norm_eps, self.initializer_range, self.dropout = layer_norm_eps, initializer_range, dropout
        self.hidden_size, self.num_hidden_layers = d_model, n_layers
        self.tie_word_embeddings = tie_word_embeddings  # the LM head's weight is the embedding table
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class MambaMixer(nn.Module):
    def __init__(self, config: BiMambaConfig):
        super().__init__()
        d, n = config.d_model, config.d_state
        self.d_inner = di = config.expand * d
        self.dt_rank, self.d_state = config.dt_rank, n
        self.config = config
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, config.d_conv, groups=di, padding=config.d_conv - 1)
        self.x_proj = nn.Linear(di, config.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(config.dt_rank, di)
        self.A_log = nn.Parameter(torch.empty(di, n))
        self.D = nn.Parameter(torch.empty(di))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True  # as mamba-ssm's Mamba
        self.out_proj = nn.Linear(di, d, bias=False)
        self.reset_ssm()

    @torch.no_grad()
    def reset_ssm(self) -> None:
        """Mamba's initialisation: S4D-Real A, dt log-uniform via the softplus inverse."""
        c = self.config
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand(self.d_inner, -1))
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min))
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        std = self.dt_rank ** -0.5
        self.dt_proj.weight.uniform_(-std, std)

    def scan_inputs(self, h: torch.Tensor) -> dict:
        """The exact arguments this mixer passes to ``selective_scan`` for h [batch, length, d]."""
        L = h.shape[1]
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)          # [b, di, L] each
        x = F.silu(self.conv1d(x)[..., :L])
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2)           # [b, di, L]
        return dict(u=x, delta=delta, A=-torch.exp(self.A_log.float()), B=B.transpose(1, 2).contiguous(),
                    C=C.transpose(1, 2).contiguous(), D=self.D.float(), z=z,
                    delta_bias=self.dt_proj.bias.float(), delta_softplus=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: [batch, length, d]
        y = selective_scan(**self.scan_inputs(h))
        return self.out_proj(y.transpose(1, 2))


class BiMambaLayer(nn.Module):
    def __init__(self, config: BiMambaConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mixer_f, self.mixer_b = MambaMixer(config), MambaMixer(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask, lengths):
        h = self.norm(x) * mask
        y = self.mixer_f(h) + reverse_padded(self.mixer_b(reverse_padded(h, lengths)), lengths)
        return x + self.dropout(y)


class BiMambaPreTrainedModel(PreTrainedModel):
    config_class = BiMambaConfig
    base_model_prefix = "bimamba"

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, MambaMixer):  # applied after its children: dt_proj gets Mamba's init
            module.reset_ssm()
        else:
            init_standard(module, self.config.initializer_range)


class BiMambaModel(BiMambaPreTrainedModel):
    """The BiMamba encoder: embeddings, bidirectional Mamba layers, final LayerNorm."""

    def __init__(self, config: BiMambaConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(BiMambaLayer(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, return_dict=True, **kwargs):
        # input_ids: [batch, length]
        return encoder_forward(self, input_ids, attention_mask, output_hidden_states)

    @torch.no_grad()
    def scan_inputs(self, input_ids, attention_mask=None) -> list[dict]:
        """Per layer, {"forward": kwargs, "backward": kwargs} of the selective scans the model
        runs on this input (the backward ones on the reversed sequence)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask[..., None].to(self.embeddings.weight.dtype)
        lengths = attention_mask.sum(1)
        x = self.embeddings(input_ids) * mask
        out = []
        for layer in self.layers:
            h = layer.norm(x) * mask
            out.append({"forward": layer.mixer_f.scan_inputs(h),
                        "backward": layer.mixer_b.scan_inputs(reverse_padded(h, lengths))})
            x = layer(x, mask, lengths) * mask
        return out


class BiMambaForMaskedLM(MaskedLMHead, BiMambaPreTrainedModel):
    """BiMamba with a masked-language-modelling head on ``last_hidden_state``; its weight is the
    input embedding table when ``config.tie_word_embeddings`` (as BERT's), else its own."""

    _tied_weights_keys = {"lm_head.weight": "bimamba.embeddings.weight"}

    def __init__(self, config: BiMambaConfig):
        super().__init__(config)
        self.bimamba = BiMambaModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def scan_inputs(self, input_ids, attention_mask=None) -> list[dict]:
        """``BiMambaModel.scan_inputs`` of the encoder."""
        return self.bimamba.scan_inputs(input_ids, attention_mask)
