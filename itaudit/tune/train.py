"""Supervised fine-tuning (LoRA or full) with a small, deterministic, resumable training loop.

The loop is plain PyTorch: AdamW, linear warmup then linear decay, gradient accumulation,
gradient clipping, loss averaged over the response tokens of each optimizer step. Logits are
computed only at the positions that have a target (`logits_to_keep` mask), which matters for
models with large vocabularies (Gemma: 262k). Data order comes from `seed` and the epoch, so a
run resumed from a checkpoint takes exactly the same steps as an uninterrupted one.

Checkpoints (`OUT/checkpoints/step-NNNNNN/`) hold the trainable tensors and the AdamW state as
safetensors plus a JSON state; only the latest is kept, and they are removed when the run ends.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F

from ..errors import ItauditError
from ..paths import atomic_path, atomic_write_text, temp_sibling
from ..progress import progress_bar
from ..store import Store
from ..threads import with_torch_threads
from .data import IGNORE, Example, build_examples, collate, rows_sha, select_instances
from .options import DEFAULT_LR, DEFAULT_TARGETS

MARKER = "itaudit_tune.json"
CKPT_DIR = "checkpoints"


@dataclass
class TuneConfig:
    base: str
    dataset: str
    out: Path
    method: str = "lora"
    rows: int | None = None
    epochs: int = 1
    where: str | None = None
    allow_files: bool = False               # let `where` read/write files (itaudit.usersql)
    lr: float | None = None                 # default: DEFAULT_LR[method]
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    lora_dropout: float = 0.0
    max_len: int = 512
    batch_size: int = 4
    grad_accum: int = 1
    seed: int = 0
    warmup: float = 0.1                     # fraction of the steps with a linear LR warmup
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_every: int = 50                    # checkpoint every N optimizer steps (0: never)
    resume: bool = False
    overwrite: bool = False
    keep_checkpoints: bool = False
    stop_after: int | None = None           # stop (with a checkpoint) after this many steps
    plain_template: bool = False
    device: str | None = None
    run_id: str | None = None

    def learning_rate(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.method])

    def hyperparams(self) -> dict[str, Any]:
        """What determines the trained weights (checked on resume)."""
        h = {"lr": self.learning_rate(), "max_len": self.max_len, "batch_size": self.batch_size,
             "grad_accum": self.grad_accum, "seed": self.seed, "warmup": self.warmup,
             "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm,
             "template": "plain" if self.plain_template else "auto", "optimizer": "adamw",
             "schedule": "linear"}
        if self.method == "lora":
            h.update(lora_r=self.lora_r, lora_alpha=self.lora_alpha, lora_targets=list(self.lora_targets),
                     lora_dropout=self.lora_dropout)
        return h


@dataclass
class TuneResult:
    run_id: str
    out: Path
    method: str
    status: str                 # 'done' | 'stopped'
    steps: int
    steps_done: int
    n_rows: int
    n_examples: int
    n_tokens: int
    losses: list[float] = field(default_factory=list)
    final_loss: float | None = None
    seconds: float = 0.0
    device: str = "cpu"


# -- helpers -------------------------------------------------------------------------------

def _device(cfg: TuneConfig) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_at(step: int, total: int, peak: float, warmup_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then linear decay towards 0 at `total`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * max(0.0, (total - step) / max(1, total - warmup_steps))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def step_loss_sum(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the target tokens of `batch` (logits only where needed)."""
    labels = batch["labels"].to(device)
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][keep[:, :-1]]
    kw = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
          "use_cache": False}
    logits = None
    try:
        out = model(**kw, logits_to_keep=keep)
        logits = out.logits.reshape(-1, out.logits.shape[-1])
        if logits.shape[0] != targets.shape[0]:
            logits = None
    except TypeError:
        logits = None
    if logits is None:  # models without mask support for logits_to_keep
        logits = model(**kw).logits[keep]
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def _prepare_out(cfg: TuneConfig) -> Path:
    out = Path(cfg.out)
    ours = (out / MARKER).exists() or (out / CKPT_DIR).exists()
    if cfg.overwrite and out.exists():
        if not ours and any(out.iterdir()):
            raise ItauditError(f"{out} is not empty and was not written by itaudit tune; refusing to overwrite")
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()) and not cfg.resume:
        if (out / MARKER).exists():
            raise ItauditError(f"{out} already holds a finished run; use --overwrite to tune again")
        if (out / CKPT_DIR).exists():
            raise ItauditError(f"{out} holds checkpoints of an unfinished run; use --resume or --overwrite")
        raise ItauditError(f"{out} is not empty")
    elif cfg.resume and (out / MARKER).exists():
        raise ItauditError(f"{out} already holds a finished run; nothing to resume")
    (out / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    return out


def latest_checkpoint(out: Path) -> Path | None:
    d = Path(out) / CKPT_DIR
    steps = sorted(p for p in d.glob("step-*") if (p / "state.json").is_file()) if d.is_dir() else []
    return steps[-1] if steps else None


def save_checkpoint(out: Path, step: int, named: list[tuple[str, torch.nn.Parameter]],
                    opt: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    ck = Path(out) / CKPT_DIR
    final = ck / f"step-{step:06d}"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_file({n: p.detach().cpu().contiguous() for n, p in named}, str(tmp / "trainable.safetensors"))
        opt_t: dict[str, torch.Tensor] = {}
        for i, (_, p) in enumerate(named):
            for k, v in opt.state.get(p, {}).items():
                t = v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                opt_t[f"{i}.{k}"] = t.detach().cpu().contiguous()
        opt_t["_rng_cpu"] = torch.get_rng_state()
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=1))
    for old in ck.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, named: list[tuple[str, torch.nn.Parameter]], opt: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    missing = [n for n, _ in named if n not in weights]
    if missing:
        raise ItauditError(f"checkpoint {path} does not match the model (missing {missing[0]})")
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n].to(p.device, p.dtype))
    ot = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in ot.items():
        if key.startswith("_"):
            continue
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = t
    sd = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
    if "_rng_cpu" in ot:
        torch.set_rng_state(ot["_rng_cpu"])
    return json.loads((path / "state.json").read_text())


