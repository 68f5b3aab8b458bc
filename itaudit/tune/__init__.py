"""Fine-tuning harness: LoRA or full SFT on (filtered) normalized instances, on CPU or GPU.

    from itaudit.tune import TuneConfig, tune
    res = tune(store, TuneConfig(base="smollm2", dataset="lima", out=Path("out/lora"), rows=64))

The result is a PEFT adapter directory (`load_model(base, adapter=out)`) or a standard HF model
directory (`load_model(out)`), and a row in `tune_runs`.
"""

from .data import IGNORE, WHERE_HELP, Example, build_examples, collate, select_instances
from .train import (
    DEFAULT_LR,
    DEFAULT_TARGETS,
    TuneConfig,
    TuneResult,
    latest_checkpoint,
    lr_at,
    step_loss_sum,
    tune,
)

__all__ = [
    "DEFAULT_LR", "DEFAULT_TARGETS", "IGNORE", "WHERE_HELP", "Example", "TuneConfig", "TuneResult",
    "build_examples", "collate", "latest_checkpoint", "lr_at", "select_instances", "step_loss_sum", "tune",
]
