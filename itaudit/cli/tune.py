"""`itaudit tune`: LoRA or full supervised fine-tuning on a (filtered) dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .common import DbOption, console, db_path


class Method(str, Enum):
    lora = "lora"
    full = "full"


def register(app: typer.Typer) -> None:
    from ..tune.options import DEFAULT_TARGETS, WHERE_HELP

    @app.command()
    def tune(
        base: str = typer.Option(..., "--base", "-b", help="model to tune: alias (smollm2, gemma3-270m), HF dir or .gguf"),
        dataset: str = typer.Option(..., "--dataset", "-d", help="ingested dataset to train on"),
        out: Path = typer.Option(..., "--out", "-o", help="output dir: PEFT adapter (lora) or HF model (full)"),
        method: Method = typer.Option(Method.lora, "--method", "-m"),
        rows: int = typer.Option(None, "--rows", "-n", help="train on the first N selected rows (idx order)"),
        epochs: int = typer.Option(1, "--epochs", "-e"),
        where: str = typer.Option(None, "--where", "-w", help=WHERE_HELP),
        allow_files: bool = typer.Option(False, "--allow-files", help="let --where read/write files (read_csv, COPY)"),
        lr: float = typer.Option(None, "--lr", help="peak learning rate (default 2e-4 for lora, 2e-5 for full)"),
        lora_r: int = typer.Option(8, "--lora-r"),
        lora_alpha: int = typer.Option(16, "--lora-alpha"),
        lora_targets: str = typer.Option(",".join(DEFAULT_TARGETS), "--lora-targets",
                                         help="comma-separated module names, or all-linear"),
        lora_dropout: float = typer.Option(0.0, "--lora-dropout"),
        max_len: int = typer.Option(512, "--max-len", help="max tokens of prompt + response (response cut)"),
        batch_size: int = typer.Option(4, "--batch-size"),
        grad_accum: int = typer.Option(1, "--grad-accum", help="micro-batches per optimizer step"),
        seed: int = typer.Option(0, "--seed"),
        warmup: float = typer.Option(0.1, "--warmup", help="fraction of steps with linear LR warmup"),
        weight_decay: float = typer.Option(0.0, "--weight-decay"),
        save_every: int = typer.Option(50, "--save-every", help="checkpoint every N steps (0: never)"),
        resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in OUT"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run in OUT"),
        keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints"),
        stop_after: int = typer.Option(None, "--stop-after", help="stop after N steps (checkpointed; --resume later)"),
        plain: bool = typer.Option(False, "--plain-template", help="use '### Instruction/### Response' even with a chat template"),
        device: str = typer.Option(None, "--device", help="cpu, cuda, ... (default: cuda if available)"),
        run_id: str = typer.Option(None, "--run-id", help="name the run in tune_runs"),
        threads: int = typer.Option(None, "--threads", help="torch CPU threads (1 is often faster on a busy machine)"),
        db: str = DbOption,
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """Fine-tune a model (loss on response tokens only); records the run in tune_runs."""
        import os

        from ..store import Store
        from ..tune import TuneConfig
        from ..tune import tune as run_tune

        targets: str | tuple[str, ...] = tuple(t.strip() for t in lora_targets.split(",") if t.strip())
        cfg = TuneConfig(
            base=base, dataset=dataset, out=out, method=method.value, rows=rows, epochs=epochs, where=where, allow_files=allow_files,
            lr=lr, lora_r=lora_r, lora_alpha=lora_alpha,
            lora_targets=("all-linear",) if targets == ("all-linear",) else targets,
            lora_dropout=lora_dropout, max_len=max_len, batch_size=batch_size, grad_accum=grad_accum, seed=seed,
            warmup=warmup, weight_decay=weight_decay, save_every=save_every, resume=resume, overwrite=overwrite,
            keep_checkpoints=keep_checkpoints, stop_after=stop_after, plain_template=plain, device=device,
            run_id=run_id)
        if threads:
            os.environ["ITAUDIT_TORCH_THREADS"] = str(threads)
        with Store(db_path(db)) as store:
            res = run_tune(store, cfg, show_progress=not quiet,
                           log=None if quiet else (lambda m: console.print(m, highlight=False)))
        first = res.losses[0] if res.losses else float("nan")
        last = res.losses[-1] if res.losses else float("nan")
        if res.status == "stopped":
            console.print(f"[yellow]{res.run_id}[/]: stopped after {res.steps_done}/{res.steps} steps "
                          f"(loss {first:.3f} -> {last:.3f}); continue with --resume")
            return
        how = (f"itaudit shift --base {base} --adapter {out}" if res.method == "lora"
               else f"itaudit shift --base {base} --tuned {out}")
        console.print(
            f"[green]{res.run_id}[/]: {res.method} on {res.n_examples} examples, {res.steps} steps in "
            f"{res.seconds:.1f}s ({res.device}); loss {first:.3f} -> {last:.3f} "
            f"(last epoch mean {res.final_loss:.3f})\nsaved {out}; analyse with: {how}", highlight=False)
