"""A static (model2vec-style) embedder distilled once per machine from the sentence model.

Distillation: every token of the model's WordPiece vocabulary is run through the model alone
(`[CLS] token [SEP]`, mean-pooled as the sentence model pools), the token vectors are centred and
reduced by PCA, and weighted down for frequent tokens (SIF with a Zipf estimate from the vocab
rank, as model2vec does). A text's vector is the mean of its token vectors: no transformer at
encode time, so it runs thousands of times faster. It is used only to generate candidates; the
sentence model re-scores them exactly (`itaudit.index.fast`).

The distilled table is cached as safetensors under `$ITAUDIT_CACHE` (default
`~/.cache/itaudit`)/static/, keyed by the source model's cache key and the distillation settings.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import ItauditError
from ..paths import atomic_path
from ..threads import with_torch_threads

DISTILL_VERSION = "1"
PCA_DIMS = 256
SIF_COEF = 1e-3


def cache_dir() -> Path:
    return Path(os.environ.get("ITAUDIT_CACHE") or Path.home() / ".cache" / "itaudit") / "static"


@with_torch_threads
def _distill(embedder, dims: int) -> np.ndarray:
    """(vocab, dims) float32 token vectors from `embedder` (an `Embedder`)."""
    import torch

    st = embedder.model
    tok = st.tokenizer
    transformer = st[0].auto_model
    vocab = tok.get_vocab()
    n = max(vocab.values()) + 1
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    ids = torch.arange(n, dtype=torch.long)
    out = np.zeros((n, transformer.config.hidden_size), dtype=np.float32)
    transformer.eval()
    with torch.inference_mode():
        for s in range(0, n, 2048):
            t = ids[s:s + 2048]
            batch = torch.stack([torch.full_like(t, cls_id), t, torch.full_like(t, sep_id)], dim=1)
            hidden = transformer(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            out[s:s + len(t)] = hidden.mean(dim=1).float().numpy()
    mean = out.mean(axis=0, keepdims=True)
    x = out - mean
    dims = min(dims, x.shape[1])
    # PCA by SVD of the covariance (hidden size is small)
    cov = x.T @ x / len(x)
    w, v = np.linalg.eigh(cov)
    comps = v[:, np.argsort(-w)[:dims]]
    x = x @ comps
    # SIF weighting with Zipf probabilities from the vocab rank (WordPiece ids run roughly by frequency)
    rank = np.arange(1, n + 1, dtype=np.float64)
    p = (1 / rank) / np.sum(1 / rank)
    weight = SIF_COEF / (SIF_COEF + p)
    x = x * weight[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


class StaticEmbedder:
    """Mean of distilled token vectors, L2-normalized: `encode(texts) -> (n, dims) float32`."""

    def __init__(self, table: np.ndarray, tokenizer, source_key: str, max_tokens: int = 254):
        self.table, self.tokenizer, self.source_key = table, tokenizer, source_key
        #: tokens per text used for the mean: the sentence model's window without [CLS]/[SEP], so
        #: candidates are judged on the text the re-scoring model sees
        self.max_tokens = int(max_tokens)
        self.dim = int(table.shape[1])
        self.cache_key = f"static[{source_key}]v{DISTILL_VERSION}d{self.dim}"
        self._skip = np.zeros(len(table), dtype=bool)
        for t in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id):
            if t is not None:
                self._skip[t] = True

    @classmethod
    def from_embedder(cls, embedder=None, *, dims: int = PCA_DIMS, cache: Path | None = None) -> StaticEmbedder:
        """Distil from `embedder` (default MiniLM), or load the cached table made earlier on this machine."""
        from safetensors.numpy import load_file, save_file

        from .model import Embedder

        embedder = embedder or Embedder()
        key = hashlib.sha1(f"{_source_key(embedder)}|{dims}|{SIF_COEF}|{DISTILL_VERSION}".encode()).hexdigest()[:16]
        path = (cache or cache_dir()) / f"{key}.safetensors"
        table = None
        if path.exists():
            try:
                table = load_file(str(path))["table"]
            except Exception:  # a torn or foreign file: distil again
                table = None
        if table is None:
            table = _distill(embedder, dims)
            try:
                with atomic_path(path) as tmp:
                    save_file({"table": table}, str(tmp), metadata={"source": _source_key(embedder)})
            except OSError as e:  # a read-only cache is not fatal: the table is in memory
                if not path.exists():
                    import warnings

                    warnings.warn(f"cannot cache the static embedder at {path}: {e}", stacklevel=2)
        tok = embedder.model.tokenizer
        if not getattr(tok, "is_fast", False):
            raise ItauditError("the static embedder needs a fast (Rust) tokenizer")
        return cls(table, tok, _source_key(embedder), max_tokens=max(1, embedder.max_length - 2))

    def tokenize(self, texts: Sequence[str], batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(token ids of all texts concatenated, tokens per text), special tokens dropped, each
        text cut to `max_tokens` (the sentence model sees no more). The Rust tokenizer runs on all
        CPUs here (TOKENIZERS_PARALLELISM is off elsewhere so that forks stay safe)."""
        backend = self.tokenizer.backend_tokenizer
        backend.no_truncation()
        cut = self.max_tokens * 8
        flats, lens = [], []
        for s in range(0, len(texts), batch_size):
            part = [t[:cut] if len(t) > cut else t for t in texts[s:s + batch_size]]
            with _tokenizer_parallelism():
                encs = backend.encode_batch_fast(part, add_special_tokens=False)
            ids = [e.ids[:self.max_tokens] for e in encs]
            ln = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(ln.sum()))
            keep = ~self._skip[flat]
            if not keep.all():
                rows = np.repeat(np.arange(len(ids)), ln)
                ln = np.bincount(rows[keep], minlength=len(ids))
                flat = flat[keep]
            flats.append(flat)
            lens.append(ln)
        if not flats:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(flats), np.concatenate(lens)

    def pool(self, flat: np.ndarray, lens: np.ndarray, weights: np.ndarray | None = None,
             chunk: int = 1 << 22) -> np.ndarray:
        """(n, dim) float32 weighted sums of token vectors per text (not normalized).

        A sparse (texts x vocabulary) matrix of token counts times the table: each distinct token
        of a text costs one row of work, however often it repeats; groups of ~`chunk` tokens."""
        from scipy.sparse import csr_matrix

        out = np.zeros((len(lens), self.dim), dtype=np.float32)
        ends = np.cumsum(lens)
        starts = ends - lens
        row = 0
        while row < len(lens):
            stop = max(int(np.searchsorted(ends, starts[row] + chunk, side="right")), row + 1)
            a, b = int(starts[row]), int(ends[stop - 1])
            toks = flat[a:b]
            rows = np.repeat(np.arange(stop - row), lens[row:stop])
            vals = weights[toks] if weights is not None else np.ones(len(toks), dtype=np.float32)
            counts = csr_matrix((vals.astype(np.float32, copy=False), (rows, toks)),
                                shape=(stop - row, len(self.table)))
            out[row:stop] = counts @ self.table
            row = stop
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows L2-normalized (a text with no known token gets a zero row)."""
        return _normalize(self.pool(*self.tokenize(texts)))

    def fit(self, texts: Sequence[str]) -> CorpusEncoder:
        """Encode `texts` as a corpus (token weights = IDF over it, vectors centred on its mean);
        the returned `CorpusEncoder` encodes queries into the same space."""
        flat, lens = self.tokenize(texts)
        rows = np.repeat(np.arange(len(lens)), lens)
        pairs = np.unique(rows * len(self.table) + flat)
        df = np.bincount(pairs % len(self.table), minlength=len(self.table))
        idf = (np.log((1 + len(lens)) / (1 + df)) + 1).astype(np.float32)
        raw = _normalize(self.pool(flat, lens, idf))
        mean = raw.mean(axis=0) if len(raw) else np.zeros(self.dim, np.float32)
        enc = CorpusEncoder(self, idf, mean.astype(np.float32))
        enc.vectors = _normalize(raw - mean)
        return enc

    def __repr__(self) -> str:
        return f"StaticEmbedder({self.cache_key!r}, dim={self.dim})"


def _source_key(embedder) -> str:
    """The sentence model + window the table is distilled from (its precision does not matter:
    the distillation runs in float32)."""
    return getattr(embedder, "source_key", None) or embedder.cache_key


@contextmanager
def _tokenizer_parallelism() -> Iterator[None]:
    """TOKENIZERS_PARALLELISM=true for one call (the Rust side reads it per call), then restored."""
    prev = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if prev is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = prev


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


class CorpusEncoder:
    """Static vectors in a corpus's space: IDF-weighted mean of token vectors, centred, normalized.

    `vectors` holds the corpus's own rows; `encode` maps query texts into the same space.
    """

    def __init__(self, static: StaticEmbedder, idf: np.ndarray, mean: np.ndarray):
        self.static, self.idf, self.mean = static, idf, mean
        self.dim = static.dim
        self.vectors = np.zeros((0, static.dim), np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raw = _normalize(self.static.pool(*self.static.tokenize(texts), self.idf))
        return _normalize(raw - self.mean)
