"""Fixtures for the node-layer tests, which run without ComfyUI.

ComfyUI imports the repository folder as a package and our node modules use relative imports
(`from ..thinkdiff_core import ...`). The `pack` fixture does the same here: it registers the
repository root as a package without running its `__init__` (the ComfyUI entry point), so the plain
node modules (`nodes.spec`, `nodes.operations`, ...) import exactly as they do inside ComfyUI, and
`<pack>.thinkdiff_core` resolves to the one `thinkdiff_core` the other tests use (one copy of each class).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PACK = "thinkdiff_pack_under_test"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


class _CoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `<pack>.thinkdiff_core[.module]` to the already importable `thinkdiff_core[.module]`."""

    prefix = f"{PACK}.thinkdiff_core"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.prefix or fullname.startswith(self.prefix + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == self.prefix)
        return None

    def create_module(self, spec):
        return importlib.import_module(spec.name[len(PACK) + 1:])

    def exec_module(self, module):
        pass


def import_pack_module(name: str) -> types.ModuleType:
    """`nodes.spec` -> the module as ComfyUI would import it inside the pack (no ComfyUI needed for plain ones)."""
    if PACK not in sys.modules:
        package = types.ModuleType(PACK)
        package.__path__ = [str(REPO)]
        sys.modules[PACK] = package
        sys.meta_path.insert(0, _CoreAlias())
    return importlib.import_module(f"{PACK}.{name}")


@pytest.fixture(scope="session")
def spec():
    return import_pack_module("nodes.spec")


@pytest.fixture(scope="session")
def operations():
    return import_pack_module("nodes.operations")


@pytest.fixture(scope="session")
def model_folders():
    return import_pack_module("nodes.model_folders")


@pytest.fixture(scope="session")
def environment():
    return import_pack_module("nodes.environment")


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
