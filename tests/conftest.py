"""Shared fixtures: tiny random models written to disk once per session, offline, one torch thread."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from PIL import Image

from thinkdiff_core.tiny import write_tiny_qwen_vl
from thinkdiff_core.vlm import VisionLanguageModel

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory):
    """One tiny model folder per supported family, written lazily."""
    root = tmp_path_factory.mktemp("vlm")
    folders = {}

    def folder(model_type: str = "qwen2_vl"):
        if model_type not in folders:
            folders[model_type] = write_tiny_qwen_vl(root / model_type, model_type)
        return folders[model_type]

    return folder


@pytest.fixture(scope="session")
def load_tiny_vlm(tiny_vlm_dirs):
    models = {}

    def load(model_type: str = "qwen2_vl") -> VisionLanguageModel:
        if model_type not in models:
            models[model_type] = VisionLanguageModel.from_pretrained(tiny_vlm_dirs(model_type), dtype="fp32", device="cpu")
        return models[model_type]

    return load


@pytest.fixture(scope="session")
def tiny_vlm(load_tiny_vlm) -> VisionLanguageModel:
    return load_tiny_vlm("qwen2_vl")


@pytest.fixture
def colour_images():
    def make(*colours: str, size=(64, 64)):
        return [Image.new("RGB", size, colour) for colour in colours]

    return make
