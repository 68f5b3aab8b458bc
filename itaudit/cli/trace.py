"""`itaudit trace` (hallucinated spans -> IT-data sources) and `itaudit spans` (exact-span index)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import typer

from ..errors import ItauditError
from .common import DbOption, console, db_path, out

IndexDirOption = typer.Option(None, "--index-dir", help="index folder [default: $ITAUDIT_INDEX_DIR or indexes]")


def _index_dir(d: Path | None) -> Path:
    from ..paths import index_dir

    return index_dir(d)


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
        base: str = typer.Option(None, "--base", "-b", help="base model for shift categories and surprisal [default with --adapter: --tuned without it]"),
        adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter on top of --tuned"),
        shift_run: str = typer.Option(None, "--shift-run", help="reuse the token categories of a stored `itaudit shift` run"),
        control: str = typer.Option(None, "--control", help="negative control answering the same prompts: 'base', a model, or a responses file; prints the excess borrowing"),
        calibrate: bool = typer.Option(False, "--calibrate", help="raise the likely-source threshold (never below --threshold) until at most --target-share of the control's spans are likely"),
        target_share: float = typer.Option(0.05, "--target-share", help="share of control spans allowed to be likely with --calibrate"),
        threshold: float = typer.Option(0.5, "--threshold", help="likely source: span evidence (prior x specificity) >= this"),
        near_copy: bool = typer.Option(True, "--near-copy/--no-near-copy", help="near-copy evidence (rare words within a small edit distance)"),
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
        from ..trace.api import TraceRequest, trace_dataset

        if not 0 <= target_share < 1:
            raise ItauditError(f"--target-share must be in [0, 1), got {target_share}")
        req = TraceRequest(dataset, responses, tuned, prompts, generations, base, adapter, shift_run, limit,
                           max_new_tokens, top_k, neighbours, _index_dir(index_dir), run_id, control, calibrate,
                           target_share, threshold, near_copy)
        with Store(db_path(db)) as store:
            res = trace_dataset(store, req, show_progress=not quiet,
                                log=None if quiet else lambda m: console.print(f"[yellow]{m}[/]"))
        s = res.summary
        share = f"{s['traced_share']:.1%}" if s["traced_share"] is not None else "n/a"
        console.print(f"[green]{res.run_id}[/] ({res.mode}): {s['responses']} responses, {s['candidate_spans']} candidate spans, "
                      f"{s['verbatim_spans']} verbatim in {dataset}, {s['traced_spans']} traced to a likely source ({share}; "
                      f"threshold {res.threshold:.3g})")
        for note in res.notes:
            console.print(f"  note: {note}")
        if res.excess is not None:
            console.print("  " + excess_line(res.excess, res.compare_mode or res.mode, res.threshold))
        for t in res.traces[:5]:
            for sp in t.spans:
                if sp.traced:
                    top = sp.sources[0]
                    kind = "near copy" if top.near_copy else ", ".join(top.evidence.get("phrases", []))
                    out.print(f"  [{t.item.prompt_id}] {sp.candidate.text!r} <- {dataset}#{top.idx} "
                              f"(evidence {sp.evidence:.2f}; {kind})", highlight=False)
        console.print("reports: itaudit query --report trace_response | trace_top_sources | trace_traced_share"
                      + (" | trace_excess" if res.excess is not None else ""))


def excess_line(ex, mode: str, threshold: float) -> str:
    """One line: tuned share - control share = excess [interval]."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.1%}" if x < 0 else f"{x:.1%}"
    ci = "n/a" if ex.ci_low is None else f"{ex.ci_low:+.1%} .. {ex.ci_high:+.1%}"
    exc = "n/a" if ex.excess is None else f"{ex.excess:+.1%}"
    return (f"excess borrowing: tuned {pct(ex.tuned_share)} ({ex.tuned_traced}/{ex.tuned_spans}) - control "
            f"{pct(ex.control_share)} ({ex.control_traced}/{ex.control_spans}) = [bold]{exc}[/] "
            f"({ex.confidence:.0%} CI {ci}; {ex.responses} responses{', paired' if ex.paired else ''}; "
            f"{mode} candidates; threshold {threshold:.3g})")


def _with_text(store, dataset: str, df: pl.DataFrame) -> pl.DataFrame:
    if df.height == 0:
        return df
    idx = sorted(set(df["idx"].to_list()))
    rows = store.query(
        f"SELECT idx, left(instruction, 80) AS instruction, left(response, 100) AS response FROM instances "
        f"WHERE dataset = ? AND idx IN ({', '.join(map(str, idx))})", [dataset])
    return df.join(rows, on="idx", how="left")
