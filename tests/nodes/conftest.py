"""Fixtures for the node-layer tests, which run without ComfyUI (plain node modules via `pack_module`)."""

from __future__ import annotations

import json

import pytest

from tests.nodes.shipped import WORKFLOWS
from tests.tiny_files import write_official_aligner
from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH


@pytest.fixture(scope="session")
def operations(pack_module):
    return pack_module("nodes.operations")


@pytest.fixture(scope="session")
def model_folders(pack_module):
    return pack_module("nodes.model_folders")


@pytest.fixture(scope="session")
def environment(pack_module):
    return pack_module("nodes.environment")


@pytest.fixture(scope="session")
def workflows() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in WORKFLOWS}


@pytest.fixture(scope="session")
def official_aligner_files(tmp_path_factory):
    """Official-layout aligners (random weights): LVLM ones reading 64-wide tokens (the tiny VLM) and 32-wide ones,
    and a CLIP one reading the tiny BLIP-2 tower's 32-wide tokens; all write 4096 (FLUX's T5 width)."""
    folder = tmp_path_factory.mktemp("aligners")
    files = {input_size: write_official_aligner(folder / f"thinkdiff_lvlm_{input_size}.pth", input_size, seed=input_size)
             for input_size in (64, 32)}
    files["clip"] = write_official_aligner(folder / "thinkdiff_clip.pth", TINY_BLIP2_VISION_WIDTH, variant="clip", seed=5)
    return files
