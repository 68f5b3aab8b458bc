"""The check runner: order of execution and persistence of results."""

from __future__ import annotations

from pathlib import Path

import pytest

from itaudit.audit.runner import resolve, run_checks
from itaudit.ingest import ingest

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample_alpaca.jsonl"
STYLED = Path(__file__).resolve().parent / "fixtures" / "golden_alpaca.jsonl"  # copied openings, boilerplate


def test_combiner_runs_after_the_checks_it_combines_whatever_the_order_asked(store, tmp_path):
    ingest(store, SAMPLE, "sample", show_progress=False)
    names = [s.name for s in resolve(["risk", "exact_duplicates,risk"])]
    assert names == ["exact_duplicates", "risk"]  # deduplicated, risk last
    outcomes = run_checks(store, "sample", ["risk", "exact_duplicates"], index_dir=tmp_path, show_progress=False)
    assert [o.check for o in outcomes] == ["exact_duplicates", "risk"]
    # the planted exact duplicate (rows 1 and 2) reaches the risk score
    risk = store.query(
        "SELECT idx, score FROM check_results WHERE dataset = 'sample' AND check_name = 'risk' ORDER BY idx"
    )
    dup = store.query(
        "SELECT idx FROM check_results WHERE dataset = 'sample' AND check_name = 'exact_duplicates' AND flag"
    )["idx"].to_list()
    assert dup, "the sample has an exact duplicate pair"
    scores = dict(zip(risk["idx"].to_list(), risk["score"].to_list(), strict=True))
    assert all(scores[i] > 0 for i in dup)
    assert min(scores.values()) == 0.0


def test_workspace_api_mirrors_the_cli(tmp_path):
    import itaudit

    with itaudit.open(tmp_path / "ws.duckdb", index_dir=tmp_path / "idx") as ws:
        ws.ingest(SAMPLE, name="sample")
        summary = ws.audit("sample", ["exact_duplicates", "duplicate_instructions"])
        assert set(summary["check_name"]) == {"exact_duplicates", "duplicate_instructions"}
        assert summary.filter(summary["check_name"] == "exact_duplicates")["flagged"][0] == 1  # the redundant copy of the one duplicated pair
        hits = ws.neighbors("sample", "What is the capital city of Australia?", k=3)
        assert hits.height == 3
        assert "Australia" in hits["instruction"][0]
        assert (tmp_path / "idx").is_dir()


# -- registration and ordering ----------------------------------------------------------------
def _outside_step():
    """A check defined outside itaudit: flags the rows whose instruction mentions Australia."""
    from dataclasses import dataclass

    import numpy as np

    from itaudit.audit import CheckResult
    from itaudit.steps import Params, Step

    @dataclass(frozen=True)
    class WordParams(Params):
        words: tuple[str, ...] = ("australia",)
        weight: float = 1.0

    class MentionsWord(Step):
        name = "mentions_word"
        Params = WordParams
        default = False

        def compute(self, ctx):
            rows = ctx.instances("idx, lower(instruction) AS ins")
            hit = np.array([any(w in t for w in self.params.words) for t in rows["ins"].to_list()])
            return CheckResult(self.name, ctx.dataset, rows["idx"].to_numpy(), hit, hit.astype(float))

        def render_text(self, result):
            return [f"{int(result.flag.sum())} rows mention {', '.join(self.params.words)}"]

    return MentionsWord


def test_check_registered_from_outside_runs_before_risk_and_risk_counts_it(store):
    from itaudit.audit.registry import register, unregister

    step = register(_outside_step())
    try:
        ingest(store, SAMPLE, "sample", show_progress=False)
        assert [c.name for c in resolve(["risk", "mentions_word"])] == ["mentions_word", "risk"]
        outs = run_checks(store, "sample", ["risk", "mentions_word"], show_progress=False)
        assert [o.check for o in outs] == ["mentions_word", "risk"]
        hit = outs[0].result
        assert hit.idx[hit.flag].tolist() == [1, 2, 3]  # the three Australia questions
        assert outs[0].render_text() == ["3 rows mention australia"]
        risk = outs[1].result
        assert risk.summary["checks"]["mentions_word"]["rows_scored"] == len(risk.idx)
        # the only check run: risk = its default weight (0.3) on its rows, 0 elsewhere
        assert risk.score[hit.flag] == pytest.approx([0.3] * 3) and not risk.score[~hit.flag].any()
    finally:
        unregister(step.name)


def test_every_summary_has_the_common_keys(store):
    ingest(store, SAMPLE, "sample", show_progress=False)
    outs = run_checks(store, "sample", ["exact_duplicates", "duplicate_instructions", "style", "risk"],
                      show_progress=False)
    for o in outs:
        s, n = o.result.summary, len(o.result.idx)
        assert s["n_rows"] == n and s["n_flagged"] == int(o.result.flag.sum()), o.check
        assert s["share_flagged"] == pytest.approx(s["n_flagged"] / n), o.check
    assert outs[0].result.summary["n_flagged"] == 1  # the one redundant copy


