"""`python -m train.cobsat` with inputs that would lose work: refused before any model loads."""

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
