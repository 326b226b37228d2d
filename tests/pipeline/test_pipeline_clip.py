"""ThinkDiffPipeline, CLIP variant: `[aligned image 1, ..., aligned image N, T5(prompt)]` with pooled CLIP-L(prompt)."""

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.conditioning import merge_conditioning
from thinkdiff_core.pipeline import ThinkDiffPipeline, ThinkDiffRequest
from thinkdiff_core.testing.tiny_pipeline import write_tiny_aligner
from thinkdiff_core.tokens import CLIP_RECIPE
from thinkdiff_core.variants import ReasoningSource, VisionSource
from thinkdiff_core.vision import VisionEncoder

T5_LENGTH = 128  # the reference's flux_max_sequence_length


@pytest.fixture
def requests_(colour_images):
    return [
        ThinkDiffRequest(colour_images("red", "blue"), prompt="a red cup on a blue box"),
        ThinkDiffRequest(colour_images("green", "yellow"), prompt=""),
    ]


def node_path_conditioning(flux_dir, blip2_dir, aligner_path, request, max_length=T5_LENGTH):
    """The ComfyUI node path for one request, built from the same files without the pipeline: the FLUX
    folder's T5 on the prompt (padded to `max_length`) and CLIP-L pooled of the prompt as the base,
    `aligner(encoder.encode(images))` merged in `prepend` mode with guidance 3.5."""
    t5_tokenizer = AutoTokenizer.from_pretrained(flux_dir / "tokenizer_2")
    t5 = T5EncoderModel.from_pretrained(flux_dir / "text_encoder_2")
    clip_tokenizer = CLIPTokenizer.from_pretrained(flux_dir / "tokenizer")
    clip = CLIPTextModel.from_pretrained(flux_dir / "text_encoder")
    with torch.no_grad():
        t5_ids = t5_tokenizer([request.prompt], padding="max_length", max_length=max_length, truncation=True,
                              return_tensors="pt").input_ids
        prompt_t5 = t5(t5_ids).last_hidden_state
        clip_ids = clip_tokenizer([request.prompt], padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt").input_ids
        pooled = clip(clip_ids).pooler_output
    encoder = VisionEncoder.from_pretrained(blip2_dir, dtype="fp32", device="cpu")
    aligned = load_aligner(aligner_path)(encoder.encode(request.images))
    return merge_conditioning([[prompt_t5, {"pooled_output": pooled, "guidance": 3.5}]], aligned, "prepend")


def test_variant_comes_from_the_aligner_and_t5_is_loaded_only_for_clip(tiny_clip_pipeline, tiny_pipeline):
    assert tiny_clip_pipeline.variant == "clip" and isinstance(tiny_clip_pipeline.source, VisionSource)
    assert isinstance(tiny_clip_pipeline.flux.text_encoder_2, T5EncoderModel)
    assert tiny_pipeline.variant == "lvlm" and tiny_pipeline.flux.text_encoder_2 is None


def test_flux_inputs_equal_node_path_conditioning(tiny_clip_pipeline, tiny_flux_dir, blip2_dir,
                                                  tiny_clip_aligner_path, requests_):
    tokens = tiny_clip_pipeline.feature_tokens(requests_)
    assert tokens.token_recipe == CLIP_RECIPE and tokens.features.shape == (2, 2 * 65, 32)
    inputs = tiny_clip_pipeline.flux_inputs(tokens, requests_)
    assert inputs.prompt_embeds.shape == (2, 2 * 65 + T5_LENGTH, 64)
    assert inputs.guidance_scale == 3.5
    for row, request in enumerate(requests_):
        (node_cond, node_extras), = node_path_conditioning(tiny_flux_dir, blip2_dir, tiny_clip_aligner_path,
                                                           request)
        assert torch.equal(inputs.prompt_embeds[row], node_cond[0])
        assert torch.equal(inputs.pooled_prompt_embeds[row], node_extras["pooled_output"][0])
    assert not torch.allclose(inputs.pooled_prompt_embeds[0], inputs.pooled_prompt_embeds[1])  # each its own prompt


def test_images_keep_their_order(tiny_clip_pipeline, colour_images):
    """Block i of the 65-token blocks is image i's aligned tokens; swapping the images swaps the blocks."""
    red, blue = colour_images("red", "blue")

    def prompt_embeds(images):
        request = ThinkDiffRequest(images, prompt="a cup")
        return tiny_clip_pipeline.flux_inputs(tiny_clip_pipeline.feature_tokens([request]), [request]).prompt_embeds[0]

    forward, backward = prompt_embeds([red, blue]), prompt_embeds([blue, red])
    encoder, aligner = tiny_clip_pipeline.source.encoder, tiny_clip_pipeline.aligner
    alone = {name: aligner(encoder.encode([image]))[0] for name, image in (("red", red), ("blue", blue))}
    assert not torch.allclose(alone["red"], alone["blue"], atol=1e-3)
    first, second = forward[:65], forward[65:130]
    torch.testing.assert_close(first, alone["red"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, alone["blue"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backward[:65], second)
    torch.testing.assert_close(backward[65:130], first)
    assert torch.equal(forward[130:], backward[130:])  # the same prompt after them


def test_max_sequence_length_sets_the_prompt_tokens(tiny_clip_pipeline, tiny_flux_dir, blip2_dir,
                                                    tiny_clip_aligner_path, colour_images):
    short = ThinkDiffPipeline(tiny_clip_pipeline.flux, tiny_clip_pipeline.aligner,
                              VisionSource(tiny_clip_pipeline.source.encoder, max_sequence_length=16))
    request = ThinkDiffRequest(colour_images("purple"), prompt="a purple star")
    inputs = short.flux_inputs(short.feature_tokens([request]), [request])
    (node_cond, _), = node_path_conditioning(tiny_flux_dir, blip2_dir, tiny_clip_aligner_path, request, 16)
    assert inputs.prompt_embeds.shape == (1, 65 + 16, 64)
    assert torch.equal(inputs.prompt_embeds, node_cond)
    with pytest.raises(ValueError, match="between 1 and 512"):
        VisionSource(tiny_clip_pipeline.source.encoder, max_sequence_length=513)


def test_call_samples_flux_with_exactly_those_inputs(tiny_clip_pipeline, tiny_flux_dir, requests_):
    result = tiny_clip_pipeline(requests_, image_seeds=[7, 8], height=32, width=32, num_inference_steps=2,
                                progress=False)
    assert result.texts == []
    expected_inputs = tiny_clip_pipeline.flux_inputs(tiny_clip_pipeline.feature_tokens(requests_), requests_)
    assert torch.equal(result.flux_inputs.prompt_embeds, expected_inputs.prompt_embeds)

    flux = FluxPipeline.from_pretrained(tiny_flux_dir, text_encoder_2=None, tokenizer_2=None)
    flux.set_progress_bar_config(disable=True)
    expected = flux(prompt_embeds=expected_inputs.prompt_embeds, pooled_prompt_embeds=expected_inputs.pooled_prompt_embeds,
                    guidance_scale=3.5, num_inference_steps=2, height=32, width=32,
                    generator=[torch.Generator().manual_seed(s) for s in (7, 8)], output_type="np").images
    produced = np.stack([np.asarray(image) for image in result.images])
    assert produced.shape == (2, 32, 32, 3)
    assert np.abs(produced.astype(int) - np.round(expected * 255).astype(int)).max() <= 1


# --- refusals: the aligner decides the variant, and the other variant's parts are refused before loading ---


def test_clip_aligner_with_a_vlm_is_refused_before_any_model_loads(tiny_flux_dir, tiny_clip_aligner_path, tmp_path):
    with pytest.raises(ValueError, match="ThinkDiff-CLIP aligner .* Pass the vision encoder"):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_clip_aligner_path, tmp_path / "no-vlm-here", device="cpu")


def test_clip_aligner_without_a_vision_encoder_is_refused(tiny_flux_dir, tiny_clip_aligner_path):
    with pytest.raises(ValueError, match="needs its vision encoder: pass vision_encoder="):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_clip_aligner_path, device="cpu")


def test_lvlm_aligner_with_a_vision_encoder_is_refused(tiny_flux_dir, tiny_aligner_path, tmp_path):
    with pytest.raises(ValueError, match="ThinkDiff-LVLM aligner .* Drop the vision encoder"):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_aligner_path, vision_encoder=tmp_path / "no-blip2-here",
                                          device="cpu")


