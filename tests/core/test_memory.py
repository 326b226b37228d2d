"""The working-memory estimate of a VLM generation (against real transformers caches and processors on the tiny
models), the refusal message when weights plus that estimate exceed a budget, and the image-size cap."""

import torch
from PIL import Image
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from thinkdiff_core.images import limit_pixels
from thinkdiff_core.memory import FIT_MARGIN, fit_error, generation_memory, request_memory
from thinkdiff_core.precision import Precision, census
from thinkdiff_core.prompts import cobsat_prompt

GiB = 2**30
BF16 = Precision("bf16", torch.bfloat16)
QWEN2_VL_7B = Qwen2VLConfig(
    text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064),
    vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4, patch_size=14,
                       temporal_patch_size=2, spatial_merge_size=2),
)
with torch.device("meta"):
    SEVEN_B = census(Qwen2VLForConditionalGeneration._from_config(QWEN2_VL_7B))


def estimate(prompt_tokens=1000, image_patches=(1024,), max_new_tokens=128, batch=1):
    return generation_memory(QWEN2_VL_7B, batch=batch, prompt_tokens=prompt_tokens, image_patches=image_patches,
                             max_new_tokens=max_new_tokens, dtype=torch.bfloat16)


def test_the_kv_estimate_is_the_size_of_the_cache_transformers_builds(tiny_vlm, colour_images):
    prompt = cobsat_prompt(colour_images("red", "blue"), ["red", "blue", "green"])
    inputs = tiny_vlm.prepare([prompt])
    with torch.no_grad():
        cache = tiny_vlm.model(**inputs, use_cache=True).past_key_values
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    prompt_tokens = inputs["input_ids"].shape[1]
    working = generation_memory(tiny_vlm.model.config, batch=1, prompt_tokens=prompt_tokens, image_patches=[],
                                max_new_tokens=0, dtype=torch.float32)
    assert working.kv_cache == held


def test_the_request_estimate_counts_the_tokens_and_patches_the_processor_makes(tiny_vlm, colour_images):
    prompts = [cobsat_prompt(colour_images("red", "blue", size=(200, 120)), ["red", "blue", "green"]),
               cobsat_prompt(colour_images("white", size=(64, 64)), ["white", "black"])]
    inputs = tiny_vlm.prepare(prompts)
    patches = inputs["image_grid_thw"].prod(-1).tolist()
    assert sum(patches) == inputs["pixel_values"].shape[0]
    expected = generation_memory(tiny_vlm.model.config, batch=2, prompt_tokens=inputs["input_ids"].shape[1],
                                 image_patches=patches, max_new_tokens=16, dtype=torch.float32)
    assert request_memory(tiny_vlm, prompts, 16) == expected


def test_the_estimate_grows_with_images_tokens_and_batch():
    base = estimate()
    assert estimate(image_patches=(1024, 1024)).vision == 2 * base.vision
    assert estimate(image_patches=()).vision == 0
    assert estimate(max_new_tokens=256).kv_cache > base.kv_cache and estimate(max_new_tokens=256).capture == 2 * base.capture
    assert estimate(prompt_tokens=2000).language > base.language
    two = estimate(batch=2)  # the images are the batch's in total: only the per-row parts double
    assert (two.kv_cache, two.capture, two.language, two.vision) == (2 * base.kv_cache, 2 * base.capture,
                                                                    2 * base.language, base.vision)
    # Qwen2-VL-7B keeps 56 KiB of keys and values per position in bf16
    assert base.kv_cache == 1128 * 28 * 2 * 4 * 128 * 2
    # a 12-megapixel photo at the processor's default cap is ~65k patches: gigabytes of vision activations
    assert estimate(image_patches=(65536,)).vision > 2 * GiB


def test_refusal_names_both_sizes_and_the_precisions_that_fit():
    working = estimate()
    weights = SEVEN_B.bytes(BF16)
    message = fit_error(weights, working, 12 * GiB, BF16, SEVEN_B)
    assert message.startswith(f"The VLM needs 15.4 GiB for its bf16 weights plus {working.total / GiB:.1f} GiB")
    assert "the device has 12.0 GiB even with every other model offloaded" in message
    assert ("Load the VLM in fp8, int8 or nf4 (fp8: 8.4 GiB of weights, int8: 8.4 GiB of weights, "
            "nf4: 5.2 GiB of weights)") in message
    eight = fit_error(weights, working, 8 * GiB, BF16, SEVEN_B)
    assert "Load the VLM in nf4 (nf4: 5.2 GiB of weights)" in eight  # fp8's and int8's 8.4 GiB do not fit 8
    assert fit_error(weights, working, 24 * GiB, BF16, SEVEN_B) is None
    assert fit_error(weights, working, int((weights + working.total) * FIT_MARGIN) + 1, BF16, SEVEN_B) is None


def test_refusal_says_what_to_shrink_when_no_precision_fits():
    working = estimate(image_patches=(65536,) * 3)
    nf4 = Precision("nf4", torch.bfloat16)
    message = fit_error(SEVEN_B.bytes(nf4), working, 12 * GiB, nf4, SEVEN_B)
    assert "for its nf4 (computed in bfloat16) weights" in message
    assert "No precision fits: lower max_new_tokens, the number or size of the images (max_pixels)" in message


def test_limit_pixels_keeps_the_aspect_and_leaves_small_images_alone():
    photo = Image.new("RGB", (4000, 3000), "red")
    capped = limit_pixels(photo, 1_000_000)
    assert capped.width * capped.height <= 1_000_000 and abs(capped.width / capped.height - 4 / 3) < 0.01
    assert capped.width * capped.height > 0.99 * 1_000_000
    small = Image.new("RGB", (64, 64))
    assert limit_pixels(small, 1_000_000) is small and limit_pixels(photo, 0) is photo
