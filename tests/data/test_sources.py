"""Globs that cannot run away: symbolic-link loops, whole-filesystem walks, too many matches."""

from __future__ import annotations

import time

import pytest

from orchestrator.data import sources
from orchestrator.data.sources import SourceError, find_sources, kind_of


def test_kinds_come_from_the_name_unless_the_format_says():
    from pathlib import Path

    assert kind_of(Path("a.jsonl.zst")) == ("jsonl", "zst")
    assert kind_of(Path("a.txt.gz")) == ("text", "gz")
    assert kind_of(Path("a.json"), "text") == ("text", None)
    assert kind_of(Path("notes")) == ("text", None)


def test_globs_match_like_glob_in_a_stable_order(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt", ".hidden.txt", "sub/e.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    names = lambda found: [s.path.removeprefix(str(tmp_path) + "/") for s in found]  # noqa: E731
    assert names(find_sources(["*.txt"], tmp_path)) == ["a.txt", "b.txt"]
    assert names(find_sources(["**/*.txt"], tmp_path)) == ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]
    assert names(find_sources(["sub/*"], tmp_path)) == ["sub/c.txt", "sub/e.md"]
    assert names(find_sources(["b.txt", "*.txt"], tmp_path)) == ["b.txt", "a.txt"]  # each file once


def test_a_symbolic_link_loop_is_not_followed(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("x")
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data")
    (tmp_path / "data" / "up").symlink_to(tmp_path)
    started = time.monotonic()
    found = find_sources(["**/*.txt"], tmp_path)
    assert [s.name for s in found] == ["a.txt"] and time.monotonic() - started < 2


def test_a_walk_of_the_whole_filesystem_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_WALKED", 500)
    for i in range(30):
        (tmp_path / f"d{i}").mkdir()
        for j in range(30):
            (tmp_path / f"d{i}" / f"f{j}.bin").write_text("x")
    with pytest.raises(SourceError, match=r"walks more than 500 directory entries.*start the glob"):
        find_sources(["**/*.txt"], tmp_path)


def test_too_many_matches_are_refused(tmp_path):
    for j in range(12):
        (tmp_path / f"f{j}.txt").write_text("x")
    with pytest.raises(SourceError, match=r"more than 10 files.*data.max_files"):
        find_sources(["*.txt"], tmp_path, max_files=10)
