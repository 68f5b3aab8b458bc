"""`itaudit shift`: token distribution shift between a base and a tuned model (URIAL / AlignTDS)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ItauditError
from .common import DbOption, console, db_path


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
    ) -> None:
        """Rank/probability of each tuned-model token under the base model, KL, categories."""
        from ..models import dataset_prompts, load_model, read_prompts
        from ..models.loading import LoadedModel, load_tokenizer, resolve
        from ..shift import analyze
        from ..store import Store
        from .data import print_frame

        n_tuned = sum(x is not None for x in (tuned, adapter, responses, generations))
        if n_tuned == 0 and dataset is None:
            raise ItauditError("give --tuned M, --adapter DIR, --responses FILE, --generations RUN or --dataset NAME")
        if n_tuned > 1:
            raise ItauditError("give only one of --tuned, --adapter, --responses, --generations")
        if max_new_tokens < 1 or batch_size < 1:
            raise ItauditError("--max-new-tokens and --batch-size must be >= 1")
        with Store(db_path(db)) as store:
            contexts = None
            given: list[str] | None = None
            if responses is not None:
                items = read_prompts(responses, limit=limit)
                missing = [it.prompt_id for it in items if not it.response]
                if missing:
                    raise ItauditError(f"{responses}: {len(missing)} records have no response (e.g. {missing[0]})")
                given = [it.response for it in items]
            elif generations is not None:
                from ..models import PromptItem

                df = store.query("SELECT prompt_id, instruction, prompt, response FROM generations WHERE run_id = ?"
                                 " ORDER BY prompt_id" + (f" LIMIT {int(limit)}" if limit else ""), [generations])
                if df.height == 0:
                    raise ItauditError(f"no generations with run id {generations!r}")
                items = [PromptItem(r["prompt_id"], r["instruction"]) for r in df.iter_rows(named=True)]
                contexts, given = df["prompt"].to_list(), df["response"].to_list()
            elif prompts is not None and dataset is not None:
                raise ItauditError("give either --prompts FILE or --dataset NAME")
            elif prompts is not None:
                items = read_prompts(prompts, limit=limit)
            elif dataset is not None:
                items = dataset_prompts(store, dataset, limit=limit)
                if tuned is None and adapter is None:
                    given = [it.response or "" for it in items]
            else:
                raise ItauditError("give --prompts FILE or --dataset NAME")
            if reference is not None:
                store.require_dataset(reference)

            if adapter is not None:
                tuned_lm = load_model(base, adapter=str(adapter))
                base_lm = LoadedModel(tuned_lm.model, tuned_lm.tokenizer, resolve(base)[1], tuned_lm.source)
            else:
                base_lm = load_model(base)
                tuned_lm = load_model(tuned) if tuned is not None else None
            context_lm = None
            if template_from is not None:
                context_lm = LoadedModel(None, load_tokenizer(resolve(template_from)[0]), template_from)
            for lm in (base_lm, tuned_lm, context_lm):
                if lm is not None and plain:
                    lm.use_chat_template = False
            res = analyze(store, base_lm, items, tuned=tuned_lm, adapter_mode=adapter is not None,
                          responses=given, context_lm=context_lm, contexts=contexts,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, reference_dataset=reference,
                          budget_mb=budget_mb, run_id=run_id, show_progress=not quiet)
            runs = store.query("SELECT retokenized, kl_available FROM shift_runs WHERE run_id = ?", [res.run_id])
            cats = store.query(
                "SELECT category, count(*) AS tokens, round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct,"
                " avg(kl) AS mean_kl FROM shift_tokens WHERE run_id = ? GROUP BY category"
                " ORDER BY list_position(['unshifted', 'marginal', 'shifted'], category)", [res.run_id])
        r = runs.row(0, named=True)
        console.print(
            f"[green]{res.run_id}[/]: {res.n_tokens:,} tokens of {res.n_prompts} responses; "
            f"KL {'computed' if r['kl_available'] else '[yellow]not available[/] (vocabularies differ or no tuned model)'}"
            + ("; responses re-tokenized with the base tokenizer" if r["retokenized"] else "")
            + f"; scoring {res.summary.get('scored_tokens_per_s')} tokens/s")
        print_frame(cats, title=f"token categories ({res.run_id})")
        console.print("[dim]reports: itaudit query --report shift_categories | shift_top_tokens | "
                      "shift_position_kl | shift_verbatim[/]")
