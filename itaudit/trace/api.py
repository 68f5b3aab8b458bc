"""`trace` as a library call: responses (given, stored, or generated) -> traced, stored run.

    from itaudit.trace.api import TraceRequest, trace_dataset
    out = trace_dataset(store, TraceRequest("alpaca", tuned="out/full", prompts=Path("q.jsonl"),
                                            base="smollm2", control="base", calibrate=True))
    out.run_id, out.summary, out.excess    # excess: tuned share - control share with its interval

The CLI (`itaudit trace`) and `Workspace.trace` call this. Model forward passes (generation,
base-model scores) happen here; tracing itself is `Tracer.trace` (pure) and storing is
`storage.save_run`.

Control (`control=`): "base" (the base model answers the same prompts), a model (alias, HF
dir, .gguf) that answers them, or a responses file. The control's candidate spans never come
from scoring a model against itself: when the base model is the control model (or there is no
base), both sides are compared with lexical candidates and the wordfreq prior only; otherwise
both sides use the base model's shift categories and surprisal.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ItauditError
from ..store import Store
from .attribute import DEFAULT_THRESHOLD
from .control import Excess, calibrate, excess, relabel_all
from .pipeline import ResponseTrace, TraceConfig, TraceItem, Tracer, new_run_id, summarize
from .storage import RunInfo, save_runs


@dataclass
class TraceRequest:
    dataset: str
    responses: Path | None = None          # prompts with responses (any ingest format)
    tuned: str | None = None               # model that answers `prompts`
    prompts: Path | None = None
    generations: str | None = None         # a stored `itaudit generate` run
    base: str | None = None                # base model: shift categories + surprisal
    adapter: Path | None = None
    shift_run: str | None = None
    limit: int | None = None
    max_new_tokens: int = 96
    top_k: int = 5
    neighbours: bool = True
    index_dir: Path | None = None
    run_id: str | None = None
    control: str | None = None             # "base" | model | responses file
    calibrate: bool = False
    target_share: float = 0.05
    threshold: float = DEFAULT_THRESHOLD
    near_copy: bool = True
    n_boot: int = 2000


@dataclass
class TraceOutcome:
    run_id: str
    mode: str
    dataset: str
    traces: list[ResponseTrace]
    summary: dict[str, Any]
    threshold: float
    excess: Excess | None = None
    control_run_id: str | None = None
    compare_mode: str | None = None
    notes: list[str] = field(default_factory=list)


def _load(spec: str, adapter: Any = None, show_progress: bool = False) -> Any:
    from ..models import load_model

    return load_model(spec, adapter=str(adapter) if adapter else None, show_progress=show_progress)


def load_items(store: Store, req: TraceRequest, show_progress: bool = False) -> tuple[list[TraceItem], dict[str, Any]]:
    """The responses to trace and what they came from (mode, tuned model id, source, base)."""
    from .models import generate_items
    from .ranks import shift_rows

    sources = [x is not None for x in (req.responses, req.tuned, req.generations, req.shift_run)]
    if sum(sources) == 0 or (req.tuned is None and req.prompts is not None):
        raise ItauditError("give --responses FILE, --tuned M --prompts FILE, --generations RUN or --shift-run RUN")
    if req.tuned is not None and req.prompts is None:
        raise ItauditError("--tuned needs --prompts FILE")
    if sum(x is not None for x in (req.responses, req.tuned, req.generations)) > 1:
        raise ItauditError("give only one of --responses, --tuned, --generations")
    info: dict[str, Any] = {"mode": "lexical", "base_id": None, "tuned_id": None, "source": None, "base": req.base}
    items: list[TraceItem]
    if req.shift_run and req.responses is None and req.tuned is None and req.generations is None:
        rows = shift_rows(store, req.shift_run)
        items = [TraceItem(pid, ins, resp, None, spans) for pid, (ins, resp, spans) in rows.items()]
        info["mode"] = "shift_rows"
        b = store.query("SELECT base_model FROM shift_runs WHERE run_id = ?", [req.shift_run])["base_model"].to_list()
        info["base_id"] = b[0] if b else None
    elif req.responses is not None:
        items = read_responses(req.responses, req.limit)
        info["source"] = str(req.responses)
    elif req.generations is not None:
        g = store.query("SELECT prompt_id, instruction, response, model_id FROM generations WHERE run_id = ? "
                        "ORDER BY created_at, prompt_id", [req.generations])
        if g.height == 0:
            raise ItauditError(f"no generations run {req.generations!r}")
        items = [TraceItem(p, i, r) for p, i, r, _ in g.iter_rows()]
        info["tuned_id"] = g["model_id"][0]
        info["source"] = f"generations:{req.generations}"
    else:
        from ..models import read_prompts

        ps = read_prompts(req.prompts, limit=req.limit)
        lm = _load(req.tuned, req.adapter, show_progress)
        info["tuned_id"] = lm.model_id
        items = generate_items(lm, ps, max_new_tokens=req.max_new_tokens, show_progress=show_progress)
        info["source"] = str(req.prompts)
        if info["base"] is None and req.adapter is not None:
            info["base"] = req.tuned
        del lm
    if req.limit is not None:
        items = items[:req.limit]
    if req.shift_run and info["mode"] != "shift_rows":
        rows = shift_rows(store, req.shift_run)
        for it in items:
            if it.prompt_id in rows and rows[it.prompt_id][1] == it.response:
                it.token_spans = rows[it.prompt_id][2]
        info["mode"] = "shift_rows"
    return items, info


def read_responses(path: Path, limit: int | None = None) -> list[TraceItem]:
    """Prompts with responses from a file (any ingest format); every prompt needs a response."""
    from ..models import read_prompts

    ps = read_prompts(path, limit=limit)
    missing = [p.prompt_id for p in ps if not p.response]
    if missing:
        raise ItauditError(f"{path}: {len(missing)} prompts have no response to trace (e.g. {missing[0]})")
    return [TraceItem(p.prompt_id, p.instruction if not p.input else f"{p.instruction}\n\n{p.input}", p.response)
            for p in ps]


def control_items(req: TraceRequest, items: list[TraceItem], base: str | None,
                  show_progress: bool = False) -> tuple[list[TraceItem], str]:
    """The control's responses to the same prompts, and the control's id."""
    from ..models.prompts import PromptItem
    from .models import generate_items

    spec = req.control
    if spec is None:
        raise ItauditError("no control given")
    if spec != "base" and Path(spec).is_file() and not Path(spec).suffix == ".gguf":
        ctrl = read_responses(Path(spec))
        want = {it.prompt_id for it in items}
        if not want & {c.prompt_id for c in ctrl}:
            raise ItauditError(f"{spec}: no prompt ids in common with the traced responses")
        return ctrl, str(spec)
    if spec == "base":
        if base is None:
            raise ItauditError("--control base needs --base M (or --tuned with --adapter)")
        spec = base
    lm = _load(spec, None, show_progress)
    ps = [PromptItem(it.prompt_id, it.instruction, response=it.reference) for it in items]
    out = generate_items(lm, ps, max_new_tokens=req.max_new_tokens, show_progress=show_progress)
    cid = lm.model_id
    del lm
    return out, cid


def _strip(items: list[TraceItem]) -> list[TraceItem]:
    out = []
    for it in items:
        c = copy.copy(it)
        c.token_spans, c.token_bits = None, None
        out.append(c)
    return out


def trace_dataset(store: Store, req: TraceRequest, *, show_progress: bool = False,
                  log: Any = None) -> TraceOutcome:
    """Load or generate responses, score them with the base model, trace, store (and compare to a control)."""
    from .models import add_scores

    say = log or (lambda _m: None)
    store.require_dataset(req.dataset)
    items, info = load_items(store, req, show_progress)
    base_lm = None
    mode = info["mode"]
    if mode != "shift_rows" and info["base"] is not None:
        base_lm = _load(info["base"], None, show_progress)
        info["base_id"] = base_lm.model_id
        add_scores(items, base_lm, show_progress=show_progress)
        mode = "shift"
    if mode == "lexical":
        say("no --base / --shift-run: lexical candidates (every content-word run); give --base M for shift-based "
            "candidates")
    cfg = TraceConfig(top_k=req.top_k, threshold=req.threshold, near_copy=req.near_copy)
    tracer = Tracer(store, req.dataset, index_dir=req.index_dir, neighbours=req.neighbours, config=cfg,
                    show_progress=show_progress)
    traces = tracer.trace(items)
    run_id = req.run_id or new_run_id()
    out = TraceOutcome(run_id, mode, req.dataset, traces, {}, req.threshold)
    runs: list[tuple[RunInfo, list[ResponseTrace]]] = []
    main = RunInfo(run_id, req.dataset, mode, info["tuned_id"], info["base_id"],
                   str(req.adapter) if req.adapter else None, info["source"], tracer.params(),
                   "tuned" if req.control else None, req.threshold)
    runs.append((main, traces))
    ex_row = None
    if req.control is not None:
        ctrl, cid = control_items(req, items, info["base"] or info["base_id"], show_progress)
        self_scored = base_lm is None or cid == info["base_id"]
        if self_scored:
            compare_mode = "lexical"
            tuned_cmp = tracer.trace(_strip(items)) if mode != "lexical" else traces
            ctrl_tr = tracer.trace(_strip(ctrl))
            if mode != "lexical":
                out.notes.append("the control is the base model (or there is none): tuned and control compared "
                                 "with lexical candidates and the word-frequency prior")
        else:
            compare_mode = "shift"
            add_scores(ctrl, base_lm, show_progress=show_progress)
            tuned_cmp, ctrl_tr = traces, tracer.trace(ctrl)
        threshold = req.threshold
        if req.calibrate:
            threshold = calibrate(ctrl_tr, req.target_share, floor=req.threshold)
            for tr in {id(traces): traces, id(tuned_cmp): tuned_cmp, id(ctrl_tr): ctrl_tr}.values():
                relabel_all(tr, threshold)
            main.threshold = threshold
            main.params = {**main.params, "threshold": threshold, "calibrated_on_control": True}
        ex = excess(tuned_cmp, ctrl_tr, n_boot=req.n_boot)
        ctrl_info = RunInfo(new_run_id(), req.dataset, compare_mode, cid, None if self_scored else info["base_id"],
                            None, req.control, {**main.params, "control_for": run_id}, "control", threshold)
        runs.append((ctrl_info, ctrl_tr))
        cmp_id = run_id
        if tuned_cmp is not traces:
            cmp_info = RunInfo(new_run_id(), req.dataset, compare_mode, info["tuned_id"], None, main.adapter,
                               info["source"], {**main.params, "compare_for": run_id}, "tuned_compare", threshold)
            runs.append((cmp_info, tuned_cmp))
            cmp_id = cmp_info.run_id
        ex_row = {"run_id": run_id, "tuned_run_id": cmp_id, "control_run_id": ctrl_info.run_id,
                  "dataset": req.dataset, "control": cid, "candidates": compare_mode, "threshold": threshold,
                  "calibrated": req.calibrate, "target_share": req.target_share if req.calibrate else None,
                  **ex.as_dict()}
        out.excess, out.control_run_id, out.compare_mode, out.threshold = ex, ctrl_info.run_id, compare_mode, threshold
    del base_lm
    save_runs(store, runs, ex_row)
    out.summary = summarize(traces)
    return out
