"""`python -m thinkdiff_core.generate --tiny`: the whole path on tiny offline models, and output safety."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from thinkdiff_core import generate


def test_tiny_run_writes_a_png_and_refuses_to_overwrite_it(tmp_path, colour_images, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    first, second = colour_images("red", "blue")
    first.save(a), second.save(b)
    out = tmp_path / "results" / "out.png"
    argv = ["--tiny", "--image", str(a), "--image", str(b), "--words", "red", "blue", "green", "--out", str(out),
            "--max-new-tokens", "12", "--steps", "2"]

    assert generate.main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("VLM: ") and f"wrote {out}" in printed.out
    assert re.search(r"VLM answer: .*\| 0/12 ", printed.err)  # the answer's tokens as a console bar
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    written = out.read_bytes()

    assert generate.main(argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == written

    assert generate.main(argv + ["--overwrite", "--seed", "1"]) == 0
    assert out.read_bytes() != written
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_bad_inputs_fail_before_any_model_loads(tmp_path, colour_images, capsys):
    image = tmp_path / "a.png"
    colour_images("red")[0].save(image)
    assert generate.main(["--tiny", "--image", str(tmp_path / "missing.png"), "--words", "a", "b",
                          "--out", str(tmp_path / "o.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert generate.main(["--tiny", "--image", str(image), "--words", "a", "b", "--out", str(tmp_path / "o.gif2")]) == 2
    assert ".png, .jpg or .webp" in capsys.readouterr().err
    assert generate.main(["--tiny", "--flux", "x/y", "--image", str(image), "--words", "a", "b",
                          "--out", str(tmp_path / "o.png")]) == 2
    assert "drop --flux" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()



# --- ThinkDiff-CLIP ---


def test_tiny_clip_run_writes_a_png(tmp_path, colour_images, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path, image in zip((a, b), colour_images("red", "blue")):
        image.save(path)
    out = tmp_path / "clip.png"
    assert generate.main(["--tiny", "--variant", "clip", "--image", str(a), "--image", str(b),
                          "--prompt", "a red cup on a blue box", "--out", str(out), "--steps", "2"]) == 0
    printed = capsys.readouterr()
    assert "VLM:" not in printed.out and f"wrote {out}" in printed.out
    assert "VLM answer" not in printed.err  # no VLM, no token bar
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (64, 64)


def test_variant_is_read_from_local_aligner(tmp_path, colour_images, capsys, tiny_flux_dir, tiny_clip_aligner_path,
                                            blip2_dir):
    """No --variant: the CLIP aligner's metadata selects the CLIP path with the given vision encoder."""
    image = tmp_path / "a.png"
    colour_images("green")[0].save(image)
    out = tmp_path / "local.webp"
    assert generate.main(["--aligner", str(tiny_clip_aligner_path), "--vision-encoder", str(blip2_dir),
                          "--flux", str(tiny_flux_dir), "--device", "cpu", "--dtype", "fp32", "--image", str(image),
                          "--prompt", "a green hat", "--out", str(out), "--steps", "1", "--height", "32",
                          "--width", "32"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as written:
        assert written.format == "WEBP" and written.size == (32, 32)


@pytest.mark.parametrize("extra, message", [
    (["--words", "red", "cup"], "no VLM, so words and instructions are not read"),
    (["--variant", "lvlm"], "--variant lvlm but --aligner"),
    (["--vlm", "models/vlm/Qwen2-VL-7B-Instruct"], "ThinkDiff-CLIP aligner .* Pass the vision encoder"),
], ids=["words", "variant", "vlm"])
def test_clip_aligner_refuses_lvlm_inputs_before_loading(tmp_path, colour_images, capsys, tiny_clip_aligner_path,
                                                         tiny_flux_dir, extra, message):
    image = tmp_path / "a.png"
    colour_images("red")[0].save(image)
    argv = ["--aligner", str(tiny_clip_aligner_path), "--flux", str(tiny_flux_dir),
            "--image", str(image), "--out", str(tmp_path / "o.png")]
    assert generate.main(argv + extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o.png").exists()


def test_lvlm_aligner_refuses_a_prompt_and_a_vision_encoder(tmp_path, colour_images, capsys, tiny_aligner_path,
                                                           tiny_flux_dir):
    image = tmp_path / "a.png"
    colour_images("red")[0].save(image)
    argv = ["--aligner", str(tiny_aligner_path), "--flux", str(tiny_flux_dir),
            "--image", str(image), "--words", "a", "b", "--out", str(tmp_path / "o.png")]
    assert generate.main(argv + ["--prompt", "a cat"]) == 2
    assert "VLM's answer alone" in capsys.readouterr().err
    assert generate.main(argv + ["--vision-encoder", str(tmp_path / "no-blip2-here")]) == 2
    assert "ThinkDiff-LVLM aligner" in capsys.readouterr().err


# --- VLM weight precision ---


def test_tiny_run_with_the_vlm_in_fp8(tmp_path, colour_images, capsys):
    image, out = tmp_path / "a.png", tmp_path / "fp8.png"
    colour_images("red")[0].save(image)
    assert generate.main(["--tiny", "--vlm-precision", "fp8", "--image", str(image), "--words", "red", "blue",
                          "--out", str(out), "--max-new-tokens", "6", "--steps", "1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.is_file()


def test_nf4_without_bitsandbytes_is_one_error_line(tmp_path, colour_images):
    """A fresh Python in which bitsandbytes cannot be imported runs the CLI: exit 2, the pip command, no traceback."""
    image = tmp_path / "a.png"
    colour_images("red")[0].save(image)
    argv = ["--tiny", "--vlm-precision", "nf4", "--image", str(image), "--words", "red", "blue",
            "--out", str(tmp_path / "o.png")]
    script = ("import sys; sys.modules['bitsandbytes'] = None\n"
              f"from thinkdiff_core.generate import main; sys.exit(main({argv!r}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[2], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: The nf4 precision needs the optional package bitsandbytes") and \
        'pip install -U "bitsandbytes>=0.45"' in last
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("option", ["--steps", "--height", "--width", "--max-new-tokens"])
def test_zero_sizes_and_counts_are_refused_not_replaced_by_defaults(tmp_path, option, capsys):
    with pytest.raises(SystemExit) as stop:
        generate.main(["--tiny", "--words", "a", "b", "--out", str(tmp_path / "o.png"), option, "0"])
    assert stop.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_nan_temperature_is_one_error_line(tmp_path, colour_images, capsys):
    image = tmp_path / "a.png"
    colour_images("red")[0].save(image)
    assert generate.main(["--tiny", "--image", str(image), "--words", "a", "b", "--out", str(tmp_path / "o.png"),
                          "--temperature", "nan"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "temperature" in error


def test_tiny_run_needs_no_images_and_a_real_run_asks_for_one(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert generate.main(["--tiny", "--out", str(out), "--max-new-tokens", "4", "--steps", "1"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    capsys.readouterr()
    assert generate.main(["--tiny", "--variant", "clip", "--out", str(tmp_path / "c.png"), "--steps", "1"]) == 0
    capsys.readouterr()
    assert generate.main(["--out", str(tmp_path / "y.png")]) == 2
    assert "--image PATH" in capsys.readouterr().err and not (tmp_path / "y.png").exists()
