"""`itaudit trace` (hallucinated spans -> IT-data sources) and `itaudit spans` (exact-span index)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import typer

from ..errors import ItauditError
from .common import DbOption, console, db_path, out

IndexDirOption = typer.Option(None, "--index-dir", help="index folder [default: $ITAUDIT_INDEX_DIR or indexes]")


def _index_dir(d: Path | None) -> Path:
    return Path(d) if d else Path(os.environ.get("ITAUDIT_INDEX_DIR", "indexes"))


def register(app: typer.Typer) -> None:
    spans = typer.Typer(help="Exact-span index: every instance containing a span verbatim.", no_args_is_help=True)
    app.add_typer(spans, name="spans")

    @spans.command("build")
    def spans_build(
        dataset: str = typer.Argument(..., help="ingested dataset"),
        index_dir: Path = IndexDirOption,
        force: bool = typer.Option(False, "--force", help="rebuild even when the index is fresh"),
        db: str = DbOption,
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """Build (or refresh when stale) the suffix-array span index of a dataset."""
        from ..spans import build_span_index, ensure_span_index
        from ..store import Store

        with Store(db_path(db)) as store:
            if force:
                ix, built = build_span_index(store, dataset, _index_dir(index_dir), show_progress=not quiet), True
            else:
                ix, built = ensure_span_index(store, dataset, _index_dir(index_dir), show_progress=not quiet)
        m = ix.meta
        what = f"built in {m['seconds_total']:.1f}s" if built else "up to date"
        console.print(f"[green]{dataset}[/]: span index {what}: {m['n_tokens']:,} words, {m['n_documents']:,} "
                      f"fields of {m['n_instances']:,} instances, vocabulary {m['vocab_size']:,}, "
                      f"{ix.size_bytes() / 1e6:.1f} MB in {_index_dir(index_dir) / dataset}/spans.*")

    @spans.command("find")
    def spans_find(
        dataset: str = typer.Argument(...),
        text: str = typer.Argument(..., help="span to look up (word-tokenized, case-insensitive)"),
        limit: int = typer.Option(20, "--limit", "-n", help="occurrences shown"),
        index_dir: Path = IndexDirOption,
        db: str = DbOption,
    ) -> None:
        """Every instance containing TEXT verbatim (as a word sequence)."""
        import time

        from ..spans import load_span_index
        from ..store import Store
        from .data import print_frame

        with Store(db_path(db)) as store:
            ix = load_span_index(store, dataset, _index_dir(index_dir))
            t0 = time.perf_counter()
            n = ix.count(text)
            occ = ix.find(text, limit=limit)
            ms = (time.perf_counter() - t0) * 1e3
            df = _with_text(store, dataset, pl.DataFrame(
                {"idx": [o.idx for o in occ], "field": [o.field for o in occ], "word_pos": [o.word_pos for o in occ]},
                schema={"idx": pl.Int64, "field": pl.Utf8, "word_pos": pl.Int64}))
        console.print(f"{n:,} occurrences of {text!r} in {dataset} ({ms:.2f} ms)")
        if df.height:
            print_frame(df, max_rows=limit)

    @spans.command("match")
    def spans_match(
        dataset: str = typer.Argument(...),
        text: str = typer.Argument(..., help="a response (or any text) to match against the dataset"),
        min_len: int = typer.Option(3, "--min-len", help="shortest maximal span shown (words)"),
        index_dir: Path = IndexDirOption,
        db: str = DbOption,
    ) -> None:
        """Maximal spans of TEXT found verbatim in the dataset (OLMoTrace-style), with their instances."""
        from ..spans import load_span_index, words_with_offsets
        from ..store import Store
        from .data import print_frame

        with Store(db_path(db)) as store:
            ix = load_span_index(store, dataset, _index_dir(index_dir))
        ws = words_with_offsets(text)
        ms = ix.maximal_matches([w.text for w in ws], min_len=min_len, max_occurrences=50)
        df = pl.DataFrame({
            "span": [text[ws[m.start].start:ws[m.end - 1].end] for m in ms],
            "words": [m.length for m in ms],
            "occurrences": [m.count for m in ms],
            "instances": [", ".join(map(str, m.instances[:10])) + (" …" if len(m.instances) > 10 else "") for m in ms],
        }, schema={"span": pl.Utf8, "words": pl.Int64, "occurrences": pl.Int64, "instances": pl.Utf8})
        print_frame(df, title=f"maximal matches (>= {min_len} words)")

    @app.command()
    def trace(
        dataset: str = typer.Option(..., "--dataset", "-d", help="the IT dataset to trace into"),
        responses: Path = typer.Option(None, "--responses", "-r", help="file of prompts with responses to trace (any ingest format)"),
        tuned: str = typer.Option(None, "--tuned", "-m", help="tuned model (alias, HF dir, .gguf) that answers --prompts"),
        prompts: Path = typer.Option(None, "--prompts", "-p", help="prompt file for --tuned; a response field is the reference answer"),
        generations: str = typer.Option(None, "--generations", help="trace the responses of a stored `itaudit generate` run"),
        base: str = typer.Option(None, "--base", "-b", help="base model for shift categories [default with --adapter: --tuned without it]"),
        adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter on top of --tuned"),
        shift_run: str = typer.Option(None, "--shift-run", help="reuse the token categories of a stored `itaudit shift` run"),
        limit: int = typer.Option(None, "--limit", "-n", help="only the first N responses"),
        max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
        top_k: int = typer.Option(5, "--top-k", help="sources kept per span"),
        neighbours: bool = typer.Option(True, "--neighbours/--no-neighbours", help="conceptual similarity via FAISS (embeds the dataset once)"),
        index_dir: Path = IndexDirOption,
        run_id: str = typer.Option(None, "--run-id"),
        db: str = DbOption,
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """Trace likely hallucinated spans of responses back to the IT instances they were borrowed from."""
        from ..store import Store
        from ..trace import TraceConfig, TraceItem, Tracer, shift_rows
        from ..trace.models import add_categories, generate_items

        sources = [x is not None for x in (responses, tuned, generations, shift_run)]
        if sum(sources) == 0 or (tuned is None and prompts is not None):
            raise ItauditError("give --responses FILE, --tuned M --prompts FILE, --generations RUN or --shift-run RUN")
        if tuned is not None and prompts is None:
            raise ItauditError("--tuned needs --prompts FILE")
        if sum(x is not None for x in (responses, tuned, generations)) > 1:
            raise ItauditError("give only one of --responses, --tuned, --generations")
        idir = _index_dir(index_dir)
        mode, base_id, tuned_id, src = "lexical", None, None, None
        with Store(db_path(db)) as store:
            store.require_dataset(dataset)
            items: list[TraceItem]
            if shift_run and responses is None and tuned is None and generations is None:
                rows = shift_rows(store, shift_run)
                items = [TraceItem(pid, ins, resp, None, spans) for pid, (ins, resp, spans) in rows.items()]
                mode = "shift_rows"
                base_id = store.query("SELECT base_model FROM shift_runs WHERE run_id = ?", [shift_run])["base_model"].to_list()
                base_id = base_id[0] if base_id else None
            elif responses is not None:
                from ..models import read_prompts

                ps = read_prompts(responses, limit=limit)
                missing = [p.prompt_id for p in ps if not p.response]
                if missing:
                    raise ItauditError(f"{responses}: {len(missing)} prompts have no response to trace (e.g. {missing[0]})")
                items = [TraceItem(p.prompt_id, p.instruction if not p.input else f"{p.instruction}\n\n{p.input}",
                                   p.response) for p in ps]
                src = str(responses)
            elif generations is not None:
                g = store.query("SELECT prompt_id, instruction, response, model_id FROM generations WHERE run_id = ? "
                                "ORDER BY created_at, prompt_id", [generations])
                if g.height == 0:
                    raise ItauditError(f"no generations run {generations!r}")
                items = [TraceItem(p, i, r) for p, i, r, _ in g.iter_rows()]
                tuned_id = g["model_id"][0]
                src = f"generations:{generations}"
            else:
                from ..models import load_model, read_prompts

                ps = read_prompts(prompts, limit=limit)
                lm = load_model(tuned, adapter=str(adapter) if adapter else None, show_progress=not quiet)
                tuned_id = lm.model_id
                items = generate_items(lm, ps, max_new_tokens=max_new_tokens, show_progress=not quiet)
                src = str(prompts)
                if base is None and adapter is not None:
                    base = tuned
                del lm
            if limit is not None:
                items = items[:limit]
            if shift_run and mode != "shift_rows":
                rows = shift_rows(store, shift_run)
                for it in items:
                    if it.prompt_id in rows and rows[it.prompt_id][1] == it.response:
                        it.token_spans = rows[it.prompt_id][2]
                mode = "shift_rows"
            elif base is not None:
                from ..models import load_model

                blm = load_model(base, show_progress=not quiet)
                base_id = blm.model_id
                add_categories(items, blm, show_progress=not quiet)
                mode = "shift"
                del blm
            if mode == "lexical" and not quiet:
                console.print("[yellow]no --base / --shift-run:[/] lexical candidates (every content-word run); "
                              "give --base M for shift-based candidates")
            tracer = Tracer(store, dataset, index_dir=idir, neighbours=neighbours,
                            config=TraceConfig(top_k=top_k), show_progress=not quiet)
            rid, traces = tracer.run(items, mode=mode, tuned_model=tuned_id, base_model=base_id,
                                     adapter=str(adapter) if adapter else None, source_file=src, run_id=run_id)
            s = store.query("SELECT summary FROM trace_runs WHERE run_id = ?", [rid])["summary"][0]
        import json

        s = json.loads(s)
        share = f"{s['traced_share']:.1%}" if s["traced_share"] is not None else "n/a"
        console.print(f"[green]{rid}[/] ({mode}): {s['responses']} responses, {s['candidate_spans']} candidate spans, "
                      f"{s['verbatim_spans']} verbatim in {dataset}, {s['traced_spans']} traced to a likely source ({share})")
        for t in traces[:5]:
            for sp in t.spans:
                if sp.traced:
                    top = sp.sources[0]
                    out.print(f"  [{t.item.prompt_id}] {sp.candidate.text!r} <- {dataset}#{top.idx} "
                              f"(score {top.score:.2f}; {', '.join(top.evidence.get('phrases', []))})", highlight=False)
        console.print("reports: itaudit query --report trace_response | trace_top_sources | trace_traced_share")


def _with_text(store, dataset: str, df: pl.DataFrame) -> pl.DataFrame:
    if df.height == 0:
        return df
    idx = sorted(set(df["idx"].to_list()))
    rows = store.query(
        f"SELECT idx, left(instruction, 80) AS instruction, left(response, 100) AS response FROM instances "
        f"WHERE dataset = ? AND idx IN ({', '.join(map(str, idx))})", [dataset])
    return df.join(rows, on="idx", how="left")
