"""The stand-in Hub (hub_stand_in.py) with huggingface_hub's own endpoint setting pointed at it, and the repos it serves:
the tiny models from thinkdiff_core.testing under the names of the real ones."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.tiny_files import write_official_aligner
from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH

sys.path.insert(0, str(Path(__file__).parent))  # hub_stand_in.py beside this file

from hub_stand_in import StandInHub  # noqa: E402


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running stand-in Hub that huggingface_hub talks to (and an empty Hub cache), online for this test only."""
    from huggingface_hub import constants, file_download

    stand_in = StandInHub()
    template = stand_in.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "ENDPOINT", stand_in.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template, raising=False)  # < 1.0 reads its copy
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    set_offline(monkeypatch, False)
    yield stand_in
    stand_in.close()
    remake_sessions()  # after monkeypatch's undo, the next request gets a session made with the setting restored


@pytest.fixture
def offline(hub, monkeypatch) -> StandInHub:
    """The stand-in Hub running, but huggingface_hub in offline mode (`HF_HUB_OFFLINE`)."""
    set_offline(monkeypatch, True)
    return hub


def set_offline(monkeypatch, value: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", value)
    remake_sessions()


def remake_sessions() -> None:
    """huggingface_hub < 1.0 reads HF_HUB_OFFLINE when it makes an HTTP session, and keeps that session: drop it."""
    from huggingface_hub import utils

    getattr(utils, "reset_sessions", lambda: None)()


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory, tiny_vlm_dirs, blip2_dir) -> dict[str, Path]:
    """Repo id -> folder served: each holds files the downloads must leave out too (README.md, other weights)."""
    root = tmp_path_factory.mktemp("hub-repos")
    qwen = Path(shutil.copytree(tiny_vlm_dirs("qwen2_vl"), root / "qwen"))
    (qwen / "README.md").write_text("# the model card\n")
    (qwen / "pytorch_model.bin").write_bytes(b"old weights the loader never reads")
    thinkdiff = root / "thinkdiff"
    write_official_aligner(thinkdiff / "thinkdiff_lvlm.pth", input_size=64, seed=3)
    write_official_aligner(thinkdiff / "thinkdiff_clip.pth", TINY_BLIP2_VISION_WIDTH, variant="clip", seed=4)
    (thinkdiff / "README.md").write_text("# ThinkDiff\n")
    return {"Qwen/Qwen2-VL-7B-Instruct": qwen, "Mifucius/ThinkDiff": thinkdiff, "Salesforce/blip2-flan-t5-xxl": blip2_dir}


@pytest.fixture
def served(hub, hub_repos) -> StandInHub:
    hub.repos.update(hub_repos)
    return hub


@pytest.fixture(scope="session")
def model_folders(pack_module):
    """The node layer's listing and resolving (nodes/model_folders.py), which the loaders combine with the offers."""
    return pack_module("nodes.model_folders")
