"""The wrong-VLM guard: tokens carry their VLM's family, aligners record theirs; another family is refused (or
allowed with a warning), another checkpoint of the same family only warns."""

import logging

import pytest
import torch

from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, load_aligner, save_aligner
from thinkdiff_core.families import family_from_id
from thinkdiff_core.prompts import cobsat_prompt
from thinkdiff_core.testing.tiny_pipeline import write_tiny_aligner
from thinkdiff_core.tokens import LVLM_RECIPE, ThinkDiffTokens

GREEDY_3 = dict(seed=0, temperature=0.0, max_new_tokens=3, min_new_tokens=3)


@pytest.mark.parametrize(("model_id", "family"), [
    ("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl"), ("Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
    ("Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl"), ("models/LLM/qwen2_5_vl", "qwen2_5_vl"), ("my-finetune", ""),
    ("Salesforce/blip2-flan-t5-xxl", ""),
])
def test_family_from_id(model_id, family):
    assert family_from_id(model_id) == family


def tokens_of(model_id: str, family: str, width: int = 64) -> ThinkDiffTokens:
    return ThinkDiffTokens(torch.randn(1, 3, width), model_id, LVLM_RECIPE, source_family=family)


def official_like(width: int = 64) -> LoadedAligner:
    """An aligner whose metadata says what the official .pth files say (trained on Qwen2-VL-7B-Instruct)."""
    from thinkdiff_core.aligner import Aligner

    return LoadedAligner(Aligner(width, 64).eval(), AlignerInfo("Qwen/Qwen2-VL-7B-Instruct", LVLM_RECIPE))


def test_generated_tokens_carry_the_family(load_tiny_vlm, colour_images):
    from thinkdiff_core.vlm import GenerationSettings

    for model_type in ("qwen2_vl", "qwen2_5_vl"):
        vlm = load_tiny_vlm(model_type)
        tokens = vlm.generate([cobsat_prompt(colour_images("red"), ["red", "blue"])], GenerationSettings(**GREEDY_3))
        assert tokens.source_family == vlm.family == model_type


def test_another_family_is_refused_with_both_names_and_the_way_out():
    with pytest.raises(ValueError) as refused:
        official_like()(tokens_of("Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"))
    message = str(refused.value)
    assert "These tokens come from Qwen2.5-VL (Qwen2.5-VL-7B-Instruct)" in message
    assert "the aligner was trained on Qwen2-VL (Qwen/Qwen2-VL-7B-Instruct)" in message
    assert "Load Qwen/Qwen2-VL-7B-Instruct in the VLM loader" in message and "allow_other_vlm" in message


def test_allowing_another_family_aligns_with_a_warning(caplog):
    tokens = tokens_of("Qwen2.5-VL-7B-Instruct", "qwen2_5_vl")
    with caplog.at_level(logging.WARNING, logger="thinkdiff_core.families"):
        aligned = official_like()(tokens, allow_other_vlm=True)
    assert aligned.shape == (1, 3, 64)
    assert "aligning Qwen2.5-VL (Qwen2.5-VL-7B-Instruct) features with an aligner trained on Qwen2-VL" in caplog.text


def test_a_fine_tune_of_the_same_family_only_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="thinkdiff_core.families"):
        official_like()(tokens_of("someone/Qwen2-VL-7B-Instruct-cobsat-ft", "qwen2_vl"))
    assert "same family, Qwen2-VL" in caplog.text and "fine-tune" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="thinkdiff_core.families"):
        official_like()(tokens_of("Qwen2-VL-7B-Instruct", "qwen2_vl"))  # a local folder of the very checkpoint
    assert caplog.text == ""


def test_unknown_families_are_not_judged(caplog):
    with caplog.at_level(logging.WARNING, logger="thinkdiff_core.families"):
        official_like()(tokens_of("my-finetune", ""))
        LoadedAligner(official_like().module, AlignerInfo("my-aligner", LVLM_RECIPE))(tokens_of("x", "qwen3_vl"))
    assert caplog.text == ""


def test_the_family_is_saved_with_an_aligner_and_read_back(tmp_path):
    path = write_tiny_aligner(tmp_path / "a.safetensors", source_model_id="local-folder", input_size=64)
    aligner = load_aligner(path)
    assert aligner.info.family == ""
    aligner.info.source_family = "qwen2_5_vl"
    reloaded = load_aligner(save_aligner(tmp_path / "b.safetensors", aligner))
    assert reloaded.info.family == "qwen2_5_vl"
    with pytest.raises(ValueError, match="These tokens come from Qwen2-VL .* trained on Qwen2.5-VL"):
        reloaded(tokens_of("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl"))


def test_the_official_checkpoint_layout_records_qwen2_vl(tmp_path):
    """An official-layout .pth (its training config names the VLM) reads as trained on the Qwen2-VL family."""
    state = {f"mm_projector.{k}": v for k, v in official_like().module.state_dict().items()}
    config = {"model": {"arch": "thinkdiff_lvlm", "mllama_pretrained_model_name_or_path": "Qwen/Qwen2-VL-7B-Instruct"}}
    torch.save({"model": state, "config": config}, tmp_path / "thinkdiff_lvlm.pth")
    info = load_aligner(tmp_path / "thinkdiff_lvlm.pth").info
    assert (info.source_model_id, info.family) == ("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl")
