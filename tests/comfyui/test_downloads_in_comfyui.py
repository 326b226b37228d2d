"""Opt-in: a real ComfyUI without any ThinkDiff model on disk, its huggingface_hub pointed at the stand-in Hub.

The loaders list the known models as download entries; a prompt that picks the LVLM aligner's entry downloads
it (the node's progress bar reports the bytes over the websocket) into models/thinkdiff/, where it is an
ordinary local entry from then on. A server of its own (HF_ENDPOINT set, models/ empty), not the suite's.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from harness import PACK_FOLDER, ComfyServer, watch_prompt  # noqa: E402  (tests/comfyui is on sys.path via conftest)

from tests.downloads.hub_stand_in import StandInHub
from tests.tiny_files import write_official_aligner

REPO = Path(__file__).resolve().parents[2]
ALIGNER_ENTRY = "thinkdiff_lvlm.pth (download from Mifucius/ThinkDiff)"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    stand_in = StandInHub()
    repo = tmp_path_factory.mktemp("repo")
    write_official_aligner(repo / "thinkdiff_lvlm.pth", input_size=64, seed=2)
    stand_in.repos["Mifucius/ThinkDiff"] = repo
    yield stand_in
    stand_in.close()


@pytest.fixture(scope="module")
def bare_server(hub, tmp_path_factory):
    base = tmp_path_factory.mktemp("bare-comfyui")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    (base / "extra_model_paths.yaml").write_text("{}\n")
    server = ComfyServer(Path(os.environ["COMFYUI_DIR"]), base, base / "extra_model_paths.yaml", environment={
        "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(base / "hf-home")})
    try:
        server.wait_ready()
        yield server, base
    finally:
        server.stop()


def options(server, node_id: str, name: str) -> list[str]:
    return server.get(f"/object_info/{node_id}")[node_id]["input"]["required"][name][1]["options"]


def _run_collecting_progress(server, prompt: dict) -> dict:
    """Run `prompt`, keeping node 1's progress messages and how it ended."""
    seen: dict = {"progress": [], "ended": None}

    async def handle(kind: str, data: dict, session) -> bool:
        if kind == "progress" and data["node"] == "1":
            seen["progress"].append((data["value"], data["max"]))
        elif kind in ("execution_success", "execution_error"):
            seen["ended"] = kind, data
            return True
        return False

    asyncio.run(watch_prompt(server, prompt, handle))
    return seen


def test_a_picked_download_entry_downloads_with_progress_and_becomes_a_local_entry(hub, bare_server):
    server, base = bare_server
    assert options(server, "ThinkDiffAlignerLoader", "aligner_name") == [
        ALIGNER_ENTRY, "thinkdiff_clip.pth (download from Mifucius/ThinkDiff)"]
    assert options(server, "ThinkDiffVLMLoader", "model") == ["Qwen2-VL-7B-Instruct (download from Qwen/Qwen2-VL-7B-Instruct)"]
    assert options(server, "ThinkDiffVisionLoader", "model") == [
        "blip2-flan-t5-xxl (download from Salesforce/blip2-flan-t5-xxl)"]
    assert not [request for request in hub.requests if "/resolve/" in request[1] or "/tree/" in request[1]]

    prompt = {"1": {"class_type": "ThinkDiffAlignerLoader", "inputs": {"aligner_name": ALIGNER_ENTRY}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    seen = _run_collecting_progress(server, prompt)
    assert seen["ended"][0] == "execution_success", seen["ended"]

    source = hub.repos["Mifucius/ThinkDiff"] / "thinkdiff_lvlm.pth"
    downloaded = base / "models" / "thinkdiff" / "thinkdiff_lvlm.pth"
    assert downloaded.read_bytes() == source.read_bytes()
    size = source.stat().st_size
    values = [value for value, _ in seen["progress"]]
    assert len(values) > 2 and values == sorted(values) and seen["progress"][-1] == (size, size)
    assert options(server, "ThinkDiffAlignerLoader", "aligner_name") == [
        "thinkdiff_lvlm.pth", "thinkdiff_clip.pth (download from Mifucius/ThinkDiff)"]
    print(f"\ndownload in ComfyUI: {size} bytes, {len(values)} progress messages")
