"""The comparison methods on one VLM answer: `thinkdiff+text` puts a prompt's T5 encoding after the aligned
answer (the reference's multi-image-input script), `vlm-text` gives FLUX the answer's text as a plain prompt."""

import pytest
import torch
from diffusers import FluxPipeline

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.pipeline import ThinkDiffPipeline, ThinkDiffRequest
from thinkdiff_core.vlm import GenerationSettings

SHORT = GenerationSettings(seed=3, max_new_tokens=8, min_new_tokens=8)


@pytest.fixture(scope="module")
def pipeline_with_t5(tiny_flux_dir, tiny_aligner_path, tiny_vlm) -> ThinkDiffPipeline:
    return ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_aligner_path, tiny_vlm, dtype="fp32", device="cpu",
                                             load_t5=True)


@pytest.fixture(scope="module")
def plain_flux(tiny_flux_dir):
    return FluxPipeline.from_pretrained(tiny_flux_dir)


def test_thinkdiff_plus_text_is_the_aligned_answer_then_the_prompts_t5(pipeline_with_t5, plain_flux, tiny_aligner_path,
                                                                      colour_images):
    requests = [ThinkDiffRequest(colour_images("red", "blue"), ["apple", "car", "cup"], prompt="a red car")]
    tokens = pipeline_with_t5.feature_tokens(requests, SHORT, method="thinkdiff+text")
    inputs = pipeline_with_t5.flux_inputs(tokens, requests, method="thinkdiff+text")
    with torch.no_grad():
        t5, pooled, _ = plain_flux.encode_prompt(prompt=["a red car"], prompt_2=None, max_sequence_length=128)
    aligned = load_aligner(tiny_aligner_path)(tokens)
    assert inputs.prompt_embeds.shape == (1, 8 + 128, 64)
    assert torch.equal(inputs.prompt_embeds[:, :8], aligned)
    assert torch.equal(inputs.prompt_embeds[:, 8:], t5)
    assert torch.equal(inputs.pooled_prompt_embeds, pooled)
    plain = pipeline_with_t5.flux_inputs(tokens, requests)  # the same answer without text: the aligned tokens alone
    assert torch.equal(plain.prompt_embeds, aligned)


def test_vlm_text_is_the_answer_as_a_plain_flux_prompt(pipeline_with_t5, plain_flux, colour_images):
    requests = [ThinkDiffRequest(colour_images("green"), ["hat", "box"])]
    tokens = pipeline_with_t5.feature_tokens(requests, SHORT, method="vlm-text")
    inputs = pipeline_with_t5.flux_inputs(tokens, requests, method="vlm-text")
    with torch.no_grad():
        t5, pooled, _ = plain_flux.encode_prompt(prompt=tokens.texts, prompt_2=None, max_sequence_length=512)
    assert torch.equal(inputs.prompt_embeds, t5) and torch.equal(inputs.pooled_prompt_embeds, pooled)


def test_methods_share_the_vlm_answer_for_the_same_seed(pipeline_with_t5, colour_images):
    common = dict(height=32, width=32, num_inference_steps=1, image_seeds=[4], progress=False)
    request = ThinkDiffRequest(colour_images("red"), ["apple", "car"])
    ours = pipeline_with_t5(request, SHORT, method="thinkdiff", **common)
    baseline = pipeline_with_t5(request, SHORT, method="vlm-text", **common)
    assert ours.texts == baseline.texts
    assert not torch.equal(ours.flux_inputs.prompt_embeds[:, :1], baseline.flux_inputs.prompt_embeds[:, :1])


def test_text_methods_need_t5_and_an_lvlm_aligner(tiny_pipeline, tiny_clip_pipeline, colour_images):
    request = [ThinkDiffRequest(colour_images("red"), ["a", "b"])]
    with pytest.raises(ValueError, match="load_t5=True"):
        tiny_pipeline.feature_tokens(request, SHORT, method="vlm-text")
    with pytest.raises(ValueError, match="needs a ThinkDiff-LVLM aligner"):
        tiny_clip_pipeline.feature_tokens([ThinkDiffRequest(colour_images("red"))], method="thinkdiff+text")
    with pytest.raises(ValueError, match="Unknown method"):
        tiny_pipeline.feature_tokens(request, SHORT, method="text")
    with pytest.raises(ValueError, match="VLM's answer alone"):  # a prompt beside a VLM only for thinkdiff+text
        tiny_pipeline.feature_tokens([ThinkDiffRequest(colour_images("red"), ["a", "b"], prompt="x")], SHORT)


@pytest.mark.parametrize("features", ["input", "both"])
def test_an_ablation_aligner_reads_what_it_was_trained_on(tiny_flux_dir, tiny_vlm, tmp_path, colour_images, features):
    """The aligner's provenance `features` (written by train.align) makes the pipeline feed the prompt tokens' states."""
    from thinkdiff_core.aligner import Aligner
    from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, save_aligner
    from thinkdiff_core.tokens import LVLM_RECIPE

    path = save_aligner(tmp_path / "ablation.safetensors", LoadedAligner(
        Aligner(tiny_vlm.hidden_size, 64), AlignerInfo(tiny_vlm.model_id, LVLM_RECIPE, {"features": features})))
    pipeline = ThinkDiffPipeline.from_pretrained(tiny_flux_dir, path, tiny_vlm, dtype="fp32", device="cpu")
    requests = [ThinkDiffRequest(colour_images("red", "blue"), ["apple", "car", "cup"]),
                ThinkDiffRequest(colour_images("green"), ["hat", "box"])]
    tokens = pipeline.feature_tokens(requests, SHORT)
    from thinkdiff_core.prompts import build_prompt

    answer = tiny_vlm.generate([build_prompt("cobsat_reasoning", list(r.images), list(r.words)) for r in requests],
                               SHORT, prompt_features=True)
    assert tokens.texts == answer.texts
    for row, prompt in enumerate(answer.prompt_features):
        expected = prompt if features == "input" else torch.cat([prompt, answer.features[row, :answer.lengths[row]]])
        assert tokens.lengths[row] == len(expected)
        assert torch.equal(tokens.features[row, :len(expected)], expected)
        assert not tokens.features[row, len(expected):].any()
    assert tokens.lengths[0] != tokens.lengths[1]  # two images vs one: prompts of different lengths
