"""The declarative node descriptions the ComfyUI schemas are built from (no ComfyUI needed)."""

import ast
from pathlib import Path

import pytest

from thinkdiff_core import MODES, PRESETS, GenerationSettings
from thinkdiff_core.checkpoint import OFFICIAL_SUFFIXES, SAFETENSORS_SUFFIXES

REPO = Path(__file__).resolve().parents[2]


def test_every_input_and_output_has_a_tooltip_and_every_node_a_name_and_category(spec):
    for node in spec.ALL_NODES:
        assert node.node_id.startswith("ThinkDiff") and node.display_name and node.description
        assert node.category in (spec.CATEGORY_LOADERS, spec.CATEGORY_CONDITIONING)
        for item in (*node.inputs, *node.outputs):
            assert len(item.tooltip) > 20, (node.node_id, item.name)
    ids = [node.node_id for node in spec.ALL_NODES]
    assert len(set(ids)) == len(ids) == len(spec.NODES_BY_ID)


def test_defaults_are_valid_values_of_their_widgets(spec):
    for node in spec.ALL_NODES:
        for widget in node.widgets:
            if widget.default is not None:
                assert widget.check_value(widget.default) is None, (node.node_id, widget.name)


def test_choices_and_defaults_come_from_the_library(spec):
    settings = GenerationSettings()
    reason = spec.REASON
    assert reason.input("preset").options == PRESETS and reason.input("preset").default == "cobsat_reasoning"
    assert spec.CONDITIONING.input("mode").options == MODES and spec.CONDITIONING.input("mode").default == "replace"
    for name in ("seed", "temperature", "top_p", "max_new_tokens", "min_new_tokens"):
        assert reason.input(name).default == getattr(settings, name)
    assert spec.ALIGNER_SUFFIXES == SAFETENSORS_SUFFIXES + OFFICIAL_SUFFIXES
    assert spec.VLM_LOADER.input("dtype").options[0] == "auto"
    assert spec.VISION_LOADER.input("dtype").options == spec.VLM_LOADER.input("dtype").options
    assert spec.VISION_FOLDER_KEYS == ("thinkdiff", "clip_vision")


def test_socket_types_chain_loader_to_reason_to_conditioning(spec):
    assert spec.VLM_LOADER.outputs[0].type == spec.REASON.input("vlm").type == spec.VLM_TYPE
    assert spec.REASON.outputs[0].type == spec.CONDITIONING.input("tokens").type == spec.TOKENS_TYPE
    assert spec.ALIGNER_LOADER.outputs[0].type == spec.CONDITIONING.input("aligner").type == spec.ALIGNER_TYPE
    assert [o.type for o in spec.REASON.outputs] == [spec.TOKENS_TYPE, "STRING"]
    assert spec.CONDITIONING.outputs[0].type == "CONDITIONING"


def test_socket_types_chain_vision_loader_to_encode_to_the_same_conditioning_node(spec):
    assert spec.VISION_LOADER.outputs[0].type == spec.VISION_ENCODE.input("vision").type == spec.VISION_TYPE
    assert [o.type for o in spec.VISION_ENCODE.outputs] == [spec.TOKENS_TYPE] == [spec.CONDITIONING.input("tokens").type]
    assert spec.VISION_TYPE in spec.CUSTOM_TYPES and spec.VISION_TYPE != spec.VLM_TYPE
    assert "prepend" in spec.CONDITIONING.input("mode").tooltip and "CLIP" in spec.CONDITIONING.input("mode").tooltip


def test_growing_image_list_names_its_slots_like_comfyui_autogrow(spec):
    images = spec.REASON.input("images")
    assert not images.is_widget and images.grow.minimum == 1
    names = spec.REASON.socket_names()
    assert names[:3] == ["vlm", "images.image0", "images.image1"]
    assert f"images.image{images.grow.maximum - 1}" in names and f"images.image{images.grow.maximum}" not in names
    assert "seed" in names  # a widget can be turned into a socket in the editor


def test_widget_kwargs_give_comfyui_the_right_keyword_arguments(spec):
    seed = spec.REASON.input("seed").widget_kwargs()
    assert seed["control_after_generate"] is True and seed["min"] == 0 and seed["max"] == 2**64 - 1
    assert "multiline" not in seed and "options" not in seed
    words = spec.REASON.input("words").widget_kwargs()
    assert words["multiline"] is True and words["default"] == "" and words["placeholder"]
    temperature = spec.REASON.input("temperature").widget_kwargs()
    assert temperature == {"tooltip": spec.REASON.input("temperature").tooltip, "default": 0.6, "min": 0.0,
                           "max": 2.0, "step": 0.05}
    model = spec.VLM_LOADER.input("model")
    assert model.widget_kwargs()["options"] == []  # nothing on disk known here
    assert model.widget_kwargs({spec.VLM_FOLDERS: ["Qwen2-VL-7B-Instruct"]})["options"] == ["Qwen2-VL-7B-Instruct"]
    vlm_socket = spec.REASON.input("vlm").widget_kwargs()
    assert vlm_socket == {"tooltip": spec.REASON.input("vlm").tooltip}
    assert spec.VLM_LOADER.input("trust_remote_code").widget_kwargs()["default"] is False


