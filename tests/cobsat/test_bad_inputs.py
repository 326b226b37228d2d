"""`python -m train.cobsat` with inputs that would lose work: refused before any model loads."""

import pytest

from train.cobsat import harness


def test_cobsat_refuses_an_unwritable_out_before_loading_models(tmp_path, capsys):
    out = unwritable(tmp_path)
    assert harness.main(["--tiny", "--out", str(out), "--tasks", "1", "--shots", "2", "--num_prompts", "1"]) == 2
    assert "cannot write there" in capsys.readouterr().err


def unwritable(tmp_path):
    """A destination that cannot take files, for root too: a path whose parent is a regular file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    return blocker / "results"


@pytest.mark.parametrize("option", ["generation.steps", "generation.size", "num_prompts", "generation.max_new_tokens",
                                    "generation.batch_size", "judge.batch_size", "judge.max_new_tokens"])
def test_zero_counts_are_refused_not_replaced_by_defaults(tmp_path, capsys, option):
    assert harness.main(["--tiny", "--out", str(tmp_path / "run"), f"--{option}", "0"]) == 2
    assert capsys.readouterr().err == f"error: {option} must be at least 1, got 0.\n"
    assert not (tmp_path / "run").exists()