def _finalize(out: Path, model: Any, tokenizer: Any, meta: dict[str, Any]) -> None:
    """Save the model (HF dir) or adapter (PEFT dir) + tokenizer into `out`, atomically per file;
    the marker JSON is written last."""
    tmp = temp_sibling(out / "final")
    tmp.mkdir()
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(out / MARKER, json.dumps(meta, indent=1))


# -- the run ---------------------------------------------------------------------------------

def tune(store: Store, cfg: TuneConfig, *, show_progress: bool = True, log: Any = None) -> TuneResult:
    """Fine-tune `cfg.base` on the selected instances of `cfg.dataset`; record it in `tune_runs`.

    Reads the rows, then trains (`train`) holding no database connection: the run's `tune_runs`
    row is committed by `save_run` when training starts, stops and ends, each in one short
    transaction, so other commands can use the database meanwhile."""
    validate(cfg)
    frame = select_instances(store, cfg.dataset, cfg.where, cfg.rows, allow_files=cfg.allow_files)
    store.release()
    return train(cfg, frame, record=lambda row: save_run(store, row), show_progress=show_progress, log=log)


def save_run(store: Store, row: dict[str, Any]) -> None:
    """Write (replace) one `tune_runs` row in one transaction, cast to the table's types."""
    from ..steps.runner import insert_cast

    with store.writer() as conn:
        conn.execute("DELETE FROM tune_runs WHERE run_id = ?", [row["run_id"]])
        insert_cast(conn, "tune_runs", pl.DataFrame([row]))


