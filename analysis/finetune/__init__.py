"""Fine-tuning: the three tasks (``tasks``), their metrics (``metrics``), and the shared,
cached fine-tuning runs with evaluation and forgetting (``experiment``)."""
from .experiment import TASKS, MAIN_METRIC, evaluate, finetune, forgetting, load_finetuned, scores, zero_shot_search
