"""Fine-tuning harness: LoRA or full SFT on (filtered) normalized instances, on CPU or GPU.

    from itaudit.tune import TuneConfig, tune
    res = tune(store, TuneConfig(base="smollm2", dataset="lima", out=Path("out/lora"), rows=64))

The result is a PEFT adapter directory (`load_model(base, adapter=out)`) or a standard HF model
directory (`load_model(out)`), and a row in `tune_runs`.
"""

from importlib import import_module
from typing import Any

from .options import DEFAULT_LR, DEFAULT_TARGETS, WHERE_HELP

# torch is imported only when a training name is used (the CLI reads the options at start-up)
_LAZY = {"IGNORE": "data", "Example": "data", "build_examples": "data", "collate": "data",
         "select_instances": "data", "TuneConfig": "train", "TuneResult": "train", "latest_checkpoint": "train",
         "lr_at": "train", "step_loss_sum": "train", "tune": "train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_LR", "DEFAULT_TARGETS", "IGNORE", "WHERE_HELP", "Example", "TuneConfig", "TuneResult",
    "build_examples", "collate", "latest_checkpoint", "lr_at", "select_instances", "step_loss_sum", "tune",
]
