"""The models: CodeSSM (BiGS, S4D kernels), RoCoder (rotary Transformer), BiMamba (selective
scan), each a Hugging Face base model plus a masked-LM head; the registry that builds and loads
them; the selective scan (``scan``). This module only hands names on."""
from .bimamba import BiMambaConfig, BiMambaForMaskedLM, BiMambaModel
from .codessm import CodeSSMConfig, CodeSSMForMaskedLM, CodeSSMModel
from .registry import (FAMILIES, MODELS, architecture_key, build, check_checkpoint, check_name, codessm_config,
                       encoder_states, fresh_like, load_checkpoint, rocoder_intermediate, ssm_state_parameters,
                       trainable_parameters)
from .rocoder import RoCoderConfig, RoCoderForMaskedLM, RoCoderModel
from .throughput import scaling_exponent, throughput

__all__ = ["BiMambaConfig", "BiMambaForMaskedLM", "BiMambaModel", "CodeSSMConfig", "CodeSSMForMaskedLM",
           "CodeSSMModel", "RoCoderConfig", "RoCoderForMaskedLM", "RoCoderModel", "FAMILIES", "MODELS",
           "architecture_key", "fresh_like", "ssm_state_parameters", "build", "check_checkpoint", "check_name",
           "codessm_config", "encoder_states", "load_checkpoint",
           "rocoder_intermediate", "trainable_parameters", "scaling_exponent", "throughput"]
