"""`itaudit index` (build a FAISS index over a field) and `itaudit neighbors` (query it with text)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..errors import ItauditError
from ..store import Store
from .common import DbOption, ExecutorOption, RayAddressOption, console, db_path, make_executor, out

IndexDirOption = typer.Option(None, "--index-dir", help="index folder [default: $ITAUDIT_INDEX_DIR or indexes]")


class Field(str, Enum):
    instruction = "instruction"
    prompt = "prompt"
    response = "response"
    all = "all"


class Kind(str, Enum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


def index_dir_of(d: str | None) -> Path:
    from ..paths import index_dir

    return index_dir(d)


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """`key=value` strings -> dict with int/float values where they parse."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}")
        v: Any = val.strip()
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        if v in ("true", "false"):
            v = v == "true"
        params[key.strip()] = v
    return params


def register(app: typer.Typer) -> None:
    @app.command("index")
    def index_cmd(
        name: str = typer.Argument(..., help="dataset name"),
        field: Field = typer.Option(Field.instruction, "--field", help="what to embed: instruction, prompt (instruction+input), response, all"),
        kind: Kind = typer.Option(Kind.flat, "--kind", help="flat (exact) | hnsw | ivfpq"),
        param: list[str] = typer.Option(None, "--param", "-p", help="FAISS parameter override, e.g. -p M=32 -p efSearch=128 / -p nlist=256 -p m=48 -p nprobe=16"),
        model: str = typer.Option(None, "--model", help="sentence-transformers model dir/name [default: all-MiniLM-L6-v2]"),
        max_length: int = typer.Option(None, "--max-length", help="tokens per text [default: the model's]"),
        eval_recall: bool = typer.Option(False, "--eval-recall", help="report recall@10 and query latency against exact search"),
        force: bool = typer.Option(False, "--force", help="rebuild even if an up-to-date index exists"),
        index_dir: str = IndexDirOption,
        db: str = DbOption,
        executor: str = ExecutorOption,
        ray_address: str = RayAddressOption,
    ) -> None:
        """Embed a field of every row (cached; only new rows are embedded) and build a FAISS index."""
        from ..embed import Embedder, embed_dataset
        from ..index import build_index, load_index
        from ..index.vector import evaluate

        idir = index_dir_of(index_dir)
        params = parse_params(param)
        ex = make_executor(executor, ray_address)  # where the embedding chunks are encoded
        with Store(db_path(db)) as store:
            store.require_dataset(name)
            if not force and not params and not eval_recall:
                try:
                    old = load_index(idir, name, field.value, kind.value)
                except ItauditError:
                    old = None
                if old is not None:
                    if old.is_stale(store):
                        console.print(f"[yellow]{old.path}[/] is stale (dataset changed): rebuilding")
                    elif model is None and max_length is None:
                        console.print(f"[green]{old.path}[/] is up to date ({old.ntotal:,} rows); --force rebuilds")
                        return
            embedder = Embedder(model, max_length=max_length)
            t0 = time.perf_counter()
            vecs = embed_dataset(store, name, field.value, embedder, show_progress=True, executor=ex)
            t_embed = time.perf_counter() - t0
            vi = build_index(store, name, field.value, kind.value, idir, embedder=embedder, vectors=vecs,
                             show_progress=True, **params)
        for note in vi.meta["notes"]:
            console.print(f"[yellow]note:[/] {note}")
        console.print(
            f"[green]{name}[/]: {vi.kind} index over {field.value} ({vi.ntotal:,} x {vi.dim}, {embedder.cache_key}) "
            f"-> {vi.path}  embed {t_embed:.1f}s, build {vi.meta['build_seconds']:.1f}s, "
            f"{vi.meta['faiss_bytes'] / 2**20:.1f} MiB, params {vi.meta['params'] or '{}'}")
        if eval_recall:
            r = evaluate(vi, vecs, k=10)
            console.print(f"recall@10 vs exact: [bold]{r['recall']:.4f}[/] on {r['n_queries']} queries; "
                          f"latency p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")

    @app.command("neighbors")
    def neighbors_cmd(
        name: str = typer.Argument(..., help="dataset name"),
        text: str = typer.Argument(..., help="query text"),
        k: int = typer.Option(10, "-k", help="how many neighbours"),
        field: Field = typer.Option(Field.instruction, "--field", help="which index to query"),
        kind: Kind = typer.Option(None, "--kind", help="which kind [default: flat if built, else hnsw, else ivfpq]"),
        as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
        index_dir: str = IndexDirOption,
        db: str = DbOption,
    ) -> None:
        """Nearest instances to TEXT (cosine), with instance ids; builds a flat index if there is none."""
        from ..index import neighbors

        with Store(db_path(db)) as store:
            df = neighbors(store, name, text, k, field=field.value, kind=kind.value if kind else None,
                           index_dir=index_dir_of(index_dir)).drop("query")
        if as_json:
            import sys

            sys.stdout.write(df.write_ndjson())
            return
        t = Table(title=f"{name}: nearest by {field.value}")
        for c in ("rank", "score", "idx", "instance_id", "instruction", "response"):
            t.add_column(c, overflow="fold")
        for row in df.iter_rows(named=True):
            t.add_row(*[_short(row[c], 70) for c in ("rank", "score", "idx", "instance_id", "instruction", "response")])
        out.print(t)


def _short(v: object, width: int) -> str:
    s = f"{v:.4f}" if isinstance(v, float) else str(v)
    s = s.replace("\n", "⏎ ")
    return s if len(s) <= width else s[: width - 1] + "…"
