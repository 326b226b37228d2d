"""Opt-in: the pack inside a real ComfyUI server, driven like a user's browser drives it.

Stand-ins (see stand_ins.py and conftest.py): tiny models in the real file layouts under the workflows'
file names: a tiny Qwen2-VL folder as `Qwen2-VL-7B-Instruct`, a tiny random BLIP-2 folder (vision width
32, the real 224px / patch-14 geometry, so 65 tokens per picture) as `blip2-flan-t5-xxl`, official-layout
`thinkdiff_lvlm.pth` (64 -> 4096) and `thinkdiff_clip.pth` (32 -> 4096), a 1+1-block FLUX.1-dev reading
4096-wide text, TAEF1. One swap the suite must make: ComfyUI's FLUX text-encoder loader always builds a
full-size T5-XXL, so `DualCLIPLoader` + `CLIPTextEncode` (ComfyUI's nodes, never ours) become a
test-only node that outputs a base conditioning of the FLUX shape (256 tokens x 4096 and a pooled
768 vector, both derived from the prompt text): in the LVLM workflows it stands for the empty prompt
whose tokens are replaced, in the CLIP workflows for the user's prompt, whose tokens follow the
pictures' (prepend) and whose pooled vector FLUX reads. `ae.safetensors` becomes TAEF1 and the image
64x64 with 3 steps, for speed; every other node and value is the shipped workflow's.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import PACK_FOLDER, status_messages, watch_prompt  # noqa: E402  (tests/comfyui is on sys.path via conftest)
from PIL import Image
from stand_ins import STAND_IN_NODE_ID

from tests.nodes.shipped import REPO, SHIPPED_INPUTS, TEMPLATE_INDEX
from tests.nodes.widgets import NODES

pytestmark = pytest.mark.comfyui

OURS = ("ThinkDiffVLMLoader", "ThinkDiffAlignerLoader", "ThinkDiffReason", "ThinkDiffConditioning",
        "ThinkDiffVisionLoader", "ThinkDiffVisionEncode")
WORKFLOW_NAMES = ["thinkdiff_lvlm_reasoning", "thinkdiff_lvlm_compose", "thinkdiff_lvlm_vs_text", "thinkdiff_clip_compose",
                  "thinkdiff_clip_image_text", "thinkdiff_lvlm_chroma", "thinkdiff_clip_sd35", "thinkdiff_clip_ltxv_video",
                  "thinkdiff_lvlm_ltxv_video", "thinkdiff_lvlm_kontext_edit"]


def node_ids(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def the_id(prompt: dict, class_type: str) -> str:
    (node_id,) = node_ids(prompt, class_type)
    return node_id


TEXT_LAYOUTS = {"DualCLIPLoader": "flux", "TripleCLIPLoader": "sd3", "CLIPLoader": "t5"}
"""The stand-in node's conditioning shape for each text-encoder loader it replaces."""
STAND_IN_VAES = {"sd3.5_large.safetensors": "taesd3"}
"""The tiny autoencoder decoding for a checkpoint whose stand-in holds no VAE."""


