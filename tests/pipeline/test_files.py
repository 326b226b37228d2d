"""Atomic writes: all or nothing under the real name, and no silent replacement."""

import pytest

from thinkdiff_core.files import write_atomic


def test_a_failed_write_leaves_neither_the_file_nor_a_temp(tmp_path):
    def crash(temporary):
        temporary.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "out" / "result.json", crash)
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_files_are_replaced_only_when_asked(tmp_path):
    target = tmp_path / "result.txt"
    write_atomic(target, lambda t: t.write_text("first"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_atomic(target, lambda t: t.write_text("second"))
    assert target.read_text() == "first"
    write_atomic(target, lambda t: t.write_text("second"), overwrite=True)
    assert target.read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["result.txt"]
