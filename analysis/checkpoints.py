"""The composition root of encoders: the one place that trains on demand.

``resolve(model, cfg, spec)`` names any encoder the book uses:

- ``"pretrained"``: masked-LM pretraining (``analysis.train.pretrain_into``), cached;
- ``"random"``: the same architecture with its seeded initial weights (the baseline);
- ``"finetuned:<task>"``: the pretrained encoder fine-tuned on ``task``
  (``analysis.finetune.train_task``), cached; ``finetuned(..., pretrained=False)`` starts
  from random init instead;
- a local checkpoint directory.

External checkpoints (the CodeSSM authors' published weights; profile fields ``authors_*``) stand
in for "pretrained" and "finetuned:<task>" wherever a profile names one (``EXTERNAL_FIELDS``):
``external(path, cfg)`` converts the file once into a checkpoint directory of this book
(``models.load_checkpoint``, strict; the tokenizer ``cfg.authors_tokenizer``), cached and keyed
by the sha256 of its files, which its ``meta.json`` records for provenance, with the held-out
MLM loss and unigram baseline of ``pretrain_into`` when it has an MLM head (on this book's
corpus, through its own tokenizer: the pretraining gate's evidence). With
``cfg.external_only`` nothing is trained: an encoder without an external checkpoint is an error
naming the field that would give it.

Checkpoints are artifacts of ``analysis.cache``, keyed by the model name and the profile
fields that shape the model, the data and the training; partial state lives in the
artifact's scratch directory, so an interrupted run resumes. A cached checkpoint that fails
verification is reported and retrained, never used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from . import models
from .cache import artifact_dir, cached, config_key, is_cached, scratch_dir, scratch_path
from .data import finetune_dataset, load_tokenizer, pretraining_texts
from .data.sources import files_hash, sha256_of
from .finetune import FT_RUN_VERSION, check_task, finetune_key, train_task
from .train import (PRETRAIN_VERSION, is_main_process, mlm_loss, pretrain_into, pretrain_key, process_count,
                    random_key, run_seed, training_device, unigram_entropy, wait_for_everyone)
from .workers import run_jobs

SPECS = ('"pretrained"', '"random"', '"finetuned:<task>"', "a checkpoint directory")
EXTERNAL_VERSION = "1"
# (model, task or None for pretrained) -> the profile field naming its external checkpoint
EXTERNAL_FIELDS = {("codessm", None): "authors_codessm", ("codessm", "long_search"): "authors_codessm_sqa",
                   ("codessm", "types"): "authors_codessm_types", ("rocoder", None): "authors_rocoder",
                   ("rocoder", "long_search"): "authors_rocoder_sqa", ("rocoder", "types"): "authors_rocoder_types"}


def external_path(model: str, cfg, task: str | None = None) -> Path | None:
    """The external checkpoint ``cfg`` names for ``model`` (pretrained, or fine-tuned on ``task``),
    or None; with ``cfg.external_only`` a missing one is an error naming its field."""
    field = EXTERNAL_FIELDS.get((model, task))
    value = getattr(cfg, field) if field else ""
    if value:
        return Path(value)
    if getattr(cfg, "external_only", False):
        what = f"{model} fine-tuned on {task}" if task else f"pretrained {model}"
        hint = f"give it with -p {field} PATH" if field else "the authors published none"
        raise ValueError(f"profile {cfg.name!r} trains nothing (external_only) and has no checkpoint of {what}: "
                         f"{hint}")
    return None


def available(model: str, cfg, task: str | None = None) -> bool:
    """Whether ``cfg`` can give ``model`` (pretrained, or fine-tuned on ``task``): always, unless
    the profile trains nothing and names no external checkpoint of it."""
    field = EXTERNAL_FIELDS.get((model, task))
    return not getattr(cfg, "external_only", False) or bool(field and getattr(cfg, field))


def external(path: Path, cfg) -> Path:
    """The external checkpoint ``path`` as a checkpoint directory of this book (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"external checkpoint {path} does not exist")
    config = cfg.authors_codessm_config if path.is_file() else ""
    tokenizer = cfg.authors_tokenizer or (str(path) if path.is_dir() else "")
    if not tokenizer:
        raise ValueError(f"external checkpoint {path} needs a tokenizer: -p authors_tokenizer DIR")
    key = {"external": files_hash(path), "config": files_hash(Path(config)) if config else "",
           "tokenizer": files_hash(Path(tokenizer))}

    def build(out: Path) -> None:
        net, tok = models.load_checkpoint(path, config=config or None, tokenizer=tokenizer)
        net.save_pretrained(out)
        tok.save_pretrained(out)
        meta = {"model": str(path), "external": True, "sha256": key["external"], "config": config,
                "config_sha256": key["config"], "tokenizer": tokenizer, "key": config_key(key, EXTERNAL_VERSION)}
        if net.get_output_embeddings() is not None:  # an MLM head: the pretraining gate's evidence, as pretrain_into's
            length = min(cfg.max_length, getattr(net.config, "max_position_embeddings", cfg.max_length))
            texts = pretraining_texts(cfg, docstrings=cfg.pretrain_docstrings)
            encoded = tok(texts, truncation=True, max_length=length)["input_ids"]
            valid = [r["code"] for r in finetune_dataset(cfg, "search")["valid"]][:64]
            meta.update(unigram_entropy=unigram_entropy(encoded, set(tok.all_special_ids)),
                        valid_mlm_loss=mlm_loss(net, tok(valid, truncation=True, max_length=length)["input_ids"],
                                                tok, cfg) if valid else None)
        (out / "meta.json").write_text(json.dumps(meta))

    return cached("external", key, build, verify, EXTERNAL_VERSION)


