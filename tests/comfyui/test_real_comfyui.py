"""Opt-in: the pack inside a real ComfyUI server, driven like a user's browser drives it.

Stand-ins (see stand_ins.py): tiny models in the real file layouts under the workflows' file names, and
one swap the suite must make: ComfyUI's FLUX text-encoder loader always builds a full-size T5-XXL, so
`DualCLIPLoader` + `CLIPTextEncode` (ComfyUI's nodes, never ours) become a test-only node with
FLUX-shaped output. `ae.safetensors` becomes TAEF1 and the image 64x64 with 3 steps, for speed.
"""

from __future__ import annotations

import asyncio
import copy
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import status_messages  # noqa: E402  (tests/comfyui is on sys.path via conftest)
from PIL import Image
from stand_ins import STAND_IN_NODE_ID

pytestmark = pytest.mark.comfyui

OURS = ("ThinkDiffVLMLoader", "ThinkDiffAlignerLoader", "ThinkDiffReason", "ThinkDiffConditioning")


@pytest.fixture(scope="module")
def spec(pack_module):
    return pack_module("nodes.spec")


def node_ids(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def the_id(prompt: dict, class_type: str) -> str:
    (node_id,) = node_ids(prompt, class_type)
    return node_id


def on_stand_ins(prompt: dict) -> dict:
    """The converted workflow with ComfyUI's FLUX text encoding swapped for the stand-in, TAEF1, 64x64, 3 steps."""
    prompt = copy.deepcopy(prompt)
    for node_id, node in list(prompt.items()):
        inputs = node["inputs"]
        if node["class_type"] == "CLIPTextEncode":
            prompt[node_id] = {"class_type": STAND_IN_NODE_ID, "inputs": {"text": inputs["text"], "width": 4096}}
        elif node["class_type"] == "DualCLIPLoader":
            del prompt[node_id]
        elif node["class_type"] == "VAELoader":
            inputs["vae_name"] = "taef1"
        elif node["class_type"] == "EmptySD3LatentImage":
            inputs.update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 3
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


@pytest.mark.parametrize("node_id", OURS)
def test_comfyui_schemas_match_the_declarative_specs(server, spec, node_id):
    node_spec = spec.NODES_BY_ID[node_id]
    info = server.get(f"/object_info/{node_id}")[node_id]
    assert (info["display_name"], info["category"], info["description"]) == (
        node_spec.display_name, node_spec.category, node_spec.description)
    assert info["input_order"]["required"] == [i.name for i in node_spec.inputs]
    for put in node_spec.inputs:
        kind, options = info["input"]["required"][put.name]
        assert options["tooltip"] == put.tooltip
        if put.grow is not None:
            assert kind == "COMFY_AUTOGROW_V3"
            assert (options["template"]["prefix"], options["template"]["min"], options["template"]["max"]) == (
                put.grow.prefix, put.grow.minimum, put.grow.maximum)
            assert list(options["template"]["input"]["required"].values())[0][0] == put.type
            continue
        assert kind == put.type
        expected = put.widget_kwargs()
        for key in ("default", "min", "max", "step", "multiline", "placeholder", "control_after_generate"):
            assert options.get(key) == expected.get(key), (put.name, key)
        if put.type == "COMBO":
            if put.live_options is None:
                assert options["options"] == list(put.options)
            else:
                assert options["options"], f"{put.name}: the stand-in files should be listed"
    assert info["output"] == [o.type for o in node_spec.outputs]
    assert info["output_name"] == [o.name for o in node_spec.outputs]
    assert info["output_tooltips"] == [o.tooltip for o in node_spec.outputs]


def test_loaders_list_model_folders_from_models_and_extra_model_paths(server):
    vlm_options = server.get("/object_info/ThinkDiffVLMLoader")["ThinkDiffVLMLoader"]["input"]["required"]["model"][1]
    assert vlm_options["options"] == ["Qwen2-VL-7B-Instruct", "tiny-Qwen2.5-VL"]  # LLM: via yaml; models/vlm/
    aligners = server.get("/object_info/ThinkDiffAlignerLoader")["ThinkDiffAlignerLoader"]["input"]["required"]
    assert aligners["aligner_name"][1]["options"] == ["aligner_for_hidden_32.pth", "thinkdiff_lvlm.pth"]


def test_every_other_node_type_of_the_workflows_is_in_comfyui_core(server, frontend, editor_workflows):
    info = server.get("/object_info")
    frontend_types = set(frontend.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))
    for workflow in editor_workflows.values():
        for node in workflow["nodes"]:
            assert node["type"] in info or node["type"] in frontend_types, node["type"]
            if node["type"] not in info:
                assert node["type"] == "Note"  # frontend-only, never sent to the server


def test_the_template_browser_lists_the_workflows(server):
    listed = set(server.get("/workflow_templates")["ComfyUI-ThinkDiff"])
    assert {"thinkdiff_lvlm_compose", "thinkdiff_lvlm_reasoning"} <= listed


@pytest.mark.parametrize("name", ["thinkdiff_lvlm_reasoning", "thinkdiff_lvlm_compose"])
def test_the_frontend_reads_our_widget_values_as_the_spec_does(spec, editor_workflows, api_workflows, name):
    for node in editor_workflows[name]["nodes"]:
        if node["type"] in OURS:
            converted = api_workflows[name][str(node["id"])]["inputs"]
            widgets = {key: value for key, value in converted.items() if not isinstance(value, list)}
            assert widgets == spec.NODES_BY_ID[node["type"]].widget_inputs(node["widgets_values"])


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


async def _interrupt_once_generating(server, prompt: dict, node_id: str, after: int, timeout: float = 300) -> dict:
    """Queue `prompt`, POST /interrupt once `node_id` reported `after` tokens, return what the websocket said."""
    import aiohttp

    seen: dict = {"progress": [], "interrupted": None, "ended": None}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url.replace('http', 'ws')}/ws?clientId={server.client_id}") as socket:
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": server.client_id}) as answer:
                assert answer.status == 200, await answer.text()
                seen["prompt_id"] = (await answer.json())["prompt_id"]

            async def listen() -> None:
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    if data.get("prompt_id") not in (None, seen["prompt_id"]):
                        continue
                    if event["type"] == "progress" and data["node"] == node_id:
                        seen["progress"].append((data["value"], data["max"]))
                        if data["value"] >= after and not seen.get("asked"):
                            seen["asked"] = True
                            async with session.post(f"{server.url}/interrupt", json={}) as interrupt:
                                assert interrupt.status == 200
                    elif event["type"] == "execution_interrupted":
                        seen["interrupted"] = data
                        return
                    elif event["type"] in ("execution_success", "execution_error"):
                        seen["ended"] = event["type"]
                        return

            await asyncio.wait_for(listen(), timeout)
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
