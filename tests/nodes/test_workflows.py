"""The shipped editor-format workflows: valid graphs, known node types, widget values that fit our schemas.

The opt-in suite (tests/comfyui/) loads the same files into the real frontend and runs them.
"""


import pytest
from PIL import Image

from tests.nodes.shipped import REPO, WORKFLOWS
from tests.nodes.widgets import NODES
from thinkdiff_core import build_prompt, parse_words

TARGET_WORKFLOWS = {
    # workflow: (the Conditioning node's mode and target, the text-encoder loader and its `type` widget or None)
    "thinkdiff_lvlm_chroma": ("replace", "chroma", "CLIPLoader", "chroma"),
    "thinkdiff_clip_sd35": ("prepend", "sd3", "TripleCLIPLoader", None),
    "thinkdiff_clip_ltxv_video": ("prepend", "ltxv", "CLIPLoader", "ltxv"),
    "thinkdiff_lvlm_ltxv_video": ("replace", "ltxv", "CLIPLoader", "ltxv"),
    "thinkdiff_lvlm_kontext_edit": ("replace", "flux_kontext", "DualCLIPLoader", "flux"),
}
"""The workflows for models beyond FLUX.1-dev (issue 13); the others are the paper's FLUX recipes."""
LVLM_WORKFLOWS = [path.stem for path in WORKFLOWS if path.stem.startswith("thinkdiff_lvlm") and path.stem not in TARGET_WORKFLOWS]
CLIP_WORKFLOWS = [path.stem for path in WORKFLOWS if path.stem.startswith("thinkdiff_clip") and path.stem not in TARGET_WORKFLOWS]

CORE_NODE_TYPES = {
    # node type: where ComfyUI 0.8.0 defines it (checked against that tree; the opt-in suite checks /object_info)
    "LoadImage": "nodes.py",
    "DualCLIPLoader": "nodes.py",
    "CLIPTextEncode": "nodes.py",
    "UNETLoader": "nodes.py",
    "CLIPLoader": "nodes.py",
    "TripleCLIPLoader": "comfy_extras/nodes_sd3.py",
    "CheckpointLoaderSimple": "nodes.py",
    "VAEEncode": "nodes.py",
    "ModelSamplingSD3": "comfy_extras/nodes_model_advanced.py",
    "LTXVConditioning": "comfy_extras/nodes_lt.py",
    "EmptyLTXVLatentVideo": "comfy_extras/nodes_lt.py",
    "CreateVideo": "comfy_extras/nodes_video.py",
    "SaveVideo": "comfy_extras/nodes_video.py",
    "ReferenceLatent": "comfy_extras/nodes_edit_model.py",
    "FluxKontextImageScale": "comfy_extras/nodes_flux.py",
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
T5_FILE = {("CLIPLoader", 0): "t5xxl_fp16.safetensors"}
TARGET_MODEL_FILES = {
    "thinkdiff_lvlm_chroma": {key: value for key, value in LVLM_MODEL_FILES.items() if key[0].startswith("ThinkDiff")} | {
        ("UNETLoader", 0): "Chroma1-HD.safetensors", ("VAELoader", 0): "ae.safetensors", **T5_FILE},
    "thinkdiff_clip_sd35": {key: value for key, value in CLIP_MODEL_FILES.items() if key[0] in ("ThinkDiffVisionLoader", "ThinkDiffAlignerLoader")} | {
        ("CheckpointLoaderSimple", 0): "sd3.5_large.safetensors", ("TripleCLIPLoader", 0): "clip_l.safetensors",
        ("TripleCLIPLoader", 1): "clip_g.safetensors", ("TripleCLIPLoader", 2): "t5xxl_fp16.safetensors"},
    "thinkdiff_clip_ltxv_video": {key: value for key, value in CLIP_MODEL_FILES.items() if key[0].startswith("ThinkDiff")} | {
        ("CheckpointLoaderSimple", 0): "ltx-video-2b-v0.9.5.safetensors", **T5_FILE},
    "thinkdiff_lvlm_ltxv_video": {key: value for key, value in LVLM_MODEL_FILES.items() if key[0].startswith("ThinkDiff")} | {
        ("CheckpointLoaderSimple", 0): "ltx-video-2b-v0.9.5.safetensors", **T5_FILE},
    "thinkdiff_lvlm_kontext_edit": {**LVLM_MODEL_FILES, ("UNETLoader", 0): "flux1-kontext-dev.safetensors"},
}
MODEL_FILES = {**{name: LVLM_MODEL_FILES for name in LVLM_WORKFLOWS}, **{name: CLIP_MODEL_FILES for name in CLIP_WORKFLOWS},
               **TARGET_MODEL_FILES}
CORE_LOADER_FOLDERS = {
    # (core loader, widget index): the models/ folder ComfyUI 0.8.0 lists that widget from (folder_paths.py names)
    ("UNETLoader", 0): "diffusion_models", ("CheckpointLoaderSimple", 0): "checkpoints", ("VAELoader", 0): "vae",
    ("CLIPLoader", 0): "text_encoders", ("DualCLIPLoader", 0): "text_encoders", ("DualCLIPLoader", 1): "text_encoders",
    ("TripleCLIPLoader", 0): "text_encoders", ("TripleCLIPLoader", 1): "text_encoders", ("TripleCLIPLoader", 2): "text_encoders",
}


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
                                                 "thinkdiff_clip_image_text", *TARGET_WORKFLOWS}
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
    encoder, encoder_type = TARGET_WORKFLOWS.get(name, (None, None, "DualCLIPLoader", "flux"))[2:]
    if encoder_type is not None:
        assert the(workflow, encoder)["widgets_values"][2 if encoder == "DualCLIPLoader" else 1] == encoder_type


