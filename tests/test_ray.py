"""RayExecutor on a real local Ray cluster (2 CPUs): identical results to local, actor pools, a killed
worker retried, a failed stage resumed; results stored in DuckDB by the runner exactly once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")

from itaudit.audit import minhash as mh  # noqa: E402
from itaudit.audit import near_duplicates as nd  # noqa: E402
from itaudit.audit.style import Style  # noqa: E402
from itaudit.steps.base import Resources, Step  # noqa: E402
from itaudit.steps.executor_ray import RayExecutor  # noqa: E402
from itaudit.steps.runner import Runner  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402

CHUNK = 300


@pytest.fixture(scope="module")
def ray_executor():
    import ray

    ex = RayExecutor(num_cpus=2)
    ex.start()
    yield ex
    ray.shutdown()


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    rows = json.loads((SHARED_DATA / "alpaca" / "alpaca_5000.json").read_text())[:1500]
    rows += [dict(rows[i], output=rows[i]["output"] + " Indeed.") for i in range(0, 1500, 25)]
    return pl.DataFrame({"idx": np.arange(len(rows)), "instruction": [r["instruction"] for r in rows],
                         "input": [r["input"] for r in rows], "response": [r["output"] for r in rows]})


def chunks(frame: pl.DataFrame) -> list[tuple[int, pl.DataFrame]]:
    return [(c, frame.slice(c * CHUNK, CHUNK)) for c in range(-(-frame.height // CHUNK))]


def test_minhash_signatures_identical_to_local(ray_executor, frame) -> None:
    step = mh.MinHashSignatures()
    parts = chunks(frame)
    local = {c: step.compute_chunk(rows, rank=c, world_size=len(parts)) for c, rows in parts}
    got = dict(ray_executor.map(step, iter(parts), len(parts)))
    assert sorted(got) == sorted(local)
    for c in local:
        assert got[c].equals(local[c])
    sig_frame = pl.concat([got[c] for c in sorted(got)])
    pairs, _ = mh.minhash_pairs(frame, sig_frame=sig_frame)
    want, _ = nd.minhash_pairs(nd.instance_shingles(frame))
    assert pairs == want and len(want) >= 55  # most of the 60 planted near copies


class ModelStep(Step):
    """Holds a 'model' (a lookup table built once per worker); reports the worker pid and loads."""

    name = "test_model_step"
    resources = Resources(cpus=1, model="word-lengths")
    loads = 0

    def __init__(self, params=None):
        super().__init__(params)
        self._model = None

    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> pl.DataFrame:
        if self._model is None:
            type(self).loads += 1
            self._model = {"len": len}
        n = rows["instruction"].map_elements(self._model["len"], return_dtype=pl.Int64)
        return pl.DataFrame({"idx": rows["idx"], "n": n, "pid": [os.getpid()] * rows.height,
                             "loads": [type(self).loads] * rows.height})


def test_model_steps_run_on_a_pool_of_long_lived_actors(ray_executor, frame) -> None:
    parts = chunks(frame)
    got = dict(ray_executor.map(ModelStep(), iter(parts), len(parts)))
    out = pl.concat([got[c] for c in sorted(got)])
    assert out["idx"].to_list() == frame["idx"].to_list()
    assert out["n"].to_list() == [len(s) for s in frame["instruction"].to_list()]
    pids = set(out["pid"].to_list())
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # two CPUs: at most two actors
    assert out["loads"].max() == 1  # each actor loaded its model once for all its chunks


@pytest.fixture
def alp_store(store, tmp_path: Path, frame: pl.DataFrame):
    from itaudit.ingest import ingest

    rows = [{"instruction": i, "input": x, "output": r} for i, x, r in
            zip(frame["instruction"], frame["input"], frame["response"], strict=True)]
    src = tmp_path / "a.json"
    src.write_text(json.dumps(rows))
    ingest(store, src, "alp", "alpaca", show_progress=False)
    return store


class SlowStyle(Style):
    """The style step; chunk 2 writes its worker pid and waits until the test killed that worker."""

    marker = ""

    def compute_chunk(self, rows: pl.DataFrame, rank: int = 0, world_size: int = 1) -> pl.DataFrame:
        m = Path(self.marker)
        if rank == 2 and not (m.parent / "killed").exists():
            m.write_text(str(os.getpid()))
            time.sleep(60)
        return super().compute_chunk(rows, rank, world_size)


def _stored(store) -> pl.DataFrame:
    return store.query("SELECT * EXCLUDE (dataset) FROM style_features WHERE dataset = 'alp' ORDER BY idx")


def test_runner_on_ray_stores_what_local_stores(ray_executor, alp_store) -> None:
    from itaudit.steps.executor import LocalExecutor

    local = Runner(alp_store, "alp", executor=LocalExecutor(), chunk_rows=CHUNK, show_progress=False).run([Style()])
    want = _stored(alp_store)
    got = Runner(alp_store, "alp", executor=ray_executor, chunk_rows=CHUNK, show_progress=False).run([Style()])
    assert _stored(alp_store).equals(want) and want.height == alp_store.require_dataset("alp")["n_rows"]
    assert np.array_equal(got[0].result.flag, local[0].result.flag)
    assert got[0].result.summary["top_openings"] == local[0].result.summary["top_openings"]


def test_killed_worker_mid_stage_no_lost_or_duplicate_rows(ray_executor, alp_store, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not marker.exists():
            time.sleep(0.05)
        time.sleep(0.2)
        pid = int(marker.read_text())
        (tmp_path / "killed").write_text("1")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    step = SlowStyle()
    step.marker = str(marker)
    Runner(alp_store, "alp", executor=ray_executor, chunk_rows=CHUNK, show_progress=False).run([step])
    t.join(5)
    assert killed, "the worker running chunk 2 was never started"
    with pytest.raises(ProcessLookupError):  # that worker is gone: chunk 2 came from a retry
        os.kill(killed[0], 0)
    n = alp_store.require_dataset("alp")["n_rows"]
    stored = _stored(alp_store)
    assert stored.height == n and stored["idx"].n_unique() == n  # every row exactly once
    marks = alp_store.query("SELECT chunk_id FROM step_chunks WHERE dataset = 'alp' AND step = 'style'")
    assert sorted(marks["chunk_id"].to_list()) == list(range(-(-n // CHUNK)))


class FailsAfter:
    """An executor whose cluster is lost after `k` chunks (the stage fails as a whole)."""

    def __init__(self, inner, k: int):
        self.inner, self.k = inner, k

    def map(self, step, chunks, world_size):
        for i, out in enumerate(self.inner.map(step, chunks, world_size)):
            if i == self.k:
                raise RuntimeError("cluster lost")
            yield out


def test_a_failed_stage_resumes_from_completed_chunks(ray_executor, alp_store) -> None:
    with pytest.raises(RuntimeError, match="cluster lost"):
        Runner(alp_store, "alp", executor=FailsAfter(ray_executor, 2), chunk_rows=CHUNK,
               show_progress=False).run([Style()])
    assert _stored(alp_store).height == 2 * CHUNK  # the two committed chunks
    seen: list[int] = []

    class Counting:
        def map(self, step, chunks, world_size):
            chunks = list(chunks)
            seen.extend(c for c, _ in chunks)
            yield from ray_executor.map(step, iter(chunks), world_size)

    Runner(alp_store, "alp", executor=Counting(), chunk_rows=CHUNK, show_progress=False).run([Style()])
    n = alp_store.require_dataset("alp")["n_rows"]
    assert len(seen) == -(-n // CHUNK) - 2  # only the missing chunks ran again
    stored = _stored(alp_store)
    assert stored.height == n and stored["idx"].n_unique() == n


def test_cli_audit_executor_ray(ray_executor, alp_store, db_path: Path) -> None:
    from itaudit.cli import main

    alp_store.close()
    main(["audit", "alp", "-c", "style", "-q", "--executor", "ray", "--db", str(db_path)])
    from itaudit.store import Store

    with Store(db_path) as s:
        n = s.require_dataset("alp")["n_rows"]
        assert s.query("SELECT count(DISTINCT idx) AS n FROM style_features WHERE dataset = 'alp'")["n"][0] == n
        assert s.query("SELECT count(*) AS n FROM check_runs WHERE check_name = 'style'")["n"][0] == 1
    with pytest.raises(SystemExit) as e:
        main(["audit", "alp", "-c", "style", "-q", "--executor", "spark", "--db", str(db_path)])
    assert e.value.code == 2


def test_model_holding_shift_step_on_an_actor_pool_equals_local(ray_executor, tmp_path_factory) -> None:
    """ShiftStep built from model specs: each actor loads the (tiny, config-built) models once."""
    from itaudit.models import PromptItem
    from itaudit.shift.run import ShiftParams, ShiftStep, items_frame
    from tests.tinymodels import perturbed_copy, tiny_causal_lm

    d = tmp_path_factory.mktemp("shift_ray")
    base = tiny_causal_lm(d / "base")
    tuned = perturbed_copy(base, d / "tuned", scale=0.8, seed=3)
    step = ShiftStep(ShiftParams(run_id="x", max_new_tokens=5, base=str(base), tuned=str(tuned)))
    prompts = ["Name three colours", "What is the capital of France?", "Write a short poem about the sea",
               "Give me a list of fruits", "Translate hello into Spanish"]
    rows = items_frame([PromptItem(f"p{i}", p) for i, p in enumerate(prompts)])
    chunks = [(0, rows.slice(0, 2)), (1, rows.slice(2, 2)), (2, rows.slice(4))]
    got = dict(ray_executor.map(step, iter(chunks), len(chunks)))
    assert sorted(got) == [0, 1, 2]
    floats = ["kl", "base_prob", "tuned_prob"]
    for c, part in chunks:
        want = {f.table: f.frame for f in step.compute_chunk(part, c, len(chunks)).frames}
        have = {f.table: f.frame for f in got[c].frames}
        assert set(have) == set(want) == {"shift_tokens", "shift_responses"}
        for name, w in want.items():
            h = have[name]
            for col in (x for x in floats if x in w.columns):
                np.testing.assert_allclose(h[col].to_numpy(), w[col].to_numpy(), rtol=1e-4, atol=1e-7)
            assert h.drop(floats, strict=False).equals(w.drop(floats, strict=False))


def _ingest_rows(db: Path, rows: list[dict], tmp: Path) -> None:
    from itaudit.ingest import ingest
    from itaudit.store import Store

    src = tmp / f"{db.stem}.json"
    src.write_text(json.dumps(rows))
    with Store(db) as s:
        ingest(s, src, "alp", "alpaca", show_progress=False)


def _cache(db: Path) -> pl.DataFrame:
    from itaudit.store import Store

    with Store(db) as s:
        return s.query("SELECT model, text_hash, dim, vec FROM embedding_cache ORDER BY model, text_hash")


def test_embeddings_and_cli_index_on_ray_equal_local(ray_executor, frame, tmp_path: Path) -> None:
    """EmbedTexts (a model-holding step pickled as its model spec) on an actor pool stores the
    vectors the in-process path stores; `itaudit index --executor ray` embeds through it."""
    import torch

    from itaudit.cli import main
    from itaudit.embed import Embedder, embed_dataset
    from itaudit.index import load_index
    from itaudit.store import Store

    rows = [{"instruction": i, "input": x, "output": r} for i, x, r in
            zip(frame["instruction"][:30], frame["input"][:30], frame["response"][:30], strict=True)]
    dbs = {k: tmp_path / f"{k}.duckdb" for k in ("local", "ray", "cli_local", "cli_ray")}
    for db in dbs.values():
        _ingest_rows(db, rows, tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a 1-CPU Ray worker: the same float summation order
    try:
        emb = Embedder()
        with Store(dbs["local"]) as s:
            want = embed_dataset(s, "alp", "instruction", emb, show_progress=False, chunk_size=8)
        with Store(dbs["ray"]) as s:  # 4 chunks over 2 actors
            got = embed_dataset(s, "alp", "instruction", emb, show_progress=False, chunk_size=8,
                                executor=ray_executor)
        for ex in ("local", "ray"):
            main(["index", "alp", "--executor", ex, "--db", str(dbs[f"cli_{ex}"]),
                  "--index-dir", str(tmp_path / f"idx_{ex}")])
    finally:
        torch.set_num_threads(threads)
    assert got.shape == (30, emb.dim) and np.array_equal(got, want)
    assert _cache(dbs["ray"]).equals(_cache(dbs["local"])) and _cache(dbs["local"]).height == 30
    assert _cache(dbs["cli_ray"]).equals(_cache(dbs["cli_local"])) and _cache(dbs["cli_ray"]).height == 30
    with Store(dbs["cli_ray"]) as s:
        vi = load_index(tmp_path / "idx_ray", "alp", "instruction", "flat", store=s)
        assert vi.ntotal == 30
        _, ids = vi.search(want[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4] or len({r["instruction"] for r in rows[:5]}) < 5
    with pytest.raises(SystemExit) as e:
        main(["index", "alp", "--ray-address", "auto", "--db", str(dbs["cli_ray"])])
    assert e.value.code == 2  # --ray-address needs --executor ray


def test_cli_shift_executor_ray_stores_what_local_stores(ray_executor, tmp_path: Path) -> None:
    """`itaudit shift --executor ray`: the chunks of prompts are scored on actors that load the
    (tiny, config-built) models from their specs; the stored tokens equal a local run's."""
    from itaudit.cli import main
    from itaudit.store import Store
    from tests.tinymodels import perturbed_copy, tiny_causal_lm

    base = tiny_causal_lm(tmp_path / "base")
    tuned = perturbed_copy(base, tmp_path / "tuned", scale=0.8, seed=3)
    words = ["colours", "France", "the sea", "fruits", "Spanish", "a fox", "numbers", "a poem"]
    f = tmp_path / "p.jsonl"  # 24 prompts: two chunks of 16 + 8
    f.write_text("\n".join(json.dumps({"instruction": f"Tell me about {w} ({k})", "output": "x"})
                           for k in range(3) for w in words))
    out = {}
    for ex in ("local", "ray"):
        db = tmp_path / f"{ex}.duckdb"
        main(["shift", "--base", str(base), "--tuned", str(tuned), "--prompts", str(f), "--max-new-tokens", "4",
              "--db", str(db), "-q", "--run-id", "r", "--executor", ex])
        with Store(db) as s:
            out[ex] = (s.query("SELECT * EXCLUDE (kl, base_prob, tuned_prob) FROM shift_tokens ORDER BY ALL"),
                       s.query("SELECT kl, base_prob, tuned_prob FROM shift_tokens ORDER BY prompt_id, position"),
                       s.query("SELECT * FROM shift_responses ORDER BY prompt_id"))
    (tok_l, num_l, resp_l), (tok_r, num_r, resp_r) = out["local"], out["ray"]
    assert resp_l.height == 24 and tok_l.height >= 24
    assert tok_r.equals(tok_l) and resp_r.equals(resp_l)  # tokens, ranks, categories, generations
    for col in ("kl", "base_prob", "tuned_prob"):
        np.testing.assert_allclose(num_r[col].to_numpy(), num_l[col].to_numpy(), rtol=1e-4, atol=1e-7)