def verify(path: Path) -> Path:
    """A cache hit: the checkpoint's config and weights header read and its metadata parse
    (a corrupt artifact is then rebuilt by ``cached``)."""
    models.check_checkpoint(path)
    json.loads((path / "meta.json").read_text())
    return path


def pretrained(model: str, cfg, texts=None, tokenizer=None, valid_texts=None) -> Path:
    """The pretrained checkpoint directory of ``model`` under ``cfg`` (trained once).

    Under ``accelerate launch`` (several processes) every process must take part in the
    training, but only one may hold the cache's build lock: the main process builds the
    checkpoint under the lock, the others run the same training (reading the main process's
    partial state if it resumes; they write nothing) and then read the checkpoint it wrote.
    Whether anything needs training is decided by all of them between two barriers."""
    models.check_name(model)
    given = external_path(model, cfg) if texts is None else None
    if given is not None:
        return external(given, cfg)
    key = pretrain_key(model, cfg)
    if texts is not None:  # injected data (tests): key it by its content too
        key = {**key, "texts": config_key({"t": list(texts)})}
    build = lambda out: pretrain_into(model, cfg, out, scratch_dir("pretrain", key, PRETRAIN_VERSION),  # noqa: E731
                                      texts, tokenizer, valid_texts, key)
    if process_count() == 1:
        return cached("pretrain", key, build, verify, PRETRAIN_VERSION)
    wait_for_everyone()
    needed = not is_cached("pretrain", key, PRETRAIN_VERSION)
    wait_for_everyone()  # no process starts building before every one has looked
    if is_main_process():
        path = cached("pretrain", key, build, verify, PRETRAIN_VERSION)
    elif needed:
        pretrain_into(model, cfg, None, scratch_path("pretrain", key, PRETRAIN_VERSION), texts, tokenizer,
                      valid_texts, key)
    wait_for_everyone()  # the main process has written and renamed the checkpoint
    return path if is_main_process() else cached("pretrain", key, _never_built, verify, PRETRAIN_VERSION)


def _never_built(out: Path) -> None:
    raise RuntimeError(f"the main process did not write the pretrained checkpoint this process waited for ({out})")


def pretrain_many(runs: list[tuple[str, object]], progress: bool = True) -> list[Path]:
    """``pretrained(model, cfg)`` of every ``(model, cfg)`` in ``runs``, the ones not yet cached
    trained side by side as jobs of ``analysis.workers`` (one thread each), BiMamba's first (its
    CPU scan makes them the longest). What they share (corpus, tokenizer, the held-out
    functions) is built first, here, so no two workers build it. On a GPU they run one after
    another in this process. One process with two threads is no faster than two one-thread
    processes on this kind of model, and on a shared machine it can be many times slower
    (threads that wait for each other at every operation)."""
    for m, _ in runs:
        models.check_name(m)
    todo = [(m, c) for m, c in runs if external_path(m, c) is None
            and not is_cached("pretrain", pretrain_key(m, c), PRETRAIN_VERSION)]
    for _, c in todo:  # cached after the first: cheap for profiles that share their data
        load_tokenizer(c), finetune_dataset(c, "search")
    todo.sort(key=lambda run: run[0] != "bimamba")  # stable: otherwise in the given order
    if todo:  # on a GPU one after another in this process: the GPU is the shared resource
        run_jobs([(pretrained, run) for run in todo], "pretraining", progress,
                 workers=1 if training_device().type == "cuda" else None)
    return [pretrained(m, c) for m, c in runs]


def random(model: str, cfg, seed: int | None = None):
    """(model, tokenizer): ``model``'s architecture with its seeded initial weights (by default
    those of pretraining run ``cfg.pretrain_seed``: its random-init twin). For an external
    checkpoint, its architecture and tokenizer with fresh seeded weights."""
    models.check_name(model)
    seed = run_seed(cfg) if seed is None else seed
    given = external_path(model, cfg)
    if given is not None:
        net, tokenizer = models.load_checkpoint(external(given, cfg))
        return models.fresh_like(net, seed).eval(), tokenizer
    tokenizer = load_tokenizer(cfg)
    return models.build(model, cfg, len(tokenizer), tokenizer.pad_token_id, seed).eval(), tokenizer


