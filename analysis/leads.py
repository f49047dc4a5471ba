"""Why pretraining did not pay on a laptop CPU, lead by lead (issue 19), as one table.

At the ``default`` profile the pretrained encoders once lost to their random-init twins on code
search. Each *lead* is a suspected cause, tested as one change of the profile (``LEADS``: name,
what changes, the profile fields it sets) on top of ``START``, the settings the investigation
started from; ``lead_row`` measures a lead on one model, ``leads_table`` on all of them:

- zero-shot MRR of the encoder before fine-tuning (``evaluation.zero_shot_search``, first 300
  search test pairs), pretrained and random-init;
- fine-tuned search MRR over the whole test pool and fine-tuned type accuracy, pretrained and
  random-init (``evaluation.evaluate``; the same fine-tuning rule for both);
- the paired difference pretrained minus random-init of fine-tuned search MRR and of type
  accuracy with its 95% bootstrap interval over test items (``evaluation.paired_difference``);
- the cost: seconds of pretraining and of the four fine-tuning runs on the machine that ran it.

A lead that changes only pretraining shares its random-init twin's runs with ``START``; every
run is an artifact of ``analysis.cache``, so the table costs nothing the second time.
``bm25_row`` adds the lexical baseline on the same pools. The command

    python -m analysis.leads --profile default --models codessm --out PATH.csv

computes the table and writes it with its provenance beside it (PATH.json: command, commit,
profile, machine, wall time).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from . import checkpoints
from .config import PROFILES, profile
from .evaluation import bm25_search, evaluate, paired_difference, zero_shot_search
from .provenance import git_commit

# the settings the investigation started from (the default profile's then): every lead below
# is one change of these; "new default" is the profile as it is
START = {"pretrain_steps": 600, "lr": 1e-3, "pool_special_tokens": True, "pool_centre": False,
         "tie_embeddings": False, "embedding_lr_scale": 1.0, "finetune_eval_every": 0,
         "pretrain_whole_functions": False, "pretrain_docstrings": True}
LEADS = {
    "start": ("the starting point: 600 steps at LR 1e-3, mean over all tokens, untied head, 200 fine-tuning steps", {}),
    "pooling: no special tokens": ("<s> and </s> left out of the mean", {"pool_special_tokens": False}),
    "pooling: centred": ("each side's mean embedding subtracted before the cosine", {"pool_centre": True}),
    "tied embeddings": ("LM head weight = input embedding table (BERT)", {"tie_embeddings": True}),
    "embedding LR x0.1": ("pretraining LR of the embedding table 10x lower", {"embedding_lr_scale": 0.1}),
    "fine-tuning to convergence": ("early stopping on validation, up to 4x the steps",
                                   {"finetune_eval_every": 100, "finetune_patience": 3}),
    "whole functions": ("pretraining on every window of each function, not only its prefix",
                        {"pretrain_whole_functions": True}),
    "no docstrings": ("pretraining on code without docstrings, as search encodes it", {"pretrain_docstrings": False}),
    "text as search reads it": ("both: every window of docstring-free code",
                                {"pretrain_whole_functions": True, "pretrain_docstrings": False}),
    "more pretraining": ("2.5x the steps at 2x the LR (1500 steps at 2e-3)", {"pretrain_steps": 1500, "lr": 2e-3}),
    "new default": ("the profile as it is: more pretraining and centred pooling", None),
    "centred fine-tuning": ("the profile, with search fine-tuned on each side centred over its batch, as it is scored",
                            {"finetune_centred": True}),
    "longer fine-tuning": ("the profile, with 3x its fine-tuning steps allowed (early stopping still decides where "
                           "each run stops)", {}),  # the steps are the profile's times 3: lead_config
}
# leads that change the profile as it is, not START
ON_PROFILE = {"centred fine-tuning", "longer fine-tuning"}
TASKS = ("search", "types")
COLUMNS = ["model", "lead", "change", "zero-shot MRR", "zero-shot MRR (random init)", "fine-tuned MRR",
           "fine-tuned MRR (random init)", "type accuracy", "type accuracy (random init)", "search gap low",
           "search gap high", "type gap low", "type gap high", "pretraining s", "fine-tuning s"]


def lead_config(cfg, lead: str):
    """The profile of ``lead``: ``cfg`` with ``START`` and the lead's fields (fine-tuning to
    convergence also allows 4x ``finetune_steps``); "new default" is ``cfg`` itself, and a lead
    of ``ON_PROFILE`` is ``cfg`` with its fields."""
    if lead not in LEADS:
        raise ValueError(f"unknown lead {lead!r}; leads: {', '.join(LEADS)}")
    if LEADS[lead][1] is None:
        return cfg
    if lead == "longer fine-tuning":
        return cfg.replace(finetune_steps=3 * cfg.finetune_steps)
    if lead in ON_PROFILE:
        return cfg.replace(**LEADS[lead][1])
    fields = {**START, **LEADS[lead][1]}
    if fields["finetune_eval_every"]:
        fields["finetune_steps"] = 4 * cfg.finetune_steps
    return cfg.replace(**fields)


def _seconds(path: Path) -> float:
    return float(json.loads((path / "meta.json").read_text())["train_seconds"])


def lead_row(model: str, lead: str, cfg, tasks=TASKS) -> dict:
    """One row of the table for ``model`` under ``lead`` (trained on demand, cached); only the
    fine-tuning ``tasks`` named are run (the other task's columns are left empty)."""
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"tasks must be some of {', '.join(TASKS)}, got {', '.join(tasks) or 'none'}")
    c = lead_config(cfg, lead)
    row = {"model": model, "lead": lead, "change": LEADS[lead][0]}
    for init, suffix in ((True, ""), (False, " (random init)")):
        row["zero-shot MRR" + suffix] = zero_shot_search(model, c, from_pretrained=init)["zero-shot MRR"]
        if "search" in tasks:
            row["fine-tuned MRR" + suffix] = evaluate(model, "search", c, from_pretrained=init)["mrr"]
        if "types" in tasks:
            row["type accuracy" + suffix] = evaluate(model, "types", c, from_pretrained=init)["accuracy"]
    for task, name in (("search", "search gap"), ("types", "type gap")):
        if task in tasks:
            gap = paired_difference(model, task, c)
            row[name + " low"], row[name + " high"] = gap["low"], gap["high"]
    row["pretraining s"] = _seconds(checkpoints.pretrained(model, c))
    row["fine-tuning s"] = sum(_seconds(checkpoints.finetuned(model, task, c, from_pretrained=init))
                               for task in tasks for init in (True, False))
    for init, key in ((True, "pretrained"), (False, "random init")):
        meta = json.loads((checkpoints.finetuned(model, "search", c, from_pretrained=init) / "meta.json").read_text())
        if "best_step" in meta:
            row["change"] += f"; search stopped at {meta['steps_run']} steps ({key}, best {meta['best_step']})"
    return row