@pytest.mark.parametrize("name", sorted(TARGET_MODEL_FILES))
def test_core_loaders_say_where_their_files_come_from(workflows, name):
    """`properties.models` ([{name, url, directory}]) lets the frontend offer a missing file: one entry per file
    widget, an https URL ending in that file name, and the models/ folder the loader lists."""
    workflow = workflows[name]
    for (node_type, index), folder in CORE_LOADER_FOLDERS.items():
        for node in nodes_of(workflow, node_type):
            file = node["widgets_values"][index]
            entry, = [entry for entry in node["properties"]["models"] if entry["name"] == file]
            assert entry["directory"] == folder and entry["url"].startswith("https://huggingface.co/")
            assert entry["url"].endswith("/" + file), entry


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


def sampled_and_saved(workflow: dict, condition: dict) -> tuple[dict, dict]:
    """The sampler our Conditioning drives (directly, or through LTXVConditioning) and the save node of its output."""
    positive = condition
    for node in nodes_of(workflow, "LTXVConditioning"):
        if linked_from(workflow, node, "positive")[0] is condition:
            positive = node
    sampler, = [n for n in nodes_of(workflow, "KSampler") if linked_from(workflow, n, "positive")[0] is positive]
    decode, = [n for n in nodes_of(workflow, "VAEDecode") if linked_from(workflow, n, "samples")[0] is sampler]
    for save in nodes_of(workflow, "SaveImage"):
        if linked_from(workflow, save, "images")[0] is decode:
            return sampler, save
    video, = [n for n in nodes_of(workflow, "CreateVideo") if linked_from(workflow, n, "images")[0] is decode]
    save, = [n for n in nodes_of(workflow, "SaveVideo") if linked_from(workflow, n, "video")[0] is video]
    return sampler, save


