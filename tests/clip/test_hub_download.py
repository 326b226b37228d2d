"""A BLIP-2 Hub id downloads only the files the vision tower needs (the Hub is served from a folder the test wrote)."""

import json
import shutil

import huggingface_hub
import pytest
import torch

from thinkdiff_core.vision import VisionEncoder

REPO = "Salesforce/blip2-flan-t5-xxl"


@pytest.fixture
def hub_from(monkeypatch, tmp_path):
    """Serve `folder` as the Hub repo REPO: `hf_hub_download` copies the file into a snapshot folder, as the
    real cache does, and records what was asked for."""
    asked = []

    def serve(folder):
        snapshot = tmp_path / "cache" / "snapshots" / "0123abcd"

        def download(repo_id, filename, **kwargs):
            asked.append(filename)
            if repo_id != REPO or not (folder / filename).is_file():
                raise huggingface_hub.errors.EntryNotFoundError(f"404: {filename} not in {repo_id}")
            snapshot.mkdir(parents=True, exist_ok=True)
            return str(shutil.copy(folder / filename, snapshot / filename))

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
        return asked

    return serve


def test_only_the_vision_shards_are_downloaded(hub_from, blip2_dir, vision_encoder, noise_images):
    asked = hub_from(blip2_dir)
    encoder = VisionEncoder.from_pretrained(REPO, dtype="fp32", device="cpu")

    weight_map = json.loads((blip2_dir / "model.safetensors.index.json").read_text())["weight_map"]
    vision_shards = {shard for name, shard in weight_map.items() if name.startswith("vision_model.")}
    all_shards = set(weight_map.values())
    assert len(vision_shards) == 2 and len(all_shards) == 4  # the tiny folder's layout: the test means something
    assert sorted(asked) == sorted(["model.safetensors.index.json", "config.json", "preprocessor_config.json",
                                    *vision_shards])
    assert encoder.model_id == REPO
    images = noise_images(2)
    assert torch.equal(encoder.encode(images).features, vision_encoder.encode(images).features)


def test_a_missing_hub_file_says_what_to_do(hub_from, tmp_path):
    hub_from(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model.safetensors.index.json .* pass the folder's local path"):
        VisionEncoder.from_pretrained(REPO, device="cpu")


def test_offline_without_a_cache_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="pass the folder's local path"):
        VisionEncoder.from_pretrained("Salesforce/not-cached-here", device="cpu")
