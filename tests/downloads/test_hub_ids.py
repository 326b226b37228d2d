"""A BLIP-2 Hub id given to the vision encoder (scripts, the CLI) fetches only the vision files, into the Hub cache."""

import json

import pytest
import torch

from thinkdiff_core.vision import VisionEncoder

REPO = "Salesforce/blip2-flan-t5-xxl"


def test_only_the_vision_shards_are_downloaded(served, blip2_dir, vision_encoder, colour_images):
    encoder = VisionEncoder.from_pretrained(REPO, dtype="fp32", device="cpu")

    weight_map = json.loads((blip2_dir / "model.safetensors.index.json").read_text())["weight_map"]
    vision_shards = {shard for name, shard in weight_map.items() if name.startswith("vision_model.")}
    assert len(vision_shards) == 2 and len(set(weight_map.values())) == 4  # the tiny folder's layout: the test means something
    fetched = [name for method, name, _ in served.requests if method == "GET" and not name.startswith("/api/")]
    assert sorted(fetched) == sorted(["model.safetensors.index.json", "config.json", "preprocessor_config.json",
                                      *vision_shards])
    assert encoder.model_id == REPO
    images = colour_images("teal", "orange")
    assert torch.equal(encoder.encode(images).features, vision_encoder.encode(images).features)


def test_a_repo_missing_on_the_hub_says_what_to_do(hub):
    with pytest.raises(FileNotFoundError, match="model.safetensors.index.json .* pass the folder's local path"):
        VisionEncoder.from_pretrained(REPO, device="cpu")


def test_offline_without_a_cache_says_what_to_do(offline):
    with pytest.raises(FileNotFoundError, match="pass the folder's local path"):
        VisionEncoder.from_pretrained("Salesforce/not-cached-here", device="cpu")
    assert offline.requests == []
