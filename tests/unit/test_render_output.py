"""Atomic tree writes and plans."""

from __future__ import annotations

import json
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


def _inodes(out: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(out).as_posix(): (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }


def test_rerender_without_changes_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    plan = write_tree(files(a__b="1\n", secret__c="k\n"), out, "c1")
    assert sorted(c.path for c in plan.changes) == ["a/b", "secret/c"]
    before, root_ino = _inodes(out), os.stat(out).st_ino
    plan = write_tree(files(a__b="1\n", secret__c="k\n"), out, "c1")
    assert plan.empty and plan.unchanged == 2
    assert _inodes(out) == before  # same inodes, same mtimes: nothing rewritten
    assert os.stat(out).st_ino == root_ino  # not even swapped
    assert stat.S_IMODE(os.stat(out / "secret/c").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700


def test_changed_render_keeps_unchanged_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a="1\n", b="2\n", secret="k\n", gone="x\n"), out, "c1")
    before = _inodes(out)
    plan = write_tree(files(a="1\n", b="3\n", secret="k\n", new="n\n"), out, "c1")
    assert {c.path: c.kind for c in plan.changes} == {
        "b": "changed", "gone": "removed", "new": "added"
    }
    after = _inodes(out)
    assert after["a"] == before["a"] and after["secret"] == before["secret"]  # linked, kept
    assert after["b"] != before["b"] and (out / "b").read_text() == "3\n"
    assert sorted(after) == sorted(["a", "b", "secret", "new", MARKER])
    assert stat.S_IMODE(os.stat(out / "secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "new").st_mode) == 0o644
    assert all(os.stat(out / rel).st_nlink == 1 for rel in after)  # the old tree is gone
    assert not list(tmp_path.glob(".out.*"))
    assert json.loads((out / MARKER).read_text())["files"].keys() == {"a", "b", "secret", "new"}


def test_rerender_repairs_tampered_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(files(a__b="1\n", secret="k\n"), out, "c1")
    os.chmod(out / "secret", 0o644)  # mode changed by hand: same bytes, yet rewritten 0600
    (out / "a/b").write_text("edited\n")  # content changed by hand: restored
    (out / "a/stray").write_text("x")  # not rendered: removed
    (out / "empty").mkdir()  # a directory the render does not have: removed
    os.chmod(out, 0o755)
    plan = write_tree(files(a__b="1\n", secret="k\n"), out, "c1")
    assert {c.path: c.kind for c in plan.changes} == {"a/b": "changed", "a/stray": "removed"}
    assert (out / "a/b").read_text() == "1\n"
    assert stat.S_IMODE(os.stat(out / "secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted(
        ["a", "a/b", "secret", MARKER]
    )


def test_failed_swap_leaves_previous_tree_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudctl.render.output as output

    out = tmp_path / "out"
    write_tree(files(a="old\n", b="same\n"), out, "c1")
    before = _inodes(out)

    def boom(root: Path) -> bool:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(output, "_syncfs", boom)
    with pytest.raises(OSError, match="I/O error"):
        write_tree(files(a="new\n", b="same\n"), out, "c1")
    assert (out / "a").read_text() == "old\n"
    assert _inodes(out) == before
    assert all(os.stat(out / rel).st_nlink == 1 for rel in before)  # links undone with tmp
    assert not list(tmp_path.glob(".out.*"))


def test_without_syncfs_every_written_file_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudctl.render.output as output

    out = tmp_path / "out"
    write_tree(files(a="1\n", b="2\n"), out, "c1")
    synced: list[str] = []
    monkeypatch.setattr(output, "_syncfs", lambda root: False)
    monkeypatch.setattr(output, "_fsync_file", lambda p: synced.append(p.name))
    write_tree(files(a="1\n", b="3\n", c="4\n"), out, "c1")
    assert sorted(synced) == sorted(["b", "c", MARKER])  # a was linked, not written
    assert (out / "b").read_text() == "3\n" and (out / "c").read_text() == "4\n"