def validate(cfg: TuneConfig) -> None:
    """User errors in the settings, before anything is read or loaded."""
    if cfg.method not in ("lora", "full"):
        raise ItauditError(f"--method must be 'lora' or 'full', not {cfg.method!r}")
    for name in ("epochs", "batch_size", "grad_accum", "max_len"):
        if getattr(cfg, name) < 1:
            raise ItauditError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.max_len < 2:
        raise ItauditError("--max-len must be >= 2")
    if cfg.rows is not None and cfg.rows < 1:
        raise ItauditError("--rows must be >= 1")
    if not 0.0 <= cfg.warmup < 1.0:
        raise ItauditError("--warmup is a fraction of the steps in [0, 1)")


@with_torch_threads
def train(cfg: TuneConfig, frame: pl.DataFrame, *, record: Callable[[dict[str, Any]], None] | None = None,
          show_progress: bool = True, log: Any = None) -> TuneResult:
    """Fine-tune on the rows of `frame` (system, history, instruction, input, response, idx).

    Writes only files under `cfg.out` (checkpoints, the final model); the run's `tune_runs` row is
    passed to `record` when training starts, stops and ends (the caller stores it)."""
    from ..models import load_model, pad_id

    validate(cfg)
    if frame.height == 0:
        raise ItauditError(f"no rows of {cfg.dataset!r} match --where {cfg.where!r}")
    out = _prepare_out(cfg)
    device = _device(cfg)

    torch.manual_seed(cfg.seed)
    lm = load_model(cfg.base, show_progress=show_progress)
    if cfg.plain_template:
        lm.use_chat_template = False
    examples, skipped = build_examples(lm, frame, cfg.max_len)
    if not examples:
        raise ItauditError(f"every selected prompt is longer than --max-len {cfg.max_len}")

    model = lm.model
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed)
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                          lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM", bias="none")
        try:
            model = get_peft_model(model, lcfg)
        except ValueError as e:
            raise ItauditError(f"LoRA targets {list(cfg.lora_targets)} do not fit {lm.model_id}: {e}") from None
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.to(device)
    model.train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for _, p in named)
    peak = cfg.learning_rate()
    opt = torch.optim.AdamW([p for _, p in named], lr=peak, weight_decay=cfg.weight_decay)

    eff = cfg.batch_size * cfg.grad_accum
    spe = math.ceil(len(examples) / eff)
    total = cfg.epochs * spe
    warm = int(round(cfg.warmup * total))
    n_tokens = sum(e.n_target for e in examples)
    sha = rows_sha([e.idx for e in examples])
    hp = {**cfg.hyperparams(), "n_trainable": n_trainable, "skipped_long_prompts": skipped}
    fingerprint = {"base": cfg.base, "method": cfg.method, "dataset": cfg.dataset, "where": cfg.where,
                   "rows_sha": sha, "epochs": cfg.epochs, "hyperparams": cfg.hyperparams()}

    start, losses, prev_seconds = 0, [], 0.0
    run_id = cfg.run_id or f"tune-{uuid.uuid4().hex[:12]}"
    ck = latest_checkpoint(out) if cfg.resume else None
    if ck is not None:
        st = load_checkpoint(ck, named, opt)
        if st.get("fingerprint") != fingerprint:
            raise ItauditError(f"{ck} was written with other settings or rows; rerun with --overwrite "
                               f"(checkpoint: {st.get('fingerprint')})")
        start, losses, prev_seconds, run_id = st["step"], st["losses"], st["seconds"], st["run_id"]
    elif cfg.resume and log:
        log(f"no checkpoint in {out / CKPT_DIR}; starting from step 0")

    run = {"run_id": run_id, "base_model": cfg.base, "method": cfg.method, "dataset": cfg.dataset,
           "where_sql": cfg.where, "n_rows": frame.height, "n_examples": len(examples), "n_tokens": n_tokens,
           "rows_sha": sha, "epochs": cfg.epochs, "steps": total, "steps_done": start, "hyperparams": json.dumps(hp),
           "out_dir": str(out.resolve()), "losses": json.dumps(losses), "final_loss": None, "seconds": prev_seconds,
           "device": str(device), "status": "running", "created_at": datetime.now(), "finished_at": None}

    def _record(step: int, final_loss: float | None, seconds: float, status: str) -> None:
        run.update(steps_done=step, losses=json.dumps(losses), final_loss=final_loss, seconds=round(seconds, 2),
                   status=status, finished_at=datetime.now() if status == "done" else None)
        if record is not None:
            record(dict(run))

    if record is not None:
        record(dict(run))
    if log:
        log(f"{run_id}: {cfg.method} on {len(examples)} examples ({n_tokens:,} response tokens/epoch, "
            f"{skipped} skipped), {total} steps of {eff}, {n_trainable:,} trainable parameters, {device}"
            + (f"; resuming at step {start}" if start else ""))

    pad = pad_id(lm)
    orders: dict[int, list[int]] = {}
    t0 = time.perf_counter()
    step = start
    in_update = False
    status = "done"

    def ck_state() -> dict[str, Any]:
        return {"run_id": run_id, "losses": losses, "seconds": prev_seconds + time.perf_counter() - t0,
                "fingerprint": fingerprint}

    try:
        with progress_bar(f"tune {cfg.method}", total=total, unit="steps", enabled=show_progress) as bar:
            bar.update(start, f"tune {cfg.method}")
            while step < total:
                if cfg.stop_after is not None and step >= cfg.stop_after:
                    status = "stopped"
                    break
                epoch, within = divmod(step, spe)
                if epoch not in orders:
                    orders = {epoch: epoch_order(len(examples), cfg.seed, epoch)}
                chosen: list[Example] = [examples[k] for k in orders[epoch][within * eff:(within + 1) * eff]]
                n_tgt = sum(e.n_target for e in chosen)
                total_loss = 0.0
                for m in range(0, len(chosen), cfg.batch_size):
                    loss_sum = step_loss_sum(model, collate(chosen[m:m + cfg.batch_size], pad), device)
                    (loss_sum / max(1, n_tgt)).backward()
                    total_loss += float(loss_sum.detach())
                in_update = True
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, total, peak, warm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                in_update = False
                losses.append(round(total_loss / max(1, n_tgt), 6))
                bar.update(step, f"tune {cfg.method} loss {losses[-1]:.3f}")
                if cfg.save_every and step % cfg.save_every == 0 and step < total:
                    save_checkpoint(out, step, named, opt, ck_state())
    except KeyboardInterrupt:
        if not in_update and step > start:
            save_checkpoint(out, step, named, opt, ck_state())
        _record(step, None, prev_seconds + time.perf_counter() - t0, "stopped")
        raise

    seconds = prev_seconds + time.perf_counter() - t0
    last = losses[-spe:] if losses else []
    final_loss = round(sum(last) / len(last), 6) if status == "done" and last else None
    if status == "stopped":
        if step > start:
            save_checkpoint(out, step, named, opt, ck_state())
    else:
        model.eval()
        meta = {"run_id": run_id, "base": cfg.base, "base_model_id": lm.model_id, "method": cfg.method,
                "dataset": cfg.dataset, "where": cfg.where, "n_rows": frame.height, "n_examples": len(examples),
                "n_tokens": n_tokens, "rows_sha": sha, "epochs": cfg.epochs, "steps": total,
                "hyperparams": hp, "losses": losses, "final_loss": final_loss, "seconds": round(seconds, 2),
                "device": str(device), "load_with": (f"load_model({cfg.base!r}, adapter={str(out)!r})"
                                                     if cfg.method == "lora" else f"load_model({str(out)!r})")}
        model_to_save = model
        if device.type != "cpu":
            model_to_save = model.to("cpu")
        _finalize(out, model_to_save, lm.tokenizer, meta)
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    _record(step, final_loss, seconds, status)
    return TuneResult(run_id, out, cfg.method, status, total, step, frame.height, len(examples), n_tokens,
                      losses, final_loss, round(seconds, 2), str(device))


def config_dict(cfg: TuneConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    return d
