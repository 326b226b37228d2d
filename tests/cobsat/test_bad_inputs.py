"""`python -m train.cobsat` with inputs that would lose work: refused before any model loads."""

import pytest

from train.cobsat import harness


def test_cobsat_refuses_an_unwritable_out_before_loading_models(tmp_path, capsys):
    out = unwritable(tmp_path)
    assert harness.main(["--tiny", "--out", str(out), "--tasks", "1", "--shots", "2", "--num-prompts", "1"]) == 2
    assert "cannot write there" in capsys.readouterr().err


def unwritable(tmp_path):
    """A destination that cannot take files, for root too: a path whose parent is a regular file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    return blocker / "results"


@pytest.mark.parametrize("flag", ["--steps", "--size", "--num-prompts", "--max-new-tokens", "--batch-size"])
def test_zero_counts_are_refused_not_replaced_by_defaults(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as stop:
        harness.main(["--tiny", "--out", str(tmp_path / "run"), flag, "0"])
    assert stop.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