@pytest.mark.parametrize("name", sorted(TARGET_WORKFLOWS))
def test_the_recipe_per_target(workflows, name):
    """Each model's own chain around our Conditioning (issue 13): its text encoder on the base prompt (empty for
    LVLM replace, the user's prompt for CLIP prepend), the mode and target, and the model's sampler and save node."""
    workflow = workflows[name]
    mode, target, encoder, _ = TARGET_WORKFLOWS[name]
    condition = the(workflow, "ThinkDiffConditioning")
    inputs = NODES["ThinkDiffConditioning"].widget_inputs(condition["widgets_values"])
    assert (inputs["mode"], inputs["target"], inputs["strength"], inputs["token_budget"]) == (mode, target, 1.0, 0)
    base, _ = linked_from(workflow, condition, "conditioning")
    if target == "flux_kontext":  # the picture's latent rides on the base conditioning; guidance 2.5 (Kontext's)
        assert base["type"] == "FluxGuidance" and base["widgets_values"] == [2.5]
        reference, _ = linked_from(workflow, base, "conditioning")
        assert reference["type"] == "ReferenceLatent"
        base, _ = linked_from(workflow, reference, "conditioning")
        encoded, _ = linked_from(workflow, reference, "latent")
        assert encoded["type"] == "VAEEncode"
        scaled, _ = linked_from(workflow, encoded, "pixels")
        assert scaled["type"] == "FluxKontextImageScale"
        picture, _ = linked_from(workflow, scaled, "image")
        assert linked_from(workflow, the(workflow, "ThinkDiffReason"), "images.image0")[0] is picture
    assert base["type"] == "CLIPTextEncode" and linked_from(workflow, base, "clip")[0]["type"] == encoder
    assert bool(base["widgets_values"][0].strip()) == (mode == "prepend"), "LVLM replaces an empty prompt; CLIP prepends to one"
    source, _ = linked_from(workflow, condition, "tokens")
    assert source["type"] == ("ThinkDiffReason" if name.startswith("thinkdiff_lvlm") else "ThinkDiffVisionEncode")
    sampler, save = sampled_and_saved(workflow, condition)
    model, _ = linked_from(workflow, sampler, "model")
    latent, _ = linked_from(workflow, sampler, "latent_image")
    seed, control, steps, cfg = sampler["widgets_values"][:4]
    assert control == "fixed" and steps >= 20
    if target in ("chroma", "sd3", "ltxv"):  # real CFG: a negative prompt through the same text encoder
        negative, _ = linked_from(workflow, sampler, "negative")
        if negative["type"] == "LTXVConditioning":
            negative, _ = linked_from(workflow, negative, "negative")
        assert negative["type"] == "CLIPTextEncode" and negative is not base and cfg > 1
        assert linked_from(workflow, negative, "clip")[0] is linked_from(workflow, base, "clip")[0]
    if target == "chroma":
        assert model["type"] == "UNETLoader" and latent["type"] == "EmptySD3LatentImage" and save["type"] == "SaveImage"
        assert not nodes_of(workflow, "FluxGuidance"), "Chroma has no guidance embedding"
    elif target == "sd3":
        assert model["type"] == "ModelSamplingSD3" and model["widgets_values"] == [3.0]
        checkpoint, _ = linked_from(workflow, model, "model")
        decode, _ = linked_from(workflow, save, "images")
        assert checkpoint["type"] == "CheckpointLoaderSimple" and linked_from(workflow, decode, "vae") == (checkpoint, 2)
        assert latent["type"] == "EmptySD3LatentImage" and latent["widgets_values"][:2] == [1024, 1024]
    elif target == "ltxv":
        assert model["type"] == "CheckpointLoaderSimple" and save["type"] == "SaveVideo"
        assert latent["type"] == "EmptyLTXVLatentVideo" and latent["widgets_values"][2] == 97  # 8k+1 frames
        assert linked_from(workflow, sampler, "positive")[0]["type"] == "LTXVConditioning"
        video, _ = linked_from(workflow, save, "video")
        assert video["widgets_values"][0] == the(workflow, "LTXVConditioning")["widgets_values"][0] == 25
    else:
        assert model["type"] == "UNETLoader" and cfg == 1.0 and save["type"] == "SaveImage"
        assert latent is encoded, "Kontext samples at the edited picture's size"
    if name == "thinkdiff_clip_ltxv_video":
        images = [put for put in source["inputs"] if put["name"].startswith("images.") and put.get("link") is not None]
        assert len(images) == 2, "two pictures and a prompt into a short video"


@pytest.mark.parametrize("name, preset, pictures", [
    ("thinkdiff_lvlm_reasoning", "cobsat_reasoning", 2),
    ("thinkdiff_lvlm_vs_text", "cobsat_reasoning", 2),
    ("thinkdiff_lvlm_compose", "compose", 3),
    ("thinkdiff_lvlm_chroma", "cobsat_reasoning", 2),
    ("thinkdiff_lvlm_ltxv_video", "cobsat_reasoning", 2),
    ("thinkdiff_lvlm_kontext_edit", "custom", 1),
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
    for expected in {file for files in MODEL_FILES.values() for file in files.values()}:
        assert expected in section, f"docs/comfyui.md's model-file table does not mention {expected}"
