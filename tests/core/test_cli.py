"""The shared CLI ending: user errors (bad values, files, damaged safetensors) are one `error:` line, exit 2."""

import argparse

import pytest
from safetensors.torch import load_file

from thinkdiff_core.cli import positive_int, run_cli


def test_a_damaged_safetensors_file_is_one_error_line(tmp_path, capsys):
    broken = tmp_path / "aligner.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    assert run_cli(lambda: str(load_file(broken))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_an_unreadable_path_is_one_error_line(tmp_path, capsys):
    assert run_cli(lambda: (tmp_path / "missing.txt").read_text()) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_a_bug_still_raises():
    with pytest.raises(KeyError):
        run_cli(lambda: {}["x"])


@pytest.mark.parametrize("text", ["0", "-3", "two"])
def test_positive_int_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)


def test_import_notices_known_to_be_harmless_are_not_printed():
    """torchao, torch, transformers and diffusers print these on a CPU machine without torchvision; the CLIs do not."""
    import subprocess
    import sys

    from thinkdiff_core.quiet import HARMLESS

    code = ("import thinkdiff_core, transformers, diffusers, torchao, bitsandbytes; "
            "from transformers import CLIPImageProcessor; from diffusers import FluxPipeline")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name, pattern in HARMLESS.items():
        assert not any(pattern.search(line) for line in result.stderr.splitlines()), (name, result.stderr)
    unquieted = subprocess.run([sys.executable, "-c", code.replace("thinkdiff_core, ", "")], capture_output=True,
                               text=True, timeout=300)
    assert any(pattern.search(unquieted.stderr) for pattern in HARMLESS.values()), "the notices no longer appear"
