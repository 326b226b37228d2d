"""ThinkDiffPipeline: its FLUX inputs are the nodes' conditioning, and it really samples with them."""

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.conditioning import merge_conditioning
from thinkdiff_core.pipeline import ThinkDiffPipeline, ThinkDiffRequest, resolve_aligner_file, resolve_flux_folder
from thinkdiff_core.testing.tiny_pipeline import write_tiny_aligner
from thinkdiff_core.vlm import GenerationSettings

SHORT = GenerationSettings(seed=3, max_new_tokens=8, min_new_tokens=8)


@pytest.fixture
def requests_(colour_images):
    return [
        ThinkDiffRequest(colour_images("red", "blue"), ["apple", "car", "cup"]),
        ThinkDiffRequest(colour_images("green"), ["hat", "box"]),
    ]


def node_path_conditioning(flux_dir, aligner_path, tokens):
    """The ComfyUI node path, built from the same files without the pipeline: empty-prompt T5 output and
    CLIP-L pooled vector as the base, `aligner(tokens)` merged in `replace` mode with guidance 3.5."""
    t5_tokenizer = AutoTokenizer.from_pretrained(flux_dir / "tokenizer_2")
    t5 = T5EncoderModel.from_pretrained(flux_dir / "text_encoder_2")
    clip_tokenizer = CLIPTokenizer.from_pretrained(flux_dir / "tokenizer")
    clip = CLIPTextModel.from_pretrained(flux_dir / "text_encoder")
    with torch.no_grad():
        empty_t5 = t5(t5_tokenizer([""], return_tensors="pt").input_ids).last_hidden_state
        ids = clip_tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
        empty_pooled = clip(ids).pooler_output
    aligned = load_aligner(aligner_path)(tokens)
    return merge_conditioning([[empty_t5, {"pooled_output": empty_pooled, "guidance": 3.5}]], aligned, "replace")


def test_flux_inputs_equal_node_path_conditioning(tiny_pipeline, tiny_flux_dir, tiny_aligner_path, requests_):
    tokens = tiny_pipeline.feature_tokens(requests_, SHORT)
    inputs = tiny_pipeline.flux_inputs(tokens, requests_)
    (node_cond, node_extras), = node_path_conditioning(tiny_flux_dir, tiny_aligner_path, tokens)

    assert inputs.prompt_embeds.shape == (2, 8, 64)
    assert torch.equal(inputs.prompt_embeds, node_cond)
    assert torch.equal(inputs.pooled_prompt_embeds, node_extras["pooled_output"])
    assert inputs.guidance_scale == node_extras["guidance"] == 3.5


def test_pooled_vector_is_clip_of_the_empty_prompt_not_of_the_vlm_text(tiny_pipeline, tiny_flux_dir, requests_):
    tokens = tiny_pipeline.feature_tokens(requests_, SHORT)
    pooled = tiny_pipeline.flux_inputs(tokens, requests_).pooled_prompt_embeds
    tokenizer = CLIPTokenizer.from_pretrained(tiny_flux_dir / "tokenizer")
    clip = CLIPTextModel.from_pretrained(tiny_flux_dir / "text_encoder")
    with torch.no_grad():
        of_text = clip(tokenizer(tokens.texts, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids).pooler_output
    assert not torch.allclose(pooled, of_text)
    assert torch.equal(pooled[0], pooled[1])


def test_call_samples_flux_with_exactly_those_inputs(tiny_pipeline, tiny_flux_dir, requests_):
    """The images equal a plain FluxPipeline run on the node-path inputs with the same seeds."""
    result = tiny_pipeline(requests_, SHORT, image_seeds=[11, 12], height=32, width=32, num_inference_steps=2,
                           progress=False)
    tokens = tiny_pipeline.feature_tokens(requests_, SHORT)
    assert tokens.texts == result.texts and torch.equal(tokens.features, result.tokens.features)

    flux = FluxPipeline.from_pretrained(tiny_flux_dir, text_encoder_2=None, tokenizer_2=None)
    flux.set_progress_bar_config(disable=True)
    expected = flux(prompt_embeds=result.flux_inputs.prompt_embeds, pooled_prompt_embeds=result.flux_inputs.pooled_prompt_embeds,
                    guidance_scale=3.5, num_inference_steps=2, height=32, width=32,
                    generator=[torch.Generator().manual_seed(s) for s in (11, 12)], output_type="np").images
    produced = np.stack([np.asarray(image) for image in result.images])
    assert produced.shape == (2, 32, 32, 3)
    assert np.abs(produced.astype(int) - np.round(expected * 255).astype(int)).max() <= 1
    assert not np.array_equal(produced[0], produced[1])


def test_an_image_depends_on_its_seed_not_on_its_batch(tiny_pipeline, requests_):
    """Greedy VLM, reference min = max tokens: a batched image matches the same request run alone."""
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=6, min_new_tokens=6)
    common = dict(height=32, width=32, num_inference_steps=2, progress=False)
    batch = tiny_pipeline(requests_, greedy, image_seeds=[5, 6], **common)
    alone = tiny_pipeline(requests_[1], greedy, image_seeds=[6], **common)
    assert alone.texts[0] == batch.texts[1]
    difference = np.abs(np.asarray(alone.images[0], dtype=int) - np.asarray(batch.images[1], dtype=int))
    assert difference.max() <= 2


