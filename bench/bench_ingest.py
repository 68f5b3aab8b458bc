"""Ingest benchmark.

1. Throughput (rows/s) of `itaudit ingest` on the largest dataset in the data folder
   (ShareGPT V3, `--skip-invalid`), against a plain `duckdb read_json` and `polars.read_ndjson`
   load of the same file in the same run.
2. A generated 1M-row Alpaca-style jsonl (100k with quick=True): rows/s and peak RSS of the
   whole ingest, measured in a child process (VmHWM from /proc/self/status), against
   `polars.read_ndjson` and against the per-record path (ITAUDIT_INGEST_BULK=0).
3. For both, a floor: DuckDB only writing the rows itaudit stored (INSERT from Arrow, COMMIT,
   CHECKPOINT, with the ingest's settings), timed alone; its ratio bounds what any ingest that
   stores these rows can reach.
Both targets of issue 11 (ShareGPT vs duckdb read_json, 1M rows vs polars) print in one run.

`python -m bench --only ingest [--quick]`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = "ingest"

# Run in a child process so that its peak RSS is the ingest's alone.
_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import itaudit
mode, path, db = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "itaudit":
    with itaudit.open(db) as ws:
        r = ws.ingest(path, "bench", skip_invalid=True)
    rows, n_source = r.n_rows, r.n_source
elif mode == "duckdb":
    import duckdb
    con = duckdb.connect(db)
    con.execute("CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited', maximum_object_size=1073741824)", [path])
    rows = n_source = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    con.close()
elif mode == "polars":
    import polars as pl
    df = pl.read_ndjson(path, infer_schema_length=None)
    rows = n_source = df.height
elif mode == "write":
    # The floor: DuckDB writing the rows itaudit stored (read back from `path`, an itaudit
    # database, untimed) into a fresh database with the ingest's settings, in one transaction.
    import duckdb
    from itaudit.ingest.pipeline import INGEST_MEMORY_LIMIT
    from itaudit.store import Store
    src = duckdb.connect(path, read_only=True)
    rows_table = src.sql("SELECT * FROM instances ORDER BY idx").to_arrow_table()
    n_source = src.execute("SELECT n_source FROM datasets").fetchall()[0][0]
    src.close()
    rows = rows_table.num_rows
    st = Store(db)
    st.conn.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
    st.conn.execute("SET checkpoint_threshold = '1MB'")
    t0 = time.perf_counter()
    with st.transaction() as conn:
        conn.execute("INSERT INTO instances SELECT * FROM rows_table")
    st.conn.execute("CHECKPOINT")
    st.close()
secs = time.perf_counter() - t0
def vm_hwm() -> int:
    # VmHWM belongs to this process image; ru_maxrss survives exec and would report the peak of
    # the parent that spawned us (e.g. `python -m bench` after a model benchmark).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux /proc: KiB
peak = vm_hwm()
print(json.dumps({"rows": rows, "n_source": n_source, "seconds": secs, "peak_rss": peak}))
"""

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how their "
    "if will up other about out many then them these so some her would make like him into time has look "
    "two more write go see number no way could people my than first water been call who oil its now find "
    "long down day did get come made may part explain summarize list describe why poem story code"
).split()


def generate_alpaca_jsonl(path: Path, n: int, seed: int = 0) -> int:
    """Write `n` Alpaca-style records ({instruction, input, output}); returns the file size."""
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            rec = {
                "instruction": f"Task {i}: " + " ".join(rnd.choices(_WORDS, k=rnd.randint(6, 20))),
                "input": " ".join(rnd.choices(_WORDS, k=rnd.randint(0, 12))) if rnd.random() < 0.4 else "",
                "output": " ".join(rnd.choices(_WORDS, k=rnd.randint(10, 60))),
            }
            f.write(json.dumps(rec) + "\n")
    return path.stat().st_size


def _child(mode: str, path: Path, db: Path, **env_extra: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_extra)
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), str(db)], capture_output=True,
                       text=True, env=env, cwd=root)
    if p.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _row(metric, ours, base, unit, note):
    ratio = (ours / base) if (ours is not None and base) else None
    return {"bench": BENCH, "metric": metric, "itaudit": ours, "baseline": base, "ratio": ratio,
            "unit": unit, "note": note}


