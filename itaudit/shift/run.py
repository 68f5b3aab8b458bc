"""The token distribution shift analysis (URIAL / AlignTDS), end to end, stored in DuckDB.

The tuned model answers each prompt greedily; the base model reads the same context text (the
tuned model's chat-formatted prompt) plus the response prefix, and for every response token we
record the base rank of the tuned token, both probabilities and KL(base || tuned).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..errors import ItauditError
from ..models import LoadedModel, PromptItem, generate_ids, pad_id
from ..models.scoring import DEFAULT_BUDGET_MB, Scorer, TokenStats, score
from ..progress import progress_bar
from ..steps.base import Frames, Params, Resources, Step
from ..store import Store
from .words import layout


def category(rank: int) -> str:
    return "unshifted" if rank == 1 else ("marginal" if rank <= 3 else "shifted")


def same_vocabulary(a: LoadedModel, b: LoadedModel) -> bool:
    """KL needs one vocabulary: identical token->id maps and LM head sizes."""
    if a.tokenizer is b.tokenizer:
        return a.vocab_size == b.vocab_size
    return a.vocab_size == b.vocab_size and a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


@dataclass
class ShiftResult:
    run_id: str
    n_prompts: int
    n_tokens: int
    seconds: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def token_rows(run_id: str, prompt_id: str, tokenizer: Any, ids: list[int], st: TokenStats) -> pl.DataFrame:
    lay = layout(tokenizer, ids)
    n = len(ids)
    ranks = st.rank.astype(np.int32)
    return pl.DataFrame({
        "run_id": [run_id] * n, "prompt_id": [prompt_id] * n, "position": list(range(n)), "token_id": ids,
        "token": lay.pieces, "word_idx": lay.word_idx, "word": lay.words, "is_word_start": lay.is_word_start,
        "sentence_idx": lay.sentence_idx, "sentence_frac": lay.sentence_frac,
        "category": [category(int(r)) for r in ranks], "base_rank": ranks, "base_prob": st.base_prob,
        "tuned_prob": st.tuned_prob if st.tuned_prob is not None else [None] * n,
        "kl": st.kl if st.kl is not None else [None] * n,
    })


def _encode_response(lm: LoadedModel, text: str) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def items_frame(items: Sequence[PromptItem], *, responses: Sequence[str] | None = None,
                contexts: Sequence[str] | None = None) -> pl.DataFrame:
    """The rows a `ShiftStep` maps over: one per prompt (history as JSON; context/response may be null)."""
    n = len(items)
    return pl.DataFrame({
        "prompt_id": [it.prompt_id for it in items], "instruction": [it.instruction for it in items],
        "input": [it.input for it in items], "system": [it.system for it in items],
        "history": [json.dumps(it.history or []) for it in items],
        "context": list(contexts) if contexts is not None else [None] * n,
        "response": list(responses) if responses is not None else [None] * n,
    }, schema={"prompt_id": pl.Utf8, "instruction": pl.Utf8, "input": pl.Utf8, "system": pl.Utf8,
               "history": pl.Utf8, "context": pl.Utf8, "response": pl.Utf8})


@dataclass(frozen=True)
class ShiftParams(Params):
    run_id: str = ""                    # the run the rows belong to (set by `analyze`)
    max_new_tokens: int = 128
    batch_size: int = 4
    budget_mb: float = DEFAULT_BUDGET_MB
    adapter_mode: bool = False          # tuned is a PeftModel over base: the base = adapter off
    # Model specs (alias, HF dir, .gguf): a step built from them loads its models lazily, in the
    # worker that runs it (process pool, Ray actor); a step given model objects uses those.
    base: str = ""
    tuned: str | None = None
    adapter: str | None = None          # base + this LoRA adapter is the tuned model
    template_from: str | None = None    # responses mode: format prompts with this model's template
    plain: bool = False                 # the plain '### Instruction/### Response' template


def load_shift_models(base: str, *, tuned: str | None = None, adapter: str | None = None,
                      template_from: str | None = None, plain: bool = False,
                      show_progress: bool = False) -> tuple[LoadedModel, LoadedModel | None, Any]:
    """(base, tuned or None, context formatter or None) from model specs; with `adapter` the tuned
    model is base + adapter and the base is the same PeftModel (its adapter switched off)."""
    from ..models import load_model
    from ..models.loading import load_tokenizer, resolve

    if adapter is not None and tuned is not None:
        raise ItauditError("give either a tuned model or an adapter")
    if adapter is not None:
        tuned_lm = load_model(base, adapter=str(adapter), show_progress=show_progress)
        base_lm = LoadedModel(tuned_lm.model, tuned_lm.tokenizer, resolve(base)[1], tuned_lm.source)
    else:
        base_lm = load_model(base, show_progress=show_progress)
        tuned_lm = load_model(tuned, show_progress=show_progress) if tuned is not None else None
    context_lm = None
    if template_from is not None:
        context_lm = LoadedModel(None, load_tokenizer(resolve(template_from)[0]), template_from)
    for lm in (base_lm, tuned_lm, context_lm):
        if lm is not None and plain:
            lm.use_chat_template = False
    return base_lm, tuned_lm, context_lm


@dataclass
class ShiftChunk:
    """What one chunk of prompts yields: rows for shift_tokens and shift_responses, and timings."""

    frames: list[Frames]
    n_tokens: int
    seconds: dict[str, float]


class ShiftStep(Step):
    """The shift analysis of a chunk of prompts: generation (tuned mode) and scoring. Pure:
    `compute_chunk` returns frames; `analyze` (or any executor + `save_frames`) stores them.

    Models are either given at construction (`base`, optional `tuned`, `context_lm` formatting
    prompts in responses mode) or named in the params (`base`, `tuned`/`adapter`, ...) and loaded
    on first use; a step built from specs pickles without its models, so an executor's workers
    load them once each. Rows come from `items_frame` (responses mode when `response` is set).
    """

    name: ClassVar[str] = "shift"
    description: ClassVar[str] = "token distribution shift between a base and a tuned model (URIAL / AlignTDS)"
    Params: ClassVar[type[Params]] = ShiftParams
    default: ClassVar[bool] = False
    resources: ClassVar[Resources] = Resources(cpus=1.0, memory_gb=2.0, model="shift")

    def __init__(self, params: Any = None, *, base: LoadedModel | None = None, tuned: LoadedModel | None = None,
                 context_lm: Any = None):
        super().__init__(params)
        p: ShiftParams = self.params  # type: ignore[assignment]
        if base is None and not p.base:
            raise ItauditError("shift: give the base model (an object, or params base=SPEC)")
        self.base, self.tuned, self.context_lm = base, tuned, context_lm
        self._ready = False
        if base is not None:
            self._setup()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.params.base:   # workers reload from the specs instead of receiving the weights
            state.update(base=None, tuned=None, context_lm=None, _ready=False)
            for k in ("base_scorer", "tuned_scorer"):
                state.pop(k, None)
        return state

    def _setup(self) -> None:
        if self._ready:
            return
        p: ShiftParams = self.params  # type: ignore[assignment]
        if self.base is None:
            self.base, self.tuned, self.context_lm = load_shift_models(
                p.base, tuned=p.tuned, adapter=p.adapter, template_from=p.template_from, plain=p.plain)
        base, tuned = self.base, self.tuned
        self.shared_vocab = tuned is not None and (self.adapter_mode or same_vocabulary(base, tuned))
        if self.adapter_mode:
            if tuned is None:
                raise ItauditError("adapter mode needs the tuned (adapter) model")
            self.base_scorer = Scorer(tuned.model, disable_adapter=True)
            self.tuned_scorer: Scorer | None = Scorer(tuned.model)
        else:
            self.base_scorer = Scorer(base.model)
            self.tuned_scorer = Scorer(tuned.model) if self.shared_vocab else None
        self._ready = True

    @property
    def mode(self) -> str:
        p: ShiftParams = self.params  # type: ignore[assignment]
        if self.base is None:   # not loaded yet: from the specs
            return "adapter" if p.adapter else ("models" if p.tuned else "responses")
        return "responses" if self.tuned is None else ("adapter" if self.adapter_mode else "models")

    @property
    def adapter_mode(self) -> bool:
        return bool(self.params.adapter_mode or self.params.adapter)

    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> ShiftChunk:  # type: ignore[override]
        p: ShiftParams = self.params  # type: ignore[assignment]
        self._setup()
        base, tuned = self.base, self.tuned
        if tuned is None and rows["response"].null_count():
            raise ItauditError("responses mode needs a response for every prompt")
        fmt = tuned if tuned is not None else (self.context_lm or base)
        recs = rows.to_dicts()
        texts = [r["context"] if r["context"] is not None else
                 fmt.format_prompt(r["instruction"], r["input"], r["system"], json.loads(r["history"] or "[]"))
                 for r in recs]
        base_ctx = [base.encode_prompt(t) for t in texts]
        secs = {"generate": 0.0, "score": 0.0, "layout": 0.0}
        t0 = time.perf_counter()
        if tuned is not None:
            tuned_ctx = [tuned.encode_prompt(t) for t in texts]
            gen = generate_ids(tuned, tuned_ctx, p.max_new_tokens, p.batch_size, greedy=True, show_progress=False)
            resp_text = [tuned.tokenizer.decode(g, skip_special_tokens=True) for g in gen]
            base_resp = gen if self.shared_vocab else [_encode_response(base, r) for r in resp_text]
        else:
            resp_text = [r["response"] for r in recs]
            base_resp = [_encode_response(base, r) for r in resp_text]
        secs["generate"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        bseqs = list(zip(base_ctx, base_resp, strict=True))
        tseqs = list(zip(tuned_ctx, gen, strict=True)) if self.tuned_scorer is not None else None
        stats = score(self.base_scorer, bseqs, self.tuned_scorer, tseqs, batch_size=p.batch_size,
                      pad_id=pad_id(base), budget_mb=p.budget_mb)
        secs["score"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens = [token_rows(p.run_id, r["prompt_id"], base.tokenizer, ids, st)
                  for r, ids, st in zip(recs, base_resp, stats, strict=True) if ids]
        resp_rows = pl.DataFrame([
            {"run_id": p.run_id, "prompt_id": r["prompt_id"], "instruction": r["instruction"], "prompt": t,
             "response": rt, "n_tokens": len(ids)}
            for r, t, rt, ids in zip(recs, texts, resp_text, base_resp, strict=True)
        ])
        secs["layout"] += time.perf_counter() - t0
        frames = [Frames("shift_tokens", pl.concat(tokens))] if tokens else []
        frames.append(Frames("shift_responses", resp_rows))
        return ShiftChunk(frames, sum(len(x) for x in base_resp), secs)


def save_frames(store: Store, frames: Sequence[Frames]) -> None:
    """Store frames in one transaction, cast to the table types in `sql/` (the runner's commit)."""
    from ..steps.runner import commit

    commit(store, [f for f in frames if f.frame.height])


def analyze(
    store: Store,
    base: LoadedModel,
    items: list[PromptItem],
    *,
    tuned: LoadedModel | None = None,
    adapter_mode: bool = False,
    responses: list[str] | None = None,
    context_lm: Any = None,
    contexts: list[str] | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 4,
    reference_dataset: str | None = None,
    budget_mb: float = DEFAULT_BUDGET_MB,
    run_id: str | None = None,
    show_progress: bool = True,
    chunk_prompts: int = 16,
    executor: Any = None,
    specs: dict[str, Any] | None = None,
) -> ShiftResult:
    """Run the shift analysis and store it; returns the run id and timings.

    Modes: `tuned` (a separate model, or with `adapter_mode` the same PeftModel as `base` whose
    adapter is switched off to get the base), or `responses` (texts given; base model only).
    `context_lm` (anything with `format_prompt`) formats prompts in responses mode (default: base);
    `contexts` gives the context texts verbatim instead (e.g. the prompts stored with generations).
    The computation is `ShiftStep.compute_chunk` over chunks of `chunk_prompts` prompts, mapped by
    `executor` (in-process by default); each chunk is committed on its own as it arrives: rerun
    with the same `run_id` to resume. `specs` (ShiftParams model fields: base, tuned, adapter,
    template_from, plain) name the loaded models, so an executor's workers load them from the
    specs instead of receiving the weights.
    """
    if (tuned is None) == (responses is None):
        raise ItauditError("give either a tuned model or responses")
    if responses is not None and len(responses) != len(items):
        raise ItauditError(f"{len(responses)} responses for {len(items)} prompts")
    if contexts is not None and len(contexts) != len(items):
        raise ItauditError(f"{len(contexts)} contexts for {len(items)} prompts")
    run_id = run_id or f"shift-{uuid.uuid4().hex[:12]}"
    step = ShiftStep(ShiftParams(run_id=run_id, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 budget_mb=budget_mb, adapter_mode=adapter_mode, **(specs or {})),
                     base=base, tuned=tuned, context_lm=context_lm)
    retokenized = tuned is None or not step.shared_vocab
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "greedy": True,
                "budget_mb": budget_mb, "n_prompts": len(items)}
    existing = store.query("SELECT run_id FROM shift_runs WHERE run_id = ?", [run_id])
    if existing.height == 0:
        save_frames(store, [Frames("shift_runs", pl.DataFrame([{
            "run_id": run_id, "base_model": base.model_id, "tuned_model": tuned.model_id if tuned else None,
            "mode": step.mode, "retokenized": retokenized, "kl_available": step.shared_vocab,
            "reference_dataset": reference_dataset, "settings": json.dumps(settings)}]))])
    done = set(store.query("SELECT prompt_id FROM shift_responses WHERE run_id = ?", [run_id])["prompt_id"].to_list())
    rows = items_frame(items, responses=responses, contexts=contexts).filter(~pl.col("prompt_id").is_in(list(done)))
    chunks = [(c, rows.slice(s, chunk_prompts)) for c, s in enumerate(range(0, rows.height, chunk_prompts))]
    secs = {"generate": 0.0, "score": 0.0, "layout": 0.0}
    n_tokens = 0
    if executor is None:
        results = ((cid, step.compute_chunk(part, cid, len(chunks))) for cid, part in chunks)
    else:
        results = executor.map(step, iter(chunks), len(chunks))
    with progress_bar(f"shift {step.mode}", total=rows.height, unit="prompts", enabled=show_progress) as bar:
        for cid, got in results:
            save_frames(store, got.frames)
            n_tokens += got.n_tokens
            for k, v in got.seconds.items():
                secs[k] += v
            bar.advance(chunks[cid][1].height)
    summary = run_summary(store, run_id)
    summary["seconds"] = {k: round(v, 2) for k, v in secs.items()}
    summary["scored_tokens_per_s"] = round(n_tokens / secs["score"], 1) if secs["score"] else None
    with store.transaction() as conn:
        conn.execute("UPDATE shift_runs SET summary = ? WHERE run_id = ?", [json.dumps(summary), run_id])
    return ShiftResult(run_id, len(items), n_tokens, secs, summary)


def run_summary(store: Store, run_id: str) -> dict[str, Any]:
    df = store.query(
        "SELECT count(*) AS n_tokens, count(DISTINCT prompt_id) AS n_responses,"
        " avg((category = 'unshifted')::INT) AS unshifted, avg((category = 'marginal')::INT) AS marginal,"
        " avg((category = 'shifted')::INT) AS shifted, avg(kl) AS mean_kl, avg(base_prob) AS mean_base_prob"
        " FROM shift_tokens WHERE run_id = ?", [run_id])
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in df.row(0, named=True).items()}


def set_reference(store: Store, run_id: str, dataset: str) -> None:
    """Name the IT dataset the `shift_verbatim` report compares a run's words with."""
    if store.dataset_info(dataset) is None:
        raise ItauditError(f"no dataset named {dataset!r}; see `itaudit data list`")
    with store.transaction() as conn:
        conn.execute("UPDATE shift_runs SET reference_dataset = ? WHERE run_id = ?", [dataset, run_id])
