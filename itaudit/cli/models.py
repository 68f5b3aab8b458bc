"""`itaudit generate`: answer a prompt set with a model and store the generations."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import DbOption, console, db_path

ModelOption = typer.Option(..., "--model", "-m", help="alias (smollm2, gemma3-270m), HF model dir, or .gguf file")
AdapterOption = typer.Option(None, "--adapter", help="PEFT LoRA adapter directory loaded on top of the model")


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(
        model: str = ModelOption,
        adapter: Path = AdapterOption,
        prompts: Path = typer.Option(None, "--prompts", "-p", help="jsonl/json/csv/parquet prompt file (any ingest format; MT-Bench: first turn)"),
        dataset: str = typer.Option(None, "--dataset", "-d", help="use the instructions of an ingested dataset"),
        limit: int = typer.Option(None, "--limit", "-n", help="only the first N prompts"),
        all_turns: bool = typer.Option(False, "--all-turns", help="every turn of multi-turn prompts (with history)"),
        max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
        batch_size: int = typer.Option(4, "--batch-size"),
        sample: bool = typer.Option(False, "--sample", help="sample (T=0.7, top-p 0.9) instead of greedy"),
        plain: bool = typer.Option(False, "--plain-template", help="ignore the chat template, use '### Instruction/### Response'"),
        run_id: str = typer.Option(None, "--run-id", help="resume (or name) this run"),
        db: str = DbOption,
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    ) -> None:
        """Generate responses for a prompt set (greedy, batched) into the `generations` table."""
        from ..models import generate_run
        from ..store import Store

        with Store(db_path(db)) as store:
            run = generate_run(store, model, prompts=prompts, dataset=dataset, adapter=adapter, limit=limit,
                               all_turns=all_turns, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               sample=sample, plain=plain, run_id=run_id, show_progress=not quiet)
        console.print(f"[green]{run.run_id}[/]: {run.n_generations} generations by {run.model_id} "
                      f"(query: SELECT prompt_id, response FROM generations WHERE run_id = '{run.run_id}')")
