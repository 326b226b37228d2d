"""The one "local path or Hub id" resolver: what reads as a Hub id, and that a local path always wins."""

from pathlib import Path

import pytest

from thinkdiff_core.hub import check_model_source, is_hub_id, local_or_hub_id, model_folder, split_hub_file


def test_hub_ids_are_owner_slash_name():
    assert is_hub_id("Qwen/Qwen2-VL-7B-Instruct") and is_hub_id("black-forest-labs/FLUX.1-dev")
    for text in ("gpt2", "./models/vlm", "/abs/path", "a/b/c", "owner/na me", "owner/--bad", "~/models/x"):
        assert not is_hub_id(text), text


def test_split_hub_file():
    assert split_hub_file("Mifucius/ThinkDiff/thinkdiff_lvlm.pth") == ("Mifucius/ThinkDiff", "thinkdiff_lvlm.pth")
    assert split_hub_file("owner/repo/sub/dir/file.safetensors") == ("owner/repo", "sub/dir/file.safetensors")
    assert split_hub_file("./models/thinkdiff/x.pth") is None and split_hub_file("owner/repo") is None


def test_a_local_path_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert local_or_hub_id("owner/name", "unused") == Path("owner/name")
    with pytest.raises(ValueError, match="no config"):
        model_folder("owner/name", "config.json", missing="missing", not_a_model="no config")
    assert model_folder("other/name", "config.json", missing="missing", not_a_model="no config") == "other/name"
    with pytest.raises(FileNotFoundError, match="missing"):
        model_folder("./other/name", "config.json", missing="missing", not_a_model="no config")


def test_check_model_source_names_the_option(tmp_path):
    check_model_source(tmp_path, "model.decoder", "a T5 folder")
    check_model_source("google/flan-t5-xxl", "model.decoder", "a T5 folder")
    with pytest.raises(FileNotFoundError, match="model.decoder .*no such file or folder.*Give a T5 folder"):
        check_model_source(tmp_path / "nope", "model.decoder", "a T5 folder")
