"""CLIP aligners, the recipe check in both directions, and the CLIP conditioning `[image 1, image 2, prompt]`."""

import pytest
import torch

from thinkdiff_core.aligner import Aligner
from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, load_aligner, save_aligner
from thinkdiff_core.conditioning import merge_conditioning
from thinkdiff_core.prompts import Prompt
from thinkdiff_core.tokens import CLIP_RECIPE, LVLM_RECIPE, ThinkDiffTokens
from thinkdiff_core.vlm import GenerationSettings


def official_checkpoint(input_size: int, output_size: int, config: dict | None, seed: int = 0) -> dict:
    """The official `torch.save` layout: model (mm_projector.* only), optimizer, config, scaler, epoch."""
    torch.manual_seed(seed)
    module = Aligner(input_size, output_size)
    return {
        "model": {f"mm_projector.{k}": v for k, v in module.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1, 2, 3, 4]}]},
        "config": config if config is not None else {},
        "scaler": {"scale": 65536.0, "_growth_tracker": 0},
        "epoch": 39,
    }


CLIP_TRAIN_CONFIG = {
    "model": {"arch": "blip-vision-t5-decoder", "blip2_pretrained_model_name_or_path": "Salesforce/blip2-flan-t5-xxl",
              "mm_projector_type": "mlp2x_gelu_t5_norm", "vision_downsample_factor": 2},
    "run": {"task": "image_text_pretrain", "runner": "runner_clip_t5"},
}


@pytest.mark.parametrize("config", [CLIP_TRAIN_CONFIG, None], ids=["with-config", "width-only"])
def test_official_clip_pth_is_recognised(tmp_path, config):
    path = tmp_path / "thinkdiff_clip.pth"
    checkpoint = official_checkpoint(1408, 64, config)
    torch.save(checkpoint, path)
    loaded = load_aligner(path)
    assert loaded.info.variant == "clip" and loaded.info.token_recipe == CLIP_RECIPE
    assert loaded.info.source_model_id == "Salesforce/blip2-flan-t5-xxl"
    assert loaded.module.input_size == 1408 and loaded.module.output_size == 64
    assert torch.equal(loaded.module[0].weight, checkpoint["model"]["mm_projector.0.weight"])
    tokens = ThinkDiffTokens(torch.randn(1, 130, 1408), "Salesforce/blip2-flan-t5-xxl", CLIP_RECIPE)
    assert loaded(tokens).shape == (1, 130, 64)


def test_clip_aligner_refuses_lvlm_tokens(tmp_path, tiny_vlm, colour_images):
    path = tmp_path / "thinkdiff_clip.pth"
    torch.save(official_checkpoint(1408, 64, CLIP_TRAIN_CONFIG), path)
    clip_aligner = load_aligner(path)
    lvlm_tokens = tiny_vlm.generate([Prompt(["Describe", colour_images("red")[0]])],
                                    GenerationSettings(max_new_tokens=3, min_new_tokens=3))
    assert lvlm_tokens.token_recipe == LVLM_RECIPE
    with pytest.raises(ValueError, match=r"ThinkDiff-LVLM path .* ThinkDiff-CLIP aligner .*Load the LVLM aligner"):
        clip_aligner(lvlm_tokens)


def test_lvlm_aligner_refuses_clip_tokens(vision_encoder, noise_images):
    """Same width on both sides, so only the recipe can tell them apart."""
    width = vision_encoder.hidden_size
    lvlm_aligner = LoadedAligner(Aligner(width, 64).eval(), AlignerInfo("Qwen/Qwen2-VL-7B-Instruct", LVLM_RECIPE))
    clip_tokens = vision_encoder.encode(noise_images(1))
    with pytest.raises(ValueError, match=r"ThinkDiff-CLIP path .* ThinkDiff-LVLM aligner .*Load the CLIP aligner"):
        lvlm_aligner(clip_tokens)


def test_clip_conditioning_is_images_then_prompt(tmp_path, vision_encoder, noise_images):
    torch.manual_seed(0)
    info = AlignerInfo(vision_encoder.model_id, CLIP_RECIPE, {"trained_by": "test"})
    path = save_aligner(tmp_path / "clip_aligner.safetensors", LoadedAligner(Aligner(vision_encoder.hidden_size, 64), info))
    aligner = load_aligner(path)
    assert aligner.info.token_recipe == CLIP_RECIPE  # recorded in the file's metadata

    first, second = noise_images(2, seed=5)
    aligned = aligner(vision_encoder.encode([first, second]))
    prompt = torch.randn(1, 7, 64)
    pooled = torch.randn(1, 32)
    base = [[prompt, {"pooled_output": pooled, "guidance": 3.5}]]
    (cond, extras), = merge_conditioning(base, aligned, mode="prepend")
    assert cond.shape == (1, 65 + 65 + 7, 64)
    assert torch.allclose(cond[0, :65], aligner(vision_encoder.encode([first]))[0], atol=1e-5)
    assert torch.allclose(cond[0, 65:130], aligner(vision_encoder.encode([second]))[0], atol=1e-5)
    assert torch.equal(cond[0, 130:], prompt[0])
    assert torch.equal(extras["pooled_output"], pooled) and extras["guidance"] == 3.5
