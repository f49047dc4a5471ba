"""Fine-tuning: the three tasks' losses and embeddings (``tasks``), their metrics (``metrics``),
training one encoder on one task (``training``) and scoring it (``scoring``). Which encoder,
caching and training on demand are ``analysis.checkpoints``'; score tables ``analysis.evaluation``'."""
from .scoring import score, zero_shot
from .training import FIELDS, FT_RUN_VERSION, MAIN_METRIC, TASKS, check_task, finetune_key, load_finetuned, \
    train_task

__all__ = ["score", "zero_shot", "FIELDS", "FT_RUN_VERSION", "MAIN_METRIC", "TASKS", "check_task",
           "finetune_key", "load_finetuned", "train_task"]
