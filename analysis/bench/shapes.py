"""``python -m analysis.bench paper-shapes``: parameters, activation and GPU memory at a profile's shapes.

Builds each model at a profile's real widths and context and, on ``batch`` and
``batch`` + 1 random full-length sequences, runs one pretraining step (forward, backward, AdamW;
autocast at the profile's ``mixed_precision``), a second forward and one inference forward. It
prints the parameters P; the activation memory A(b) = fixed + b * per sequence, measured exactly
as the bytes autograd saves for the backward (distinct storages, parameters excluded) at the two
batch sizes; the peak memory growth (resident set on CPU, allocator on CUDA); the seconds per
sequence and scaled to the profile's batch; and the training memory on a GPU at the profile's
batch B, 16 P + A(B) (float32 weights, gradients and AdamW moments, plus activations; no CUDA
context), the smallest common GPU that holds it and the largest batch per 80 GiB. On CPU the
selective scan saves what the CPU path saves, not what mamba-ssm's kernel saves.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time

import torch

from ..config import PROFILES, profile
from ..models import build, trainable_parameters
from ..train import mask_tokens
from .measure import machine, reset_peak, status_mb

HELP = "parameters, activation and GPU memory, one step per model, at a profile's shapes"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="paper", choices=list(PROFILES))
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--batch", type=int, default=1, help="sequences measured (and one more, for the per-sequence slope)")
    p.add_argument("--precision", choices=["no", "bf16", "fp16"], default=None,
                   help="autocast precision (default: the profile's mixed_precision)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")


GPU_SIZES_GIB = (16, 24, 40, 48, 80)   # common GPU memory sizes, for "which GPU does the profile need"
TRAINING_BYTES_PER_PARAMETER = 16      # float32 weight + gradient + AdamW's two moments
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def masked_per_sequence(cfg, length: int) -> int:
    """Masked positions per sequence of ``mlm_batch``: round(mask_prob * length), at least 1."""
    return max(1, round(cfg.mask_prob * length))


def mlm_batch(cfg, batch: int, length: int, seed: int = 0) -> tuple:
    """(input_ids, attention_mask, labels) [batch, length]: random tokens, no padding, exactly
    ``masked_per_sequence`` masked positions in each sequence (so the LM head, which runs at the
    masked positions only, costs the same per sequence and memory stays affine in the batch),
    BERT's 80/10/10 on them (id 4 stands for <mask>)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, cfg.vocab_size, (batch, length), generator=g)
    rank = torch.rand(batch, length, generator=g).argsort(1).argsort(1)  # a random permutation per row
    chosen = rank < masked_per_sequence(cfg, length)
    inputs, labels = mask_tokens(ids, ~chosen, 4, cfg.vocab_size, 1.0, g)  # prob 1: exactly the chosen
    return inputs, torch.ones_like(ids), labels


def _autocast(device: torch.device, precision: str):
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST[precision])


def _memory_mark(device: torch.device) -> float:
    """Start a peak-memory window; returns the baseline (bytes in use now)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return status_mb("VmRSS") * 2 ** 20 if reset_peak() else float("nan")


def _memory_peak(device: torch.device, mark: float) -> float:
    """Peak bytes in use since ``_memory_mark`` above its baseline (CUDA allocator; else RSS)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - mark
    return status_mb("VmHWM") * 2 ** 20 - mark


