"""`itaudit shift`: token distribution shift between a base and a tuned model (URIAL / AlignTDS)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import DbOption, ExecutorOption, RayAddressOption, console, db_path, make_executor


def register(app: typer.Typer) -> None:
    @app.command()
    def shift(
        base: str = typer.Option(..., "--base", "-b", help="base model: alias (smollm2, gemma3-270m), HF dir or .gguf"),
        tuned: str = typer.Option(None, "--tuned", "-t", help="tuned model (alias, HF dir, .gguf)"),
        adapter: Path = typer.Option(None, "--adapter", help="tuned = base + this PEFT LoRA adapter"),
        responses: Path = typer.Option(None, "--responses", help="file of prompt+response records to analyse (base model only)"),
        generations: str = typer.Option(None, "--generations", help="analyse the responses of this `itaudit generate` run (base only)"),
        prompts: Path = typer.Option(None, "--prompts", "-p", help="prompt file (any ingest format; MT-Bench: first turn)"),
        dataset: str = typer.Option(None, "--dataset", "-d", help="prompts from an ingested dataset (without a tuned model: its responses)"),
        limit: int = typer.Option(None, "--limit", "-n", help="only the first N prompts"),
        max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
        batch_size: int = typer.Option(4, "--batch-size"),
        reference: str = typer.Option(None, "--reference", "-r", help="IT dataset for the shift_verbatim report"),
        template_from: str = typer.Option(None, "--template-from", help="responses mode: format prompts with this model's chat template"),
        plain: bool = typer.Option(False, "--plain-template", help="use the plain '### Instruction/### Response' template"),
        budget_mb: float = typer.Option(1024, "--budget-mb", help="memory (MiB) for one chunk of (positions x vocabulary) logits"),
        run_id: str = typer.Option(None, "--run-id", help="resume (or name) this run"),
        db: str = DbOption,
        quiet: bool = typer.Option(False, "--quiet", "-q"),
        executor: str = ExecutorOption,
        ray_address: str = RayAddressOption,
    ) -> None:
        """Rank/probability of each tuned-model token under the base model, KL, categories."""
        from ..shift.api import run_info, run_shift, shift_categories
        from ..store import Store
        from .data import print_frame

        ex = make_executor(executor, ray_address)  # where chunks of prompts are scored
        with Store(db_path(db)) as store:
            res = run_shift(store, base, tuned=tuned, adapter=adapter, responses=responses, generations=generations,
                            prompts=prompts, dataset=dataset, limit=limit, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, reference=reference, template_from=template_from, plain=plain,
                            budget_mb=budget_mb, run_id=run_id, show_progress=not quiet, executor=ex)
            r = run_info(store, res.run_id)
            cats = shift_categories(store, res.run_id)
        console.print(
            f"[green]{res.run_id}[/]: {res.n_tokens:,} tokens of {res.n_prompts} responses; "
            f"KL {'computed' if r['kl_available'] else '[yellow]not available[/] (vocabularies differ or no tuned model)'}"
            + ("; responses re-tokenized with the base tokenizer" if r["retokenized"] else "")
            + f"; scoring {res.summary.get('scored_tokens_per_s')} tokens/s")
        print_frame(cats, title=f"token categories ({res.run_id})")
        console.print("[dim]reports: itaudit query --report shift_categories | shift_top_tokens | "
                      "shift_position_kl | shift_verbatim[/]")
