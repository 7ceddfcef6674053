"""Atomic tree writes and plans."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloudctl.errors import RenderError
from cloudctl.render.files import RenderedFile
from cloudctl.render.output import MARKER, plan_tree, recover, write_tree


def files(**kw: str) -> dict[str, RenderedFile]:
    return {
        k.replace("__", "/"): RenderedFile(v.encode(), secret=k.startswith("s"))
        for k, v in kw.items()
    }


def test_write_and_modes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a__b="1\n", secret__c="k\n"), out, "c1")
    assert (out / "a/b").read_text() == "1\n"
    assert stat.S_IMODE(os.stat(out / "secret/c").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "a/b").st_mode) == 0o644
    assert (out / MARKER).is_file()


def test_replace_removes_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a="1\n", b="2\n"), out, "c1")
    write_tree(files(a="1\n"), out, "c1")
    assert sorted(p.name for p in out.iterdir()) == sorted(["a", MARKER])


def test_plan_lists_changes_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a="1\n2\n", b="x\n", secret="k1\n"), out, "c1")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    plan = plan_tree(files(a="1\n3\n4\n", c="new\n", secret="k2\n"), out)
    kinds = {c.path: c.kind for c in plan.changes}
    assert kinds == {"a": "changed", "b": "removed", "c": "added", "secret": "changed"}
    a = next(c for c in plan.changes if c.path == "a")
    assert (a.added_lines, a.removed_lines) == (2, 1)
    text = "\n".join(plan.lines())
    assert "k1" not in text and "k2" not in text  # never shows content
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_plan_on_fresh_dir(tmp_path: Path) -> None:
    plan = plan_tree(files(a="1\n"), tmp_path / "none")
    assert [c.kind for c in plan.changes] == ["added"]
    assert plan_tree({}, tmp_path / "none").empty


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(RenderError, match="refusing"):
        write_tree(files(a="1\n"), out, "c1")
    assert (out / "precious.txt").read_text() == "keep"


def test_failed_write_leaves_previous_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a="old\n"), out, "c1")
    with pytest.raises(RenderError, match="unsafe path"):
        write_tree({"a": RenderedFile(b"new\n"), "../escape": RenderedFile(b"x")}, out, "c1")
    assert (out / "a").read_text() == "old\n"
    assert not (tmp_path / "escape").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_recover_after_crash_between_renames(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a="old\n"), out, "c1")
    os.rename(out, tmp_path / ".out.old")  # crash after the first rename
    recover(out)
    assert (out / "a").read_text() == "old\n"
