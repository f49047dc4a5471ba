"""CodeSSM: BiGS (Wang et al. 2022, "Pretraining Without Attention", ``jxiw/BiGS``'s
``BiGSForMaskedLM``) for code, computing what BiGS computes, module for module.

Embeddings (x: [batch, length, d]): x = Dropout(LN(word(ids) + token_type(0) [+ position(l)])),
absolute positions switchable (``position_embeddings``; off by default: the CodeSSM paper
reports it works better without). Then ``n_layers`` BiGS layers (pre-LayerNorm, residual),
named as BiGS names them:

    h   = LayerNorm(x)
    v   = gelu(dv h)                                     [.., d_inner]   the gate
    u_f = gelu(du_forward h),  u_b = gelu(du_backward rev(h))             [.., d]
    y_f = duc_forward(fs4(u_f) [+ hf_forward(u_f)])      forward S4D (``s4d.S4dLayer``)
    y_b = rev(duc_backward(bs4(u_b) [+ hf_backward(u_b)]))  backward S4D on the reversed sequence
    x   = x + do(gelu(dol(y_f * y_b)) * v)               dol: d -> d_inner, do: d_inner -> d

No LayerNorm after the last layer: the hidden states are BiGS's, (embedding output, layer 1,
..., layer n), the residual stream the authors probed. The MLM head is BERT's (and BiGS's
``cls.predictions``): logits = decoder(LN(gelu(dense h))) with a bias.

The one deviation from BiGS: ``rev`` reverses each sequence within its real length and padding
is zeroed after every layer, so padding never enters a real position (BiGS flips the padded
row, so its backward branch reads the padding first). On unpadded input the two are equal.

Switches for chapter 06 (second-hand from the CodeSSM paper): ``n_kernels`` independent S4D
kernels per layer and direction over channel groups (1 as in BiGS; CodeSSM-8kernel: 8) and
``hf_conv_width`` (CodeSSM-HF: a parallel causal convolution of that width, grouped in
``hf_conv_groups`` groups, beside each S4D layer, in the direction's own order; 0 = off).

``CodeSSMModel`` is the encoder (Hugging Face's base model); ``CodeSSMForMaskedLM`` holds it as
``codessm`` (``base_model_prefix``) with the head ``lm_head`` (its decoder tied to the word
embeddings or not: ``tie_word_embeddings``). ``mlm_head=False`` builds it without a head (a
checkpoint fine-tuned with a task head: ``registry.load_checkpoint``); it then gives hidden
states and kernels only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .encoder import MaskedLMHead, encoder_forward, init_standard, reverse_padded
from .s4d import S4dLayer, kernel_from_modes


class CodeSSMConfig(PretrainedConfig):
    model_type = "codessm"

    def __init__(self, vocab_size=8000, d_model=128, n_layers=4, num_ssm=32, d_inner=None,
                 n_kernels=1, hf_conv_width=0, hf_conv_groups=8, position_embeddings=False,
                 max_position_embeddings=512, type_vocab_size=2, dropout=0.0, layer_norm_eps=1e-12,
                 initializer_range=0.02, dt_min=0.01, dt_max=1.0, pad_token_id=0, tie_word_embeddings=False,
                 mlm_head=True, **kwargs):
        self.vocab_size, self.d_model, self.n_layers, self.num_ssm = vocab_size, d_model, n_layers, num_ssm
        self.d_inner = d_inner or 4 * d_model  # BiGS's intermediate_size (3072 at 768)
        self.n_kernels, self.hf_conv_width, self.hf_conv_groups = n_kernels, hf_conv_width, hf_conv_groups
        self.position_embeddings, self.max_position_embeddings = position_embeddings, max_position_embeddings
        self.type_vocab_size, self.dropout = type_vocab_size, dropout
        self.layer_norm_eps, self.initializer_range = layer_norm_eps, initializer_range
        self.dt_min, self.dt_max, self.mlm_head = dt_min, dt_max, mlm_head
        self.hidden_size, self.num_hidden_layers, self.intermediate_size = d_model, n_layers, self.d_inner
        self.tie_word_embeddings = tie_word_embeddings  # the LM head's decoder weight is the word embeddings
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class CodeSSMEmbeddings(nn.Module):
    """BiGS's embeddings: LN(word + token type [+ absolute position]), then dropout."""

    def __init__(self, config: CodeSSMConfig):
        super().__init__()
        d = config.d_model
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, d)
                                    if config.position_embeddings else None)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [batch, length] -> [batch, length, d]; token type 0 everywhere (as BiGS's default)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
        if self.position_embeddings is not None:
            L, limit = input_ids.shape[1], self.position_embeddings.num_embeddings
            if L > limit:
                raise ValueError(f"input of {L} tokens, but the model has {limit} absolute positions "
                                 "(max_position_embeddings)")
            x = x + self.position_embeddings(torch.arange(L, device=input_ids.device))
        return self.dropout(self.LayerNorm(x))


class CausalGroupedConv(nn.Module):
    """y[t] = sum_{s<w} W_s u[t-s] with W grouped over channels (CodeSSM-HF's parallel path)."""

    def __init__(self, channels: int, width: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"d_model={channels} must be divisible by hf_conv_groups={groups}")
        self.width = width
        self.conv = nn.Conv1d(channels, channels, width, groups=groups)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: [batch, channels, length]
        return self.conv(F.pad(u, (self.width - 1, 0)))


class BiGSLayer(nn.Module):
    def __init__(self, config: CodeSSMConfig):
        super().__init__()
        d, di = config.d_model, config.d_inner
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        ssm = dict(dt_min=config.dt_min, dt_max=config.dt_max)
        self.fs4 = S4dLayer(d, config.n_kernels, config.num_ssm, **ssm)
        self.bs4 = S4dLayer(d, config.n_kernels, config.num_ssm, **ssm)
        width, groups = config.hf_conv_width, config.hf_conv_groups
        self.hf_forward = CausalGroupedConv(d, width, groups) if width else None
        self.hf_backward = CausalGroupedConv(d, width, groups) if width else None
        self.dv = nn.Linear(d, di)
        self.du_forward, self.du_backward = nn.Linear(d, d), nn.Linear(d, d)
        self.duc_forward, self.duc_backward = nn.Linear(d, d), nn.Linear(d, d)
        self.dol, self.do = nn.Linear(d, di), nn.Linear(di, d)

    @staticmethod
    def branch(u, mask, ssm, hf):
        # u: [batch, length, d] -> [batch, length, d]
        u = (u * mask).transpose(1, 2)
        y = ssm(u)
        if hf is not None:
            y = y + hf(u)
        return y.transpose(1, 2)

    def forward(self, x, mask, lengths):
        # x: [batch, length, d]; mask: [batch, length, 1]; lengths: [batch]
        h = self.LayerNorm(x)
        v = F.gelu(self.dv(h))
        u_f = F.gelu(self.du_forward(h))
        u_b = F.gelu(self.du_backward(reverse_padded(h, lengths)))
        y_f = self.duc_forward(self.branch(u_f, mask, self.fs4, self.hf_forward))
        y_b = reverse_padded(self.duc_backward(self.branch(u_b, mask, self.bs4, self.hf_backward)), lengths)
        return x + self.do(F.gelu(self.dol(y_f * y_b)) * v)


class CodeSSMLMHead(nn.Module):
    """BERT's (and BiGS's ``cls.predictions``) head: decoder(LN(gelu(dense h))), decoder with bias."""

    def __init__(self, config: CodeSSMConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.d_model, config.d_model)
        self.transform.LayerNorm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: [..., d] -> [..., vocab]
        return self.decoder(self.transform.LayerNorm(F.gelu(self.transform.dense(h))))


class CodeSSMPreTrainedModel(PreTrainedModel):
    config_class = CodeSSMConfig
    base_model_prefix = "codessm"

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Conv1d):
            module.weight.normal_(0.0, self.config.initializer_range)
            module.bias.zero_()
        elif init_standard(module, self.config.initializer_range):
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()  # as BiGS
        elif isinstance(module, S4dLayer):
            module.kernel.reset_parameters()
            module.D.normal_()


