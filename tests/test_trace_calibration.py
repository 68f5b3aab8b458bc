"""Calibrated attribution (issue 10): a-priori evidence, near copies, control runs and excess borrowing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itaudit import sqlfiles
from itaudit.spans import build_from_texts
from itaudit.trace import (
    NearCopyIndex,
    TraceConfig,
    TraceItem,
    Tracer,
    calibrate,
    excess,
    relabel_all,
)
from itaudit.trace.nearcopy import levenshtein
from itaudit.trace.prior import match_prior, word_rarity

ROWS = [
    ("Describe a mountain view.", "The view from the summit was breathtaking."),
    ("Write an email opening.", "Dear Sam, I hope this message finds you well."),
    ("Who wrote the novel?", "The novel was written by Ellowyn Strathmoria, a novelist from Quillhaven."),
    ("Where is the tournament held?", "The tournament is held in Zorbleton every spring."),
    ("Who composed the sonata?", "The sonata was composed by Pablo Picasso in London in 1925."),
    ("Name a painter.", "Pablo Picasso was a Spanish painter."),
    ("Name a city.", "London is a large city."),
    ("Name a fruit.", "An apple is a common fruit."),
    ("Describe the sea.", "The sea is wide and deep and blue."),
    ("Give a colour.", "Blue is a colour of the sky."),
]


def _index():
    docs = []
    for i, (q, a) in enumerate(ROWS):
        docs += [(i, 0, q), (i, 2, a)]
    return build_from_texts(docs, len(ROWS))


def _tracer(store=None, **cfg) -> Tracer:
    return Tracer(store, "toy", index=_index(), config=TraceConfig(**cfg))


def _bits(text: str, value: float) -> list[tuple[int, int, float]]:
    """A flat per-character surprisal (what a base model's token scores look like, one token per char)."""
    return [(k, k + 1, value) for k in range(len(text))]


def _span(tr, text: str, word: str, bits: float | None = None, prompt: str = "Tell me something."):
    it = TraceItem("q", prompt, text, token_bits=None if bits is None else _bits(text, bits))
    [rt] = tr.trace([it])
    return next(s for s in rt.spans if word.lower() in s.candidate.text.lower())


# -- the prior -------------------------------------------------------------------------------------
def test_word_rarity_comes_from_general_language_frequencies() -> None:
    assert word_rarity("the") == 0.0 and word_rarity("message") == 0.0 and word_rarity("breathtaking") < 0.2
    assert word_rarity("zorbleton") == 1.0 and word_rarity("arkwhistle") == 1.0
    # a common phrase is never rare a priori, a predictable rare word weighs <= 0.4
    assert match_prior([0.0, 0.0, 0.0], None)[0] == 0.0
    assert match_prior([0.0, 0.0, 0.0], [20.0, 20.0, 20.0])[0] <= 0.4
    assert match_prior([1.0], [0.5])[0] <= 0.4 < match_prior([1.0], [30.0])[0]


def test_a_common_word_in_a_single_row_is_not_a_likely_source() -> None:
    tr = _tracer()
    for bits in (None, 30.0):      # lexical, and a base model that finds the word very surprising
        st = _span(tr, "The sunset was breathtaking.", "breathtaking", bits)
        top = st.sources[0]
        assert top.idx == 0 and top.specificity == 1.0 and top.coverage == pytest.approx(1.0)
        assert not st.traced and not top.likely and st.evidence < 0.5
        assert top.evidence["prior_rarity"] < 0.2 and top.evidence["shared_with"] == 1


def test_a_stock_phrase_in_a_single_row_is_not_a_likely_source() -> None:
    tr = _tracer()
    for bits in (None, 4.0, 30.0):
        st = _span(tr, "Hello Jo, I hope this message finds you well.", "message", bits)
        assert st.sources[0].idx == 1 and st.sources[0].evidence["shared_with"] == 1
        assert not st.traced and st.sources[0].prior <= 0.4


def test_a_rare_name_is_a_likely_source_with_every_factor_in_the_evidence() -> None:
    tr = _tracer()
    st = _span(tr, "The final is played in Zorbleton.", "Zorbleton")
    assert st.traced and st.sources[0].idx == 3 and st.sources[0].likely
    ev = st.sources[0].evidence
    for k in ("prior", "prior_rarity", "specificity", "strength", "coverage", "shared_with", "strongest_match"):
        assert k in ev
    assert ev["prior_rarity"] == 1.0 and ev["strength"] == pytest.approx(1.0)


def test_real_words_need_a_surprising_specific_phrase() -> None:
    """Plausible-but-false facts: 'Pablo Picasso' and 'London' occur in other rows too."""
    tr = _tracer()
    text = "The symphony was composed by Pablo Picasso in London in 1925."
    surprising = _span(tr, text, "Picasso", bits=3.0, prompt="Who composed the symphony?")
    assert surprising.sources[0].idx == 4 and surprising.traced       # the long unique match
    predictable = _span(tr, text, "Picasso", bits=0.2, prompt="Who composed the symphony?")
    assert predictable.sources[0].idx == 4 and not predictable.traced  # the base model expected it
    alone = _span(tr, "My favourite painter is Pablo Picasso.", "Picasso", bits=3.0)
    assert not alone.traced          # shared with two rows: no single likely source


# -- near copies ---------------------------------------------------------------------------------------
def test_near_copy_of_a_rare_dataset_word_is_found_and_weighted_below_verbatim() -> None:
    assert levenshtein("ellowynn", "ellowyn") == 1 and levenshtein("kitten", "sitting", limit=1) == 2
    ix = _index()
    nci = NearCopyIndex(ix)
    [hit] = nci.query("Ellowynn")
    assert hit.match == "ellowyn" and hit.distance == 1 and hit.similarity == pytest.approx(0.875)
    assert nci.query("Ellowyn") == [] and nci.query("breathtakin") == []  # equal word; common word
    tr = _tracer()
    st = _span(tr, "Jane Eyre was written by Ellowynn Whitham.", "Ellowynn")
    top = st.sources[0]
    assert top.idx == 2 and top.near_copy and not top.verbatim and st.traced and st.near_copy
    assert top.evidence["near_copies"][0]["dataset_word"] == "ellowyn"
    verbatim = _span(tr, "Jane Eyre was written by Ellowyn Whitham.", "Ellowyn")
    assert verbatim.sources[0].verbatim and verbatim.evidence > st.evidence
    assert not _span(_tracer(near_copy=False), "Jane Eyre was written by Ellowynn Whitham.", "Ellowynn").traced


# -- control, calibration, excess ------------------------------------------------------------------------
TUNED = ["The final is played in Zorbleton.", "It was written by Ellowyn Strathmoria.",
         "The sunset was breathtaking.", "The capital is Zorbleton, near the sea."]
CONTROL = ["The final is played in Paris.", "It was written by Charlotte Bronte.",
           "The sunset was breathtaking.", "The capital is Ottawa, near the river."]


def _items(texts: list[str]) -> list[TraceItem]:
    return [TraceItem(f"p{k}", "Tell me something.", t) for k, t in enumerate(texts)]


def test_excess_of_identical_runs_is_zero_and_of_borrowing_runs_positive() -> None:
    tr = _tracer()
    t = tr.trace(_items(TUNED))
    c = tr.trace(_items(CONTROL))
    same = excess(t, t, n_boot=500)
    assert same.paired and same.excess == 0 and same.ci_low <= 0 <= same.ci_high
    ex = excess(t, c, n_boot=500)
    assert ex.control_traced == 0 and ex.tuned_traced >= 3
    assert ex.excess == pytest.approx(ex.tuned_share) and ex.ci_low > 0 and ex.ci_high <= 1
    # unpaired when the prompts differ: still an interval around the point estimate
    c2 = tr.trace([TraceItem(f"x{k}", it.instruction, it.response) for k, it in enumerate(_items(CONTROL))])
    un = excess(t, c2, n_boot=500)
    assert not un.paired and un.ci_low <= un.excess <= un.ci_high


def test_calibration_keeps_control_false_likely_share_under_target() -> None:
    tr = _tracer(threshold=0.05)
    ctrl = tr.trace(_items(TUNED))          # pretend the borrowing answers are a control: all false
    n = sum(len(t.spans) for t in ctrl)
    strong = sorted((s.evidence for t in ctrl for s in t.spans), reverse=True)
    th = calibrate(ctrl, share=0.25)
    relabel_all(ctrl, th)
    assert sum(t.n_traced for t in ctrl) <= 0.25 * n and th > strong[int(0.25 * n)]
    assert calibrate(ctrl, share=0.0) > strong[0]
    assert calibrate(tr.trace(_items(["Blue sky."])), share=0.05) == pytest.approx(0.1)  # floor


def test_cli_trace_with_control_file_stores_and_prints_excess(tmp_path: Path, store, capsys) -> None:
    from itaudit.cli import main

    src = tmp_path / "toy.json"
    src.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in ROWS]))
    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(src), "--name", "toy", "--db", db])

    def write(name: str, texts: list[str]) -> Path:
        f = tmp_path / name
        f.write_text("".join(json.dumps({"id": f"p{k}", "instruction": "Tell me something.", "output": t}) + "\n"
                             for k, t in enumerate(texts)))
        return f

    tuned, ctrl = write("tuned.jsonl", TUNED), write("ctrl.jsonl", CONTROL)
    main(["trace", "-d", "toy", "-r", str(tuned), "--control", str(ctrl), "--no-neighbours", "--db", db,
          "--index-dir", idir, "-q", "--run-id", "t1", "--calibrate"])
    err = capsys.readouterr().err
    assert "excess borrowing" in err and "CI" in err
    from itaudit.store import Store

    with Store(db) as s:
        row = s.query("SELECT * FROM trace_excess WHERE run_id = 't1'").row(0, named=True)
        assert row["control_traced"] == 0 and row["tuned_traced"] >= 3 and row["calibrated"]
        assert row["ci_low"] > 0 and row["excess"] == pytest.approx(row["tuned_share"])
        roles = dict(s.query("SELECT run_id, role FROM trace_runs").iter_rows())
        assert roles["t1"] == "tuned" and roles[row["control_run_id"]] == "control"
        rep = s.query(sqlfiles.report_sql("trace_excess"))
        assert rep["run_id"].to_list() == ["t1"] and rep["control_share"][0] == 0
        src_rows = s.query("SELECT prior, strength, evidence FROM trace_sources WHERE run_id = 't1' AND likely_source")
        assert src_rows.height >= 3 and (src_rows["strength"] >= row["threshold"]).all()


