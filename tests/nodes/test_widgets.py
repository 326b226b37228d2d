"""The test-side widget table the workflow checks read (tests/comfyui/ proves it equals the real schemas)."""

import ast
from pathlib import Path

import pytest

from tests.nodes.widgets import NODES
from thinkdiff_core import MODES, PRESETS, GenerationSettings
from thinkdiff_core.precision import PRECISIONS

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = ("lvlm", "clip", "conditioning")
REASON = NODES["ThinkDiffReason"]


def test_defaults_are_valid_values_of_their_widgets():
    for node in NODES.values():
        for widget in node.widgets:
            if widget.default is not None:
                assert widget.check_value(widget.default) is None, (node.node_id, widget.name)


def test_choices_and_defaults_come_from_the_library():
    settings = GenerationSettings()
    assert REASON.widget("preset").options == PRESETS and REASON.widget("preset").default == "cobsat_reasoning"
    mode = NODES["ThinkDiffConditioning"].widget("mode")
    assert mode.options == MODES and mode.default == "replace"
    for name in ("seed", "temperature", "top_p", "max_new_tokens", "min_new_tokens"):
        assert REASON.widget(name).default == getattr(settings, name)
    assert NODES["ThinkDiffVLMLoader"].widget("dtype").options == PRECISIONS  # fp8 and nf4 too
    assert NODES["ThinkDiffVisionLoader"].widget("dtype").options[0] == "auto"


def test_growing_image_lists_name_their_slots_like_comfyui_autogrow():
    names = REASON.socket_names()
    assert names[:3] == ["vlm", "images.image0", "images.image1"]
    assert "images.image15" in names and "images.image16" not in names
    assert "seed" in names  # a widget can be turned into a socket in the editor
    encode = NODES["ThinkDiffVisionEncode"]
    assert encode.socket_names()[:3] == ["vision", "images.image0", "images.image1"]
    assert encode.widgets == () and encode.check_widgets_values([]) == []


def test_widget_layout_puts_the_seed_control_value_after_the_seed():
    layout = [(widget.name, control) for widget, control in REASON.widget_layout()]
    assert layout == [("words", False), ("preset", False), ("custom_instruction", False), ("seed", False),
                      ("seed", True), ("temperature", False), ("top_p", False), ("max_new_tokens", False),
                      ("min_new_tokens", False), ("max_pixels", False)]


def test_check_widgets_values_accepts_a_valid_list_and_maps_it_to_prompt_inputs():
    values = ["red\ngreen\nyellow", "cobsat_reasoning", "", 7, "fixed", 0.6, 0.9, 128, 128, 0]
    assert REASON.check_widgets_values(values) == []
    assert REASON.widget_inputs(values) == {
        "words": "red\ngreen\nyellow", "preset": "cobsat_reasoning", "custom_instruction": "", "seed": 7,
        "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 128, "min_new_tokens": 128, "max_pixels": 0,
    }


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
def test_check_widgets_values_names_the_widget_and_the_problem(index, bad, expected):
    values = ["red\ngreen\nyellow", "cobsat_reasoning", "", 7, "fixed", 0.6, 0.9, 128, 128, 0]
    values[index] = bad
    problems = REASON.check_widgets_values(values)
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith("ThinkDiffReason.")


def test_check_widgets_values_refuses_a_list_of_the_wrong_length():
    problems = REASON.check_widgets_values(["red", "cobsat_reasoning", "", 7, 0.6, 0.9, 128, 128, 0])
    assert len(problems) == 1 and "9 widget values, the schema has 10" in problems[0]


def test_combos_listed_from_disk_check_names():
    aligner = NODES["ThinkDiffAlignerLoader"].widget("aligner_name")
    assert aligner.check_value("thinkdiff_lvlm.pth") is None
    assert aligner.check_value("sub/folder/mine.safetensors") is None
    assert "not an aligner file" in aligner.check_value("thinkdiff_lvlm.ckpt")
    assert "not a file or folder name" in aligner.check_value("")
    assert NODES["ThinkDiffVLMLoader"].widget("model").check_value("Qwen2-VL-7B-Instruct") is None
    vision = NODES["ThinkDiffVisionLoader"].widget("model")
    assert vision.check_value("blip2-flan-t5-xxl") is None and vision.check_value("blip2_vision.safetensors") is None
    assert "not a vision tower" in vision.check_value("thinkdiff_clip.pth")


def node_classes() -> dict[str, ast.ClassDef]:
    return {node.name: node for module in NODE_MODULES
            for node in ast.parse((REPO / "nodes" / f"{module}.py").read_text()).body if isinstance(node, ast.ClassDef)}


def test_the_entry_point_registers_a_node_class_for_every_node():
    """Root __init__.py (ComfyUI's entry point, not importable without ComfyUI) lists exactly our nodes."""
    tree = ast.parse((REPO / "__init__.py").read_text())
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef)}
    assert {"comfy_entrypoint", "get_node_list"} <= names
    returned = next(node for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef) and node.name == "get_node_list")
    listed = {element.id for element in ast.walk(returned) if isinstance(element, ast.Name)}
    assert set(NODES) <= listed and set(node_classes()) <= listed


def test_every_node_class_writes_its_schema_out_under_its_own_id():
    """One class per node: `define_schema` returns an `io.Schema(node_id=<the class name>, ...)`, `execute` beside it."""
    classes = node_classes()
    assert set(classes) == set(NODES)
    for name, node in classes.items():
        methods = {item.name: item for item in node.body if isinstance(item, ast.FunctionDef)}
        assert {"define_schema", "execute"} <= set(methods), name
        schema = next(call for call in ast.walk(methods["define_schema"]) if isinstance(call, ast.Call)
                      and ast.unparse(call.func) == "io.Schema")
        node_id = next(keyword.value for keyword in schema.keywords if keyword.arg == "node_id")
        assert ast.literal_eval(node_id) == name


def test_requirements_leave_torch_and_transformers_to_comfyui():
    lines = [line.split("#")[0].strip().lower() for line in (REPO / "requirements.txt").read_text().splitlines()]
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip() for line in lines if line}
    assert not names & {"torch", "transformers", "torchvision"}