def test_widget_layout_puts_the_seed_control_value_after_the_seed(spec):
    layout = [(i.name, control) for i, control in spec.REASON.widget_layout()]
    assert layout == [("words", False), ("preset", False), ("custom_instruction", False), ("seed", False),
                      ("seed", True), ("temperature", False), ("top_p", False), ("max_new_tokens", False),
                      ("min_new_tokens", False)]


def test_check_widgets_values_accepts_a_valid_list_and_maps_it_to_prompt_inputs(spec):
    values = ["red\ngreen\nyellow", "cobsat_reasoning", "", 7, "fixed", 0.6, 0.9, 128, 128]
    assert spec.REASON.check_widgets_values(values) == []
    assert spec.REASON.widget_inputs(values) == {
        "words": "red\ngreen\nyellow", "preset": "cobsat_reasoning", "custom_instruction": "", "seed": 7,
        "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 128, "min_new_tokens": 128,
    }


def test_encode_images_grows_like_the_reason_node(spec):
    images = spec.VISION_ENCODE.input("images")
    assert images.grow == spec.REASON.input("images").grow and images.grow.minimum == 1
    assert spec.VISION_ENCODE.socket_names()[:3] == ["vision", "images.image0", "images.image1"]
    assert spec.VISION_ENCODE.widgets == [] and spec.VISION_ENCODE.check_widgets_values([]) == []


@pytest.mark.parametrize("index, bad, expected", [
    (1, "shakespeare", "not one of"),
    (3, -1, "outside"),
    (3, 1.5, "not an integer"),
    (4, "sometimes", "control after generate"),
    (5, 2.5, "outside"),
    (5, "hot", "not a number"),
    (0, 3, "not text"),
    (7, True, "not an integer"),
])
def test_check_widgets_values_names_the_widget_and_the_problem(spec, index, bad, expected):
    values = ["red\ngreen\nyellow", "cobsat_reasoning", "", 7, "fixed", 0.6, 0.9, 128, 128]
    values[index] = bad
    problems = spec.REASON.check_widgets_values(values)
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith("ThinkDiffReason.")


def test_check_widgets_values_refuses_a_list_of_the_wrong_length(spec):
    problems = spec.REASON.check_widgets_values(["red", "cobsat_reasoning", "", 7, 0.6, 0.9, 128, 128])
    assert len(problems) == 1 and "8 widget values, the schema has 9" in problems[0]


def test_live_combos_check_names_when_the_list_is_not_known(spec):
    aligner = spec.ALIGNER_LOADER.input("aligner_name")
    assert aligner.check_value("thinkdiff_lvlm.pth") is None
    assert aligner.check_value("sub/folder/mine.safetensors") is None
    assert "not an aligner file" in aligner.check_value("thinkdiff_lvlm.ckpt")
    assert "not a file or folder name" in aligner.check_value("")
    assert "not one of" in aligner.check_value("a.pth", {spec.ALIGNER_FILES: ["b.pth"]})
    assert spec.VLM_LOADER.input("model").check_value("Qwen2-VL-7B-Instruct") is None
    vision = spec.VISION_LOADER.input("model")
    assert vision.check_value("blip2-flan-t5-xxl") is None and vision.check_value("blip2_vision.safetensors") is None
    assert "not a vision tower" in vision.check_value("thinkdiff_clip.pth")
    assert "not one of" in vision.check_value("blip2-flan-t5-xxl", {spec.VISION_MODELS: ["blip2_vision.safetensors"]})


def test_the_entry_point_registers_a_node_class_for_every_spec(spec):
    """Root __init__.py (ComfyUI's entry point, not importable without ComfyUI) lists exactly the spec'd nodes."""
    tree = ast.parse((REPO / "__init__.py").read_text())
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef)}
    assert {"comfy_entrypoint", "get_node_list"} <= names
    returned = next(node for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef) and node.name == "get_node_list")
    listed = {element.id for element in ast.walk(returned) if isinstance(element, ast.Name)}
    assert set(spec.NODES_BY_ID) <= listed
    classes = {}
    for module in ("lvlm", "clip", "conditioning"):
        for node in ast.parse((REPO / "nodes" / f"{module}.py").read_text()).body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = ast.unparse(node)
    for node_id in spec.NODES_BY_ID:
        assert node_id in classes, f"no node class named {node_id}"
        assert "build_schema(spec." in classes[node_id]


def test_requirements_leave_torch_and_transformers_to_comfyui():
    lines = [line.split("#")[0].strip().lower() for line in (REPO / "requirements.txt").read_text().splitlines()]
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip() for line in lines if line}
    assert not names & {"torch", "transformers", "torchvision"}
