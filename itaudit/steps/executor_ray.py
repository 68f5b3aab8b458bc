"""RayExecutor: map a row-parallel step over chunks with Ray Data (`pip install itaudit[ray]`).

Implements the executor interface of itaudit/steps/executor.py (`map(step, chunks, world_size)`
yields `(chunk_id, result)` as chunks finish; it computes, the runner stores):

- the chunks become a Ray Dataset with one block per chunk (rows as Arrow IPC bytes, plus their
  stable chunk id), mapped with `map_batches(batch_size=1)`;
- a step that holds a model (`step.resources.model`) runs on an actor pool (`concurrency`
  actors, each loads the model once and keeps it); other steps run as stateless tasks;
  `step.resources.cpus` / `memory_gb` size each worker;
- results stream back to the driver in completion order (DataFrames as Arrow IPC bytes); the
  runner commits each chunk with its completion marker, so the single DuckDB writer stays on
  the driver;
- faults: a worker process that dies mid-chunk is retried by Ray with its defaults (a task is
  retried up to 3 times on a worker's death; Ray Data restarts pool actors and retries their
  tasks); a run that fails anyway resumes from the chunks the runner already committed
  (`step_chunks`).

Local cluster: `RayExecutor()` starts one (`ray.init(num_cpus=...)`); an existing cluster:
`RayExecutor(address="auto")` or `"ray://head:10001"` (every node needs itaudit installed).
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from ..errors import ItauditError
from .base import Step

_DF = b"df:"
_PY = b"py:"


def _encode(obj: Any) -> bytes:
    """A chunk result as bytes: DataFrames as Arrow IPC, anything else pickled (our own workers only)."""
    if isinstance(obj, pl.DataFrame):
        buf = io.BytesIO()
        obj.write_ipc(buf)
        return _DF + buf.getvalue()
    return _PY + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(raw: bytes) -> Any:
    if raw[:3] == _DF:
        return pl.read_ipc(io.BytesIO(raw[3:]))
    if raw[:3] == _PY:
        return pickle.loads(raw[3:])
    raise ItauditError("unknown chunk result encoding from a Ray worker")


def _run(step: Step, batch: dict[str, Any], world_size: int) -> dict[str, list]:
    ids, out = [], []
    for cid, rows in zip(batch["chunk_id"], batch["rows"], strict=True):
        frame = pl.read_ipc(io.BytesIO(bytes(rows)))
        ids.append(int(cid))
        out.append(_encode(step.compute_chunk(frame, rank=int(cid), world_size=world_size)))
    return {"chunk_id": ids, "result": out}


def _task(batch: dict[str, Any], step: Step, world_size: int) -> dict[str, list]:
    return _run(step, batch, world_size)


class _StepActor:
    """One long-lived worker of a model-holding step: the step (and the model it loads lazily)
    stays in the actor between chunks."""

    def __init__(self, step: Step, world_size: int):
        self.step, self.world_size = step, world_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        return _run(self.step, batch, self.world_size)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


class RayExecutor:
    """Maps `step.compute_chunk` over chunks with Ray Data; identical results to `LocalExecutor`."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, concurrency: int | None = None):
        if not ray_available():
            raise ItauditError("the Ray executor needs the ray extra: pip install 'itaudit[ray]'")
        self.address = address or os.environ.get("ITAUDIT_RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.concurrency = concurrency

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address or 'local'})"

    def start(self) -> None:
        """Connect to the cluster (or start a local one) unless Ray is already initialized."""
        import ray

        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
            return
        # Local workers import steps (and the modules they are defined in) from the driver's path.
        path = [p for p in sys.path if p] + [os.getcwd()]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True, configure_logging=False)

    def workers(self) -> int:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, step: Step, chunks: Iterable[tuple[int, pl.DataFrame]],
            world_size: int) -> Iterator[tuple[int, Any]]:
        import ray
        import ray.data

        self.start()
        items = []
        for cid, rows in chunks:
            buf = io.BytesIO()
            rows.write_ipc(buf)
            items.append({"chunk_id": int(cid), "rows": buf.getvalue()})
        if not items:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        res = step.resources
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        common: dict[str, Any] = {"batch_size": 1, "batch_format": "numpy", "num_cpus": res.cpus,
                                  "memory": res.memory_gb * 2**30 if res.memory_gb else None}
        if res.model:
            n = self.concurrency or max(1, int(self.workers() // max(res.cpus, 1)))
            ds = ds.map_batches(_StepActor, fn_constructor_args=(step, world_size), concurrency=n, **common)
        else:
            ds = ds.map_batches(_task, fn_kwargs={"step": step, "world_size": world_size}, **common)
        for row in ds.iter_rows():
            yield int(row["chunk_id"]), _decode(bytes(row["result"]))