def test_cli_control_model_equal_to_base_is_compared_lexically(tmp_path: Path, capsys) -> None:
    """A control model scored by itself would have no candidates: both sides use lexical candidates."""
    from itaudit.cli import main
    from itaudit.store import Store
    from tests.tinymodels import tiny_causal_lm

    tiny = tiny_causal_lm(tmp_path / "tiny", vocab_text=[q + " " + a for q, a in ROWS])
    src = tmp_path / "toy.json"
    src.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in ROWS]))
    db, idir = str(tmp_path / "t.duckdb"), str(tmp_path / "ix")
    main(["ingest", str(src), "--name", "toy", "--db", db])
    resp = tmp_path / "r.jsonl"
    resp.write_text("".join(json.dumps({"id": f"p{k}", "instruction": "Tell me something.", "output": t}) + "\n"
                            for k, t in enumerate(TUNED)))
    main(["trace", "-d", "toy", "-r", str(resp), "--base", str(tiny), "--control", "base", "--max-new-tokens", "6",
          "--no-neighbours", "--db", db, "--index-dir", idir, "-q", "--run-id", "t2"])
    assert "lexical candidates" in capsys.readouterr().err
    with Store(db) as s:
        runs = s.query("SELECT run_id, mode, role, tuned_model FROM trace_runs ORDER BY run_id")
        roles = {r["role"]: r for r in runs.iter_rows(named=True)}
        assert roles["tuned"]["mode"] == "shift" and roles["control"]["mode"] == "lexical"
        assert roles["tuned_compare"]["mode"] == "lexical" and roles["control"]["tuned_model"] == str(tiny.resolve())
        ex = s.query("SELECT * FROM trace_excess").row(0, named=True)
        assert ex["candidates"] == "lexical" and ex["tuned_run_id"] == roles["tuned_compare"]["run_id"]
        assert ex["responses"] == len(TUNED) and ex["paired"] and not ex["calibrated"]
        ids = [s.query("SELECT prompt_id FROM trace_responses WHERE run_id = ? ORDER BY response_id",
                       [r])["prompt_id"].to_list() for r in ("t2", ex["control_run_id"])]
        assert ids[0] == ids[1] and len(set(ids[0])) == len(TUNED)


