"""`python -m thinkdiff_core.convert vision`: folder -> vision-only file -> the same encoder outputs."""

import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from thinkdiff_core.convert import main
from thinkdiff_core.vision import VisionEncoder
from thinkdiff_core.vision_files import FORMAT_NAME, read_vision_weights

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_gives_the_same_tokens(blip2_dir, tmp_path, vision_encoder, noise_images):
    destination = tmp_path / "clip_vision" / "blip2_vision.safetensors"
    assert main(["vision", str(blip2_dir), str(destination)]) == 0
    with safe_open(str(destination), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert keys and all(k.startswith("vision_model.") for k in keys)
    assert metadata["format"] == FORMAT_NAME and metadata["source_model_id"] == "blip2-flan-t5-xxl"
    original, converted = read_vision_weights(blip2_dir), read_vision_weights(destination)
    assert converted.tensors.keys() == original.tensors.keys()
    assert all(torch.equal(converted.tensors[k], v) for k, v in original.tensors.items())
    assert converted.processor_settings == original.processor_settings
    encoder = VisionEncoder.from_pretrained(destination, dtype="fp32")
    images = noise_images(3)
    assert encoder.model_id == vision_encoder.model_id
    assert torch.equal(encoder.encode(images).features, vision_encoder.encode(images).features)
    assert [p.name for p in destination.parent.iterdir()] == [destination.name]  # no temp file left


def test_never_overwrites_unasked(blip2_dir, tmp_path, capsys):
    destination = tmp_path / "vision.safetensors"
    destination.write_bytes(b"the user's file")
    assert main(["vision", str(blip2_dir), str(destination)]) == 2
    assert "exists" in capsys.readouterr().err and destination.read_bytes() == b"the user's file"
    assert main(["vision", str(blip2_dir), str(destination), "--overwrite", "--dtype", "bf16"]) == 0
    weights = read_vision_weights(destination)
    assert all(t.dtype == torch.bfloat16 for t in weights.tensors.values())


def test_bad_source_is_reported(tmp_path, capsys):
    assert main(["vision", str(tmp_path / "nowhere"), str(tmp_path / "out.safetensors")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["vision", str(tmp_path), str(tmp_path / "out.safetensors")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_command_line(blip2_dir, tmp_path):
    destination = tmp_path / "vision.safetensors"
    result = subprocess.run([sys.executable, "-m", "thinkdiff_core.convert", "vision", str(blip2_dir), str(destination)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "hidden 32" in result.stdout and destination.is_file()