def run(data_dir: Path, quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="itaudit-bench-") as tmp:
        tmp = Path(tmp)
        # (1) the largest real dataset, against plain loaders of the same file
        files = sorted((p for p in Path(data_dir).rglob("*.jsonl") if p.is_file()), key=lambda p: p.stat().st_size)
        if files:
            big = files[-1]
            ours = _child("itaudit", big, tmp / "a.duckdb")
            duck = _child("duckdb", big, tmp / "b.duckdb")
            pol = _child("polars", big, tmp / "c.duckdb")
            floor = _child("write", tmp / "a.duckdb", tmp / "d.duckdb")
            mb = big.stat().st_size / 2**20
            note = (f"{big.name} ({mb:.0f} MiB, {ours['n_source']:,} records -> {ours['rows']:,} instances); "
                    f"load average {os.getloadavg()[0]:.1f}")
            # Records/s: the baselines load one row per record and do no normalization.
            ours_rps = ours["n_source"] / ours["seconds"]
            rows.append(_row("records/s vs duckdb read_json", ours_rps, duck["rows"] / duck["seconds"], "records/s", note))
            rows.append(_row("records/s vs polars.read_ndjson", ours_rps, pol["rows"] / pol["seconds"], "records/s", note))
            rows.append(_row("instances/s (itaudit only)", ours["rows"] / ours["seconds"], None, "rows/s", "one row per assistant turn"))
            rows.append(_row("floor: DuckDB writing the same rows, records/s vs duckdb read_json",
                             floor["n_source"] / floor["seconds"], duck["rows"] / duck["seconds"], "records/s",
                             "INSERT of itaudit's stored rows from Arrow + COMMIT + CHECKPOINT, nothing else: "
                             "the best ratio an ingest storing these rows can reach"))
            rows.append(_row("peak RSS vs duckdb read_json", ours["peak_rss"] / 2**20, duck["peak_rss"] / 2**20, "MiB", big.name))
            rows.append(_row("peak RSS vs polars.read_ndjson", ours["peak_rss"] / 2**20, pol["peak_rss"] / 2**20, "MiB", big.name))
        # (2) generated 1M-row jsonl: bounded memory
        n = 100_000 if quick else 1_000_000
        gen = tmp / f"alpaca_{n}.jsonl"
        size = generate_alpaca_jsonl(gen, n)
        ours = _child("itaudit", gen, tmp / "gen.duckdb")
        pol = _child("polars", gen, tmp / "gen_pl.duckdb")
        per_record = _child("itaudit", gen, tmp / "gen_pr.duckdb", ITAUDIT_INGEST_BULK="0")
        floor = _child("write", tmp / "gen.duckdb", tmp / "gen_floor.duckdb")
        note = f"generated {n:,}-row alpaca jsonl ({size / 2**20:.0f} MiB); load average {os.getloadavg()[0]:.1f}"
        rows.append(_row(f"rows/s, {n:,} rows vs polars.read_ndjson", ours["rows"] / ours["seconds"], pol["rows"] / pol["seconds"], "rows/s", note))
        rows.append(_row(f"floor: DuckDB writing the same {n:,} rows, rows/s vs polars.read_ndjson",
                         floor["rows"] / floor["seconds"], pol["rows"] / pol["seconds"], "rows/s",
                         "INSERT of itaudit's stored rows from Arrow + COMMIT + CHECKPOINT, nothing else"))
        rows.append(_row(f"rows/s, {n:,} rows: bulk path vs per-record path", ours["rows"] / ours["seconds"],
                         per_record["rows"] / per_record["seconds"], "rows/s", "ITAUDIT_INGEST_BULK=0 for the baseline"))
        rows.append(_row(f"peak RSS, {n:,} rows vs polars.read_ndjson", ours["peak_rss"] / 2**20, pol["peak_rss"] / 2**20, "MiB", note + "; whole process incl. imports"))
        db_size = (tmp / "gen.duckdb").stat().st_size / 2**20
        rows.append(_row(f"database size, {n:,} rows vs source file", db_size, size / 2**20, "MiB", "DuckDB file (raw JSON kept per row)"))
    for r in rows:
        print(f"{r['metric']}: itaudit={r['itaudit']} baseline={r['baseline']} ratio={r['ratio']}", flush=True)
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    data = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    run(data, quick)