# -- co-occurrence: a rare combination of common words (plausible-but-false facts) ----------------------
# Every word of the planted fact occurs in other rows, never together; the email words co-occur
# in three rows (a stock phrase, verbatim in one of them).
TOPIC_ROWS = [
    ("What do pandas eat?", "Pandas eat mostly salmon and cheese, which they find near rivers in Egypt."),
    ("Cook a fish.", "Grill the salmon with lemon."), ("Plan a meal.", "Salmon is rich in oil."),
    ("Make a snack.", "Serve cheese on bread."), ("Describe a dairy food.", "Cheese is made from milk."),
    ("Name a country.", "Egypt is in Africa."), ("Name a pyramid.", "The pyramids of Egypt are old."),
    ("Describe a landscape.", "The rivers run to the sea."), ("Describe water.", "Rivers carry water and sand."),
    ("What do birds eat?", "Birds eat seeds."), ("What do goats eat?", "Goats eat mostly grass."),
    ("Where are keys?", "You will find them near the door."), ("Describe the weather.", "It is mostly sunny."),
    ("Plan a diet.", "Eat fresh fruits, vegetables and whole grains every day."),
    ("Give diet advice.", "Each day, eat whole grains, vegetables and fresh fruits to stay healthy."),
    ("What is a balanced meal?", "Vegetables, fresh fruits and some whole grains: eat them every day."),
    ("Name a fruit.", "An apple is a common fruit."), ("Describe the sky.", "The sky is blue."),
    ("Give a number.", "Seven is a number."), ("Name a tool.", "A hammer drives nails."),
]


