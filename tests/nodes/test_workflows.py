"""The shipped editor-format workflows: valid graphs, known node types, widget values that fit our schemas.

The opt-in suite (tests/comfyui/) loads the same files into the real frontend and runs them.
"""


import pytest
from PIL import Image

from tests.nodes.shipped import REPO, WORKFLOWS
from tests.nodes.widgets import NODES
from thinkdiff_core import build_prompt, parse_words
LVLM_WORKFLOWS = [path.stem for path in WORKFLOWS if path.stem.startswith("thinkdiff_lvlm")]
CLIP_WORKFLOWS = [path.stem for path in WORKFLOWS if path.stem.startswith("thinkdiff_clip")]

CORE_NODE_TYPES = {
    # node type: where ComfyUI 0.8.0 defines it (checked against that tree; the opt-in suite checks /object_info)
    "LoadImage": "nodes.py",
    "DualCLIPLoader": "nodes.py",
    "CLIPTextEncode": "nodes.py",
    "UNETLoader": "nodes.py",
    "KSampler": "nodes.py",
    "VAELoader": "nodes.py",
    "VAEDecode": "nodes.py",
    "SaveImage": "nodes.py",
    "FluxGuidance": "comfy_extras/nodes_flux.py",
    "EmptySD3LatentImage": "comfy_extras/nodes_sd3.py",
    "PreviewAny": "comfy_extras/nodes_preview_any.py",
    "Note": "frontend only (comfyui-frontend-package 1.35.9): a text note, never sent to the server",
}
FRONTEND_ONLY_TYPES = {"Note"}

FLUX_MODEL_FILES = {
    # (node type, widget index): the name users get from the official source
    ("UNETLoader", 0): "flux1-dev.safetensors",
    ("DualCLIPLoader", 0): "clip_l.safetensors",
    ("DualCLIPLoader", 1): "t5xxl_fp16.safetensors",
    ("VAELoader", 0): "ae.safetensors",
}
LVLM_MODEL_FILES = {
    ("ThinkDiffVLMLoader", 0): "Qwen2-VL-7B-Instruct",
    ("ThinkDiffAlignerLoader", 0): "thinkdiff_lvlm.pth",
    **FLUX_MODEL_FILES,
}
CLIP_MODEL_FILES = {
    ("ThinkDiffVisionLoader", 0): "blip2-flan-t5-xxl",  # the Salesforce/blip2-flan-t5-xxl folder; only its vision tensors are read
    ("ThinkDiffAlignerLoader", 0): "thinkdiff_clip.pth",
    **FLUX_MODEL_FILES,
}
MODEL_FILES = {**{name: LVLM_MODEL_FILES for name in LVLM_WORKFLOWS}, **{name: CLIP_MODEL_FILES for name in CLIP_WORKFLOWS}}


def nodes_of(workflow: dict, node_type: str) -> list[dict]:
    return [node for node in workflow["nodes"] if node["type"] == node_type]


def the(workflow: dict, node_type: str) -> dict:
    found = nodes_of(workflow, node_type)
    assert len(found) == 1, f"expected one {node_type}, found {len(found)}"
    return found[0]


def linked_from(workflow: dict, node: dict, input_name: str) -> tuple[dict, int]:
    """The node (and output slot) feeding `input_name` of `node`."""
    link_id = next(i["link"] for i in node["inputs"] if i["name"] == input_name)
    link = next(link for link in workflow["links"] if link[0] == link_id)
    return next(n for n in workflow["nodes"] if n["id"] == link[1]), link[2]


def test_every_workflow_ships_with_a_thumbnail():
    assert {path.stem for path in WORKFLOWS} == {"thinkdiff_lvlm_reasoning", "thinkdiff_lvlm_compose",
                                                 "thinkdiff_lvlm_vs_text", "thinkdiff_clip_compose",
                                                 "thinkdiff_clip_image_text"}
    for path in WORKFLOWS:
        thumbnail = path.with_suffix(".jpg")
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and 200 <= image.width <= 1024 and 150 <= image.height <= 1024
        assert thumbnail.stat().st_size < 200_000


