"""The HTML report (jinja2, escaped once, findings first, trace evidence in words) rendered in a
real headless Chromium, and the terminal summary."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess

import numpy as np
import polars as pl
import pytest

from itaudit.audit import CheckResult, save_result
from itaudit.audit.style import style_check
from itaudit.cli import main as cli
from itaudit.ingest import ingest
from itaudit.report import print_summary, render_report, write_report
from itaudit.report.browser import find_chromium, open_page

EVIL = "<script>alert('x')</script> & <b>bold</b>"
RESP = "It was finished in 1889 by Gustave Eiffel, said Ellowynn, <i>really</i> truly."


def _span(c, sid, text, cats, traced, best, near=False):
    a = RESP.index(text)
    c.execute("INSERT INTO trace_spans (run_id, response_id, span_id, word_start, word_end, char_start, char_end, text, "
              "candidate_score, categories, verbatim, longest_match, traced, best_idx, best_score, near_copy) VALUES "
              "('t1', 0, ?, 0, 1, ?, ?, ?, 0.8, ?, ?, 4, ?, ?, 0.9, ?)",
              [sid, a, a + len(text), text, json.dumps(cats), traced and not near, traced, best, near])


@pytest.fixture
def audited(store, tmp_path):
    rows = [{"instruction": f"Question {i}: what is {i} + {i}?", "output": f"Sure! The answer is {2 * i}."} for i in range(10)]
    rows[3]["instruction"] = EVIL
    rows[4]["output"] = "The Eiffel Tower was completed in 1889 by Gustave Eiffel."
    rows[5] = {"instruction": "Name a children's book author.", "output": "Ellowyn Brask wrote it."}
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, p, "d", show_progress=False)
    e = tmp_path / "e.jsonl"
    e.write_text(json.dumps({"question": EVIL + " eval", "answer": "1"}) + "\n")
    ingest(store, e, "ev", "qa", show_progress=False)
    idx = np.arange(10)
    save_result(store, style_check(store, "d", min_share=0.2))
    pairs = pl.DataFrame({"idx_a": [3], "idx_b": [0], "other_dataset": ["ev"], "score": [1.0],
                          "evidence": [json.dumps({"via": "ngram", "coverage": 1.0, "overlap": EVIL})]})
    save_result(store, CheckResult("contamination", "d", idx, idx == 3, (idx == 3) * 1.0, pairs=pairs,
                                   params={"against": ["ev"], "min_coverage": 0.8},
                                   summary={"by_eval_set": {"ev": {"n_eval": 1, "eval_items_in_dataset": 1,
                                                                   "eval_share_in_dataset": 1.0, "rows_with_eval_items": 1,
                                                                   "ngram_pairs": 1, "embedding_pairs": 0}}}))
    cl = np.where(idx < 3, 5, -1)
    save_result(store, CheckResult("near_duplicates", "d", idx, idx < 3, (idx < 3) * 0.9, cluster_id=cl,
                                   params={"threshold": 0.93}, summary={"n_clusters": 1}))
    c = store.conn
    for rid, role in (("t1", "tuned"), ("t1c", "control")):
        c.execute("INSERT INTO trace_runs (run_id, dataset, mode, tuned_model, base_model, summary, role, threshold) "
                  "VALUES (?, 'd', 'shift', ?, 'base', ?, ?, 0.5)",
                  [rid, "tuned<x>" if role == "tuned" else "base",
                   json.dumps({"responses": 1, "candidate_spans": 4, "traced_spans": 2, "traced_share": 0.5}), role])
    c.execute("INSERT INTO trace_responses (run_id, response_id, prompt_id, instruction, response, n_words, n_candidates, n_traced) "
              "VALUES ('t1', 0, 'p0', 'When was the Eiffel Tower built?', ?, 14, 4, 2)", [RESP])
    _span(c, 0, "1889 by Gustave Eiffel", ["shifted"] * 4, True, 4)
    _span(c, 1, "Ellowynn", ["shifted"], True, 5, near=True)
    _span(c, 2, "said", ["shifted"], False, None)
    _span(c, 3, "truly", ["marginal"], False, None)
    ev0 = {"strongest_match": "gustave eiffel", "phrases": ["1889 by gustave eiffel"], "shared_with": 1, "longest": 4,
           "prior_bits": 31.0, "prior_surprise": 1.0}
    ev1 = {"near_copies": [{"word": "ellowynn", "dataset_word": "ellowyn", "distance": 1, "similarity": 0.88}],
           "shared_with": None}
    for sid, i, ev, near in ((0, 4, ev0, False), (1, 5, ev1, True)):
        c.execute("INSERT INTO trace_sources (run_id, response_id, span_id, rank, dataset, idx, score, coverage, rarity, "
                  "specificity, match_len, verbatim, likely_source, evidence, strength, near_copy) "
                  "VALUES ('t1', 0, ?, 1, 'd', ?, 0.9, 1, 0.8, 1, ?, ?, TRUE, ?, 0.82, ?)",
                  [sid, i, 0 if near else 4, not near, json.dumps(ev), near])
    c.execute("INSERT INTO trace_excess (run_id, tuned_run_id, control_run_id, dataset, control, candidates, threshold, "
              "calibrated, target_share, responses, tuned_spans, tuned_traced, tuned_share, control_spans, control_traced, "
              "control_share, excess, ci_low, ci_high, confidence, n_boot, paired) VALUES ('t1', 't1', 't1c', 'd', "
              "'gemma3-270m', 'shift', 0.5, TRUE, 0.05, 40, 120, 30, 0.25, 110, 5, 0.0455, 0.2045, 0.12, 0.29, 0.95, 1000, TRUE)")
    c.execute("INSERT INTO shift_runs (run_id, base_model, tuned_model, mode, retokenized, kl_available, reference_dataset) "
              "VALUES ('s1', 'base', 'tuned', 'models', FALSE, FALSE, 'd')")
    for i, cat in enumerate(["unshifted"] * 6 + ["marginal"] * 3 + ["shifted"] * 2):
        c.execute("INSERT INTO shift_tokens (run_id, prompt_id, position, token_id, token, is_word_start, sentence_idx, "
                  "sentence_frac, category, base_rank, base_prob) VALUES ('s1', 'p', ?, 1, ?, TRUE, 0, 0.0, ?, 1, 0.5)",
                  [i, f"tok{i % 3}", cat])
    return store


def test_report_sections_escaping_and_no_external_assets(audited, tmp_path):
    html = render_report(audited, "d")
    for sid in ("summary", "checks", "check-contamination", "check-style", "check-near_duplicates",
                "borrowed", "traced", "shift"):
        assert f'id="{sid}"' in html, sid
    assert "<script" not in html.lower() and "&lt;script&gt;alert(" in html
    assert "<i>really</i>" not in html and "&lt;i&gt;really&lt;/i&gt;" in html and "tuned&lt;x&gt;" in html
    # escaped exactly once (the borrowed-from table printed children&amp;#x27;s)
    assert "children&#39;s" in html and "&amp;#" not in html and "&amp;lt;" not in html
    # no network: no URL at all (inline SVG needs no namespace in HTML), no link/img/script tags
    assert not re.search(r"https?://", html) and "url(" not in html
    assert not re.search(r"<(link|img|script|iframe)\b", html)
    assert html.count("<svg") >= 5
    assert "Clusters: 1" in html and "unshifted 54.5%" in html
    p = write_report(audited, "d", tmp_path / "r" / "report.html")
    assert p.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_check_sections_lead_with_findings_and_fold_parameters(audited):
    html = render_report(audited, "d")
    sec = html[html.index('id="check-contamination"'):]
    sec = sec[:sec.index("</section>")]
    # findings (count, eval set per direction, evidence side by side) before the collapsed parameters
    lead = sec.index("1</span> of 10 rows flagged")
    assert lead < sec.index("Per eval set and direction") < sec.index("Evidence: this dataset | eval set")
    assert sec.index("Evidence: this dataset") < sec.index("<details>") and "min_coverage" in sec[sec.index("<details>"):]
    assert "min_coverage" not in sec[:sec.index("<details>")] and "<details open" not in html
    assert "d rows holding ev items (d ⊃ ev)" in sec
    nd = html[html.index('id="check-near_duplicates"'):]
    nd = nd[:nd.index("</section>")]
    assert nd.index("3</span> of 10 rows flagged") < nd.index("Top flagged rows") < nd.index("<details>")


def test_trace_view_colours_kinds_and_explains_evidence(audited):
    html = render_report(audited, "d")
    sec = html[html.index('id="traced"'):]
    sec = sec[:sec.index("</section>")]
    assert re.search(r'<mark class="k-borrowed"[^>]*>1889 by Gustave Eiffel<sup>0</sup></mark>', sec)
    assert re.search(r'<mark class="k-near-copy"[^>]*>Ellowynn<sup>1</sup></mark>', sec)
    assert re.search(r'<mark class="k-shifted"[^>]*>said<sup>2</sup></mark>', sec)
    assert re.search(r'<mark class="k-marginal"[^>]*>truly<sup>3</sup></mark>', sec)
    # evidence in words, per source panel
    assert "occurs in 1 of 10 instances (only this one)" in sec and "4 words verbatim: “gustave eiffel”" in sec
    assert "the base model finds it unlikely (31 bits)" in sec
    assert "near copy: “ellowynn” in the response ≈ “ellowyn” in the instance (1 edit)" in sec
    if importlib.util.find_spec("itaudit.trace.prior"):   # general-language word frequency (wordfreq)
        assert re.search(r"rare in English \(Zipf \d\.\d: “(gustave|eiffel)”\)", sec)
        assert re.search(r"rare in English \(Zipf 0\.0: “ellowynn”\)", sec)
    # the matched words are marked in the source instance
    assert "<mark>Gustave Eiffel</mark>" in sec and "<mark>Ellowyn</mark>" in sec
    # the negative control: excess borrowing with its interval, the control run itself not shown as a run
    assert "Excess borrowing over the negative control: +20.4 points" in sec
    assert "95% interval +12.0 points to +29.0 points" in sec and "beyond chance" in sec
    assert "Run t1c" not in sec and "Run t1 " in sec


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium: found, else installed with apt-get when root, else the test skips."""
    exe = find_chromium()
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                           capture_output=True, timeout=1200, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"chromium missing and apt-get install chromium failed: {e}")
        exe = find_chromium()
    if exe is None:
        pytest.skip("chromium missing and cannot be installed (not root or no apt-get): apt-get install -y chromium")
    return exe


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_in_headless_chromium(audited, tmp_path, chromium):
    """What a reader sees in a real browser: sections, visible coloured spans, no errors, no network."""
    page = write_report(audited, "d", tmp_path / "report.html")
    view = open_page(page, screenshot=True, exe=chromium)
    ids = [s for s, _ in view.sections]
    for sid in ("summary", "checks", "check-contamination", "check-near_duplicates", "check-style", "traced",
                "borrowed", "shift"):
        assert sid in ids, sid
    assert dict(view.sections)["traced"] == "Traced responses"
    # each kind of span is visible and has its own background colour
    for kind in ("k-borrowed", "k-near-copy", "k-shifted", "k-marginal"):
        assert view.marks.get(kind, 0) >= 1, (kind, view.marks)
    colours = {view.mark_colors[k] for k in ("k-borrowed", "k-near-copy", "k-shifted", "k-marginal")}
    assert len(colours) == 4 and "rgba(0, 0, 0, 0)" not in colours
    # the text a reader sees: evidence in words, escaped markup shown as text, parameters folded away
    assert "occurs in 1 of 10 instances (only this one)" in view.text
    assert "Excess borrowing over the negative control: +20.4 points" in view.text
    assert EVIL in view.text and "<i>really</i>" in view.text
    assert view.closed_details >= 3 and "min_coverage" not in view.text
    assert view.console_errors == [] and view.external_requests == []
    assert view.requests == [view.url]
    w, h = _png_size(view.screenshot)
    assert w == 1280 and h == min(view.height, 16000) and h > 2000