def on_stand_ins(prompt: dict) -> dict:
    """The converted workflow with ComfyUI's text encoding swapped for the stand-in (the shape its loader gives),
    TAEF1 (TAESD3 for the SD3.5 checkpoint's own VAE), 64x64 (Kontext's picture scaled by core ImageScale instead of
    FluxKontextImageScale; LTX-Video's 97 frames cut to 9), 3 steps."""
    prompt = copy.deepcopy(prompt)
    for node_id, node in list(prompt.items()):
        inputs = node["inputs"]
        if node["class_type"] == "CLIPTextEncode":
            layout = TEXT_LAYOUTS[prompt[inputs["clip"][0]]["class_type"]]
            prompt[node_id] = {"class_type": STAND_IN_NODE_ID, "inputs": {"text": inputs["text"], "width": 4096, "layout": layout}}
    for node_id, node in list(prompt.items()):
        inputs = node["inputs"]
        if node["class_type"] in TEXT_LAYOUTS:
            del prompt[node_id]
        elif node["class_type"] == "VAELoader":
            inputs["vae_name"] = "taef1"
        elif node["class_type"] == "EmptySD3LatentImage":
            inputs.update(width=64, height=64)
        elif node["class_type"] == "EmptyLTXVLatentVideo":  # 9 frames: two latent frames (LTX-Video packs 8 + 1)
            inputs.update(width=64, height=64, length=9)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 3
        elif node["class_type"] == "FluxKontextImageScale":  # Kontext's ~1 MP picture: too slow on CPU
            prompt[node_id] = {"class_type": "ImageScale", "inputs": {
                "image": inputs["image"], "upscale_method": "bilinear", "width": 64, "height": 64, "crop": "disabled"}}
        elif node["class_type"] == "CheckpointLoaderSimple" and inputs["ckpt_name"] in STAND_IN_VAES:
            vae_id = f"{node_id}_vae"
            prompt[vae_id] = {"class_type": "VAELoader", "inputs": {"vae_name": STAND_IN_VAES[inputs["ckpt_name"]]}}
            for other in prompt.values():
                for name, value in other["inputs"].items():
                    if value == [node_id, 2]:
                        other["inputs"][name] = [vae_id, 0]
    for node in prompt.values():
        for value in node["inputs"].values():
            assert not isinstance(value, list) or value[0] in prompt, f"dangling link after the swap: {node}"
    return prompt


def run(server, prompt: dict) -> tuple[str, dict]:
    prompt_id = server.queue(prompt)
    return prompt_id, server.wait_history(prompt_id)


def test_the_pack_loads_and_registers_its_nodes(server):
    timing = [line for line in server.log().splitlines() if line.rstrip().endswith("custom_nodes/ComfyUI-ThinkDiff")]
    assert timing and "IMPORT FAILED" not in timing[0], timing
    info = server.get("/object_info")
    assert set(OURS) <= set(info)


WIDGET_KINDS = ("COMBO", "INT", "FLOAT", "STRING", "BOOLEAN")


@pytest.mark.parametrize("node_id", OURS)
def test_the_widget_table_equals_the_real_schema(server, node_id):
    """tests/nodes/widgets.py (what the default suite checks the workflows with) is what ComfyUI serves."""
    table = NODES[node_id]
    info = server.get(f"/object_info/{node_id}")[node_id]
    assert info["display_name"] and info["category"].endswith("/thinkdiff") and len(info["description"]) > 40
    assert not info["input"].get("optional")
    order = info["input_order"]["required"]
    required = info["input"]["required"]
    widgets = [name for name in order if required[name][0] in WIDGET_KINDS]
    grows = [name for name in order if required[name][0] == "COMFY_AUTOGROW_V3"]
    sockets = [name for name in order if name not in widgets and name not in grows]
    assert (widgets, grows, sockets) == ([w.name for w in table.widgets], list(table.grows), list(table.required))
    for name in order:
        assert len(required[name][1]["tooltip"]) > 20, name
    for name in grows:
        template = required[name][1]["template"]
        assert (template["prefix"], template["min"], template["max"]) == ("image", 1, 16)
        assert list(template["input"]["required"].values())[0][0] == "IMAGE"
    for widget in table.widgets:
        kind, options = required[widget.name]
        assert kind == widget.kind, widget.name
        assert options.get("default") == widget.default, widget.name
        assert (options.get("min"), options.get("max"), options.get("step")) == (
            widget.minimum, widget.maximum, widget.step), widget.name
        assert bool(options.get("control_after_generate")) == widget.control_after_generate, widget.name
        assert bool(options.get("multiline")) == widget.multiline, widget.name
        if kind == "COMBO":
            if widget.options is None:
                assert options["options"], f"{widget.name}: the stand-in files should be listed"
                assert all(widget.check_value(choice) is None for choice in options["options"]), widget.name
            else:
                assert options["options"] == list(widget.options), widget.name
    assert info["output"] == list(table.outputs)
    assert len(info["output_name"]) == len(info["output_tooltips"]) == len(table.outputs)
    assert all(len(tooltip) > 20 for tooltip in info["output_tooltips"])


