"""The ComfyUI and Comfy Registry conventions the pack follows, checked on the shipped files themselves.

The template browser's index, the workflows' input pictures and their copy into ComfyUI's input folder, the
download entries of the core loaders, the node help pages and the registry fields of pyproject.toml. The
opt-in suite (tests/comfyui/) checks that a real ComfyUI serves and uses them.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from PIL import Image

from tests.nodes.shipped import REPO, SHIPPED_INPUTS, TEMPLATE_INDEX, WORKFLOWS
from tests.nodes.widgets import NODES

CORE_LOADER_FOLDERS = {
    # core loader node: the models/ folder its file widgets list (ComfyUI 0.8.0 nodes.py, folder_paths names)
    "UNETLoader": "diffusion_models",
    "DualCLIPLoader": "text_encoders",
    "CLIPLoader": "text_encoders",
    "VAELoader": "vae",
    "CheckpointLoaderSimple": "checkpoints",
}
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


def load_images(workflow: dict) -> list[str]:
    return [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "LoadImage"]


def test_the_template_index_lists_every_workflow_with_a_title_a_description_and_its_thumbnail():
    index = json.loads(TEMPLATE_INDEX.read_text())
    templates = [template for category in index for template in category["templates"]]
    names = [template["name"] for template in templates]
    assert len(names) == len(set(names)), f"index.json names a workflow twice: {names}"
    assert set(names) == {path.stem for path in WORKFLOWS}, (
        "workflows/index.json must list exactly the workflows in workflows/: add an entry (name, title, description, "
        f"mediaType, mediaSubtype) for {sorted({p.stem for p in WORKFLOWS} - set(names))}, remove "
        f"{sorted(set(names) - {p.stem for p in WORKFLOWS})}")
    for category in index:
        assert category["title"] and category["type"] == "image"
    for template in templates:
        assert template["title"].strip() and len(template["description"]) >= 40, template["name"]
        assert template["mediaType"] == "image"
        thumbnail = TEMPLATE_INDEX.parent / f"{template['name']}.{template['mediaSubtype']}"
        with Image.open(thumbnail) as image:  # the frontend asks for <name>.<mediaSubtype> beside the workflow
            assert image.format.lower() == {"jpg": "jpeg"}.get(template["mediaSubtype"], template["mediaSubtype"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.stem)
def test_every_picture_a_workflow_loads_is_shipped_small_and_described(path):
    readme = (SHIPPED_INPUTS / "README.md").read_text()
    names = load_images(json.loads(path.read_text()))
    assert names, f"{path.name} loads no picture"
    for name in names:
        picture = SHIPPED_INPUTS / name
        assert picture.is_file(), f"{path.name} loads {name}, which workflows/input/ does not ship"
        with Image.open(picture) as image:
            assert image.format in ("PNG", "JPEG") and 64 <= min(image.size) and max(image.size) <= 1024
            image.verify()
        assert picture.stat().st_size < 300_000, f"{name} is {picture.stat().st_size} bytes: ship a smaller picture"
        assert f"`{name}`" in readme, f"workflows/input/README.md does not say where {name} comes from"


def test_the_shipped_pictures_are_all_used():
    used = {name for path in WORKFLOWS for name in load_images(json.loads(path.read_text()))}
    shipped = {picture.name for picture in SHIPPED_INPUTS.iterdir() if picture.name != "README.md"}
    assert shipped == used, f"pictures no workflow loads: {sorted(shipped - used)}"


@pytest.fixture(scope="module")
def shipped_inputs(pack_module):
    return pack_module("nodes.shipped_inputs")


def test_the_pictures_are_copied_into_comfyuis_input_folder(shipped_inputs, tmp_path):
    input_folder = tmp_path / "input"  # ComfyUI creates it on start; a first start may not have yet
    written = shipped_inputs.copy_shipped_inputs(input_folder)
    pictures = sorted(p.name for p in SHIPPED_INPUTS.iterdir() if p.suffix == ".png")
    assert sorted(p.name for p in written) == pictures == sorted(p.name for p in input_folder.iterdir())
    for name in pictures:
        assert (input_folder / name).read_bytes() == (SHIPPED_INPUTS / name).read_bytes()


def test_a_users_picture_of_the_same_name_is_never_replaced(shipped_inputs, tmp_path):
    name = sorted(p.name for p in SHIPPED_INPUTS.iterdir() if p.suffix == ".png")[0]
    Image.new("RGB", (8, 8), "purple").save(tmp_path / name)
    users = (tmp_path / name).read_bytes()
    written = shipped_inputs.copy_shipped_inputs(tmp_path)
    assert tmp_path / name not in written and (tmp_path / name).read_bytes() == users
    assert len(written) == len([p for p in SHIPPED_INPUTS.iterdir() if p.suffix == ".png"]) - 1


def test_copying_again_writes_nothing_and_leaves_no_temporary_files(shipped_inputs, tmp_path):
    shipped_inputs.copy_shipped_inputs(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert shipped_inputs.copy_shipped_inputs(tmp_path) == []
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.stem)
def test_core_loaders_say_where_to_download_each_file_they_name(path):
    """The frontend's missing-models dialog reads properties.models [{name, url, directory}] of the node whose
    widget names the file, and offers the download into models/<directory>/."""
    loaders = [node for node in json.loads(path.read_text())["nodes"] if node["type"] in CORE_LOADER_FOLDERS]
    assert loaders
    for node in loaders:
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(MODEL_FILE_SUFFIXES)]
        entries = {entry["name"]: entry for entry in node["properties"].get("models", [])}
        assert set(entries) == set(files), f"{path.name} {node['type']} #{node['id']}: entries {sorted(entries)}, files {files}"
        for name, entry in entries.items():
            assert set(entry) == {"name", "url", "directory"}
            assert re.fullmatch(rf"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/main/(?:[\w.-]+/)*{re.escape(name)}",
                                entry["url"]), entry["url"]
            assert entry["directory"] == CORE_LOADER_FOLDERS[node["type"]], (node["type"], entry)


@pytest.mark.parametrize("node_id", sorted(NODES))
def test_every_node_has_a_help_page_covering_each_input(node_id):
    page = REPO / "web" / "docs" / f"{node_id}.md"
    assert page.is_file(), f"no help page web/docs/{node_id}.md (the frontend's node help panel reads it)"
    text = page.read_text()
    assert text.startswith("# ") and len(text) > 600
    node = NODES[node_id]
    for name in (*node.required, *node.grows, *(widget.name for widget in node.widgets)):
        assert f"`{name}`" in text, f"web/docs/{node_id}.md does not describe the input `{name}`"


def test_the_pack_names_its_web_folder_for_comfyui_to_serve():
    """ComfyUI serves a package's WEB_DIRECTORY at /extensions/<folder>/ and the help panel reads docs/ there;
    the root __init__ is imported for real (without ComfyUI it registers no nodes but still names the folder)."""
    spec = importlib.util.spec_from_file_location("thinkdiff_root_under_test", REPO / "__init__.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    assert (REPO / root.WEB_DIRECTORY / "docs").is_dir()


def test_pyproject_has_the_registry_fields_and_a_square_icon_of_at_most_400_px():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11's tomllib")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = pyproject["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"] == ">=0.4.0"  # the first ComfyUI release with io.Autogrow
    assert pyproject["project"]["urls"]["Repository"].startswith("https://github.com/")
    prefix = pyproject["project"]["urls"]["Repository"].replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert comfy["Icon"].startswith(prefix), f"the Icon URL {comfy['Icon']} is not a file of the repository"
    with Image.open(REPO / comfy["Icon"][len(prefix):]) as icon:
        assert icon.width == icon.height <= 400 and icon.format in ("PNG", "JPEG")
