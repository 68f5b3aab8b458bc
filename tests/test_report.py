"""The HTML report (self-contained, escaped, sections from whatever data exists) and the terminal summary."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from itaudit.audit import CheckResult, save_result
from itaudit.audit.style import style_check
from itaudit.cli import main as cli
from itaudit.ingest import ingest
from itaudit.report import print_summary, render_report, write_report

EVIL = "<script>alert('x')</script> & <b>bold</b>"


@pytest.fixture
def audited(store, tmp_path):
    rows = [{"instruction": f"Question {i}: what is {i} + {i}?", "output": f"Sure! The answer is {2 * i}."} for i in range(10)]
    rows[3]["instruction"] = EVIL
    rows[4]["output"] = "The Eiffel Tower was completed in 1889 by Gustave Eiffel."
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(store, p, "d", show_progress=False)
    e = tmp_path / "e.jsonl"
    e.write_text(json.dumps({"question": EVIL + " eval", "answer": "1"}) + "\n")
    ingest(store, e, "ev", "qa", show_progress=False)
    idx = np.arange(10)
    save_result(store, style_check(store, "d", min_share=0.2))
    pairs = __import__("polars").DataFrame({"idx_a": [3], "idx_b": [0], "other_dataset": ["ev"], "score": [1.0],
                                            "evidence": [json.dumps({"via": "ngram", "coverage": 1.0, "overlap": EVIL})]})
    save_result(store, CheckResult("contamination", "d", idx, idx == 3, (idx == 3) * 1.0, pairs=pairs,
                                   summary={"by_eval_set": {"ev": {"n_eval": 1, "eval_items_in_dataset": 1,
                                                                   "eval_share_in_dataset": 1.0}}}))
    cl = np.where(idx < 3, 5, -1)
    save_result(store, CheckResult("near_duplicates", "d", idx, idx < 3, (idx < 3) * 0.9, cluster_id=cl))
    c = store.conn
    c.execute("INSERT INTO trace_runs (run_id, dataset, mode, tuned_model, base_model) VALUES ('t1', 'd', 'lexical', 'tuned<x>', 'base')")
    resp = "It was finished in 1889 by Gustave Eiffel <i>really</i>."
    c.execute("INSERT INTO trace_responses (run_id, response_id, prompt_id, instruction, response, n_words, n_candidates, n_traced) "
              "VALUES ('t1', 0, 'p0', 'When was the Eiffel Tower built?', ?, 9, 1, 1)", [resp])
    a = resp.index("1889 by Gustave Eiffel")
    c.execute("INSERT INTO trace_spans (run_id, response_id, span_id, word_start, word_end, char_start, char_end, text, "
              "candidate_score, verbatim, longest_match, traced, best_idx, best_score) VALUES "
              "('t1', 0, 0, 3, 7, ?, ?, '1889 by Gustave Eiffel', 0.8, TRUE, 4, TRUE, 4, 0.9)", [a, a + len("1889 by Gustave Eiffel")])
    c.execute("INSERT INTO trace_sources (run_id, response_id, span_id, rank, dataset, idx, score, coverage, rarity, specificity, "
              "match_len, verbatim, likely_source) VALUES ('t1', 0, 0, 1, 'd', 4, 0.9, 1, 0.8, 1, 4, TRUE, TRUE)")
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
    # the candidate span is highlighted and its source instance shown beside it
    assert re.search(r'<mark class="hc traced"[^>]*>1889 by Gustave Eiffel<sup>0</sup></mark>', html)
    assert "span 0 ← d idx 4" in html and "<mark>1889 by Gustave Eiffel</mark>" in html
    # no network: nothing but the SVG namespace looks like a URL, no link/img/script tags
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(link|img|script|iframe)\b", html)
    assert html.count("<svg") >= 5
    assert "Clusters: 1" in html and "unshifted 54.5%" in html
    p = write_report(audited, "d", tmp_path / "r" / "report.html")
    assert p.read_text(encoding="utf-8") .startswith("<!DOCTYPE html>")


def test_report_skips_sections_without_data(store, tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    ingest(store, p, "bare", show_progress=False)
    html = render_report(store, "bare")
    assert 'id="summary"' in html and "No checks have run" in html
    for sid in ("borrowed", "traced", "shift", "filters", "check-"):
        assert f'id="{sid}' not in html


def test_print_summary_and_cli(audited, db_path, tmp_path, capsys):
    from rich.console import Console

    con = Console(record=True, width=140)
    print_summary(audited, "d", console=con)
    text = con.export_text()
    assert "contamination" in text and "ev: 1/1 eval items" in text and "near_duplicates" in text
    audited.close()
    out = tmp_path / "cli.html"
    cli(["report", "d", "--db", str(db_path), "--html", str(out)])
    assert out.stat().st_size > 5000


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_headless_chromium_screenshot(audited, tmp_path):
    """Render the report in headless Chromium (Debian `chromium`) and check the screenshot."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page = write_report(audited, "d", tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    assert _png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 60_000      # a blank page compresses to a few KB