def test_lvlm_requests_refuse_a_text_prompt(tiny_pipeline, colour_images):
    with pytest.raises(ValueError, match="VLM's answer alone"):
        tiny_pipeline.feature_tokens([ThinkDiffRequest(colour_images("red"), ["a", "b"], prompt="a cat")], SHORT)


def test_size_must_be_a_multiple_of_16(tiny_pipeline, requests_):
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_pipeline(requests_, SHORT, height=40, width=32)


def test_offloading_needs_an_accelerator(tiny_pipeline, tiny_flux_dir, tiny_aligner_path, tiny_vlm):
    with pytest.raises(ValueError, match="offload='none' on a CPU-only machine"):
        tiny_pipeline.enable_offload("model", "cpu")
    assert tiny_pipeline.offload == "none"
    with pytest.raises(ValueError, match="offload='none' on a CPU-only machine"):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_aligner_path, tiny_vlm, device="cpu", offload="sequential")


def test_aligner_for_another_vlm_is_refused_at_load(tiny_flux_dir, tiny_vlm, tmp_path):
    wrong = write_tiny_aligner(tmp_path / "wide.safetensors", "some/vlm", input_size=96)
    with pytest.raises(ValueError, match="hidden size 64 but the aligner expects 96"):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, wrong, tiny_vlm, dtype="fp32", device="cpu")


def test_aligner_for_another_flux_width_is_refused_at_load(tiny_flux_dir, tiny_vlm, tmp_path):
    wrong = write_tiny_aligner(tmp_path / "narrow.safetensors", "some/vlm", output_size=48)
    with pytest.raises(ValueError, match="width 64 but the aligner writes 48"):
        ThinkDiffPipeline.from_pretrained(tiny_flux_dir, wrong, tiny_vlm, dtype="fp32", device="cpu")


def test_paths_are_validated(tmp_path, tiny_aligner_path, tiny_flux_dir):
    assert resolve_aligner_file(tiny_aligner_path) == tiny_aligner_path
    assert resolve_flux_folder(tiny_flux_dir) == str(tiny_flux_dir)
    with pytest.raises(FileNotFoundError, match="No aligner file"):
        resolve_aligner_file(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="No aligner file"):
        resolve_aligner_file("./models/thinkdiff/missing.pth")
    with pytest.raises(ValueError, match="model_index.json"):
        resolve_flux_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a Hub id"):
        resolve_flux_folder(tmp_path / "nope" / "deeper" / "still")


def test_hub_aligner_without_the_hub_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="pass its local path"):
        resolve_aligner_file("Mifucius/ThinkDiff/not_cached_here.pth")


def test_the_vlm_loads_in_its_own_precision(tiny_flux_dir, tiny_aligner_path, tiny_vlm_dirs):
    """`vlm_precision` quantizes the VLM only; FLUX and the aligner keep `dtype`."""
    pipeline = ThinkDiffPipeline.from_pretrained(tiny_flux_dir, tiny_aligner_path, tiny_vlm_dirs(), dtype="fp32",
                                                 vlm_precision="nf4", device="cpu")
    vlm = pipeline.source.vlm
    assert str(vlm.precision) == "nf4 (computed in float32)"
    assert type(vlm.model.model.language_model.layers[0].mlp.up_proj.weight).__name__ == "Params4bit"
    assert pipeline.flux.transformer.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in pipeline.aligner.module.parameters())