class CodeSSMModel(CodeSSMPreTrainedModel):
    """The CodeSSM encoder: embeddings and BiGS layers, no final norm (``encoder.encoder_forward``)."""

    final_norm = None

    def __init__(self, config: CodeSSMConfig):
        super().__init__(config)
        self.embeddings = CodeSSMEmbeddings(config)
        self.layers = nn.ModuleList(BiGSLayer(config) for _ in range(config.n_layers))
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, return_dict=True, **kwargs):
        # input_ids: [batch, length]
        return encoder_forward(self, input_ids, attention_mask, output_hidden_states)

    def discrete_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, C dB): complex [layers, directions (forward, backward), n_kernels, N]."""
        pairs = [(layer.fs4.kernel.discrete_modes(), layer.bs4.kernel.discrete_modes())
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
    """CodeSSM with the masked-language-modelling head ``lm_head`` on ``last_hidden_state``."""

    _tied_weights_keys = {"lm_head.decoder.weight": "codessm.embeddings.word_embeddings.weight"}

    def __init__(self, config: CodeSSMConfig):
        super().__init__(config)
        self.codessm = CodeSSMModel(config)
        self.lm_head = CodeSSMLMHead(config) if config.mlm_head else None
        self.post_init()

    def get_output_embeddings(self):
        return None if self.lm_head is None else self.lm_head.decoder

    def forward(self, input_ids, attention_mask=None, labels=None, output_hidden_states=False,
                return_dict=True, **kwargs):
        if self.lm_head is None:
            raise ValueError("this CodeSSM has no masked-LM head (its checkpoint carried a task head "
                             "instead): use model.base_model(...) for hidden states, or model.kernels(L)")
        return super().forward(input_ids, attention_mask, labels, output_hidden_states, return_dict, **kwargs)

    def discrete_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``CodeSSMModel.discrete_modes`` of the encoder."""
        return self.codessm.discrete_modes()

    def kernels(self, length: int) -> torch.Tensor:
        """``CodeSSMModel.kernels`` of the encoder."""
        return self.codessm.kernels(length)
