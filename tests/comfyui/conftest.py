"""Opt-in: a real ComfyUI server (from COMFYUI_DIR) with this pack, tiny stand-in models and the real frontend.

Everything is written under a temporary `--base-directory`: the ComfyUI checkout is never modified.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.nodes.shipped import REPO, WORKFLOWS

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
TINY_VLM_HIDDEN = 64

sys.path.insert(0, str(Path(__file__).parent))  # harness.py and stand_ins.py beside this file
from harness import PACK_FOLDER  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if COMFYUI_DIR:
        return
    skip = pytest.mark.skip(reason="the real-ComfyUI suite runs only when COMFYUI_DIR names a ComfyUI checkout "
                                   "(see docs/comfyui.md, 'Tests against a real ComfyUI')")
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """ComfyUI's base directory: custom_nodes (this pack + the stand-in node) and models. No input/ folder: the
    pack copies the workflows' shipped pictures there on start, as on a user's first start."""
    from safetensors.torch import save_file
    from stand_ins import (write_stand_in_node, write_taef1, write_tiny_chroma, write_tiny_flux, write_tiny_ltxv,
                           write_tiny_sd35)

    from tests.tiny_files import write_official_aligner
    from thinkdiff_core.testing.tiny import TINY_BLIP2_VISION_WIDTH, write_tiny_blip2, write_tiny_qwen_vl
    from thinkdiff_core.vision_files import convert_blip2_vision

    base = tmp_path_factory.mktemp("comfyui-base")
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    write_stand_in_node(custom_nodes)
    models = base / "models"
    # The workflows' VLM comes from a folder only extra_model_paths.yaml names (key LLM); models/vlm/ has another.
    write_tiny_qwen_vl(base / "shared_llm" / "Qwen2-VL-7B-Instruct", "qwen2_vl")
    write_tiny_qwen_vl(models / "vlm" / "tiny-Qwen2.5-VL", "qwen2_5_vl")
    write_official_aligner(models / "thinkdiff" / "thinkdiff_lvlm.pth", input_size=TINY_VLM_HIDDEN)
    write_official_aligner(models / "thinkdiff" / "aligner_for_hidden_32.pth", input_size=32, seed=1)
    # ThinkDiff-CLIP: the workflows' BLIP-2 folder in models/clip_vision/, a converted vision file in models/thinkdiff/
    # (beside the aligners, listed only by the vision loader), and a CLIP vision file of ComfyUI's own (listed by neither)
    blip2 = write_tiny_blip2(models / "clip_vision" / "blip2-flan-t5-xxl", vision_width=TINY_BLIP2_VISION_WIDTH)
    convert_blip2_vision(blip2, models / "thinkdiff" / "blip2_vision.safetensors")
    save_file({"vision_model.post_layernorm.weight": torch.ones(8)}, str(models / "clip_vision" / "clip_vision_h.safetensors"))
    write_official_aligner(models / "thinkdiff" / "thinkdiff_clip.pth", input_size=TINY_BLIP2_VISION_WIDTH, variant="clip",
                           seed=2)  # reads the tiny tower's 32-wide tokens
    write_tiny_flux(models / "diffusion_models" / "flux1-dev.safetensors", context_width=4096)
    # FLUX.1 Kontext [dev] ships in the FLUX.1-dev key layout (ComfyUI detects it as FLUX; ReferenceLatent does the rest)
    (models / "diffusion_models" / "flux1-kontext-dev.safetensors").symlink_to("flux1-dev.safetensors")
    write_taef1(models / "vae_approx")
    write_taef1(models / "vae_approx", seed=2, name="taesd3")
    write_tiny_chroma(models / "diffusion_models" / "Chroma1-HD.safetensors")
    write_tiny_sd35(models / "checkpoints" / "sd3.5_large.safetensors")
    # LTX-Video 0.9.x: transformer and video VAE in one checkpoint, laid out by the running ComfyUI's own classes
    write_tiny_ltxv(models / "checkpoints" / "ltx-video-2b-v0.9.5.safetensors", Path(COMFYUI_DIR))
    (base / "extra_model_paths.yaml").write_text(f"thinkdiff_suite:\n    base_path: {base}\n    LLM: shared_llm\n")
    return base


@pytest.fixture(scope="session")
def server(comfy_base):
    from harness import ComfyServer

    comfy = ComfyServer(Path(COMFYUI_DIR), comfy_base, comfy_base / "extra_model_paths.yaml")
    try:
        comfy.wait_ready()
        yield comfy
    finally:
        comfy.stop()


@pytest.fixture(scope="session")
def frontend(server):
    """The server's own page in headless Chromium, for editor-format -> API conversion."""
    from harness import chromium_page

    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail('the real-ComfyUI suite needs Playwright: python -m pip install "playwright>=1.40"')
    with chromium_page(server.url) as page:
        yield page


@pytest.fixture(scope="session")
def editor_workflows() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in WORKFLOWS}


@pytest.fixture(scope="session")
def api_workflows(frontend, editor_workflows) -> dict[str, dict]:
    """Each shipped workflow as the real frontend turns it into a POST /prompt body."""
    from harness import editor_to_api

    return {name: editor_to_api(frontend, workflow) for name, workflow in editor_workflows.items()}