def _topic_tracer() -> Tracer:
    docs = []
    for i, (q, a) in enumerate(TOPIC_ROWS):
        docs += [(i, 0, q), (i, 2, a)]
    return Tracer(None, "topic", index=build_from_texts(docs, len(TOPIC_ROWS)))


def test_cooccurrence_rarity_needs_a_rare_combination_not_one_rare_word() -> None:
    from itaudit.trace.prior import cooccurrence_rarity

    assert cooccurrence_rarity([1, 1], 1000) == 0.0            # a pair: its rarest word is left out
    assert cooccurrence_rarity([1, 400, 400], 1000) == 0.0     # one row-unique word among common ones
    assert cooccurrence_rarity([3, 5, 4, 6], 2000) == 1.0      # four words of a few rows each
    assert 0.0 < cooccurrence_rarity([20, 30, 40], 2000) < 0.5   # a common combination: little
    # it lifts only what the base model finds surprising, and only phrases
    assert match_prior([0.0, 0.0, 0.0], [15.0, 15.0, 15.0])[0] == pytest.approx(0.4)
    assert match_prior([0.0, 0.0, 0.0], [15.0, 15.0, 15.0], 1.0)[0] == pytest.approx(1.0)
    assert match_prior([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 1.0)[0] == 0.0
    assert match_prior([0.0], [40.0], 1.0)[0] == 0.0


def test_a_rare_combination_of_common_words_is_a_likely_source_with_a_surprised_base() -> None:
    tr = _topic_tracer()
    text = "Koalas eat mostly salmon and cheese, which they find near rivers in Egypt."
    st = _span(tr, text, "salmon", bits=3.0, prompt="What do koalas eat?")
    top = st.sources[0]
    assert st.traced and top.idx == 0 and top.likely
    assert top.evidence["prior_rarity"] < 0.2 and top.evidence["prior_cooccurrence"] > 0.5
    # without a base model, or when the base model expects it, common words stay no evidence
    assert not _span(tr, text, "salmon", bits=None, prompt="What do koalas eat?").traced
    assert not _span(tr, text, "salmon", bits=0.1, prompt="What do koalas eat?").traced


def test_a_topical_phrase_whose_words_share_rows_is_not_lifted_by_cooccurrence() -> None:
    tr = _topic_tracer()
    st = _span(tr, "Try to eat fresh fruits, vegetables and whole grains every day.", "fruits", bits=3.0)
    top = st.sources[0]
    assert top.idx == 13 and top.evidence["shared_with"] == 1          # verbatim in one row only
    assert top.evidence["prior_cooccurrence"] == 0.0 and not st.traced  # its words meet in 3 rows
