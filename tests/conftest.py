"""Shared fixtures: tiny random models written to disk once per session, offline, one torch thread."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from PIL import Image

from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH, write_tiny_blip2, write_tiny_qwen_vl
from thinkdiff_core.vision import VisionEncoder
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


@pytest.fixture(scope="session")
def blip2_dir(tmp_path_factory):
    """One tiny blip2-flan-t5-xxl-like folder (real 224px / patch-14 geometry, vision width 32) per session."""
    return write_tiny_blip2(tmp_path_factory.mktemp("blip2") / "blip2-flan-t5-xxl", vision_width=TINY_BLIP2_VISION_WIDTH)


@pytest.fixture(scope="session")
def vision_encoder(blip2_dir) -> VisionEncoder:
    return VisionEncoder.from_pretrained(blip2_dir, dtype="fp32", device="cpu")


@pytest.fixture
def colour_images():
    def make(*colours: str, size=(64, 64)):
        return [Image.new("RGB", size, colour) for colour in colours]

    return make


# --- The repository as the package ComfyUI imports (shared by tests/nodes and tests/comfyui) -------------
# ComfyUI imports the repository folder as a package and the node modules use relative imports
# (`from ..thinkdiff_core import ...`). `pack_module("nodes.operations")` imports a module the same way without
# running the root __init__ (ComfyUI's entry point), and maps `<pack>.thinkdiff_core` onto the one
# `thinkdiff_core` the other tests use, so there is a single copy of every class.

import importlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

PACK_NAME = "thinkdiff_pack_under_test"
REPO_ROOT = Path(__file__).resolve().parents[1]


class _CoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `<pack>.thinkdiff_core[.module]` to the already importable `thinkdiff_core[.module]`."""

    prefix = f"{PACK_NAME}.thinkdiff_core"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.prefix or fullname.startswith(self.prefix + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == self.prefix)
        return None

    def create_module(self, spec):
        return importlib.import_module(spec.name[len(PACK_NAME) + 1:])

    def exec_module(self, module):
        pass


@pytest.fixture(scope="session")
def pack_module():
    if PACK_NAME not in sys.modules:
        package = types.ModuleType(PACK_NAME)
        package.__path__ = [str(REPO_ROOT)]
        sys.modules[PACK_NAME] = package
        sys.meta_path.insert(0, _CoreAlias())

    def load(name: str) -> types.ModuleType:
        return importlib.import_module(f"{PACK_NAME}.{name}")

    return load