ADVANCED_INPUTS = {"ThinkDiffVLMLoader": {"trust_remote_code", "device"},
                   "ThinkDiffReason": {"top_p", "min_new_tokens", "max_pixels"},
                   "ThinkDiffConditioning": {"token_budget", "allow_other_vlm"}}


def test_rarely_touched_inputs_are_advanced_where_this_comfyui_folds_them(server):
    """Marked advanced only where the running ComfyUI's inputs take the flag (0.8.0's do not: the pack still loads)."""
    io_source = (Path(os.environ["COMFYUI_DIR"]) / "comfy_api" / "latest" / "_io.py").read_text()
    can_fold = "advanced: bool" in io_source
    for node_id in OURS:
        required = server.get(f"/object_info/{node_id}")[node_id]["input"]["required"]
        marked = {name for name, (_, options) in required.items() if options.get("advanced")}
        assert marked == (ADVANCED_INPUTS.get(node_id, set()) if can_fold else set()), node_id


def test_socket_types_chain_the_loaders_through_the_token_sources_to_conditioning(server):
    info = {node_id: server.get(f"/object_info/{node_id}")[node_id] for node_id in OURS}

    def socket(node_id: str, name: str) -> str:
        return info[node_id]["input"]["required"][name][0]

    assert info["ThinkDiffVLMLoader"]["output"] == [socket("ThinkDiffReason", "vlm")] == ["THINKDIFF_VLM"]
    assert info["ThinkDiffVisionLoader"]["output"] == [socket("ThinkDiffVisionEncode", "vision")] == ["THINKDIFF_VISION"]
    assert info["ThinkDiffAlignerLoader"]["output"] == [socket("ThinkDiffConditioning", "aligner")]
    tokens = socket("ThinkDiffConditioning", "tokens")
    assert info["ThinkDiffReason"]["output"] == [tokens, "STRING"] and info["ThinkDiffVisionEncode"]["output"] == [tokens]
    assert socket("ThinkDiffConditioning", "conditioning") == "CONDITIONING"
    assert info["ThinkDiffConditioning"]["output"] == ["CONDITIONING"]


def test_loaders_list_model_folders_from_models_and_extra_model_paths(server):
    vlm_options = server.get("/object_info/ThinkDiffVLMLoader")["ThinkDiffVLMLoader"]["input"]["required"]["model"][1]
    assert vlm_options["options"] == ["Qwen2-VL-7B-Instruct", "tiny-Qwen2.5-VL"]  # LLM: via yaml; models/vlm/
    aligners = server.get("/object_info/ThinkDiffAlignerLoader")["ThinkDiffAlignerLoader"]["input"]["required"]
    # not models/thinkdiff/blip2_vision.safetensors: its metadata says it is a vision file
    assert aligners["aligner_name"][1]["options"] == ["aligner_for_hidden_32.pth", "thinkdiff_clip.pth", "thinkdiff_lvlm.pth"]
    vision = server.get("/object_info/ThinkDiffVisionLoader")["ThinkDiffVisionLoader"]["input"]["required"]
    # models/clip_vision/ (the BLIP-2 folder) and models/thinkdiff/ (the converted file); not clip_vision_h.safetensors
    assert vision["model"][1]["options"] == ["blip2-flan-t5-xxl", "blip2_vision.safetensors"]


def test_every_other_node_type_of_the_workflows_is_in_comfyui_core(server, frontend, editor_workflows):
    info = server.get("/object_info")
    frontend_types = set(frontend.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))
    for workflow in editor_workflows.values():
        for node in workflow["nodes"]:
            assert node["type"] in info or node["type"] in frontend_types, node["type"]
            if node["type"] not in info:
                assert node["type"] == "Note"  # frontend-only, never sent to the server


