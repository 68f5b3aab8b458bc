"""`itaudit generate`: answer a prompt set with a model and store the generations."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ItauditError
from .common import DbOption, console, db_path

ModelOption = typer.Option(..., "--model", "-m", help="alias (smollm2, gemma3-270m), HF model dir, or .gguf file")
AdapterOption = typer.Option(None, "--adapter", help="PEFT LoRA adapter directory loaded on top of the model")


def load_items(prompts: Path | None, dataset: str | None, store, limit: int | None, all_turns: bool = False):
    from ..models import dataset_prompts, read_prompts

    if (prompts is None) == (dataset is None):
        raise ItauditError("give either --prompts FILE or --dataset NAME")
    if prompts is not None:
        return read_prompts(prompts, first_turn_only=not all_turns, limit=limit)
    return dataset_prompts(store, dataset, limit=limit, first_turn_only=not all_turns)


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
        from ..models import load_model, run_generation
        from ..store import Store

        if max_new_tokens < 1 or batch_size < 1:
            raise ItauditError("--max-new-tokens and --batch-size must be >= 1")
        with Store(db_path(db)) as store:
            items = load_items(prompts, dataset, store, limit, all_turns)
            lm = load_model(model, adapter=str(adapter) if adapter else None)
            lm.use_chat_template = not plain
            rid = run_generation(store, lm, items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 greedy=not sample, show_progress=not quiet, run_id=run_id)
            n = store.query("SELECT count(*) AS n FROM generations WHERE run_id = ?", [rid])["n"][0]
        console.print(f"[green]{rid}[/]: {n} generations by {lm.model_id} "
                      f"(query: SELECT prompt_id, response FROM generations WHERE run_id = '{rid}')")