def test_parts_of_different_variants_are_refused(tiny_clip_pipeline, tiny_pipeline):
    with pytest.raises(ValueError, match="ThinkDiff-CLIP aligner .* feature source is ThinkDiff-LVLM's"):
        ThinkDiffPipeline(tiny_clip_pipeline.flux, tiny_clip_pipeline.aligner, ReasoningSource(tiny_pipeline.source.vlm))
    with pytest.raises(ValueError, match="ThinkDiff-LVLM aligner .* feature source is ThinkDiff-CLIP's"):
        ThinkDiffPipeline(tiny_pipeline.flux, tiny_pipeline.aligner, tiny_clip_pipeline.source)


def test_clip_needs_flux_with_its_t5(tiny_clip_pipeline, tiny_pipeline):
    with pytest.raises(ValueError, match="load FLUX with its text_encoder_2"):
        ThinkDiffPipeline(tiny_pipeline.flux, tiny_clip_pipeline.aligner, tiny_clip_pipeline.source)


def test_aligner_for_another_tower_width_is_refused(tiny_flux_dir, blip2_dir, tmp_path):
    wrong = write_tiny_aligner(tmp_path / "wide.safetensors", "blip2", input_size=48, token_recipe=CLIP_RECIPE)
    with pytest.raises(ValueError, match="hidden size 32 but the aligner expects 48"):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, wrong, vision_encoder=blip2_dir, dtype="fp32",
                                          device="cpu")


def test_clip_requests_refuse_words_and_mixed_image_counts(tiny_clip_pipeline, colour_images):
    with pytest.raises(ValueError, match="no VLM, so words and instructions are not read"):
        tiny_clip_pipeline.feature_tokens([ThinkDiffRequest(colour_images("red"), ["red", "cup"])])
    mixed = [ThinkDiffRequest(colour_images("red", "blue"), prompt="a"), ThinkDiffRequest(colour_images("red"), prompt="b")]
    with pytest.raises(ValueError, match=r"same number of images in every request; got \[2, 1\]"):
        tiny_clip_pipeline(mixed, height=32, width=32, num_inference_steps=1, progress=False)
