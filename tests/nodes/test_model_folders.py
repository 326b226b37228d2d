"""Finding model folders and files under ComfyUI's model directories, filtering them, and resolving names safely."""

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from thinkdiff_core.checkpoint import load_aligner, save_aligner
from tests.tiny_files import write_official_aligner
from thinkdiff_core.vision import VisionEncoder
from thinkdiff_core.vision_files import convert_blip2_vision


def make_model(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_lists_folders_with_config_json_across_roots(model_folders, tmp_path):
    vlm, llm = tmp_path / "vlm", tmp_path / "LLM"
    make_model(vlm / "Qwen2-VL-7B-Instruct")
    make_model(vlm / "Qwen2-VL-7B-Instruct" / "subpart")  # part of a model: not another model
    make_model(llm / "Qwen" / "Qwen3-VL-8B-Instruct")
    make_model(llm / "Qwen2-VL-7B-Instruct")  # same name in a later root: listed once
    make_model(llm / ".cache" / "hidden")
    (llm / "not_a_model").mkdir()
    (llm / "loose.safetensors").write_bytes(b"")
    names = model_folders.find_model_folders([vlm, llm, tmp_path / "missing"])
    assert names == ["Qwen/Qwen3-VL-8B-Instruct", "Qwen2-VL-7B-Instruct"]


def test_a_root_that_is_itself_a_model_is_not_listed(model_folders, tmp_path):
    make_model(tmp_path / "vlm")
    assert model_folders.find_model_folders([tmp_path / "vlm"]) == []


def test_resolves_a_name_under_the_first_root_that_has_it(model_folders, tmp_path):
    first = make_model(tmp_path / "vlm" / "Qwen2-VL-7B-Instruct")
    make_model(tmp_path / "LLM" / "Qwen2-VL-7B-Instruct")
    nested = make_model(tmp_path / "LLM" / "Qwen" / "Qwen3-VL-8B-Instruct")
    roots = [tmp_path / "vlm", tmp_path / "LLM"]
    assert model_folders.resolve_vlm_folder(roots, "Qwen2-VL-7B-Instruct") == first
    assert model_folders.resolve_vlm_folder(roots, "Qwen/Qwen3-VL-8B-Instruct") == nested


@pytest.mark.parametrize("name", ["../secret", "Qwen/../../secret", "/etc", ""])
def test_refuses_names_that_leave_the_model_folders(model_folders, tmp_path, name):
    make_model(tmp_path / "secret")
    with pytest.raises(ValueError, match="not a model name"):
        model_folders.resolve_vlm_folder([tmp_path / "vlm"], name)


def test_a_missing_folder_names_where_it_looked_and_what_to_do(model_folders, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        model_folders.resolve_vlm_folder([tmp_path / "vlm", tmp_path / "LLM"], "Qwen2-VL-7B-Instruct")
    message = str(missing.value)
    assert str(tmp_path / "vlm") in message and str(tmp_path / "LLM") in message and "config.json" in message


@pytest.fixture(scope="module")
def model_tree(tmp_path_factory, blip2_dir, vision_encoder):
    """models/thinkdiff/ and models/clip_vision/ as a user might fill them: what our loaders read, and decoys."""
    base = tmp_path_factory.mktemp("models")
    thinkdiff, clip_vision = base / "thinkdiff", base / "clip_vision"
    (clip_vision / "Salesforce").mkdir(parents=True)
    (clip_vision / "Salesforce" / "blip2-flan-t5-xxl").symlink_to(blip2_dir, target_is_directory=True)
    (thinkdiff / "blip2").mkdir(parents=True)
    (thinkdiff / "blip2" / "blip2-flan-t5-xxl").symlink_to(blip2_dir, target_is_directory=True)  # its shards: no aligners
    convert_blip2_vision(blip2_dir, thinkdiff / "blip2_vision.safetensors")
    write_official_aligner(thinkdiff / "thinkdiff_lvlm.pth", 64)
    write_official_aligner(thinkdiff / "thinkdiff_clip.pth", vision_encoder.hidden_size, variant="clip")
    save_aligner(thinkdiff / "mine" / "clip_aligner.safetensors", load_aligner(thinkdiff / "thinkdiff_clip.pth"))
    # decoys: ComfyUI's own CLIP vision file, another model folder, damaged or unreadable files
    save_file({"vision_model.embeddings.class_embedding": torch.zeros(4)}, str(clip_vision / "clip_vision_h.safetensors"))
    (clip_vision / "siglip").mkdir()
    (clip_vision / "siglip" / "config.json").write_text('{"model_type": "siglip_vision_model"}')
    (clip_vision / "broken").mkdir()
    (clip_vision / "broken" / "config.json").write_text("{not json")
    (clip_vision / "truncated.safetensors").write_bytes(b"\x10\x00\x00")
    (thinkdiff / "notes.txt").write_text("not a model")
    (thinkdiff / "my-run").mkdir()  # a training run's optimizer state, as train.align writes it beside a checkpoint
    torch.save({"step": 2, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}},
               thinkdiff / "my-run" / "trainer.pt")
    (thinkdiff / ".hidden.safetensors").write_bytes((thinkdiff / "blip2_vision.safetensors").read_bytes())
    return thinkdiff, clip_vision


def test_vision_loader_lists_blip2_folders_and_vision_files_from_both_folders(model_folders, model_tree):
    assert model_folders.find_vision_models(model_tree) == [
        "Salesforce/blip2-flan-t5-xxl", "blip2/blip2-flan-t5-xxl", "blip2_vision.safetensors"]


def test_aligner_list_leaves_out_vision_files_and_model_shards(model_folders, model_tree):
    thinkdiff, _ = model_tree
    names = model_folders.find_aligner_files([thinkdiff])
    assert names == ["mine/clip_aligner.safetensors", "thinkdiff_clip.pth", "thinkdiff_lvlm.pth"]
    for name in names:
        load_aligner(thinkdiff / name)


def test_every_listed_vision_model_loads_and_encodes_like_the_folder(model_folders, model_tree, vision_encoder):
    picture = [Image.new("RGB", (50, 30), "orange")]
    expected = vision_encoder.encode(picture).features
    names = model_folders.find_vision_models(model_tree)
    assert len(names) == 3  # the folder in each model folder and the converted file: none left untried
    for name in names:
        path = model_folders.resolve_vision_model(model_tree, name)
        tokens = VisionEncoder.from_pretrained(path, dtype="fp32", device="cpu").encode(picture)
        torch.testing.assert_close(tokens.features, expected)


def test_resolves_vision_names_under_either_folder_and_refuses_others(model_folders, model_tree):
    thinkdiff, clip_vision = model_tree
    assert model_folders.resolve_vision_model(model_tree, "blip2_vision.safetensors") == thinkdiff / "blip2_vision.safetensors"
    assert model_folders.resolve_vision_model(model_tree, "Salesforce/blip2-flan-t5-xxl") == (
        clip_vision / "Salesforce" / "blip2-flan-t5-xxl")
    with pytest.raises(ValueError, match="not a model name"):
        model_folders.resolve_vision_model(model_tree, "../clip_vision/clip_vision_h.safetensors")
    with pytest.raises(FileNotFoundError) as missing:
        model_folders.resolve_vision_model(model_tree, "blip2-flan-t5-xxl")
    message = str(missing.value)
    assert str(thinkdiff) in message and str(clip_vision) in message and "convert vision" in message