@contextlib.contextmanager
def _saved_for_backward(model):
    """Within: count the bytes autograd saves for the backward (the distinct storages of saved
    tensors, parameters excluded: the activation memory) into the yielded dict's "bytes"."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept, out = {}, {"bytes": 0}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out
    out["bytes"] = sum(kept.values())


def _forward_loss(model, batch: tuple, precision: str):
    device = next(model.parameters()).device
    ids, mask, labels = (t.to(device) for t in batch)
    with _autocast(device, precision):
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def saved_activations(model, batch: tuple, precision: str = "no") -> dict:
    """One forward with autograd on: activation bytes (``_saved_for_backward``), peak memory
    growth, seconds and loss. The graph is then freed."""
    device = next(model.parameters()).device
    mark, t0 = _memory_mark(device), time.perf_counter()
    with _saved_for_backward(model) as saved:
        loss = _forward_loss(model, batch, precision)
    return {"bytes": saved["bytes"], "peak": _memory_peak(device, mark), "seconds": time.perf_counter() - t0,
            "loss": loss.item()}


def training_step(model, opt, batch: tuple, precision: str = "no") -> dict:
    """One pretraining step (forward, backward, clipping, AdamW step; fp16 with loss scaling):
    seconds, activation bytes and peak memory growth of the forward, peak growth of the whole
    step (gradients and AdamW's states are allocated in the first step), loss."""
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    mark, t0 = _memory_mark(device), time.perf_counter()
    with _saved_for_backward(model) as saved:
        loss = _forward_loss(model, batch, precision)
    forward_peak = _memory_peak(device, mark)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return {"seconds": time.perf_counter() - t0, "bytes": saved["bytes"], "forward_peak": forward_peak,
            "peak": _memory_peak(device, mark), "loss": loss.item()}


def activation_bytes(row: dict, batch: int) -> float:
    """Activation memory at ``batch`` sequences, affine in the batch: fixed + batch * per sequence."""
    return row["act_fixed"] + batch * row["act_per_seq"]


def gpu_bytes(row: dict, batch: int) -> float:
    """Training memory at ``batch``: float32 weights, gradients and AdamW moments, plus activations."""
    return TRAINING_BYTES_PER_PARAMETER * row["parameters"] + activation_bytes(row, batch)


def measure_model(name: str, cfg, batch: int = 1, precision: str = "no", device="cpu") -> dict:
    """Parameters, one training step at ``batch`` sequences of ``cfg.max_length`` tokens, the
    activation memory at ``batch`` and ``batch`` + 1 sequences (fixed part and per sequence),
    and one inference forward, of a freshly built ``name`` at ``cfg``'s widths."""
    device = torch.device(device)
    model = build(name, cfg, cfg.vocab_size).to(device).train()
    small, large = (mlm_batch(cfg, b, cfg.max_length) for b in (batch, batch + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = training_step(model, opt, small, precision)
    more = saved_activations(model, large, precision)
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), _autocast(device, precision):
        model(input_ids=small[0].to(device), attention_mask=small[1].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    forward_s = time.perf_counter() - t0
    per_seq = more["bytes"] - step["bytes"]
    return {"model": name, "parameters": trainable_parameters(model), "batch": batch,
            "act_per_seq": per_seq, "act_fixed": step["bytes"] - batch * per_seq,
            "peak_per_seq": more["peak"] - step["forward_peak"], "loss": step["loss"],
            "step_s": step["seconds"], "step_peak": step["peak"], "forward_s": forward_s}


def paper_shapes(cfg, models=("codessm", "rocoder", "bimamba"), batch: int = 1, precision: str | None = None,
                 threads: int = 2, device="cpu") -> list[dict]:
    """``measure_model`` for each model at ``cfg`` (precision: ``cfg.mixed_precision`` unless given)."""
    if batch < 1 or threads < 1:
        raise ValueError(f"batch and threads must be >= 1, got {batch} and {threads}")
    precision = cfg.mixed_precision if precision is None else precision
    if precision not in ("no", *_AUTOCAST):
        raise ValueError(f"precision must be no, bf16 or fp16, got {precision!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [measure_model(name, cfg, batch, precision, device) for name in models]
    finally:
        torch.set_num_threads(old)


def smallest_gpu(nbytes: float) -> str:
    fits = [g for g in GPU_SIZES_GIB if nbytes <= g * 2 ** 30]
    return f"{fits[0]} GiB" if fits else f"> {GPU_SIZES_GIB[-1]} GiB"


def print_paper_shapes(rows: list[dict], cfg, precision: str, device: str) -> None:
    gib = lambda x: x / 2 ** 30
    B, L = cfg.batch_size, cfg.max_length
    print(f"profile {cfg.name}: width {cfg.d_model}, {cfg.n_layers} layers, context {L}, vocabulary "
          f"{cfg.vocab_size}, batch {B}; autocast {precision}; measured at {rows[0]['batch']} (and "
          f"{rows[0]['batch'] + 1}) sequence(s) on {device}; {machine()}; torch {torch.__version__}")
    print("activations = bytes autograd saves for the backward (parameters excluded), affine in the batch;"
          " peak = allocator (CUDA) or resident-set (CPU) growth")
    print(f"{'model':>8} {'params':>8} {'act/seq':>8} {'act fixed':>9} {'peak/seq':>8} {'loss':>6} "
          f"{'step s/seq':>10} {'fwd s/seq':>9} {f'step s @{B}':>10} {f'act @{B}':>9} {f'GPU @{B}':>9} "
          f"{'fits':>8} {'seqs/80GiB':>10}")
    for r in rows:
        per = r["batch"]
        fit80 = math.floor((80 * 2 ** 30 - gpu_bytes(r, 0)) / r["act_per_seq"]) if r["act_per_seq"] > 0 else 0
        print(f"{r['model']:>8} {r['parameters'] / 1e6:>7.1f}M {gib(r['act_per_seq']):>7.3f}G "
              f"{gib(r['act_fixed']):>8.3f}G {gib(r['peak_per_seq']):>7.3f}G {r['loss']:>6.2f} "
              f"{r['step_s'] / per:>10.2f} {r['forward_s'] / per:>9.2f} {r['step_s'] / per * B:>10.0f} "
              f"{gib(activation_bytes(r, B)):>8.1f}G {gib(gpu_bytes(r, B)):>8.1f}G "
              f"{smallest_gpu(gpu_bytes(r, B)):>8} {fit80:>10}")
    print(f"GPU @{B} = {TRAINING_BYTES_PER_PARAMETER} B/parameter (float32 weight, gradient, AdamW moments) + "
          f"activations at batch {B}; CUDA context and allocator slack not included. seqs/80GiB: the largest "
          f"batch per 80 GiB GPU (use gradient accumulation or more GPUs above it).")


def command(args) -> int:
    try:
        cfg = profile(args.profile)
        rows = paper_shapes(cfg, args.models, args.batch, args.precision, args.threads, args.device)
    except ValueError as err:
        print(f"python -m analysis.bench paper-shapes: {err}", file=sys.stderr)
        return 2
    print_paper_shapes(rows, cfg, args.precision or cfg.mixed_precision, args.device)
    return 0
