"""Import this repository as the package ComfyUI imports, for the benchmarks.

With a ComfyUI checkout (`--comfyui-dir` or COMFYUI_DIR) the root `__init__` runs as in ComfyUI and the
real node classes are measured; without one, only the plain node modules are imported (the same
functions the nodes call, with the same callback plumbing).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACK = "thinkdiff_pack"


def load_pack(comfyui_dir: str | None = None) -> tuple[types.ModuleType, bool]:
    """(the pack package, whether ComfyUI is imported); its modules are then `importlib.import_module(f"{PACK}.x")`."""
    comfyui_dir = comfyui_dir or os.environ.get("COMFYUI_DIR")
    if comfyui_dir:
        sys.path.insert(0, str(Path(comfyui_dir).resolve()))
        import comfy.cli_args

        comfy.cli_args.args.cpu = not torch.cuda.is_available()  # ComfyUI's device choice, as `--cpu` would set it
        spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = package
        spec.loader.exec_module(package)
        return package, True
    package = types.ModuleType(PACK)
    package.__path__ = [str(REPO)]
    sys.modules[PACK] = package
    return package, False


def module(name: str) -> types.ModuleType:
    return importlib.import_module(f"{PACK}.{name}")
