"""Fixtures for the node-layer tests, which run without ComfyUI (plain node modules via `pack_module`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


@pytest.fixture(scope="session")
def spec(pack_module):
    return pack_module("nodes.spec")


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
    """Official-layout `.pth` aligners (random weights) reading 64-wide tokens (the tiny VLM) and 32-wide ones."""
    from thinkdiff_core import Aligner

    folder = tmp_path_factory.mktemp("aligners")
    files = {}
    for input_size in (64, 32):
        torch.manual_seed(input_size)
        state = {f"mm_projector.{k}": v for k, v in Aligner(input_size, 4096).state_dict().items()}
        config = {"model": {"arch": "thinkdiff_lvlm", "mllama_pretrained_model_name_or_path": "tiny/qwen2-vl"}}
        files[input_size] = folder / f"thinkdiff_lvlm_{input_size}.pth"
        torch.save({"model": state, "config": config}, files[input_size])
    return files
