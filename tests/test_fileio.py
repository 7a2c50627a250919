"""core.fileio.atomic_folder: a folder is filled beside its target and moved into place whole."""

import pytest

from core.fileio import atomic_folder


def _temps(folder):
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_new_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "ds"
    with atomic_folder(out) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and not out.exists()
        (tmp / "a" / "b").mkdir(parents=True)
        (tmp / "a" / "b" / "f.txt").write_text("x")
    assert (out / "a" / "b" / "f.txt").read_text() == "x" and not _temps(tmp_path)
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "failed") as tmp:
        (tmp / "f.txt").write_text("half")
        raise RuntimeError("cancelled")
    assert not (tmp_path / "failed").exists() and not _temps(tmp_path)


def test_an_empty_folder_is_replaced_and_a_full_one_refused_unless_merging(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_folder(empty) as tmp:
        (tmp / "f.txt").write_text("new")
    assert (empty / "f.txt").read_text() == "new"
    with pytest.raises(FileExistsError, match="not an empty folder"), atomic_folder(empty) as tmp:
        (tmp / "f.txt").write_text("other")
    assert (empty / "f.txt").read_text() == "new" and not _temps(tmp_path)
    (empty / "mine.txt").write_text("mine")
    (empty / "sub").mkdir()
    (empty / "sub" / "old.txt").write_text("old")
    with atomic_folder(empty, merge=True) as tmp:
        (tmp / "f.txt").write_text("merged")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "g.txt").write_text("g")
    assert (empty / "f.txt").read_text() == "merged" and (empty / "mine.txt").read_text() == "mine"
    assert (empty / "sub" / "old.txt").read_text() == "old" and (empty / "sub" / "g.txt").read_text() == "g"
    assert not _temps(tmp_path)