# -- storage during compute, resume, executors ------------------------------------------------
def test_another_process_reads_the_database_while_a_step_computes(store, db_path):
    import subprocess
    import sys

    from itaudit.audit import CheckResult
    from itaudit.steps import Step
    from itaudit.steps.runner import Runner

    ingest(store, SAMPLE, "sample", show_progress=False)
    seen = {}

    class ReadsFromOutside(Step):
        name = "reads_from_outside"

        def compute(self, ctx):
            # what `itaudit query` does meanwhile: a read-only connection from another process
            seen["query"] = subprocess.run(
                [sys.executable, str(SAMPLE.parent.parent / "cli.py"), "query", "SELECT count(*) AS n FROM instances",
                 "--db", str(db_path), "--format", "csv"], capture_output=True, text=True, timeout=120,
                env={**__import__("os").environ, "ITAUDIT_LOCK_TIMEOUT": "0"})
            idx = ctx.instances("idx")["idx"].to_numpy()
            return CheckResult(self.name, ctx.dataset, idx, idx < 0, idx * 0.0)

    outs = Runner(store, "sample", show_progress=False).run([ReadsFromOutside()])
    q = seen["query"]
    assert q.returncode == 0, q.stderr
    assert q.stdout.split() == ["n", "16"]
    assert outs[0].run_id and store.query("SELECT count(*) AS n FROM check_runs")["n"][0] == 1


class _Interrupting:
    """An executor that stops (like Ctrl-C) after `after` chunks; counts the chunks it computed."""

    def __init__(self, after: int | None = None):
        from itaudit.steps.executor import LocalExecutor

        self.inner, self.after, self.computed = LocalExecutor(1), after, []

    def map(self, step, chunks, world_size):
        for cid, out in self.inner.map(step, chunks, world_size):
            if self.after is not None and len(self.computed) == self.after:
                raise KeyboardInterrupt
            self.computed.append(cid)
            yield cid, out


def test_row_parallel_step_resumes_from_committed_chunks(store):
    from itaudit.audit.style import Style
    from itaudit.steps.runner import Runner

    ingest(store, STYLED, "sample", show_progress=False)
    whole = Runner(store, "sample", chunk_rows=100, show_progress=False).run([Style({"min_share": 0.1})])[0].result
    first = _Interrupting(after=2)
    with pytest.raises(KeyboardInterrupt):
        Runner(store, "sample", executor=first, chunk_rows=10, show_progress=False).run([Style({"min_share": 0.1})])
    assert first.computed == [0, 1]
    assert store.query("SELECT count(*) AS n FROM style_features WHERE dataset = 'sample'")["n"][0] == 20
    second = _Interrupting()
    resumed = Runner(store, "sample", executor=second, chunk_rows=10, show_progress=False).run(
        [Style({"min_share": 0.1})])[0].result
    assert second.computed == [2, 3, 4]  # 41 rows in chunks of 10: chunks 0 and 1 were kept
    assert resumed.flag.tolist() == whole.flag.tolist() and resumed.score.tolist() == whole.score.tolist()
    assert resumed.details == whole.details and int(whole.flag.sum()) > 0
    assert store.query("SELECT count(*) AS n FROM style_features WHERE dataset = 'sample'")["n"][0] == 41


def test_process_pool_gives_the_in_process_result(store):
    from itaudit.audit.style import Style
    from itaudit.steps.executor import LocalExecutor
    from itaudit.steps.runner import Runner

    ingest(store, STYLED, "sample", show_progress=False)
    one = Runner(store, "sample", chunk_rows=4, show_progress=False).run([Style({"min_share": 0.1})])[0].result
    pool = LocalExecutor(workers=2)
    two = Runner(store, "sample", executor=pool, chunk_rows=3, show_progress=False).run(
        [Style({"min_share": 0.1})])[0].result
    assert two.flag.tolist() == one.flag.tolist() and two.summary["top_openings"] == one.summary["top_openings"]
    assert int(one.flag.sum()) > 0


# -- typed parameters from the command line ---------------------------------------------------
def test_cli_params_are_typed_and_checked(store, db_path, capsys):
    from itaudit.cli import main

    ingest(store, SAMPLE, "sample", show_progress=False)
    store.close()

    def fail(*args):
        with pytest.raises(SystemExit) as e:
            main(["audit", "sample", "-q", "--db", str(db_path), *args])
        assert e.value.code == 2
        return " ".join(capsys.readouterr().err.split())

    err = fail("-c", "near_duplicates", "-s", "near_duplicates.thresold=0.9")
    assert "unknown parameter(s) thresold" in err and "valid: field, threshold, jaccard_threshold" in err
    err = fail("-c", "near_duplicates", "-s", "near_duplicates.threshold=high")
    assert "near_duplicates.threshold: expected a number, got 'high'" in err
    err = fail("-c", "near_duplicates", "-s", "near_duplicates.field=title")
    assert "near_duplicates.field: expected one of" in err
    err = fail("-c", "style", "-s", "stlye.n_open=3")
    assert "unknown check(s) stlye" in err
    with pytest.raises(SystemExit) as e:
        main(["audit", "nope", "-q", "--db", str(db_path)])
    assert e.value.code == 2 and "no dataset named 'nope'" in capsys.readouterr().err


def test_list_params_parse_from_a_comma_list():
    from dataclasses import dataclass

    from itaudit.errors import ItauditError
    from itaudit.steps import Params

    @dataclass(frozen=True)
    class P(Params):
        eval_fields: tuple[str, ...] = ("instruction",)
        limit: int | None = None

    p = P.parse({"eval_fields": "instruction,input", "limit": "500"}, step="contamination")
    assert p.eval_fields == ("instruction", "input") and p.limit == 500
    with pytest.raises(ItauditError, match=r"contamination.limit: expected an integer, got '1.5'"):
        P.parse({"limit": "1.5"}, step="contamination")
