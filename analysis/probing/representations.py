"""Per-layer code-token vectors of an encoder: what every probe reads."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import align_subwords
from ..models import encoder_states
from ..train import model_device, to_device


@torch.no_grad()
def hidden_states(model, tokenizer, functions, layers=None, batch_size: int = 8,
                  progress: bool = True) -> list[np.ndarray]:
    """One float32 array [n_selected_layers, n_code_tokens, d] per parsed function (layer 0 =
    embeddings). Subword states are averaged into each code token (``data.align_subwords``);
    functions are not truncated (SSMs and rotary attention take any length). Batches group
    functions of similar length; they run on the model's device."""
    model.eval()
    device = model_device(model)
    out: list = [None] * len(functions)
    order = np.argsort([len(p.code) for p in functions], kind="stable")
    for s in tqdm(range(0, len(order), batch_size), desc="hidden states", disable=not progress, leave=False):
        idx = order[s:s + batch_size]
        enc = tokenizer([functions[i].code for i in idx], padding=True, return_offsets_mapping=True,
                        return_tensors="pt")
        inputs = to_device((enc["input_ids"], enc["attention_mask"]), device)
        states = torch.stack(encoder_states(model, *inputs), 1)  # [b, layers+1, L, d]
        if layers is not None:
            states = states[:, list(layers)]
        states = states.float().cpu()
        for k, i in enumerate(idx):
            groups = align_subwords(functions[i], enc["offset_mapping"][k].tolist())
            vecs = np.zeros((states.shape[1], len(groups), states.shape[-1]), dtype=np.float32)
            for t, g in enumerate(groups):
                if g:
                    vecs[:, t] = states[k][:, g].mean(1).numpy()
            out[i] = vecs
    return out