def bm25_row(cfg) -> dict:
    """BM25 on the same pools: zero-shot (first 300 pairs) and whole-pool MRR (no training)."""
    return {"model": "BM25", "lead": "lexical baseline", "change": "bm25s over identifier words, no training",
            "zero-shot MRR": bm25_search(cfg, 300)["mrr"], "fine-tuned MRR": bm25_search(cfg)["mrr"]}


def leads_table(cfg, models=("codessm",), leads=tuple(LEADS), tasks=TASKS) -> pd.DataFrame:
    """Every lead's row for every model, and BM25's: the table of issue 19."""
    rows = [lead_row(m, lead, cfg, tasks) for m in models for lead in leads] + [bm25_row(cfg)]
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.leads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", choices=list(PROFILES))
    parser.add_argument("--models", nargs="+", default=["codessm"])
    parser.add_argument("--leads", nargs="+", default=list(LEADS), choices=list(LEADS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS),
                        help="fine-tuning tasks to run (the other's columns stay empty)")
    parser.add_argument("--out", type=Path, required=True, help="CSV path; its provenance goes to the .json beside it")
    args = parser.parse_args(argv)
    cfg, t0 = profile(args.profile), time.perf_counter()
    table = leads_table(cfg, args.models, args.leads, args.tasks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    args.out.with_suffix(".json").write_text(json.dumps({
        "command": "python -m analysis.leads " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(), "profile": cfg.name, "machine": f"{platform.processor() or platform.machine()}",
        "wall_seconds": time.perf_counter() - t0, "built": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    print(table.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
