"""The model layer: load causal LMs offline (aliases, HF dirs, GGUF, LoRA adapters) and generate.

    from itaudit.models import load_model, generate
    lm = load_model("smollm2")                  # or "gemma3-270m", a HF dir, a .gguf; adapter=DIR
    generate(lm, ["Name three colours."], max_new_tokens=32)
"""

from .generation import (
    GenerationRun,
    eos_ids,
    generate,
    generate_ids,
    generate_run,
    pad_id,
    run_generation,
)
from .loading import (
    ALIASES,
    PLAIN_TEMPLATE,
    LoadedModel,
    cache_root,
    dequantize_gguf,
    load_model,
    resolve,
)
from .prompts import PromptItem, dataset_prompts, prompt_items, read_prompts

__all__ = [
    "ALIASES", "PLAIN_TEMPLATE", "GenerationRun", "LoadedModel", "PromptItem", "cache_root", "dataset_prompts",
    "dequantize_gguf", "eos_ids", "generate", "generate_ids", "generate_run", "load_model", "pad_id",
    "prompt_items", "read_prompts",
    "resolve", "run_generation",
]
