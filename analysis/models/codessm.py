"""CodeSSM: a BiGS encoder (Wang et al. 2022, "Pretraining Without Attention") for code.

Token embeddings with no positional embeddings, then ``n_layers`` BiGS layers, each
(pre-LayerNorm, residual; x: [batch, length, d]):

    h   = LN(x)
    v   = gelu(W_v h)                          [.., d_inner]   the gate
    u_f = gelu(W_1 h),  u_b = gelu(W_2 rev(h))  [.., d]
    y_f = W_f (S4D_f(u_f) + HF_f(u_f))         forward S4D branch (+ optional short conv)
    y_b = rev(W_b (S4D_b(u_b) + HF_b(u_b)))    backward branch on the reversed sequence
    x   = x + W_o (v * W_z gelu(y_f * y_b))

``rev`` reverses each sequence within its real length (padding stays at the end, so it
never flows into real positions). Switches for chapter 06: ``n_kernels`` (independent S4D
kernels per layer and direction, over channel groups; 1 as in BiGS) and ``hf_conv_width``
(a parallel depthwise causal convolution of that width beside each S4D branch, CodeSSM-HF;
0 = off; its weights start at zero, so at initialisation it is CodeSSM).

``CodeSSMModel`` is the encoder (hidden states, Hugging Face's base model); ``CodeSSMForMaskedLM``
holds it as ``codessm`` (``base_model_prefix``) with an LM head on top, tied to the input
embeddings or not (``tie_word_embeddings``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .encoder import MaskedLMHead, encoder_forward, init_standard, reverse_padded
from .s4d import S4DConv, kernel_from_modes


class CodeSSMConfig(PretrainedConfig):
    model_type = "codessm"

    def __init__(self, vocab_size=8000, d_model=128, n_layers=4, d_state=32, d_inner=None,
                 n_kernels=1, hf_conv_width=0, dropout=0.0, layer_norm_eps=1e-5,
                 initializer_range=0.02, dt_min=1e-3, dt_max=1e-1, pad_token_id=0, tie_word_embeddings=False,
                 **kwargs):
        self.vocab_size, self.d_model, self.n_layers, self.d_state = vocab_size, d_model, n_layers, d_state
        self.d_inner = d_inner or (8 * d_model) // 3
        self.n_kernels, self.hf_conv_width, self.dropout = n_kernels, hf_conv_width, dropout
        self.layer_norm_eps, self.initializer_range = layer_norm_eps, initializer_range
        self.dt_min, self.dt_max = dt_min, dt_max
        self.hidden_size, self.num_hidden_layers = d_model, n_layers
        self.tie_word_embeddings = tie_word_embeddings  # the LM head's weight is the embedding table
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class CausalDepthwiseConv(nn.Module):
    """y[t] = sum_{s<w} w_s u[t-s], per channel (the CodeSSM-HF high-frequency path)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.zeros(channels, 1, width))

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: [batch, channels, length]
        return F.conv1d(F.pad(u, (self.width - 1, 0)), self.weight, groups=u.shape[1])


class BiGSLayer(nn.Module):
    def __init__(self, config: CodeSSMConfig):
        super().__init__()
        d, di = config.d_model, config.d_inner
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.W_v, self.W_1, self.W_2 = nn.Linear(d, di), nn.Linear(d, d), nn.Linear(d, d)
        self.ssm_f = S4DConv(d, config.n_kernels, config.d_state, dt_min=config.dt_min, dt_max=config.dt_max)
        self.ssm_b = S4DConv(d, config.n_kernels, config.d_state, dt_min=config.dt_min, dt_max=config.dt_max)
        self.hf_f = CausalDepthwiseConv(d, config.hf_conv_width) if config.hf_conv_width else None
        self.hf_b = CausalDepthwiseConv(d, config.hf_conv_width) if config.hf_conv_width else None
        self.W_f, self.W_b = nn.Linear(d, d), nn.Linear(d, d)
        self.W_z, self.W_o = nn.Linear(d, di), nn.Linear(di, d)
        self.dropout = nn.Dropout(config.dropout)

    def branch(self, u, mask, ssm, hf):
        # u: [batch, length, d] -> [batch, length, d]
        u = (u * mask).transpose(1, 2)
        y = ssm(u)
        if hf is not None:
            y = y + hf(u)
        return y.transpose(1, 2)

    def forward(self, x, mask, lengths):
        # x: [batch, length, d]; mask: [batch, length, 1]
        h = self.norm(x)
        v = F.gelu(self.W_v(h))
        u_f = F.gelu(self.W_1(h))
        u_b = F.gelu(self.W_2(reverse_padded(h, lengths)))
        y_f = self.W_f(self.branch(u_f, mask, self.ssm_f, self.hf_f))
        y_b = reverse_padded(self.W_b(self.branch(u_b, mask, self.ssm_b, self.hf_b)), lengths)
        return x + self.dropout(self.W_o(v * self.W_z(F.gelu(y_f * y_b))))


class CodeSSMPreTrainedModel(PreTrainedModel):
    config_class = CodeSSMConfig
    base_model_prefix = "codessm"

    @torch.no_grad()
    def _init_weights(self, module):
        if init_standard(module, self.config.initializer_range):
            return
        if isinstance(module, S4DConv):
            module.kernel.reset_parameters()
            module.D.normal_()
        elif isinstance(module, CausalDepthwiseConv):
            module.weight.zero_()


class CodeSSMModel(CodeSSMPreTrainedModel):
    """The CodeSSM encoder: embeddings, BiGS layers, final LayerNorm (``encoder.encoder_forward``)."""

    def __init__(self, config: CodeSSMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(BiGSLayer(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, return_dict=True, **kwargs):
        # input_ids: [batch, length]
        return encoder_forward(self, input_ids, attention_mask, output_hidden_states)

    def discrete_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, C dB): complex [layers, directions (forward, backward), n_kernels, M]."""
        pairs = [(layer.ssm_f.kernel.discrete_modes(), layer.ssm_b.kernel.discrete_modes())
                 for layer in self.layers]
        dA = torch.stack([torch.stack([f[0], b[0]]) for f, b in pairs])
        CdB = torch.stack([torch.stack([f[1], b[1]]) for f, b in pairs])
        return dA, CdB

    @torch.no_grad()
    def kernels(self, length: int) -> torch.Tensor:
        """The S4D kernels, float [layers, 2, n_kernels, length] (without the D skip)."""
        dA, CdB = self.discrete_modes()
        return kernel_from_modes(dA, CdB, length)


class CodeSSMForMaskedLM(MaskedLMHead, CodeSSMPreTrainedModel):
    """CodeSSM with a masked-language-modelling head on ``last_hidden_state``; its weight is the
    input embedding table when ``config.tie_word_embeddings`` (as BERT's), else its own."""

    _tied_weights_keys = {"lm_head.weight": "codessm.embeddings.weight"}

    def __init__(self, config: CodeSSMConfig):
        super().__init__(config)
        self.codessm = CodeSSMModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def discrete_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``CodeSSMModel.discrete_modes`` of the encoder."""
        return self.codessm.discrete_modes()

    def kernels(self, length: int) -> torch.Tensor:
        """``CodeSSMModel.kernels`` of the encoder."""
        return self.codessm.kernels(length)
