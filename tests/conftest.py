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


# --- The repository as the package ComfyUI imports (shared by tests/nodes and tests/comfyui) -------------
# ComfyUI imports the repository folder as a package and the node modules use relative imports
# (`from ..thinkdiff_core import ...`). `pack_module("nodes.spec")` imports a module the same way without
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