def test_the_template_endpoint_lists_the_workflows_and_serves_their_index_and_thumbnails(server):
    """ComfyUI 0.8.0 lists every *.json of workflows/ (index.json too, as "index": its frontend 1.35.9 reads no
    index for a pack's templates, it titles them by file name) and serves the folder under the pack's name."""
    listed = set(server.get("/workflow_templates")[PACK_FOLDER])
    index = json.loads(TEMPLATE_INDEX.read_bytes())
    assert server.get(f"/api/workflow_templates/{PACK_FOLDER}/index.json") == index
    names = {template["name"] for category in index for template in category["templates"]}
    assert set(WORKFLOW_NAMES) <= names and listed == names | {"index"}
    for name in names:
        content_type, thumbnail = server.fetch(f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert content_type == "image/jpeg" and thumbnail == (TEMPLATE_INDEX.parent / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("node_id", OURS)
def test_the_server_serves_each_nodes_help_page_where_the_frontend_looks(server, node_id):
    """The frontend's help panel fetches /extensions/<pack folder>/docs/<node id>.md, the folder taken from the
    node's python_module ("custom_nodes.<folder>"), and refuses an answer typed text/html."""
    module = server.get(f"/object_info/{node_id}")[node_id]["python_module"]
    assert module == f"custom_nodes.{PACK_FOLDER}"
    content_type, page = server.fetch(f"/extensions/{module.split('.')[1]}/docs/{node_id}.md")
    assert "text/html" not in content_type and page == (REPO / "web" / "docs" / f"{node_id}.md").read_bytes()


def test_the_shipped_pictures_are_copied_into_input_on_start_and_the_workflows_load_them(server, comfy_base,
                                                                                           editor_workflows):
    """The base had no input/ folder: the pack's start copied its pictures there, byte for byte, so the runs
    below load exactly the shipped pictures under the names the workflows' LoadImage nodes give."""
    input_folder = comfy_base / "input"
    for name, workflow in editor_workflows.items():
        for node in workflow["nodes"]:
            if node["type"] == "LoadImage":
                picture = node["widgets_values"][0]
                assert (input_folder / picture).read_bytes() == (SHIPPED_INPUTS / picture).read_bytes(), (name, picture)
    assert "ThinkDiff: copied" in server.log()
    listed = server.get("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"][0]
    assert {p.name for p in SHIPPED_INPUTS.glob("*.png")} <= set(listed)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_the_frontend_reads_our_widget_values_as_the_table_does(editor_workflows, api_workflows, name):
    for node in editor_workflows[name]["nodes"]:
        if node["type"] in OURS:
            converted = api_workflows[name][str(node["id"])]["inputs"]
            widgets = {key: value for key, value in converted.items() if not isinstance(value, list)}
            assert widgets == NODES[node["type"]].widget_inputs(node.get("widgets_values", []))


@pytest.mark.parametrize("name", ["thinkdiff_lvlm_reasoning", "thinkdiff_lvlm_compose"])
def test_the_shipped_workflow_runs_to_a_saved_png(server, api_workflows, name):
    prompt = on_stand_ins(api_workflows[name])
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    reason, preview, save = (the_id(prompt, t) for t in ("ThinkDiffReason", "PreviewAny", "SaveImage"))
    text = entry["outputs"][reason]["text"][0]
    assert text and entry["outputs"][preview]["text"][0] == text  # shown on our node and by PreviewAny
    (saved,) = entry["outputs"][save]["images"]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.format == "PNG" and image.size == (64, 64)
        assert max(hi - lo for lo, hi in image.getextrema()) > 0, "a flat image: the sampler produced no signal"
    log = server.log()
    assert "Requested to load ThinkDiffModel" in log  # the VLM and aligner went through ComfyUI's memory manager
    assert "unet missing" not in log and "unet unexpected" not in log and "Missing VAE keys" not in log
    print(f"\n{name}: {prompt_id} success, saved {saved['filename']}, VLM text {len(text)} chars")


@pytest.mark.parametrize("precision", ["fp8", "int8", "nf4"])
def test_the_reasoning_workflow_runs_with_the_vlm_quantized(server, api_workflows, precision):
    prompt = on_stand_ins(api_workflows["thinkdiff_lvlm_reasoning"])
    prompt[the_id(prompt, "ThinkDiffVLMLoader")]["inputs"]["dtype"] = precision
    log_before = len(server.log())
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    assert entry["outputs"][the_id(prompt, "ThinkDiffReason")]["text"][0]
    assert f"loaded Qwen2-VL-7B-Instruct in {precision} (computed in float32)" in server.log()[log_before:]
    (saved,) = entry["outputs"][the_id(prompt, "SaveImage")]["images"]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.size == (64, 64) and max(hi - lo for lo, hi in image.getextrema()) > 0
    cached = set(status_messages(entry).get("execution_cached", {}).get("nodes", []))
    assert the_id(prompt, "ThinkDiffVLMLoader") not in cached and the_id(prompt, "ThinkDiffReason") not in cached
    print(f"\nreasoning with the VLM in {precision}: {prompt_id} success")


def test_the_vs_text_workflow_draws_both_images_from_one_answer(server, api_workflows):
    """ThinkDiff and the VLM's text through FLUX's own encoding (the stand-in here), one answer, two saved PNGs."""
    prompt = on_stand_ins(api_workflows["thinkdiff_lvlm_vs_text"])
    assert [prompt[i]["inputs"]["text"] for i in node_ids(prompt, STAND_IN_NODE_ID)
            if isinstance(prompt[i]["inputs"]["text"], list)] == [[the_id(prompt, "ThinkDiffReason"), 1]]
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    pictures = []
    for save in node_ids(prompt, "SaveImage"):
        (saved,) = entry["outputs"][save]["images"]
        with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
            assert image.format == "PNG" and image.size == (64, 64)
            pictures.append(image.tobytes())
    assert len(pictures) == 2 and pictures[0] != pictures[1]


@pytest.mark.parametrize("name, pictures", [("thinkdiff_clip_compose", 2), ("thinkdiff_clip_image_text", 1)])
def test_the_shipped_clip_workflow_runs_to_a_saved_png(server, api_workflows, name, pictures):
    prompt = on_stand_ins(api_workflows[name])
    encode = the_id(prompt, "ThinkDiffVisionEncode")
    assert sorted(key for key in prompt[encode]["inputs"] if key.startswith("images.")) == [
        f"images.image{i}" for i in range(pictures)]
    assert prompt[the_id(prompt, "ThinkDiffConditioning")]["inputs"]["mode"] == "prepend"
    log_before = len(server.log())
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    (saved,) = entry["outputs"][the_id(prompt, "SaveImage")]["images"]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.format == "PNG" and image.size == (64, 64)
        assert max(hi - lo for lo, hi in image.getextrema()) > 0, "a flat image: the sampler produced no signal"
    cached = set(status_messages(entry).get("execution_cached", {}).get("nodes", []))
    assert encode not in cached and the_id(prompt, "ThinkDiffConditioning") not in cached  # new pictures: they ran
    log = server.log()[log_before:]
    if the_id(prompt, "ThinkDiffVisionLoader") not in cached:  # a new tower: ComfyUI's memory manager loaded it
        assert "Requested to load ThinkDiffModel" in log
    assert "unet missing" not in log and "unet unexpected" not in log
    print(f"\n{name}: {prompt_id} success, {pictures} picture(s) encoded and prepended to the prompt, "
          f"saved {saved['filename']}")


def test_a_fixed_seed_lets_comfyui_reuse_the_vlm_answer(server, api_workflows):
    prompt = on_stand_ins(api_workflows["thinkdiff_lvlm_reasoning"])
    run(server, prompt)  # cached from the previous test or computed now
    sampler = the_id(prompt, "KSampler")
    prompt[sampler]["inputs"]["seed"] += 1  # a new picture from the same reasoning
    _, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success"
    cached = set(status_messages(entry)["execution_cached"]["nodes"])
    assert {the_id(prompt, "ThinkDiffReason"), the_id(prompt, "ThinkDiffVLMLoader")} <= cached
    assert sampler not in cached
    print(f"\nre-run with a new sampler seed: cached {sorted(cached)}, sampler re-ran")


def test_a_size_mismatch_is_an_execution_error_and_the_server_stays_up(server, api_workflows):
    prompt = on_stand_ins(api_workflows["thinkdiff_lvlm_reasoning"])
    prompt[the_id(prompt, "ThinkDiffAlignerLoader")]["inputs"]["aligner_name"] = "aligner_for_hidden_32.pth"
    _, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "error"
    error = status_messages(entry)["execution_error"]
    assert error["node_type"] == "ThinkDiffConditioning" and error["exception_type"].endswith("ValueError")
    assert "hidden size 64" in error["exception_message"] and "expects 32" in error["exception_message"]
    assert server.process.poll() is None and server.get("/system_stats")["system"]["comfyui_version"]
    print(f"\nsize mismatch -> execution_error: {error['exception_message'][:160]}")


@pytest.mark.parametrize("name, aligner, expected", [
    ("thinkdiff_lvlm_reasoning", "thinkdiff_clip.pth",
     r"ThinkDiff-LVLM path .* ThinkDiff-CLIP aligner .* Load the LVLM aligner for these tokens"),
    ("thinkdiff_clip_compose", "thinkdiff_lvlm.pth",
     r"ThinkDiff-CLIP path .* ThinkDiff-LVLM aligner .* Load the CLIP aligner for these tokens"),
])
def test_mixing_variants_is_an_execution_error_naming_the_fix(server, api_workflows, name, aligner, expected):
    prompt = on_stand_ins(api_workflows[name])
    prompt[the_id(prompt, "ThinkDiffAlignerLoader")]["inputs"]["aligner_name"] = aligner
    _, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "error"
    error = status_messages(entry)["execution_error"]
    assert error["node_type"] == "ThinkDiffConditioning" and error["exception_type"].endswith("ValueError")
    assert re.search(expected, error["exception_message"]), error["exception_message"]
    assert server.process.poll() is None and server.get("/system_stats")["system"]["comfyui_version"]
    print(f"\n{name} with {aligner} -> execution_error: {error['exception_message'][:200]}")


async def _interrupt_once_generating(server, prompt: dict, node_id: str, after: int) -> dict:
    """Queue `prompt`, POST /interrupt once `node_id` reported `after` tokens, return what the websocket said."""
    seen: dict = {"progress": [], "interrupted": None, "ended": None}

    async def handle(kind: str, data: dict, session) -> bool:
        if kind == "progress" and data["node"] == node_id:
            seen["progress"].append((data["value"], data["max"]))
            if data["value"] >= after and not seen.get("asked"):
                seen["asked"] = True
                async with session.post(f"{server.url}/interrupt", json={}) as interrupt:
                    assert interrupt.status == 200
        elif kind == "execution_interrupted":
            seen["interrupted"] = data
            return True
        elif kind in ("execution_success", "execution_error"):
            seen["ended"] = kind
            return True
        return False

    seen["prompt_id"] = await watch_prompt(server, prompt, handle)
    return seen


def test_cancel_interrupts_the_reason_node_between_tokens(server, api_workflows):
    full = on_stand_ins(api_workflows["thinkdiff_lvlm_reasoning"])
    keep = {the_id(full, t) for t in ("ThinkDiffVLMLoader", "ThinkDiffReason", "PreviewAny")} | set(node_ids(full, "LoadImage"))
    prompt = {node_id: node for node_id, node in full.items() if node_id in keep}
    reason = the_id(prompt, "ThinkDiffReason")
    prompt[reason]["inputs"].update(max_new_tokens=2000, min_new_tokens=2000, seed=12345)
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        seen = thread.submit(asyncio.run, _interrupt_once_generating(server, prompt, reason, after=3)).result()
    assert seen["ended"] is None and seen["interrupted"] is not None, seen
    assert seen["interrupted"]["node_id"] == reason and seen["interrupted"]["node_type"] == "ThinkDiffReason"
    values = [value for value, total in seen["progress"]]
    assert values[:3] == [1, 2, 3] and all(total == 2000 for _, total in seen["progress"])
    assert max(values) < 2000
    entry = server.wait_history(seen["prompt_id"])
    assert "execution_interrupted" in status_messages(entry)
    assert server.get("/system_stats")["system"]["comfyui_version"]
    print(f"\ncancel: interrupted ThinkDiffReason after {max(values)} of 2000 tokens (progress per token)")


def test_the_kontext_workflow_edits_the_picture_by_the_vlm_answer(server, api_workflows):
    """FLUX.1 Kontext: the stand-in FLUX file under the Kontext name (the same key layout), the picture through
    VAEEncode -> ReferenceLatent on the base conditioning, our Conditioning replacing its T5 tokens; the run saves a
    PNG. Another picture into VAEEncode (the VLM's answer cached, the same seed; at denoise 1 the sampler's start
    latent is pure noise) gives another image: the reference latent reached the model through our node."""
    import time

    prompt = on_stand_ins(api_workflows["thinkdiff_lvlm_kontext_edit"])
    condition = prompt[the_id(prompt, "ThinkDiffConditioning")]["inputs"]
    assert (condition["mode"], condition["target"]) == ("replace", "flux_kontext")
    assert prompt[the_id(prompt, "UNETLoader")]["inputs"]["unet_name"] == "flux1-kontext-dev.safetensors"
    started = time.monotonic()
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    (saved,) = entry["outputs"][the_id(prompt, "SaveImage")]["images"]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.format == "PNG" and image.size == (64, 64)
        first = image.tobytes()
        assert max(hi - lo for lo, hi in image.getextrema()) > 0, "a flat image: the sampler produced no signal"
    seconds = time.monotonic() - started
    assert entry["outputs"][the_id(prompt, "ThinkDiffReason")]["text"][0]
    # Same reasoning (the Reason node keeps its picture), another reference picture: the edit changes with it.
    other = "thinkdiff_red_car.png"
    scaled = prompt[the_id(prompt, "ImageScale")]["inputs"]
    prompt[f"{the_id(prompt, 'ImageScale')}_picture"] = {"class_type": "LoadImage", "inputs": {"image": other}}
    scaled["image"] = [f"{the_id(prompt, 'ImageScale')}_picture", 0]
    _, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    assert the_id(prompt, "ThinkDiffReason") in status_messages(entry)["execution_cached"]["nodes"]
    (saved,) = entry["outputs"][the_id(prompt, "SaveImage")]["images"]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.tobytes() != first
    print(f"\nkontext edit: {prompt_id} success in {seconds:.1f} s, saved {saved['filename']}")


def run_to_a_saved_png(server, prompt: dict) -> tuple[str, float, dict, str]:
    """Run `prompt` and check it saved one 64x64 PNG that is not flat; returns the prompt id, the seconds it took,
    SaveImage's entry and what the server logged meanwhile."""
    import time

    log_before = len(server.log())
    started = time.monotonic()
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    seconds = time.monotonic() - started
    (saved,) = entry["outputs"][the_id(prompt, "SaveImage")]["images"]
    with Image.open(server.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.format == "PNG" and image.size == (64, 64)
        assert max(hi - lo for lo, hi in image.getextrema()) > 0, "a flat image: the sampler produced no signal"
    return prompt_id, seconds, saved, server.log()[log_before:]


def test_the_sd35_workflow_runs_to_a_saved_png(server, api_workflows):
    """SD3.5: the tiny MMDiT checkpoint under the official name, detected by ComfyUI as SD3 (ModelSamplingSD3 and
    KSampler with real CFG); the pictures' aligned tokens go into the T5 segment before the prompt's own, the
    77-token CLIP-L+G segment and the 2048-wide pooled vector kept."""
    prompt = on_stand_ins(api_workflows["thinkdiff_clip_sd35"])
    condition = prompt[the_id(prompt, "ThinkDiffConditioning")]["inputs"]
    assert (condition["mode"], condition["target"]) == ("prepend", "sd3")
    prompt_id, seconds, saved, log = run_to_a_saved_png(server, prompt)
    assert "model_type FLOW" in log and "Requested to load SD3" in log, log[-2000:]
    assert "unet missing" not in log and "unet unexpected" not in log
    print(f"\nsd3.5: {prompt_id} success in {seconds:.1f} s, saved {saved['filename']}")


def test_the_chroma_workflow_runs_to_a_saved_png(server, api_workflows):
    """Chroma: the 1+1-block stand-in under the official name, detected by ComfyUI as Chroma; the VLM's aligned
    answer is the whole T5 prompt (replace on the masked, T5-only base), real CFG against a negative prompt."""
    prompt = on_stand_ins(api_workflows["thinkdiff_lvlm_chroma"])
    condition = prompt[the_id(prompt, "ThinkDiffConditioning")]["inputs"]
    assert (condition["mode"], condition["target"]) == ("replace", "chroma")
    prompt_id, seconds, saved, log = run_to_a_saved_png(server, prompt)
    assert "Requested to load Chroma" in log, log[-2000:]
    assert "unet missing" not in log and "unet unexpected" not in log
    print(f"\nchroma: {prompt_id} success in {seconds:.1f} s, saved {saved['filename']}")


def _video_frames(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("name, mode", [("thinkdiff_clip_ltxv_video", "prepend"), ("thinkdiff_lvlm_ltxv_video", "replace")])
def test_the_ltxv_workflows_run_to_a_saved_video(server, api_workflows, name, mode):
    """LTX-Video 0.9.x: the tiny checkpoint (transformer + video VAE) under the official name, detected by ComfyUI as
    LTXV; our Conditioning's aligned tokens (target ltxv: T5 only, the mask extended over them) go through
    LTXVConditioning into KSampler, VAEDecode -> CreateVideo -> SaveVideo writes an MP4 of 9 64x64 frames. The same
    prompt with our node taken out (the base conditioning straight into LTXVConditioning) gives other frames: the
    aligned tokens reached the transformer's cross-attention."""
    import time

    import numpy

    prompt = on_stand_ins(api_workflows[name])
    conditioning = the_id(prompt, "ThinkDiffConditioning")
    condition = prompt[conditioning]["inputs"]
    assert (condition["mode"], condition["target"]) == (mode, "ltxv")
    assert prompt[the_id(prompt, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] == "ltx-video-2b-v0.9.5.safetensors"
    ltxv_conditioning = the_id(prompt, "LTXVConditioning")
    assert prompt[ltxv_conditioning]["inputs"]["positive"] == [conditioning, 0]
    log_before = len(server.log())
    started = time.monotonic()
    prompt_id, entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    seconds = time.monotonic() - started
    cached = set(status_messages(entry).get("execution_cached", {}).get("nodes", []))
    assert conditioning not in cached
    save = the_id(prompt, "SaveVideo")
    (saved,) = entry["outputs"][save]["images"]
    assert saved["subfolder"] == "video" and saved["filename"].startswith("ThinkDiff-LTXV")
    assert saved["filename"].endswith(".mp4") and entry["outputs"][save]["animated"] == [True]
    frames = _video_frames(server.output_dir / saved["subfolder"] / saved["filename"])
    assert len(frames) == 9 and all(frame.shape == (64, 64, 3) for frame in frames)
    assert max(int(frame.max()) - int(frame.min()) for frame in frames) > 0, "flat frames: the sampler produced no signal"
    log = server.log()[log_before:]
    if the_id(prompt, "CheckpointLoaderSimple") not in cached:  # loaded here, not by the other LTX-Video workflow
        assert "model_type FLUX" in log and "Requested to load LTXV" in log, log[-2000:]
        assert "Requested to load VideoVAE" in log, log[-2000:]
    assert "unet missing" not in log and "unet unexpected" not in log and "Missing VAE keys" not in log
    # Without our node: the base conditioning (the prompt's, or the empty prompt's) straight into LTXVConditioning.
    without = copy.deepcopy(prompt)
    without[ltxv_conditioning]["inputs"]["positive"] = condition["conditioning"]
    del without[conditioning]
    _, entry = run(server, without)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    (plain,) = entry["outputs"][save]["images"]
    plain_frames = _video_frames(server.output_dir / plain["subfolder"] / plain["filename"])
    assert len(plain_frames) == 9
    difference = numpy.abs(numpy.stack(frames).astype(int) - numpy.stack(plain_frames).astype(int)).mean()
    assert difference > 0, "the same video without ThinkDiff's tokens: they never reached the model"
    print(f"\n{name}: {prompt_id} success in {seconds:.1f} s, saved {saved['subfolder']}/{saved['filename']} "
          f"(9 frames, 64x64); without ThinkDiff the frames differ by {difference:.1f} / 255 on average")