@pytest.mark.parametrize("name", [path.stem for path in WORKFLOWS])
def test_editor_format_and_consistent_links(workflows, name):
    workflow = workflows[name]
    assert {"nodes", "links", "last_node_id", "last_link_id", "version"} <= set(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    link_ids = [link[0] for link in workflow["links"]]
    assert len(set(link_ids)) == len(link_ids) and workflow["last_link_id"] >= max(link_ids)
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        output = nodes[origin]["outputs"][origin_slot]
        target_input = nodes[target]["inputs"][target_slot]
        assert link_id in output["links"] and target_input["link"] == link_id
        assert output["type"] == link_type and target_input["type"] in (link_type, "*"), (link_id, output, target_input)
    for node in workflow["nodes"]:
        for put in node.get("inputs", []):
            assert put.get("link") is None or put["link"] in link_ids
        for output in node.get("outputs", []):
            assert all(link in link_ids for link in output.get("links") or [])


@pytest.mark.parametrize("name", [path.stem for path in WORKFLOWS])
def test_node_types_are_ours_or_comfyui_core(workflows, name):
    types = {node["type"] for node in workflows[name]["nodes"]}
    unknown = types - set(NODES) - set(CORE_NODE_TYPES)
    assert not unknown, f"{name} uses node types that are neither ours nor in ComfyUI core: {unknown}"


@pytest.mark.parametrize("name", [path.stem for path in WORKFLOWS])
def test_our_nodes_widget_values_and_sockets_fit_the_schemas(workflows, name):
    for node in workflows[name]["nodes"]:
        node_spec = NODES.get(node["type"])
        if node_spec is None:
            continue
        assert node_spec.check_widgets_values(node.get("widgets_values", [])) == []  # none stored for a node without widgets
        for put in node["inputs"]:
            assert put["name"] in node_spec.socket_names(), (node["type"], put["name"])
        connected = {put["name"] for put in node["inputs"] if put.get("link") is not None}
        assert set(node_spec.required) <= connected, (node["type"], set(node_spec.required) - connected)
        assert [o["type"] for o in node["outputs"]] == list(node_spec.outputs)


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_model_file_names_are_the_official_ones(workflows, name):
    workflow = workflows[name]
    for (node_type, index), expected in MODEL_FILES[name].items():
        assert the(workflow, node_type)["widgets_values"][index] == expected
    assert the(workflow, "DualCLIPLoader")["widgets_values"][2] == "flux"


def assert_flux_tail(workflow: dict, condition: dict, size: int) -> None:
    """Our Conditioning is the positive prompt of FLUX.1-dev at 28 steps (cfg 1: guidance is FluxGuidance's) and
    the picture is decoded and saved."""
    sampler, = [node for node in nodes_of(workflow, "KSampler") if linked_from(workflow, node, "positive")[0] is condition]
    assert linked_from(workflow, sampler, "model")[0]["type"] == "UNETLoader"
    seed, control, steps, cfg = sampler["widgets_values"][:4]
    assert steps == 28 and cfg == 1.0
    latent, _ = linked_from(workflow, sampler, "latent_image")
    assert latent["type"] == "EmptySD3LatentImage" and latent["widgets_values"][:2] == [size, size]
    decode, = [node for node in nodes_of(workflow, "VAEDecode") if linked_from(workflow, node, "samples")[0] is sampler]
    assert any(linked_from(workflow, save, "images")[0] is decode for save in nodes_of(workflow, "SaveImage"))


@pytest.mark.parametrize("name", LVLM_WORKFLOWS)
def test_the_reference_flux_recipe(workflows, name):
    """ThinkDiff-LVLM inference: aligned tokens replace the prompt of an empty-prompt base (its pooled CLIP-L
    vector kept), FLUX.1-dev, guidance 3.5, 28 steps, 512x512, the VLM's text shown."""
    workflow = workflows[name]
    condition = the(workflow, "ThinkDiffConditioning")
    assert NODES["ThinkDiffConditioning"].widget_inputs(condition["widgets_values"])["mode"] == "replace"
    base, _ = linked_from(workflow, condition, "conditioning")
    assert base["type"] == "FluxGuidance" and base["widgets_values"] == [3.5]
    encode, _ = linked_from(workflow, base, "conditioning")
    assert encode["type"] == "CLIPTextEncode" and encode["widgets_values"] == [""]
    assert linked_from(workflow, encode, "clip")[0]["type"] == "DualCLIPLoader"
    assert_flux_tail(workflow, condition, 512)
    reason = the(workflow, "ThinkDiffReason")
    assert linked_from(workflow, condition, "tokens")[0] is reason
    preview = the(workflow, "PreviewAny")
    assert linked_from(workflow, preview, "source") == (reason, 1)


@pytest.mark.parametrize("name, pictures", [("thinkdiff_clip_compose", 2), ("thinkdiff_clip_image_text", 1)])
def test_the_reference_clip_recipe(workflows, name, pictures):
    """ThinkDiff-CLIP inference: [aligned picture 1, ..., the prompt's own T5 tokens] (prepend), the prompt's pooled
    CLIP-L vector kept, FLUX.1-dev, guidance 3.5, 28 steps, 1024x1024 (the reference test configs)."""
    workflow = workflows[name]
    assert {node["type"] for node in workflow["nodes"]}.isdisjoint({"ThinkDiffVLMLoader", "ThinkDiffReason"})
    condition = the(workflow, "ThinkDiffConditioning")
    assert NODES["ThinkDiffConditioning"].widget_inputs(condition["widgets_values"])["mode"] == "prepend"
    assert linked_from(workflow, condition, "aligner")[0]["type"] == "ThinkDiffAlignerLoader"
    base, _ = linked_from(workflow, condition, "conditioning")
    assert base["type"] == "FluxGuidance" and base["widgets_values"] == [3.5]
    encode, _ = linked_from(workflow, base, "conditioning")
    assert encode["type"] == "CLIPTextEncode" and encode["widgets_values"][0].strip(), "the CLIP recipe has a prompt"
    assert linked_from(workflow, encode, "clip")[0]["type"] == "DualCLIPLoader"
    assert_flux_tail(workflow, condition, 1024)
    pictures_node, _ = linked_from(workflow, condition, "tokens")
    assert pictures_node["type"] == "ThinkDiffVisionEncode"
    assert linked_from(workflow, pictures_node, "vision")[0]["type"] == "ThinkDiffVisionLoader"
    images = [put for put in pictures_node["inputs"] if put["name"].startswith("images.") and put.get("link") is not None]
    assert [put["name"] for put in images] == [f"images.image{i}" for i in range(pictures)]
    loaded = [linked_from(workflow, pictures_node, put["name"])[0] for put in images]
    assert all(node["type"] == "LoadImage" for node in loaded) and len({n["id"] for n in loaded}) == pictures


def test_vs_text_draws_both_from_one_vlm_answer(workflows):
    """The baseline branch: the Reason node's text through FLUX's own encoders (CLIPTextEncode), guidance 3.5, and a
    sampler with the ThinkDiff branch's model, negative, latent and seed/steps/cfg, saved under its own prefix."""
    workflow = workflows["thinkdiff_lvlm_vs_text"]
    reason = the(workflow, "ThinkDiffReason")
    condition = the(workflow, "ThinkDiffConditioning")
    ours, = [n for n in nodes_of(workflow, "KSampler") if linked_from(workflow, n, "positive")[0] is condition]
    baseline, = [n for n in nodes_of(workflow, "KSampler") if n is not ours]
    guidance, _ = linked_from(workflow, baseline, "positive")
    assert guidance["type"] == "FluxGuidance" and guidance["widgets_values"] == [3.5]
    encode, _ = linked_from(workflow, guidance, "conditioning")
    assert encode["type"] == "CLIPTextEncode" and linked_from(workflow, encode, "text") == (reason, 1)
    assert linked_from(workflow, encode, "clip")[0]["type"] == "DualCLIPLoader"
    for name in ("model", "negative", "latent_image"):
        assert linked_from(workflow, baseline, name)[0] is linked_from(workflow, ours, name)[0], name
    assert baseline["widgets_values"] == ours["widgets_values"]
    decode, = [n for n in nodes_of(workflow, "VAEDecode") if linked_from(workflow, n, "samples")[0] is baseline]
    saves = {save["widgets_values"][0]: linked_from(workflow, save, "images")[0] for save in nodes_of(workflow, "SaveImage")}
    assert saves["ThinkDiff_vlm_text"] is decode and set(saves) == {"ThinkDiff", "ThinkDiff_vlm_text"}


@pytest.mark.parametrize("name, preset, pictures", [
    ("thinkdiff_lvlm_reasoning", "cobsat_reasoning", 2),
    ("thinkdiff_lvlm_vs_text", "cobsat_reasoning", 2),
    ("thinkdiff_lvlm_compose", "compose", 3),
])
def test_the_prompt_fits_the_pictures_and_the_seed_is_fixed(workflows, name, preset, pictures):
    workflow = workflows[name]
    reason = the(workflow, "ThinkDiffReason")
    inputs = NODES["ThinkDiffReason"].widget_inputs(reason["widgets_values"])
    assert inputs["preset"] == preset
    images = [put for put in reason["inputs"] if put["name"].startswith("images.") and put.get("link") is not None]
    assert [put["name"] for put in images] == [f"images.image{i}" for i in range(pictures)]
    assert all(linked_from(workflow, reason, put["name"])[0]["type"] == "LoadImage" for put in images)
    placeholder = Image.new("RGB", (32, 32))
    prompt = build_prompt(preset, [placeholder] * pictures, parse_words(inputs["words"]), inputs["custom_instruction"])
    assert len(prompt.images) == pictures
    assert reason["widgets_values"][4] == "fixed", "a fixed seed lets ComfyUI reuse the VLM's answer on re-runs"


def test_the_comfyui_docs_list_every_model_file_of_the_workflows():
    page = (REPO / "docs" / "comfyui.md").read_text()
    section = page[page.index("## Model files"):page.index("## Nodes")]
    for expected in {**LVLM_MODEL_FILES, **CLIP_MODEL_FILES}.values():
        assert expected in section, f"docs/comfyui.md's model-file table does not mention {expected}"