def base_key(model: str, cfg, from_pretrained: bool) -> dict:
    """The key of the encoder a fine-tuning run starts from."""
    return pretrain_key(model, cfg) if from_pretrained else random_key(model, cfg)


def finetuned(model: str, task: str, cfg, seed: int | None = None, from_pretrained: bool = True) -> Path:
    """The checkpoint of ``model`` fine-tuned on ``task`` from its pretrained (or, with
    ``from_pretrained=False``, random-init) weights, trained once and cached."""
    models.check_name(model)
    check_task(task)
    given = external_path(model, cfg, task) if from_pretrained else None
    if given is not None:
        return external(given, cfg)
    seed = cfg.seed if seed is None else int(seed)
    key = finetune_key(base_key(model, cfg, from_pretrained), task, cfg, seed)

    def build(out: Path) -> None:
        net, tokenizer = load(model, cfg, from_pretrained)
        desc = f"fine-tuning {model} on {task}" + ("" if from_pretrained else " (random init)")
        meta = {"model": model, "pretrained": from_pretrained, "key": config_key(key, FT_RUN_VERSION)}
        train_task(net, tokenizer, task, cfg, seed, out, scratch_dir("finetune", key, FT_RUN_VERSION), desc, meta)

    return cached("finetune", key, build, verify, FT_RUN_VERSION)


def load(name_or_path: str, cfg=None, from_pretrained: bool = True, seed: int | None = None):
    """(model, tokenizer) for a registry name (pretrained, trained on demand; or its seeded
    random init with ``from_pretrained=False``), or for a local checkpoint directory."""
    if name_or_path not in models.FAMILIES and Path(name_or_path).exists():
        return models.load_checkpoint(name_or_path)
    models.check_name(name_or_path)
    if cfg is None:
        raise ValueError("loading a model by name needs a profile: load(name, cfg)")
    if from_pretrained:
        return models.load_checkpoint(pretrained(name_or_path, cfg))
    return random(name_or_path, cfg, seed)


@dataclass(frozen=True)
class Resolved:
    """An encoder named by ``resolve``: ``load()`` gives (model, tokenizer) and is called only
    when needed; ``identity`` names its weights in cache keys; ``n_layers`` counts its layers."""
    load: Callable
    identity: dict
    n_layers: int


def weights_hash(path: Path) -> str:
    """A short hash of a checkpoint's weights and config."""
    return sha256_of(Path(path) / "model.safetensors")[:16] + sha256_of(Path(path) / "config.json")[:16]


def resolve(model: str, cfg, spec: str) -> Resolved:
    """The encoder ``spec`` of ``model``: "pretrained", "random", "finetuned:<task>" or a
    local checkpoint directory (see the module docstring)."""
    models.check_name(model)
    if spec == "random":
        net, tok = random(model, cfg)
        given = external_path(model, cfg)
        key = random_key(model, cfg) if given is None else {"random": model, "like": files_hash(given),
                                                            "seed": run_seed(cfg)}
        return Resolved(lambda: (net, tok), key, net.config.num_hidden_layers)
    if spec == "pretrained":
        path = pretrained(model, cfg)
    elif spec.startswith("finetuned:"):
        path = finetuned(model, spec.split(":", 1)[1], cfg)
    elif Path(spec).is_dir():
        path = models.check_checkpoint(spec)
    else:
        raise ValueError(f"checkpoint must be one of {', '.join(SPECS)}; got {spec!r}")
    n_layers = json.loads((Path(path) / "config.json").read_text())["num_hidden_layers"]
    return Resolved(lambda: models.load_checkpoint(path), {"weights": weights_hash(path)}, n_layers)


def pretraining_log(model: str, cfg) -> pd.DataFrame:
    return pd.read_csv(pretrained(model, cfg) / "log.csv")


def pretraining_meta(model: str, cfg) -> dict:
    return json.loads((pretrained(model, cfg) / "meta.json").read_text())


def checkpoint_hash(model: str, cfg, task: str | None = None) -> str:
    """The cache key of ``model``'s pretrained checkpoint, or of the one fine-tuned on ``task``
    (for provenance lines); for an external checkpoint, "external:" and the sha256 of its files."""
    given = external_path(model, cfg, task)
    if given is not None:
        return "external:" + json.loads((external(given, cfg) / "meta.json").read_text())["sha256"]
    if task is not None:
        return finetuned(model, task, cfg).name
    return artifact_dir("pretrain", pretrain_key(model, cfg), PRETRAIN_VERSION).name
