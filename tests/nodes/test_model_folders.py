"""Finding Hugging Face model folders under ComfyUI's model directories, and resolving names safely."""

import pytest


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
    assert model_folders.resolve_model_folder(roots, "Qwen2-VL-7B-Instruct") == first
    assert model_folders.resolve_model_folder(roots, "Qwen/Qwen3-VL-8B-Instruct") == nested


@pytest.mark.parametrize("name", ["../secret", "Qwen/../../secret", "/etc", ""])
def test_refuses_names_that_leave_the_model_folders(model_folders, tmp_path, name):
    make_model(tmp_path / "secret")
    with pytest.raises(ValueError, match="not a model folder name"):
        model_folders.resolve_model_folder([tmp_path / "vlm"], name)


def test_a_missing_folder_names_where_it_looked_and_what_to_do(model_folders, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        model_folders.resolve_model_folder([tmp_path / "vlm", tmp_path / "LLM"], "Qwen2-VL-7B-Instruct")
    message = str(missing.value)
    assert str(tmp_path / "vlm") in message and str(tmp_path / "LLM") in message and "config.json" in message
