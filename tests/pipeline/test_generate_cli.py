"""`python -m thinkdiff_core.generate --tiny`: the whole path on tiny offline models, and output safety."""

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
    printed = capsys.readouterr().out
    assert printed.startswith("VLM: ") and f"wrote {out}" in printed
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