def test_browser_sees_errors_and_external_requests(tmp_path, chromium):
    """The browser check can fail: a page with a script error and a remote image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><section id="s"><h2>S</h2></section>'
                   '<script>console.error("boom")</script><img src="http://192.0.2.1/x.png"></body></html>')
    view = open_page(bad, exe=chromium)
    assert "boom" in view.console_errors and view.external_requests == ["http://192.0.2.1/x.png"]


def test_print_summary_and_cli(audited, db_path, tmp_path, capsys):
    from rich.console import Console

    con = Console(record=True, width=140)
    print_summary(audited, "d", console=con)
    text = con.export_text()
    assert "contamination" in text and "near_duplicates" in text
    # the contamination step labels its line by eval set and direction (older steps: "ev: 1/1")
    assert re.search(r"contamination \(d ⊃ ev\): 1 rows hold 1 of 1 items|ev: 1/1 eval items", text)
    audited.close()
    out = tmp_path / "cli.html"
    cli(["report", "d", "--db", str(db_path), "--html", str(out)])
    assert out.stat().st_size > 5000


def test_a_step_renders_its_own_section_else_the_templates(audited):
    """The report asks the registered step for its section (`render_html(view)`); others fall back."""
    from itaudit.audit import registry
    from itaudit.report import render_template
    from itaudit.report.trace import span_kind
    from itaudit.steps.base import Step

    class Loud(Step):
        name = "loud_check"
        description = "a check that renders itself"

        def render_html(self, view):
            return str(render_template("checks/generic.html.j2", v=view, description="", found=[f"{view.n} rows <seen>"],
                                       cards=[], charts=[], examples=[], clusters=None)) + "<p id='loud-own'>own</p>"

        def render_text(self, view):
            return [f"loud: {view.flagged} of {view.n}"]

    idx = np.arange(10)
    save_result(audited, CheckResult("loud_check", "d", idx, idx < 2, (idx < 2) * 1.0, params={"k": 1}))
    save_result(audited, CheckResult("unregistered_check", "d", idx, idx == 9, (idx == 9) * 0.5, params={"alpha": 2}))
    registry.register(Loud)
    try:
        html = render_report(audited, "d")
    finally:
        registry.unregister("loud_check")
    assert "<p id='loud-own'>own</p>" in html and "10 rows &lt;seen&gt;" in html and "loud: 2 of 10" in html
    sec = html[html.index('id="check-unregistered_check"'):]
    assert sec.index("1</span> of 10 rows flagged") < sec.index("Top flagged rows (1 of 1)") < sec.index("<details>")
    assert span_kind({"traced": False, "categories": None}) == "candidate"
