"""Atomic writes and the index folder default (itaudit.paths)."""

from __future__ import annotations

import pytest

from itaudit.paths import atomic_path, atomic_write_text, index_dir


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "r.html"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [f.name for f in p.parent.iterdir()] == ["r.html"]


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["data.jsonl"]


def test_atomic_folder_replaces_an_existing_folder(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "stale.bin").write_text("x")
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_text("y")
    assert [f.name for f in d.iterdir()] == ["new.bin"]


def test_index_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ITAUDIT_INDEX_DIR", raising=False)
    assert str(index_dir()) == "indexes"
    monkeypatch.setenv("ITAUDIT_INDEX_DIR", str(tmp_path))
    assert index_dir() == tmp_path
    assert str(index_dir("elsewhere")) == "elsewhere"
